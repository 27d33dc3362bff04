//! Every crash point of a job, with a disk that loses what it was not told to keep.
//!
//! The test disk keeps every write since the last sync in a volatile cache. At crash
//! number k (counting every write and every sync the recovery makes), the power goes:
//! the write in flight is dropped or torn at a 512-byte boundary, and of the unsynced
//! writes before it a random half survives. Then the machine boots again: into recovery
//! while the system partition is active (which may crash again, at random), into the
//! new appliance (whose after-boot closes a job the cut left `committing`) once NOS is.
//! For every k the test asserts where it converged: for an apply, B with A's identity,
//! the job done, the step log ending in R060; for an apply that fails late, A back from
//! the safety backup, the job failed, the log saying so (R082) — never a half-written
//! NOS that boots. A release build tries every crash point (`scripts/test` runs it so);
//! a debug build every 16th.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use reprov::disk::{ApplianceDisk, Device, Role};
use reprov::io::{SyncAll, ZeroRange};
use reprov::recovery::runner;
use reprov::recovery::Outcome;
use reprov::store::{ImageName, Kind, State};

use common::fixtures::{fat_nos, image_of};

/// The test machine with a checkpoint after every chunk: checkpoints are then not paced
/// by the clock, so every run makes the same writes as the counting run and each crash
/// point is reached (and the resume from a checkpoint is cut at each of its writes).
fn machine() -> runner::Machine {
    runner::Machine {
        checkpoint_every: std::time::Duration::ZERO,
        ..common::fixtures::machine()
    }
}

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;

/// Deterministic choices (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }
}

/// The disk's bytes: what it holds for good (the base and the blocks written over it
/// and synced) and what reads see (that, and the writes still in its cache).
struct Medium {
    base: Arc<Vec<u8>>,
    durable: HashMap<u64, Vec<u8>>,
    current: HashMap<u64, Vec<u8>>,
    /// Writes since the last sync, in order.
    pending: Vec<(u64, Vec<u8>)>,
    /// Writes and syncs so far.
    ops: u64,
    /// The op at which the power goes.
    crash_at: Option<u64>,
    crashed: bool,
    rng: Rng,
}

fn block_of<'a>(map: &'a mut HashMap<u64, Vec<u8>>, base: &[u8], n: u64) -> &'a mut Vec<u8> {
    map.entry(n).or_insert_with(|| {
        let start = (n * BLOCK) as usize;
        base[start..start + BLOCK as usize].to_vec()
    })
}

fn put(map: &mut HashMap<u64, Vec<u8>>, base: &[u8], offset: u64, data: &[u8]) {
    let mut at = offset;
    let mut rest = data;
    while !rest.is_empty() {
        let n = at / BLOCK;
        let within = (at % BLOCK) as usize;
        let take = rest.len().min(BLOCK as usize - within);
        block_of(map, base, n)[within..within + take].copy_from_slice(&rest[..take]);
        at += take as u64;
        rest = &rest[take..];
    }
}

fn power_cut() -> io::Error {
    io::Error::other("power cut (test)")
}

impl Medium {
    fn new(
        base: Arc<Vec<u8>>,
        durable: HashMap<u64, Vec<u8>>,
        crash_at: Option<u64>,
        seed: u64,
    ) -> Self {
        Medium {
            base,
            current: durable.clone(),
            durable,
            pending: Vec::new(),
            ops: 0,
            crash_at,
            crashed: false,
            rng: Rng(seed | 1),
        }
    }

    fn len(&self) -> u64 {
        self.base.len() as u64
    }

