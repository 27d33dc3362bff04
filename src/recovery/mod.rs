//! The recovery environment: reprov as PID 1, the `/init` of the recovery initramfs.
//!
//! Bring-up: mount /proc, /sys, /dev; log to the console and /dev/kmsg; load the modules the
//! initramfs carries; wait for the appliance disk. Then the job on the images partition
//! ([`run_job`]); a job that fails for good rolls back by itself ([`runner`]). With no
//! job, after a failure it could not roll back, with `reprov.console`, or when a key is
//! pressed at the banner, the operator's menu ([`console`]) runs on every console the
//! kernel was given ([`terminals`]: serial line and screen). PID 1 never exits: after the
//! console it waits.

pub mod cmdline;
pub mod console;
pub mod disks;
pub mod log;
pub mod menu;
pub mod modules;
pub mod mounts;
mod panic;
pub mod runner;
pub mod terminals;

use crate::disk::ApplianceDisk;
use crate::kernel;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the console shows when there is nothing to do.
pub const NO_JOB_MESSAGE: &str =
    "no job on the images partition; system partition stays active; waiting";
/// How long drivers get to find the appliance disk.
const DISK_TIMEOUT: Duration = Duration::from_secs(30);
const DISK_POLL: Duration = Duration::from_millis(200);
/// How long the banner waits for a key that opens the console before a job runs.
pub const KEY_WAIT: Duration = Duration::from_secs(3);
/// The banner's line before a job: a key on any console opens the console instead.
pub const KEY_BANNER: &str = "press any key within 3 s for the recovery console";
/// A console opened by a key runs the job after all when nothing is typed for this long
/// (`reprov.console_idle=SECS` changes it): a stray key (line noise, a KVM switch) must
/// not stop an unattended machine for good.
const CONSOLE_IDLE: Duration = Duration::from_secs(10 * 60);

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do.
    NoJob,
    /// The job committed: reboot into the new NOS.
    Done,
    /// The job failed for good; the previous appliance (or the factory image) is back on
    /// NOS and committed: reboot into it.
    RolledBack,
    /// The job failed with nothing to roll back to; it stays `running` and a fresh boot
    /// into recovery starts it again (bounded by the job's `max_attempts`).
    Retry,
    /// `reprov.console` on the kernel command line, or a key at the banner (`by_key`):
    /// the console first, the job waits.
    Console { by_key: bool },
}

/// What went wrong in the recovery's bring-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("no appliance disk found after {waited_secs} s among the block devices [{devices}]")]
    NoApplianceDisk { waited_secs: u64, devices: String },
    #[error(
        "the job ({job}) failed: {why}; fix the cause, then set the job again (reprov job set)"
    )]
    JobFailed { job: String, why: String },
    #[error(
        "the job ({job}) was started {started} times without finishing: {failures} failed \
         (the limit is {max_failures}), the others were cut short by power cuts or crashes \
         (the limit is {max_cut_short})"
    )]
    TooManyAttempts {
        job: String,
        started: u32,
        failures: u32,
        max_failures: u32,
        max_cut_short: u32,
    },
}

/// Whether reprov runs as init: PID 1, or started under a name ending in `init`.
pub fn is_init(pid: u32, argv0: Option<&OsStr>) -> bool {
    pid == 1 || argv0.is_some_and(|arg| arg.to_string_lossy().ends_with("init"))
}

/// The recovery's main: bring-up, the job, then reboot or wait forever.
pub fn main() -> ! {
    log::init(false);
    panic::install();
    let mut found = Found::default();
    let outcome = run(&mut found);
    let by_key = matches!(outcome, Ok(Outcome::Console { by_key: true }));
    reboot_after(outcome);
    // No job, or a failure: the operator takes over on the console.
    let (Some(device), Some(terminals), Some(machine)) =
        (found.device, found.terminals, found.machine)
    else {
        wait_forever()
    };
    let idle = by_key.then(|| found.console_idle.unwrap_or(CONSOLE_IDLE));
    if console_on(&device, &terminals, idle, &machine) && by_key {
        ::log::info!("nobody at the console: running the job after all");
        let watching = watch(found.watchdog);
        let outcome = runner::run(&device, &machine);
        drop(watching);
        reboot_after(outcome);
        console_on(&device, &terminals, None, &machine);
    }
    wait_forever()
}

