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
        Command::Predict(args) => crate::predict::predict_command(&ws, &args),
        Command::Verify(args) => crate::verify::verify_command(&ws, &args),
        Command::Bench(args) => crate::bench::bench_command(&ws, args),
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
    if let Some(nonce) = &args.nonce {
        config.console_input.push(crate::runner::ConsoleInput {
            after_line_containing: "attest: nonce?".into(),
            bytes: format!("{nonce}\r").into_bytes(),
        });
    }
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
    println!("xtask test: [1/4] environment (rustup target, Debian packages)");
    if let Err(e) = ensure_environment(&ws.root) {
        return fail(e);
    }
    let stages: [(&str, &[&str]); 3] = [
        (
            "[2/4] host unit tests (cargo test, default members)",
            &["test"],
        ),
        (
            // Guest images are not default members (their binaries are freestanding); their
            // pure libraries are host-tested here.
            "[3/4] guest libraries' host tests (cargo test -p slipway-guest-attest --lib)",
            &["test", "-p", "slipway-guest-attest", "--lib"],
        ),
        (
            "[4/4] QEMU integration tests (cargo test -p slipway-integration-tests)",
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
    let mut totals = TestCounts::default();
    for (label, args) in stages {
        println!("xtask test: {label}");
        let stage_start = Instant::now();
        let (ok, counts) = run_cargo_test(ws, args);
        totals.add(&counts);
        println!(
            "xtask test: {label}: {} ({} passed, {} failed, {} ignored) in {:.1} s",
            if ok { "passed" } else { "FAILED" },
            counts.passed,
            counts.failed,
            counts.ignored,
            stage_start.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(label);
        }
    }
    println!("xtask test: total {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        fail(format!("failed stages: {}", failed.join("; ")))
    }
}

/// Test counts summed over `cargo test`'s `test result:` lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl TestCounts {
    fn add(&mut self, other: &TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Reads a libtest summary line:
    /// `test result: ok. 31 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; ...`.
    pub fn parse_line(line: &str) -> Option<TestCounts> {
        let rest = line.trim().strip_prefix("test result: ")?;
        let mut counts = TestCounts::default();
        let mut seen = false;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => counts.passed = n,
                "failed" => counts.failed = n,
                "ignored" => counts.ignored = n,
                _ => continue,
            }
            seen = true;
        }
        seen.then_some(counts)
    }
}

/// Runs `cargo <args>` in the workspace, passing its output through and counting test results.
fn run_cargo_test(ws: &Workspace, args: &[&str]) -> (bool, TestCounts) {
    use std::io::BufRead;
    let child = cargo()
        .current_dir(&ws.root)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            return (false, TestCounts::default());
        }
    };
    let mut counts = TestCounts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            if let Some(c) = TestCounts::parse_line(&line) {
                counts.add(&c);
            }
        }
    }
    let ok = child.wait().map(|s| s.success()).unwrap_or(false);
    (ok, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries_are_counted() {
        assert_eq!(
            TestCounts::parse_line(
                "test result: ok. 31 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.01s"
            ),
            Some(TestCounts {
                passed: 31,
                failed: 0,
                ignored: 2
            })
        );
        assert_eq!(
            TestCounts::parse_line(
                "test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 21.36s"
            ),
            Some(TestCounts {
                passed: 4,
                failed: 1,
                ignored: 0
            })
        );
        assert_eq!(TestCounts::parse_line("running 5 tests"), None);
        assert_eq!(TestCounts::parse_line("test foo ... ok"), None);
    }
}
