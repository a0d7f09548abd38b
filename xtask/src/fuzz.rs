//! `cargo xtask fuzz`: coverage-guided fuzzing of every parser of outside input with libFuzzer
//! (the targets are `tests/fuzz`, crate `slipway-fuzz`; README.md there says which input each
//! takes and what it checks).
//!
//! The targets are built by the project's own stable toolchain: libFuzzer comes from the
//! `libfuzzer-sys` crate (compiled from source by its build script), and coverage is LLVM's
//! sanitizer-coverage pass, which stable rustc runs with `-C passes=sancov-module`. So no
//! nightly toolchain and no cargo-fuzz are needed. `--asan` adds AddressSanitizer, which needs
//! nightly (`-Z sanitizer=address`): then nightly is installed with rustup if it is missing.
//!
//! Each target runs in one process on one core, with its seed corpus (`tests/fuzz/corpus/T`,
//! read only) and a working corpus under the target directory (`fuzz/corpus/T`, where new
//! inputs go); crashes are written to `fuzz/artifacts/T/`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::workspace::{Workspace, cargo};

/// The fuzz targets (binaries of `slipway-fuzz`), in the order they run.
pub const TARGETS: [&str; 9] = [
    "hypercall",
    "launch_config",
    "multiboot",
    "elf",
    "tpm_tis",
    "tpm_commands",
    "event_log",
    "transcript",
    "lapic",
];

/// How long `cargo xtask test` runs each target.
pub const SMOKE_SECONDS: u64 = 3;

/// The host triple the targets are built for (an explicit `--target` keeps the coverage flags
/// off build scripts and proc macros).
const HOST: &str = "x86_64-unknown-linux-gnu";

/// How long each target runs when neither `--seconds` nor `--runs` is given.
pub const DEFAULT_SECONDS: u64 = 60;

/// Options of `cargo xtask fuzz` (a part of [`crate::cli::Cli`]).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct FuzzArgs {
    /// One target [default: all]
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// Stop each target after this many seconds [default: 60 unless --runs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: Option<u64>,
    /// Stop each target after this many executions
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: Option<u64>,
    /// Build with AddressSanitizer (nightly, installed when missing)
    #[arg(long)]
    pub asan: bool,
}

impl FuzzArgs {
    /// The time limit per target: `--seconds`, else [`DEFAULT_SECONDS`] unless `--runs` limits.
    pub fn seconds_limit(&self) -> Option<u64> {
        match (self.seconds, self.runs) {
            (None, None) => Some(DEFAULT_SECONDS),
            (seconds, _) => seconds,
        }
    }
}

/// What one target's run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetReport {
    /// The target.
    pub target: String,
    /// Inputs executed.
    pub executions: u64,
    /// Inputs in the working corpus at the end, and their total size in bytes.
    pub corpus_files: u64,
    pub corpus_bytes: u64,
    /// Crash, timeout and out-of-memory inputs written by this run.
    pub crashes: Vec<PathBuf>,
    /// libFuzzer's exit status was not success.
    pub failed: bool,
    /// Wall time.
    pub seconds: f64,
}

/// Reads libFuzzer's `-print_final_stats=1` line `stat::number_of_executed_units: N`.
pub fn executed_units(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        line.trim()
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    })
}

/// Where the build puts things for a sanitizer choice.
fn fuzz_dir(ws: &Workspace, asan: bool) -> PathBuf {
    ws.target_dir.join(if asan { "fuzz-asan" } else { "fuzz" })
}

/// The code-generation flags of a fuzz build: sanitizer coverage (edges, 8-bit counters, PC
/// table, comparisons) for libFuzzer, debug assertions and overflow checks on.
pub fn rustflags(asan: bool) -> String {
    let mut flags = vec![
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "-Cdebug-assertions",
        "-Coverflow-checks",
        "--cfg",
        "fuzzing",
    ];
    if asan {
        flags.push("-Zsanitizer=address");
    }
    flags.join(" ")
}

