//! The job runner: what recovery does with the job on the images partition.
//!
//! The rule that makes it safe: until the commit the system partition stays active, so
//! a power cut at any moment brings the machine back here, and the job converges — a
//! `running` job resumes from its checkpoint, a `committing` one just commits again.
//! Every step is idempotent, and every step is logged (console and step log) with its code.
//!
//! The disk is opened more than once: one handle edits the MBR and writes NOS, the others
//! mount the images (and data) partitions to read the image and record checkpoints. Only
//! one file system instance per partition is ever mounted at a time.

use std::fs::OpenOptions;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Outcome;
use crate::disk::{ApplianceDisk, Device, Opener, Role};
use crate::identity::{self, Identity};
use crate::image::{self, ApplyOptions, CreateOptions};
use crate::io::{Show, SyncOnFlush, Window};
use crate::store::{Code, ImageName, Job, Kind as JobKind, State as JobState, Store, IMAGES_DIR};
use crate::trust;

/// Where the factory image lives on the data partition (the "recovery CD" on disk).
pub const FACTORY_DIR: &str = "factory";
/// The safety backup of NOS made before an apply, on the images partition.
pub const BACKUP_IMAGE: &str = "previous.tar";
/// Where recovery mounts a NOS that is not FAT (ext4) to restore the identity.
const NOS_MOUNT: &str = "/run/reprov/nos";
/// How often an apply syncs NOS and records its checkpoint in the job, on a real machine.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// A partition's file system mounted through its own handle on the disk, synced on
/// every flush so each job write and log entry is durable.
type Mounted<D> = Store<SyncOnFlush<Window<D>>>;

/// What the runner needs from the machine it runs on.
pub struct Machine {
    /// The firmware's model and serial number (DMI), for naming created images.
    pub model: Option<String>,
    pub serial: Option<String>,
    /// Mounts a non-FAT NOS partition (its device path) at a directory, and unmounts it.
    pub mount_nos: fn(&Path, &Path) -> std::io::Result<()>,
    pub unmount_nos: fn(&Path) -> std::io::Result<()>,
    /// Grows the ext4 file system mounted at a directory to a number of blocks, online.
    pub grow_ext4: fn(&Path, u64) -> std::io::Result<()>,
    /// The keys a job's image must be signed by (none: images are not checked).
    pub keys: Result<trust::Keys, String>,
    /// How often an apply makes NOS durable and records its checkpoint
    /// ([`CHECKPOINT_EVERY`]; zero: after every chunk, which makes the writes of a run
    /// the same each time, for tests that cut at each of them).
    pub checkpoint_every: Duration,
}

impl Machine {
    /// This machine, as the recovery sees it (DMI from /sys, mounts through the kernel),
    /// trusting the keys in the initramfs, which must include `expected_keys` (the
    /// kernel command line's `reprov.trust`).
    pub fn this(expected_keys: &[String]) -> Self {
        Machine {
            model: identity::dmi("product_name"),
            serial: identity::dmi("product_serial"),
            mount_nos: |device, at| {
                let device = device.to_str().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "non-UTF-8 device path")
                })?;
                crate::kernel::mount::mount(device, at, "ext4", None)
            },
            unmount_nos: crate::kernel::mount::unmount,
            grow_ext4: crate::kernel::mount::grow_ext4,
            keys: trusted_keys(Path::new(trust::KEYS_DIR), expected_keys),
            checkpoint_every: CHECKPOINT_EVERY,
        }
    }
}

/// The keys in `dir`, which must hold every key of `expected` (the kernel command line's
/// `reprov.trust`). A key that does not load, or one that is missing (an initramfs that
/// lost its keys), refuses every image rather than none.
pub fn trusted_keys(dir: &Path, expected: &[String]) -> Result<trust::Keys, String> {
    let keys = trust::Keys::load_dir(dir).map_err(|e| e.to_string())?;
    let have = keys.ids();
    let missing: Vec<&str> = expected
        .iter()
        .filter(|id| !have.contains(id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the recovery was installed to trust key(s) {} (reprov.trust on the kernel \
             command line), but they are not in {}: the initramfs lost its keys; install \
             the recovery again with `install-system --trust`",
            missing.join(", "),
            dir.display()
        ));
    }
    Ok(keys)
}

/// Runs the pending job on the appliance disk at `device` (a block device, or a disk
/// image file in tests). Writes to the disk. On a failure the job is marked `failed`
/// with its reason, the error is logged with its code, and the system partition stays
/// active.
pub fn run(device: &Path, machine: &Machine) -> crate::Result<Outcome> {
    run_on(&open_file(device), device, machine)
}

/// The disk at `device`, opened read-write (each call a handle of its own).
fn open_file(device: &Path) -> impl Fn() -> std::io::Result<std::fs::File> + '_ {
    move || OpenOptions::new().read(true).write(true).open(device)
}

