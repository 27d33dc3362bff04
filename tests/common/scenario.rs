//! The re-provisioning scenario: appliance A running on an appliance disk, image B on its
//! images partition, A's identity saved, a job, and the system partition armed (visible
//! and active, as `reprov schedule` leaves it).
//!
//! The artefacts every test shares (NOS images of A and B, B's image, the disk with A
//! installed) are built once per test binary in CARGO_TARGET_TMPDIR; each test copies the
//! disk (sparse) into its own directory and adds what it needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::fixtures::{self, reprov, A_ADDRESS, A_HOSTNAME};
use super::qemu::GUEST_MAC;

/// Appliance B's own identity, baked into its NOS: the restore must replace it with A's.
pub const B_HOSTNAME: &str = "appliance-b";
pub const B_ADDRESS: &str = "10.0.2.99/24";
/// Incompressible bytes in B's NOS, so the apply takes several checkpoints.
pub const B_FILLER_MIB: u64 = 24;
/// The line appliance B prints when it came up with A's identity.
pub fn b_with_a_identity() -> String {
    format!("APPLIANCE name=B hostname={A_HOSTNAME} ip={A_ADDRESS}")
}

/// A's identity as `reprov identity save` takes it: A's hostname, its address on the
/// NIC QEMU gives the guest.
pub fn identity_of_a() -> String {
    format!(
        "hostname = \"{A_HOSTNAME}\"\n\n[[interface]]\nmac = \"{GUEST_MAC}\"\nname = \"eth0\"\naddresses = [\"{A_ADDRESS}\"]\n"
    )
}

/// The shared artefacts.
pub struct Artefacts {
    /// A's disk: recovery installed, NOS = appliance A, A's identity saved; normal
    /// operation (system hidden, NOS active), no job, no image.
    pub disk_a: PathBuf,
    /// NOS of appliance A (64 MiB, no filler), as on `disk_a`.
    pub nos_a: PathBuf,
    /// NOS of appliance B (64 MiB, with the filler).
    pub nos_b: PathBuf,
    /// `reprov image create --from nos-B.img`.
    pub image_b: PathBuf,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("scenario")
}

/// Built on first use, once per test binary.
pub fn artefacts() -> &'static Artefacts {
    static BUILT: OnceLock<Artefacts> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clearing the scenario directory");
        }
        std::fs::create_dir_all(&dir).expect("creating the scenario directory");
        let started = std::time::Instant::now();

        let disk_a = fixtures::recovery_disk(&dir);
        let nos_a = fixtures::nos_image(&dir, "A", A_HOSTNAME, A_ADDRESS);
        install_a(&nos_a, &disk_a);

        let nos_b = nos_image_with_filler(&dir, "B", B_HOSTNAME, B_ADDRESS, 64, B_FILLER_MIB);
        let image_b = dir.join("B.tar");
        make_image(&nos_b, &image_b, "B");
        eprintln!("scenario artefacts built in {:.1?}", started.elapsed());
        Artefacts {
            disk_a,
            nos_a,
            nos_b,
            image_b,
        }
    })
}

/// A NOS image of test appliance `name` of `mib` MiB, with `filler_mib` MiB of random
/// bytes in a file on it (nothing reads it; it makes the image big and incompressible).
pub fn nos_image_with_filler(
    dir: &Path,
    name: &str,
    hostname: &str,
    address: &str,
    mib: u64,
    filler_mib: u64,
) -> PathBuf {
    let nos = dir.join(format!("nos-{name}-{mib}M.img"));
    run(
        &root().join("qemu/make-nos"),
        &[name, hostname, address, s(&nos), &mib.to_string()],
    );
    if filler_mib > 0 {
        let filler = dir.join(format!("filler-{name}"));
        let bytes = fixtures::random_bytes(filler_mib << 20);
        std::fs::write(&filler, bytes).expect("writing the filler");
        let status = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", s(&nos), s(&filler), "::/filler"])
            .status()
            .expect("running mcopy");
        assert!(
            status.success(),
            "mcopy of the filler onto {}",
            nos.display()
        );
        std::fs::remove_file(&filler).expect("removing the filler");
    }
    nos
}

/// `reprov image create --from NOS --out IMAGE --name NAME`.
pub fn make_image(nos: &Path, image: &Path, name: &str) {
    reprov(&[
        "image",
        "create",
        "--from",
        s(nos),
        "--out",
        s(image),
        "--name",
        name,
        "--description",
        &format!("test appliance {name}"),
    ]);
}

