//! `reprov job show|set|clear`: the pending job on an appliance disk.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use argh::FromArgs;
use time::OffsetDateTime;

use crate::disk::Role;
use crate::io::SyncAll;
use crate::store::{Job, JobError, Store};

/// Show, set or clear the pending job on an appliance disk.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "job")]
pub struct JobArgs {
    #[argh(subcommand)]
    command: JobCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum JobCommand {
    Show(Show),
    Set(Set),
    Clear(Clear),
}

/// Print the pending job (the text of reprov/job).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
struct Show {
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
}

/// Write the pending job. With --kind or --image: a new pending job (the other of the two
/// taken from the current job); without: the current job with the fields given changed.
/// The result is checked like a job file read from disk; nothing is written if it fails.
#[derive(FromArgs, Debug, Default)]
#[argh(subcommand, name = "set")]
struct Set {
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
    /// apply, create or factory
    #[argh(option)]
    kind: Option<String>,
    /// the image file name in images/ (a plain name, no path)
    #[argh(option)]
    image: Option<String>,
    /// pending, running, committing, done or failed (new jobs: pending)
    #[argh(option)]
    state: Option<String>,
    /// chunks already written (new jobs: 0)
    #[argh(option)]
    checkpoint: Option<u64>,
    /// attempts so far (new jobs: 0)
    #[argh(option)]
    attempts: Option<u64>,
    /// the last error's message
    #[argh(option)]
    last_error: Option<String>,
    /// when the job was asked for, RFC 3339 (new jobs: now)
    #[argh(option)]
    requested_at: Option<String>,
    /// do not start before this time, RFC 3339
    #[argh(option)]
    not_before: Option<String>,
}

/// Remove the pending job.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "clear")]
struct Clear {
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
}

/// The text `job show` prints: the job file as reprov reads it, or a note that there
/// is none.
fn show<D: Read + Write + Seek>(store: &Store<D>) -> Result<String, crate::store::Error> {
    Ok(match store.read_job()? {
        Some(job) => job.render(),
        None => "# no pending job\n".to_string(),
    })
}

/// The job `job set` asks for (pure). With `--kind` or `--image` it is a new job
/// (pending, checkpoint 0, no attempts, requested now), taking the other of the two
/// from `current`; without them it is `current` with the fields given changed. Either
/// way the fields go through the job file parser, so the command line is held to the
/// same bounds as the file.
fn merged(current: Option<&Job>, set: &Set, now: OffsetDateTime) -> Result<Job, String> {
    let fresh = set.kind.is_some() || set.image.is_some();
    let mut table: toml::Table = match current {
        Some(job) if !fresh => toml::from_str(&job.render()).expect("a rendered job is TOML"),
        _ => {
            let now = now.replace_nanosecond(0).expect("0 ns is valid");
            let text = format!(
                "state = \"pending\"\ncheckpoint = 0\nattempts = 0\nrequested_at = {}\n",
                now.format(&time::format_description::well_known::Rfc3339)
                    .expect("now formats as RFC 3339")
            );
            let mut table: toml::Table = toml::from_str(&text).expect("fresh fields are TOML");
            if let Some(job) = current {
                let kind = toml::Value::String(job.kind.as_str().into());
                table.insert("kind".into(), kind);
                let image = toml::Value::String(job.image.as_str().into());
                table.insert("image".into(), image);
            }
            table
        }
    };
    let text = |v: &Option<String>| v.clone().map(toml::Value::String);
    let number = |field: &str, v: Option<u64>| {
        v.map(|n| {
            i64::try_from(n)
                .map(toml::Value::Integer)
                .map_err(|_| format!("field {field:?}: {n} is too large"))
        })
        .transpose()
    };
    let changes = [
        ("kind", text(&set.kind)),
        ("image", text(&set.image)),
        ("state", text(&set.state)),
        ("checkpoint", number("checkpoint", set.checkpoint)?),
        ("attempts", number("attempts", set.attempts)?),
        ("last_error", text(&set.last_error)),
        ("requested_at", text(&set.requested_at)),
        ("not_before", text(&set.not_before)),
    ];
    for (field, value) in changes {
        if let Some(value) = value {
            table.insert(field.to_string(), value);
        }
    }
    let text = toml::to_string(&table).expect("a table of plain values serializes");
    // Lines of this generated text mean nothing to the user: report the field only.
    Job::parse(&text).map_err(|e: JobError| match e.field {
        Some(field) => format!("field {field:?}: {}", e.problem),
        None => e.problem,
    })
}

/// Runs `reprov job …`.
pub fn run(args: JobArgs) -> crate::Result<()> {
    let (path, action) = match &args.command {
        JobCommand::Show(a) => (&a.disk, "reading the job"),
        JobCommand::Set(a) => (&a.disk, "setting the job"),
        JobCommand::Clear(a) => (&a.disk, "clearing the job"),
    };
    with_store(path, action, |store| match &args.command {
        JobCommand::Show(_) => {
            print!("{}", show(store)?);
            Ok(())
        }
        JobCommand::Set(set) => {
            let current = store.read_job()?;
            let job = merged(current.as_ref(), set, OffsetDateTime::now_utc()).map_err(|why| {
                crate::Error::Usage(format!(
                    "refusing the job for {}: {why}; nothing was written",
                    path.display()
                ))
            })?;
            store.write_job(&job)?;
            log::info!("wrote the job ({} {}, {})", job.kind, job.image, job.state);
            Ok(())
        }
        JobCommand::Clear(_) => {
            store.clear_job()?;
            log::info!("cleared the job");
            Ok(())
        }
    })
}

/// Opens the disk, mounts its images partition, runs `f`, then always unmounts and syncs.
/// Errors say what was being done (`action`) and on which disk.
pub(super) fn with_store<T>(
    path: &Path,
    action: &'static str,
    f: impl FnOnce(&crate::disk::Mounted<'_, File>) -> crate::Result<T>,
) -> crate::Result<T> {
    let on_disk = |source: crate::Error| match source {
        usage @ crate::Error::Usage(_) => usage,
        source => crate::Error::OnDisk {
            what: action,
            disk: path.display().to_string(),
            source: Box::new(source),
        },
    };
    let mut disk = super::open_disk(path)?;
    let store = disk.store().map_err(on_disk)?;
    let result = f(&store);
    let unmounted = store.unmount();
    let value = result.map_err(on_disk)?;
    unmounted.map_err(|e| on_disk(e.into()))?;
    disk.partition(Role::Images)
        .and_then(|mut images| images.sync_all())
        .map_err(|e| crate::Error::io("syncing the images partition of", path.display(), e))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ImageName, Kind, State};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00.5 UTC);

