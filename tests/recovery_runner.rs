//! The recovery's job runner on sparse disk-image files: every job kind and every
//! refusal, checked from the outside as an operator would (the MBR, the job, the step
//! log, the files in the new NOS). The QEMU tests run the same code as PID 1.
//!
//! The disk of every test (sparse, 198 MiB):
//!
//! | slot | role   | size   | type | holds                                  |
//! |------|--------|--------|------|----------------------------------------|
//! | 1    | system | 34 MiB | 0x0C | (empty FAT32), visible and active      |
//! | 2    | NOS    | 40 MiB | 0x0C | appliance A: FAT with `appliance` = A  |
//! | —    | float  | 24 MiB |      |                                        |
//! | 3    | images | 64 MiB | 0x0C | `images/B.tar`, the job, A's identity  |
//! | 4    | data   | 34 MiB | 0x0C | `factory/F.tar` when a test puts it    |

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use common::fixtures::{fat_nos, image_of, machine};
use reprov::disk::{open_disk, Role};
use reprov::image;
use reprov::recovery::runner::{self, Machine, FACTORY_DIR};
use reprov::recovery::Outcome;
use reprov::store::{ImageName, Job, Kind, State, Store};

const MIB: u64 = 1 << 20;

const IDENTITY_A: &str = r#"
hostname = "appliance-a"

[[interface]]
mac = "52:54:00:12:34:56"
addresses = ["10.0.2.15/24"]
gateway4 = "10.0.2.2"
"#;

struct Scenario {
    _dir: tempfile::TempDir,
    disk: PathBuf,
}

impl Scenario {
    /// Appliance A on NOS, image B (of a `b_len` NOS) in the store, A's identity saved,
    /// a pending `apply B.tar` job, and the system partition visible and active.
    fn apply_b(b_len: u64) -> Scenario {
        Scenario::apply(&fat_nos(b_len, "B", 3 * MIB))
    }

    /// [`Scenario::apply_b`] with B's NOS given.
    fn apply(b: &[u8]) -> Scenario {
        let s = Scenario::blank();
        s.write_role(Role::Nos, &fat_nos(40 * MIB, "A", 0));
        s.add_image("B.tar", &image_of(b, "B"));
        s.with_store(|store| store.write_identity_text(IDENTITY_A.as_bytes()).unwrap());
        s.set_job(Kind::Apply, "B.tar");
        s.arm();
        s
    }

