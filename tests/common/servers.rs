//! Real FTP and HTTP servers on loopback for the tests (tests/servers/*.py), started
//! by a test and killed when dropped. Every server's user has the password [`CANARY`],
//! read from a mode-600 password file, so no process carries it in its arguments.

use reprov::transfer::StoreConfig;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const CANARY: &str = "canary-7f3a9c-pw";
pub const USER: &str = "reprov";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ftp,
    Http,
}

pub const KINDS: [Kind; 2] = [Kind::Ftp, Kind::Http];

/// A store's protocol: FTP or HTTP, in the clear or over TLS (FTPS, HTTPS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub kind: Kind,
    pub tls: bool,
}

pub const PROTOCOLS: [Protocol; 4] = [
    Protocol {
        kind: Kind::Ftp,
        tls: false,
    },
    Protocol {
        kind: Kind::Http,
        tls: false,
    },
    Protocol {
        kind: Kind::Ftp,
        tls: true,
    },
    Protocol {
        kind: Kind::Http,
        tls: true,
    },
];

/// The passive data ports of an FTP server for QEMU guests ([`Server::start_for_guests`]):
/// fixed, as each is forwarded to the guests, and outside the kernel's ephemeral range.
/// Servers running at once may share them: one that finds a port busy takes another, so
/// the range need only outnumber the data connections open at once (one per guest).
pub const PASSIVE_PORTS: std::ops::RangeInclusive<u16> = 30100..=30115;

/// A test server: its store directory is `root/images`.
pub struct Server {
    child: Child,
    pub kind: Kind,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The ports its FTP data connections listen on, when fixed ([`PASSIVE_PORTS`]).
    passive: Vec<u16>,
    /// For FTPS and HTTPS: the CA certificate its store config trusts.
    ca_file: Option<PathBuf>,
    /// The CA that issued its certificate, when [`Server::start_as`] made one.
    _ca: Option<TestCa>,
}

/// A certificate authority of the tests' own (made with openssl), and the server
/// certificates it signs.
pub struct TestCa {
    dir: tempfile::TempDir,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/deps installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let subject = format!("/CN={name}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject];
        args.extend(EC_KEY);
        args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&args, dir.path());
        TestCa { dir }
    }

    /// The CA's certificate (PEM), for a store config's `ca_file`.
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate and its key for `alt_name` (`IP:127.0.0.1`, `DNS:...`),
    /// signed by this CA.
    pub fn issue(&self, alt_name: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        let n = std::fs::read_dir(dir).unwrap().count();
        let (key, csr, cert, ext) = (
            format!("server{n}.key"),
            format!("server{n}.csr"),
            format!("server{n}.pem"),
            format!("server{n}.ext"),
        );
        let mut args = vec!["req", "-nodes", "-subj", "/CN=reprov test store"];
        args.extend(EC_KEY);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(&args, dir);
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={alt_name}\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "2",
                "-extfile", &ext, "-out", &cert,
            ],
            dir,
        );
        (dir.join(cert), dir.join(key))
    }
}

