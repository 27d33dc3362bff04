//! The used blocks of an ext2/3/4 file system, from its superblock, group descriptors
//! and block bitmaps (what partclone.ext4 reads through libext2fs).
//!
//! Layout (all little-endian): the superblock at byte 1024; the group descriptor table
//! in the block after the superblock's; per group a block bitmap (one bit per block of
//! the group), unless the group is `BLOCK_UNINIT`, which the kernel computes instead:
//! only the group's superblock backup and descriptor copies are in use there, and the
//! bitmaps and inode tables of any group that lie in it. This module does the same, so
//! a fresh file system's never-used groups are not read at all.

use std::io::{Read, Seek, SeekFrom};

use super::used::UsedBlocks;

/// Where the superblock starts, and its magic.
const SUPERBLOCK: u64 = 1024;
const MAGIC: u16 = 0xEF53;

// Feature bits (see e2fsprogs' lib/ext2fs/ext2_fs.h).
const COMPAT_SPARSE_SUPER2: u32 = 0x0200;
const INCOMPAT_COMPRESSION: u32 = 0x0001;
const INCOMPAT_RECOVER: u32 = 0x0004;
const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
const INCOMPAT_META_BG: u32 = 0x0010;
const INCOMPAT_64BIT: u32 = 0x0080;
/// Every incompatible feature whose layout this module knows.
const INCOMPAT_KNOWN: u32 = 0x0002 // filetype
    | INCOMPAT_RECOVER
    | 0x0040 // extents
    | INCOMPAT_64BIT
    | 0x0100 // mmp
    | 0x0200 // flex_bg
    | 0x0400 // ea_inode
    | 0x1000 // dirdata
    | 0x2000 // csum_seed
    | 0x4000 // largedir
    | 0x8000 // inline_data
    | 0x10000 // encrypt
    | 0x20000; // casefold
