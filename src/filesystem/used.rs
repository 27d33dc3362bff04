//! Which blocks of a partition hold something: one bit per block.

/// The blocks of a partition that hold data, one bit per block of `block_size` bytes
/// from byte 0. Bytes past the last block are unused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedBlocks {
    block_size: u64,
    blocks: u64,
    bits: Vec<u64>,
}

impl UsedBlocks {
    /// `blocks` blocks of `block_size` bytes (a power of two), none used yet.
    pub fn new(block_size: u64, blocks: u64) -> UsedBlocks {
        assert!(block_size.is_power_of_two(), "block size {block_size}");
        let words = usize::try_from(blocks.div_ceil(64)).expect("a bitmap fits memory");
        UsedBlocks {
            block_size,
            blocks,
            bits: vec![0; words],
        }
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Marks blocks `[first, first + count)` used (clipped to the map).
    pub fn mark(&mut self, first: u64, count: u64) {
        let end = first.saturating_add(count).min(self.blocks);
        let mut block = first;
        while block < end {
            let (word, bit) = ((block / 64) as usize, block % 64);
            if bit == 0 && end - block >= 64 {
                self.bits[word] = u64::MAX;
                block += 64;
            } else {
                self.bits[word] |= 1 << bit;
                block += 1;
            }
        }
    }

    /// Marks every byte of `[offset, offset + len)` used (whole blocks).
    pub fn mark_bytes(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / self.block_size;
        let last = offset.saturating_add(len - 1) / self.block_size;
        self.mark(first, last - first + 1);
    }

    pub fn is_used(&self, block: u64) -> bool {
        block < self.blocks && self.bits[(block / 64) as usize] & (1 << (block % 64)) != 0
    }

    /// Bytes in used blocks.
    pub fn used_bytes(&self) -> u64 {
        let ones: u64 = self.bits.iter().map(|w| u64::from(w.count_ones())).sum();
        ones * self.block_size
    }

    /// The used parts of bytes `[offset, offset + len)`, as (offset, length) runs in
    /// order, adjacent blocks merged. Empty when nothing there is used.
    pub fn used_runs(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let end = offset.saturating_add(len);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        if len == 0 {
            return runs;
        }
        let mut block = offset / self.block_size;
        let last = (end - 1) / self.block_size;
        while block <= last && block < self.blocks {
            let word = self.bits[(block / 64) as usize];
            // A whole empty word: skip it at once.
            if block % 64 == 0 && word == 0 {
                block += 64;
                continue;
            }
            if word & (1 << (block % 64)) != 0 {
                let start = (block * self.block_size).max(offset);
                let stop = ((block + 1) * self.block_size).min(end);
                match runs.last_mut() {
                    Some((s, l)) if *s + *l == start => *l += stop - start,
                    _ => runs.push((start, stop - start)),
                }
            }
            block += 1;
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_finds_runs() {
        let mut map = UsedBlocks::new(4096, 300);
        map.mark(0, 2);
        map.mark(5, 70);
        map.mark(299, 10); // clipped at the end
        assert!(map.is_used(0) && map.is_used(1) && !map.is_used(2));
        assert!(map.is_used(74) && !map.is_used(75) && map.is_used(299));
        assert!(!map.is_used(300));
        assert_eq!(map.used_bytes(), (2 + 70 + 1) * 4096);
        assert_eq!(
            map.used_runs(0, 300 * 4096),
            vec![(0, 2 * 4096), (5 * 4096, 70 * 4096), (299 * 4096, 4096)]
        );
        // A window that cuts blocks in the middle, and one with nothing used.
        assert_eq!(map.used_runs(4096 + 100, 10_000), vec![(4196, 4096 - 100)]);
        assert_eq!(map.used_runs(80 * 4096, 100 * 4096), vec![]);
        // Past the end of the map: nothing used.
        assert_eq!(map.used_runs(400 * 4096, 4096), vec![]);
    }

    #[test]
    fn marks_bytes_as_whole_blocks() {
        let mut map = UsedBlocks::new(1024, 10);
        map.mark_bytes(1000, 30);
        assert!(map.is_used(0) && map.is_used(1) && !map.is_used(2));
        map.mark_bytes(5000, 0);
        assert!(!map.is_used(4));
    }
}
