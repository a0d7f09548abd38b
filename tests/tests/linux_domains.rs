//! Debian's stock kernel as Slipway domains: `images/linux` under QEMU (SeaBIOS, swtpm), one run
//! shared by every test below.
//!
//! - The Linux control domain (initramfs attest role, tpm2-tools) quotes PCR17-21 with the
//!   nonce the harness types; `verify` accepts the transcript against the bundle's prediction
//!   (quote, nonce, log replay, prediction), and `tpm2_checkquote` accepts the same quote with
//!   the PCR values the log replays to, from `cargo xtask export`'s files.
//! - The 2-vCPU Linux domain (info role) reports 2 CPUs and about its 256 MiB.
//! - The initramfs builds to the same bytes twice (the packages cached).
//! - Measured, never asserted: the Linux domains' boot times under Slipway (from the hand-off
//!   to the quote, and to the info role's end) next to QEMU's own PVH boot of the same kernel,
//!   initramfs and command line in this process, and the hypervisor's exits by reason.
//!
//! These need the Linux domain platform in the hypervisor (local APIC, ACPI tables with the
//! TPM2 log area, PVH start info); until it is there the boot tests fail, by design.

use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use slipway_domb_core::config::DomainConfig;
use slipway_integration_tests::{Firmware, Tpm, bundle, config, workspace};
use xtask::verify::{self, Alg, Transcript, fresh_nonce, nonce_input};
use xtask::{DirectKernel, RunOutcome};

const BUNDLE: &str = "linux";

struct Run {
    nonce: Vec<u8>,
    outcome: RunOutcome,
    transcript: Result<Transcript, String>,
    built: std::sync::Arc<xtask::BuiltBundle>,
}

/// The timed boots (the shared Slipway run, QEMU's reference boots) and the CPU-heavy initramfs
/// builds take turns: the machine has few cores, and the boot times are compared.
fn machine_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let built = bundle(BUNDLE);
        let _turn = machine_turn();
        let nonce = fresh_nonce().unwrap_or_else(|e| panic!("{e}"));
        let mut run = config(&built, Firmware::Bios, "linux-domains");
        run.tpm = Tpm::Swtpm;
        // The nonce, then the control domain's (the console focus's) shell offer declined at
        // once; the info domain declines by itself after the offer's wait.
        run.console_input = vec![
            nonce_input(&nonce),
            xtask::linux_initramfs::shell_offer_answer(false),
        ];
        run.timeout =
            std::time::Duration::from_secs(built.manifest.run.timeout_seconds.unwrap_or(300));
        let outcome = slipway_integration_tests::boot(&run);
        let transcript =
            verify::parse_transcript(&verify::transcript_of(&outcome)).map_err(|e| e.to_string());
        Run {
            nonce,
            outcome,
            transcript,
            built,
        }
    })
}

/// The lines a domain printed, without the hypervisor's `[<domain>] ` prefix.
fn domain_lines<'o>(outcome: &'o RunOutcome, domain: &str) -> Vec<&'o str> {
    let prefix = format!("[{domain}] ");
    outcome
        .lines
        .iter()
        .filter_map(|l| l.text.split_once(&prefix).map(|(_, rest)| rest))
        .collect()
}

#[test]
fn the_linux_control_domain_attests_and_verify_accepts_it() {
    let run = run();
    let transcript = run
        .transcript
        .as_ref()
        .unwrap_or_else(|e| panic!("the Linux control domain's transcript: {e}"));
    let accepted =
        verify::verify_against_bundle(&run.built, transcript, run.nonce.clone(), Alg::Sha256)
            .unwrap_or_else(|e| panic!("verify rejects the Linux control domain's run: {e}"));
    assert!(accepted.quoted_banks.contains(&Alg::Sha256));
    assert_eq!(accepted.pcrs.len(), 5, "PCR17-21");
}

