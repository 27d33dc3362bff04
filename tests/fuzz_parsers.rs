//! Property tests of every parser of untrusted input: the manifest and the image's tar
//! walk, the job, the identity, the new OS's network interfaces file, store.toml, fleet
//! desired states, the MBR and the appliance layout, the step log, FAT and ext4 metadata
//! (used-block capture, the images store), and the recovery console's typed input. Each takes valid samples and mutates
//! them (flipped, inserted and deleted bytes, truncation) as well as plain random bytes.
//! The property: no panic, an answer in bounded time and memory (a walk that loops fails
//! the per-case time limit).
//!
//! `REPROV_FUZZ_CASES` sets the cases per target (default 64, as `scripts/test` runs
//! them); `scripts/fuzz` runs thousands and prints the count per target.

mod common;

use std::io::Cursor;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use common::fixtures::{fat_nos, image_of, random_bytes};

/// How long one case may take before it counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(20);

fn cases() -> u32 {
    std::env::var("REPROV_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set { at, byte }),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        2 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Delete { at, len }),
        1 => any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ]
}

/// Applies edits to `sample`; positions wrap around its length. With `near`, positions
/// fall in the first `near` bytes (where the headers are) three times out of four.
fn mutated(sample: &[u8], edits: &[Edit], near: Option<usize>) -> Vec<u8> {
    let mut out = sample.to_vec();
    for (n, e) in edits.iter().enumerate() {
        if out.is_empty() {
            break;
        }
        let place = |at: usize, len: usize| match near {
            Some(near) if n % 4 != 3 => at % near.min(len),
            _ => at % len,
        };
        match e {
            Edit::Flip { at, bit } => {
                let i = place(*at, out.len());
                out[i] ^= 1 << bit;
            }
            Edit::Set { at, byte } => {
                let i = place(*at, out.len());
                out[i] = *byte;
            }
            Edit::Insert { at, bytes } => {
                let i = place(*at, out.len());
                out.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete { at, len } => {
                let i = place(*at, out.len());
                let end = (i + len).min(out.len());
                out.drain(i..end);
            }
            Edit::Truncate { at } => {
                let i = place(*at, out.len());
                out.truncate(i);
            }
        }
    }
    out
}

/// Runs `check` on `cases()` mutations of `sample` and as many random inputs, each in
/// bounded time; prints how many ran.
fn fuzz(target: &str, sample: &[u8], near: Option<usize>, check: impl Fn(&[u8])) {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop_oneof![
        4 => proptest::collection::vec(edit(), 1..8).prop_map(|edits| (edits, None)),
        1 => proptest::collection::vec(any::<u8>(), 0..2048).prop_map(|bytes| (Vec::new(), Some(bytes))),
    ];
    let ran = std::cell::Cell::new(0u64);
    let result = runner.run(&strategy, |(edits, random)| {
        let input = random.unwrap_or_else(|| mutated(sample, &edits, near));
        let start = Instant::now();
        check(&input);
        ran.set(ran.get() + 1);
        prop_assert!(
            start.elapsed() < CASE_LIMIT,
            "{target}: one case took {:?} (a loop?)",
            start.elapsed()
        );
        Ok(())
    });
    println!(
        "fuzz {target}: {} cases run, failures {}",
        ran.get(),
        u32::from(result.is_err())
    );
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A small image of a FAT partition (1 MiB chunks, some stored), made once.
fn sample_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| image_of(&fat_nos(3 << 20, "F", 300_000), "fuzz"))
}

#[test]
fn manifest() {
    let image = reprov::image::open(&mut Cursor::new(sample_image())).unwrap();
    let sample = image.manifest.to_toml();
    fuzz("manifest", sample.as_bytes(), Some(400), |input| {
        let _ = reprov::image::Manifest::parse(&text(input));
    });
}

#[test]
fn image_tar_walk_and_chunks() {
    // The manifest, the tar headers and the start of the first chunk.
    fuzz("image", sample_image(), Some(8192), |input| {
        let mut image = Cursor::new(input);
        if reprov::image::open(&mut image).is_ok() {
            let _ = reprov::image::verify(&mut image, reprov::io::Show::Quiet);
        }
    });
}

