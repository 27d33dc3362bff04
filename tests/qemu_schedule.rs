//! The whole loop in QEMU, triggered from inside: appliance A runs
//! `reprov schedule apply ftp://10.0.2.2:PORT/images/B.tar` at boot, reboots into the
//! recovery, which applies B, and B comes up with A's hostname and address.
//!
//! The guest disk is the one of tests/qemu_boot.rs (system 64 MiB, NOS 64 MiB, float
//! 32 MiB, images 64 MiB, data 64 MiB), in normal operation with appliance A on NOS. A's
//! NOS also carries the static reprov, `etc/reprov/store.toml` naming the host's FTP
//! server, its password file, and `etc/reprov/at-boot`, which `qemu/appliance-init` runs.
//! B's NOS has no network file of its own: its address can only come from the identity
//! the recovery restores. The guest's network is QEMU's user network without
//! `restrict=on`, so it reaches the test's FTP server on the host's loopback (10.0.2.2);
//! it has no DNS and dials nothing else.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::fixtures::{self, A_ADDRESS, A_HOSTNAME};
use common::qemu::{qemu_or_skip, Qemu};
use common::servers::{Kind, Server, CANARY, USER};

const TIMEOUT: Duration = Duration::from_secs(300);

fn mtools(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn appliance_a_schedules_b_over_ftp_and_b_comes_up_as_a() {
    let Some(qemu) = qemu_or_skip() else { return };
    let server = Server::start(Kind::Ftp, &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();

    let nos_b = fixtures::nos_image(dir.path(), "B", "appliance-b", "10.0.2.16/24");
    mtools(&[
        "mdel",
        "-i",
        &path(&nos_b),
        "::/etc/systemd/network/10-eth0.network",
    ]);
    fixtures::reprov(&[
        "image",
        "create",
        "--from",
        &path(&nos_b),
        "--out",
        &path(&server.file("B.tar")),
        "--name",
        "B",
    ]);

    let reprov = fixtures::run(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-static"),
        &[],
    );
    let nos_a = fixtures::nos_image(dir.path(), "A", A_HOSTNAME, A_ADDRESS);
    let files = dir.path().join("a-files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(
        files.join("store.toml"),
        format!(
            "url = \"ftp://10.0.2.2:{}\"\ndirectory = \"images\"\nuser = \"{USER}\"\n\
             password_file = \"/tmp/store.pass\"\n",
            server.port
        ),
    )
    .unwrap();
    std::fs::write(files.join("store.pass"), format!("{CANARY}\n")).unwrap();
    // FAT has no modes: the password file goes to /tmp with mode 600 before use.
    std::fs::write(
        files.join("at-boot"),
        format!(
            "mkdir -p /tmp && cp /nos/etc/reprov/store.pass /tmp/store.pass && chmod 600 /tmp/store.pass\n\
             mac=$(cat /sys/class/net/eth0/address)\n\
             printf 'hostname = \"%s\"\\n\\n[[interface]]\\nmac = \"%s\"\\naddresses = [\"%s\"]\\n' \
             \"$(hostname)\" \"$mac\" \"$address\" >/tmp/identity\n\
             /nos/reprov schedule apply ftp://10.0.2.2:{}/images/B.tar \
             --config /nos/etc/reprov/store.toml --identity /tmp/identity\n",
            server.port
        ),
    )
    .unwrap();
    let image = path(&nos_a);
    mtools(&["mmd", "-i", &image, "::/etc/reprov"]);
    mtools(&["mcopy", "-i", &image, &reprov, "::/reprov"]);
    for name in ["store.toml", "store.pass", "at-boot"] {
        mtools(&[
            "mcopy",
            "-i",
            &image,
            &path(&files.join(name)),
            &format!("::/etc/reprov/{name}"),
        ]);
    }
    let disk = fixtures::recovery_disk(dir.path());
    fixtures::put_nos(&nos_a, &disk);

    let mut vm = Qemu::boot_with_nic(
        &qemu,
        &disk,
        &dir.path().join("serial.log"),
        "user,model=virtio-net-pci",
    );
    let a = vm.wait_for_line("APPLIANCE name=A", TIMEOUT);
    assert_eq!(
        a,
        format!("APPLIANCE name=A hostname={A_HOSTNAME} ip={A_ADDRESS}")
    );
    vm.wait_for_line("scheduled apply B.tar", TIMEOUT);
    eprintln!("A scheduled B: {:.1?}", vm.elapsed());
    vm.wait_for_line("reprov recovery: appliance disk", TIMEOUT);
    let b = vm.wait_for_line("APPLIANCE name=B", TIMEOUT);
    assert_eq!(
        b,
        format!("APPLIANCE name=B hostname={A_HOSTNAME} ip={A_ADDRESS}")
    );
    eprintln!("B up as A: {:.1?}", vm.elapsed());
    let status = vm.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "QEMU after B powered off: {status}");

    let console = vm.console();
    for code in ["R001", "R002", "R003", "R004", "R020", "R051", "R060"] {
        assert!(
            console.contains(&format!("[{code}]")),
            "{code} not on the console"
        );
    }
    assert!(!console.contains(CANARY), "the password is on the console");
    let bytes = std::fs::read(&disk).unwrap();
    // The password file was on A's NOS, which B replaced; it must be nowhere now.
    assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
}
