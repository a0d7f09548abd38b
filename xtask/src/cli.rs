//! The command line of `cargo xtask`: one declarative definition (clap's derive API) of every
//! subcommand and option, with `--help` for each. A typed option's value is parsed once, while
//! the command line is, by the function that owns that value (`predict::parse_banks`,
//! `verify::parse_hex`, `BundleVariant::from_launch`, ...). The options of `predict`, `verify`,
//! `refstate`, `log`, `export`, `bench` and `fuzz` are declared beside the code that uses them
//! (`PredictArgs` in `predict.rs`, ...); this module composes them and depends on them, never
//! the other way round.

use std::ffi::OsString;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

use crate::builder::BundleVariant;
use crate::runner::{Emulator, Firmware, Tpm};

pub use crate::bundle::DEFAULT_BUNDLE;

/// Slipway's build and test harness.
///
/// Bundles are the directories images/BUNDLE (bundle.toml + config.dts); outputs go to
/// <target>/bundles/BUNDLE. `cargo xtask <command> --help` describes a command.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", disable_version_flag = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A `cargo xtask` command.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Build the binaries and the GRUB ISO of images/BUNDLE
    Build {
        /// The bundle (images/BUNDLE)
        #[arg(default_value = DEFAULT_BUNDLE)]
        bundle: String,
    },
    /// Build a bundle, then boot it under QEMU with a fresh swtpm (or under bochs) and verify
    /// its attestation
    ///
    /// When the bundle's attest control domain asks for a nonce, a fresh random one (or
    /// --nonce) is typed; at the end, the transcript is verified as `verify` does.
    ///
    /// Exit code: 0 only on the guest's success verdict and (with a TPM, attest bundles) an
    /// accepted attestation; 1 a failed run (build, emulator, failure or timeout verdict); 2-5
    /// `verify`'s codes for a rejected attestation.
    Run(RunArgs),
    /// Set up the machine, run the lints, host unit tests, a short fuzz run of every target,
    /// then the QEMU tests
    Test,
    /// Install the rustup target and Debian packages the harness needs
    Setup,
    /// Print the expected PCR17-21 values of a bundle and write the exact expected event log
    ///
    /// TXT: PCR17/18 as SINIT extends them, from the ACM (--sinit), or from the bundle's
    /// synthetic `sinit` module for the SIMULATED txt-simulated launch; without an ACM only
    /// Slipway's events (PCR19-21) are predicted.
    Predict(crate::predict::PredictArgs),
    /// Accept a run's attest transcript only if the quote checks with the printed key and
    /// nonce, the log replays to it and matches the prediction
    ///
    /// Exit code: 0 accepted, 2 bad input, 3 bad evidence, 4 unmeasured launch, 5 differs from
    /// the prediction (naming the first differing event).
    Verify(crate::verify::VerifyArgs),
    /// Write the reference values a fleet verifier needs, as JSON (docs/fleet.md)
    ///
    /// PCR17-21 per bank per launch kind and the expected events decoded, from predict's code
    /// [default output: <target>/bundles/BUNDLE/refstate.json].
    Refstate(crate::refstate::RefstateArgs),
    /// Print an event log (or a transcript's Slipway and firmware logs) in tpm2_eventlog's YAML
    /// shape, Slipway's events named and decoded
    Log(crate::logview::LogArgs),
    /// Write a transcript's evidence as files for tpm2_checkquote and Keylime (ak.pem, ak.pub,
    /// quote.msg, quote.sig, quote.pcrs, logs)
    Export(crate::fleet::ExportArgs),
    /// Run Slipway's Keylime policy package (python -m slipway_keylime ARGS) in the pinned
    /// Keylime environment
    ///
    /// The environment (<target>/keylime-venv) is made on demand. The package's commands:
    /// decode, evaluate, tpm-policy, check; everything from the first ARG on is passed on
    /// unchanged (`cargo xtask keylime -- --help` for the package's own help).
    Keylime {
        /// Arguments of `python -m slipway_keylime`
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Hash with domB's exact build of the hashing code and with `openssl dgst`: one ratio each
    ///
    /// domB's target and flags, backends chosen by CPUID, all four banks in one pass and per
    /// algorithm.
    Bench(crate::bench::BenchArgs),
    /// Print every Intel TXT structure's fields (STRUCT.FIELD OFFSET SIZE) for review against
    /// Intel's MLE Developer's Guide
    TxtLayout,
    /// Coverage-guided fuzzing (libFuzzer) of every parser of outside input
    ///
    /// One process per target; prints executions, corpus and crashes per target; exit 1 on a
    /// crash (tests/fuzz/README.md).
    Fuzz(crate::fuzz::FuzzArgs),
    /// Fetch Debian's stock kernel package with apt and extract its vmlinux for PVH domains
    ///
    /// Cached in <target>/linux-kernel, the .deb's SHA-256 checked against apt's metadata
    /// (docs/linux-kernel.md).
    LinuxKernel(crate::linux_kernel::LinuxKernelArgs),
    /// Build the Linux domains' initramfs (busybox, tpm2-tools and its libraries, /init) from
    /// Debian packages, reproducibly
    ///
    /// Packages cached in <target>/linux-initramfs/debs, each .deb's SHA-256 checked against
    /// apt's metadata (docs/linux-kernel.md).
    LinuxInitramfs(crate::linux_initramfs::LinuxInitramfsArgs),
    /// No command: print the help (as `cargo xtask help` and `--help` do).
    #[command(skip)]
    Help,
}