#[test]
fn job() {
    let job = reprov::store::Job::new(
        reprov::store::Kind::Apply,
        reprov::store::ImageName::new("b.tar").unwrap(),
        time::OffsetDateTime::UNIX_EPOCH,
    );
    let sample = job.start().unwrap().render();
    fuzz("job", sample.as_bytes(), None, |input| {
        if let Ok(job) = reprov::store::Job::parse_bytes(input) {
            // What parses renders to what parses to the same job.
            assert_eq!(reprov::store::Job::parse(&job.render()).unwrap(), job);
        }
    });
}

#[test]
fn identity() {
    let sample = "hostname = \"web-07\"\ndns = [\"10.0.2.3\"]\n\n[system]\nmodel = \"Acme\"\n\
                  serial = \"SN1\"\n\n[[interface]]\nmac = \"52:54:00:12:34:56\"\nname = \"eth0\"\n\
                  addresses = [\"10.0.2.77/24\", \"fd00::7/64\"]\ngateway4 = \"10.0.2.2\"\n";
    assert!(reprov::identity::parse(sample).is_ok());
    fuzz("identity", sample.as_bytes(), None, |input| {
        let _ = reprov::identity::parse_bytes(input);
    });
}

/// The new OS's `/etc/network/interfaces` comes with an image nobody here made: the
/// identity restore edits it whatever it holds, leaves the saved interfaces in it once,
/// and a second restore (a resumed job) changes nothing more.
#[test]
fn new_os_network_interfaces() {
    let identity = reprov::identity::parse(
        "hostname = \"web-07\"\ndns = [\"10.0.2.3\"]\n\n[[interface]]\n\
         mac = \"52:54:00:12:34:56\"\naddresses = [\"10.0.2.77/24\"]\ngateway4 = \"10.0.2.2\"\n",
    )
    .unwrap();
    let sample = "source /etc/network/interfaces.d/*\n\nauto lo eth0\niface lo inet loopback\n\
                  allow-hotplug ens3\niface ens3 inet dhcp\n\thostname x\nmapping eth1\n  script m\n\
                  iface br0 inet static\n    bridge_ports ens3\n    address 192.0.2.9/24\n";
    fuzz("network interfaces", sample.as_bytes(), None, |input| {
        let edited = reprov::identity::ifupdown::edit_interfaces(&text(input), &identity);
        let ours = edited.matches("\n# BEGIN reprov").count()
            + usize::from(edited.starts_with("# BEGIN reprov"));
        assert_eq!(ours, 1, "{edited}");
        assert_eq!(
            reprov::identity::ifupdown::edit_interfaces(&edited, &identity),
            edited
        );
    });
}

#[test]
fn store_config() {
    let sample = "url = \"ftp://192.0.2.1:2121\"\ndirectory = \"images\"\nuser = \"reprov\"\n\
                  password_file = \"/etc/reprov/password\"\ngroup = \"web\"\n";
    fuzz("store.toml", sample.as_bytes(), None, |input| {
        let _ = reprov::transfer::StoreConfig::parse(&text(input), "store.toml");
    });
}

#[test]
fn fleet_desired_state() {
    let sample = "kind = \"apply\"\nimage = \"B.tar\"\ngeneration = 7\npublished_at = \"2026-12-01T10:00:00Z\"\n";
    assert!(reprov::fleet::Desired::parse(sample.as_bytes(), "web.toml").is_ok());
    fuzz("fleet desired state", sample.as_bytes(), None, |input| {
        let _ = reprov::fleet::Desired::parse(input, "web.toml");
    });
}

#[test]
fn step_log() {
    let sample = "{\"time\":\"2026-11-25T12:00:00Z\",\"code\":\"R012\",\"message\":\"job-read\",\"detail\":\"apply b.tar\"}\n\
                  {\"time\":\"2026-11-25T12:00:01Z\",\"code\":\"E105\",\"message\":\"io-error\"}\n";
    fuzz("step log", sample.as_bytes(), None, |input| {
        let _ = reprov::store::parse_log(input);
    });
}

/// A small appliance disk in memory: the MBR and layout checks, and the images store.
fn sample_disk() -> &'static [u8] {
    static DISK: OnceLock<Vec<u8>> = OnceLock::new();
    DISK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        common::fixtures::small_disk(&path);
        std::fs::read(&path).unwrap()
    })
}

