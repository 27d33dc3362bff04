//! Loading kernel modules from `.ko` files (no modprobe: the initramfs lists them in order).

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::fs::File;
use std::io;
use std::path::Path;

/// What loading a module did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The kernel took the module now.
    Now,
    /// A module of that name was already loaded.
    Already,
}

/// Loads the (uncompressed) module file at `path` with no parameters.
pub fn load(path: &Path) -> io::Result<Loaded> {
    let file = File::open(path)?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) => Ok(Loaded::Now),
        Err(Errno::EEXIST) => Ok(Loaded::Already),
        Err(errno) => Err(errno.into()),
    }
}

/// The errno of a module whose hardware is absent (e.g. crc32c-intel without SSE4.2).
pub const ENODEV: i32 = nix::libc::ENODEV;