/// What a test's disk gets before it boots.
pub enum Job<'a> {
    /// `image add IMAGE` (as `NAME`), then an `apply NAME` job.
    Apply(&'a Path, &'a str),
    /// `image add --factory IMAGE` (as `NAME`), then a `factory NAME` job.
    Factory(&'a Path, &'a str),
    /// A `create` job.
    Create,
}

/// Puts appliance A (`nos_a`) on `disk` in normal operation and saves A's identity.
fn install_a(nos_a: &Path, disk: &Path) {
    fixtures::put_nos(nos_a, disk);
    let identity = disk.with_file_name("identity-a.toml");
    std::fs::write(&identity, identity_of_a()).expect("writing A's identity");
    reprov(&[
        "identity",
        "save",
        "--disk",
        s(disk),
        "--file",
        s(&identity),
    ]);
}

/// A copy of A's disk in `dir` with `job` set and the system partition armed.
pub fn scenario_disk(dir: &Path, job: Job) -> PathBuf {
    let disk = dir.join("disk.img");
    copy_sparse(&artefacts().disk_a, &disk);
    set_job(&disk, job);
    disk
}

/// [`scenario_disk`] with an images partition of `images_mib` MiB instead of 64 (data
/// follows it): A's disk built afresh in `dir`. The shared disk's 64 MiB images
/// partition never has room for a safety backup of the 64 MiB NOS, which recovery
/// makes only when NOS fits there uncompressed.
pub fn scenario_disk_with_images(dir: &Path, images_mib: u64, job: Job) -> PathBuf {
    let layout = fixtures::layout_disk_with_images(dir, &format!("{images_mib}M"));
    let disk = fixtures::install_recovery(layout, &[]);
    install_a(&artefacts().nos_a, &disk);
    set_job(&disk, job);
    disk
}

/// [`scenario_disk`] built afresh in `dir`, its recovery trusting `key` (a `.pub` file:
/// `install-system --trust`). The initramfs is padded with zeros (which the kernel skips)
/// to one byte past a multiple of 4, so the keys archive appended to it must align itself.
pub fn scenario_disk_trusting(dir: &Path, key: &Path, job: Job) -> PathBuf {
    let mut initramfs = std::fs::read(fixtures::recovery_initramfs()).unwrap();
    while initramfs.len() % 4 != 1 {
        initramfs.push(0);
    }
    let odd = dir.join("initrd-odd.gz");
    std::fs::write(&odd, &initramfs).unwrap();
    let layout = fixtures::layout_disk(dir);
    let disk = fixtures::install_recovery_from(layout, &odd, &["--trust", s(key)]);
    install_a(&artefacts().nos_a, &disk);
    set_job(&disk, job);
    disk
}

/// Adds `job`'s image, writes the job and arms the system partition.
fn set_job(disk: &Path, job: Job) {
    let d = s(disk);
    let (kind, name) = match job {
        Job::Apply(image, name) => {
            reprov(&["image", "add", s(image), "--disk", d, "--as", name]);
            ("apply", name)
        }
        Job::Factory(image, name) => {
            reprov(&[
                "image",
                "add",
                s(image),
                "--disk",
                d,
                "--as",
                name,
                "--factory",
            ]);
            ("factory", name)
        }
        Job::Create => ("create", "A.tar"),
    };
    reprov(&["job", "set", "--disk", d, "--kind", kind, "--image", name]);
    arm(disk);
}

/// Makes the system partition visible and active, as `reprov schedule` does.
pub fn arm(disk: &Path) {
    reprov(&["layout", "unhide", "--disk", s(disk)]);
    reprov(&["layout", "activate", "--disk", s(disk), "system"]);
}

/// `cp --sparse=always`.
pub fn copy_sparse(from: &Path, to: &Path) {
    run(Path::new("cp"), &["--sparse=always", s(from), s(to)]);
}

/// `reprov layout show --json`.
pub fn layout(disk: &Path) -> serde_json::Value {
    let text = reprov_out(&["layout", "show", "--json", "--disk", s(disk)]);
    serde_json::from_str(&text).expect("layout show --json prints JSON")
}

/// The partition of `role` in a `layout show --json`.
pub fn partition<'a>(layout: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    layout["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["role"] == role)
        .unwrap_or_else(|| panic!("no {role} partition in {layout:#}"))
}

/// The job file, from `reprov job show`.
pub fn job(disk: &Path) -> toml::Table {
    let text = reprov_out(&["job", "show", "--disk", s(disk)]);
    toml::from_str(&text).expect("job show prints the job file")
}

/// The job's state.
pub fn job_state(disk: &Path) -> String {
    job(disk)["state"].as_str().expect("state").to_string()
}

