//! The recovery's switches on the kernel command line (`/proc/cmdline`).

use std::time::Duration;

/// The switches reprov reads from the kernel command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `reprov.debug` (or `reprov.debug=1`): log debug messages too.
    pub debug: bool,
    /// `reprov.console`: open the recovery console before (instead of) running the job.
    pub console: bool,
    /// `reprov.console_idle=SECS`: how long a console opened by a key at the banner waits
    /// for input before the job runs after all.
    pub console_idle: Option<Duration>,
    /// `reprov.watchdog=SECS`: reboot when a job makes no progress for this long
    /// (default [`WATCHDOG_DEFAULT`]; `0` turns the watchdog off).
    pub watchdog: Option<Duration>,
    /// `reprov.trust=ID,…`: the keys `install-system --trust` put into the initramfs;
    /// the recovery refuses every image when one of them is not there.
    pub trust: Vec<String>,
}

/// How long a job may make no progress before the watchdog reboots: longer than any
/// step takes without reporting progress (a commit, an fsck-free mount, a sync).
pub const WATCHDOG_DEFAULT: Duration = Duration::from_secs(600);

impl Cmdline {
    /// Reads the switches from the command line's text; unknown words are the kernel's.
    pub fn parse(text: &str) -> Self {
        let debug = text
            .split_whitespace()
            .any(|word| matches!(word, "reprov.debug" | "reprov.debug=1"));
        let console = text.split_whitespace().any(|word| word == "reprov.console");
        let console_idle = text
            .split_whitespace()
            .filter_map(|word| word.strip_prefix("reprov.console_idle="))
            .filter_map(|secs| secs.parse().ok())
            .map(Duration::from_secs)
            .next_back();
        let watchdog = match text
            .split_whitespace()
            .filter_map(|word| word.strip_prefix("reprov.watchdog="))
            .filter_map(|secs| secs.parse::<u64>().ok())
            .next_back()
        {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
            None => Some(WATCHDOG_DEFAULT),
        };
        let trust = text
            .split_whitespace()
            .filter_map(|word| word.strip_prefix("reprov.trust="))
            .flat_map(|ids| ids.split(','))
            .filter(|id| !id.is_empty())
            .map(String::from)
            .collect();
        Cmdline {
            debug,
            console,
            console_idle,
            watchdog,
            trust,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_key_ids() {
        assert!(Cmdline::parse("quiet").trust.is_empty());
        assert_eq!(
            Cmdline::parse("quiet reprov.trust=AB,CD\n").trust,
            ["AB", "CD"]
        );
    }

    #[test]
    fn debug_switch() {
        let cases = [
            ("", false),
            ("console=ttyS0,115200 quiet", false),
            ("console=ttyS0 reprov.debug quiet\n", true),
            ("reprov.debug=1", true),
            ("reprov.debug=0", false),
            ("xreprov.debug", false),
        ];
        for (text, debug) in cases {
            assert_eq!(Cmdline::parse(text).debug, debug, "cmdline {text:?}");
        }
    }

    #[test]
    fn console_idle_in_seconds_the_last_one_counts() {
        let cases = [
            ("quiet", None),
            ("reprov.console_idle=5", Some(5)),
            ("reprov.console_idle=5 reprov.console_idle=600\n", Some(600)),
            ("reprov.console_idle=", None),
            ("reprov.console_idle=-1", None),
            ("reprov.console_idle=5m", None),
        ];
        for (text, secs) in cases {
            assert_eq!(
                Cmdline::parse(text).console_idle,
                secs.map(Duration::from_secs),
                "{text:?}"
            );
        }
    }

    #[test]
    fn console_switch() {
        assert!(Cmdline::parse("quiet reprov.console\n").console);
        assert!(!Cmdline::parse("reprov.consoles").console);
    }
}
