//! Room on the images partition, which a server fills over months of re-provisioning:
//! every fetched image, created image and safety backup stays there.
//!
//! Two rules keep it working unattended:
//! - images never take the partition's last [`Store::reserve`] bytes: those are kept for
//!   reprov's own small files (the job, the identity, the step log, the MBR backups), so
//!   a full partition can never stop a job from being recorded or a step from being
//!   logged ([`Store::guard_growth`], called by every write that grows an image);
//! - a new image makes its own room: [`Store::make_room`] removes the oldest images that
//!   no job needs, leftovers of unfinished copies first, and logs each (R005). It first
//!   checks that the room can be made at all, so it removes nothing in vain.

use std::io::{self, Read, Seek, Write};

use super::name::PARTIAL_SUFFIX;
use super::{file_error, parts, Code, Error, State, Store};
use crate::units::format_size;

/// The most an images partition keeps free for reprov's own files: the step log and its
/// older half (512 KiB), 64 MBR copies of one cluster each (up to 2 MiB in 32 KiB
/// clusters), the job, the identity and their sealed copies.
const MAX_RESERVE: u64 = 4 << 20;

/// One file (with its parts) that could be removed to make room.
#[derive(Debug)]
struct Removable {
    /// Its name in the directory (`B1.tar`, or `B1.tar.part` for an unfinished copy).
    name: String,
    /// Bytes its clusters hold.
    bytes: u64,
    /// Whether it is what an unfinished copy or download left.
    leftover: bool,
    /// When it was last written, as FAT keeps it (sorts oldest first).
    modified: (u16, u16, u16, u16, u16, u16),
}

impl<D: Read + Write + Seek> Store<D> {
    /// Bytes kept free for reprov's own files: 4 MiB, or a sixteenth of a smaller volume.
    pub fn reserve(&self) -> u64 {
        let total = self
            .fs
            .stats()
            .map(|s| u64::from(s.total_clusters()) * u64::from(s.cluster_size()))
            .unwrap_or(0);
        MAX_RESERVE.min(total / 16)
    }

    /// Bytes an image may still take: the free bytes less [`Store::reserve`].
    pub fn room(&self) -> Result<u64, Error> {
        Ok(self.free_bytes()?.saturating_sub(self.reserve()))
    }

    /// Refuses a write that would make an image file `grows` bytes longer when that would
    /// eat into [`Store::reserve`]. Reads only.
    pub(super) fn guard_growth(&self, grows: u64) -> io::Result<()> {
        let free = self.free_bytes().map_err(io::Error::other)?;
        let reserve = self.reserve();
        if free.saturating_sub(grows) < reserve {
            return Err(io::Error::other(format!(
                "the partition is full: {} free, and its last {} are kept for reprov's job, \
                 identity and step log",
                format_size(free),
                format_size(reserve)
            )));
        }
        Ok(())
    }

