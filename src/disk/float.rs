//! What the float holds. The patent's utility checks the float's usage before it grows
//! NOS over it: bytes that are not zero there may be anybody's data (an old partition,
//! a file system someone made by hand), and growing NOS over them hands them to the new
//! OS to overwrite. So growth reads every byte of the float it takes — no sampling — and
//! grows only over zeros unless the operator says otherwise.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use crate::units::format_size;

/// Bytes per unit of the scan: a sector, the smallest thing anybody writes.
const SECTOR: usize = 512;
/// Bytes read per request.
const BLOCK: usize = 1 << 20;
/// Ranges of data kept for the message; the rest are only counted.
const RANGES_SHOWN: usize = 3;

/// The sectors of a region that are not all zero.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FloatUsage {
    /// Bytes in sectors holding any non-zero byte.
    pub nonzero: u64,
    /// The first ranges of such sectors, `[start, end)` from the region's start.
    pub ranges: Vec<(u64, u64)>,
    /// How many ranges there are in all.
    pub range_count: u64,
}

impl FloatUsage {
    /// Nothing but zeros.
    pub fn is_empty(&self) -> bool {
        self.nonzero == 0
    }
}

impl fmt::Display for FloatUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("all zero");
        }
        write!(
            f,
            "{} of non-zero data at float offsets ",
            format_size(self.nonzero)
        )?;
        let shown: Vec<String> = self
            .ranges
            .iter()
            .map(|(start, end)| format!("{start:#x}–{end:#x}"))
            .collect();
        f.write_str(&shown.join(", "))?;
        let more = self.range_count - self.ranges.len() as u64;
        if more > 0 {
            write!(f, " and {more} more ranges")?;
        }
        Ok(())
    }
}

/// Reads `len` bytes of `device` from `start` and says which sectors hold data.
pub fn scan<D: Read + Seek>(device: &mut D, start: u64, len: u64) -> io::Result<FloatUsage> {
    device.seek(SeekFrom::Start(start))?;
    let mut usage = FloatUsage::default();
    let mut open: Option<(u64, u64)> = None;
    let mut buf = vec![0u8; BLOCK];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from((len - at).min(BLOCK as u64)).expect("at most BLOCK");
        device.read_exact(&mut buf[..want])?;
        for (i, sector) in buf[..want].chunks(SECTOR).enumerate() {
            if sector.iter().all(|b| *b == 0) {
                continue;
            }
            let from = at + (i * SECTOR) as u64;
            let to = from + sector.len() as u64;
            usage.nonzero += sector.len() as u64;
            open = match open {
                Some((s, e)) if e == from => Some((s, to)),
                Some(done) => {
                    usage.close(done);
                    Some((from, to))
                }
                None => Some((from, to)),
            };
        }
        at += want as u64;
    }
    if let Some(done) = open {
        usage.close(done);
    }
    Ok(usage)
}

impl FloatUsage {
    fn close(&mut self, range: (u64, u64)) {
        self.range_count += 1;
        if self.ranges.len() < RANGES_SHOWN {
            self.ranges.push(range);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn zeros_are_empty_and_data_is_found_to_the_sector() {
        let mut disk = vec![0u8; 3 * BLOCK + 1000];
        assert!(scan(&mut Cursor::new(&disk), 0, disk.len() as u64)
            .unwrap()
            .is_empty());
        disk[100] = 1; // sector 0
        disk[BLOCK - 1] = 1; // the last sector of the first block …
        disk[BLOCK] = 1; // … and the first of the next: one range across the boundary
        disk[3 * BLOCK + 999] = 1; // the short last sector
        let usage = scan(&mut Cursor::new(&disk), 0, disk.len() as u64).unwrap();
        let b = BLOCK as u64;
        assert_eq!(
            usage.ranges,
            vec![(0, 512), (b - 512, b + 512), (3 * b + 512, 3 * b + 1000)]
        );
        assert_eq!(usage.nonzero, 512 + 1024 + 488);
        assert_eq!(usage.range_count, 3);
        // From an offset: only what lies in the region counts.
        let usage = scan(&mut Cursor::new(&disk), 512, b - 1024).unwrap();
        assert!(usage.is_empty(), "{usage}");
    }

    #[test]
    fn the_message_names_the_amount_and_the_first_ranges() {
        let mut disk = vec![0u8; 64 * 1024];
        for i in 0..5 {
            disk[i * 4096] = 0xff;
        }
        let usage = scan(&mut Cursor::new(&disk), 0, disk.len() as u64).unwrap();
        assert_eq!(
            usage.to_string(),
            "2.5 KiB of non-zero data at float offsets 0x0–0x200, 0x1000–0x1200, 0x2000–0x2200 \
             and 2 more ranges"
        );
    }
}