/// Reboots when the job committed or rolled back; otherwise says why recovery stays.
fn reboot_after(outcome: crate::Result<Outcome>) {
    match outcome {
        Ok(Outcome::NoJob) => ::log::info!("{NO_JOB_MESSAGE}"),
        Ok(Outcome::Console { .. }) => {
            ::log::info!("the console first; the job waits")
        }
        Ok(Outcome::Done) => {
            ::log::info!("job done; rebooting");
            reboot();
        }
        Ok(Outcome::RolledBack) => {
            ::log::info!("the job failed; the previous appliance is back; rebooting");
            reboot();
        }
        Ok(Outcome::Retry) => {
            ::log::info!("the job failed; rebooting into recovery to try it again");
            reboot();
        }
        Err(error) => ::log::error!("{error}; system partition stays active; waiting"),
    }
}

/// What the bring-up found, for the console.
#[derive(Default)]
struct Found {
    terminals: Option<terminals::Terminals>,
    device: Option<PathBuf>,
    /// `reprov.console_idle`, when given.
    console_idle: Option<Duration>,
    /// `reprov.watchdog` (default 10 minutes; `None`: off).
    watchdog: Option<Duration>,
    /// This machine, with the keys the kernel command line expects.
    machine: Option<runner::Machine>,
}

/// The console on every terminal, until nothing is typed for `idle`; reboots or powers
/// off when asked. Returns whether its input ended (idle, or every terminal closed).
fn console_on(
    device: &Path,
    terminals: &terminals::Terminals,
    idle: Option<Duration>,
    machine: &runner::Machine,
) -> bool {
    let (input, output) = match (terminals.input(idle), terminals.writer()) {
        (Ok(input), Ok(output)) => (std::io::BufReader::new(input), output),
        (Err(error), _) | (_, Err(error)) => {
            ::log::error!("opening the console on {}: {error}", terminals.names());
            return false;
        }
    };
    match console::Console::new(input, output, device, machine).run() {
        Ok(console::Exit::Reboot) => reboot(),
        Ok(console::Exit::PowerOff) => {
            if std::process::id() == 1 {
                let error = kernel::power::power_off();
                ::log::error!("powering off: {error}");
            }
        }
        Ok(console::Exit::Eof) => {
            ::log::info!("the console's input ended");
            return true;
        }
        Err(error) => ::log::error!("the console stopped: {error}; waiting"),
    }
    false
}

/// Bring-up and the job; fills in `found` as it goes.
fn run(found: &mut Found) -> crate::Result<Outcome> {
    mounts::mount_all(&mounts::BOOT_MOUNTS, |row| {
        kernel::mount::mount(row.source, Path::new(row.target), row.fstype, row.data)
    })
    .map_err(Error::from)?;
    found.terminals = open_terminals();
    if let Err(error) = log::attach_kmsg(Path::new("/dev/kmsg")) {
        ::log::warn!("opening /dev/kmsg: {error}; logging to the console only");
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| crate::Error::io("reading", "/proc/cmdline", e))?;
    let cmdline = cmdline::Cmdline::parse(&cmdline);
    log::set_debug(cmdline.debug);
    found.console_idle = cmdline.console_idle;
    found.watchdog = cmdline.watchdog;
    // Once: the keys the kernel command line expects come from this one read of it.
    found.machine = Some(runner::Machine::this(&cmdline.trust));
    ::log::info!("reprov {} starting", env!("CARGO_PKG_VERSION"));
    load_modules()?;
    let disk = find_disk()?;
    ::log::info!("appliance disk: {}", disk.name());
    let device = PathBuf::from(disk.name());
    found.device = Some(device.clone());
    if cmdline.console {
        ::log::info!("reprov.console is on the kernel command line");
        return Ok(Outcome::Console { by_key: false });
    }
    if let (Some(job), Some(terminals)) = (runner::job_to_run(&device)?, &found.terminals) {
        ::log::info!(
            "job: {} {} ({}); {KEY_BANNER}",
            job.kind.as_str(),
            job.image.as_str(),
            job.state.as_str()
        );
        match terminals.key_within(KEY_WAIT) {
            Ok(true) => {
                ::log::info!("a key was pressed");
                return Ok(Outcome::Console { by_key: true });
            }
            Ok(false) => {}
            Err(error) => ::log::warn!("waiting for a key: {error}; running the job"),
        }
    }
    let _watch = watch(found.watchdog);
    run_job(disk, found.machine.as_ref().expect("set above"))
}

