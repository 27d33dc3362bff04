//! The job: what the recovery environment does next, kept in `reprov/job` as TOML.
//!
//! Parsing and rendering are pure; [`super::Store`] reads and writes the file. Every
//! value is bounded and checked, and a refusal names the field and the line.
//!
//! ```toml
//! kind = "apply"
//! image = "m1-SN42.rpi"
//! requested_at = 2026-11-25T12:00:00Z
//! state = "pending"
//! checkpoint = 0
//! attempts = 0
//! ```

use std::fmt;
use std::ops::Range;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::name::ImageName;

/// Largest job file accepted, in bytes.
pub const MAX_JOB_BYTES: usize = 16 * 1024;
/// Largest checkpoint: a chunk is at least one sector and an MBR disk has at most 2^32.
pub const MAX_CHECKPOINT: u64 = 1 << 32;
/// Most attempts recorded; recovery gives up well before this.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Longest `last_error`, in bytes.
pub const MAX_ERROR_BYTES: usize = 1024;
/// Failed attempts recovery makes at a job before it stops retrying.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Starts that ended with no failure recorded (power cuts, crashes) before recovery gives
/// up on a job: a cut is not the image's fault, but a job that takes the machine down at
/// every start must not loop for ever.
pub const MAX_UNFINISHED_STARTS: u32 = 20;

/// The fields of a job file, in the order they are written.
const FIELDS: &[&str] = &[
    "kind",
    "image",
    "requested_at",
    "state",
    "checkpoint",
    "attempts",
    "last_error",
    "not_before",
    "backup",
    "backup_image",
    "max_attempts",
    "failures",
    "nos_written",
];

/// What the job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Write an image from the images partition onto NOS.
    Apply,
    /// Pack NOS into an image file on the images partition.
    Create,
    /// Apply the factory image from the data partition.
    Factory,
}

/// Where the job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Written by `schedule`; recovery has not started it.
    Pending,
    /// Recovery is writing NOS (see the checkpoint).
    Running,
    /// NOS is written and verified; the MBR commit is under way.
    Committing,
    Done,
    /// Stopped on an error (see `last_error`); recovery may start it again.
    Failed,
}

/// Names of an enum's values and a text for "expected a, b or c".
macro_rules! named {
    ($ty:ty, $what:literal, $( $v:ident = $s:literal ),+ $(,)?) => {
        impl $ty {
            const NAMES: &'static [($ty, &'static str)] = &[$( (<$ty>::$v, $s) ),+];

            /// The name written in the job file.
            pub fn as_str(self) -> &'static str {
                match self { $( <$ty>::$v => $s ),+ }
            }

            /// Parses a name, the error says what was expected (pure).
            pub fn parse(name: &str) -> Result<Self, String> {
                Self::NAMES
                    .iter()
                    .find(|(_, s)| *s == name)
                    .map(|(v, _)| *v)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Self::NAMES.iter().map(|(_, s)| *s).collect();
                        format!("unknown {} {name:?} (expected {})", $what, one_of(&names))
                    })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(
    Kind,
    "kind",
    Apply = "apply",
    Create = "create",
    Factory = "factory"
);
named!(
    State,
    "state",
    Pending = "pending",
    Running = "running",
    Committing = "committing",
    Done = "done",
    Failed = "failed",
);

/// "a, b or c".
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A job refused: where (line, field, when known) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JobError {
    pub line: Option<usize>,
    pub field: Option<String>,
    pub problem: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, &self.field) {
            (Some(line), Some(field)) => write!(f, "line {line}, field {field:?}: "),
            (Some(line), None) => write!(f, "line {line}: "),
            (None, Some(field)) => write!(f, "field {field:?}: "),
            (None, None) => Ok(()),
        }?;
        f.write_str(&self.problem)
    }
}

impl JobError {
    fn field(field: &str, problem: impl Into<String>) -> Self {
        JobError {
            line: None,
            field: Some(field.to_string()),
            problem: problem.into(),
        }
    }
}

