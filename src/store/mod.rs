//! The images store: the FAT file system on the images partition, seen through fatfs.
//!
//! It holds the image files, the pending job, the saved identity, the step log and the
//! MBR backups (see the table in ARCHITECTURE.md). Everything here is generic over
//! `Read + Write + Seek`, so tests run it on a `Cursor<Vec<u8>>`.

use std::io::{Read, Seek, Write};

use crate::io::BlockCache;
use crate::units::format_size;

#[cfg(test)]
mod cut_repair;
mod files;
mod job;
mod log;
mod name;
mod parts;
mod room;

pub use files::{image_path, IDENTITY_PATH, IMAGES_DIR, JOB_PATH};
pub use job::{Job, JobError, Kind, State, MAX_UNFINISHED_STARTS};
pub use log::{parse_log, Code, Entry, LogRead, CODES, LOG_LIMIT, LOG_PATH, OLD_LOG_PATH};
pub use name::{ImageName, MAX_IMAGE_NAME_BYTES};
pub use parts::{is_continuation, Parts, PART_SIZE};

/// What [`fatfs::FileSystem::check`] found on a volume unmounted cleanly.
fn damage_report(found: &fatfs::Repairs) -> String {
    let counts = [
        (
            found.chains_ended,
            "cluster chains that run into a free, bad or shared cluster",
        ),
        (
            found.entries_fixed,
            "entries whose size or first cluster disagree with their chain",
        ),
        (
            found.entries_removed,
            "entries that name a chain another entry names",
        ),
        (
            found.lost_clusters_freed,
            "clusters marked used that nothing names",
        ),
        (
            found.fat_sectors_copied,
            "sectors where the two FATs differ",
        ),
    ];
    let what: Vec<String> = (counts.iter().filter(|(n, _)| *n > 0))
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    format!(
        "the FAT file system is damaged though it was unmounted cleanly ({})",
        what.join(", ")
    )
}

/// Directory of reprov's own files on the images partition.
pub const REPROV_DIR: &str = "reprov";
/// Directory of the MBR copies taken before every MBR write.
pub const MBR_BACKUP_DIR: &str = "reprov/mbr";
/// How many MBR copies are kept; older ones are removed.
pub const MBR_BACKUPS_KEPT: usize = 64;

/// What went wrong in the images store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mounting the images partition (FAT): {0}")]
    Mount(#[source] std::io::Error),
    #[error("unmounting the images partition: {0}")]
    Unmount(#[source] std::io::Error),
    #[error("{what} {path} on the images partition: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} {source}")]
    BadJob {
        path: String,
        #[source]
        source: JobError,
    },
    #[error("{path} on the images partition is {len} bytes long, more than the {limit} allowed")]
    TooBig { path: String, len: u64, limit: u64 },
    #[error("image {name} is not on the images partition")]
    ImageMissing { name: String },
    #[error("image {name} is already on the images partition (remove it first)")]
    ImageExists { name: String },
    #[error(
        "image {name} is {size} bytes, more than the {free} bytes the partition has for images \
         (its last few MiB are kept for reprov's job and step log): remove an older image \
         first (reprov image list, reprov image remove)"
    )]
    NoRoom { name: String, size: u64, free: u64 },
    #[error(
        "{what} needs {} ({need} bytes), but the images partition has room for {} more, and \
         removing every image no job needs would free only {} (kept: {kept}); nothing was \
         removed: make the images partition bigger, or remove images by hand (reprov image \
         remove)",
        format_size(*need), format_size(*room), format_size(*could_free)
    )]
    Full {
        what: String,
        need: u64,
        room: u64,
        could_free: u64,
        kept: String,
    },
    #[error("reading the source of image {name}: {source}")]
    Source {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("adding image {name}: the source gave {got} of the {size} bytes announced")]
    SourceSize {
        name: String,
        size: u64,
        got: String,
    },
}

