//! An opened appliance disk: the table as read, the table as planned, and the one
//! explicit write that turns the plan into the disk's MBR.

use std::io::{Read, Seek, SeekFrom, Write};

use super::detect::{self, Role};
use super::mbr::{bytes_to_sectors, Entry, Mbr, PartType, ALIGN, BOOT_ACTIVE, BOOT_INACTIVE};
use super::Error;
use crate::io::{SyncAll, SyncOnFlush, Window};
use crate::store::Store;
use crate::units::format_size;

/// A partition's FAT file system as [`ApplianceDisk::mount`] gives it.
pub type Mounted<'a, D> = Store<SyncOnFlush<Window<&'a mut D>>>;

/// Tells the kernel that partition `slot` of the disk now spans `len` bytes from byte
/// `start` (`len` 0: gone); see [`ApplianceDisk::telling_kernel`].
pub type TellKernel<D> = fn(&D, u32, u64, u64) -> std::io::Result<()>;

/// An appliance disk, opened: roles detected, edits planned in memory until [`commit`].
///
/// [`commit`]: ApplianceDisk::commit
pub struct ApplianceDisk<D> {
    device: D,
    name: String,
    len: u64,
    /// The sector as it is on the disk, and parsed.
    on_disk: [u8; 512],
    opened: Mbr,
    /// The table with the edits planned so far.
    planned: Mbr,
    /// Told of every partition whose place changed after a commit (block devices).
    tell_kernel: Option<TellKernel<D>>,
    /// Grow NOS over a float that holds data (the operator said so).
    force_float: bool,
}

/// Reads sector 0 (seeking there first).
fn read_sector<D: Read + Seek>(device: &mut D, name: &str) -> Result<[u8; 512], Error> {
    let mut sector = [0u8; 512];
    device
        .seek(SeekFrom::Start(0))
        .and_then(|_| device.read_exact(&mut sector))
        .map_err(Error::io("reading the MBR of", name))?;
    Ok(sector)
}

/// Writes `sector` as the MBR in one 512-byte write, syncs, reads it back and compares.
/// A sector write is atomic on real disks, so the table on the disk is either all old or
/// all new, never a mix. Writes to the disk.
pub(super) fn write_sector<D: Read + Write + Seek + SyncAll>(
    device: &mut D,
    name: &str,
    sector: &[u8; 512],
) -> Result<(), Error> {
    device
        .seek(SeekFrom::Start(0))
        .map_err(Error::io("seeking to the MBR of", name))?;
    // Deliberately not write_all: a short write is reported, never completed in pieces.
    let written = device
        .write(sector)
        .map_err(Error::io("writing the MBR of", name))?;
    if written != sector.len() {
        return Err(Error::ShortWrite {
            disk: name.to_string(),
            written,
        });
    }
    device
        .flush()
        .and_then(|()| device.sync_all())
        .map_err(Error::io("syncing the MBR of", name))?;
    if read_sector(device, name)? != *sector {
        return Err(Error::ReadBack {
            disk: name.to_string(),
        });
    }
    Ok(())
}

impl<D: Read + Write + Seek + SyncAll> ApplianceDisk<D> {
    /// Reads the MBR and detects the roles; refuses a disk that is not an appliance
    /// layout, saying what does not match. Does not write to the disk.
    pub fn open(mut device: D, name: &str) -> Result<Self, Error> {
        let not_appliance = |why: String| Error::NotAppliance {
            disk: name.to_string(),
            why,
        };
        let len = device
            .seek(SeekFrom::End(0))
            .map_err(Error::io("measuring", name))?;
        if len < 512 {
            return Err(not_appliance(format!(
                "it holds {len} bytes, less than one 512-byte sector"
            )));
        }
        let on_disk = read_sector(&mut device, name)?;
        let planned = detect::check(&on_disk, len).map_err(not_appliance)?;
        let mut disk = ApplianceDisk {
            device,
            name: name.to_string(),
            len,
            on_disk,
            opened: planned.clone(),
            planned,
            tell_kernel: None,
            force_float: false,
        };
        // Mounting reads only; unmount flushes nothing because nothing was changed.
        let label = match disk.store() {
            Ok(store) => {
                let label = store.label();
                store.unmount().map_err(|source| Error::Store {
                    disk: name.to_string(),
                    source,
                })?;
                label
            }
            Err(e) => {
                return Err(not_appliance(format!(
                    "slot 3 holds no readable FAT file system for the images partition ({e})"
                )))
            }
        };
        if label != "IMAGES" {
            return Err(not_appliance(detect::wrong_label(&label)));
        }
        Ok(disk)
    }

