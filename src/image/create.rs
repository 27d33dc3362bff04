//! Creating an image from a partition.

use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Mutex;
use time::OffsetDateTime;

use super::codec;
use super::container::{chunk_path, header, padding, BLOCK, INCOMPLETE_MARK, MANIFEST_PATH};
use super::manifest::{
    self, check_text, chunk_count, max_stored, Capture, Chunk, Codec, Kind, Manifest,
    DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MIN_CHUNK_SIZE,
};
use super::{parallelism, pipeline, Error};
use crate::disk::PartType;
use crate::filesystem::{self, UsedBlocks};
use crate::io::{Progress, Show};

/// What `create` puts in the manifest, and how.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub name: String,
    pub description: String,
    pub created: OffsetDateTime,
    pub chunk_size: u64,
    pub codec: Codec,
    /// The codec's level; `None`: its default.
    pub level: Option<i32>,
    /// Image every block, even those the file system does not use.
    pub all_blocks: bool,
    /// The source's data ranges, when it is a sparse file (`SEEK_DATA`): the rest reads
    /// as zeros and is not read. Used when the file system's own map is not.
    pub holes: Option<UsedBlocks>,
    /// The source partition's MBR type; `None`: the type its file system implies.
    pub partition_type: Option<PartType>,
    pub show: Show,
}

impl CreateOptions {
    /// Defaults for `name`: created now, 4 MiB zstd chunks, used blocks only, no
    /// progress shown.
    pub fn new(name: impl Into<String>) -> Self {
        CreateOptions {
            name: name.into(),
            description: String::new(),
            created: OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            chunk_size: DEFAULT_CHUNK_SIZE,
            codec: Codec::Zstd,
            level: None,
            all_blocks: false,
            holes: None,
            partition_type: None,
            show: Show::Quiet,
        }
    }

    /// The compression level in effect.
    pub fn level(&self) -> i32 {
        self.level.unwrap_or_else(|| self.codec.default_level())
    }

    /// Checks the chunk size, level, name and description (pure); `create` does it first too.
    pub fn validate(&self) -> Result<(), Error> {
        let chunk_size = self.chunk_size;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) || !chunk_size.is_power_of_two()
        {
            return Err(Error::Create {
                why: format!(
                    "chunk size {chunk_size}: not a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
                ),
            });
        }
        let levels = self.codec.levels();
        if !levels.contains(&self.level()) {
            return Err(Error::Create {
                why: format!(
                    "{} level {}: expected {} to {}",
                    self.codec.as_str(),
                    self.level(),
                    levels.start(),
                    levels.end()
                ),
            });
        }
        let create = |e: Error| Error::Create { why: e.to_string() };
        check_text("name", &self.name, MAX_NAME_LEN).map_err(create)?;
        check_text("description", &self.description, MAX_DESCRIPTION_LEN).map_err(create)
    }
}

/// A chunk on its way to a worker: the bytes to pack, or none when the map says the
/// whole chunk is unused (free, or a hole).
enum Input {
    Unused(Kind),
    Bytes(Vec<u8>),
}

/// A chunk after the worker: unused (never read), all zero, compressed, or raw.
enum Packed {
    Unused(Kind),
    Zero {
        crc32: u32,
    },
    Data {
        crc32: u32,
        sha256: [u8; 32],
        stored: Vec<u8>,
        stored_sha256: [u8; 32],
    },
    /// Compressing it did not pay: stored as it is.
    Raw {
        crc32: u32,
        sha256: [u8; 32],
    },
}

/// Which blocks of the source `create` reads, and what the others are.
struct Map {
    used: UsedBlocks,
    /// `Free` (the file system does not use them) or `Zero` (holes of a sparse file).
    unused: Kind,
}

/// The map of what to read: the file system's own (unless `all_blocks`), else the
/// holes of a sparse source, else none (read everything). Reads only.
fn map_of<R: Read + Seek>(
    source: &mut R,
    source_size: u64,
    filesystem: manifest::Filesystem,
    options: &CreateOptions,
) -> Option<Map> {
    if !options.all_blocks && filesystem != manifest::Filesystem::Unknown {
        match filesystem::used_blocks(source, source_size, filesystem) {
            Ok(used) => {
                return Some(Map {
                    used,
                    unused: Kind::Free,
                })
            }
            Err(why) => log::warn!(
                "{} file system of image {:?}: {why}; imaging every block",
                filesystem.as_str(),
                options.name
            ),
        }
    }
    options.holes.clone().map(|used| Map {
        used,
        unused: Kind::Zero,
    })
}