    /// Counts an op; at the crash point, the power goes (and `in_flight` may be torn).
    fn op(&mut self, in_flight: Option<(u64, &[u8])>) -> io::Result<()> {
        if self.crashed {
            return Err(power_cut());
        }
        self.ops += 1;
        if self.crash_at != Some(self.ops) {
            return Ok(());
        }
        self.crashed = true;
        let mut survivors: Vec<(u64, Vec<u8>)> = Vec::new();
        for (offset, data) in std::mem::take(&mut self.pending) {
            if self.rng.chance(2) {
                survivors.push((offset, data));
            }
        }
        if let Some((offset, data)) = in_flight {
            // Torn: its first sectors reached the disk, or none did.
            let sectors = data.len() as u64 / 512;
            if sectors > 1 && self.rng.chance(2) {
                let keep = (self.rng.next() % sectors) * 512;
                survivors.push((offset, data[..keep as usize].to_vec()));
            }
        }
        let base = Arc::clone(&self.base);
        for (offset, data) in survivors {
            put(&mut self.durable, &base, offset, &data);
        }
        Err(power_cut())
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let mut at = offset;
        let mut filled = 0;
        while filled < buf.len() {
            let n = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let take = (buf.len() - filled).min(BLOCK as usize - within);
            let src = match self.current.get(&n) {
                Some(block) => &block[within..within + take],
                None => &self.base[(at as usize)..(at as usize) + take],
            };
            buf[filled..filled + take].copy_from_slice(src);
            at += take as u64;
            filled += take;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.op(Some((offset, data)))?;
        let base = Arc::clone(&self.base);
        put(&mut self.current, &base, offset, data);
        self.pending.push((offset, data.to_vec()));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.op(None)?;
        let base = Arc::clone(&self.base);
        for (offset, data) in std::mem::take(&mut self.pending) {
            put(&mut self.durable, &base, offset, &data);
        }
        Ok(())
    }
}

/// A handle on the medium with a position of its own.
struct Lossy {
    medium: Arc<Mutex<Medium>>,
    pos: u64,
}

impl Read for Lossy {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let medium = self.medium.lock().unwrap();
        if medium.crashed {
            return Err(power_cut());
        }
        let n = buf
            .len()
            .min(medium.len().saturating_sub(self.pos) as usize);
        medium.read(self.pos, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Lossy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut medium = self.medium.lock().unwrap();
        let n = buf
            .len()
            .min(medium.len().saturating_sub(self.pos) as usize);
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::other("write past the end of the disk"));
        }
        medium.write(self.pos, &buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Lossy {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.medium.lock().unwrap().len();
        self.pos = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::End(d) => len
                .checked_add_signed(d)
                .ok_or_else(|| io::Error::other("seek"))?,
            SeekFrom::Current(d) => self
                .pos
                .checked_add_signed(d)
                .ok_or_else(|| io::Error::other("seek"))?,
        };
        Ok(self.pos)
    }
}

impl SyncAll for Lossy {
    fn sync_all(&mut self) -> io::Result<()> {
        self.medium.lock().unwrap().sync()
    }
}

impl ZeroRange for Lossy {
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; len as usize];
        self.medium.lock().unwrap().write(offset, &zeros)
    }
}

impl Device for Lossy {}

/// A disk that may lose power at one op.
struct Disk(Arc<Mutex<Medium>>);

impl Disk {
    fn open(&self) -> io::Result<Lossy> {
        Ok(Lossy {
            medium: Arc::clone(&self.0),
            pos: 0,
        })
    }
    fn ops(&self) -> u64 {
        self.0.lock().unwrap().ops
    }
    /// What the disk holds for good now (after a crash: what survived it).
    fn durable(&self) -> HashMap<u64, Vec<u8>> {
        let medium = self.0.lock().unwrap();
        if medium.crashed {
            medium.durable.clone()
        } else {
            // No crash: a clean shutdown syncs the cache.
            let mut all = medium.durable.clone();
            let base = Arc::clone(&medium.base);
            for (offset, data) in &medium.pending {
                put(&mut all, &base, *offset, data);
            }
            all
        }
    }
}

