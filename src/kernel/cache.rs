//! Reading what the disk holds, not what the page cache remembers writing.

use std::fs::File;
use std::io;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

/// Makes the next reads of `[offset, offset + len)` of `file` come from the device: the
/// writes are made durable first (dirty pages cannot be dropped), then the kernel drops
/// the now clean cached pages of the range. A read-back after this sees a write the disk
/// lost, which a read through the cache never would.
pub fn read_from_device(file: &File, offset: u64, len: u64) -> io::Result<()> {
    file.sync_all()?;
    let (offset, len) = match (i64::try_from(offset), i64::try_from(len)) {
        (Ok(offset), Ok(len)) => (offset, len),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range past 2^63 bytes",
            ))
        }
    };
    posix_fadvise(file, offset, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn works_on_a_regular_file_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        read_from_device(&file, 0, 1 << 20).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 1 << 20]);
    }
}
