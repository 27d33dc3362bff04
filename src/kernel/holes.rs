//! Finding the holes of a sparse file (`SEEK_DATA` / `SEEK_HOLE`), so an image of it
//! skips what reads as zeros without reading it.

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use std::fs::File;
use std::io;

use crate::filesystem::UsedBlocks;

/// Granularity of the map: holes are found in whole pages.
const BLOCK: u64 = 4096;

/// The data ranges of bytes `[start, start + len)` of `file`, as a map of `len` bytes
/// (block 0 at `start`), or `None` when `file` is not a regular file or its file system
/// cannot tell holes apart. Moves the file's offset.
pub fn data_map(file: &File, start: u64, len: u64) -> io::Result<Option<UsedBlocks>> {
    if !file.metadata()?.file_type().is_file() {
        return Ok(None);
    }
    let end = start.saturating_add(len);
    let offset = |n: u64| i64::try_from(n).map_err(|_| io::Error::from(Errno::EOVERFLOW));
    let mut map = UsedBlocks::new(BLOCK, len.div_ceil(BLOCK));
    let mut at = start;
    while at < end {
        let data = match lseek(file, offset(at)?, Whence::SeekData) {
            Ok(data) => data as u64,
            // No data after `at`: the rest is one hole.
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        };
        if data >= end {
            break;
        }
        let hole = match lseek(file, offset(data)?, Whence::SeekHole) {
            Ok(hole) => (hole as u64).min(end),
            Err(errno) => return Err(errno.into()),
        };
        map.mark_bytes(data - start, hole - data);
        at = hole.max(data + 1);
    }
    Ok(Some(map))
}
