//! `reprov image …`: create, apply, verify and inspect partition images.

use argh::FromArgs;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::open_disk;
use crate::disk::{PartType, Role};
use crate::image::{self, ApplyOptions, Codec, CreateOptions, Kind, Manifest};
use crate::io::{Show, WriteBehind};
use crate::store::{ImageName, Kind as JobKind, State};
use crate::units::{format_size, parse_size};
use crate::Error;

/// How much of an image `image create --out` writes before it asks the disk to start
/// writing it (scripts/bench).
const WRITE_BEHIND: u64 = 16 << 20;

/// Create, apply, verify and inspect partition images.
#[derive(FromArgs)]
#[argh(subcommand, name = "image")]
pub struct ImageCommand {
    #[argh(subcommand)]
    verb: Verb,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Verb {
    Create(Create),
    Apply(Apply),
    Verify(Verify),
    Sign(Sign),
    Info(Info),
    Add(Add),
    List(List),
    Remove(Remove),
}

/// Pack a partition into an image file.
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct Create {
    /// the partition to pack: a file or block device (or use --disk and --role)
    #[argh(option)]
    from: Option<PathBuf>,
    /// the appliance disk (file or block device) whose --role partition to pack, and
    /// whose images partition --to-store writes to
    #[argh(option)]
    disk: Option<PathBuf>,
    /// the partition of --disk to pack: nos (default), system, images or data
    #[argh(option, from_str_fn(parse_role))]
    role: Option<Role>,
    /// the image file to write (replaced if it exists)
    #[argh(option)]
    out: Option<PathBuf>,
    /// write the image into the images partition of --disk, as images/NAME.tar
    #[argh(switch)]
    to_store: bool,
    /// image name (default: this machine's model and serial number joined)
    #[argh(option)]
    name: Option<String>,
    /// what the image is, free text (e.g. the appliance and its version)
    #[argh(option, default = "String::new()")]
    description: String,
    /// chunk size, a power of two from 64K to 8M (default 4M)
    #[argh(option, from_str_fn(parse_size))]
    chunk_size: Option<u64>,
    /// chunk compression: zstd (default) or gzip
    #[argh(option, from_str_fn(parse_codec))]
    codec: Option<Codec>,
    /// compression level (zstd 1-19, default 3; gzip 1-9, default 2)
    #[argh(option)]
    level: Option<i32>,
    /// image every block, also those the file system (ext2/3/4, FAT) does not use
    #[argh(switch)]
    all_blocks: bool,
    /// the MBR partition type NOS gets when the image is applied, e.g. 0x83 (default:
    /// the partition's own with --disk, else what its file system implies)
    #[argh(option, long = "type", from_str_fn(parse_type))]
    partition_type: Option<PartType>,
}

/// Write an image onto a partition: every chunk is checked first (nothing is written
/// if one is bad), then again as it is written.
#[derive(FromArgs)]
#[argh(subcommand, name = "apply")]
struct Apply {
    /// the image file
    #[argh(positional)]
    image: PathBuf,
    /// the partition to write: a file or block device (a missing file is created)
    #[argh(option)]
    to: Option<PathBuf>,
    /// the appliance disk whose NOS partition to write; NOS grows into the float when
    /// the image needs more room
    #[argh(option)]
    disk: Option<PathBuf>,
    /// with --disk: the partition to write; only nos (the default)
    #[argh(option, from_str_fn(parse_role))]
    role: Option<Role>,
    /// skip the chunks before this one (a checkpoint of an interrupted apply)
    #[argh(option, default = "0")]
    resume_from: u64,
    /// with --disk: grow NOS over a float that holds data (by default growth refuses)
    #[argh(switch)]
    force_float: bool,
}

/// Check every chunk of an image and who signed it; writes nothing. With trusted keys
/// (--key, --keys, or /etc/reprov/keys), an image not signed by one of them is refused.
#[derive(FromArgs)]
#[argh(subcommand, name = "verify")]
struct Verify {
    /// the image file (its parts NAME.002 … beside it are read too), or with --disk
    /// the name of an image on the disk's images partition
    #[argh(positional)]
    image: PathBuf,
    /// the appliance disk whose images partition holds the image
    #[argh(option)]
    disk: Option<PathBuf>,
    /// with --disk: the factory image, in factory/ on the data partition
    #[argh(switch)]
    factory: bool,
    /// a trusted public key (NAME.pub); repeat for more
    #[argh(option)]
    key: Vec<PathBuf>,
    /// a directory of trusted public keys, *.pub (default /etc/reprov/keys)
    #[argh(option)]
    keys: Option<PathBuf>,
}

/// Sign an image: its manifest, which holds every chunk's SHA-256, signed with a secret
/// key (minisign's format, Ed25519) into the image as manifest.toml.minisig. Signing
/// again replaces the signature. Writes only after the image's last chunk.
#[derive(FromArgs)]
#[argh(subcommand, name = "sign")]
struct Sign {
    /// the image file
    #[argh(positional)]
    image: PathBuf,
    /// the secret key: NAME.key of `reprov key generate`, or a minisign secret key
    #[argh(option)]
    key: Option<PathBuf>,
    /// the secret key's password, on this file's first line (mode 600)
    #[argh(option)]
    password_file: Option<PathBuf>,
    /// the trusted comment, signed too (default: the time and the image's name)
    #[argh(option)]
    comment: Option<String>,
    /// store this signature instead, made elsewhere: `tar -xf IMAGE manifest.toml &&
    /// minisign -S -s KEY -m manifest.toml` writes manifest.toml.minisig
    #[argh(option)]
    signature: Option<PathBuf>,
}

/// Show an image's manifest.
#[derive(FromArgs)]
#[argh(subcommand, name = "info")]
struct Info {
    /// the image file (its parts NAME.002 … beside it are read too), or with --disk
    /// the name of an image on the disk's images partition
    #[argh(positional)]
    image: PathBuf,
    /// the appliance disk whose images partition holds the image
    #[argh(option)]
    disk: Option<PathBuf>,
    /// with --disk: the factory image, in factory/ on the data partition
    #[argh(switch)]
    factory: bool,
    /// print JSON (with every chunk) instead of text
    #[argh(switch)]
    json: bool,
}

/// List the images on an appliance disk: the images partition, or with --factory the
/// factory images on the data partition. An image kept as parts counts once.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct List {
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
    /// list factory/ on the data partition
    #[argh(switch)]
    factory: bool,
}

