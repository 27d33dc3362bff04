//! Files bigger than FAT allows (4 GiB − 1 bytes), kept as parts and taken as one.
//!
//! A file `dir/NAME` of more than [`PART_SIZE`] bytes is stored as `dir/NAME` (the first
//! [`PART_SIZE`] bytes), `dir/NAME.002`, `dir/NAME.003` … (Clonezilla and Acronis split
//! their images the same way); `cat NAME NAME.0*` is the whole file. Every part but the
//! last holds exactly [`PART_SIZE`] bytes, which is how a missing or short part is told
//! from a whole set. The first part is the file's name: writes make it appear last (a
//! rename puts the other parts in place first) and go first when the file is removed,
//! so a cut never leaves a set that looks whole but is not.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{file_error, Error, Store};

/// Bytes in every part but the last: under FAT's 4 GiB − 1 limit on one file, and far
/// enough under it that the part's clusters (up to 64 KiB each) add up to less than
/// 4 GiB — fsck.fat counts a chain's bytes in 32 bits, and a part of 4 GiB − 512 bytes
/// in 4 KiB clusters reads to it as a chain of 0 bytes, to be truncated.
pub const PART_SIZE: u64 = (4 << 30) - (64 << 10);
/// Most parts a file may have (three digits).
const MAX_PARTS: usize = 999;

/// The name of part `index` (0 for the first) of `path`.
fn part_name(path: &str, index: usize) -> String {
    match index {
        0 => path.to_string(),
        n => format!("{path}.{:03}", n + 1),
    }
}

/// Whether `name` is a continuation part (`NAME.002` … `NAME.999`) of some file.
pub fn is_continuation(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(base, digits)| {
        !base.is_empty()
            && digits.len() == 3
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<usize>().is_ok_and(|n| n >= 2)
    })
}

