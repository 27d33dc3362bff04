//! The trigger side on the running appliance: schedule a re-provisioning.
//!
//! [`schedule`] does the patent's steps in order, each logged to the step log with its
//! code: R001 save the identity, R002 fetch the image into the images store and verify
//! it whole, R003 write the pending job, R004 arm the recovery (one MBR write: the system
//! partition visible and active). Rebooting is the caller's (the CLI's) business.
//!
//! What a refusal leaves behind: a refused schedule never writes a job and never changes
//! the MBR. The identity file may have been rewritten (it is only used with a job), and
//! an image that was fetched but is corrupt or too big is removed again; a download cut
//! short stays as `NAME.part` so the next try resumes it.
//!
//! Deferred jobs (`--at`): the job carries `not_before` and nothing is armed; [`arm_due`]
//! (run by `reprov schedule arm-due`, and by the agent on its systemd timer) arms it once
//! the time has come. The recovery never sees an unarmed job, so it needs no clock.

use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::disk::{ApplianceDisk, Role};
use crate::identity::{self, Identity};
use crate::image::{self, Manifest};
use crate::io::{Show, SyncAll};
use crate::store::{Code, ImageName, Job, Kind, State, Store, IMAGES_DIR};
use crate::transfer::{self, Source, StoreConfig, StorePlace};
use crate::trust::{self, Keys, Verdict};
use crate::units::format_size;

/// Where the factory images live on the data partition (as the recovery reads them).
pub use crate::recovery::runner::FACTORY_DIR;

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "a re-provisioning is already scheduled: {job}; `reprov job clear` to cancel it \
         (nothing was changed)"
    )]
    AlreadyScheduled { job: String },
    #[error(
        "image {image} does not fit: it needs {} ({needed} bytes) of NOS, but NOS ({} = \
         {nos} bytes) and the float after it ({} = {float} bytes) hold only {} ({room} bytes); \
         nothing scheduled",
        format_size(*needed), format_size(*nos), format_size(*float), format_size(*room)
    )]
    TooBig {
        image: String,
        needed: u64,
        nos: u64,
        float: u64,
        room: u64,
    },
    #[error("image {image} is not a whole, valid image: {source}; nothing scheduled")]
    Corrupt {
        image: String,
        #[source]
        source: image::Error,
    },
    #[error("image {image} is not trusted: {source}; nothing scheduled")]
    Untrusted {
        image: String,
        #[source]
        source: trust::Error,
    },
    #[error("{0}")]
    Image(String),
    #[error("--at {text}: {why}")]
    At { text: String, why: String },
}

/// The image argument as given: a URL, a local file, or a bare name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageArg {
    /// `ftp://…` or `http://…`.
    Url(String),
    /// A file on this machine (the text had a `/`, or such a file exists).
    File(PathBuf),
    /// A name: in the images store when it is there, else fetched from the store config's
    /// directory.
    Name(String),
}

impl ImageArg {
    /// What IMAGE on the command line means (reads only whether a file exists).
    pub fn parse(text: &str) -> ImageArg {
        if text.contains("://") {
            ImageArg::Url(text.to_string())
        } else if text.contains('/') || std::path::Path::new(text).is_file() {
            ImageArg::File(PathBuf::from(text))
        } else {
            ImageArg::Name(text.to_string())
        }
    }
}

/// What to schedule and how.
pub struct Request {
    pub kind: Kind,
    /// The image: required for apply; for factory a name in `factory/` on the data
    /// partition (default: the only one there); unused for create.
    pub image: Option<ImageArg>,
    /// Do not start before this time (deferred: nothing is armed now).
    pub not_before: Option<OffsetDateTime>,
    /// The server group's store, to fetch bare names and log in to its server.
    pub store: Option<StoreConfig>,
    pub transfer: transfer::Options,
    pub show: Show,
    /// The keys the image must be signed by (none: it is not checked, and the log says so).
    pub keys: Keys,
}

impl Request {
    pub fn new(kind: Kind, image: Option<ImageArg>, keys: Keys) -> Self {
        Request {
            kind,
            image,
            not_before: None,
            store: None,
            transfer: transfer::Options::default(),
            show: Show::detect(),
            keys,
        }
    }
}

/// What [`schedule`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub job: Job,
    /// The recovery is armed: the next boot runs it.
    pub armed: bool,
}