/// Remove an image (with all its parts, and an unfinished copy of it) from an appliance
/// disk: from images/ on the images partition, or with --factory from factory/ on the
/// data partition. The image the disk's job needs is refused until the job is done or
/// cleared. (Fetches make room by themselves, removing the oldest images no job needs.)
#[derive(FromArgs)]
#[argh(subcommand, name = "remove")]
struct Remove {
    /// the image's name on the disk
    #[argh(positional)]
    name: String,
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
    /// remove it from factory/ on the data partition
    #[argh(switch)]
    factory: bool,
}

/// Copy an image file onto an appliance disk: into images/ on the images partition, or
/// with --factory into factory/ on the data partition (where a factory job looks).
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
struct Add {
    /// the image file
    #[argh(positional)]
    image: PathBuf,
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
    /// the name on the disk (default: the file's name)
    #[argh(option, long = "as")]
    name: Option<String>,
    /// store it as the factory image, in factory/ on the data partition
    #[argh(switch)]
    factory: bool,
}

impl ImageCommand {
    pub fn run(self) -> crate::Result<()> {
        match self.verb {
            Verb::Create(c) => create(c),
            Verb::Apply(a) => apply(a),
            Verb::Verify(v) => verify(v),
            Verb::Sign(s) => sign(s),
            Verb::Info(i) => info(i),
            Verb::Add(a) => add(a),
            Verb::List(l) => list(l),
            Verb::Remove(r) => remove(r),
        }
    }
}