    /// Makes `need` bytes of room for images in `dir`, removing the oldest files there
    /// that nothing needs: unfinished copies first, then whole images, oldest first.
    /// Never removed: the names in `keep` (with their unfinished copies), the image the
    /// job on this partition names, whatever its state (the appliance runs it now, or a
    /// created image waits there for its upload), and its safety backup until it is
    /// over. Each removal is logged (R005) saying it was for `what`. When even removing
    /// all the others would not make the room, nothing is removed and [`Error::Full`]
    /// says so. Writes (only when it removes something).
    pub fn make_room(&self, dir: &str, need: u64, keep: &[&str], what: &str) -> Result<(), Error> {
        // Room is what is free past the reserve. A partition that an older reprov (or
        // another tool) filled to the last cluster has less than the reserve free: then
        // `need` 0 makes room for reprov's own files again.
        let reserve = self.reserve();
        let enough = |free: u64| free >= reserve.saturating_add(need);
        let free = self.free_bytes()?;
        if enough(free) {
            return Ok(());
        }
        let mut needed: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
        if let Some(job) = self.read_job()? {
            needed.push(job.image.to_string());
            // The safety backup matters until the job is over.
            if !matches!(job.state, State::Done | State::Failed) {
                needed.extend(job.backup_image.map(|b| b.to_string()));
            }
        }
        let mut keep: Vec<String> = Vec::new();
        for name in needed {
            if !keep.iter().any(|k| k.eq_ignore_ascii_case(&name)) {
                keep.push(name);
            }
        }
        let mut removable = self.removable(dir, &keep)?;
        let could_free: u64 = removable.iter().map(|r| r.bytes).sum();
        if !enough(free.saturating_add(could_free)) {
            return Err(Error::Full {
                what: what.to_string(),
                need,
                room: free.saturating_sub(reserve),
                could_free,
                kept: keep.join(", "),
            });
        }
        removable.sort_by_key(|r| (!r.leftover, r.modified));
        for old in removable {
            if enough(self.free_bytes()?) {
                break;
            }
            let path = format!("{dir}/{}", old.name);
            self.remove_parts(&path)?;
            if old.leftover {
                self.remove(&format!("{path}.toml"))?; // a download's sidecar
            }
            let why = match old.leftover {
                true => "left by an unfinished copy",
                false => "the oldest image no job needs",
            };
            self.step(
                Code::ImageRemoved,
                &format!(
                    "{} ({}, {why}) to make room for {what}",
                    old.name,
                    format_size(old.bytes)
                ),
            )?;
        }
        Ok(())
    }

