//! Durability as a capability: what "synced" means for each kind of target.

use std::fs::File;
use std::io::{self, Cursor};

use super::Window;

/// Makes everything written so far durable: `fsync` on files and block devices,
/// nothing for memory. Commits call it before they read back what they wrote.
pub trait SyncAll {
    fn sync_all(&mut self) -> io::Result<()>;
}

impl SyncAll for File {
    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
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
}

impl<T: SyncAll> SyncAll for Window<T> {
    fn sync_all(&mut self) -> io::Result<()> {
        self.get_mut().sync_all()
    }
}