/// Opens the appliance disk through `open` and detects its layout.
fn open_disk<D: Device>(open: Opener<D>, name: &Path) -> crate::Result<ApplianceDisk<D>> {
    let device = open().map_err(|e| crate::Error::io("opening disk", name.display(), e))?;
    let disk = ApplianceDisk::open(device, &name.display().to_string())?;
    Ok(match D::tell_kernel() {
        Some(tell) => disk.telling_kernel(tell),
        None => disk,
    })
}

/// [`run`] on a disk opened through `open` (named `name` in messages): the crash tests
/// run it on a disk of their own.
pub fn run_on<D: Device>(
    open: Opener<D>,
    name: &Path,
    machine: &Machine,
) -> crate::Result<Outcome> {
    let device = name;
    let mut disk = open_disk(open, device)?;
    let job = disk.with_store(|store| Ok(store.read_job()?))?;
    let Some(job) = job else {
        note(&mut disk, Code::NoJob, None)?;
        return Ok(Outcome::NoJob);
    };
    let what = format!("{} {}", job.kind.as_str(), job.image.as_str());
    match job.state {
        JobState::Done => {
            log::info!("the last job ({what}) is done; nothing to do");
            Ok(Outcome::NoJob)
        }
        JobState::Failed => Err(super::Error::JobFailed {
            job: what,
            why: job.last_error.clone().unwrap_or_default(),
        }
        .into()),
        JobState::Committing => {
            log::info!("the job ({what}) was committing when recovery stopped: committing again");
            commit(&mut disk, job)
        }
        JobState::Pending | JobState::Running => {
            let job = job.start()?;
            disk.with_store(|store| {
                // A partition left full (by an older reprov, or by hand) first gets back
                // the room the job and the step log need; older images make way.
                let reserve = store.make_room(IMAGES_DIR, 0, &[], "the job and step log");
                if let Err(e) = reserve {
                    log::warn!("{e}");
                }
                store.write_job(&job)?;
                Ok(store.step(
                    Code::JobRead,
                    &format!(
                        "{what}, attempt {}, from chunk {}",
                        job.attempts, job.checkpoint
                    ),
                )?)
            })?;
            let mut runner = Runner {
                device: device.to_path_buf(),
                open,
                disk,
                job,
                machine,
            };
            // Failed attempts are bounded by the job; starts cut short (power cuts,
            // crashes) apart, by a larger bound of their own.
            let earlier = runner.job.attempts - 1;
            let cut_short = earlier.saturating_sub(runner.job.failures);
            if runner.job.failures >= runner.job.max_attempts
                || cut_short > crate::store::MAX_UNFINISHED_STARTS
            {
                let error = super::Error::TooManyAttempts {
                    job: what,
                    started: earlier,
                    failures: runner.job.failures,
                    max_failures: runner.job.max_attempts,
                    max_cut_short: crate::store::MAX_UNFINISHED_STARTS,
                };
                return runner.give_up(error.into(), Code::TooManyAttempts);
            }
            match runner.execute() {
                Ok(()) => commit(&mut runner.disk, runner.job),
                Err(error) => {
                    let code = code_for(&error);
                    runner.give_up(error, code)
                }
            }
        }
    }
}

/// The job recovery would run now (pending, running or committing), if any. Reads only.
pub fn job_to_run(device: &Path) -> crate::Result<Option<Job>> {
    let mut disk = open_disk(&open_file(device), device)?;
    let job = disk.with_store(|store| Ok(store.read_job()?))?;
    Ok(job.filter(|job| {
        matches!(
            job.state,
            JobState::Pending | JobState::Running | JobState::Committing
        )
    }))
}

/// One job in progress.
struct Runner<'a, D: Device> {
    device: PathBuf,
    /// More handles on the disk, for the file systems the job mounts.
    open: Opener<'a, D>,
    disk: ApplianceDisk<D>,
    job: Job,
    machine: &'a Machine,
}

