//! A small write-back cache of whole blocks between fatfs and the disk.
//!
//! fatfs reads and writes one cluster (often 4 KiB) at a time and, between two data
//! clusters, a sector of the FAT: a stream of small scattered requests, each a system
//! call — and under emulation each a trip through the virtual disk. This keeps the last
//! [`BLOCKS`] blocks of [`BLOCK`] bytes in memory and writes the dirty ones back in order
//! at every flush (and when one must make room), so gigabytes move in 64 KiB requests.
//! A flush is a barrier as before: everything written before it reaches the disk before
//! it returns; between flushes, writes may reach the disk in any order, as with any
//! disk's own cache.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, OnceLock};

use super::SyncAll;

/// Bytes per cached block.
pub const BLOCK: u64 = 64 << 10;
/// Blocks kept: 4 MiB in all.
pub const BLOCKS: usize = 64;

/// Bytes per sector: the unit of what a block knows of the disk.
const SECTOR: usize = 512;

struct Block {
    data: Vec<u8>,
    /// Which sectors of `data` hold the disk's bytes (or newer): one bit per sector, so
    /// a block being written sector by sector is never read from the disk first.
    known: u128,
    dirty: bool,
    /// When it was last used (for eviction: least recently used first).
    used: u64,
}

/// The bits of the sectors a block of `len` bytes has.
fn all_sectors(len: usize) -> u128 {
    match len.div_ceil(SECTOR) {
        128 => u128::MAX,
        n => (1u128 << n) - 1,
    }
}

/// The bits of the sectors that bytes `[at, at + n)` of a block of `len` bytes cover
/// whole (a last, short sector counts when covered to the block's end).
fn whole_sectors(at: usize, n: usize, len: usize) -> u128 {
    let first = at.div_ceil(SECTOR);
    let end = at + n;
    let last = if end == len {
        len.div_ceil(SECTOR)
    } else {
        end / SECTOR
    };
    (first..last).fold(0, |bits, s| bits | 1 << s)
}

/// The bits of the sectors that bytes `[at, at + n)` touch at all.
fn touched_sectors(at: usize, n: usize) -> u128 {
    (at / SECTOR..(at + n).div_ceil(SECTOR)).fold(0, |bits, s| bits | 1 << s)
}

/// `inner` seen through the cache. Call `flush` (fatfs does, at every flush and unmount).
pub struct BlockCache<T: Read + Write + Seek> {
    inner: T,
    len: u64,
    pos: u64,
    blocks: HashMap<u64, Block>,
    tick: u64,
    /// The buffer of the last evicted block, reused: a fresh one costs page faults.
    spare: Option<Vec<u8>>,
    gate: WriteGate,
}

/// A handle that makes a [`BlockCache`] refuse every write from then on, before a byte
/// is cached: for a volume found damaged after it was mounted, where a write could land
/// on a cluster a file still uses.
#[derive(Clone, Default)]
pub struct WriteGate(Arc<OnceLock<String>>);

impl WriteGate {
    /// Refuses writes from now on; each refusal says `why`. The first reason stays.
    pub fn shut(&self, why: String) {
        let _ = self.0.set(why);
    }
}

