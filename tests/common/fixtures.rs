//! Appliance disks for the QEMU tests, made with the project's own scripts and binary,
//! and small in-memory appliances (FAT NOS, images) for the tests that need no QEMU.
//!
//! Built artefacts that every test shares (the recovery initramfs) go to
//! CARGO_TARGET_TMPDIR once per test binary; disks go to each test's own directory.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reprov::disk::Role;

/// Test appliance A's identity, as the NOS made by `qemu/make-nos` carries it.
pub const A_HOSTNAME: &str = "appliance-a";
pub const A_ADDRESS: &str = "10.0.2.15/24";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a program and returns its stdout's last line; panics with its stderr on failure.
pub fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or_default().to_string()
}

/// The newest kernel that has both /boot/vmlinuz-V and /lib/modules/V.
pub fn kernel_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/boot")
        .expect("listing /boot")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&version)
                .is_dir()
                .then_some(version)
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a kernel in /boot with modules in /lib/modules")
}

/// The recovery initramfs (static reprov as /init), built once per test binary.
pub fn recovery_initramfs() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recovery.initrd.gz");
        let out_arg = out.to_str().expect("UTF-8 path");
        run(
            &root().join("scripts/mkinitramfs"),
            &[&kernel_version(), out_arg],
        );
        out
    })
}

/// Runs the reprov binary under test.
pub fn reprov(args: &[&str]) -> String {
    run(Path::new(env!("CARGO_BIN_EXE_reprov")), args)
}

/// A fresh appliance disk `dir/disk.img` from `reprov layout init`, in normal operation
/// (system hidden, NOS active):
///
/// | slot | role   | start (MiB) | size (MiB) | type | file system        |
/// |------|--------|-------------|------------|------|--------------------|
/// | 1    | system | 1           | 64         | 0x1C | FAT32              |
/// | 2    | NOS    | 65          | 64         | 0x0C | none               |
/// | —    | float  | 129         | 32         |      |                    |
/// | 3    | images | 161         | 64         | 0x0C | FAT32 "IMAGES"     |
/// | 4    | data   | 225         | 64         | 0x0C | FAT32 "DATA"       |
pub fn layout_disk(dir: &Path) -> PathBuf {
    layout_disk_with_images(dir, "64M")
}

/// [`layout_disk`] with an images partition of `images` (e.g. `128M`); data follows it.
pub fn layout_disk_with_images(dir: &Path, images: &str) -> PathBuf {
    let disk = dir.join("disk.img");
    reprov(&[
        "layout",
        "init",
        "--disk",
        disk.to_str().expect("UTF-8 path"),
        "--system",
        "64M",
        "--nos",
        "64M",
        "--float",
        "32M",
        "--images",
        images,
        "--data",
        "64M",
        "--nos-type",
        "0x0c",
    ]);
    disk
}

/// A fresh appliance disk in `dir` with the recovery installed and the system partition
/// visible and active, as after `reprov schedule`: it boots into recovery.
pub fn recovery_disk(dir: &Path) -> PathBuf {
    recovery_disk_with(dir, &[])
}

/// [`recovery_disk`], with more `reprov install-system` options (e.g. `--debug`).
pub fn recovery_disk_with(dir: &Path, options: &[&str]) -> PathBuf {
    install_recovery(layout_disk(dir), options)
}

/// Installs the recovery on a fresh appliance `disk` (with more `reprov install-system`
/// `options`) and makes the system partition visible and active; returns `disk`.
pub fn install_recovery(disk: PathBuf, options: &[&str]) -> PathBuf {
    install_recovery_from(disk, recovery_initramfs(), options)
}

