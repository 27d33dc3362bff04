//! Trust on the command line: keys and signatures in minisign's formats (both ways with
//! the stock `minisign` tool), and every way to break a signed image refused — by
//! `image verify --key`, `schedule apply` and the agent — with its own message, the disk
//! outside the images store byte-identical and nothing scheduled. (The recovery's runner:
//! tests/recovery_runner.rs.)

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixtures::{fat_nos, image_of, small_disk};
use common::servers::{Kind, Server};
use common::signed::{attacks, signed, TestKeys};
use reprov::disk::{open_disk, Role};

const MIB: u64 = 1 << 20;

fn reprov(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let out = reprov(args);
    assert!(out.status.success(), "reprov {args:?}:\n{}", text(&out));
    text(&out)
}

fn fails(args: &[&str]) -> String {
    let out = reprov(args);
    assert!(
        !out.status.success(),
        "reprov {args:?} succeeded:\n{}",
        text(&out)
    );
    text(&out)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// B: a FAT NOS with an incompressible file (so some chunks are stored raw).
fn partition_b() -> Vec<u8> {
    fat_nos(8 * MIB, "B", 3 * MIB)
}

/// An appliance disk running A, and a file standing for its live identity.
fn appliance(dir: &Path) -> (PathBuf, PathBuf) {
    let disk = dir.join("disk.img");
    small_disk(&disk);
    let (start, _) = open_disk(&disk).unwrap().range(Role::Nos);
    let mut file = OpenOptions::new().write(true).open(&disk).unwrap();
    file.seek(SeekFrom::Start(start)).unwrap();
    file.write_all(&fat_nos(40 * MIB, "A", 0)).unwrap();
    let identity = dir.join("identity.toml");
    std::fs::write(
        &identity,
        "hostname = \"appliance-a\"\n\n[[interface]]\nmac = \"52:54:00:12:34:56\"\n\
         addresses = [\"10.0.2.15/24\"]\n",
    )
    .unwrap();
    (disk, identity)
}

/// Every byte of the disk outside the images partition (the MBR and NOS included).
fn outside_images(disk: &Path) -> Vec<u8> {
    let (start, len) = open_disk(disk).unwrap().range(Role::Images);
    let mut bytes = std::fs::read(disk).unwrap();
    bytes.drain(start as usize..(start + len) as usize);
    bytes
}

fn job_of(disk: &Path) -> Option<reprov::store::Job> {
    let mut disk = open_disk(disk).unwrap();
    let store = disk.store().unwrap();
    let job = store.read_job().unwrap();
    store.unmount().unwrap();
    job
}

#[test]
fn keys_and_signatures_go_both_ways_with_the_stock_minisign_tool() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let image = d("B.tar");
    std::fs::write(&image, image_of(&partition_b(), "B")).unwrap();

    // reprov's key signs; the stock tool checks the signature inside the image.
    let out = ok(&["key", "generate", "--out", s(&d("release"))]);
    assert!(
        out.contains("release.key") && out.contains("release.pub"),
        "{out}"
    );
    let mode = std::fs::metadata(d("release.key")).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let err = fails(&["key", "generate", "--out", s(&d("release"))]);
    assert!(err.contains("never overwritten"), "{err}");
    let out = ok(&[
        "image",
        "sign",
        s(&image),
        "--key",
        s(&d("release.key")),
        "--comment",
        "AcmeBox 5.2",
    ]);
    assert!(out.contains("AcmeBox 5.2"), "{out}");
    let info = ok(&["image", "info", s(&image)]);
    let key_id = out.split_whitespace().nth(3).unwrap();
    assert!(
        info.contains(&format!("signature:      key {key_id}")),
        "{info}"
    );
    let minisign = |args: &[&str]| {
        let out = Command::new("minisign")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("minisign runs (scripts/deps installs it)");
        assert!(out.status.success(), "minisign {args:?}: {}", text(&out));
        text(&out)
    };
    let tar = Command::new("tar")
        .args(["-xf", "B.tar", "manifest.toml", "manifest.toml.minisig"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(tar.success());
    let out = minisign(&["-V", "-p", "release.pub", "-m", "manifest.toml"]);
    assert!(out.contains("AcmeBox 5.2"), "{out}");

    // The stock tool's key and signature; reprov stores and checks it.
    minisign(&["-G", "-W", "-p", "stock.pub", "-s", "stock.key"]);
    std::fs::remove_file(d("manifest.toml.minisig")).unwrap();
    minisign(&[
        "-S",
        "-s",
        "stock.key",
        "-m",
        "manifest.toml",
        "-t",
        "signed by the stock tool",
    ]);
    ok(&[
        "image",
        "sign",
        s(&image),
        "--signature",
        s(&d("manifest.toml.minisig")),
    ]);
    let out = ok(&["image", "verify", s(&image), "--key", s(&d("stock.pub"))]);
    assert!(
        out.contains("signed by trusted key") && out.contains("signed by the stock tool"),
        "{out}"
    );
    let err = fails(&["image", "verify", s(&image), "--key", s(&d("release.pub"))]);
    assert!(err.contains("does not trust"), "{err}");
    // The stock tool's unencrypted secret key signs with reprov too.
    ok(&["image", "sign", s(&image), "--key", s(&d("stock.key"))]);
    ok(&["image", "verify", s(&image), "--key", s(&d("stock.pub"))]);
}

#[test]
fn every_broken_signature_is_refused_by_verify_schedule_and_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::new(dir.path());
    let b = partition_b();
    let good = signed(&image_of(&b, "B"), &keys.ours);
    let trusted = s(&keys.trusted_dir);
    let server = Server::start(Kind::Http, &[]);

    let mut cases = attacks(&keys, &b, &good);
    cases.insert(0, ("signed by the trusted key", good, ""));
    for (n, (what, bytes, refusal)) in cases.into_iter().enumerate() {
        let case_dir = dir.path().join(format!("case{n}"));
        std::fs::create_dir(&case_dir).unwrap();
        let image = case_dir.join("B.tar");
        std::fs::write(&image, &bytes).unwrap();
        let accepted = refusal.is_empty();

        // image verify
        let verify = ["image", "verify", s(&image), "--key", s(&keys.ours_pub)];
        if accepted {
            let out = ok(&verify);
            assert!(
                out.contains(&format!("signed by trusted key {}", keys.ours.key_id)),
                "{out}"
            );
        } else {
            let err = fails(&verify);
            assert!(err.contains(refusal), "{what}: verify: {err}");
        }

        // schedule apply, from a file
        let (disk, identity) = appliance(&case_dir);
        let before = outside_images(&disk);
        let schedule = [
            "schedule",
            "apply",
            s(&image),
            "--disk",
            s(&disk),
            "--no-reboot",
            "--identity",
            s(&identity),
            "--keys",
            trusted,
        ];
        if accepted {
            let out = ok(&schedule);
            assert!(
                out.contains(&keys.ours.key_id),
                "{what}: the log names the signer: {out}"
            );
            assert!(job_of(&disk).is_some(), "{what}");
        } else {
            let err = fails(&schedule);
            assert!(
                err.contains(refusal) && err.contains("nothing scheduled"),
                "{what}: schedule: {err}"
            );
            assert_eq!(job_of(&disk), None, "{what}: no job");
            assert!(
                outside_images(&disk) == before,
                "{what}: schedule changed the disk"
            );
        }

        // the agent, from a published desired state
        let agent_dir = case_dir.join("agent");
        std::fs::create_dir(&agent_dir).unwrap();
        let (disk, identity) = appliance(&agent_dir);
        let before = outside_images(&disk);
        let name = format!("B{n}.tar");
        std::fs::write(server.file(&name), &bytes).unwrap();
        let group = format!("g{n}");
        let config = server.config(Some(&group));
        ok(&[
            "fleet",
            "publish",
            "--group",
            &group,
            "--image",
            &name,
            "--config",
            s(&config),
            "--key",
            s(&keys.ours_key),
        ]);
        let agent = [
            "agent",
            "--config",
            s(&config),
            "--disk",
            s(&disk),
            "--no-reboot",
            "--identity",
            s(&identity),
            "--keys",
            trusted,
        ];
        if accepted {
            let out = ok(&agent);
            assert!(
                out.contains(&format!("scheduled apply {name}")),
                "{what}: agent: {out}"
            );
        } else {
            let out = text(&reprov(&agent));
            assert!(out.contains(refusal), "{what}: agent: {out}");
            assert_eq!(job_of(&disk), None, "{what}: the agent scheduled");
            assert!(
                outside_images(&disk) == before,
                "{what}: the agent changed the disk"
            );
        }
    }
}

/// Without keys nothing is checked, and every run says so; a key file that is not a key
/// is an error, not a key less.
#[test]
fn without_keys_images_are_not_checked_and_the_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("B.tar");
    std::fs::write(&image, image_of(&partition_b(), "B")).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = ok(&["image", "verify", s(&image), "--keys", s(&empty)]);
    assert!(out.contains("signature not checked"), "{out}");
    let (disk, identity) = appliance(dir.path());
    let out = ok(&[
        "schedule",
        "apply",
        s(&image),
        "--disk",
        s(&disk),
        "--no-reboot",
        "--identity",
        s(&identity),
        "--keys",
        s(&empty),
    ]);
    assert!(out.contains("images are NOT checked"), "{out}");

    std::fs::write(
        empty.join("broken.pub"),
        "untrusted comment: x\nnot a key\n",
    )
    .unwrap();
    let err = fails(&["image", "verify", s(&image), "--keys", s(&empty)]);
    assert!(
        err.contains("broken.pub") && err.contains("not a minisign public key"),
        "{err}"
    );
    let err = fails(&[
        "image",
        "verify",
        s(&image),
        "--keys",
        s(&dir.path().join("typo")),
    ]);
    assert!(err.contains("no such directory"), "{err}");
}

