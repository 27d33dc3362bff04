//! Applying an image onto the NOS partition of an appliance disk, growing NOS into the
//! float when the image needs more room (the patent's Figure 7).

use std::io::{Read, Seek, Write};

use super::apply::apply_opened;
use super::container::open;
use super::{ApplyOptions, Error, Manifest};
use crate::disk::mbr::ALIGN;
use crate::disk::{ApplianceDisk, Role};
use crate::io::{SyncAll, ZeroRange};

/// The NOS size an image of `needed` bytes asks for: `None` when NOS already has the
/// room; `needed` rounded up to whole MiB when it fits in NOS plus the float; a
/// refusal otherwise. Pure.
pub fn nos_growth(needed: u64, nos_len: u64, float_len: u64) -> Result<Option<u64>, Error> {
    if needed <= nos_len {
        return Ok(None);
    }
    let room = nos_len.saturating_add(float_len);
    let grown = needed.div_ceil(ALIGN).checked_mul(ALIGN);
    match grown {
        Some(len) if len <= room => Ok(Some(len)),
        _ => Err(Error::TooBig { needed, room }),
    }
}

/// Makes NOS at least `needed` bytes long, growing it into the float with one MBR commit
/// when it is shorter; refuses (writing nothing) when NOS + float is too small. For a
/// caller that reads the image from the same disk's store: grow first, with the store
/// unmounted, then mount it and apply onto the NOS partition. Writes the MBR (and its
/// backup on the images partition) only when NOS grows.
pub fn grow_nos_for<D>(disk: &mut ApplianceDisk<D>, needed: u64) -> crate::Result<()>
where
    D: Read + Write + Seek + SyncAll,
{
    let (_, nos_len) = disk.range(Role::Nos);
    if let Some(new_len) = nos_growth(needed, nos_len, disk.float_len())? {
        log::info!(
            "growing NOS on {} from {} to {} into the float",
            disk.name(),
            crate::units::format_size(nos_len),
            crate::units::format_size(new_len)
        );
        disk.grow_nos(new_len)?;
        disk.commit()?;
    }
    Ok(())
}

/// Applies `image` onto the NOS partition of `disk`.
///
/// Checks the image (manifest, shape, whole) and that it fits NOS + float before any
/// write. If NOS is too small it grows into the float first, as its own MBR commit (the
/// other partitions keep their places, the system partition its state), so no data is
/// ever written past the end of NOS as the MBR on the disk describes it. Then streams
/// the chunks onto NOS as [`super::apply`] does. Writes to the disk.
pub fn apply_to_nos<R, D>(
    image: &mut R,
    disk: &mut ApplianceDisk<D>,
    options: &mut ApplyOptions,
) -> crate::Result<Manifest>
where
    R: Read + Seek,
    D: Read + Write + Seek + SyncAll + ZeroRange,
{
    let layout = open(image)?;
    grow_nos_for(disk, layout.manifest.source_size)?;
    let name = disk.name().to_string();
    let mut nos = disk
        .partition(Role::Nos)
        .map_err(|e| crate::Error::io("opening the NOS partition of", &name, e))?;
    Ok(apply_opened(image, layout, &mut nos, options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_only_when_needed_and_only_into_the_float() {
        const MIB: u64 = 1 << 20;
        assert_eq!(nos_growth(64 * MIB, 64 * MIB, 0).unwrap(), None);
        assert_eq!(
            nos_growth(96 * MIB, 64 * MIB, 64 * MIB).unwrap(),
            Some(96 * MIB)
        );
        assert_eq!(
            nos_growth(96 * MIB + 1, 64 * MIB, 64 * MIB).unwrap(),
            Some(97 * MIB)
        );
        assert_eq!(
            nos_growth(128 * MIB, 64 * MIB, 64 * MIB).unwrap(),
            Some(128 * MIB)
        );
        let err = nos_growth(128 * MIB + 1, 64 * MIB, 64 * MIB).unwrap_err();
        assert!(
            matches!(err, Error::TooBig { room, .. } if room == 128 * MIB),
            "{err}"
        );
    }
}