/// The number of chunks in an image (`reprov image info --json`).
pub fn chunk_count(image: &Path) -> u64 {
    let text = reprov_out(&["image", "info", "--json", s(image)]);
    let info: serde_json::Value = serde_json::from_str(&text).expect("image info --json");
    info["chunk_count"].as_u64().expect("chunk_count")
}

/// The step log's entries (`reprov log --json`).
pub fn log_entries(disk: &Path) -> Vec<serde_json::Value> {
    reprov_out(&["log", "--json", "--disk", s(disk)])
        .lines()
        .map(|line| serde_json::from_str(line).expect("log --json prints JSON lines"))
        .collect()
}

/// The codes of the step log, in order.
pub fn log_codes(disk: &Path) -> Vec<String> {
    log_entries(disk)
        .iter()
        .map(|e| e["code"].as_str().expect("code").to_string())
        .collect()
}

/// The bytes of the NOS partition.
pub fn nos_bytes(disk: &Path) -> Vec<u8> {
    partition_bytes(disk, "nos")
}

/// The bytes of the partition of `role`, read raw from the disk.
fn partition_bytes(disk: &Path, role: &str) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let layout = layout(disk);
    let part = partition(&layout, role);
    let (start, size) = (
        part["start"].as_u64().unwrap(),
        part["size"].as_u64().unwrap(),
    );
    let mut file = std::fs::File::open(disk).expect("opening the disk");
    file.seek(SeekFrom::Start(start))
        .unwrap_or_else(|e| panic!("seeking to the {role} partition: {e}"));
    let mut bytes = vec![0; usize::try_from(size).unwrap()];
    file.read_exact(&mut bytes)
        .unwrap_or_else(|e| panic!("reading the {role} partition: {e}"));
    bytes
}

/// `fsck.vfat -n` of the images partition, read raw from the disk (no mount): clean
/// means exit 0, the dirty bit included. Panics with fsck's report otherwise.
pub fn assert_images_fat_clean(disk: &Path) {
    fsck_images(disk, partition_bytes(disk, "images"));
}

/// [`assert_images_fat_clean`] but for the dirty bit, which a cut while the partition was
/// mounted leaves set (the next clean unmount clears it).
pub fn assert_images_fat_clean_but_dirty(disk: &Path) {
    let mut bytes = partition_bytes(disk, "images");
    // The flag's byte in the boot sector: FAT32's (no 16-bit FAT size) or FAT12/16's.
    let flags = if bytes[0x16..0x18] == [0, 0] {
        0x41
    } else {
        0x25
    };
    bytes[flags] &= !1;
    fsck_images(disk, bytes);
}

fn fsck_images(disk: &Path, bytes: Vec<u8>) {
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), bytes).unwrap();
    let out = std::process::Command::new("fsck.vfat")
        .arg("-n")
        .arg(copy.path())
        .output()
        .expect("running fsck.vfat (dosfstools)");
    assert!(
        out.status.success(),
        "the images partition's FAT on {} is not clean:\n{}{}",
        disk.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Adds `args` to the recovery kernel's command line on `disk` (its syslinux.cfg).
pub fn add_kernel_args(disk: &Path, args: &str) {
    let cfg = reprov::install::syslinux_cfg(false, &[]);
    let line = cfg
        .lines()
        .find(|l| l.trim_start().starts_with("APPEND"))
        .expect("syslinux.cfg has an APPEND line");
    let cfg = cfg.replace(line, &format!("{line} {args}"));
    let file = disk.with_extension("cfg");
    std::fs::write(&file, cfg).unwrap();
    let start = partition(&layout(disk), "system")["start"]
        .as_u64()
        .expect("the system partition's start");
    let status = std::process::Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@{start}", disk.display()))
        .arg(&file)
        .arg("::/syslinux.cfg")
        .status()
        .expect("running mcopy");
    assert!(status.success(), "mcopy of syslinux.cfg");
}

/// The names in `images/` on the images partition, parts and unfinished files included.
pub fn images_on(disk: &Path) -> Vec<String> {
    let mut d = reprov::disk::open_disk(disk).unwrap();
    d.with_store(|store| Ok(store.list("images")?.into_iter().map(|(n, _)| n).collect()))
        .unwrap()
}

/// One QEMU at a time: the tests of a binary run on threads, and the machine is shared.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the reprov binary and returns all its stdout.
pub fn reprov_out(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(args)
        .output()
        .expect("running reprov");
    assert!(
        out.status.success(),
        "reprov {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn run(program: &Path, args: &[&str]) -> String {
    fixtures::run(program, args)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
