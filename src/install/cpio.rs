//! A small newc cpio archive (the initramfs format): the kernel unpacks archives
//! concatenated after the recovery's own, so files are added to an initramfs by
//! appending one — the trusted keys of `install-system --trust`.

/// One entry: a directory (`None`) or a regular file with its bytes.
pub struct Entry<'a> {
    pub path: &'a str,
    pub data: Option<&'a [u8]>,
}

/// The archive of `entries` (paths relative, without a leading `/`), owned by root,
/// directories 0755, files 0644, then the trailer.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, entry) in (1u32..).zip(entries) {
        let (mode, data) = match entry.data {
            None => (0o040755, &[][..]),
            Some(data) => (0o100644, data),
        };
        put(&mut out, ino, mode, entry.path, data);
    }
    put(&mut out, 0, 0, "TRAILER!!!", &[]);
    out
}

fn put(out: &mut Vec<u8>, ino: u32, mode: u32, path: &str, data: &[u8]) {
    let name_len = path.len() as u32 + 1;
    let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check: 8 hex digits each.
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name_len,
        0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GNU cpio reads it back: the paths, and the file's bytes.
    #[test]
    fn cpio_lists_and_extracts_it() {
        let bytes = archive(&[
            Entry {
                path: "etc",
                data: None,
            },
            Entry {
                path: "etc/key.pub",
                data: Some(b"untrusted comment: k\nRWQ\n"),
            },
        ]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.cpio"), &bytes).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("cpio --quiet -id < a.cpio && cat etc/key.pub")
            .current_dir(dir.path())
            .output()
            .expect("cpio runs (scripts/deps installs it)");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"untrusted comment: k\nRWQ\n");
    }
}