    fn blank() -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        common::fixtures::small_disk(&disk);
        Scenario { _dir: dir, disk }
    }

    fn with_store<T>(&self, f: impl FnOnce(&reprov::disk::Mounted<'_, File>) -> T) -> T {
        let mut disk = open_disk(&self.disk).unwrap();
        let store = disk.store().unwrap();
        let value = f(&store);
        store.unmount().unwrap();
        value
    }

    fn add_image(&self, name: &str, bytes: &[u8]) {
        self.with_store(|store| {
            store
                .add_image(&ImageName::new(name).unwrap(), bytes, bytes.len() as u64)
                .unwrap()
        });
    }

    fn set_job(&self, kind: Kind, image: &str) {
        let job = Job::new(
            kind,
            ImageName::new(image).unwrap(),
            time::OffsetDateTime::now_utc(),
        );
        self.with_store(|store| store.write_job(&job).unwrap());
    }

    fn job(&self) -> Job {
        self.with_store(|store| store.read_job().unwrap().expect("a job"))
    }

    fn log_codes(&self) -> Vec<String> {
        self.with_store(|store| store.read_log().unwrap())
            .entries
            .into_iter()
            .map(|e| e.code)
            .collect()
    }

    /// As `reprov schedule` leaves it: system visible and active.
    fn arm(&self) {
        let mut disk = open_disk(&self.disk).unwrap();
        disk.unhide_system();
        disk.activate(Role::System);
        disk.commit().unwrap();
    }

    fn range(&self, role: Role) -> (u64, u64) {
        open_disk(&self.disk).unwrap().range(role)
    }

    fn read_role(&self, role: Role) -> Vec<u8> {
        let (start, len) = self.range(role);
        let mut file = File::open(&self.disk).unwrap();
        file.seek(SeekFrom::Start(start)).unwrap();
        let mut bytes = vec![0; usize::try_from(len).unwrap()];
        file.read_exact(&mut bytes).unwrap();
        bytes
    }

    fn write_role(&self, role: Role, bytes: &[u8]) {
        let (start, len) = self.range(role);
        assert!(bytes.len() as u64 <= len);
        let mut file = OpenOptions::new().write(true).open(&self.disk).unwrap();
        file.seek(SeekFrom::Start(start)).unwrap();
        file.write_all(bytes).unwrap();
    }

    /// A file in the FAT file system of NOS.
    fn nos_file(&self, path: &str) -> Option<String> {
        let mut nos = Cursor::new(self.read_role(Role::Nos));
        let fs = fatfs::FileSystem::new(&mut nos, fatfs::FsOptions::new()).unwrap();
        let mut text = String::new();
        let mut file = fs.root_dir().open_file(path).ok()?;
        file.read_to_string(&mut text).unwrap();
        Some(text)
    }

    fn run(&self) -> reprov::Result<Outcome> {
        runner::run(&self.disk, &machine())
    }

    /// [`Scenario::run`] on a recovery that trusts `keys`.
    fn run_trusting(&self, keys: reprov::trust::Keys) -> reprov::Result<Outcome> {
        let machine = Machine {
            keys: Ok(keys),
            ..machine()
        };
        runner::run(&self.disk, &machine)
    }

    /// (type, active) of the system and NOS entries.
    fn boot_state(&self) -> ((u8, bool), (u8, bool)) {
        let disk = open_disk(&self.disk).unwrap();
        let state = |role| {
            let e = disk.entry(role);
            (e.ptype.0, e.is_active())
        };
        (state(Role::System), state(Role::Nos))
    }
}

const RECOVERY_ARMED: ((u8, bool), (u8, bool)) = ((0x0C, true), (0x0C, false));
const NOS_BOOTS: ((u8, bool), (u8, bool)) = ((0x1C, false), (0x0C, true));
/// After an image was written: NOS has the image's type (the test appliances are FAT16,
/// 0x0E), where the disk was laid out with 0x0C.
const IMAGE_BOOTS: ((u8, bool), (u8, bool)) = ((0x1C, false), (0x0E, true));
const IMAGE_ARMED: ((u8, bool), (u8, bool)) = ((0x0C, true), (0x0E, false));

fn assert_in_order(codes: &[String], expected: &[&str]) {
    let mut rest = codes.iter();
    for code in expected {
        assert!(
            rest.any(|c| c == code),
            "step {code} missing or out of order in the log: {codes:?}"
        );
    }
}

#[test]
fn apply_writes_b_restores_a_identity_and_commits() {
    let s = Scenario::apply_b(40 * MIB);
    assert_eq!(s.boot_state(), RECOVERY_ARMED);

    assert_eq!(s.run().unwrap(), Outcome::Done);

    assert_eq!(
        s.boot_state(),
        IMAGE_BOOTS,
        "system hidden and inactive, NOS active"
    );
    assert_eq!(s.nos_file("appliance").as_deref(), Some("B"));
    assert_eq!(s.nos_file("etc/hostname").as_deref(), Some("appliance-a\n"));
    let network = s
        .nos_file("etc/systemd/network/00-reprov-525400123456.network")
        .expect("a networkd file for A's interface");
    assert!(network.contains("Address=10.0.2.15/24"), "{network}");
    let job = s.job();
    assert_eq!(job.state, State::Done);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.checkpoint, 40, "every 1 MiB chunk durable");
    assert_in_order(
        &s.log_codes(),
        &[
            "R012", "R020", "R030", "R031", "R032", "R041", "R040", "R050", "R051", "R060",
        ],
    );
    // Each pass over the image's data says how long it took.
    let entries = s.with_store(|store| store.read_log().unwrap()).entries;
    let detail = |code: &str| {
        let entry = entries.iter().find(|e| e.code == code).unwrap();
        entry.detail.clone().unwrap_or_default()
    };
    // How many durations (`3.2 s`) a detail gives.
    let durations = |text: &str| {
        let words: Vec<&str> = text.split([' ', '(', ')', ',']).collect();
        let timed = words
            .windows(2)
            .filter(|w| w[1] == "s" && w[0].parse::<f64>().is_ok());
        timed.count()
    };
    let validated = detail("R020");
    assert_eq!(
        durations(&validated),
        3,
        "all, manifest, every chunk: {validated}"
    );
    assert_eq!(durations(&detail("R032")), 1, "{}", detail("R032"));
    assert_eq!(durations(&detail("R041")), 1, "{}", detail("R041"));
}

