//! Zeroing a range in the kernel: hole punching on files, BLKZEROOUT on block devices.

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

// BLKZEROOUT is _IO(0x12, 127) but takes a pointer to { start, len } in bytes.
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);

/// Asks the kernel to make `[offset, offset + len)` of `file` read as zeros: punches a
/// hole (size kept) in a regular file, issues BLKZEROOUT on a block device. Returns
/// `Ok(false)` when neither applies or the kernel/file system cannot do it, so the
/// caller writes zeros instead.
pub fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let kind = file.metadata()?.file_type();
    let result = if kind.is_file() {
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(false);
        };
        fallocate(
            file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
        .map(|_| ())
    } else if kind.is_block_device() {
        // The kernel wants 512-byte alignment; an odd tail is written by the caller.
        if offset % 512 != 0 || len % 512 != 0 {
            return Ok(false);
        }
        let range = [offset, len];
        // SAFETY: BLKZEROOUT reads two u64 from the pointer, which lives across the call;
        // the fd is an open block device.
        unsafe { blkzeroout(file.as_raw_fd(), &range) }.map(|_| ())
    } else {
        return Ok(false);
    };
    match result {
        Ok(()) => Ok(true),
        Err(Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EINVAL | Errno::ENOSYS) => Ok(false),
        Err(errno) => Err(io::Error::from(errno)),
    }
}
