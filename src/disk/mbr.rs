//! The MBR sector as bytes and as a table: partition types with their hidden bit, the
//! boot flag, and checked conversions between `u32` sectors and `u64` bytes.
//!
//! mbrman parses and serializes the header; every byte of the sector (the 440 bytes of
//! boot code, the disk signature, the CHS fields) survives a round trip, so an edit
//! changes only the bytes it means to.

use std::fmt;

/// Bytes in a sector: the MBR layout assumes 512.
pub const SECTOR: u64 = 512;
/// Partitions start on 1 MiB boundaries.
pub const ALIGN: u64 = 1 << 20;
/// Length of the boot code area at the start of the sector.
pub const BOOT_CODE_LEN: usize = 440;
/// The boot flag of the active partition.
pub const BOOT_ACTIVE: u8 = 0x80;
/// The boot flag of every other partition.
pub const BOOT_INACTIVE: u8 = 0x00;

/// An MBR partition type byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartType(pub u8);

impl PartType {
    pub const EMPTY: PartType = PartType(0x00);
    pub const FAT32_LBA: PartType = PartType(0x0C);
    pub const HIDDEN_FAT32_LBA: PartType = PartType(0x1C);
    pub const LINUX: PartType = PartType(0x83);
    pub const GPT_PROTECTIVE: PartType = PartType(0xEE);
    /// The bit that hides a FAT or NTFS partition from DOS-lineage systems.
    pub const HIDDEN_BIT: u8 = 0x10;
    /// Types that have a hidden twin (`type | 0x10`).
    const HIDEABLE: [u8; 7] = [0x01, 0x04, 0x06, 0x07, 0x0B, 0x0C, 0x0E];

    /// True for an unused slot.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True for the types that hold logical partitions (DOS, Windows and Linux flavours).
    pub fn is_extended(self) -> bool {
        matches!(self.0, 0x05 | 0x0F | 0x85 | 0xC5 | 0xD5)
    }

    /// True for the FAT types (12, 16, 32; CHS or LBA), visible or hidden.
    pub fn is_fat(self) -> bool {
        matches!(self.unhide().0, 0x01 | 0x04 | 0x06 | 0x0B | 0x0C | 0x0E)
    }

    /// True for a FAT/NTFS type with its hidden bit set (`0x1C` is hidden `0x0C`).
    pub fn is_hidden(self) -> bool {
        self.0 & Self::HIDDEN_BIT != 0 && Self::HIDEABLE.contains(&(self.0 & !Self::HIDDEN_BIT))
    }

    /// The hidden twin of a FAT/NTFS type; other types are returned unchanged.
    pub fn hide(self) -> PartType {
        if Self::HIDEABLE.contains(&self.0) {
            PartType(self.0 | Self::HIDDEN_BIT)
        } else {
            self
        }
    }

    /// The visible twin of a hidden type; other types are returned unchanged.
    pub fn unhide(self) -> PartType {
        if self.is_hidden() {
            PartType(self.0 & !Self::HIDDEN_BIT)
        } else {
            self
        }
    }
}

impl fmt::Display for PartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X}", self.0)
    }
}

/// Bytes in `sectors` sectors. Cannot overflow: `u32::MAX * 512 < 2^41`.
pub fn sectors_to_bytes(sectors: u32) -> u64 {
    u64::from(sectors) * SECTOR
}

/// Sectors in `bytes` bytes, if that is a whole number that fits the MBR's `u32`.
pub fn bytes_to_sectors(bytes: u64) -> Option<u32> {
    if bytes % SECTOR != 0 {
        return None;
    }
    u32::try_from(bytes / SECTOR).ok()
}

/// One slot of the table, in bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry {
    pub boot: u8,
    pub ptype: PartType,
    pub start_lba: u32,
    pub sectors: u32,
}

impl Entry {
    pub fn start(&self) -> u64 {
        sectors_to_bytes(self.start_lba)
    }
    pub fn len(&self) -> u64 {
        sectors_to_bytes(self.sectors)
    }
    pub fn is_empty(&self) -> bool {
        self.sectors == 0
    }
    /// One past the last byte (cannot overflow: both terms are below 2^41).
    pub fn end(&self) -> u64 {
        self.start() + self.len()
    }
    pub fn is_active(&self) -> bool {
        self.boot == BOOT_ACTIVE
    }
}

