//! `reprov schedule apply|create|factory|arm-due`: the trigger side on the running
//! appliance (see `crate::schedule`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use argh::FromArgs;
use time::OffsetDateTime;

use crate::disk::ApplianceDisk;
use crate::identity::{self, Identity};
use crate::schedule::{self, ImageArg, Request};
use crate::store::Kind;
use crate::transfer::{self, StoreConfig};
use crate::Error;

/// Schedule a re-provisioning of this appliance: save its identity, fetch and verify the
/// image, write the job, arm the recovery and reboot into it.
#[derive(FromArgs)]
#[argh(subcommand, name = "schedule")]
pub struct ScheduleArgs {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Sub {
    Apply(Apply),
    Create(Create),
    Factory(Factory),
    ArmDue(ArmDue),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "apply")]
/// Apply IMAGE to NOS: a name in the images store, a local file, an ftp(s):// or http(s)://
/// URL, or a bare name fetched from the configured store.
struct Apply {
    /// the image
    #[argh(positional)]
    image: String,
    #[argh(option)]
    /// the appliance disk (default: found among /sys/block as the recovery finds it)
    disk: Option<PathBuf>,
    #[argh(option)]
    /// do not start before TIME (2026-11-26T02:00:00Z, or +30m): the job waits and the
    /// agent's timer (or `reprov schedule arm-due`) arms it when due
    at: Option<String>,
    #[argh(switch)]
    /// arm the recovery but do not reboot
    no_reboot: bool,
    #[argh(option)]
    /// the store config (default /etc/reprov/store.toml, when it exists)
    config: Option<PathBuf>,
    #[argh(option)]
    /// use this identity file instead of capturing the live one
    identity: Option<PathBuf>,
    #[argh(option)]
    /// the trusted public keys, *.pub (default /etc/reprov/keys; none there: the image
    /// is not checked for who signed it)
    keys: Option<PathBuf>,
}

/// Pack this appliance's NOS into an image in recovery; after the reboot back into NOS,
/// `reprov after-boot` uploads it to the store (named from model + serial).
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct Create {
    #[argh(option)]
    /// the appliance disk (default: found among /sys/block)
    disk: Option<PathBuf>,
    #[argh(option)]
    /// do not start before TIME (RFC 3339, or +30m)
    at: Option<String>,
    #[argh(switch)]
    /// arm the recovery but do not reboot
    no_reboot: bool,
    #[argh(option)]
    /// use this identity file instead of capturing the live one
    identity: Option<PathBuf>,
}

/// Apply the factory image from the data partition (factory/NAME; default: the only one).
#[derive(FromArgs)]
#[argh(subcommand, name = "factory")]
struct Factory {
    /// the factory image's name in factory/ on the data partition
    #[argh(positional)]
    image: Option<String>,
    #[argh(option)]
    /// the appliance disk (default: found among /sys/block)
    disk: Option<PathBuf>,
    #[argh(option)]
    /// do not start before TIME (RFC 3339, or +30m)
    at: Option<String>,
    #[argh(switch)]
    /// arm the recovery but do not reboot
    no_reboot: bool,
    #[argh(option)]
    /// use this identity file instead of capturing the live one
    identity: Option<PathBuf>,
    #[argh(option)]
    /// the trusted public keys, *.pub (default /etc/reprov/keys)
    keys: Option<PathBuf>,
}

/// Arm a deferred job whose time has come (run by the agent's timer), and reboot.
#[derive(FromArgs)]
#[argh(subcommand, name = "arm-due")]
struct ArmDue {
    #[argh(option)]
    /// the appliance disk (default: found among /sys/block)
    disk: Option<PathBuf>,
    #[argh(switch)]
    /// arm the recovery but do not reboot
    no_reboot: bool,
}

