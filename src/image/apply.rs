//! Applying an image onto a partition, and the chunk decoding that verify shares.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::codec;
use super::container::{open, Layout};
use super::manifest::{hex, Chunk, Codec, Kind, Manifest};
use super::{parallelism, pipeline, CheckpointError, Error};
use crate::io::{Progress, Show, SyncAll, ZeroRange};

/// How an apply runs.
pub struct ApplyOptions<'a> {
    /// Chunks before this one are taken as already written (a checkpoint).
    pub resume_from: u64,
    /// How often the target is synced and a checkpoint reported (at least; and at the end).
    pub checkpoint_every: Duration,
    /// Told the number of leading chunks durably written, after each sync.
    pub on_checkpoint: Option<&'a mut dyn FnMut(u64) -> Result<(), CheckpointError>>,
    pub show: Show,
}

impl Default for ApplyOptions<'_> {
    fn default() -> Self {
        ApplyOptions {
            resume_from: 0,
            checkpoint_every: Duration::from_secs(5),
            on_checkpoint: None,
            show: Show::Quiet,
        }
    }
}

/// A decoded chunk, checked as its [`Check`] says.
pub(crate) enum Decoded {
    Zero,
    Data(Vec<u8>),
    /// A data chunk whose stored bytes match their SHA-256, not decompressed
    /// ([`Check::Stored`] only).
    Stored,
}

/// What [`decode_chunks`] checks of each data chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Everything the manifest says: the stored bytes' SHA-256 (version 4), and the
    /// decompressed bytes' size, CRC32 and SHA-256 (version 3).
    Everything,
    /// Before a write: only the stored bytes' SHA-256 where the manifest has it (no
    /// decompression); an older image is checked for everything.
    Stored,
    /// As it writes, after [`Check::Stored`]: the stored bytes' SHA-256 and the data's
    /// size and CRC32. The data's SHA-256 only when there is no stored one: the stored
    /// bytes fix what they decompress to, so hashing the data again buys nothing.
    Write,
}

/// Checks the image (manifest, shape, whole) and that it fits the target, then writes it
/// onto `target` from the target's start, checking every chunk's CRC as it goes. Writes
/// nothing until every check that needs no decompression has passed. Zero and free
/// chunks are zeroed (hole, zero-out or written zeros): never the target's old bytes. Syncs the target and reports a checkpoint
/// every `checkpoint_every` and at the end. Bytes of the target past the image are left.
pub fn apply<R, W>(
    image: &mut R,
    target: &mut W,
    options: &mut ApplyOptions,
) -> Result<Manifest, Error>
where
    R: Read + Seek,
    W: Write + Seek + SyncAll + ZeroRange,
{
    let layout = open(image)?;
    apply_opened(image, layout, target, options)
}

/// [`apply`] of an image already checked by [`open`]. Writes to `target`.
pub(crate) fn apply_opened<R, W>(
    image: &mut R,
    layout: Layout,
    target: &mut W,
    options: &mut ApplyOptions,
) -> Result<Manifest, Error>
where
    R: Read + Seek,
    W: Write + Seek + SyncAll + ZeroRange,
{
    let room = target
        .seek(SeekFrom::End(0))
        .map_err(|source| Error::Target {
            what: "measuring",
            offset: 0,
            source,
        })?;
    let m = &layout.manifest;
    if m.source_size > room {
        return Err(Error::TooBig {
            needed: m.source_size,
            room,
        });
    }
    let count = m.chunks.len() as u64;
    if options.resume_from > count {
        return Err(Error::ResumeBeyondEnd {
            resume: options.resume_from,
            count,
        });
    }

    // Every check passed: from here on the target is written.
    let mut progress = Progress::new("applying image", m.source_size, options.show);
    progress.skip((options.resume_from * m.chunk_size).min(m.source_size));
    let mut last_checkpoint = Instant::now();
    decode_chunks(
        image,
        &layout,
        options.resume_from,
        Check::Write,
        |index, chunk| {
            let (offset, len) = (m.chunk_offset(index), m.chunk_len(index));
            let target_err = |what| {
                move |source| Error::Target {
                    what,
                    offset,
                    source,
                }
            };
            match chunk {
                Decoded::Zero => target
                    .zero_range(offset, len)
                    .map_err(target_err("zeroing"))?,
                Decoded::Data(data) => {
                    target
                        .seek(SeekFrom::Start(offset))
                        .map_err(target_err("seeking in"))?;
                    target.write_all(data).map_err(target_err("writing"))?;
                    // The disk writes this chunk while the workers decode the next ones.
                    // Only a hint: where it fails, the checkpoint's sync does it all.
                    if let Err(e) = target.start_sync(offset, len) {
                        log::debug!("starting the write-back at byte {offset}: {e}");
                    }
                }
                Decoded::Stored => unreachable!("a write decompresses every chunk"),
            }
            progress.advance(len);
            if last_checkpoint.elapsed() >= options.checkpoint_every {
                checkpoint(target, index + 1, options)?;
                last_checkpoint = Instant::now();
            }
            Ok(())
        },
    )?;
    checkpoint(target, count, options)?;
    progress.finish();
    Ok(layout.manifest)
}

