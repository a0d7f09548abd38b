//! The `cargo xtask` commands: glue between the CLI and the library. Each returns the process
//! exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::builder::build_bundle;
use crate::cli::{Command, RunArgs};
use crate::runner::{self, RunConfig, Tpm};
use crate::setup::ensure_environment;
use crate::verify;
use crate::workspace::{Workspace, cargo};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("xtask: error: {message}");
    ExitCode::FAILURE
}

/// Runs a parsed command.
pub fn execute(command: Command) -> ExitCode {
    if command == Command::Help {
        print!("{}", crate::cli::help());
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
        Command::TxtLayout => {
            print!("{}", crate::txt::layout_report());
            ExitCode::SUCCESS
        }
        Command::Refstate(args) => crate::refstate::refstate_command(&ws, &args),
        Command::Log(args) => crate::logview::log_command(&args),
        Command::Export(args) => crate::fleet::export_command(&args),
        Command::Keylime { args } => crate::keylime::keylime_command(&ws, &args),
        Command::Fuzz(args) => crate::fuzz::fuzz_command(&ws, &args),
        Command::LinuxKernel(args) => crate::linux_kernel::linux_kernel_command(&ws, &args),
        Command::LinuxInitramfs(args) => {
            crate::linux_initramfs::linux_initramfs_command(&ws, &args)
        }
    }
}

