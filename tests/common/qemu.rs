//! Boots a raw appliance disk image in QEMU and watches its serial console.
//!
//! QEMU runs under TCG only (KVM hangs guests on these machines), with the disk on virtio,
//! user networking with `restrict=on` (no way out), and the serial console written to a
//! file in the test's directory, which the test polls. A hard timeout bounds every wait;
//! "Kernel panic" on the console fails the test at once.
//!
//! A guest that needs the test's servers ([`Qemu::boot_reaching_host`]) gets one
//! `guestfwd` rule per server port: its connections to [`HOST`]`:PORT` each start
//! tests/servers/relay.py, which relays it to 127.0.0.1:PORT. `restrict=on` leaves such
//! explicit rules alone, so those ports are all the guest reaches.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The console text that fails any test.
pub const KERNEL_PANIC: &str = "Kernel panic";
/// The guest NIC's MAC (the identity's interfaces are matched by it).
pub const GUEST_MAC: &str = "52:54:00:12:34:56";
/// The guest's DMI product name and serial number.
pub const GUEST_MODEL: &str = "Appliance";
pub const GUEST_SERIAL: &str = "A0001";
/// Where a [`Qemu::boot_reaching_host`] guest finds the test's servers (their ports only).
pub const HOST: &str = "10.0.2.100";
const POLL: Duration = Duration::from_millis(100);

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The QEMU binary and the tools the disk fixtures need, or `None` to skip the test when
/// one is missing. With `REPROV_REQUIRE_QEMU=1` (scripts/test, CI) a missing tool fails.
pub fn qemu_or_skip() -> Option<PathBuf> {
    let tools = [
        "qemu-system-x86_64",
        "syslinux",
        "mcopy",
        "mkfs.fat",
        "sfdisk",
        "cpio",
        // The real Debian appliances (tests/common/debian.rs).
        "mmdebstrap",
        "extlinux",
        "curl",
        "dig",
    ];
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| find_in_path(tool).is_none())
        .collect();
    if missing.is_empty() {
        return find_in_path("qemu-system-x86_64");
    }
    let required = std::env::var("REPROV_REQUIRE_QEMU").is_ok_and(|v| v == "1");
    assert!(!required, "REPROV_REQUIRE_QEMU=1 but missing: {missing:?}");
    eprintln!("skipping: missing {missing:?} (scripts/deps installs them)");
    None
}

/// The python3 that runs the relay, resolved once: QEMU starts it per connection, and a
/// shim on PATH (pyenv) would add its own start-up to each.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "python3: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// How a guest is started: [`Guest::default`] is the plain one of [`Qemu::boot`].
#[derive(Clone, Debug)]
pub struct Guest {
    /// More `-drive` options (e.g. `,throttling.iops-total=50`).
    pub drive_options: String,
    /// A serial line the test types into ([`Qemu::send`]) and a monitor.
    pub interactive: bool,
    /// `(guest port, host port)`: the guest's connections to [`HOST`]`:guest port` reach
    /// the host's 127.0.0.1:host port (the test's servers), and nothing else is reachable.
    pub forwards: Vec<(u16, u16)>,
    /// `hostfwd` rules: `tcp:127.0.0.1:8080-10.0.2.77:80` lets the host reach a guest port.
    pub hostfwd: Vec<String>,
    pub dmi_serial: String,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl Default for Guest {
    fn default() -> Self {
        Guest {
            drive_options: String::new(),
            interactive: false,
            forwards: Vec::new(),
            hostfwd: Vec::new(),
            dmi_serial: GUEST_SERIAL.to_string(),
            memory_mib: 512,
            cpus: 1,
        }
    }
}

/// The `-nic` option: user networking with `restrict=on`, a `guestfwd` rule relaying
/// [`HOST`]`:GUEST` to the host's 127.0.0.1:HOST_PORT for each of `forwards`, and the
/// `hostfwd` rules.
fn nic(forwards: &[(u16, u16)], hostfwd: &[String]) -> String {
    let relay = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/relay.py");
    let mut nic = format!("user,model=virtio-net-pci,mac={GUEST_MAC},restrict=on");
    for (guest, host) in forwards {
        // QEMU splits its options at commas; the command is split like a shell would.
        let command = format!("'{}' '{}' {host}", python(), relay.display());
        assert!(!command.contains(','), "a comma in {command:?}");
        nic.push_str(&format!(",guestfwd=tcp:{HOST}:{guest}-cmd:{command}"));
    }
    for rule in hostfwd {
        nic.push_str(&format!(",hostfwd={rule}"));
    }
    nic
}

/// A running QEMU; killed when dropped.
pub struct Qemu {
    child: Child,
    serial: PathBuf,
    started: Instant,
    /// The serial line's socket, for [`Qemu::send`].
    socket: Option<PathBuf>,
    input: Option<UnixStream>,
    /// The monitor's socket (interactive machines), for the screen and the keyboard.
    monitor: Option<PathBuf>,
}

impl Qemu {
    /// Boots `disk` (raw) from its MBR; the serial console goes to `serial`.
    pub fn boot(qemu: &Path, disk: &Path, serial: &Path) -> Qemu {
        Qemu::boot_guest(qemu, disk, serial, &Guest::default())
    }

