//! The trigger side, on sparse appliance disk files, against real FTP and HTTP servers
//! on loopback (tests/servers/): `reprov schedule apply`, its refusals, the fleet
//! (`fleet publish` → `agent` on three "servers" → `fleet status`), and the canary
//! password nowhere it must not be.
//!
//! Every appliance disk (sparse, 197 MiB), in normal operation before the test:
//!
//! | slot | role   | size   | type | holds                                  |
//! |------|--------|--------|------|----------------------------------------|
//! | 1    | system | 34 MiB | 0x1C | (empty FAT32), hidden, not active      |
//! | 2    | NOS    | 40 MiB | 0x0C | appliance A: FAT with `appliance` = A  |
//! | —    | float  | 24 MiB |      |                                        |
//! | 3    | images | 64 MiB | 0x0C | empty FAT32 "IMAGES"                   |
//! | 4    | data   | 34 MiB | 0x0C | empty FAT32                            |
//!
//! B is a 48 MiB FAT NOS: it fits NOS + float (64 MiB) and makes NOS grow.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::fixtures::{fat_nos, image_of, machine};
use common::servers::{Kind, Server, CANARY, KINDS};
use reprov::disk::{open_disk, Role};
use reprov::recovery::runner::{self, Machine};
use reprov::recovery::Outcome;
use reprov::store::{Job, State};

const MIB: u64 = 1 << 20;

fn image_b() -> Vec<u8> {
    image_of(&fat_nos(48 * MIB, "B", 3 * MIB), "B")
}

fn identity_text(hostname: &str, serial: &str, address: &str) -> String {
    format!(
        "hostname = \"{hostname}\"\n\n[system]\nmodel = \"Test Appliance\"\nserial = \"{serial}\"\n\n\
         [[interface]]\nmac = \"52:54:00:12:34:56\"\naddresses = [\"{address}\"]\n\
         gateway4 = \"10.0.2.2\"\n"
    )
}

/// One appliance: its disk file and an identity file standing for its live identity.
struct Appliance {
    disk: PathBuf,
    identity: PathBuf,
}

impl Appliance {
    fn new(dir: &Path, hostname: &str, serial: &str, address: &str) -> Appliance {
        let disk = dir.join(format!("{serial}.img"));
        common::fixtures::small_disk(&disk);
        let appliance = Appliance {
            disk,
            identity: dir.join(format!("{serial}.identity")),
        };
        std::fs::write(
            &appliance.identity,
            identity_text(hostname, serial, address),
        )
        .unwrap();
        let (start, _) = appliance.range(Role::Nos);
        let mut file = OpenOptions::new()
            .write(true)
            .open(&appliance.disk)
            .unwrap();
        file.seek(SeekFrom::Start(start)).unwrap();
        file.write_all(&fat_nos(40 * MIB, "A", 0)).unwrap();
        appliance
    }

    fn disk_arg(&self) -> &str {
        self.disk.to_str().unwrap()
    }

    fn identity_arg(&self) -> &str {
        self.identity.to_str().unwrap()
    }

    /// `reprov schedule apply IMAGE` on this appliance with the store config `config`,
    /// arming without a reboot.
    fn schedule_apply<'a>(&'a self, image: &'a str, config: &'a str) -> [&'a str; 10] {
        [
            "schedule",
            "apply",
            image,
            "--disk",
            self.disk_arg(),
            "--no-reboot",
            "--config",
            config,
            "--identity",
            self.identity_arg(),
        ]
    }

    fn range(&self, role: Role) -> (u64, u64) {
        open_disk(&self.disk).unwrap().range(role)
    }

    fn job(&self) -> Option<Job> {
        let mut disk = open_disk(&self.disk).unwrap();
        let store = disk.store().unwrap();
        let job = store.read_job().unwrap();
        store.unmount().unwrap();
        job
    }

    /// The image files, saved identity and step-log codes on the images partition.
    fn store_state(&self) -> (Vec<String>, Option<String>, Vec<String>) {
        let mut disk = open_disk(&self.disk).unwrap();
        let store = disk.store().unwrap();
        let files = store
            .list("images")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let identity = store
            .read_identity_text()
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap());
        let codes = store
            .read_log()
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.code)
            .collect();
        store.unmount().unwrap();
        (files, identity, codes)
    }

    /// (hidden, active) of the system partition.
    fn system_state(&self) -> (bool, bool) {
        let e = open_disk(&self.disk).unwrap().entry(Role::System);
        (e.ptype.is_hidden(), e.is_active())
    }

    /// Every byte of the disk outside the images partition.
    fn outside_images(&self) -> Vec<u8> {
        let (start, len) = self.range(Role::Images);
        let mut bytes = std::fs::read(&self.disk).unwrap();
        bytes.drain(usize::try_from(start).unwrap()..usize::try_from(start + len).unwrap());
        bytes
    }
}