/// [`install_recovery`] with another initramfs.
pub fn install_recovery_from(disk: PathBuf, initramfs: &Path, options: &[&str]) -> PathBuf {
    let disk_arg = disk.to_str().expect("UTF-8 path");
    let kernel = format!("/boot/vmlinuz-{}", kernel_version());
    let initramfs = initramfs.to_str().expect("UTF-8 path");
    let mut args = vec![
        "install-system",
        "--disk",
        disk_arg,
        "--kernel",
        &kernel,
        "--initramfs",
        initramfs,
    ];
    args.extend_from_slice(options);
    reprov(&args);
    reprov(&["layout", "unhide", "--disk", disk_arg]);
    reprov(&["layout", "activate", "--disk", disk_arg, "system"]);
    disk
}

/// Makes a NOS partition image of test appliance `name` in `dir`.
pub fn nos_image(dir: &Path, name: &str, hostname: &str, address: &str) -> PathBuf {
    let nos = dir.join(format!("nos-{name}.img"));
    let nos_arg = nos.to_str().expect("UTF-8 path");
    run(
        &root().join("qemu/make-nos"),
        &[name, hostname, address, nos_arg],
    );
    nos
}

/// Writes `nos` onto slot 2 of `disk`, hides the system partition and makes NOS active.
pub fn put_nos(nos: &Path, disk: &Path) {
    let disk = disk.to_str().expect("UTF-8 path");
    run(
        &root().join("qemu/put-nos"),
        &[nos.to_str().expect("UTF-8 path"), disk],
    );
    reprov(&["layout", "hide", "--disk", disk]);
    reprov(&["layout", "activate", "--disk", disk, "nos"]);
}

/// A fresh sparse appliance disk file at `path` for tests that need no QEMU, made with
/// the library (198 MiB: system 34M, NOS 40M of FAT type, float 24M, images 64M, data 34M).
pub fn small_disk(path: &Path) {
    small_disk_with(path, 40, 24, 64);
}

/// A's disk for the recovery console, armed (system visible and active), with image B
/// (40 MiB FAT NOSes both) in the store and no job.
pub fn console_disk(disk: &Path) {
    const MIB: u64 = 1 << 20;
    small_disk(disk);
    let mut d = reprov::disk::open_disk(disk).unwrap();
    let (start, _) = d.range(Role::Nos);
    let mut f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    f.write_all(&fat_nos(40 * MIB, "A", 0)).unwrap();
    let b = image_of(&fat_nos(40 * MIB, "B", 0), "B");
    let store = d.store().unwrap();
    let name = reprov::store::ImageName::new("B.tar").unwrap();
    store.add_image(&name, &b[..], b.len() as u64).unwrap();
    store.unmount().unwrap();
    d.unhide_system();
    d.activate(Role::System);
    d.commit().unwrap();
}

/// [`small_disk`] with NOS, float and images of the sizes given (in MiB).
pub fn small_disk_with(path: &Path, nos: u64, float: u64, images: u64) {
    const MIB: u64 = 1 << 20;
    let sizes = reprov::disk::Sizes {
        system: 34 * MIB,
        nos: nos * MIB,
        float: float * MIB,
        images: images * MIB,
        data: Some(34 * MIB),
        nos_type: reprov::disk::PartType::FAT32_LBA,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("creating the disk file");
    file.set_len(MIB + (34 + nos + float + images + 34) * MIB)
        .expect("sizing the disk file");
    reprov::disk::init(&mut file, &path.display().to_string(), &sizes, None, false)
        .expect("laying out the disk");
}

/// A FAT partition image `part` whose `/etc/hostname` is a directory: restoring an
/// identity into it fails (late in an apply, as an I/O error would).
pub fn with_hostname_dir(part: Vec<u8>) -> Vec<u8> {
    let mut part = std::io::Cursor::new(part);
    {
        let fs = fatfs::FileSystem::new(&mut part, fatfs::FsOptions::new()).unwrap();
        let etc = fs.root_dir().open_dir("etc").unwrap();
        etc.remove("hostname").unwrap();
        etc.create_dir("hostname").unwrap();
        drop(etc);
        fs.unmount().unwrap();
    }
    part.into_inner()
}

/// Deterministic incompressible bytes (xorshift).
pub fn random_bytes(len: u64) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let len = usize::try_from(len).expect("random bytes fit memory");
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A FAT partition image of `len` bytes holding `appliance` = `name`, its own
/// `/etc/hostname`, and `noise` bytes of incompressible data (so images have chunks).
pub fn fat_nos(len: u64, name: &str, noise: u64) -> Vec<u8> {
    use std::io::Write;
    let mut part = std::io::Cursor::new(vec![0u8; usize::try_from(len).unwrap()]);
    fatfs::format_volume(&mut part, fatfs::FormatVolumeOptions::new()).unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut part, fatfs::FsOptions::new()).unwrap();
        let root = fs.root_dir();
        let write = |dir: &fatfs::Dir<_>, file: &str, bytes: &[u8]| {
            dir.create_file(file).unwrap().write_all(bytes).unwrap();
        };
        write(&root, "appliance", name.as_bytes());
        let etc = root.create_dir("etc").unwrap();
        let hostname = format!("appliance-{}\n", name.to_lowercase());
        write(&etc, "hostname", hostname.as_bytes());
        write(&root, "noise", &random_bytes(noise));
        drop((etc, root));
        fs.unmount().unwrap();
    }
    part.into_inner()
}

