//! reprov's files on the images partition: the job, the identity, image files and the
//! MBR backups. Each method says whether it writes.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::name::{ImageName, PARTIAL_SUFFIX};
use super::{file_error, Error, Job, Store, MBR_BACKUP_DIR};

/// The pending job.
pub const JOB_PATH: &str = "reprov/job";
/// The saved network identity (its format belongs to the identity module).
pub const IDENTITY_PATH: &str = "reprov/identity";
/// The image files.
pub const IMAGES_DIR: &str = "images";

/// Suffix of the sealed copy written before a file is replaced.
const NEW_SUFFIX: &str = ".new";
/// First word of the seal line that ends a `.new` copy.
const SEAL: &str = "#reprov-seal";
/// Largest identity file read, in bytes.
const MAX_IDENTITY_BYTES: u64 = 64 * 1024;
/// Copy buffer for image files.
const COPY_CHUNK: usize = 1 << 20;

/// `data`, then a line with its length and CRC32, so a torn copy can be told apart.
fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let line = format!("\n{SEAL} {} {:08x}\n", data.len(), crc32fast::hash(data));
    out.extend_from_slice(line.as_bytes());
    out
}

/// The data of a sealed copy, or `None` when the copy is torn or not sealed (pure).
fn unseal(sealed: &[u8]) -> Option<&[u8]> {
    let body = sealed.strip_suffix(b"\n")?;
    let cut = body.iter().rposition(|b| *b == b'\n')?;
    let line = std::str::from_utf8(&body[cut + 1..]).ok()?;
    let mut words = line.strip_prefix(SEAL)?.split_whitespace();
    let len: usize = words.next()?.parse().ok()?;
    let crc = u32::from_str_radix(words.next()?, 16).ok()?;
    let data = &body[..cut];
    (words.next().is_none() && len == data.len() && crc == crc32fast::hash(data)).then_some(data)
}