/// Schedules a job on `disk` for the appliance whose live identity is `identity`.
/// Writes to the images partition and (unless deferred) the MBR; see the module docs
/// for the order and for what a refusal leaves.
pub fn schedule<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
    request: &Request,
    identity: &Identity,
    now: OffsetDateTime,
) -> crate::Result<Scheduled> {
    close_landed_commit(disk)?;
    let nos = disk.range(Role::Nos).1;
    let float = disk.float_len();
    let factory = match request.kind {
        Kind::Factory => Some(factory_image(disk, request, nos, float)?),
        _ => None,
    };
    let job =
        disk.with_store(|store| prepare(store, request, identity, factory, nos, float, now))?;
    let due = job.not_before.map_or(true, |t| t <= now);
    if due {
        arm(disk)?;
    } else {
        log::info!(
            "deferred until {}: `reprov schedule arm-due` (the agent's timer) arms it then",
            rfc3339(job.not_before.unwrap_or(now))
        );
    }
    Ok(Scheduled { job, armed: due })
}

/// A job recovery left unfinished although its commit landed (NOS active, the system
/// partition hidden — this boot came from NOS): a power cut took what recovery wrote
/// after the commit. Closes it as recovery would have, so the server does not stay busy
/// and refuse the next schedule:
/// - `committing` (the job's own commit): done (R051, R060);
/// - `running` (only a rollback — or the console's "boot NOS" — commits a running job):
///   failed, saying the previous appliance was brought back (R051).
pub fn close_landed_commit<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
) -> crate::Result<()> {
    let landed = disk.entry(Role::Nos).is_active() && disk.entry(Role::System).ptype.is_hidden();
    disk.with_store(|store| {
        let Some(job) = store.read_job()? else {
            return Ok(());
        };
        match job.state {
            State::Committing if landed => crate::recovery::runner::record_done(
                store,
                &job,
                "found by after-boot: NOS is active",
            ),
            State::Running if landed => {
                let why = job.last_error.clone().unwrap_or_else(|| {
                    "it failed (the step log says why)".to_string()
                });
                let failed = job.fail(&format!(
                    "{why}; recovery brought the previous appliance back and committed it, \
                     and a power cut took the rest (found by after-boot)"
                ))?;
                store.step(Code::Committed,
                    "found by after-boot: the job did not finish, NOS (the previous appliance) is active",
                )?;
                Ok(store.write_job(&failed)?)
            }
            _ => Ok(()),
        }
    })
}

/// Steps R001 to R003 on the mounted images store; returns the job written.
fn prepare<D: Read + Write + Seek>(
    store: &Store<D>,
    request: &Request,
    identity: &Identity,
    factory: Option<ImageName>,
    nos: u64,
    float: u64,
    now: OffsetDateTime,
) -> crate::Result<Job> {
    if let Some(job) = store.read_job()? {
        if matches!(
            job.state,
            State::Pending | State::Running | State::Committing
        ) {
            return Err(Error::AlreadyScheduled {
                job: format!("{} {} ({})", job.kind, job.image, job.state),
            }
            .into());
        }
    }
    // A partition left full (by an older reprov, or by hand) first gets back the room
    // reprov's own files need, or this says why it cannot.
    store.make_room(IMAGES_DIR, 0, &[], "the job, identity and step log")?;
    store.write_identity_text(identity.to_toml().as_bytes())?;
    store.step(Code::IdentitySaved, identity.hostname.as_str())?;

    let image = match (request.kind, factory) {
        (Kind::Apply, _) => {
            let arg = request
                .image
                .as_ref()
                .ok_or_else(|| Error::Image("apply needs an image".to_string()))?;
            let (name, how) = fetch(store, arg, request)?;
            let (size, verdict) = check_stored(store, &name, nos, float, request)?;
            store.step(
                Code::ImageFetched,
                &format!("{name} ({how}, {}, verified, {verdict})", format_size(size)),
            )?;
            name
        }
        (Kind::Factory, Some(name)) => name,
        (Kind::Factory, None) => unreachable!("the factory image is found before"),
        (Kind::Create, _) => created_name(identity)?,
    };

    let mut job = Job::new(request.kind, image, now);
    job.not_before = request.not_before;
    store.write_job(&job)?;
    let when = match job.not_before {
        Some(t) if t > now => format!(", not before {}", rfc3339(t)),
        _ => String::new(),
    };
    store.step(
        Code::JobWritten,
        &format!("{} {}{when}", job.kind, job.image),
    )?;
    Ok(job)
}

/// The name a created image gets: model and serial joined, as the recovery names it.
pub fn created_name(identity: &Identity) -> crate::Result<ImageName> {
    let system = &identity.system;
    let name = format!(
        "{}.{}",
        identity::default_image_name(
            system.model.as_deref().unwrap_or(""),
            system.serial.as_deref().unwrap_or("")
        ),
        image::EXTENSION
    );
    ImageName::new(&name)
        .map_err(|why| Error::Image(format!("naming the created image {name:?}: {why}")).into())
}