fn run_command(ws: &Workspace, args: RunArgs) -> ExitCode {
    if let Err(e) = ensure_environment(&ws.root) {
        return fail(e);
    }
    let variant = args
        .variant
        .unwrap_or(crate::builder::BundleVariant::AsWritten);
    let bundle = match crate::builder::build_bundle_as(ws, &args.bundle, variant) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let defaults = &bundle.manifest.run;
    let mut config = RunConfig::new(
        &bundle.iso,
        bundle.output_dir.join(match args.emulator {
            runner::Emulator::Qemu => format!("serial-{}.log", args.firmware.label()),
            runner::Emulator::Bochs => "serial-bochs.log".to_owned(),
        }),
    );
    config.emulator = args.emulator;
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
    let attests = verify::bundle_attests(&bundle.manifest);
    // The nonce the attest control domain quotes with: the user's, or a fresh random one.
    let (nonce, nonce_source) = match args.nonce {
        Some(nonce) => (nonce, "from --nonce"),
        None => match verify::fresh_nonce() {
            Ok(nonce) => (nonce, "fresh from /dev/urandom"),
            Err(e) => return fail(format!("cannot make a nonce: {e}")),
        },
    };
    config.console_input.push(verify::nonce_input(&nonce));
    // The Linux domains' init offers a shell when its role ends: decline at once, or take it.
    if bundle
        .manifest
        .modules
        .iter()
        .any(|m| m.source == crate::bundle::ModuleSource::LinuxInitramfs)
    {
        config
            .console_input
            .push(crate::linux_initramfs::shell_offer_answer(args.interactive));
        if args.interactive {
            config.interactive = true;
            // An interactive session ends when the user ends it.
            config.timeout = Duration::from_secs(7 * 24 * 3600);
        }
    } else if args.interactive {
        return fail(format!(
            "--interactive: bundle `{}` has no Linux domain with the Slipway initramfs (no shell to keep)",
            bundle.name
        ));
    }
    if config.emulator == runner::Emulator::Bochs {
        println!(
            "xtask: WARNING: bochs has no TPM: this run is UNMEASURED (nothing is extended, nothing \
             can be attested); bundle `{}`'s launch policy decides what starts",
            bundle.name
        );
    }
    println!(
        "xtask: booting {} under {}{} ({} CPUs, {} MiB, timeout {} s)",
        bundle.iso.display(),
        match (config.emulator, config.firmware) {
            (runner::Emulator::Bochs, _) => "bochs (Intel VMX)",
            (_, runner::Firmware::Bios) => "SeaBIOS",
            (_, runner::Firmware::Uefi) => "OVMF",
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
    if attests {
        println!(
            "xtask: nonce {} ({nonce_source}), typed when the attest domain asks for one",
            verify::hex(&nonce)
        );
    }
    let outcome = match runner::run(&config) {
        Ok(outcome) => outcome,
        Err(e) => return fail(e),
    };
    print!("{}", outcome.report());
    if !outcome.verdict.is_success() {
        if !outcome.qemu_stderr.trim().is_empty() {
            eprintln!(
                "{}'s error output:\n{}",
                config.emulator.label(),
                outcome.qemu_stderr.trim_end()
            );
        }
        return fail(format!(
            "run failed: {}",
            match config.emulator {
                runner::Emulator::Qemu => outcome.verdict.to_string(),
                runner::Emulator::Bochs => crate::bochs::describe(&outcome.verdict),
            }
        ));
    }
    let attestation = if !attests {
        Attestation::NotAttesting
    } else if config.tpm == Tpm::None {
        Attestation::NoTpm
    } else if !args.verify {
        Attestation::Skipped
    } else {
        Attestation::Checked(verify::verify_run(&bundle, &outcome, &nonce, VERIFY_BANK))
    };
    let recheck = format!(
        "cargo xtask verify {} --nonce {} --bundle {}{}",
        outcome.serial_log.display(),
        verify::hex(&nonce),
        bundle.name,
        if variant == crate::builder::BundleVariant::TxtSimulated {
            " --launch txt-simulated"
        } else {
            ""
        }
    );
    print!(
        "{}",
        attestation_section(&attestation, &bundle.name, &recheck)
    );
    ExitCode::from(attestation.exit_code())
}

/// The bank `cargo xtask run` requires of a run's quote and log (`verify`'s default).
const VERIFY_BANK: slipway_measure::HashAlg = slipway_measure::HashAlg::Sha256;

/// What `cargo xtask run` concludes about a successful run's attestation.
#[derive(Debug)]
enum Attestation {
    /// The bundle has no attest control domain: no transcript to check.
    NotAttesting,
    /// `--no-tpm`: nothing is measured; the attest domain stops without a TPM page.
    NoTpm,
    /// `--no-verify`.
    Skipped,
    /// `verify`'s checks on the run's transcript.
    Checked(Result<verify::Accepted, verify::Rejection>),
}

impl Attestation {
    /// 0 unless the attestation was checked and rejected: then `verify`'s exit code (2-5).
    fn exit_code(&self) -> u8 {
        match self {
            Attestation::Checked(Err(rejection)) => rejection.exit_code(),
            _ => 0,
        }
    }
}

/// The section `cargo xtask run` prints after the milestone table.
fn attestation_section(attestation: &Attestation, bundle: &str, recheck: &str) -> String {
    let mut out = String::from("\n== attestation (the checks of `cargo xtask verify`) ==\n");
    match attestation {
        Attestation::NotAttesting => out.push_str(&format!(
            "not attested: bundle `{bundle}` has no attest control domain ({})\n",
            verify::ATTEST_PACKAGE
        )),
        Attestation::NoTpm => out.push_str(
            "unmeasured launch: no TPM attached (--no-tpm, or bochs): nothing is measured, \
             nothing to verify; the launch policy's decision is printed above\n",
        ),
        Attestation::Skipped => out.push_str(&format!(
            "not verified (--no-verify); check with:\n  {recheck}\n"
        )),
        Attestation::Checked(Ok(accepted)) => {
            out.push_str(&verify::report(accepted, VERIFY_BANK));
            out.push_str(&format!("same check by hand: {recheck}\n"));
        }
        Attestation::Checked(Err(rejection)) => {
            let label = match rejection {
                verify::Rejection::Unmeasured(_) => "UNMEASURED LAUNCH",
                _ => "REJECTED",
            };
            out.push_str(&format!(
                "verify: {label}: {rejection}\nsame check by hand: {recheck}\nxtask: the run \
                 fails with verify's exit code {}\n",
                rejection.exit_code()
            ));
        }
    }
    out
}

fn test_command(ws: &Workspace) -> ExitCode {
    let started = Instant::now();
    println!("xtask test: [1/6] environment (rustup target, Debian packages)");
    if let Err(e) = ensure_environment(&ws.root) {
        return fail(e);
    }
    let mut stages: Vec<(String, Vec<String>)> = vec![(
        // The workspace lints (clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn, ...)
        // only bite when clippy runs; every warning fails the stage.
        "[2/6] lints: host crates (cargo clippy --all-targets -D warnings)".into(),
        args(&["clippy", "--all-targets", "--", "-D", "warnings"]),
    )];
    let freestanding = match ws.freestanding_packages() {
        Ok(groups) => groups,
        Err(e) => return fail(e),
    };
    for (target, packages) in freestanding {
        let mut clippy = args(&["clippy", "--release", "--target", target]);
        if let Some(config) = crate::workspace::target_rustflags_config(target) {
            clippy.extend(args(&["--config", &config]));
        }
        for package in &packages {
            clippy.extend(args(&["-p", package]));
        }
        clippy.extend(args(&["--", "-D", "warnings"]));
        stages.push((
            format!(
                "[2/6] lints: {} for {target} (cargo clippy -D warnings)",
                packages.join(", ")
            ),
            clippy,
        ));
    }
    stages.extend([
        (
            // --no-fail-fast: one failing crate must not hide the results of the others.
            "[3/6] host unit tests (cargo test --no-fail-fast, default members)".into(),
            args(&["test", "--no-fail-fast"]),
        ),
        (
            // Guest images are not default members (their binaries are freestanding); their
            // pure libraries are host-tested here.
            "[4/6] guest libraries' host tests (cargo test -p slipway-guest-attest --lib)".into(),
            args(&["test", "-p", "slipway-guest-attest", "--lib"]),
        ),
        (FUZZ_SMOKE.into(), Vec::new()),
        (
            "[6/6] QEMU integration tests (cargo test -p slipway-integration-tests)".into(),
            args(&[
                "test",
                "--no-fail-fast",
                "-p",
                "slipway-integration-tests",
                "--",
                "--test-threads=2",
            ]),
        ),
    ]);
    let mut failed = Vec::new();
    let mut totals = TestCounts::default();
    for (label, stage_args) in &stages {
        println!("xtask test: {label}");
        let stage_start = Instant::now();
        let stage_args: Vec<&str> = stage_args.iter().map(String::as_str).collect();
        let (ok, counts) = if label == FUZZ_SMOKE {
            let ok = crate::fuzz::run_all(
                ws,
                &crate::fuzz::TARGETS,
                Some(crate::fuzz::SMOKE_SECONDS),
                None,
                false,
            );
            let counts = TestCounts {
                passed: if ok { 1 } else { 0 },
                failed: if ok { 0 } else { 1 },
                ignored: 0,
            };
            (ok, counts)
        } else {
            run_cargo_test(ws, &stage_args)
        };
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
            failed.push(label.as_str());
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

/// The fuzz smoke stage: every target briefly (`cargo xtask fuzz --seconds 3`), built with the
/// stable toolchain (no nightly, no cargo-fuzz).
const FUZZ_SMOKE: &str =
    "[5/6] fuzz smoke: every target 3 s under libFuzzer (cargo xtask fuzz --seconds 3)";

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
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
    fn only_a_rejected_attestation_changes_the_exit_code() {
        let recheck = "cargo xtask verify serial.log --nonce 00 --bundle demo";
        for quiet in [
            Attestation::NotAttesting,
            Attestation::NoTpm,
            Attestation::Skipped,
        ] {
            assert_eq!(quiet.exit_code(), 0, "{quiet:?}");
        }
        let skipped = attestation_section(&Attestation::Skipped, "demo", recheck);
        assert!(skipped.contains("--no-verify") && skipped.contains(recheck));
        assert!(
            attestation_section(&Attestation::NoTpm, "demo", recheck).contains("unmeasured launch")
        );
        let unmeasured = Attestation::Checked(Err(verify::Rejection::Unmeasured("none".into())));
        assert_eq!(unmeasured.exit_code(), 4);
        let text = attestation_section(&unmeasured, "demo", recheck);
        assert!(text.contains("verify: UNMEASURED LAUNCH"), "{text}");
        assert!(text.contains("exit code 4"), "{text}");
        let differs = Attestation::Checked(Err(verify::Rejection::Mismatch(
            "first differing event #7".into(),
        )));
        assert_eq!(differs.exit_code(), 5);
        let text = attestation_section(&differs, "demo", recheck);
        assert!(
            text.contains("verify: REJECTED") && text.contains("#7"),
            "{text}"
        );
        let accepted = Attestation::Checked(Ok(verify::Accepted {
            quoted_banks: vec![slipway_measure::HashAlg::Sha256],
            events: 15,
            pcrs: vec![(17, "ab".into())],
            launch: slipway_measure::events::LaunchKind::TxtSimulated,
        }));
        assert_eq!(accepted.exit_code(), 0);
        let text = attestation_section(&accepted, "demo", recheck);
        assert!(
            text.contains("verify: ACCEPTED") && text.contains("PCR17 sha256 ab"),
            "{text}"
        );
        assert!(
            text.contains("SIMULATED Intel TXT") && text.contains("NOT a hardware launch"),
            "{text}"
        );
    }

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
