//! Real Debian appliances for the QEMU tests (qemu/debian-rootfs, qemu/debian-nos):
//! bookworm with systemd, the static reprov and its agent units, an ext4 NOS booting
//! through extlinux from its own partition boot sector.
//!
//! | appliance | application | NOS | network (its own) | host name |
//! |---|---|---|---|---|
//! | A | nginx: a page naming the web appliance | 1024 MiB ext4 | systemd-networkd: static 10.0.2.77/24, gw 10.0.2.2, DNS 10.0.2.3 | `web-07` |
//! | B | dnsmasq: `whoami.appliance.internal` TXT | 768 MiB ext4 | ifupdown (`/etc/network/interfaces` as debian-installer writes it): DHCP | `appliance-dns` |
//!
//! Both carry `/etc/reprov/store.toml` naming the store at [`STORE_URL`] (a guest port
//! the test forwards to its HTTP server) with the test user and password, fleet group
//! `web`, and `/etc/hosts` lines of their application (`10.0.2.50 db.appliance.internal`)
//! that a re-provisioning must keep. Built once per test binary; the slow part (the
//! root file systems, by mmdebstrap) is cached in /var/cache/reprov across runs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::fixtures::{self, reprov};
use super::servers::{write_password, CANARY, USER};

/// Where the appliances find their store: [`super::qemu::HOST`] on this guest port.
pub const STORE_PORT: u16 = 8000;
pub const STORE_URL: &str = "http://10.0.2.100:8000";
/// A's identity, as its operator set it up.
pub const A_HOSTNAME: &str = "web-07";
pub const A_ADDRESS: &str = "10.0.2.77/24";
pub const A_GATEWAY: &str = "10.0.2.2";
pub const A_DNS: &str = "10.0.2.3";
/// What each application answers.
pub const WEB_PAGE: &str = "served by the web appliance (nginx)";
pub const DNS_ANSWER: &str = "served by the dns appliance (dnsmasq)";
/// NOS sizes.
pub const A_NOS_MIB: u64 = 1024;
pub const B_NOS_MIB: u64 = 768;

pub struct Debian {
    /// A's NOS partition image.
    pub nos_a: PathBuf,
    /// B's image (`reprov image create` of its NOS).
    pub image_b: PathBuf,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The static reprov the appliances carry.
pub fn static_reprov() -> String {
    fixtures::run(&root().join("scripts/build-static"), &[])
}

/// Built on first use, once per test binary.
pub fn artefacts() -> &'static Debian {
    static BUILT: OnceLock<Debian> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clearing the Debian directory");
        }
        std::fs::create_dir_all(&dir).unwrap();
        let started = std::time::Instant::now();
        let password = dir.join("store.pass");
        write_password(&password, CANARY);
        let bin = static_reprov();
        let nos = |app: &str, name: &str, mib: u64, extra: &[&str]| {
            let out = dir.join(name);
            let size = mib.to_string();
            let mut args = vec![app, s(&out), &size];
            args.extend_from_slice(&[
                "--store",
                STORE_URL,
                "--user",
                USER,
                "--password-file",
                s(&password),
                "--group",
                "web",
            ]);
            args.extend_from_slice(extra);
            let out_status = std::process::Command::new(root().join("qemu/debian-nos"))
                .args(&args)
                .env("REPROV_BIN", &bin)
                .output()
                .expect("running qemu/debian-nos");
            assert!(
                out_status.status.success(),
                "qemu/debian-nos {args:?}: {}",
                String::from_utf8_lossy(&out_status.stderr)
            );
            out
        };
        let nos_a = nos(
            "web",
            "nos-A.img",
            A_NOS_MIB,
            &[
                "--hostname",
                A_HOSTNAME,
                "--address",
                A_ADDRESS,
                "--gateway",
                A_GATEWAY,
                "--dns",
                A_DNS,
            ],
        );
        let nos_b = nos("dns", "nos-B.img", B_NOS_MIB, &[]);
        let image_b = dir.join("B.tar");
        reprov(&[
            "image",
            "create",
            "--from",
            s(&nos_b),
            "--out",
            s(&image_b),
            "--name",
            "B",
            "--description",
            "Debian DNS appliance (dnsmasq)",
        ]);
        std::fs::remove_file(&nos_b).unwrap();
        eprintln!("Debian appliances built in {:.1?}", started.elapsed());
        Debian { nos_a, image_b }
    })
}

/// An appliance disk in `dir` laid out for the Debian appliances — system 64 MiB, NOS
/// `nos_mib` (type `nos_type`), float `float_mib`, images 2 GiB (room for the safety
/// backup), data 64 MiB — with the recovery installed, in normal operation.
pub fn disk(dir: &Path, nos_mib: u64, float_mib: u64, nos_type: &str) -> PathBuf {
    let disk = dir.join("disk.img");
    reprov(&[
        "layout",
        "init",
        "--disk",
        s(&disk),
        "--system",
        "64M",
        "--nos",
        &format!("{nos_mib}M"),
        "--float",
        &format!("{float_mib}M"),
        "--images",
        "2G",
        "--data",
        "64M",
        "--nos-type",
        nos_type,
    ]);
    let disk = fixtures::install_recovery(disk, &[]);
    reprov(&["layout", "hide", "--disk", s(&disk)]);
    reprov(&["layout", "activate", "--disk", s(&disk), "nos"]);
    disk
}

/// [`disk`] with appliance A on NOS (1024 MiB, float 512 MiB), booting A.
pub fn disk_running_a(dir: &Path) -> PathBuf {
    let disk = disk(dir, A_NOS_MIB, 512, "0x83");
    fixtures::put_nos(&artefacts().nos_a, &disk);
    disk
}

/// A free TCP port on the host's loopback (for a `hostfwd` rule).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port()
}

/// `probe`'s first answer, tried every 2 s for a minute: a service the guest starts may
/// come up after its login prompt (later still on a loaded host). `None` if none came.
pub fn within_a_minute<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    (0..30).find_map(|_| {
        probe().or_else(|| {
            std::thread::sleep(std::time::Duration::from_secs(2));
            None
        })
    })
}

/// The page the host gets from `port` (forwarded to the guest's port 80); `None` when
/// nothing answers.
pub fn http_get(port: u16) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .expect("curl (scripts/deps installs it)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The TXT answer for `whoami.appliance.internal` from `port` (forwarded to the
/// guest's TCP port 53); `None` when nothing answers.
pub fn dns_txt(port: u16) -> Option<String> {
    let out = std::process::Command::new("dig")
        .args([
            "+tcp",
            "+short",
            "+time=3",
            "+tries=2",
            "-p",
            &port.to_string(),
            "@127.0.0.1",
            "TXT",
            "whoami.appliance.internal",
        ])
        .output()
        .expect("dig (scripts/deps installs bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty() && !text.starts_with(';')).then_some(text)
}

/// The NOS partition of `disk`, copied (sparse) to `out`, for e2fsck and dumpe2fs.
pub fn nos_copy(disk: &Path, out: &Path) -> PathBuf {
    let layout = super::scenario::layout(disk);
    let nos = super::scenario::partition(&layout, "nos");
    let (start, size) = (
        nos["start"].as_u64().unwrap(),
        nos["size"].as_u64().unwrap(),
    );
    fixtures::run(
        Path::new("dd"),
        &[
            &format!("if={}", s(disk)),
            &format!("of={}", s(out)),
            "bs=1M",
            &format!("skip={}", start >> 20),
            &format!("count={}", size >> 20),
            "conv=sparse",
            "status=none",
        ],
    );
    out.to_path_buf()
}