/// The parent directory and the file name of `path`.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl<D: Read + Write + Seek> Store<D> {
    /// The parts of the file `path` on the partition, in order, with their sizes: the first
    /// one, then `.002`, `.003` … as long as they follow one another. Empty when the
    /// first part is missing. Reads only.
    pub(super) fn parts(&self, path: &str) -> Result<Vec<(String, u64)>, Error> {
        let (dir, name) = split(path);
        let listed = self.list(dir)?;
        let size_of = |wanted: &str| {
            listed
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
                .map(|(_, len)| *len)
        };
        let mut parts = Vec::new();
        for index in 0..MAX_PARTS {
            let part = part_name(name, index);
            let Some(len) = size_of(&part) else { break };
            parts.push((part_name(path, index), len));
        }
        Ok(parts)
    }

    /// The names of every part of `path` there is, the first included, even those past
    /// a gap (what a cut left). Reads only.
    fn all_parts(&self, path: &str) -> Result<Vec<String>, Error> {
        let (dir, name) = split(path);
        let prefix = format!("{name}.").to_ascii_lowercase();
        let mut found: Vec<String> = self
            .list(dir)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| {
                n.eq_ignore_ascii_case(name)
                    || (n.to_ascii_lowercase().starts_with(&prefix)
                        && is_continuation(n)
                        && n.len() == name.len() + 4)
            })
            .map(|n| {
                if dir.is_empty() {
                    n
                } else {
                    format!("{dir}/{n}")
                }
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// The size of the file `path` taken whole; `None` when it does not exist. A set of
    /// parts that is not whole (a part but the last not [`PART_SIZE`] bytes) is an error.
    pub fn file_len(&self, path: &str) -> Result<Option<u64>, Error> {
        let parts = self.parts(path)?;
        check_parts(path, &parts)?;
        Ok((!parts.is_empty()).then(|| parts.iter().map(|(_, len)| len).sum()))
    }

    /// Opens the file `path`, all its parts as one stream (`Read + Write + Seek`);
    /// `None` when it does not exist. Writes only through what is written to it.
    pub fn open_parts(&self, path: &str) -> Result<Option<Parts<'_, D>>, Error> {
        let parts = self.parts(path)?;
        if parts.is_empty() {
            return Ok(None);
        }
        check_parts(path, &parts)?;
        Ok(Some(Parts {
            store: self,
            path: path.to_string(),
            lens: parts.iter().map(|(_, len)| *len).collect(),
            files: Vec::new(),
            pos: 0,
            part_size: self.part_size,
        }))
    }

    /// Creates (or empties) the file `path` for writing as parts, creating its
    /// directories; old parts of that name go. Writes.
    pub fn create_parts(&self, path: &str) -> Result<Parts<'_, D>, Error> {
        self.remove_parts(path)?;
        let file = self.create_file(path)?;
        Ok(Parts {
            store: self,
            path: path.to_string(),
            lens: vec![0],
            files: vec![file],
            pos: 0,
            part_size: self.part_size,
        })
    }

    /// Opens the file `path` for writing as parts, created when missing, never
    /// truncated (a download resumes in it). Writes.
    pub fn open_parts_write(&self, path: &str) -> Result<Parts<'_, D>, Error> {
        if let Some(parts) = self.open_parts(path)? {
            return Ok(parts);
        }
        // A set whose first part is gone: its other parts are leftovers.
        self.remove_parts(path)?;
        let file = self.open_write(path)?;
        Ok(Parts {
            store: self,
            path: path.to_string(),
            lens: vec![0],
            files: vec![file],
            pos: 0,
            part_size: self.part_size,
        })
    }

    /// Removes the file `path` and every part of it (also leftovers past a gap); none is
    /// not an error. The first part goes first, so a cut leaves no set under the name. Writes.
    pub fn remove_parts(&self, path: &str) -> Result<(), Error> {
        self.remove(path)?;
        for part in self.all_parts(path)? {
            self.remove(&part)?;
        }
        Ok(())
    }

    /// Renames the file `from` with all its parts to `to`, replacing `to`. The first
    /// part moves last, so `to` is whole whenever it exists. Writes.
    pub fn rename_parts(&self, from: &str, to: &str) -> Result<(), Error> {
        let parts = self.parts(from)?;
        if parts.is_empty() {
            return Err(file_error("renaming", from)(io::ErrorKind::NotFound.into()));
        }
        self.remove_parts(to)?;
        for index in (0..parts.len()).rev() {
            self.rename(&part_name(from, index), &part_name(to, index))?;
        }
        Ok(())
    }
}

/// Refuses a set of parts in which a part but the last is not [`PART_SIZE`] long.
fn check_parts(path: &str, parts: &[(String, u64)]) -> Result<(), Error> {
    let Some((_, init)) = parts.split_last() else {
        return Ok(());
    };
    // The part size of a store in tests may be smaller; whole sets have equal parts.
    let size = init.first().map(|(_, len)| *len);
    for (name, len) in init {
        if Some(*len) != size || *len == 0 {
            return Err(Error::File {
                what: "reading",
                path: path.to_string(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "its parts are not whole: {name} holds {len} bytes, the first part {}",
                        size.unwrap_or(0)
                    ),
                ),
            });
        }
    }
    Ok(())
}

/// A file of the store as one stream over its parts. Writing past the end of a part
/// goes on in the next one, made as needed.
pub struct Parts<'a, D: Read + Write + Seek> {
    store: &'a Store<D>,
    path: String,
    /// Bytes in each part there is.
    lens: Vec<u64>,
    /// The parts opened so far, by index.
    files: Vec<fatfs::File<'a, crate::io::BlockCache<D>>>,
    pos: u64,
    part_size: u64,
}