#[test]
fn a_bigger_image_grows_nos_into_the_float_and_nothing_else_moves() {
    let s = Scenario::apply_b(56 * MIB);
    let before: Vec<_> = [Role::System, Role::Images, Role::Data]
        .map(|r| s.range(r))
        .into();
    let (nos_start, _) = s.range(Role::Nos);

    assert_eq!(s.run().unwrap(), Outcome::Done);

    assert_eq!(s.range(Role::Nos), (nos_start, 56 * MIB));
    assert_eq!(open_disk(&s.disk).unwrap().float_len(), 8 * MIB);
    let after: Vec<_> = [Role::System, Role::Images, Role::Data]
        .map(|r| s.range(r))
        .into();
    assert_eq!(before, after);
    assert_eq!(s.nos_file("appliance").as_deref(), Some("B"));
    assert_in_order(&s.log_codes(), &["R020", "R021", "R030", "R060"]);
}

/// Every refusal comes before the first write: the job fails with its code, NOS is not
/// touched, and the commit hands the machine back to A.
#[test]
fn refusals_leave_nos_untouched_and_a_boots_again() {
    type Breaker = fn(&Scenario);
    let cases: [(&str, Breaker, &str, &str); 6] = [
        (
            "image too big for NOS + float",
            |s| s.add_image("B.tar", &image_of(&fat_nos(72 * MIB, "B", 0), "B")),
            "E104",
            "room for only 64.0 MiB",
        ),
        (
            "corrupted chunk in the middle",
            |s| {
                let mut bytes = image_of(&fat_nos(40 * MIB, "B", 3 * MIB), "B");
                let middle = bytes.len() / 2;
                for b in &mut bytes[middle..middle + 64] {
                    *b ^= 0x5A;
                }
                s.add_image("B.tar", &bytes);
            },
            "E103",
            "chunk",
        ),
        (
            "the float NOS would grow over holds data",
            |s| {
                let (nos_start, nos_len) = s.range(Role::Nos);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&s.disk)
                    .unwrap();
                file.seek(SeekFrom::Start(nos_start + nos_len + 8 * MIB))
                    .unwrap();
                file.write_all(&vec![0xA5; 3 * MIB as usize]).unwrap();
                s.add_image("B.tar", &image_of(&fat_nos(56 * MIB, "B", 0), "B"));
            },
            "E113",
            "holds 3.0 MiB of non-zero data at float offsets 0x800000–0xb00000",
        ),
        (
            "image missing",
            |s| s.add_image("C.tar", &image_of(&fat_nos(40 * MIB, "C", 0), "C")),
            "E102",
            "B.tar",
        ),
        (
            "not an image",
            |s| s.add_image("B.tar", &vec![7u8; 3 * MIB as usize]),
            "E103",
            "not a reprov image",
        ),
        (
            "bad saved identity",
            |s| {
                s.add_image("B.tar", &image_of(&fat_nos(40 * MIB, "B", 0), "B"));
                s.with_store(|store| {
                    store
                        .write_identity_text(b"hostname = \"bad;name\"\n")
                        .unwrap()
                });
            },
            "E106",
            "hostname",
        ),
    ];
    // Each also after a start that was cut before NOS was written (a power cut during
    // validation): NOS is as fresh as for a pending job, so nothing changes.
    let cases = cases.iter().flat_map(|&(what, breaker, code, message)| {
        [
            (what, breaker, code, message, false),
            (what, breaker, code, message, true),
        ]
    });
    for (what, breaker, code, message, cut) in cases {
        let s = Scenario::blank();
        s.write_role(Role::Nos, &fat_nos(40 * MIB, "A", 0));
        s.with_store(|store| store.write_identity_text(IDENTITY_A.as_bytes()).unwrap());
        breaker(&s);
        s.set_job(Kind::Apply, "B.tar");
        if cut {
            let started = s.job().start().unwrap();
            s.with_store(|store| store.write_job(&started).unwrap());
        }
        s.arm();
        let nos_before = s.read_role(Role::Nos);

        assert_eq!(s.run().expect(what), Outcome::RolledBack, "{what}");

        assert_eq!(s.boot_state(), NOS_BOOTS, "{what}: A boots again");
        assert!(
            s.read_role(Role::Nos) == nos_before,
            "{what}: NOS was written"
        );
        let job = s.job();
        assert_eq!(job.state, State::Failed, "{what}");
        let last_error = job.last_error.unwrap();
        assert!(last_error.contains(message), "{what}: {last_error}");
        assert!(
            last_error.contains("previous appliance boots again"),
            "{what}"
        );
        assert_eq!(
            job.backup_image, None,
            "{what}: no backup before validation"
        );
        assert_in_order(&s.log_codes(), &[code, "R080", "R081", "R050", "R051"]);
        // A failed job is not retried by itself: the next boot reports it and waits.
        let again = s.run().expect_err(what).to_string();
        assert!(again.contains("failed"), "{what}: {again}");
        assert!(
            s.read_role(Role::Nos) == nos_before,
            "{what}: NOS was written"
        );
    }
}

