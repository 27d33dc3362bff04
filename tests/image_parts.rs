//! An image bigger than FAT allows (4 GiB − 1 bytes per file), on the FAT32 images and
//! data partitions: kept as parts, taken as one by everything — add, list, info, verify,
//! apply, the safety backup `previous.tar`, the factory image, and a fetch over HTTP and
//! FTP cut in the middle of the second part and resumed. `fsck.vfat -n` after each step.
//!
//! Needs root (a loop device for fsck.vfat). The disk (sparse): system 34 MiB, NOS 4400 MiB, float 8 MiB, images 9000 MiB, data
//! 4500 MiB. The source is 4 GiB + 160 MiB of incompressible bytes.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use common::fixtures::{machine, reprov};
use common::scenario::{arm, log_codes, s};
use common::servers::{Kind, Server, KINDS};
use reprov::recovery::{runner, Outcome};
use reprov::store::PART_SIZE;
use reprov::transfer::{self, Options, StorePlace};

const MIB: u64 = 1 << 20;
const SOURCE: u64 = (4 << 30) + 160 * MIB;

/// Writes `len` incompressible bytes to `path`: 64 MiB of xorshift output over and over,
/// every 4 MiB (an image chunk) stamped with its own number, so no two chunks are alike
/// and none compresses.
fn incompressible(path: &Path, len: u64) {
    let pattern = common::fixtures::random_bytes(64 * MIB);
    let mut file = File::create(path).unwrap();
    let mut chunk = vec![0u8; 4 << 20];
    let mut at = 0u64;
    while at < len {
        let from = (at % (64 * MIB)) as usize;
        let size = chunk.len();
        chunk.copy_from_slice(&pattern[from..from + size]);
        chunk[..8].copy_from_slice(&at.to_le_bytes());
        let n = (len - at).min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).unwrap();
        at += n as u64;
    }
}

/// Asserts two streams hold the same `len` bytes from their current positions.
fn assert_same(mut a: impl Read, mut b: impl Read, len: u64, what: &str) {
    let (mut x, mut y) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(x.len() as u64) as usize;
        a.read_exact(&mut x[..n]).unwrap();
        b.read_exact(&mut y[..n]).unwrap();
        assert!(
            x[..n] == y[..n],
            "{what}: differs in bytes {at}..{}",
            at + n as u64
        );
        at += n as u64;
    }
}

