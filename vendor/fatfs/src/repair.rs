// reprov: the whole file. A repair pass for a volume a power cut left dirty, run before the
// first write of a mount (see README.reprov.md). fatfs writes the FAT, its mirror, FSInfo,
// directory entries and data with no order between them, so a cut under a write-back disk
// cache can keep any subset: a cluster allocated but named by nothing, a chain or an entry
// that names a free cluster, two entries naming one chain (a cut rename), a size longer or
// shorter than its chain, FAT copies that differ, a stale free count. This pass finds each
// (reading only, bounded by the number of clusters), then fixes them the way `fsck.fat -a`
// would, so the next allocation can never hand out a cluster a file still uses.

use core::fmt;
use io;
use io::prelude::*;
use io::{ErrorKind, SeekFrom};

#[cfg(all(not(feature = "std"), feature = "alloc"))]
use alloc::vec::Vec;

use byteorder::{ByteOrder, LittleEndian};

use fs::{FatType, FileSystem, ReadWriteSeek};
use table::{fat_entry, set_fat_entry, FatValue, RESERVED_FAT_ENTRIES};

const ENTRY_SIZE: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const DELETED: u8 = 0xE5;

/// What a repair changed (all zero: the volume was consistent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Clusters marked used that no file or directory names, freed.
    pub lost_clusters_freed: u32,
    /// Chains that named a free, bad, foreign or already used cluster, ended before it.
    pub chains_ended: u32,
    /// Entries whose size or first cluster was changed to match their chain.
    pub entries_fixed: u32,
    /// Entries removed because another entry already names their first cluster.
    pub entries_removed: u32,
    /// Sectors of the second FAT that differed from the first, copied from it.
    pub fat_sectors_copied: u32,
}

impl Repairs {
    /// Whether the repair changed nothing.
    pub fn is_empty(&self) -> bool {
        *self == Repairs::default()
    }
}

impl fmt::Display for Repairs {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} lost clusters freed, {} cluster chains ended, {} entries fixed, {} duplicate entries removed, {} FAT sectors copied",
            self.lost_clusters_freed, self.chains_ended, self.entries_fixed, self.entries_removed, self.fat_sectors_copied
        )
    }
}

enum Fix {
    /// Make `cluster` the end of its chain.
    EndAt(u32),
    /// Rewrite the entry at byte `pos`: its first cluster and size.
    Entry { pos: u64, first: u32, size: u32 },
    /// Mark the entry at byte `pos` deleted.
    Remove(u64),
}

/// One bit per cluster: named by a chain found so far.
struct Claimed(Vec<u64>);

impl Claimed {
    fn get(&self, c: u32) -> bool {
        self.0[c as usize / 64] & (1 << (c % 64)) != 0
    }
    fn set(&mut self, c: u32, on: bool) {
        let bit = 1 << (c % 64);
        if on {
            self.0[c as usize / 64] |= bit;
        } else {
            self.0[c as usize / 64] &= !bit;
        }
    }
}

impl<T: ReadWriteSeek> FileSystem<T> {
    /// Whether the volume's dirty bit was set when it was mounted (it was not unmounted
    /// cleanly: a power cut, a crash).
    pub fn was_dirty_at_mount(&self) -> bool {
        self.dirty_at_mount.get()
    }

