//! Verifying an image: every chunk decompressed and checked, nothing written.

use std::io::{Read, Seek};

use super::apply::decode_chunks;
use super::container::open;
use super::{Error, Manifest};
use crate::io::{Progress, Show};

/// Checks the whole image: manifest, tar shape, and every chunk's size and CRC32.
/// Reads only.
pub fn verify<R: Read + Seek>(image: &mut R, show: Show) -> Result<Manifest, Error> {
    let layout = open(image)?;
    let m = &layout.manifest;
    let mut progress = Progress::new("verifying image", m.source_size, show);
    decode_chunks(image, &layout, 0, |index, _| {
        progress.advance(m.chunk_len(index));
        Ok(())
    })?;
    progress.finish();
    Ok(layout.manifest)
}
