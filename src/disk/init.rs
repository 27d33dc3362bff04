//! `layout init`: a fresh appliance layout on a disk, planned as a pure function and
//! then written: the file systems first, the MBR last.

use std::io::{Read, Seek, SeekFrom, Write};

use super::detect::Role;
use super::mbr::{
    bytes_to_sectors, Entry, Mbr, PartType, ALIGN, BOOT_ACTIVE, BOOT_CODE_LEN, BOOT_INACTIVE,
};
use super::Error;
use crate::io::{SyncAll, Window, ZeroRange};
use crate::units::format_size;

/// The smallest partition fatfs formats as FAT32 (65525 clusters of 512 bytes, plus
/// the FATs), rounded up to whole MiB.
pub const MIN_FAT32: u64 = 33 << 20;

/// Where MBR addressing ends: the last 1 MiB boundary a `u32` sector number reaches.
const MBR_LIMIT: u64 = 1 << 41; // 2^32 sectors of 512 bytes

/// The sizes of a new layout, in bytes, each a multiple of 1 MiB.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub system: u64,
    pub nos: u64,
    /// The free gap after NOS that it can grow into.
    pub float: u64,
    pub images: u64,
    /// `None`: the data partition takes the rest of the disk.
    pub data: Option<u64>,
    /// The MBR type of the NOS partition (`0x83` for Linux).
    pub nos_type: PartType,
}