impl<T: Read + Write + Seek> BlockCache<T> {
    /// Caches `inner`, whose length is measured now (it must not change).
    pub fn new(mut inner: T) -> io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        Ok(BlockCache {
            inner,
            len,
            pos: 0,
            blocks: HashMap::new(),
            tick: 0,
            spare: None,
            gate: WriteGate::default(),
        })
    }

    /// The handle that shuts this cache to writes.
    pub fn gate(&self) -> WriteGate {
        self.gate.clone()
    }

    /// The stream underneath (after a flush, it holds everything written).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Bytes of block `index` (shorter at the end of the stream).
    fn block_len(&self, index: u64) -> usize {
        (self.len - index * BLOCK).min(BLOCK) as usize
    }

    /// Block `index` (nothing of it known yet when it is new), with the sectors in
    /// `need` known: read from the disk where they are not.
    fn block(&mut self, index: u64, need: u128) -> io::Result<&mut Block> {
        self.tick += 1;
        if !self.blocks.contains_key(&index) {
            if self.blocks.len() >= BLOCKS {
                self.evict()?;
            }
            let mut data = self.spare.take().unwrap_or_default();
            data.resize(self.block_len(index), 0);
            let block = Block {
                data,
                known: 0,
                dirty: false,
                used: 0,
            };
            self.blocks.insert(index, block);
        }
        let block = self.blocks.get_mut(&index).expect("inserted above");
        block.used = self.tick;
        if need & !block.known != 0 {
            // Read the whole block once, keeping what it already knows (newer).
            let mut disk = vec![0u8; block.data.len()];
            self.inner.seek(SeekFrom::Start(index * BLOCK))?;
            self.inner.read_exact(&mut disk)?;
            for (s, (ours, theirs)) in block
                .data
                .chunks_mut(SECTOR)
                .zip(disk.chunks(SECTOR))
                .enumerate()
            {
                if block.known & (1 << s) == 0 {
                    ours.copy_from_slice(theirs);
                }
            }
            block.known = all_sectors(block.data.len());
        }
        Ok(block)
    }

    /// Writes block `index` back when it is dirty (whole: what it does not know is read
    /// first).
    fn write_block(&mut self, index: u64) -> io::Result<()> {
        let len = self.block_len(index);
        let block = self.block(index, all_sectors(len))?;
        if block.dirty {
            block.dirty = false;
            let data = std::mem::take(&mut block.data);
            let written = self
                .inner
                .seek(SeekFrom::Start(index * BLOCK))
                .and_then(|_| self.inner.write_all(&data));
            self.blocks.get_mut(&index).expect("still cached").data = data;
            written?;
        }
        Ok(())
    }

    /// Drops the least recently used block, written back first when dirty.
    fn evict(&mut self) -> io::Result<()> {
        let Some((&index, _)) = self.blocks.iter().min_by_key(|(_, b)| b.used) else {
            return Ok(());
        };
        self.write_block(index)?;
        let block = self.blocks.remove(&index).expect("found above");
        self.spare = Some(block.data);
        Ok(())
    }

    /// Writes every dirty block back, in order of offset; keeps them cached.
    fn write_back(&mut self) -> io::Result<()> {
        let mut dirty: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(&i, _)| i)
            .collect();
        dirty.sort_unstable();
        dirty
            .into_iter()
            .try_for_each(|index| self.write_block(index))
    }
}

impl<T: Read + Write + Seek> Read for BlockCache<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let (index, at) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let n = (self.block_len(index) - at).min(buf.len());
        let block = self.block(index, touched_sectors(at, n))?;
        buf[..n].copy_from_slice(&block.data[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Read + Write + Seek> Write for BlockCache<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(why) = self.gate.0.get() {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why.clone()));
        }
        if self.pos >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "writing at byte {} past the end ({} bytes)",
                    self.pos, self.len
                ),
            ));
        }
        let (index, at) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let len = self.block_len(index);
        let n = (len - at).min(buf.len());
        // Only sectors written in part must be read first.
        let partial = touched_sectors(at, n) & !whole_sectors(at, n, len);
        let block = self.block(index, partial)?;
        block.data[at..at + n].copy_from_slice(&buf[..n]);
        block.known |= touched_sectors(at, n);
        block.dirty = true;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_back()?;
        self.inner.flush()
    }
}

impl<T: Read + Write + Seek> Seek for BlockCache<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seeking before the start")
        })?;
        Ok(self.pos)
    }
}

impl<T: Read + Write + Seek + SyncAll> SyncAll for BlockCache<T> {
    fn sync_all(&mut self) -> io::Result<()> {
        self.write_back()?;
        self.inner.sync_all()
    }
}