/// Runs the reprov binary; every run's output is kept for the canary check.
struct Runs {
    outputs: Vec<String>,
}

impl Runs {
    fn new() -> Self {
        Runs {
            outputs: Vec::new(),
        }
    }

    fn run(&mut self, args: &[&str]) -> Output {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reprov"))
            .args(args)
            .output()
            .unwrap();
        self.outputs.push(format!(
            "$ reprov {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        out
    }

    /// Runs and expects success; returns stdout.
    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "reprov {args:?} failed:\n{}",
            self.outputs.last().unwrap()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "reprov {args:?} succeeded:\n{}",
            self.outputs.last().unwrap()
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// The canary is in no output, and in no argument given (the commands carry none).
    fn assert_no_canary(&self) {
        for out in &self.outputs {
            assert!(!out.contains(CANARY), "the password leaked:\n{out}");
        }
    }
}

fn assert_no_canary_in(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let found = bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes());
    assert!(!found, "the password is in {}", path.display());
}

/// A server's own command line holds no password (it reads it from its file).
fn assert_no_canary_in_process(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(CANARY));
}

fn assert_in_order(codes: &[String], expected: &[&str]) {
    let mut rest = codes.iter();
    for code in expected {
        assert!(
            rest.any(|c| c == code),
            "{code} missing or out of order in {codes:?}"
        );
    }
}

/// From ftp:// (a URL) and http:// (a bare name in the store): the image, the identity
/// and a pending job on the images partition, the system partition visible and active,
/// R001–R004 in the log; a second schedule is refused; and the recovery then applies B
/// with A's identity.
#[test]
fn schedule_apply_fetches_verifies_writes_the_job_and_arms() {
    for kind in KINDS {
        let server = Server::start(kind, &[]);
        std::fs::write(server.file("B.tar"), image_b()).unwrap();
        let config = server.config(None);
        let dir = tempfile::tempdir().unwrap();
        let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
        let mut runs = Runs::new();
        let url = server.url("B.tar");
        let image = match kind {
            Kind::Ftp => url.as_str(),
            Kind::Http => "B.tar",
        };
        let args = [
            "schedule",
            "apply",
            image,
            "--disk",
            a.disk_arg(),
            "--no-reboot",
            "--config",
            config.to_str().unwrap(),
            "--identity",
            a.identity_arg(),
        ];
        let out = runs.ok(&args);
        assert!(out.contains("scheduled apply B.tar"), "{out}");

        let (files, identity, codes) = a.store_state();
        assert_eq!(files, ["B.tar"], "{kind:?}: only the whole image, no .part");
        assert!(identity.unwrap().contains("hostname = \"appliance-a\""));
        let job = a.job().expect("a job");
        assert_eq!((job.state, job.image.as_str()), (State::Pending, "B.tar"));
        assert_eq!(a.system_state(), (false, true), "system visible and active");
        assert_in_order(&codes, &["R001", "R002", "R003", "R004"]);

        let mbr = a.outside_images();
        let refused = runs.fails(&args);
        assert!(refused.contains("already scheduled"), "{refused}");
        assert!(refused.contains("reprov job clear"), "{refused}");
        assert_eq!(a.outside_images(), mbr, "the refusal changed the disk");

        if kind == Kind::Ftp {
            // The loop's other half on the same disk: the recovery applies B.
            assert_eq!(runner::run(&a.disk, &machine()).unwrap(), Outcome::Done);
            let (start, len) = a.range(Role::Nos);
            assert_eq!(len, 48 * MIB, "NOS grew into the float for B");
            let mut nos = vec![0u8; usize::try_from(len).unwrap()];
            let mut file = File::open(&a.disk).unwrap();
            file.seek(SeekFrom::Start(start)).unwrap();
            file.read_exact(&mut nos).unwrap();
            let fs = fatfs::FileSystem::new(Cursor::new(nos), fatfs::FsOptions::new()).unwrap();
            let read = |path: &str| {
                let mut text = String::new();
                fs.root_dir()
                    .open_file(path)
                    .unwrap()
                    .read_to_string(&mut text)
                    .unwrap();
                text
            };
            assert_eq!(read("appliance"), "B");
            assert_eq!(read("etc/hostname"), "appliance-a\n");
            assert_eq!(a.system_state(), (true, false), "NOS boots again");
        }
        runs.assert_no_canary();
        assert_no_canary_in(&a.disk);
        assert_no_canary_in_process(server.pid());
    }
}

