//! Helpers shared by the integration tests (each test file uses what it needs).
#![allow(dead_code)]

pub mod debian;
pub mod fixtures;
pub mod nbd;
pub mod qemu;
pub mod scenario;
pub mod servers;
pub mod signed;