#[test]
fn mbr_and_layout() {
    let disk = sample_disk();
    fuzz("MBR and layout", &disk[..512], Some(512), |sector| {
        let mut fixed = [0u8; 512];
        let n = sector.len().min(512);
        fixed[..n].copy_from_slice(&sector[..n]);
        let _ = reprov::disk::Mbr::parse(&fixed);
        let mut whole = disk[..(4 << 20)].to_vec();
        whole[..512].copy_from_slice(&fixed);
        // The layout checks measure the disk: give it the sample's length, sparse.
        let _ = reprov::disk::ApplianceDisk::open(Cursor::new(whole), "fuzz");
    });
}

#[test]
fn images_store_fat() {
    // The images partition's FAT boot sector, FATs and root directory, mutated; then
    // what reprov reads there.
    let disk = sample_disk();
    let (start, len) = {
        let d = reprov::disk::ApplianceDisk::open(Cursor::new(disk.to_vec()), "sample").unwrap();
        d.range(reprov::disk::Role::Images)
    };
    let part = disk[start as usize..(start + len) as usize].to_vec();
    // The metadata lies in the first 2 MiB of this small FAT32.
    fuzz(
        "images store (FAT)",
        &part[..(2 << 20)],
        Some(64 << 10),
        |head| {
            let mut volume = part.clone();
            let n = head.len().min(volume.len());
            volume[..n].copy_from_slice(&head[..n]);
            if let Ok(store) = reprov::store::Store::open(Cursor::new(volume)) {
                let _ = store.read_job();
                let _ = store.list_images();
                let _ = store.read_log();
                let _ = store.read_identity_text();
                let _ = store.unmount();
            }
        },
    );
}

/// Byte ranges (start, length) of a volume.
type Regions = [(usize, usize); 5];

/// The images partition of [`sample_disk`] holding six images, and where to flip its
/// bits: the entries in use of its two FATs, its first directory and data clusters.
fn store_with_files() -> &'static (Vec<u8>, Regions) {
    static STORE: OnceLock<(Vec<u8>, Regions)> = OnceLock::new();
    STORE.get_or_init(|| {
        let disk = sample_disk();
        let d = reprov::disk::ApplianceDisk::open(Cursor::new(disk.to_vec()), "sample").unwrap();
        let (start, len) = d.range(reprov::disk::Role::Images);
        let mut part = disk[start as usize..(start + len) as usize].to_vec();
        let store = reprov::store::Store::open(Cursor::new(&mut part)).unwrap();
        for i in 0..6u8 {
            let data = vec![b'a' + i; 5000 + usize::from(i) * 3000];
            let name = reprov::store::ImageName::new(&format!("I{i}.tar")).unwrap();
            store
                .add_image(&name, &data[..], data.len() as u64)
                .unwrap();
        }
        store.unmount().unwrap();
        let le16 = |at: usize| usize::from(u16::from_le_bytes([part[at], part[at + 1]]));
        let le32 = |at: usize| u32::from_le_bytes(part[at..at + 4].try_into().unwrap()) as usize;
        let (reserved, fat) = (le16(0x0e) * 512, le32(0x24) * 512);
        // The first FAT's entries in use (the FAT fatfs reads) three times as often.
        let first = (reserved, 1024);
        let regions = [
            first,
            first,
            first,
            (reserved + fat, 1024),
            (reserved + 2 * fat, 64 << 10),
        ];
        (part, regions)
    })
}

/// The images in a store, as they read now (`None` where one does not read).
fn images_in(volume: &mut Vec<u8>) -> Option<Vec<Option<Vec<u8>>>> {
    let store = reprov::store::Store::open(Cursor::new(volume)).ok()?;
    let images = (0..6)
        .map(|i| store.read(&format!("images/I{i}.tar")).ok().flatten())
        .collect();
    Some(images)
}