const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
const RO_COMPAT_HAS_SNAPSHOT: u32 = 0x0080;
const RO_COMPAT_BIGALLOC: u32 = 0x0200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
/// Group flag: the block bitmap was never written; its content is implied.
const BG_BLOCK_UNINIT: u16 = 0x0002;
/// `s_state`: errors were detected.
const STATE_ERROR: u16 = 0x0002;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether `source` holds an ext2/3/4 file system (its superblock's magic). Reads only.
pub fn detect<R: Read + Seek>(source: &mut R) -> bool {
    let mut magic = [0u8; 2];
    source
        .seek(SeekFrom::Start(SUPERBLOCK + 56))
        .and_then(|_| source.read_exact(&mut magic))
        .is_ok_and(|()| u16::from_le_bytes(magic) == MAGIC)
}

/// The block size and block count of the ext2/3/4 file system in `source`; `None`
/// when there is none. Reads only.
pub fn size<R: Read + Seek>(source: &mut R) -> Option<(u64, u64)> {
    let mut sb = [0u8; 1024];
    source
        .seek(SeekFrom::Start(SUPERBLOCK))
        .and_then(|_| source.read_exact(&mut sb))
        .ok()?;
    let log_block = le32(&sb, 24);
    if le16(&sb, 56) != MAGIC || log_block > 6 {
        return None;
    }
    let hi = if le32(&sb, 96) & INCOMPAT_64BIT != 0 {
        u64::from(le32(&sb, 336)) << 32
    } else {
        0
    };
    Some((1024 << log_block, u64::from(le32(&sb, 4)) | hi))
}

/// What the superblock says about the layout.
struct Geometry {
    block_size: u64,
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    groups: u64,
    desc_size: usize,
    gdt_blocks: u64,
    reserved_gdt_blocks: u64,
    inode_table_blocks: u64,
    sparse_super: bool,
    /// With sparse_super2: the (at most two) groups that hold backups.
    backup_groups: Option<[u32; 2]>,
    /// Whether `BLOCK_UNINIT` may be trusted (the descriptors are checksummed).
    uninit_ok: bool,
}

impl Geometry {
    /// Reads and checks the superblock; says why when the file system is one this
    /// module will not map (the caller then images every block).
    fn read(sb: &[u8; 1024], partition_len: u64) -> Result<Geometry, String> {
        if le16(sb, 56) != MAGIC {
            return Err("no ext2/3/4 superblock".into());
        }
        let (compat, incompat, ro_compat) = (le32(sb, 92), le32(sb, 96), le32(sb, 100));
        if le16(sb, 58) & STATE_ERROR != 0 {
            return Err("the file system has errors (run e2fsck)".into());
        }
        if incompat & INCOMPAT_RECOVER != 0 {
            return Err("its journal needs recovery (mounted, or not cleanly unmounted)".into());
        }
        for (bit, name) in [
            (INCOMPAT_COMPRESSION, "compression"),
            (INCOMPAT_JOURNAL_DEV, "journal_dev"),
            (INCOMPAT_META_BG, "meta_bg"),
        ] {
            if incompat & bit != 0 {
                return Err(format!("feature {name} is not mapped by reprov"));
            }
        }
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(format!(
                "unknown incompatible features {:#x}",
                incompat & !INCOMPAT_KNOWN
            ));
        }
        for (bit, name) in [
            (RO_COMPAT_BIGALLOC, "bigalloc"),
            (RO_COMPAT_HAS_SNAPSHOT, "snapshot"),
        ] {
            if ro_compat & bit != 0 {
                return Err(format!("feature {name} is not mapped by reprov"));
            }
        }
        let log_block = le32(sb, 24);
        if log_block > 6 {
            return Err(format!("block size 1024 << {log_block}"));
        }
        let block_size = 1024u64 << log_block;
        let is_64bit = incompat & INCOMPAT_64BIT != 0;
        let blocks = u64::from(le32(sb, 4))
            | if is_64bit {
                u64::from(le32(sb, 336)) << 32
            } else {
                0
            };
        let first_data_block = u64::from(le32(sb, 20));
        let blocks_per_group = u64::from(le32(sb, 32));
        let inodes_per_group = u64::from(le32(sb, 40));
        let rev = le32(sb, 76);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(le16(sb, 88))
        };
        let desc_size = match (is_64bit, le16(sb, 254)) {
            (false, _) => 32,
            (true, size) if (32..=1024).contains(&size) && size.is_power_of_two() => {
                usize::from(size)
            }
            (true, size) => return Err(format!("group descriptor size {size}")),
        };
        let bits_per_bitmap = block_size * 8;
        if blocks == 0
            || blocks_per_group == 0
            || blocks_per_group > bits_per_bitmap
            || first_data_block >= blocks
            || (block_size == 1024) != (first_data_block == 1)
        {
            return Err(format!(
                "inconsistent superblock ({blocks} blocks, {blocks_per_group} per group, first {first_data_block})"
            ));
        }
        if blocks
            .checked_mul(block_size)
            .map_or(true, |len| len > partition_len)
        {
            return Err(format!(
                "{blocks} blocks of {block_size} bytes do not fit the {partition_len}-byte partition"
            ));
        }
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return Err(format!("inode size {inode_size}"));
        }
        let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
        let gdt_blocks = (groups * desc_size as u64).div_ceil(block_size);
        let backup_groups =
            (compat & COMPAT_SPARSE_SUPER2 != 0).then(|| [le32(sb, 0x24C), le32(sb, 0x250)]);
        Ok(Geometry {
            block_size,
            blocks,
            first_data_block,
            blocks_per_group,
            groups,
            desc_size,
            gdt_blocks,
            reserved_gdt_blocks: u64::from(le16(sb, 206)),
            inode_table_blocks: (inodes_per_group * inode_size).div_ceil(block_size),
            sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
            backup_groups,
            uninit_ok: ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0,
        })
    }

    fn group_start(&self, group: u64) -> u64 {
        self.first_data_block + group * self.blocks_per_group
    }

    /// Whether `group` holds a superblock backup and descriptor copies.
    fn has_super(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        if let Some(backups) = self.backup_groups {
            return backups.iter().any(|&g| u64::from(g) == group);
        }
        if !self.sparse_super || group == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut n = base;
            while n < group {
                n *= base;
            }
            n == group
        })
    }
}

