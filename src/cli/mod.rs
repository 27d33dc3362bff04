//! The command line: one file per verb group, each a thin layer over the library.

mod job;
// Not `mod log`: that would hide the log crate in this file.
#[path = "log.rs"]
mod step_log;

use argh::FromArgs;
use std::process::ExitCode;

mod fleet;
mod identity;
pub mod image;
mod install;
mod key;
mod layout;
mod schedule;
mod transfer;
pub use crate::disk::open_disk;

/// reprov: appliance servers that re-provision themselves.
#[derive(FromArgs)]
struct Top {
    /// log debug messages too
    #[argh(switch, short = 'v')]
    verbose: bool,
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Version(Version),
    InstallSystem(install::InstallSystem),
    Image(image::ImageCommand),
    Key(key::KeyCommand),
    Layout(layout::Layout),
    Job(job::JobArgs),
    Log(step_log::LogArgs),
    Identity(identity::IdentityCmd),
    Fetch(transfer::Fetch),
    Upload(transfer::Upload),
    Schedule(schedule::ScheduleArgs),
    Agent(fleet::Agent),
    AfterBoot(fleet::AfterBoot),
    Fleet(fleet::FleetArgs),
    InstallAgent(fleet::InstallAgent),
}

/// Print the version of reprov.
#[derive(FromArgs)]
#[argh(subcommand, name = "version")]
struct Version {}

/// Runs the command line and turns an error into a message and a non-zero exit.
pub fn main() -> ExitCode {
    let top: Top = argh::from_env();
    init_logging(top.verbose);
    let result: crate::Result<()> = match top.command {
        Command::Version(_) => {
            println!("reprov {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::InstallSystem(args) => args.run(),
        Command::Image(command) => command.run(),
        Command::Key(command) => command.run(),
        Command::Layout(args) => layout::run(args),
        Command::Job(args) => job::run(args),
        Command::Log(args) => step_log::run(args),
        Command::Identity(cmd) => identity::run(cmd),
        Command::Fetch(args) => transfer::fetch(args),
        Command::Upload(args) => transfer::upload(args),
        Command::Schedule(args) => schedule::run(args),
        Command::Agent(args) => fleet::agent(args),
        Command::AfterBoot(args) => fleet::after_boot(args),
        Command::Fleet(args) => fleet::fleet(args),
        Command::InstallAgent(args) => fleet::install_agent(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reprov: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The keys images must be signed by: these `.pub` files when given, else every `.pub`
/// in `dir` (default [`crate::trust::KEYS_DIR`]).
fn trusted_keys(
    dir: Option<&std::path::Path>,
    files: &[std::path::PathBuf],
) -> crate::Result<crate::trust::Keys> {
    use crate::trust::{Keys, KEYS_DIR};
    Ok(match (dir, files) {
        (None, []) => Keys::load_dir(std::path::Path::new(KEYS_DIR))?,
        // Asked for by name, a directory that is not there is a mistake, not "no keys".
        (Some(dir), []) if !dir.is_dir() => {
            return Err(crate::Error::Usage(format!(
                "--keys {}: no such directory",
                dir.display()
            )))
        }
        (Some(dir), []) => Keys::load_dir(dir)?,
        (None, files) => Keys::load_files(files)?,
        (Some(_), _) => {
            return Err(crate::Error::Usage(
                "give trusted keys as --keys DIR or as --key FILE, not both".into(),
            ))
        }
    })
}

/// A secret key (a minisign `.key` file) to sign with, and its password from a file.
fn signing_key(
    key: &std::path::Path,
    password_file: Option<&std::path::Path>,
) -> crate::Result<crate::trust::SigningKey> {
    let secret = crate::io::read_regular_to_string(key, 4096)
        .map_err(|e| crate::Error::io("reading secret key", key.display(), e))?;
    let password = password_file
        .map(crate::transfer::read_password_file)
        .transpose()?
        .map(|secret| secret.expose().to_string());
    Ok(crate::trust::SigningKey::new(secret, password))
}

/// Log lines go to stderr, so stdout stays for the output a script reads.
fn init_logging(verbose: bool) {
    let level = if verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let config = simplelog::ConfigBuilder::new()
        .set_time_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .build();
    // A second init (tests calling main twice) keeps the first logger; nothing to report.
    let _ = simplelog::TermLogger::init(
        level,
        config,
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
}
