//! Verifying an image, nothing written: every chunk decompressed and checked, or (before
//! a write) every chunk's stored bytes against their hash.

use std::io::{Read, Seek};

use super::apply::{decode_chunks, Check};
use super::container::{open, Layout};
use super::{Error, Manifest};
use crate::io::{Progress, Show};

/// Checks the whole image: manifest, tar shape, and every chunk's size, CRC32 and (from
/// version 3) SHA-256, of its stored bytes too from version 4. Checks no signature
/// (`crate::trust` does). Reads only.
pub fn verify<R: Read + Seek>(image: &mut R, show: Show) -> Result<Manifest, Error> {
    let layout = open(image)?;
    verify_opened(image, layout, show)
}

/// [`verify`] of an image already opened.
pub fn verify_opened<R: Read + Seek>(
    image: &mut R,
    layout: Layout,
    show: Show,
) -> Result<Manifest, Error> {
    run(image, layout, Check::Everything, show)
}

/// What must pass before an image is written, so that a bad chunk anywhere leaves the
/// target untouched: from version 4, every data chunk's stored bytes against their
/// SHA-256 (a hash of the compressed bytes; the write then checks what they decompress
/// to), before that all [`verify`] checks. Reads only.
pub fn verify_stored<R: Read + Seek>(image: &mut R, show: Show) -> Result<Manifest, Error> {
    let layout = open(image)?;
    verify_stored_opened(image, layout, show)
}

/// [`verify_stored`] of an image already opened.
pub fn verify_stored_opened<R: Read + Seek>(
    image: &mut R,
    layout: Layout,
    show: Show,
) -> Result<Manifest, Error> {
    run(image, layout, Check::Stored, show)
}

fn run<R: Read + Seek>(
    image: &mut R,
    layout: Layout,
    check: Check,
    show: Show,
) -> Result<Manifest, Error> {
    let m = &layout.manifest;
    let mut progress = Progress::new("verifying image", m.source_size, show);
    decode_chunks(image, &layout, 0, check, |index, _| {
        progress.advance(m.chunk_len(index));
        Ok(())
    })?;
    progress.finish();
    Ok(layout.manifest)
}
