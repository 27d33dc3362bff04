//! Disks nobody here made: damaged file systems, floats that hold data, partition tables
//! with impossible numbers. Each is refused with an error that names what is wrong, in
//! bounded time, before anything is written.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::layout_disk;

const MIB: u64 = 1 << 20;
/// Where `layout_disk` puts the images partition.
const IMAGES_AT: u64 = 161 * MIB;

/// Runs the reprov binary, killed after `limit`: (success, stdout, stderr). A command that
/// is still running at the limit fails the test: it hangs.
fn reprov_within(limit: Duration, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "reprov {} still runs after {limit:?}: it hangs",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.unwrap().read_to_string(&mut out).unwrap();
    child.stderr.unwrap().read_to_string(&mut err).unwrap();
    (status.success(), out, err)
}

fn read_at(disk: &Path, at: u64, len: usize) -> Vec<u8> {
    let mut file = std::fs::File::open(disk).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0; len];
    file.read_exact(&mut buf).unwrap();
    buf
}

fn write_at(disk: &Path, at: u64, bytes: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(disk).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(bytes).unwrap();
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

/// Makes the FAT32 root directory of the partition at `at` a chain that loops onto
/// itself with no end-of-directory entry in it: every free slot of its cluster becomes a
/// deleted entry, and its FAT entry (in every FAT) names the cluster itself.
fn loop_root_directory(disk: &Path, at: u64) {
    let boot = read_at(disk, at, 512);
    let sector = le16(&boot, 11);
    let cluster = u64::from(boot[13]) * sector;
    let reserved = le16(&boot, 14) * sector;
    let fats = u64::from(boot[16]);
    let fat_size = le32(&boot, 36) * sector;
    let root = le32(&boot, 44);
    let root_at = at + reserved + fats * fat_size + (root - 2) * cluster;
    let mut dir = read_at(disk, root_at, cluster as usize);
    for entry in dir.chunks_mut(32).filter(|e| e[0] == 0) {
        entry[0] = 0xE5;
    }
    write_at(disk, root_at, &dir);
    for fat in 0..fats {
        write_at(
            disk,
            at + reserved + fat * fat_size + root * 4,
            &(root as u32).to_le_bytes(),
        );
    }
}

#[test]
fn a_looping_directory_on_the_images_partition_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let d = disk.to_str().unwrap();
    let identity = dir.path().join("identity.toml");
    std::fs::write(&identity, "hostname = \"web-07\"\n").unwrap();
    let image = image_of_len(dir.path(), "small", 100_000);
    let (ok, _, err) = reprov_within(Duration::from_secs(30), &["log", "--disk", d]);
    assert!(ok, "log on the intact disk: {err}");

    loop_root_directory(&disk, IMAGES_AT);
    let before = std::fs::read(&disk).unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["job", "show", "--disk", d],
        vec![
            "job",
            "set",
            "--disk",
            d,
            "--kind",
            "apply",
            "--image",
            "small.tar",
        ],
        vec!["log", "--disk", d],
        vec![
            "identity",
            "save",
            "--disk",
            d,
            "--file",
            identity.to_str().unwrap(),
        ],
        vec!["image", "add", "--disk", d, image.to_str().unwrap()],
        vec!["image", "list", "--disk", d],
    ];
    for args in commands {
        let (ok, _, err) = reprov_within(Duration::from_secs(30), &args);
        assert!(
            !ok,
            "reprov {} succeeded on a looping directory",
            args.join(" ")
        );
        assert!(
            err.contains("cluster chain loops") || err.contains("longer than the file system"),
            "reprov {}: the error names the loop: {err}",
            args.join(" ")
        );
    }
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "a refused command changed the disk"
    );
}

