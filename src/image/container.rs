//! The tar container: `manifest.toml` first, then `chunks/NNNNNNNN.zst` (or `.gz`, or
//! `.raw` where compressing did not pay) for the stored chunks in order, then (when
//! signed) `manifest.toml.minisig`, in plain ustar entries (so `tar -x` restores them as
//! files and `minisign -V` checks the signature).

use std::io::{Read, Seek, SeekFrom, Write};

use super::manifest::{Codec, Kind, Manifest, MAX_MANIFEST_LEN};
use super::Error;

/// Path of the manifest, the first entry.
pub const MANIFEST_PATH: &str = "manifest.toml";
/// Path of the signature of the manifest (minisign's own name for it), the last entry.
pub const SIGNATURE_PATH: &str = "manifest.toml.minisig";
/// Longest signature accepted (minisign's is four lines; the comments are free text).
pub const MAX_SIGNATURE_LEN: u64 = 8 << 10;
/// What the manifest entry holds until `create` finishes and rewrites it.
pub(crate) const INCOMPLETE_MARK: &str = "# reprov image: incomplete, its creation did not finish";
/// tar's block size: headers are one block, data is padded to whole blocks.
pub(crate) const BLOCK: u64 = 512;

/// Path of the entry holding stored chunk `index` of `kind` (data or raw).
pub fn chunk_path(index: u64, kind: Kind, codec: Codec) -> String {
    format!("chunks/{index:08}.{}", kind.extension(codec))
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

/// The manifest entry's header as `create` writes it for a manifest of `len` bytes
/// created at `created`: an image that starts with it is laid out as reprov lays images
/// out, so its chunk entries can be made again from the manifest (a delta fetch does).
pub fn manifest_header(len: u64, created: time::OffsetDateTime) -> Result<[u8; 512], Error> {
    header(MANIFEST_PATH, len, mtime(created))
}

/// The mtime `create` gives every entry: the manifest's `created`.
pub(crate) fn mtime(created: time::OffsetDateTime) -> u64 {
    u64::try_from(created.unix_timestamp()).unwrap_or(0)
}

/// Bytes of a whole entry holding `len` bytes: its header and the data padded to a block.
pub fn entry_len(len: u64) -> u64 {
    BLOCK + len.div_ceil(BLOCK) * BLOCK
}

/// Data chunk `index`'s whole entry (header, `stored`, padding) as `create` writes it,
/// after checking that `stored` is the chunk's: it hashes to the stored SHA-256
/// (version 4), or decompresses to the data's (version 3); `None` when it does not (or
/// the manifest has no hash, or another stored length).
pub fn chunk_entry(
    manifest: &Manifest,
    index: u64,
    stored: &[u8],
) -> Result<Option<Vec<u8>>, Error> {
    let Some(chunk) = manifest
        .chunks
        .get(usize::try_from(index).unwrap_or(usize::MAX))
    else {
        return Ok(None);
    };
    let len = manifest.chunk_len(index);
    let mut plain = Vec::new();
    let sound = stored.len() as u64 == chunk.stored
        && match chunk.stored_sha256 {
            Some(sha) => super::manifest::sha256(stored) == sha,
            None => {
                super::codec::decompress(manifest.codec, stored, len, &mut plain).is_ok()
                    && chunk
                        .sha256
                        .is_some_and(|sha| super::manifest::sha256(&plain) == sha)
            }
        };
    if !sound {
        return Ok(None);
    }
    let path = chunk_path(index, chunk.kind, manifest.codec);
    let mut entry = header(&path, chunk.stored, mtime(manifest.created))?.to_vec();
    entry.extend_from_slice(stored);
    entry.extend_from_slice(padding(chunk.stored));
    Ok(Some(entry))
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
    /// Where the manifest entry's bytes lie: (offset, length).
    manifest_span: (u64, u64),
    /// Where the entries after the last chunk start (the signature, or the end).
    chunks_end: u64,
    /// The text of `manifest.toml.minisig`, when the image is signed.
    pub signature: Option<String>,
}

impl Layout {
    /// Where chunk `index`'s compressed bytes start in the image file.
    pub fn offset(&self, index: u64) -> u64 {
        self.offsets[index as usize]
    }

    /// The manifest entry's bytes exactly as stored: what a signature signs.
    pub fn manifest_bytes<R: Read + Seek>(&self, image: &mut R) -> Result<Vec<u8>, Error> {
        let (offset, len) = self.manifest_span;
        read_at(image, offset, len, "reading the manifest of")
    }
}

fn read_at<R: Read + Seek>(
    image: &mut R,
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0; len as usize];
    image
        .seek(SeekFrom::Start(offset))
        .and_then(|_| image.read_exact(&mut bytes))
        .map_err(|source| Error::Image { what, source })?;
    Ok(bytes)
}