/// Opens an image file with the parts beside it (see [`crate::io::open_with_parts`]).
fn open_image_file(path: &Path) -> crate::Result<crate::io::Concat<File>> {
    let image =
        crate::io::open_with_parts(path).map_err(|e| Error::io("opening", path.display(), e))?;
    if image.parts() > 1 {
        log::info!(
            "{} is kept as {} parts: reading them as one",
            path.display(),
            image.parts()
        );
    }
    Ok(image)
}

/// Runs `f` on the image `name` of an appliance disk: on its images partition, or the
/// factory image on its data partition. Reads only.
fn with_stored_image<T>(
    disk_path: &Path,
    name: &Path,
    factory: bool,
    f: impl FnOnce(&mut dyn ReadSeek) -> crate::Result<T>,
) -> crate::Result<T> {
    let text = name
        .to_str()
        .ok_or_else(|| usage("the image name is not UTF-8"))?;
    let name =
        ImageName::new(text).map_err(|why| Error::Usage(format!("image {text:?}: {why}")))?;
    let mut disk = open_disk(disk_path)?;
    let role = if factory { Role::Data } else { Role::Images };
    let store = disk.mount(role)?;
    let dir = if factory {
        crate::recovery::runner::FACTORY_DIR
    } else {
        crate::store::IMAGES_DIR
    };
    let result = store
        .open_in(dir, &name)
        .map_err(Error::from)
        .and_then(|mut image| f(&mut image));
    store.unmount()?;
    result
}

trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

fn parse_codec(text: &str) -> Result<Codec, String> {
    Codec::parse(text)
}

fn parse_type(text: &str) -> Result<PartType, String> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    match u8::from_str_radix(hex, 16) {
        Ok(byte) if byte != 0 && hex.len() <= 2 => Ok(PartType(byte)),
        _ => Err(format!(
            "{text:?}: expected a partition type from 0x01 to 0xff"
        )),
    }
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("{text:?}: expected nos, system, images or data"))
}

fn usage(text: &str) -> Error {
    Error::Usage(text.to_string())
}

fn create(c: Create) -> crate::Result<()> {
    let mut options = CreateOptions::new(c.name.clone().unwrap_or_else(default_name));
    options.description = c.description.clone();
    options.show = Show::detect();
    if let Some(size) = c.chunk_size {
        options.chunk_size = size;
    }
    if let Some(codec) = c.codec {
        options.codec = codec;
    }
    options.level = c.level;
    options.all_blocks = c.all_blocks;
    options.partition_type = c.partition_type;
    options.validate()?;
    if c.to_store && c.role == Some(Role::Images) {
        return Err(usage(
            "image create: the images partition cannot be packed into itself",
        ));
    }
    match (&c.from, &c.disk, c.role) {
        (Some(from), _, None) => {
            let (mut source, len) = crate::io::open_file_or_device(from)
                .map_err(|e| Error::io("opening", from.display(), e))?;
            options.holes = crate::kernel::holes::data_map(&source, 0, len)
                .map_err(|e| Error::io("finding the holes of", from.display(), e))?;
            create_into(&c, &mut source, &from.display().to_string(), &options)
        }
        (None, Some(disk_path), role) => {
            let role = role.unwrap_or(Role::Nos);
            let mut disk = open_disk(disk_path)?;
            let entry = disk.entry(role);
            options.partition_type = options.partition_type.or(Some(entry.ptype.unhide()));
            options.holes =
                crate::kernel::holes::data_map(disk.device(), entry.start(), entry.len())
                    .map_err(|e| Error::io("finding the holes of", disk_path.display(), e))?;
            let mut part = disk
                .partition(role)
                .map_err(|e| Error::io("opening a partition of", disk_path.display(), e))?;
            let what = format!("the {role} partition of {}", disk_path.display());
            create_into(&c, &mut part, &what, &options)
        }
        _ => Err(usage(
            "image create: give the partition as --from PART, or as --disk D [--role R]",
        )),
    }
}

