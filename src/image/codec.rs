//! Compressing and decompressing one chunk: exactly one gzip member or zstd frame that
//! holds exactly the chunk's bytes, nothing before or after it — so what reprov writes
//! and what the documented restore by hand (`gzip -dc`, `zstd -dc`) writes are the same.

use std::cell::RefCell;
use std::io::{Read, Write};

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::manifest::Codec;
use crate::io::Limited;

/// gzip level of new chunks. zlib-rs' level 1 (deflate_quick) makes larger output than
/// `gzip -1`; level 2 is still several times faster and no larger (see `scripts/bench`).
pub const GZIP_LEVEL: i32 = 2;
/// zstd level of new chunks: zstd's own default, as `zstd -3` (see `scripts/bench`).
pub const ZSTD_LEVEL: i32 = 3;

impl Codec {
    /// The level new chunks are compressed at unless told otherwise.
    pub fn default_level(self) -> i32 {
        match self {
            Codec::Gzip => GZIP_LEVEL,
            Codec::Zstd => ZSTD_LEVEL,
        }
    }

    /// The levels `--level` accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Codec::Gzip => 1..=9,
            Codec::Zstd => 1..=19,
        }
    }
}

thread_local! {
    /// One zstd context per worker thread and level: making one costs more than a chunk.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static UNZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` into `out` (emptied first) as one member / frame.
pub fn compress(codec: Codec, level: i32, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    match codec {
        Codec::Gzip => {
            let level = Compression::new(u32::try_from(level).map_err(|e| e.to_string())?);
            let mut encoder = GzEncoder::new(std::mem::take(out), level);
            encoder.write_all(data).map_err(|e| e.to_string())?;
            *out = encoder.finish().map_err(|e| e.to_string())?;
            Ok(())
        }
        Codec::Zstd => ZSTD.with_borrow_mut(|slot| {
            if !matches!(slot, Some((l, _)) if *l == level) {
                let mut compressor =
                    zstd::bulk::Compressor::new(level).map_err(|e| e.to_string())?;
                // As the zstd tool does: `zstd -t` then checks a chunk by itself.
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                    .map_err(|e| e.to_string())?;
                // A window as long as the longest chunk (zstd shrinks it to a shorter
                // one's size): level 3's own 2 MiB window misses the matches of a 4 MiB
                // chunk's second half in its first. 0.3 % smaller, as fast (scripts/bench).
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::WindowLog(
                        super::manifest::MAX_CHUNK_SIZE.ilog2(),
                    ))
                    .map_err(|e| e.to_string())?;
                *slot = Some((level, compressor));
            }
            let (_, compressor) = slot.as_mut().expect("made above");
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            compressor
                .compress_to_buffer(data, out)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    }
}

/// Decompresses `stored` into `out` (emptied first), which must come to exactly `len`
/// bytes; refuses more or fewer bytes, a bad checksum, and anything after the one
/// member / frame.
pub fn decompress(codec: Codec, stored: &[u8], len: u64, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let want = usize::try_from(len).map_err(|e| e.to_string())?;
    out.reserve_exact(want);
    match codec {
        Codec::Gzip => {
            let mut decoder = GzDecoder::new(stored);
            Limited::new(&mut decoder, len)
                .read_to_end(out)
                .map_err(|e| e.to_string())?;
            let rest = decoder.into_inner().len();
            if rest != 0 {
                return Err(format!("{rest} bytes follow the gzip member"));
            }
        }
        Codec::Zstd => {
            let frame = zstd::zstd_safe::find_frame_compressed_size(stored)
                .map_err(|code| zstd::zstd_safe::get_error_name(code).to_string())?;
            if frame != stored.len() {
                return Err(format!(
                    "{} bytes follow the zstd frame",
                    stored.len() - frame
                ));
            }
            UNZSTD.with_borrow_mut(|slot| {
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
                }
                let decompressor = slot.as_mut().expect("made above");
                // The buffer has room for `len` bytes only: more is an error, not a write.
                decompressor
                    .decompress_to_buffer(stored, out)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })?;
        }
    }
    if out.len() != want {
        return Err(format!(
            "decompresses to {} bytes, the manifest says {len}",
            out.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect()
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_one_exact_frame() {
        let data = sample();
        for codec in [Codec::Gzip, Codec::Zstd] {
            let mut packed = Vec::new();
            compress(codec, codec.default_level(), &data, &mut packed).unwrap();
            let mut out = Vec::new();
            decompress(codec, &packed, data.len() as u64, &mut out).unwrap();
            assert_eq!(out, data, "{codec:?}");

            let len = data.len() as u64;
            let err = |stored: &[u8], len: u64| {
                let mut out = Vec::new();
                decompress(codec, stored, len, &mut out).unwrap_err()
            };
            // Declared shorter or longer than the data.
            assert!(!err(&packed, len - 1).is_empty());
            assert!(
                err(&packed, len + 1).contains("decompresses to"),
                "{codec:?}"
            );
            // A second member / frame, or garbage, after the first.
            let twice = [packed.clone(), packed.clone()].concat();
            assert!(err(&twice, len).contains("follow"), "{codec:?}");
            let garbage = [packed.clone(), b"junk".to_vec()].concat();
            assert!(err(&garbage, len).contains("follow"), "{codec:?}");
            // Cut short, and a flipped byte in the middle.
            assert!(!err(&packed[..packed.len() - 3], len).is_empty());
            let mut flipped = packed.clone();
            let middle = flipped.len() / 2;
            flipped[middle] ^= 0x55;
            let mut out = Vec::new();
            let result = decompress(codec, &flipped, len, &mut out);
            assert!(
                result.is_err() || out != data,
                "{codec:?}: a flip went unseen"
            );
        }
    }
}
