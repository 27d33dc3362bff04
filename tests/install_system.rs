//! `reprov install-system` on a sparse disk image file, checked from the host with the
//! reference tools (sfdisk, fsck.vfat) and fatfs. Booting the result is tests/qemu_boot.rs.

mod common;

use common::fixtures::{kernel_version, layout_disk, reprov};
use common::qemu::qemu_or_skip;
use reprov::io::Window;
use std::io::Read;
use std::path::Path;

const MBR_BIN: &str = "/usr/lib/syslinux/mbr/mbr.bin";
const SYSTEM_START: u64 = 1 << 20;
const SYSTEM_LEN: u64 = 64 << 20;

fn read_system_file(disk: &Path, name: &str) -> Vec<u8> {
    let file = std::fs::File::open(disk).unwrap();
    let part = Window::new(file, SYSTEM_START, SYSTEM_LEN).unwrap();
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new()).unwrap();
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(name)
        .unwrap_or_else(|e| panic!("{name} on the system partition: {e}"))
        .read_to_end(&mut data)
        .unwrap();
    data
}

#[test]
fn install_system_puts_boot_code_syslinux_kernel_and_initramfs_on_the_disk() {
    // Same tools as the QEMU tests (syslinux, mtools, sfdisk), same skip rule.
    if qemu_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let disk_arg = disk.to_str().unwrap();
    let table_before = run_all(&["sfdisk", "--dump", disk_arg]);
    let initramfs = dir.path().join("fake-initrd.gz");
    std::fs::write(&initramfs, b"not really an initramfs").unwrap();
    let kernel = format!("/boot/vmlinuz-{}", kernel_version());

    reprov(&[
        "install-system",
        "--disk",
        disk_arg,
        "--kernel",
        &kernel,
        "--initramfs",
        initramfs.to_str().unwrap(),
    ]);

    let image = std::fs::read(&disk).unwrap();
    let mbr_bin = std::fs::read(MBR_BIN).unwrap();
    assert_eq!(&image[..440], &mbr_bin[..440], "MBR boot code");
    assert_eq!(
        run_all(&["sfdisk", "--dump", disk_arg]),
        table_before,
        "partition table"
    );
    assert_eq!(
        read_system_file(&disk, "vmlinuz"),
        std::fs::read(&kernel).unwrap()
    );
    assert_eq!(
        read_system_file(&disk, "initrd.gz"),
        b"not really an initramfs"
    );
    let config = String::from_utf8(read_system_file(&disk, "syslinux.cfg")).unwrap();
    assert!(config.contains("console=ttyS0,115200"), "{config}");
    // SYSLINUX's second stage, and its boot sector in the partition's first sector.
    assert!(!read_system_file(&disk, "ldlinux.sys").is_empty());
    let start = usize::try_from(SYSTEM_START).unwrap();
    let vbr = &image[start..start + 512];
    assert!(
        vbr.windows(8).any(|w| w == b"SYSLINUX"),
        "SYSLINUX boot sector"
    );

    let part = dir.path().join("system.img");
    let len = usize::try_from(SYSTEM_LEN).unwrap();
    std::fs::write(&part, &image[start..start + len]).unwrap();
    run_all(&["fsck.vfat", "-n", part.to_str().unwrap()]);
}

/// Runs a command from PATH and returns all its stdout.
fn run_all(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
