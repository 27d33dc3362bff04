//! Unit tests of the appliance disk on in-memory disks.

use std::io::Cursor;

use super::mbr::{entry_offset, Entry, Mbr, PartType, ALIGN};
use super::{init, ApplianceDisk, Error, Role, Sizes};
use crate::store::MBR_BACKUP_DIR;

const MIB: u64 = ALIGN;
const LBA_PER_MIB: u32 = 2048;

/// A 12 MiB appliance disk: system 1–3 MiB (hidden), NOS 3–5 MiB (active), float
/// 5–7 MiB, images 7–11 MiB (FAT, label IMAGES), data 11–12 MiB. Boot code is 0xB0.
fn entries() -> [Entry; 4] {
    let e = |boot, t, start_mib: u32, mib: u32| Entry {
        boot,
        ptype: PartType(t),
        start_lba: start_mib * LBA_PER_MIB,
        sectors: mib * LBA_PER_MIB,
    };
    [
        e(0x00, 0x1C, 1, 2),
        e(0x80, 0x83, 3, 2),
        e(0x00, 0x0C, 7, 4),
        e(0x00, 0x0C, 11, 1),
    ]
}

fn disk_with(entries: [Entry; 4], label: &[u8; 11]) -> Cursor<Vec<u8>> {
    let mut bytes = vec![0u8; 12 << 20];
    let mut mbr = Mbr::empty(&[0xB0; 440], [0xDE, 0xAD, 0xBE, 0xEF]);
    for (e, slot) in entries.iter().zip(1..) {
        mbr.set(slot, *e);
    }
    bytes[..512].copy_from_slice(&mbr.to_bytes());
    let images = &mut bytes[7 << 20..11 << 20];
    fatfs::format_volume(
        Cursor::new(images),
        fatfs::FormatVolumeOptions::new().volume_label(*label),
    )
    .unwrap();
    Cursor::new(bytes)
}

fn fixture() -> Cursor<Vec<u8>> {
    disk_with(entries(), b"IMAGES     ")
}

fn open(disk: Cursor<Vec<u8>>) -> ApplianceDisk<Cursor<Vec<u8>>> {
    ApplianceDisk::open(disk, "disk.img").unwrap()
}

/// The MBR sector as it is on the in-memory disk.
fn sector(disk: &ApplianceDisk<Cursor<Vec<u8>>>) -> Vec<u8> {
    disk_bytes(disk)[..512].to_vec()
}

fn disk_bytes(disk: &ApplianceDisk<Cursor<Vec<u8>>>) -> &[u8] {
    disk.device().get_ref()
}

