//! `cargo xtask`: build, run and test Slipway. See `cargo xtask help` and README.md.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    xtask::procs::install_signal_handler();
    xtask::procs::install_panic_cleanup();
    match xtask::cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => xtask::commands::execute(command),
        // Usage errors name the option and value (exit 2); `--help` and `help` print (exit 0).
        Err(error) => {
            let _ = error.print();
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
        }
    }
}
