//! `reprov agent`, `reprov after-boot`, `reprov fleet publish|status` and
//! `reprov install-agent`: many servers at once through files on the store (see
//! `crate::fleet`).

use std::path::{Path, PathBuf};

use argh::FromArgs;
use time::OffsetDateTime;

use super::schedule::{check_can_reboot, find_disk, finish, load_identity, store_config};
use crate::fleet::{self, AgentOutcome, Target};
use crate::store::{Code, Kind, State};
use crate::transfer::{self, Options, StoreConfig};
use crate::Error;

/// Arm a due deferred job, schedule the store's desired state for this server when it
/// changed, and report this server's status to the store (run by reprov-agent.timer).
#[derive(FromArgs)]
#[argh(subcommand, name = "agent")]
pub struct Agent {
    #[argh(option)]
    /// the store config (default /etc/reprov/store.toml; without one, only arm-due)
    config: Option<PathBuf>,
    #[argh(option)]
    /// the appliance disk (default: found among /sys/block)
    disk: Option<PathBuf>,
    #[argh(switch)]
    /// arm the recovery but do not reboot
    no_reboot: bool,
    #[argh(option)]
    /// use this identity file instead of capturing the live one
    identity: Option<PathBuf>,
    #[argh(option)]
    /// the trusted public keys, *.pub (default /etc/reprov/keys; none there: images
    /// are not checked for who signed them)
    keys: Option<PathBuf>,
}

/// After a boot into NOS: upload the image a create job made and close the job, then
/// report this server's status (run by reprov-after-boot.service).
#[derive(FromArgs)]
#[argh(subcommand, name = "after-boot")]
pub struct AfterBoot {
    #[argh(option)]
    /// the store config (default /etc/reprov/store.toml)
    config: Option<PathBuf>,
    #[argh(option)]
    /// the appliance disk (default: found among /sys/block)
    disk: Option<PathBuf>,
    #[argh(option)]
    /// use this identity file instead of capturing the live one
    identity: Option<PathBuf>,
}

