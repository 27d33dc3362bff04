//! The recovery console driven by scripted input on a sparse disk file: the output a
//! person sees and the disk afterwards.

mod common;

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use common::fixtures::{fat_nos, image_of, machine};
use reprov::disk::{open_disk, Role};
use reprov::recovery::console::{Console, Exit};
use reprov::store::{ImageName, State};

const MIB: u64 = 1 << 20;

/// A's disk, armed, image B in the store, no job: [`common::fixtures::console_disk`].
fn disk(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    common::fixtures::console_disk(&disk);
    disk
}

fn console(disk: &Path, input: &[u8]) -> (Exit, String) {
    let machine = machine();
    let mut out = Vec::new();
    let exit = Console::new(Cursor::new(input.to_vec()), &mut out, disk, &machine)
        .run()
        .unwrap();
    (exit, String::from_utf8(out).unwrap())
}

fn appliance(disk: &Path) -> String {
    let d = open_disk(disk).unwrap();
    let (start, len) = d.range(Role::Nos);
    let mut f = File::open(disk).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut bytes = vec![0; len as usize];
    f.read_exact(&mut bytes).unwrap();
    let fs = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
    let mut text = String::new();
    fs.root_dir()
        .open_file("appliance")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// (system active, NOS active)
fn active(disk: &Path) -> (bool, bool) {
    let d = open_disk(disk).unwrap();
    (
        d.entry(Role::System).is_active(),
        d.entry(Role::Nos).is_active(),
    )
}

#[test]
fn garbage_at_every_prompt_is_answered_and_the_console_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());
    let long = "9".repeat(5000);
    let input = format!("\n   \n\x1b[A\n0\n12\nabc\n{long}\n3\n\n3\n7\n1\nno\n4\n../x\n7\nmaybe\n");

    let (exit, out) = console(&disk, input.as_bytes());

    assert_eq!(exit, Exit::Eof);
    for answer in [
        "nothing typed",
        "control characters",
        "\"0\" is not a number from 1 to 11",
        "\"12\" is not a number from 1 to 11",
        "longer than 256",
        "\"7\" is not a number from 1 to 1; nothing done",
        "not confirmed; nothing done",
    ] {
        assert!(out.contains(answer), "no {answer:?} in:\n{out}");
    }
    assert_eq!(appliance(&disk), "A");
    assert_eq!(active(&disk), (true, false), "nothing committed");
}

#[test]
fn status_list_and_log_show_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());

    let (_, out) = console(&disk, b"1\n2\n6\n");

    for shown in [
        "nos",
        "active",
        "float after NOS: 24.0 MiB",
        "job: none",
        "saved identity: none",
        "B.tar",
        "fits NOS + float",
        "the log is empty",
    ] {
        assert!(out.contains(shown), "no {shown:?} in:\n{out}");
    }
}

#[test]
fn boot_nos_commits_without_imaging() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());

    let (exit, out) = console(&disk, b"7\nyes\n");

    assert_eq!(exit, Exit::Reboot, "{out}");
    assert_eq!(active(&disk), (false, true));
    assert!(open_disk(&disk)
        .unwrap()
        .entry(Role::System)
        .ptype
        .is_hidden());
    assert_eq!(appliance(&disk), "A");
}

#[test]
fn apply_picks_an_image_confirms_and_runs_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());

    let (exit, out) = console(&disk, b"3\n1\nyes\n");

    assert_eq!(exit, Exit::Reboot, "{out}");
    assert!(out.contains("This writes B.tar onto NOS"), "{out}");
    assert_eq!(appliance(&disk), "B");
    assert_eq!(active(&disk), (false, true));
    let mut d = open_disk(&disk).unwrap();
    let store = d.store().unwrap();
    let job = store.read_job().unwrap().unwrap();
    assert_eq!(job.state, State::Done);
    assert!(
        store
            .list_images()
            .unwrap()
            .iter()
            .any(|(n, _)| n == "previous.tar"),
        "the safety backup"
    );
    store.unmount().unwrap();
}

const IDENTITY: &str = "hostname = \"appliance-a\"\n\n[[interface]]\nmac = \"52:54:00:12:34:56\"\naddresses = [\"10.0.2.15/24\"]\n";

fn saved_identity(disk: &Path) -> Option<String> {
    let mut d = open_disk(disk).unwrap();
    let store = d.store().unwrap();
    let text = store.read_identity_text().unwrap();
    store.unmount().unwrap();
    text.map(|t| String::from_utf8(t).unwrap())
}

#[test]
fn edit_identity_goes_through_the_parser_and_asks_first() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());
    {
        let mut d = open_disk(&disk).unwrap();
        let store = d.store().unwrap();
        store.write_identity_text(IDENTITY.as_bytes()).unwrap();
        store.unmount().unwrap();
    }

    // A bad hostname is refused; a good edit not confirmed is dropped; then one is saved.
    let (_, out) = console(
        &disk,
        b"11\nbad;name\n-\n11\nnew-host\n-\nno\n11\nnew-host\n10.0.2.77/24\nyes\n",
    );

    assert!(out.contains("refused:"), "{out}");
    assert!(out.contains("not confirmed"), "{out}");
    assert!(out.contains("identity saved"), "{out}");
    let saved = saved_identity(&disk).unwrap();
    let identity = reprov::identity::parse(&saved).unwrap();
    assert_eq!(identity.hostname.as_str(), "new-host");
    assert_eq!(
        identity.interfaces[0].addresses[0].to_string(),
        "10.0.2.77/24"
    );
}

#[test]
fn verify_tells_a_good_image_from_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());

    let (_, good) = console(&disk, b"10\n1\n");
    assert!(good.contains("B.tar verifies: 40 chunks"), "{good}");

    // Cut B in half through the file system, then verify again.
    {
        let mut d = open_disk(&disk).unwrap();
        let store = d.store().unwrap();
        let mut bytes = Vec::new();
        store
            .open_image(&ImageName::new("B.tar").unwrap())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes.truncate(bytes.len() / 2);
        store.write("images/B.tar", &bytes).unwrap();
        store.unmount().unwrap();
    }
    let (_, bad) = console(&disk, b"10\n1\n");
    assert!(bad.contains("B.tar does NOT verify"), "{bad}");
}

#[test]
fn create_packs_nos_and_factory_restores_the_factory_image() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path());

    let (exit, out) = console(&disk, b"4\nyes\n");
    assert_eq!(exit, Exit::Reboot, "{out}");
    assert!(out.contains("This packs NOS into an image"), "{out}");
    let mut d = open_disk(&disk).unwrap();
    let store = d.store().unwrap();
    assert!(store
        .list_images()
        .unwrap()
        .iter()
        .any(|(n, _)| n == "nos.tar"));
    store.unmount().unwrap();
    assert_eq!(active(&disk), (false, true));

    // The factory image on the data partition, then "restore factory".
    let f = image_of(&fat_nos(40 * MIB, "F", 0), "F");
    {
        let data = d.partition(Role::Data).unwrap();
        let store = reprov::store::Store::open(data).unwrap();
        store.write("factory/F.tar", &f).unwrap();
        store.unmount().unwrap();
    }
    drop(d);
    let (exit, out) = console(&disk, b"5\nyes\n");
    assert_eq!(exit, Exit::Reboot, "{out}");
    assert!(out.contains("factory image F.tar"), "{out}");
    assert_eq!(appliance(&disk), "F");
}