/// An agent with trusted keys acts only on desired states signed by one of them, for its
/// own group, and of a later generation than the last it acted on.
#[test]
fn agents_with_keys_refuse_unsigned_misplaced_and_replayed_desired_states() {
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::new(dir.path());
    let server = Server::start(Kind::Http, &[]);
    for name in ["B", "C"] {
        let image = image_of(&fat_nos(8 * MIB, name, MIB), name);
        std::fs::write(
            server.file(&format!("{name}.tar")),
            signed(&image, &keys.ours),
        )
        .unwrap();
    }
    let (disk, identity) = appliance(dir.path());
    let key = s(&keys.ours_key);
    let config = server.config(Some("web"));
    let config = s(&config);
    let publish = |image: &str, extra: &[&str]| {
        let mut args = vec![
            "fleet", "publish", "--group", "web", "--image", image, "--config", config,
        ];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let agent = || {
        reprov(&[
            "agent",
            "--config",
            config,
            "--disk",
            s(&disk),
            "--no-reboot",
            "--identity",
            s(&identity),
            "--keys",
            s(&keys.trusted_dir),
        ])
    };
    let state = server.file("fleet/groups/web.toml");
    let signature = server.file("fleet/groups/web.toml.minisig");
    let clear_job = || ok(&["job", "clear", "--disk", s(&disk)]);

    // Generation 1, signed: scheduled.
    publish("B.tar", &["--key", key]);
    let saved = (
        std::fs::read(&state).unwrap(),
        std::fs::read(&signature).unwrap(),
    );
    let out = agent();
    assert!(
        text(&out).contains("scheduled apply B.tar"),
        "{}",
        text(&out)
    );
    clear_job();
    // Generation 2, signed: scheduled.
    publish("C.tar", &["--key", key]);
    assert!(text(&agent()).contains("scheduled apply C.tar"));
    clear_job();

    // Generation 1 put back on the store, its signature good: a replay, refused.
    std::fs::write(&state, &saved.0).unwrap();
    std::fs::write(&signature, &saved.1).unwrap();
    let out = agent();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("generation 1 is not later than generation 2") && said.contains("replay"),
        "{said}"
    );
    assert_eq!(job_of(&disk), None, "the replay scheduled something");
    // The refusal is logged where the operator looks: the server's status on the store.
    // (The server is named by its short host name: the identity has no serial.)
    let status = std::fs::read_to_string(server.file("fleet/status/appliance-a.toml")).unwrap();
    assert!(status.contains("replay"), "{status}");

    // Unsigned, or signed by a key the agent does not trust: refused.
    publish("B.tar", &["--generation", "7"]);
    std::fs::remove_file(&signature).unwrap();
    let said = text(&agent());
    assert!(
        said.contains("refused the desired state")
            && said.contains("desired state is not signed")
            && said.contains("reprov fleet publish --key"),
        "{said}"
    );
    // A signed state of another group copied over this group's: refused.
    let other = server.config(Some("db"));
    ok(&[
        "fleet",
        "publish",
        "--group",
        "db",
        "--image",
        "B.tar",
        "--config",
        s(&other),
        "--key",
        key,
        "--generation",
        "8",
    ]);
    server.config(Some("web"));
    std::fs::copy(server.file("fleet/groups/db.toml"), &state).unwrap();
    std::fs::copy(server.file("fleet/groups/db.toml.minisig"), &signature).unwrap();
    let said = text(&agent());
    assert!(
        said.contains("published for group db, not for group web"),
        "{said}"
    );
    assert_eq!(job_of(&disk), None);
    // A later generation, signed, is taken again.
    publish("B.tar", &["--key", key, "--generation", "9"]);
    assert!(text(&agent()).contains("scheduled apply B.tar"));
}