/// Puts the image into the images store (unless it is there); returns its name and how
/// it got there.
fn fetch<D: Read + Write + Seek>(
    store: &Store<D>,
    arg: &ImageArg,
    request: &Request,
) -> crate::Result<(ImageName, String)> {
    let bad_name = |name: &str, why: String| Error::Image(format!("image name {name:?}: {why}"));
    let source = match arg {
        ImageArg::File(path) => {
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Image(format!("{} names no file", path.display())))?;
            let name = ImageName::new(file_name).map_err(|why| bad_name(file_name, why))?;
            // With its parts beside it, when it is kept as parts (a mounted FAT).
            let file = crate::io::open_with_parts(path)
                .map_err(|e| crate::Error::io("opening", path.display(), e))?;
            let size = file.len();
            // A file of the same name may be an older image: this one replaces it.
            store.discard_image(&name)?;
            store.add_image(&name, file, size)?;
            return Ok((name, format!("copied from {}", path.display())));
        }
        ImageArg::Name(text) => {
            let name = ImageName::new(text).map_err(|why| bad_name(text, why))?;
            if store.image_size(&name).is_ok() {
                return Ok((name, "already in the images store".to_string()));
            }
            let config = request.store.as_ref().ok_or_else(|| {
                Error::Image(format!(
                    "{text} is neither in the images store nor a file here, and there is no \
                     store config ({}) to fetch it from",
                    transfer::DEFAULT_PATH
                ))
            })?;
            config.source(text)?
        }
        ImageArg::Url(url) => match &request.store {
            Some(config) => config.source(url)?,
            None => Source::anonymous(url)?,
        },
    };
    let file_name = source
        .url
        .file_name()
        .ok_or_else(|| Error::Image(format!("{} names no file", source.url)))?
        .to_string();
    let name = ImageName::new(&file_name).map_err(|why| bad_name(&file_name, why))?;
    let place = StorePlace::new(store, IMAGES_DIR);
    let mut tenth = None;
    let mut progress = |p: transfer::Progress| {
        if let Some(total) = p.total.filter(|t| *t > 0) {
            let now = p.done.saturating_mul(10) / total;
            if tenth != Some(now) {
                tenth = Some(now);
                log::info!("fetched {} of {}", format_size(p.done), format_size(total));
            }
        }
    };
    transfer::download(
        &source,
        &place,
        name.as_str(),
        &request.transfer,
        &mut progress,
    )?;
    Ok((name, format!("fetched from {}", source.url)))
}

/// Verifies the stored image whole — signed by a trusted key when keys are configured —
/// and checks it fits NOS + float; removes it when it does not. Returns its size in bytes
/// and who signed it.
fn check_stored<D: Read + Write + Seek>(
    store: &Store<D>,
    name: &ImageName,
    nos: u64,
    float: u64,
    request: &Request,
) -> crate::Result<(u64, Verdict)> {
    let size = store.image_size(name)?;
    let checked = {
        let mut file = store.open_image(name)?;
        checked_image(&request.keys, name.as_str(), &mut file, request.show)
    };
    let refusal: crate::Error = match checked {
        Ok((manifest, verdict)) => match fits(name, manifest.source_size, nos, float) {
            Ok(()) => return Ok((size, verdict)),
            Err(e) => e.into(),
        },
        Err(e) => e,
    };
    // Nothing that failed its check may stay under a name that says it is whole.
    store.remove_image(name)?;
    log::warn!("removed {name} from the images store: it did not pass its check");
    Err(refusal)
}

/// Checks an image whole and who signed it, as [`Keys::verify_image`]; the error names it.
fn checked_image<R: Read + Seek>(
    keys: &Keys,
    name: &str,
    image: &mut R,
    show: Show,
) -> crate::Result<(Manifest, Verdict)> {
    if keys.is_empty() {
        log::warn!("{}", keys.describe());
    }
    keys.verify_image(image, show).map_err(|e| match e {
        trust::Error::Image(source) => Error::Corrupt {
            image: name.to_string(),
            source,
        }
        .into(),
        source => Error::Untrusted {
            image: name.to_string(),
            source,
        }
        .into(),
    })
}

fn fits(name: &ImageName, needed: u64, nos: u64, float: u64) -> Result<(), Error> {
    image::nos_growth(needed, nos, float)
        .map(|_| ())
        .map_err(|_| Error::TooBig {
            image: name.to_string(),
            needed,
            nos,
            float,
            room: nos.saturating_add(float),
        })
}

