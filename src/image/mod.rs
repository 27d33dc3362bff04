//! Partition images: one tar file holding a manifest and the partition's data in
//! independently compressed chunks (zstd or gzip; see `docs/image-format.md`): of a file
//! system reprov knows, only the blocks it uses. Create, apply, verify.
//!
//! All functions are generic over `Read`/`Write`/`Seek`; the stream I/O stays on the
//! calling thread and only (de)compression runs on worker threads, so streams need not
//! be `Send` and memory stays bounded by a few chunks whatever the image size.

mod apply;
mod check;
mod codec;
mod container;
mod create;
mod manifest;
mod nos;
mod pipeline;
mod verify;

pub use apply::{apply, ApplyOptions};
pub use check::check_target;
pub use codec::{GZIP_LEVEL, ZSTD_LEVEL};
pub use container::{
    chunk_entry, chunk_path, entry_len, manifest_header, open, open_signable, write_signature,
    Layout, MANIFEST_PATH, MAX_SIGNATURE_LEN, SIGNATURE_PATH,
};
pub use create::{create, size_bound, CreateOptions};
pub use manifest::{
    chunk_count, hex, Capture, Chunk, Codec, Filesystem, Kind, Manifest, DEFAULT_CHUNK_SIZE,
    FORMAT, HASHED_VERSION, MAX_CHUNK_SIZE, MAX_MANIFEST_LEN, MIN_CHUNK_SIZE, STORED_HASH_VERSION,
    VERSION,
};
pub use nos::{apply_to_nos, grow_nos_for, nos_growth};
pub use verify::{verify, verify_opened, verify_stored, verify_stored_opened};

use crate::units::format_size;

/// File name extension of image files (`images/NAME.tar` on the images partition).
pub const EXTENSION: &str = "tar";

/// An error a checkpoint callback may return (it stops the apply).
pub type CheckpointError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a reprov image: {why}")]
    NotAnImage { why: String },
    #[error("unknown image version {version} (this reprov reads versions 1 to {VERSION})")]
    UnknownVersion { version: u32 },
    #[error("invalid image manifest: {why}")]
    BadManifest { why: String },
    #[error("incomplete image: its creation did not finish")]
    Incomplete,
    #[error("damaged image: {why}")]
    Damaged { why: String },
    #[error(
        "the image needs {} ({needed} bytes) but the target has room for only {} ({room} bytes)",
        format_size(*needed),
        format_size(*room)
    )]
    TooBig { needed: u64, room: u64 },
    #[error("damaged image: chunk {index}: {why}")]
    BadChunk { index: u64, why: String },
    #[error("cannot resume from chunk {resume}: the image has only {count} chunks")]
    ResumeBeyondEnd { resume: u64, count: u64 },
    #[error("{what} the image: {source}")]
    Image {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} the source partition at byte {offset}: {source}")]
    Source {
        what: &'static str,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} the target at byte {offset}: {source}")]
    Target {
        what: &'static str,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("recording the checkpoint ({chunks} chunks written): {source}")]
    Checkpoint {
        chunks: u64,
        #[source]
        source: CheckpointError,
    },
    #[error("creating the image: {why}")]
    Create { why: String },
}

/// Chunk bytes a pipeline keeps in flight at most (a chunk may be held compressed and
/// decompressed at once), so memory stays bounded whatever the image size and the
/// number of cores: an apply of 4 MiB chunks holds at most six.
const IN_FLIGHT_BYTES: u64 = 24 << 20;

/// Worker threads and chunks in flight for chunks of `chunk_size` bytes: every core,
/// within the memory budget.
pub(crate) fn parallelism(chunk_size: u64) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let window = usize::try_from(IN_FLIGHT_BYTES / chunk_size.max(1))
        .unwrap_or(usize::MAX)
        .clamp(2, 2 * cores);
    (cores.min(window), window)
}