impl<D: Device> Runner<'_, D> {
    /// Everything up to (not including) the commit.
    fn execute(&mut self) -> crate::Result<()> {
        match self.job.kind {
            JobKind::Apply => self.apply(FromStore::Images),
            JobKind::Factory => self.apply(FromStore::Factory),
            JobKind::Create => self.create(),
        }
    }

    /// The job's image onto NOS: validate, back NOS up, grow, stream (resumable), check,
    /// restore the identity.
    fn apply(&mut self, from: FromStore) -> crate::Result<()> {
        // Everything that can be known up front is checked before the first write.
        // A closure, not the function item: it takes the store's borrow as it comes.
        #[allow(clippy::redundant_closure)]
        let identity = self.disk.with_store(|store| identity::load(store))?;
        if identity.is_none() {
            log::warn!("no saved identity on the images partition: the new OS keeps its own");
        }
        let name = self.job.image.clone();
        self.write_image(from, &name, identity.as_ref(), true)
    }

    /// Validate, grow, stream, check, restore identity: image `name` onto NOS. With
    /// `as_job`, the apply backs NOS up first (on a fresh start), resumes from the job's
    /// checkpoint and records checkpoints; without, it writes the whole image (a rollback).
    fn write_image(
        &mut self,
        from: FromStore,
        name: &ImageName,
        identity: Option<&Identity>,
        as_job: bool,
    ) -> crate::Result<()> {
        // Each pass over the image's data is timed in the step log (validation, write,
        // read-back), so an operator sees where a re-provisioning spends its time.
        let validating = Instant::now();
        // The manifest first: a too-big or untrusted image is refused without reading
        // it all. The safety backup and the factory image a rollback writes are this
        // disk's own, never fetched: only a job's image must be signed.
        let keys = match (&self.machine.keys, as_job) {
            (_, false) => None,
            (Ok(keys), true) => Some(keys),
            (Err(why), true) => {
                return Err(trust::Error::BadKey {
                    path: PathBuf::from(trust::KEYS_DIR),
                    why: why.clone(),
                }
                .into())
            }
        };
        let (manifest, verdict) = with_image_store(
            (self.open, &self.device),
            Stores::of(&self.disk),
            from,
            name,
            |image, _| {
                let mut image = &mut *image;
                let layout = image::open(&mut image)?;
                let verdict = match keys {
                    Some(keys) => Some(keys.check_image(&mut image, &layout)?),
                    None => None,
                };
                Ok((layout.manifest, verdict))
            },
        )?;
        match &verdict {
            Some(trust::Verdict::NotChecked) => log::warn!("{}", trust::Keys::none().describe()),
            Some(trusted) => log::info!("{name}: {trusted}"),
            None => {}
        }
        let (_, nos_len) = self.disk.range(Role::Nos);
        if let Some(new_len) =
            image::nos_growth(manifest.source_size, nos_len, self.disk.float_len())?
        {
            self.disk.check_growth(new_len)?;
        }
        let checked_manifest = validating.elapsed();
        with_image_store(
            (self.open, &self.device),
            Stores::of(&self.disk),
            from,
            name,
            |image, _| Ok(image::verify_stored(&mut &mut *image, Show::Console)?),
        )?;
        self.note(
            Code::ImageValidated,
            &format!(
                "{} ({}), {} chunks{}; in {} (manifest{} {}, every chunk {})",
                manifest.name,
                crate::units::format_size(manifest.source_size),
                manifest.chunks.len(),
                verdict.as_ref().map_or(String::new(), |v| format!(", {v}")),
                seconds(validating.elapsed()),
                if keys.is_some() { " and signature" } else { "" },
                seconds(checked_manifest),
                seconds(validating.elapsed().saturating_sub(checked_manifest)),
            ),
        )?;
        // NOS still holds the previous appliance, wherever an earlier start was cut.
        if as_job && !self.job.nos_written {
            self.safety_backup()?;
        }
        // Its own commit, before NOS is written: nothing is ever written past the end of
        // NOS as the MBR on the disk describes it. The system partition stays active.
        image::grow_nos_for(&mut self.disk, manifest.source_size)?;
        let (_, grown_len) = self.disk.range(Role::Nos);
        if grown_len != nos_len {
            self.note(
                Code::NosGrown,
                &format!(
                    "from {} to {}",
                    crate::units::format_size(nos_len),
                    crate::units::format_size(grown_len)
                ),
            )?;
        }

        // A checkpoint at the end means the write was whole, and the identity restore may
        // have changed NOS since (the read-back check would then fail): write it all
        // again. The job's checkpoint only grows, so it stays at the end meanwhile.
        let chunks = u64::try_from(manifest.chunks.len()).unwrap_or(u64::MAX);
        let resume_from = if !as_job || self.job.checkpoint >= chunks {
            0
        } else {
            self.job.checkpoint
        };
        let detail = if as_job {
            format!("from chunk {resume_from}")
        } else {
            format!("{name} from chunk 0")
        };
        if !self.job.nos_written {
            // Durable before NOS's first byte changes: from here on no backup of NOS may
            // be taken, and a failure has something to roll back.
            self.job.nos_written = true;
            let job = self.job.clone();
            self.disk.with_store(|store| Ok(store.write_job(&job)?))?;
        }
        self.note(Code::ApplyStarted, &detail)?;
        let writing = Instant::now();
        let mut job = self.job.clone();
        let stores = Stores::of(&self.disk);
        let disk = &mut self.disk;
        let manifest = with_image_store(
            (self.open, &self.device),
            stores,
            from,
            name,
            |image, jobs| {
                let mut record = |chunks: u64| -> Result<(), image::CheckpointError> {
                    if as_job && chunks > job.checkpoint {
                        job = job.checkpoint(chunks)?;
                        jobs.write_job(&job)?;
                    }
                    Ok(jobs.step(Code::ApplyProgress, &format!("{chunks} chunks durable"))?)
                };
                let mut options = ApplyOptions {
                    resume_from,
                    checkpoint_every: self.machine.checkpoint_every,
                    on_checkpoint: Some(&mut record),
                    show: Show::Console,
                };
                let mut image = image;
                image::apply_to_nos(&mut image, disk, &mut options)
            },
        )?;
        self.job = job;
        let detail = format!("{} in {}", manifest.name, seconds(writing.elapsed()));
        self.note(Code::ApplyDone, &detail)?;

        // What is on NOS now decides its type: its own commit, the system partition
        // still active, so a later resume or a `committing` job finds it on the disk.
        let was = self.disk.entry(Role::Nos).ptype;
        if let Some(ptype) = manifest.partition_type.filter(|t| *t != was) {
            self.disk.set_nos_type(ptype);
            self.disk.commit()?;
            self.note(Code::NosTypeSet, &format!("{was} -> {ptype}"))?;
        }

        // What the disk holds, not what the page cache remembers writing.
        let reading = Instant::now();
        let (nos_start, nos_len) = self.disk.range(Role::Nos);
        self.disk
            .device()
            .read_from_medium(nos_start, nos_len)
            .map_err(|e| {
                crate::Error::io(
                    "dropping the cached pages of NOS on",
                    self.device.display(),
                    e,
                )
            })?;
        let mut nos = self
            .disk
            .partition(Role::Nos)
            .map_err(|e| crate::Error::io("opening NOS of", self.device.display(), e))?;
        image::check_target(&manifest, &mut nos)?;
        let detail = format!(
            "every chunk reads back with its CRC32, in {}",
            seconds(reading.elapsed())
        );
        self.note(Code::Verified, &detail)?;

        self.finish_nos(&manifest, identity)
    }

    /// The new OS, written and verified: its file system grown to fill NOS (ext4) and
    /// the saved identity restored into it — through fatfs on a FAT NOS, through the
    /// kernel's ext4 mount otherwise.
    fn finish_nos(
        &mut self,
        manifest: &image::Manifest,
        identity: Option<&Identity>,
    ) -> crate::Result<()> {
        let ptype = self.disk.entry(Role::Nos).ptype;
        let filesystem = match manifest.filesystem {
            image::Filesystem::Unknown if ptype.is_fat() => image::Filesystem::Fat,
            image::Filesystem::Unknown => image::Filesystem::Ext4,
            known => known,
        };
        if filesystem == image::Filesystem::Fat {
            if let Some(identity) = identity {
                self.restore_into_fat(identity)?;
                self.note(Code::IdentityRestored, identity.hostname.as_str())?;
            }
            return Ok(());
        }
        // How far the file system may grow: to the end of NOS.
        let (_, nos_len) = self.disk.range(Role::Nos);
        let mut nos = self
            .disk
            .partition(Role::Nos)
            .map_err(|e| crate::Error::io("opening NOS of", self.device.display(), e))?;
        let growth = crate::filesystem::ext4_size(&mut nos)
            .map(|(block, blocks)| (block, blocks, nos_len / block))
            .filter(|(_, blocks, fits)| fits > blocks);
        if identity.is_none() && growth.is_none() {
            return Ok(());
        }
        let part = partition_device(&self.device, Role::Nos.slot());
        let at = Path::new(NOS_MOUNT);
        (self.machine.mount_nos)(&part, at)
            .map_err(|e| crate::Error::io("mounting NOS", part.display(), e))?;
        let done = (|| {
            // A file system that stays at the image's size still boots: say so, go on.
            if let Some((block, blocks, fits)) = growth {
                let size = |n: u64| crate::units::format_size(n * block);
                match (self.machine.grow_ext4)(at, fits) {
                    Ok(()) => self.note(
                        Code::FilesystemGrown,
                        &format!("ext4 from {} to {} ({fits} blocks)", size(blocks), size(fits)),
                    )?,
                    Err(e) => log::warn!(
                        "growing the ext4 file system of NOS from {} to {}: {e}; it keeps the image's size",
                        size(blocks),
                        size(fits)
                    ),
                }
            }
            if let Some(identity) = identity {
                let written = identity::restore(identity, &mut identity::DirSink::new(at))?;
                let ifupdown = identity::ifupdown::INTERFACES_PATH;
                let detail = match written.iter().any(|path| path == ifupdown) {
                    true => format!("{} (and into ifupdown's {ifupdown})", identity.hostname),
                    false => identity.hostname.to_string(),
                };
                self.note(Code::IdentityRestored, &detail)?;
            }
            Ok::<_, crate::Error>(())
        })();
        let unmounted = (self.machine.unmount_nos)(at)
            .map_err(|e| crate::Error::io("unmounting NOS at", at.display(), e));
        done?;
        unmounted
    }

    /// Packs the current NOS into [`BACKUP_IMAGE`] and records it in the job, when the
    /// job allows it and the images partition has (or can make) room for every block
    /// NOS's file system uses. A backup that cannot be made is noted and skipped: the
    /// factory image remains.
    fn safety_backup(&mut self) -> crate::Result<()> {
        let name = ImageName::new(BACKUP_IMAGE).expect("BACKUP_IMAGE is a valid name");
        if !self.job.backup {
            return self.note(Code::BackupSkipped, "the job says backup = false");
        }
        if self.job.image == name {
            return self.note(Code::BackupSkipped, "the job applies the backup itself");
        }
        let bound = self.nos_image_bound()?;
        // The old backup goes first: it is of an older appliance, and its room counts.
        // Then room for the most the backup can take, older images no job needs making
        // way: the safety net is worth more than a copy of an image the store server has.
        let image = self.job.image.to_string();
        let no_room = self.disk.with_store(|store| {
            store.discard_image(&name)?;
            match store.make_room(IMAGES_DIR, bound, &[&image], BACKUP_IMAGE) {
                Ok(()) => Ok(None),
                Err(full @ crate::store::Error::Full { .. }) => Ok(Some(full.to_string())),
                Err(e) => Err(e.into()),
            }
        })?;
        if let Some(why) = no_room {
            return self.note(Code::BackupSkipped, &why);
        }
        let description = format!("NOS before applying {}", self.job.image);
        match self.pack_nos(&name, description) {
            Ok(manifest) => {
                let mut job = self.job.clone();
                job.backup_image = Some(name.clone());
                self.disk.with_store(|store| Ok(store.write_job(&job)?))?;
                self.job = job;
                self.note(
                    Code::BackupCreated,
                    &format!(
                        "{name} ({} stored)",
                        crate::units::format_size(manifest.stored_total())
                    ),
                )
            }
            Err(error) => {
                self.disk
                    .with_store(|store| Ok(store.discard_image(&name)?))?;
                self.note(Code::BackupSkipped, &error.to_string())
            }
        }
    }

    /// The job failed for good (`error`, logged as `code`): bring back what NOS held — it
    /// still does when nothing was written, else the safety backup, else the factory
    /// image — and commit it, so the machine boots it. The job ends `failed` either way.
    /// When nothing could be restored, the system partition stays active and `error`
    /// is returned.
    fn give_up(&mut self, error: crate::Error, code: Code) -> crate::Result<Outcome> {
        let message = error.to_string();
        log::error!("[{}] {}: {message}", code.id(), code.verbose());
        if let Err(e) = self
            .disk
            .with_store(|store| Ok(store.log(code, Some(&message))?))
        {
            log::error!("recording the failure on the images partition: {e}");
        }
        let restored = self.roll_back();
        match restored {
            Ok(what) => {
                self.record_failure(&format!("{message}; {what}"));
                Ok(Outcome::RolledBack)
            }
            Err(rollback) => {
                let code = Code::RollbackFailed;
                log::error!("[{}] {}: {rollback}", code.id(), code.verbose());
                let _ = self.try_note(code, &rollback.to_string());
                let why = format!("{message}; rollback failed: {rollback}");
                // A fresh boot can cure what this kernel cannot (a partition table it
                // did not take, a device in a bad state): try again, a bounded number
                // of times, before waiting for hands.
                if self.job.failures + 1 < self.job.max_attempts && self.retry_after_reboot(&why) {
                    return Ok(Outcome::Retry);
                }
                self.record_failure(&why);
                Err(error)
            }
        }
    }

    /// Restores the previous appliance and commits it; says what it restored.
    fn roll_back(&mut self) -> crate::Result<String> {
        self.note(Code::RollbackStarted, "")?;
        let what = if !self.job.nos_written {
            self.note(Code::KeptPrevious, "")?;
            "NOS was not written: the previous appliance boots again".to_string()
        } else {
            self.restore_previous()?
        };
        self.disk
            .with_store(|store| Ok(store.step(Code::CommitStarted, "")?))?;
        self.disk.hide_system();
        self.disk.activate(Role::Nos);
        self.disk.commit()?;
        self.note(Code::Committed, "")?;
        Ok(what)
    }

    /// The safety backup onto NOS, or when that fails, the factory image (with the
    /// saved identity).
    fn restore_previous(&mut self) -> crate::Result<String> {
        if let Some(backup) = self.job.backup_image.clone() {
            match self.write_image(FromStore::Images, &backup, None, false) {
                Ok(()) => {
                    self.note(Code::RolledBackPrevious, backup.as_str())?;
                    return Ok(format!("rolled back to the previous appliance ({backup})"));
                }
                Err(e) => {
                    let code = code_for(&e);
                    log::error!("[{}] restoring the safety backup {backup}: {e}", code.id());
                    self.try_note(code, &format!("restoring the safety backup {backup}: {e}"))?;
                }
            }
        }
        let factory = self.factory_image()?;
        // A saved identity that does not load must not keep the factory image out.
        #[allow(clippy::redundant_closure)]
        let identity = self
            .disk
            .with_store(|store| identity::load(store))
            .unwrap_or_else(|e| {
                log::warn!(
                    "the saved identity does not load ({e}): the factory image keeps its own"
                );
                None
            });
        self.write_image(FromStore::Factory, &factory, identity.as_ref(), false)?;
        self.note(Code::RolledBackFactory, factory.as_str())?;
        Ok(format!("rolled back to the factory image ({factory})"))
    }

    /// The first image in `factory/` on the data partition.
    fn factory_image(&mut self) -> crate::Result<ImageName> {
        let (start, len) = self.disk.range(Role::Data);
        let data = mount((self.open, &self.device), start, len, "data")?;
        let listed = data.list_images_in(FACTORY_DIR);
        data.unmount()?;
        let first = listed?
            .into_iter()
            .map(|(name, _)| name)
            .find(|name| name.ends_with(&format!(".{}", image::EXTENSION)))
            .ok_or_else(|| {
                crate::Error::Usage(format!(
                    "no safety backup and no factory image in {FACTORY_DIR}/ on the data partition"
                ))
            })?;
        ImageName::new(&first)
            .map_err(|why| crate::Error::Usage(format!("the factory image {first:?}: {why}")))
    }

    /// Pack NOS into an image on the images partition, named from model and serial.
    fn create(&mut self) -> crate::Result<()> {
        let name = match (&self.machine.model, &self.machine.serial) {
            (None, None) => self.job.image.as_str().to_string(),
            (model, serial) => format!(
                "{}.{}",
                identity::default_image_name(
                    model.as_deref().unwrap_or(""),
                    serial.as_deref().unwrap_or("")
                ),
                image::EXTENSION
            ),
        };
        let name = ImageName::new(&name).map_err(|why| {
            crate::Error::Usage(format!("naming the created image {name:?}: {why}"))
        })?;
        self.note(Code::CreateStarted, name.as_str())?;
        // Room for the most the image can take, older images no job needs making way;
        // when even that cannot be made, packing is tried all the same (it may compress).
        let bound = self.nos_image_bound()?;
        self.disk.with_store(|store| {
            match store.make_room(IMAGES_DIR, bound, &[name.as_str()], name.as_str()) {
                Err(full @ crate::store::Error::Full { .. }) => {
                    log::warn!("{full}; packing NOS all the same, as it may compress");
                    Ok(())
                }
                made => Ok(made?),
            }
        })?;
        let description = format!("NOS of {}", self.device.display());
        let manifest = self.pack_nos(&name, description)?;
        self.note(
            Code::CreateDone,
            &format!(
                "{} ({} stored)",
                name.as_str(),
                crate::units::format_size(manifest.stored_total())
            ),
        )
    }

    /// The most an image of NOS can take (see [`image::size_bound`]). Reads NOS.
    fn nos_image_bound(&mut self) -> crate::Result<u64> {
        let (_, len) = self.disk.range(Role::Nos);
        let mut nos = (self.disk.partition(Role::Nos))
            .map_err(|e| crate::Error::io("opening NOS of", self.device.display(), e))?;
        Ok(image::size_bound(&mut nos, len))
    }

    /// Packs NOS into `images/NAME` on the images partition (under a temporary name
    /// until it is whole, as parts when it is bigger than FAT allows). Writes the store.
    fn pack_nos(
        &mut self,
        name: &ImageName,
        description: String,
    ) -> crate::Result<image::Manifest> {
        let (start, len) = self.disk.range(Role::Images);
        let store = mount((self.open, &self.device), start, len, "images")?;
        let mut options = CreateOptions::new(name.as_str().trim_end_matches(".tar"));
        options.description = description;
        options.show = Show::Console;
        options.partition_type = Some(self.disk.entry(Role::Nos).ptype);
        let created = store.write_image(name, |file| {
            let mut nos = self
                .disk
                .partition(Role::Nos)
                .map_err(|e| crate::Error::io("opening NOS of", self.device.display(), e))?;
            Ok::<_, crate::Error>(image::create(&mut nos, file, &options)?)
        });
        store.unmount()?;
        created
    }

    /// Writes the saved identity into a FAT NOS, through fatfs.
    fn restore_into_fat(&mut self, identity: &Identity) -> crate::Result<()> {
        let nos = self
            .disk
            .partition(Role::Nos)
            .map_err(|e| crate::Error::io("opening NOS of", self.device.display(), e))?;
        let fs = fatfs::FileSystem::new(nos, fatfs::FsOptions::new()).map_err(|e| {
            crate::Error::io(
                "mounting the FAT file system of NOS on",
                self.device.display(),
                e,
            )
        })?;
        identity::restore(identity, &mut identity::FatSink::new(&fs))?;
        fs.unmount()
            .map_err(|e| crate::Error::io("unmounting NOS of", self.device.display(), e))?;
        Ok(())
    }

    fn note(&mut self, code: Code, detail: &str) -> crate::Result<()> {
        note(&mut self.disk, code, Some(detail))
    }

    /// Logs a step; a failure to log is logged and returned.
    fn try_note(&mut self, code: Code, detail: &str) -> crate::Result<()> {
        self.note(code, detail)
            .inspect_err(|e| log::error!("logging {}: {e}", code.id()))
    }

    /// Leaves the job `running` with its reason, for the next boot to start it again;
    /// false when that could not be recorded (then it is marked failed instead).
    fn retry_after_reboot(&mut self, why: &str) -> bool {
        let code = Code::RetryAfterReboot;
        let failures = self.job.failures + 1;
        let detail = format!(
            "failed attempt {failures} of {}: {why}",
            self.job.max_attempts
        );
        log::error!("[{}] {}: {detail}", code.id(), code.verbose());
        let job = Job {
            last_error: self.job.fail(why).ok().and_then(|failed| failed.last_error),
            failures,
            ..self.job.clone()
        };
        let recorded = self.disk.with_store(|store| {
            store.write_job(&job)?;
            Ok(store.log(code, Some(&detail))?)
        });
        match recorded {
            Ok(()) => true,
            Err(e) => {
                log::error!("recording the retry on the images partition: {e}");
                false
            }
        }
    }

    /// Marks the job failed with its reason. A failure to record is logged: the
    /// original error is what the operator needs to see.
    fn record_failure(&mut self, message: &str) {
        let recorded = self
            .job
            .fail(message)
            .map(|job| Job {
                failures: job.failures.saturating_add(1),
                ..job
            })
            .map_err(crate::Error::from)
            .and_then(|job| self.disk.with_store(|store| Ok(store.write_job(&job)?)));
        if let Err(e) = recorded {
            log::error!("recording the failure on the images partition: {e}");
        }
    }
}

