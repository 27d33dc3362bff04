//! `reprov fetch` and `reprov upload`: move image files to and from the server group's
//! store by hand (operators, tests). Progress goes to stderr, the result line to stdout.

use crate::transfer::{self, DirPlace, Options, Progress, Source, StoreConfig};
use crate::Error;
use argh::FromArgs;
use std::path::{Path, PathBuf};

/// Fetch a file over FTP or HTTP, resuming a partial download left by an earlier run
/// (FILE.part); FILE appears only once it is whole. Over HTTP(S), an image some of whose
/// chunks the images beside FILE already hold is fetched by what is new: its manifest
/// and the other chunks (the file is the same byte for byte).
#[derive(FromArgs)]
#[argh(subcommand, name = "fetch")]
pub struct Fetch {
    /// an ftp(s):// or http(s):// URL, or a file name in the store's directory
    #[argh(positional)]
    source: String,
    /// where to put the file
    #[argh(option)]
    out: PathBuf,
    /// the store config (default /etc/reprov/store.toml, when it exists); its login is
    /// used for URLs on the store's server
    #[argh(option)]
    config: Option<PathBuf>,
}

/// Upload a file to the server group's store (FTP: to NAME.part, then renamed).
#[derive(FromArgs)]
#[argh(subcommand, name = "upload")]
pub struct Upload {
    /// the file to upload
    #[argh(positional)]
    file: PathBuf,
    /// the store config (default /etc/reprov/store.toml)
    #[argh(option)]
    config: Option<PathBuf>,
    /// the name on the store (default: the file's name)
    #[argh(option, long = "as")]
    name: Option<String>,
}

/// The store config named, or the default one when it exists.
fn store_config(path: Option<&Path>) -> crate::Result<Option<StoreConfig>> {
    match path {
        Some(path) => Ok(Some(StoreConfig::read(path)?)),
        None if Path::new(transfer::DEFAULT_PATH).exists() => {
            Ok(Some(StoreConfig::read(Path::new(transfer::DEFAULT_PATH))?))
        }
        None => Ok(None),
    }
}

pub fn fetch(args: Fetch) -> crate::Result<()> {
    let source = match (
        store_config(args.config.as_deref())?,
        args.source.contains("://"),
    ) {
        (Some(config), _) => config.source(&args.source)?,
        (None, true) => Source::anonymous(&args.source)?,
        (None, false) => {
            return Err(Error::Usage(format!(
                "{} is not a URL, and there is no store config ({}) to find it in",
                args.source,
                transfer::DEFAULT_PATH
            )))
        }
    };
    let name = args
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("--out {} names no file", args.out.display())))?;
    let dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut report = reporter("fetched");
    let size = transfer::download(
        &source,
        &DirPlace::new(dir),
        name,
        &Options::default(),
        &mut report,
    )?;
    println!("{} -> {} ({size} bytes)", source.url, args.out.display());
    Ok(())
}

pub fn upload(args: Upload) -> crate::Result<()> {
    let config = store_config(args.config.as_deref())?.ok_or_else(|| {
        Error::Usage(format!(
            "no store config: give --config or write {}",
            transfer::DEFAULT_PATH
        ))
    })?;
    let name = match args.name {
        Some(name) => name,
        None => args
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Usage(format!("{} names no file", args.file.display())))?,
    };
    let mut file = crate::io::open_regular(&args.file)
        .map_err(|e| Error::io("opening", args.file.display(), e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("reading the size of", args.file.display(), e))?
        .len();
    let mut report = reporter("uploaded");
    let url = transfer::upload(
        &mut file,
        size,
        &name,
        &config,
        &Options::default(),
        &mut report,
    )?;
    println!("{} -> {url} ({size} bytes)", args.file.display());
    Ok(())
}

/// A progress callback printing a line at every tenth of the file (or every 64 MiB when
/// the size is unknown).
fn reporter(verb: &'static str) -> impl FnMut(Progress) {
    let mut last_step = None;
    move |Progress { done, total }| {
        let step = match total {
            Some(total) if total > 0 => done.saturating_mul(10) / total,
            _ => done >> 26,
        };
        if last_step != Some(step) {
            last_step = Some(step);
            match total {
                Some(total) => eprintln!(
                    "{verb} {} of {} ({}%)",
                    crate::units::format_size(done),
                    crate::units::format_size(total),
                    done.saturating_mul(100) / total.max(1)
                ),
                None => eprintln!("{verb} {}", crate::units::format_size(done)),
            }
        }
    }
}
