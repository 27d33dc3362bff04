//! The manifest: the first entry of an image, a small TOML text that says what the image
//! is and lists every chunk with its checksum. Parsing is a pure function with bounds.

use serde::Deserialize;
use std::fmt::Write as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Error;
use crate::disk::PartType;

/// The `format` value every manifest carries.
pub const FORMAT: &str = "reprov-image";
/// The manifest version this reprov writes; it reads every version from 1 up to it.
pub const VERSION: u32 = 5;
/// Version 1: gzip chunks only, no partition type, file system or free chunks.
const FIRST_VERSION: u32 = 1;
/// The first version whose data chunks carry a SHA-256: only such an image can be
/// signed (CRC32 finds accidents, not forgeries).
pub const HASHED_VERSION: u32 = 3;
/// The first version whose data chunks also carry the SHA-256 of their stored
/// (compressed) bytes: such an image is checked whole before a write by hashing what it
/// stores, without decompressing it twice.
pub const STORED_HASH_VERSION: u32 = 4;
/// The first version that may store a chunk raw (uncompressed), where compressing it
/// did not pay.
pub const RAW_VERSION: u32 = 5;
/// Chunk size of new images.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
/// Largest chunk size accepted: keeps the memory of an apply bounded.
pub const MAX_CHUNK_SIZE: u64 = 8 << 20;
/// Largest manifest accepted (about 200 000 chunks).
pub const MAX_MANIFEST_LEN: u64 = 16 << 20;
/// Largest manifest whose chunks may be listed in any TOML form; a longer one must use
/// one line per chunk (as reprov writes it), which is parsed without the TOML parser.
pub const MAX_FREE_FORM_LEN: u64 = 1 << 20;
/// Longest image name and description, in bytes.
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_DESCRIPTION_LEN: usize = 4096;

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Stored compressed as `chunks/NNNNNNNN.zst` (or `.gz`).
    Data,
    /// Stored as it is, as `chunks/NNNNNNNN.raw`: its compressed form was no smaller
    /// (random or already compressed bytes), so storing it raw saves the decompression
    /// and a hash (its stored bytes are its data).
    Raw,
    /// All zero bytes; not stored.
    Zero,
    /// Blocks the source's file system does not use; not stored, applied as zeros.
    Free,
}

impl Kind {
    /// The name in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Raw => "raw",
            Kind::Zero => "zero",
            Kind::Free => "free",
        }
    }

    /// True for the kinds that are not stored and read back as zeros.
    pub fn is_zeros(self) -> bool {
        matches!(self, Kind::Zero | Kind::Free)
    }

    /// True for the kinds stored as an entry of the image (compressed or raw).
    pub fn is_stored(self) -> bool {
        !self.is_zeros()
    }

    /// The file name extension of its entry.
    pub fn extension(self, codec: Codec) -> &'static str {
        match self {
            Kind::Raw => "raw",
            _ => codec.extension(),
        }
    }
}

/// How the data chunks are compressed: each is one frame (member) of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// One gzip member (RFC 1952) per chunk: `chunks/NNNNNNNN.gz`.
    Gzip,
    /// One zstd frame (RFC 8878) per chunk: `chunks/NNNNNNNN.zst`.
    Zstd,
}

impl Codec {
    /// The name in the manifest (and in `--codec`).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// The file name extension of its chunk entries.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => "gz",
            Codec::Zstd => "zst",
        }
    }

    /// Parses a name (pure).
    pub fn parse(name: &str) -> Result<Codec, String> {
        match name {
            "gzip" => Ok(Codec::Gzip),
            "zstd" => Ok(Codec::Zstd),
            other => Err(format!("codec {other:?}: expected \"zstd\" or \"gzip\"")),
        }
    }
}

/// The file system an image holds, as far as reprov knows it (`filesystem` in the
/// manifest). It decides how the recovery mounts the new NOS to restore the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// ext2, ext3 or ext4: the kernel's ext4 driver mounts all three.
    Ext4,
    /// FAT12, FAT16 or FAT32.
    Fat,
    /// Anything else, or not known (version 1 images).
    Unknown,
}

impl Filesystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Fat => "fat",
            Filesystem::Unknown => "unknown",
        }
    }
}

/// What the image's chunks hold of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capture {
    /// Every byte of the source.
    AllBlocks,
    /// Only the blocks the file system uses; the rest are free (applied as zeros).
    UsedBlocks,
}