/// Where a job's image comes from.
#[derive(Clone, Copy)]
enum FromStore {
    /// `images/NAME` on the images partition.
    Images,
    /// `factory/NAME` on the data partition.
    Factory,
}

/// Byte ranges of the partitions that hold files: known before the disk is lent out.
#[derive(Clone, Copy)]
struct Stores {
    images: (u64, u64),
    data: (u64, u64),
}

impl Stores {
    fn of<D: Device>(disk: &ApplianceDisk<D>) -> Self {
        Stores {
            images: disk.range(Role::Images),
            data: disk.range(Role::Data),
        }
    }
}

trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// Mounts the images partition (and, for a factory image, the data partition) through
/// their own handles, opens the image, and runs `f` with it and the images store (for the
/// job's checkpoints). Unmounts both afterwards, whatever `f` returned.
fn with_image_store<T, D: Device>(
    device: (Opener<D>, &Path),
    stores: Stores,
    from: FromStore,
    name: &ImageName,
    f: impl FnOnce(&mut dyn ReadSeek, &Mounted<D>) -> crate::Result<T>,
) -> crate::Result<T> {
    let (start, len) = stores.images;
    let images = mount(device, start, len, "images")?;
    let result = match from {
        FromStore::Images => images
            .open_image(name)
            .map_err(crate::Error::from)
            .and_then(|mut image| f(&mut image, &images)),
        FromStore::Factory => {
            let (start, len) = stores.data;
            let data = mount(device, start, len, "data")?;
            let result = data
                .open_in(FACTORY_DIR, name)
                .map_err(crate::Error::from)
                .and_then(|mut image| f(&mut image, &images));
            data.unmount()?;
            result
        }
    };
    images.unmount()?;
    result
}

