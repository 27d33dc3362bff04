//! `reprov identity show|render|capture` as an operator runs them.

use std::process::Command;

const IDENTITY: &str = r#"hostname = "web-01"
dns = ["192.0.2.53"]

[system]
model = "PowerEdge R640"
serial = "CZ1234"

[[interface]]
mac = "52:54:00:12:34:56"
name = "eth0"
addresses = ["192.0.2.10/24"]
gateway4 = "192.0.2.1"
"#;

fn reprov(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(args)
        .output()
        .expect("running reprov")
}

#[test]
fn show_prints_the_canonical_form() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("identity");
    std::fs::write(&file, IDENTITY).unwrap();
    let out = reprov(&["identity", "show", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), IDENTITY);
}

#[test]
fn show_refuses_a_bad_file_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("identity");
    std::fs::write(&file, "hostname = \"web;reboot\"\n").unwrap();
    let out = reprov(&["identity", "show", "--file", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("line 1") && stderr.contains("hostname") && stderr.contains("';'"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn render_writes_the_files_under_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("identity");
    std::fs::write(&file, IDENTITY).unwrap();
    let root = dir.path().join("newos");
    let out = reprov(&[
        "identity",
        "render",
        "--file",
        file.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("etc/hostname"), "web-01\n");
    assert!(read("etc/hosts").contains("127.0.1.1\tweb-01\n"));
    let network = read("etc/systemd/network/00-reprov-525400123456.network");
    assert!(
        network.contains("MACAddress=52:54:00:12:34:56\n"),
        "{network}"
    );
    assert!(network.contains("Address=192.0.2.10/24\n"), "{network}");
    assert!(read("var/lib/cloud/seed/nocloud/meta-data").contains("local-hostname: \"web-01\"\n"));
    assert!(read("var/lib/cloud/seed/nocloud/network-config").contains("version: 2\n"));
    // It lists what it wrote.
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), 6, "{listed}");
}

/// Capture sees whatever this machine has; what it prints must read back as an identity.
#[test]
fn capture_prints_an_identity_that_show_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("captured");
    let out = reprov(&["identity", "capture", "--out", file.to_str().unwrap()]);
    // DMI's serial number is readable by root only: without root, capture must say so.
    let serial = "/sys/class/dmi/id/product_serial";
    if matches!(std::fs::read(serial), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied) {
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success() && stderr.contains(serial), "{stderr}");
        return;
    }
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("hostname = "), "{text}");
    let out = reprov(&["identity", "show", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
}