/// Writes the image of `source` to --out or into the store of --disk.
fn create_into<R: Read + Seek>(
    c: &Create,
    source: &mut R,
    what: &str,
    options: &CreateOptions,
) -> crate::Result<()> {
    let manifest = match (&c.out, c.to_store, &c.disk) {
        (Some(out), false, _) => {
            log::info!(
                "creating image {:?} of {what} into {}",
                options.name,
                out.display()
            );
            // Under a temporary name until whole: a failed create leaves an earlier file
            // of that name as it was, and no half image under it.
            if let Ok(meta) = std::fs::metadata(out) {
                if !meta.is_file() {
                    return Err(Error::Usage(format!(
                        "image create --out {}: not a regular file (an image is a file; it is \
                         written under {0}.part and renamed when whole)",
                        out.display()
                    )));
                }
            }
            let part = PathBuf::from(format!("{}.part", out.display()));
            let file = File::create(&part).map_err(|e| Error::io("creating", part.display(), e))?;
            // The disk writes the image as it is made; the fsync waits for the tail.
            let mut file = WriteBehind::new(file, WRITE_BEHIND)
                .map_err(|e| Error::io("creating", part.display(), e))?;
            let made = image::create(source, &mut file, options)
                .map_err(crate::Error::from)
                .and_then(|manifest| {
                    file.into_inner()
                        .sync_all()
                        .map_err(|e| Error::io("syncing", part.display(), e))?;
                    std::fs::rename(&part, out)
                        .map_err(|e| Error::io("renaming into place", out.display(), e))?;
                    Ok(manifest)
                });
            if made.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            made?
        }
        (None, true, Some(disk_path)) => {
            // A second handle on the disk: the source may be a partition of the same disk.
            let mut disk = open_disk(disk_path)?;
            let file_name = format!("{}.{}", options.name, image::EXTENSION);
            let name = ImageName::new(&file_name)
                .map_err(|why| Error::Usage(format!("image create --to-store: {why}")))?;
            log::info!(
                "creating image {:?} of {what} into {} on the images partition of {}",
                options.name,
                crate::store::image_path(&name),
                disk_path.display()
            );
            // Under a temporary name until whole; as parts past FAT's 4 GiB limit.
            disk.with_store(|store| {
                store.write_image(&name, |file| {
                    Ok::<_, Error>(image::create(source, file, options)?)
                })
            })?
        }
        _ => {
            return Err(usage(
                "image create: give --out FILE, or --to-store with --disk D",
            ))
        }
    };
    log::info!(
        "created image {:?}: {} in {} chunks ({} data, {} of them raw; {} zero, {} free), {} stored",
        manifest.name,
        format_size(manifest.source_size),
        manifest.chunks.len(),
        manifest.data_chunks(),
        manifest.count(Kind::Raw),
        manifest.count(Kind::Zero),
        manifest.count(Kind::Free),
        format_size(manifest.stored_total())
    );
    Ok(())
}

