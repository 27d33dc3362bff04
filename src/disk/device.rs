//! What a job runs on: the appliance disk as a stream that can be opened more than once.
//! A `File` (a block device or a disk image file) in production; a test's own disk that
//! loses unsynced writes at a chosen crash point in the crash tests.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use super::appliance::TellKernel;
use crate::io::{SyncAll, ZeroRange};

/// An appliance disk's bytes, read, written, synced and zeroed; each handle has its own
/// position (the recovery opens one per file system it mounts).
pub trait Device: Read + Write + Seek + SyncAll + ZeroRange + Sized {
    /// How the kernel learns of a moved or resized partition (block devices only).
    fn tell_kernel() -> Option<TellKernel<Self>> {
        None
    }

    /// Makes the next reads of `[offset, offset + len)` come from the medium, not from a
    /// cache of what was written (for the read-back check).
    fn read_from_medium(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

impl Device for File {
    fn tell_kernel() -> Option<TellKernel<Self>> {
        Some(crate::kernel::partitions::update)
    }

    fn read_from_medium(&self, offset: u64, len: u64) -> io::Result<()> {
        crate::kernel::cache::read_from_device(self, offset, len)
    }
}

/// Opens one more handle on the disk.
pub type Opener<'a, D> = &'a dyn Fn() -> io::Result<D>;
