//! Command-line parsing for `cargo xtask` (pure).

use std::time::Duration;

use crate::runner::{Firmware, Tpm};

/// The bundle `build` and `run` use when none is named.
pub const DEFAULT_BUNDLE: &str = "demo";

/// Options of `cargo xtask run`; `None` means "the bundle's `[run]` default, else the harness's".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    pub bundle: String,
    pub timeout: Option<Duration>,
    pub firmware: Firmware,
    pub tpm: Tpm,
    pub smp: Option<u32>,
    pub memory_mib: Option<u32>,
    pub extra_qemu_args: Vec<String>,
    /// A nonce (hex) typed on the console when the attest control domain asks for it;
    /// `None`: a fresh random one.
    pub nonce: Option<String>,
    /// Verify the attest transcript at the end of a run with a TPM (`--no-verify`: don't).
    pub verify: bool,
}

/// A `cargo xtask` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Build {
        bundle: String,
    },
    Run(RunArgs),
    Test,
    Setup,
    Help,
    Predict(crate::predict::PredictArgs),
    Verify(crate::verify::VerifyArgs),
    Bench(crate::bench::BenchArgs),
    /// Print every Intel TXT structure's fields as `STRUCT.FIELD OFFSET SIZE`.
    TxtLayout,
    Refstate(crate::refstate::RefstateArgs),
    Log(crate::logview::LogArgs),
    Export(crate::fleet::ExportArgs),
    Keylime(Vec<String>),
    Fuzz(crate::fuzz::FuzzArgs),
    LinuxKernel(crate::linux_kernel::LinuxKernelArgs),
}

