//! FTPS and HTTPS stores against a network that lies: a server whose certificate another
//! CA issued, or that names another host, or that speaks no TLS at all, is refused before
//! the login is sent, with a message that says why and what to do, and nothing is fetched
//! or uploaded. (Fetching, resuming and uploading over TLS are in tests/transfer.rs,
//! which runs every case over FTP, HTTP, FTPS and HTTPS.)

use reprov::transfer::{self, DirPlace, Options, Source, StoreConfig};
use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

mod common;
use common::servers::{Kind, Server, TestCa, CANARY, KINDS};

fn quick() -> Options {
    Options {
        attempts: 3,
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

fn fetch(source: &Source) -> (String, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let message = transfer::download(
        source,
        &DirPlace::new(out.path()),
        "B.img",
        &quick(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    (message, out)
}

fn upload(config: &StoreConfig) -> String {
    transfer::upload(
        &mut Cursor::new(vec![7u8; 4096]),
        4096,
        "A.img",
        config,
        &quick(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string()
}

/// Checks a refusal: it says `want`, was not retried, carries no password; nothing was
/// written locally or on the server, and the server never saw a request or a login.
fn assert_refused(server: &Server, message: &str, want: &str, out: Option<&Path>) {
    assert!(message.contains(want), "{message}\nwanted: {want}");
    assert!(
        !message.contains("attempts"),
        "a refusal is not retried: {message}"
    );
    assert!(!message.contains(CANARY), "the password leaked: {message}");
    if let Some(out) = out {
        assert_eq!(std::fs::read_dir(out).unwrap().count(), 0, "{message}");
    }
    assert!(!server.file("A.img").exists() && !server.file("A.img.part").exists());
    assert_eq!(server.events(), Vec::<String>::new(), "{message}");
}

/// A TLS server with a certificate for `alt_name` from a CA of its own, holding B.img.
fn serving(kind: Kind, alt_name: &str) -> Server {
    let server = Server::start_tls(kind, TestCa::new("reprov test CA"), alt_name, &[]);
    std::fs::write(server.file("B.img"), [1u8; 4096]).unwrap();
    server
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let other = TestCa::new("someone else's CA");
    for kind in KINDS {
        let server = serving(kind, "IP:127.0.0.1");
        let config = server.config_trusting(Some(&other.certificate()));
        let (message, out) = fetch(&config.source("B.img").unwrap());
        assert_refused(&server, &message, "certificate", Some(out.path()));
        assert!(message.contains(&server.url("B.img")), "{message}");
        assert_refused(&server, &upload(&config), "certificate", None);
    }
}

/// Without `ca_file`, the system's CA certificates decide, and they know nothing of a
/// private CA.
#[test]
fn without_ca_file_only_the_system_cas_are_trusted() {
    for kind in KINDS {
        let server = serving(kind, "IP:127.0.0.1");
        let config = server.config_trusting(None);
        let (message, out) = fetch(&config.source("B.img").unwrap());
        let want = match Path::new(transfer::SYSTEM_ROOTS).exists() {
            true => "certificate".to_string(),
            false => format!("CA certificates {}", transfer::SYSTEM_ROOTS),
        };
        assert_refused(&server, &message, &want, Some(out.path()));
    }
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    for kind in KINDS {
        let server = serving(kind, "DNS:store.example.org,IP:10.0.2.2");
        let (message, out) = fetch(&server.source("B.img"));
        assert_refused(&server, &message, "certificate", Some(out.path()));
        assert!(
            message.contains("127.0.0.1") && message.contains("not valid for"),
            "the message names the host the certificate does not cover: {message}"
        );
    }
}

/// An `ftps://` or `https://` URL whose server answers in the clear (an attacker who
/// strips TLS, or a misconfigured store): refused, and the password is never sent.
#[test]
fn a_server_without_tls_is_refused_and_gets_no_password() {
    for kind in KINDS {
        let server = Server::start(kind, &[]);
        std::fs::write(server.file("B.img"), [1u8; 4096]).unwrap();
        let scheme = match kind {
            Kind::Ftp => "ftps",
            Kind::Http => "https",
        };
        let text = format!(
            "url = \"{scheme}://127.0.0.1:{}\"\ndirectory = \"images\"\nuser = \"reprov\"\n\
             password_file = \"{}\"\n",
            server.port,
            server.dir.path().join("store.pass").display()
        );
        let config = StoreConfig::parse(&text, "test").unwrap();
        let (message, out) = fetch(&config.source("B.img").unwrap());
        assert_refused(&server, &message, "TLS", Some(out.path()));
    }
}

/// A `ca_file` that is missing or holds no certificate: the message names the file and
/// says what to do.
#[test]
fn a_bad_ca_file_is_named() {
    let server = serving(Kind::Http, "IP:127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, want) in [
        (&missing, "cannot be read"),
        (&empty, "holds no certificate"),
    ] {
        let config = server.config_trusting(Some(file));
        let (message, out) = fetch(&config.source("B.img").unwrap());
        assert_refused(&server, &message, want, Some(out.path()));
        assert!(message.contains(&file.display().to_string()), "{message}");
    }
}