impl<'a, D: Read + Write + Seek> Parts<'a, D> {
    /// Bytes in all parts.
    pub fn len(&self) -> u64 {
        self.lens.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Part `index`, opened (created when it is the next one).
    fn file(&mut self, index: usize) -> io::Result<&mut fatfs::File<'a, crate::io::BlockCache<D>>> {
        while self.files.len() <= index {
            let n = self.files.len();
            let name = part_name(&self.path, n);
            let file = if n < self.lens.len() {
                self.store.open_write(&name)
            } else {
                self.lens.push(0);
                self.store.create_file(&name)
            };
            self.files.push(file.map_err(io::Error::other)?);
        }
        Ok(&mut self.files[index])
    }

    /// Which part holds byte `pos`, and where in it.
    fn locate(&self, pos: u64) -> (usize, u64) {
        (
            usize::try_from(pos / self.part_size).unwrap_or(usize::MAX),
            pos % self.part_size,
        )
    }

    /// Cuts the file at the current position: the part there is truncated, the parts
    /// after it are removed. Writes.
    pub fn truncate_here(&mut self) -> io::Result<()> {
        let (index, at) = self.locate(self.pos);
        if index >= self.lens.len() {
            return Ok(());
        }
        self.files.truncate(index + 1);
        for later in (index + 1..self.lens.len()).rev() {
            self.store
                .remove(&part_name(&self.path, later))
                .map_err(io::Error::other)?;
        }
        self.lens.truncate(index + 1);
        let file = self.file(index)?;
        file.seek(SeekFrom::Start(at))?;
        file.truncate()?;
        self.lens[index] = at;
        Ok(())
    }
}

impl<D: Read + Write + Seek> Read for Parts<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (index, at) = self.locate(self.pos);
        let Some(&len) = self.lens.get(index) else {
            return Ok(0);
        };
        let left = len.saturating_sub(at);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let file = self.file(index)?;
        file.seek(SeekFrom::Start(at))?;
        let got = file.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Read + Write + Seek> Write for Parts<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (index, at) = self.locate(self.pos);
        // Parts before this one must be whole: no writing past a gap.
        if index > self.lens.len() || (index == self.lens.len() && at != 0) || index >= MAX_PARTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("writing {} past the end of its parts", self.path),
            ));
        }
        let room = self.part_size - at;
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        let file_len = self.lens.get(index).copied().unwrap_or(0);
        let grows = (at + n as u64).saturating_sub(file_len);
        if grows > 0 {
            self.store.guard_growth(grows)?;
        }
        let file = self.file(index)?;
        file.seek(SeekFrom::Start(at))?;
        let wrote = file.write(&buf[..n])?;
        let len = &mut self.lens[index];
        *len = (*len).max(at + wrote as u64);
        self.pos += wrote as u64;
        Ok(wrote)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.files.iter_mut().try_for_each(|f| f.flush())
    }
}