impl Capture {
    pub fn as_str(self) -> &'static str {
        match self {
            Capture::AllBlocks => "all-blocks",
            Capture::UsedBlocks => "used-blocks",
        }
    }
}

/// One chunk of the source: bytes `[index * chunk_size, …)`, `chunk_size` long except the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub index: u64,
    pub kind: Kind,
    /// CRC32 (IEEE, as gzip and `crc32fast`) of the uncompressed bytes.
    pub crc32: u32,
    /// SHA-256 of the uncompressed bytes: every data chunk from version 3 on; `None` for
    /// zero and free chunks (their bytes are known) and in older images.
    pub sha256: Option<[u8; 32]>,
    /// Bytes of the compressed entry in the tar file; 0 for zero chunks.
    pub stored: u64,
    /// SHA-256 of those stored bytes: every data chunk from version 4 on; on a raw
    /// chunk it is `sha256` (the manifest does not repeat it).
    pub stored_sha256: Option<[u8; 32]>,
}

/// A parsed and validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    pub created: OffsetDateTime,
    /// Size of the source partition: the room the image needs.
    pub source_size: u64,
    pub chunk_size: u64,
    pub codec: Codec,
    /// The MBR type of the source partition: what NOS becomes when the image is
    /// applied. `None` (version 1, or unknown): NOS keeps its type.
    pub partition_type: Option<PartType>,
    pub filesystem: Filesystem,
    pub capture: Capture,
    pub chunks: Vec<Chunk>,
    /// The version the manifest says (what `to_toml` writes is always [`VERSION`]).
    pub version: u32,
}

/// The text form, as serde sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    // Checked through `Head` first; listed so `deny_unknown_fields` accepts them.
    #[serde(rename = "format")]
    _format: String,
    #[serde(rename = "version")]
    _version: u32,
    name: String,
    description: String,
    created: String,
    source_size: u64,
    chunk_size: u64,
    codec: String,
    partition_type: Option<String>,
    filesystem: Option<Filesystem>,
    capture: Option<Capture>,
    /// Absent when the chunk lines were cut out for the line parser (see `split_chunks`).
    #[serde(default)]
    chunks: Vec<ChunkText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkText {
    index: u64,
    kind: Kind,
    crc32: String,
    #[serde(default)]
    sha256: Option<String>,
    stored: u64,
    #[serde(default)]
    stored_sha256: Option<String>,
}

/// Only what tells a reprov image and its version, read before anything else so an
/// image of a later version gets "unknown version" rather than a field error.
#[derive(Deserialize)]
struct Head {
    format: Option<String>,
    version: Option<u32>,
}

fn bad(why: impl Into<String>) -> Error {
    Error::BadManifest { why: why.into() }
}

/// Number of chunks a source of `source_size` bytes has.
pub fn chunk_count(source_size: u64, chunk_size: u64) -> u64 {
    source_size.div_ceil(chunk_size)
}

/// Largest compressed size accepted for a chunk of `len` bytes (deflate's worst case
/// plus the gzip wrapper, rounded up generously).
pub fn max_stored(len: u64) -> u64 {
    len + len / 256 + 1024
}

