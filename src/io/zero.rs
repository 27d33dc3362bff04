//! Zeroing a byte range, as cheaply as the target allows.

use std::fs::File;
use std::io::{self, Cursor, Seek, SeekFrom, Write};

use super::Window;

/// Makes bytes `[offset, offset + len)` read back as zeros. Writes to the target; the
/// stream position afterwards is unspecified (callers seek before they write).
pub trait ZeroRange {
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

/// The fallback: write zeros.
pub fn write_zeros<W: Write + Seek + ?Sized>(
    target: &mut W,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    target.seek(SeekFrom::Start(offset))?;
    let mut left = len;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64);
        target.write_all(&ZEROS[..n as usize])?;
        left -= n;
    }
    Ok(())
}

impl ZeroRange for File {
    /// Punches a hole in a regular file, zeroes out a block device range (BLKZEROOUT),
    /// and writes zeros where the kernel or file system can do neither.
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if crate::kernel::zero::zero_range(self, offset, len)? {
            Ok(())
        } else {
            write_zeros(self, offset, len)
        }
    }
}

impl ZeroRange for Cursor<Vec<u8>> {
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        write_zeros(self, offset, len)
    }
}

impl<T: ZeroRange + ?Sized> ZeroRange for &mut T {
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        (**self).zero_range(offset, len)
    }
}

impl<T: ZeroRange> ZeroRange for Window<T> {
    /// Zeroes inside the window only; a range past its end is refused.
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.checked_add(len);
        if end.map_or(true, |end| end > self.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "zeroing {len} bytes at {offset} past the end of a {}-byte window",
                    self.len()
                ),
            ));
        }
        let start = self.start() + offset;
        self.get_mut().zero_range(start, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn zeroes_inside_a_window_only() {
        let disk = Cursor::new(vec![0xFFu8; 64]);
        let mut w = Window::new(disk, 16, 16).unwrap();
        w.zero_range(4, 8).unwrap();
        assert!(w.zero_range(10, 7).is_err());
        let data = w.into_inner().into_inner();
        assert_eq!(&data[..20], &[0xFF; 20]);
        assert_eq!(&data[20..28], &[0; 8]);
        assert_eq!(&data[28..], &[0xFF; 36]);
    }

    #[test]
    fn punched_file_reads_back_zeros_and_keeps_its_size() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![0xAB; 3 << 20]).unwrap();
        file.zero_range(4096, 1 << 20).unwrap();
        file.zero_range((2 << 20) + 1, 999).unwrap();
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 3 << 20);
        let zero = |i: usize| {
            (4096..4096 + (1 << 20)).contains(&i) || ((2 << 20) + 1..(2 << 20) + 1000).contains(&i)
        };
        for (i, b) in back.iter().enumerate() {
            assert_eq!(*b, if zero(i) { 0 } else { 0xAB }, "byte {i}");
        }
    }
}