/// Finds, verifies and fit-checks the factory image on the data partition. Reads only.
fn factory_image<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
    request: &Request,
    nos: u64,
    float: u64,
) -> crate::Result<ImageName> {
    let arg = request.image.as_ref();
    let data = disk.mount(Role::Data)?;
    let found = (|| {
        let name = match arg {
            Some(ImageArg::Name(text)) => ImageName::new(text)
                .map_err(|why| Error::Image(format!("factory image {text:?}: {why}")))?,
            Some(other) => {
                return Err(Error::Image(format!(
                    "the factory image is a name in {FACTORY_DIR}/ on the data partition, \
                     not {other:?}"
                ))
                .into())
            }
            None => {
                let names = data.list_images_in(FACTORY_DIR)?;
                match names.as_slice() {
                    [(only, _)] => ImageName::new(only).map_err(Error::Image)?,
                    _ => {
                        return Err(Error::Image(format!(
                            "{} images in {FACTORY_DIR}/ on the data partition; name one",
                            names.len()
                        ))
                        .into())
                    }
                }
            }
        };
        let mut file = data.open_in(FACTORY_DIR, &name)?;
        let (manifest, _) = checked_image(
            &request.keys,
            &format!("{FACTORY_DIR}/{name}"),
            &mut file,
            Show::Quiet,
        )?;
        fits(&name, manifest.source_size, nos, float)?;
        Ok::<_, crate::Error>(name)
    })();
    data.unmount()?;
    found
}

/// Arms the recovery: one MBR write that makes the system partition visible and active
/// (the old sector is backed up first), then logs R004. Writes.
pub fn arm<D: Read + Write + Seek + SyncAll>(disk: &mut ApplianceDisk<D>) -> crate::Result<()> {
    disk.unhide_system();
    disk.activate(Role::System);
    let changes = disk.changes().join("; ");
    disk.commit()?;
    disk.with_store(|store| Ok(store.step(Code::RecoveryArmed, &changes)?))
}

/// Arms a pending job whose `not_before` has come; returns it when it armed one. Writes
/// only then.
pub fn arm_due<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
    now: OffsetDateTime,
) -> crate::Result<Option<Job>> {
    match disk.with_store(|store| Ok(store.read_job()?))? {
        Some(job) if job.state == State::Pending && job.not_before.is_some_and(|t| t <= now) => {
            let armed = disk.entry(Role::System).is_active();
            if !armed {
                arm(disk)?;
            }
            Ok((!armed).then_some(job))
        }
        _ => Ok(None),
    }
}

/// Parses `--at`: an RFC 3339 time (`2026-11-26T02:00:00Z`) or `+N` with a unit
/// `s`, `m`, `h` or `d` from `now` (pure).
pub fn parse_at(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, Error> {
    let bad = |why: &str| Error::At {
        text: text.to_string(),
        why: why.to_string(),
    };
    if let Some(rest) = text.strip_prefix('+') {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad("give a unit: s, m, h or d"))?;
        let (number, unit) = rest.split_at(split);
        let n: i64 = number
            .parse()
            .map_err(|_| bad("expected +N followed by s, m, h or d"))?;
        let seconds = match unit {
            "s" => Some(n),
            "m" => n.checked_mul(60),
            "h" => n.checked_mul(3600),
            "d" => n.checked_mul(86_400),
            _ => return Err(bad("the unit is s, m, h or d")),
        };
        return seconds
            .and_then(|s| now.checked_add(Duration::seconds(s)))
            .ok_or_else(|| bad("too far away"));
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| bad("expected a time like 2026-11-26T02:00:00Z, or +30m"))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn reads_at_times() {
        let now = datetime!(2026-11-25 14:00:00 UTC);
        let cases = [
            ("+30m", Some(datetime!(2026-11-25 14:30:00 UTC))),
            ("+2h", Some(datetime!(2026-11-25 16:00:00 UTC))),
            ("+1d", Some(datetime!(2026-11-26 14:00:00 UTC))),
            ("+45s", Some(datetime!(2026-11-25 14:00:45 UTC))),
            (
                "2026-11-26T02:00:00Z",
                Some(datetime!(2026-11-26 02:00:00 UTC)),
            ),
            ("+5", None),
            ("+5w", None),
            ("tomorrow", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_at(text, now).ok(), want, "{text}");
        }
    }

    #[test]
    fn reads_image_arguments() {
        let cases = [
            ("ftp://h/B.tar", ImageArg::Url("ftp://h/B.tar".into())),
            ("./B.tar", ImageArg::File("./B.tar".into())),
            ("B.tar", ImageArg::Name("B.tar".into())),
        ];
        for (text, want) in cases {
            assert_eq!(ImageArg::parse(text), want, "{text}");
        }
    }
}