/// The most an image of `source` (a partition of `len` bytes) made with the default
/// chunk size can take: every block its file system uses (every byte, when reprov does
/// not know the file system) stored as it is, plus a tar header, padding and a manifest
/// line per chunk. The room a store must have before it packs a partition. Reads only.
pub fn size_bound<R: Read + Seek>(source: &mut R, len: u64) -> u64 {
    let filesystem = filesystem::detect(source, len).filesystem;
    let used = match filesystem::used_blocks(source, len, filesystem) {
        Ok(used) => used.used_bytes(),
        Err(_) => len,
    };
    used.saturating_add(len / 1024).saturating_add(1 << 20)
}

/// Reads the whole of `source` (from its start to its end) and writes an image of it into
/// `out`, from `out`'s start. Writes only to `out`; the caller syncs it.
///
/// Of an ext2/3/4 or FAT file system only the blocks it uses are read and stored; the
/// rest become free chunks, or zeros inside a data chunk (see [`CreateOptions`]).
///
/// The manifest must come first in the tar file but its checksums are known only at the
/// end, so its entry is reserved at its largest possible size (every chunk's numbers at
/// their maxima) and holds an "incomplete" mark until the end, when it is rewritten in
/// place, padded to the same size. An interrupted create leaves a file that apply refuses.
pub fn create<R: Read + Seek, W: Write + Seek>(
    source: &mut R,
    out: &mut W,
    options: &CreateOptions,
) -> Result<Manifest, Error> {
    let read_err = |what, offset| {
        move |source| Error::Source {
            what,
            offset,
            source,
        }
    };
    let write_err = |source| Error::Image {
        what: "writing",
        source,
    };
    let source_size = source
        .seek(SeekFrom::End(0))
        .map_err(read_err("measuring", 0))?;
    options.validate()?;
    let detected = filesystem::detect(source, source_size);
    let map = map_of(source, source_size, detected.filesystem, options);
    source
        .seek(SeekFrom::Start(0))
        .map_err(read_err("seeking in", 0))?;
    let chunk_size = options.chunk_size;
    let count = chunk_count(source_size, chunk_size);
    let mut manifest = Manifest {
        name: options.name.clone(),
        description: options.description.clone(),
        created: options.created,
        source_size,
        chunk_size,
        codec: options.codec,
        partition_type: options.partition_type.or(detected.partition_type),
        filesystem: detected.filesystem,
        capture: match &map {
            Some(map) if map.unused == Kind::Free => Capture::UsedBlocks,
            _ => Capture::AllBlocks,
        },
        chunks: Vec::with_capacity(count as usize),
        version: manifest::VERSION,
    };
    let largest = Manifest {
        chunks: (0..count)
            .map(|index| Chunk {
                index,
                kind: Kind::Data,
                crc32: u32::MAX,
                sha256: Some([0xff; 32]),
                stored: max_stored(manifest.chunk_len(index)),
                stored_sha256: Some([0xff; 32]),
            })
            .collect(),
        ..manifest.clone()
    };
    // Validate what the user gave (name, description, sizes) before writing.
    let largest = largest.to_toml();
    if largest.len() as u64 > manifest::MAX_MANIFEST_LEN {
        return Err(Error::Create {
            why: format!(
                "a source of {} in chunks of {} has {count} chunks, too many for one manifest \
                 (it could reach {} bytes, the limit is {}): choose a bigger --chunk-size",
                crate::units::format_size(source_size),
                crate::units::format_size(chunk_size),
                largest.len(),
                manifest::MAX_MANIFEST_LEN
            ),
        });
    }
    Manifest::parse(&largest).map_err(|e| Error::Create { why: e.to_string() })?;
    let reserved = largest.len() as u64 + 2;
    drop(largest);

    let mtime = super::container::mtime(options.created);
    out.seek(SeekFrom::Start(0)).map_err(write_err)?;
    out.write_all(&header(MANIFEST_PATH, reserved, mtime)?)
        .map_err(write_err)?;
    out.write_all(&padded_text(INCOMPLETE_MARK, reserved))
        .map_err(write_err)?;
    out.write_all(padding(reserved)).map_err(write_err)?;

    let mut progress = Progress::new("creating image", source_size, options.show);
    let mut next_index = 0u64;
    let (codec, level) = (options.codec, options.level());
    let zero_crc = (chunk_size as usize, manifest::zero_crc(chunk_size));
    let (threads, window) = parallelism(chunk_size);
    // Buffers are recycled: fresh 4 MiB allocations cost a page fault per 4 KiB.
    let sources = RefCell::new(Vec::<Vec<u8>>::new());
    let outputs = Mutex::new(Vec::<Vec<u8>>::new());
    pipeline::ordered(
        threads,
        window,
        || {
            if next_index == count {
                return Ok(None);
            }
            let index = next_index;
            next_index += 1;
            let offset = index * chunk_size;
            let len = chunk_size.min(source_size - offset);
            // A recycled buffer keeps its old bytes: each one is read over or zeroed below
            // (zeroing all of it first would cost this, the I/O thread, a pass).
            let mut buf = sources.borrow_mut().pop().unwrap_or_default();
            buf.resize(len as usize, 0);
            match &map {
                None => {
                    source
                        .seek(SeekFrom::Start(offset))
                        .and_then(|_| source.read_exact(&mut buf))
                        .map_err(read_err("reading", offset))?;
                }
                Some(map) => {
                    let runs = map.used.used_runs(offset, len);
                    if runs.is_empty() {
                        sources.borrow_mut().push(buf);
                        return Ok(Some(Input::Unused(map.unused)));
                    }
                    // Only the used blocks are read; the rest are zeros.
                    let mut filled = 0;
                    for (at, n) in runs {
                        let from = (at - offset) as usize;
                        buf[filled..from].fill(0);
                        let part = &mut buf[from..][..n as usize];
                        source
                            .seek(SeekFrom::Start(at))
                            .and_then(|_| source.read_exact(part))
                            .map_err(read_err("reading", at))?;
                        filled = from + n as usize;
                    }
                    buf[filled..].fill(0);
                }
            }
            Ok(Some(Input::Bytes(buf)))
        },
        |input: Input| match input {
            Input::Unused(kind) => (Ok(Packed::Unused(kind)), None),
            Input::Bytes(buf) => {
                let packed = pack(&buf, codec, level, zero_crc, &outputs);
                (packed, Some(buf))
            }
        },
        |(packed, buf)| {
            let index = manifest.chunks.len() as u64;
            let len = manifest.chunk_len(index);
            let chunk = match packed? {
                // Never read: it reads back as zeros.
                Packed::Unused(kind) => Chunk {
                    index,
                    kind,
                    crc32: if len == chunk_size {
                        zero_crc.1
                    } else {
                        manifest::zero_crc(len)
                    },
                    sha256: None,
                    stored: 0,
                    stored_sha256: None,
                },
                Packed::Zero { crc32 } => Chunk {
                    index,
                    kind: Kind::Zero,
                    crc32,
                    sha256: None,
                    stored: 0,
                    stored_sha256: None,
                },
                Packed::Data {
                    crc32,
                    sha256,
                    stored: data,
                    stored_sha256,
                } => {
                    let stored = data.len() as u64;
                    if stored > max_stored(len) {
                        return Err(Error::Create {
                            why: format!("chunk {index} compressed to {stored} bytes"),
                        });
                    }
                    out.write_all(&header(
                        &chunk_path(index, Kind::Data, codec),
                        stored,
                        mtime,
                    )?)
                    .map_err(write_err)?;
                    out.write_all(&data).map_err(write_err)?;
                    out.write_all(padding(stored)).map_err(write_err)?;
                    lock(&outputs).push(data);
                    Chunk {
                        index,
                        kind: Kind::Data,
                        crc32,
                        sha256: Some(sha256),
                        stored,
                        stored_sha256: Some(stored_sha256),
                    }
                }
                Packed::Raw { crc32, sha256 } => {
                    let data = buf.as_deref().expect("a raw chunk was read");
                    out.write_all(&header(&chunk_path(index, Kind::Raw, codec), len, mtime)?)
                        .map_err(write_err)?;
                    out.write_all(data).map_err(write_err)?;
                    out.write_all(padding(len)).map_err(write_err)?;
                    Chunk {
                        index,
                        kind: Kind::Raw,
                        crc32,
                        sha256: Some(sha256),
                        stored: len,
                        stored_sha256: Some(sha256),
                    }
                }
            };
            if let Some(buf) = buf {
                sources.borrow_mut().push(buf);
            }
            manifest.chunks.push(chunk);
            progress.advance(len);
            Ok(())
        },
    )?;
    // End of archive: two zero blocks.
    out.write_all(&[0; 2 * BLOCK as usize]).map_err(write_err)?;
    progress.finish();

    let text = manifest.to_toml();
    if text.len() as u64 + 2 > reserved {
        return Err(Error::Create {
            why: format!(
                "the manifest ({} bytes) outgrew its {reserved} reserved bytes",
                text.len()
            ),
        });
    }
    out.seek(SeekFrom::Start(BLOCK)).map_err(write_err)?;
    out.write_all(&padded_text(&text, reserved))
        .map_err(write_err)?;
    out.flush().map_err(write_err)?;
    Ok(manifest)
}

