//! The appliance disk: its MBR, the roles of its partitions, and the edits reprov makes.

mod appliance;
mod detect;
mod device;
pub mod float;
pub mod init;
pub mod mbr;
mod open;
#[cfg(test)]
mod tests;

pub use appliance::{ApplianceDisk, Mounted};
pub use detect::Role;
pub use device::{Device, Opener};
pub use init::{init, Sizes};
pub use mbr::{Entry, Mbr, PartType};
pub use open::open_disk;

/// What went wrong with a disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk is not laid out as an appliance.
    #[error("{disk} is not an appliance disk: {why}")]
    NotAppliance { disk: String, why: String },
    /// An I/O step on the disk failed (`reading the MBR of`, `syncing` …).
    #[error("{what} {disk}: {source}")]
    Io {
        what: &'static str,
        disk: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading the images partition's file system failed.
    #[error("reading the images partition of {disk}: {source}")]
    Store {
        disk: String,
        #[source]
        source: crate::store::Error,
    },
    /// Growing NOS was refused; nothing was changed.
    #[error("growing NOS on {disk}: {why}")]
    Grow { disk: String, why: String },
    /// Growing NOS was refused because the float it would take holds data.
    #[error(
        "growing NOS on {disk}: the float it would take (bytes {start:#x}–{end:#x} of the disk) \
         holds {usage}; nothing was written. Zero it if nothing there is needed (blkdiscard -z, \
         or dd of zeros), or pass --force-float"
    )]
    FloatInUse {
        disk: String,
        start: u64,
        end: u64,
        usage: float::FloatUsage,
    },
    /// The MBR on the disk is not the one this handle opened: someone else wrote it.
    #[error("the MBR of {disk} changed since it was opened; nothing written, open it again")]
    ChangedSinceOpen { disk: String },
    /// A write returned fewer than 512 bytes.
    #[error("writing the MBR of {disk}: only {written} of 512 bytes were written")]
    ShortWrite { disk: String, written: usize },
    /// What was read back after the write is not what was written.
    #[error("verifying the MBR of {disk}: the sector read back differs from the one written")]
    ReadBack { disk: String },
    /// `layout init` was refused before anything was written.
    #[error("laying out {disk}: {why}")]
    Init { disk: String, why: String },
    /// Formatting a partition failed.
    #[error("formatting the {role} partition of {disk} as FAT32: {source}")]
    Format {
        role: Role,
        disk: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error while doing `what` to `disk`.
    pub fn io<'a>(what: &'static str, disk: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io {
            what,
            disk: disk.to_string(),
            source,
        }
    }
}
