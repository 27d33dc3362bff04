//! A stream whose `flush` is a real sync, for code that only knows `Write::flush`.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::SyncAll;

/// Passes reads, writes and seeks through; `flush` calls [`SyncAll::sync_all`].
///
/// fatfs flushes its device after each file flush, so a store mounted over this makes
/// every flushed file (each step-log entry, each job write) durable, not just written.
#[derive(Debug)]
pub struct SyncOnFlush<T>(pub T);

impl<T: Read> Read for SyncOnFlush<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Write + SyncAll> Write for SyncOnFlush<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.sync_all()
    }
}

impl<T: Seek> Seek for SyncOnFlush<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<T: SyncAll> SyncAll for SyncOnFlush<T> {
    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn start_sync(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.0.start_sync(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts syncs.
    struct Counting(Vec<u8>, usize);

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SyncAll for Counting {
        fn sync_all(&mut self) -> io::Result<()> {
            self.1 += 1;
            Ok(())
        }
    }

    #[test]
    fn flush_syncs_and_write_does_not() {
        let mut s = SyncOnFlush(Counting(Vec::new(), 0));
        s.write_all(b"entry\n").unwrap();
        assert_eq!(s.0 .1, 0);
        s.flush().unwrap();
        assert_eq!((s.0 .0.as_slice(), s.0 .1), (&b"entry\n"[..], 1));
    }
}
