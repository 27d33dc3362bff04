//! Memory is bounded by design, not by the image: `info`, `verify` and `apply` of an
//! image whose manifest is at the size limit (230,000 chunks, a 14 GiB partition) stay
//! under 64 MiB of peak RSS. Alone in its test binary: the peak is that of its children.

use std::process::Command;

use reprov::image::{
    Capture, Chunk, Codec, Filesystem, Kind, Manifest, MAX_MANIFEST_LEN, MIN_CHUNK_SIZE,
};

const CHUNKS: u64 = 230_000;
const LIMIT_KIB: i64 = 64 << 10;

/// An image of zero chunks only (nothing stored): all manifest.
fn image_at_the_manifest_limit(path: &std::path::Path) {
    let zero = crc32fast::hash(&vec![0u8; MIN_CHUNK_SIZE as usize]);
    let manifest = Manifest {
        name: "at-the-limit".into(),
        description: String::new(),
        created: time::OffsetDateTime::UNIX_EPOCH,
        source_size: CHUNKS * MIN_CHUNK_SIZE,
        chunk_size: MIN_CHUNK_SIZE,
        codec: Codec::Zstd,
        partition_type: None,
        filesystem: Filesystem::Unknown,
        capture: Capture::AllBlocks,
        chunks: (0..CHUNKS)
            .map(|index| Chunk {
                index,
                kind: Kind::Zero,
                crc32: zero,
                sha256: None,
                stored_sha256: None,
                stored: 0,
            })
            .collect(),
        version: reprov::image::VERSION,
    };
    let text = manifest.to_toml();
    assert!(text.len() as u64 > MAX_MANIFEST_LEN * 9 / 10 && text.len() as u64 <= MAX_MANIFEST_LEN);
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut header = tar::Header::new_ustar();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, reprov::image::MANIFEST_PATH, text.as_bytes())
        .unwrap();
    tar.finish().unwrap();
}

/// Peak RSS of the largest child this process has waited for, in KiB.
fn children_peak_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss()
}

#[test]
fn info_verify_and_apply_of_a_manifest_at_the_limit_stay_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("big.tar");
    image_at_the_manifest_limit(&image);
    let target = dir.path().join("target");
    let image = image.to_str().unwrap();
    for args in [
        vec!["image", "info", image],
        vec!["image", "verify", image],
        vec!["image", "apply", image, "--to", target.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_reprov"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peak = children_peak_kib();
        println!("reprov {}: peak RSS so far {} KiB", args.join(" "), peak);
        assert!(
            peak < LIMIT_KIB,
            "reprov {}: peak RSS {peak} KiB, over 64 MiB",
            args.join(" ")
        );
    }
    assert_eq!(
        std::fs::metadata(&target).unwrap().len(),
        CHUNKS * MIN_CHUNK_SIZE
    );
}