impl Manifest {
    /// Number of bytes chunk `index` covers.
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index * self.chunk_size;
        self.chunk_size.min(self.source_size - start)
    }

    /// Byte offset of chunk `index` in the partition.
    pub fn chunk_offset(&self, index: u64) -> u64 {
        index * self.chunk_size
    }

    /// Sum of the stored (compressed) bytes.
    pub fn stored_total(&self) -> u64 {
        self.chunks.iter().map(|c| c.stored).sum()
    }

    /// Number of chunks of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.chunks.iter().filter(|c| c.kind == kind).count()
    }

    /// Number of stored chunks, compressed or raw (the rest are zero or free chunks).
    pub fn data_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.kind.is_stored()).count()
    }

    /// Parses and validates a manifest: a reprov image, a known version, sizes and chunk
    /// list consistent with each other. Pure: touches nothing.
    pub fn parse(text: &str) -> Result<Manifest, Error> {
        if text.len() as u64 > MAX_MANIFEST_LEN {
            return Err(bad(format!("longer than {MAX_MANIFEST_LEN} bytes")));
        }
        if text.starts_with(super::container::INCOMPLETE_MARK) {
            return Err(Error::Incomplete);
        }
        // The chunk list is parsed line by line into its compact form; the TOML parser
        // sees only the header (it takes ~2 KB per inline table: 600 MB at the limit).
        let small = text.len() as u64 <= MAX_FREE_FORM_LEN;
        let split = split_chunks(text).map(|(header, lines)| {
            let odd = lines
                .iter()
                .find(|(_, l)| parse_chunk_line(l).is_none())
                .copied();
            (header, lines, odd)
        });
        let (header, lines) = match split {
            Some((header, lines, None)) => (header, Some(lines)),
            Some((_, _, Some((number, line)))) if !small => {
                return Err(bad(format!(
                    "manifest line {number}: not a chunk line as reprov writes them \
                     (`  {{ index = 0, kind = \"data\", crc32 = \"5d7493fd\", sha256 = \"…\", stored = 3148978, stored_sha256 = \"…\" }},`): \
                     {line:?}"
                )))
            }
            _ if small => (text.to_string(), None),
            _ => {
                return Err(bad(format!(
                    "a manifest over {MAX_FREE_FORM_LEN} bytes must list its chunks one per line, \
                     as reprov writes them (`chunks = [`, then `  {{ index = 0, kind = \"data\", \
                     crc32 = \"5d7493fd\", sha256 = \"…\", stored = 3148978, stored_sha256 = \"…\" }},` …, then `]`)"
                )))
            }
        };
        let text = header.as_str();
        let head: Head = toml::from_str(text).map_err(|e| Error::NotAnImage {
            why: format!("the manifest is not TOML: {}", e.message()),
        })?;
        if head.format.as_deref() != Some(FORMAT) {
            return Err(Error::NotAnImage {
                why: match head.format {
                    Some(format) => format!("the manifest's format is {format:?}, not {FORMAT:?}"),
                    None => "the manifest has no format".into(),
                },
            });
        }
        let version = match head.version {
            Some(version @ FIRST_VERSION..=VERSION) => version,
            Some(version) => return Err(Error::UnknownVersion { version }),
            None => return Err(bad("no version")),
        };
        let t: Text = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        let codec = Codec::parse(&t.codec).map_err(bad)?;
        let v2 = |field: &str, present: bool| match (version, present) {
            (FIRST_VERSION, true) => Err(bad(format!("{field} in a version 1 manifest"))),
            _ => Ok(()),
        };
        v2("partition_type", t.partition_type.is_some())?;
        v2("filesystem", t.filesystem.is_some())?;
        v2("capture", t.capture.is_some())?;
        if version == FIRST_VERSION && codec != Codec::Gzip {
            return Err(bad("a version 1 image has gzip chunks only"));
        }
        let partition_type = match &t.partition_type {
            None => None,
            Some(text) => Some(parse_part_type(text).ok_or_else(|| {
                bad(format!(
                    "partition_type {text:?} is not a type a NOS can have (0x01 to 0xFF, not extended, not 0xEE)"
                ))
            })?),
        };
        check_text("name", &t.name, MAX_NAME_LEN)?;
        check_text("description", &t.description, MAX_DESCRIPTION_LEN)?;
        let created = OffsetDateTime::parse(&t.created, &Rfc3339)
            .map_err(|e| bad(format!("created {:?}: {e}", t.created)))?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&t.chunk_size)
            || !t.chunk_size.is_power_of_two()
        {
            return Err(bad(format!(
                "chunk size {} is not a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}",
                t.chunk_size
            )));
        }
        let count = chunk_count(t.source_size, t.chunk_size);
        let listed = match &lines {
            Some(lines) => lines.len() as u64,
            None => t.chunks.len() as u64,
        };
        if listed != count {
            return Err(bad(format!(
                "{listed} chunks listed, but a source of {} bytes in chunks of {} has {count}",
                t.source_size, t.chunk_size
            )));
        }
        let mut manifest = Manifest {
            name: t.name,
            description: t.description,
            created,
            source_size: t.source_size,
            chunk_size: t.chunk_size,
            codec,
            partition_type,
            filesystem: t.filesystem.unwrap_or(Filesystem::Unknown),
            capture: t.capture.unwrap_or(Capture::AllBlocks),
            chunks: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
            version,
        };
        let listed: Box<dyn Iterator<Item = Result<ChunkText, Error>>> = match lines {
            Some(lines) => Box::new(lines.into_iter().map(|(number, line)| {
                parse_chunk_line(line).ok_or_else(|| bad(format!("manifest line {number}")))
            })),
            None => Box::new(t.chunks.into_iter().map(Ok)),
        };
        let mut zero_crcs = ZeroCrcs::default();
        for (position, c) in (0u64..).zip(listed) {
            let c = c?;
            if c.index != position {
                return Err(bad(format!(
                    "chunk {position} is listed as index {}",
                    c.index
                )));
            }
            let crc32 = parse_crc(&c.crc32).ok_or_else(|| {
                bad(format!(
                    "chunk {position}: crc32 {:?} is not 8 hex digits",
                    c.crc32
                ))
            })?;
            let len = manifest.chunk_len(position);
            let kind = c.kind.as_str();
            match c.kind {
                Kind::Free if version == FIRST_VERSION => {
                    return Err(bad(format!(
                        "free chunk {position} in a version 1 manifest"
                    )))
                }
                Kind::Free if manifest.capture != Capture::UsedBlocks => {
                    return Err(bad(format!(
                        "free chunk {position} in an image of all blocks"
                    )))
                }
                Kind::Zero | Kind::Free if c.stored != 0 => {
                    return Err(bad(format!(
                        "{kind} chunk {position} says {} bytes stored",
                        c.stored
                    )))
                }
                Kind::Zero | Kind::Free if crc32 != zero_crcs.get(len) => {
                    return Err(bad(format!(
                        "{kind} chunk {position}: crc32 {crc32:08x} is not that of {len} zero bytes"
                    )))
                }
                Kind::Data if c.stored == 0 || c.stored > max_stored(len) => {
                    return Err(bad(format!(
                        "data chunk {position}: {} bytes stored for {len} bytes of data",
                        c.stored
                    )))
                }
                Kind::Raw if version < RAW_VERSION => {
                    return Err(bad(format!(
                        "raw chunk {position} in a version {version} manifest"
                    )))
                }
                Kind::Raw if c.stored != len => {
                    return Err(bad(format!(
                        "raw chunk {position}: {} bytes stored for {len} bytes of data",
                        c.stored
                    )))
                }
                _ => {}
            }
            let sha256 = match (&c.sha256, c.kind, version >= HASHED_VERSION) {
                (None, Kind::Data | Kind::Raw, true) => {
                    return Err(bad(format!(
                        "{kind} chunk {position} has no sha256 (version {version} requires one)"
                    )))
                }
                (None, _, _) => None,
                (Some(_), _, false) => {
                    return Err(bad(format!(
                        "chunk {position}: sha256 in a version {version} manifest"
                    )))
                }
                (Some(_), Kind::Zero | Kind::Free, true) => {
                    return Err(bad(format!("{kind} chunk {position} has a sha256")))
                }
                (Some(text), Kind::Data | Kind::Raw, true) => {
                    Some(parse_sha256(text).ok_or_else(|| {
                        bad(format!(
                            "chunk {position}: sha256 {text:?} is not 64 hex digits"
                        ))
                    })?)
                }
            };
            let stored_sha256 = match (&c.stored_sha256, c.kind) {
                (None, Kind::Data) if version >= STORED_HASH_VERSION => {
                    return Err(bad(format!(
                    "data chunk {position} has no stored_sha256 (version {version} requires one)"
                )))
                }
                // Its stored bytes are its data.
                (None, Kind::Raw) => sha256,
                (None, _) => None,
                (Some(_), _) if version < STORED_HASH_VERSION => {
                    return Err(bad(format!(
                        "chunk {position}: stored_sha256 in a version {version} manifest"
                    )))
                }
                (Some(_), Kind::Zero | Kind::Free | Kind::Raw) => {
                    return Err(bad(format!("{kind} chunk {position} has a stored_sha256")))
                }
                (Some(text), Kind::Data) => Some(parse_sha256(text).ok_or_else(|| {
                    bad(format!(
                        "chunk {position}: stored_sha256 {text:?} is not 64 hex digits"
                    ))
                })?),
            };
            manifest.chunks.push(Chunk {
                index: position,
                kind: c.kind,
                crc32,
                sha256,
                stored: c.stored,
                stored_sha256,
            });
        }
        Ok(manifest)
    }

    /// The manifest as TOML text: header fields, then one line per chunk.
    pub fn to_toml(&self) -> String {
        let created = self
            .created
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string());
        let mut text = String::new();
        let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
        let _ = writeln!(text, "format = {}", quoted(FORMAT));
        let _ = writeln!(text, "version = {VERSION}");
        let _ = writeln!(text, "name = {}", quoted(&self.name));
        let _ = writeln!(text, "description = {}", quoted(&self.description));
        let _ = writeln!(text, "created = {}", quoted(&created));
        let _ = writeln!(text, "source_size = {}", self.source_size);
        let _ = writeln!(text, "chunk_size = {}", self.chunk_size);
        let _ = writeln!(text, "codec = {}", quoted(self.codec.as_str()));
        if let Some(ptype) = self.partition_type {
            let _ = writeln!(text, "partition_type = \"0x{:02x}\"", ptype.0);
        }
        let _ = writeln!(text, "filesystem = {}", quoted(self.filesystem.as_str()));
        let _ = writeln!(text, "capture = {}", quoted(self.capture.as_str()));
        text.push_str("chunks = [\n");
        for c in &self.chunks {
            let _ = write!(
                text,
                "  {{ index = {}, kind = \"{}\", crc32 = \"{:08x}\", ",
                c.index,
                c.kind.as_str(),
                c.crc32,
            );
            if let Some(sha256) = &c.sha256 {
                let _ = write!(text, "sha256 = \"{}\", ", hex(sha256));
            }
            let _ = write!(text, "stored = {}", c.stored);
            if let Some(sha256) = c.stored_sha256.filter(|_| c.kind != Kind::Raw) {
                let _ = write!(text, ", stored_sha256 = \"{}\"", hex(&sha256));
            }
            text.push_str(" },\n");
        }
        text.push_str("]\n");
        text
    }
}