/// A recovery with a trusted key applies only what that key signed: every way to break
/// a signed image is refused before NOS is touched, and A boots again.
#[test]
fn a_recovery_with_trusted_keys_refuses_untrusted_images_before_nos_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::signed::TestKeys::new(dir.path());
    let b = fat_nos(8 * MIB, "B", 3 * MIB);
    let good = common::signed::signed(&image_of(&b, "B"), &keys.ours);
    let with_job_for = |bytes: &[u8]| {
        let s = Scenario::blank();
        s.write_role(Role::Nos, &fat_nos(40 * MIB, "A", 0));
        s.with_store(|store| store.write_identity_text(IDENTITY_A.as_bytes()).unwrap());
        s.add_image("B.tar", bytes);
        s.set_job(Kind::Apply, "B.tar");
        s.arm();
        s
    };
    for (what, bytes, refusal) in common::signed::attacks(&keys, &b, &good) {
        let s = with_job_for(&bytes);
        let nos_before = s.read_role(Role::Nos);

        assert_eq!(
            s.run_trusting(keys.trusted()).expect(what),
            Outcome::RolledBack,
            "{what}"
        );

        assert!(
            s.read_role(Role::Nos) == nos_before,
            "{what}: NOS was written"
        );
        assert_eq!(s.boot_state(), NOS_BOOTS, "{what}: A boots again");
        let job = s.job();
        assert_eq!(job.state, State::Failed, "{what}");
        let last_error = job.last_error.unwrap();
        assert!(last_error.contains(refusal), "{what}: {last_error}");
        // The signature is checked first; a forged chunk is found by the whole check.
        let code = if refusal.contains("SHA-256") {
            "E103"
        } else {
            "E115"
        };
        assert_in_order(&s.log_codes(), &[code, "R080", "R081", "R050", "R051"]);
        assert_eq!(
            job.backup_image, None,
            "{what}: no backup of an untrusted job"
        );
    }

    // The signed image applies, and the step log says who signed it.
    let s = with_job_for(&good);
    assert_eq!(s.run_trusting(keys.trusted()).unwrap(), Outcome::Done);
    assert_eq!(s.nos_file("appliance").as_deref(), Some("B"));
    let validated = s
        .with_store(|store| store.read_log().unwrap())
        .entries
        .into_iter()
        .find(|e| e.code == "R020")
        .unwrap();
    let detail = validated.detail.unwrap_or_default();
    assert!(
        detail.contains(&format!("signed by trusted key {}", keys.ours.key_id)),
        "{detail}"
    );
}

