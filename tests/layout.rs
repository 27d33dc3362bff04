//! `reprov layout` on sparse disk-image files, cross-checked with sfdisk and dosfstools.
//!
//! The test disk (sizes chosen as the smallest FAT32 partitions fatfs makes):
//!   MiB 0–1 MBR | 1–34 system (0x1C) | 34–42 NOS (0x83, active) | 42–58 float |
//!   58–91 images (IMAGES) | 91–… data (DATA, the rest)

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reprov::disk::{ApplianceDisk, Role};
use reprov::store::MBR_BACKUP_DIR;
use serde_json::Value;

const MIB: u64 = 1 << 20;
const REPROV: &str = env!("CARGO_BIN_EXE_reprov");
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Runs reprov with a command line split on spaces (temp paths have none).
fn run(command: &str) -> Output {
    Command::new(REPROV)
        .args(command.split_whitespace())
        .output()
        .unwrap()
}

/// Runs reprov and returns its stdout; fails the test on a non-zero exit.
fn ok(command: &str) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "reprov {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh appliance disk of `MiB` mebibytes in `dir`.
fn new_disk(dir: &Path, mib: u64) -> PathBuf {
    let disk = dir.join("disk.img");
    ok(&format!(
        "layout init --disk {} --system 33M --nos 8M --float 16M --images 33M --size {mib}M",
        disk.display()
    ));
    disk
}

fn show(disk: &Path) -> Value {
    let json = ok(&format!("layout show --disk {} --json", disk.display()));
    serde_json::from_str(&json).unwrap()
}

fn sector(disk: &Path) -> Vec<u8> {
    let mut s = vec![0u8; 512];
    File::open(disk).unwrap().read_exact(&mut s).unwrap();
    s
}

/// Copies `len` bytes at `start` of `from` into a new file, keeping zero MiBs as holes.
fn extract(from: &Path, start: u64, len: u64, to: &Path) {
    let mut src = File::open(from).unwrap();
    let mut dst = File::create(to).unwrap();
    dst.set_len(len).unwrap();
    src.seek(SeekFrom::Start(start)).unwrap();
    let mut buf = vec![0u8; usize::try_from(MIB).unwrap()];
    let mut done = 0;
    while done < len {
        let n = usize::try_from((len - done).min(MIB)).unwrap();
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n] != ZEROS[..n] {
            dst.seek(SeekFrom::Start(done)).unwrap();
            dst.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
}

/// `sfdisk --dump` lines as (start sector, sectors, type, bootable), in slot order.
fn sfdisk(disk: &Path) -> Vec<(u64, u64, u8, bool)> {
    let out = Command::new("sfdisk")
        .arg("--dump")
        .arg(disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |line: &str, key: &str| -> Option<String> {
        line.split(':')
            .nth(1)?
            .split(',')
            .map(str::trim)
            .find_map(|kv| kv.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" : start="))
        .map(|l| {
            (
                field(l, "start=").unwrap().parse().unwrap(),
                field(l, "size=").unwrap().parse().unwrap(),
                u8::from_str_radix(&field(l, "type=").unwrap(), 16).unwrap(),
                l.contains("bootable"),
            )
        })
        .collect()
}

fn partitions(layout: &Value) -> Vec<(u64, u64, u8, bool)> {
    layout["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start_sector"].as_u64().unwrap(),
                p["sectors"].as_u64().unwrap(),
                u8::from_str_radix(p["type"].as_str().unwrap().trim_start_matches("0x"), 16)
                    .unwrap(),
                p["active"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn init_then_sfdisk_agrees_with_show() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 140);
    let before = crc(&disk);
    let layout = show(&disk);
    assert_eq!(sfdisk(&disk), partitions(&layout));
    // Reading the layout, and an edit that changes nothing, write nothing at all.
    ok(&format!("layout show --disk {}", disk.display()));
    ok(&format!("layout activate nos --disk {}", disk.display()));
    assert_eq!(crc(&disk), before);
    assert_eq!(
        partitions(&layout),
        [
            (2048, 33 * 2048, 0x1C, false),
            (34 * 2048, 8 * 2048, 0x83, true),
            (58 * 2048, 33 * 2048, 0x0C, false),
            (91 * 2048, 49 * 2048, 0x0C, false),
        ]
    );
    assert_eq!(layout["float"]["size"], 16 * MIB);
    assert_eq!(layout["partitions"][0]["hidden"], true);
    // The file was created sparse: the partitions' empty space takes no blocks.
    use std::os::unix::fs::MetadataExt;
    assert!(fs::metadata(&disk).unwrap().blocks() * 512 < 20 * MIB);
}

#[test]
fn fsck_passes_on_the_fat32_partitions_with_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 140);
    let layout = show(&disk);
    for (slot, label) in [(0, "SYSTEM"), (2, "IMAGES"), (3, "DATA")] {
        let p = &layout["partitions"][slot];
        let part = dir.path().join(format!("part{slot}"));
        extract(
            &disk,
            p["start"].as_u64().unwrap(),
            p["size"].as_u64().unwrap(),
            &part,
        );
        let fsck = Command::new("fsck.vfat")
            .arg("-n")
            .arg(&part)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&fsck.stdout);
        assert!(fsck.status.success(), "slot {slot}: {report}");
        let file = Command::new("file").arg("-b").arg(&part).output().unwrap();
        assert!(String::from_utf8_lossy(&file.stdout).contains("FAT (32 bit)"));
        let got = Command::new("fatlabel").arg(&part).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), label);
        // The BPB's hidden sectors field holds the partition's start on the disk.
        let mut boot = [0u8; 32];
        File::open(&part).unwrap().read_exact(&mut boot).unwrap();
        let hidden = u32::from_le_bytes([boot[28], boot[29], boot[30], boot[31]]);
        assert_eq!(u64::from(hidden), p["start_sector"].as_u64().unwrap());
    }
}