fn file_error<'a>(what: &'static str, path: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::File {
        what,
        path: path.to_string(),
        source,
    }
}

/// The mounted images partition. Call [`Store::unmount`] when done: dropping it only logs.
pub struct Store<D: Read + Write + Seek> {
    fs: fatfs::FileSystem<BlockCache<D>>,
    /// Bytes per part of a file kept as parts ([`PART_SIZE`]; smaller in tests).
    part_size: u64,
}

impl<D: Read + Write + Seek> Store<D> {
    /// Mounts the FAT file system of the images partition `part`.
    pub fn open(mut part: D) -> Result<Self, Error> {
        // fatfs reads the boot sector from wherever the stream stands.
        part.seek(std::io::SeekFrom::Start(0))
            .map_err(Error::Mount)?;
        // Whole blocks between fatfs and the disk: see crate::io::BlockCache.
        let cached = BlockCache::new(part).map_err(Error::Mount)?;
        let gate = cached.gate();
        let fs = fatfs::FileSystem::new(cached, fatfs::FsOptions::new()).map_err(Error::Mount)?;
        // A volume left dirty (a power cut) is repaired before anything reads or writes
        // it, so no allocation can hand out a cluster a file still names.
        let repairs = fs.repair_if_dirty().map_err(Error::Mount)?;
        if !repairs.is_empty() {
            ::log::warn!("the images partition was not unmounted cleanly; repaired: {repairs}");
        }
        // A clean one with such faults was damaged some other way (a bad sector, another
        // tool). A chain or entry that lies lets a write land on a cluster a file still
        // uses: that volume is read, never written. Lost clusters and FAT copies that
        // differ put no file at risk; they are only reported.
        if !fs.was_dirty_at_mount() {
            let found = fs.check().map_err(Error::Mount)?;
            let unsafe_to_write =
                found.chains_ended + found.entries_fixed + found.entries_removed > 0;
            if unsafe_to_write {
                let why = format!(
                    "{}: it is read but not written, so nothing on it is lost; check and \
                     repair it with fsck.vfat",
                    damage_report(&found)
                );
                ::log::warn!("{why}");
                gate.shut(why);
            } else if !found.is_empty() {
                ::log::warn!(
                    "{} (no file is at risk: writing goes on)",
                    damage_report(&found)
                );
            }
        }
        Ok(Store {
            fs,
            part_size: PART_SIZE,
        })
    }

    /// Flushes and unmounts, reporting any error (unlike drop).
    pub fn unmount(self) -> Result<(), Error> {
        self.fs.unmount().map_err(Error::Unmount)
    }

    /// The volume label, trimmed (`IMAGES` on an appliance).
    pub fn label(&self) -> String {
        self.fs.volume_label().trim_end().to_string()
    }

