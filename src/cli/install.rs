//! `reprov install-system`: the manufacturing step that makes a disk an appliance that can
//! re-provision itself.

use super::open_disk;
use crate::disk::Role;
use crate::install::{self, Error, CONFIG_NAME, INITRAMFS_NAME, KERNEL_NAME};
use argh::FromArgs;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// SYSLINUX's MBR boot code (Debian's syslinux-common): boots the active partition.
const DEFAULT_MBR: &str = "/usr/lib/syslinux/mbr/mbr.bin";

/// Put the recovery environment on an appliance disk: kernel, initramfs and SYSLINUX on
/// the system partition, and MBR boot code that boots the active partition.
#[derive(FromArgs)]
#[argh(subcommand, name = "install-system")]
pub struct InstallSystem {
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
    /// the Linux kernel the recovery boots
    #[argh(option)]
    kernel: PathBuf,
    /// the recovery initramfs (scripts/mkinitramfs)
    #[argh(option)]
    initramfs: PathBuf,
    /// MBR boot code (default: /usr/lib/syslinux/mbr/mbr.bin)
    #[argh(option, default = "PathBuf::from(DEFAULT_MBR)")]
    mbr: PathBuf,
    /// the mtools-based SYSLINUX installer to run (default: syslinux)
    #[argh(option, default = "String::from(\"syslinux\")")]
    syslinux: String,
    /// boot the recovery with `reprov.debug` (debug log lines)
    #[argh(switch)]
    debug: bool,
    /// a public key (NAME.pub) the recovery trusts: only images signed by a trusted key
    /// are applied; repeat for more (to rotate keys, install the new one beside the old)
    #[argh(option)]
    trust: Vec<PathBuf>,
}

fn open(path: &Path) -> crate::Result<File> {
    crate::io::open_regular(path).map_err(|e| crate::Error::io("opening", path.display(), e))
}

impl InstallSystem {
    /// Writes to the disk: the files first, then SYSLINUX's boot sector, the MBR boot code
    /// last, so a disk whose installation broke off does not boot a half-made system.
    pub fn run(&self) -> crate::Result<()> {
        let mut disk = open_disk(&self.disk)?;
        let name = disk.name().to_string();
        let range = disk.range(Role::System);

        let mut kernel = open(&self.kernel)?;
        let keys = self
            .trust
            .iter()
            .map(|path| {
                let text = crate::io::read_regular_to_string(path, 4096)
                    .map_err(|e| crate::Error::io("reading trusted key", path.display(), e))?;
                Ok(install::TrustedKey::parse(
                    &path.display().to_string(),
                    text,
                )?)
            })
            .collect::<crate::Result<Vec<_>>>()?;
        // The kernel unpacks the archives of an initramfs one after the other.
        let initramfs = open(&self.initramfs)?;
        let initramfs_len = initramfs
            .metadata()
            .map_err(|e| crate::Error::io("reading", self.initramfs.display(), e))?
            .len();
        let trusted = install::trusted_keys_archive(&keys, initramfs_len);
        let mut initramfs = initramfs.chain(trusted.as_slice());
        let ids: Vec<String> = keys.iter().map(|key| key.id.clone()).collect();
        let config = install::syslinux_cfg(self.debug, &ids);
        let mut config = config.as_bytes();
        let mut files: [(&str, &mut dyn Read); 3] = [
            (KERNEL_NAME, &mut kernel),
            (INITRAMFS_NAME, &mut initramfs),
            (CONFIG_NAME, &mut config),
        ];
        let part = disk
            .partition(Role::System)
            .map_err(|e| crate::Error::io("opening the system partition of", &name, e))?;
        install::copy_files(part, &name, &mut files)?;
        // The MBR boot code is written around ApplianceDisk (which keeps its own copy of
        // the MBR for commits): nothing else is written through it here.
        let mut disk = disk.into_inner();
        disk.sync_all()
            .map_err(|e| crate::Error::io("syncing", &name, e))?;

        self.install_syslinux(range.0)?;

        let code = std::fs::read(&self.mbr)
            .map_err(|e| crate::Error::io("reading", self.mbr.display(), e))?;
        install::write_boot_code(&mut disk, &name, &self.mbr.display().to_string(), &code)?;
        disk.sync_all()
            .map_err(|e| crate::Error::io("syncing", &name, e))?;
        log::info!(
            "installed the recovery on {name}: system partition at byte {}, {} bytes",
            range.0,
            range.1
        );
        match keys.len() {
            0 => log::warn!(
                "no --trust key: the recovery applies any image, signed or not (see docs/trust.md)"
            ),
            n => log::info!("the recovery trusts {n} key(s): it applies only images they signed"),
        }
        Ok(())
    }

    /// Runs `syslinux --offset START --install DISK`: SYSLINUX's boot sector and
    /// `ldlinux.sys` into the FAT file system that starts at byte `start`.
    fn install_syslinux(&self, start: u64) -> Result<(), Error> {
        let disk = self.disk.display().to_string();
        let output = Command::new(&self.syslinux)
            .arg("--offset")
            .arg(start.to_string())
            .arg("--install")
            .arg(&self.disk)
            .output()
            .map_err(|e| Error::Syslinux {
                disk: disk.clone(),
                detail: format!("running {}: {e}", self.syslinux),
            })?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Syslinux {
            disk,
            detail: format!(
                "{} {}: {}",
                self.syslinux,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}
