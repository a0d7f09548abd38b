//! The `cargo xtask` commands: glue between the CLI and the library. Each returns the process
//! exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::builder::build_bundle;
use crate::cli::{Command, RunArgs, USAGE};
use crate::runner::{self, RunConfig, Tpm};
use crate::setup::ensure_environment;
use crate::workspace::{Workspace, cargo};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("xtask: error: {message}");
    ExitCode::FAILURE
}

/// Runs a parsed command.
pub fn execute(command: Command) -> ExitCode {
    if command == Command::Help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let ws = match Workspace::locate() {
        Ok(ws) => ws,
        Err(e) => return fail(e),
    };
    match command {
        Command::Help => unreachable!("handled above"),
        Command::Setup => match ensure_environment(&ws.root) {
            Ok(()) => {
                println!("xtask: environment ready");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Build { bundle } => {
            if let Err(e) = ensure_environment(&ws.root) {
                return fail(e);
            }
            match build_bundle(&ws, &bundle) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Run(args) => run_command(&ws, args),
        Command::Test => test_command(&ws),
    }
}

fn run_command(ws: &Workspace, args: RunArgs) -> ExitCode {
    if let Err(e) = ensure_environment(&ws.root) {
        return fail(e);
    }
    let bundle = match build_bundle(ws, &args.bundle) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let defaults = &bundle.manifest.run;
    let mut config = RunConfig::new(
        &bundle.iso,
        bundle
            .output_dir
            .join(format!("serial-{}.log", args.firmware.label())),
    );
    config.firmware = args.firmware;
    config.tpm = args.tpm;
    config.timeout = args
        .timeout
        .or(defaults.timeout_seconds.map(Duration::from_secs))
        .unwrap_or(runner::DEFAULT_TIMEOUT);
    config.smp = args.smp.or(defaults.smp).unwrap_or(runner::DEFAULT_SMP);
    config.memory_mib = args
        .memory_mib
        .or(defaults.memory_mib)
        .unwrap_or(runner::DEFAULT_MEMORY_MIB);
    config.extra_qemu_args = args.extra_qemu_args;
    println!(
        "xtask: booting {} under {}{} ({} CPUs, {} MiB, timeout {} s)",
        bundle.iso.display(),
        match config.firmware {
            runner::Firmware::Bios => "SeaBIOS",
            runner::Firmware::Uefi => "OVMF",
        },
        if config.tpm == Tpm::Swtpm {
            " with swtpm"
        } else {
            " without TPM"
        },
        config.smp,
        config.memory_mib,
        config.timeout.as_secs()
    );
    match runner::run(&config) {
        Ok(outcome) => {
            print!("{}", outcome.report());
            if outcome.verdict.is_success() {
                ExitCode::SUCCESS
            } else {
                if !outcome.qemu_stderr.trim().is_empty() {
                    eprintln!("QEMU's error output:\n{}", outcome.qemu_stderr.trim_end());
                }
                fail(format!("run failed: {}", outcome.verdict))
            }
        }
        Err(e) => fail(e),
    }
}

fn test_command(ws: &Workspace) -> ExitCode {
    let started = Instant::now();
    println!("xtask test: [1/3] environment (rustup target, Debian packages)");
    if let Err(e) = ensure_environment(&ws.root) {
        return fail(e);
    }
    let stages: [(&str, &[&str]); 2] = [
        (
            "[2/3] host unit tests (cargo test, default members)",
            &["test"],
        ),
        (
            "[3/3] QEMU integration tests (cargo test -p slipway-integration-tests)",
            &[
                "test",
                "-p",
                "slipway-integration-tests",
                "--",
                "--test-threads=2",
            ],
        ),
    ];
    let mut failed = Vec::new();
    for (label, args) in stages {
        println!("xtask test: {label}");
        let stage_start = Instant::now();
        let ok = cargo()
            .current_dir(&ws.root)
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or_else(|e| {
                eprintln!("xtask: cannot run cargo: {e}");
                false
            });
        println!(
            "xtask test: {label}: {} in {:.1} s",
            if ok { "passed" } else { "FAILED" },
            stage_start.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(label);
        }
    }
    println!("xtask test: total {:.1} s", started.elapsed().as_secs_f64());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        fail(format!("failed stages: {}", failed.join("; ")))
    }
}