/// `fsck.vfat -n` of the partition of `disk` with `role`: clean. Through a read-only
/// loop device over the partition (fsck reads only the FAT and the directories).
fn assert_fsck_clean(disk: &Path, role: &str, after: &str) {
    let layout = common::scenario::layout(disk);
    let part = common::scenario::partition(&layout, role);
    let (start, size) = (
        part["start"].as_u64().unwrap(),
        part["size"].as_u64().unwrap(),
    );
    let device = common::fixtures::run(
        Path::new("losetup"),
        &[
            "--find",
            "--show",
            "--read-only",
            "--offset",
            &start.to_string(),
            "--sizelimit",
            &size.to_string(),
            s(disk),
        ],
    );
    let out = std::process::Command::new("fsck.vfat")
        .args(["-n", device.trim()])
        .output()
        .unwrap();
    common::fixtures::run(Path::new("losetup"), &["--detach", device.trim()]);
    assert!(
        out.status.success(),
        "fsck.vfat -n of the {role} partition after {after}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `reprov image list --disk D [--factory]`: (name, size) rows.
fn listed(disk: &Path, factory: bool) -> Vec<(String, u64)> {
    let mut args = vec!["image", "list", "--disk", s(disk)];
    if factory {
        args.push("--factory");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut cols = l.split('\t');
            (
                cols.next().unwrap().to_string(),
                cols.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// The file names in a directory of the images partition of `disk`.
fn names_in(disk: &Path, dir: &str) -> Vec<String> {
    let mut d = reprov::disk::open_disk(disk).unwrap();
    d.with_store(|store| Ok(store.list(dir)?.into_iter().map(|(n, _)| n).collect()))
        .unwrap()
}

#[test]
fn an_image_over_4_gib_is_kept_as_parts_and_taken_as_one() {
    let started = std::time::Instant::now();
    let step = |what: &str| eprintln!("{:>7.1?}  {what}", started.elapsed());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (src, img) = (dir.path().join("src.img"), dir.path().join("big.tar"));
    incompressible(&src, SOURCE);
    step("source written");
    reprov(&[
        "image",
        "create",
        "--from",
        s(&src),
        "--out",
        s(&img),
        "--name",
        "big",
    ]);
    let img_len = std::fs::metadata(&img).unwrap().len();
    assert!(img_len > 4 << 30, "the image is {img_len} bytes");

    let disk = dir.path().join("disk.img");
    reprov(&[
        "layout",
        "init",
        "--disk",
        s(&disk),
        "--system",
        "34M",
        "--nos",
        "4400M",
        "--float",
        "8M",
        "--images",
        "9000M",
        "--data",
        "4500M",
        "--nos-type",
        "0x83",
    ]);

    step("Added: two parts on the images partit");
    // Added: two parts on the images partition, listed once at its whole size.
    reprov(&["image", "add", s(&img), "--disk", s(&disk)]);
    assert_eq!(names_in(&disk, "images"), ["big.tar", "big.tar.002"]);
    assert_eq!(listed(&disk, false), vec![("big.tar".to_string(), img_len)]);
    assert_fsck_clean(&disk, "images", "image add");
    step("And as the factory image on the data ");
    // And as the factory image on the data partition.
    reprov(&["image", "add", s(&img), "--disk", s(&disk), "--factory"]);
    assert_eq!(listed(&disk, true), vec![("big.tar".to_string(), img_len)]);
    assert_fsck_clean(&disk, "data", "image add --factory");

    step("Info and verify read the parts as one");
    // Info and verify read the parts as one, in the store and on the host.
    let info: serde_json::Value = serde_json::from_str(&common::scenario::reprov_out(&[
        "image",
        "info",
        "--json",
        "--disk",
        s(&disk),
        "big.tar",
    ]))
    .unwrap();
    assert_eq!(info["source_size"], SOURCE);
    reprov(&["image", "verify", "--disk", s(&disk), "big.tar"]);

    step("Applied onto NOS byte for byte, strai");
    // Applied onto NOS byte for byte, straight from the image file.
    reprov(&["image", "apply", s(&img), "--disk", s(&disk)]);
    let nos_start = {
        let layout = common::scenario::layout(&disk);
        common::scenario::partition(&layout, "nos")["start"]
            .as_u64()
            .unwrap()
    };
    let nos_reader = || {
        let mut f = File::open(&disk).unwrap();
        f.seek(SeekFrom::Start(nos_start)).unwrap();
        f
    };
    assert_same(
        File::open(&src).unwrap(),
        nos_reader(),
        SOURCE,
        "NOS after image apply",
    );

    step("a recovery job backs NOS up");
    // A recovery job applies a small image: NOS (4 GiB and more of incompressible
    // bytes) goes into a safety backup of two parts first.
    let small = dir.path().join("small.tar");
    std::fs::write(
        &small,
        common::fixtures::image_of(&common::fixtures::random_bytes(8 * MIB), "small"),
    )
    .unwrap();
    reprov(&["image", "add", s(&small), "--disk", s(&disk)]);
    reprov(&[
        "job",
        "set",
        "--disk",
        s(&disk),
        "--kind",
        "apply",
        "--image",
        "small.tar",
    ]);
    arm(&disk);
    assert_eq!(runner::run(&disk, &machine()).unwrap(), Outcome::Done);
    let codes = log_codes(&disk);
    assert!(codes.iter().any(|c| c == "R037"), "{codes:?}");
    let rows = listed(&disk, false);
    let backup = rows
        .iter()
        .find(|(n, _)| n == "previous.tar")
        .expect("previous.tar");
    assert!(backup.1 > 4 << 30, "{rows:?}");
    assert!(names_in(&disk, "images").contains(&"previous.tar.002".to_string()));
    reprov(&["image", "verify", "--disk", s(&disk), "previous.tar"]);
    let info: serde_json::Value = serde_json::from_str(&common::scenario::reprov_out(&[
        "image",
        "info",
        "--json",
        "--disk",
        s(&disk),
        "previous.tar",
    ]))
    .unwrap();
    assert_eq!(
        info["source_size"],
        4400 * MIB,
        "the backup is of all of NOS"
    );
    assert_fsck_clean(&disk, "images", "the backup and the apply");
    std::fs::remove_file(&src).unwrap();
    std::fs::remove_file(&disk).unwrap();

    step("Fetched over HTTP and FTP, cut in the");
    // Fetched over HTTP and FTP, cut in the middle of the second part, then resumed.
    let cut = PART_SIZE + 64 * MIB;
    for kind in KINDS {
        let server = Server::start(kind, &["--cut-after", &cut.to_string()]);
        std::fs::hard_link(&img, server.file("big.tar")).unwrap();
        let fetched = dir.path().join("fetched.img");
        reprov(&[
            "layout",
            "init",
            "--disk",
            s(&fetched),
            "--system",
            "34M",
            "--nos",
            "16M",
            "--float",
            "8M",
            "--images",
            "4600M",
            "--data",
            "34M",
        ]);
        let mut d = reprov::disk::open_disk(&fetched).unwrap();
        d.with_store(|store| {
            let place = StorePlace::new(store, "images");
            let once = Options {
                attempts: 1,
                ..Options::default()
            };
            let source = server.source("big.tar");
            let first = transfer::download(&source, &place, "big.tar", &once, &mut |_| {});
            assert!(first.is_err(), "{kind:?}: the cut went unseen");
            let names: Vec<String> = store.list("images")?.into_iter().map(|(n, _)| n).collect();
            assert_eq!(
                names,
                ["big.tar.part", "big.tar.part.002", "big.tar.part.toml"],
                "{kind:?}: a half-written set, under no image's name"
            );
            assert!(store.list_images()?.is_empty(), "{kind:?}");
            transfer::download(&source, &place, "big.tar", &once, &mut |_| {}).unwrap();
            let names: Vec<String> = store.list("images")?.into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, ["big.tar", "big.tar.002"], "{kind:?}");
            let stored = store.open_image(&reprov::store::ImageName::new("big.tar").unwrap())?;
            assert_same(
                File::open(&img).unwrap(),
                stored,
                img_len,
                "the fetched image",
            );
            Ok(())
        })
        .unwrap();
        let resumed = match kind {
            Kind::Ftp => format!("REST {}", cut),
            Kind::Http => format!("range=bytes={cut}-"),
        };
        let events = server.events();
        assert!(
            events.iter().any(|e| e.contains(&resumed)),
            "{kind:?}: {events:?}"
        );
        assert_fsck_clean(&fetched, "images", &format!("a fetch over {kind:?}"));
        step(&format!("fetched over {kind:?}"));
        std::fs::remove_file(&fetched).unwrap();
    }
}
