//! The recovery's switches on the kernel command line (`/proc/cmdline`).

/// The switches reprov reads from the kernel command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `reprov.debug` (or `reprov.debug=1`): log debug messages too.
    pub debug: bool,
    /// `reprov.console`: open the recovery console before (instead of) running the job.
    pub console: bool,
}

impl Cmdline {
    /// Reads the switches from the command line's text; unknown words are the kernel's.
    pub fn parse(text: &str) -> Self {
        let debug = text
            .split_whitespace()
            .any(|word| matches!(word, "reprov.debug" | "reprov.debug=1"));
        let console = text.split_whitespace().any(|word| word == "reprov.console");
        Cmdline { debug, console }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn console_switch() {
        assert!(Cmdline::parse("quiet reprov.console\n").console);
        assert!(!Cmdline::parse("reprov.consoles").console);
    }
}