#[test]
fn tpm2_checkquote_accepts_the_linux_control_domains_quote() {
    let run = run();
    let transcript = run
        .transcript
        .as_ref()
        .unwrap_or_else(|e| panic!("the Linux control domain's transcript: {e}"));
    let dir = run.built.output_dir.join("linux-domains-evidence");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in xtask::fleet::export_files(transcript).unwrap() {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let nonce = verify::hex(&run.nonce);
    let check = |nonce: &str| {
        Command::new("tpm2_checkquote")
            .arg("-u")
            .arg(dir.join("ak.pem"))
            .arg("-m")
            .arg(dir.join("quote.msg"))
            .arg("-s")
            .arg(dir.join("quote.sig"))
            .arg("-f")
            .arg(dir.join("quote.pcrs"))
            .args(["-q", nonce, "-g", "sha256"])
            .output()
            .expect("tpm2_checkquote (tpm2-tools; cargo xtask setup installs it)")
    };
    let output = check(&nonce);
    assert!(
        output.status.success(),
        "tpm2_checkquote refused the quote: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !check("00").status.success(),
        "tpm2_checkquote must refuse another nonce"
    );
}

#[test]
fn the_two_vcpu_linux_domain_reports_two_cpus_and_its_memory() {
    let run = run();
    let lines = domain_lines(&run.outcome, "linux-info");
    assert!(
        lines.contains(&"info: nproc 2"),
        "linux-info printed no `info: nproc 2`: {lines:?}"
    );
    let kib: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("info: memtotal-kib "))
        .unwrap_or_else(|| panic!("linux-info printed no memtotal: {lines:?}"))
        .parse()
        .unwrap();
    // MemTotal is the RAM the kernel manages: the domain's 256 MiB less what the kernel keeps
    // (its image spans physical 16-74 MiB; under plain QEMU with OVMF, 256 MiB gave 204048 KiB
    // and 512 MiB gave 461712 KiB). Below 256 MiB, above 160 MiB.
    assert!(
        (160 * 1024..256 * 1024).contains(&kib),
        "MemTotal {kib} KiB for a 256 MiB domain"
    );
}

#[test]
fn the_initramfs_builds_to_the_same_bytes_twice() {
    let ws = workspace();
    let cache = xtask::linux_initramfs::cache_dir(ws);
    let outs = [
        ws.target_dir.join("linux-initramfs-repro/a"),
        ws.target_dir.join("linux-initramfs-repro/b"),
    ];
    let mut images = Vec::new();
    let _turn = machine_turn();
    for out in &outs {
        let built = xtask::linux_initramfs::build(&cache, Some(out))
            .unwrap_or_else(|e| panic!("linux-initramfs: {e}"));
        images.push((built.sha256, std::fs::read(&built.image).unwrap()));
    }
    assert_eq!(images[0].0, images[1].0);
    assert!(images[0].1 == images[1].1, "two builds differ");
}

/// The line the Linux control domain prints once `tpm2_quote` has returned (the transcript's
/// quote blob, images/guests/attest/README.md): the end of the timed span for the attest role.
const QUOTE_LINE: &str = "attest: begin quote-attest ";
/// The info role's last line before it powers off.
const INFO_DONE_LINE: &str = "info: done";

/// The file of module `module` as built (the bytes domB measures).
fn module_file(built: &xtask::BuiltBundle, module: &str) -> std::path::PathBuf {
    built
        .modules
        .iter()
        .find(|m| m.name == module)
        .unwrap_or_else(|| panic!("bundle `{}` has no module `{module}`", built.name))
        .file
        .path
        .clone()
}

/// A domain of the bundle's launch configuration, read from the `config` module as built, with
/// domB's own parser.
fn configured_domain(built: &xtask::BuiltBundle, name: &str) -> DomainConfig {
    let blob = std::fs::read(module_file(built, "config")).unwrap();
    let names: Vec<&str> = built.modules.iter().map(|m| m.name.as_str()).collect();
    slipway_domb_core::config::parse(&blob, &names)
        .unwrap_or_else(|e| panic!("the launch configuration: {e}"))
        .domains
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no domain `{name}` in the launch configuration"))
}

/// Why the attest role has no QEMU reference boot: under QEMU's PVH loader with SeaBIOS and a
/// TPM, the kernel finds no ACPI tables, hence no TPM (`attest: error tpm: no /dev/tpmrm0`), and
/// cannot power off (it halts, so QEMU never exits). QEMU keeps the initrd clear of only the top
/// 160 KiB of low RAM (q35's `acpi_data_size`); with a TPM, SeaBIOS also places the 64 KiB TPM
/// log there and its ACPI tables end up below that reserve, where the 9 MB initrd, loaded after
/// them, overwrites them (seen with q35 and pc, 512 MiB and 1 GiB, `ppi=off`). Without a TPM the
/// tables fit, so the info role is the reference.
const NO_ATTEST_REFERENCE: &str = "QEMU's PVH loader puts the initrd over SeaBIOS's ACPI \
     tables once a TPM log is allocated: the kernel finds no ACPI, no TPM (see \
     NO_ATTEST_REFERENCE in tests/tests/linux_domains.rs)";

