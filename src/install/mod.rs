//! Putting the recovery environment on an appliance disk (the patent's manufacturing step):
//! the kernel, the recovery initramfs and `syslinux.cfg` on the system partition, SYSLINUX's
//! boot sector and `ldlinux.sys` (through the `syslinux` tool), and MBR boot code that
//! boots the active partition.

pub mod cpio;

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Bytes of boot code in an MBR; the disk signature and partition table follow.
pub const BOOT_CODE_LEN: usize = 440;
/// The kernel's and the initramfs's names on the system partition.
pub const KERNEL_NAME: &str = "vmlinuz";
pub const INITRAMFS_NAME: &str = "initrd.gz";
pub const CONFIG_NAME: &str = "syslinux.cfg";

/// What went wrong while installing the recovery environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MBR boot code {path} has {len} bytes; at most {BOOT_CODE_LEN} fit")]
    BootCodeTooLong { path: String, len: usize },
    #[error("writing the MBR boot code to {disk}: {source}")]
    WriteBootCode {
        disk: String,
        #[source]
        source: io::Error,
    },
    #[error("mounting the system partition of {disk}: {source}")]
    Mount {
        disk: String,
        #[source]
        source: io::Error,
    },
    #[error("installing SYSLINUX on the system partition of {disk}: {detail}")]
    Syslinux { disk: String, detail: String },
    #[error("copying {name} to the system partition of {disk}: {source}")]
    Copy {
        name: String,
        disk: String,
        #[source]
        source: io::Error,
    },
}

/// SYSLINUX's configuration: boot the kernel with the recovery initramfs at once, console
/// on the first serial port (and the screen); `debug` adds `reprov.debug`. `trusted`
/// (key ids) adds `reprov.trust=ID,…`, so a recovery whose initramfs lost its keys
/// refuses every image instead of applying any.
pub fn syslinux_cfg(debug: bool, trusted: &[String]) -> String {
    let debug = if debug { " reprov.debug" } else { "" };
    let trust = match trusted {
        [] => String::new(),
        ids => format!(" reprov.trust={}", ids.join(",")),
    };
    format!(
        "SERIAL 0 115200\nDEFAULT recovery\nPROMPT 0\nTIMEOUT 0\n\
         LABEL recovery\n  KERNEL /{KERNEL_NAME}\n  INITRD /{INITRAMFS_NAME}\n  \
         APPEND console=tty0 console=ttyS0,115200 quiet{debug}{trust}\n"
    )
}

/// A public key the recovery is to trust: the text of its `.pub` file and its key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub id: String,
    pub text: String,
}

impl TrustedKey {
    /// Checks that `text` (of the file `path`, named in the error) is a minisign key.
    pub fn parse(path: &str, text: String) -> Result<TrustedKey, crate::trust::Error> {
        let mut one = crate::trust::Keys::none();
        one.add(&text).map_err(|why| crate::trust::Error::BadKey {
            path: path.into(),
            why,
        })?;
        let id = one.ids().remove(0);
        Ok(TrustedKey { id, text })
    }
}

/// What to append to an initramfs of `initramfs_len` bytes so the recovery trusts these
/// keys: `/etc/reprov/keys/ID.pub`. The kernel reads an uncompressed archive only at an
/// offset that is a multiple of 4 and skips zeros between archives, so the archive is
/// led by zeros up to one.
pub fn trusted_keys_archive(keys: &[TrustedKey], initramfs_len: u64) -> Vec<u8> {
    if keys.is_empty() {
        return Vec::new();
    }
    let paths: Vec<String> = (keys.iter())
        .map(|key| format!("etc/reprov/keys/{}.pub", key.id))
        .collect();
    let dir = |path| cpio::Entry { path, data: None };
    let mut entries = vec![dir("etc"), dir("etc/reprov"), dir("etc/reprov/keys")];
    entries.extend(paths.iter().zip(keys).map(|(path, key)| cpio::Entry {
        path,
        data: Some(key.text.as_bytes()),
    }));
    let mut out = vec![0; (initramfs_len.wrapping_neg() % 4) as usize];
    out.extend(cpio::archive(&entries));
    out
}

/// Copies each (name, contents) into the root of the FAT file system on the system
/// partition `part` (of disk `name`), replacing files of the same name. Writes to it.
pub fn copy_files<P: Read + Write + Seek>(
    part: P,
    name: &str,
    files: &mut [(&str, &mut dyn Read)],
) -> Result<(), Error> {
    let mount_error = |source| Error::Mount {
        disk: name.to_string(),
        source,
    };
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new()).map_err(mount_error)?;
    for (file_name, contents) in files.iter_mut() {
        let copy_error = |source| Error::Copy {
            name: file_name.to_string(),
            disk: name.to_string(),
            source,
        };
        let mut file = fs.root_dir().create_file(file_name).map_err(copy_error)?;
        file.truncate().map_err(copy_error)?;
        io::copy(contents, &mut file).map_err(copy_error)?;
        file.flush().map_err(copy_error)?;
    }
    fs.unmount().map_err(mount_error)
}

