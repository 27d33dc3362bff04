//! `reprov layout …`: lay out, show and edit the appliance disk's MBR.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use argh::FromArgs;
use serde::Serialize;

use super::open_disk;
use crate::disk::{self, ApplianceDisk, PartType, Role, Sizes};
use crate::units::{format_size, parse_size};
use crate::Error;

/// Lay out, show and edit the appliance disk's partition table.
#[derive(FromArgs)]
#[argh(subcommand, name = "layout")]
pub struct Layout {
    #[argh(subcommand)]
    verb: Verb,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Verb {
    Init(Init),
    Show(Show),
    Hide(Hide),
    Unhide(Unhide),
    Activate(Activate),
    Grow(Grow),
}

/// Write a fresh appliance layout (destroys what is on the disk).
#[derive(FromArgs)]
#[argh(subcommand, name = "init")]
struct Init {
    /// disk image file (created if missing) or block device
    #[argh(option)]
    disk: PathBuf,
    /// size of the system partition (FAT32, hidden), e.g. 64M
    #[argh(option, from_str_fn(parse_size))]
    system: u64,
    /// size of the NOS partition, e.g. 1G
    #[argh(option, from_str_fn(parse_size))]
    nos: u64,
    /// free space left after NOS for it to grow into, e.g. 512M
    #[argh(option, from_str_fn(parse_size))]
    float: u64,
    /// size of the images partition (FAT32, label IMAGES), e.g. 2G
    #[argh(option, from_str_fn(parse_size))]
    images: u64,
    /// size of the data partition (FAT32, label DATA); default: the rest of the disk
    #[argh(option, from_str_fn(parse_size))]
    data: Option<u64>,
    /// MBR type of the NOS partition (default 0x83)
    #[argh(option, from_str_fn(parse_type), default = "PartType::LINUX")]
    nos_type: PartType,
    /// file of at most 440 bytes of MBR boot code (default: keep the disk's)
    #[argh(option)]
    boot_code: Option<PathBuf>,
    /// size of the file to create when it does not exist (default: the sum of the
    /// sizes, with a 33M data partition unless --data is given)
    #[argh(option, from_str_fn(parse_size))]
    size: Option<u64>,
    /// overwrite a disk that already has a partition table
    #[argh(switch)]
    force: bool,
}

/// Print the partition table with each partition's role.
#[derive(FromArgs)]
#[argh(subcommand, name = "show")]
struct Show {
    /// disk image file or block device
    #[argh(option)]
    disk: PathBuf,
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
}

/// Hide the system partition (type 0x0C -> 0x1C).
#[derive(FromArgs)]
#[argh(subcommand, name = "hide")]
struct Hide {
    /// disk image file or block device
    #[argh(option)]
    disk: PathBuf,
}

/// Make the system partition visible (type 0x1C -> 0x0C).
#[derive(FromArgs)]
#[argh(subcommand, name = "unhide")]
struct Unhide {
    /// disk image file or block device
    #[argh(option)]
    disk: PathBuf,
}

/// Make one partition the only active (booting) one.
#[derive(FromArgs)]
#[argh(subcommand, name = "activate")]
struct Activate {
    /// disk image file or block device
    #[argh(option)]
    disk: PathBuf,
    /// system or nos
    #[argh(positional, from_str_fn(parse_bootable))]
    role: Role,
}

/// Grow the NOS partition into the float after it.
#[derive(FromArgs)]
#[argh(subcommand, name = "grow")]
struct Grow {
    /// disk image file or block device
    #[argh(option)]
    disk: PathBuf,
    /// new size of NOS, e.g. 2G
    #[argh(option, from_str_fn(parse_size))]
    to: Option<u64>,
    /// how much to add to NOS, e.g. 256M
    #[argh(option, from_str_fn(parse_size))]
    by: Option<u64>,
    /// grow over a float that holds data (by default growth refuses: the float is read
    /// first and must be all zero)
    #[argh(switch)]
    force_float: bool,
}

fn parse_type(text: &str) -> Result<PartType, String> {
    let hex = text.trim_start_matches("0x").trim_start_matches("0X");
    u8::from_str_radix(hex, 16)
        .map(PartType)
        .map_err(|_| format!("partition type {text:?}: expected a hex byte such as 0x83"))
}

fn parse_bootable(text: &str) -> Result<Role, String> {
    match Role::parse(text) {
        Some(role @ (Role::System | Role::Nos)) => Ok(role),
        _ => Err(format!("{text:?}: expected system or nos")),
    }
}

/// Runs a `layout` verb.
pub fn run(layout: Layout) -> crate::Result<()> {
    match layout.verb {
        Verb::Init(args) => init(args),
        Verb::Show(args) => show(&args.disk, args.json),
        Verb::Hide(args) => edit(&args.disk, |d| {
            d.hide_system();
            Ok(())
        }),
        Verb::Unhide(args) => edit(&args.disk, |d| {
            d.unhide_system();
            Ok(())
        }),
        Verb::Activate(args) => edit(&args.disk, |d| {
            d.activate(args.role);
            Ok(())
        }),
        Verb::Grow(args) => edit(&args.disk, |d| {
            let current = d.range(Role::Nos).1;
            let new_len = match (args.to, args.by) {
                (Some(to), None) => to,
                (None, Some(by)) => current
                    .checked_add(by)
                    .ok_or_else(|| Error::Usage(format!("--by {by}: too large")))?,
                _ => return Err(Error::Usage("give one of --to SIZE or --by SIZE".into())),
            };
            d.force_float(args.force_float);
            Ok(d.grow_nos(new_len)?)
        }),
    }
}

/// Plans an edit, commits it and prints what changed.
fn edit(
    path: &Path,
    plan: impl FnOnce(&mut ApplianceDisk<File>) -> crate::Result<()>,
) -> crate::Result<()> {
    let mut disk = open_disk(path)?;
    plan(&mut disk)?;
    let changes = disk.changes();
    disk.commit()?;
    if changes.is_empty() {
        println!("{}: nothing to change; MBR not written", path.display());
    }
    for change in changes {
        println!("{}: {change}", path.display());
    }
    Ok(())
}

fn init(args: Init) -> crate::Result<()> {
    let name = args.disk.display().to_string();
    let sizes = Sizes {
        system: args.system,
        nos: args.nos,
        float: args.float,
        images: args.images,
        data: args.data,
        nos_type: args.nos_type,
    };
    let boot_code = match &args.boot_code {
        Some(path) => Some(read_boot_code(path)?),
        None => None,
    };
    let mut file = open_or_create(&args.disk, &sizes, args.size)?;
    disk::init(&mut file, &name, &sizes, boot_code.as_deref(), args.force)?;
    drop(file);
    println!("{name}: appliance layout written");
    show(&args.disk, false)
}

fn read_boot_code(path: &Path) -> crate::Result<Vec<u8>> {
    let mut code = Vec::new();
    crate::io::open_regular(path)
        .and_then(|f| f.take(441).read_to_end(&mut code))
        .map_err(|e| Error::io("reading boot code", path.display(), e))?;
    Ok(code)
}

/// Opens the disk read-write, creating a sparse file of the right size if missing.
fn open_or_create(path: &Path, sizes: &Sizes, size: Option<u64>) -> crate::Result<File> {
    let open = |create: bool| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)
    };
    match open(false) {
        Ok(file) => {
            let len = file
                .metadata()
                .map_err(|e| Error::io("measuring", path.display(), e))?
                .len();
            if let Some(size) = size.filter(|&s| file_is_regular(&file) && s != len) {
                return Err(Error::Usage(format!(
                    "--size {size} applies only when creating the disk; {} exists with {len} bytes",
                    path.display()
                )));
            }
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // With no --data the new file holds the smallest data partition.
            let len = match size {
                Some(size) => size,
                None => sizes.total().ok_or_else(|| {
                    Error::Usage("the partition sizes add up past 2^64 bytes".into())
                })?,
            };
            let file = open(true).map_err(|e| Error::io("creating disk", path.display(), e))?;
            file.set_len(len)
                .map_err(|e| Error::io("sizing disk", path.display(), e))?;
            Ok(file)
        }
        Err(e) => Err(Error::io("opening disk", path.display(), e)),
    }
}