#[test]
fn a_damaged_images_partition_is_read_but_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let d = disk.to_str().unwrap();
    // Of random bytes: an image of thousands of clusters (text compresses to a few).
    let part = dir.path().join("small.part");
    std::fs::write(&part, common::fixtures::random_bytes(2 * MIB)).unwrap();
    let image = dir.path().join("small.tar");
    let (p, i) = (part.to_str().unwrap(), image.to_str().unwrap());
    let create = [
        "image", "create", "--from", p, "--out", i, "--name", "small",
    ];
    let (ok, _, err) = reprov_within(Duration::from_secs(60), &create);
    assert!(ok, "image create: {err}");
    let (ok, _, err) = reprov_within(Duration::from_secs(60), &["image", "add", "--disk", d, i]);
    assert!(ok, "image add on the intact disk: {err}");

    // Damage no power cut explains: the volume says it was unmounted cleanly.
    common::fixtures::free_a_cluster_of_the_biggest_file(&disk, IMAGES_AT);
    let before = std::fs::read(&disk).unwrap();
    let other = image_of_len(dir.path(), "other", 2 * MIB);
    let identity = dir.path().join("identity.toml");
    std::fs::write(&identity, "hostname = \"web-07\"\n").unwrap();
    let writes: Vec<Vec<&str>> = vec![
        vec!["image", "add", "--disk", d, other.to_str().unwrap()],
        vec![
            "job",
            "set",
            "--disk",
            d,
            "--kind",
            "apply",
            "--image",
            "small.tar",
        ],
        vec![
            "identity",
            "save",
            "--disk",
            d,
            "--file",
            identity.to_str().unwrap(),
        ],
    ];
    for args in writes {
        let (ok, _, err) = reprov_within(Duration::from_secs(30), &args);
        assert!(!ok, "reprov {} wrote to a damaged FAT", args.join(" "));
        assert!(
            err.contains("cluster chains that run into a free") && err.contains("fsck.vfat"),
            "reprov {}: the error says what is damaged and what to do: {err}",
            args.join(" ")
        );
    }
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "a refused write changed the disk"
    );
    // Reading goes on, and says what it found.
    let (ok, out, err) = reprov_within(Duration::from_secs(30), &["image", "list", "--disk", d]);
    assert!(ok && out.contains("small.tar"), "image list: {out}{err}");
    assert!(err.contains("damaged"), "image list warns: {err}");
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "reading changed the disk"
    );
}

/// Where `layout_disk` puts the float (after NOS, 32 MiB).
const FLOAT_AT: u64 = 129 * MIB;

/// An image of a `len`-byte partition of text (compressible, quick to make).
fn image_of_len(dir: &Path, name: &str, len: u64) -> std::path::PathBuf {
    let part = dir.join(format!("{name}.part"));
    let line = format!("{name}: a line of a partition that is not a file system\n");
    let mut bytes = line.repeat((len as usize).div_ceil(line.len()));
    bytes.truncate(len as usize);
    std::fs::write(&part, bytes).unwrap();
    let image = dir.join(format!("{name}.tar"));
    let (ok, _, err) = reprov_within(
        Duration::from_secs(120),
        &[
            "image",
            "create",
            "--from",
            part.to_str().unwrap(),
            "--out",
            image.to_str().unwrap(),
            "--name",
            name,
        ],
    );
    assert!(ok, "image create: {err}");
    image
}

#[test]
fn nos_grows_only_over_a_float_of_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let d = disk.to_str().unwrap();
    // 80 MiB: more than NOS (64 MiB), within NOS and the float (96 MiB).
    let image = image_of_len(dir.path(), "big", 80 * MIB);

    let (ok, out, err) = reprov_within(Duration::from_secs(30), &["layout", "show", "--disk", d]);
    assert!(ok, "{err}");
    assert!(
        out.contains("float after NOS: 32.0 MiB (33554432 bytes) free (all zero)"),
        "{out}"
    );

    // Somebody's file system in the float: an ext4 superblock magic, and 3 MiB of data.
    write_at(&disk, FLOAT_AT + 1024 + 56, &[0x53, 0xEF]);
    write_at(&disk, FLOAT_AT + 8 * MIB, &vec![0xA5; 3 * MIB as usize]);
    let before = std::fs::read(&disk).unwrap();

    let (ok, out, err) = reprov_within(Duration::from_secs(30), &["layout", "show", "--disk", d]);
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "NOT free: 3.0 MiB of non-zero data at float offsets 0x400–0x600, 0x800000–0xb00000"
        ),
        "{out}"
    );
    for args in [
        vec!["layout", "grow", "--disk", d, "--by", "16M"],
        vec!["image", "apply", "--disk", d, image.to_str().unwrap()],
    ] {
        let (ok, _, err) = reprov_within(Duration::from_secs(120), &args);
        assert!(!ok, "reprov {} grew NOS over data", args.join(" "));
        assert!(err.contains("holds 3.0 MiB of non-zero data"), "{err}");
        assert!(
            err.contains("nothing was written") && err.contains("--force-float"),
            "{err}"
        );
        assert!(
            std::fs::read(&disk).unwrap() == before,
            "reprov {} wrote",
            args.join(" ")
        );
    }
    // Only the part of the float NOS takes counts: 4 MiB of it is zeros.
    let (ok, _, err) = reprov_within(
        Duration::from_secs(30),
        &["layout", "grow", "--disk", d, "--by", "4M"],
    );
    assert!(!ok, "the superblock lies in the first 4 MiB");
    assert!(err.contains("0x400–0x600"), "{err}");

    // The operator's word.
    let (ok, _, err) = reprov_within(
        Duration::from_secs(120),
        &[
            "image",
            "apply",
            "--disk",
            d,
            "--force-float",
            image.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("over data (--force-float)"),
        "a warning says what was overwritten: {err}"
    );
}