/// The pending job. Build one with [`Job::new`] or [`Job::parse`]; the fields are public
/// for reading, and [`super::Store::write_job`] re-validates before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub kind: Kind,
    pub image: ImageName,
    /// When the job was asked for (UTC).
    pub requested_at: OffsetDateTime,
    pub state: State,
    /// Chunks durably written to the target so far.
    pub checkpoint: u64,
    /// How many times recovery started the job (power cuts included).
    pub attempts: u32,
    /// How many of those starts recovery recorded as failed (power cuts excluded).
    pub failures: u32,
    /// An apply has begun writing NOS: it may no longer hold the previous appliance, so
    /// no safety backup may be taken of it. Written before NOS's first byte changes.
    pub nos_written: bool,
    pub last_error: Option<String>,
    /// Do not start before this time (UTC); for scheduled jobs.
    pub not_before: Option<OffsetDateTime>,
    /// Whether recovery packs the current NOS into an image before an apply overwrites
    /// it, so a failed apply can bring it back (default yes).
    pub backup: bool,
    /// The safety backup, once it is made (on the images partition).
    pub backup_image: Option<ImageName>,
    /// Failed attempts after which recovery stops retrying the job.
    pub max_attempts: u32,
}

impl Job {
    /// A fresh pending job.
    pub fn new(kind: Kind, image: ImageName, requested_at: OffsetDateTime) -> Self {
        Job {
            kind,
            image,
            requested_at: requested_at.to_offset(UtcOffset::UTC),
            state: State::Pending,
            checkpoint: 0,
            attempts: 0,
            failures: 0,
            nos_written: false,
            last_error: None,
            not_before: None,
            backup: true,
            backup_image: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Parses and validates a job file (pure).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Job, JobError> {
        check_size(bytes.len())?;
        let text = std::str::from_utf8(bytes).map_err(|e| JobError {
            line: Some(line_of(bytes, e.valid_up_to())),
            field: None,
            problem: "not UTF-8 text".into(),
        })?;
        Job::parse(text)
    }

    /// Parses and validates a job file (pure).
    pub fn parse(text: &str) -> Result<Job, JobError> {
        check_size(text.len())?;
        let doc = DeTable::parse(text).map_err(|e| syntax_error(text, &e))?;
        // In file order, so the first complaint is about the first bad line.
        let mut entries: Vec<(&Spanned<_>, &Spanned<DeValue>)> = doc.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut found = Vec::new();
        for (key, value) in entries {
            let name: &str = key.get_ref();
            if !FIELDS.contains(&name) {
                let problem = format!("unknown field (expected {})", one_of(FIELDS));
                return Err(located(text, key.span(), name, problem));
            }
            found.push((name, value));
        }
        let f = Fields { text, found };
        let state = f.required("state", |v| string(v).and_then(State::parse))?;
        Ok(Job {
            kind: f.required("kind", |v| string(v).and_then(Kind::parse))?,
            image: f.required("image", |v| string(v).and_then(ImageName::new))?,
            requested_at: f.required("requested_at", datetime)?,
            state,
            checkpoint: f.required("checkpoint", |v| integer(v, MAX_CHECKPOINT))?,
            attempts: f.required("attempts", |v| {
                let n = integer(v, MAX_ATTEMPTS.into())?;
                Ok(u32::try_from(n).expect("bounded by MAX_ATTEMPTS"))
            })?,
            last_error: f.optional("last_error", error_text)?,
            not_before: f.optional("not_before", datetime)?,
            backup: f.optional("backup", boolean)?.unwrap_or(true),
            backup_image: f.optional("backup_image", |v| string(v).and_then(ImageName::new))?,
            max_attempts: f
                .optional("max_attempts", |v| {
                    let n = integer(v, MAX_ATTEMPTS.into())?;
                    let n = u32::try_from(n).expect("bounded by MAX_ATTEMPTS");
                    if n == 0 {
                        return Err("must be at least 1".into());
                    }
                    Ok(n)
                })?
                .unwrap_or(DEFAULT_MAX_ATTEMPTS),
            failures: f
                .optional("failures", |v| {
                    let n = integer(v, MAX_ATTEMPTS.into())?;
                    Ok(u32::try_from(n).expect("bounded by MAX_ATTEMPTS"))
                })?
                .unwrap_or(0),
            // Job files from before the field: only a pending job is sure to be untouched.
            nos_written: f
                .optional("nos_written", boolean)?
                .unwrap_or(state != State::Pending),
        })
    }

    /// The job file's text; [`Job::parse`] reads it back to an equal job (pure).
    pub fn render(&self) -> String {
        let mut out = String::from("# reprov job: what the recovery environment does next\n");
        let mut line = |key: &str, value: String| out.push_str(&format!("{key} = {value}\n"));
        line("kind", quoted(self.kind.as_str()));
        line("image", quoted(self.image.as_str()));
        line("requested_at", rfc3339(self.requested_at));
        line("state", quoted(self.state.as_str()));
        line("checkpoint", self.checkpoint.to_string());
        line("attempts", self.attempts.to_string());
        if let Some(e) = &self.last_error {
            line("last_error", quoted(e));
        }
        if let Some(t) = self.not_before {
            line("not_before", rfc3339(t));
        }
        // Defaults are left out, so files stay as short as before these fields.
        if !self.backup {
            line("backup", "false".into());
        }
        if let Some(name) = &self.backup_image {
            line("backup_image", quoted(name.as_str()));
        }
        if self.max_attempts != DEFAULT_MAX_ATTEMPTS {
            line("max_attempts", self.max_attempts.to_string());
        }
        if self.failures != 0 {
            line("failures", self.failures.to_string());
        }
        // Its default depends on the state: always written once NOS is touched.
        if self.nos_written || self.state != State::Pending {
            line("nos_written", self.nos_written.to_string());
        }
        out
    }

    /// Recovery (re)starts the job: pending, running (after a power cut) or failed →
    /// running, one more attempt; the checkpoint is kept so a restart resumes (pure).
    pub fn start(&self) -> Result<Job, JobError> {
        match self.state {
            State::Pending | State::Running | State::Failed => {}
            State::Committing | State::Done => return Err(self.cannot("start")),
        }
        let attempts = self
            .attempts
            .checked_add(1)
            .filter(|n| *n <= MAX_ATTEMPTS)
            .ok_or_else(|| {
                JobError::field("attempts", format!("already {} attempts", self.attempts))
            })?;
        Ok(Job {
            state: State::Running,
            attempts,
            ..self.clone()
        })
    }

    /// Records that `chunks` chunks are durably written; never goes backwards (pure).
    pub fn checkpoint(&self, chunks: u64) -> Result<Job, JobError> {
        if self.state != State::Running {
            return Err(self.cannot("record a checkpoint for"));
        }
        if chunks < self.checkpoint || chunks > MAX_CHECKPOINT {
            return Err(JobError::field(
                "checkpoint",
                format!(
                    "cannot move from {} to {chunks} (it only grows, up to {MAX_CHECKPOINT})",
                    self.checkpoint
                ),
            ));
        }
        Ok(Job {
            checkpoint: chunks,
            ..self.clone()
        })
    }

    /// NOS is written and verified; the MBR commit begins: running → committing (pure).
    pub fn commit_started(&self) -> Result<Job, JobError> {
        self.step(State::Running, State::Committing, "commit")
    }

    /// The commit landed: committing → done (pure).
    pub fn done(&self) -> Result<Job, JobError> {
        self.step(State::Committing, State::Done, "finish")
    }

    /// Stops the job on an error: any state but done → failed, with the message
    /// (control characters become spaces, cut to [`MAX_ERROR_BYTES`]) (pure).
    pub fn fail(&self, message: &str) -> Result<Job, JobError> {
        if self.state == State::Done {
            return Err(self.cannot("fail"));
        }
        let mut text: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        while text.len() > MAX_ERROR_BYTES {
            text.pop();
        }
        Ok(Job {
            state: State::Failed,
            last_error: Some(text),
            ..self.clone()
        })
    }

    fn step(&self, from: State, to: State, action: &str) -> Result<Job, JobError> {
        if self.state != from {
            return Err(self.cannot(action));
        }
        Ok(Job {
            state: to,
            ..self.clone()
        })
    }

    fn cannot(&self, action: &str) -> JobError {
        JobError::field(
            "state",
            format!("cannot {action} a job that is {}", self.state),
        )
    }
}

/// The fields of a parsed file, each checked where it is used.
struct Fields<'a> {
    text: &'a str,
    found: Vec<(&'a str, &'a Spanned<DeValue<'a>>)>,
}

impl Fields<'_> {
    /// The field's value through `parse`; a problem becomes an error at its line.
    fn optional<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&DeValue) -> Result<T, String>,
    ) -> Result<Option<T>, JobError> {
        let Some((_, value)) = self.found.iter().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        parse(value.get_ref())
            .map(Some)
            .map_err(|problem| located(self.text, value.span(), name, problem))
    }

    fn required<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&DeValue) -> Result<T, String>,
    ) -> Result<T, JobError> {
        self.optional(name, parse)?
            .ok_or_else(|| JobError::field(name, "missing (a job needs it)"))
    }
}

