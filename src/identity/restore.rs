//! Writing rendered identity files into the new OS: through fatfs for a FAT NOS, or
//! under a directory for a mounted one (ext4 mounted by the recovery).

use super::Error;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Somewhere files can be written, by paths relative to the new OS's root
/// (`etc/hostname`: no leading '/', no `.` or `..`, checked before a sink sees them).
pub trait FileSink {
    /// Writes a whole file, creating its directories, replacing what was there.
    fn write_file(&mut self, path: &str, data: &[u8]) -> std::io::Result<()>;
    /// Reads a whole file of at most `limit` bytes; `None` when there is none.
    fn read_file(&mut self, path: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>>;
}

/// Largest `/etc/hosts` or `/etc/hostname` of the new OS that the restore edits.
const MAX_EDITED_BYTES: u64 = 1 << 20;

/// Writes the identity into the new OS behind `sink`: every file [`super::render`]
/// makes, except that `/etc/hosts` is the new OS's own, edited
/// ([`super::render::edit_hosts`]), so the lines its image brought stay; and a new OS
/// with an `/etc/network/interfaces` (ifupdown) has it edited too
/// ([`super::ifupdown::edit_interfaces`]). Returns the paths written. Writes. Stops
/// at the first failure, naming the file.
pub fn restore(identity: &super::Identity, sink: &mut dyn FileSink) -> Result<Vec<String>, Error> {
    let read = |sink: &mut dyn FileSink, path: &str| -> Result<Option<String>, Error> {
        let bytes = sink
            .read_file(relative_path(path)?, MAX_EDITED_BYTES)
            .map_err(|source| Error::Write {
                path: path.to_string(),
                source,
            })?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let hosts = read(sink, super::render::HOSTS_PATH)?;
    let old_hostname = read(sink, super::render::HOSTNAME_PATH)?;
    let mut files = super::render(identity);
    for (path, contents) in &mut files {
        if path == super::render::HOSTS_PATH {
            *contents =
                super::render::edit_hosts(hosts.as_deref(), old_hostname.as_deref(), identity);
        }
    }
    // A new OS that brings its network up with ifupdown never reads networkd's files:
    // its own interfaces file gets the saved interfaces instead of its own.
    let interfaces = super::ifupdown::INTERFACES_PATH;
    if let Some(existing) = read(sink, interfaces)?.filter(|_| !identity.interfaces.is_empty()) {
        let edited = super::ifupdown::edit_interfaces(&existing, identity);
        files.push((interfaces.to_string(), edited));
        if let Some(dropin) = super::ifupdown::resolved_dropin(identity) {
            files.push((super::ifupdown::RESOLVED_PATH.to_string(), dropin));
        }
    }
    restore_into(&files, sink)?;
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// Writes rendered files (absolute paths, as [`super::render`] returns them) into a
/// sink, each replacing what was there. Writes. Stops at the first failure, naming the
/// file.
pub fn restore_into(files: &[(String, String)], sink: &mut dyn FileSink) -> Result<(), Error> {
    for (path, contents) in files {
        let relative = relative_path(path)?;
        log::debug!("restoring identity file {path}");
        sink.write_file(relative, contents.as_bytes())
            .map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}

/// `/etc/hostname` → `etc/hostname`; refuses anything that could leave the root.
fn relative_path(path: &str) -> Result<&str, Error> {
    let bad = |why: &str| Error::BadPath {
        path: path.to_string(),
        why: why.to_string(),
    };
    let relative = path
        .strip_prefix('/')
        .ok_or_else(|| bad("not an absolute path"))?;
    if relative
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("has an empty, '.' or '..' component"));
    }
    Ok(relative)
}

/// A FAT file system (a FAT NOS) through fatfs. FAT has no permissions to set.
pub struct FatSink<'a, D: Read + Write + Seek> {
    fs: &'a fatfs::FileSystem<D>,
}

impl<'a, D: Read + Write + Seek> FatSink<'a, D> {
    pub fn new(fs: &'a fatfs::FileSystem<D>) -> Self {
        FatSink { fs }
    }
}

impl<D: Read + Write + Seek> FileSink for FatSink<'_, D> {
    fn write_file(&mut self, path: &str, data: &[u8]) -> std::io::Result<()> {
        let mut dir = self.fs.root_dir();
        let (parents, name) = path.rsplit_once('/').unwrap_or(("", path));
        for component in parents.split('/').filter(|c| !c.is_empty()) {
            dir = dir.create_dir(component)?;
        }
        let mut file = dir.create_file(name)?;
        file.truncate()?;
        file.write_all(data)?;
        file.flush()
    }