fn damaged(why: impl Into<String>) -> Error {
    Error::Damaged { why: why.into() }
}

/// One tar header as read: the entry's path, size, and where its data starts.
struct Entry {
    path: String,
    size: u64,
    data: u64,
}

impl Entry {
    /// Where the next header starts: after the data, padded to a whole block.
    fn next(&self) -> Option<u64> {
        self.data
            .checked_add(self.size)?
            .checked_add(padding(self.size).len() as u64)
    }
}

/// Reads the tar header at `pos`: `Ok(None)` at the end-of-archive (zero) block. Refuses
/// anything but a plain ustar regular file with a valid checksum, so pax and GNU
/// extension headers (which could name paths or sizes out of sight) never get through.
fn read_header<R: Read + Seek>(image: &mut R, pos: u64, len: u64) -> Result<Option<Entry>, String> {
    if pos.checked_add(BLOCK).map_or(true, |end| end > len) {
        return Err(format!(
            "truncated: {len} bytes, a tar header at byte {pos} is missing"
        ));
    }
    let mut block = [0u8; BLOCK as usize];
    image
        .seek(SeekFrom::Start(pos))
        .and_then(|_| image.read_exact(&mut block))
        .map_err(|e| format!("reading the tar header at byte {pos}: {e}"))?;
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let header = tar::Header::from_byte_slice(&block);
    // The checksum is the sum of the header's bytes with its own field read as spaces.
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    if header.cksum().ok() != Some(sum) {
        return Err(format!("no valid tar header at byte {pos}"));
    }
    let path = String::from_utf8_lossy(&header.path_bytes()).into_owned();
    if header.entry_type() != tar::EntryType::Regular {
        return Err(format!("entry {path:?} at byte {pos} is not a plain file"));
    }
    let size = header
        .size()
        .map_err(|e| format!("entry {path:?} at byte {pos}: bad size: {e}"))?;
    Ok(Some(Entry {
        path,
        size,
        data: pos + BLOCK,
    }))
}

/// Reads the manifest and walks every tar header (seeking over the data) to check the
/// image is whole: each data chunk present, in order, under its name, with the size the
/// manifest says, inside the file, then the signature if any, then the end of the
/// archive. Decompresses nothing and checks no signature (see `crate::trust`); reads only.
pub fn open<R: Read + Seek>(image: &mut R) -> Result<Layout, Error> {
    let len = image
        .seek(SeekFrom::End(0))
        .map_err(|source| Error::Image {
            what: "measuring",
            source,
        })?;
    let mut layout = open_signable(image)?;
    let mut pos = layout.chunks_end;
    if let Some(entry) = read_header(image, pos, len).map_err(damaged)? {
        if entry.path != SIGNATURE_PATH {
            return Err(damaged(format!(
                "unexpected entry {:?} after the last chunk",
                entry.path
            )));
        }
        if entry.size > MAX_SIGNATURE_LEN || entry.data + entry.size > len {
            return Err(damaged(format!(
                "{SIGNATURE_PATH} is {} bytes long: truncated, or not a signature",
                entry.size
            )));
        }
        let text = read_at(image, entry.data, entry.size, "reading the signature of")?;
        let text = String::from_utf8(text)
            .map_err(|_| damaged(format!("{SIGNATURE_PATH} is not UTF-8 text")))?;
        layout.signature = Some(text);
        pos = entry
            .next()
            .ok_or_else(|| damaged("entry sizes overflow"))?;
        if let Some(extra) = read_header(image, pos, len).map_err(damaged)? {
            return Err(damaged(format!(
                "unexpected entry {:?} after {SIGNATURE_PATH}",
                extra.path
            )));
        }
    }
    Ok(layout)
}