/// One group descriptor's block numbers and flags.
struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
}

fn group(desc: &[u8], is_64bit: bool) -> Group {
    let hi = |at: usize| {
        if is_64bit {
            u64::from(le32(desc, at)) << 32
        } else {
            0
        }
    };
    Group {
        block_bitmap: u64::from(le32(desc, 0)) | hi(32),
        inode_bitmap: u64::from(le32(desc, 4)) | hi(36),
        inode_table: u64::from(le32(desc, 8)) | hi(40),
        flags: le16(desc, 18),
    }
}

/// The blocks the ext2/3/4 file system in `source` (a partition of `len` bytes) uses.
/// `Err` says why it cannot be mapped (not ext, unclean, an unknown feature, an
/// impossible field); the caller then images every block. Reads only.
pub fn used_blocks<R: Read + Seek>(source: &mut R, len: u64) -> Result<UsedBlocks, String> {
    let read_at = |source: &mut R, offset: u64, buf: &mut [u8]| {
        source
            .seek(SeekFrom::Start(offset))
            .and_then(|_| source.read_exact(buf))
            .map_err(|e| format!("reading byte {offset}: {e}"))
    };
    let mut sb = [0u8; 1024];
    read_at(source, SUPERBLOCK, &mut sb)?;
    let g = Geometry::read(&sb, len)?;
    let is_64bit = g.desc_size > 32;
    let mut gdt =
        vec![0u8; usize::try_from(g.gdt_blocks * g.block_size).map_err(|e| e.to_string())?];
    read_at(source, (g.first_data_block + 1) * g.block_size, &mut gdt)?;

    let mut used = UsedBlocks::new(g.block_size, g.blocks);
    // The boot block of a 1 KiB-block file system precedes group 0 (and may hold a boot loader).
    used.mark(0, g.first_data_block);
    let in_fs = |block: u64, count: u64| block >= g.first_data_block && block + count <= g.blocks;
    let mut bitmap = vec![0u8; g.block_size as usize];
    for n in 0..g.groups {
        let desc = group(&gdt[n as usize * g.desc_size..][..g.desc_size], is_64bit);
        let start = g.group_start(n);
        let in_group = g.blocks_per_group.min(g.blocks - start);
        if !in_fs(desc.block_bitmap, 1)
            || !in_fs(desc.inode_bitmap, 1)
            || !in_fs(desc.inode_table, g.inode_table_blocks)
        {
            return Err(format!(
                "group {n}'s descriptor points outside the file system"
            ));
        }
        // The group's own metadata, wherever flex_bg put it.
        used.mark(desc.block_bitmap, 1);
        used.mark(desc.inode_bitmap, 1);
        used.mark(desc.inode_table, g.inode_table_blocks);
        if g.has_super(n) {
            used.mark(start, 1 + g.gdt_blocks + g.reserved_gdt_blocks);
        }
        if g.uninit_ok && desc.flags & BG_BLOCK_UNINIT != 0 {
            continue;
        }
        read_at(source, desc.block_bitmap * g.block_size, &mut bitmap)?;
        for (byte_index, &byte) in (0u64..).zip(&bitmap[..in_group.div_ceil(8) as usize]) {
            for bit in (0..8).filter(|bit| byte & (1 << bit) != 0) {
                let block = byte_index * 8 + bit;
                if block < in_group {
                    used.mark(start + block, 1);
                }
            }
        }
    }
    Ok(used)
}
