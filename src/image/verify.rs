//! Verifying an image: every chunk decompressed and checked, nothing written.

use std::io::{Read, Seek};

use super::apply::decode_chunks;
use super::container::{open, Layout};
use super::{Error, Manifest};
use crate::io::{Progress, Show};

/// Checks the whole image: manifest, tar shape, and every chunk's size, CRC32 and (from
/// version 3) SHA-256. Checks no signature (`crate::trust` does). Reads only.
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
    let m = &layout.manifest;
    let mut progress = Progress::new("verifying image", m.source_size, show);
    decode_chunks(image, &layout, 0, |index, _| {
        progress.advance(m.chunk_len(index));
        Ok(())
    })?;
    progress.finish();
    Ok(layout.manifest)
}
