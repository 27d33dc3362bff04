//! The one place that talks to the kernel: mounts, module loading, block-device ioctls,
//! hole punching, reboot, terminals. Everything else in reprov is plain `Read + Write + Seek`, so
//! keep this module small and at the edge, each call behind a function tests can replace.

pub mod cache;
pub mod holes;
pub mod modules;
pub mod mount;
pub mod partitions;
pub mod power;
pub mod process;
pub mod terminal;
pub mod zero;