impl<D: Read + Write + Seek> Store<D> {
    /// Reads a whole file of at most `limit` bytes; `None` when it does not exist.
    fn read_limited(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, Error> {
        let mut file = match self.fs.root_dir().open_file(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_error("opening", path)(e)),
        };
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(file_error("measuring", path))?;
        if len > limit {
            return Err(Error::TooBig {
                path: path.to_string(),
                len,
                limit,
            });
        }
        file.seek(SeekFrom::Start(0))
            .map_err(file_error("reading", path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(file_error("reading", path))?;
        Ok(Some(data))
    }

    /// Replaces `path` so that a power cut at any moment leaves the old or the new
    /// content readable through [`Store::read_replaced`]. Writes. FAT cannot rename
    /// over an existing file, so the order is:
    /// 1. write `path.new`: the data and a seal line (length, CRC32), flushed;
    /// 2. rewrite `path`, flushed;
    /// 3. remove `path.new`.
    ///
    /// A cut in 1 leaves a torn `.new` (its seal fails) beside the old `path`; a cut in 2
    /// or 3 leaves a sealed `.new` with the new data. So the recovery rule is: a `.new`
    /// whose seal checks out wins over `path`.
    fn write_replacing(&self, path: &str, data: &[u8]) -> Result<(), Error> {
        let new = format!("{path}{NEW_SUFFIX}");
        self.write(&new, &seal(data))?;
        self.write(path, data)?;
        self.remove(&new)
    }

    /// Reads a file written by [`Store::write_replacing`], by its recovery rule. Does
    /// not write: a leftover `.new` is cleaned up by the next write or remove.
    fn read_replaced(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, Error> {
        let new = format!("{path}{NEW_SUFFIX}");
        let sealed_limit = limit.saturating_add(64);
        // A torn `.new` may be any length; only a sealed one matters.
        let sealed = match self.read_limited(&new, sealed_limit) {
            Err(Error::TooBig { .. }) => None,
            other => other?,
        };
        if let Some(data) = sealed.as_deref().and_then(unseal) {
            log::debug!("{new} is sealed: a replace of {path} was cut short; using it");
            return Ok(Some(data.to_vec()));
        }
        self.read_limited(path, limit)
    }

    /// Removes a file written by [`Store::write_replacing`]. Writes. The `.new` copy
    /// goes first, so a cut in between cannot bring the old content back.
    fn remove_replaced(&self, path: &str) -> Result<(), Error> {
        self.remove(&format!("{path}{NEW_SUFFIX}"))?;
        self.remove(path)
    }

    /// The pending job; `None` when there is none. A broken job file is an error that
    /// names the file, the line and the field.
    pub fn read_job(&self) -> Result<Option<Job>, Error> {
        // Larger files are read only far enough for the parser to refuse them by size.
        let limit = u64::try_from(super::job::MAX_JOB_BYTES).expect("16 KiB fits u64");
        let Some(bytes) = self.read_replaced(JOB_PATH, limit)? else {
            return Ok(None);
        };
        Job::parse_bytes(&bytes)
            .map(Some)
            .map_err(|source| Error::BadJob {
                path: JOB_PATH.to_string(),
                source,
            })
    }

    /// Writes the job, power-cut safe (see [`Store::write_replacing`]). Writes. The job
    /// is validated first, so reprov never writes a job it would refuse to read.
    pub fn write_job(&self, job: &Job) -> Result<(), Error> {
        let text = job.render();
        Job::parse(&text).map_err(|source| Error::BadJob {
            path: JOB_PATH.to_string(),
            source,
        })?;
        self.write_replacing(JOB_PATH, text.as_bytes())
    }

    /// Removes the job (no job is not an error). Writes.
    pub fn clear_job(&self) -> Result<(), Error> {
        self.remove_replaced(JOB_PATH)
    }

    /// The saved identity, as stored; `None` when none is saved.
    pub fn read_identity_text(&self) -> Result<Option<Vec<u8>>, Error> {
        self.read_replaced(IDENTITY_PATH, MAX_IDENTITY_BYTES)
    }

    /// Saves the identity, power-cut safe (see [`Store::write_replacing`]). Writes.
    pub fn write_identity_text(&self, data: &[u8]) -> Result<(), Error> {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if len > MAX_IDENTITY_BYTES {
            return Err(Error::TooBig {
                path: IDENTITY_PATH.to_string(),
                len,
                limit: MAX_IDENTITY_BYTES,
            });
        }
        self.write_replacing(IDENTITY_PATH, data)
    }

    /// Removes the saved identity (none is not an error). Writes.
    pub fn clear_identity(&self) -> Result<(), Error> {
        self.remove_replaced(IDENTITY_PATH)
    }

    /// The complete images with their sizes in bytes (all parts of one taken as one),
    /// sorted by name.
    pub fn list_images(&self) -> Result<Vec<(String, u64)>, Error> {
        self.list_images_in(IMAGES_DIR)
    }

    /// The complete images in `dir`, with their sizes, sorted by name.
    pub fn list_images_in(&self, dir: &str) -> Result<Vec<(String, u64)>, Error> {
        let mut images = Vec::new();
        for (name, _) in self.list(dir)? {
            // Not images: unfinished copies, a download's sidecar, the parts of a set.
            let sidecar = name
                .strip_suffix(".toml")
                .is_some_and(|base| base.ends_with(PARTIAL_SUFFIX));
            if name.ends_with(PARTIAL_SUFFIX) || sidecar || super::parts::is_continuation(&name) {
                continue;
            }
            if let Some(len) = self.file_len(&format!("{dir}/{name}"))? {
                images.push((name, len));
            }
        }
        Ok(images)
    }

    /// Size of an image in bytes; [`Error::ImageMissing`] when it is not there.
    pub fn image_size(&self, name: &ImageName) -> Result<u64, Error> {
        self.file_len(&image_path(name))?
            .ok_or_else(|| Error::ImageMissing {
                name: name.to_string(),
            })
    }

    /// Copies `size` bytes from `source` into `images/NAME`, streaming (as parts when it
    /// is bigger than FAT allows). Writes.
    ///
    /// Refuses an existing name and an image larger than the free space. The copy goes
    /// to `NAME.part` first and is renamed when complete, so a cut leaves no file that
    /// looks like a whole image; a source shorter or longer than `size` is refused and
    /// its partial copy removed.
    pub fn add_image(&self, name: &ImageName, source: impl Read, size: u64) -> Result<(), Error> {
        self.add_image_in(IMAGES_DIR, name, source, size)
    }

    /// [`Store::add_image`] into `dir` (the factory image goes to `factory/` on the data
    /// partition). Writes.
    pub fn add_image_in(
        &self,
        dir: &str,
        name: &ImageName,
        source: impl Read,
        size: u64,
    ) -> Result<(), Error> {
        let path = format!("{dir}/{name}");
        if self.file_len(&path)?.is_some() {
            return Err(Error::ImageExists {
                name: name.to_string(),
            });
        }
        let free = self.room()?;
        if size > free {
            return Err(Error::NoRoom {
                name: name.to_string(),
                size,
                free,
            });
        }
        let part = format!("{path}{PARTIAL_SUFFIX}");
        if let Err(e) = self.copy_in(&part, name, source, size) {
            if let Err(cleanup) = self.remove_parts(&part) {
                log::warn!("removing the partial copy after a failed add: {cleanup}");
            }
            return Err(e);
        }
        self.rename_parts(&part, &path)
    }

    fn copy_in(
        &self,
        part: &str,
        name: &ImageName,
        source: impl Read,
        size: u64,
    ) -> Result<(), Error> {
        self.create_dirs_for(part)?;
        let mut file = self.create_parts(part)?;
        let mut source = source.take(size.saturating_add(1));
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut got: u64 = 0;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Source {
                        name: name.to_string(),
                        source,
                    })
                }
            };
            got = got.saturating_add(u64::try_from(n).expect("a buffer length fits u64"));
            if got > size {
                return Err(Error::SourceSize {
                    name: name.to_string(),
                    size,
                    got: "more than that".to_string(),
                });
            }
            file.write_all(&buf[..n])
                .map_err(file_error("writing", part))?;
        }
        if got < size {
            return Err(Error::SourceSize {
                name: name.to_string(),
                size,
                got: format!("only {got}"),
            });
        }
        file.flush().map_err(file_error("flushing", part))
    }

    /// Opens an image for reading, all its parts as one (`Read + Seek`).
    pub fn open_image(&self, name: &ImageName) -> Result<super::Parts<'_, D>, Error> {
        self.open_in(IMAGES_DIR, name)
    }

    /// Opens image `name` in directory `dir` for reading (the factory image lives in
    /// `factory/` on the data partition); [`Error::ImageMissing`] when it is not there.
    pub fn open_in(&self, dir: &str, name: &ImageName) -> Result<super::Parts<'_, D>, Error> {
        self.open_parts(&format!("{dir}/{name}"))?
            .ok_or_else(|| Error::ImageMissing {
                name: name.to_string(),
            })
    }

    /// Writes image `name` into the images directory through `write`, under a temporary
    /// name it loses only once whole and flushed (replacing an image of that name). When
    /// `write` fails, what it wrote is removed: an image that did not fit (or failed)
    /// must not keep the room the next one needs. Writes.
    pub fn write_image<T, E: From<Error>>(
        &self,
        name: &ImageName,
        write: impl FnOnce(&mut super::Parts<'_, D>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut file = self.create_image(name)?;
        let part = format!("{}{PARTIAL_SUFFIX}", image_path(name));
        let written = write(&mut file).and_then(|value| {
            file.flush().map_err(file_error("flushing", &part))?;
            Ok(value)
        });
        drop(file);
        if written.is_err() {
            if let Err(cleanup) = self.remove_parts(&part) {
                log::warn!("removing the unfinished {part}: {cleanup}");
            }
        }
        let value = written?;
        self.finish_image(name)?;
        Ok(value)
    }

    /// Creates (or replaces) image `name` in the images directory for writing, under a
    /// temporary name: [`Store::finish_image`] gives it its name when it is whole. Writes.
    pub(super) fn create_image(&self, name: &ImageName) -> Result<super::Parts<'_, D>, Error> {
        let part = format!("{}{PARTIAL_SUFFIX}", image_path(name));
        self.create_dirs_for(&part)?;
        self.create_parts(&part)
    }

    /// Gives an image written through [`Store::create_image`] its name, replacing an
    /// image of that name. Writes.
    fn finish_image(&self, name: &ImageName) -> Result<(), Error> {
        let path = image_path(name);
        self.rename_parts(&format!("{path}{PARTIAL_SUFFIX}"), &path)
    }

    /// Removes an image with all its parts, and what is left of an unfinished one of that
    /// name; none is not an error. Writes.
    pub fn discard_image(&self, name: &ImageName) -> Result<(), Error> {
        self.discard_in(IMAGES_DIR, name)
    }

    /// [`Store::discard_image`] in directory `dir`, a download's sidecar included. Writes.
    fn discard_in(&self, dir: &str, name: &ImageName) -> Result<(), Error> {
        let path = format!("{dir}/{name}");
        self.remove_parts(&path)?;
        self.remove_parts(&format!("{path}{PARTIAL_SUFFIX}"))?;
        self.remove(&format!("{path}{PARTIAL_SUFFIX}.toml"))
    }

    /// Removes an image with all its parts, and what is left of an unfinished one of that
    /// name; [`Error::ImageMissing`] when there is neither. Writes.
    pub fn remove_image(&self, name: &ImageName) -> Result<(), Error> {
        self.remove_image_in(IMAGES_DIR, name)
    }

    /// [`Store::remove_image`] in directory `dir`. Writes.
    pub fn remove_image_in(&self, dir: &str, name: &ImageName) -> Result<(), Error> {
        let path = format!("{dir}/{name}");
        let partial = format!("{path}{PARTIAL_SUFFIX}");
        if self.file_len(&path)?.is_none() && self.parts(&partial)?.is_empty() {
            return Err(Error::ImageMissing {
                name: name.to_string(),
            });
        }
        self.discard_in(dir, name)
    }

    /// Free bytes on the images partition (as the FAT32 FSInfo sector counts them).
    pub fn free_bytes(&self) -> Result<u64, Error> {
        let stats = self
            .fs
            .stats()
            .map_err(file_error("counting free space on", "the volume"))?;
        Ok(u64::from(stats.free_clusters()) * u64::from(stats.cluster_size()))
    }

    /// The MBR backups (`NNNNNN.mbr`, oldest first) with their sizes.
    pub fn list_mbr_backups(&self) -> Result<Vec<(String, u64)>, Error> {
        self.list(MBR_BACKUP_DIR)
    }

    /// One MBR backup by its name in [`Store::list_mbr_backups`].
    pub fn read_mbr_backup(&self, name: &str) -> Result<[u8; 512], Error> {
        let plain = name
            .strip_suffix(".mbr")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let path = format!("{MBR_BACKUP_DIR}/{name}");
        if !plain {
            return Err(Error::File {
                what: "reading MBR backup",
                path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a backup name"),
            });
        }
        let data = self.read_limited(&path, 512)?.ok_or_else(|| Error::File {
            what: "reading MBR backup",
            path: path.clone(),
            source: io::ErrorKind::NotFound.into(),
        })?;
        data.try_into().map_err(|data: Vec<u8>| Error::File {
            what: "reading MBR backup",
            path,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} bytes, not 512", data.len()),
            ),
        })
    }
}