/// Indices where two sectors differ.
fn diff(a: &[u8], b: &[u8]) -> Vec<usize> {
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

#[test]
fn detects_the_roles_of_an_appliance_disk() {
    let disk = open(fixture());
    assert_eq!(disk.range(Role::System), (MIB, 2 * MIB));
    assert_eq!(disk.range(Role::Nos), (3 * MIB, 2 * MIB));
    assert_eq!(disk.range(Role::Images), (7 * MIB, 4 * MIB));
    assert_eq!(disk.range(Role::Data), (11 * MIB, MIB));
    assert_eq!(disk.float_len(), 2 * MIB);
    assert!(disk.entry(Role::System).ptype.is_hidden());
    assert!(disk.entry(Role::Nos).is_active());
    assert!(!disk.has_changes());
}

#[test]
fn refuses_disks_that_are_not_appliances_and_writes_nothing() {
    let with = |slot: usize, f: &dyn Fn(&mut Entry)| {
        let mut es = entries();
        f(&mut es[slot - 1]);
        disk_with(es, b"IMAGES     ")
    };
    let raw = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut d = fixture().into_inner();
        f(&mut d);
        Cursor::new(d)
    };
    let cases: Vec<(&str, Cursor<Vec<u8>>, &str)> =
        vec![
        (
            "blank",
            Cursor::new(vec![0u8; 12 << 20]),
            "no MBR boot signature 0x55AA",
        ),
        (
            "tiny",
            Cursor::new(vec![0u8; 100]),
            "less than one 512-byte sector",
        ),
        (
            "gpt",
            with(1, &|e| e.ptype = PartType(0xEE)),
            "slot 1 has type 0xEE: this is a GPT disk's protective MBR",
        ),
        (
            "system type",
            with(1, &|e| e.ptype = PartType(0x83)),
            "slot 1 has type 0x83, expected FAT32 LBA 0x0C or hidden 0x1C for the system partition",
        ),
        (
            "no NOS",
            with(2, &|e| *e = Entry { boot: 0, ptype: PartType(0), start_lba: 0, sectors: 0 }),
            "slot 2 is empty, expected a partition type for the NOS partition",
        ),
        (
            "images type",
            with(3, &|e| e.ptype = PartType(0x83)),
            "disk.img is not an appliance disk: \
             slot 3 has type 0x83, expected FAT32 LBA 0x0C for the images partition",
        ),
        (
            "hidden images",
            with(3, &|e| e.ptype = PartType(0x1C)),
            "slot 3 has type 0x1C, expected FAT32 LBA 0x0C",
        ),
        (
            "no data",
            with(4, &|e| e.ptype = PartType(0)),
            "slot 4 is empty, expected a partition type for the data partition",
        ),
        (
            "extended",
            with(4, &|e| e.ptype = PartType(0x05)),
            "slot 4 has type 0x05, an extended partition",
        ),
        (
            "zero length",
            with(4, &|e| e.sectors = 0),
            "slot 4 has zero length",
        ),
        (
            "misaligned",
            with(2, &|e| e.start_lba += 1),
            "slot 2 starts at sector 6145, not on a 1 MiB boundary",
        ),
        (
            "past the end",
            with(4, &|e| e.sectors += LBA_PER_MIB),
            "slot 4 ends at byte 13631488, past the end of the disk (12582912 bytes)",
        ),
        (
            "overlap",
            with(2, &|e| e.sectors = 5 * LBA_PER_MIB),
            "slots 2 and 3 overlap (sectors 6144..16384 and 14336..22528)",
        ),
        (
            "out of order",
            {
                let mut es = entries();
                es[0].start_lba = 5 * LBA_PER_MIB;
                es[1].start_lba = LBA_PER_MIB;
                disk_with(es, b"IMAGES     ")
            },
            "slot 2 starts at sector 2048, before slot 1",
        ),
        (
            "two active",
            with(1, &|e| e.boot = 0x80),
            "slots 1 and 2 are both active; exactly one partition may be active",
        ),
        (
            "bad boot flag",
            raw(&|d| d[entry_offset(3)] = 0x01),
            "slot 3 has boot flag 0x01, expected 0x00 or 0x80",
        ),
        (
            "images label",
            disk_with(entries(), b"DATA       "),
            "slot 3 has FAT volume label \"DATA\", expected \"IMAGES\"",
        ),
        (
            "images not FAT",
            raw(&|d| d[7 << 20..(7 << 20) + 512].fill(0)),
            "slot 3 holds no readable FAT file system",
        ),
    ];
    for (name, disk, expected) in cases {
        let before = disk.get_ref().clone();
        let mut device = disk;
        let err = match ApplianceDisk::open(&mut device, "disk.img") {
            Ok(_) => panic!("{name}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{name}: {err}");
        assert!(
            err.starts_with("disk.img is not an appliance disk: "),
            "{name}: {err}"
        );
        assert!(device.get_ref() == &before, "{name}: the disk changed");
    }
}

#[test]
fn edits_do_not_write_until_commit() {
    let mut disk = open(fixture());
    let before = disk_bytes(&disk).to_vec();
    disk.unhide_system();
    disk.activate(Role::System);
    disk.grow_nos(3 * MIB).unwrap();
    assert!(disk.has_changes());
    assert_eq!(disk.changes().len(), 2, "{:?}", disk.changes());
    assert!(disk_bytes(&disk) == &before[..]);
}

#[test]
fn hide_and_unhide_change_only_the_system_type_byte() {
    let mut disk = open(fixture());
    let original = sector(&disk);
    let type_byte = entry_offset(1) + 4;

    disk.unhide_system();
    disk.commit().unwrap();
    let unhidden = sector(&disk);
    assert_eq!(diff(&original, &unhidden), vec![type_byte]);
    assert_eq!(unhidden[type_byte], 0x0C);

    disk.hide_system();
    disk.commit().unwrap();
    let hidden = sector(&disk);
    assert_eq!(hidden, original);
    assert_eq!(hidden[type_byte], 0x1C);
}

#[test]
fn activate_leaves_exactly_one_partition_active() {
    let mut disk = open(fixture());
    let original = sector(&disk);
    disk.activate(Role::System);
    disk.commit().unwrap();
    let now = sector(&disk);
    assert_eq!(
        diff(&original, &now),
        vec![entry_offset(1), entry_offset(2)]
    );
    assert_eq!((now[entry_offset(1)], now[entry_offset(2)]), (0x80, 0x00));
    let active: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|r| disk.entry(*r).is_active())
        .collect();
    assert_eq!(active, vec![Role::System]);

    disk.activate(Role::Nos);
    disk.commit().unwrap();
    assert_eq!(sector(&disk), original);
}

