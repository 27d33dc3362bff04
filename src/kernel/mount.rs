//! Mounting file systems.

use nix::mount::MsFlags;
use std::io;
use std::path::Path;

/// Mounts `source` (of type `fstype`, with `data` options) on `target`, creating `target`
/// first. A target that is already mounted fails with [`EBUSY`].
pub fn mount(source: &str, target: &Path, fstype: &str, data: Option<&str>) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    nix::mount::mount(Some(source), target, Some(fstype), MsFlags::empty(), data)?;
    Ok(())
}

/// Unmounts the file system mounted on `target`.
pub fn unmount(target: &Path) -> io::Result<()> {
    nix::mount::umount(target)?;
    Ok(())
}

/// The errno of a mount on a busy (already mounted) target.
pub const EBUSY: i32 = nix::libc::EBUSY;
