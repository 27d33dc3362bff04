//! Process housekeeping for PID 1.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::io;

/// Reaps every child that has exited, without blocking; returns how many it reaped.
/// PID 1 inherits orphans, and unreaped ones stay zombies.
pub fn reap_children() -> io::Result<usize> {
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(reaped),
            Ok(_) => reaped += 1,
            Err(errno) => return Err(errno.into()),
        }
    }
}
