//! The trigger side in QEMU, from inside the appliances:
//! - A runs `reprov schedule apply ftp://10.0.2.100:PORT/images/B.tar` at boot, reboots into
//!   the recovery, which applies B, and B comes up with A's hostname and address;
//! - A runs `reprov schedule create`; the recovery packs A's NOS; back in A, `reprov
//!   after-boot` uploads it to the store named from model + serial (QEMU's SMBIOS);
//! - three appliances at once run `reprov agent` against one published desired state and
//!   all end on B, each with its own identity; `reprov fleet status` shows them.
//!
//! The guest disk is the one of tests/qemu_boot.rs (system 64 MiB, NOS 64 MiB, float
//! 32 MiB, images 64 MiB, data 64 MiB), in normal operation with appliance A on NOS. A's
//! NOS also carries the static reprov, `etc/reprov/store.toml` naming the host's FTP
//! server, its password file, and `etc/reprov/at-boot`, which `qemu/appliance-init` runs
//! after A has printed its APPLIANCE line. B's NOS has no network file of its own: its
//! address can only come from the identity the recovery restores. The guests' QEMU user
//! network has `restrict=on` and forwards only the test's FTP server: its control port and
//! fixed passive data ports on 10.0.2.100 lead to the same ports on the host's loopback
//! (tests/common/qemu.rs); nothing else is reachable, not even DNS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::fixtures::{self, A_ADDRESS, A_HOSTNAME};
use common::qemu::{qemu_or_skip, Qemu, GUEST_MODEL, HOST};
use common::servers::{Server, CANARY, USER};

const TIMEOUT: Duration = Duration::from_secs(300);

fn text(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

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

/// The static reprov the guests run (built once, cached by cargo).
fn static_reprov() -> String {
    fixtures::run(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-static"),
        &[],
    )
}

/// B's image on the store: B's NOS without a network file of its own.
fn put_b_on(server: &Server, dir: &Path) {
    let nos_b = fixtures::nos_image(dir, "B", "appliance-b", "10.0.2.99/24");
    mtools(&[
        "mdel",
        "-i",
        &text(&nos_b),
        "::/etc/systemd/network/10-eth0.network",
    ]);
    fixtures::reprov(&[
        "image",
        "create",
        "--from",
        &text(&nos_b),
        "--out",
        &text(&server.file("B.tar")),
        "--name",
        "B",
    ]);
}

/// An appliance disk in `dir` with A (`hostname`, `address`) on NOS, carrying reprov,
/// the store config (for the host's server, group `web`), the password file, and an
/// at-boot script: write the identity to /tmp/identity (hostname, eth0's MAC and address,
/// `serial`, and the DMI model), then run `command`. Boot it with the same DMI `serial`.
fn appliance(
    dir: &Path,
    server: &Server,
    hostname: &str,
    address: &str,
    serial: &str,
    command: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let nos = fixtures::nos_image(dir, "A", hostname, address);
    let files = dir.join("a-files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(
        files.join("store.toml"),
        format!(
            "url = \"ftp://{HOST}:{}\"\ndirectory = \"images\"\nuser = \"{USER}\"\n\
             password_file = \"/tmp/store.pass\"\ngroup = \"web\"\n",
            server.port
        ),
    )
    .unwrap();
    std::fs::write(files.join("store.pass"), format!("{CANARY}\n")).unwrap();
    // FAT has no modes: the password file goes to /tmp with mode 600 before use.
    let script = format!(
        "mkdir -p /tmp && cp /nos/etc/reprov/store.pass /tmp/store.pass && chmod 600 /tmp/store.pass\n\
         mac=$(cat /sys/class/net/eth0/address)\n\
         model=$(cat /sys/class/dmi/id/product_name)\n\
         printf 'hostname = \"%s\"\\n\\n[system]\\nmodel = \"%s\"\\nserial = \"%s\"\\n\\n[[interface]]\\nmac = \"%s\"\\naddresses = [\"%s\"]\\n' \
         \"$(hostname)\" \"$model\" \"{serial}\" \"$mac\" \"$address\" >/tmp/identity\n\
         R='/nos/reprov'\nC='--config /nos/etc/reprov/store.toml'\nI='--identity /tmp/identity'\n\
         {command}\n"
    );
    std::fs::write(files.join("at-boot"), script).unwrap();
    let image = text(&nos);
    mtools(&["mmd", "-i", &image, "::/etc/reprov"]);
    mtools(&["mcopy", "-i", &image, &static_reprov(), "::/reprov"]);
    for name in ["store.toml", "store.pass", "at-boot"] {
        mtools(&[
            "mcopy",
            "-i",
            &image,
            &text(&files.join(name)),
            &format!("::/etc/reprov/{name}"),
        ]);
    }
    let disk = fixtures::recovery_disk(dir);
    fixtures::put_nos(&nos, &disk);
    disk
}

fn assert_no_canary(what: &str, bytes: &[u8]) {
    let found = bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes());
    assert!(!found, "the password is in {what}");
}

