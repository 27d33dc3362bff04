//! `reprov key generate`: a signing key pair, in minisign's formats.

use argh::FromArgs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::trust;
use crate::Error;

/// Make and manage the keys that sign images.
#[derive(FromArgs)]
#[argh(subcommand, name = "key")]
pub struct KeyCommand {
    #[argh(subcommand)]
    verb: Verb,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Verb {
    Generate(Generate),
}

/// Make a key pair: NAME.key (secret, mode 600; keep it off the appliances) and NAME.pub
/// (install it on the appliances: `install-system --trust NAME.pub`, /etc/reprov/keys/).
/// Both are minisign's formats: the stock `minisign` tool signs with NAME.key and
/// checks with NAME.pub.
#[derive(FromArgs)]
#[argh(subcommand, name = "generate")]
struct Generate {
    /// where to write: NAME.key and NAME.pub (neither may exist)
    #[argh(option)]
    out: PathBuf,
    /// encrypt the secret key with the password on this file's first line (mode 600);
    /// without, the secret key is stored unencrypted, as `minisign -G -W` does
    #[argh(option)]
    password_file: Option<PathBuf>,
}

impl KeyCommand {
    pub fn run(self) -> crate::Result<()> {
        match self.verb {
            Verb::Generate(g) => generate(g),
        }
    }
}

fn with_extension(path: &Path, extension: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

fn generate(g: Generate) -> crate::Result<()> {
    let password = g
        .password_file
        .as_deref()
        .map(crate::transfer::read_password_file)
        .transpose()?
        .map(|secret| secret.expose().to_string());
    let (secret_path, public_path) = (with_extension(&g.out, "key"), with_extension(&g.out, "pub"));
    for path in [&secret_path, &public_path] {
        if path.exists() {
            return Err(Error::Usage(format!(
                "key generate: {} exists; a key is never overwritten (choose another --out)",
                path.display()
            )));
        }
    }
    let pair = trust::generate(password)?;
    write_new(&secret_path, &pair.secret, 0o600)?;
    write_new(&public_path, &pair.public, 0o644)?;
    println!(
        "key {}: secret key {} (keep it safe), public key {}",
        pair.key_id,
        secret_path.display(),
        public_path.display()
    );
    Ok(())
}

/// Writes a file that must not exist yet, durably, with `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> crate::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("creating", path.display(), e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", path.display(), e))
}
