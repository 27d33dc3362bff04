//! The crate's error: one variant per module error, so a message always says what was
//! being done and to what.

/// Everything that can go wrong in reprov.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line asked for something impossible.
    #[error("{0}")]
    Usage(String),
    /// An I/O operation on a named thing failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Something failed while doing `what` on a disk.
    #[error("{what} on {disk}: {source}")]
    OnDisk {
        what: &'static str,
        disk: String,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    Disk(#[from] crate::disk::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Job(#[from] crate::store::JobError),
    #[error(transparent)]
    Install(#[from] crate::install::Error),
    #[error(transparent)]
    Recovery(#[from] crate::recovery::Error),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Identity(#[from] crate::identity::Error),
    #[error(transparent)]
    Transfer(#[from] crate::transfer::Error),
    #[error(transparent)]
    Schedule(#[from] crate::schedule::Error),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::Error),
    #[error(transparent)]
    Trust(#[from] crate::trust::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `what` to `path`.
    pub fn io(what: &'static str, path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.to_string(),
            source,
        }
    }
}