impl<T: Read + Write + Seek> Drop for BlockCache<T> {
    /// Nothing written is dropped silently: a store that was not unmounted still gets
    /// its writes, and a failure is logged (as fatfs does).
    fn drop(&mut self) {
        if let Err(e) = self.write_back() {
            log::error!("writing cached blocks back: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Counts the writes that reach the stream underneath.
    struct Counting {
        inner: Cursor<Vec<u8>>,
        writes: usize,
    }

    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.inner.read(buf)
        }
    }
    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Counting {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn reads_what_was_written_and_writes_it_back_in_blocks() {
        let len = 3 * BLOCK as usize + 1000;
        let start: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut cache = BlockCache::new(Counting {
            inner: Cursor::new(start.clone()),
            writes: 0,
        })
        .unwrap();
        let mut expected = start.clone();
        // Small scattered writes, as fatfs makes them, one across a block's end.
        for (at, byte) in [
            (10usize, 1u8),
            (BLOCK as usize - 2, 2),
            (len - 1, 3),
            (5000, 4),
        ] {
            cache.seek(SeekFrom::Start(at as u64)).unwrap();
            cache.write_all(&[byte; 4][..4.min(len - at)]).unwrap();
            for b in &mut expected[at..(at + 4).min(len)] {
                *b = byte;
            }
        }
        // Reads see them before any flush.
        let mut back = vec![0u8; len];
        cache.seek(SeekFrom::Start(0)).unwrap();
        cache.read_exact(&mut back).unwrap();
        assert!(back == expected);
        assert_eq!(
            cache.get_mut().writes,
            0,
            "nothing written before the flush"
        );
        cache.flush().unwrap();
        assert_eq!(cache.get_mut().writes, 3, "one write per dirty block");
        assert!(cache.get_mut().inner.get_ref() == &expected);
        // Past the end: no write, an error.
        cache.seek(SeekFrom::Start(len as u64)).unwrap();
        assert!(cache.write(b"x").is_err());
    }

    #[test]
    fn sector_bits() {
        assert_eq!(all_sectors(BLOCK as usize), u128::MAX);
        assert_eq!(all_sectors(1000), 0b11);
        assert_eq!(whole_sectors(0, 512, 4096), 0b1);
        assert_eq!(whole_sectors(100, 1000, 4096), 0b10);
        assert_eq!(whole_sectors(512, 488, 1000), 0b10, "the short last sector");
        assert_eq!(touched_sectors(100, 1000), 0b111);
    }

    /// A block written in part, then evicted, keeps the disk's bytes around the write.
    #[test]
    fn partial_writes_keep_the_bytes_around_them() {
        let len = (BLOCKS as u64 + 2) * BLOCK;
        let start: Vec<u8> = (0..len).map(|i| (i % 239) as u8).collect();
        let mut cache = BlockCache::new(Cursor::new(start.clone())).unwrap();
        let mut expected = start;
        for n in 0..BLOCKS as u64 + 2 {
            let at = n * BLOCK + 700;
            cache.seek(SeekFrom::Start(at)).unwrap();
            cache.write_all(&[0xEE; 1500]).unwrap();
            expected[at as usize..at as usize + 1500].fill(0xEE);
        }
        cache.flush().unwrap();
        assert!(cache.get_mut().get_ref() == &expected);
    }

    #[test]
    fn more_blocks_than_it_keeps_are_written_back_as_it_goes() {
        let len = (BLOCKS as u64 + 10) * BLOCK;
        let mut cache = BlockCache::new(Cursor::new(vec![0u8; len as usize])).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
        cache.write_all(&data).unwrap();
        drop(cache.flush());
        let mut back = Vec::new();
        cache.seek(SeekFrom::Start(0)).unwrap();
        cache.read_to_end(&mut back).unwrap();
        assert!(back == data);
        assert!(cache.get_mut().get_ref() == &data);
    }
}