fn apply(a: Apply) -> crate::Result<()> {
    let mut img = open_image_file(&a.image)?;
    // As the recovery does: the whole image is known good before the first write (NOS
    // growth included), so a bad chunk late in it leaves the target as it was.
    log::info!(
        "checking every chunk of {} before writing",
        a.image.display()
    );
    image::verify_stored(&mut img, Show::detect())?;
    img.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io("rewinding", a.image.display(), e))?;
    let mut durable = a.resume_from;
    let mut record = |chunks: u64| {
        log::debug!("checkpoint: {chunks} chunks durably written");
        durable = chunks;
        Ok(())
    };
    let mut options = ApplyOptions {
        resume_from: a.resume_from,
        checkpoint_every: Duration::from_secs(5),
        on_checkpoint: Some(&mut record),
        show: Show::detect(),
    };
    let (result, target) = match (&a.to, &a.disk, a.role) {
        (Some(to), None, None) => {
            let mut target = open_target(to, &mut img)?;
            log::info!("applying {} onto {}", a.image.display(), to.display());
            let result = image::apply(&mut img, &mut target, &mut options).map_err(Error::from);
            (result, to.display().to_string())
        }
        (None, Some(disk_path), None | Some(Role::Nos)) => {
            let mut disk = open_disk(disk_path)?;
            disk.force_float(a.force_float);
            log::info!(
                "applying {} onto NOS of {}",
                a.image.display(),
                disk_path.display()
            );
            let result = image::apply_to_nos(&mut img, &mut disk, &mut options);
            (result, format!("--disk {}", disk_path.display()))
        }
        (None, Some(_), Some(role)) => {
            return Err(Error::Usage(format!(
                "image apply: images go onto the NOS partition, not {role}"
            )))
        }
        _ => {
            return Err(usage(
                "image apply: give the target as --to PART, or as --disk D [--role nos]",
            ))
        }
    };
    match result {
        Ok(manifest) => {
            log::info!(
                "applied {:?} ({}) onto {target}",
                manifest.name,
                format_size(manifest.source_size),
            );
            Ok(())
        }
        Err(e) => {
            if durable > a.resume_from {
                log::info!(
                    "{durable} chunks are durably written; to resume: reprov image apply {} {} --resume-from {durable}",
                    a.image.display(),
                    if a.to.is_some() { format!("--to {target}") } else { target.clone() },
                );
            }
            Err(e)
        }
    }
}

/// Opens the target read-write; a missing path (outside `/dev`) becomes a sparse file of
/// the image's size.
fn open_target(path: &Path, img: &mut crate::io::Concat<File>) -> crate::Result<File> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => Ok(file),
        // A mistyped device must not become a file in /dev (a RAM file system).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.starts_with("/dev") => {
            let size = image::open(img)?.manifest.source_size;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| Error::io("creating", path.display(), e))?;
            file.set_len(size)
                .map_err(|e| Error::io("sizing", path.display(), e))?;
            Ok(file)
        }
        Err(e) => Err(Error::io("opening", path.display(), e)),
    }
}

fn verify(v: Verify) -> crate::Result<()> {
    let keys = super::trusted_keys(v.keys.as_deref(), &v.key)?;
    let (manifest, verdict) = match &v.disk {
        Some(disk) => with_stored_image(disk, &v.image, v.factory, |img| {
            Ok(keys.verify_image(&mut &mut *img, Show::detect())?)
        })?,
        None => keys.verify_image(&mut open_image_file(&v.image)?, Show::detect())?,
    };
    println!(
        "{}: good: {} chunks checked ({}), {} of data; {verdict}",
        v.image.display(),
        manifest.chunks.len(),
        if manifest.version >= image::HASHED_VERSION {
            "CRC32 and SHA-256"
        } else {
            "CRC32 only: an older image"
        },
        format_size(manifest.source_size)
    );
    Ok(())
}

fn sign(s: Sign) -> crate::Result<()> {
    let path = &s.image;
    // A regular file, refused before it is opened otherwise; opened for writing its tail.
    drop(crate::io::open_regular(path).map_err(|e| Error::io("opening", path.display(), e))?);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening", path.display(), e))?;
    let layout = image::open_signable(&mut file)?;
    let m = &layout.manifest;
    if m.version < image::HASHED_VERSION {
        return Err(crate::trust::Error::Unhashed { version: m.version }.into());
    }
    let signature =
        match (&s.key, &s.signature) {
            (Some(key), None) => {
                let key = super::signing_key(key, s.password_file.as_deref())?;
                let comment = s.comment.clone().unwrap_or_else(|| {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    format!("timestamp:{now}\timage:{}", m.name)
                });
                let manifest = layout.manifest_bytes(&mut file)?;
                key.sign(&manifest, &comment)?
            }
            (None, Some(signature)) => {
                crate::io::read_regular_to_string(signature, image::MAX_SIGNATURE_LEN)
                    .map_err(|e| Error::io("reading signature", signature.display(), e))?
            }
            _ => return Err(usage(
                "image sign: give the secret key as --key KEY, or a signature as --signature FILE",
            )),
        };
    let signer = crate::trust::Signature::decode(&signature)?
        .signer()
        .clone();
    let mtime = u64::try_from(m.created.unix_timestamp()).unwrap_or(0);
    let len = image::write_signature(&mut file, &signature, mtime)?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing the signature into", path.display(), e))?;
    println!("signed {}: {signer}", path.display());
    Ok(())
}