    /// After each commit, `tell` is told of every partition whose start or size changed,
    /// so the running kernel mounts a grown partition at its new size (BLKPG on a block
    /// device; see [`crate::kernel::partitions`]).
    pub fn telling_kernel(mut self, tell: TellKernel<D>) -> Self {
        self.tell_kernel = Some(tell);
        self
    }

    /// The name used in messages (the path the disk was opened from).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size of the whole disk in bytes.
    pub fn disk_len(&self) -> u64 {
        self.len
    }

    /// The table as planned (equal to the disk's after a commit).
    pub fn mbr(&self) -> &Mbr {
        &self.planned
    }

    /// The planned entry of a role.
    pub fn entry(&self, role: Role) -> Entry {
        self.planned.get(role.slot())
    }

    /// Byte range (start, len) of a role's partition, as planned.
    pub fn range(&self, role: Role) -> (u64, u64) {
        let e = self.entry(role);
        (e.start(), e.len())
    }

    /// Free bytes in the float after NOS (what NOS may grow by).
    pub fn float_len(&self) -> u64 {
        // Detection checked that images starts at or after the end of NOS.
        self.entry(Role::Images)
            .start()
            .saturating_sub(self.entry(Role::Nos).end())
    }

    /// The partition of a role (as planned) as a stream.
    pub fn partition(&mut self, role: Role) -> std::io::Result<Window<&mut D>> {
        let (start, len) = self.range(role);
        Window::new(&mut self.device, start, len)
    }

