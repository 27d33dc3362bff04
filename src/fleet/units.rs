//! The systemd units that run reprov on a NOS (`systemd/` in the source tree), and
//! `reprov install-agent`, which writes them under a root directory and enables them
//! the way `systemctl enable` would (symlinks in `*.wants/`), so it works offline on a
//! NOS image as well as on the running system.

use std::path::{Path, PathBuf};

/// Unit name, text (with `@REPROV@` for the binary), and the target that wants it.
pub const UNITS: [(&str, &str, Option<&str>); 3] = [
    (
        "reprov-agent.service",
        include_str!("../../systemd/reprov-agent.service"),
        None,
    ),
    (
        "reprov-agent.timer",
        include_str!("../../systemd/reprov-agent.timer"),
        Some("timers.target"),
    ),
    (
        "reprov-after-boot.service",
        include_str!("../../systemd/reprov-after-boot.service"),
        Some("multi-user.target"),
    ),
];

/// Where units go under `root`.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// Writes the units under `root/etc/systemd/system` with `binary` as the reprov path,
/// and enables the timer and the after-boot service. Returns the files written. Writes.
pub fn install(root: &Path, binary: &Path) -> crate::Result<Vec<PathBuf>> {
    let binary = binary
        .to_str()
        .filter(|b| b.starts_with('/') && !b.contains(char::is_whitespace))
        .ok_or_else(|| {
            crate::Error::Usage(format!(
                "--binary {}: systemd needs an absolute path without spaces",
                binary.display()
            ))
        })?;
    let dir = root.join(UNIT_DIR);
    let io = |what: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |e| crate::Error::io(what, path, e)
    };
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let mut written = Vec::new();
    for (name, text, wanted_by) in UNITS {
        let path = dir.join(name);
        std::fs::write(&path, text.replace("@REPROV@", binary)).map_err(io("writing", &path))?;
        written.push(path);
        if let Some(target) = wanted_by {
            let wants = dir.join(format!("{target}.wants"));
            std::fs::create_dir_all(&wants).map_err(io("creating", &wants))?;
            let link = wants.join(name);
            match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("replacing", &link)(e))
                }
                _ => {}
            }
            // Relative to the root, as systemctl makes them: valid inside the NOS.
            std::os::unix::fs::symlink(format!("/{UNIT_DIR}/{name}"), &link)
                .map_err(io("linking", &link))?;
            written.push(link);
        }
    }
    Ok(written)
}