#[test]
fn a_job_cut_while_committing_just_commits_again() {
    let s = Scenario::apply_b(40 * MIB);
    let mut job = s.job().start().unwrap();
    job = job.commit_started().unwrap();
    s.with_store(|store| store.write_job(&job).unwrap());
    let nos_before = s.read_role(Role::Nos);

    assert_eq!(s.run().unwrap(), Outcome::Done);

    assert_eq!(s.boot_state(), NOS_BOOTS);
    assert!(
        s.read_role(Role::Nos) == nos_before,
        "NOS is not written again"
    );
    assert_eq!(s.job().state, State::Done);
}

/// An images partition damaged some way no power cut explains (B's chain runs into a
/// free cluster, though the volume says it was unmounted cleanly): recovery stops at
/// the job's first write, saying so, and the disk is as it was, A still on NOS.
#[test]
fn a_damaged_images_partition_stops_the_job_before_anything_is_written() {
    let s = Scenario::apply_b(40 * MIB);
    let (images_at, _) = open_disk(&s.disk).unwrap().range(Role::Images);
    common::fixtures::free_a_cluster_of_the_biggest_file(&s.disk, images_at);
    let before = std::fs::read(&s.disk).unwrap();

    let error = s.run().unwrap_err().to_string();

    assert!(
        error.contains("damaged") && error.contains("fsck.vfat"),
        "{error}"
    );
    assert!(
        std::fs::read(&s.disk).unwrap() == before,
        "the disk changed"
    );
}

#[test]
fn a_job_cut_while_running_resumes_from_its_checkpoint() {
    let b = fat_nos(40 * MIB, "B", 3 * MIB);
    let s = Scenario::apply(&b);
    // As a cut leaves it: running, the first 10 chunks of B durably on NOS.
    s.write_role(Role::Nos, &b[..(10 * MIB) as usize]);
    let job = s.job().start().unwrap().checkpoint(10).unwrap();
    s.with_store(|store| store.write_job(&job).unwrap());

    assert_eq!(s.run().unwrap(), Outcome::Done);

    assert_eq!(s.boot_state(), IMAGE_BOOTS);
    assert_eq!(s.nos_file("appliance").as_deref(), Some("B"));
    assert_eq!(s.nos_file("etc/hostname").as_deref(), Some("appliance-a\n"));
    let job = s.job();
    assert_eq!((job.state, job.attempts), (State::Done, 2));
}

#[test]
fn factory_applies_the_image_on_the_data_partition() {
    let s = Scenario::blank();
    s.write_role(Role::Nos, &fat_nos(40 * MIB, "A", 0));
    let factory = image_of(&fat_nos(40 * MIB, "F", 0), "F");
    {
        let mut disk = open_disk(&s.disk).unwrap();
        let data = disk.partition(Role::Data).unwrap();
        let store = Store::open(data).unwrap();
        let mut file = store.create_file(&format!("{FACTORY_DIR}/F.tar")).unwrap();
        file.write_all(&factory).unwrap();
        file.flush().unwrap();
        drop(file);
        store.unmount().unwrap();
    }
    s.set_job(Kind::Factory, "F.tar");
    s.arm();

    assert_eq!(s.run().unwrap(), Outcome::Done);

    assert_eq!(s.boot_state(), IMAGE_BOOTS);
    assert_eq!(s.nos_file("appliance").as_deref(), Some("F"));
    assert_eq!(s.nos_file("etc/hostname").as_deref(), Some("appliance-f\n"));
}