impl<D: Read + Write + Seek> Seek for Parts<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seeking before the start")
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::formatted;
    use super::*;

    /// A store whose parts are 100 KiB, so sets of parts are cheap to make.
    fn small_parts(disk: &mut std::io::Cursor<Vec<u8>>) -> Store<&mut std::io::Cursor<Vec<u8>>> {
        let mut store = Store::open(disk).unwrap();
        store.part_size = 100 * 1024;
        store
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 977) as u8)
            .collect()
    }

    #[test]
    fn a_file_bigger_than_a_part_is_kept_as_parts_and_read_as_one() {
        let mut disk = formatted(16 << 20);
        let store = small_parts(&mut disk);
        let bytes = data(250 * 1024 + 17);
        let mut file = store.create_parts("images/big.tar").unwrap();
        file.write_all(&bytes).unwrap();
        // Rewrite inside the first part, as create rewrites its manifest.
        file.seek(SeekFrom::Start(512)).unwrap();
        file.write_all(b"manifest").unwrap();
        file.flush().unwrap();
        drop(file);
        let mut expected = bytes.clone();
        expected[512..520].copy_from_slice(b"manifest");

        let names: Vec<(String, u64)> = store.list("images").unwrap();
        assert_eq!(
            names,
            vec![
                ("big.tar".into(), 102_400),
                ("big.tar.002".into(), 102_400),
                ("big.tar.003".into(), 51_217)
            ]
        );
        assert_eq!(
            store.file_len("images/big.tar").unwrap(),
            Some(expected.len() as u64)
        );
        let mut back = Vec::new();
        let mut file = store.open_parts("images/big.tar").unwrap().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(back == expected);
        // Reads that cross a part's end, from anywhere.
        for at in [0u64, 102_399, 102_400, 204_799, 250_000] {
            file.seek(SeekFrom::Start(at)).unwrap();
            let mut two = [0u8; 2];
            let n = file.read(&mut two).unwrap();
            assert_eq!(&two[..n], &expected[at as usize..][..n], "at {at}");
        }
        drop(file);
        store
            .rename_parts("images/big.tar", "images/moved.tar")
            .unwrap();
        store.unmount().unwrap();
        assert_fsck_clean(&disk);
    }

    /// fsck.vfat -n finds nothing wrong with the volume.
    fn assert_fsck_clean(disk: &std::io::Cursor<Vec<u8>>) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), disk.get_ref()).unwrap();
        let out = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(file.path())
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{report}");
    }

    #[test]
    fn renames_and_removals_move_every_part_and_sets_that_are_not_whole_are_refused() {
        let mut disk = formatted(16 << 20);
        let store = small_parts(&mut disk);
        let mut file = store.create_parts("images/x.part").unwrap();
        file.write_all(&data(300 * 1024)).unwrap();
        file.flush().unwrap();
        drop(file);
        // An older, longer file of the target name: its extra part must not survive.
        let mut old = store.create_parts("images/x").unwrap();
        old.write_all(&data(450 * 1024)).unwrap();
        drop(old);
        store.rename_parts("images/x.part", "images/x").unwrap();
        let names: Vec<String> = store
            .list("images")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["x", "x.002", "x.003"]);
        assert_eq!(store.file_len("images/x").unwrap(), Some(300 * 1024));

        // A middle part cut short: the set is not whole.
        let mut part = store.open_write("images/x.002").unwrap();
        part.seek(SeekFrom::Start(1000)).unwrap();
        part.truncate().unwrap();
        drop(part);
        let err = store.open_parts("images/x").err().unwrap().to_string();
        assert!(err.contains("its parts are not whole"), "{err}");

        // Removing takes every part, also one left past a gap.
        store.write("images/x.005", b"left over").unwrap();
        store.remove_parts("images/x").unwrap();
        assert_eq!(store.list("images").unwrap(), vec![]);
        store.unmount().unwrap();
    }

    #[test]
    fn a_resumed_write_truncates_where_it_resumes() {
        let mut disk = formatted(16 << 20);
        let store = small_parts(&mut disk);
        let bytes = data(260 * 1024);
        let mut file = store.create_parts("images/d.part").unwrap();
        file.write_all(&bytes[..230 * 1024]).unwrap();
        drop(file);
        // As a download resumes: at an offset inside the second part.
        let mut file = store.open_parts_write("images/d.part").unwrap();
        assert_eq!(file.len(), 230 * 1024);
        let at = 150 * 1024;
        file.seek(SeekFrom::Start(at)).unwrap();
        file.truncate_here().unwrap();
        assert_eq!(file.len(), at);
        file.write_all(&bytes[at as usize..]).unwrap();
        drop(file);
        let mut back = Vec::new();
        store
            .open_parts("images/d.part")
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == bytes);
        store.unmount().unwrap();
    }

    #[test]
    fn continuation_names() {
        for (name, yes) in [
            ("a.tar.002", true),
            ("a.tar.999", true),
            ("a.tar.001", false),
            ("a.tar.02", false),
            ("a.tar", false),
            (".002", false),
        ] {
            assert_eq!(is_continuation(name), yes, "{name}");
        }
    }
}
