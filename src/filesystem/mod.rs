//! What file system a partition holds, and which of its blocks are in use, read from
//! the file system's own structures (ext4 block bitmaps, the FAT) as partclone does, so
//! an image stores what the file system uses and not the old bytes of deleted files.
//!
//! Pure over `Read + Seek`: tests run it on in-memory file systems and on ones made by
//! mkfs. Anything this module cannot read with certainty is imaged whole by the caller.

mod ext4;
mod fat;
mod used;

pub use fat::FatType;
pub use used::UsedBlocks;

use std::io::{Read, Seek};

use crate::disk::PartType;
use crate::image::Filesystem;

/// What a partition holds, as far as reprov can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub filesystem: Filesystem,
    /// The MBR type such a partition has (0x83 for ext, 0x0C/0x0E/0x01 for FAT32/16/12).
    pub partition_type: Option<PartType>,
}

/// Looks at the superblock / boot sector of `source`, a partition of `len` bytes. Reads only.
pub fn detect<R: Read + Seek>(source: &mut R, len: u64) -> Detected {
    if ext4::detect(source) {
        return Detected {
            filesystem: Filesystem::Ext4,
            partition_type: Some(PartType::LINUX),
        };
    }
    match fat::read_bpb(source, len) {
        Ok(bpb) => Detected {
            filesystem: Filesystem::Fat,
            partition_type: Some(match bpb.fat_type {
                FatType::Fat32 => PartType::FAT32_LBA,
                FatType::Fat16 => PartType(0x0E),
                FatType::Fat12 => PartType(0x01),
            }),
        },
        Err(_) => Detected {
            filesystem: Filesystem::Unknown,
            partition_type: None,
        },
    }
}

/// The block size and block count of the ext2/3/4 file system in `source`, if any
/// (what growing it to fill its partition needs). Reads only.
pub fn ext4_size<R: Read + Seek>(source: &mut R) -> Option<(u64, u64)> {
    ext4::size(source)
}

/// The blocks the file system `filesystem` in `source` (a partition of `len` bytes)
/// uses; `Err` says why they cannot be told (then every block is imaged). Reads only.
pub fn used_blocks<R: Read + Seek>(
    source: &mut R,
    len: u64,
    filesystem: Filesystem,
) -> Result<UsedBlocks, String> {
    match filesystem {
        Filesystem::Ext4 => ext4::used_blocks(source, len),
        Filesystem::Fat => fat::used_blocks(source, len),
        Filesystem::Unknown => Err("no file system reprov knows".into()),
    }
}