/// Options of `cargo xtask run`; `None` means "the bundle's `[run]` default, else the harness's".
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RunArgs {
    /// The bundle (images/BUNDLE)
    #[arg(default_value = DEFAULT_BUNDLE)]
    pub bundle: String,
    /// The emulator to boot under
    #[arg(long, value_enum, default_value_t = Emulator::Qemu)]
    pub emulator: Emulator,
    /// Stop the run after this long [default: the bundle's, else 60]
    // Negative numbers are values (refused, naming the option), not unknown options.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub timeout: Option<Duration>,
    /// Boot through OVMF instead of SeaBIOS
    #[arg(
        long = "uefi",
        action = ArgAction::SetTrue,
        value_parser = flag(Firmware::Uefi, Firmware::Bios)
    )]
    pub firmware: Firmware,
    /// Attach no TPM (always so under bochs)
    #[arg(
        long = "no-tpm",
        action = ArgAction::SetTrue,
        value_parser = flag(Tpm::None, Tpm::Swtpm),
        default_value_if("emulator", "bochs", "true")
    )]
    pub tpm: Tpm,
    /// Virtual CPUs [default: the bundle's, else 2]
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        allow_negative_numbers = true
    )]
    pub smp: Option<u32>,
    /// Guest RAM in MiB [default: the bundle's, else 512]
    #[arg(long = "memory", value_name = "MIB", allow_negative_numbers = true)]
    pub memory_mib: Option<u32>,
    /// Type this nonce (hex) when the attest domain asks [default: a fresh random one]
    // `::std::vec::Vec`: one value (the nonce's bytes), not a list of values.
    #[arg(long, value_name = "HEX", value_parser = crate::verify::parse_hex)]
    pub nonce: Option<::std::vec::Vec<u8>>,
    /// Keep the Linux domains' busybox shell: answer `shell` to their init's offer, then pass
    /// this terminal's input to the console until the run ends (no timeout; Ctrl-C stops it).
    /// Without it, the offer is declined at once and the domains power off.
    #[arg(long)]
    pub interactive: bool,
    /// Do not verify the transcript at the end (check it later with `cargo xtask verify
    /// <serial log> --nonce HEX --bundle BUNDLE`)
    #[arg(long = "no-verify", action = ArgAction::SetFalse)]
    pub verify: bool,
    /// txt-simulated: boot with the SIMULATED Intel TXT launch
    ///
    /// launch=txt-simulated on the hypervisor command line and the synthetic `sinit` module
    /// added (built under <bundle output>/txt-simulated); the harness plays CPU and SINIT;
    /// verified as a simulated launch, never a hardware one.
    #[arg(
        long = "launch",
        value_name = "txt-simulated",
        value_parser = BundleVariant::from_launch
    )]
    pub variant: Option<BundleVariant>,
    /// Extra QEMU arguments (e.g. -- -d int -D /tmp/qemu.log)
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub extra_qemu_args: Vec<String>,
}

impl RunArgs {
    /// The rules between options clap cannot state (they depend on `--emulator`'s value).
    pub fn check(&self) -> Result<(), String> {
        if self.emulator == Emulator::Bochs {
            if self.firmware == Firmware::Uefi {
                return Err("--emulator bochs boots the BIOS way only (no --uefi)".into());
            }
            if !self.extra_qemu_args.is_empty() {
                return Err("--emulator bochs takes no extra QEMU arguments".into());
            }
        }
        Ok(())
    }
}

/// A presence flag (`--uefi`, `--no-tpm`) as the value it selects.
fn flag<T: Copy + Send + Sync + 'static>(
    present: T,
    absent: T,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::BoolishValueParser::new().map(move |set| if set { present } else { absent })
}

/// A whole number of seconds, at least 1 (`--timeout`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1 second".into()),
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => Err(format!("`{text}` is not a whole number of seconds")),
    }
}

/// Parses the arguments after `cargo xtask`. `--help`, `-h` and `help [COMMAND]` come back as
/// errors of kind `DisplayHelp` (print them, exit 0: [`clap::Error::exit_code`]); usage errors
/// name the option and value (exit 2).
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = std::iter::once(OsString::from("xtask")).chain(args.into_iter().map(Into::into));
    let command = Cli::try_parse_from(args)?.command.unwrap_or(Command::Help);
    let checked = match &command {
        Command::Run(run) => run.check().map_err(|e| ("run", e)),
        Command::Predict(predict) => predict.check().map_err(|e| ("predict", e)),
        _ => Ok(()),
    };
    match checked {
        Ok(()) => Ok(command),
        Err((name, message)) => {
            // Reported with the subcommand's usage line, as clap's own errors are.
            let mut cli = Cli::command();
            cli.build();
            let subcommand = cli
                .find_subcommand_mut(name)
                .expect("a declared subcommand");
            Err(subcommand.error(ErrorKind::ArgumentConflict, message))
        }
    }
}

/// The text of `cargo xtask help` (and of `cargo xtask` alone).
pub fn help() -> String {
    Cli::command().render_long_help().to_string()
}

#[cfg(test)]
mod tests;
