//! Finding the appliance disk among the block devices, waiting for drivers to find them.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Block devices that cannot hold the appliance disk (RAM disks, loops, optical, floppy).
const NOT_DISKS: [&str; 5] = ["ram", "loop", "sr", "fd", "zram"];

/// A disk whose MBR looks like an appliance's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDisk {
    /// The device node, e.g. `/dev/vda`.
    pub path: PathBuf,
    /// Byte range (start, len) of the images partition.
    pub images: (u64, u64),
}

/// TEMPORARY until `crate::disk::ApplianceDisk::open` lands in main: an MBR with the boot
/// signature whose slot 3 is FAT32 LBA (0x0C) is taken for an appliance disk. Returns the
/// images partition's byte range (start, len).
pub fn images_range(mbr: &[u8; 512]) -> Option<(u64, u64)> {
    if mbr[510..512] != [0x55, 0xAA] {
        return None;
    }
    let entry = &mbr[446 + 2 * 16..446 + 3 * 16];
    if entry[4] != 0x0C {
        return None;
    }
    let lba = u32::from_le_bytes(entry[8..12].try_into().ok()?);
    let sectors = u32::from_le_bytes(entry[12..16].try_into().ok()?);
    let start = u64::from(lba).checked_mul(512)?;
    let len = u64::from(sectors).checked_mul(512)?;
    (len > 0).then_some((start, len))
}

/// The names of the block devices in `sys_block` (/sys/block) that may be disks, sorted.
pub fn block_devices(sys_block: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(sys_block)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !NOT_DISKS.iter().any(|prefix| name.starts_with(prefix)) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Looks at each disk `dev/NAME` for NAME in `names`; the first appliance disk wins. A disk
/// that cannot be read is logged and skipped: another may be the appliance's.
pub fn find_appliance(dev: &Path, names: &[String]) -> Option<FoundDisk> {
    names.iter().find_map(|name| {
        let path = dev.join(name);
        let mut mbr = [0u8; 512];
        match File::open(&path).and_then(|mut f| f.read_exact(&mut mbr)) {
            Ok(()) => images_range(&mbr).map(|images| FoundDisk { path, images }),
            Err(error) => {
                log::warn!("reading the MBR of {}: {error}", path.display());
                None
            }
        }
    })
}

/// Calls `probe` every `poll` until it finds something or `timeout` has passed.
pub fn wait_for<T>(
    timeout: Duration,
    poll: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mbr_with_slot3(part_type: u8, lba: u32, sectors: u32) -> [u8; 512] {
        let mut mbr = [0u8; 512];
        let entry = &mut mbr[478..494];
        entry[4] = part_type;
        entry[8..12].copy_from_slice(&lba.to_le_bytes());
        entry[12..16].copy_from_slice(&sectors.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        mbr
    }

    #[test]
    fn appliance_mbr_check() {
        let mut unsigned = mbr_with_slot3(0x0C, 2048, 4096);
        unsigned[511] = 0;
        let cases = [
            (mbr_with_slot3(0x0C, 2048, 4096), Some((1 << 20, 2 << 20))),
            (mbr_with_slot3(0x83, 2048, 4096), None),
            (mbr_with_slot3(0x0C, 2048, 0), None),
            (unsigned, None),
            (
                mbr_with_slot3(0x0C, u32::MAX, u32::MAX),
                Some((u64::from(u32::MAX) * 512, u64::from(u32::MAX) * 512)),
            ),
        ];
        for (i, (mbr, expected)) in cases.iter().enumerate() {
            assert_eq!(images_range(mbr), *expected, "case {i}");
        }
    }

    #[test]
    fn finds_the_appliance_among_disks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sda"), [0u8; 512]).unwrap();
        let mut vdb = File::create(dir.path().join("vdb")).unwrap();
        vdb.write_all(&mbr_with_slot3(0x0C, 2048, 4096)).unwrap();
        std::fs::write(dir.path().join("short"), [0u8; 10]).unwrap();
        let names: Vec<String> = ["short", "sda", "vdb"].map(String::from).to_vec();
        let found = find_appliance(dir.path(), &names).expect("vdb is one");
        assert_eq!(found.path, dir.path().join("vdb"));
        assert_eq!(found.images, (1 << 20, 2 << 20));
    }

    #[test]
    fn block_devices_skips_what_cannot_be_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["vda", "loop0", "ram0", "sr0", "nvme0n1", "sda"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(
            block_devices(dir.path()).unwrap(),
            ["nvme0n1", "sda", "vda"]
        );
    }

    #[test]
    fn wait_for_retries_until_found_or_timeout() {
        let mut calls = 0;
        let found = wait_for(Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(found, Some(3));
        let never: Option<()> =
            wait_for(Duration::from_millis(20), Duration::from_millis(5), || None);
        assert_eq!(never, None);
    }
}
