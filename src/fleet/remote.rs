//! Small files on the store (desired states, status reports), held in memory: a
//! [`Place`] over a map, so they go through the same download code as images.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Cursor, Seek, SeekFrom, Write};

use crate::transfer::{self, Options, PartFile, Place, StoreConfig};

/// Largest small file fetched (a desired state or a status report is a few lines).
pub const MAX_SMALL_BYTES: u64 = 64 * 1024;

/// Files in memory, by name.
#[derive(Default)]
struct MemPlace {
    files: RefCell<BTreeMap<String, Vec<u8>>>,
}

struct MemFile<'a> {
    place: &'a MemPlace,
    name: String,
    data: Cursor<Vec<u8>>,
}

impl Write for MemFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let end = self.data.position().saturating_add(len);
        if end > MAX_SMALL_BYTES {
            return Err(std::io::Error::other(format!(
                "more than {MAX_SMALL_BYTES} bytes: too large for a fleet file"
            )));
        }
        self.data.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let data = self.data.get_ref().clone();
        self.place
            .files
            .borrow_mut()
            .insert(self.name.clone(), data);
        Ok(())
    }
}

impl Seek for MemFile<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.data.seek(pos)
    }
}

impl PartFile for MemFile<'_> {
    fn truncate_here(&mut self) -> std::io::Result<()> {
        let position = usize::try_from(self.data.position()).map_err(std::io::Error::other)?;
        self.data.get_mut().truncate(position);
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.flush()
    }
}

impl Place for MemPlace {
    fn describe(&self, name: &str) -> String {
        format!("{name} (in memory)")
    }

    fn len(&self, name: &str) -> Result<Option<u64>, transfer::Error> {
        Ok(self
            .files
            .borrow()
            .get(name)
            .map(|d| u64::try_from(d.len()).unwrap_or(u64::MAX)))
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, transfer::Error> {
        Ok(self.files.borrow().get(name).cloned())
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), transfer::Error> {
        self.files
            .borrow_mut()
            .insert(name.to_string(), data.to_vec());
        Ok(())
    }

    fn open(&self, name: &str) -> Result<Box<dyn PartFile + '_>, transfer::Error> {
        let data = self.files.borrow().get(name).cloned().unwrap_or_default();
        Ok(Box::new(MemFile {
            place: self,
            name: name.to_string(),
            data: Cursor::new(data),
        }))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), transfer::Error> {
        let mut files = self.files.borrow_mut();
        if let Some(data) = files.remove(from) {
            files.insert(to.to_string(), data);
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), transfer::Error> {
        self.files.borrow_mut().remove(name);
        Ok(())
    }
}

/// Whether a transfer error says the file is not on the server (the only refusal a
/// missing desired state should be: any other one is reported).
pub(super) fn is_missing(error: &transfer::Error) -> bool {
    matches!(error, transfer::Error::Refused { reason, .. } if reason.starts_with("not found"))
}

/// Fetches `path` (under the store's directory); `None` when the server has no such file.
pub fn fetch_small(
    config: &StoreConfig,
    path: &str,
    options: &Options,
) -> crate::Result<Option<Vec<u8>>> {
    let source = config.source(path)?;
    let place = MemPlace::default();
    match transfer::download(&source, &place, "file", options, &mut |_| {}) {
        Ok(_) => Ok(place.files.borrow_mut().remove("file")),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Uploads `data` as `path` (under the store's directory).
pub fn put_small(
    config: &StoreConfig,
    path: &str,
    data: &[u8],
    options: &Options,
) -> crate::Result<()> {
    let size = u64::try_from(data.len()).unwrap_or(u64::MAX);
    transfer::upload(
        &mut Cursor::new(data),
        size,
        path,
        config,
        options,
        &mut |_| {},
    )?;
    Ok(())
}
