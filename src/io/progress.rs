//! Progress of a long copy: percent, MB/s and time left — redrawn in place on a
//! terminal, as a log line every few seconds otherwise (the recovery's consoles, a log
//! file).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a line is drawn on a terminal and logged elsewhere.
const TTY_EVERY: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_secs(10);
const CONSOLE_EVERY: Duration = Duration::from_secs(2);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Redraw one line on stderr.
    Terminal,
    /// `log::info!` lines, every 10 s (a service's journal).
    Log,
    /// `log::info!` lines, every 2 s: the recovery's log, which goes to the serial line
    /// and the screen alike, where a person may be watching.
    Console,
    /// Nothing (tests, scripts).
    Quiet,
}

impl Show {
    /// A terminal when stderr is one, log lines otherwise.
    pub fn detect() -> Show {
        if std::io::stderr().is_terminal() {
            Show::Terminal
        } else {
            Show::Log
        }
    }
}

/// Counts bytes done out of a total and shows the rate.
pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    /// Bytes counted as done at the start (a resume): excluded from the rate.
    skipped: u64,
    start: Instant,
    last_shown: Instant,
    show: Show,
}

impl Progress {
    pub fn new(what: impl Into<String>, total: u64, show: Show) -> Self {
        let now = Instant::now();
        Progress {
            what: what.into(),
            total,
            done: 0,
            skipped: 0,
            start: now,
            last_shown: now,
            show,
        }
    }

    /// Counts `bytes` as done before the copy started (a resumed apply).
    pub fn skip(&mut self, bytes: u64) {
        self.done += bytes;
        self.skipped += bytes;
    }

    /// Counts `bytes` more as done, and shows the line if it is time.
    pub fn advance(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        super::heartbeat::beat();
        let every = match self.show {
            Show::Terminal => TTY_EVERY,
            Show::Log => LOG_EVERY,
            Show::Console => CONSOLE_EVERY,
            Show::Quiet => return,
        };
        if self.last_shown.elapsed() >= every {
            self.last_shown = Instant::now();
            self.draw(false);
        }
    }

    /// Shows the final line.
    pub fn finish(&mut self) {
        if self.show != Show::Quiet {
            self.draw(true);
        }
    }

    /// The line: `applying: 42% 860.0 MiB of 2.0 GiB, 310 MB/s, 4 s left`.
    pub fn line(&self, elapsed: Duration) -> String {
        let percent = (self.done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(100);
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            (self.done - self.skipped) as f64 / secs
        } else {
            0.0
        };
        let left = if rate > 0.0 {
            format!(
                "{:.0} s left",
                self.total.saturating_sub(self.done) as f64 / rate
            )
        } else {
            "time left unknown".to_string()
        };
        format!(
            "{}: {percent}% {} of {}, {:.0} MB/s, {left}",
            self.what,
            crate::units::format_size(self.done),
            crate::units::format_size(self.total),
            rate / 1e6
        )
    }

    fn draw(&self, last: bool) {
        let line = self.line(self.start.elapsed());
        match self.show {
            Show::Terminal => {
                let mut err = std::io::stderr().lock();
                // A failed progress redraw is not worth failing the copy for.
                let _ = write!(err, "\r{line}\x1b[K{}", if last { "\n" } else { "" });
                let _ = err.flush();
            }
            Show::Log | Show::Console => log::info!("{line}"),
            Show::Quiet => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_says_percent_rate_and_time_left() {
        let mut p = Progress::new("applying", 400_000_000, Show::Quiet);
        p.skip(100_000_000);
        p.advance(100_000_000);
        assert_eq!(
            p.line(Duration::from_secs(1)),
            "applying: 50% 190.7 MiB of 381.5 MiB, 100 MB/s, 2 s left"
        );
    }
}