#[test]
fn inputs_that_are_not_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let d = disk.to_str().unwrap();
    let fifo = dir.path().join("image.tar");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let f = fifo.to_str().unwrap();
    let part = dir.path().join("part");
    let p = part.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["image", "apply", f, "--to", p],
        vec!["image", "apply", f, "--disk", d],
        vec!["image", "verify", f],
        vec!["image", "info", f],
        vec!["image", "add", "--disk", d, f],
        vec!["image", "create", "--from", f, "--out", p, "--name", "x"],
        vec!["identity", "save", "--disk", d, "--file", f],
        vec!["upload", "--config", f, f],
    ];
    for args in commands {
        let (ok, _, err) = reprov_within(Duration::from_secs(20), &args);
        assert!(!ok, "reprov {} accepted a FIFO", args.join(" "));
        assert!(
            err.contains("is a FIFO (named pipe), not a regular file"),
            "reprov {}: {err}",
            args.join(" ")
        );
    }
}

/// A bad chunk at the very end of an image that needs NOS to grow: the command-line
/// apply finds it before its first write, as the recovery does.
#[test]
fn the_command_line_apply_refuses_a_bad_image_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let d = disk.to_str().unwrap();
    let image = image_of_len(dir.path(), "big", 80 * MIB);
    let mut bytes = std::fs::read(&image).unwrap();
    // The last chunk's data lies just before the tar's two zero blocks (and padding).
    let end = bytes.len() - 1024;
    let last = bytes[..end].iter().rposition(|b| *b != 0).unwrap();
    bytes[last - 8] ^= 0x40;
    std::fs::write(&image, &bytes).unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, vec![0x11; (80 * MIB) as usize]).unwrap();
    let before = std::fs::read(&disk).unwrap();
    for args in [
        vec!["image", "apply", image.to_str().unwrap(), "--disk", d],
        vec![
            "image",
            "apply",
            image.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ],
    ] {
        let (ok, _, err) = reprov_within(Duration::from_secs(120), &args);
        assert!(!ok, "reprov {} applied a damaged image", args.join(" "));
        assert!(err.contains("chunk"), "{err}");
    }
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "the disk (MBR, NOS) was written"
    );
    assert!(
        std::fs::read(&target).unwrap().iter().all(|b| *b == 0x11),
        "the target was written"
    );
}

/// Sets slot `slot`'s start and length in sectors in the MBR of `disk`.
fn set_slot(disk: &Path, slot: u64, start: u32, sectors: u32) {
    let at = 446 + (slot - 1) * 16;
    write_at(disk, at + 8, &start.to_le_bytes());
    write_at(disk, at + 12, &sectors.to_le_bytes());
}

#[test]
fn partition_entries_past_what_an_mbr_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("big.img");
    let d = disk.to_str().unwrap();
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(3 << 40)
        .unwrap(); // 3 TiB, sparse
    let (ok, out, err) = reprov_within(
        Duration::from_secs(60),
        &[
            "layout", "init", "--disk", d, "--system", "64M", "--nos", "1G", "--float", "1G",
            "--images", "2G",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("an MBR addresses only the first 2.0 TiB: the last 1.0 TiB (1099511627776 bytes) stay unused"),
        "layout init says what it cannot address: {err}"
    );
    assert!(
        out.contains("4294967296"),
        "data ends at sector 2^32: {out}"
    );
    let data_start = 8521728;

    // Past 2^32 sectors: the u32 length a tool would add to the start wraps.
    for (what, start, sectors) in [
        ("past 2^32", data_start, u32::MAX - 1000),
        ("wrapping u32", u32::MAX - 2047, 4096),
    ] {
        set_slot(&disk, 4, start, sectors);
        let before = std::fs::read(dir.path().join("big.img"))
            .map(|b| b.len())
            .ok();
        for args in [
            vec!["layout", "show", "--disk", d],
            vec!["layout", "grow", "--disk", d, "--by", "16M"],
            vec!["layout", "hide", "--disk", d],
            vec!["job", "show", "--disk", d],
        ] {
            let (ok, _, err) = reprov_within(Duration::from_secs(30), &args);
            assert!(!ok, "{what}: reprov {} took the entry", args.join(" "));
            assert!(
                err.contains("past the 2^32 sectors (2 TiB) an MBR can address"),
                "{what}: {err}"
            );
        }
        assert_eq!(
            before,
            std::fs::read(dir.path().join("big.img"))
                .map(|b| b.len())
                .ok()
        );
    }
}