#[test]
fn create_packs_nos_into_the_store_and_boots_it_again() {
    let s = Scenario::blank();
    let a = fat_nos(40 * MIB, "A", MIB);
    s.write_role(Role::Nos, &a);
    s.set_job(Kind::Create, "A.tar");
    s.arm();
    let nos_before = s.read_role(Role::Nos);

    assert_eq!(s.run().unwrap(), Outcome::Done);

    assert_eq!(s.boot_state(), NOS_BOOTS);
    assert!(
        s.read_role(Role::Nos) == nos_before,
        "create only reads NOS"
    );
    let manifest = s.with_store(|store| {
        let mut image = store.open_image(&ImageName::new("A.tar").unwrap()).unwrap();
        image::verify(&mut image, reprov::io::Show::Quiet).unwrap()
    });
    assert_eq!(manifest.source_size, 40 * MIB);
    // Applied elsewhere, it is A again.
    let mut copy = Cursor::new(vec![0xEEu8; (40 * MIB) as usize]);
    let bytes = s.with_store(|store| {
        let mut image = store.open_image(&ImageName::new("A.tar").unwrap()).unwrap();
        let mut bytes = Vec::new();
        image.read_to_end(&mut bytes).unwrap();
        bytes
    });
    image::apply(
        &mut Cursor::new(bytes),
        &mut copy,
        &mut image::ApplyOptions::default(),
    )
    .unwrap();
    assert!(copy.into_inner() == nos_before);
    assert_in_order(&s.log_codes(), &["R035", "R036", "R050", "R051", "R060"]);
}

/// A create on an images partition that holds an old image no job needs and a file of
/// the operator's: the old image makes room (R005) and the create is done. With the
/// operator's file alone taking too much, the create is tried, fails at the full
/// partition, and leaves nothing of itself: the job ends failed saying the partition is
/// full, and A boots again. The job and the step log were still written: images never
/// take the partition's last few MiB.
#[test]
fn a_create_makes_room_or_fails_leaving_no_partial_image() {
    for (old_image, operator_file) in [(true, 20 * MIB), (false, 30 * MIB)] {
        let s = Scenario::blank();
        s.write_role(Role::Nos, &fat_nos(40 * MIB, "A", 36 * MIB));
        if old_image {
            s.add_image("old.tar", &image_of(&fat_nos(40 * MIB, "O", 20 * MIB), "O"));
        }
        let operator_file = vec![1; usize::try_from(operator_file).unwrap()];
        s.with_store(|store| store.write("operator/keep.bin", &operator_file).unwrap());
        s.set_job(Kind::Create, "A.tar");
        s.arm();
        let nos_before = s.read_role(Role::Nos);

        let outcome = s.run().unwrap();

        assert_eq!(s.boot_state(), NOS_BOOTS, "A boots again");
        assert!(s.read_role(Role::Nos) == nos_before);
        let job = s.job();
        let files = s.with_store(|store| store.list("images").unwrap());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        if old_image {
            assert_eq!((outcome, job.state), (Outcome::Done, State::Done));
            assert_eq!(names, ["A.tar"]);
            assert_in_order(&s.log_codes(), &["R035", "R005", "R036", "R060"]);
        } else {
            assert_eq!((outcome, job.state), (Outcome::RolledBack, State::Failed));
            let why = job.last_error.unwrap_or_default();
            assert!(why.contains("the partition is full"), "{why}");
            assert!(names.is_empty(), "{names:?}");
            assert_in_order(&s.log_codes(), &["R035", "E105", "R081", "R051"]);
        }
        assert!(
            s.with_store(|store| store.read("operator/keep.bin").unwrap()) == Some(operator_file)
        );
    }
}

#[test]
fn create_names_the_image_from_model_and_serial() {
    let s = Scenario::blank();
    s.write_role(Role::Nos, &fat_nos(40 * MIB, "A", 0));
    s.set_job(Kind::Create, "A.tar");
    s.arm();
    let machine = Machine {
        model: Some("Acme Box 3".into()),
        serial: Some("SN0042".into()),
        ..machine()
    };

    assert_eq!(runner::run(&s.disk, &machine).unwrap(), Outcome::Done);

    let names: Vec<String> = s
        .with_store(|store| store.list_images().unwrap())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let expected = format!(
        "{}.tar",
        reprov::identity::default_image_name("Acme Box 3", "SN0042")
    );
    assert_eq!(names, vec![expected]);
}

