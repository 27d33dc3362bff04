//! Images on an appliance disk: applying onto NOS grows it into the float when the
//! image needs more room (the patent's Figure 7), and refuses when even NOS + float is
//! too small; creating from NOS into the images store.
//!
//! The test disk: MiB 0–1 MBR | 1–34 system | 34–98 NOS (64 MiB) | 98–162 float
//! (64 MiB) | 162–195 images | 195–228 data.

mod image_support;

use image_support::*;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Output};

use reprov::disk::{ApplianceDisk, Role};

const MIB: u64 = 1 << 20;
const REPROV: &str = env!("CARGO_BIN_EXE_reprov");

fn reprov(args: &[&str]) -> Output {
    Command::new(REPROV).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = reprov(args);
    assert!(
        out.status.success(),
        "reprov {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh appliance disk whose NOS and float are full of random bytes (so an apply must
/// really zero what the image says is zero; growing over them needs --force-float).
fn new_disk(dir: &Path) -> std::path::PathBuf {
    let disk = dir.join("disk.img");
    ok(&[
        "layout",
        "init",
        "--disk",
        path(&disk),
        "--system",
        "33M",
        "--nos",
        "64M",
        "--float",
        "64M",
        "--images",
        "33M",
        "--size",
        "228M",
    ]);
    let mut file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    let block = Rng::new(99).bytes(MIB as usize);
    file.seek(SeekFrom::Start(34 * MIB)).unwrap();
    for _ in 0..128 {
        file.write_all(&block).unwrap();
    }
    disk
}

fn ranges(disk: &Path) -> Vec<(u64, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let d = ApplianceDisk::open(file, "test disk").unwrap();
    Role::ALL.iter().map(|r| d.range(*r)).collect()
}

/// Copies `len` bytes at `start` of `from` into the file `to`.
fn extract(from: &Path, start: u64, len: u64, to: &Path) {
    let mut src = File::open(from).unwrap();
    src.seek(SeekFrom::Start(start)).unwrap();
    let mut out = File::create(to).unwrap();
    std::io::copy(&mut src.take(len), &mut out).unwrap();
}

fn fsck(disk: &Path, (start, len): (u64, u64), dir: &Path) {
    let part = dir.join("part.img");
    extract(disk, start, len, &part);
    let out = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck.vfat -n: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn apply_grows_nos_into_the_float_and_moves_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path());
    let before = ranges(&disk);
    assert_eq!(before[1], (34 * MIB, 64 * MIB));
    let data_crc = {
        let part = dir.path().join("data-before");
        extract(&disk, before[3].0, before[3].1, &part);
        file_crc(&part)
    };

    let (src, img) = (dir.path().join("src"), dir.path().join("img.tar"));
    let size = 96 * MIB;
    let mut source = varied_source(&src, size, 42);
    write_at(&mut source, 80 * MIB, &text(3 * MIB as usize));
    drop(source);
    create_image(&src, &img, reprov::image::DEFAULT_CHUNK_SIZE);

    ok(&[
        "image",
        "apply",
        path(&img),
        "--disk",
        path(&disk),
        "--role",
        "nos",
        "--force-float",
    ]);

    let after = ranges(&disk);
    assert_eq!(
        after[1],
        (34 * MIB, 96 * MIB),
        "NOS grew to 96 MiB in place"
    );
    for i in [0, 2, 3] {
        assert_eq!(after[i], before[i], "{:?} did not move", Role::ALL[i]);
    }
    let nos = dir.path().join("nos");
    extract(&disk, 34 * MIB, size, &nos);
    assert_same_prefix(&src, &nos, size);
    fsck(&disk, after[2], dir.path());
    fsck(&disk, after[3], dir.path());
    let part = dir.path().join("data-after");
    extract(&disk, after[3].0, after[3].1, &part);
    assert_eq!(file_crc(&part), data_crc, "the data partition is untouched");
}

#[test]
fn apply_refuses_an_image_bigger_than_nos_and_float_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path());
    let disk_crc = file_crc(&disk);
    let (src, img) = (dir.path().join("src"), dir.path().join("img.tar"));
    varied_source(&src, 128 * MIB + 1, 1);
    create_image(&src, &img, reprov::image::DEFAULT_CHUNK_SIZE);
    let out = reprov(&["image", "apply", path(&img), "--disk", path(&disk)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs 128.0 MiB (134217729 bytes) but the target has room for only 128.0 MiB (134217728 bytes)"),
        "{err}"
    );
    assert_eq!(file_crc(&disk), disk_crc, "nothing written");
}

#[test]
fn create_packs_nos_into_the_images_store() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path());
    // NOS holds random bytes: make most of it compressible so the image fits the store.
    let mut file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    write_at(&mut file, 34 * MIB, &vec![0; 60 * MIB as usize]);
    write_at(&mut file, 40 * MIB, &text(2 * MIB as usize));
    drop(file);
    ok(&[
        "image",
        "create",
        "--disk",
        path(&disk),
        "--role",
        "nos",
        "--to-store",
        "--name",
        "acme-7",
        "--description",
        "Acme 7",
    ]);
    let r = ranges(&disk);
    fsck(&disk, r[2], dir.path());
    // Out of the store again, the image is whole and holds NOS.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let mut d = ApplianceDisk::open(file, "test disk").unwrap();
    let store = d.store().unwrap();
    let bytes = store
        .read("images/acme-7.tar")
        .unwrap()
        .expect("the image is in the store");
    store.unmount().unwrap();
    let img = dir.path().join("back.tar");
    std::fs::write(&img, bytes).unwrap();
    let nos = dir.path().join("nos");
    extract(&disk, 34 * MIB, 64 * MIB, &nos);
    let applied = dir.path().join("applied");
    File::create(&applied).unwrap().set_len(64 * MIB).unwrap();
    let m = apply_image(&img, &applied).unwrap();
    assert_eq!(
        (m.name.as_str(), m.description.as_str()),
        ("acme-7", "Acme 7")
    );
    assert_same_prefix(&nos, &applied, 64 * MIB);
}
