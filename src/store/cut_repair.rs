//! What a power cut can leave in the images partition's FAT, made by hand, and the repair
//! pass that a mount of a dirty volume runs (vendor/fatfs/src/repair.rs): after it,
//! `fsck.vfat -n` finds nothing, and what each file held is still there or gone whole.

use std::io::Cursor;

use super::tests::fsck;
use super::Store;

/// FAT32's status byte in the boot sector; bit 0: dirty.
const FLAGS: usize = 0x41;
const EOC: u32 = 0x0FFF_FFFF;

/// Where a FAT32 volume keeps things, read from its boot sector.
struct Geometry {
    fat: usize,
    fat_len: usize,
    data: usize,
    cluster: usize,
    root: u32,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

impl Geometry {
    fn of(b: &[u8]) -> Geometry {
        let sector = u16_at(b, 11);
        let fat_len = u32_at(b, 36) as usize * sector;
        let fat = u16_at(b, 14) * sector;
        Geometry {
            fat,
            fat_len,
            data: fat + usize::from(b[16]) * fat_len,
            cluster: usize::from(b[13]) * sector,
            root: u32_at(b, 44),
        }
    }
    fn entry(&self, b: &[u8], copy: usize, c: u32) -> u32 {
        u32_at(b, self.fat + copy * self.fat_len + 4 * c as usize) & 0x0FFF_FFFF
    }
    fn set(&self, b: &mut [u8], copy: usize, c: u32, value: u32) {
        let at = self.fat + copy * self.fat_len + 4 * c as usize;
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn set_both(&self, b: &mut [u8], c: u32, value: u32) {
        self.set(b, 0, c, value);
        self.set(b, 1, c, value);
    }
    fn offset(&self, c: u32) -> usize {
        self.data + (c as usize - 2) * self.cluster
    }
    /// The byte offset of the root directory entry with this 8.3 name ("JOB        ").
    fn root_entry(&self, b: &[u8], name: &[u8; 11]) -> usize {
        let root = self.offset(self.root);
        (root..root + self.cluster)
            .step_by(32)
            .find(|&at| &b[at..at + 11] == name)
            .expect("the entry is in the root's first cluster")
    }
    /// The first free slot (end of the directory) in the root.
    fn root_end(&self, b: &[u8]) -> usize {
        let root = self.offset(self.root);
        (root..root + self.cluster)
            .step_by(32)
            .find(|&at| b[at] == 0)
            .unwrap()
    }
    fn first_cluster(&self, b: &[u8], entry: usize) -> u32 {
        (u16_at(b, entry + 20) << 16 | u16_at(b, entry + 26)) as u32
    }
    fn chain(&self, b: &[u8], first: u32) -> Vec<u32> {
        let mut chain = vec![first];
        while let next @ 2..0x0FFF_FFF8 = self.entry(b, 0, *chain.last().unwrap()) {
            chain.push(next);
        }
        chain
    }
    fn free_cluster(&self, b: &[u8]) -> u32 {
        (3..).find(|&c| self.entry(b, 0, c) == 0).unwrap()
    }
    fn last_free_cluster(&self, b: &[u8]) -> u32 {
        let end = u32::try_from(self.fat_len / 4).unwrap();
        (3..end).rev().find(|&c| self.entry(b, 0, c) == 0).unwrap()
    }
}

const JOB: &[u8] = b"kind = \"apply\"\n";

/// A FAT32 volume with a small file `job` and an 8-cluster file `a.tar` in its root,
/// cleanly unmounted; then `damage` makes what a cut left, and the dirty bit is set.
fn volume_with(damage: impl FnOnce(&Geometry, &mut Vec<u8>)) -> Cursor<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; 40 << 20]);
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .volume_label(*b"IMAGES     ");
    fatfs::format_volume(&mut disk, options).unwrap();
    let tar = tar_bytes(&Geometry::of(disk.get_ref()));
    let store = Store::open(&mut disk).unwrap();
    store.write("job", JOB).unwrap();
    store.write("a.tar", &tar).unwrap();
    store.unmount().unwrap();
    let bytes = disk.get_mut();
    damage(&Geometry::of(bytes), bytes);
    bytes[FLAGS] |= 1;
    disk
}

fn tar_bytes(g: &Geometry) -> Vec<u8> {
    (0..8 * g.cluster).map(|i| (i % 251) as u8).collect()
}

const JOB_NAME: &[u8; 11] = b"JOB        ";
const TAR_NAME: &[u8; 11] = b"A       TAR";

/// Mounts the damaged volume as reprov does and writes a file, after checking that fsck
/// sees the damage; then fsck finds nothing (the dirty bit included). Returns what `job`
/// and `a.tar` held after the repair.
fn repaired(mut disk: Cursor<Vec<u8>>, fsck_saw: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let before = fsck(disk.get_ref()).expect_err("fsck -n sees the damage");
    assert!(before.contains(fsck_saw), "fsck said: {before}");
    let store = Store::open(&mut disk).unwrap();
    let files = (store.read("job").unwrap(), store.read("a.tar").unwrap());
    store.write("log", b"R001\n").unwrap();
    store.unmount().unwrap();
    if let Err(report) = fsck(disk.get_ref()) {
        panic!("after the repair, fsck -n still finds: {report}");
    }
    assert_eq!(disk.get_ref()[FLAGS] & 1, 0, "the dirty bit is cleared");
    files
}

