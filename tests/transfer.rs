//! Fetching and uploading against real servers on loopback, started and stopped by each
//! test: pyftpdlib for FTP and a small Python HTTP server (both in tests/servers/, each
//! with switches to cut a transfer after N bytes or rewrite the file at the cut).
//!
//! Every server's user has the password CANARY; every error message and CLI output line
//! here is checked not to carry it.

use reprov::transfer::{
    self, part_names, DirPlace, Options, Place, Progress, Source, StoreConfig, StorePlace,
};
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::servers::{write_password, Kind, Protocol, Server, CANARY, PROTOCOLS};

const SIZE: usize = 300_000;
const CUT: usize = 100_000;

/// Bytes that differ at every offset, so a splice or shift cannot go unseen.
fn image(size: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn quick() -> Options {
    Options {
        attempts: 3,
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

fn fetch_into(dir: &Path, source: &Source, options: &Options) -> Result<u64, transfer::Error> {
    transfer::download(source, &DirPlace::new(dir), "B.img", options, &mut |_| {})
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn assert_clean(message: &str) {
    assert!(!message.contains(CANARY), "the password leaked: {message}");
}

#[test]
fn fetches_a_whole_file_and_leaves_only_it() {
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &[]);
        let data = image(SIZE);
        std::fs::write(server.file("B.img"), &data).unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        let size = transfer::download(
            &server.source("B.img"),
            &DirPlace::new(out.path()),
            "B.img",
            &quick(),
            &mut |p: Progress| seen.push(p),
        )
        .unwrap();
        assert_eq!(size, SIZE as u64, "{protocol:?}");
        assert_eq!(std::fs::read(out.path().join("B.img")).unwrap(), data);
        assert_eq!(
            names_in(out.path()),
            ["B.img"],
            "{protocol:?}: no .part left"
        );
        let last = seen.last().unwrap();
        assert_eq!((last.done, last.total), (SIZE as u64, Some(SIZE as u64)));
    }
}

#[test]
fn a_cut_connection_is_resumed_from_where_it_broke() {
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &["--cut-after", &CUT.to_string()]);
        let data = image(SIZE);
        std::fs::write(server.file("B.img"), &data).unwrap();
        let out = tempfile::tempdir().unwrap();
        fetch_into(out.path(), &server.source("B.img"), &quick()).unwrap();
        assert_eq!(std::fs::read(out.path().join("B.img")).unwrap(), data);
        let resumed = match server.kind {
            Kind::Ftp => format!("REST {CUT}"),
            Kind::Http => format!("range=bytes={CUT}-"),
        };
        let events = server.events();
        let cut = events.iter().position(|e| e == &format!("CUT {CUT}"));
        let resume = events.iter().position(|e| e.contains(&resumed));
        assert!(cut.is_some() && resume > cut, "{protocol:?}: {events:?}");
    }
}

#[test]
fn a_later_call_resumes_what_an_earlier_one_left() {
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &["--cut-after", &CUT.to_string()]);
        let data = image(SIZE);
        std::fs::write(server.file("B.img"), &data).unwrap();
        let out = tempfile::tempdir().unwrap();
        let once = Options {
            attempts: 1,
            ..quick()
        };
        let message = fetch_into(out.path(), &server.source("B.img"), &once)
            .unwrap_err()
            .to_string();
        assert!(message.contains("after 1 attempts"), "{message}");
        assert_clean(&message);
        // Only the partial file and its sidecar: nothing under the final name.
        let (part, meta) = part_names("B.img");
        assert_eq!(
            names_in(out.path()),
            [part.clone(), meta.clone()],
            "{protocol:?}"
        );
        assert_eq!(std::fs::read(out.path().join(&part)).unwrap(), data[..CUT]);
        let sidecar = std::fs::read_to_string(out.path().join(&meta)).unwrap();
        assert!(sidecar.contains(&server.url("B.img")), "{sidecar}");
        assert_clean(&sidecar);

        fetch_into(out.path(), &server.source("B.img"), &once).unwrap();
        assert_eq!(std::fs::read(out.path().join("B.img")).unwrap(), data);
        assert_eq!(names_in(out.path()), ["B.img"]);
        let resumed = match server.kind {
            Kind::Ftp => format!("REST {CUT}"),
            Kind::Http => format!("range=bytes={CUT}-"),
        };
        assert!(
            server.events().iter().any(|e| e.contains(&resumed)),
            "{:?}",
            server.events()
        );
    }
}