/// An image (tar bytes) of a partition, in 1 MiB chunks.
pub fn image_of(partition: &[u8], name: &str) -> Vec<u8> {
    let mut options = reprov::image::CreateOptions::new(name);
    options.chunk_size = 1 << 20;
    let mut out = std::io::Cursor::new(Vec::new());
    reprov::image::create(&mut std::io::Cursor::new(partition), &mut out, &options).unwrap();
    out.into_inner()
}

/// A machine with no DMI and no kernel mounts (the test NOS is FAT).
pub fn machine() -> reprov::recovery::runner::Machine {
    reprov::recovery::runner::Machine {
        model: None,
        serial: None,
        mount_nos: |_, _| Err(std::io::Error::other("no kernel mounts in tests")),
        unmount_nos: |_| Err(std::io::Error::other("no kernel mounts in tests")),
        grow_ext4: |_, _| Err(std::io::Error::other("no kernel mounts in tests")),
        keys: Ok(reprov::trust::Keys::none()),
        checkpoint_every: reprov::recovery::runner::CHECKPOINT_EVERY,
    }
}

/// Frees, in every FAT of the partition at `at`, one cluster in the middle of the longest
/// run of clusters chained one to the next (the biggest file's): that file's chain now
/// runs into a free cluster, which the next write would be handed.
pub fn free_a_cluster_of_the_biggest_file(disk: &Path, at: u64) {
    let read_at = |at: u64, len: usize| {
        let mut file = std::fs::File::open(disk).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        let mut buf = vec![0; len];
        file.read_exact(&mut buf).unwrap();
        buf
    };
    let le16 = |b: &[u8], at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let le32 =
        |b: &[u8], at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()));
    let boot = read_at(at, 512);
    let sector = le16(&boot, 11);
    let reserved = le16(&boot, 14) * sector;
    let fats = u64::from(boot[16]);
    let fat_size = le32(&boot, 36) * sector;
    let fat = read_at(at + reserved, 256 << 10);
    let next = |c: u64| le32(&fat, c as usize * 4) & 0x0FFF_FFFF;
    let (mut best, mut run) = ((0, 0), (0, 0));
    for c in 2..(fat.len() / 4) as u64 {
        run = if next(c) == c + 1 {
            (run.0, run.1 + 1)
        } else {
            (c + 1, 0)
        };
        if run.1 > best.1 {
            best = run;
        }
    }
    assert!(best.1 > 8, "no file of several clusters in the FAT");
    let victim = best.0 + best.1 / 2;
    let mut file = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    for fat in 0..fats {
        file.seek(SeekFrom::Start(at + reserved + fat * fat_size + victim * 4))
            .unwrap();
        file.write_all(&[0; 4]).unwrap();
    }
}
