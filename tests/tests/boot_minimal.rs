//! The minimal bundle boots through GRUB (multiboot2) under SeaBIOS and under OVMF,
//! the hypervisor prints its banner (docs/architecture.md, "Boot and bundle contract") with
//! every module's name and size, and the run ends with the success verdict. Also the harness's
//! failure paths: GRUB failing to boot, and a timeout, both leaving no process or file behind.

use std::time::{Duration, Instant};

use slipway_integration_tests::{
    Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config, line_index,
};

/// Checks the fixed banner contract against the built bundle's modules.
fn check_banner(outcome: &RunOutcome, firmware: &str, map_kind: &str) {
    let bundle = bundle("minimal");
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );

    let booted = line_index(
        outcome,
        &format!("slipway: booted via multiboot2 from {firmware}"),
    );
    // `slipway: memory map: N entries (basic|efi)`, N > 0, right after the boot line.
    let map_line = &outcome.lines[booted + 1].text;
    let entries: u32 = map_line
        .strip_prefix("slipway: memory map: ")
        .and_then(|rest| rest.strip_suffix(&format!(" entries ({map_kind})")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected the {map_kind} memory map line, got `{map_line}`"));
    assert!(entries > 0, "{map_line}");

    // One line per module, in multiboot2 order, with the size of the file on the ISO.
    assert_eq!(bundle.modules.len(), 2);
    for (index, module) in bundle.modules.iter().enumerate() {
        let size = std::fs::metadata(&module.file.path).unwrap().len();
        assert_eq!(size, module.file.size);
        assert_eq!(
            outcome.lines[booted + 2 + index].text,
            format!("slipway: module {index}: {} ({size} bytes)", module.name)
        );
    }
    let module_lines = outcome
        .hypervisor_lines()
        .filter(|l| l.starts_with("slipway: module "))
        .count();
    assert_eq!(
        module_lines,
        bundle.modules.len(),
        "one banner line per module"
    );

    // The last hypervisor line is the success exit.
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: success")
    );
}

#[test]
fn minimal_bundle_boots_under_seabios() {
    let bundle = bundle("minimal");
    let outcome = boot(&config(&bundle, Firmware::Bios, "bios"));
    check_banner(&outcome, "BIOS", "basic");
}

#[test]
fn minimal_bundle_boots_under_ovmf() {
    let bundle = bundle("minimal");
    let outcome = boot(&config(&bundle, Firmware::Uefi, "uefi"));
    check_banner(&outcome, "UEFI", "efi");
}

#[test]
fn serial_log_holds_the_raw_console() {
    let bundle = bundle("minimal");
    let mut cfg = config(&bundle, Firmware::Bios, "raw-log");
    cfg.tpm = Tpm::None;
    let outcome = boot(&cfg);
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.verdict);
    let raw = std::fs::read(&outcome.serial_log).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    for line in outcome.hypervisor_lines() {
        assert!(
            raw.contains(line),
            "`{line}` not in {}",
            outcome.serial_log.display()
        );
    }
}

/// Every process whose command line mentions `needle` (QEMU and swtpm carry the run directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn timeout_stops_qemu_and_swtpm_and_removes_the_run_directory() {
    let bundle = bundle("minimal");
    // OVMF alone takes seconds to reach GRUB: a 1 s limit always expires.
    let mut cfg = config(&bundle, Firmware::Uefi, "timeout");
    cfg.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = boot(&cfg);
    assert_eq!(outcome.verdict, Verdict::Timeout(Duration::from_secs(1)));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !outcome.run_dir.exists(),
        "{} left behind",
        outcome.run_dir.display()
    );
    let left = processes_mentioning(&outcome.run_dir.to_string_lossy());
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn grub_failure_ends_the_run_quickly_with_its_own_verdict() {
    let ws = slipway_integration_tests::workspace();
    let bundle = bundle("minimal");
    // An ISO whose grub.cfg names a module file that is not on it.
    let root = ws.bundle_output_dir("grub-failure").join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::copy(
        bundle.output_dir.join("root/boot/slipway-hypervisor"),
        root.join("boot/slipway-hypervisor"),
    )
    .unwrap();
    let cfg_text = xtask::grub::render(
        &[],
        &[xtask::grub::GrubModule {
            iso_path: "/boot/missing.bin".into(),
            name: "missing".into(),
            args: vec![],
        }],
    );
    std::fs::write(root.join("boot/grub/grub.cfg"), cfg_text).unwrap();
    let iso = ws
        .bundle_output_dir("grub-failure")
        .join("grub-failure.iso");
    xtask::builder::make_iso(&root, &iso).unwrap();

    let mut cfg = config(&bundle, Firmware::Bios, "grub-failure");
    cfg.iso = iso;
    cfg.serial_log = ws.bundle_output_dir("grub-failure").join("serial.log");
    let outcome = boot(&cfg);
    assert_eq!(
        outcome.verdict,
        Verdict::BootLoaderFailed,
        "{}",
        outcome.verdict
    );
    line_index(&outcome, xtask::grub::GRUB_FAILURE_MARKER);
    assert!(
        outcome.lines.iter().any(|l| l.text.contains("missing.bin")),
        "GRUB's error names the file"
    );
}