    fn read_file(&mut self, path: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        let mut file = match self.fs.root_dir().open_file(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        read_limited(&mut file, limit).map(Some)
    }
}

/// Reads all of `file`, refusing more than `limit` bytes.
fn read_limited(file: &mut impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(std::io::Error::other(format!("longer than {limit} bytes")));
    }
    Ok(data)
}

/// A directory that is the new OS's root (a mounted ext4 NOS). Each file is written to
/// a temporary file beside it, synced, given mode 0644 and renamed into place, so a file
/// is either the old one or the whole new one. Symbolic links among the parent
/// directories are refused: they would point into the recovery system, not the new OS.
pub struct DirSink {
    root: PathBuf,
}

impl DirSink {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSink { root: root.into() }
    }

    /// Creates (mode 0755) or checks each directory between the root and `path`.
    fn make_parents(&self, path: &str) -> std::io::Result<PathBuf> {
        Ok(self.parents(path, true)?.expect("made when missing"))
    }

    /// Checks each directory between the root and `path`; a missing one is made when
    /// `create`, else the answer is `None`.
    fn parents(&self, path: &str, create: bool) -> std::io::Result<Option<PathBuf>> {
        use std::os::unix::fs::DirBuilderExt;
        let mut dir = self.root.clone();
        let parents = path.rsplit_once('/').map_or("", |(p, _)| p);
        for component in parents.split('/').filter(|c| !c.is_empty()) {
            dir.push(component);
            match std::fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "{} is not a directory (or is a symbolic link)",
                        dir.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::DirBuilder::new().mode(0o755).create(&dir)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(dir))
    }
}

impl FileSink for DirSink {
    fn write_file(&mut self, path: &str, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = self.make_parents(path)?;
        let name = path.rsplit('/').next().unwrap_or(path);
        let target = dir.join(name);
        let temp = dir.join(format!(".{name}.reprov-new"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(data)?;
        // The umask may have taken bits off at creation.
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &target)
    }

    /// Reads a regular file; a symbolic link (into the recovery system) is refused.
    fn read_file(&mut self, path: &str, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        // The parents must be real directories (the restore writes there next).
        let Some(dir) = self.parents(path, false)? else {
            return Ok(None);
        };
        let target = dir.join(path.rsplit('/').next().unwrap_or(path));
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
            Ok(meta) if !meta.is_file() => {
                return Err(std::io::Error::other(format!(
                    "{} is not a regular file",
                    target.display()
                )))
            }
            Ok(_) => {}
        }
        read_limited(&mut std::fs::File::open(&target)?, limit).map(Some)
    }
}