/// Appliance A on a 4 MiB NOS, A's identity saved, recovery armed, and the job:
/// - apply: image B of 6 MiB (NOS grows into the float) on the images partition;
/// - rollback: the same, but B's `/etc/hostname` is a directory: the identity restore fails
///   after the whole image is written, and recovery rolls back to the safety backup;
/// - create: pack A into `images/A-copy.tar`;
/// - factory: apply B from `factory/` on the data partition.
fn scenario(job: Job) -> Arc<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    common::fixtures::small_disk_with(&path, 4, 4, 40);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut disk = ApplianceDisk::open(file, "disk.img").unwrap();
    let a = fat_nos(4 * MIB, "A", 100_000);
    let mut b = fat_nos(6 * MIB, "B", 1_500_000);
    if job == Job::RollBack {
        b = common::fixtures::with_hostname_dir(b);
    }
    {
        let mut nos = disk.partition(Role::Nos).unwrap();
        nos.write_all(&a).unwrap();
    }
    let image = image_of(&b, "B");
    let b_tar = ImageName::new("B.tar").unwrap();
    let (kind, name) = match job {
        Job::ApplyB | Job::RollBack => (Kind::Apply, "B.tar"),
        Job::Create => (Kind::Create, CREATED),
        Job::Factory => (Kind::Factory, "B.tar"),
    };
    disk.with_store(|store| {
        if kind == Kind::Apply {
            store.add_image(&b_tar, &image[..], image.len() as u64)?;
        }
        store.write_identity_text(IDENTITY_A.as_bytes())?;
        let job = reprov::store::Job::new(
            kind,
            ImageName::new(name).unwrap(),
            time::OffsetDateTime::now_utc(),
        );
        store.write_job(&job)?;
        Ok(())
    })
    .unwrap();
    if kind == Kind::Factory {
        let data = disk.mount(Role::Data).unwrap();
        data.add_image_in(runner::FACTORY_DIR, &b_tar, &image[..], image.len() as u64)
            .unwrap();
        data.unmount().unwrap();
    }
    disk.unhide_system();
    disk.activate(Role::System);
    disk.commit().unwrap();
    drop(disk);
    Arc::new(std::fs::read(&path).unwrap())
}

/// The image a create job packs NOS into.
const CREATED: &str = "A-copy.tar";

/// `images/A-copy.tar` is whole and holds NOS byte for byte.
fn created_image_is_nos(disk: &Disk) -> Result<(), String> {
    let mut d = ApplianceDisk::open(disk.open().unwrap(), "crash").unwrap();
    let image = d
        .with_store(|store| {
            let name = ImageName::new(CREATED).unwrap();
            let mut file = store.open_image(&name)?;
            let mut bytes = Vec::new();
            io::copy(&mut file, &mut bytes)
                .map_err(|e| reprov::Error::io("reading", CREATED, e))?;
            Ok(bytes)
        })
        .map_err(|e| format!("{CREATED}: {e}"))?;
    let mut nos = Vec::new();
    io::copy(&mut d.partition(Role::Nos).unwrap(), &mut nos).unwrap();
    let mut restored = io::Cursor::new(vec![0u8; nos.len()]);
    reprov::image::apply(
        &mut io::Cursor::new(image),
        &mut restored,
        &mut reprov::image::ApplyOptions::default(),
    )
    .map_err(|e| format!("applying {CREATED}: {e}"))?;
    match restored.into_inner() == nos {
        true => Ok(()),
        false => Err(format!("{CREATED} does not hold NOS")),
    }
}

const IDENTITY_A: &str = "hostname = \"appliance-a\"\n\n[[interface]]\nmac = \"52:54:00:12:34:56\"\naddresses = [\"10.0.2.15/24\"]\ngateway4 = \"10.0.2.2\"\n";

/// Which partition boots: the active one. `None`: the power was cut while the disk was
/// opened (the open repairs an images partition a cut left dirty).
fn boots_nos(disk: &Disk) -> Option<bool> {
    match ApplianceDisk::open(disk.open().unwrap(), "crash") {
        Ok(d) => Some(d.entry(Role::Nos).is_active()),
        Err(_) if disk.0.lock().unwrap().crashed => None,
        Err(e) => panic!("opening the disk: {e}"),
    }
}