/// Refusals after the fetch: an image too big for NOS + float, and a corrupt one. The
/// guarantee: no job, the MBR and every byte outside the images partition unchanged, the
/// refused image removed (no file under its name, no partial); only the saved identity
/// and the step log (R001) changed on the images partition.
#[test]
fn too_big_and_corrupt_images_are_refused_before_anything_is_armed() {
    let mut corrupt = image_b();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xFF;
    let too_big = image_of(&vec![0u8; usize::try_from(70 * MIB).unwrap()], "huge");
    let cases = [
        ("big.tar", too_big, "does not fit"),
        ("bad.tar", corrupt, "not a whole, valid image"),
    ];
    let server = Server::start(Kind::Ftp, &[]);
    let config = server.config(None);
    for (name, bytes, why) in cases {
        std::fs::write(server.file(name), bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
        let before = a.outside_images();
        let mut runs = Runs::new();
        let err = runs.fails(&[
            "schedule",
            "apply",
            &server.url(name),
            "--disk",
            a.disk_arg(),
            "--no-reboot",
            "--config",
            config.to_str().unwrap(),
            "--identity",
            a.identity_arg(),
        ]);
        assert!(err.contains(why), "{name}: {err}");
        assert!(err.contains("nothing scheduled"), "{name}: {err}");
        if name == "big.tar" {
            // The numbers: 70 MiB needed, 40 MiB NOS + 24 MiB float = 64 MiB.
            for n in ["73400320", "41943040", "25165824", "67108864"] {
                assert!(err.contains(n), "{err} lacks {n}");
            }
        }
        assert_eq!(a.job(), None, "{name}: no job");
        assert_eq!(a.outside_images(), before, "{name}: the disk changed");
        assert_eq!(a.system_state(), (true, false), "{name}: not armed");
        let (files, _, codes) = a.store_state();
        assert!(files.is_empty(), "{name}: left {files:?}");
        assert!(!codes.iter().any(|c| c == "R003" || c == "R004"));
        runs.assert_no_canary();
    }
}

/// `--at` in the future writes the job and arms nothing; `arm_due` arms it once due.
#[test]
fn a_deferred_job_is_armed_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
    let image = dir.path().join("B.tar");
    std::fs::write(&image, image_b()).unwrap();
    let mut runs = Runs::new();
    let out = runs.ok(&[
        "schedule",
        "apply",
        image.to_str().unwrap(),
        "--disk",
        a.disk_arg(),
        "--at",
        "+2h",
        "--identity",
        a.identity_arg(),
    ]);
    assert!(out.contains("deferred"), "{out}");
    let job = a.job().unwrap();
    let not_before = job.not_before.expect("not_before set");
    assert_eq!(a.system_state(), (true, false), "not armed yet");
    let out = runs.ok(&["schedule", "arm-due", "--disk", a.disk_arg(), "--no-reboot"]);
    assert!(out.contains("no deferred job is due"), "{out}");

    let mut disk = open_disk(&a.disk).unwrap();
    let early = reprov::schedule::arm_due(&mut disk, not_before - time::Duration::minutes(1));
    assert_eq!(early.unwrap(), None);
    let armed = reprov::schedule::arm_due(&mut disk, not_before).unwrap();
    assert_eq!(armed.map(|j| j.image.to_string()).as_deref(), Some("B.tar"));
    drop(disk);
    assert_eq!(a.system_state(), (false, true));
    let (_, _, codes) = a.store_state();
    assert_in_order(&codes, &["R001", "R002", "R003", "R004"]);
}