/// Publish desired states to the store and read the servers' reports.
#[derive(FromArgs)]
#[argh(subcommand, name = "fleet")]
pub struct FleetArgs {
    #[argh(subcommand)]
    command: FleetSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum FleetSub {
    Publish(Publish),
    Status(Status),
}

/// Publish a desired state for a group (or one server): every agent of it schedules it.
#[derive(FromArgs)]
#[argh(subcommand, name = "publish")]
struct Publish {
    #[argh(option)]
    /// the group
    group: Option<String>,
    #[argh(option)]
    /// one server (its serial number) instead of a group
    server: Option<String>,
    #[argh(option)]
    /// the image: a name in the store's directory, or a URL (apply)
    image: Option<String>,
    #[argh(option, default = "String::from(\"apply\")")]
    /// apply (default), create or factory
    kind: String,
    #[argh(option)]
    /// the store config (default /etc/reprov/store.toml)
    config: Option<PathBuf>,
    #[argh(option)]
    /// sign the desired state with this secret key (agents with trusted keys act only
    /// on signed states)
    key: Option<PathBuf>,
    #[argh(option)]
    /// the secret key's password, on this file's first line (mode 600)
    password_file: Option<PathBuf>,
    #[argh(option)]
    /// the generation to publish (default: one after the store's); agents with keys
    /// act only on a later generation than the last they acted on
    generation: Option<u64>,
}

/// Print every server's last report: server, hostname, image, state, last step, time.
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
struct Status {
    #[argh(option)]
    /// the store config (default /etc/reprov/store.toml)
    config: Option<PathBuf>,
    #[argh(switch)]
    /// print JSON instead of a table
    json: bool,
}

/// Install the systemd units (agent service and timer, after-boot service) under a root.
#[derive(FromArgs)]
#[argh(subcommand, name = "install-agent")]
pub struct InstallAgent {
    #[argh(option, default = "PathBuf::from(\"/\")")]
    /// the root of the NOS to install into (default /)
    root: PathBuf,
    #[argh(option, default = "PathBuf::from(\"/usr/local/sbin/reprov\")")]
    /// the reprov binary as the NOS sees it (default /usr/local/sbin/reprov)
    binary: PathBuf,
}

fn required_config(path: Option<&Path>) -> crate::Result<StoreConfig> {
    store_config(path)?.ok_or_else(|| {
        Error::Usage(format!(
            "no store config: give --config or write {}",
            transfer::DEFAULT_PATH
        ))
    })
}

pub fn agent(args: Agent) -> crate::Result<()> {
    let now = OffsetDateTime::now_utc();
    let options = Options::default();
    if !args.no_reboot {
        check_can_reboot()?;
    }
    let mut disk = find_disk(args.disk.as_deref())?;
    let Some(config) = store_config(args.config.as_deref())? else {
        log::info!(
            "no store config ({}): arming due jobs only",
            transfer::DEFAULT_PATH
        );
        let armed = crate::schedule::arm_due(&mut disk, now)?.is_some();
        return finish(disk, armed, args.no_reboot);
    };
    let identity = load_identity(args.identity.as_deref())?;
    crate::schedule::close_landed_commit(&mut disk)?;
    let keys = super::trusted_keys(args.keys.as_deref(), &[])?;
    let run = fleet::agent(&mut disk, &config, &identity, now, &options, &keys);
    let error = run.as_ref().err().map(|e| e.to_string());
    if let Ok(run) = &run {
        if let Some(job) = &run.armed_due {
            println!("armed the deferred job {} {}", job.kind, job.image);
        }
        match &run.outcome {
            AgentOutcome::Scheduled(s) => println!("scheduled {} {}", s.job.kind, s.job.image),
            AgentOutcome::Busy(why) => println!("waiting: {why}"),
            AgentOutcome::UpToDate => println!("up to date"),
            AgentOutcome::NothingPublished => println!("nothing published for this server"),
        }
    }
    // The report goes out before any reboot, and even when the agent failed.
    let reported = fleet::status(&mut disk, &config, &identity, error, now)
        .and_then(|status| fleet::report(&config, &status, &options));
    if let Err(e) = &reported {
        log::warn!("reporting the status to the store: {e}");
    }
    // Reboot only for what this run armed: a job armed by hand with --no-reboot waits
    // for its operator's reboot.
    let armed = run?.armed();
    finish(disk, armed, args.no_reboot)
}

pub fn after_boot(args: AfterBoot) -> crate::Result<()> {
    let now = OffsetDateTime::now_utc();
    let options = Options::default();
    let mut disk = find_disk(args.disk.as_deref())?;
    let config = store_config(args.config.as_deref())?;
    let identity = load_identity(args.identity.as_deref())?;
    crate::schedule::close_landed_commit(&mut disk)?;
    let uploaded = match &config {
        Some(config) => upload_created(&mut disk, config, &options),
        None => Ok(()),
    };
    if let Some(config) = &config {
        let error = uploaded.as_ref().err().map(|e| e.to_string());
        let reported = fleet::status(&mut disk, config, &identity, error, now)
            .and_then(|status| fleet::report(config, &status, &options));
        if let Err(e) = &reported {
            log::warn!("reporting the status to the store: {e}");
        }
    }
    uploaded?;
    finish(disk, false, true)
}

/// A done create job: uploads its image to the store under its name (model + serial),
/// logs R070, and closes the job (R071). Anything else: nothing to do.
fn upload_created(
    disk: &mut crate::disk::ApplianceDisk<std::fs::File>,
    config: &StoreConfig,
    options: &Options,
) -> crate::Result<()> {
    disk.with_store(|store| {
        let Some(job) = store.read_job()? else {
            return Ok(());
        };
        if job.kind != Kind::Create || job.state != State::Done {
            return Ok(());
        }
        let size = store.image_size(&job.image)?;
        let mut image = store.open_image(&job.image)?;
        let url = transfer::upload(
            &mut image,
            size,
            job.image.as_str(),
            config,
            options,
            &mut |_| {},
        )?;
        store.step(Code::ImageUploaded, &url.to_string())?;
        store.clear_job()?;
        Ok(store.step(Code::JobClosed, &format!("create {}", job.image))?)
    })
}

pub fn fleet(args: FleetArgs) -> crate::Result<()> {
    let options = Options::default();
    match args.command {
        FleetSub::Publish(p) => {
            let config = required_config(p.config.as_deref())?;
            let target = match (p.group, p.server) {
                (Some(group), None) => Target::Group(group),
                (None, Some(server)) => Target::Server(server),
                _ => {
                    return Err(Error::Usage(
                        "give exactly one of --group and --server".to_string(),
                    ))
                }
            };
            let kind = Kind::parse(&p.kind).map_err(Error::Usage)?;
            let key = p
                .key
                .as_deref()
                .map(|key| super::signing_key(key, p.password_file.as_deref()))
                .transpose()?;
            let publication = fleet::Publication {
                kind,
                image: p.image.as_deref(),
                generation: p.generation,
                key: key.as_ref(),
            };
            let desired = fleet::publish(
                &config,
                &target,
                &publication,
                OffsetDateTime::now_utc(),
                &options,
            )?;
            println!(
                "published {} {} generation {} to {}",
                desired.kind,
                desired.image.as_deref().unwrap_or("-"),
                desired.generation,
                target.path()
            );
            Ok(())
        }
        FleetSub::Status(s) => {
            let config = required_config(s.config.as_deref())?;
            let statuses = fleet::read_statuses(&config, &options)?;
            if s.json {
                let json = serde_json::to_string_pretty(&statuses)
                    .map_err(|e| Error::Usage(format!("writing JSON: {e}")))?;
                println!("{json}");
            } else {
                print!("{}", fleet::table(&statuses));
                if statuses.is_empty() {
                    let dir = config.url.join(fleet::STATUS_DIR)?;
                    eprintln!("no server has reported yet (no reports in {dir})");
                }
            }
            Ok(())
        }
    }
}

pub fn install_agent(args: InstallAgent) -> crate::Result<()> {
    for path in fleet::units::install(&args.root, &args.binary)? {
        println!("{}", path.display());
    }
    Ok(())
}