/// A file rewritten on the server at a cut (then the resume must not splice) or while it
/// was sent whole (FTP: caught by asking SIZE and MDTM again after the transfer).
#[test]
fn a_file_changed_mid_download_is_fetched_again_never_spliced() {
    let cut = CUT.to_string();
    let at_cut = ["--cut-after", cut.as_str(), "--change-on-cut"];
    let mut cases: Vec<(Protocol, &[&str])> = PROTOCOLS.iter().map(|&p| (p, &at_cut[..])).collect();
    let ftp = PROTOCOLS.iter().filter(|p| p.kind == Kind::Ftp);
    cases.extend(ftp.map(|&p| (p, &["--change-after-send"][..])));
    for (protocol, switches) in cases {
        let server = Server::start_as(protocol, switches);
        std::fs::write(server.file("B.img"), image(SIZE)).unwrap();
        let out = tempfile::tempdir().unwrap();
        fetch_into(out.path(), &server.source("B.img"), &quick()).unwrap();
        let events = server.events();
        assert!(events.contains(&"CHANGED".to_string()), "{events:?}");
        // The new content whole, none of the old bytes before it.
        let got = std::fs::read(out.path().join("B.img")).unwrap();
        assert_eq!(got, std::fs::read(server.file("B.img")).unwrap());
        assert!(
            got.iter().all(|&b| b == 0xC5),
            "{protocol:?} {switches:?}: spliced"
        );
        assert_eq!(names_in(out.path()), ["B.img"]);
        if server.kind == Kind::Ftp {
            assert!(!events.iter().any(|e| e.starts_with("REST")), "{events:?}");
        }
    }
}

#[test]
fn an_http_server_ignoring_ranges_gets_the_whole_file_again() {
    let server = Server::start(
        Kind::Http,
        &["--cut-after", &CUT.to_string(), "--ignore-range"],
    );
    let data = image(SIZE);
    std::fs::write(server.file("B.img"), &data).unwrap();
    let out = tempfile::tempdir().unwrap();
    fetch_into(out.path(), &server.source("B.img"), &quick()).unwrap();
    assert_eq!(std::fs::read(out.path().join("B.img")).unwrap(), data);
    let events = server.events();
    assert!(
        events.iter().any(|e| e.contains("range=bytes=")),
        "{events:?}"
    );
}

#[test]
fn uploads_under_a_temporary_name_and_fetches_back_the_same() {
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &[]);
        let data = image(SIZE);
        let mut seen = 0;
        let url = transfer::upload(
            &mut Cursor::new(data.clone()),
            SIZE as u64,
            "A.img",
            &server.store(),
            &quick(),
            &mut |p: Progress| seen = p.done,
        )
        .unwrap();
        assert_eq!(url.to_string(), server.url("A.img"));
        assert_eq!(seen, SIZE as u64);
        assert_eq!(std::fs::read(server.file("A.img")).unwrap(), data);
        assert!(!server.file("A.img.part").exists());
        if server.kind == Kind::Ftp {
            let events = server.events();
            let stor = events.iter().position(|e| e == "STOR /images/A.img.part");
            let rnto = events.iter().position(|e| e == "RNTO /images/A.img");
            assert!(stor.is_some() && rnto > stor, "{events:?}");
        }
        let out = tempfile::tempdir().unwrap();
        let source = server.source("A.img");
        transfer::download(
            &source,
            &DirPlace::new(out.path()),
            "A.img",
            &quick(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(std::fs::read(out.path().join("A.img")).unwrap(), data);
    }
}

/// Each failure: what to do, then what the message must say. Nothing is left under the
/// final name, and the password appears in no message.
#[test]
fn failures_say_what_happened_and_leave_no_file() {
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &[]);
        std::fs::write(server.file("B.img"), image(SIZE)).unwrap();
        let wrong = server.dir.path().join("wrong.pass");
        write_password(&wrong, "not-the-password");
        let wrong_login = StoreConfig::read(&server.config_with(&wrong))
            .unwrap()
            .source("B.img")
            .unwrap();
        let down = {
            let url = format!(
                "{}://127.0.0.1:{}/images/B.img",
                server.scheme(),
                free_port()
            );
            Source {
                url: transfer::RemoteUrl::parse(&url).unwrap(),
                ..server.source("B.img")
            }
        };
        let name = match server.kind {
            Kind::Ftp => "FTP",
            Kind::Http => "HTTP",
        };
        let cases = [
            (
                wrong_login,
                format!(
                    "fetching {}: the server refused the login as \"reprov\"",
                    server.url("B.img")
                ),
            ),
            (
                server.source("missing.img"),
                format!(
                    "fetching {}: not found on the server",
                    server.url("missing.img")
                ),
            ),
            (
                down.clone(),
                format!(
                    "fetching {}: connection refused after 3 attempts — is the {name} server up?",
                    down.url
                ),
            ),
        ];
        for (source, want) in cases {
            let out = tempfile::tempdir().unwrap();
            let message = fetch_into(out.path(), &source, &quick())
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&want),
                "{protocol:?}: {message}\nwanted: {want}"
            );
            assert_clean(&message);
            assert!(!out.path().join("B.img").exists(), "{message}");
        }
    }
}