    /// Repairs what a cut can leave in a volume that was dirty at mount; does nothing on a
    /// clean one. Reads the whole FAT and every directory first and writes nothing when
    /// that finds damage it cannot explain (an `InvalidData` error); then writes its fixes,
    /// syncs, frees the lost clusters, copies the first FAT over the second where they
    /// differ, counts the free clusters again and syncs. A cut during the repair leaves the
    /// volume dirty, so the next mount repairs again.
    pub fn repair_if_dirty(&self) -> io::Result<Repairs> {
        let mut repairs = Repairs::default();
        if !self.dirty_at_mount.get() {
            return Ok(repairs);
        }
        let (fixes, lost, copies) = self.damage()?;
        if fixes.is_empty() && lost.is_empty() && copies.is_empty() {
            return Ok(repairs);
        }
        self.set_dirty_flag(true)?; // marks the mount as written, so unmount clears the bit
        // Entries and chain ends first: nothing names a cluster once it is freed.
        for fix in &fixes {
            match *fix {
                Fix::EndAt(c) => {
                    set_fat_entry(&mut self.fat_slice(), self.fat_type, c, FatValue::EndOfChain)?;
                    repairs.chains_ended += 1;
                },
                Fix::Entry { pos, first, size } => {
                    let mut raw = self.read_entry(pos)?;
                    LittleEndian::write_u16(&mut raw[20..22], (first >> 16) as u16);
                    LittleEndian::write_u16(&mut raw[26..28], first as u16);
                    LittleEndian::write_u32(&mut raw[28..32], size);
                    self.write_entry(pos, &raw)?;
                    repairs.entries_fixed += 1;
                },
                Fix::Remove(pos) => {
                    let mut raw = self.read_entry(pos)?;
                    raw[0] = DELETED;
                    self.write_entry(pos, &raw)?;
                    repairs.entries_removed += 1;
                },
            }
        }
        self.disk.borrow_mut().flush()?;
        {
            let mut fat = self.fat_slice();
            for &c in &lost {
                set_fat_entry(&mut fat, self.fat_type, c, FatValue::Free)?;
            }
        }
        repairs.lost_clusters_freed = lost.len() as u32;
        // The fixes above wrote both copies; what differed before is copied now.
        repairs.fat_sectors_copied = self.copy_first_fat()?;
        self.recalc_free_clusters()?;
        self.flush_fs_info()?;
        self.disk.borrow_mut().flush()?;
        Ok(repairs)
    }

    /// What [`FileSystem::repair_if_dirty`] would change, found the same way and reading
    /// only, whether or not the volume is dirty: on a volume unmounted cleanly anything
    /// here is damage (a cut cannot explain it), and a write there may hand out a cluster
    /// a file still uses. `InvalidData` where the damage cannot even be described.
    pub fn check(&self) -> io::Result<Repairs> {
        let (fixes, lost, copies) = self.damage()?;
        let mut found = Repairs::default();
        for fix in &fixes {
            match fix {
                Fix::EndAt(_) => found.chains_ended += 1,
                Fix::Entry { .. } => found.entries_fixed += 1,
                Fix::Remove(_) => found.entries_removed += 1,
            }
        }
        found.lost_clusters_freed = lost.len() as u32;
        found.fat_sectors_copied = copies.len() as u32;
        Ok(found)
    }

    /// Reading only: the fixes a repair makes, the clusters marked used that nothing
    /// names, and the sectors where the FAT copies differ.
    fn damage(&self) -> io::Result<(Vec<Fix>, Vec<u32>, Vec<u64>)> {
        let (fixes, claimed) = self.scan()?;
        let lost = self.lost_clusters(&claimed)?;
        let copies = self.differing_fat_sectors()?;
        Ok((fixes, lost, copies))
    }

    /// The clusters marked used (data or end of chain) that `claimed` does not hold. A
    /// FAT32 is read in 64 KiB pieces, not an entry at a time: a check runs at every
    /// mount, and a large volume has millions of entries.
    fn lost_clusters(&self, claimed: &Claimed) -> io::Result<Vec<u32>> {
        let end = self.total_clusters + RESERVED_FAT_ENTRIES;
        let mut lost = Vec::new();
        let mut fat = self.fat_slice();
        if self.fat_type != FatType::Fat32 {
            for c in RESERVED_FAT_ENTRIES..end {
                match fat_entry(&mut fat, self.fat_type, c)? {
                    FatValue::Data(_) | FatValue::EndOfChain if !claimed.get(c) => lost.push(c),
                    _ => {},
                }
            }
            return Ok(lost);
        }
        const FREE: u32 = 0;
        const BAD: u32 = 0x0FFF_FFF7;
        let mut buf = vec![0u8; 64 << 10];
        let mut c = RESERVED_FAT_ENTRIES;
        fat.seek(SeekFrom::Start(u64::from(c) * 4))?;
        while c < end {
            let n = ((end - c) as usize).min(buf.len() / 4);
            fat.read_exact(&mut buf[..n * 4])?;
            for raw in buf[..n * 4].chunks_exact(4) {
                let value = LittleEndian::read_u32(raw) & 0x0FFF_FFFF;
                if value != FREE && value != BAD && !claimed.get(c) {
                    lost.push(c);
                }
                c += 1;
            }
        }
        Ok(lost)
    }

