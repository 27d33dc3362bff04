//! The partition under fatfs, shared with the store so it can mend new directories.
//!
//! fatfs 0.3.6 starts every new directory with a long-name entry before `.` and another
//! before `..`, and on FAT32 points the `..` of a first-level directory at the root's
//! cluster instead of 0 (rust-fatfs issue #117, PRs #99 and #100, fixed after 0.3.6).
//! Tolerant readers cope, but `fsck.vfat` calls the directory broken and would "fix" it
//! by moving entries. So while fatfs creates a directory, [`Device`] notes where it
//! writes a `.` name, and [`Device::mend_new_dir`] rewrites the directory's first four
//! slots as `.`, `..`, free, free.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

/// Size of a FAT directory entry.
const ENTRY: usize = 32;
/// The short name of `.`.
const DOT: [u8; 11] = *b".          ";
/// The short name of `..`.
const DOTDOT: [u8; 11] = *b"..         ";
/// Attribute byte of a long-name entry.
const LFN_ATTR: u8 = 0x0f;

struct Inner<D> {
    disk: D,
    /// While a directory is created: offsets where a `.` short name was written.
    dots: Option<Vec<u64>>,
}

/// The partition, shared between fatfs and the store.
pub(super) struct Device<D>(Rc<RefCell<Inner<D>>>);

impl<D> Clone for Device<D> {
    fn clone(&self) -> Self {
        Device(Rc::clone(&self.0))
    }
}

impl<D: Read + Write + Seek> Device<D> {
    pub(super) fn new(disk: D) -> Self {
        Device(Rc::new(RefCell::new(Inner { disk, dots: None })))
    }

    /// Runs `create`, which makes one directory through fatfs, then mends the new
    /// directory's first slots (see the module doc). `parent_is_root` says whether its
    /// `..` must point at cluster 0. Writes.
    pub(super) fn create_dir_mended<T>(
        &self,
        parent_is_root: bool,
        create: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        self.0.borrow_mut().dots = Some(Vec::new());
        let created = create();
        let dots = self.0.borrow_mut().dots.take().unwrap_or_default();
        let value = created?;
        // The `.` entry sits in the second slot, after its long-name entry.
        match dots.as_slice() {
            [dot] => self.mend_new_dir(dot.saturating_sub(32), parent_is_root)?,
            other => log::debug!("fatfs wrote {} `.` entries; nothing to mend", other.len()),
        }
        Ok(value)
    }

    /// Rewrites the four slots at `start` from [LFN, `.`, LFN, `..`] to [`.`, `..`,
    /// free, free], with `..` at cluster 0 under the root. Leaves any other layout
    /// alone. Writes.
    fn mend_new_dir(&self, start: u64, parent_is_root: bool) -> io::Result<()> {
        let mut inner = self.0.borrow_mut();
        let disk = &mut inner.disk;
        let pos = disk.stream_position()?;
        let mut slots = [0u8; 4 * ENTRY];
        disk.seek(SeekFrom::Start(start))?;
        disk.read_exact(&mut slots)?;
        let name = |slot: usize| &slots[slot * ENTRY..slot * ENTRY + 11];
        let attr = |slot: usize| slots[slot * ENTRY + 11];
        if attr(0) != LFN_ATTR || name(1) != DOT || attr(2) != LFN_ATTR || name(3) != DOTDOT {
            log::debug!("a new directory at byte {start} does not need mending");
            return disk.seek(SeekFrom::Start(pos)).map(|_| ());
        }
        let mut mended = [0u8; 4 * ENTRY];
        mended[..ENTRY].copy_from_slice(&slots[ENTRY..2 * ENTRY]);
        mended[ENTRY..2 * ENTRY].copy_from_slice(&slots[3 * ENTRY..]);
        if parent_is_root {
            // First cluster, high and low halves, of `..`.
            mended[ENTRY + 20..ENTRY + 22].fill(0);
            mended[ENTRY + 26..ENTRY + 28].fill(0);
        }
        disk.seek(SeekFrom::Start(start))?;
        disk.write_all(&mended)?;
        disk.flush()?;
        disk.seek(SeekFrom::Start(pos)).map(|_| ())
    }
}

impl<D: Read> Read for Device<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().disk.read(buf)
    }
}

impl<D: Write + Seek> Write for Device<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.0.borrow_mut();
        let Inner { disk, dots } = &mut *inner;
        // fatfs writes a short entry's 11-byte name in one call.
        if let Some(dots) = dots {
            if buf == DOT {
                dots.push(disk.stream_position()?);
            }
        }
        disk.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().disk.flush()
    }
}

impl<D: Seek> Seek for Device<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.borrow_mut().disk.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use std::io::Cursor;
    use std::process::Command;

    /// fsck.vfat's verdict on a volume after the store made nested directories in it.
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

    #[test]
    fn mended_directories_still_read_back() {
        let mut disk = Cursor::new(vec![0u8; 40 << 20]);
        let options = fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32);
        fatfs::format_volume(&mut disk, options).unwrap();
        let store = Store::open(&mut disk).unwrap();
        store.write("reprov/mbr/1.mbr", b"one").unwrap();
        store.write("reprov/job", b"two").unwrap();
        store.unmount().unwrap();
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.read("reprov/mbr/1.mbr").unwrap().unwrap(), b"one");
        assert_eq!(store.list("reprov").unwrap(), [("job".to_string(), 3)]);
        store.remove("reprov/mbr/1.mbr").unwrap();
        store.unmount().unwrap();
    }
}
