//! `reprov image add` and `reprov identity save`: putting an image and an identity onto
//! an appliance disk, as the scenario tests and the demo do.

mod common;

use common::fixtures::{layout_disk, reprov};
use reprov::disk::{open_disk, Role};
use reprov::store::{ImageName, Store};
use std::path::Path;
use std::process::Command;

fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "reprov {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn identity_save_stores_a_good_identity_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "hostname = \"appliance-a\"\n\n[[interface]]\nmac = \"52:54:00:12:34:56\"\naddresses = [\"10.0.2.15/24\"]\n",
    )
    .unwrap();
    reprov(&["identity", "save", "--disk", s(&disk), "--file", s(&good)]);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "hostname = \"web;reboot\"\n").unwrap();
    let error = fails(&["identity", "save", "--disk", s(&disk), "--file", s(&bad)]);
    assert!(error.contains("hostname"), "{error}");

    let mut opened = open_disk(&disk).unwrap();
    let store = opened.store().unwrap();
    let saved = reprov::identity::load(&store)
        .unwrap()
        .expect("a saved identity");
    assert_eq!(saved.hostname.as_str(), "appliance-a");
    assert_eq!(saved.interfaces[0].mac.to_string(), "52:54:00:12:34:56");
    store.unmount().unwrap();
}

#[test]
fn image_add_copies_into_images_or_into_factory_on_data() {
    let dir = tempfile::tempdir().unwrap();
    let disk = layout_disk(dir.path());
    let image = dir.path().join("some.tar");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&image, &bytes).unwrap();

    reprov(&[
        "image",
        "add",
        s(&image),
        "--disk",
        s(&disk),
        "--as",
        "B.tar",
    ]);
    reprov(&["image", "add", s(&image), "--disk", s(&disk), "--factory"]);
    let again = fails(&[
        "image",
        "add",
        s(&image),
        "--disk",
        s(&disk),
        "--as",
        "B.tar",
    ]);
    assert!(again.contains("B.tar"), "{again}");

    let mut opened = open_disk(&disk).unwrap();
    let store = opened.store().unwrap();
    assert_eq!(
        store.list_images().unwrap(),
        vec![("B.tar".to_string(), bytes.len() as u64)]
    );
    store.unmount().unwrap();
    let data = Store::open(opened.partition(Role::Data).unwrap()).unwrap();
    let name = ImageName::new("some.tar").unwrap();
    let mut copied = Vec::new();
    std::io::Read::read_to_end(&mut data.open_in("factory", &name).unwrap(), &mut copied).unwrap();
    assert!(copied == bytes, "factory/some.tar differs from the file");
    data.unmount().unwrap();
}
