//! Syncing and rebooting the machine.

use nix::sys::reboot::{reboot as nix_reboot, RebootMode};
use std::io;

/// Flushes every file system's dirty data to the disks.
pub fn sync() {
    nix::unistd::sync();
}

/// Syncs, then restarts the machine at once. Returns only if the kernel refused.
pub fn reboot() -> io::Error {
    sync();
    match nix_reboot(RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(errno) => errno.into(),
    }
}

/// Reboots after a sync that may take at most `limit`: when the disk hangs (what the
/// watchdog reboots for), the sync would too, and the machine must still come back.
pub fn reboot_syncing_within(limit: std::time::Duration) -> io::Error {
    let (done, synced) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        sync();
        let _ = done.send(());
    });
    let _ = synced.recv_timeout(limit);
    match nix_reboot(RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(errno) => errno.into(),
    }
}

/// Whether this process runs as root (may reboot and open disks).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Reboots a running system: through systemd when it runs the machine (an orderly
/// shutdown of the appliance's services; `Ok` once systemd has taken the request), else
/// syncs and reboots at once (returns only when the kernel refused).
pub fn reboot_running_system() -> io::Result<()> {
    if std::path::Path::new("/run/systemd/system").exists() {
        sync();
        let status = std::process::Command::new("systemctl")
            .arg("reboot")
            .status()?;
        return match status.success() {
            true => Ok(()),
            false => Err(io::Error::other(format!("systemctl reboot: {status}"))),
        };
    }
    Err(reboot())
}

/// Syncs, then powers the machine off. Returns only if the kernel refused.
pub fn power_off() -> io::Error {
    sync();
    match nix_reboot(RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(errno) => errno.into(),
    }
}
