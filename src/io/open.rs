//! Opening what a user names as input: only what can be read as a whole, twice over.
//!
//! An image is read once to check it and again to write it, and its length decides what
//! is read; a FIFO, a socket or a terminal has no length, and opening a FIFO blocks until
//! somebody writes to it. So such files are refused before they are opened.

use std::fs::{File, FileType};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// What a file type is, in words, for the refusal.
fn kind(t: FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

fn refuse(t: FileType, wanted: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not {wanted}", kind(t)),
    )
}

/// Opens a regular file (symbolic links followed) for reading; anything else is refused
/// without being opened.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let t = std::fs::metadata(path)?.file_type();
    if !t.is_file() {
        return Err(refuse(t, "a regular file"));
    }
    File::open(path)
}

/// The whole text of a small regular file (a config, a password file): anything else,
/// or a file over `limit` bytes, is refused.
pub fn read_regular_to_string(path: &Path, limit: u64) -> io::Result<String> {
    use std::io::Read;
    let file = open_regular(path)?;
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is more than the {limit} bytes allowed"),
        ));
    }
    Ok(text)
}

/// Opens a regular file or a block device (a partition) for reading, with its length
/// (a block device's is found by seeking to its end); anything else is refused.
pub fn open_file_or_device(path: &Path) -> io::Result<(File, u64)> {
    let t = std::fs::metadata(path)?.file_type();
    if !t.is_file() && !t.is_block_device() {
        return Err(refuse(t, "a regular file or a block device"));
    }
    let mut file = File::open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok((file, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(
            err.to_string(),
            "is a FIFO (named pipe), not a regular file"
        );
        let err = open_file_or_device(&fifo).unwrap_err();
        assert!(err
            .to_string()
            .contains("not a regular file or a block device"));
        assert!(open_regular(dir.path()).is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(open_file_or_device(&file).unwrap().1, 5);
    }
}
