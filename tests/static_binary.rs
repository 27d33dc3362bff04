//! The recovery initramfs has no dynamic loader: reprov must be one static binary. The
//! same binary runs on the appliances, where it must still resolve the store's host name.

mod common;

use common::servers::{Server, PROTOCOLS};
use std::process::Command;

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `scripts/build-static`: the static binary's path.
fn build_static() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-static");
    let built = Command::new(script)
        .output()
        .expect("running scripts/build-static");
    assert!(
        built.status.success(),
        "scripts/build-static failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    String::from_utf8(built.stdout)
        .expect("path is UTF-8")
        .trim()
        .to_string()
}

#[test]
fn build_static_makes_a_statically_linked_executable() {
    let path = &build_static();

    let file = output("file", &["-b", path]);
    assert!(file.contains("statically linked"), "file says: {file}");
    let ldd = output("ldd", &[path]);
    assert!(ldd.contains("not a dynamic executable"), "ldd says: {ldd}");
    let version = output(path, &["version"]);
    assert!(
        version.starts_with("reprov "),
        "reprov version says: {version}"
    );
}

/// glibc resolves through /etc/hosts and DNS inside the static binary (no NSS module to
/// load): a store named by host name works over FTP, HTTP, FTPS and HTTPS (rustls and
/// ring linked statically).
#[test]
fn the_static_binary_fetches_from_a_store_named_by_host_name() {
    let reprov = build_static();
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &[]);
        std::fs::write(server.file("hello.txt"), "hello from the store\n").unwrap();
        let by_address = std::fs::read_to_string(server.config(None)).unwrap();
        assert!(by_address.contains("://127.0.0.1:"), "{by_address}");
        let config = server.dir.path().join("by-name.toml");
        std::fs::write(
            &config,
            by_address.replace("://127.0.0.1:", "://localhost:"),
        )
        .unwrap();
        let out = server.dir.path().join("hello.txt");

        let fetched = Command::new(&reprov)
            .args(["fetch", "hello.txt", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            fetched.status.success(),
            "{protocol:?}: {}",
            String::from_utf8_lossy(&fetched.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "hello from the store\n"
        );
    }
}