/// QEMU's own boot of domain `name`'s kernel, ramdisk and command line (its PVH loader: the
/// kernel is the `vmlinux` ELF with the PVH note) under SeaBIOS on a machine of the domain's
/// memory and vCPUs, with the harness's machine and CPU model. Only for a domain without the
/// TPM ([`NO_ATTEST_REFERENCE`]).
fn qemu_pvh_boot(built: &xtask::BuiltBundle, name: &str) -> RunOutcome {
    let domain = configured_domain(built, name);
    assert!(!domain.capabilities.tpm, "{name}: {NO_ATTEST_REFERENCE}");
    let module_path = |module: &str| module_file(built, module);
    let mut run = config(built, Firmware::Bios, &format!("qemu-pvh-{name}"));
    run.direct_kernel = Some(DirectKernel {
        kernel: module_path(&domain.kernel),
        initrd: domain.ramdisk.as_deref().map(module_path),
        cmdline: domain.bootargs.clone(),
    });
    run.smp = domain.vcpus;
    run.memory_mib = u32::try_from(domain.memory_bytes >> 20).unwrap();
    run.tpm = Tpm::None;
    run.timeout = Duration::from_secs(built.manifest.run.timeout_seconds.unwrap_or(300));
    slipway_integration_tests::boot(&run)
}

/// Host time of the first line of `outcome` that, without a `[<domain>] ` prefix, starts with
/// `text`.
fn line_at(outcome: &RunOutcome, domain: Option<&str>, text: &str) -> Duration {
    let prefix = domain.map(|d| format!("[{d}] ")).unwrap_or_default();
    outcome
        .lines
        .iter()
        .find(|l| {
            l.text
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with(text))
        })
        .unwrap_or_else(|| {
            let lines: Vec<&str> = outcome.lines.iter().map(|l| l.text.as_str()).collect();
            panic!("no line `{prefix}{text}...`: {lines:#?}")
        })
        .at
}

#[test]
fn linux_boot_time_under_slipway_next_to_qemus_own_pvh_boot() {
    let slipway = run();
    let built = slipway.built.clone();
    let hand_off = slipway
        .outcome
        .milestones
        .iter()
        .find(|m| m.name == "hand-off")
        .unwrap_or_else(|| panic!("the Slipway run reported no hand-off milestone"))
        .host_at;
    let exits = slipway
        .outcome
        .hypervisor_lines()
        .find(|l| l.starts_with("slipway: exits by reason: "))
        .unwrap_or_else(|| panic!("the hypervisor printed no `exits by reason:` line"))
        .to_owned();
    let since_hand_off = |domain: &str, line: &str| {
        line_at(&slipway.outcome, Some(domain), line)
            .checked_sub(hand_off)
            .expect("the line comes after the hand-off")
    };
    let control = since_hand_off("linux-control", QUOTE_LINE);
    let info = since_hand_off("linux-info", INFO_DONE_LINE);
    let reference = {
        let _turn = machine_turn();
        qemu_pvh_boot(&built, "linux-info")
    };
    let info_under_qemu = line_at(&reference, None, INFO_DONE_LINE);
    let info_domain = configured_domain(&built, "linux-info");
    let mut report = String::from(
        "\n== Linux boot time under Slipway, next to QEMU's own PVH boot of the same vmlinux, \
         initramfs and command line (host time, TCG, -cpu max, one run each; measured, not \
         checked) ==\n",
    );
    report.push_str(&format!(
        "linux-control (attest role, 1 vCPU, swtpm), to `{}`: Slipway {:.3} s from the \
         `hand-off` milestone; QEMU reference not measured: {NO_ATTEST_REFERENCE}\n",
        QUOTE_LINE.trim_end(),
        control.as_secs_f64(),
    ));
    report.push_str(&format!(
        "linux-info (info role, {} vCPUs, {} MiB), to `{INFO_DONE_LINE}`: Slipway {:.3} s from \
         the `hand-off` milestone (sharing 2 pCPUs with linux-control and hello); QEMU PVH \
         {:.3} s from QEMU's start (SeaBIOS included, alone); ratio slipway/qemu {:.2}\n",
        info_domain.vcpus,
        info_domain.memory_bytes >> 20,
        info.as_secs_f64(),
        info_under_qemu.as_secs_f64(),
        info.as_secs_f64() / info_under_qemu.as_secs_f64()
    ));
    report.push_str(&format!(
        "Slipway run, whole (domB, linux-control, linux-info, hello): {exits}\n"
    ));
    println!("{report}");
}