#[test]
fn grow_takes_from_the_float_and_moves_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 140);
    let before = show(&disk);
    let out = ok(&format!("layout grow --disk {} --by 5M", disk.display()));
    assert!(out.contains("slot 2 (NOS)"), "{out}");
    let after = show(&disk);
    assert_eq!(
        after["partitions"][1]["size"].as_u64().unwrap(),
        before["partitions"][1]["size"].as_u64().unwrap() + 5 * MIB
    );
    assert_eq!(
        after["float"]["size"].as_u64().unwrap(),
        before["float"]["size"].as_u64().unwrap() - 5 * MIB
    );
    for slot in [0, 2, 3] {
        assert_eq!(after["partitions"][slot], before["partitions"][slot]);
    }
    assert_eq!(
        after["partitions"][1]["start"],
        before["partitions"][1]["start"]
    );
    assert_eq!(sfdisk(&disk), partitions(&after));

    ok(&format!("layout grow --disk {} --to 24M", disk.display()));
    assert_eq!(show(&disk)["float"]["size"], 0);
    let refused = run(&format!("layout grow --disk {} --by 1M", disk.display()));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NOS can grow to at most 24.0 MiB"));
}

#[test]
fn hide_unhide_activate_change_only_their_bytes_and_back_up_the_mbr() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 140);
    let slot = |n: usize| 446 + 16 * (n - 1);
    // (verb, the bytes it may change, their new values)
    let steps = [
        ("unhide", vec![(slot(1) + 4, 0x0C)]),
        ("activate system", vec![(slot(1), 0x80), (slot(2), 0x00)]),
        ("activate nos", vec![(slot(1), 0x00), (slot(2), 0x80)]),
        ("hide", vec![(slot(1) + 4, 0x1C)]),
    ];
    let mut sectors = vec![sector(&disk)];
    for (verb, changes) in &steps {
        let before = sector(&disk);
        let out = ok(&format!("layout {verb} --disk {}", disk.display()));
        assert!(out.contains("slot 1 (system)"), "{verb}: {out}");
        let after = sector(&disk);
        let changed: Vec<(usize, u8)> = (0..512)
            .filter(|&i| before[i] != after[i])
            .map(|i| (i, after[i]))
            .collect();
        assert_eq!(&changed, changes, "{verb}");
        sectors.push(after);
    }
    assert_eq!(sectors.first(), sectors.last());

    // Doing it again changes nothing, writes nothing, and says so.
    let out = ok(&format!("layout hide --disk {}", disk.display()));
    assert!(out.contains("nothing to change"), "{out}");

    // One backup per commit, each the sector as it was before that commit.
    let mut appliance = ApplianceDisk::open(
        File::options().read(true).write(true).open(&disk).unwrap(),
        "disk.img",
    )
    .unwrap();
    let store = appliance.store().unwrap();
    let backups = store.list(MBR_BACKUP_DIR).unwrap();
    assert_eq!(backups.len(), steps.len());
    for ((name, size), old) in backups.iter().zip(&sectors) {
        assert_eq!(*size, 512);
        let saved = store
            .read(&format!("{MBR_BACKUP_DIR}/{name}"))
            .unwrap()
            .unwrap();
        assert_eq!(&saved, old, "{name}");
    }
    store.unmount().unwrap();
    let (start, len) = appliance.range(Role::Images);
    assert_eq!(start, 58 * MIB);

    // The images partition stays clean for fsck with the backups fatfs wrote.
    let images = dir.path().join("images");
    extract(&disk, start, len, &images);
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&images)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn init_installs_boot_code_and_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let disk = new_disk(dir.path(), 140);
    // SYSLINUX's "boot the active partition" MBR code (scripts/deps installs it).
    let code = Path::new("/usr/lib/syslinux/mbr/mbr.bin");
    let before = crc(&disk);
    let out = run(&format!(
        "layout init --disk {} --system 33M --nos 100M --float 0 --images 33M --force",
        disk.display()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "the layout needs 209715200 bytes (200.0 MiB: 1 MiB for the MBR + system 33.0 MiB \
             + NOS 100.0 MiB + float 0 B + images 33.0 MiB + data at least 33.0 MiB) \
             but the disk holds 146800640 bytes"
        ),
        "{err}"
    );
    assert_eq!(crc(&disk), before, "a refused init wrote");

    ok(&format!(
        "layout init --disk {} --system 33M --nos 4M --float 4M --images 33M \
         --nos-type 0x07 --boot-code {} --force",
        disk.display(),
        code.display()
    ));
    let mbr = sector(&disk);
    assert_eq!(mbr[..440], fs::read(code).unwrap()[..]);
    assert_eq!(sfdisk(&disk)[1], (34 * 2048, 4 * 2048, 0x07, true));
}

