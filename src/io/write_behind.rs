//! A stream that has the medium write what it was given while the caller makes more.

use std::io::{self, Seek, SeekFrom, Write};

use super::SyncAll;

/// Passes writes and seeks through, and after every `every` bytes written asks the
/// medium to start writing them ([`SyncAll::start_sync`]): a long write then ends with
/// an fsync that waits for the last stretch, not for the whole file, and the disk works
/// while the CPU compresses. Only a hint: it makes nothing durable.
#[derive(Debug)]
pub struct WriteBehind<T> {
    inner: T,
    every: u64,
    /// Where the next write lands, and the start of what was written since the last hint.
    at: u64,
    pending_from: u64,
}

impl<T: Write + Seek + SyncAll> WriteBehind<T> {
    pub fn new(mut inner: T, every: u64) -> io::Result<Self> {
        let at = inner.stream_position()?;
        Ok(WriteBehind {
            inner,
            every: every.max(1),
            at,
            pending_from: at,
        })
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn hint(&mut self) {
        let (from, len) = (self.pending_from, self.at.saturating_sub(self.pending_from));
        self.pending_from = self.at;
        if len == 0 {
            return;
        }
        if let Err(e) = self.inner.start_sync(from, len) {
            log::debug!(
                "starting the write-back of bytes {from}..{}: {e}",
                from + len
            );
        }
    }
}

impl<T: Write + Seek + SyncAll> Write for WriteBehind<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.at += n as u64;
        if self.at - self.pending_from >= self.every {
            self.hint();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Write + Seek + SyncAll> Seek for WriteBehind<T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(pos)?;
        if at != self.at {
            // A jump: what was written before it is one range of its own.
            self.hint();
            (self.at, self.pending_from) = (at, at);
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Records the ranges it is asked to start writing.
    struct Recorder {
        bytes: Cursor<Vec<u8>>,
        hints: Vec<(u64, u64)>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Recorder {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.bytes.seek(pos)
        }
    }
    impl SyncAll for Recorder {
        fn sync_all(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn start_sync(&mut self, offset: u64, len: u64) -> io::Result<()> {
            self.hints.push((offset, len));
            Ok(())
        }
    }

    #[test]
    fn hints_each_stretch_written_and_keeps_the_bytes() {
        let recorder = Recorder {
            bytes: Cursor::new(Vec::new()),
            hints: Vec::new(),
        };
        let mut out = WriteBehind::new(recorder, 10).unwrap();
        out.write_all(&[1; 6]).unwrap();
        out.write_all(&[2; 6]).unwrap(); // 12 bytes: a hint
        out.seek(SeekFrom::Start(0)).unwrap();
        out.write_all(&[3; 4]).unwrap();
        out.seek(SeekFrom::End(0)).unwrap(); // a jump: a hint for the 4 before it
        out.write_all(&[4; 10]).unwrap();
        let recorder = out.into_inner();
        assert_eq!(recorder.hints, vec![(0, 12), (0, 4), (12, 10)]);
        let mut want = vec![3; 4];
        want.extend([1; 2]);
        want.extend([2; 6]);
        want.extend([4; 10]);
        assert_eq!(recorder.bytes.into_inner(), want);
    }
}
