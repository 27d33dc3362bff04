//! Many servers at once, with no control plane of our own: files on the server group's
//! store (the same FTP or HTTP server the images are on), read and written by
//! `reprov agent` on each appliance (a systemd timer) and by `reprov fleet` on an
//! operator's machine.
//!
//! | file on the store             | written by            | what                            |
//! |-------------------------------|-----------------------|---------------------------------|
//! | `fleet/groups/GROUP.toml`     | `reprov fleet publish`| desired state of a group        |
//! | `fleet/servers/SERIAL.toml`   | `reprov fleet publish --server` | one server's; wins over its group's |
//! | `fleet/status/SERIAL.toml`    | `reprov agent`, `reprov after-boot` | what the server last reported |
//!
//! A desired state (`image`, `kind`, `generation`) is acted on once: the agent remembers
//! what it last scheduled in `reprov/fleet` on the images partition and schedules again
//! only when the desired state differs (a new publish bumps `generation`).
//!
//! Signed (`fleet publish --key`): `GROUP.toml.minisig` beside the file signs its exact
//! bytes, which name their target. An agent with trusted keys acts only on a state signed
//! by one of them, for its own group or server, and of a later generation than the one
//! it last acted on — so an old state replayed on the store cannot roll a fleet back.

mod remote;
pub mod units;

pub use remote::{fetch_small, put_small, MAX_SMALL_BYTES};

use crate::trust::{self, Keys, Signed};
use std::io::{Read, Seek, Write};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::disk::ApplianceDisk;
use crate::identity::{self, Identity};
use crate::io::{Show, SyncAll};
use crate::schedule::{self, ImageArg, Request, Scheduled};
use crate::store::Kind;
use crate::transfer::{self, Options, StoreConfig};

/// What the agent last scheduled, on the images partition.
pub const LAST_PATH: &str = "reprov/fleet";
/// Where status reports go on the store.
pub const STATUS_DIR: &str = "fleet/status";

/// What went wrong with a fleet file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {why}")]
    Bad { path: String, why: String },
    #[error("{what} {name:?}: use letters, digits, '.', '-' and '_' only")]
    BadName { what: &'static str, name: String },
    #[error("refused the desired state {path}: {why}; nothing scheduled")]
    Refused { path: String, why: String },
}

fn bad(path: &str, why: impl std::fmt::Display) -> crate::Error {
    Error::Bad {
        path: path.to_string(),
        why: why.to_string(),
    }
    .into()
}

/// A group or server name as a plain file name.
fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    match !name.is_empty() && !name.starts_with('.') && name.chars().all(plain) {
        true => Ok(()),
        false => Err(Error::BadName {
            what,
            name: name.to_string(),
        }),
    }
}

/// Whom a desired state is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Group(String),
    Server(String),
}

impl Target {
    /// Its file on the store.
    pub fn path(&self) -> String {
        match self {
            Target::Group(g) => format!("fleet/groups/{g}.toml"),
            Target::Server(s) => format!("fleet/servers/{s}.toml"),
        }
    }

    /// Its signature on the store (minisign's name for it).
    pub fn signature_path(&self) -> String {
        format!("{}.minisig", self.path())
    }

    fn describe(&self) -> String {
        match self {
            Target::Group(g) => format!("group {g}"),
            Target::Server(s) => format!("server {s}"),
        }
    }
}

/// A desired state, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// `apply`, `create` or `factory`.
    pub kind: String,
    /// A name in the store's directory, or a URL (apply); a factory image name (factory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Bumped by every publish: a new generation is a new command.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    /// Whom it was published for (`group web`, `server SN1`): signed with the rest, so
    /// a signed state cannot be copied to another group's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Desired {
    /// Parses and checks a desired-state file (pure); `path` names it in messages.
    pub fn parse(bytes: &[u8], path: &str) -> crate::Result<Desired> {
        let text = std::str::from_utf8(bytes).map_err(|_| bad(path, "not UTF-8 text"))?;
        let desired: Desired = toml::from_str(text).map_err(|e| bad(path, e.message()))?;
        let kind = Kind::parse(&desired.kind).map_err(|why| bad(path, why))?;
        if kind == Kind::Apply && desired.image.is_none() {
            return Err(bad(path, "kind \"apply\" needs an image"));
        }
        Ok(desired)
    }

    pub fn kind(&self) -> Kind {
        Kind::parse(&self.kind).unwrap_or(Kind::Apply)
    }
}

/// What the agent last scheduled: the desired state and whose it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Last {
    pub from: String,
    #[serde(flatten)]
    pub desired: Desired,
}