#[test]
fn images_store_fat_writes() {
    // Bits flipped in the FATs and the first clusters of a store the last unmount left
    // clean (as a bad sector or another tool may): a write there either goes through
    // and leaves every image that read before as it was, or is refused with the volume
    // byte for byte as it was.
    let (part, regions) = store_with_files();
    let flips = proptest::collection::vec((0..5usize, any::<usize>(), 0..8u8), 1..5);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let (ran, refused) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    let result = runner.run(&flips, |flips| {
        let mut volume = part.clone();
        for (region, at, bit) in flips {
            let (start, len) = regions[region];
            volume[start + at % len] ^= 1 << bit;
        }
        ran.set(ran.get() + 1);
        let Some(before) = images_in(&mut volume.clone()) else {
            return Ok(());
        };
        let mut written = volume.clone();
        let wrote = (|| {
            let store = reprov::store::Store::open(Cursor::new(&mut written))?;
            store.write("reprov/probe", &[7; 70_000])?;
            store.log(reprov::store::Code::Verified, Some("probe"))?;
            store.unmount()
        })();
        match wrote {
            Err(e) => {
                refused.set(refused.get() + 1);
                prop_assert!(written == volume, "refused ({e}) after writing");
            }
            Ok(()) => {
                let after = images_in(&mut written).expect("the store mounts after a write");
                for (i, (was, is)) in before.iter().zip(&after).enumerate() {
                    prop_assert!(was.is_none() || was == is, "the write changed I{i}.tar");
                }
            }
        }
        Ok(())
    });
    println!(
        "fuzz images store (FAT) writes: {} cases run ({} refused), failures {}",
        ran.get(),
        refused.get(),
        u32::from(result.is_err())
    );
    if let Err(e) = result {
        panic!("fuzz images store (FAT) writes: {e}");
    }
}

#[test]
fn used_block_capture() {
    // ext4 (mkfs.ext4 when there, a FAT otherwise: both are what create reads) and FAT.
    let fat = fat_nos(4 << 20, "U", 100_000);
    let ext4 = ext4_sample();
    for (name, sample, fs) in [
        ("used blocks of FAT", fat, reprov::image::Filesystem::Fat),
        ("used blocks of ext4", ext4, reprov::image::Filesystem::Ext4),
    ] {
        fuzz(name, &sample[..(256 << 10)], Some(8192), |head| {
            let mut part = sample.clone();
            let n = head.len().min(part.len());
            part[..n].copy_from_slice(&head[..n]);
            let len = part.len() as u64;
            let mut source = Cursor::new(part);
            let _ = reprov::filesystem::detect(&mut source, len);
            let _ = reprov::filesystem::used_blocks(&mut source, len, fs);
        });
    }
}

/// A 4 MiB ext4 with a few files, made by mkfs.ext4 (a dependency of the tests).
fn ext4_sample() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext4.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let files = dir.path().join("root");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("a"), random_bytes(200_000)).unwrap();
    std::fs::write(files.join("b"), b"hello").unwrap();
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "1024", "-d"])
        .arg(&files)
        .arg(&path)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) runs");
    assert!(status.success());
    std::fs::read(&path).unwrap()
}

/// The recovery console fed what a person or a script might type (a session through
/// every menu, mutated, or random bytes) on a copy of a console disk: it answers and
/// returns, and without a `yes` line nothing is committed (the MBR is as it was). The
/// copy is made afresh after a case that typed `yes`.
#[test]
fn console_input() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.img");
    common::fixtures::console_disk(&master);
    let mbr = |disk: &std::path::Path| {
        let mut sector = [0; 512];
        std::io::Read::read_exact(&mut std::fs::File::open(disk).unwrap(), &mut sector).unwrap();
        sector
    };
    let before = mbr(&master);
    let machine = common::fixtures::machine();
    let session = b"1\n2\n6\n10\n1\n3\n1\nno\n4\nnos-copy\nno\n5\nno\n7\nno\n11\nhost-x\n10.0.2.9/24\nno\n8\nno\n9\nmaybe\n";
    let disk = dir.path().join("case.img");
    std::fs::copy(&master, &disk).unwrap();
    fuzz("console input", session, None, |input| {
        let mut out = Vec::new();
        let ended = reprov::recovery::console::Console::new(
            Cursor::new(input.to_vec()),
            &mut out,
            &disk,
            &machine,
        )
        .run();
        assert!(ended.is_ok(), "{ended:?}");
        let confirmed = input
            .split(|&b| b == b'\n')
            .any(|line| String::from_utf8_lossy(line).trim() == "yes");
        if confirmed {
            std::fs::copy(&master, &disk).unwrap();
        } else {
            assert!(mbr(&disk) == before, "the MBR changed with no yes typed");
        }
    });
}