/// Mounts the FAT file system of `[start, start + len)` of `device` through a handle of its own.
fn mount<D: Device>(
    (open, device): (Opener<D>, &Path),
    start: u64,
    len: u64,
    what: &str,
) -> crate::Result<Mounted<D>> {
    let file = open().map_err(|e| crate::Error::io("opening", device.display(), e))?;
    let window = Window::new(file, start, len)
        .map_err(|e| crate::Error::io("opening a partition of", device.display(), e))?;
    Store::open(SyncOnFlush(window)).map_err(|e| crate::Error::OnDisk {
        what: if what == "data" {
            "mounting the data partition"
        } else {
            "mounting the images partition"
        },
        disk: device.display().to_string(),
        source: Box::new(e.into()),
    })
}

/// The commit: one MBR write that hides the system partition and makes NOS active.
/// The job says `committing` first, so a cut during the commit commits again.
fn commit<D: Device>(disk: &mut ApplianceDisk<D>, job: Job) -> crate::Result<Outcome> {
    let job = if job.state == JobState::Committing {
        job
    } else {
        job.commit_started()?
    };
    disk.with_store(|store| {
        store.write_job(&job)?;
        Ok(store.step(Code::CommitStarted, "")?)
    })?;
    disk.hide_system();
    disk.activate(Role::Nos);
    if let Err(error) = disk.commit() {
        log::error!(
            "[{}] {}: {error}",
            Code::CommitFailed.id(),
            Code::CommitFailed.verbose()
        );
        return Err(error);
    }
    disk.with_store(|store| record_done(store, &job, ""))?;
    Ok(Outcome::Done)
}