#[test]
fn appliance_a_schedules_b_over_ftp_and_b_comes_up_as_a() {
    let Some(qemu) = qemu_or_skip() else { return };
    let server = Server::start_for_guests();
    let dir = tempfile::tempdir().unwrap();
    put_b_on(&server, dir.path());
    let command = format!(
        "$R schedule apply ftp://{HOST}:{}/images/B.tar $C $I",
        server.port
    );
    let disk = appliance(dir.path(), &server, A_HOSTNAME, A_ADDRESS, "SN-A", &command);

    let serial = dir.path().join("serial.log");
    let mut vm = Qemu::boot_reaching_host(&qemu, &disk, &serial, "SN-A", &server.ports());
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
    assert_no_canary("the console", console.as_bytes());
    // The password file was on A's NOS, which B replaced; it must be nowhere now.
    assert_no_canary("the disk", &std::fs::read(&disk).unwrap());
}

/// `schedule create` in A; the recovery packs NOS; back in A, `after-boot` uploads it as
/// MODEL_SERIAL.tar (from QEMU's SMBIOS) and closes the job, and A stops there. First, A
/// finds the FTP server forwarded and the host's loopback behind slirp (10.0.2.2) closed.
#[test]
fn appliance_a_creates_its_image_and_uploads_it_after_the_reboot() {
    let Some(qemu) = qemu_or_skip() else { return };
    let server = Server::start_for_guests();
    let dir = tempfile::tempdir().unwrap();
    let port = server.port;
    let command = format!(
        "$R after-boot $C $I\n\
         if $R log --disk /dev/vda | grep -q R071; then echo CREATE-UPLOADED; else \
         greeting=$(nc -w 5 {HOST} {port} </dev/null | head -c 3); \
         if nc -w 5 10.0.2.2 {port} </dev/null >/dev/null 2>&1; then host=open; else host=closed; fi; \
         echo \"NET server=$greeting host=$host\"; \
         $R schedule create $I; fi"
    );
    let disk = appliance(dir.path(), &server, A_HOSTNAME, A_ADDRESS, "SN42", &command);
    let serial = dir.path().join("serial.log");
    let mut vm = Qemu::boot_reaching_host(&qemu, &disk, &serial, "SN42", &server.ports());
    let net = vm.wait_for_line("NET server=", TIMEOUT);
    assert_eq!(net, "NET server=220 host=closed");
    let name = format!("{GUEST_MODEL}_SN42.tar");
    vm.wait_for_line(&format!("scheduled create {name}"), TIMEOUT);
    vm.wait_for_line("[R036]", TIMEOUT);
    vm.wait_for_line("CREATE-UPLOADED", TIMEOUT);
    eprintln!("created and uploaded: {:.1?}", vm.elapsed());
    assert!(vm.wait_exit(Duration::from_secs(60)).success());

    let uploaded = server.file(&name);
    let verified = fixtures::reprov(&["image", "verify", &text(&uploaded)]);
    eprintln!("{verified}");
    let status = std::fs::read_to_string(server.file("fleet/status/SN42.toml")).unwrap();
    assert!(status.contains("step = \"R071\""), "{status}");
    assert_no_canary("the console", vm.console().as_bytes());
}

/// Three appliances at once (as many as this 2-core machine bears in a few minutes),
/// each with its own serial, host name and address, pick up one desired state published
/// for their group; each schedules B, reports, reboots into the recovery, and B comes up
/// with that appliance's identity.
#[test]
fn three_appliances_follow_one_published_desired_state() {
    let Some(qemu) = qemu_or_skip() else { return };
    let server = Server::start_for_guests();
    let dir = tempfile::tempdir().unwrap();
    put_b_on(&server, dir.path());
    let host_config = server.config(Some("web"));
    let out = fixtures::reprov(&[
        "fleet",
        "publish",
        "--group",
        "web",
        "--image",
        "B.tar",
        "--config",
        &text(&host_config),
    ]);
    assert!(out.contains("generation 1"), "{out}");

    let servers: Vec<(String, String, PathBuf)> = (1..=3)
        .map(|n| {
            let host = format!("web-0{n}");
            let address = format!("10.0.2.{}/24", 20 + n);
            let disk = appliance(
                &dir.path().join(&host),
                &server,
                &host,
                &address,
                &format!("SN{n}"),
                "$R agent $C $I",
            );
            (host, address, disk)
        })
        .collect();
    let mut vms: Vec<Qemu> = servers
        .iter()
        .enumerate()
        .map(|(n, (host, _, disk))| {
            let serial = dir.path().join(format!("{host}.serial.log"));
            let dmi_serial = format!("SN{}", n + 1);
            Qemu::boot_reaching_host(&qemu, disk, &serial, &dmi_serial, &server.ports())
        })
        .collect();
    for (vm, (host, address, _)) in vms.iter_mut().zip(&servers) {
        let b = vm.wait_for_line("APPLIANCE name=B", TIMEOUT * 2);
        assert_eq!(b, format!("APPLIANCE name=B hostname={host} ip={address}"));
        eprintln!("{host} is B: {:.1?}", vm.elapsed());
        assert!(vm.wait_exit(Duration::from_secs(60)).success());
        assert_no_canary("a console", vm.console().as_bytes());
    }

    let out = Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(["fleet", "status", "--config", &text(&host_config)])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    eprintln!("{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (n, (row, (host, _, _))) in rows.iter().zip(&servers).enumerate() {
        // Reported by each agent just before its reboot into the recovery.
        let serial = format!("SN{}", n + 1);
        let want = [serial.as_str(), host.as_str(), "B.tar", "pending", "R004"];
        assert_eq!(row[..5], want, "{table}");
    }
    for (_, _, disk) in &servers {
        assert_no_canary("a disk", &std::fs::read(disk).unwrap());
    }
}