/// Writes `code` (at most [`BOOT_CODE_LEN`] bytes) over the start of the MBR, leaving the
/// disk signature and the partition table as they are. Writes to the disk.
pub fn write_boot_code<D: Write + Seek>(
    disk: &mut D,
    name: &str,
    code_path: &str,
    code: &[u8],
) -> Result<(), Error> {
    if code.len() > BOOT_CODE_LEN {
        return Err(Error::BootCodeTooLong {
            path: code_path.to_string(),
            len: code.len(),
        });
    }
    let write_error = |source| Error::WriteBootCode {
        disk: name.to_string(),
        source,
    };
    disk.seek(SeekFrom::Start(0)).map_err(write_error)?;
    disk.write_all(code).map_err(write_error)?;
    disk.flush().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Window;
    use std::io::Cursor;

    fn disk_with_slot1(part_type: u8) -> Cursor<Vec<u8>> {
        let mut mbr = vec![0u8; 512];
        mbr[446 + 4] = part_type;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        mbr.resize(8 << 20, 0);
        Cursor::new(mbr)
    }

    #[test]
    fn boot_code_leaves_the_table_alone() {
        let mut disk = disk_with_slot1(0x1C);
        let before = disk.get_ref()[440..512].to_vec();
        write_boot_code(&mut disk, "d", "mbr.bin", &[0xAB; BOOT_CODE_LEN]).unwrap();
        assert_eq!(&disk.get_ref()[..440], &[0xAB; BOOT_CODE_LEN][..]);
        assert_eq!(disk.get_ref()[440..512], before[..]);
        let error = write_boot_code(&mut disk, "d", "big.bin", &[0; 441]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "MBR boot code big.bin has 441 bytes; at most 440 fit"
        );
    }

    #[test]
    fn files_land_on_the_fat_partition() {
        let mut disk = disk_with_slot1(0x1C);
        {
            let part = Window::new(&mut disk, 1 << 20, 2 << 20).unwrap();
            fatfs::format_volume(part, fatfs::FormatVolumeOptions::new()).unwrap();
        }
        let mut kernel: &[u8] = b"kernel bytes";
        let mut cfg: &[u8] = b"old";
        let part = Window::new(&mut disk, 1 << 20, 2 << 20).unwrap();
        copy_files(part, "d", &mut [(CONFIG_NAME, &mut cfg)]).unwrap();
        let new_cfg = syslinux_cfg(false, &[]);
        let mut cfg: &[u8] = new_cfg.as_bytes();
        let mut files: [(&str, &mut dyn Read); 2] =
            [(KERNEL_NAME, &mut kernel), (CONFIG_NAME, &mut cfg)];
        let part = Window::new(&mut disk, 1 << 20, 2 << 20).unwrap();
        copy_files(part, "d", &mut files).unwrap();

        let part = Window::new(&mut disk, 1 << 20, 2 << 20).unwrap();
        let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new()).unwrap();
        let read = |name: &str| {
            let mut text = String::new();
            fs.root_dir()
                .open_file(name)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        assert_eq!(read(KERNEL_NAME), "kernel bytes");
        assert_eq!(read(CONFIG_NAME), new_cfg);
    }

    /// The kernel finds an appended uncompressed archive only at a multiple of 4.
    #[test]
    fn the_keys_archive_starts_where_the_kernel_looks() {
        let text = crate::trust::generate(None).unwrap().public;
        let key = TrustedKey::parse("test.pub", text).unwrap();
        for len in 0..8u64 {
            let archive = trusted_keys_archive(std::slice::from_ref(&key), len);
            let start = archive.iter().position(|&b| b != 0).unwrap();
            assert_eq!((len + start as u64) % 4, 0, "after {len} bytes");
            assert!(archive[start..].starts_with(b"070701"), "after {len} bytes");
        }
        assert!(trusted_keys_archive(&[], 3).is_empty());
        let bad = TrustedKey::parse("old.pub", "untrusted comment: x\nnot a key\n".into());
        let why = bad.unwrap_err().to_string();
        assert!(why.contains("old.pub"), "{why}");
    }

    #[test]
    fn config_boots_the_recovery_on_the_serial_console() {
        let plain = syslinux_cfg(false, &[]);
        assert!(plain.contains("KERNEL /vmlinuz\n"), "{plain}");
        assert!(plain.contains("INITRD /initrd.gz\n"), "{plain}");
        assert!(plain.contains("console=ttyS0,115200"), "{plain}");
        assert!(!plain.contains("reprov.debug"), "{plain}");
        assert!(syslinux_cfg(true, &[]).contains(" reprov.debug\n"));
        let ids = ["AB".to_string(), "CD".to_string()];
        assert!(syslinux_cfg(false, &ids).contains(" quiet reprov.trust=AB,CD\n"));
    }
}