/// The 512-byte MBR sector, parsed. Edits change this struct only; [`Mbr::to_bytes`]
/// gives the sector to write.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Mbr {
    header: mbrman::MBRHeader,
}

/// Why a sector is not an MBR.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The last two bytes are not `55 AA`.
    NoSignature,
    /// A slot's boot flag is neither `0x00` nor `0x80`.
    BootFlag { slot: usize, flag: u8 },
    /// mbrman could not decode the sector.
    Decode(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoSignature => {
                write!(
                    f,
                    "no MBR boot signature 0x55AA in sector 0 (blank or not an MBR disk)"
                )
            }
            ParseError::BootFlag { slot, flag } => write!(
                f,
                "slot {slot} has boot flag 0x{flag:02X}, expected 0x00 or 0x80"
            ),
            ParseError::Decode(why) => write!(f, "the MBR cannot be decoded: {why}"),
        }
    }
}

impl Mbr {
    /// Parses a sector. Pure: no I/O.
    pub fn parse(sector: &[u8; 512]) -> Result<Mbr, ParseError> {
        if sector[510..] != [0x55, 0xAA] {
            return Err(ParseError::NoSignature);
        }
        for slot in 1..=4 {
            let flag = sector[entry_offset(slot)];
            if flag != BOOT_ACTIVE && flag != BOOT_INACTIVE {
                return Err(ParseError::BootFlag { slot, flag });
            }
        }
        let header = mbrman::MBRHeader::read_from(&mut std::io::Cursor::new(&sector[..]))
            .map_err(|e| ParseError::Decode(e.to_string()))?;
        Ok(Mbr { header })
    }

    /// A table with no partitions, the given boot code (zero-padded) and disk signature.
    pub fn empty(boot_code: &[u8; BOOT_CODE_LEN], disk_signature: [u8; 4]) -> Mbr {
        let mut header = mbrman::MBRHeader::new(disk_signature);
        header.bootstrap_code = *boot_code;
        Mbr { header }
    }

    /// The sector, all 512 bytes.
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut sector = [0u8; 512];
        // Every field was either parsed from a valid sector or set through `set`, so
        // encoding into a 512-byte buffer cannot fail; a failure is a bug in this module.
        self.header
            .write_into(&mut std::io::Cursor::new(&mut sector[..]))
            .expect("an MBR header always encodes into 512 bytes");
        sector
    }

    /// Slot `1..=4`.
    pub fn get(&self, slot: usize) -> Entry {
        let e = &self.header[slot];
        Entry {
            boot: e.boot,
            ptype: PartType(e.sys),
            start_lba: e.starting_lba,
            sectors: e.sectors,
        }
    }

    /// The four slots, in order.
    pub fn entries(&self) -> [Entry; 4] {
        [self.get(1), self.get(2), self.get(3), self.get(4)]
    }

    /// Sets slot `1..=4`, leaving its CHS bytes as they were (LBA is what counts).
    pub fn set(&mut self, slot: usize, entry: Entry) {
        let e = &mut self.header[slot];
        e.boot = if entry.is_active() {
            BOOT_ACTIVE
        } else {
            BOOT_INACTIVE
        };
        e.sys = entry.ptype.0;
        e.starting_lba = entry.start_lba;
        e.sectors = entry.sectors;
    }

    /// The 440 bytes of boot code.
    pub fn boot_code(&self) -> &[u8; BOOT_CODE_LEN] {
        &self.header.bootstrap_code
    }

    /// The 32-bit disk signature, as stored (little-endian).
    pub fn disk_signature(&self) -> u32 {
        u32::from_le_bytes(self.header.disk_signature)
    }
}

