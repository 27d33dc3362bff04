//! The manifest: the first entry of an image, a small TOML text that says what the image
//! is and lists every chunk with its checksum. Parsing is a pure function with bounds.

use serde::Deserialize;
use std::fmt::Write as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Error;

/// The `format` value every manifest carries.
pub const FORMAT: &str = "reprov-image";
/// The one manifest version this reprov reads and writes.
pub const VERSION: u32 = 1;
/// The one codec: each data chunk is a gzip member of its own.
pub const CODEC: &str = "gzip";
/// Chunk size of new images.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
/// Largest chunk size accepted: keeps the memory of an apply bounded.
pub const MAX_CHUNK_SIZE: u64 = 8 << 20;
/// Largest manifest accepted (about 200 000 chunks).
pub const MAX_MANIFEST_LEN: u64 = 16 << 20;
/// Longest image name and description, in bytes.
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_DESCRIPTION_LEN: usize = 4096;

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Stored as `chunks/NNNNNNNN.gz`.
    Data,
    /// All zero bytes; not stored.
    Zero,
}

/// One chunk of the source: bytes `[index * chunk_size, …)`, `chunk_size` long except the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub index: u64,
    pub kind: Kind,
    /// CRC32 (IEEE, as gzip and `crc32fast`) of the uncompressed bytes.
    pub crc32: u32,
    /// Bytes of the compressed entry in the tar file; 0 for zero chunks.
    pub stored: u64,
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
    pub chunks: Vec<Chunk>,
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
    chunks: Vec<ChunkText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkText {
    index: u64,
    kind: Kind,
    crc32: String,
    stored: u64,
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

    /// Number of data chunks (the rest are zero chunks).
    pub fn data_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.kind == Kind::Data).count()
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
        match head.version {
            Some(VERSION) => {}
            Some(version) => return Err(Error::UnknownVersion { version }),
            None => return Err(bad("no version")),
        }
        let t: Text = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        if t.codec != CODEC {
            return Err(bad(format!("codec {:?}: only {CODEC:?} is known", t.codec)));
        }
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
        if t.chunks.len() as u64 != count {
            return Err(bad(format!(
                "{} chunks listed, but a source of {} bytes in chunks of {} has {count}",
                t.chunks.len(),
                t.source_size,
                t.chunk_size
            )));
        }
        let mut manifest = Manifest {
            name: t.name,
            description: t.description,
            created,
            source_size: t.source_size,
            chunk_size: t.chunk_size,
            chunks: Vec::with_capacity(t.chunks.len()),
        };
        let mut zero_crcs = ZeroCrcs::default();
        for (position, c) in (0u64..).zip(t.chunks) {
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
            match c.kind {
                Kind::Zero if c.stored != 0 => {
                    return Err(bad(format!(
                        "zero chunk {position} says {} bytes stored",
                        c.stored
                    )))
                }
                Kind::Zero if crc32 != zero_crcs.get(len) => {
                    return Err(bad(format!(
                        "zero chunk {position}: crc32 {crc32:08x} is not that of {len} zero bytes"
                    )))
                }
                Kind::Data if c.stored == 0 || c.stored > max_stored(len) => {
                    return Err(bad(format!(
                        "data chunk {position}: {} bytes stored for {len} bytes of data",
                        c.stored
                    )))
                }
                _ => {}
            }
            manifest.chunks.push(Chunk {
                index: position,
                kind: c.kind,
                crc32,
                stored: c.stored,
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
        let _ = writeln!(text, "codec = {}", quoted(CODEC));
        text.push_str("chunks = [\n");
        for c in &self.chunks {
            let kind = match c.kind {
                Kind::Data => "data",
                Kind::Zero => "zero",
            };
            let _ = writeln!(
                text,
                "  {{ index = {}, kind = \"{kind}\", crc32 = \"{:08x}\", stored = {} }},",
                c.index, c.crc32, c.stored
            );
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

fn parse_crc(text: &str) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
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
        let source_size = 2 * chunk_size + 100;
        Manifest {
            name: "acme-1234".into(),
            description: "Acme appliance \"3.1\"\nsecond line".into(),
            created: time::macros::datetime!(2026-01-02 03:04:05 UTC),
            source_size,
            chunk_size,
            chunks: vec![
                Chunk {
                    index: 0,
                    kind: Kind::Data,
                    crc32: 0xdeadbeef,
                    stored: 1234,
                },
                Chunk {
                    index: 1,
                    kind: Kind::Zero,
                    crc32: zero_crc(chunk_size),
                    stored: 0,
                },
                Chunk {
                    index: 2,
                    kind: Kind::Data,
                    crc32: 0x01,
                    stored: 99,
                },
            ],
        }
    }

    #[test]
    fn round_trips_through_text() {
        let m = sample();
        let text = m.to_toml();
        assert!(text.contains("crc32 = \"deadbeef\""), "{text}");
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(m.chunk_len(2), 100);
        assert_eq!(m.data_chunks(), 2);
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
            ("version = 1", "version = 7", "unknown image version 7"),
            (
                "source_size = 131172",
                "source_size = 999999",
                "chunks listed",
            ),
            ("chunk_size = 65536", "chunk_size = 65537", "power of two"),
            ("codec = \"gzip\"", "codec = \"xz\"", "codec"),
            ("index = 2", "index = 5", "listed as index"),
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
        let zero = format!("{:08x}", zero_crc(MIN_CHUNK_SIZE));
        let err = Manifest::parse(&good.replace(&zero, "00000001")).unwrap_err();
        assert!(err.to_string().contains("not that of"), "{err}");
    }
}
