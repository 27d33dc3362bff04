//! The terminals the recovery talks on: every console the kernel was given
//! (`console=tty0 console=ttyS0`: the screen and the serial line), not only
//! `/dev/console`, which is the last of them. Output goes to all; input is read from
//! whichever has a line; a key on any of them at the banner opens the console.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use crate::kernel::terminal;

/// Where the kernel lists its consoles, `/dev/console`'s last.
pub const ACTIVE_CONSOLES: &str = "/sys/class/tty/console/active";

/// The console devices named in [`ACTIVE_CONSOLES`]' text, each once, in its order.
pub fn parse_active(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in text.split_whitespace() {
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if plain && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// The open terminals.
pub struct Terminals {
    ttys: Vec<(String, File)>,
}

impl Terminals {
    /// Opens `dev/NAME` for every name; one that does not open is logged and left out.
    /// With none open, `/dev/console` (as `console_path`) is used alone.
    pub fn open(dev: &Path, names: &[String], console_path: &Path) -> io::Result<Terminals> {
        let mut ttys = Vec::new();
        for name in names {
            match terminal::open(&dev.join(name)) {
                Ok(file) => ttys.push((name.clone(), file)),
                Err(error) => ::log::warn!("opening the console {name}: {error}; not using it"),
            }
        }
        if ttys.is_empty() {
            ttys.push(("console".to_string(), terminal::open(console_path)?));
        }
        Ok(Terminals { ttys })
    }

    /// The terminals' names, e.g. `tty0, ttyS0`.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.ttys.iter().map(|(n, _)| n.as_str()).collect();
        names.join(", ")
    }

    /// Output to every terminal.
    pub fn writer(&self) -> io::Result<Tee> {
        let files = self
            .ttys
            .iter()
            .map(|(_, f)| f.try_clone())
            .collect::<io::Result<_>>()?;
        Ok(Tee { files })
    }

    /// Input from every terminal, a line at a time from whichever has one; it ends when
    /// nothing is typed for `idle`. Discards what was typed before (while a job ran, say):
    /// only what is typed from now on counts.
    pub fn input(&self, idle: Option<Duration>) -> io::Result<Input> {
        let files: Vec<File> = self
            .ttys
            .iter()
            .map(|(_, f)| f.try_clone())
            .collect::<io::Result<_>>()?;
        for file in &files {
            // Not every console is a terminal (a test's pipe): nothing typed to drop there.
            let _ = terminal::discard_input(file.as_fd());
        }
        Ok(Input { files, idle })
    }

    /// Whether a key is pressed on any terminal within `wait`. The key is used up: it
    /// does not become the first menu choice.
    pub fn key_within(&self, wait: Duration) -> io::Result<bool> {
        let fds: Vec<BorrowedFd> = self.ttys.iter().map(|(_, f)| f.as_fd()).collect();
        for fd in &fds {
            // A console that is not a terminal takes lines; Enter still counts.
            let _ = terminal::set_key_mode(*fd, true);
        }
        let pressed = terminal::first_readable(&fds, Some(wait));
        for fd in &fds {
            let _ = terminal::set_key_mode(*fd, false);
            let _ = terminal::discard_input(*fd);
        }
        Ok(pressed?.is_some())
    }
}

/// Writes to several terminals; a write succeeds when it reached at least one (a
/// screen that went away must not silence the serial line).
pub struct Tee {
    files: Vec<File>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut last_error = None;
        let mut reached = false;
        for file in &mut self.files {
            match file.write_all(buf) {
                Ok(()) => reached = true,
                Err(error) => last_error = Some(error),
            }
        }
        match (reached, last_error) {
            (false, Some(error)) => Err(error),
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads from several terminals: each read returns what one terminal has (a whole
/// line, in line mode). A terminal that ends (hang-up, error) is dropped; when none is
/// left, or nothing comes for `idle`, the input ends.
pub struct Input {
    files: Vec<File>,
    idle: Option<Duration>,
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.files.is_empty() {
                return Ok(0);
            }
            let fds: Vec<BorrowedFd> = self.files.iter().map(|f| f.as_fd()).collect();
            let Some(ready) = terminal::first_readable(&fds, self.idle)? else {
                let idle = self.idle.unwrap_or_default().as_secs();
                ::log::info!("nothing typed on the console for {idle} s");
                return Ok(0);
            };
            match self.files[ready].read(buf) {
                Ok(0) => {
                    self.files.remove(ready);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    ::log::warn!("reading a console: {error}; not reading it any more");
                    self.files.remove(ready);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_consoles_in_order_each_once() {
        let cases: [(&str, &[&str]); 5] = [
            ("tty0 ttyS0\n", &["tty0", "ttyS0"]),
            ("ttyS0\n", &["ttyS0"]),
            ("", &[]),
            ("tty0 tty0 ttyS1", &["tty0", "ttyS1"]),
            ("../etc ttyS0", &["ttyS0"]),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_active(text), expected, "{text:?}");
        }
    }

    #[test]
    fn input_reads_lines_from_whichever_pipe_has_one_and_ends_with_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "from a\n").unwrap();
        std::fs::write(&b, "").unwrap();
        let names = vec!["a".to_string(), "b".to_string(), "missing".to_string()];
        let terminals = Terminals::open(dir.path(), &names, Path::new("/nonexistent")).unwrap();
        assert_eq!(terminals.names(), "a, b");

        let mut text = String::new();
        terminals
            .input(None)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "from a\n");

        let mut out = terminals.writer().unwrap();
        out.write_all(b"menu\n").unwrap();
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "menu\n");
    }

    #[test]
    fn a_key_on_a_file_that_has_input_counts_and_silence_ends_the_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "x").unwrap();
        let with_key = Terminals::open(dir.path(), &["a".into()], Path::new("/x")).unwrap();
        assert!(with_key.key_within(Duration::from_millis(10)).unwrap());

        let (reader, _writer) = std::io::pipe().unwrap();
        let quiet = Terminals {
            ttys: vec![(
                "pipe".into(),
                File::from(std::os::fd::OwnedFd::from(reader)),
            )],
        };
        assert!(!quiet.key_within(Duration::from_millis(50)).unwrap());

        // Nothing typed for the idle time: the input ends.
        let mut line = String::new();
        let mut input = quiet.input(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(input.read_to_string(&mut line).unwrap(), 0);
    }
}
