//! Reading a target back after an apply: does it hold what the image says?

use std::io::{Read, Seek, SeekFrom};

use super::{Error, Manifest};

/// Reads the first `manifest.source_size` bytes of `target` back and checks every
/// chunk against the manifest's CRC32, so a write the disk silently lost is caught
/// before the commit makes it bootable. Reads only.
pub fn check_target<T: Read + Seek>(manifest: &Manifest, target: &mut T) -> Result<(), Error> {
    let read_err = |offset| {
        move |source| Error::Target {
            what: "reading back",
            offset,
            source,
        }
    };
    target.seek(SeekFrom::Start(0)).map_err(read_err(0))?;
    let mut buf = Vec::new();
    for chunk in &manifest.chunks {
        let (offset, len) = (
            manifest.chunk_offset(chunk.index),
            manifest.chunk_len(chunk.index),
        );
        buf.resize(usize::try_from(len).expect("chunk sizes are bounded"), 0);
        target.read_exact(&mut buf).map_err(read_err(offset))?;
        let crc32 = crc32fast::hash(&buf);
        if crc32 != chunk.crc32 {
            return Err(Error::Target {
                what: "checking what was written at",
                offset,
                source: std::io::Error::other(format!(
                    "chunk {} reads back with CRC32 {crc32:08x}, the image says {:08x}",
                    chunk.index, chunk.crc32
                )),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{apply, create, ApplyOptions, CreateOptions};
    use std::io::Cursor;

    #[test]
    fn accepts_what_apply_wrote_and_catches_a_changed_byte() {
        let source: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut options = CreateOptions::new("t");
        options.chunk_size = 1 << 20;
        let mut image = Cursor::new(Vec::new());
        let manifest = create(&mut Cursor::new(source.clone()), &mut image, &options).unwrap();
        let mut target = Cursor::new(vec![0xAAu8; source.len()]);
        apply(&mut image, &mut target, &mut ApplyOptions::default()).unwrap();
        check_target(&manifest, &mut target).unwrap();

        target.get_mut()[2_500_000] ^= 1;
        let error = check_target(&manifest, &mut target)
            .unwrap_err()
            .to_string();
        assert!(error.contains("chunk 2 reads back with CRC32"), "{error}");
    }
}
