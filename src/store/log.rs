//! The step log (the patent's Error Capture): `reprov/log` on the images partition, so
//! it survives re-imaging of NOS.
//!
//! One JSON object per line: time (RFC 3339 UTC), code (`R…` steps, `E…` failures), the
//! code's short name, and an optional detail. Each append is flushed. A torn last line
//! (power cut mid-append) is skipped when reading, and the next append starts on a
//! fresh line. Past [`LOG_LIMIT`] bytes the log moves to `reprov/log.1` (one old file
//! is kept), so the log stays bounded.

use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

use super::{file_error, Error, Store};

/// The step log.
pub const LOG_PATH: &str = "reprov/log";
/// The previous step log, kept after a rotation.
pub const OLD_LOG_PATH: &str = "reprov/log.1";
/// Size at which the log is rotated, in bytes.
pub const LOG_LIMIT: u64 = 256 * 1024;
/// Longest detail kept in an entry, in bytes.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Defines [`Code`] and [`CODES`] from one table, so neither can miss a row.
macro_rules! codes {
    ($( $(#[$doc:meta])* $v:ident = $id:literal, $name:literal, $verbose:literal; )+) => {
        /// A step or failure recorded in the log.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code { $( $(#[$doc])* $v ),+ }

        /// Every code: (code, id written in the log, short name, verbose message).
        pub const CODES: &[(Code, &str, &str, &str)] = &[$( (Code::$v, $id, $name, $verbose) ),+];
    };
}

codes! {
    // The running appliance schedules a job.
    IdentitySaved = "R001", "identity-saved", "Saved the network identity to the images partition";
    ImageFetched = "R002", "image-fetched", "Fetched the image onto the images partition and verified it";
    JobWritten = "R003", "job-written", "Wrote the pending job";
    RecoveryArmed = "R004", "recovery-armed", "Made the system partition visible and active: the next boot runs recovery";
    ImageRemoved = "R005", "image-removed", "Removed an older image no job needs, to make room for a new one";
    // The recovery environment.
    RecoveryStarted = "R010", "recovery-started", "The recovery environment started";
    DiskFound = "R011", "disk-found", "Found the appliance disk";
    JobRead = "R012", "job-read", "Read the pending job";
    ImageValidated = "R020", "image-validated", "Validated the image: it is an image, it is whole, and it fits NOS and the float";
    NosGrown = "R021", "nos-grown", "Grew the NOS partition into the float";
    ApplyStarted = "R030", "apply-started", "Started writing the image onto NOS";
    ApplyProgress = "R031", "apply-progress", "Wrote and checked chunks of the image onto NOS";
    ApplyDone = "R032", "apply-done", "Wrote the whole image onto NOS";
    NosTypeSet = "R033", "nos-type-set", "Gave NOS the partition type of the image written onto it";
    CreateStarted = "R035", "create-started", "Started packing NOS into an image file";
    CreateDone = "R036", "create-done", "Packed NOS into an image file on the images partition";
    BackupCreated = "R037", "backup-created", "Packed the current NOS into a safety backup, so a failed apply can bring it back";
    BackupSkipped = "R038", "backup-skipped", "Made no safety backup of NOS (the job says not to, or it did not fit)";
    IdentityRestored = "R040", "identity-restored", "Restored the saved network identity into the new OS";
    Verified = "R041", "verified", "Flushed and verified NOS";
    FilesystemGrown = "R042", "filesystem-grown", "Grew the new OS's file system to fill the NOS partition";
    CommitStarted = "R050", "commit-started", "Started the commit: hiding the system partition and making NOS active";
    Committed = "R051", "committed", "Committed: NOS is active, the system partition hidden";
    JobDone = "R060", "job-done", "The job is done";
    Rebooting = "R061", "rebooting", "Rebooting";
    ImageUploaded = "R070", "image-uploaded", "Uploaded the created image to the server group's store";
    JobClosed = "R071", "job-closed", "Closed the finished job after its upload";
    // The safety net: a job that failed for good brings the previous appliance back.
    RollbackStarted = "R080", "rollback-started", "The job failed for good: bringing back the previous appliance";
    KeptPrevious = "R081", "kept-previous", "NOS was not written: the previous appliance stays and boots again";
    RolledBackPrevious = "R082", "rolled-back-previous", "Restored the previous appliance from its safety backup";
    RolledBackFactory = "R083", "rolled-back-factory", "Restored the factory image from the data partition";
    // Failures: recovery stays on its console, the system partition active.
    NoJob = "E100", "no-job", "There is no pending job";
    BadJob = "E101", "bad-job", "The job file is malformed or asks for something impossible";
    ImageMissing = "E102", "image-missing", "The job's image is not on the images partition";
    ImageCorrupt = "E103", "image-corrupt", "The image is corrupt (bad manifest, checksum or length)";
    ImageTooBig = "E104", "image-too-big", "The image does not fit NOS and the float";
    IoError = "E105", "io-error", "A read or write on the disk failed";
    IdentityError = "E106", "identity-error", "The saved identity could not be read or restored";
    DiskError = "E107", "disk-error", "The appliance disk was not found or its layout is not an appliance layout";
    CommitFailed = "E108", "commit-failed", "The MBR commit failed or did not read back as written";
    VerifyFailed = "E109", "verify-failed", "NOS did not verify after the write";
    TooManyAttempts = "E110", "too-many-attempts", "The job failed too many times; recovery stops retrying";
    RollbackFailed = "E111", "rollback-failed", "Could not bring back the previous appliance nor the factory image";
    RetryAfterReboot = "E112", "retry-after-reboot", "The job failed with nothing to roll back to: rebooting to try it again, since a fresh boot can cure what the running kernel cannot";
    FloatInUse = "E113", "float-in-use", "NOS needs to grow, but the float it would take holds data: nothing was written";
    Stalled = "E114", "stalled", "A step made no progress for the watchdog's limit (reprov.watchdog): rebooting, so the job resumes where it stood";
    ImageUntrusted = "E115", "image-untrusted", "The image is not signed by a key this machine trusts (or does not match its signature): nothing was written";
    Internal = "E199", "internal", "Internal error in reprov";
}

impl Code {
    fn row(self) -> &'static (Code, &'static str, &'static str, &'static str) {
        CODES
            .iter()
            .find(|row| row.0 == self)
            .expect("the codes! macro puts every code in CODES")
    }

    /// The id written in the log, like `R012`.
    pub fn id(self) -> &'static str {
        self.row().1
    }

    /// The short name, like `job-read`.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// The message for people.
    pub fn verbose(self) -> &'static str {
        self.row().3
    }

    /// The code with this id, if this reprov knows it.
    pub fn from_id(id: &str) -> Option<Code> {
        CODES.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    /// Failures have `E` codes.
    pub fn is_error(self) -> bool {
        self.id().starts_with('E')
    }
}