/// Writes `password` to a file only its owner may read.
pub fn write_password(path: &Path, password: &str) {
    std::fs::write(path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Server {
    pub fn start(kind: Kind, switches: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/images")).unwrap();
        write_password(&dir.path().join("store.pass"), CANARY);
        let script = match kind {
            Kind::Ftp => "ftp_server.py",
            Kind::Http => "http_server.py",
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/servers")
            .join(script);
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--root")
            .arg(dir.path().join("root"))
            .args(["--user", USER, "--password-file"])
            .arg(dir.path().join("store.pass"))
            .arg("--events")
            .arg(dir.path().join("events"))
            .args(switches)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("python3 runs (scripts/deps installs pyftpdlib)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
                panic!("{kind:?} server did not start: {line:?}\n{log}")
            });
        Server {
            child,
            kind,
            port,
            dir,
            passive: Vec::new(),
            ca_file: None,
            _ca: None,
        }
    }

    /// An FTPS or HTTPS server whose certificate `ca` issued for `alt_name`; its store
    /// config trusts `ca`.
    pub fn start_tls(kind: Kind, ca: TestCa, alt_name: &str, switches: &[&str]) -> Server {
        let (cert, key) = ca.issue(alt_name);
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut all = vec!["--tls-cert", cert, "--tls-key", key];
        all.extend(switches);
        let mut server = Server::start(kind, &all);
        server.ca_file = Some(ca.certificate());
        server._ca = Some(ca);
        server
    }

    /// A server speaking `protocol`; over TLS with a certificate for 127.0.0.1 and
    /// localhost from a CA of its own, which its store config trusts.
    pub fn start_as(protocol: Protocol, switches: &[&str]) -> Server {
        match protocol.tls {
            false => Server::start(protocol.kind, switches),
            true => {
                let ca = TestCa::new("reprov test CA");
                Server::start_tls(protocol.kind, ca, "IP:127.0.0.1,DNS:localhost", switches)
            }
        }
    }

    /// An FTP server for QEMU guests: its data connections listen on [`PASSIVE_PORTS`],
    /// which [`Server::ports`] names for forwarding (the client dials the PASV port at the
    /// control connection's address, so the guest's port is the host's).
    pub fn start_for_guests() -> Server {
        let range = format!("{}-{}", PASSIVE_PORTS.start(), PASSIVE_PORTS.end());
        let mut server = Server::start(Kind::Ftp, &["--passive-ports", &range]);
        server.passive = PASSIVE_PORTS.collect();
        server
    }

    /// The ports a client needs to reach: the server's, then its passive data ports.
    pub fn ports(&self) -> Vec<u16> {
        std::iter::once(self.port)
            .chain(self.passive.iter().copied())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn scheme(&self) -> &'static str {
        match (self.kind, self.ca_file.is_some()) {
            (Kind::Ftp, false) => "ftp",
            (Kind::Ftp, true) => "ftps",
            (Kind::Http, false) => "http",
            (Kind::Http, true) => "https",
        }
    }

    /// The URL of a file in the store directory.
    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/images/{name}", self.scheme(), self.port)
    }

    /// A file in the store directory, on the host.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("root/images").join(name)
    }

    /// Writes a store config for this server (its user, the canary password file, its CA
    /// when it speaks TLS, and `group` when given) and returns its path.
    pub fn config(&self, group: Option<&str>) -> PathBuf {
        let password_file = self.dir.path().join("store.pass");
        let mut text = self.config_text(self.port, &password_file, self.ca_file.as_deref());
        if let Some(group) = group {
            text.push_str(&format!("group = \"{group}\"\n"));
        }
        let path = self.dir.path().join("store.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn config_text(&self, port: u16, password_file: &Path, ca_file: Option<&Path>) -> String {
        let mut text = format!(
            "url = \"{}://127.0.0.1:{port}\"\ndirectory = \"images\"\nuser = \"{USER}\"\n\
             password_file = \"{}\"\n",
            self.scheme(),
            password_file.display()
        );
        if let Some(ca_file) = ca_file {
            text.push_str(&format!("ca_file = \"{}\"\n", ca_file.display()));
        }
        text
    }
}

impl Server {
    /// A store config for this server with another password file (a wrong one, a
    /// readable one) and returns its path.
    pub fn config_with(&self, password_file: &Path) -> PathBuf {
        self.config_at(self.port, password_file)
    }

    /// A store config for this kind of server on `port` (a closed one, for "server down").
    pub fn config_at(&self, port: u16, password_file: &Path) -> PathBuf {
        let path = self.dir.path().join(format!("store-{port}.toml"));
        let text = self.config_text(port, password_file, self.ca_file.as_deref());
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A store config for this server that trusts `ca_file` instead of its CA (`None`:
    /// the system's CA certificates).
    pub fn config_trusting(&self, ca_file: Option<&Path>) -> StoreConfig {
        let text = self.config_text(self.port, &self.dir.path().join("store.pass"), ca_file);
        StoreConfig::parse(&text, "test store config").unwrap()
    }

    /// The store config, read.
    pub fn store(&self) -> StoreConfig {
        StoreConfig::read(&self.config(None)).unwrap()
    }

    /// A file on this server's store, as the transfer layer fetches it.
    pub fn source(&self, name: &str) -> reprov::transfer::Source {
        self.store().source(name).unwrap()
    }

    /// What the server saw (REST 100000, GET … range=…, CUT …), one event a line.
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("events"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