fn nightly_installed() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds every target; returns the directory of the binaries.
pub fn build(ws: &Workspace, asan: bool) -> Result<PathBuf, String> {
    let started = Instant::now();
    let mut command = if asan {
        if !nightly_installed() {
            println!(
                "xtask fuzz: --asan needs nightly: rustup toolchain install nightly --profile minimal"
            );
            let ok = Command::new("rustup")
                // No self-update: installing a toolchain must not replace the machine's rustup.
                .args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--no-self-update",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("cannot install the nightly toolchain (needed by --asan)".into());
            }
        }
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo"]);
        c
    } else {
        cargo()
    };
    let dir = fuzz_dir(ws, asan);
    command
        .current_dir(&ws.root)
        .args([
            "build",
            "--release",
            "-p",
            "slipway-fuzz",
            "--features",
            "libfuzzer",
        ])
        .args(["--bins", "--target", HOST, "--target-dir"])
        .arg(&dir)
        .env("RUSTFLAGS", rustflags(asan))
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    println!(
        "xtask fuzz: building the targets ({})",
        if asan {
            "nightly, AddressSanitizer"
        } else {
            "stable"
        }
    );
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the fuzz targets failed".into());
    }
    println!(
        "xtask fuzz: built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(dir.join(HOST).join("release"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one target until `seconds` or `runs`, whichever comes first.
pub fn run_target(
    ws: &Workspace,
    bins: &Path,
    asan: bool,
    target: &str,
    seconds: Option<u64>,
    runs: Option<u64>,
) -> Result<TargetReport, String> {
    let dir = fuzz_dir(ws, asan);
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    let logs = dir.join("logs");
    for d in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let seeds = ws.root.join("tests/fuzz/corpus").join(target);
    let before = files_in(&artifacts);
    let log_path = logs.join(format!("{target}.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut command = Command::new(bins.join(target));
    command
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args([
            "-print_final_stats=1",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=65536",
        ])
        .args(["-len_control=100", "-print_pcs=0"]);
    if let Some(seconds) = seconds {
        command.arg(format!("-max_total_time={seconds}"));
    }
    if let Some(runs) = runs {
        command.arg(format!("-runs={runs}"));
    }
    command
        .arg(&corpus)
        .arg(&seeds)
        .stdout(Stdio::null())
        .stderr(log);
    let started = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bins.join(target).display()))?;
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let crashes: Vec<PathBuf> = files_in(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let corpus_files = files_in(&corpus);
    let corpus_bytes = corpus_files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    Ok(TargetReport {
        target: target.to_owned(),
        executions: executed_units(&text).unwrap_or(0),
        corpus_files: corpus_files.len() as u64,
        corpus_bytes,
        crashes,
        failed: !status.success(),
        seconds: elapsed.as_secs_f64(),
    })
}

/// The summary table.
pub fn table(reports: &[TargetReport]) -> String {
    let mut out = format!(
        "{:<14} {:>12} {:>16} {:>8} {:>9}\n",
        "target", "executions", "corpus", "crashes", "seconds"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<14} {:>12} {:>8} {:>6}KiB {:>8} {:>9.1}{}\n",
            r.target,
            r.executions,
            r.corpus_files,
            r.corpus_bytes.div_ceil(1024),
            r.crashes.len(),
            r.seconds,
            if r.failed && r.crashes.is_empty() {
                "  (libFuzzer failed: see its log)"
            } else {
                ""
            }
        ));
    }
    out
}

/// Builds and runs `targets`; prints the table and every crash; true when none crashed.
pub fn run_all(
    ws: &Workspace,
    targets: &[&str],
    seconds: Option<u64>,
    runs: Option<u64>,
    asan: bool,
) -> bool {
    let bins = match build(ws, asan) {
        Ok(bins) => bins,
        Err(e) => {
            eprintln!("xtask fuzz: {e}");
            return false;
        }
    };
    let mut reports = Vec::new();
    for target in targets {
        let limit = match (seconds, runs) {
            (Some(s), Some(r)) => format!("{s} s or {r} runs"),
            (Some(s), None) => format!("{s} s"),
            (None, Some(r)) => format!("{r} runs"),
            (None, None) => "no limit".into(),
        };
        println!("xtask fuzz: {target} ({limit}, one process)");
        match run_target(ws, &bins, asan, target, seconds, runs) {
            Ok(report) => {
                for crash in &report.crashes {
                    println!("xtask fuzz: {target}: CRASH {}", crash.display());
                }
                if report.failed {
                    let log = fuzz_dir(ws, asan)
                        .join("logs")
                        .join(format!("{target}.log"));
                    println!(
                        "xtask fuzz: {target}: libFuzzer reported a failure; its log: {}",
                        log.display()
                    );
                    if let Ok(text) = std::fs::read_to_string(&log) {
                        let tail: Vec<&str> = text.lines().rev().take(40).collect();
                        for line in tail.into_iter().rev() {
                            println!("  {line}");
                        }
                    }
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("xtask fuzz: {target}: {e}");
                reports.push(TargetReport {
                    target: (*target).to_owned(),
                    failed: true,
                    ..Default::default()
                });
            }
        }
    }
    print!("{}", table(&reports));
    let bad: Vec<&str> = reports
        .iter()
        .filter(|r| r.failed || !r.crashes.is_empty())
        .map(|r| r.target.as_str())
        .collect();
    if bad.is_empty() {
        println!("xtask fuzz: no crashes");
        true
    } else {
        println!(
            "xtask fuzz: crashes in {}; reproduce with the target binary and the artifact, e.g. {}/{}/release/<target> <artifact>",
            bad.join(", "),
            fuzz_dir(ws, asan).display(),
            HOST
        );
        false
    }
}

/// `cargo xtask fuzz`.
pub fn fuzz_command(ws: &Workspace, args: &FuzzArgs) -> ExitCode {
    let targets: Vec<&str> = match &args.target {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    let started = Instant::now();
    let ok = run_all(ws, &targets, args.seconds_limit(), args.runs, args.asan);
    println!("xtask fuzz: total {:.0} s", started.elapsed().as_secs_f64());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_final_stats_are_read() {
        let log = "#2097152\tpulse  cov: 80 ft: 90 corp: 5/20b\nDone 123456 runs in 3 second(s)\nstat::number_of_executed_units: 123456\nstat::average_exec_per_sec:     41152\n";
        assert_eq!(executed_units(log), Some(123_456));
        assert_eq!(executed_units("crashed before the stats"), None);
    }

    #[test]
    fn every_target_has_a_binary_and_a_seed_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz");
        for target in TARGETS {
            assert!(
                root.join("fuzz_targets")
                    .join(format!("{target}.rs"))
                    .is_file(),
                "{target}"
            );
            assert!(root.join("corpus").join(target).is_dir(), "{target}");
        }
    }
}
