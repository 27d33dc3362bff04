//! Loading the kernel modules the initramfs carries, in the order the build wrote down.

use crate::kernel::modules::{Loaded, ENODEV};
use std::io;
use std::path::{Path, PathBuf};

/// Where `scripts/mkinitramfs` lists the module files, one path (relative to /) a line.
pub const ORDER_FILE: &str = "/etc/reprov/modules.order";

/// The module paths in an order file; blank lines and `#` comments are skipped.
pub fn parse_order(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(PathBuf::from)
        .collect()
}

/// What loading the modules did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub already: usize,
    pub failed: Vec<(PathBuf, io::Error)>,
}

/// Loads each module under `root` with `load`, in order. A failure does not stop the rest:
/// drivers for absent hardware refuse to load (crc32c-intel on a CPU without SSE4.2 gives
/// ENODEV), and the disk may still be reachable through another driver.
pub fn load_all(
    root: &Path,
    order: &[PathBuf],
    mut load: impl FnMut(&Path) -> io::Result<Loaded>,
) -> LoadReport {
    let mut report = LoadReport::default();
    for module in order {
        let path = root.join(module);
        match load(&path) {
            Ok(Loaded::Now) => report.loaded += 1,
            Ok(Loaded::Already) => report.already += 1,
            Err(error) => {
                if error.raw_os_error() == Some(ENODEV) {
                    log::debug!("module {}: no such device", path.display());
                } else {
                    log::warn!("loading module {}: {error}", path.display());
                }
                report.failed.push((path, error));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_file_skips_blanks_and_comments() {
        let text = "# built for 6.1\nlib/a.ko\n\n  lib/b.ko  \n";
        assert_eq!(
            parse_order(text),
            [PathBuf::from("lib/a.ko"), PathBuf::from("lib/b.ko")]
        );
    }

    #[test]
    fn loads_in_order_and_counts_each_result() {
        let order = parse_order("a.ko\nb.ko\nc.ko\nd.ko\n");
        let mut seen = Vec::new();
        let report = load_all(Path::new("/r"), &order, |path| {
            seen.push(path.to_path_buf());
            match path.file_name().and_then(|n| n.to_str()) {
                Some("b.ko") => Ok(Loaded::Already),
                Some("c.ko") => Err(io::Error::from_raw_os_error(ENODEV)),
                _ => Ok(Loaded::Now),
            }
        });
        let expected: Vec<PathBuf> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| PathBuf::from(format!("/r/{n}.ko")))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!((report.loaded, report.already), (2, 1));
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, PathBuf::from("/r/c.ko"));
    }
}
