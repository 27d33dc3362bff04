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

/// Starts writing the dirty pages of `[offset, offset + len)` of `file` to the device and
/// returns without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the disk works
/// while the caller makes the next bytes, and the next fsync has less left to wait for.
/// Makes nothing durable by itself.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range past 2^63 bytes",
        ));
    };
    if len == 0 {
        return Ok(()); // to the kernel, 0 bytes means "to the end of the file"
    }
    let flags = nix::libc::SYNC_FILE_RANGE_WRITE;
    // SAFETY: a plain system call on an open descriptor; it touches no memory of ours.
    let rc = unsafe { nix::libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

    #[test]
    fn a_write_back_hint_keeps_the_bytes_and_refuses_a_bad_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![9u8; 1 << 20]).unwrap();
        start_writeback(&file, 0, 1 << 20).unwrap();
        start_writeback(&file, 1 << 20, 0).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![9u8; 1 << 20]);
        // A pipe has no pages to write back: the kernel's refusal is passed on.
        let (read, _write) = nix::unistd::pipe().unwrap();
        let pipe = File::from(read);
        assert!(start_writeback(&pipe, 0, 4096).is_err());
    }
}
