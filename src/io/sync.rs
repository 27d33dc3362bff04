//! Durability as a capability: what "synced" means for each kind of target.

use std::fs::File;
use std::io::{self, Cursor};

use super::Window;

/// Makes everything written so far durable: `fsync` on files and block devices,
/// nothing for memory. Commits call it before they read back what they wrote.
pub trait SyncAll {
    fn sync_all(&mut self) -> io::Result<()>;

    /// Starts writing `[offset, offset + len)` to the medium without waiting for it, so
    /// that a later [`SyncAll::sync_all`] has less to wait for. A hint: it makes nothing
    /// durable, and by default does nothing.
    fn start_sync(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

impl SyncAll for File {
    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn start_sync(&mut self, offset: u64, len: u64) -> io::Result<()> {
        crate::kernel::cache::start_writeback(self, offset, len)
    }
}

impl SyncAll for Cursor<Vec<u8>> {
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: SyncAll + ?Sized> SyncAll for &mut T {
    fn sync_all(&mut self) -> io::Result<()> {
        (**self).sync_all()
    }

    fn start_sync(&mut self, offset: u64, len: u64) -> io::Result<()> {
        (**self).start_sync(offset, len)
    }
}

impl<T: SyncAll> SyncAll for Window<T> {
    fn sync_all(&mut self) -> io::Result<()> {
        self.get_mut().sync_all()
    }

    fn start_sync(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // Only inside the window: never a hint about the neighbours' bytes.
        let len = len.min(self.len().saturating_sub(offset));
        let start = self.start();
        self.get_mut().start_sync(start + offset, len)
    }
}
