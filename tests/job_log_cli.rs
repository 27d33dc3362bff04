//! `reprov job` and `reprov log` on a sparse appliance disk image, through the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reprov::store::Code;

const MIB: u64 = 1 << 20;

/// A fresh appliance disk in a sparse file, laid out by `reprov layout init`.
fn appliance_disk(dir: &Path) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(320 * MIB)
        .unwrap();
    let out = reprov(&[
        "layout",
        "init",
        "--disk",
        path.to_str().unwrap(),
        "--system",
        "40M",
        "--nos",
        "40M",
        "--float",
        "40M",
        "--images",
        "100M",
    ]);
    assert!(out.status.success(), "layout init: {}", text(&out.stderr));
    path
}

fn reprov(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprov"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `reprov VERB --disk DISK ARGS…`.
fn on_disk(disk: &Path, verb: &[&str], args: &[&str]) -> Output {
    let mut all: Vec<&str> = verb.to_vec();
    all.extend(["--disk", disk.to_str().unwrap()]);
    all.extend(args);
    reprov(&all)
}

/// Runs `f` on the images store of `disk`, through the library.
fn with_store(disk: &Path, f: impl FnOnce(&reprov::disk::Mounted<'_, std::fs::File>)) {
    let mut disk = reprov::cli::open_disk(disk).unwrap();
    let store = disk.store().unwrap();
    f(&store);
    store.unmount().unwrap();
}

#[test]
fn set_show_clear() {
    let dir = tempfile::tempdir().unwrap();
    let disk = appliance_disk(dir.path());
    let show = || text(&on_disk(&disk, &["job", "show"], &[]).stdout);
    assert_eq!(show(), "# no pending job\n");

    let out = on_disk(
        &disk,
        &["job", "set"],
        &["--kind", "apply", "--image", "m1-SN42.rpi"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = show();
    for line in [
        "kind = \"apply\"",
        "image = \"m1-SN42.rpi\"",
        "state = \"pending\"",
        "checkpoint = 0",
    ] {
        assert!(shown.contains(line), "{line} not in {shown}");
    }

    // A change keeps the other fields.
    let out = on_disk(
        &disk,
        &["job", "set"],
        &["--state", "failed", "--last-error", "disk gone"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = show();
    assert!(shown.contains("image = \"m1-SN42.rpi\"") && shown.contains("state = \"failed\""));
    assert!(shown.contains("last_error = \"disk gone\""), "{shown}");

    let out = on_disk(&disk, &["job", "clear"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(show(), "# no pending job\n");
}

/// The bad-input table, through the command line: each is refused with a message that
/// names the field, and the disk is byte-identical afterwards.
#[test]
fn bad_job_input_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = appliance_disk(dir.path());
    let out = on_disk(
        &disk,
        &["job", "set"],
        &["--kind", "apply", "--image", "ok.rpi"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = std::fs::read(&disk).unwrap();
    let long = "x".repeat(300);
    let cases: &[(&[&str], &str)] = &[
        (&["--image", "../x"], "field \"image\": image name \"../x\" contains '/'"),
        (&["--image", "a/b"], "field \"image\": image name \"a/b\" contains '/'"),
        (&["--image", "a\\b"], "field \"image\": image name \"a\\\\b\" contains '\\\\'"),
        (&["--image", &long], "field \"image\": image name is 300 bytes long"),
        (&["--image", "a\u{7}b"], "field \"image\": image name \"a\\u{7}b\" contains the control character"),
        (&["--image", ""], "field \"image\": an image name must not be empty"),
        (&["--kind", "wipe"], "field \"kind\": unknown kind \"wipe\" (expected apply, create or factory)"),
        (&["--state", "runing"], "field \"state\": unknown state \"runing\" (expected pending, running, committing, done or failed)"),
        (&["--checkpoint", "1099511627776"], "field \"checkpoint\": 1099511627776 is more than the 4294967296 allowed"),
        (&["--checkpoint", "-1"], "--checkpoint"),
        (&["--attempts", "5000"], "field \"attempts\": 5000 is more than the 1000 allowed"),
        (&["--requested-at", "noon"], "field \"requested_at\": \"noon\" is not an RFC 3339 date-time"),
        (&["--last-error", "a\u{1b}[2Jb"], "field \"last_error\": contains control characters"),
        (&["--colour", "red"], "--colour"),
    ];
    for (args, want) in cases {
        let out = on_disk(&disk, &["job", "set"], args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        if err.contains("field") {
            assert!(
                err.contains(disk.to_str().unwrap()),
                "{err:?} does not name the disk"
            );
        }
        assert!(
            std::fs::read(&disk).unwrap() == before,
            "{args:?} changed the disk"
        );
    }
}

#[test]
fn a_broken_job_file_is_reported_with_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let disk = appliance_disk(dir.path());
    let broken = "kind = \"apply\"\nimage = \"m.rpi\"\nrequested_at = 2026-11-25T12:00:00Z\n\
                  state = \"runing\"\ncheckpoint = 0\nattempts = 0\n";
    with_store(&disk, |store| {
        store.write("reprov/job", broken.as_bytes()).unwrap()
    });
    let before = std::fs::read(&disk).unwrap();
    for verb in [&["job", "show"][..], &["job", "set", "--state", "pending"]] {
        let out = on_disk(&disk, &verb[..2], &verb[2..]);
        let err = text(&out.stderr);
        assert!(!out.status.success());
        let want = format!(
            "on {}: reprov/job line 4, field \"state\": unknown state \"runing\"",
            disk.display()
        );
        assert!(err.contains(&want), "{err:?} lacks {want:?}");
        assert!(
            std::fs::read(&disk).unwrap() == before,
            "{verb:?} changed the disk"
        );
    }
    // Clearing is how an operator gets rid of it.
    assert!(on_disk(&disk, &["job", "clear"], &[]).status.success());
    assert!(on_disk(&disk, &["job", "show"], &[]).status.success());
}

#[test]
fn log_prints_verbose_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let disk = appliance_disk(dir.path());
    assert_eq!(text(&on_disk(&disk, &["log"], &[]).stdout), "");
    with_store(&disk, |store| {
        store.log(Code::JobRead, None).unwrap();
        store
            .log(Code::ImageCorrupt, Some("chunk 7: CRC mismatch"))
            .unwrap();
    });
    let out = on_disk(&disk, &["log"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].ends_with("Z  R012  Read the pending job"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with(
            "E103  The image is corrupt (bad manifest, checksum or length): chunk 7: CRC mismatch"
        ),
        "{}",
        lines[1]
    );

    let out = on_disk(&disk, &["log"], &["--json", "--last", "1"]);
    let json = text(&out.stdout);
    let entry: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(entry["code"], "E103");
    assert_eq!(entry["message"], "image-corrupt");
    assert_eq!(entry["detail"], "chunk 7: CRC mismatch");
}

#[test]
fn a_missing_disk_is_named() {
    let out = reprov(&["job", "show", "--disk", "/nonexistent/disk.img"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/disk.img"),
        "{}",
        text(&out.stderr)
    );
}

/// After jobs, identity, images and a rotated log are written, the images partition is
/// a clean FAT (`fsck.vfat -n`) and mtools reads the files reprov wrote.
#[test]
fn store_writes_pass_fsck_and_read_with_mtools() {
    use reprov::store::{ImageName, Job, Kind, LOG_LIMIT};
    use std::io::{Read, Seek, SeekFrom};

    let dir = tempfile::tempdir().unwrap();
    let path = appliance_disk(dir.path());
    let name = ImageName::new("m1-SN42.rpi").unwrap();
    let job = Job::new(Kind::Apply, name.clone(), time::OffsetDateTime::UNIX_EPOCH);
    with_store(&path, |store| {
        for n in 0..20 {
            store
                .write_job(&job.start().unwrap().checkpoint(n).unwrap())
                .unwrap();
        }
        store.clear_job().unwrap();
        store.write_job(&job).unwrap();
        store
            .write_identity_text(b"hostname = \"node7\"\n")
            .unwrap();
        let data = vec![0x5a; 3 << 20];
        store
            .add_image(&ImageName::new("old.rpi").unwrap(), &data[..], 3 << 20)
            .unwrap();
        store.add_image(&name, &data[..], 3 << 20).unwrap();
        store
            .remove_image(&ImageName::new("old.rpi").unwrap())
            .unwrap();
        let detail = "x".repeat(200);
        let mut n = 0u64;
        while store.read("reprov/log.1").unwrap().is_none() {
            store.log(Code::ApplyProgress, Some(&detail)).unwrap();
            n += 1;
            assert!(n < LOG_LIMIT, "the log never rotated");
        }
    });

    // MBR commits put backups in a new reprov/mbr/, beside our files.
    for verb in ["unhide", "hide"] {
        let out = on_disk(&path, &["layout", verb], &[]);
        assert!(out.status.success(), "layout {verb}: {}", text(&out.stderr));
    }

    let disk = reprov::cli::open_disk(&path).unwrap();
    let (start, len) = disk.range(reprov::disk::Role::Images);
    let mut file = disk.into_inner();
    file.seek(SeekFrom::Start(start)).unwrap();
    let part = dir.path().join("images.part");
    let mut bytes = Vec::new();
    file.take(len).read_to_end(&mut bytes).unwrap();
    std::fs::write(&part, &bytes).unwrap();

    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&part)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{}", text(&fsck.stdout));

    let mtype = |file: &str| {
        let out = Command::new("mtype")
            .args(["-i", part.to_str().unwrap(), file])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "mtype {file}: {}", text(&out.stderr));
        out.stdout
    };
    assert_eq!(text(&mtype("::/reprov/job")), job.render());
    assert_eq!(mtype("::/reprov/identity"), b"hostname = \"node7\"\n");
    let dir_listing = Command::new("mdir")
        .args(["-b", "-i", part.to_str().unwrap(), "::/images"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert_eq!(text(&dir_listing.stdout).trim(), "::/images/m1-SN42.rpi");
    let mdir = Command::new("mdir")
        .args(["-b", "-i", part.to_str().unwrap(), "::/reprov"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    let mut files: Vec<String> = text(&mdir.stdout).lines().map(str::to_string).collect();
    files.sort();
    assert_eq!(
        files,
        [
            "::/reprov/identity",
            "::/reprov/job",
            "::/reprov/log",
            "::/reprov/log.1",
            "::/reprov/mbr/"
        ],
        "no .new or .part left behind"
    );
}

/// A power cut after the commit took the job's `done` and the last log entries: the job
/// says `committing` while NOS is active and the system partition hidden. The next boot
/// is into NOS, so after-boot (or the agent, or a schedule) closes it; a job still
/// `committing` before the commit (system partition active) is left to the recovery. A
/// `running` job under a landed commit was rolled back: it ends failed.
#[test]
fn a_committing_job_whose_commit_landed_is_closed_after_boot() {
    let dir = tempfile::tempdir().unwrap();
    let disk = appliance_disk(dir.path());
    let identity = dir.path().join("identity.toml");
    std::fs::write(&identity, "hostname = \"web-07\"\n").unwrap();
    // A store nobody answers at: the status report fails (a warning), the rest goes on.
    let config = dir.path().join("store.toml");
    std::fs::write(
        &config,
        "url = \"http://127.0.0.1:9\"\ndirectory = \"images\"\n",
    )
    .unwrap();
    let after_boot = || {
        on_disk(
            &disk,
            &["after-boot"],
            &[
                "--config",
                config.to_str().unwrap(),
                "--identity",
                identity.to_str().unwrap(),
            ],
        )
    };
    let set = |args: &[&str]| {
        let out = on_disk(&disk, &["job", "set"], args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    set(&["--kind", "apply", "--image", "b.tar"]);
    set(&["--state", "committing"]);

    // Before the commit: the system partition is the active one.
    let out = on_disk(&disk, &["layout", "activate"], &["system"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = after_boot();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&on_disk(&disk, &["job", "show"], &[]).stdout);
    assert!(shown.contains("state = \"committing\""), "{shown}");

    // After it: NOS active, the system partition hidden.
    let out = on_disk(&disk, &["layout", "activate"], &["nos"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = after_boot();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&on_disk(&disk, &["job", "show"], &[]).stdout);
    assert!(shown.contains("state = \"done\""), "{shown}");
    let log = text(&on_disk(&disk, &["log"], &[]).stdout);
    assert!(
        log.contains("R051") && log.contains("found by after-boot"),
        "{log}"
    );
    assert!(log.contains("R060"), "{log}");

    // A running job with NOS committed: a rollback cut before it recorded the failure.
    set(&["--kind", "apply", "--image", "c.tar"]);
    set(&["--state", "running"]);
    let out = after_boot();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&on_disk(&disk, &["job", "show"], &[]).stdout);
    assert!(shown.contains("state = \"failed\""), "{shown}");
    assert!(
        shown.contains("brought the previous appliance back"),
        "{shown}"
    );
}
