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

/// Syncs, then powers the machine off. Returns only if the kernel refused.
pub fn power_off() -> io::Error {
    sync();
    match nix_reboot(RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(errno) => errno.into(),
    }
}
