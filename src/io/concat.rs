//! Several readers as one stream: an image kept as parts on a FAT file system that the
//! host has mounted (`NAME`, `NAME.002`, … — see `crate::store::Parts`), read in place.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Opens `path` and the parts beside it (`PATH.002`, `PATH.003` …, as reprov keeps a file
/// bigger than FAT allows) as one stream. A file without parts is just itself.
pub fn open_with_parts(path: &Path) -> io::Result<Concat<File>> {
    let mut parts = Vec::new();
    for n in 1..=999 {
        let part = match n {
            1 => path.to_path_buf(),
            n => PathBuf::from(format!("{}.{n:03}", path.display())),
        };
        let file = match super::open_regular(&part) {
            Err(e) if n > 1 && e.kind() == io::ErrorKind::NotFound => break,
            opened => opened?,
        };
        let len = file.metadata()?.len();
        parts.push((file, len));
    }
    Ok(Concat::new(parts))
}

/// The concatenation of `parts` (each with its length), read and sought as one.
pub struct Concat<R> {
    parts: Vec<(R, u64)>,
    pos: u64,
}

impl<R: Read + Seek> Concat<R> {
    pub fn new(parts: Vec<(R, u64)>) -> Self {
        Concat { parts, pos: 0 }
    }

    pub fn len(&self) -> u64 {
        self.parts.iter().map(|(_, len)| len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many parts it is made of.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

impl<R: Read + Seek> Read for Concat<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut start = 0u64;
        for (part, len) in &mut self.parts {
            if self.pos < start + *len {
                let at = self.pos - start;
                let n = usize::try_from(*len - at)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                part.seek(SeekFrom::Start(at))?;
                let got = part.read(&mut buf[..n])?;
                self.pos += got as u64;
                return Ok(got);
            }
            start += *len;
        }
        Ok(0)
    }
}

impl<R: Read + Seek> Seek for Concat<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seeking before the start")
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_and_seeks_across_parts() {
        let whole: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let parts = vec![
            (Cursor::new(whole[..300].to_vec()), 300),
            (Cursor::new(whole[300..301].to_vec()), 1),
            (Cursor::new(whole[301..].to_vec()), 699),
        ];
        let mut c = Concat::new(parts);
        assert_eq!(c.len(), 1000);
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        assert_eq!(all, whole);
        for at in [0u64, 299, 300, 301, 999] {
            c.seek(SeekFrom::Start(at)).unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b[0], whole[at as usize], "at {at}");
        }
        c.seek(SeekFrom::End(0)).unwrap();
        assert_eq!(c.read(&mut [0u8; 4]).unwrap(), 0);
        assert!(c.seek(SeekFrom::Current(-2000)).is_err());
    }
}