/// Checks a free-text field: bounded, no control characters but newline and tab.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(bad(format!("{field} is longer than {max} bytes")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(bad(format!("{field} holds control characters")));
    }
    Ok(())
}

/// `0x83` (or `83`) → type 0x83. Not a partition's type: 0x00 (an empty slot), the
/// extended types and 0xEE (a GPT's protective entry), which no NOS can have.
fn parse_part_type(text: &str) -> Option<PartType> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    let ptype = PartType(u8::from_str_radix(hex, 16).ok()?);
    let usable = !ptype.is_empty() && !ptype.is_extended() && ptype != PartType::GPT_PROTECTIVE;
    (hex.len() == 2 && usable).then_some(ptype)
}

/// Cuts the chunk list out of a manifest as reprov writes it: a line `chunks = [`, one
/// chunk per line, a line `]`. Gives the rest (the header, and what follows the list)
/// for the TOML parser, and the chunk lines with their line numbers. `None` when the
/// text has another shape (then only the TOML parser can read it).
fn split_chunks(text: &str) -> Option<(String, Vec<(usize, &str)>)> {
    let start = if text.starts_with("chunks = [\n") {
        0
    } else {
        text.find("\nchunks = [\n")? + 1
    };
    let body_start = start + "chunks = [\n".len();
    let body_len = if text[body_start..].starts_with("]\n") || &text[body_start..] == "]" {
        0
    } else {
        text[body_start..].find("\n]")? + 1
    };
    let end = body_start + body_len;
    let after = &text[end..];
    let rest = after.strip_prefix("]")?;
    if !(rest.is_empty() || rest.starts_with('\n')) {
        return None;
    }
    let first_line = text[..body_start].matches('\n').count() + 1;
    let lines: Vec<(usize, &str)> = text[body_start..end]
        .lines()
        .enumerate()
        .map(|(i, line)| (first_line + i, line))
        .collect();
    // Every line must look like a chunk, or this is another layout: leave it to TOML.
    // As TOML wants it: a comma after every element but (optionally) the last.
    let commas = lines.len().saturating_sub(1);
    if !lines.iter().all(|(_, l)| l.trim_start().starts_with('{'))
        || !lines[..commas]
            .iter()
            .all(|(_, l)| l.trim_end().ends_with(','))
    {
        return None;
    }
    let header = format!("{}{}", &text[..start], rest);
    Some((header, lines))
}