/// A duration as the step log shows it: `3.2 s`.
fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A `committing` job whose commit landed: logs R051 (with `how`, when said) and R060,
/// then writes it `done`. The log first: a job that says `done` has its whole story
/// logged, and a cut before the job write leaves it `committing`, which after-boot
/// closes through this same function.
pub(crate) fn record_done<D: Read + std::io::Write + Seek>(
    store: &Store<D>,
    job: &Job,
    how: &str,
) -> crate::Result<()> {
    let done = job.done()?;
    store.step(Code::Committed, how)?;
    store.step(
        Code::JobDone,
        &format!("{} {}", done.kind.as_str(), done.image.as_str()),
    )?;
    Ok(store.write_job(&done)?)
}

fn note<D: Device>(
    disk: &mut ApplianceDisk<D>,
    code: Code,
    detail: Option<&str>,
) -> crate::Result<()> {
    disk.with_store(|store| Ok(store.step(code, detail.unwrap_or(""))?))
}

/// The step-log code of an error.
fn code_for(error: &crate::Error) -> Code {
    use crate::image::Error as I;
    match error {
        crate::Error::Image(I::TooBig { .. }) => Code::ImageTooBig,
        crate::Error::Image(
            I::NotAnImage { .. }
            | I::UnknownVersion { .. }
            | I::BadManifest { .. }
            | I::Incomplete
            | I::Damaged { .. }
            | I::BadChunk { .. },
        ) => Code::ImageCorrupt,
        crate::Error::Image(I::Target { what, .. }) if what.starts_with("checking") => {
            Code::VerifyFailed
        }
        crate::Error::Store(crate::store::Error::ImageMissing { .. }) => Code::ImageMissing,
        crate::Error::Store(crate::store::Error::BadJob { .. }) => Code::BadJob,
        crate::Error::Identity(_) => Code::IdentityError,
        crate::Error::Disk(crate::disk::Error::FloatInUse { .. }) => Code::FloatInUse,
        crate::Error::Trust(trust::Error::Image(_)) => Code::ImageCorrupt,
        crate::Error::Trust(_) => Code::ImageUntrusted,
        crate::Error::Disk(_) => Code::DiskError,
        _ => Code::IoError,
    }
}

