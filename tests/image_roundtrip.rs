//! Images round trip: create from a partition of varied data, apply onto a target full
//! of random bytes, and the target holds exactly the source — at several sizes.

mod image_support;

use image_support::*;
use std::path::Path;
use std::process::Command;

use reprov::image::{self, Codec, Kind, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE};

#[test]
fn round_trips_at_several_sizes_in_both_codecs() {
    let dir = tempfile::tempdir().unwrap();
    let k = MIN_CHUNK_SIZE;
    let sizes = [
        (1, k),
        (k - 1, k),
        (k, k),
        (k + 1, k),
        (7 * k + 4321, k),
        (3 * DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE),
        (2 * DEFAULT_CHUNK_SIZE + 777, DEFAULT_CHUNK_SIZE),
    ];
    let cases = sizes
        .into_iter()
        .flat_map(|size| [Codec::Zstd, Codec::Gzip].map(|codec| (size, codec)));
    let mut raw_chunks = 0;
    for ((size, chunk_size), codec) in cases {
        let (src, img, dst) = (
            dir.path().join("src"),
            dir.path().join("img.tar"),
            dir.path().join("dst"),
        );
        varied_source(&src, size, size);
        let made = create_image_with(&src, &img, chunk_size, codec);
        assert_eq!(made.codec, codec);
        assert_eq!(made.source_size, size);
        assert_eq!(made.chunks.len() as u64, size.div_ceil(chunk_size));
        raw_chunks += made.count(Kind::Raw);
        random_target(&dst, size + 1000, 7);
        let applied = apply_image(&img, &dst).unwrap();
        assert_eq!(
            applied, made,
            "the image reads back as written, size {size}, {codec:?}"
        );
        assert_same_prefix(&src, &dst, size);
        let verified = image::verify(
            &mut std::fs::File::open(&img).unwrap(),
            reprov::io::Show::Quiet,
        )
        .unwrap();
        assert_eq!(verified, made);
    }
    assert!(
        raw_chunks > 0,
        "random chunks were stored raw and round-tripped"
    );
}

#[test]
fn zero_chunks_are_not_stored_and_read_back_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let (src, img, dst) = (
        dir.path().join("src"),
        dir.path().join("img.tar"),
        dir.path().join("dst"),
    );
    let size = 40 * MIN_CHUNK_SIZE;
    varied_source(&src, size, 3);
    let made = create_image(&src, &img, MIN_CHUNK_SIZE);
    let data = made.data_chunks();
    assert!(data < 15, "{data} data chunks: zero chunks were stored");
    let listing = Command::new("tar").arg("-tf").arg(&img).output().unwrap();
    let names = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(names.lines().count(), 1 + data, "{names}");
    assert_eq!(names.lines().next(), Some("manifest.toml"));
    random_target(&dst, size, 9);
    apply_image(&img, &dst).unwrap();
    assert_same_prefix(&src, &dst, size);
}