    /// The images partition, mounted. Call `unmount()` on it.
    pub fn store(&mut self) -> Result<Mounted<'_, D>, crate::Error> {
        self.mount(Role::Images)
    }

    /// The FAT file system of a partition (images or data), mounted so that every flush
    /// of a file is a sync of the device: what reprov writes there reaches the disk in
    /// the order it was written (the job's `.new` copy before the job, a log entry
    /// before the step it announces). Call `unmount()` on it.
    pub fn mount(&mut self, role: Role) -> Result<Mounted<'_, D>, crate::Error> {
        let what = match role {
            Role::Data => "opening the data partition of",
            _ => "opening the images partition of",
        };
        let (start, len) = self.range(role);
        let window = Window::new(&mut self.device, start, len)
            .map_err(|e| crate::Error::io(what, &self.name, e))?;
        Ok(Store::open(SyncOnFlush(window))?)
    }

    /// Mounts the images partition, runs `f`, unmounts it (also when `f` failed) and syncs
    /// the device. Writes what `f` writes.
    pub fn with_store<T>(
        &mut self,
        f: impl FnOnce(&Mounted<'_, D>) -> crate::Result<T>,
    ) -> crate::Result<T> {
        let store = self.store()?;
        let result = f(&store);
        let unmounted = store.unmount();
        let value = result?;
        unmounted?;
        self.device
            .sync_all()
            .map_err(|e| crate::Error::io("syncing", &self.name, e))?;
        Ok(value)
    }

    /// Lets [`ApplianceDisk::grow_nos`] grow over a float that holds data (warning).
    pub fn force_float(&mut self, force: bool) {
        self.force_float = force;
    }

    /// What the float holds, every byte of it read.
    pub fn float_usage(&mut self) -> std::io::Result<super::float::FloatUsage> {
        let start = self.entry(Role::Nos).end();
        let len = self.float_len();
        super::float::scan(&mut self.device, start, len)
    }

    /// The device (read-only access; writes go through [`ApplianceDisk::partition`]).
    pub fn device(&self) -> &D {
        &self.device
    }

    #[cfg(test)]
    pub(super) fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device, for the caller to close or reuse.
    pub fn into_inner(self) -> D {
        self.device
    }

    /// Hides the system partition (type `0x0C` → `0x1C`). Does not write to the disk.
    pub fn hide_system(&mut self) {
        let mut e = self.entry(Role::System);
        e.ptype = e.ptype.hide();
        self.planned.set(Role::System.slot(), e);
    }

    /// Makes the system partition visible (type `0x1C` → `0x0C`). Does not write to the disk.
    pub fn unhide_system(&mut self) {
        let mut e = self.entry(Role::System);
        e.ptype = e.ptype.unhide();
        self.planned.set(Role::System.slot(), e);
    }

    /// Makes `role`'s partition the only active one. Does not write to the disk.
    pub fn activate(&mut self, role: Role) {
        for r in Role::ALL {
            let mut e = self.entry(r);
            e.boot = if r == role {
                BOOT_ACTIVE
            } else {
                BOOT_INACTIVE
            };
            self.planned.set(r.slot(), e);
        }
    }

    /// Grows NOS to `new_len` bytes, into the float (see [`ApplianceDisk::check_growth`]).
    /// Does not write to the disk.
    pub fn grow_nos(&mut self, new_len: u64) -> Result<(), Error> {
        let nos = self.entry(Role::Nos);
        if let Some(sectors) = self.check_growth(new_len)? {
            self.planned.set(Role::Nos.slot(), Entry { sectors, ..nos });
        }
        Ok(())
    }

    /// Whether NOS may grow to `new_len` bytes, and its new size in sectors (`None`: it
    /// has that size already). Refuses to shrink, to go past the float (into images), to
    /// leave a 1 MiB multiple, the MBR's `u32` sector limits, and a float that holds data
    /// (read whole, unless [`ApplianceDisk::force_float`]). Reads the float; writes nothing.
    pub fn check_growth(&mut self, new_len: u64) -> Result<Option<u32>, Error> {
        let refuse = |why: String| Error::Grow {
            disk: self.name.clone(),
            why,
        };
        let nos = self.entry(Role::Nos);
        if new_len < nos.len() {
            return Err(refuse(format!(
                "refusing to shrink NOS from {} to {} ({} to {new_len} bytes)",
                format_size(nos.len()),
                format_size(new_len),
                nos.len()
            )));
        }
        if new_len == nos.len() {
            return Ok(None);
        }
        if new_len % ALIGN != 0 {
            return Err(refuse(format!(
                "the new size {new_len} bytes is not a multiple of 1 MiB"
            )));
        }
        let sectors = bytes_to_sectors(new_len).ok_or_else(|| {
            refuse(format!(
                "the new size {new_len} bytes is more sectors than an MBR entry holds (u32)"
            ))
        })?;
        let new_end = nos.start().checked_add(new_len);
        let limit = nos.end().saturating_add(self.float_len());
        if !matches!(new_end, Some(end) if end <= limit) {
            return Err(refuse(format!(
                "NOS can grow to at most {} ({} bytes): the float after it holds {}; \
                 asked for {} ({new_len} bytes)",
                format_size(limit - nos.start()),
                limit - nos.start(),
                format_size(self.float_len()),
                format_size(new_len)
            )));
        }
        // Open checked the partitions lie in slot order, so staying inside the float is
        // what keeps NOS from overlapping images (or anything else).
        // Every byte NOS would take, read now: growth goes only over zeros.
        let taken = nos.end()..nos.start() + new_len;
        let usage = super::float::scan(&mut self.device, taken.start, taken.end - taken.start)
            .map_err(|e| refuse(format!("reading the float: {e}")))?;
        if !usage.is_empty() {
            if !self.force_float {
                return Err(Error::FloatInUse {
                    disk: self.name.clone(),
                    start: taken.start,
                    end: taken.end,
                    usage,
                });
            }
            log::warn!(
                "growing NOS on {} over data (--force-float): bytes {:#x}–{:#x} hold {usage}",
                self.name,
                taken.start,
                taken.end
            );
        }
        Ok(Some(sectors))
    }

    /// Gives NOS the partition type `ptype` (the one of the image written onto it), so
    /// what mounts it finds what is really there. Does not write to the disk.
    pub fn set_nos_type(&mut self, ptype: PartType) {
        let mut e = self.entry(Role::Nos);
        e.ptype = ptype;
        self.planned.set(Role::Nos.slot(), e);
    }

    /// True when the plan differs from the disk's MBR.
    pub fn has_changes(&self) -> bool {
        self.planned.to_bytes() != self.on_disk
    }

    /// What the plan changes, one line per changed slot (empty when nothing).
    pub fn changes(&self) -> Vec<String> {
        let old = &self.opened;
        Role::ALL
            .into_iter()
            .filter(|r| old.get(r.slot()) != self.entry(*r))
            .map(|r| {
                format!(
                    "slot {} ({r}): {} -> {}",
                    r.slot(),
                    detect::describe(&old.get(r.slot())),
                    detect::describe(&self.entry(r))
                )
            })
            .collect()
    }

    /// Writes the planned MBR: the only function here that changes the disk's table.
    ///
    /// Reads the current sector and refuses if it is not the one opened; copies it to
    /// `reprov/mbr/` on the images partition; writes the new 512 bytes in one write;
    /// syncs; reads back and compares. With no change it writes nothing and logs so.
    pub fn commit(&mut self) -> Result<(), crate::Error> {
        let new = self.planned.to_bytes();
        let current = read_sector(&mut self.device, &self.name)?;
        if current != self.on_disk {
            return Err(Error::ChangedSinceOpen {
                disk: self.name.clone(),
            }
            .into());
        }
        if new == current {
            log::info!("MBR of {} unchanged; nothing written", self.name);
            return Ok(());
        }
        // The backup goes first and is unmounted (flushed) and synced before the MBR
        // changes: after a power cut at any point, either the old MBR is still on the
        // disk or its copy is on the images partition.
        let store = self.store()?;
        let backup = store.save_mbr_backup(&current)?;
        store.unmount()?;
        self.device
            .sync_all()
            .map_err(Error::io("syncing the MBR backup on", &self.name))?;
        log::debug!("saved the MBR of {} as {backup}", self.name);

        write_sector(&mut self.device, &self.name, &new)?;
        self.on_disk = new;
        let old = std::mem::replace(&mut self.opened, self.planned.clone());
        self.tell_kernel_about(&old);
        Ok(())
    }

    /// Tells the kernel of every slot whose start or size differs from `old`. The MBR is
    /// already written: a refusal (a busy partition that moved) is logged, and the next
    /// boot reads the new table anyway.
    fn tell_kernel_about(&self, old: &Mbr) {
        let Some(tell) = self.tell_kernel else {
            return;
        };
        for (slot, (was, now)) in (1u32..).zip(old.entries().iter().zip(self.planned.entries())) {
            if (was.start(), was.len()) == (now.start(), now.len()) {
                continue;
            }
            let (start, len) = if now.is_empty() {
                (0, 0)
            } else {
                (now.start(), now.len())
            };
            match tell(&self.device, slot, start, len) {
                Ok(()) => log::debug!("the kernel knows the new geometry of slot {slot}"),
                Err(e) => log::warn!(
                    "{}: {e}; the kernel keeps the old geometry of slot {slot} until the next boot",
                    self.name
                ),
            }
        }
    }
}
