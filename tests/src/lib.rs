//! Shared helpers for the QEMU integration tests in `tests/`: build a bundle once per test
//! process, boot it, and check console lines. The tests are run by `cargo xtask test`, which
//! first installs what they need (QEMU, OVMF, swtpm, GRUB, dtc).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use xtask::{BuiltBundle, Emulator, Firmware, RunConfig, RunOutcome, Tpm, Verdict, Workspace};

/// The workspace, located once.
pub fn workspace() -> &'static Workspace {
    static WS: OnceLock<Workspace> = OnceLock::new();
    WS.get_or_init(|| {
        xtask::procs::install_signal_handler();
        Workspace::locate().unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Builds bundle `name` once per test process (tests running in parallel share the build).
pub fn bundle(name: &str) -> Arc<BuiltBundle> {
    static BUILT: Mutex<Option<HashMap<String, Arc<BuiltBundle>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(b) = map.get(name) {
        return b.clone();
    }
    let b = Arc::new(
        xtask::build_bundle(workspace(), name).unwrap_or_else(|e| panic!("building `{name}`: {e}")),
    );
    map.insert(name.to_owned(), b.clone());
    b
}

/// A run configuration for `bundle` under `firmware`, with its serial log beside the bundle
/// (`serial-test-<test>.log`, apart from `cargo xtask run`'s `serial-<firmware>.log`) and
/// console echo on (the test harness shows it for failing tests).
pub fn config(bundle: &BuiltBundle, firmware: Firmware, test: &str) -> RunConfig {
    let log: PathBuf = bundle.output_dir.join(format!("serial-test-{test}.log"));
    let mut config = RunConfig::new(&bundle.iso, log);
    config.firmware = firmware;
    if let Some(smp) = bundle.manifest.run.smp {
        config.smp = smp;
    }
    if let Some(mib) = bundle.manifest.run.memory_mib {
        config.memory_mib = mib;
    }
    // OVMF under TCG needs 5-10 s to reach GRUB, more on a loaded CI machine.
    config.timeout = Duration::from_secs(match firmware {
        Firmware::Bios => 60,
        Firmware::Uefi => 120,
    });
    config
}

/// A run configuration for `bundle` under bochs (Intel VMX, no TPM, BIOS), with its serial log
/// beside the bundle (`serial-test-<test>.log`). bochs emulates every instruction: the time
/// limit is the bundle's, else 600 s.
pub fn bochs_config(bundle: &BuiltBundle, test: &str) -> RunConfig {
    let mut config = config(bundle, Firmware::Bios, test);
    config.emulator = Emulator::Bochs;
    config.tpm = Tpm::None;
    config.timeout = Duration::from_secs(bundle.manifest.run.timeout_seconds.unwrap_or(600));
    config
}

/// Boots and returns the outcome; a run that could not take place fails the test.
pub fn boot(config: &RunConfig) -> RunOutcome {
    let outcome = xtask::run(config).unwrap_or_else(|e| panic!("run could not take place: {e}"));
    println!("{}", outcome.report());
    if !outcome.qemu_stderr.trim().is_empty() {
        println!("QEMU stderr:\n{}", outcome.qemu_stderr);
    }
    outcome
}

/// Index of the first console line equal to `text`, or a panic naming it.
pub fn line_index(outcome: &RunOutcome, text: &str) -> usize {
    outcome
        .lines
        .iter()
        .position(|l| l.text == text)
        .unwrap_or_else(|| panic!("console line `{text}` missing"))
}

/// The domains the hypervisor started, in start order (its `started:<name>` milestones).
pub fn started_domains(outcome: &RunOutcome) -> Vec<&str> {
    outcome
        .milestones
        .iter()
        .filter_map(|m| m.name.strip_prefix("started:"))
        .collect()
}

/// A copy of `built`'s ISO whose `grub.cfg` was changed by `edit`, under
/// `<bundle output>/variant-<case>/`: for boots a `bundle.toml` cannot express (a command line
/// the bundle rules refuse, a hypervisor option only one test wants). Returns the ISO's path.
pub fn iso_variant(
    built: &BuiltBundle,
    case: &str,
    edit: impl FnOnce(String) -> String,
) -> PathBuf {
    let dir = built.output_dir.join(format!("variant-{case}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    copy_tree(&built.output_dir.join("root"), &dir.join("root"));
    let cfg_path = dir.join("root/boot/grub/grub.cfg");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap_or_else(|e| panic!("grub.cfg: {e}"));
    let edited = edit(cfg.clone());
    assert_ne!(edited, cfg, "{case}: the grub.cfg edit changed nothing");
    std::fs::write(&cfg_path, edited).unwrap();
    let iso = dir.join(format!("{case}.iso"));
    xtask::builder::make_iso(&dir.join("root"), &iso).unwrap_or_else(|e| panic!("{case}: {e}"));
    iso
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