/// The device of partition `slot` of a disk: `/dev/vda` → `/dev/vda2`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p2` (a disk name ending in a digit takes a `p`).
fn partition_device(disk: &Path, slot: usize) -> PathBuf {
    let name = disk.to_string_lossy();
    let separator = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    PathBuf::from(format!("{name}{separator}{slot}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_the_command_line_names_must_be_there() {
        let dir = tempfile::tempdir().unwrap();
        let pair = trust::generate(None).unwrap();
        // No key, none expected: nothing is checked.
        assert!(trusted_keys(dir.path(), &[]).unwrap().is_empty());
        // Expected but absent (the keys archive was lost): every image is refused.
        let err = trusted_keys(dir.path(), std::slice::from_ref(&pair.key_id)).unwrap_err();
        assert!(
            err.contains(&pair.key_id) && err.contains("install-system --trust"),
            "{err}"
        );
        std::fs::write(dir.path().join("k.pub"), &pair.public).unwrap();
        let keys = trusted_keys(dir.path(), std::slice::from_ref(&pair.key_id)).unwrap();
        assert_eq!(keys.ids(), [pair.key_id]);
    }

    #[test]
    fn names_partition_devices_as_the_kernel_does() {
        for (disk, slot, part) in [
            ("/dev/vda", 2, "/dev/vda2"),
            ("/dev/sda", 2, "/dev/sda2"),
            ("/dev/nvme0n1", 2, "/dev/nvme0n1p2"),
            ("/dev/mmcblk0", 3, "/dev/mmcblk0p3"),
        ] {
            assert_eq!(partition_device(Path::new(disk), slot), PathBuf::from(part));
        }
    }

    #[test]
    fn codes_errors_as_the_log_table_says() {
        let too_big = crate::Error::Image(image::Error::TooBig { needed: 2, room: 1 });
        assert_eq!(code_for(&too_big), Code::ImageTooBig);
        let corrupt = crate::Error::Image(image::Error::BadChunk {
            index: 3,
            why: "CRC32 mismatch".into(),
        });
        assert_eq!(code_for(&corrupt), Code::ImageCorrupt);
        let missing = crate::Error::Store(crate::store::Error::ImageMissing { name: "B".into() });
        assert_eq!(code_for(&missing), Code::ImageMissing);
    }
}
