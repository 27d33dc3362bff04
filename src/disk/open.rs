//! Opening an appliance disk by path: a block device, or a disk image file.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::ApplianceDisk;

/// Opens a file or block device read-write and detects its appliance layout; refuses a
/// disk that is not one. Writes nothing. A block device's kernel is told of every
/// partition a later commit moves or resizes.
pub fn open_disk(path: &Path) -> crate::Result<ApplianceDisk<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| crate::Error::io("opening disk", path.display(), e))?;
    let disk = ApplianceDisk::open(file, &path.display().to_string())?;
    Ok(disk.telling_kernel(crate::kernel::partitions::update))
}
