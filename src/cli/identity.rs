//! `reprov identity …`: show, capture and render the saved network identity.

use crate::identity::{self, DirSink};
use crate::Error;
use argh::FromArgs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Show, capture or render the saved network identity.
#[derive(FromArgs)]
#[argh(subcommand, name = "identity")]
pub struct IdentityCmd {
    #[argh(subcommand)]
    command: Sub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Sub {
    Show(Show),
    Capture(Capture),
    Render(Render),
    Save(Save),
}

/// Check an identity file and save it on an appliance disk (reprov/identity on the
/// images partition), where recovery restores it from.
#[derive(FromArgs)]
#[argh(subcommand, name = "save")]
struct Save {
    /// the appliance disk: an image file or a block device
    #[argh(option)]
    disk: PathBuf,
    /// the identity file (TOML)
    #[argh(option)]
    file: PathBuf,
}

/// Check an identity file and print it in its canonical form.
#[derive(FromArgs)]
#[argh(subcommand, name = "show")]
struct Show {
    /// the identity file (TOML)
    #[argh(option)]
    file: PathBuf,
}

/// Capture the running system's identity and print it as TOML.
#[derive(FromArgs)]
#[argh(subcommand, name = "capture")]
struct Capture {
    /// write it to this file instead of printing it
    #[argh(option)]
    out: Option<PathBuf>,
}

/// Write the files an identity becomes (hostname, hosts, networkd, cloud-init seed)
/// under a directory standing for the new OS's root.
#[derive(FromArgs)]
#[argh(subcommand, name = "render")]
struct Render {
    /// the identity file (TOML)
    #[argh(option)]
    file: PathBuf,
    /// the directory that stands for the new OS's root
    #[argh(option)]
    root: PathBuf,
}

pub fn run(cmd: IdentityCmd) -> crate::Result<()> {
    match cmd.command {
        Sub::Show(args) => {
            print!("{}", read_identity(&args.file)?.to_toml());
            Ok(())
        }
        Sub::Capture(args) => {
            let text = identity::capture_live()?.to_toml();
            match args.out {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| Error::io("writing", path.display(), e))
                }
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        Sub::Save(args) => {
            let identity = read_identity(&args.file)?;
            crate::disk::open_disk(&args.disk)?
                .with_store(|store| identity::save(store, &identity))?;
            log::info!(
                "saved the identity of {} on {}",
                identity.hostname,
                args.disk.display()
            );
            Ok(())
        }
        Sub::Render(args) => {
            let identity = read_identity(&args.file)?;
            std::fs::create_dir_all(&args.root)
                .map_err(|e| Error::io("creating", args.root.display(), e))?;
            let written = identity::restore(&identity, &mut DirSink::new(&args.root))?;
            for path in &written {
                println!(
                    "{}",
                    identity::restore::dir_target(&args.root, path).display()
                );
            }
            Ok(())
        }
    }
}

/// Reads at most one byte more than an identity may have, so a huge file is refused
/// without reading it all.
fn read_identity(path: &Path) -> crate::Result<identity::Identity> {
    let file =
        crate::io::open_regular(path).map_err(|e| Error::io("opening", path.display(), e))?;
    let mut data = Vec::new();
    let limit = u64::try_from(identity::MAX_FILE_LEN)
        .map_err(|_| Error::Usage("identity size limit does not fit u64".into()))?
        + 1;
    file.take(limit)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("reading", path.display(), e))?;
    Ok(identity::parse_bytes(&data)?)
}