#[test]
fn no_job_is_no_job() {
    let s = Scenario::blank();
    s.arm();
    assert_eq!(s.run().unwrap(), Outcome::NoJob);
    assert_eq!(s.boot_state(), RECOVERY_ARMED);
    assert_eq!(s.log_codes(), vec!["E100".to_string()]);
}

#[test]
fn a_checkpoint_that_lies_is_caught_by_the_read_back_before_the_commit() {
    let s = Scenario::apply_b(40 * MIB);
    // The job claims 10 chunks are written, but NOS still holds A there.
    let mut job = s.job().start().unwrap().checkpoint(10).unwrap();
    job.nos_written = true;
    s.with_store(|store| store.write_job(&job).unwrap());

    // A resume has no backup and this disk no factory image: nothing to roll back to,
    // so recovery reboots to try again.
    assert_eq!(s.run().unwrap(), Outcome::Retry);

    assert_eq!(s.boot_state(), IMAGE_ARMED, "never committed");
    assert_in_order(&s.log_codes(), &["E109", "R080", "E111", "E112"]);
    let job = s.job();
    assert_eq!(job.state, State::Running);
    assert!(job.last_error.unwrap().contains("reads back with CRC32"));
}

/// B whose `/etc/hostname` is a directory: the identity restore fails after the whole
/// image is written and read back, as an I/O error late in the apply would.
fn b_that_refuses_the_identity() -> Vec<u8> {
    common::fixtures::with_hostname_dir(fat_nos(40 * MIB, "B", 3 * MIB))
}

fn put_factory(s: &Scenario, name: &str, bytes: &[u8]) {
    let mut disk = open_disk(&s.disk).unwrap();
    let data = disk.partition(Role::Data).unwrap();
    let store = Store::open(data).unwrap();
    let mut file = store.create_file(&format!("{FACTORY_DIR}/{name}")).unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    drop(file);
    store.unmount().unwrap();
}

fn set_backup(s: &Scenario, backup: bool) {
    let mut job = s.job();
    job.backup = backup;
    s.with_store(|store| store.write_job(&job).unwrap());
}

#[test]
fn an_apply_failing_after_the_write_brings_a_back_from_the_safety_backup() {
    let s = Scenario::apply(&b_that_refuses_the_identity());
    put_factory(&s, "F.tar", &image_of(&fat_nos(40 * MIB, "F", 0), "F"));
    let a = s.read_role(Role::Nos);

    assert_eq!(s.run().unwrap(), Outcome::RolledBack);

    // The backup carries the type NOS had: A comes back with it.
    assert_eq!(s.boot_state(), NOS_BOOTS, "A boots again, with its type");
    assert!(s.read_role(Role::Nos) == a, "NOS is A again, byte for byte");
    let job = s.job();
    assert_eq!(job.state, State::Failed);
    assert_eq!(
        job.backup_image.as_ref().map(ImageName::as_str),
        Some("previous.tar")
    );
    let last_error = job.last_error.unwrap();
    assert!(last_error.contains("hostname"), "{last_error}");
    assert!(
        last_error.contains("rolled back to the previous appliance"),
        "{last_error}"
    );
    assert_in_order(
        &s.log_codes(),
        &[
            "R020", "R037", "R030", "R032", "R041", "E106", "R080", "R030", "R082", "R051",
        ],
    );
}

#[test]
fn without_a_backup_the_factory_image_comes_back_with_a_identity() {
    let s = Scenario::apply(&b_that_refuses_the_identity());
    set_backup(&s, false);
    put_factory(&s, "F.tar", &image_of(&fat_nos(40 * MIB, "F", 0), "F"));

    assert_eq!(s.run().unwrap(), Outcome::RolledBack);

    assert_eq!(s.boot_state(), IMAGE_BOOTS);
    assert_eq!(s.nos_file("appliance").as_deref(), Some("F"));
    assert_eq!(s.nos_file("etc/hostname").as_deref(), Some("appliance-a\n"));
    let job = s.job();
    assert_eq!((job.state, job.backup_image), (State::Failed, None));
    assert!(job.last_error.unwrap().contains("factory image (F.tar)"));
    assert_in_order(&s.log_codes(), &["R038", "E106", "R080", "R083", "R051"]);
}