/// Makes the first `chunks` chunks durable and reports them.
fn checkpoint<W: Write + SyncAll>(
    target: &mut W,
    chunks: u64,
    options: &mut ApplyOptions,
) -> Result<(), Error> {
    let sync_err = |source| Error::Target {
        what: "syncing",
        offset: 0,
        source,
    };
    target.flush().map_err(sync_err)?;
    target.sync_all().map_err(sync_err)?;
    if let Some(report) = options.on_checkpoint.as_mut() {
        report(chunks).map_err(|source| Error::Checkpoint { chunks, source })?;
    }
    Ok(())
}

/// A chunk on its way to a worker.
enum Job {
    Zero(u64),
    Stored {
        chunk: Chunk,
        stored: Vec<u8>,
        len: u64,
    },
}

/// Reads chunks `from..` of the image in order, checks (and decompresses) them on worker
/// threads as `check` says, and hands each to `sink` in order. Stops at the first bad
/// chunk. Buffers go back to pools after use, so memory is a fixed few chunks and the
/// allocator does not churn (which would inflate the peak RSS with freed-but-kept
/// arenas).
pub(crate) fn decode_chunks<R: Read + Seek>(
    image: &mut R,
    layout: &Layout,
    from: u64,
    check: Check,
    mut sink: impl FnMut(u64, &Decoded) -> Result<(), Error>,
) -> Result<(), Error> {
    let m = &layout.manifest;
    let mut next = from;
    let read_err = |source| Error::Image {
        what: "reading",
        source,
    };
    // One pool for the stored bytes read here and the data the workers decompress: a
    // raw chunk's stored buffer is its data, and comes back as such.
    let buffers = Mutex::new(Vec::<Vec<u8>>::new());
    let (threads, window) = parallelism(m.chunk_size);
    pipeline::ordered(
        threads,
        window,
        || {
            let Some(chunk) = m.chunks.get(next as usize) else {
                return Ok(None);
            };
            next += 1;
            if chunk.kind.is_zeros() {
                return Ok(Some(Job::Zero(chunk.index)));
            }
            image
                .seek(SeekFrom::Start(layout.offset(chunk.index)))
                .map_err(read_err)?;
            // A recycled buffer's old bytes are all read over: no zeroing pass on this,
            // the I/O thread.
            let mut stored = lock(&buffers).pop().unwrap_or_default();
            stored.resize(chunk.stored as usize, 0);
            image.read_exact(&mut stored).map_err(read_err)?;
            Ok(Some(Job::Stored {
                chunk: *chunk,
                stored,
                len: m.chunk_len(chunk.index),
            }))
        },
        |job| match job {
            Job::Zero(index) => (index, Ok(Decoded::Zero)),
            Job::Stored { chunk, stored, len } => {
                let decoded = unpack(&chunk, m.codec, stored, len, check, &buffers);
                (chunk.index, decoded)
            }
        },
        |(index, decoded)| {
            let decoded = decoded?;
            sink(index, &decoded)?;
            if let Decoded::Data(buf) = decoded {
                lock(&buffers).push(buf);
            }
            Ok(())
        },
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A pool of buffers stays usable even if a worker panicked holding it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks one chunk as `check` says and decompresses it into a buffer of the pool
/// (a raw chunk's stored bytes are its data), refusing stored bytes that do not hash
/// to their SHA-256, more or fewer bytes than declared, anything after its one frame,
/// and a CRC32 or SHA-256 mismatch. `stored` goes back to the pool unless it is the data
/// (after an error nothing needs to: the pipeline stops).
fn unpack(
    chunk: &Chunk,
    codec: Codec,
    stored: Vec<u8>,
    len: u64,
    check: Check,
    pool: &Mutex<Vec<Vec<u8>>>,
) -> Result<Decoded, Error> {
    let &Chunk {
        index,
        kind,
        crc32,
        sha256,
        stored_sha256,
        ..
    } = chunk;
    let bad = |why: String| Error::BadChunk { index, why };
    if let Some(expected) = stored_sha256 {
        let actual = super::manifest::sha256(&stored);
        if actual != expected {
            return Err(bad(format!(
                "SHA-256 mismatch of the stored bytes: the manifest says {}, the entry has {}",
                hex(&expected),
                hex(&actual)
            )));
        }
        if check == Check::Stored {
            lock(pool).push(stored);
            return Ok(Decoded::Stored);
        }
    }
    let sha256 = sha256.filter(|_| check == Check::Everything || stored_sha256.is_none());
    let data = if kind == Kind::Raw {
        // The manifest's parse made sure it is `len` bytes, hashed above.
        stored
    } else {
        let mut data = lock(pool).pop().unwrap_or_default();
        let decompressed = codec::decompress(codec, &stored, len, &mut data);
        lock(pool).push(stored);
        decompressed.map_err(|e| bad(format!("decompressing ({}): {e}", codec.as_str())))?;
        data
    };
    let actual = crc32fast::hash(&data);
    if actual != crc32 {
        return Err(bad(format!(
            "CRC32 mismatch: the manifest says {crc32:08x}, the data has {actual:08x}"
        )));
    }
    if let Some(expected) = sha256 {
        let actual = super::manifest::sha256(&data);
        if actual != expected {
            return Err(bad(format!(
                "SHA-256 mismatch: the manifest says {}, the data has {}",
                hex(&expected),
                hex(&actual)
            )));
        }
    }
    Ok(Decoded::Data(data))
}