    fn set() -> Set {
        Set {
            kind: Some("apply".into()),
            image: Some("m1.rpi".into()),
            ..Set::default()
        }
    }

    #[test]
    fn a_new_job_gets_defaults() {
        let job = merged(None, &set(), NOW).unwrap();
        let want = Job::new(
            Kind::Apply,
            ImageName::new("m1.rpi").unwrap(),
            datetime!(2026-11-25 12:00:00 UTC),
        );
        assert_eq!(job, want);
    }

    #[test]
    fn changes_keep_the_other_fields() {
        let current = merged(None, &set(), NOW).unwrap().start().unwrap();
        let current = current.checkpoint(40).unwrap().fail("boom").unwrap();
        let rearm = Set {
            state: Some("pending".into()),
            attempts: Some(0),
            ..Set::default()
        };
        let job = merged(Some(&current), &rearm, NOW).unwrap();
        assert_eq!(
            (job.state, job.attempts, job.checkpoint),
            (State::Pending, 0, 40)
        );
        assert_eq!(job.last_error.as_deref(), Some("boom"));
        assert_eq!(job.requested_at, current.requested_at);
    }

    #[test]
    fn a_new_image_makes_a_new_job() {
        let current = merged(None, &set(), NOW).unwrap().start().unwrap();
        let current = current.checkpoint(40).unwrap().fail("boom").unwrap();
        let later = datetime!(2026-11-26 08:00:00 UTC);
        let again = Set {
            image: Some("m2.rpi".into()),
            ..Set::default()
        };
        let job = merged(Some(&current), &again, later).unwrap();
        let want = Job::new(Kind::Apply, ImageName::new("m2.rpi").unwrap(), later);
        assert_eq!(job, want);
    }

    #[test]
    fn bad_fields_are_refused_by_name() {
        let cases: Vec<(Set, &str)> = vec![
            (
                Set {
                    image: Some("../x".into()),
                    ..set()
                },
                "field \"image\": image name \"../x\" contains '/'",
            ),
            (
                Set {
                    kind: Some("wipe".into()),
                    ..set()
                },
                "field \"kind\": unknown kind \"wipe\"",
            ),
            (
                Set {
                    state: Some("runing".into()),
                    ..set()
                },
                "field \"state\": unknown state \"runing\"",
            ),
            (
                Set {
                    checkpoint: Some(u64::MAX),
                    ..set()
                },
                "field \"checkpoint\": 18446744073709551615 is too large",
            ),
            (
                Set {
                    checkpoint: Some(1 << 40),
                    ..set()
                },
                "field \"checkpoint\": 1099511627776 is more than",
            ),
            (
                Set {
                    attempts: Some(1001),
                    ..set()
                },
                "field \"attempts\": 1001 is more than the 1000",
            ),
            (
                Set {
                    requested_at: Some("noon".into()),
                    ..set()
                },
                "field \"requested_at\": \"noon\" is not an RFC 3339",
            ),
            (
                Set {
                    kind: None,
                    ..set()
                },
                "field \"kind\": missing",
            ),
            (
                Set {
                    image: None,
                    ..set()
                },
                "field \"image\": missing",
            ),
            (
                Set {
                    last_error: Some("a\u{1b}[2J".into()),
                    ..set()
                },
                "field \"last_error\": contains control",
            ),
        ];
        for (args, want) in cases {
            let err = merged(None, &args, NOW).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn show_prints_the_job_or_says_there_is_none() {
        let mut disk = crate::store::tests::formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(show(&store).unwrap(), "# no pending job\n");
        let job = merged(None, &set(), NOW).unwrap();
        store.write_job(&job).unwrap();
        assert_eq!(show(&store).unwrap(), job.render());
        store.unmount().unwrap();
    }
}