impl Sizes {
    /// The disk size this layout needs: the first MiB, the partitions and the float
    /// (with the smallest data partition when data takes the rest).
    pub fn total(&self) -> Option<u64> {
        [
            ALIGN,
            self.system,
            self.nos,
            self.float,
            self.images,
            self.data.unwrap_or(MIN_FAT32),
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
    }
}

/// The four entries of the layout on a disk of `disk_len` bytes. Pure: no I/O.
pub fn plan(sizes: &Sizes, disk_len: u64) -> Result<[Entry; 4], String> {
    let named = [
        ("system", sizes.system),
        ("NOS", sizes.nos),
        ("float", sizes.float),
        ("images", sizes.images),
    ];
    for (name, size) in named.iter().chain(sizes.data.map(|d| ("data", d)).iter()) {
        if size % ALIGN != 0 {
            return Err(format!(
                "the {name} size {size} bytes is not a multiple of 1 MiB"
            ));
        }
    }
    for (name, size) in [("system", sizes.system), ("images", sizes.images)]
        .into_iter()
        .chain(sizes.data.map(|d| ("data", d)))
    {
        if size < MIN_FAT32 {
            return Err(format!(
                "the {name} partition of {} is too small for FAT32 (at least {})",
                format_size(size),
                format_size(MIN_FAT32)
            ));
        }
    }
    if sizes.nos == 0 {
        return Err("the NOS partition needs a size above zero".to_string());
    }
    let t = sizes.nos_type;
    if t.is_empty() || t.is_extended() || t == PartType::GPT_PROTECTIVE {
        return Err(format!(
            "NOS type {t} is not a partition type an appliance disk can use"
        ));
    }
    let usable = disk_len.min(MBR_LIMIT) / ALIGN * ALIGN;
    let needed = sizes.total().ok_or("the sizes add up past 2^64 bytes")?;
    if needed > usable {
        return Err(format!(
            "the layout needs {needed} bytes ({}: 1 MiB for the MBR + system {} + NOS {} + \
             float {} + images {} + data {}) but the disk holds {disk_len} bytes ({}{})",
            format_size(needed),
            format_size(sizes.system),
            format_size(sizes.nos),
            format_size(sizes.float),
            format_size(sizes.images),
            sizes
                .data
                .map_or(format!("at least {}", format_size(MIN_FAT32)), format_size),
            format_size(disk_len),
            if disk_len > MBR_LIMIT {
                ", of which an MBR addresses 2 TiB"
            } else {
                ""
            }
        ));
    }
    // Checked above: every start and end below is at most `usable`, within u32 sectors.
    let system_start = ALIGN;
    let nos_start = system_start + sizes.system;
    let images_start = nos_start + sizes.nos + sizes.float;
    let data_start = images_start + sizes.images;
    let data_len = sizes.data.unwrap_or(usable - data_start);
    let entry = |boot, ptype, start: u64, len: u64| -> Result<Entry, String> {
        let sectors = |b: u64| {
            bytes_to_sectors(b).ok_or_else(|| format!("{b} bytes do not fit an MBR entry"))
        };
        Ok(Entry {
            boot,
            ptype,
            start_lba: sectors(start)?,
            sectors: sectors(len)?,
        })
    };
    Ok([
        entry(
            BOOT_INACTIVE,
            PartType::HIDDEN_FAT32_LBA,
            system_start,
            sizes.system,
        )?,
        entry(BOOT_ACTIVE, sizes.nos_type, nos_start, sizes.nos)?,
        entry(
            BOOT_INACTIVE,
            PartType::FAT32_LBA,
            images_start,
            sizes.images,
        )?,
        entry(BOOT_INACTIVE, PartType::FAT32_LBA, data_start, data_len)?,
    ])
}

/// Volume labels of the FAT32 partitions `init` formats.
fn label(role: Role) -> Option<[u8; 11]> {
    match role {
        Role::System => Some(*b"SYSTEM     "),
        Role::Images => Some(*b"IMAGES     "),
        Role::Data => Some(*b"DATA       "),
        Role::Nos => None,
    }
}

/// Writes a fresh appliance layout to `device` (named `name` in messages): formats the
/// system, images and data partitions as FAT32, then writes the MBR. Keeps the 440
/// bytes of boot code on the disk unless `boot_code` (at most 440 bytes) is given.
/// Refuses a disk that already has partitions unless `force`. Writes to the disk.
pub fn init<D: Read + Write + Seek + SyncAll + ZeroRange>(
    device: &mut D,
    name: &str,
    sizes: &Sizes,
    boot_code: Option<&[u8]>,
    force: bool,
) -> Result<Mbr, Error> {
    let refuse = |why: String| Error::Init {
        disk: name.to_string(),
        why,
    };
    let disk_len = device
        .seek(SeekFrom::End(0))
        .map_err(Error::io("measuring", name))?;
    let mut old = [0u8; 512];
    if disk_len >= 512 {
        device
            .seek(SeekFrom::Start(0))
            .and_then(|_| device.read_exact(&mut old))
            .map_err(Error::io("reading the MBR of", name))?;
    }
    if !force {
        if let Some(what) = existing_content(&old) {
            return Err(refuse(format!(
                "it already has {what}; pass --force to overwrite it"
            )));
        }
    }
    let mut code = [0u8; BOOT_CODE_LEN];
    match boot_code {
        Some(new) if new.len() > BOOT_CODE_LEN => {
            return Err(refuse(format!(
                "the boot code is {} bytes, more than the {BOOT_CODE_LEN} an MBR holds",
                new.len()
            )))
        }
        Some(new) => code[..new.len()].copy_from_slice(new),
        // A file system's boot sector holds its own code and BPB there, not MBR code.
        None if whole_disk_file_system(&old).is_some() => {}
        None => code.copy_from_slice(&old[..BOOT_CODE_LEN]),
    }
    let entries = plan(sizes, disk_len).map_err(refuse)?;
    if disk_len > MBR_LIMIT {
        log::warn!(
            "{name} holds {}, but an MBR addresses only the first {}: the last {} ({} bytes) \
             stay unused",
            format_size(disk_len),
            format_size(MBR_LIMIT),
            format_size(disk_len - MBR_LIMIT),
            disk_len - MBR_LIMIT
        );
    }
    let mut signature = [0u8; 4];
    signature.copy_from_slice(&old[440..444]);
    if signature == [0; 4] {
        signature = new_disk_signature();
    }
    let mut mbr = Mbr::empty(&code, signature);
    for (e, slot) in entries.iter().zip(1..) {
        mbr.set(slot, *e);
    }

    // File systems first, the MBR last: until the last write a fresh disk does not look
    // like an appliance, so an interrupted init is refused later rather than half-used.
    for role in [Role::System, Role::Images, Role::Data] {
        let e = entries[role.slot() - 1];
        format_fat32(device, name, role, e)?;
    }
    // The float is reprov's to grow NOS into, and growth takes only zeros: leave none of
    // the disk's old bytes there (a hole in a file, BLKZEROOUT on a device).
    let nos = entries[Role::Nos.slot() - 1];
    if sizes.float > 0 {
        device
            .zero_range(nos.end(), sizes.float)
            .and_then(|()| device.sync_all())
            .map_err(Error::io("zeroing the float of", name))?;
    }
    super::appliance::write_sector(device, name, &mbr.to_bytes())?;
    Ok(mbr)
}

/// What sector 0 already holds that `init` would destroy: a partition table with a used
/// slot, or a boot sector of a whole-disk file system (FAT, NTFS, exFAT). `None` for a
/// blank sector or an empty table.
fn existing_content(sector: &[u8; 512]) -> Option<String> {
    if sector[510..] != [0x55, 0xAA] {
        return None;
    }
    if let Some(fs) = whole_disk_file_system(sector) {
        return Some(format!("a {fs} file system on the whole disk"));
    }
    match Mbr::parse(sector) {
        Ok(mbr) => (1..=4)
            .map(|slot| (slot, mbr.get(slot).ptype))
            .find(|(_, t)| !t.is_empty())
            .map(|(slot, t)| format!("a partition table (slot {slot} has type {t})")),
        Err(_) => Some("a boot sector with the 0x55AA signature in sector 0".to_string()),
    }
}

/// The file system whose boot sector `sector` is, by the name in its header.
fn whole_disk_file_system(sector: &[u8; 512]) -> Option<&'static str> {
    const NAMES: [(usize, &str); 4] = [(0x36, "FAT"), (0x52, "FAT32"), (3, "NTFS"), (3, "EXFAT")];
    NAMES
        .iter()
        .find(|(at, name)| sector[*at..].starts_with(name.as_bytes()))
        .map(|(_, name)| *name)
}

