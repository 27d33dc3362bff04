//! Terminals: key-at-a-time or line-at-a-time input, and waiting for input on several at
//! once (the recovery's serial line and screen).

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{tcflush, tcgetattr, tcsetattr, FlushArg, LocalFlags, SetArg};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// Keys (`true`: each key is readable at once, not echoed) or lines (`false`: the
/// terminal's usual canonical mode with echo, where a read returns once Enter is pressed).
pub fn set_key_mode(fd: BorrowedFd, keys: bool) -> io::Result<()> {
    let mut termios = tcgetattr(fd)?;
    termios
        .local_flags
        .set(LocalFlags::ICANON | LocalFlags::ECHO, !keys);
    tcsetattr(fd, SetArg::TCSANOW, &termios)?;
    Ok(())
}

/// Drops what was typed and not yet read.
pub fn discard_input(fd: BorrowedFd) -> io::Result<()> {
    Ok(tcflush(fd, FlushArg::TCIFLUSH)?)
}

/// Waits until one of `fds` has input (or hung up) and returns its index; `None` when
/// `timeout` passed first. No timeout waits for ever.
pub fn first_readable(fds: &[BorrowedFd], timeout: Option<Duration>) -> io::Result<Option<usize>> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
    };
    let mut polled: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    loop {
        match poll(&mut polled, timeout) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(polled.iter().position(|p| p.any().unwrap_or(false))),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Opens a terminal for reading and writing without making it the caller's controlling
/// terminal: PID 1 must not get its hang-ups and signals.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NOCTTY.bits())
        .open(path)
}