fn check_size(len: usize) -> Result<(), JobError> {
    if len > MAX_JOB_BYTES {
        return Err(JobError {
            line: None,
            field: None,
            problem: format!("is {len} bytes long, more than the {MAX_JOB_BYTES} a job may have"),
        });
    }
    Ok(())
}

/// An error at the line where `span` starts.
fn located(text: &str, span: Range<usize>, field: &str, problem: String) -> JobError {
    JobError {
        line: Some(line_of(text.as_bytes(), span.start)),
        field: Some(field.to_string()),
        problem,
    }
}

/// 1-based line of byte `offset`.
fn line_of(text: &[u8], offset: usize) -> usize {
    let end = offset.min(text.len());
    text[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// A TOML syntax error, with the field when the line names a known one.
fn syntax_error(text: &str, e: &toml::de::Error) -> JobError {
    let line = e.span().map(|span| line_of(text.as_bytes(), span.start));
    let field = line
        .and_then(|n| text.lines().nth(n - 1))
        .and_then(|l| l.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| FIELDS.contains(key))
        .map(str::to_string);
    let message = e.message().trim().replace('\n', "; ");
    JobError {
        line,
        field,
        problem: format!("not valid TOML: {message}"),
    }
}

fn string<'a>(value: &'a DeValue) -> Result<&'a str, String> {
    match value {
        DeValue::String(s) => Ok(s),
        other => Err(format!("expected a string, found {}", other.type_str())),
    }
}