    /// The files of `dir` that [`Store::make_room`] may remove: each image and each
    /// unfinished copy once (its parts counted in), but those `keep` names. Reads only.
    fn removable(&self, dir: &str, keep: &[String]) -> Result<Vec<Removable>, Error> {
        let listing = match self.fs.root_dir().open_dir(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(file_error("opening directory", dir)(e)),
        };
        let cluster = self
            .fs
            .stats()
            .map(|s| u64::from(s.cluster_size()))
            .unwrap_or(512)
            .max(1);
        let mut found: Vec<Removable> = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(file_error("listing", dir))?;
            if !entry.is_file() {
                continue;
            }
            let file_name = entry.file_name();
            // A part `NAME.002` counts with `NAME`; a sidecar `NAME.part.toml` goes with
            // the unfinished `NAME.part`.
            let mut name = file_name.as_str();
            if parts::is_continuation(name) {
                name = &name[..name.len() - 4];
            }
            let sidecar = name
                .strip_suffix(".toml")
                .filter(|base| base.ends_with(PARTIAL_SUFFIX));
            let name = sidecar.unwrap_or(name);
            let image = name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(name);
            if keep.iter().any(|k| k.eq_ignore_ascii_case(image)) {
                continue;
            }
            let bytes = entry.len().div_ceil(cluster) * cluster;
            let m = entry.modified();
            let modified = (
                m.date.year,
                m.date.month,
                m.date.day,
                m.time.hour,
                m.time.min,
                m.time.sec,
            );
            match found.iter_mut().find(|r| r.name.eq_ignore_ascii_case(name)) {
                Some(known) => {
                    known.bytes += bytes;
                    known.modified = known.modified.max(modified);
                }
                None => found.push(Removable {
                    name: name.to_string(),
                    bytes,
                    leftover: name.ends_with(PARTIAL_SUFFIX),
                    modified,
                }),
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::formatted;
    use super::super::{ImageName, Job, Kind, IMAGES_DIR};
    use super::*;
    use time::macros::datetime;

    const MIB: u64 = 1 << 20;

    fn add(store: &Store<&mut std::io::Cursor<Vec<u8>>>, name: &str, len: u64) {
        let name = ImageName::new(name).unwrap();
        store
            .add_image(&name, io::repeat(7).take(len), len)
            .unwrap();
    }

    fn images(store: &Store<&mut std::io::Cursor<Vec<u8>>>) -> Vec<String> {
        store
            .list(IMAGES_DIR)
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// A store of 72 MiB (4 MiB reserve) holding old.tar, mid.tar, new.tar (20 MiB
    /// each, written in that order) and the 5 MiB a download left of part.tar.
    fn full_store(disk: &mut std::io::Cursor<Vec<u8>>) -> Store<&mut std::io::Cursor<Vec<u8>>> {
        let store = Store::open(disk).unwrap();
        for name in ["old.tar", "mid.tar", "new.tar"] {
            add(&store, name, 20 * MIB);
            // FAT keeps times to 2 s.
            std::thread::sleep(std::time::Duration::from_millis(2100));
        }
        store
            .write("images/part.tar.part", &vec![1; 5 << 20])
            .unwrap();
        store
            .write("images/part.tar.part.toml", b"url = \"x\"")
            .unwrap();
        assert_eq!(store.reserve(), 4 * MIB);
        store
    }

    #[test]
    fn room_is_made_from_leftovers_then_the_oldest_images_no_job_needs() {
        let mut disk = formatted(72 << 20);
        let store = full_store(&mut disk);
        let room = store.room().unwrap();
        assert!(room < 5 * MIB, "{room}");
        // The job's image is kept, however old.
        let job = Job::new(
            Kind::Apply,
            ImageName::new("old.tar").unwrap(),
            datetime!(2026-11-25 12:00:00 UTC),
        );
        store.write_job(&job).unwrap();

        store.make_room(IMAGES_DIR, room + MIB, &[], "x").unwrap();
        assert_eq!(
            images(&store),
            ["mid.tar", "new.tar", "old.tar"],
            "the leftover went first"
        );
        store
            .make_room(IMAGES_DIR, room + 6 * MIB, &["new.tar"], "x")
            .unwrap();
        assert_eq!(
            images(&store),
            ["new.tar", "old.tar"],
            "then the oldest unneeded"
        );
        let log = store.read_log().unwrap().entries;
        let removed: Vec<&str> = (log.iter().filter(|e| e.code == "R005"))
            .map(|e| e.detail.as_deref().unwrap())
            .collect();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(removed[0]
            .starts_with("part.tar.part (5.0 MiB, left by an unfinished copy) to make room for x"));
        assert!(removed[1].starts_with("mid.tar (20.0 MiB, the oldest image no job needs)"));
        store.unmount().unwrap();
        super::super::tests::fsck(disk.get_ref()).unwrap();
    }

    #[test]
    fn room_that_cannot_be_made_removes_nothing() {
        let mut disk = formatted(72 << 20);
        let store = full_store(&mut disk);
        let room = store.room().unwrap();
        let err = store
            .make_room(
                IMAGES_DIR,
                room + 30 * MIB,
                &["new.tar", "mid.tar"],
                "B.tar",
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Full { .. }), "{text}");
        assert!(text.contains("B.tar needs"), "{text}");
        assert!(text.contains("new.tar, mid.tar"), "{text}");
        assert_eq!(
            images(&store),
            [
                "mid.tar",
                "new.tar",
                "old.tar",
                "part.tar.part",
                "part.tar.part.toml"
            ]
        );
        store.unmount().unwrap();
    }

    #[test]
    fn images_never_take_the_reserve() {
        let mut disk = formatted(72 << 20);
        let store = Store::open(&mut disk).unwrap();
        let room = store.room().unwrap();
        let name = ImageName::new("big.tar").unwrap();
        // add_image refuses up front; a stream that grows past the room stops at it.
        let err = store
            .add_image(&name, io::repeat(0).take(room + MIB), room + MIB)
            .unwrap_err();
        assert!(matches!(err, Error::NoRoom { .. }), "{err}");
        let mut file = store.create_image(&name).unwrap();
        let err = io::copy(&mut io::repeat(0).take(room + MIB), &mut file).unwrap_err();
        assert!(err.to_string().contains("the partition is full"), "{err}");
        assert!(err.to_string().contains("kept for reprov's job"), "{err}");
        drop(file);
        assert!(store.free_bytes().unwrap() >= store.reserve());
        // reprov's own files still fit.
        for n in 0..64 {
            store.save_mbr_backup(&[n; 512]).unwrap();
        }
        store
            .write_job(&Job::new(
                Kind::Apply,
                name,
                datetime!(2026-11-25 12:00:00 UTC),
            ))
            .unwrap();
        store.step(Code::JobWritten, "apply big.tar").unwrap();
        store.unmount().unwrap();
    }
}