#[test]
fn upload_failures_say_what_happened_and_leave_no_file() {
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &[]);
        let wrong = server.dir.path().join("wrong.pass");
        write_password(&wrong, "not-the-password");
        let right = server.dir.path().join("store.pass");
        let closed = free_port();
        let name = match server.kind {
            Kind::Ftp => "FTP",
            Kind::Http => "HTTP",
        };
        let down_url = format!("{}://127.0.0.1:{closed}/images/A.img", server.scheme());
        let cases = [
            (
                server.config_with(&wrong),
                format!(
                    "uploading to {}: the server refused the login as \"reprov\"",
                    server.url("A.img")
                ),
            ),
            (
                server.config_at(closed, &right),
                format!(
                    "uploading to {down_url}: connection refused after 3 attempts — is the {name} server up?"
                ),
            ),
        ];
        for (config, want) in cases {
            let message = transfer::upload(
                &mut Cursor::new(image(SIZE)),
                SIZE as u64,
                "A.img",
                &StoreConfig::read(&config).unwrap(),
                &quick(),
                &mut |_| {},
            )
            .unwrap_err()
            .to_string();
            assert!(
                message.starts_with(&want),
                "{protocol:?}: {message}\nwanted: {want}"
            );
            assert_clean(&message);
            assert!(!server.file("A.img").exists(), "{message}");
        }
    }
}

/// A server that accepts connections and then says nothing: each attempt times out,
/// and the call ends instead of hanging.
#[test]
fn a_silent_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    for scheme in ["ftp", "http"] {
        let url = format!("{scheme}://127.0.0.1:{port}/images/B.img");
        let (message, took) = two_failed_attempts(&url, Duration::from_millis(500));
        assert_eq!(
            message,
            format!("fetching {url}: timed out after 2 attempts")
        );
        assert!(took < Duration::from_secs(10), "{message}");
    }
}

/// Servers that stall without ever going silent — each read gets a few bytes before the
/// timeout — cannot hold a fetch for ever: under the minimum rate an attempt ends like a
/// broken connection. HTTP trickles on its first GET only: the next attempt resumes where
/// the trickle stood and the file is whole. FTP sends every transfer at 2 KB/s: the
/// fetch gives up after its attempts, in bounded time, saying why.
#[test]
fn a_server_that_trickles_is_left_at_the_minimum_rate() {
    let options = Options {
        attempts: 2,
        min_rate: transfer::MinRate {
            bytes: 64 << 10,
            window: Duration::from_secs(2),
        },
        ..quick()
    };
    let data = image(SIZE);
    let http = Server::start(Kind::Http, &["--trickle-after", &CUT.to_string()]);
    std::fs::write(http.file("B.img"), &data).unwrap();
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    fetch_into(out.path(), &http.source("B.img"), &options).unwrap();
    assert_eq!(std::fs::read(out.path().join("B.img")).unwrap(), data);
    assert!(started.elapsed() < Duration::from_secs(20));
    let events = http.events();
    let resumed = events
        .iter()
        .filter_map(|e| {
            e.split("range=bytes=")
                .nth(1)?
                .split('-')
                .next()?
                .parse()
                .ok()
        })
        .any(|from: usize| from >= CUT);
    assert!(resumed, "{events:?}");

    let ftp = Server::start(Kind::Ftp, &["--throttle", "2000"]);
    std::fs::write(ftp.file("B.img"), &data).unwrap();
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let message = fetch_into(out.path(), &ftp.source("B.img"), &options)
        .unwrap_err()
        .to_string();
    assert!(message.contains("too slow"), "{message}");
    assert!(message.contains("after 2 attempts"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(20), "{message}");
    assert_clean(&message);
}

/// An HTTP server that answers its status line, then dribbles header bytes for ever:
/// the answer's head must come whole within the timeout, so each attempt ends.
#[test]
fn an_http_server_that_dribbles_its_headers_times_out() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ");
                while stream.write_all(b"a").is_ok() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    let url = format!("http://127.0.0.1:{port}/images/B.img");
    let (message, took) = two_failed_attempts(&url, Duration::from_secs(1));
    assert!(message.contains("after 2 attempts"), "{message}");
    assert!(took < Duration::from_secs(15), "{message}");
}