/// The path a [`DirSink`] writes `path` to (for messages and tests).
pub fn dir_target(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{parse, render};
    use std::io::Cursor;

    const IDENTITY: &str = r#"
hostname = "web-01"
dns = ["192.0.2.53"]
[[interface]]
mac = "52:54:00:12:34:56"
addresses = ["192.0.2.10/24"]
gateway4 = "192.0.2.1"
"#;

    /// FAT16 and FAT32 (the images partition's kind), each cross-checked with fsck.fat.
    #[test]
    fn restores_into_a_fat_volume() {
        let files = render(&parse(IDENTITY).unwrap());
        for (fat_type, mib) in [(fatfs::FatType::Fat16, 8), (fatfs::FatType::Fat32, 64)] {
            let mut volume = Cursor::new(vec![0u8; mib * 1024 * 1024]);
            let options = fatfs::FormatVolumeOptions::new().fat_type(fat_type);
            fatfs::format_volume(&mut volume, options).unwrap();
            volume.set_position(0);
            let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new()).unwrap();
            // Twice: the second run replaces the files, it does not append or fail.
            restore_into(&files, &mut FatSink::new(&fs)).unwrap();
            restore_into(&files, &mut FatSink::new(&fs)).unwrap();
            fs.unmount().unwrap();

            volume.set_position(0);
            let fs = fatfs::FileSystem::new(&mut volume, fatfs::FsOptions::new()).unwrap();
            for (path, contents) in &files {
                let mut back = String::new();
                fs.root_dir()
                    .open_file(path.trim_start_matches('/'))
                    .unwrap()
                    .read_to_string(&mut back)
                    .unwrap();
                assert_eq!(&back, contents, "{fat_type:?} {path}");
            }
            drop(fs);

            // The reference checker agrees the volume is sound.
            let image = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(image.path(), volume.get_ref()).unwrap();
            let fsck = std::process::Command::new("fsck.vfat")
                .arg("-n")
                .arg(image.path())
                .output()
                .expect("running fsck.vfat (dosfstools, installed by scripts/deps)");
            assert!(fsck.status.success(), "{fat_type:?}: {fsck:?}");
        }
    }

    #[test]
    fn restores_into_a_directory_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt;
        let files = render(&parse(IDENTITY).unwrap());
        let root = tempfile::tempdir().unwrap();
        // An old file is replaced whole.
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/hostname"),
            "old-name-that-is-longer\n",
        )
        .unwrap();
        restore_into(&files, &mut DirSink::new(root.path())).unwrap();
        for (path, contents) in &files {
            let target = dir_target(root.path(), path);
            assert_eq!(
                &std::fs::read_to_string(&target).unwrap(),
                contents,
                "{path}"
            );
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "{path}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(root.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("reprov-new"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// A new OS with an ifupdown interfaces file gets the saved interfaces there (and the
    /// DNS servers for resolved); one without gets neither file.
    #[test]
    fn an_ifupdown_os_gets_the_interfaces_in_its_own_file() {
        let identity = parse(IDENTITY).unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/network")).unwrap();
        let image = "auto lo\niface lo inet loopback\n\nallow-hotplug ens3\niface ens3 inet dhcp\n";
        std::fs::write(root.path().join("etc/network/interfaces"), image).unwrap();
        restore(&identity, &mut DirSink::new(root.path())).unwrap();
        let read = |path: &str| std::fs::read_to_string(root.path().join(path)).unwrap();
        let interfaces = read("etc/network/interfaces");
        assert!(
            interfaces.contains("# reprov: iface ens3 inet dhcp\n"),
            "{interfaces}"
        );
        assert!(
            interfaces.contains("    address 192.0.2.10/24\n"),
            "{interfaces}"
        );
        assert!(
            interfaces.contains("    dns-nameservers 192.0.2.53\n"),
            "{interfaces}"
        );
        assert!(read("etc/systemd/resolved.conf.d/reprov.conf").contains("DNS=192.0.2.53\n"));
        // A resumed job restores again: the same files.
        restore(&identity, &mut DirSink::new(root.path())).unwrap();
        assert_eq!(read("etc/network/interfaces"), interfaces);

        let networkd_os = tempfile::tempdir().unwrap();
        restore(&identity, &mut DirSink::new(networkd_os.path())).unwrap();
        assert!(!networkd_os.path().join("etc/network").exists());
        assert!(!networkd_os
            .path()
            .join("etc/systemd/resolved.conf.d")
            .exists());
        assert!(networkd_os
            .path()
            .join("etc/systemd/network/00-reprov-525400123456.network")
            .exists());
    }

    #[test]
    fn refuses_a_symlinked_parent() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).unwrap();
        let files = vec![("/etc/hostname".to_string(), "x\n".to_string())];
        let error = restore_into(&files, &mut DirSink::new(root.path())).unwrap_err();
        assert!(error.to_string().contains("/etc/hostname"), "{error}");
        assert!(!outside.path().join("hostname").exists());
    }

    #[test]
    fn refuses_paths_that_leave_the_root() {
        struct Never;
        impl FileSink for Never {
            fn write_file(&mut self, path: &str, _: &[u8]) -> std::io::Result<()> {
                panic!("sink asked to write {path}");
            }
            fn read_file(&mut self, path: &str, _: u64) -> std::io::Result<Option<Vec<u8>>> {
                panic!("sink asked to read {path}");
            }
        }
        for path in ["etc/hostname", "/etc/../../x", "/etc//x", "/./x", "/"] {
            let files = vec![(path.to_string(), String::new())];
            let error = restore_into(&files, &mut Never).unwrap_err();
            assert!(matches!(error, Error::BadPath { .. }), "{path}: {error}");
        }
    }
}
