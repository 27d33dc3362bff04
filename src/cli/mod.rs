//! The command line: one file per verb group, each a thin layer over the library.

mod job;
// Not `mod log`: that would hide the log crate in this file.
#[path = "log.rs"]
mod step_log;

use argh::FromArgs;
use std::process::ExitCode;

mod identity;
pub mod image;
mod install;
mod layout;
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
    Layout(layout::Layout),
    Job(job::JobArgs),
    Log(step_log::LogArgs),
    Identity(identity::IdentityCmd),
    Fetch(transfer::Fetch),
    Upload(transfer::Upload),
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
        Command::Layout(args) => layout::run(args),
        Command::Job(args) => job::run(args),
        Command::Log(args) => step_log::run(args),
        Command::Identity(cmd) => identity::run(cmd),
        Command::Fetch(args) => transfer::fetch(args),
        Command::Upload(args) => transfer::upload(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reprov: error: {error}");
            ExitCode::FAILURE
        }
    }
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