/// Formats one partition as FAT32 and checks fatfs really chose FAT32 for it.
fn format_fat32<D: Read + Write + Seek>(
    device: &mut D,
    name: &str,
    role: Role,
    e: Entry,
) -> Result<(), Error> {
    let failed = |source| Error::Format {
        role,
        disk: name.to_string(),
        source,
    };
    let mut options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_sector(512);
    if let Some(label) = label(role) {
        options = options.volume_label(label);
    }
    let window = Window::new(&mut *device, e.start(), e.len()).map_err(failed)?;
    fatfs::format_volume(window, options).map_err(failed)?;
    set_hidden_sectors(device, e).map_err(failed)?;
    let window = Window::new(&mut *device, e.start(), e.len()).map_err(failed)?;
    let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new()).map_err(failed)?;
    let fat_type = fs.fat_type();
    fs.unmount().map_err(failed)?;
    if fat_type != fatfs::FatType::Fat32 {
        return Err(failed(std::io::Error::other(format!(
            "fatfs chose {fat_type:?} for {}",
            format_size(e.len())
        ))));
    }
    Ok(())
}

/// Records the partition's start in the BPB's "hidden sectors" field of the boot sector
/// and its FAT32 backup (fatfs writes 0): boot code that loads from the partition and
/// some FAT readers take the partition's offset on the disk from it.
fn set_hidden_sectors<D: Read + Write + Seek>(device: &mut D, e: Entry) -> std::io::Result<()> {
    const HIDDEN_SECTORS: u64 = 0x1C;
    const BACKUP_BOOT_SECTOR: u64 = 0x32;
    let mut backup = [0u8; 2];
    device.seek(SeekFrom::Start(e.start() + BACKUP_BOOT_SECTOR))?;
    device.read_exact(&mut backup)?;
    let backup = u64::from(u16::from_le_bytes(backup));
    for sector in [0, backup] {
        device.seek(SeekFrom::Start(e.start() + sector * 512 + HIDDEN_SECTORS))?;
        device.write_all(&e.start_lba.to_le_bytes())?;
    }
    Ok(())
}

/// A disk signature that differs between disks laid out at different times.
fn new_disk_signature() -> [u8; 4] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs().to_le_bytes();
    let mixed = now.subsec_nanos()
        ^ u32::from_le_bytes([secs[0], secs[1], secs[2], secs[3]])
        ^ std::process::id().rotate_left(16);
    mixed.max(1).to_le_bytes()
}