fn file_is_regular(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.is_file())
}

/// One partition as `layout show --json` prints it.
#[derive(Serialize)]
struct PartitionJson {
    slot: usize,
    role: String,
    start_sector: u32,
    sectors: u32,
    start: u64,
    end: u64,
    size: u64,
    #[serde(rename = "type")]
    ptype: String,
    hidden: bool,
    active: bool,
}

#[derive(Serialize)]
struct LayoutJson {
    disk: String,
    size: u64,
    disk_signature: String,
    partitions: Vec<PartitionJson>,
    float: FloatJson,
}

#[derive(Serialize)]
struct FloatJson {
    start: u64,
    size: u64,
    /// Bytes in sectors that are not all zero (growth refuses to take them).
    nonzero: u64,
    /// What the float holds, in words.
    holds: String,
}

fn show(path: &Path, json: bool) -> crate::Result<()> {
    let mut disk = open_disk(path)?;
    let usage = disk
        .float_usage()
        .map_err(|e| Error::io("reading the float of", path.display(), e))?;
    let partitions: Vec<PartitionJson> = Role::ALL
        .into_iter()
        .map(|role| {
            let e = disk.entry(role);
            PartitionJson {
                slot: role.slot(),
                role: role.name().to_ascii_lowercase(),
                start_sector: e.start_lba,
                sectors: e.sectors,
                start: e.start(),
                end: e.end(),
                size: e.len(),
                ptype: e.ptype.to_string(),
                hidden: e.ptype.is_hidden(),
                active: e.is_active(),
            }
        })
        .collect();
    let layout = LayoutJson {
        disk: disk.name().to_string(),
        size: disk.disk_len(),
        disk_signature: format!("0x{:08X}", disk.mbr().disk_signature()),
        float: FloatJson {
            start: disk.entry(Role::Nos).end(),
            size: disk.float_len(),
            nonzero: usage.nonzero,
            holds: usage.to_string(),
        },
        partitions,
    };
    if json {
        let text = serde_json::to_string_pretty(&layout)
            .map_err(|e| Error::Usage(format!("encoding JSON: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!(
        "{}: {} ({} bytes), disk signature {}",
        layout.disk,
        format_size(layout.size),
        layout.size,
        layout.disk_signature
    );
    println!(
        "{:<4} {:<7} {:>12} {:>12} {:>11} {:<5} {:<6} {:<6}",
        "slot", "role", "start", "end", "size", "type", "hidden", "active"
    );
    for p in &layout.partitions {
        println!(
            "{:<4} {:<7} {:>12} {:>12} {:>11} {:<5} {:<6} {:<6}",
            p.slot,
            p.role,
            p.start_sector,
            u64::from(p.start_sector) + u64::from(p.sectors),
            format_size(p.size),
            p.ptype,
            yes(p.hidden),
            yes(p.active)
        );
    }
    println!("(start and end in 512-byte sectors; end is exclusive)");
    let free = if usage.is_empty() {
        "free (all zero)".to_string()
    } else {
        format!("NOT free: {usage} (NOS grows over it only with --force-float)")
    };
    println!(
        "float after NOS: {} ({} bytes) {free}",
        format_size(layout.float.size),
        layout.float.size
    );
    Ok(())
}