/// Boots the machine until it settles, each recovery run crashing at random with
/// probability 1 in 4 (at most `max_cuts` more times). Returns the last disk.
fn boot_until_settled(
    mut state: HashMap<u64, Vec<u8>>,
    base: &Arc<Vec<u8>>,
    rng: &mut Rng,
) -> Result<Disk, String> {
    for boot in 0..40 {
        let crash_at = (boot < 6 && rng.chance(4)).then(|| 1 + rng.next() % 400);
        let disk = Disk(Arc::new(Mutex::new(Medium::new(
            Arc::clone(base),
            state,
            crash_at,
            rng.next(),
        ))));
        match boots_nos(&disk) {
            None => {
                state = disk.durable();
                continue;
            }
            Some(false) => {}
            Some(true) => {
                // The appliance: after-boot closes a job a cut left `committing`.
                let after_boot = ApplianceDisk::open(disk.open().unwrap(), "crash")
                    .map_err(|e| e.to_string())
                    .and_then(|mut d| {
                        reprov::schedule::close_landed_commit(&mut d).map_err(|e| e.to_string())
                    });
                match after_boot {
                    // What it holds, on a disk that no longer loses power, for the checks.
                    Ok(()) => {
                        let durable = disk.durable();
                        return Ok(Disk(Arc::new(Mutex::new(Medium::new(
                            Arc::clone(base),
                            durable,
                            None,
                            1,
                        )))));
                    }
                    Err(_) if disk.0.lock().unwrap().crashed => {
                        state = disk.durable();
                        continue;
                    }
                    Err(e) => return Err(format!("after-boot: {e}")),
                }
            }
        }
        let open = || disk.open();
        let outcome = runner::run_on(&open, Path::new("crash-disk"), &machine());
        let crashed = disk.0.lock().unwrap().crashed;
        match outcome {
            _ if crashed => {}
            Ok(Outcome::Done | Outcome::RolledBack | Outcome::Retry) => {}
            other => return Err(format!("recovery ended with {other:?}")),
        }
        state = disk.durable();
    }
    Err("did not settle in 40 boots".into())
}

/// The NOS file `path`, read through fatfs.
fn nos_file(disk: &Disk, path: &str) -> Option<String> {
    let mut d = ApplianceDisk::open(disk.open().unwrap(), "crash").unwrap();
    let nos = d.partition(Role::Nos).unwrap();
    let fs = fatfs::FileSystem::new(nos, fatfs::FsOptions::new()).ok()?;
    let mut text = String::new();
    fs.root_dir()
        .open_file(path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// `fsck.vfat -n` of the images partition as the disk holds it finds nothing to fix apart
/// from the dirty bit and, on a dirty volume, FSInfo's free count, which a dirty bit says
/// not to trust (a cut loses the writes that clear the bit and update the count; the next
/// mount that writes counts again and clears the bit). Read raw: a mount would repair a
/// dirty volume first.
fn images_fat_is_clean(disk: &Disk) -> Result<(), String> {
    let mut raw = disk.open().unwrap();
    let mut sector = [0u8; 512];
    raw.read_exact(&mut sector).unwrap();
    let images = reprov::disk::Mbr::parse(&sector)
        .unwrap()
        .get(Role::Images.slot());
    let mut bytes = vec![0; usize::try_from(images.len()).unwrap()];
    raw.seek(SeekFrom::Start(images.start())).unwrap();
    raw.read_exact(&mut bytes).unwrap();
    if bytes[0x41] & 1 == 1 {
        // FAT32's dirty bit; the FSInfo sector's free count (at byte 488) as unknown.
        bytes[0x41] &= !1;
        let fs_info = 512 * usize::from(u16::from_le_bytes([bytes[48], bytes[49]]));
        bytes[fs_info + 488..fs_info + 492].copy_from_slice(&[0xFF; 4]);
    }
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), &bytes).unwrap();
    let out = std::process::Command::new("fsck.vfat")
        .arg("-n")
        .arg(copy.path())
        .output()
        .expect("fsck.vfat runs (scripts/deps installs dosfstools)");
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "fsck.vfat -n of the images partition: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn job_and_log(disk: &Disk) -> (Option<reprov::store::Job>, Vec<String>) {
    let mut d = ApplianceDisk::open(disk.open().unwrap(), "crash").unwrap();
    d.with_store(|store| {
        let codes = store
            .read_log()?
            .entries
            .into_iter()
            .map(|e| e.code)
            .collect();
        Ok((store.read_job()?, codes))
    })
    .unwrap()
}