fn add(a: Add) -> crate::Result<()> {
    let name = match &a.name {
        Some(name) => name.clone(),
        None => a
            .image
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| usage("image add: the file has no UTF-8 name; give --as NAME"))?
            .to_string(),
    };
    let name = crate::store::ImageName::new(&name)
        .map_err(|why| Error::Usage(format!("image add: name {name:?}: {why}")))?;
    let mut source = open_image_file(&a.image)?;
    let size = source.len();
    let mut disk = open_disk(&a.disk)?;
    let place = if a.factory {
        let dir = crate::recovery::runner::FACTORY_DIR;
        let store = disk.mount(Role::Data)?;
        let added = store.add_image_in(dir, &name, &mut source, size);
        store.unmount()?;
        added?;
        format!("{dir}/{name} on the data partition")
    } else {
        disk.with_store(|store| Ok(store.add_image(&name, &mut source, size)?))?;
        format!(
            "{} on the images partition",
            crate::store::image_path(&name)
        )
    };
    disk.into_inner()
        .sync_all()
        .map_err(|e| Error::io("syncing", a.disk.display(), e))?;
    log::info!("added {} as {place}", a.image.display());
    Ok(())
}

fn list(l: List) -> crate::Result<()> {
    let mut disk = open_disk(&l.disk)?;
    let role = if l.factory { Role::Data } else { Role::Images };
    let store = disk.mount(role)?;
    let dir = if l.factory {
        crate::recovery::runner::FACTORY_DIR
    } else {
        crate::store::IMAGES_DIR
    };
    let listed = store.list_images_in(dir);
    store.unmount()?;
    for (name, size) in listed? {
        println!("{name}\t{size}\t{}", format_size(size));
    }
    Ok(())
}

fn remove(r: Remove) -> crate::Result<()> {
    let name = ImageName::new(&r.name)
        .map_err(|why| Error::Usage(format!("image remove: name {:?}: {why}", r.name)))?;
    let mut disk = open_disk(&r.disk)?;
    let place = if r.factory {
        let dir = crate::recovery::runner::FACTORY_DIR;
        let store = disk.mount(Role::Data)?;
        let removed = store.remove_image_in(dir, &name);
        store.unmount()?;
        removed?;
        format!("{dir}/{name} from the data partition")
    } else {
        disk.with_store(|store| {
            if let Some(job) = store.read_job()? {
                let needs = job.image == name || job.backup_image.as_ref() == Some(&name);
                let open = !matches!(job.state, State::Done | State::Failed)
                    || (job.kind == JobKind::Create && job.image == name);
                if needs && open {
                    return Err(usage(&format!(
                        "image remove: the job on {} ({} {}, {}) needs {name}: it is removed \
                         once the job is over, or clear the job first (reprov job clear)",
                        r.disk.display(),
                        job.kind,
                        job.image,
                        job.state
                    )));
                }
            }
            Ok(store.remove_image(&name)?)
        })?;
        format!(
            "{} from the images partition",
            crate::store::image_path(&name)
        )
    };
    disk.into_inner()
        .sync_all()
        .map_err(|e| Error::io("syncing", r.disk.display(), e))?;
    log::info!("removed {place}");
    Ok(())
}

