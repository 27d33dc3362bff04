//! Fetching an image over HTTP by what is new in it (issue 12): with image B here, B2
//! (3 of its 40 chunks changed) is fetched as its manifest and those 3 chunks, counted by
//! the server, and the file assembled is B2 byte for byte; a cut resumes; a server that
//! ignores ranges gives the whole file.

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use reprov::image::{self, CreateOptions, Kind};
use reprov::transfer::{self, DirPlace, Options};

mod common;
use common::servers::{Kind as ServerKind, Server};

const CHUNK: u64 = 64 << 10;
const CHUNKS: usize = 40;
const CHANGED: [usize; 3] = [5, 17, 33];

/// 40 chunks of bytes that do not repeat, so each chunk has its own hash.
fn source(changed: &[usize]) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut bytes: Vec<u8> = (0..CHUNK as usize * CHUNKS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0] & 0x0F // compressible, so chunks are stored compressed
        })
        .collect();
    for &i in changed {
        let at = i * CHUNK as usize + 1000;
        bytes[at..at + 8].copy_from_slice(b"CHANGED!");
    }
    bytes
}

fn image_of(source: &[u8], name: &str) -> Vec<u8> {
    let mut options = CreateOptions::new(name);
    options.chunk_size = CHUNK;
    let mut out = Cursor::new(Vec::new());
    image::create(&mut Cursor::new(source.to_vec()), &mut out, &options).unwrap();
    out.into_inner()
}

fn quick() -> Options {
    Options {
        attempts: 3,
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

/// The bytes of B2 a delta fetch must transfer: the probe and manifest entry, the
/// changed chunks' entries and what follows the last chunk.
fn new_bytes(b2: &[u8]) -> u64 {
    let layout = image::open(&mut Cursor::new(b2)).unwrap();
    let manifest = &layout.manifest;
    let data: Vec<_> = manifest
        .chunks
        .iter()
        .filter(|c| c.kind == Kind::Data)
        .collect();
    assert_eq!(data.len(), CHUNKS, "every chunk is a data chunk");
    // The probe's block (the manifest's header), then the manifest without its padding.
    let head = 512 + tar::Header::from_byte_slice(&b2[..512]).size().unwrap();
    let changed: u64 = CHANGED
        .iter()
        .map(|&i| image::entry_len(data[i].stored))
        .sum();
    let last = data.last().unwrap();
    let tail = b2.len() as u64 - (layout.offset(last.index) - 512 + image::entry_len(last.stored));
    head + changed + tail
}

fn sent(server: &Server) -> u64 {
    server
        .events()
        .iter()
        .filter_map(|e| e.strip_prefix("SENT /images/B2.tar "))
        .map(|n| n.parse::<u64>().unwrap())
        .sum()
}

fn ranges(server: &Server) -> Vec<String> {
    server
        .events()
        .iter()
        .filter(|e| e.starts_with("GET "))
        .cloned()
        .collect()
}

/// A directory holding B, and a server holding B2.
fn setup(switches: &[&str]) -> (tempfile::TempDir, Server, Vec<u8>) {
    let b = image_of(&source(&[]), "B");
    let b2 = image_of(&source(&CHANGED), "B2");
    let here = tempfile::tempdir().unwrap();
    std::fs::write(here.path().join("B.tar"), &b).unwrap();
    let server = Server::start(ServerKind::Http, switches);
    std::fs::write(server.file("B2.tar"), &b2).unwrap();
    (here, server, b2)
}

fn fetch(here: &Path, server: &Server) -> u64 {
    transfer::download(
        &server.source("B2.tar"),
        &DirPlace::new(here),
        "B2.tar",
        &quick(),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn only_the_changed_chunks_are_fetched_and_the_file_is_the_remote_one() {
    let (here, server, b2) = setup(&[]);
    let size = fetch(here.path(), &server);
    assert_eq!(size, b2.len() as u64);
    assert!(std::fs::read(here.path().join("B2.tar")).unwrap() == b2);
    let gets = ranges(&server);
    assert_eq!(
        sent(&server),
        new_bytes(&b2),
        "the server sent more than the manifest and the 3 new chunks: {gets:#?}"
    );
    // The probe, the manifest, one range per changed chunk, the end.
    assert_eq!(gets.len(), 2 + CHANGED.len() + 1, "{gets:#?}");
    assert!(new_bytes(&b2) * 5 < b2.len() as u64, "most of B2 is reused");
}

#[test]
fn a_cut_in_the_middle_of_a_chunk_resumes_there() {
    // GET 3 is the first changed chunk's range: the server sends 1000 bytes and hangs up.
    let (here, server, b2) = setup(&["--cut-after", "1000", "--cut-request", "3"]);
    fetch(here.path(), &server);
    assert!(std::fs::read(here.path().join("B2.tar")).unwrap() == b2);
    let events = server.events();
    let cut = events.iter().position(|e| e == "CUT 1000").expect("cut");
    let first = events[..cut]
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("GET /images/B2.tar range=bytes="))
        .and_then(|r| r.split('-').next())
        .map(|n| n.parse::<u64>().unwrap())
        .unwrap();
    let resumed = format!("GET /images/B2.tar range=bytes={}-", first + 1000);
    assert!(
        events[cut..].iter().any(|e| e.starts_with(&resumed)),
        "no range from the cut ({resumed}) after it: {events:#?}"
    );
    assert!(here.path().join("B2.tar.part").metadata().is_err());
}

#[test]
fn a_server_that_ignores_ranges_gives_the_whole_file() {
    let (here, server, b2) = setup(&["--ignore-range"]);
    fetch(here.path(), &server);
    assert!(std::fs::read(here.path().join("B2.tar")).unwrap() == b2);
}

#[test]
fn a_local_chunk_that_does_not_check_out_is_fetched() {
    let (here, server, b2) = setup(&[]);
    // Damage B's copy of chunk 9 (same length): its content no longer has its hash.
    let path = here.path().join("B.tar");
    let mut b = std::fs::read(&path).unwrap();
    let at = usize::try_from(image::open(&mut Cursor::new(&b)).unwrap().offset(9)).unwrap();
    b[at + 40] ^= 0xFF;
    std::fs::write(&path, &b).unwrap();
    fetch(here.path(), &server);
    assert!(std::fs::read(here.path().join("B2.tar")).unwrap() == b2);
    assert!(
        sent(&server) > new_bytes(&b2),
        "chunk 9 came from the server"
    );
}

#[test]
fn a_file_shorter_than_a_tar_block_is_fetched_whole() {
    let (here, server, _) = setup(&[]);
    std::fs::write(server.file("note.txt"), b"hello").unwrap();
    let size = transfer::download(
        &server.source("note.txt"),
        &DirPlace::new(here.path()),
        "note.txt",
        &quick(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(size, 5);
    assert_eq!(
        std::fs::read(here.path().join("note.txt")).unwrap(),
        b"hello"
    );
}