// Each job in two halves of its crash points, so the test runner spreads them over two
// cores.
#[test]
fn an_apply_converges_from_every_odd_crash_point() {
    converges(Job::ApplyB, 1);
}

#[test]
fn an_apply_converges_from_every_even_crash_point() {
    converges(Job::ApplyB, 2);
}

#[test]
fn a_rollback_converges_from_every_odd_crash_point() {
    converges(Job::RollBack, 1);
}

#[test]
fn a_rollback_converges_from_every_even_crash_point() {
    converges(Job::RollBack, 2);
}

#[test]
fn a_create_converges_from_every_odd_crash_point() {
    converges(Job::Create, 1);
}

#[test]
fn a_create_converges_from_every_even_crash_point() {
    converges(Job::Create, 2);
}

#[test]
fn a_factory_restore_converges_from_every_odd_crash_point() {
    converges(Job::Factory, 1);
}

#[test]
fn a_factory_restore_converges_from_every_even_crash_point() {
    converges(Job::Factory, 2);
}

/// The jobs crashed.
#[derive(Clone, Copy, PartialEq)]
enum Job {
    /// Apply B (NOS grows, A is backed up, A's identity goes into B).
    ApplyB,
    /// Apply a B that refuses the identity after it is written: back to A from the backup.
    RollBack,
    /// Pack A into an image on the images partition.
    Create,
    /// Apply B from the data partition's factory directory.
    Factory,
}

impl Job {
    fn what(self) -> &'static str {
        match self {
            Job::ApplyB => "apply with growth, backup and identity restore",
            Job::RollBack => "apply failing late, rolled back to the safety backup",
            Job::Create => "create (NOS packed into an image)",
            Job::Factory => "factory image applied from the data partition",
        }
    }

    /// Where every crash must end.
    fn check(self, disk: &Disk) -> Result<(), String> {
        let (job, log) = job_and_log(disk);
        let job = job.ok_or("no job")?;
        let appliance = nos_file(disk, "appliance");
        let last = log.last().cloned().unwrap_or_default();
        match self {
            Job::ApplyB => match (
                job.state,
                appliance.as_deref(),
                nos_file(disk, "etc/hostname").as_deref(),
            ) {
                (State::Done, Some("B"), Some("appliance-a\n")) if last == "R060" => Ok(()),
                other => Err(format!("ended as {other:?}, log {log:?}")),
            },
            Job::RollBack => match (job.state, appliance.as_deref()) {
                (State::Failed, Some("A"))
                    if log.contains(&"R082".to_string()) && last == "R051" =>
                {
                    Ok(())
                }
                other => Err(format!("ended as {other:?}, log {log:?}")),
            },
            Job::Create => match (job.state, appliance.as_deref()) {
                (State::Done, Some("A")) if last == "R060" => created_image_is_nos(disk),
                other => Err(format!("ended as {other:?}, log {log:?}")),
            },
            Job::Factory => match (job.state, appliance.as_deref()) {
                (State::Done, Some("B")) if last == "R060" => Ok(()),
                other => Err(format!("ended as {other:?}, log {log:?}")),
            },
        }
    }
}