/// One server's report, `fleet/status/SERIAL.toml` on the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub server: String,
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The job's image, or `-` with no job.
    pub image: String,
    /// The job's state, or `idle` with no job.
    pub state: String,
    /// The last step log entry: code and message.
    pub step: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the report was made (RFC 3339, UTC).
    pub time: String,
}

/// The name a server goes by on the store: its serial number, else its short host name,
/// made a plain file name.
pub fn server_name(identity: &Identity) -> String {
    let serial = identity.system.serial.as_deref().unwrap_or("");
    match serial.trim().is_empty() {
        false => identity::default_image_name("", serial),
        true => identity::default_image_name("", identity.hostname.short()),
    }
}

fn now_text(now: OffsetDateTime) -> String {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.to_string())
}

/// What `fleet publish` publishes.
pub struct Publication<'a> {
    pub kind: Kind,
    pub image: Option<&'a str>,
    /// The generation to publish (default: one after the one on the store). Agents with
    /// keys act only on generations later than the last they acted on: after the store
    /// lost its files, publish above the fleet's last generation.
    pub generation: Option<u64>,
    /// Signs the state (`TARGET.toml.minisig` beside it).
    pub key: Option<&'a trust::SigningKey>,
}

/// Publishes a desired state for `target`, one generation after the one on the store.
/// Uploads to the store (the state, then its signature); returns what was published.
pub fn publish(
    config: &StoreConfig,
    target: &Target,
    publication: &Publication,
    now: OffsetDateTime,
    options: &Options,
) -> crate::Result<Desired> {
    let (kind, image) = (publication.kind, publication.image);
    match target {
        Target::Group(name) => check_name("group", name)?,
        Target::Server(name) => check_name("server", name)?,
    }
    if let Some(image) = image {
        // Refuse now what every agent would refuse later.
        match image.contains("://") {
            true => drop(transfer::RemoteUrl::parse(image)?),
            false => drop(config.url.join(image)?),
        }
    }
    let path = target.path();
    let previous = match fetch_small(config, &path, options)? {
        Some(bytes) => Some(Desired::parse(&bytes, &path)?),
        None => None,
    };
    let next = previous.map_or(1, |p| p.generation.saturating_add(1));
    let desired = Desired {
        kind: kind.as_str().to_string(),
        image: image.map(str::to_string),
        generation: publication.generation.unwrap_or(next),
        published_at: Some(now_text(now)),
        target: Some(target.describe()),
    };
    let text = toml::to_string(&desired).map_err(|e| bad(&path, e))?;
    let signature = publication
        .key
        .map(|key| {
            let comment = format!("{} generation {}", target.describe(), desired.generation);
            key.sign(text.as_bytes(), &comment)
        })
        .transpose()?;
    put_small(config, &path, text.as_bytes(), options)?;
    if let Some(signature) = signature {
        put_small(
            config,
            &target.signature_path(),
            signature.as_bytes(),
            options,
        )?;
    }
    log::info!(
        "published to {} ({}): {} {} generation {}",
        target.describe(),
        config.url.join(&path)?,
        desired.kind,
        desired.image.as_deref().unwrap_or("-"),
        desired.generation
    );
    Ok(desired)
}

/// What the agent did: armed a deferred job that was due, and what it made of the
/// desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRun {
    pub armed_due: Option<crate::store::Job>,
    pub outcome: AgentOutcome,
}

impl AgentRun {
    /// Whether this run armed the recovery (so the machine should reboot into it).
    pub fn armed(&self) -> bool {
        self.armed_due.is_some() || matches!(&self.outcome, AgentOutcome::Scheduled(s) if s.armed)
    }
}

/// What the agent made of the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOutcome {
    /// No desired state for this server or its group.
    NothingPublished,
    /// The desired state is what this server last scheduled.
    UpToDate,
    /// A job is pending or running: the desired state waits for the next run.
    Busy(String),
    Scheduled(Scheduled),
}

/// The desired state for this server: its own file, else its group's; with keys, only
/// one signed by a trusted key and for this target.
pub fn desired_for(
    config: &StoreConfig,
    server: &str,
    options: &Options,
    keys: &Keys,
) -> crate::Result<Option<(Target, Desired)>> {
    let mut targets = vec![Target::Server(server.to_string())];
    if let Some(group) = &config.group {
        check_name("group", group)?;
        targets.push(Target::Group(group.clone()));
    }
    for target in targets {
        let path = target.path();
        if let Some(bytes) = fetch_small(config, &path, options)? {
            let desired = Desired::parse(&bytes, &path)?;
            if !keys.is_empty() {
                let refused = |why: String| Error::Refused {
                    path: path.clone(),
                    why,
                };
                let signature = fetch_small(config, &target.signature_path(), options)?;
                let signature = signature
                    .map(|bytes| String::from_utf8(bytes).map_err(|_| "garbled".to_string()))
                    .transpose()
                    .map_err(|why| refused(format!("its signature is {why}")))?;
                let verdict = keys
                    .check_signed(Signed::DesiredState, &bytes, signature.as_deref())
                    .map_err(|e| refused(e.to_string()))?;
                if desired.target.as_deref() != Some(target.describe().as_str()) {
                    return Err(refused(format!(
                        "it was published for {}, not for {}",
                        desired.target.as_deref().unwrap_or("no target"),
                        target.describe()
                    ))
                    .into());
                }
                log::info!("desired state {path}: {verdict}");
            }
            return Ok(Some((target, desired)));
        }
    }
    Ok(None)
}

