//! Every subcommand's documented options parse to the expected values; bad ones are usage
//! errors (exit 2) naming the option and the value.

use std::path::PathBuf;

use slipway_measure::{BankSet, HashAlg};

use super::*;
use crate::bench::BenchArgs;
use crate::fleet::ExportArgs;
use crate::fuzz::FuzzArgs;
use crate::linux_kernel::LinuxKernelArgs;
use crate::logview::LogArgs;
use crate::predict::{PredictArgs, PredictedLaunch, parse_banks};
use crate::refstate::{LAUNCHES, RefstateArgs};
use crate::verify::VerifyArgs;

fn p(args: &[&str]) -> Result<Command, clap::Error> {
    parse(args.iter().copied())
}

fn ok(args: &[&str]) -> Command {
    p(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The usage error's text; asserts it is one (exit 2, not help).
fn err(args: &[&str]) -> String {
    let error = p(args).expect_err(&format!("{args:?} parsed"));
    assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
    error.to_string()
}

fn run(args: &[&str]) -> RunArgs {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    match ok(&all) {
        Command::Run(run) => run,
        other => panic!("{other:?}"),
    }
}

fn banks(text: &str) -> BankSet {
    parse_banks(text).unwrap()
}

#[test]
fn the_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn no_command_and_help_print_the_help() {
    assert_eq!(p(&[]).unwrap(), Command::Help);
    for args in [
        &["help"][..],
        &["--help"],
        &["-h"],
        &["help", "verify"],
        &["verify", "--help"],
        &["run", "-h"],
        &["keylime", "--help"],
    ] {
        let error = p(args).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{args:?}");
        assert_eq!(error.exit_code(), 0, "{args:?}");
    }
    // Every subcommand documents itself, and the top-level help lists them all.
    let help = help();
    for subcommand in Cli::command().get_subcommands() {
        assert!(
            subcommand.get_about().is_some(),
            "{}",
            subcommand.get_name()
        );
        assert!(
            help.contains(subcommand.get_name()),
            "{}",
            subcommand.get_name()
        );
    }
    let run_help = p(&["run", "--help"]).unwrap_err().to_string();
    for option in [
        "--emulator",
        "--timeout",
        "--uefi",
        "--no-tpm",
        "--smp",
        "--memory",
        "--nonce",
        "--no-verify",
        "--launch",
        "QEMU ARGS",
    ] {
        assert!(run_help.contains(option), "{option}");
    }
}

#[test]
fn build_test_setup_and_txt_layout() {
    assert_eq!(
        ok(&["build"]),
        Command::Build {
            bundle: "demo".into()
        }
    );
    assert_eq!(
        ok(&["build", "minimal"]),
        Command::Build {
            bundle: "minimal".into()
        }
    );
    assert!(err(&["build", "a", "b"]).contains("'b'"));
    assert!(err(&["build", "--fast"]).contains("--fast"));
    assert_eq!(ok(&["test"]), Command::Test);
    assert_eq!(ok(&["setup"]), Command::Setup);
    assert_eq!(ok(&["txt-layout"]), Command::TxtLayout);
    assert!(err(&["test", "x"]).contains("'x'"));
    assert!(err(&["txt-layout", "x"]).contains("'x'"));
    assert!(err(&["frobnicate"]).contains("frobnicate"));
}

#[test]
fn run_defaults() {
    assert_eq!(
        run(&[]),
        RunArgs {
            bundle: "demo".into(),
            emulator: Emulator::Qemu,
            timeout: None,
            firmware: Firmware::Bios,
            tpm: Tpm::Swtpm,
            smp: None,
            memory_mib: None,
            nonce: None,
            interactive: false,
            verify: true,
            variant: None,
            extra_qemu_args: Vec::new(),
        }
    );
}

#[test]
fn run_options() {
    assert_eq!(
        run(&[
            "--uefi",
            "minimal",
            "--timeout",
            "90",
            "--no-tpm",
            "--smp",
            "1",
            "--memory",
            "256",
            "--nonce",
            "00ff",
            "--no-verify",
            "--launch",
            "txt-simulated",
            "--",
            "-d",
            "int",
        ]),
        RunArgs {
            bundle: "minimal".into(),
            emulator: Emulator::Qemu,
            timeout: Some(Duration::from_secs(90)),
            firmware: Firmware::Uefi,
            tpm: Tpm::None,
            smp: Some(1),
            memory_mib: Some(256),
            nonce: Some(vec![0x00, 0xff]),
            interactive: false,
            verify: false,
            variant: Some(BundleVariant::TxtSimulated),
            extra_qemu_args: vec!["-d".into(), "int".into()],
        }
    );
    // `--opt=value` works too, and QEMU's arguments after `--` may look like ours.
    let r = run(&["--timeout=5", "--", "--uefi", "--no-tpm"]);
    assert_eq!(r.timeout, Some(Duration::from_secs(5)));
    assert_eq!((r.firmware, r.tpm), (Firmware::Bios, Tpm::Swtpm));
    assert_eq!(r.extra_qemu_args, ["--uefi", "--no-tpm"]);
}

#[test]
fn run_mistakes_are_named() {
    for (args, named) in [
        (&["--timeout"][..], "--timeout"),
        (&["--timeout", "x"], "'x'"),
        (&["--timeout", "0"], "at least 1"),
        (&["--smp", "0"], "--smp"),
        (&["--smp", "two"], "'two'"),
        (&["--smp", "-2"], "--smp"),
        (&["--timeout", "-5"], "--timeout"),
        (&["--memory", "-1"], "--memory"),
        (&["--nonce", "xyz"], "--nonce"),
        (&["--nonce", "xyz"], "`xyz` is not"),
        (&["--nonce"], "--nonce"),
        (&["--launch", "txt"], "`txt`"),
        (&["--launch", "txt"], "--launch"),
        (&["--launch"], "--launch"),
        (&["--emulator", "vbox"], "'vbox'"),
        (&["--emulator"], "--emulator"),
        (&["--fast"], "--fast"),
        (&["a", "b"], "'b'"),
        (&["--uefi", "--uefi"], "--uefi"),
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        let message = err(&all);
        assert!(message.contains(named), "{args:?}: {message}");
    }
}

#[test]
fn bochs_runs_are_bios_without_tpm() {
    let r = run(&["demo-vmx", "--emulator", "bochs"]);
    assert_eq!(
        (r.bundle.as_str(), r.emulator, r.firmware, r.tpm),
        ("demo-vmx", Emulator::Bochs, Firmware::Bios, Tpm::None)
    );
    assert_eq!(run(&["--emulator", "bochs", "--no-tpm"]).tpm, Tpm::None);
    assert!(err(&["run", "--emulator", "bochs", "--uefi"]).contains("BIOS"));
    assert!(err(&["run", "--uefi", "--emulator", "bochs"]).contains("BIOS"));
    assert!(err(&["run", "--emulator", "bochs", "--", "-s"]).contains("QEMU arguments"));
}

#[test]
fn predict_options() {
    assert_eq!(
        ok(&["predict"]),
        Command::Predict(PredictArgs {
            bundle: "demo".into(),
            banks: None,
            out: None,
            launch: PredictedLaunch::Emulated,
            sinit: None,
            boot_state: None,
            boot_state_log: None,
        })
    );
    assert_eq!(
        ok(&[
            "predict",
            "minimal",
            "--banks",
            "sha256,sha1",
            "--out",
            "x.log",
            "--launch",
            "txt",
            "--sinit",
            "acm.bin",
            "--boot-state",
            "counted:2:a",
        ]),
        Command::Predict(PredictArgs {
            bundle: "minimal".into(),
            banks: Some(banks("sha256,sha1")),
            out: Some(PathBuf::from("x.log")),
            launch: PredictedLaunch::Txt,
            sinit: Some(PathBuf::from("acm.bin")),
            boot_state: Some("counted:2:a".into()),
            boot_state_log: None,
        })
    );
    let Command::Predict(args) = ok(&["predict", "--boot-state-from-log", "run.log"]) else {
        panic!()
    };
    assert_eq!(args.boot_state_log, Some(PathBuf::from("run.log")));
    assert!(err(&["predict", "--boot-state"]).contains("--boot-state"));
    assert!(
        err(&[
            "predict",
            "--boot-state",
            "counted:1:a",
            "--boot-state-from-log",
            "l"
        ])
        .contains("--boot-state")
    );
    for launch in PredictedLaunch::ALL {
        let Command::Predict(args) = ok(&["predict", "--launch", launch.name()]) else {
            panic!()
        };
        assert_eq!(args.launch, launch);
    }
    let sev = err(&["predict", "--launch", "sev"]);
    assert!(sev.contains("'sev'") && sev.contains("--launch") && sev.contains("txt-simulated"));
    // The bank list is predict's own parser's: its message, naming the option.
    let md5 = err(&["predict", "--banks", "sha256,md5"]);
    assert!(md5.contains("--banks") && md5.contains("md5"), "{md5}");
    assert!(err(&["predict", "--banks", ""]).contains("--banks"));
    assert!(err(&["predict", "a", "b"]).contains("'b'"));
    assert!(err(&["predict", "--sinit", "acm.bin"]).contains("--launch txt"));
    assert!(err(&["predict", "--launch", "skinit", "--sinit", "a"]).contains("--sinit"));
}

#[test]
fn verify_options() {
    assert_eq!(
        ok(&["verify", "t.log"]),
        Command::Verify(VerifyArgs {
            transcript: PathBuf::from("t.log"),
            nonce: None,
            bank: HashAlg::Sha256,
            bundle: None,
            expected_log: None,
            variant: None,
        })
    );
    assert_eq!(
        ok(&[
            "verify",
            "t.log",
            "--nonce",
            "0x00ff",
            "--bank",
            "sha384",
            "--bundle",
            "minimal",
            "--launch",
            "txt-simulated",
        ]),
        Command::Verify(VerifyArgs {
            transcript: PathBuf::from("t.log"),
            nonce: Some(vec![0x00, 0xff]),
            bank: HashAlg::Sha384,
            bundle: Some("minimal".into()),
            expected_log: None,
            variant: Some(BundleVariant::TxtSimulated),
        })
    );
    let Command::Verify(with_log) = ok(&["verify", "t", "--expected-log", "e.log"]) else {
        panic!()
    };
    assert_eq!(with_log.expected_log, Some(PathBuf::from("e.log")));
    assert!(err(&["verify"]).contains("<TRANSCRIPT>"));
    assert!(err(&["verify", "a", "b"]).contains("'b'"));
    let both = err(&["verify", "t", "--bundle", "a", "--expected-log", "b"]);
    assert!(
        both.contains("--bundle") && both.contains("--expected-log"),
        "{both}"
    );
    let simulated_log = err(&[
        "verify",
        "t",
        "--expected-log",
        "b",
        "--launch",
        "txt-simulated",
    ]);
    assert!(simulated_log.contains("--launch") && simulated_log.contains("--expected-log"));
    assert!(err(&["verify", "t", "--launch", "txt"]).contains("`txt`"));
    assert!(err(&["verify", "t", "--bank", "md5"]).contains("--bank"));
    let nonce = err(&["verify", "t", "--nonce", "abc"]);
    assert!(
        nonce.contains("--nonce") && nonce.contains("`abc`"),
        "{nonce}"
    );
}

#[test]
fn refstate_options() {
    let Command::Refstate(all) = ok(&["refstate"]) else {
        panic!()
    };
    assert_eq!(
        (
            all.bundle.as_str(),
            all.banks,
            all.launches(),
            all.out.as_deref()
        ),
        ("demo", None, &LAUNCHES[..], None)
    );
    assert_eq!(
        ok(&[
            "refstate",
            "minimal",
            "--banks",
            "sha256",
            "--launch",
            "txt,emulated",
            "--out",
            "r.json",
        ]),
        Command::Refstate(RefstateArgs {
            bundle: "minimal".into(),
            banks: Some(banks("sha256")),
            launches: Some(vec![PredictedLaunch::Txt, PredictedLaunch::Emulated]),
            out: Some(PathBuf::from("r.json")),
            boot_state: None,
        })
    );
    let sev = err(&["refstate", "--launch", "emulated,sev"]);
    assert!(sev.contains("--launch") && sev.contains("`sev`"), "{sev}");
    assert!(err(&["refstate", "--launch", ""]).contains("no launch"));
    assert!(err(&["refstate", "--banks", "md5"]).contains("--banks"));
    assert!(err(&["refstate", "a", "b"]).contains("'b'"));
    assert!(err(&["refstate", "--frob"]).contains("--frob"));
}

#[test]
fn log_and_export_options() {
    assert_eq!(
        ok(&["log", "t.log", "--json"]),
        Command::Log(LogArgs {
            file: PathBuf::from("t.log"),
            json: true,
        })
    );
    assert_eq!(
        ok(&["log", "t.log"]),
        Command::Log(LogArgs {
            file: PathBuf::from("t.log"),
            json: false,
        })
    );
    assert!(err(&["log"]).contains("FILE"));
    assert!(err(&["log", "a", "b"]).contains("'b'"));
    assert!(err(&["log", "a", "--yaml"]).contains("--yaml"));
    assert_eq!(
        ok(&["export", "t.log", "--out", "ev"]),
        Command::Export(ExportArgs {
            transcript: PathBuf::from("t.log"),
            out: Some(PathBuf::from("ev")),
        })
    );
    assert_eq!(
        ok(&["export", "t.log"]),
        Command::Export(ExportArgs {
            transcript: PathBuf::from("t.log"),
            out: None,
        })
    );
    assert!(err(&["export"]).contains("<TRANSCRIPT>"));
    assert!(err(&["export", "t", "--out"]).contains("--out"));
}

#[test]
fn linux_kernel_options() {
    assert_eq!(
        ok(&["linux-kernel"]),
        Command::LinuxKernel(LinuxKernelArgs::default())
    );
    assert_eq!(
        ok(&["linux-kernel", "--out", "/tmp/k"]),
        Command::LinuxKernel(LinuxKernelArgs {
            out: Some(PathBuf::from("/tmp/k"))
        })
    );
    assert!(err(&["linux-kernel", "--out"]).contains("--out"));
    assert!(err(&["linux-kernel", "--version"]).contains("--version"));
}

#[test]
fn keylime_passes_its_arguments_on() {
    assert_eq!(ok(&["keylime"]), Command::Keylime { args: Vec::new() });
    let args = ["check", "--refstate", "r.json", "-v", "--help", "--", "x"];
    let mut all = vec!["keylime"];
    all.extend_from_slice(&args);
    assert_eq!(
        ok(&all),
        Command::Keylime {
            args: args.map(String::from).to_vec()
        }
    );
    // `--` before the first argument hands even `--help` to the package.
    assert_eq!(
        ok(&["keylime", "--", "--help"]),
        Command::Keylime {
            args: vec!["--help".into()]
        }
    );
    assert_eq!(
        ok(&["keylime", "--json", "decode"]),
        Command::Keylime {
            args: vec!["--json".into(), "decode".into()]
        }
    );
}

#[test]
fn bench_options() {
    assert_eq!(
        ok(&["bench"]),
        Command::Bench(BenchArgs {
            mib: crate::bench::DEFAULT_MIB
        })
    );
    assert_eq!(
        ok(&["bench", "--mib", "64"]),
        Command::Bench(BenchArgs { mib: 64 })
    );
    assert_eq!(
        ok(&["bench", "--mib", "16384"]),
        Command::Bench(BenchArgs { mib: 16384 })
    );
    for bad in ["0", "16385", "x"] {
        let message = err(&["bench", "--mib", bad]);
        assert!(
            message.contains("--mib") && message.contains(bad),
            "{message}"
        );
    }
    assert!(err(&["bench", "64"]).contains("'64'"));
}

#[test]
fn fuzz_options() {
    let Command::Fuzz(all) = ok(&["fuzz"]) else {
        panic!()
    };
    assert_eq!(
        all,
        FuzzArgs {
            target: None,
            seconds: None,
            runs: None,
            asan: false,
        }
    );
    assert_eq!(all.seconds_limit(), Some(crate::fuzz::DEFAULT_SECONDS));
    let Command::Fuzz(one) = ok(&["fuzz", "elf", "--runs", "10000000", "--asan"]) else {
        panic!()
    };
    assert_eq!(
        one,
        FuzzArgs {
            target: Some("elf".into()),
            seconds: None,
            runs: Some(10_000_000),
            asan: true,
        }
    );
    assert_eq!(one.seconds_limit(), None);
    let Command::Fuzz(both) = ok(&["fuzz", "--seconds", "5", "--runs", "9"]) else {
        panic!()
    };
    assert_eq!(both.seconds_limit(), Some(5));
    for target in crate::fuzz::TARGETS {
        assert!(
            matches!(ok(&["fuzz", target]), Command::Fuzz(FuzzArgs { target: Some(t), .. }) if t == target)
        );
    }
    let nope = err(&["fuzz", "nope"]);
    assert!(
        nope.contains("'nope'") && nope.contains("transcript"),
        "{nope}"
    );
    assert!(err(&["fuzz", "--seconds"]).contains("--seconds"));
    assert!(err(&["fuzz", "--seconds", "0"]).contains("--seconds"));
    assert!(err(&["fuzz", "elf", "tpm_tis"]).contains("'tpm_tis'"));
    assert!(err(&["fuzz", "--fast"]).contains("--fast"));
}

#[test]
fn seconds() {
    assert_eq!(parse_seconds("1"), Ok(Duration::from_secs(1)));
    assert!(parse_seconds("0").is_err());
    assert!(parse_seconds("-1").unwrap_err().contains("`-1`"));
    assert!(parse_seconds("1.5").is_err());
}
