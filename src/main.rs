//! The `reprov` binary: the command-line tool and, as PID 1 (or `/init`), the recovery init.

fn main() -> std::process::ExitCode {
    let argv0 = std::env::args_os().next();
    if reprov::recovery::is_init(std::process::id(), argv0.as_deref()) {
        reprov::recovery::main()
    }
    reprov::cli::main()
}