/// One agent run: arms a deferred job that is due, reads the desired state, and
/// schedules it when it differs from what this server last scheduled. Writes to the
/// disk only when it arms or schedules.
pub fn agent<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
    config: &StoreConfig,
    identity: &Identity,
    now: OffsetDateTime,
    options: &Options,
    keys: &Keys,
) -> crate::Result<AgentRun> {
    let armed_due = schedule::arm_due(disk, now)?;
    if let Some(job) = &armed_due {
        log::info!("armed the deferred job {} {}", job.kind, job.image);
    }
    let outcome = desired_outcome(disk, config, identity, now, options, keys)?;
    Ok(AgentRun { armed_due, outcome })
}

/// The desired-state half of [`agent`].
fn desired_outcome<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
    config: &StoreConfig,
    identity: &Identity,
    now: OffsetDateTime,
    options: &Options,
    keys: &Keys,
) -> crate::Result<AgentOutcome> {
    let server = server_name(identity);
    let Some((target, desired)) = desired_for(config, &server, options, keys)? else {
        log::info!("no desired state for server {server} or its group");
        return Ok(AgentOutcome::NothingPublished);
    };
    let last = Last {
        from: target.describe(),
        desired: desired.clone(),
    };
    let remembered = read_last(disk)?;
    // The publish time is not part of the command: a re-upload of the same file is not new.
    let same = |a: &Last| {
        a.from == last.from
            && a.desired.kind == desired.kind
            && a.desired.image == desired.image
            && a.desired.generation == desired.generation
    };
    if remembered.as_ref().is_some_and(same) {
        log::info!(
            "desired state of {} (generation {}) already scheduled",
            last.from,
            desired.generation
        );
        return Ok(AgentOutcome::UpToDate);
    }
    // Signed states only move forward: an older one (or another one under a generation
    // already acted on) is a replay, and would roll the fleet back.
    if let Some(acted) = remembered.filter(|r| r.from == last.from && !keys.is_empty()) {
        if desired.generation <= acted.desired.generation {
            return Err(Error::Refused {
                path: target.path(),
                why: format!(
                    "generation {} is not later than generation {} ({} {}), which this                      server already acted on: a replay of an old desired state",
                    desired.generation,
                    acted.desired.generation,
                    acted.desired.kind,
                    acted.desired.image.as_deref().unwrap_or("-")
                ),
            }
            .into());
        }
    }
    let image = match (&desired.image, desired.kind()) {
        (Some(image), Kind::Apply) if image.contains("://") => Some(ImageArg::Url(image.clone())),
        // Always from the store, even when a file of that name is in the images store:
        // a new generation may bring a new file under an old name.
        (Some(image), Kind::Apply) => Some(ImageArg::Url(config.url.join(image)?.to_string())),
        (Some(image), _) => Some(ImageArg::Name(image.clone())),
        (None, _) => None,
    };
    let mut request = Request::new(desired.kind(), image, keys.clone());
    request.store = Some(config.clone());
    request.transfer = options.clone();
    request.show = Show::Log;
    match schedule::schedule(disk, &request, identity, now) {
        Ok(scheduled) => {
            write_last(disk, &last)?;
            Ok(AgentOutcome::Scheduled(scheduled))
        }
        Err(crate::Error::Schedule(busy @ schedule::Error::AlreadyScheduled { .. })) => {
            Ok(AgentOutcome::Busy(busy.to_string()))
        }
        Err(e) => Err(e),
    }
}

fn read_last<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
) -> crate::Result<Option<Last>> {
    disk.with_store(|store| match store.read(LAST_PATH)? {
        // A damaged memory only means scheduling once more.
        Some(bytes) => Ok(std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| toml::from_str(text).ok())),
        None => Ok(None),
    })
}

fn write_last<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
    last: &Last,
) -> crate::Result<()> {
    let text = toml::to_string(last).map_err(|e| bad(LAST_PATH, e))?;
    disk.with_store(|store| Ok(store.write(LAST_PATH, text.as_bytes())?))
}