pub fn run(args: ScheduleArgs) -> crate::Result<()> {
    let now = OffsetDateTime::now_utc();
    let (kind, image, disk, at, no_reboot, config, identity, keys) = match args.command {
        Sub::Apply(a) => (
            Kind::Apply,
            Some(ImageArg::parse(&a.image)),
            a.disk,
            a.at,
            a.no_reboot,
            a.config,
            a.identity,
            a.keys,
        ),
        Sub::Create(a) => (
            Kind::Create,
            None,
            a.disk,
            a.at,
            a.no_reboot,
            None,
            a.identity,
            None,
        ),
        Sub::Factory(a) => (
            Kind::Factory,
            a.image.map(ImageArg::Name),
            a.disk,
            a.at,
            a.no_reboot,
            None,
            a.identity,
            a.keys,
        ),
        Sub::ArmDue(a) => {
            let mut disk = find_disk(a.disk.as_deref())?;
            return match schedule::arm_due(&mut disk, now)? {
                Some(job) => {
                    println!("armed {} {}", job.kind, job.image);
                    finish(disk, true, a.no_reboot)
                }
                None => {
                    println!("no deferred job is due");
                    Ok(())
                }
            };
        }
    };
    let not_before = at
        .as_deref()
        .map(|text| schedule::parse_at(text, now))
        .transpose()?;
    if !no_reboot && not_before.is_none() {
        check_can_reboot()?;
    }
    let keys = super::trusted_keys(keys.as_deref(), &[])?;
    let mut request = Request::new(kind, image, keys);
    request.not_before = not_before;
    request.store = store_config(config.as_deref())?;
    let identity = load_identity(identity.as_deref())?;
    let mut disk = find_disk(disk.as_deref())?;
    let scheduled = schedule::schedule(&mut disk, &request, &identity, now)?;
    println!(
        "scheduled {} {} on {}{}",
        scheduled.job.kind,
        scheduled.job.image,
        disk.name(),
        match scheduled.armed {
            true => "; the next boot runs the recovery",
            false => "; deferred: not armed yet",
        }
    );
    finish(disk, scheduled.armed, no_reboot)
}

/// Syncs the disk and reboots when the recovery was armed and rebooting was not refused.
pub(super) fn finish(disk: ApplianceDisk<File>, armed: bool, no_reboot: bool) -> crate::Result<()> {
    let name = disk.name().to_string();
    disk.into_inner()
        .sync_all()
        .map_err(|e| Error::io("syncing", &name, e))?;
    if !armed || no_reboot {
        return Ok(());
    }
    check_can_reboot()?;
    log::info!("rebooting into the recovery");
    crate::kernel::power::reboot_running_system()
        .map_err(|e| Error::io("rebooting", "this machine", e))
}

/// Refuses early, before anything is written, when a reboot was asked for but cannot be.
pub(super) fn check_can_reboot() -> crate::Result<()> {
    match crate::kernel::power::is_root() {
        true => Ok(()),
        false => Err(Error::Usage(
            "refusing: rebooting needs root; run as root, or pass --no-reboot and reboot \
             yourself (nothing was changed)"
                .to_string(),
        )),
    }
}

/// `--disk`, or the appliance disk among /sys/block, as the recovery finds it.
pub(super) fn find_disk(disk: Option<&Path>) -> crate::Result<ApplianceDisk<File>> {
    if let Some(path) = disk {
        return crate::disk::open_disk(path);
    }
    let sys_block = Path::new("/sys/block");
    let names = crate::recovery::disks::block_devices(sys_block)
        .map_err(|e| Error::io("listing", sys_block.display(), e))?;
    crate::recovery::disks::find_appliance(Path::new("/dev"), &names).ok_or_else(|| {
        Error::Usage(format!(
            "no appliance disk among the block devices [{}]; give --disk (and run as root)",
            names.join(" ")
        ))
    })
}

/// The store config named, or the default one when it exists.
pub(super) fn store_config(path: Option<&Path>) -> crate::Result<Option<StoreConfig>> {
    match path {
        Some(path) => Ok(Some(StoreConfig::read(path)?)),
        None if Path::new(transfer::DEFAULT_PATH).exists() => {
            Ok(Some(StoreConfig::read(Path::new(transfer::DEFAULT_PATH))?))
        }
        None => Ok(None),
    }
}

/// The identity from `file`, or captured from the running system.
pub(super) fn load_identity(file: Option<&Path>) -> crate::Result<Identity> {
    let Some(path) = file else {
        return Ok(identity::capture_live()?);
    };
    let file =
        crate::io::open_regular(path).map_err(|e| Error::io("opening", path.display(), e))?;
    let limit = u64::try_from(identity::MAX_FILE_LEN).unwrap_or(u64::MAX) + 1;
    let mut data = Vec::new();
    file.take(limit)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("reading", path.display(), e))?;
    Ok(identity::parse_bytes(&data)?)
}