fn boolean(value: &DeValue) -> Result<bool, String> {
    match value {
        DeValue::Boolean(b) => Ok(*b),
        other => Err(format!(
            "expected true or false, found {}",
            other.type_str()
        )),
    }
}

fn integer(value: &DeValue, max: u64) -> Result<u64, String> {
    let DeValue::Integer(i) = value else {
        return Err(format!(
            "expected a whole number, found {}",
            value.type_str()
        ));
    };
    if i.as_str().starts_with('-') {
        return Err(format!("must not be negative, found {i}"));
    }
    match u64::from_str_radix(i.as_str(), i.radix()) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("{i} is more than the {max} allowed")),
    }
}

fn datetime(value: &DeValue) -> Result<OffsetDateTime, String> {
    let text = match value {
        DeValue::Datetime(d) => d.to_string(),
        DeValue::String(s) => s.to_string(),
        other => return Err(format!("expected a date-time, found {}", other.type_str())),
    };
    OffsetDateTime::parse(&text, &Rfc3339)
        .map(|t| t.to_offset(UtcOffset::UTC))
        .map_err(|e| {
            format!("{text:?} is not an RFC 3339 date-time like 2026-11-25T12:00:00Z ({e})")
        })
}

fn error_text(value: &DeValue) -> Result<String, String> {
    let text = string(value)?;
    if text.len() > MAX_ERROR_BYTES {
        return Err(format!(
            "is {} bytes long, more than the {MAX_ERROR_BYTES} allowed",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(text.to_string())
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("a UTC time within years 0..=9999 formats as RFC 3339")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const GOOD: &str = "kind = \"apply\"\nimage = \"m1-SN42.rpi\"\n\
        requested_at = 2026-11-25T12:00:00Z\nstate = \"pending\"\ncheckpoint = 0\nattempts = 0\n";

    fn job() -> Job {
        Job::new(
            Kind::Apply,
            ImageName::new("m1-SN42.rpi").unwrap(),
            datetime!(2026-11-25 12:00:00 UTC),
        )
    }

    #[test]
    fn a_plain_job_parses() {
        assert_eq!(Job::parse(GOOD).unwrap(), job());
    }

    #[test]
    fn render_round_trips() {
        let mut full = job().start().unwrap().checkpoint(77).unwrap();
        full.last_error = Some("chunk 78: \"crc\" mismatch \\ retry".into());
        full.not_before = Some(datetime!(2026-12-01 03:30:00.25 +02:00));
        full.backup = false;
        full.backup_image = Some(ImageName::new("previous.tar").unwrap());
        full.max_attempts = 5;
        for j in [job(), full] {
            let text = j.render();
            let back = Job::parse(&text).unwrap();
            assert_eq!(back, j, "{text}");
            assert_eq!(back.render(), text);
        }
    }

    #[test]
    fn safety_fields_default_and_are_checked() {
        let j = Job::parse(GOOD).unwrap();
        assert_eq!((j.backup, j.backup_image, j.max_attempts), (true, None, 3));
        for (line, problem) in [
            ("backup = \"yes\"\n", "expected true or false"),
            ("max_attempts = 0\n", "at least 1"),
            ("backup_image = \"../x\"\n", "plain file name"),
        ] {
            let error = Job::parse(&format!("{GOOD}{line}")).unwrap_err();
            assert_eq!(error.line, Some(7), "{line}");
            assert!(error.problem.contains(problem), "{line}: {error}");
        }
    }

    #[test]
    fn times_are_kept_in_utc() {
        let text = GOOD.replace("12:00:00Z", "14:00:00+02:00");
        let j = Job::parse(&text).unwrap();
        assert_eq!(j.requested_at, datetime!(2026-11-25 12:00:00 UTC));
        assert!(j.render().contains("requested_at = 2026-11-25T12:00:00Z\n"));
    }

    #[test]
    fn the_happy_path_of_states() {
        let j = job().start().unwrap();
        assert_eq!((j.state, j.attempts), (State::Running, 1));
        let j = j.checkpoint(10).unwrap().checkpoint(10).unwrap();
        let j = j.commit_started().unwrap().done().unwrap();
        assert_eq!((j.state, j.checkpoint, j.attempts), (State::Done, 10, 1));
    }

    #[test]
    fn a_restart_after_a_failure_resumes_from_the_checkpoint() {
        let j = job().start().unwrap().checkpoint(5).unwrap();
        let j = j.fail("read error\non chunk 6").unwrap();
        assert_eq!(j.state, State::Failed);
        assert_eq!(j.last_error.as_deref(), Some("read error on chunk 6"));
        let j = j.start().unwrap();
        assert_eq!((j.state, j.checkpoint, j.attempts), (State::Running, 5, 2));
    }

    #[test]
    fn wrong_transitions_are_refused() {
        let pending = job();
        let running = job().start().unwrap().checkpoint(5).unwrap();
        let committing = running.commit_started().unwrap();
        let done = committing.done().unwrap();
        let cases: Vec<(&str, Result<Job, JobError>, &str)> = vec![
            ("checkpoint pending", pending.checkpoint(1), "cannot record"),
            ("commit pending", pending.commit_started(), "cannot commit"),
            (
                "done running",
                running.done(),
                "cannot finish a job that is running",
            ),
            ("backwards", running.checkpoint(4), "from 5 to 4"),
            ("too far", running.checkpoint(MAX_CHECKPOINT + 1), "up to"),
            ("start committing", committing.start(), "cannot start"),
            (
                "start done",
                done.start(),
                "cannot start a job that is done",
            ),
            ("fail done", done.fail("x"), "cannot fail"),
        ];
        for (name, result, want) in cases {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
        }
        let mut worn = job();
        worn.attempts = MAX_ATTEMPTS;
        assert!(worn.start().unwrap_err().to_string().contains("attempts"));
    }

    #[test]
    fn fail_bounds_the_message() {
        let j = job().fail(&"é".repeat(MAX_ERROR_BYTES)).unwrap();
        assert!(j.last_error.as_ref().unwrap().len() <= MAX_ERROR_BYTES);
        assert_eq!(Job::parse(&j.render()).unwrap(), j);
    }

    /// The bad-input table: each broken file is refused, naming the field and line.
    #[test]
    fn broken_job_files_are_refused_with_field_and_line() {
        let with = |from: &str, to: &str| GOOD.replace(from, to);
        let long_name = format!("image = \"{}\"", "x".repeat(300));
        let huge = format!("{GOOD}# {}\n", "x".repeat(MAX_JOB_BYTES));
        let cases: Vec<(&str, String, &str)> = vec![
            ("bad TOML", with("state = \"pending\"", "state = pending"), "line 4, field \"state\": not valid TOML"),
            ("unterminated", with("kind = \"apply\"", "kind = \"apply"), "line 1, field \"kind\": not valid TOML"),
            ("unknown kind", with("\"apply\"", "\"restore\""), "line 1, field \"kind\": unknown kind \"restore\" (expected apply, create or factory)"),
            ("unknown state", with("\"pending\"", "\"runing\""), "line 4, field \"state\": unknown state \"runing\" (expected pending, running, committing, done or failed)"),
            ("dot-dot name", with("m1-SN42.rpi", "../x"), "line 2, field \"image\": image name \"../x\" contains '/'"),
            ("path name", with("m1-SN42.rpi", "a/b"), "line 2, field \"image\": image name \"a/b\" contains '/'"),
            ("backslash name", with("m1-SN42.rpi", "a\\\\b"), "line 2, field \"image\": image name \"a\\\\b\" contains '\\\\'"),
            ("300-byte name", with("image = \"m1-SN42.rpi\"", &long_name), "line 2, field \"image\": image name is 300 bytes long"),
            ("empty name", with("m1-SN42.rpi", ""), "line 2, field \"image\": an image name must not be empty"),
            ("control char in name", with("m1-SN42.rpi", "a\\u0007b"), "line 2, field \"image\": image name \"a\\u{7}b\" contains the control character"),
            ("negative checkpoint", with("checkpoint = 0", "checkpoint = -1"), "line 5, field \"checkpoint\": must not be negative, found -1"),
            ("huge checkpoint", with("checkpoint = 0", "checkpoint = 99999999999999999999"), "line 5, field \"checkpoint\": 99999999999999999999 is more than the"),
            ("checkpoint over bound", with("checkpoint = 0", "checkpoint = 4294967297"), "line 5, field \"checkpoint\": 4294967297 is more than the 4294967296 allowed"),
            ("float checkpoint", with("checkpoint = 0", "checkpoint = 1.5"), "line 5, field \"checkpoint\": expected a whole number, found float"),
            ("attempts over bound", with("attempts = 0", "attempts = 5000000000"), "line 6, field \"attempts\": 5000000000 is more than the 1000 allowed"),
            ("unknown field", format!("{GOOD}colour = \"red\"\n"), "line 7, field \"colour\": unknown field (expected kind, image,"),
            ("missing field", with("state = \"pending\"\n", ""), "field \"state\": missing"),
            ("missing kind", with("kind = \"apply\"\n", ""), "field \"kind\": missing"),
            ("kind not a string", with("\"apply\"", "1"), "line 1, field \"kind\": expected a string, found integer"),
            ("bad date", with("2026-11-25T12:00:00Z", "\"yesterday\""), "line 3, field \"requested_at\": \"yesterday\" is not an RFC 3339 date-time"),
            ("local date", with("2026-11-25T12:00:00Z", "2026-11-25T12:00:00"), "line 3, field \"requested_at\": \"2026-11-25T12:00:00\" is not an RFC 3339"),
            ("duplicate key", format!("{GOOD}state = \"done\"\n"), "line 7, field \"state\": not valid TOML: duplicate key"),
            ("a table", format!("{GOOD}[extra]\nx = 1\n"), "line 7, field \"extra\": unknown field"),
            ("oversized file", huge, "bytes long, more than the 16384 a job may have"),
            ("control char in error", format!("{GOOD}last_error = \"a\\u0000b\"\n"), "line 7, field \"last_error\": contains control characters"),
        ];
        for (name, text, want) in &cases {
            let err = Job::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn non_utf8_is_refused_with_its_line() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes.extend_from_slice(b"last_error = \"\xff\"\n");
        let err = Job::parse_bytes(&bytes).unwrap_err().to_string();
        assert_eq!(err, "line 7: not UTF-8 text");
    }
}