    /// [`Qemu::boot`], with more `-drive` options (e.g. `throttling.iops-total=50`).
    pub fn boot_with(qemu: &Path, disk: &Path, serial: &Path, drive_options: &str) -> Qemu {
        let guest = Guest {
            drive_options: drive_options.to_string(),
            ..Guest::default()
        };
        Qemu::boot_guest(qemu, disk, serial, &guest)
    }

    /// [`Qemu::boot`] with the host's loopback `ports` (the test's servers) reachable at
    /// [`HOST`] and nothing else, and with its own DMI serial number (several appliances
    /// at once).
    pub fn boot_reaching_host(
        qemu: &Path,
        disk: &Path,
        serial: &Path,
        dmi_serial: &str,
        ports: &[u16],
    ) -> Qemu {
        let guest = Guest {
            forwards: ports.iter().map(|&p| (p, p)).collect(),
            dmi_serial: dmi_serial.to_string(),
            ..Guest::default()
        };
        Qemu::boot_guest(qemu, disk, serial, &guest)
    }

    /// [`Qemu::boot`] with a serial line the test types into ([`Qemu::send`]): the serial
    /// port is a Unix socket (`serial` + `.sock`) whose output QEMU also logs to `serial`.
    /// Its screen ([`Qemu::screen`]) and keyboard ([`Qemu::press`]) are reached through
    /// QEMU's monitor (`serial` + `.mon`).
    pub fn boot_interactive(qemu: &Path, disk: &Path, serial: &Path) -> Qemu {
        let guest = Guest {
            interactive: true,
            ..Guest::default()
        };
        Qemu::boot_guest(qemu, disk, serial, &guest)
    }

    /// Boots `disk` as `guest` says.
    pub fn boot_guest(qemu: &Path, disk: &Path, serial: &Path, guest: &Guest) -> Qemu {
        Qemu::boot_drive(qemu, &disk.display().to_string(), serial, guest)
    }