/// `text` followed by a comment line of spaces, `len` bytes in all (`len >= text + 2`).
fn padded_text(text: &str, len: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len as usize);
    bytes.extend_from_slice(text.as_bytes());
    if !text.ends_with('\n') {
        bytes.push(b'\n');
    }
    bytes.push(b'#');
    bytes.resize(len as usize - 1, b' ');
    bytes.push(b'\n');
    bytes
}

/// Checks a chunk for zeros, checksums it, and compresses it if it holds data (keeping
/// it raw when that is no smaller).
/// `zero_crc` is the CRC32 of a whole chunk of zeros, computed once.
/// The compressed bytes go into a buffer from the `outputs` pool.
fn pack(
    buf: &[u8],
    codec: Codec,
    level: i32,
    zero_crc: (usize, u32),
    outputs: &Mutex<Vec<Vec<u8>>>,
) -> Result<Packed, Error> {
    if is_zero(buf) {
        let crc32 = if buf.len() == zero_crc.0 {
            zero_crc.1
        } else {
            crc32fast::hash(buf)
        };
        return Ok(Packed::Zero { crc32 });
    }
    let crc32 = crc32fast::hash(buf);
    let sha256 = manifest::sha256(buf);
    let mut out = lock(outputs).pop().unwrap_or_default();
    codec::compress(codec, level, buf, &mut out).map_err(|why| Error::Create {
        why: format!("compressing a chunk: {why}"),
    })?;
    // Random or already compressed bytes: kept as they are, which an apply writes with
    // no decompression and whose one hash serves for both.
    if out.len() >= buf.len() {
        lock(outputs).push(out);
        return Ok(Packed::Raw { crc32, sha256 });
    }
    Ok(Packed::Data {
        crc32,
        sha256,
        stored_sha256: manifest::sha256(&out),
        stored: out,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A pool of buffers stays usable even if a worker panicked holding it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when every byte is zero (slice equality is a memcmp, fast in any build).
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    buf.chunks(ZEROS.len()).all(|b| b == &ZEROS[..b.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_zero_chunks() {
        assert!(is_zero(&[0; 4099]));
        let mut buf = vec![0; 4099];
        buf[4098] = 1;
        assert!(!is_zero(&buf));
        buf[4098] = 0;
        buf[3] = 0x80;
        assert!(!is_zero(&buf));
    }

    #[test]
    fn refuses_bad_options_before_writing() {
        for (chunk_size, name, expected) in [
            (0, "a", "chunk size 0"),
            (MIN_CHUNK_SIZE + 1, "a", "not a power of two"),
            (MAX_CHUNK_SIZE * 2, "a", "not a power of two"),
            (MIN_CHUNK_SIZE, "bad\u{7}name", "control characters"),
        ] {
            let mut options = CreateOptions::new(name);
            options.chunk_size = chunk_size;
            let mut out = std::io::Cursor::new(Vec::new());
            let source = &mut std::io::Cursor::new(vec![1u8; 1000]);
            let err = create(source, &mut out, &options).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(
                out.into_inner().is_empty(),
                "{expected}: wrote to the image"
            );
        }
    }

    #[test]
    fn round_trips_in_memory() {
        let mut source: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        source[70_000..200_000].fill(0);
        let mut options = CreateOptions::new("mem");
        options.chunk_size = MIN_CHUNK_SIZE;
        let mut image = std::io::Cursor::new(Vec::new());
        let made = create(
            &mut std::io::Cursor::new(source.clone()),
            &mut image,
            &options,
        )
        .unwrap();
        assert_eq!(made.chunks.len(), 5);
        assert_eq!(
            made.chunks[2].kind,
            Kind::Zero,
            "bytes 131072..196608 are zero"
        );
        let mut target = std::io::Cursor::new(vec![0xEE; 300_000]);
        let applied =
            super::super::apply(&mut image, &mut target, &mut Default::default()).unwrap();
        assert_eq!(applied, made);
        assert!(target.into_inner() == source);
    }

    #[test]
    fn pads_the_manifest_to_its_reserved_size() {
        let text = padded_text("a = 1\n", 12);
        assert_eq!(text, b"a = 1\n#    \n");
    }
}