/// Crashes `job` at its crash points `first`, `first + 2`, … (times
/// `REPROV_CRASH_STRIDE`: default 1 in a release build, 16 in a debug one) and checks
/// where each settles.
fn converges(job: Job, first: u64) {
    let base = scenario(job);
    // The run without a crash: how many ops it makes, and what it ends with.
    let started = std::time::Instant::now();
    let clean = Disk(Arc::new(Mutex::new(Medium::new(
        Arc::clone(&base),
        HashMap::new(),
        None,
        1,
    ))));
    let open = || clean.open();
    let outcome = runner::run_on(&open, Path::new("crash-disk"), &machine()).unwrap();
    let expected = match job {
        Job::RollBack => Outcome::RolledBack,
        _ => Outcome::Done,
    };
    assert_eq!(outcome, expected);
    let points = clean.ops();
    job.check(&Disk(Arc::new(Mutex::new(Medium::new(
        Arc::clone(&base),
        clean.durable(),
        None,
        1,
    )))))
    .expect("the run without a crash ends as it should");
    eprintln!(
        "{}: the clean run makes {points} writes and syncs, in {:?}",
        job.what(),
        started.elapsed()
    );

    // Every crash point optimised (scripts/test runs it so); a sample in a debug build.
    let stride: u64 = std::env::var("REPROV_CRASH_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 16 } else { 1 });
    let mut rng = Rng(0x5EED + first);
    let (mut tried, mut converged) = (0u64, 0u64);
    let mut failures = Vec::new();
    // `REPROV_CRASH_ONLY=859,1167`: just those points (to study a failure).
    let only: Option<Vec<u64>> = std::env::var("REPROV_CRASH_ONLY").ok().map(|list| {
        list.split(',')
            .filter_map(|k| k.trim().parse().ok())
            .collect()
    });
    let fsck_every = if only.is_some() { 1 } else { 8 };
    let chosen: Vec<u64> = match only {
        Some(only) => only.into_iter().filter(|k| k % 2 == first % 2).collect(),
        None => (first..=points).step_by(2 * stride as usize).collect(),
    };
    let mut unreached = Vec::new();
    let mut fscked = 0;
    for k in chosen {
        tried += 1;
        let disk = Disk(Arc::new(Mutex::new(Medium::new(
            Arc::clone(&base),
            HashMap::new(),
            Some(k),
            k,
        ))));
        let open = || disk.open();
        let _ = runner::run_on(&open, Path::new("crash-disk"), &machine());
        if !disk.0.lock().unwrap().crashed {
            unreached.push(k);
        }
        let settled = boot_until_settled(disk.durable(), &base, &mut rng).and_then(|disk| {
            // fsck first, of the disk as the last boot left it; then the job's checks,
            // which mount it. fsck for a sample (every 8th point tried, every one named by REPROV_CRASH_ONLY):
            // each costs a copy of the partition. The cuts left lost clusters, FAT copies
            // that differ and chains into free clusters; the mount after one repairs them.
            if (tried - 1) % fsck_every == 0 {
                fscked += 1;
                images_fat_is_clean(&disk)?;
            }
            job.check(&disk)
        });
        match settled {
            Ok(()) => converged += 1,
            Err(why) => failures.push(format!("crash point {k}: {why}")),
        }
        if tried % 100 == 0 {
            eprintln!(
                "{}: {tried} crash points tried, {converged} converged",
                job.what()
            );
        }
    }
    let half = if first == 1 { "odd" } else { "even" };
    println!(
        "{}: {points} crash points (writes and syncs); the {half} ones: {tried} tried, \
         {converged} converged, {fscked} of them checked clean by fsck.vfat -n",
        job.what()
    );
    // A run may write a few times less than the counting run (a log line a byte shorter,
    // a timestamp's digits, may need one cluster less): such a run ends uncut, having
    // converged as well. Anywhere else, an unreached point is writes that went missing.
    let tail = points.saturating_sub(16);
    assert!(
        unreached.iter().all(|&k| k > tail),
        "crash points {unreached:?} were never reached: the runs did not make the writes \
         the counting run made"
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} did not converge:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