/// Writes `signature` as the image's `manifest.toml.minisig` (replacing any), then the
/// end of the archive, and gives the image's new length (the caller cuts the file
/// there). Touches only bytes after the last chunk, and needs nothing of them: a signing
/// cut short is mended by signing again.
pub fn write_signature<F: Read + Write + Seek>(
    image: &mut F,
    signature: &str,
    mtime: u64,
) -> Result<u64, Error> {
    if signature.len() as u64 > MAX_SIGNATURE_LEN {
        return Err(Error::Create {
            why: format!("a signature of {} bytes is too long", signature.len()),
        });
    }
    let end = open_signable(image)?.chunks_end;
    let size = signature.len() as u64;
    let mut tail = header(SIGNATURE_PATH, size, mtime)?.to_vec();
    tail.extend_from_slice(signature.as_bytes());
    tail.extend_from_slice(padding(size));
    tail.extend_from_slice(&[0; 2 * BLOCK as usize]);
    let write_err = |source| Error::Image {
        what: "writing the signature into",
        source,
    };
    image
        .seek(SeekFrom::Start(end))
        .and_then(|_| image.write_all(&tail))
        .and_then(|_| image.flush())
        .map_err(write_err)?;
    Ok(end + tail.len() as u64)
}

/// [`open`] up to the end of the last chunk: the manifest and every chunk entry, not
/// what follows (a signature, maybe torn by a cut while signing). Without the signature.
pub fn open_signable<R: Read + Seek>(image: &mut R) -> Result<Layout, Error> {
    let len = image
        .seek(SeekFrom::End(0))
        .map_err(|source| Error::Image {
            what: "measuring",
            source,
        })?;
    let not_image = |why: String| Error::NotAnImage { why };
    let first = match read_header(image, 0, len) {
        _ if len == 0 => return Err(not_image("it is empty".into())),
        Ok(Some(entry)) => entry,
        // The header may hold anything: say it plainly rather than quote it.
        Ok(None) | Err(_) => {
            return Err(not_image(
                "not a tar file (no valid tar header at its start)".into(),
            ))
        }
    };
    if first.path != MANIFEST_PATH {
        return Err(not_image(format!(
            "its first entry is {:?}, not the file {MANIFEST_PATH}",
            first.path
        )));
    }
    if first.size > MAX_MANIFEST_LEN {
        return Err(Error::BadManifest {
            why: format!("{} bytes long, more than {MAX_MANIFEST_LEN}", first.size),
        });
    }
    if first.data + first.size > len {
        return Err(damaged(format!(
            "truncated: {len} bytes, inside the manifest"
        )));
    }
    let text = read_at(image, first.data, first.size, "reading the manifest of")?;
    let text =
        String::from_utf8(text).map_err(|_| not_image("its manifest is not UTF-8 text".into()))?;
    let manifest = Manifest::parse(&text)?;

    let mut offsets = vec![0; manifest.chunks.len()];
    let mut pos = first
        .next()
        .ok_or_else(|| damaged("entry sizes overflow"))?;
    for chunk in manifest.chunks.iter().filter(|c| c.kind.is_stored()) {
        let expected = chunk_path(chunk.index, chunk.kind, manifest.codec);
        let entry = read_header(image, pos, len)
            .map_err(damaged)?
            .ok_or_else(|| damaged(format!("the archive ends where {expected} belongs")))?;
        if entry.path != expected {
            return Err(damaged(format!(
                "entry {:?} where the file {expected} belongs",
                entry.path
            )));
        }
        if entry.size != chunk.stored {
            return Err(damaged(format!(
                "{expected} holds {} bytes, the manifest says {}",
                entry.size, chunk.stored
            )));
        }
        if entry.data + entry.size > len {
            return Err(damaged(format!(
                "truncated: {len} bytes, inside {expected}"
            )));
        }
        offsets[chunk.index as usize] = entry.data;
        pos = entry
            .next()
            .ok_or_else(|| damaged("entry sizes overflow"))?;
    }
    Ok(Layout {
        manifest,
        offsets,
        manifest_span: (first.data, first.size),
        chunks_end: pos,
        signature: None,
    })
}
