//! The recovery's log: each line goes to the consoles (PID 1's stdout, /dev/console, until
//! [`attach_terminals`]: then the serial line and the screen alike) and to the kernel log
//! (/dev/kmsg), so `dmesg` keeps it too.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use super::terminals::Tee;

/// What every console line starts with.
pub const PREFIX: &str = "reprov recovery: ";

struct RecoveryLogger {
    kmsg: Mutex<Option<File>>,
    terminals: Mutex<Option<Tee>>,
}

static LOGGER: RecoveryLogger = RecoveryLogger {
    kmsg: Mutex::new(None),
    terminals: Mutex::new(None),
};

/// Installs the logger (console only until [`attach_kmsg`]); `debug` lets debug lines through.
pub fn init(debug: bool) {
    // Only a second call fails, and it leaves the first logger in place: nothing to report.
    let _ = log::set_logger(&LOGGER);
    set_debug(debug);
}

/// Turns debug lines on or off.
pub fn set_debug(debug: bool) {
    log::set_max_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
}

/// Also sends every line to the kernel log at `path` (/dev/kmsg, once /dev is mounted).
pub fn attach_kmsg(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    *LOGGER.kmsg.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Sends every console line to `terminals` instead of stdout.
pub fn attach_terminals(terminals: Tee) {
    *LOGGER.terminals.lock().unwrap_or_else(|e| e.into_inner()) = Some(terminals);
}

/// The console line for a message: `reprov recovery: [error: |warning: ]message`.
pub fn console_line(level: Level, message: &str) -> String {
    let severity = match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        Level::Info => "",
        Level::Debug | Level::Trace => "debug: ",
    };
    format!("{PREFIX}{severity}{message}\n")
}

/// The /dev/kmsg record for a message: `<priority>reprov: message`, with syslog priorities.
pub fn kmsg_line(level: Level, message: &str) -> String {
    let priority = match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    format!("<{priority}>reprov: {message}\n")
}

impl Log for RecoveryLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        // A log line that cannot be written has nowhere else to be reported; the other
        // sink still gets it.
        let line = console_line(record.level(), &message);
        match self
            .terminals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(terminals) => {
                let _ = terminals.write_all(line.as_bytes());
            }
            None => {
                let _ = io::stdout().lock().write_all(line.as_bytes());
            }
        }
        if let Some(kmsg) = self.kmsg.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            // One write per record: /dev/kmsg takes each write as one log entry.
            let _ = kmsg.write_all(kmsg_line(record.level(), &message).as_bytes());
        }
    }

    fn flush(&self) {
        let _ = io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_severity() {
        let cases = [
            (
                Level::Error,
                "reprov recovery: error: x\n",
                "<3>reprov: x\n",
            ),
            (
                Level::Warn,
                "reprov recovery: warning: x\n",
                "<4>reprov: x\n",
            ),
            (Level::Info, "reprov recovery: x\n", "<6>reprov: x\n"),
            (
                Level::Debug,
                "reprov recovery: debug: x\n",
                "<7>reprov: x\n",
            ),
        ];
        for (level, console, kmsg) in cases {
            assert_eq!(console_line(level, "x"), console, "{level}");
            assert_eq!(kmsg_line(level, "x"), kmsg, "{level}");
        }
    }
}