pub const USAGE: &str = "\
usage: cargo xtask <command>

  build [BUNDLE]           build the binaries and the GRUB ISO of images/BUNDLE (default: demo)
  run [BUNDLE] [options]   build, then boot it under QEMU with a fresh swtpm; when the bundle's
                           attest control domain asks for a nonce, type a fresh random one;
                           at the end, verify its transcript as `verify` does. Exit 0 only on
                           the guest's success verdict and (with a TPM, attest bundles) an
                           accepted attestation; 1 failed run, 2-5 `verify`'s codes. Options:
      --timeout SECONDS    stop the run after this long (default: bundle's, else 60)
      --uefi               boot through OVMF instead of SeaBIOS
      --no-tpm             attach no TPM
      --smp N              virtual CPUs (default: bundle's, else 2)
      --memory MIB         guest RAM (default: bundle's, else 512)
      --nonce HEX          type this nonce instead of a fresh random one
      --no-verify          do not verify the transcript at the end (check it later with
                           cargo xtask verify <serial log> --nonce HEX --bundle BUNDLE)
      -- ARGS...           extra QEMU arguments (e.g. -- -d int -D /tmp/qemu.log)
  predict [BUNDLE] [--banks sha1,sha256,..] [--out FILE]
          [--launch emulated|txt|txt-simulated|skinit] [--sinit ACM]
                           print the expected PCR17-21 values of the bundle and write the exact
                           expected event log (default banks: sha1,sha256,sha384,sha512); TXT:
                           PCR17/18 as SINIT extends them, from the ACM (--sinit, or the bundle's
                           synthetic `sinit` module for the SIMULATED txt-simulated launch)
  verify TRANSCRIPT [--nonce HEX] [--bank sha256] [--bundle B | --expected-log FILE]
                           accept a run's attest transcript only if the quote checks with the
                           printed key and nonce, the log replays to it and matches the
                           prediction (exit 2 bad input, 3 bad evidence, 4 unmeasured launch,
                           5 differs from the prediction)
  refstate [BUNDLE] [--banks sha1,sha256,..] [--launch emulated,txt,skinit] [--out FILE]
                           write the reference values a fleet verifier needs (PCR17-21 per
                           bank per launch kind, the expected events decoded) as JSON, from
                           predict's code (default: all four banks, all launch kinds,
                           <target>/bundles/BUNDLE/refstate.json); docs/fleet.md
  log FILE|TRANSCRIPT [--json]
                           print an event log (or a transcript's Slipway and firmware logs) in
                           tpm2_eventlog's YAML shape with Slipway's events named and decoded
  export TRANSCRIPT [--out DIR]
                           write a transcript's evidence as files for tpm2_checkquote and
                           Keylime (ak.pem, ak.pub, quote.msg, quote.sig, quote.pcrs, logs)
  keylime ARGS...          run Slipway's Keylime policy package (python -m slipway_keylime) in
                           the pinned Keylime environment (<target>/keylime-venv, made on
                           demand): decode, evaluate, tpm-policy, check
  bench [--mib N]          hash N MiB (default 1024) with domB's exact build of the hashing code
                           (domB's target and flags, backends chosen by CPUID) for all four
                           banks in one pass and per algorithm, and with `openssl dgst`: one
                           ratio each
  txt-layout               print every Intel TXT structure's fields (STRUCT.FIELD OFFSET SIZE)
                           for review against Intel's MLE Developer's Guide
  fuzz [TARGET] [--seconds N] [--runs N] [--asan]
                           coverage-guided fuzzing (libFuzzer) of every parser of outside
                           input, one process per target (default: all targets, 60 s each);
                           prints executions, corpus and crashes per target; exit 1 on a crash.
                           Targets: hypercall, launch_config, multiboot, elf, tpm_tis,
                           tpm_commands, event_log, transcript, lapic (tests/fuzz/README.md)
  linux-kernel [--out DIR] fetch Debian's stock kernel package with apt (cached in
                           <target>/linux-kernel, SHA-256 checked against apt's metadata) and
                           extract its vmlinux for PVH domains (docs/linux-kernel.md)
  test                     set up the machine, run host unit tests, a short fuzz run of every
                           target, then the QEMU tests
  setup                    install the rustup target and Debian packages the harness needs
  help                     this text
";

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let v = value.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Command::Help),
        "test" | "setup" => {
            if let Some(extra) = args.next() {
                return Err(format!("`{command}` takes no arguments (got `{extra}`)"));
            }
            Ok(if command == "test" {
                Command::Test
            } else {
                Command::Setup
            })
        }
        "build" => {
            let bundle = args.next().unwrap_or_else(|| DEFAULT_BUNDLE.to_owned());
            if bundle.starts_with('-') {
                return Err(format!("build: unknown option `{bundle}`"));
            }
            if let Some(extra) = args.next() {
                return Err(format!("build takes one bundle name (got also `{extra}`)"));
            }
            Ok(Command::Build { bundle })
        }
        "run" => {
            let mut run = RunArgs {
                bundle: DEFAULT_BUNDLE.to_owned(),
                timeout: None,
                firmware: Firmware::Bios,
                tpm: Tpm::Swtpm,
                smp: None,
                memory_mib: None,
                extra_qemu_args: Vec::new(),
                nonce: None,
                verify: true,
            };
            let mut bundle_given = false;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--timeout" => {
                        let secs: u64 = number("--timeout", args.next())?;
                        if secs == 0 {
                            return Err("--timeout must be at least 1".into());
                        }
                        run.timeout = Some(Duration::from_secs(secs));
                    }
                    "--uefi" => run.firmware = Firmware::Uefi,
                    "--no-tpm" => run.tpm = Tpm::None,
                    "--smp" => {
                        let n: u32 = number("--smp", args.next())?;
                        if n == 0 {
                            return Err("--smp must be at least 1".into());
                        }
                        run.smp = Some(n);
                    }
                    "--memory" => run.memory_mib = Some(number("--memory", args.next())?),
                    "--nonce" => {
                        let nonce = args.next().ok_or("--nonce needs a hex value")?;
                        crate::verify::parse_hex(&nonce).map_err(|e| format!("--nonce: {e}"))?;
                        run.nonce = Some(nonce);
                    }
                    "--no-verify" => run.verify = false,
                    "--" => run.extra_qemu_args.extend(args.by_ref()),
                    a if a.starts_with('-') => return Err(format!("run: unknown option `{a}`")),
                    a if !bundle_given => {
                        run.bundle = a.to_owned();
                        bundle_given = true;
                    }
                    a => return Err(format!("run takes one bundle name (got also `{a}`)")),
                }
            }
            Ok(Command::Run(run))
        }
        "predict" => crate::predict::parse_args(args).map(Command::Predict),
        "verify" => crate::verify::parse_args(args).map(Command::Verify),
        "bench" => crate::bench::parse_args(args).map(Command::Bench),
        "txt-layout" => match args.next() {
            None => Ok(Command::TxtLayout),
            Some(extra) => Err(format!("`txt-layout` takes no arguments (got `{extra}`)")),
        },
        "refstate" => crate::refstate::parse_args(args).map(Command::Refstate),
        "log" => crate::logview::parse_args(args).map(Command::Log),
        "export" => crate::fleet::parse_args(args).map(Command::Export),
        "keylime" => Ok(Command::Keylime(args.collect())),
        "fuzz" => crate::fuzz::parse_args(args).map(Command::Fuzz),
        "linux-kernel" => crate::linux_kernel::parse_args(args).map(Command::LinuxKernel),
        other => Err(format!("unknown command `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_to_demo() {
        assert_eq!(
            p(&["build"]),
            Ok(Command::Build {
                bundle: "demo".into()
            })
        );
        let Ok(Command::Run(r)) = p(&["run"]) else {
            panic!()
        };
        assert_eq!(r.bundle, "demo");
        assert_eq!(
            (r.firmware, r.tpm, r.timeout, r.nonce, r.verify),
            (Firmware::Bios, Tpm::Swtpm, None, None, true)
        );
    }

    #[test]
    fn nonce_and_verification() {
        let Ok(Command::Run(r)) = p(&["run", "--nonce", "00ff", "--no-verify"]) else {
            panic!()
        };
        assert_eq!((r.nonce.as_deref(), r.verify), (Some("00ff"), false));
        assert!(
            p(&["run", "--nonce", "xyz"])
                .unwrap_err()
                .contains("--nonce")
        );
        assert!(p(&["run", "--nonce"]).unwrap_err().contains("--nonce"));
    }

    #[test]
    fn run_options() {
        let Ok(Command::Run(r)) = p(&[
            "run",
            "--uefi",
            "minimal",
            "--timeout",
            "90",
            "--no-tpm",
            "--smp",
            "1",
            "--memory",
            "256",
            "--",
            "-d",
            "int",
        ]) else {
            panic!()
        };
        assert_eq!(
            r,
            RunArgs {
                bundle: "minimal".into(),
                timeout: Some(Duration::from_secs(90)),
                firmware: Firmware::Uefi,
                tpm: Tpm::None,
                smp: Some(1),
                memory_mib: Some(256),
                extra_qemu_args: vec!["-d".into(), "int".into()],
                nonce: None,
                verify: true,
            }
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            p(&["run", "--timeout"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(p(&["run", "--timeout", "x"]).unwrap_err().contains("`x`"));
        assert!(p(&["run", "--timeout", "0"]).is_err());
        assert!(p(&["run", "--fast"]).unwrap_err().contains("--fast"));
        assert!(p(&["run", "a", "b"]).unwrap_err().contains("`b`"));
        assert!(p(&["test", "x"]).is_err());
        assert!(p(&["frobnicate"]).unwrap_err().contains("frobnicate"));
        assert_eq!(p(&[]), Ok(Command::Help));
    }
}