/// Over 4 GiB, sparse and mostly zero: offsets past u32 and a short last chunk.
#[test]
fn round_trips_over_4_gib() {
    let dir = tempfile::tempdir().unwrap();
    let (src, img, dst) = (
        dir.path().join("src"),
        dir.path().join("img.tar"),
        dir.path().join("dst"),
    );
    let size = (4 << 30) + 3 * DEFAULT_CHUNK_SIZE + 5;
    let mut file = varied_source(&src, size, 11);
    write_at(&mut file, (4 << 30) - 10, &Rng::new(5).bytes(100_000));
    drop(file);
    create_image(&src, &img, DEFAULT_CHUNK_SIZE);
    // A sparse target with random bytes where the source has zeros.
    let stale = [4096, 1 << 30, (4 << 30) + DEFAULT_CHUNK_SIZE, size - 10];
    let mut target = std::fs::File::create(&dst).unwrap();
    target.set_len(size).unwrap();
    for at in stale {
        write_at(&mut target, at, &Rng::new(at).bytes(10));
    }
    drop(target);
    apply_image(&img, &dst).unwrap();
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
    // Reading 8 GiB of holes is slow on a busy machine: compare the 8 MiB around every
    // place where either file had non-zero bytes (the rest is zeros in both by making).
    let data = [0, size / 3, size / 2 + 12345, (4 << 30) - 10, size - 70_000];
    for at in data.into_iter().chain(stale) {
        let start = at.saturating_sub(DEFAULT_CHUNK_SIZE);
        let len = (2 * DEFAULT_CHUNK_SIZE).min(size - start);
        assert_same_range(&src, &dst, start, len);
    }
}
/// docs/image-format.md says how to restore an image with tar, zstd or gzip, and dd: do
/// exactly that, with the script from the document, onto a target full of random bytes,
/// for an image of each codec.
#[test]
fn restores_by_hand_with_tar_zstd_gzip_and_dd() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/image-format.md"))
            .unwrap();
    let script = doc
        .split("<!-- restore-by-hand -->")
        .nth(1)
        .and_then(|rest| rest.split("```bash\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("docs/image-format.md has the restore-by-hand script");
    let dir = tempfile::tempdir().unwrap();
    let (src, img, dst) = (
        dir.path().join("src"),
        dir.path().join("img.tar"),
        dir.path().join("dst"),
    );
    let size = 9 * MIN_CHUNK_SIZE + 999;
    varied_source(&src, size, 21);
    for codec in [Codec::Zstd, Codec::Gzip] {
        let manifest = create_image_with(&src, &img, MIN_CHUNK_SIZE, codec);
        assert!(
            manifest.count(Kind::Zero) > 0 && manifest.count(Kind::Raw) > 0,
            "the script's zero and raw paths are taken"
        );
        random_target(&dst, size, 4);
        let work = dir.path().join(codec.as_str());
        std::fs::create_dir(&work).unwrap();
        let status = Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(script)
            .env("IMAGE", &img)
            .env("TARGET", &dst)
            .current_dir(&work)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the documented restore of {codec:?} failed"
        );
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
        assert_same_prefix(&src, &dst, size);
    }
}

#[test]
fn cli_creates_applies_verifies_and_describes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, img, dst) = (
        dir.path().join("src"),
        dir.path().join("img.tar"),
        dir.path().join("new-target"),
    );
    let size = 6 * MIN_CHUNK_SIZE + 5;
    varied_source(&src, size, 8);
    let reprov = env!("CARGO_BIN_EXE_reprov");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(reprov).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&[
        "image".as_ref(),
        "create".as_ref(),
        "--from".as_ref(),
        src.as_os_str(),
        "--out".as_ref(),
        img.as_os_str(),
        "--name".as_ref(),
        "acme-42".as_ref(),
        "--chunk-size".as_ref(),
        "64K".as_ref(),
    ]);
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "image".as_ref(),
        "info".as_ref(),
        img.as_os_str(),
        "--json".as_ref(),
    ]))
    .unwrap();
    assert_eq!(json["name"], "acme-42");
    assert_eq!(json["source_size"], size);
    assert_eq!(json["chunk_count"], 7);
    let text = run(&["image".as_ref(), "info".as_ref(), img.as_os_str()]);
    assert!(text.contains("name:           acme-42"), "{text}");
    assert!(text.contains("zstd chunks of 64.0 KiB"), "{text}");
    run(&["image".as_ref(), "verify".as_ref(), img.as_os_str()]);
    run(&[
        "image".as_ref(),
        "apply".as_ref(),
        img.as_os_str(),
        "--to".as_ref(),
        dst.as_os_str(),
    ]);
    assert_same_prefix(&src, &dst, size);
}

/// The apply's memory is a few chunks whatever the image: its peak RSS, as
/// `/usr/bin/time` measures it, stays under 64 MiB on an image of incompressible data.
#[test]
fn apply_peak_memory_stays_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let (src, img, dst) = (
        dir.path().join("src"),
        dir.path().join("img.tar"),
        dir.path().join("dst"),
    );
    let size = 32 * DEFAULT_CHUNK_SIZE;
    random_target(&src, size, 77);
    create_image(&src, &img, DEFAULT_CHUNK_SIZE);
    std::fs::File::create(&dst).unwrap().set_len(size).unwrap();
    let out = Command::new("/usr/bin/time")
        .args([
            "-f",
            "peak-rss-kib %M",
            env!("CARGO_BIN_EXE_reprov"),
            "image",
            "apply",
        ])
        .arg(&img)
        .arg("--to")
        .arg(&dst)
        .output()
        .expect("/usr/bin/time (Debian package time, see scripts/deps)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {stderr}"));
    println!("apply of {} MiB: peak RSS {kib} KiB", size >> 20);
    assert!(kib < 64 << 10, "peak RSS {kib} KiB");
    assert_same_prefix(&src, &dst, size);
}