/// Three "servers" (disks with their own serials and host names) pick up one desired
/// state published for their group, each schedules B with its own identity, and
/// `fleet status` shows all three; a second agent run does nothing, a new publish waits
/// while the job is pending.
#[test]
fn fleet_publish_then_agents_then_status() {
    for kind in KINDS {
        let server = Server::start(kind, &[]);
        std::fs::write(server.file("B.tar"), image_b()).unwrap();
        let config = server.config(Some("web"));
        let config = config.to_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let appliances: Vec<(Appliance, String)> = (1..=3)
            .map(|n| {
                let host = format!("web-0{n}");
                let a = Appliance::new(
                    dir.path(),
                    &host,
                    &format!("SN{n}"),
                    &format!("10.0.2.{n}/24"),
                );
                (a, host)
            })
            .collect();
        let mut runs = Runs::new();
        let out = runs.ok(&[
            "fleet", "publish", "--group", "web", "--image", "B.tar", "--config", config,
        ]);
        assert!(out.contains("generation 1"), "{out}");
        for (a, host) in &appliances {
            let agent = [
                "agent",
                "--config",
                config,
                "--disk",
                a.disk_arg(),
                "--no-reboot",
                "--identity",
                a.identity_arg(),
            ];
            let out = runs.ok(&agent);
            assert!(out.contains("scheduled apply B.tar"), "{kind:?}: {out}");
            let job = a.job().unwrap();
            assert_eq!((job.state, job.image.as_str()), (State::Pending, "B.tar"));
            let (_, identity, codes) = a.store_state();
            assert!(identity
                .unwrap()
                .contains(&format!("hostname = \"{host}\"")));
            assert_in_order(&codes, &["R001", "R002", "R003", "R004"]);
            assert_eq!(a.system_state(), (false, true));
            let out = runs.ok(&agent);
            assert!(out.contains("up to date"), "{out}");
        }

        let table = runs.ok(&["fleet", "status", "--config", config]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        for (n, line) in lines[1..].iter().enumerate() {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let n = n + 1;
            let want = [
                format!("SN{n}"),
                format!("web-0{n}"),
                "B.tar".into(),
                "pending".into(),
                "R004".into(),
            ];
            assert_eq!(cells[..5], want, "{table}");
        }
        let json = runs.ok(&["fleet", "status", "--config", config, "--json"]);
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[2]["hostname"], "web-03");

        // A new command for one server waits while its job is pending.
        let out = runs.ok(&[
            "fleet", "publish", "--server", "SN2", "--image", "B.tar", "--config", config,
        ]);
        assert!(out.contains("generation 1"), "{out}");
        let (a, _) = &appliances[1];
        let out = runs.ok(&[
            "agent",
            "--config",
            config,
            "--disk",
            a.disk_arg(),
            "--no-reboot",
            "--identity",
            a.identity_arg(),
        ]);
        assert!(
            out.contains("waiting: a re-provisioning is already scheduled"),
            "{out}"
        );

        runs.assert_no_canary();
        for (a, _) in &appliances {
            assert_no_canary_in(&a.disk);
        }
        assert_no_canary_in_process(server.pid());
    }
}