#[test]
fn grow_nos_takes_from_the_float_only() {
    let mut disk = open(fixture());
    let others = [Role::System, Role::Images, Role::Data].map(|r| disk.range(r));
    disk.grow_nos(4 * MIB).unwrap();
    disk.commit().unwrap();
    let mut disk = open(disk.into_inner());
    assert_eq!(disk.range(Role::Nos), (3 * MIB, 4 * MIB));
    assert_eq!(disk.float_len(), 0);
    assert_eq!(
        [Role::System, Role::Images, Role::Data].map(|r| disk.range(r)),
        others
    );
    // The float is used up: even one more MiB is refused.
    let err = disk.grow_nos(5 * MIB).unwrap_err().to_string();
    assert!(err.contains("NOS can grow to at most 4.0 MiB"), "{err}");
}

#[test]
fn grow_nos_refusals() {
    let big = 1u64 << 42;
    for (new_len, expected) in [
        (MIB, "refusing to shrink NOS from 2.0 MiB to 1.0 MiB"),
        (
            5 * MIB,
            "NOS can grow to at most 4.0 MiB (4194304 bytes): the float after it holds 2.0 MiB",
        ),
        (3 * MIB + 512, "is not a multiple of 1 MiB"),
        (big, "more sectors than an MBR entry holds (u32)"),
    ] {
        let mut disk = open(fixture());
        let err = disk.grow_nos(new_len).unwrap_err();
        assert!(matches!(err, Error::Grow { .. }));
        let err = err.to_string();
        assert!(err.starts_with("growing NOS on disk.img: "), "{err}");
        assert!(err.contains(expected), "{new_len}: {err}");
        assert!(!disk.has_changes(), "{new_len}: the plan changed");
    }
}

#[test]
fn commit_backs_up_the_old_sector_on_the_images_partition() {
    let mut disk = open(fixture());
    let original = sector(&disk);
    disk.unhide_system();
    disk.commit().unwrap();
    disk.activate(Role::System);
    disk.commit().unwrap();
    let second = {
        let mut s = original.clone();
        s[entry_offset(1) + 4] = 0x0C;
        s
    };
    let store = disk.store().unwrap();
    let backups = store.list(MBR_BACKUP_DIR).unwrap();
    let names: Vec<&str> = backups.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["000001.mbr", "000002.mbr"]);
    assert_eq!(
        store.read("reprov/mbr/000001.mbr").unwrap().unwrap(),
        original
    );
    assert_eq!(
        store.read("reprov/mbr/000002.mbr").unwrap().unwrap(),
        second
    );
    store.unmount().unwrap();
}

#[test]
fn commit_without_changes_writes_nothing() {
    let mut disk = open(fixture());
    let before = disk_bytes(&disk).to_vec();
    disk.hide_system(); // already hidden
    disk.activate(Role::Nos); // already active
    disk.grow_nos(2 * MIB).unwrap(); // already that size
    assert!(!disk.has_changes());
    disk.commit().unwrap();
    assert!(disk_bytes(&disk) == &before[..]);
}

#[test]
fn commit_refuses_when_the_mbr_changed_since_open() {
    let mut other = fixture();
    let mut disk = open(fixture());
    disk.unhide_system();
    // Someone else rewrites the disk's MBR under the handle.
    other.get_mut()[entry_offset(2)] = 0x00;
    disk.device_mut().get_mut()[..512].copy_from_slice(&other.get_ref()[..512]);
    let before = disk_bytes(&disk).to_vec();
    let err = disk.commit().unwrap_err().to_string();
    assert!(err.contains("changed since it was opened"), "{err}");
    assert!(disk_bytes(&disk) == &before[..]);
}

fn sizes() -> Sizes {
    Sizes {
        system: 33 * MIB,
        nos: 2 * MIB,
        float: 3 * MIB,
        images: 33 * MIB,
        data: None,
        nos_type: PartType(0x83),
    }
}

