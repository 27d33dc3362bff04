//! The tar container: `manifest.toml` first, then `chunks/NNNNNNNN.gz` for the data
//! chunks in order, in plain ustar entries (so `tar -x` restores them as files).

use std::io::{Read, Seek, SeekFrom};

use super::manifest::{Kind, Manifest, MAX_MANIFEST_LEN};
use super::Error;

/// Path of the manifest, the first entry.
pub const MANIFEST_PATH: &str = "manifest.toml";
/// What the manifest entry holds until `create` finishes and rewrites it.
pub(crate) const INCOMPLETE_MARK: &str = "# reprov image: incomplete, its creation did not finish";
/// tar's block size: headers are one block, data is padded to whole blocks.
pub(crate) const BLOCK: u64 = 512;

/// Path of the entry holding data chunk `index`.
pub fn chunk_path(index: u64) -> String {
    format!("chunks/{index:08}.gz")
}

/// A ustar header for a regular file of `size` bytes.
pub(crate) fn header(path: &str, size: u64, mtime: u64) -> Result<[u8; 512], Error> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|source| Error::Image {
        what: "naming an entry of",
        source,
    })?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(*h.as_bytes())
}

/// Zero bytes that pad `len` bytes of data to a whole block.
pub(crate) fn padding(len: u64) -> &'static [u8] {
    const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];
    &ZEROS[..((BLOCK - len % BLOCK) % BLOCK) as usize]
}

/// An image checked for shape: its manifest, and where each data chunk's compressed
/// bytes lie in the file.
#[derive(Debug)]
pub struct Layout {
    pub manifest: Manifest,
    /// Per chunk: byte offset of its stored data in the image (0 for zero chunks).
    offsets: Vec<u64>,
}

impl Layout {
    /// Where chunk `index`'s compressed bytes start in the image file.
    pub fn offset(&self, index: u64) -> u64 {
        self.offsets[index as usize]
    }
}

fn damaged(why: impl Into<String>) -> Error {
    Error::Damaged { why: why.into() }
}

/// Reads the manifest and walks every tar header (seeking over the data) to check the
/// image is whole: each data chunk present, in order, under its name, with the size the
/// manifest says, inside the file. Decompresses nothing; reads only.
pub fn open<R: Read + Seek>(image: &mut R) -> Result<Layout, Error> {
    let io = |what| move |source| Error::Image { what, source };
    let len = image.seek(SeekFrom::End(0)).map_err(io("seeking in"))?;
    image.seek(SeekFrom::Start(0)).map_err(io("seeking in"))?;
    let mut archive = tar::Archive::new(&mut *image);
    let mut entries = archive.entries_with_seek().map_err(io("reading"))?;

    let mut first = match entries.next() {
        None => {
            return Err(Error::NotAnImage {
                why: "empty, or not a tar file".into(),
            })
        }
        // The tar crate's message may quote the garbage it found: say it plainly.
        Some(Err(_)) => {
            return Err(Error::NotAnImage {
                why: "not a tar file (no valid tar header at its start)".into(),
            })
        }
        Some(Ok(entry)) => entry,
    };
    if first.path_bytes().as_ref() != MANIFEST_PATH.as_bytes()
        || first.header().entry_type() != tar::EntryType::Regular
    {
        return Err(Error::NotAnImage {
            why: format!(
                "its first entry is {:?}, not the file {MANIFEST_PATH}",
                String::from_utf8_lossy(&first.path_bytes())
            ),
        });
    }
    let size = first.size();
    if size > MAX_MANIFEST_LEN {
        return Err(Error::BadManifest {
            why: format!("{size} bytes long, more than {MAX_MANIFEST_LEN}"),
        });
    }
    if first.raw_file_position() + size > len {
        return Err(damaged(format!(
            "truncated: {len} bytes, inside the manifest"
        )));
    }
    let mut text = Vec::with_capacity(size as usize);
    (&mut first)
        .take(size)
        .read_to_end(&mut text)
        .map_err(io("reading the manifest of"))?;
    let text = String::from_utf8(text).map_err(|_| Error::NotAnImage {
        why: "its manifest is not UTF-8 text".into(),
    })?;
    let manifest = Manifest::parse(&text)?;

    let mut offsets = vec![0; manifest.chunks.len()];
    let mut data = manifest.chunks.iter().filter(|c| c.kind == Kind::Data);
    for entry in entries {
        let entry = entry.map_err(|e| damaged(format!("reading a tar header: {e}")))?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(chunk) = data.next() else {
            return Err(damaged(format!(
                "unexpected entry {path:?} after the last chunk"
            )));
        };
        let expected = chunk_path(chunk.index);
        if path != expected || entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged(format!(
                "entry {path:?} where the file {expected} belongs"
            )));
        }
        if entry.size() != chunk.stored {
            return Err(damaged(format!(
                "{expected} holds {} bytes, the manifest says {}",
                entry.size(),
                chunk.stored
            )));
        }
        let offset = entry.raw_file_position();
        if offset + chunk.stored > len {
            return Err(damaged(format!(
                "truncated: {len} bytes, inside {expected}"
            )));
        }
        offsets[chunk.index as usize] = offset;
    }
    if let Some(chunk) = data.next() {
        return Err(damaged(format!(
            "truncated: {} and later chunks are missing",
            chunk_path(chunk.index)
        )));
    }
    Ok(Layout { manifest, offsets })
}