    /// Reads a whole file; `None` when it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut file = match self.fs.root_dir().open_file(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_error("opening", path)(e)),
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(file_error("reading", path))?;
        Ok(Some(data))
    }

    /// Writes a whole file (creating its directories), flushed before it returns.
    pub fn write(&self, path: &str, data: &[u8]) -> Result<(), Error> {
        let mut file = self.create_file(path)?;
        file.write_all(data).map_err(file_error("writing", path))?;
        file.flush().map_err(file_error("flushing", path))
    }

    /// Opens a file for streaming reads (an image). `None` when it does not exist.
    pub fn open_file(&self, path: &str) -> Result<Option<fatfs::File<'_, BlockCache<D>>>, Error> {
        match self.fs.root_dir().open_file(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(file_error("opening", path)(e)),
        }
    }

    /// Creates (or empties) a file for streaming writes (an image), creating its
    /// directories. Flush it, then unmount the store. Writes to the partition.
    pub fn create_file(&self, path: &str) -> Result<fatfs::File<'_, BlockCache<D>>, Error> {
        self.create_dirs_for(path)?;
        let mut file = self
            .fs
            .root_dir()
            .create_file(path)
            .map_err(file_error("creating", path))?;
        file.truncate().map_err(file_error("truncating", path))?;
        Ok(file)
    }

    /// Creates every directory above `path`.
    fn create_dirs_for(&self, path: &str) -> Result<(), Error> {
        let mut dir = self.fs.root_dir();
        let parents: Vec<&str> = path.split('/').collect();
        for name in &parents[..parents.len().saturating_sub(1)] {
            dir = dir
                .create_dir(name)
                .map_err(file_error("creating directory", name))?;
        }
        Ok(())
    }

    /// Opens a file for writing, creating it (and its directories) when missing; never
    /// truncates, so a partial download can be resumed. Writes through the returned file.
    pub fn open_write(&self, path: &str) -> Result<fatfs::File<'_, BlockCache<D>>, Error> {
        self.create_dirs_for(path)?;
        self.fs
            .root_dir()
            .create_file(path)
            .map_err(file_error("opening for writing", path))
    }

    /// Renames a file, replacing `to` if it exists (FAT has no atomic replace: `to` is
    /// removed first, so for a moment neither name exists). Writes.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        self.remove(to)?;
        let root = self.fs.root_dir();
        root.rename(from, &root, to)
            .map_err(file_error("renaming", from))
    }

    /// Names of the files in a directory, sorted; empty when it does not exist.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, Error> {
        let dir = match self.fs.root_dir().open_dir(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(file_error("opening directory", dir)(e)),
        };
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(file_error("listing", "directory"))?;
            if entry.is_file() {
                names.push((entry.file_name(), entry.len()));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes a file; removing one that is not there is not an error.
    pub fn remove(&self, path: &str) -> Result<(), Error> {
        match self.fs.root_dir().remove(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(file_error("removing", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Keeps a copy of an MBR sector before it is overwritten, as
    /// `reprov/mbr/NNNNNN.mbr` (numbered in order), and drops the oldest copies beyond
    /// [`MBR_BACKUPS_KEPT`]. Returns the path written.
    pub fn save_mbr_backup(&self, sector: &[u8; 512]) -> Result<String, Error> {
        let existing = self.list(MBR_BACKUP_DIR)?;
        let next = existing
            .iter()
            .filter_map(|(name, _)| name.strip_suffix(".mbr")?.parse::<u64>().ok())
            .max()
            .map_or(1, |n| n + 1);
        let path = format!("{MBR_BACKUP_DIR}/{next:06}.mbr");
        self.write(&path, sector)?;
        let excess = (existing.len() + 1).saturating_sub(MBR_BACKUPS_KEPT);
        for (name, _) in existing.iter().take(excess) {
            self.remove(&format!("{MBR_BACKUP_DIR}/{name}"))?;
        }
        Ok(path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;
    use std::process::Command;

    pub(crate) fn formatted(bytes: usize) -> Cursor<Vec<u8>> {
        let mut disk = Cursor::new(vec![0u8; bytes]);
        fatfs::format_volume(
            &mut disk,
            fatfs::FormatVolumeOptions::new().volume_label(*b"IMAGES     "),
        )
        .unwrap();
        disk
    }

    #[test]
    fn files_round_trip_through_a_remount() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.label(), "IMAGES");
        store.write("reprov/job", b"kind = \"apply\"\n").unwrap();
        store.unmount().unwrap();
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(
            store.read("reprov/job").unwrap().unwrap(),
            b"kind = \"apply\"\n"
        );
        assert_eq!(store.read("reprov/none").unwrap(), None);
        store.unmount().unwrap();
    }

    #[test]
    fn mbr_backups_are_numbered_and_bounded() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        for i in 0..(MBR_BACKUPS_KEPT + 3) {
            let sector = [u8::try_from(i % 256).unwrap(); 512];
            store.save_mbr_backup(&sector).unwrap();
        }
        let kept = store.list(MBR_BACKUP_DIR).unwrap();
        assert_eq!(kept.len(), MBR_BACKUPS_KEPT);
        assert_eq!(kept[0].0, "000004.mbr");
        let last = format!("{MBR_BACKUP_DIR}/{}", kept.last().unwrap().0);
        assert_eq!(store.read(&last).unwrap().unwrap(), vec![66u8; 512]);
        store.unmount().unwrap();
    }

    /// A volume a power cut left dirty: an unmount after a write makes it clean again
    /// (fatfs kept the bit for ever, and `fsck.vfat -n` failed on every later check), with a
    /// free count it counted again; a mount that only reads writes nothing, and a store
    /// dropped on an error path keeps the bit.
    #[test]
    fn an_unmount_clears_the_dirty_bit_a_cut_left() {
        const FLAGS: usize = 0x41; // FAT32's status byte in the boot sector; bit 0: dirty
        let mut disk = Cursor::new(vec![0u8; 40 << 20]);
        let options = fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_label(*b"IMAGES     ");
        fatfs::format_volume(&mut disk, options).unwrap();
        let store = Store::open(&mut disk).unwrap();
        store.write("reprov/job", b"kind = \"apply\"\n").unwrap();
        store.unmount().unwrap();
        disk.get_mut()[FLAGS] |= 1;

        let before = disk.get_ref().clone();
        let store = Store::open(&mut disk).unwrap();
        assert!(store.read("reprov/job").unwrap().is_some());
        store.unmount().unwrap();
        assert!(
            disk.get_ref() == &before,
            "a mount that only read wrote to the disk"
        );
        let store = Store::open(&mut disk).unwrap();
        store.write("reprov/log", b"R000\n").unwrap();
        drop(store);
        assert_eq!(disk.get_ref()[FLAGS] & 1, 1, "a drop is no clean unmount");
        let store = Store::open(&mut disk).unwrap();
        store.write("reprov/log", b"R001\n").unwrap();
        store.unmount().unwrap();
        assert_eq!(disk.get_ref()[FLAGS] & 1, 0);
        if let Err(said) = fsck(disk.get_ref()) {
            panic!("fsck.vfat -n: {said}");
        }
    }

    /// `fsck.vfat -n`'s verdict on a volume: Ok, or what it would fix.
    pub(crate) fn fsck(bytes: &[u8]) -> Result<(), String> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let out = Command::new("fsck.vfat")
            .arg("-n")
            .arg(file.path())
            .output()
            .expect("fsck.vfat (dosfstools) runs");
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stdout).into_owned()),
        }
    }

    /// fsck.vfat's verdict on a volume after the store made nested directories in it
    /// (plain fatfs 0.3.6 fails this; see vendor/fatfs/README.reprov.md).
    fn fsck_after_mkdirs(fat_type: fatfs::FatType, bytes: usize) -> (bool, String) {
        let mut disk = Cursor::new(vec![0u8; bytes]);
        let options = fatfs::FormatVolumeOptions::new()
            .fat_type(fat_type)
            .volume_label(*b"IMAGES     ");
        fatfs::format_volume(&mut disk, options).unwrap();
        let store = Store::open(&mut disk).unwrap();
        store.write("reprov/job", b"x").unwrap();
        store.save_mbr_backup(&[7; 512]).unwrap();
        store.write("images/a/b/c.img", b"deep").unwrap();
        store.unmount().unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), disk.get_ref()).unwrap();
        let out = Command::new("fsck.vfat")
            .arg("-n")
            .arg(file.path())
            .output()
            .expect("fsck.vfat (dosfstools) runs");
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !report.contains("Expected"), report)
    }

    #[test]
    fn new_directories_pass_fsck() {
        for (fat_type, bytes) in [
            (fatfs::FatType::Fat32, 40 << 20),
            (fatfs::FatType::Fat16, 16 << 20),
        ] {
            let (clean, report) = fsck_after_mkdirs(fat_type, bytes);
            assert!(clean, "{fat_type:?}: {report}");
        }
    }
}
