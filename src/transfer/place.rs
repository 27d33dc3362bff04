//! Places downloaded files go: a plain directory, or a directory of the images store
//! (FAT on the images partition). A download needs only these few operations, so it runs
//! the same over both.

use super::fetch::ReadSeek;
use super::Error;
use crate::store::Store;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

/// A file being written that can be cut short where it stands (a restart from zero must
/// not leave old bytes after the new ones).
pub trait PartFile: Write + Seek {
    /// Truncates the file at the current position.
    fn truncate_here(&mut self) -> std::io::Result<()>;
    /// Makes the bytes written durable before the file is renamed to its final name.
    fn sync(&mut self) -> std::io::Result<()>;
}

impl PartFile for std::fs::File {
    fn truncate_here(&mut self) -> std::io::Result<()> {
        let position = self.stream_position()?;
        self.set_len(position)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

impl<T: Read + Write + Seek> PartFile for crate::store::Parts<'_, T> {
    fn truncate_here(&mut self) -> std::io::Result<()> {
        crate::store::Parts::truncate_here(self)
    }

    /// Flushes into the partition; syncing the device is for whoever owns the store.
    fn sync(&mut self) -> std::io::Result<()> {
        self.flush()
    }
}

/// A directory files are downloaded into. Names are plain file names.
pub trait Place {
    /// Where `name` is, for messages.
    fn describe(&self, name: &str) -> String;
    /// The size of `name`, `None` when it does not exist.
    fn len(&self, name: &str) -> Result<Option<u64>, Error>;
    /// A small file's content, `None` when it does not exist.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Writes a small file whole. Writes.
    fn write(&self, name: &str, data: &[u8]) -> Result<(), Error>;
    /// Opens `name` for writing, created when missing, never truncated. Writes.
    fn open(&self, name: &str) -> Result<Box<dyn PartFile + '_>, Error>;
    /// Renames `from` to `to`, replacing `to`. Writes.
    fn rename(&self, from: &str, to: &str) -> Result<(), Error>;
    /// Removes `name`; a missing file is not an error. Writes.
    fn remove(&self, name: &str) -> Result<(), Error>;
    /// Makes room for `bytes` more bytes of `name` before they are fetched: in the images
    /// store, by removing the oldest images no job needs (never `name`, nor those in
    /// `keep`); an error when the room cannot be made, before anything is removed.
    /// Nothing to do in a plain directory, whose file system says when it is full.
    /// Writes (may remove files).
    fn make_room(&self, _name: &str, _bytes: u64, _keep: &[String]) -> Result<(), Error> {
        Ok(())
    }
    /// The whole files here that may be images whose chunks a fetch can reuse (a delta
    /// fetch: see `delta.rs`). None by default.
    fn images(&self) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
    /// Opens `name` (one of [`Place::images`]) for reading.
    fn open_read(&self, name: &str) -> Result<Box<dyn ReadSeek + '_>, Error> {
        Err(Error::Local {
            what: "opening",
            path: self.describe(name),
            source: std::io::ErrorKind::Unsupported.into(),
        })
    }
}

/// A directory of the host's file system.
pub struct DirPlace {
    dir: PathBuf,
}

impl DirPlace {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirPlace { dir: dir.into() }
    }
}

fn local(what: &'static str, path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_string();
    move |source| Error::Local { what, path, source }
}

fn missing_is_none<T>(result: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Place for DirPlace {
    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn len(&self, name: &str) -> Result<Option<u64>, Error> {
        let meta = missing_is_none(std::fs::metadata(self.dir.join(name)))
            .map_err(local("reading the size of", self.describe(name)))?;
        Ok(meta.map(|m| m.len()))
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        missing_is_none(std::fs::read(self.dir.join(name)))
            .map_err(local("reading", self.describe(name)))
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        std::fs::write(self.dir.join(name), data).map_err(local("writing", self.describe(name)))
    }

    fn open(&self, name: &str) -> Result<Box<dyn PartFile + '_>, Error> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(name))
            .map_err(local("opening", self.describe(name)))?;
        Ok(Box::new(file))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
            .map_err(local("renaming", self.describe(from)))
    }

    fn remove(&self, name: &str) -> Result<(), Error> {
        missing_is_none(std::fs::remove_file(self.dir.join(name)))
            .map(|_| ())
            .map_err(local("removing", self.describe(name)))
    }
    /// The regular files of the directory but partial downloads and their sidecars.
    fn images(&self) -> Result<Vec<String>, Error> {
        let listing = std::fs::read_dir(&self.dir).map_err(local("listing", self.dir.display()))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(local("listing", self.dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let partial = name.ends_with(".part") || name.ends_with(".part.toml");
            if entry.file_type().is_ok_and(|t| t.is_file()) && !partial {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn open_read(&self, name: &str) -> Result<Box<dyn ReadSeek + '_>, Error> {
        let file = crate::io::open_regular(&self.dir.join(name))
            .map_err(local("opening", self.describe(name)))?;
        Ok(Box::new(file))
    }
}

/// A directory of the images store (e.g. `images`). Files bigger than FAT allows are
/// kept as parts there and taken as one (see `crate::store::Parts`).
pub struct StorePlace<'s, D: Read + Write + Seek> {
    store: &'s Store<D>,
    dir: String,
}

impl<'s, D: Read + Write + Seek> StorePlace<'s, D> {
    pub fn new(store: &'s Store<D>, dir: &str) -> Self {
        StorePlace {
            store,
            dir: dir.trim_matches('/').to_string(),
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{}", self.dir, name)
    }
}

impl<D: Read + Write + Seek> Place for StorePlace<'_, D> {
    fn describe(&self, name: &str) -> String {
        format!("{} on the images partition", self.path(name))
    }

    fn len(&self, name: &str) -> Result<Option<u64>, Error> {
        Ok(self.store.file_len(&self.path(name))?)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.store.read(&self.path(name))?)
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        Ok(self.store.write(&self.path(name), data)?)
    }

    fn open(&self, name: &str) -> Result<Box<dyn PartFile + '_>, Error> {
        Ok(Box::new(self.store.open_parts_write(&self.path(name))?))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        Ok(self.store.rename_parts(&self.path(from), &self.path(to))?)
    }

    fn remove(&self, name: &str) -> Result<(), Error> {
        Ok(self.store.remove_parts(&self.path(name))?)
    }
    fn make_room(&self, name: &str, bytes: u64, keep: &[String]) -> Result<(), Error> {
        let mut kept: Vec<&str> = keep.iter().map(String::as_str).collect();
        kept.push(name);
        Ok(self.store.make_room(&self.dir, bytes, &kept, name)?)
    }
    /// The complete images of the directory (the current one, the safety backup …).
    fn images(&self) -> Result<Vec<String>, Error> {
        let images = self.store.list_images_in(&self.dir)?;
        Ok(images.into_iter().map(|(name, _)| name).collect())
    }

    fn open_read(&self, name: &str) -> Result<Box<dyn ReadSeek + '_>, Error> {
        let parts = self.store.open_parts(&self.path(name))?;
        let parts = parts.ok_or_else(|| Error::Local {
            what: "opening",
            path: self.describe(name),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        Ok(Box::new(parts))
    }
}
