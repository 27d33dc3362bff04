//! Role detection: is this MBR an appliance layout? A pure function over the sector and
//! the disk's length; the images label is checked by the caller, which can mount it.

use std::fmt;

use super::mbr::{Entry, Mbr, PartType, ALIGN, SECTOR};
use crate::units::format_size;

/// What a partition is for; each role has a fixed slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Role {
    System,
    Nos,
    Images,
    Data,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::System, Role::Nos, Role::Images, Role::Data];

    /// The MBR slot (1..=4) that holds this role.
    pub fn slot(self) -> usize {
        match self {
            Role::System => 1,
            Role::Nos => 2,
            Role::Images => 3,
            Role::Data => 4,
        }
    }

    /// The name operators type and read (`system`, `nos`, `images`, `data`).
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Nos => "NOS",
            Role::Images => "images",
            Role::Data => "data",
        }
    }

    /// Parses `system`, `nos`, `images` or `data` (any case).
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks that `sector` holds an appliance table on a disk of `disk_len` bytes and
/// returns it parsed; otherwise says what does not match.
pub fn check(sector: &[u8; 512], disk_len: u64) -> Result<Mbr, String> {
    let mbr = Mbr::parse(sector).map_err(|e| e.to_string())?;
    let entries = mbr.entries();
    let slots = || entries.iter().zip(1usize..);

    for (e, slot) in slots() {
        if e.ptype == PartType::GPT_PROTECTIVE {
            return Err(format!(
                "slot {slot} has type 0xEE: this is a GPT disk's protective MBR, \
                 an appliance disk uses a plain MBR"
            ));
        }
        if e.ptype.is_extended() {
            return Err(format!(
                "slot {slot} has type {}, an extended partition; an appliance disk has \
                 four primary partitions",
                e.ptype
            ));
        }
    }
    for (e, slot) in slots() {
        check_type(slot, e.ptype)?;
        if e.sectors == 0 {
            return Err(format!("slot {slot} has zero length"));
        }
    }
    for (e, slot) in slots() {
        if e.start() % ALIGN != 0 {
            return Err(format!(
                "slot {slot} starts at sector {}, not on a 1 MiB boundary (a multiple of {})",
                e.start_lba,
                ALIGN / SECTOR
            ));
        }
        // An MBR addresses sectors below 2^32: a slot ending past that (the u64 sum
        // cannot wrap, but tools that add in u32 do) is refused before any tool uses it.
        if u64::from(e.start_lba) + u64::from(e.sectors) > 1 << 32 {
            return Err(format!(
                "slot {slot} ends at sector {}, past the 2^32 sectors (2 TiB) an MBR can \
                 address",
                u64::from(e.start_lba) + u64::from(e.sectors)
            ));
        }
        if e.end() > disk_len {
            return Err(format!(
                "slot {slot} ends at byte {}, past the end of the disk ({} bytes)",
                e.end(),
                disk_len
            ));
        }
    }
    for (a, i) in slots() {
        for (b, j) in slots().filter(|&(_, j)| j > i) {
            if a.start() < b.end() && b.start() < a.end() {
                return Err(format!(
                    "slots {i} and {j} overlap (sectors {}..{} and {}..{})",
                    a.start_lba,
                    end_lba(a),
                    b.start_lba,
                    end_lba(b)
                ));
            }
        }
    }
    // The float is the gap after NOS, so the partitions must lie in slot order.
    for i in 1..4 {
        let (a, b) = (&entries[i - 1], &entries[i]);
        if b.start() < a.end() {
            return Err(format!(
                "slot {} starts at sector {}, before slot {i} (sector {}); an appliance \
                 disk keeps its partitions in slot order",
                i + 1,
                b.start_lba,
                a.start_lba
            ));
        }
    }
    let active: Vec<String> = slots()
        .filter(|(e, _)| e.is_active())
        .map(|(_, s)| s.to_string())
        .collect();
    if active.len() > 1 {
        return Err(format!(
            "slots {} are {} active; exactly one partition may be active",
            active.join(" and "),
            if active.len() == 2 { "both" } else { "all" }
        ));
    }
    Ok(mbr)
}

fn end_lba(e: &Entry) -> u64 {
    u64::from(e.start_lba) + u64::from(e.sectors)
}

fn check_type(slot: usize, t: PartType) -> Result<(), String> {
    let (ok, expected) = match slot {
        1 => (
            t == PartType::FAT32_LBA || t == PartType::HIDDEN_FAT32_LBA,
            "FAT32 LBA 0x0C or hidden 0x1C for the system partition",
        ),
        2 => (!t.is_empty(), "a partition type for the NOS partition"),
        3 => (
            t == PartType::FAT32_LBA,
            "FAT32 LBA 0x0C for the images partition",
        ),
        _ => (!t.is_empty(), "a partition type for the data partition"),
    };
    match (ok, t.is_empty()) {
        (true, _) => Ok(()),
        (false, true) => Err(format!("slot {slot} is empty, expected {expected}")),
        (false, false) => Err(format!("slot {slot} has type {t}, expected {expected}")),
    }
}

/// The message for an images partition with the wrong label.
pub fn wrong_label(label: &str) -> String {
    format!("slot 3 has FAT volume label {label:?}, expected \"IMAGES\" for the images partition")
}

/// A one-line description of an entry, for change reports.
pub fn describe(e: &Entry) -> String {
    format!(
        "start {} size {} type {}{}{}",
        e.start_lba,
        format_size(e.len()),
        e.ptype,
        if e.ptype.is_hidden() { " hidden" } else { "" },
        if e.is_active() { " active" } else { "" }
    )
}