    /// Boots the raw disk QEMU's `file=` names (a path, or the URL of an NBD server such
    /// as [`super::nbd::LossyDisk`]) as `guest` says.
    pub fn boot_drive(qemu: &Path, drive: &str, serial: &Path, guest: &Guest) -> Qemu {
        assert!(!drive.contains(','), "a comma in the drive {drive:?}");
        let stderr = fs::File::create(serial.with_extension("qemu-stderr"))
            .expect("creating QEMU's stderr file");
        let mut command = Command::new(qemu);
        command.args(["-accel", "tcg", "-display", "none"]);
        command.args(["-m", &guest.memory_mib.to_string()]);
        command.args(["-smp", &guest.cpus.to_string()]);
        let socket = guest.interactive.then(|| serial.with_extension("sock"));
        let monitor = socket.as_ref().map(|s| s.with_extension("mon"));
        match &monitor {
            None => command.args(["-monitor", "none"]),
            Some(path) => command
                .arg("-monitor")
                .arg(format!("unix:{},server=on,wait=off", path.display())),
        };
        match &socket {
            None => command
                .arg("-serial")
                .arg(format!("file:{}", serial.display())),
            Some(socket) => command
                .arg("-chardev")
                .arg(format!(
                    "socket,id=serial0,path={},server=on,wait=off,logfile={}",
                    socket.display(),
                    serial.display()
                ))
                .args(["-serial", "chardev:serial0"]),
        };
        let child = command
            .arg("-drive")
            .arg(format!(
                "file={drive},format=raw,if=virtio{}",
                guest.drive_options
            ))
            .args(["-nic", &nic(&guest.forwards, &guest.hostfwd)])
            // DMI model and serial: what a `create` job names its image after.
            .args([
                "-smbios",
                &format!("type=1,product={GUEST_MODEL},serial={}", guest.dmi_serial),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting qemu-system-x86_64");
        Qemu {
            child,
            serial: serial.to_path_buf(),
            started: Instant::now(),
            socket,
            input: None,
            monitor,
        }
    }

    /// Types `text` on the serial line (of a [`Qemu::boot_interactive`] machine).
    pub fn send(&mut self, text: &str) {
        if self.input.is_none() {
            let socket = self.socket.clone().expect("send needs boot_interactive");
            let deadline = Instant::now() + Duration::from_secs(30);
            let stream = loop {
                match UnixStream::connect(&socket) {
                    Ok(stream) => break stream,
                    Err(e) if Instant::now() >= deadline => {
                        self.fail(&format!("connecting to {}: {e}", socket.display()))
                    }
                    Err(_) => std::thread::sleep(POLL),
                }
            };
            // The guest's output comes back on the socket too (QEMU logs it to the file):
            // drain it, or the socket's buffer fills and the guest's serial port stalls.
            let mut echo = stream.try_clone().expect("cloning the serial socket");
            std::thread::spawn(move || std::io::copy(&mut echo, &mut std::io::sink()));
            self.input = Some(stream);
        }
        let stream = self.input.as_mut().expect("connected above");
        if let Err(e) = stream.write_all(text.as_bytes()) {
            self.fail(&format!("typing {text:?}: {e}"));
        }
    }

    /// Runs a command in QEMU's monitor (of a [`Qemu::boot_interactive`] machine) and
    /// returns its output.
    fn monitor(&self, command: &str) -> String {
        let path = self
            .monitor
            .as_ref()
            .expect("the monitor needs boot_interactive");
        let mut stream = UnixStream::connect(path)
            .unwrap_or_else(|e| self.fail(&format!("connecting to {}: {e}", path.display())));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("setting the monitor's timeout");
        let read_prompt = |stream: &mut UnixStream| -> String {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.ends_with(b"(qemu) ") {
                match stream.read(&mut buf) {
                    Ok(0) => self.fail("the monitor closed"),
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                    Err(e) => self.fail(&format!("reading the monitor: {e}")),
                }
            }
            String::from_utf8_lossy(&seen).into_owned()
        };
        read_prompt(&mut stream);
        if let Err(e) = stream.write_all(format!("{command}\n").as_bytes()) {
            self.fail(&format!("monitor command {command:?}: {e}"));
        }
        read_prompt(&mut stream)
    }

    /// The text on the guest's VGA text screen: its 32 KiB of video memory at 0xB8000
    /// (the kernel's VGA console scrolls through all of it), 80 characters a row, rows
    /// trimmed and joined by newlines ([`unwrap_rows`] undoes the screen's line wrap).
    pub fn screen(&self) -> String {
        let dump = self.serial.with_extension("vga");
        let said = self.monitor(&format!("pmemsave 0xb8000 0x8000 \"{}\"", dump.display()));
        let cells = fs::read(&dump)
            .unwrap_or_else(|e| self.fail(&format!("reading the screen dump ({e}): {said}")));
        let text: Vec<u8> = cells
            .chunks(2)
            .map(|cell| match cell[0] {
                0x20..=0x7e => cell[0],
                _ => b' ',
            })
            .collect();
        text.chunks(80)
            .map(|row| String::from_utf8_lossy(row).trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Types `keys` on the guest's keyboard: letters, digits, space and `\n` (Enter).
    pub fn press(&self, keys: &str) {
        for key in keys.chars() {
            let name = match key {
                '\n' => "ret".to_string(),
                ' ' => "spc".to_string(),
                'a'..='z' | '0'..='9' => key.to_string(),
                _ => panic!("no key for {key:?}"),
            };
            self.monitor(&format!("sendkey {name}"));
        }
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console so far (empty until QEMU creates the file).
    pub fn console(&self) -> String {
        fs::read(&self.serial)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn fail(&self, why: &str) -> ! {
        let console = self.console();
        // The test's directory goes away with the failing test: keep the console.
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "failed-{}-{}.serial.log",
            std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-"),
            std::process::id()
        ));
        let kept = match fs::write(&kept, &console) {
            Ok(()) => kept.display().to_string(),
            Err(e) => format!("{} (not kept: {e})", self.serial.display()),
        };
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        // Why QEMU itself stopped (a lock, a port, an option), when it says.
        let qemu_said =
            fs::read_to_string(self.serial.with_extension("qemu-stderr")).unwrap_or_default();
        panic!(
            "{why} after {:.1?}; QEMU's stderr: {:?}; console kept in {kept}, last lines:\n{}",
            self.elapsed(),
            qemu_said.trim(),
            tail.join("\n")
        );
    }

    /// Waits for a console line containing `needle` and returns that line (trimmed).
    /// Fails on a kernel panic, on QEMU exiting first, or after `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line_from(0, needle, timeout)
    }

    /// Where the console ends now: a mark for [`Qemu::wait_for_line_from`].
    pub fn mark(&self) -> usize {
        self.console().len()
    }

    /// [`Qemu::wait_for_line`], looking only at what the console showed after `mark`.
    pub fn wait_for_line_from(&mut self, mark: usize, needle: &str, timeout: Duration) -> String {
        self.wait_for(mark, timeout, needle, |text| {
            // Whole lines only: the last one may still be arriving.
            let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            whole
                .lines()
                .find(|line| line.contains(needle))
                .map(|line| line.trim().to_string())
        })
    }

    /// Waits for `needle` anywhere after `mark`, a line's end or not (a shell prompt).
    pub fn wait_for_text_from(&mut self, mark: usize, needle: &str, timeout: Duration) {
        self.wait_for(mark, timeout, needle, |text| {
            text.contains(needle).then_some(())
        })
    }

    /// Polls the console after `mark` until `found` finds something.
    fn wait_for<T>(
        &mut self,
        mark: usize,
        timeout: Duration,
        what: &str,
        found: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let needle = what;
        loop {
            let console = self.console();
            if console.contains(KERNEL_PANIC) {
                self.fail("the guest's kernel panicked");
            }
            if let Some(value) = found(after(&console, mark)) {
                return value;
            }
            match self.child.try_wait() {
                Ok(Some(status)) => self.fail(&format!("QEMU exited ({status}) before {needle:?}")),
                Ok(None) => {}
                Err(e) => self.fail(&format!("checking on QEMU: {e}")),
            }
            if Instant::now() >= deadline {
                self.fail(&format!("no line with {needle:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `command` in the guest's shell on the serial line (a Debian appliance's root
    /// login, its echo off: see [`Qemu::login_shell`]), waits for it to end, and returns
    /// its output (stdout and stderr, escape sequences and carriage returns removed) and
    /// its exit status.
    pub fn shell(&mut self, command: &str, timeout: Duration) -> (String, i32) {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mark = self.mark();
        // printf builds the markers, so the command as typed never contains them.
        self.send(&format!(
            "printf '@@%s@@\\n' begin-{n}; {{ {command} ; }} 2>&1; printf '@@%s-%d@@\\n' end-{n} $?\n"
        ));
        let (begin, end) = (format!("@@begin-{n}@@"), format!("@@end-{n}-"));
        let line = self.wait_for_line_from(mark, &end, timeout);
        let status: i32 = line
            .split(&end)
            .nth(1)
            .and_then(|rest| {
                rest.trim_end_matches('@')
                    .trim_end_matches('@')
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| self.fail(&format!("no status in {line:?}")));
        let console = clean(after(&self.console(), mark));
        let output = console
            .split(&begin)
            .nth(1)
            .and_then(|rest| rest.split(&end).next())
            .unwrap_or_default()
            .trim_start_matches('\n')
            .to_string();
        (output, status)
    }

    /// [`Qemu::shell`], failing unless the command succeeds; returns its output.
    pub fn shell_ok(&mut self, command: &str, timeout: Duration) -> String {
        let (output, status) = self.shell(command, timeout);
        if status != 0 {
            self.fail(&format!("{command:?} exited {status}: {output}"));
        }
        output
    }

    /// Waits (after `mark`) for the root prompt of a Debian appliance on the serial line
    /// and turns its echo off, so [`Qemu::shell`] reads only what commands print.
    pub fn login_shell(&mut self, mark: usize, timeout: Duration) {
        self.wait_for_text_from(mark, "appliance-prompt# ", timeout);
        let mark = self.mark();
        self.send("stty -echo cols 500; printf '@@%s@@\\n' shell-ready\n");
        self.wait_for_line_from(mark, "@@shell-ready@@", Duration::from_secs(60));
    }

    /// Waits for QEMU to exit by itself (the guest powered off), at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.assert_no_panic();
                    return status;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(None) => self.fail("QEMU still running"),
                Err(e) => self.fail(&format!("checking on QEMU: {e}")),
            }
        }
    }

    /// Fails if the console shows a kernel panic.
    pub fn assert_no_panic(&self) {
        if self.console().contains(KERNEL_PANIC) {
            self.fail("the guest's kernel panicked");
        }
    }

    /// Stops QEMU (as a power cut would) and waits for it to go.
    pub fn kill(mut self) {
        self.assert_no_panic();
        self.stop();
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Killing a process we started and still own; it may exit on its own meanwhile.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The text after byte `mark` (at the next character boundary).
fn after(text: &str, mark: usize) -> &str {
    let start = (mark.min(text.len())..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// Console text without terminal escape sequences and carriage returns.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte; others: ESC and one more.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The screen's rows as one text, so a line the screen wrapped at 80 columns is found.
pub fn unwrap_rows(screen: &str) -> String {
    screen.replace('\n', "")
}
