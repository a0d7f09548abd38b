//! `cargo xtask`: build, run and test Slipway. See `cargo xtask help` and README.md.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    xtask::procs::install_signal_handler();
    xtask::procs::install_panic_cleanup();
    match xtask::cli::parse(std::env::args().skip(1)) {
        Ok(command) => xtask::commands::execute(command),
        Err(message) => {
            eprintln!("xtask: {message}\n\n{}", xtask::cli::USAGE);
            ExitCode::from(2)
        }
    }
}