/// One chunk line: `{ index = 0, kind = "data", crc32 = "5d7493fd", sha256 = "…",
/// stored = 3148978, stored_sha256 = "…" },` (the keys in this order, the hashes only
/// where there are some, the comma after the last line optional, spaces free).
fn parse_chunk_line(line: &str) -> Option<ChunkText> {
    let line = line.trim();
    let line = line.strip_suffix(',').unwrap_or(line).trim_end();
    let inner = line.strip_prefix('{')?.strip_suffix('}')?;
    let mut fields = [("", ""); 6];
    let mut count = 0;
    for field in inner.split(',') {
        let (key, value) = field.split_once('=')?;
        *fields.get_mut(count)? = (key.trim(), value.trim());
        count += 1;
    }
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    let string = |text: &str| -> Option<String> {
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        (!inner.contains(['"', '\\'])).then(|| inner.to_string())
    };
    let (index, kind, crc32, sha256, stored, stored_sha256) = match fields[..count] {
        [("index", index), ("kind", kind), ("crc32", crc32), ("stored", stored)] => {
            (index, kind, crc32, None, stored, None)
        }
        [("index", index), ("kind", kind), ("crc32", crc32), ("sha256", sha256), ("stored", stored)] => {
            (index, kind, crc32, Some(string(sha256)?), stored, None)
        }
        [("index", index), ("kind", kind), ("crc32", crc32), ("sha256", sha256), ("stored", stored), ("stored_sha256", stored_sha256)] => {
            (
                index,
                kind,
                crc32,
                Some(string(sha256)?),
                stored,
                Some(string(stored_sha256)?),
            )
        }
        _ => return None,
    };
    let kind = match string(kind)?.as_str() {
        "data" => Kind::Data,
        "raw" => Kind::Raw,
        "zero" => Kind::Zero,
        "free" => Kind::Free,
        _ => return None,
    };
    Some(ChunkText {
        index: number(index)?,
        kind,
        crc32: string(crc32)?,
        sha256,
        stored: number(stored)?,
        stored_sha256,
    })
}