fn info(i: Info) -> crate::Result<()> {
    let layout = match &i.disk {
        Some(disk) => with_stored_image(disk, &i.image, i.factory, |img| {
            Ok(image::open(&mut &mut *img)?)
        })?,
        None => image::open(&mut open_image_file(&i.image)?)?,
    };
    // Who the signature says signed it; whether that key is trusted is `verify`'s part.
    let signer = layout
        .signature
        .as_deref()
        .map(|text| crate::trust::Signature::decode(text).map(|s| s.signer().clone()));
    let manifest = &layout.manifest;
    if i.json {
        let mut json = info_json(manifest);
        json["signature"] = match &signer {
            None => serde_json::Value::Null,
            Some(Ok(s)) => serde_json::json!({ "key_id": s.key_id, "trusted_comment": s.comment }),
            Some(Err(e)) => serde_json::json!({ "error": e.to_string() }),
        };
        println!("{json:#}");
    } else {
        print!("{}", info_text(manifest));
        match &signer {
            None => println!("signature:      none (unsigned)"),
            Some(Ok(s)) => println!(
                "signature:      key {}, trusted comment {:?} (`image verify` checks it)",
                s.key_id, s.comment
            ),
            Some(Err(e)) => println!("signature:      unreadable: {e}"),
        }
    }
    Ok(())
}

fn created(m: &Manifest) -> String {
    m.created
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The manifest for people.
pub fn info_text(m: &Manifest) -> String {
    let stored = m.stored_total();
    let ptype = m
        .partition_type
        .map_or("not recorded (NOS keeps its own)".to_string(), |t| {
            t.to_string()
        });
    format!(
        "name:           {}\ndescription:    {}\ncreated:        {}\nformat:         {} version {}, {} chunks of {}\nsource size:    {} ({} bytes): the room it needs\npartition type: {ptype}\nfile system:    {} ({})\nchunks:         {} ({} data, {} of them raw; {} zero, {} free)\nstored:         {} ({:.1}% of the source)\n",
        m.name,
        m.description,
        created(m),
        image::FORMAT,
        m.version,
        m.codec.as_str(),
        format_size(m.chunk_size),
        format_size(m.source_size),
        m.source_size,
        m.filesystem.as_str(),
        m.capture.as_str(),
        m.chunks.len(),
        m.data_chunks(),
        m.count(Kind::Raw),
        m.count(Kind::Zero),
        m.count(Kind::Free),
        format_size(stored),
        if m.source_size == 0 { 0.0 } else { stored as f64 * 100.0 / m.source_size as f64 }
    )
}

/// The manifest for scripts, every chunk included.
pub fn info_json(m: &Manifest) -> serde_json::Value {
    let chunks: Vec<_> = m
        .chunks
        .iter()
        .map(|c| {
            serde_json::json!({
                "index": c.index,
                "kind": c.kind.as_str(),
                "crc32": format!("{:08x}", c.crc32),
                "sha256": c.sha256.map(|h| image::hex(&h)),
                "stored": c.stored,
            })
        })
        .collect();
    serde_json::json!({
        "format": image::FORMAT,
        "version": m.version,
        "name": m.name,
        "description": m.description,
        "created": created(m),
        "source_size": m.source_size,
        "chunk_size": m.chunk_size,
        "codec": m.codec.as_str(),
        "partition_type": m.partition_type.map(|t| format!("0x{:02x}", t.0)),
        "filesystem": m.filesystem.as_str(),
        "capture": m.capture.as_str(),
        "chunk_count": m.chunks.len(),
        "data_chunks": m.data_chunks(),
        "raw_chunks": m.count(Kind::Raw),
        "zero_chunks": m.count(Kind::Zero),
        "free_chunks": m.count(Kind::Free),
        "stored_bytes": m.stored_total(),
        "chunks": chunks,
    })
}

/// This machine's model and serial number joined (the patent's default image name),
/// from the firmware's DMI table, as the recovery names the images it creates.
fn default_name() -> String {
    // Unreadable (no DMI, or the serial needs root): the name goes without it.
    let read = |field| crate::identity::dmi(field).unwrap_or_default();
    crate::identity::default_image_name(&read("product_name"), &read("product_serial"))
}
