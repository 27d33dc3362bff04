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

// EXT4_IOC_RESIZE_FS: _IOW('f', 16, __u64), the new block count.
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Grows the ext4 file system mounted on `target` to `blocks` blocks, online (what
/// resize2fs does on a mounted file system). The partition must already be that large
/// in the kernel's view.
pub fn grow_ext4(target: &Path, blocks: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(target)?;
    // SAFETY: the ioctl reads one u64 from the pointer, alive across the call; the fd is
    // the mounted file system's root directory.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &blocks) }?;
    Ok(())
}
