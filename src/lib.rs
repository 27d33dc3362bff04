//! reprov: appliance servers that re-provision themselves.
//!
//! The library is generic over `Read + Write + Seek` wherever it touches a disk, so
//! everything but [`kernel`] runs on in-memory buffers and sparse files in tests.
//! See `../shared/design/ARCHITECTURE.md` (and `docs/`) for the shape.

pub mod cli;
pub mod disk;
pub mod error;
pub mod filesystem;
pub mod fleet;
pub mod identity;
pub mod image;
pub mod install;
pub mod io;
pub mod kernel;
pub mod recovery;
pub mod schedule;
pub mod store;
pub mod transfer;
pub mod trust;
pub mod units;

pub use error::{Error, Result};
