//! Whole-machine boots in QEMU: the MBR boot code starts whichever partition is active.
//!
//! The guest disk (`reprov layout init`, then `reprov install-system`), 512-byte sectors:
//!
//! | slot | role   | start (MiB) | size (MiB) | type | holds                                   |
//! |------|--------|-------------|------------|------|-----------------------------------------|
//! | MBR  |        | 0           |            |      | SYSLINUX mbr.bin: boots the active slot |
//! | 1    | system | 1           | 64         | 0x0C | SYSLINUX, vmlinuz, recovery initrd.gz   |
//! | 2    | NOS    | 65          | 64         | 0x0C | nothing, or appliance A (qemu/make-nos) |
//! | —    | float  | 129         | 32         |      | unallocated                             |
//! | 3    | images | 161         | 64         | 0x0C | FAT32 "IMAGES", empty (no job)          |
//! | 4    | data   | 225         | 64         | 0x0C | FAT32 "DATA", empty                     |
//!
//! Recovery test: system visible (0x0C) and active. Appliance test: system hidden (0x1C),
//! NOS active. The guest sees it as /dev/vda (virtio); eth0 is virtio-net on QEMU's user network
//! (restricted: no way out). Each boot costs about 6–15 s under TCG.

mod common;

use common::fixtures::{self, A_ADDRESS, A_HOSTNAME};
use common::qemu::{qemu_or_skip, Qemu};
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn system_partition_active_boots_the_recovery_which_waits_without_a_job_in_debug() {
    let Some(qemu) = qemu_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = fixtures::recovery_disk_with(dir.path(), &["--debug"]);

    let mut vm = Qemu::boot(&qemu, &disk, &dir.path().join("serial.log"));
    // `reprov.debug` on the kernel command line turns debug lines on.
    vm.wait_for_line(
        "reprov recovery: debug: /etc/reprov/modules.order lists",
        BOOT_TIMEOUT,
    );
    let found = vm.wait_for_line("reprov recovery: appliance disk:", BOOT_TIMEOUT);
    assert_eq!(found, "reprov recovery: appliance disk: /dev/vda");
    let waiting = vm.wait_for_line("no job", BOOT_TIMEOUT);
    assert_eq!(
        waiting,
        "reprov recovery: no job on the images partition; system partition stays active; waiting"
    );
    eprintln!(
        "boot into recovery, to the no-job message: {:.1?}",
        vm.elapsed()
    );
    // PID 1 must keep running: a returned init would panic the kernel.
    std::thread::sleep(Duration::from_secs(2));
    vm.kill();
}

#[test]
fn nos_active_boots_appliance_a_with_its_identity() {
    let Some(qemu) = qemu_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = fixtures::recovery_disk(dir.path());
    let nos = fixtures::nos_image(dir.path(), "A", A_HOSTNAME, A_ADDRESS);
    fixtures::put_nos(&nos, &disk);

    let mut vm = Qemu::boot(&qemu, &disk, &dir.path().join("serial.log"));
    let line = vm.wait_for_line("APPLIANCE", BOOT_TIMEOUT);
    assert_eq!(
        line,
        format!("APPLIANCE name=A hostname={A_HOSTNAME} ip={A_ADDRESS}")
    );
    eprintln!(
        "boot into appliance A, to its APPLIANCE line: {:.1?}",
        vm.elapsed()
    );
    let status = vm.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "QEMU after the appliance powered off: {status}"
    );
}