#[test]
fn opening_a_missing_disk_names_it() {
    let out = run("layout show --disk /nonexistent/disk.img");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("reprov: error: opening disk /nonexistent/disk.img: No such file or directory"));
}

/// Builds a broken disk from a good one's non-zero MiBs, then breaks it with `f`.
fn broken(good: &Path, dir: &Path, name: &str, f: &dyn Fn(&mut File)) -> PathBuf {
    let path = dir.join(name);
    extract(good, 0, fs::metadata(good).unwrap().len(), &path);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f(&mut file);
    path
}

fn poke(at: u64, bytes: &'static [u8]) -> impl Fn(&mut File) {
    move |file: &mut File| {
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(bytes).unwrap();
    }
}

#[test]
fn broken_disks_are_refused_and_left_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let good = new_disk(dir.path(), 140);
    let slot = |n: u64| 446 + 16 * (n - 1);
    let images = 58 * MIB;
    type Breaker = Box<dyn Fn(&mut File)>;
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "blank",
            Box::new(|f: &mut File| f.set_len(0).and_then(|()| f.set_len(140 * MIB)).unwrap()),
            "no MBR boot signature 0x55AA",
        ),
        (
            "tiny",
            Box::new(|f: &mut File| f.set_len(100).unwrap()),
            "less than one 512-byte sector",
        ),
        (
            "gpt",
            Box::new(poke(slot(1) + 4, &[0xEE])),
            "slot 1 has type 0xEE: this is a GPT disk's protective MBR",
        ),
        (
            "system type",
            Box::new(poke(slot(1) + 4, &[0x07])),
            "slot 1 has type 0x07, expected FAT32 LBA 0x0C or hidden 0x1C",
        ),
        (
            "no NOS",
            Box::new(poke(slot(2) + 4, &[0x00])),
            "slot 2 is empty",
        ),
        (
            "images type",
            Box::new(poke(slot(3) + 4, &[0x83])),
            "slot 3 has type 0x83, expected FAT32 LBA 0x0C for the images partition",
        ),
        (
            "extended",
            Box::new(poke(slot(4) + 4, &[0x0F])),
            "slot 4 has type 0x0F, an extended partition",
        ),
        (
            "zero length",
            Box::new(poke(slot(4) + 12, &[0, 0, 0, 0])),
            "slot 4 has zero length",
        ),
        (
            "misaligned",
            Box::new(poke(slot(4) + 8, &[0x01])),
            "slot 4 starts at sector 186369, not on a 1 MiB boundary",
        ),
        (
            "past the end",
            Box::new(|f: &mut File| f.set_len(120 * MIB).unwrap()),
            "slot 4 ends at byte 146800640, past the end of the disk (125829120 bytes)",
        ),
        (
            "overlap",
            Box::new(poke(slot(2) + 12, &[0x00, 0x00, 0x01])),
            "slots 2 and 3 overlap",
        ),
        (
            "two active",
            Box::new(poke(slot(1), &[0x80])),
            "slots 1 and 2 are both active",
        ),
        (
            "bad boot flag",
            Box::new(poke(slot(3), &[0x01])),
            "slot 3 has boot flag 0x01",
        ),
        (
            "images label",
            Box::new(poke(images + 71, b"DATA       ")),
            "slot 3 has FAT volume label \"DATA\", expected \"IMAGES\"",
        ),
        (
            "images not FAT",
            Box::new(poke(images, &[0u8; 512])),
            "slot 3 holds no readable FAT file system",
        ),
    ];
    for (name, breaker, expected) in &cases {
        let disk = broken(&good, dir.path(), "broken.img", breaker.as_ref());
        let before = crc(&disk);
        for verb in ["show", "hide", "activate system", "grow --by 1M"] {
            let out = run(&format!("layout {verb} --disk {}", disk.display()));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name} / {verb}: accepted");
            let prefix = format!(
                "reprov: error: {} is not an appliance disk: ",
                disk.display()
            );
            assert!(err.starts_with(&prefix), "{name} / {verb}: {err}");
            assert!(err.contains(expected), "{name} / {verb}: {err}");
        }
        assert_eq!(crc(&disk), before, "{name}: the disk changed");
    }
}

/// A fingerprint of a whole file: its length and the CRC32 of each non-zero MiB (the
/// zero test is a memcmp, fast even in a debug build, and these disks are mostly holes).
fn crc(path: &Path) -> (u64, Vec<(u64, u32)>) {
    let mut file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; ZEROS.len()];
    let mut at = 0;
    while at < len {
        let n = usize::try_from((len - at).min(MIB)).unwrap();
        file.read_exact(&mut buf[..n]).unwrap();
        if buf[..n] != ZEROS[..n] {
            chunks.push((at, crc32fast::hash(&buf[..n])));
        }
        at += MIB;
    }
    (len, chunks)
}