fn parse_crc(text: &str) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(hash)
}

/// Lower-case hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// CRC32 of `len` zero bytes, remembered for the (at most two) lengths a manifest has.
#[derive(Default)]
struct ZeroCrcs(Vec<(u64, u32)>);

impl ZeroCrcs {
    fn get(&mut self, len: u64) -> u32 {
        if let Some(&(_, crc)) = self.0.iter().find(|(l, _)| *l == len) {
            return crc;
        }
        let crc = zero_crc(len);
        self.0.push((len, crc));
        crc
    }
}

/// CRC32 of `len` zero bytes.
pub fn zero_crc(len: u64) -> u32 {
    static BLOCK: [u8; 65536] = [0; 65536];
    let mut hasher = crc32fast::Hasher::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK.len() as u64);
        hasher.update(&BLOCK[..n as usize]);
        left -= n;
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let chunk_size = MIN_CHUNK_SIZE;
        let source_size = 3 * chunk_size + 100;
        Manifest {
            name: "acme-1234".into(),
            description: "Acme appliance \"3.1\"\nsecond line".into(),
            created: time::macros::datetime!(2026-01-02 03:04:05 UTC),
            source_size,
            chunk_size,
            codec: Codec::Zstd,
            partition_type: Some(PartType::LINUX),
            filesystem: Filesystem::Ext4,
            capture: Capture::UsedBlocks,
            chunks: vec![
                Chunk {
                    index: 0,
                    kind: Kind::Data,
                    crc32: 0xdeadbeef,
                    sha256: Some([0xab; 32]),
                    stored: 1234,
                    stored_sha256: Some([0xcd; 32]),
                },
                Chunk {
                    index: 1,
                    kind: Kind::Zero,
                    crc32: zero_crc(chunk_size),
                    sha256: None,
                    stored: 0,
                    stored_sha256: None,
                },
                Chunk {
                    index: 2,
                    kind: Kind::Free,
                    crc32: zero_crc(chunk_size),
                    sha256: None,
                    stored: 0,
                    stored_sha256: None,
                },
                Chunk {
                    index: 3,
                    kind: Kind::Data,
                    crc32: 0x01,
                    sha256: Some(sha256(b"")),
                    stored: 99,
                    stored_sha256: Some(sha256(b"x")),
                },
            ],
            version: VERSION,
        }
    }

    /// The sample as a version 1 image says it: gzip, no type, file system, free chunks
    /// or hashes.
    fn version_1() -> String {
        let mut m = sample();
        m.codec = Codec::Gzip;
        m.chunks[2].kind = Kind::Zero;
        m.chunks.iter_mut().for_each(|c| {
            c.sha256 = None;
            c.stored_sha256 = None;
        });
        m.to_toml()
            .replace(&format!("version = {VERSION}"), "version = 1")
            .replace("partition_type = \"0x83\"\n", "")
            .replace("filesystem = \"ext4\"\n", "")
            .replace("capture = \"used-blocks\"\n", "")
    }

    #[test]
    fn round_trips_through_text() {
        let m = sample();
        let text = m.to_toml();
        assert!(text.contains("crc32 = \"deadbeef\""), "{text}");
        assert!(text.contains("partition_type = \"0x83\""), "{text}");
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(m.chunk_len(3), 100);
        assert_eq!(m.data_chunks(), 2);
        assert_eq!(m.count(Kind::Free), 1);
    }

    /// The chunk lines are read without the TOML parser; any other TOML layout of the
    /// list still reads (up to MAX_FREE_FORM_LEN), and both give the same manifest.
    #[test]
    fn chunk_lines_and_other_toml_layouts_read_alike() {
        let m = sample();
        let text = m.to_toml();
        let ab = "ab".repeat(32);
        assert!(
            split_chunks(&text).is_some(),
            "reprov's own layout takes the line parser"
        );
        let other_layouts = [
            // One table per line, keys in another order.
            text.replace(
                &format!(
                    "{{ index = 0, kind = \"data\", crc32 = \"deadbeef\", sha256 = \"{ab}\", stored = 1234 }}"
                ),
                &format!(
                    "{{ kind = \"data\", index = 0, stored = 1234, sha256 = \"{ab}\", crc32 = \"deadbeef\" }}"
                ),
            ),
            // The whole array on one line.
            {
                let (head, rest) = text.split_once("chunks = [\n").unwrap();
                let (body, tail) = rest.split_once("\n]").unwrap();
                format!("{head}chunks = [{}]{tail}", body.replace('\n', " "))
            },
            // A comment between the chunks.
            text.replacen("  { index = 1", "  # the zero chunk\n  { index = 1", 1),
        ];
        for other in other_layouts {
            assert_eq!(Manifest::parse(&other).unwrap(), m, "{other}");
        }
        // TOML's commas between elements are required.
        let bad = text.replacen("\" },", "\" }", 1);
        assert_ne!(bad, text);
        assert!(Manifest::parse(&bad).is_err());
    }

    #[test]
    fn a_long_manifest_in_another_layout_is_refused_with_the_layout_to_use() {
        let mut m = sample();
        m.source_size = 20_000 * m.chunk_size;
        m.chunks = (0..20_000)
            .map(|index| Chunk {
                index,
                kind: Kind::Zero,
                crc32: zero_crc(m.chunk_size),
                sha256: None,
                stored: 0,
                stored_sha256: None,
            })
            .collect();
        let text = m.to_toml();
        assert!(text.len() as u64 > MAX_FREE_FORM_LEN);
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let other = text.replacen("  { index = 0", "  # a comment line\n  { index = 0", 1);
        let err = Manifest::parse(&other).unwrap_err().to_string();
        assert!(err.contains("must list its chunks one per line"), "{err}");
        // A line that is not as reprov writes it is named by its number.
        let other = text.replacen("{ index = 7,", "{ index = 7 ,kind=\"zero\",", 1);
        let err = Manifest::parse(&other).unwrap_err().to_string();
        assert!(err.contains("manifest line 22: not a chunk line"), "{err}");
    }

    #[test]
    fn reads_version_1_images() {
        let m = Manifest::parse(&version_1()).unwrap();
        assert_eq!(m.codec, Codec::Gzip);
        assert_eq!(m.partition_type, None);
        assert_eq!(m.filesystem, Filesystem::Unknown);
        assert_eq!(m.capture, Capture::AllBlocks);
        // What version 1 never had is refused in it.
        for (from, to, expected) in [
            ("codec = \"gzip\"", "codec = \"zstd\"", "gzip chunks only"),
            (
                "codec = \"gzip\"",
                "codec = \"gzip\"\nfilesystem = \"fat\"",
                "version 1",
            ),
            ("kind = \"zero\"", "kind = \"free\"", "version 1"),
        ] {
            let text = version_1().replacen(from, to, 1);
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
    }

    #[test]
    fn reads_version_3_images_without_stored_hashes() {
        let mut m = sample();
        m.chunks.iter_mut().for_each(|c| c.stored_sha256 = None);
        let text = m
            .to_toml()
            .replace(&format!("version = {VERSION}"), "version = 3");
        assert!(!text.contains("stored_sha256"), "{text}");
        m.version = 3;
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    /// A raw chunk is stored as it is: its stored bytes are its data, so the manifest
    /// gives their one hash once, and its stored size is its length.
    #[test]
    fn raw_chunks_are_their_own_stored_bytes() {
        let mut m = sample();
        let raw = &mut m.chunks[3];
        raw.kind = Kind::Raw;
        raw.stored = 100;
        raw.stored_sha256 = raw.sha256;
        let text = m.to_toml();
        let line = text.lines().find(|l| l.contains("index = 3")).unwrap();
        assert!(
            line.contains("kind = \"raw\"") && !line.contains("stored_sha256"),
            "{line}"
        );
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!((m.data_chunks(), m.count(Kind::Raw)), (2, 1));
        // The TOML parser reads it alike.
        let other = text.replacen("  { index = 1", "  # a comment\n  { index = 1", 1);
        assert!(split_chunks(&other).is_none());
        assert_eq!(Manifest::parse(&other).unwrap(), m);

        let sha = format!("sha256 = \"{}\", ", hex(&sha256(b"")));
        let with_stored = format!("stored = 100, stored_sha256 = \"{}\" }}", hex(&sha256(b"")));
        for (text, expected) in [
            (
                text.replace("stored = 100", "stored = 99"),
                "raw chunk 3: 99 bytes stored for 100 bytes of data",
            ),
            (
                text.replace("version = 5", "version = 4"),
                "raw chunk 3 in a version 4 manifest",
            ),
            (text.replace(&sha, ""), "raw chunk 3 has no sha256"),
            (
                text.replace("stored = 100 }", &with_stored),
                "raw chunk 3 has a stored_sha256",
            ),
        ] {
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn refuses_inconsistent_manifests() {
        let good = sample().to_toml();
        let cases: &[(&str, &str, &str)] = &[
            (
                "format = \"reprov-image\"",
                "format = \"other\"",
                "not a reprov image",
            ),
            ("version = 5", "version = 7", "unknown image version 7"),
            (
                "source_size = 196708",
                "source_size = 999999",
                "chunks listed",
            ),
            ("chunk_size = 65536", "chunk_size = 65537", "power of two"),
            ("codec = \"zstd\"", "codec = \"xz\"", "codec"),
            (
                "partition_type = \"0x83\"",
                "partition_type = \"0x00\"",
                "not a type a NOS can have",
            ),
            (
                "partition_type = \"0x83\"",
                "partition_type = \"0x05\"",
                "not a type a NOS can have",
            ),
            (
                "partition_type = \"0x83\"",
                "partition_type = \"linux\"",
                "not a type a NOS can have",
            ),
            (
                "filesystem = \"ext4\"",
                "filesystem = \"zfs\"",
                "unknown variant `zfs`",
            ),
            (
                "capture = \"used-blocks\"",
                "capture = \"all-blocks\"",
                "free chunk 2 in an image of all blocks",
            ),
            ("index = 3", "index = 5", "listed as index"),
            ("crc32 = \"deadbeef\"", "crc32 = \"xyz\"", "8 hex digits"),
            ("stored = 1234", "stored = 0", "bytes stored"),
            ("stored = 1234", "stored = 99999999", "bytes stored"),
            ("created = \"2026", "created = \"x2026", "created"),
            ("name = ", "bogus = 1\nname = ", "unknown field"),
        ];
        for (from, to, expected) in cases {
            assert!(good.contains(from), "{from}");
            let text = good.replacen(from, to, 1);
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
        // The hashes: on every data chunk of version 3, on no other chunk, nowhere before.
        let ab = format!("sha256 = \"{}\", ", "ab".repeat(32));
        let stored_cd = format!(", stored_sha256 = \"{}\"", "cd".repeat(32));
        let zero_field = format!("crc32 = \"{:08x}\", ", zero_crc(MIN_CHUNK_SIZE));
        for (text, expected) in [
            (good.replacen(&ab, "", 1), "data chunk 0 has no sha256"),
            (
                good.replacen(&ab, "sha256 = \"abc\", ", 1),
                "is not 64 hex digits",
            ),
            (
                good.replacen(&zero_field, &format!("{zero_field}{ab}"), 1),
                "zero chunk 1 has a sha256",
            ),
            (
                good.replace("version = 5", "version = 2"),
                "sha256 in a version 2 manifest",
            ),
            (
                good.replacen(&stored_cd, "", 1),
                "data chunk 0 has no stored_sha256",
            ),
            (
                good.replacen(&stored_cd, ", stored_sha256 = \"cd\"", 1),
                "stored_sha256 \"cd\" is not 64 hex digits",
            ),
            (
                good.replacen("stored = 0 }", &format!("stored = 0{stored_cd} }}"), 1),
                "zero chunk 1 has a stored_sha256",
            ),
            (
                good.replace("version = 5", "version = 3"),
                "chunk 0: stored_sha256 in a version 3 manifest",
            ),
        ] {
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let zero = format!("{:08x}", zero_crc(MIN_CHUNK_SIZE));
        let err = Manifest::parse(&good.replace(&zero, "00000001")).unwrap_err();
        assert!(err.to_string().contains("not that of"), "{err}");
    }
}