#[test]
fn with_neither_backup_nor_factory_the_machine_stays_in_recovery() {
    let s = Scenario::apply(&b_that_refuses_the_identity());
    set_backup(&s, false);

    // Nothing to roll back to: a fresh boot may cure what this one could not, so
    // recovery reboots into itself to try again — max_attempts starts in all.
    let limit = s.job().max_attempts;
    for attempt in 1..limit {
        assert_eq!(s.run().unwrap(), Outcome::Retry, "attempt {attempt}");
        let job = s.job();
        assert_eq!((job.state, job.attempts), (State::Running, attempt));
        assert!(job.last_error.unwrap().contains("no factory image"));
        assert_eq!(s.boot_state(), IMAGE_ARMED);
    }
    let error = s.run().unwrap_err().to_string();

    assert!(error.contains("hostname"), "{error}");
    assert_eq!(s.boot_state(), IMAGE_ARMED);
    let job = s.job();
    assert_eq!(
        (job.state, job.attempts, job.failures),
        (State::Failed, limit, limit)
    );
    assert!(job.last_error.unwrap().contains("no factory image"));
    let codes = s.log_codes();
    assert_in_order(
        &codes,
        &["E106", "R080", "E111", "E112", "E106", "E111", "E112"],
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "E112").count() as u32,
        limit - 1
    );
    assert_eq!(codes.last().map(String::as_str), Some("E111"));
}

/// As starts that each died mid-write leave a job: B half on NOS, A in the backup.
fn cut_short(starts: u32) -> (Scenario, Vec<u8>) {
    let a = fat_nos(40 * MIB, "A", 0);
    let b = fat_nos(40 * MIB, "B", 3 * MIB);
    let s = Scenario::apply(&b);
    s.add_image("previous.tar", &image_of(&a, "previous"));
    s.write_role(Role::Nos, &b[..(10 * MIB) as usize]);
    let mut job = s.job().start().unwrap().checkpoint(10).unwrap();
    job.attempts = starts;
    job.nos_written = true;
    job.backup_image = Some(ImageName::new("previous.tar").unwrap());
    s.with_store(|store| store.write_job(&job).unwrap());
    (s, a)
}

/// Power cuts are not failures: three cut starts (more than `max_attempts`) resume and
/// finish the job on B.
#[test]
fn starts_cut_short_do_not_count_as_failed_attempts() {
    let (s, _) = cut_short(3);
    assert_eq!(s.run().unwrap(), Outcome::Done);
    assert_eq!(s.boot_state(), IMAGE_BOOTS);
    assert_eq!(s.nos_file("appliance").as_deref(), Some("B"));
    let job = s.job();
    assert_eq!((job.state, job.attempts, job.failures), (State::Done, 4, 0));
}

#[test]
fn a_job_cut_short_too_often_stops_and_restores_the_previous_appliance() {
    let (s, a) = cut_short(reprov::store::MAX_UNFINISHED_STARTS + 1);

    assert_eq!(s.run().unwrap(), Outcome::RolledBack);

    assert_eq!(s.boot_state(), IMAGE_BOOTS);
    assert!(s.read_role(Role::Nos) == a, "NOS is A again");
    let job = s.job();
    assert_eq!(job.state, State::Failed);
    let error = job.last_error.unwrap();
    assert!(
        error.contains("started 21 times without finishing: 0 failed"),
        "{error}"
    );
    assert!(
        error.contains("cut short by power cuts or crashes (the limit is 20)"),
        "{error}"
    );
    assert_in_order(&s.log_codes(), &["E110", "R080", "R082", "R051"]);
}