/// Where an image of that name lives in the store: `images/NAME`.
pub fn image_path(name: &ImageName) -> String {
    format!("{IMAGES_DIR}/{name}")
}

#[cfg(test)]
mod tests {
    use super::super::tests::formatted;
    use super::super::Kind;
    use super::*;
    use time::macros::datetime;

    fn job() -> Job {
        Job::new(
            Kind::Apply,
            ImageName::new("m1-SN42.rpi").unwrap(),
            datetime!(2026-11-25 12:00:00 UTC),
        )
    }

    fn name(s: &str) -> ImageName {
        ImageName::new(s).unwrap()
    }

    #[test]
    fn seal_round_trips_and_catches_tears() {
        for data in [&b""[..], b"x", b"a\nb\n", b"no newline"] {
            let sealed = seal(data);
            assert_eq!(unseal(&sealed), Some(data));
            for cut in 0..sealed.len() {
                assert_eq!(unseal(&sealed[..cut]), None, "cut at {cut} of {data:?}");
            }
        }
        let mut flipped = seal(b"state = \"done\"\n");
        flipped[3] ^= 1;
        assert_eq!(unseal(&flipped), None);
    }

    #[test]
    fn job_round_trips_through_a_remount_and_clears() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.read_job().unwrap(), None);
        store.write_job(&job()).unwrap();
        let running = job().start().unwrap();
        store.write_job(&running).unwrap();
        store.unmount().unwrap();
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.read_job().unwrap(), Some(running));
        assert_eq!(store.list("reprov").unwrap().len(), 1, "no .new left over");
        store.clear_job().unwrap();
        assert_eq!(store.read_job().unwrap(), None);
        store.clear_job().unwrap();
        store.unmount().unwrap();
    }

    /// Each state a power cut can leave a replace in reads as the old or the new job.
    #[test]
    fn a_cut_replace_reads_old_or_new() {
        let old = job();
        let new = job().start().unwrap();
        let new_text = new.render();
        let old_text = old.render();
        let torn_new = &seal(new_text.as_bytes())[..new_text.len() / 2];
        // (job.new, job, expected)
        type Case<'a> = (Option<Vec<u8>>, Option<&'a str>, &'a Job);
        let cases: Vec<Case> = vec![
            (Some(torn_new.to_vec()), Some(&old_text), &old),
            (Some(Vec::new()), Some(&old_text), &old),
            (Some(seal(new_text.as_bytes())), Some(&old_text[..20]), &new),
            (Some(seal(new_text.as_bytes())), None, &new),
            (Some(seal(new_text.as_bytes())), Some(&new_text), &new),
            (None, Some(&new_text), &new),
        ];
        for (i, (dot_new, main, want)) in cases.into_iter().enumerate() {
            let mut disk = formatted(8 << 20);
            let store = Store::open(&mut disk).unwrap();
            if let Some(data) = dot_new {
                store.write("reprov/job.new", &data).unwrap();
            }
            if let Some(text) = main {
                store.write(JOB_PATH, text.as_bytes()).unwrap();
            }
            assert_eq!(store.read_job().unwrap().as_ref(), Some(want), "case {i}");
            // The next write cleans up.
            store.write_job(&old).unwrap();
            assert_eq!(store.read_job().unwrap(), Some(old.clone()));
            assert_eq!(store.read("reprov/job.new").unwrap(), None);
            store.unmount().unwrap();
        }
    }

    #[test]
    fn a_broken_job_file_names_file_line_and_field() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        let text = job().render().replace("\"pending\"", "\"runing\"");
        store.write(JOB_PATH, text.as_bytes()).unwrap();
        let err = store.read_job().unwrap_err().to_string();
        assert!(
            err.starts_with("reprov/job line 5, field \"state\": unknown state \"runing\""),
            "{err}"
        );
        store.write(JOB_PATH, &vec![b'#'; 20_000]).unwrap();
        let err = store.read_job().unwrap_err().to_string();
        assert!(
            err.contains("reprov/job on the images partition is 20000 bytes"),
            "{err}"
        );
        store.unmount().unwrap();
    }

    #[test]
    fn write_job_refuses_a_job_it_could_not_read_back() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        let mut j = job();
        j.checkpoint = u64::MAX;
        let err = store.write_job(&j).unwrap_err().to_string();
        assert!(err.contains("field \"checkpoint\""), "{err}");
        assert_eq!(store.read_job().unwrap(), None);
        store.unmount().unwrap();
    }

    #[test]
    fn identity_is_stored_as_given() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.read_identity_text().unwrap(), None);
        let text = b"hostname = \"node7\"\n\xff raw bytes survive";
        store.write_identity_text(text).unwrap();
        store.unmount().unwrap();
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.read_identity_text().unwrap().unwrap(), text);
        let big = vec![b'x'; 65 * 1024];
        assert!(matches!(
            store.write_identity_text(&big),
            Err(Error::TooBig { .. })
        ));
        store.clear_identity().unwrap();
        assert_eq!(store.read_identity_text().unwrap(), None);
        store.unmount().unwrap();
    }

    #[test]
    fn images_are_added_listed_read_and_removed() {
        let mut disk = formatted(16 << 20);
        let store = Store::open(&mut disk).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let size = u64::try_from(data.len()).unwrap();
        store.add_image(&name("b.rpi"), &data[..], size).unwrap();
        store.add_image(&name("a.rpi"), &b"tiny"[..], 4).unwrap();
        assert_eq!(
            store.list_images().unwrap(),
            vec![("a.rpi".to_string(), 4), ("b.rpi".to_string(), size)]
        );
        store.unmount().unwrap();

        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.image_size(&name("b.rpi")).unwrap(), size);
        let mut file = store.open_image(&name("b.rpi")).unwrap();
        file.seek(SeekFrom::Start(150_000)).unwrap();
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, &data[150_000..]);
        drop(file);
        store.remove_image(&name("b.rpi")).unwrap();
        assert_eq!(store.list_images().unwrap().len(), 1);
        let err = store.remove_image(&name("b.rpi")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image b.rpi is not on the images partition"
        );
        assert!(matches!(
            store.open_image(&name("b.rpi")),
            Err(Error::ImageMissing { .. })
        ));
        store.unmount().unwrap();
    }

    #[test]
    fn bad_adds_are_refused_and_leave_nothing_behind() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("network gone"))
            }
        }
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        store.add_image(&name("a.rpi"), &b"abc"[..], 3).unwrap();
        let cases: Vec<(&str, Result<(), Error>, &str)> = vec![
            (
                "exists (FAT names ignore case)",
                store.add_image(&name("A.RPI"), &b"x"[..], 1),
                "image A.RPI is already on the images partition",
            ),
            (
                "short",
                store.add_image(&name("s.rpi"), &b"abc"[..], 10),
                "adding image s.rpi: the source gave only 3 of the 10 bytes announced",
            ),
            (
                "long",
                store.add_image(&name("l.rpi"), &b"abcdef"[..], 3),
                "adding image l.rpi: the source gave more than that of the 3 bytes announced",
            ),
            (
                "too big",
                store.add_image(&name("t.rpi"), &b""[..], 1 << 30),
                "image t.rpi is 1073741824 bytes, more than the",
            ),
            (
                "failing source",
                store.add_image(&name("f.rpi"), Failing, 10),
                "reading the source of image f.rpi: network gone",
            ),
        ];
        for (what, result, want) in cases {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(want), "{what}: {err:?} lacks {want:?}");
        }
        assert_eq!(store.list(IMAGES_DIR).unwrap(), vec![("a.rpi".into(), 3)]);
        store.unmount().unwrap();
    }

    #[test]
    fn mbr_backups_list_and_read() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        store.save_mbr_backup(&[1; 512]).unwrap();
        store.save_mbr_backup(&[2; 512]).unwrap();
        let names: Vec<String> = store
            .list_mbr_backups()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["000001.mbr", "000002.mbr"]);
        assert_eq!(store.read_mbr_backup("000002.mbr").unwrap(), [2; 512]);
        for bad in ["../job", "000009.mbr", "x.mbr"] {
            assert!(store.read_mbr_backup(bad).is_err(), "{bad}");
        }
        store.unmount().unwrap();
    }
}