/// Fetches `url` anonymously, 2 attempts with `timeout`, expecting failure: the message
/// and how long it took. Nothing may be left in the directory fetched into.
fn two_failed_attempts(url: &str, timeout: Duration) -> (String, Duration) {
    let options = Options {
        attempts: 2,
        backoff: Duration::from_millis(10),
        timeout,
        ..Options::default()
    };
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let message = fetch_into(out.path(), &Source::anonymous(url).unwrap(), &options)
        .unwrap_err()
        .to_string();
    assert!(names_in(out.path()).is_empty(), "{message}");
    (message, started.elapsed())
}

/// A port nothing listens on.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn fetches_into_the_images_store() {
    let server = Server::start(Kind::Ftp, &["--cut-after", &CUT.to_string()]);
    let data = image(SIZE);
    std::fs::write(server.file("B.img"), &data).unwrap();
    let mut part = Cursor::new(vec![0u8; 16 << 20]);
    fatfs::format_volume(
        &mut part,
        fatfs::FormatVolumeOptions::new().volume_label(*b"IMAGES     "),
    )
    .unwrap();
    let store = reprov::store::Store::open(&mut part).unwrap();
    let place = StorePlace::new(&store, "images");
    let once = Options {
        attempts: 1,
        ..quick()
    };
    let source = server.source("B.img");
    assert!(transfer::download(&source, &place, "B.img", &once, &mut |_| {}).is_err());
    assert_eq!(place.len("B.img").unwrap(), None);
    assert_eq!(place.len("B.img.part").unwrap(), Some(CUT as u64));
    transfer::download(&source, &place, "B.img", &once, &mut |_| {}).unwrap();
    assert_eq!(store.read("images/B.img").unwrap().unwrap(), data);
    let names: Vec<String> = store
        .list("images")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["B.img"]);
    store.unmount().unwrap();
}

/// The CLI, as an operator runs it with -v: progress and log lines, errors — the
/// password in none of them, nor in its arguments.
#[test]
fn the_cli_fetches_uploads_and_never_shows_the_password() {
    for protocol in PROTOCOLS {
        let server = Server::start_as(protocol, &["--cut-after", &CUT.to_string()]);
        let data = image(SIZE);
        std::fs::write(server.file("B.img"), &data).unwrap();
        let config = server.config_with(&server.dir.path().join("store.pass"));
        let out = tempfile::tempdir().unwrap();
        let wrong = server.dir.path().join("wrong.pass");
        write_password(&wrong, "not-the-password");
        let open = server.dir.path().join("open.pass");
        write_password(&open, CANARY);
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let fetched = out.path().join("B.img");
        let runs: Vec<(Vec<String>, bool, &str)> = vec![
            (
                vec![
                    "fetch".into(),
                    "B.img".into(),
                    "--out".into(),
                    path(&fetched),
                ],
                true,
                "resuming at byte",
            ),
            (
                vec![
                    "upload".into(),
                    path(&fetched),
                    "--as".into(),
                    "C.img".into(),
                ],
                true,
                "(100%)",
            ),
            (
                vec![
                    "fetch".into(),
                    server.url("missing.img"),
                    "--out".into(),
                    path(&out.path().join("m")),
                ],
                false,
                "not found on the server",
            ),
        ];
        let mut all = String::new();
        for (args, ok, want) in runs {
            let mut command = Command::new(env!("CARGO_BIN_EXE_reprov"));
            command.arg("-v").args(&args).arg("--config").arg(&config);
            let output = command.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(output.status.success(), ok, "{protocol:?} {args:?}: {text}");
            assert!(text.contains(want), "{protocol:?} {args:?}: {text}");
            all.push_str(&text);
            all.push_str(&args.join(" "));
        }
        for (password_file, want) in [(&wrong, "refused the login"), (&open, "chmod 600")] {
            let config = server.config_with(password_file);
            let output = Command::new(env!("CARGO_BIN_EXE_reprov"))
                .args(["-v", "fetch", "B.img", "--out"])
                .arg(out.path().join("x"))
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success() && text.contains(want), "{text}");
            all.push_str(&text);
        }
        assert_eq!(std::fs::read(&fetched).unwrap(), data);
        assert_eq!(std::fs::read(server.file("C.img")).unwrap(), data);
        assert_clean(&all);
        for file in names_in(out.path()) {
            assert_clean(&String::from_utf8_lossy(
                &std::fs::read(out.path().join(file)).unwrap(),
            ));
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