fn whole_tar() -> Vec<u8> {
    let disk = volume_with(|_, _| {});
    tar_bytes(&Geometry::of(disk.get_ref()))
}

#[test]
fn a_cluster_allocated_but_named_by_nothing_is_freed() {
    let disk = volume_with(|g, b| {
        let lost = g.free_cluster(b);
        g.set_both(b, lost, EOC);
    });
    let (job, tar) = repaired(disk, "unused cluster");
    assert_eq!(job.unwrap(), JOB);
    assert_eq!(tar.unwrap(), whole_tar());
}

#[test]
fn a_chain_that_reaches_a_free_cluster_ends_before_it_and_the_size_follows() {
    let disk = volume_with(|g, b| {
        let entry = g.root_entry(b, TAR_NAME);
        let chain = g.chain(b, g.first_cluster(b, entry));
        assert_eq!(chain.len(), 8);
        g.set_both(b, chain[7], 0); // the last allocation was lost, the link to it was not
    });
    let (job, tar) = repaired(disk, "free cluster");
    assert_eq!(job.unwrap(), JOB);
    let whole = whole_tar();
    assert_eq!(tar.unwrap(), whole[..whole.len() / 8 * 7]);
}

#[test]
fn an_entry_whose_first_cluster_is_free_becomes_empty() {
    let disk = volume_with(|g, b| {
        let entry = g.root_entry(b, JOB_NAME);
        let first = g.first_cluster(b, entry);
        g.set_both(b, first, 0); // the entry landed, the allocation did not
    });
    let (job, tar) = repaired(disk, "/job");
    assert_eq!(job.unwrap(), b"");
    assert_eq!(tar.unwrap(), whole_tar());
}

#[test]
fn two_entries_naming_one_chain_keep_the_first_and_lose_the_second() {
    // A rename cut short: the new entry landed and the old one's removal did not.
    let disk = volume_with(|g, b| {
        let entry = g.root_entry(b, JOB_NAME);
        let end = g.root_end(b);
        let copy: Vec<u8> = b[entry..entry + 32].to_vec();
        b[end..end + 32].copy_from_slice(&copy);
        b[end..end + 11].copy_from_slice(b"JOB     NEW");
    });
    let (job, tar) = repaired(disk, "/job");
    assert_eq!(job.unwrap(), JOB);
    assert_eq!(tar.unwrap(), whole_tar());
}

#[test]
fn a_size_past_the_chain_shrinks_and_a_chain_past_the_size_is_cut() {
    let disk = volume_with(|g, b| {
        let entry = g.root_entry(b, JOB_NAME);
        b[entry + 28..entry + 32].copy_from_slice(&100_000u32.to_le_bytes());
        // a.tar's size says 4 clusters: the last 4 were allocated by a write whose
        // size never landed.
        let entry = g.root_entry(b, TAR_NAME);
        let size = u32::try_from(4 * g.cluster).unwrap();
        b[entry + 28..entry + 32].copy_from_slice(&size.to_le_bytes());
    });
    let (job, tar) = repaired(disk, "/job");
    let job = job.unwrap();
    assert!(job.starts_with(JOB), "the job's bytes stay");
    let whole = whole_tar();
    assert_eq!(tar.unwrap(), whole[..whole.len() / 2]);
}

#[test]
fn a_second_fat_that_differs_is_made_a_copy_of_the_first() {
    let disk = volume_with(|g, b| {
        // Only the mirror's write landed, far from where the next allocation goes.
        let lost = g.last_free_cluster(b);
        assert!(lost > 1000);
        g.set(b, 1, lost, EOC);
    });
    let (job, tar) = repaired(disk, "FATs differ");
    assert_eq!(job.unwrap(), JOB);
    assert_eq!(tar.unwrap(), whole_tar());
}

#[test]
fn a_dirty_volume_with_nothing_to_repair_is_not_written_by_a_read() {
    let mut disk = volume_with(|_, _| {});
    let before = disk.get_ref().clone();
    let store = Store::open(&mut disk).unwrap();
    assert_eq!(store.read("job").unwrap().unwrap(), JOB);
    store.unmount().unwrap();
    assert!(disk.get_ref() == &before, "a read-only mount wrote");
}

#[test]
fn a_root_that_names_no_valid_cluster_is_refused_before_any_write() {
    let mut disk = volume_with(|g, b| g.set_both(b, g.root, 0));
    let before = disk.get_ref().clone();
    let err = Store::open(&mut disk).err().expect("refused");
    assert!(err.to_string().contains("root directory"), "{err}");
    assert!(disk.get_ref() == &before, "the refusal wrote");
}

#[test]
fn a_directory_cut_while_it_was_made_is_removed() {
    // The parent's entry and the allocation landed; the new cluster still holds old bytes.
    let disk = volume_with(|g, b| {
        let cluster = g.free_cluster(b);
        g.set_both(b, cluster, EOC);
        let at = g.offset(cluster);
        b[at..at + g.cluster].fill(b'A');
        let end = g.root_end(b);
        let mut entry = [0u8; 32];
        entry[..11].copy_from_slice(b"D          ");
        entry[11] = 0x10;
        entry[26..28].copy_from_slice(&u16::try_from(cluster).unwrap().to_le_bytes());
        b[end..end + 32].copy_from_slice(&entry);
    });
    let (job, tar) = repaired(disk, "/D");
    assert_eq!(job.unwrap(), JOB);
    assert_eq!(tar.unwrap(), whole_tar());
}
