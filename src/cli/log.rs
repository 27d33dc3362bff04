//! `reprov log`: the step log on an appliance disk.

use std::path::PathBuf;

use argh::FromArgs;
use time::format_description::well_known::Rfc3339;

use crate::store::LogRead;

/// Print the step log of an appliance disk (oldest first): time, code, what it means.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "log")]
pub struct LogArgs {
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
    /// print the raw entries, one JSON object per line
    #[argh(switch)]
    json: bool,
    /// print only the last N entries
    #[argh(option)]
    last: Option<usize>,
}

/// The text `reprov log` prints (pure).
fn render(read: &LogRead, json: bool, last: Option<usize>) -> String {
    let skip = last.map_or(0, |n| read.entries.len().saturating_sub(n));
    let mut out = String::new();
    for entry in &read.entries[skip..] {
        if json {
            out.push_str(&entry.render());
            continue;
        }
        let time = entry
            .time
            .format(&Rfc3339)
            .expect("a logged time formats as RFC 3339");
        out.push_str(&format!("{time}  {}  {}", entry.code, entry.verbose()));
        if let Some(detail) = &entry.detail {
            out.push_str(": ");
            // One entry, one line, whatever the detail holds.
            out.extend(detail.chars().map(|c| if c.is_control() { ' ' } else { c }));
        }
        out.push('\n');
    }
    out
}

/// Runs `reprov log`.
pub fn run(args: LogArgs) -> crate::Result<()> {
    super::job::with_store(&args.disk, "reading the log", |store| {
        let read = store.read_log()?;
        if read.skipped > 0 {
            log::warn!(
                "skipped {} unreadable log line(s): a torn last line is what a power cut \
                 during an append leaves",
                read.skipped
            );
        }
        if read.entries.is_empty() {
            log::info!("the step log is empty");
        }
        print!("{}", render(&read, args.json, args.last));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Code, Entry};
    use time::macros::datetime;

    fn read() -> LogRead {
        let t = datetime!(2026-11-25 12:00:00 UTC);
        LogRead {
            entries: vec![
                Entry::new(Code::JobRead, t, None),
                Entry::new(Code::ApplyProgress, t, Some("chunk 3\nof 9")),
                Entry::new(Code::ImageCorrupt, t, Some("chunk 4: CRC")),
            ],
            skipped: 0,
        }
    }

    #[test]
    fn prints_the_verbose_form() {
        assert_eq!(
            render(&read(), false, None),
            "2026-11-25T12:00:00Z  R012  Read the pending job\n\
             2026-11-25T12:00:00Z  R031  Wrote and checked chunks of the image onto NOS: chunk 3 of 9\n\
             2026-11-25T12:00:00Z  E103  The image is corrupt (bad manifest, checksum or length): chunk 4: CRC\n"
        );
    }

    #[test]
    fn prints_the_last_entries_as_json() {
        let out = render(&read(), true, Some(1));
        assert_eq!(out, read().entries[2].render());
        assert_eq!(render(&read(), true, Some(10)).lines().count(), 3);
        assert_eq!(render(&read(), false, Some(0)), "");
    }
}