/// This server's status, from the job and the step log on its images partition. Reads only.
pub fn status<D: Read + Write + Seek + SyncAll>(
    disk: &mut ApplianceDisk<D>,
    config: &StoreConfig,
    identity: &Identity,
    error: Option<String>,
    now: OffsetDateTime,
) -> crate::Result<Status> {
    let (job, log) = disk.with_store(|store| Ok((store.read_job()?, store.read_log()?)))?;
    let last = log.entries.last();
    Ok(Status {
        server: server_name(identity),
        hostname: identity.hostname.as_str().to_string(),
        group: config.group.clone(),
        image: job.as_ref().map_or("-".into(), |j| j.image.to_string()),
        state: job.as_ref().map_or("idle".into(), |j| j.state.to_string()),
        step: last.map_or("-".into(), |e| e.code.clone()),
        message: last.map_or(String::new(), |e| match &e.detail {
            Some(detail) => format!("{}: {detail}", e.message),
            None => e.message.clone(),
        }),
        error,
        time: now_text(now),
    })
}

/// Uploads this server's status to `fleet/status/SERVER.toml` on the store.
pub fn report(config: &StoreConfig, status: &Status, options: &Options) -> crate::Result<()> {
    check_name("server", &status.server)?;
    let path = format!("{STATUS_DIR}/{}.toml", status.server);
    let text = toml::to_string(status).map_err(|e| bad(&path, e))?;
    put_small(config, &path, text.as_bytes(), options)
}

/// Every server's last report on the store, sorted by server. A report that does not
/// parse is shown as such rather than hidden. No status directory yet (no server has
/// reported) is no reports; any other failure to list (login, server down) is an error.
pub fn read_statuses(config: &StoreConfig, options: &Options) -> crate::Result<Vec<Status>> {
    let names = match transfer::list(config, STATUS_DIR, options) {
        Ok(names) => names,
        Err(e) if remote::is_missing(&e) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut statuses = Vec::new();
    for name in names.iter().filter(|n| n.ends_with(".toml")) {
        let path = format!("{STATUS_DIR}/{name}");
        let Some(bytes) = fetch_small(config, &path, options)? else {
            continue;
        };
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| toml::from_str::<Status>(text).map_err(|e| e.message().to_string()));
        statuses.push(parsed.unwrap_or_else(|why| Status {
            server: name.trim_end_matches(".toml").to_string(),
            hostname: "-".into(),
            group: None,
            image: "-".into(),
            state: "unreadable".into(),
            step: "-".into(),
            message: why,
            error: None,
            time: "-".into(),
        }));
    }
    statuses.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(statuses)
}

/// The status table: server, hostname, image, state, last step, time (pure).
pub fn table(statuses: &[Status]) -> String {
    let header = [
        "SERVER", "HOSTNAME", "IMAGE", "STATE", "STEP", "TIME", "MESSAGE",
    ];
    let rows: Vec<[String; 7]> = statuses
        .iter()
        .map(|s| {
            [
                s.server.clone(),
                s.hostname.clone(),
                s.image.clone(),
                s.state.clone(),
                s.step.clone(),
                s.time.clone(),
                s.error.clone().unwrap_or_else(|| s.message.clone()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_desired_states() {
        let cases = [
            (
                "kind = \"apply\"\nimage = \"B.tar\"\ngeneration = 2\n",
                true,
            ),
            ("kind = \"create\"\ngeneration = 1\n", true),
            ("kind = \"apply\"\ngeneration = 1\n", false),
            (
                "kind = \"wipe\"\nimage = \"B.tar\"\ngeneration = 1\n",
                false,
            ),
            ("kind = \"apply\"\nimage = \"B.tar\"\n", false),
            (
                "kind = \"apply\"\nimage = \"B\"\ngeneration = 1\nx = 1\n",
                false,
            ),
        ];
        for (text, ok) in cases {
            assert_eq!(Desired::parse(text.as_bytes(), "t").is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn names_must_be_plain() {
        for (name, ok) in [
            ("web", true),
            ("SN-1.a_b", true),
            ("../x", false),
            ("", false),
        ] {
            assert_eq!(check_name("group", name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn tables_align() {
        let s = |server: &str| Status {
            server: server.into(),
            hostname: "h".into(),
            group: None,
            image: "B.tar".into(),
            state: "pending".into(),
            step: "R004".into(),
            message: "recovery-armed".into(),
            error: None,
            time: "2026-11-25T14:00:00Z".into(),
        };
        let text = table(&[s("SN1"), s("LONGER-SERIAL")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SERVER         HOSTNAME"));
        assert!(lines[2].starts_with("LONGER-SERIAL  h"));
    }
}