/// Byte offset of slot `1..=4`'s 16-byte entry in the sector.
pub fn entry_offset(slot: usize) -> usize {
    446 + 16 * (slot - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bit_on_fat_and_ntfs_types() {
        for (visible, hidden) in [
            (0x01, 0x11),
            (0x04, 0x14),
            (0x06, 0x16),
            (0x07, 0x17),
            (0x0B, 0x1B),
            (0x0C, 0x1C),
            (0x0E, 0x1E),
        ] {
            assert_eq!(PartType(visible).hide(), PartType(hidden));
            assert_eq!(PartType(hidden).unhide(), PartType(visible));
            assert!(PartType(hidden).is_hidden());
            assert!(!PartType(visible).is_hidden());
            assert_eq!(PartType(hidden).hide(), PartType(hidden));
            assert_eq!(PartType(visible).unhide(), PartType(visible));
        }
        // Types without a hidden twin: 0x83 has no hidden bit, 0x10/0x1F are not FAT.
        for other in [0x00, 0x83, 0x82, 0x10, 0x1F, 0xEE, 0x05] {
            assert_eq!(PartType(other).hide(), PartType(other));
            assert_eq!(PartType(other).unhide(), PartType(other));
            assert!(!PartType(other).is_hidden());
        }
    }

    #[test]
    fn extended_types() {
        for t in [0x05, 0x0F, 0x85, 0xC5, 0xD5] {
            assert!(PartType(t).is_extended(), "{t:#x}");
        }
        for t in [0x00, 0x0C, 0x1C, 0x83, 0xEE] {
            assert!(!PartType(t).is_extended(), "{t:#x}");
        }
    }

    #[test]
    fn sector_byte_conversions_are_checked() {
        assert_eq!(sectors_to_bytes(u32::MAX), 0x01FF_FFFF_FE00);
        assert_eq!(bytes_to_sectors(ALIGN), Some(2048));
        assert_eq!(bytes_to_sectors(513), None);
        assert_eq!(bytes_to_sectors(sectors_to_bytes(u32::MAX)), Some(u32::MAX));
        assert_eq!(bytes_to_sectors(sectors_to_bytes(u32::MAX) + SECTOR), None);
    }

    /// A sector with every byte set to something, and valid flags and signature.
    fn noisy_sector() -> [u8; 512] {
        let mut s = [0u8; 512];
        for (i, b) in s.iter_mut().enumerate() {
            *b = u8::try_from((i * 7 + 3) % 251).unwrap();
        }
        for slot in 1..=4 {
            s[entry_offset(slot)] = if slot == 2 { 0x80 } else { 0x00 };
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn every_byte_survives_a_round_trip() {
        let sector = noisy_sector();
        let mbr = Mbr::parse(&sector).unwrap();
        assert_eq!(mbr.to_bytes(), sector);
    }

    #[test]
    fn set_changes_only_the_fields_of_its_slot() {
        let sector = noisy_sector();
        let mut mbr = Mbr::parse(&sector).unwrap();
        let mut e = mbr.get(3);
        e.boot = BOOT_ACTIVE;
        e.ptype = PartType(0x1C);
        e.sectors = 0x0102_0304;
        mbr.set(3, e);
        let out = mbr.to_bytes();
        let o = entry_offset(3);
        assert_eq!(out[o], 0x80);
        assert_eq!(out[o + 4], 0x1C);
        assert_eq!(out[o + 12..o + 16], [0x04, 0x03, 0x02, 0x01]);
        let changed: Vec<usize> = (0..512).filter(|&i| out[i] != sector[i]).collect();
        assert!(changed
            .iter()
            .all(|&i| i == o || i == o + 4 || (o + 12..o + 16).contains(&i)));
    }

    #[test]
    fn refuses_sectors_that_are_not_mbrs() {
        assert_eq!(Mbr::parse(&[0u8; 512]), Err(ParseError::NoSignature));
        let mut s = noisy_sector();
        s[entry_offset(4)] = 0x81;
        assert_eq!(
            Mbr::parse(&s),
            Err(ParseError::BootFlag {
                slot: 4,
                flag: 0x81
            })
        );
    }

    #[test]
    fn empty_table_keeps_boot_code_and_signature() {
        let code = [0xFA; BOOT_CODE_LEN];
        let mbr = Mbr::empty(&code, [1, 2, 3, 4]);
        let s = mbr.to_bytes();
        assert_eq!(s[..440], code);
        assert_eq!(s[440..444], [1, 2, 3, 4]);
        assert_eq!(mbr.disk_signature(), 0x0403_0201);
        assert_eq!(s[444..510], [0u8; 66]);
        assert_eq!(s[510..], [0x55, 0xAA]);
    }
}