/// One line of the log, as stored. `code` stays text so entries written by another
/// version of reprov still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Entry {
    /// An entry for `code` at `time`; the detail is cut to [`MAX_DETAIL_BYTES`].
    pub fn new(code: Code, time: OffsetDateTime, detail: Option<&str>) -> Self {
        let detail = detail.map(|d| {
            let mut d = d.to_string();
            while d.len() > MAX_DETAIL_BYTES {
                d.pop();
            }
            d
        });
        Entry {
            time: time.to_offset(UtcOffset::UTC),
            code: code.id().to_string(),
            message: code.name().to_string(),
            detail,
        }
    }

    /// The verbose message of the entry's code, or a note that the code is unknown.
    pub fn verbose(&self) -> &'static str {
        Code::from_id(&self.code).map_or("(a code this reprov does not know)", Code::verbose)
    }

    /// The line stored in the log, newline included (pure).
    pub fn render(&self) -> String {
        let mut line = serde_json::to_string(self).expect("an entry serializes to JSON");
        line.push('\n');
        line
    }
}

/// What a log holds: its entries, and how many lines could not be read (a torn last
/// line after a power cut, or damage).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogRead {
    pub entries: Vec<Entry>,
    pub skipped: usize,
}

/// Reads log text, skipping lines that do not parse (pure).
pub fn parse_log(bytes: &[u8]) -> LogRead {
    let mut read = LogRead::default();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Entry>(line) {
            Ok(entry) => read.entries.push(entry),
            Err(_) => read.skipped += 1,
        }
    }
    read
}

impl<D: Read + Write + Seek> Store<D> {
    /// Appends a step to the log, now. Writes.
    pub fn log(&self, code: Code, detail: Option<&str>) -> Result<(), Error> {
        crate::io::heartbeat::beat();
        self.append_log(&Entry::new(code, OffsetDateTime::now_utc(), detail))
    }

