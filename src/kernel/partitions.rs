//! Telling the kernel that a disk's partition table changed (BLKPG, as `partx --update`
//! and growpart do), so a grown partition is mounted at its new size in the same boot.

use nix::errno::Errno;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

/// `struct blkpg_partition` of `<linux/blkpg.h>`: byte offsets and lengths.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

const BLKPG_ADD_PARTITION: i32 = 1;
const BLKPG_DEL_PARTITION: i32 = 2;
const BLKPG_RESIZE_PARTITION: i32 = 3;

// BLKPG is _IO(0x12, 105) but takes a pointer to a blkpg_ioctl_arg.
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

/// One BLKPG operation on partition `pno` of the disk open as `disk`.
fn op(disk: &File, op: i32, pno: u32, start: u64, len: u64) -> Result<(), Errno> {
    let too_big = |_| Errno::EOVERFLOW;
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(too_big)?,
        length: i64::try_from(len).map_err(too_big)?,
        pno: i32::try_from(pno).map_err(too_big)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: i32::try_from(std::mem::size_of::<BlkpgPartition>()).expect("small struct"),
        data: &mut part,
    };
    // SAFETY: BLKPG reads the argument and the partition it points to, both alive across
    // the call; the fd is an open block device (checked by the caller).
    unsafe { blkpg(disk.as_raw_fd(), &arg) }.map(|_| ())
}

/// Makes the kernel's partition `slot` of the block device `disk` span `len` bytes from
/// byte `start` (`len` 0: the partition is gone). A partition the kernel does not know is
/// added; one that moved is removed and added again (that fails while it is in use: a
/// mounted partition can only grow or shrink in place). Nothing to do on a regular file.
pub fn update(disk: &File, slot: u32, start: u64, len: u64) -> io::Result<()> {
    if !disk.metadata()?.file_type().is_block_device() {
        return Ok(());
    }
    let error = |what: &str, errno: Errno| {
        io::Error::new(
            io::Error::from(errno).kind(),
            format!("telling the kernel partition {slot} {what}: {errno}"),
        )
    };
    if len == 0 {
        return match op(disk, BLKPG_DEL_PARTITION, slot, 0, 0) {
            Ok(()) | Err(Errno::ENXIO) => Ok(()),
            Err(errno) => Err(error("is gone", errno)),
        };
    }
    match op(disk, BLKPG_RESIZE_PARTITION, slot, start, len) {
        Ok(()) => Ok(()),
        // Unknown to the kernel: add it.
        Err(Errno::ENXIO) => {
            op(disk, BLKPG_ADD_PARTITION, slot, start, len).map_err(|errno| error("is new", errno))
        }
        // Its start moved: resize refuses that; remove it and add it anew.
        Err(Errno::EINVAL) => op(disk, BLKPG_DEL_PARTITION, slot, 0, 0)
            .and_then(|()| op(disk, BLKPG_ADD_PARTITION, slot, start, len))
            .map_err(|errno| error("moved", errno)),
        Err(errno) => Err(error("has a new size", errno)),
    }
}
