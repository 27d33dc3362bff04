//! The mounts the recovery needs before anything else, as a table of rows.

use crate::kernel::mount::EBUSY;
use std::fmt;
use std::io;

/// One mount: what, where, which file system, with which options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountRow {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub data: Option<&'static str>,
}

impl fmt::Display for MountRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) on {}", self.source, self.fstype, self.target)?;
        if let Some(data) = self.data {
            write!(f, " with {data}")?;
        }
        Ok(())
    }
}

/// /proc, /sys and /dev, in the order they are mounted.
pub const BOOT_MOUNTS: [MountRow; 3] = [
    MountRow {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        data: None,
    },
    MountRow {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        data: None,
    },
    MountRow {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        data: Some("mode=0755"),
    },
];

/// A row that failed.
#[derive(Debug, thiserror::Error)]
#[error("mounting {row}: {source}")]
pub struct MountError {
    pub row: MountRow,
    #[source]
    pub source: io::Error,
}

/// Mounts every row with `mount`; an already-mounted target counts as done. Tries every
/// row, logs each failure, and returns the first.
pub fn mount_all(
    rows: &[MountRow],
    mut mount: impl FnMut(&MountRow) -> io::Result<()>,
) -> Result<(), MountError> {
    let mut first_error = None;
    for row in rows {
        match mount(row) {
            Ok(()) => log::debug!("mounted {row}"),
            Err(e) if e.raw_os_error() == Some(EBUSY) => {
                log::debug!("{row}: already mounted")
            }
            Err(source) => {
                let error = MountError { row: *row, source };
                log::error!("{error}");
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_every_row_in_order() {
        let mut seen = Vec::new();
        mount_all(&BOOT_MOUNTS, |row| {
            seen.push(row.target);
            Ok(())
        })
        .expect("all mount");
        assert_eq!(seen, ["/proc", "/sys", "/dev"]);
    }

    #[test]
    fn already_mounted_is_fine() {
        mount_all(&BOOT_MOUNTS, |_| Err(io::Error::from_raw_os_error(EBUSY)))
            .expect("busy counts as mounted");
    }

    #[test]
    fn a_failed_row_says_which_and_the_rest_still_mount() {
        let mut seen = Vec::new();
        let error = mount_all(&BOOT_MOUNTS, |row| {
            seen.push(row.target);
            if row.target == "/sys" {
                Err(io::ErrorKind::PermissionDenied.into())
            } else {
                Ok(())
            }
        })
        .expect_err("/sys fails");
        assert_eq!(seen, ["/proc", "/sys", "/dev"]);
        assert!(
            error
                .to_string()
                .starts_with("mounting sysfs (sysfs) on /sys: "),
            "{error}"
        );
    }
}
