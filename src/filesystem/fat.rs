//! The used clusters of a FAT12/16/32 file system, from its boot sector (BPB) and its
//! allocation table (what partclone.fat reads): a cluster is free when its FAT entry is 0.
//! Everything before the data area (boot sector, reserved sectors, the FATs, the FAT12/16
//! root directory) is always in use.

use std::io::{Read, Seek, SeekFrom};

use super::used::UsedBlocks;

/// The FAT variant, by cluster count as Microsoft's specification defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// What the boot sector says.
#[derive(Debug, Clone, Copy)]
pub struct Bpb {
    pub fat_type: FatType,
    cluster_size: u64,
    /// First byte of the FAT in use, and its size in bytes.
    fat_offset: u64,
    fat_len: u64,
    /// First byte of cluster 2.
    data_offset: u64,
    clusters: u64,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

impl Bpb {
    /// Parses a boot sector; `Err` says why it is not a FAT one that fits `len` bytes.
    pub fn parse(sector: &[u8; 512], len: u64) -> Result<Bpb, String> {
        if sector[510..512] != [0x55, 0xAA] {
            return Err("no boot sector signature".into());
        }
        let bytes_per_sector = le16(sector, 11);
        let sectors_per_cluster = u64::from(sector[13]);
        let reserved = le16(sector, 14);
        let fats = u64::from(sector[16]);
        let root_entries = le16(sector, 17);
        let total = match le16(sector, 19) {
            0 => le32(sector, 32),
            n => n,
        };
        let fat_sectors = match le16(sector, 22) {
            0 => le32(sector, 36),
            n => n,
        };
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
            || !sectors_per_cluster.is_power_of_two()
            || reserved == 0
            || fats == 0
            || fat_sectors == 0
        {
            return Err("not a FAT boot sector".into());
        }
        let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let data_sector = reserved + fats * fat_sectors + root_sectors;
        if total <= data_sector || total * bytes_per_sector > len {
            return Err(format!(
                "{total} sectors of {bytes_per_sector} bytes do not fit the {len}-byte partition"
            ));
        }
        let clusters = (total - data_sector) / sectors_per_cluster;
        let fat_type = match clusters {
            0..=4084 => FatType::Fat12,
            4085..=65524 => FatType::Fat16,
            _ => FatType::Fat32,
        };
        // FAT32 may say which FAT is in use when mirroring is off (ext_flags bit 7).
        let active = match fat_type {
            FatType::Fat32 if le16(sector, 40) & 0x80 != 0 => le16(sector, 40) & 0x0F,
            _ => 0,
        };
        if active >= fats {
            return Err(format!("the active FAT is {active} of {fats}"));
        }
        let fat_len = fat_sectors * bytes_per_sector;
        let needed = match fat_type {
            FatType::Fat12 => (clusters + 2) * 3 / 2 + 1,
            FatType::Fat16 => (clusters + 2) * 2,
            FatType::Fat32 => (clusters + 2) * 4,
        };
        if fat_len < needed {
            return Err(format!(
                "a FAT of {fat_len} bytes cannot hold {clusters} clusters"
            ));
        }
        Ok(Bpb {
            fat_type,
            cluster_size: sectors_per_cluster * bytes_per_sector,
            fat_offset: (reserved + active * fat_sectors) * bytes_per_sector,
            fat_len,
            data_offset: data_sector * bytes_per_sector,
            clusters,
        })
    }
}

/// Reads the boot sector of `source` (a partition of `len` bytes).
pub fn read_bpb<R: Read + Seek>(source: &mut R, len: u64) -> Result<Bpb, String> {
    let mut sector = [0u8; 512];
    source
        .seek(SeekFrom::Start(0))
        .and_then(|_| source.read_exact(&mut sector))
        .map_err(|e| format!("reading the boot sector: {e}"))?;
    Bpb::parse(&sector, len)
}

/// The blocks the FAT file system in `source` (a partition of `len` bytes) uses, in
/// blocks of a cluster, or smaller when the data area does not start on a cluster
/// boundary. Reads only.
pub fn used_blocks<R: Read + Seek>(source: &mut R, len: u64) -> Result<UsedBlocks, String> {
    let bpb = read_bpb(source, len)?;
    let mut fat = vec![0u8; usize::try_from(bpb.fat_len).map_err(|e| e.to_string())?];
    source
        .seek(SeekFrom::Start(bpb.fat_offset))
        .and_then(|_| source.read_exact(&mut fat))
        .map_err(|e| format!("reading the FAT: {e}"))?;
    // The largest power of two that divides both the data area's start and a cluster.
    let block = bpb
        .cluster_size
        .min(1 << bpb.data_offset.trailing_zeros().min(63));
    let mut used = UsedBlocks::new(block, len.div_ceil(block));
    used.mark_bytes(0, bpb.data_offset);
    let blocks_per_cluster = bpb.cluster_size / block;
    for cluster in 2..bpb.clusters + 2 {
        let at = |n: u64| usize::try_from(n).expect("bounded by the FAT's length");
        let entry = match bpb.fat_type {
            FatType::Fat12 => {
                let pair = le16(&fat, at(cluster * 3 / 2));
                if cluster % 2 == 0 {
                    pair & 0x0FFF
                } else {
                    pair >> 4
                }
            }
            FatType::Fat16 => le16(&fat, at(cluster * 2)),
            FatType::Fat32 => le32(&fat, at(cluster * 4)) & 0x0FFF_FFFF,
        };
        if entry != 0 {
            let first = (bpb.data_offset + (cluster - 2) * bpb.cluster_size) / block;
            used.mark(first, blocks_per_cluster);
        }
    }
    Ok(used)
}