/// While the returned watch lives, a job that makes no progress for `limit` (no progress
/// line, no step-log entry) is logged (E114) and the machine reboots: a hang must not
/// leave it waiting for hands. The job resumes from its checkpoint at the next start;
/// a stall counts as a start cut short, so a job that stalls every time is given up
/// (E110) and rolled back like any other.
fn watch(limit: Option<Duration>) -> Option<crate::io::heartbeat::Watch> {
    let limit = limit?;
    Some(crate::io::heartbeat::watch(limit, move |quiet| {
        let code = crate::store::Code::Stalled;
        ::log::error!(
            "[{}] {}: nothing moved for {} s (limit {} s); rebooting",
            code.id(),
            code.verbose(),
            quiet.as_secs(),
            limit.as_secs()
        );
        if std::process::id() == 1 {
            let error = kernel::power::reboot_syncing_within(Duration::from_secs(30));
            ::log::error!("rebooting: {error}");
        } else {
            ::log::error!("not PID 1: not rebooting");
        }
    }))
}

/// The consoles the kernel lists, or /dev/console alone; the log goes to all of them.
fn open_terminals() -> Option<terminals::Terminals> {
    let names = match std::fs::read_to_string(terminals::ACTIVE_CONSOLES) {
        Ok(text) => terminals::parse_active(&text),
        Err(error) => {
            ::log::warn!("reading {}: {error}", terminals::ACTIVE_CONSOLES);
            Vec::new()
        }
    };
    let opened = terminals::Terminals::open(Path::new("/dev"), &names, Path::new("/dev/console"))
        .and_then(|t| Ok((t.writer()?, t)));
    match opened {
        Ok((writer, terminals)) => {
            log::attach_terminals(writer);
            ::log::debug!("consoles: {}", terminals.names());
            Some(terminals)
        }
        Err(error) => {
            ::log::error!("opening the consoles: {error}; the console menu is not available");
            None
        }
    }
}

fn load_modules() -> crate::Result<()> {
    let order = match std::fs::read_to_string(modules::ORDER_FILE) {
        Ok(text) => modules::parse_order(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ::log::info!("no {}: no modules to load", modules::ORDER_FILE);
            return Ok(());
        }
        Err(e) => return Err(crate::Error::io("reading", modules::ORDER_FILE, e)),
    };
    ::log::debug!("{} lists {} modules", modules::ORDER_FILE, order.len());
    let report = modules::load_all(Path::new("/"), &order, kernel::modules::load);
    ::log::info!(
        "modules: {} loaded, {} already there, {} failed",
        report.loaded,
        report.already,
        report.failed.len()
    );
    Ok(())
}

fn find_disk() -> crate::Result<ApplianceDisk<File>> {
    let sys_block = Path::new("/sys/block");
    let found = disks::wait_for(DISK_TIMEOUT, DISK_POLL, || {
        match disks::block_devices(sys_block) {
            Ok(names) => disks::find_appliance(Path::new("/dev"), &names),
            Err(error) => {
                ::log::warn!("listing {}: {error}", sys_block.display());
                None
            }
        }
    });
    found.ok_or_else(|| {
        let devices = disks::block_devices(sys_block)
            .map(|names| names.join(" "))
            .unwrap_or_else(|e| format!("unreadable: {e}"));
        Error::NoApplianceDisk {
            waited_secs: DISK_TIMEOUT.as_secs(),
            devices,
        }
        .into()
    })
}

/// Runs the pending job on `disk`, if any (see [`runner`]). Writes to the disk.
pub fn run_job(disk: ApplianceDisk<File>, machine: &runner::Machine) -> crate::Result<Outcome> {
    let device = std::path::PathBuf::from(disk.name());
    // The runner opens the disk itself, as many times as it needs.
    drop(disk);
    runner::run(&device, machine)
}

/// Reboots the machine; logs when it cannot. Only PID 1 reboots: reprov started as
/// `…init` by hand on a running system must not take the machine down.
pub(crate) fn reboot() {
    if std::process::id() != 1 {
        ::log::error!("not PID 1: not rebooting");
        return;
    }
    let error = kernel::power::reboot();
    ::log::error!("rebooting: {error}");
}

/// PID 1's last state: reap orphans, sleep, forever.
pub(crate) fn wait_forever() -> ! {
    loop {
        if let Err(error) = kernel::process::reap_children() {
            ::log::warn!("reaping child processes: {error}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_as_init_as_pid_1_or_by_name() {
        let cases = [
            (1, Some("/usr/bin/reprov"), true),
            (1, None, true),
            (42, Some("/init"), true),
            (42, Some("/sbin/reprov-init"), true),
            (42, Some("reprov"), false),
            (42, Some("/usr/bin/reprov"), false),
            (42, None, false),
        ];
        for (pid, argv0, expected) in cases {
            assert_eq!(
                is_init(pid, argv0.map(OsStr::new)),
                expected,
                "pid {pid}, argv0 {argv0:?}"
            );
        }
    }
}