/// Before any server reported, the store has no `fleet/status/`: `fleet status` prints
/// the table's header (JSON: `[]`), says no server has reported yet, and succeeds; so
/// does an empty `fleet/status/`. A wrong password or a server that is down still fail.
#[test]
fn fleet_status_before_the_first_report_is_an_empty_table() {
    for kind in KINDS {
        let server = Server::start(kind, &[]);
        let config = server.config(None);
        let config = config.to_str().unwrap();
        let mut runs = Runs::new();
        let status = ["fleet", "status", "--config", config];

        for created in [false, true] {
            if created {
                std::fs::create_dir_all(server.file("fleet/status")).unwrap();
            }
            let out = runs.run(&status);
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(out.status.success(), "{kind:?}: {stdout}{stderr}");
            let lines: Vec<&str> = stdout.lines().collect();
            assert_eq!(lines.len(), 1, "{kind:?}: {stdout}");
            assert!(lines[0].starts_with("SERVER"), "{kind:?}: {stdout}");
            assert!(
                stderr.contains("no server has reported yet"),
                "{kind:?}: {stderr}"
            );
            let json = runs.ok(&["fleet", "status", "--config", config, "--json"]);
            assert_eq!(json.trim(), "[]", "{kind:?}");
        }

        let wrong = server.dir.path().join("wrong.pass");
        common::servers::write_password(&wrong, "not-the-password");
        let error = runs.fails(&[
            "fleet",
            "status",
            "--config",
            server.config_with(&wrong).to_str().unwrap(),
        ]);
        assert!(error.contains("refused the login"), "{kind:?}: {error}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let right = server.dir.path().join("store.pass");
        let error = runs.fails(&[
            "fleet",
            "status",
            "--config",
            server.config_at(closed, &right).to_str().unwrap(),
        ]);
        assert!(error.contains("is the"), "{kind:?}: {error}");
        assert!(error.contains("server up?"), "{kind:?}: {error}");
        runs.assert_no_canary();
    }
}

#[test]
fn install_agent_writes_and_enables_the_units() {
    let root = tempfile::tempdir().unwrap();
    let mut runs = Runs::new();
    runs.ok(&[
        "install-agent",
        "--root",
        root.path().to_str().unwrap(),
        "--binary",
        "/opt/reprov/bin/reprov",
    ]);
    let units = root.path().join("etc/systemd/system");
    let service = std::fs::read_to_string(units.join("reprov-agent.service")).unwrap();
    assert!(
        service.contains("ExecStart=/opt/reprov/bin/reprov agent"),
        "{service}"
    );
    let after = std::fs::read_to_string(units.join("reprov-after-boot.service")).unwrap();
    assert!(after.contains("ExecStart=/opt/reprov/bin/reprov after-boot"));
    assert!(std::fs::read_to_string(units.join("reprov-agent.timer"))
        .unwrap()
        .contains("OnUnitActiveSec="));
    for (wants, unit) in [
        ("timers.target.wants", "reprov-agent.timer"),
        ("multi-user.target.wants", "reprov-after-boot.service"),
    ] {
        let link = std::fs::read_link(units.join(wants).join(unit)).unwrap();
        assert_eq!(link, Path::new("/etc/systemd/system").join(unit));
    }
    let refused = runs.fails(&[
        "install-agent",
        "--root",
        root.path().to_str().unwrap(),
        "--binary",
        "reprov",
    ]);
    assert!(refused.contains("absolute path"), "{refused}");
}

/// `schedule create`, the recovery packs NOS, and after the boot back into NOS
/// `after-boot` uploads the image to the store named from model + serial, closes the job
/// and reports; `reprov image verify` accepts what landed on the server.
#[test]
fn schedule_create_then_after_boot_uploads_the_image() {
    let server = Server::start(Kind::Ftp, &[]);
    let config = server.config(Some("web"));
    let config = config.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
    let mut runs = Runs::new();
    let out = runs.ok(&[
        "schedule",
        "create",
        "--disk",
        a.disk_arg(),
        "--no-reboot",
        "--identity",
        a.identity_arg(),
    ]);
    assert!(
        out.contains("scheduled create Test_Appliance_SN-A.tar"),
        "{out}"
    );
    assert_eq!(a.system_state(), (false, true));
    let machine = Machine {
        model: Some("Test Appliance".into()),
        serial: Some("SN-A".into()),
        ..machine()
    };
    assert_eq!(runner::run(&a.disk, &machine).unwrap(), Outcome::Done);
    assert_eq!(a.job().map(|j| j.state), Some(State::Done));

    runs.ok(&[
        "after-boot",
        "--config",
        config,
        "--disk",
        a.disk_arg(),
        "--identity",
        a.identity_arg(),
    ]);
    let uploaded = server.file("Test_Appliance_SN-A.tar");
    assert!(uploaded.exists(), "the created image is on the store");
    runs.ok(&["image", "verify", uploaded.to_str().unwrap()]);
    assert_eq!(a.job(), None, "the job is closed");
    let (_, _, codes) = a.store_state();
    assert_in_order(
        &codes,
        &["R001", "R003", "R004", "R036", "R060", "R070", "R071"],
    );
    let status = std::fs::read_to_string(server.file("fleet/status/SN-A.toml")).unwrap();
    assert!(status.contains("state = \"idle\""), "{status}");
    assert!(status.contains("step = \"R071\""), "{status}");
    runs.assert_no_canary();
    assert_no_canary_in(&a.disk);
}

/// `schedule factory` picks the only image in factory/ on the data partition.
#[test]
fn schedule_factory_uses_the_data_partitions_image() {
    let dir = tempfile::tempdir().unwrap();
    let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
    let mut runs = Runs::new();
    let args = [
        "schedule",
        "factory",
        "--disk",
        a.disk_arg(),
        "--no-reboot",
        "--identity",
        a.identity_arg(),
    ];
    let err = runs.fails(&args);
    assert!(err.contains("0 images in factory/"), "{err}");
    assert_eq!(a.job(), None);
    {
        let mut disk = open_disk(&a.disk).unwrap();
        let part = disk.partition(Role::Data).unwrap();
        let data = reprov::store::Store::open(part).unwrap();
        data.write("factory/F.tar", &image_b()).unwrap();
        data.unmount().unwrap();
    }
    let out = runs.ok(&args);
    assert!(out.contains("scheduled factory F.tar"), "{out}");
    assert_eq!(a.system_state(), (false, true));
}

/// A server re-provisioned again and again from the store: every fetch and every safety
/// backup stays on the images partition (64 MiB here, room for three 18 MiB images), so
/// without housekeeping the third fetch filled it to the last cluster — and then not even
/// the job could be written. Each new image makes its own room: the oldest images no
/// job needs go (R005), the image the appliance runs now stays, every cycle's apply ends
/// done, and each took its safety backup.
#[test]
fn months_of_re_provisioning_never_fill_the_images_partition() {
    let server = Server::start(Kind::Http, &[]);
    let config = server.config(None);
    let config = config.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
    let mut runs = Runs::new();
    for i in 1..=5 {
        let name = format!("B{i}.tar");
        let image = image_of(&fat_nos(40 * MIB, &format!("B{i}"), 18 * MIB), "B");
        std::fs::write(server.file(&name), image).unwrap();
        runs.ok(&a.schedule_apply(&server.url(&name), config));
        assert_eq!(runner::run(&a.disk, &machine()).unwrap(), Outcome::Done);
        let job = a.job().unwrap();
        assert_eq!(
            (job.state, job.image.as_str()),
            (State::Done, name.as_str())
        );
        let (files, _, _) = a.store_state();
        assert!(files.contains(&name), "cycle {i}: {files:?}");
        assert!(
            !files.iter().any(|f| f.ends_with(".part")),
            "cycle {i}: {files:?}"
        );
        let listed = runs.ok(&["image", "list", "--disk", a.disk_arg()]);
        assert!(listed.contains(&name), "{listed}");
    }
    let (files, _, _) = a.store_state();
    assert!(!files.contains(&"B1.tar".to_string()), "{files:?}");
    let log = runs.ok(&["log", "--disk", a.disk_arg()]);
    let removed: Vec<&str> = log.lines().filter(|l| l.contains("R005")).collect();
    assert!(
        removed
            .iter()
            .any(|l| l.contains("B1.tar") && l.contains("the oldest image no job needs")),
        "{log}"
    );
    assert!(!log.contains("E10"), "{log}");
    // The last apply took its safety backup too: room was made for it as well.
    let backups = log.lines().filter(|l| l.contains("R037")).count();
    assert_eq!(backups, 5, "{log}");
}

/// An image that cannot fit even when every image no job needs is gone is refused
/// before a byte of it is fetched, and nothing is removed: the store's images, the job
/// and the disk outside the images partition stay as they were. `image remove` frees
/// room by hand, but not the image the job names while the job is open.
#[test]
fn an_image_the_images_partition_cannot_hold_is_refused_before_fetching() {
    let server = Server::start(Kind::Http, &[]);
    let config = server.config(None);
    let config = config.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
    let mut runs = Runs::new();
    let schedule = |runs: &mut Runs, name: &str, ok: bool| {
        let url = server.url(name);
        match ok {
            true => runs.ok(&a.schedule_apply(&url, config)),
            false => runs.fails(&a.schedule_apply(&url, config)),
        }
    };
    for (size, name, noise) in [(40, "B1.tar", 18), (40, "B2.tar", 18), (62, "huge.tar", 56)] {
        let image = image_of(&fat_nos(size * MIB, name, noise * MIB), "B");
        std::fs::write(server.file(name), image).unwrap();
    }
    schedule(&mut runs, "B1.tar", true);
    assert_eq!(runner::run(&a.disk, &machine()).unwrap(), Outcome::Done);
    std::fs::copy(server.file("B2.tar"), dir.path().join("B2.tar")).unwrap();
    runs.ok(&[
        "image",
        "add",
        dir.path().join("B2.tar").to_str().unwrap(),
        "--disk",
        a.disk_arg(),
    ]);
    let before = a.store_state().0;
    let outside = a.outside_images();
    let job = a.job();

    let err = schedule(&mut runs, "huge.tar", false);
    assert!(err.contains("huge.tar needs"), "{err}");
    assert!(err.contains("nothing was removed"), "{err}");
    assert!(err.contains("kept: huge.tar, B1.tar)"), "{err}");
    assert_eq!(a.store_state().0, before, "nothing removed, nothing left");
    assert_eq!(a.outside_images(), outside);
    assert_eq!(a.job(), job);
    assert_eq!(a.system_state(), (true, false), "not armed");

    // By hand: not the job's image while its job is open; any other one.
    runs.ok(&["job", "set", "--disk", a.disk_arg(), "--state", "pending"]);
    let err = runs.fails(&["image", "remove", "B1.tar", "--disk", a.disk_arg()]);
    assert!(err.contains("reprov job clear"), "{err}");
    runs.ok(&["job", "clear", "--disk", a.disk_arg()]);
    runs.ok(&["image", "remove", "B2.tar", "--disk", a.disk_arg()]);
    let err = runs.fails(&["image", "remove", "B2.tar", "--disk", a.disk_arg()]);
    assert!(err.contains("not on the images partition"), "{err}");
    runs.ok(&["image", "remove", "B1.tar", "--disk", a.disk_arg()]);
    schedule(&mut runs, "huge.tar", true);
}

/// An images partition filled to its last cluster (as an older reprov left it after a
/// fetch that did not fit, or a tool that knows nothing of the reserve): `schedule` first
/// gets back the room its own files need — the oldest image no job needs goes — and then
/// saves the identity, fetches (making room again) and arms.
#[test]
fn a_full_images_partition_gets_its_room_back() {
    let server = Server::start(Kind::Http, &[]);
    let config = server.config(None);
    let config = config.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = Appliance::new(dir.path(), "appliance-a", "SN-A", "10.0.2.15/24");
    {
        let mut disk = open_disk(&a.disk).unwrap();
        let store = disk.store().unwrap();
        store.write("images/x", b"x").unwrap();
        let free = store.free_bytes().unwrap();
        store
            .write("images/old.tar", &vec![7; usize::try_from(free).unwrap()])
            .unwrap();
        store.remove("images/x").unwrap();
        assert!(store.free_bytes().unwrap() < 64 << 10, "full");
        store.unmount().unwrap();
    }
    let image = image_of(&fat_nos(40 * MIB, "B", 18 * MIB), "B");
    std::fs::write(server.file("B.tar"), image).unwrap();
    let mut runs = Runs::new();
    runs.ok(&a.schedule_apply(&server.url("B.tar"), config));
    let (files, identity, codes) = a.store_state();
    assert_eq!(files, ["B.tar"]);
    assert!(identity.is_some());
    assert_in_order(&codes, &["R005", "R001", "R002", "R003", "R004"]);
    let log = runs.ok(&["log", "--disk", a.disk_arg()]);
    assert!(log.contains("old.tar"), "{log}");
}