    /// Walks every chain from the root, reading only: the fixes to make and the clusters
    /// that stay named.
    fn scan(&self) -> io::Result<(Vec<Fix>, Claimed)> {
        let end = self.total_clusters + RESERVED_FAT_ENTRIES;
        let mut claimed = Claimed(vec![0u64; end as usize / 64 + 1]);
        let mut fixes = Vec::new();
        // Directories still to read: the byte ranges of their clusters (or the FAT12/16 root).
        let mut dirs: Vec<Vec<(u64, u64)>> = Vec::new();
        match self.fat_type {
            FatType::Fat32 => {
                let root = self.bpb.root_dir_first_cluster;
                let chain = self.walk(root, &mut claimed, &mut fixes)?;
                if chain.is_empty() {
                    return Err(io::Error::new(ErrorKind::InvalidData, "FAT: the root directory names no valid cluster"));
                }
                dirs.push(self.cluster_ranges(&chain));
            },
            _ => {
                let begin = self.bpb.bytes_from_sectors(self.first_data_sector - self.root_dir_sectors);
                dirs.push(vec![(begin, self.bpb.bytes_from_sectors(self.root_dir_sectors))]);
            },
        }
        let cluster_size = u64::from(self.cluster_size());
        while let Some(ranges) = dirs.pop() {
            'dir: for (begin, len) in ranges {
                let mut buf = vec![0u8; len as usize];
                {
                    let mut disk = self.disk.borrow_mut();
                    disk.seek(SeekFrom::Start(begin))?;
                    disk.read_exact(&mut buf)?;
                }
                for (i, raw) in buf.chunks(ENTRY_SIZE).enumerate() {
                    let pos = begin + (i * ENTRY_SIZE) as u64;
                    let attrs = raw[11];
                    if raw[0] == 0 {
                        break 'dir; // the end of the directory
                    }
                    if raw[0] == DELETED || attrs == ATTR_LFN || attrs & ATTR_VOLUME != 0 || raw[0] == b'.' {
                        continue;
                    }
                    let hi = match self.fat_type {
                        FatType::Fat32 => u32::from(LittleEndian::read_u16(&raw[20..22])),
                        _ => 0,
                    };
                    let first = hi << 16 | u32::from(LittleEndian::read_u16(&raw[26..28]));
                    let size = LittleEndian::read_u32(&raw[28..32]);
                    let is_dir = attrs & ATTR_DIR != 0;
                    if first == 0 {
                        if size != 0 && !is_dir {
                            fixes.push(Fix::Entry { pos, first: 0, size: 0 });
                        }
                        continue;
                    }
                    if first >= RESERVED_FAT_ENTRIES && first < end && claimed.get(first) {
                        // Another entry names this chain: a rename or a cross link cut short.
                        fixes.push(Fix::Remove(pos));
                        continue;
                    }
                    let chain = self.walk(first, &mut claimed, &mut fixes)?;
                    if is_dir {
                        // A directory whose first cluster does not start with "." and ".."
                        // was cut while being made: its cluster holds old bytes, not entries.
                        if chain.is_empty() || !self.starts_with_dots(chain[0])? {
                            fixes.push(Fix::Remove(pos));
                            for &c in &chain {
                                claimed.set(c, false);
                            }
                        } else {
                            dirs.push(self.cluster_ranges(&chain));
                        }
                        continue;
                    }
                    // What the size covers stays; clusters past it were allocated by a write
                    // whose size never landed, and a size past the chain shrinks to it.
                    let needed = ((u64::from(size) + cluster_size - 1) / cluster_size) as usize;
                    let keep = chain.len().min(needed);
                    for &c in &chain[keep..] {
                        claimed.set(c, false);
                    }
                    if keep == 0 {
                        fixes.push(Fix::Entry { pos, first: 0, size: 0 });
                        continue;
                    }
                    if chain.len() > keep {
                        fixes.push(Fix::EndAt(chain[keep - 1]));
                    }
                    if keep < needed {
                        fixes.push(Fix::Entry { pos, first, size: (keep as u64 * cluster_size) as u32 });
                    }
                }
            }
        }
        Ok((fixes, claimed))
    }

    /// The valid part of the chain from `first`, claimed; a link to a cluster that is free,
    /// bad, outside the volume or already claimed (a loop, a cross link) ends it there.
    fn walk(&self, first: u32, claimed: &mut Claimed, fixes: &mut Vec<Fix>) -> io::Result<Vec<u32>> {
        let end = self.total_clusters + RESERVED_FAT_ENTRIES;
        let mut fat = self.fat_slice();
        let mut chain = Vec::new();
        let mut c = first;
        loop {
            let value = if c < RESERVED_FAT_ENTRIES || c >= end || claimed.get(c) {
                FatValue::Bad
            } else {
                fat_entry(&mut fat, self.fat_type, c)?
            };
            match value {
                FatValue::Free | FatValue::Bad => {
                    if let Some(&last) = chain.last() {
                        fixes.push(Fix::EndAt(last));
                    }
                    return Ok(chain);
                },
                FatValue::EndOfChain => {
                    claimed.set(c, true);
                    chain.push(c);
                    return Ok(chain);
                },
                FatValue::Data(next) => {
                    claimed.set(c, true);
                    chain.push(c);
                    c = next;
                },
            }
        }
    }

    /// Whether directory cluster `c` starts with the "." and ".." entries.
    fn starts_with_dots(&self, c: u32) -> io::Result<bool> {
        let mut raw = [0u8; 2 * ENTRY_SIZE];
        let mut disk = self.disk.borrow_mut();
        disk.seek(SeekFrom::Start(self.offset_from_cluster(c)))?;
        disk.read_exact(&mut raw)?;
        let dot = |e: &[u8], name: &[u8; 11]| &e[..11] == name && e[11] & ATTR_DIR != 0;
        Ok(dot(&raw[..32], b".          ") && dot(&raw[32..], b"..         "))
    }

    fn cluster_ranges(&self, chain: &[u32]) -> Vec<(u64, u64)> {
        let len = u64::from(self.cluster_size());
        chain.iter().map(|&c| (self.offset_from_cluster(c), len)).collect()
    }

    fn read_entry(&self, pos: u64) -> io::Result<[u8; ENTRY_SIZE]> {
        let mut raw = [0u8; ENTRY_SIZE];
        let mut disk = self.disk.borrow_mut();
        disk.seek(SeekFrom::Start(pos))?;
        disk.read_exact(&mut raw)?;
        Ok(raw)
    }

    fn write_entry(&self, pos: u64, raw: &[u8; ENTRY_SIZE]) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.seek(SeekFrom::Start(pos))?;
        disk.write_all(raw)
    }

    /// The byte offsets (in the first FAT) of the sectors where a mirrored second FAT differs.
    fn differing_fat_sectors(&self) -> io::Result<Vec<u64>> {
        let mut differ = Vec::new();
        if !self.bpb.mirroring_enabled() || self.bpb.fats < 2 {
            return Ok(differ);
        }
        let sector = u64::from(self.bpb.bytes_per_sector);
        let first = self.bpb.bytes_from_sectors(self.bpb.reserved_sectors());
        let fat_len = self.bpb.bytes_from_sectors(self.bpb.sectors_per_fat());
        let (mut one, mut two) = (vec![0u8; sector as usize], vec![0u8; sector as usize]);
        let mut disk = self.disk.borrow_mut();
        let mut at = 0;
        while at < fat_len {
            disk.seek(SeekFrom::Start(first + at))?;
            disk.read_exact(&mut one)?;
            disk.seek(SeekFrom::Start(first + fat_len + at))?;
            disk.read_exact(&mut two)?;
            if one != two {
                differ.push(at);
            }
            at += sector;
        }
        Ok(differ)
    }

    fn copy_first_fat(&self) -> io::Result<u32> {
        let differ = self.differing_fat_sectors()?;
        let sector = u64::from(self.bpb.bytes_per_sector);
        let first = self.bpb.bytes_from_sectors(self.bpb.reserved_sectors());
        let fat_len = self.bpb.bytes_from_sectors(self.bpb.sectors_per_fat());
        let mut buf = vec![0u8; sector as usize];
        let mut disk = self.disk.borrow_mut();
        for &at in &differ {
            disk.seek(SeekFrom::Start(first + at))?;
            disk.read_exact(&mut buf)?;
            disk.seek(SeekFrom::Start(first + fat_len + at))?;
            disk.write_all(&buf)?;
        }
        Ok(differ.len() as u32)
    }
}
