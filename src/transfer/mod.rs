//! Fetching and uploading image files over FTP and HTTP, to and from the server group's
//! store.
//!
//! - [`download`] fetches a remote file into a [`Place`] (a directory, or the images
//!   store) as `NAME.part` plus a sidecar `NAME.part.toml` naming what it is a part of, and
//!   resumes from it next time; only a whole file is renamed to `NAME`.
//! - [`upload`] sends a file to the store under a temporary name, checks its size there and
//!   renames it (FTP); HTTP has no rename, so it PUTs to the final name.
//! - A cut or refused connection is retried a few times with a growing pause; a refusal by
//!   the server (wrong password, missing file) is not.
//!
//! Credentials: URLs never carry them ([`RemoteUrl`] refuses user info), the password is
//! read from its file into a [`Secret`] that does not print, and goes only into the FTP
//! `PASS` command or the HTTP `Authorization` header. Both crates log those only at trace
//! level, which reprov's logger never enables.
//!
//! Checking what a fetched image holds is the caller's job (`crate::image`); this module
//! delivers whole files. Fetching an image into the images store:
//!
//! ```no_run
//! # fn main() -> reprov::Result<()> {
//! use reprov::transfer::{download, Options, StoreConfig, StorePlace, DEFAULT_PATH};
//! # let store: reprov::store::Store<std::io::Cursor<Vec<u8>>> = todo!();
//! let config = StoreConfig::read(DEFAULT_PATH.as_ref())?;
//! let source = config.source("B.img")?; // a name in the store, or an ftp:// / http:// URL
//! let place = StorePlace::new(&store, "images");
//! let size = download(&source, &place, "B.img", &Options::default(), &mut |_| {})?;
//! # Ok(()) }
//! ```

mod config;
mod delta;
mod fetch;
mod ftp;
mod http;
mod listing;
mod place;
mod tls;
mod url;

pub use config::{
    check_password_mode, read_password_file, Login, Secret, Source, StoreConfig, DEFAULT_PATH,
};
pub use fetch::{download, part_names, upload, ReadSeek, Version};
pub use listing::{index_links, list};
pub use place::{DirPlace, PartFile, Place, StorePlace};
pub use tls::{TlsTrust, SYSTEM_ROOTS};
pub use url::{Redacted, RemoteUrl, Scheme};

use crate::units;
use std::time::Duration;

/// What went wrong while fetching or uploading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the store config {path}: {source}")]
    ReadConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("password file {path} {reason}")]
    PasswordFile { path: String, reason: String },
    #[error("{url} is not a URL reprov can use: {reason}")]
    Url { url: String, reason: String },
    /// The connection failed every time.
    #[error("{what} {url}: {reason} after {attempts} attempts{hint}")]
    GaveUp {
        what: &'static str,
        url: String,
        reason: String,
        attempts: u32,
        hint: String,
    },
    /// The server said no (login refused, no such file, …); trying again would not help.
    #[error("{what} {url}: {reason}")]
    Refused {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{what} {path}: {source}")]
    Local {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Options {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Pause before the second attempt; doubled before each one after.
    pub backoff: Duration,
    /// For connecting, and for each read or write on a connection.
    pub timeout: Duration,
    /// The slowest a transfer may go: a server that keeps sending a byte now and then
    /// never trips `timeout`, and would hold a fetch (and the agent that runs it) for
    /// ever. Slower than this, the attempt ends as a broken connection (a download
    /// resumes where it stood, when attempts are left).
    pub min_rate: MinRate,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attempts: 3,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            min_rate: MinRate {
                bytes: 64 << 10,
                window: Duration::from_secs(60),
            },
        }
    }
}

/// At least `bytes` bytes in every `window` of a transfer (as curl's `--speed-limit` and
/// `--speed-time`).
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    pub bytes: u64,
    pub window: Duration,
}

/// Counts a transfer's bytes against its [`MinRate`].
struct RateGuard {
    min: MinRate,
    since: std::time::Instant,
    moved: u64,
}

impl RateGuard {
    fn new(min: MinRate) -> Self {
        RateGuard {
            min,
            since: std::time::Instant::now(),
            moved: 0,
        }
    }

    /// Counts `n` more bytes; an error when the window that just ended moved too few.
    fn moved(&mut self, n: usize) -> std::io::Result<()> {
        self.moved = self.moved.saturating_add(n as u64);
        let elapsed = self.since.elapsed();
        if elapsed < self.min.window {
            return Ok(());
        }
        if self.moved < self.min.bytes {
            return Err(std::io::Error::other(format!(
                "too slow: {} in the last {} s, less than {} (the server stalls)",
                units::format_size(self.moved),
                elapsed.as_secs(),
                units::format_size(self.min.bytes)
            )));
        }
        *self = RateGuard::new(self.min);
        Ok(())
    }
}

/// How far a transfer is: bytes done of the whole file (when the server says its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: Option<u64>,
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    /// The connection broke, was refused or timed out: worth another attempt.
    Retry { reason: String, server_down: bool },
    /// The server refused (wrong password, no such file …): another attempt would not help.
    Refused(String),
    /// Something on this side failed (writing the partial file …).
    Local(Error),
}

impl Failure {
    fn retry(reason: impl Into<String>) -> Self {
        Failure::Retry {
            reason: reason.into(),
            server_down: false,
        }
    }

    /// A network I/O error, said briefly.
    fn io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        if let Some(tls) = tls::inside(error) {
            return tls::refusal(tls);
        }
        let reason = match error.kind() {
            ConnectionRefused => {
                return Failure::Retry {
                    reason: "connection refused".to_string(),
                    server_down: true,
                }
            }
            TimedOut | WouldBlock => "timed out".to_string(),
            ConnectionReset | ConnectionAborted | BrokenPipe => "connection reset".to_string(),
            UnexpectedEof => "connection closed before the end".to_string(),
            _ => error.to_string(),
        };
        Failure::retry(reason)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retry { reason, .. } | Failure::Refused(reason) => f.write_str(reason),
            Failure::Local(error) => write!(f, "{error}"),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Local(error)
    }
}

/// Runs `attempt` up to `options.attempts` times while it fails with [`Failure::Retry`],
/// pausing longer each time; `what` and `url` make the error message.
fn with_retries<T>(
    what: &'static str,
    url: &RemoteUrl,
    options: &Options,
    mut attempt: impl FnMut() -> Result<T, Failure>,
) -> Result<T, Error> {
    let attempts = options.attempts.max(1);
    let mut pause = options.backoff;
    let mut n = 1;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(Failure::Retry {
                reason,
                server_down,
            }) => {
                if n >= attempts {
                    let hint = match server_down {
                        true => format!(" — is the {} server up?", url.scheme.name()),
                        false => String::new(),
                    };
                    return Err(Error::GaveUp {
                        what,
                        url: url.to_string(),
                        reason,
                        attempts,
                        hint,
                    });
                }
                n += 1;
                log::warn!(
                    "{what} {url}: {reason}; trying again in {} ms (attempt {n} of {attempts})",
                    pause.as_millis()
                );
                std::thread::sleep(pause);
                pause = pause.saturating_mul(2);
            }
            Err(Failure::Refused(reason)) => {
                return Err(Error::Refused {
                    what,
                    url: url.to_string(),
                    reason,
                })
            }
            Err(Failure::Local(error)) => return Err(error),
        }
    }
}
