//! A reader that refuses to yield more than a declared number of bytes.

use std::io::{self, Read};

/// Passes through at most `max` bytes of `inner`; if `inner` has more, the read that would
/// cross the limit fails with `InvalidData`, so a chunk cannot decompress to more than
/// its manifest declares (a zip bomb stops at the limit, not at the end of memory).
pub struct Limited<R> {
    inner: R,
    max: u64,
    left: u64,
}

impl<R: Read> Limited<R> {
    pub fn new(inner: R, max: u64) -> Self {
        Limited {
            inner,
            max,
            left: max,
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the limit: one more byte means the source is longer than declared.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("longer than the {} bytes declared", self.max),
                )),
            };
        }
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let read = self.inner.read(&mut buf[..n])?;
        self.left -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_up_to_the_limit_and_refuses_more() {
        let mut out = Vec::new();
        Limited::new(&[1u8, 2, 3][..], 3)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, [1, 2, 3]);

        let mut out = Vec::new();
        let err = Limited::new(&[1u8, 2, 3, 4][..], 3)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn a_shorter_source_just_ends() {
        let mut out = Vec::new();
        Limited::new(&[9u8][..], 10).read_to_end(&mut out).unwrap();
        assert_eq!(out, [9]);
    }
}