#[test]
fn plan_lays_out_aligned_partitions_with_data_taking_the_rest() {
    let es = super::init::plan(&sizes(), 200 * MIB + 12345).unwrap();
    let mib = |e: &Entry| (e.start() / MIB, e.len() / MIB, e.ptype.0, e.boot);
    assert_eq!(
        es.iter().map(mib).collect::<Vec<_>>(),
        [
            (1, 33, 0x1C, 0x00),
            (34, 2, 0x83, 0x80),
            (39, 33, 0x0C, 0x00),
            (72, 128, 0x0C, 0x00),
        ]
    );
}

#[test]
fn plan_refusals() {
    let with = |f: &dyn Fn(&mut Sizes)| {
        let mut s = sizes();
        f(&mut s);
        s
    };
    for (sizes, disk_len, expected) in [
        (
            sizes(),
            100 * MIB,
            "the layout needs 110100480 bytes (105.0 MiB: 1 MiB for the MBR + system 33.0 MiB \
             + NOS 2.0 MiB + float 3.0 MiB + images 33.0 MiB + data at least 33.0 MiB) \
             but the disk holds 104857600 bytes",
        ),
        (
            with(&|s| s.data = Some(200 * MIB)),
            200 * MIB,
            "the layout needs 285212672 bytes",
        ),
        (
            with(&|s| s.nos = MIB + 4096),
            200 * MIB,
            "the NOS size 1052672 bytes is not a multiple of 1 MiB",
        ),
        (
            with(&|s| s.system = 32 * MIB),
            200 * MIB,
            "the system partition of 32.0 MiB is too small for FAT32 (at least 33.0 MiB)",
        ),
        (
            with(&|s| s.nos = 0),
            200 * MIB,
            "the NOS partition needs a size above zero",
        ),
        (
            with(&|s| s.nos_type = PartType(0x05)),
            200 * MIB,
            "NOS type 0x05 is not a partition type",
        ),
    ] {
        let err = super::init::plan(&sizes, disk_len).unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn init_lays_out_an_appliance_disk_keeping_the_boot_code() {
    let mut bytes = vec![0u8; 110 << 20];
    bytes[..440].fill(0xB0);
    let mut device = Cursor::new(bytes);
    init(&mut device, "disk.img", &sizes(), None, false).unwrap();
    assert_eq!(device.get_ref()[..440], [0xB0; 440]);
    let mut disk = ApplianceDisk::open(&mut device, "disk.img").unwrap();
    assert_eq!(disk.range(Role::Data), (72 * MIB, 38 * MIB));
    assert_eq!(disk.float_len(), 3 * MIB);
    for role in [Role::System, Role::Images, Role::Data] {
        let fs =
            fatfs::FileSystem::new(disk.partition(role).unwrap(), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32, "{role}");
        fs.unmount().unwrap();
    }

    // A second init is refused unless forced, and then installs new boot code.
    let before = device.get_ref().clone();
    let err = init(&mut device, "disk.img", &sizes(), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("it already has a partition table (slot 1 has type 0x1C); pass --force"),
        "{err}"
    );
    assert!(device.get_ref() == &before);
    let mut fat_disk = Cursor::new(vec![0u8; 1 << 20]);
    fatfs::format_volume(&mut fat_disk, fatfs::FormatVolumeOptions::new()).unwrap();
    let fat_before = fat_disk.get_ref().clone();
    let err = init(&mut fat_disk, "fat.img", &sizes(), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("it already has a FAT file system on the whole disk; pass --force"),
        "{err}"
    );
    assert!(fat_disk.get_ref() == &fat_before);
    let err = init(&mut device, "disk.img", &sizes(), Some(&[1; 441]), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the boot code is 441 bytes, more than the 440 an MBR holds"),
        "{err}"
    );
    assert!(device.get_ref() == &before);
    init(&mut device, "disk.img", &sizes(), Some(&[0xFA; 100]), true).unwrap();
    assert_eq!(device.get_ref()[..100], [0xFA; 100]);
    assert_eq!(device.get_ref()[100..440], [0; 340]);
    // The disk signature survives a re-init.
    assert_eq!(device.get_ref()[440..444], before[440..444]);

    // Forced over a whole-disk file system, init does not keep its boot sector's code.
    device.set_position(0);
    fatfs::format_volume(&mut device, fatfs::FormatVolumeOptions::new()).unwrap();
    assert_ne!(device.get_ref()[..3], [0; 3]);
    init(&mut device, "disk.img", &sizes(), None, true).unwrap();
    assert_eq!(device.get_ref()[..440], [0; 440]);
}
