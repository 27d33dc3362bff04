//! The `reprov` binary: the command-line tool (and, as PID 1, the recovery init).

fn main() -> std::process::ExitCode {
    reprov::cli::main()
}
