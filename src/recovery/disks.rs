//! Finding the appliance disk among the block devices, waiting for drivers to find them.

use crate::disk::ApplianceDisk;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// Block devices that cannot hold the appliance disk (RAM disks, loops, optical, floppy).
const NOT_DISKS: [&str; 5] = ["ram", "loop", "sr", "fd", "zram"];

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

/// Opens each disk `dev/NAME` for NAME in `names`; the first with the appliance layout
/// wins. Reads only. A disk that is not one is skipped (with the reason in the debug log),
/// as is one that cannot be opened: another may be the appliance's.
pub fn find_appliance(dev: &Path, names: &[String]) -> Option<ApplianceDisk<File>> {
    names.iter().find_map(|name| {
        let path = dev.join(name);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(error) => {
                log::warn!("opening {}: {error}", path.display());
                return None;
            }
        };
        match ApplianceDisk::open(file, &path.display().to_string()) {
            Ok(disk) => Some(disk),
            Err(why) => {
                log::debug!("{why}");
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

    #[test]
    fn finds_the_appliance_among_disks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sda"), [0u8; 512]).unwrap();
        std::fs::write(dir.path().join("short"), [0u8; 10]).unwrap();
        let vdb = File::create(dir.path().join("vdb")).unwrap();
        vdb.set_len(300 << 20).unwrap();
        let mut vdb = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("vdb"))
            .unwrap();
        let sizes = crate::disk::Sizes {
            system: 64 << 20,
            nos: 64 << 20,
            float: 32 << 20,
            images: 64 << 20,
            data: None,
            nos_type: crate::disk::PartType::LINUX,
        };
        crate::disk::init(&mut vdb, "vdb", &sizes, None, false).unwrap();
        let names: Vec<String> = ["missing", "short", "sda", "vdb"]
            .map(String::from)
            .to_vec();
        let found = find_appliance(dir.path(), &names).expect("vdb is one");
        assert_eq!(found.name(), dir.path().join("vdb").display().to_string());
        assert_eq!(found.range(crate::disk::Role::Images).0, (161 << 20));
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
