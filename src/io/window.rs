//! A window onto a byte range of a larger stream: one partition of a disk.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// The bytes `[start, start + len)` of `inner`, seen as a stream of their own.
///
/// Reads stop at the end of the window; writes past it fail, so code that works on a
/// partition can never touch its neighbours.
#[derive(Debug)]
pub struct Window<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> Window<T> {
    /// A window of `len` bytes starting at byte `start` of `inner`.
    pub fn new(inner: T, start: u64, len: u64) -> io::Result<Self> {
        start.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "window end overflows u64")
        })?;
        Ok(Window {
            inner,
            start,
            len,
            pos: 0,
        })
    }
}

impl<T> Window<T> {
    /// Length of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a window of zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the window in the underlying stream.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Gives the underlying stream back.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
}

impl<T: Read + Seek> Read for Window<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.remaining())
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let read = self.inner.read(&mut buf[..n])?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl<T: Write + Seek> Write for Window<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(self.remaining())
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("write past the end of a {}-byte partition window", self.len),
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let written = self.inner.write(&buf[..n])?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Window<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the window",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn disk() -> Cursor<Vec<u8>> {
        Cursor::new((0..=255u8).cycle().take(1024).collect())
    }

    #[test]
    fn reads_only_its_range() {
        let mut w = Window::new(disk(), 100, 10).unwrap();
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all, (100..110).map(|b| b as u8).collect::<Vec<_>>());
    }

    #[test]
    fn writes_stay_inside_and_fail_past_the_end() {
        let mut w = Window::new(disk(), 512, 4).unwrap();
        w.seek(SeekFrom::Start(2)).unwrap();
        assert_eq!(w.write(&[0xAA; 8]).unwrap(), 2);
        assert_eq!(
            w.write(&[0xAA]).unwrap_err().kind(),
            io::ErrorKind::WriteZero
        );
        let data = w.into_inner().into_inner();
        assert_eq!(&data[512..518], &[0, 1, 0xAA, 0xAA, 4, 5]);
    }

    #[test]
    fn seeks_relative_to_the_window() {
        let mut w = Window::new(disk(), 256, 16).unwrap();
        assert_eq!(w.seek(SeekFrom::End(-1)).unwrap(), 15);
        let mut b = [0u8; 1];
        w.read_exact(&mut b).unwrap();
        assert_eq!(b[0], 15);
        assert!(w.seek(SeekFrom::Current(-100)).is_err());
    }
}