    /// Logs a step (`detail` may be empty), then shows it on the console: the
    /// console shows a step only once the disk has it, so what an operator (or a
    /// test that cuts the power on a console line) saw is what the next boot reads.
    /// A step that could not be logged is shown all the same, then the error
    /// returned. Writes.
    pub fn step(&self, code: Code, detail: &str) -> Result<(), Error> {
        let logged = self.log(code, (!detail.is_empty()).then_some(detail));
        if detail.is_empty() {
            log::info!("[{}] {}", code.id(), code.verbose());
        } else {
            log::info!("[{}] {}: {detail}", code.id(), code.verbose());
        }
        logged
    }

    /// Appends an entry and flushes it, rotating past [`LOG_LIMIT`]. Writes.
    pub fn append_log(&self, entry: &Entry) -> Result<(), Error> {
        self.append_log_limited(entry, LOG_LIMIT)
    }

    fn append_log_limited(&self, entry: &Entry, limit: u64) -> Result<(), Error> {
        let line = entry.render();
        let line_len = u64::try_from(line.len()).expect("a line length fits u64");
        self.create_dirs_for(LOG_PATH)?;
        let mut len = self.log_len()?;
        if len > 0 && len.saturating_add(line_len) > limit {
            self.rotate_log()?;
            len = 0;
        }
        let mut file = self
            .fs
            .root_dir()
            .create_file(LOG_PATH)
            .map_err(file_error("opening", LOG_PATH))?;
        let mut out = Vec::with_capacity(line.len() + 1);
        if len > 0 {
            // A torn last line must not swallow this entry.
            let mut last = [0u8; 1];
            let read = file
                .seek(SeekFrom::End(-1))
                .and_then(|_| file.read_exact(&mut last));
            match read {
                Ok(()) if last[0] != b'\n' => out.push(b'\n'),
                Ok(()) => {}
                // The size says more than the cluster chain holds: a cut between the FAT
                // and the directory entry. The log must never stop a job: keep what reads.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    drop(file);
                    return self.rewrite_damaged_log(&line);
                }
                Err(e) => return Err(file_error("reading the end of", LOG_PATH)(e)),
            }
        }
        out.extend_from_slice(line.as_bytes());
        file.seek(SeekFrom::End(0))
            .map_err(file_error("seeking to the end of", LOG_PATH))?;
        file.write_all(&out)
            .map_err(file_error("appending to", LOG_PATH))?;
        file.flush().map_err(file_error("flushing", LOG_PATH))
    }

    /// Replaces a log whose size passes its cluster chain by what of it reads (up to its
    /// last whole line) and `line`. A cut in between loses only the damaged log.
    fn rewrite_damaged_log(&self, line: &str) -> Result<(), Error> {
        let mut kept = self.read(LOG_PATH)?.unwrap_or_default();
        let whole = kept.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        kept.truncate(whole);
        log::warn!(
            "{LOG_PATH} on the images partition was cut short by a power cut; keeping its {} readable bytes",
            kept.len()
        );
        kept.extend_from_slice(line.as_bytes());
        self.remove(LOG_PATH)?;
        self.write(LOG_PATH, &kept)
    }

    fn log_len(&self) -> Result<u64, Error> {
        match self.fs.root_dir().open_file(LOG_PATH) {
            Ok(mut file) => file
                .seek(SeekFrom::End(0))
                .map_err(file_error("measuring", LOG_PATH)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(file_error("opening", LOG_PATH)(e)),
        }
    }

    /// `log` becomes `log.1`, dropping the older `log.1`. A cut between the two steps
    /// loses only old entries.
    fn rotate_log(&self) -> Result<(), Error> {
        self.remove(OLD_LOG_PATH)?;
        let root = self.fs.root_dir();
        root.rename(LOG_PATH, &root, OLD_LOG_PATH)
            .map_err(file_error("rotating", LOG_PATH))
    }

    /// The whole log, oldest entry first (`log.1`, then `log`).
    pub fn read_log(&self) -> Result<LogRead, Error> {
        let mut read = LogRead::default();
        for path in [OLD_LOG_PATH, LOG_PATH] {
            if let Some(bytes) = self.read(path)? {
                let part = parse_log(&bytes);
                read.entries.extend(part.entries);
                read.skipped += part.skipped;
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::formatted;
    use super::*;
    use time::macros::datetime;

    fn entry(n: u32) -> Entry {
        let detail = format!("chunk {n:03}");
        Entry::new(
            Code::ApplyProgress,
            datetime!(2026-11-25 12:00:00 UTC) + time::Duration::seconds(n.into()),
            Some(&detail),
        )
    }

    #[test]
    fn codes_are_unique_and_well_formed() {
        for (i, (code, id, name, verbose)) in CODES.iter().enumerate() {
            assert_eq!(Code::from_id(id), Some(*code));
            assert!(
                id.len() == 4 && (id.starts_with('R') || id.starts_with('E')),
                "{id}"
            );
            assert!(!name.is_empty() && !verbose.is_empty());
            for (_, other_id, other_name, _) in &CODES[i + 1..] {
                assert!(id != other_id && name != other_name, "{id} {name}");
            }
        }
        assert!(Code::ImageCorrupt.is_error() && !Code::JobRead.is_error());
        assert_eq!(Code::JobRead.id(), "R012");
    }

    #[test]
    fn the_docs_list_every_code() {
        let doc = include_str!("../../docs/store.md");
        let rows: Vec<String> = CODES
            .iter()
            .map(|(_, id, name, verbose)| format!("| {id} | {name} | {verbose} |"))
            .collect();
        let in_doc: Vec<&str> = doc
            .lines()
            .filter(|l| l.starts_with("| R") || l.starts_with("| E"))
            .collect();
        assert_eq!(
            in_doc, rows,
            "docs/store.md's code table differs from CODES"
        );
    }

    #[test]
    fn an_entry_is_one_json_line() {
        let e = Entry::new(
            Code::IoError,
            datetime!(2026-11-25 13:00:00 +01:00),
            Some("a\nb"),
        );
        assert_eq!(
            e.render(),
            "{\"time\":\"2026-11-25T12:00:00Z\",\"code\":\"E105\",\"message\":\"io-error\",\"detail\":\"a\\nb\"}\n"
        );
        assert_eq!(parse_log(e.render().as_bytes()).entries, vec![e]);
        let long = Entry::new(
            Code::Internal,
            datetime!(2026-11-25 0:00 UTC),
            Some(&"é".repeat(999)),
        );
        assert!(long.detail.unwrap().len() <= MAX_DETAIL_BYTES);
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let text = format!("{}{}", entry(1).render(), &entry(2).render()[..30]);
        let read = parse_log(text.as_bytes());
        assert_eq!((read.entries, read.skipped), (vec![entry(1)], 1));
    }

    #[test]
    fn unknown_codes_still_read() {
        let text = entry(1).render().replace("R031", "R999");
        let read = parse_log(text.as_bytes());
        assert_eq!(
            read.entries[0].verbose(),
            "(a code this reprov does not know)"
        );
    }

    #[test]
    fn appends_survive_a_remount_and_a_torn_line() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        assert_eq!(store.read_log().unwrap(), LogRead::default());
        store.append_log(&entry(1)).unwrap();
        store.append_log(&entry(2)).unwrap();
        store.unmount().unwrap();

        // A power cut in the middle of the third append.
        let store = Store::open(&mut disk).unwrap();
        let mut text = store.read(LOG_PATH).unwrap().unwrap();
        text.extend_from_slice(&entry(3).render().as_bytes()[..25]);
        store.write(LOG_PATH, &text).unwrap();
        store.append_log(&entry(4)).unwrap();
        store.log(Code::JobDone, None).unwrap();
        store.unmount().unwrap();

        let store = Store::open(&mut disk).unwrap();
        let read = store.read_log().unwrap();
        assert_eq!(read.skipped, 1);
        assert_eq!(&read.entries[..3], &[entry(1), entry(2), entry(4)]);
        assert_eq!(read.entries[3].code, "R060");
        assert_eq!(read.entries[3].detail, None);
        store.unmount().unwrap();
    }

    #[test]
    fn rotation_keeps_the_newest_entries_and_bounds_the_size() {
        let mut disk = formatted(8 << 20);
        let store = Store::open(&mut disk).unwrap();
        let line = u64::try_from(entry(0).render().len()).unwrap();
        let limit = line * 10;
        for n in 0..35 {
            store.append_log_limited(&entry(n), limit).unwrap();
        }
        store.unmount().unwrap();
        let store = Store::open(&mut disk).unwrap();
        for path in [LOG_PATH, OLD_LOG_PATH] {
            let len = u64::try_from(store.read(path).unwrap().unwrap().len()).unwrap();
            assert!(len <= limit, "{path} is {len} bytes");
        }
        let read = store.read_log().unwrap();
        let kept: Vec<Entry> = (20..35).map(entry).collect();
        assert_eq!(read.entries, kept, "log.1 holds 20..30, log 30..35");
        assert_eq!(read.skipped, 0);
        store.unmount().unwrap();
    }
}
