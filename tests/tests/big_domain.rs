//! Domains larger than 3 GiB on a machine with more than 4 GiB (`images/test-big-domain`). QEMU
//! gets 5 GiB (q35: 2 GiB below 4 GiB, the rest above); the hypervisor must use RAM on both
//! sides of 4 GiB and say how much; a 3.5 GiB domain gets RAM `[0, 3 GiB)` and
//! `[4 GiB, 4.5 GiB)` (`platform::DomainRam`) in its start-info memory map. The hostile guest in
//! `ram-top` mode writes and reads back the first and last word of each RAM range (above 4 GiB
//! through its own page directory), then writes into the hole at 3 GiB, which is not RAM: the
//! hypervisor must stop it there. An 8 MiB domain does the same in its one range.

use std::sync::OnceLock;
use std::time::Duration;

use slipway_domb_core::planner::{ACPI_TABLES_GPA, ACPI_TABLES_SIZE};
use slipway_integration_tests::{Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config};
use slipway_protocol::platform::{DOMAIN_HIGH_RAM_START, DOMAIN_RAM_HOLE_START};

const GIB: u64 = 1 << 30;

fn outcome() -> &'static RunOutcome {
    static OUTCOME: OnceLock<RunOutcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let built = bundle("test-big-domain");
        let mut config = config(&built, Firmware::Bios, "big-domain");
        // No TPM: its shared RAM file would be written through (3.5 GiB zeroed by the
        // hypervisor); without it QEMU's RAM stays anonymous memory.
        config.tpm = Tpm::None;
        config.timeout = Duration::from_secs(built.manifest.run.timeout_seconds.unwrap_or(240));
        boot(&config)
    })
}

fn texts(outcome: &RunOutcome) -> Vec<&str> {
    outcome.lines.iter().map(|l| l.text.as_str()).collect()
}

/// `ram-top: RAM [<start>, <end>): wrote <w> at <gpa>, read back <r>` -> (start, end, w, gpa, r).
fn ram_top(line: &str) -> Option<(u64, u64, u64, u64, u64)> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let rest = line.strip_prefix("ram-top: RAM [")?;
    let (start, rest) = rest.split_once(", ")?;
    let (end, rest) = rest.split_once("): wrote ")?;
    let (wrote, rest) = rest.split_once(" at ")?;
    let (gpa, read) = rest.split_once(", read back ")?;
    Some((hex(start)?, hex(end)?, hex(wrote)?, hex(gpa)?, hex(read)?))
}

fn domain_lines<'a>(lines: &[&'a str], name: &str) -> Vec<&'a str> {
    let prefix = format!("[{name}] ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

#[test]
fn the_hypervisor_uses_ram_above_4_gib() {
    let lines = texts(outcome());
    // `post-launch: validated ...; N MiB free RAM in K ranges: B MiB below 4 GiB, A MiB above`
    let line = lines
        .iter()
        .find(|l| l.contains("MiB below 4 GiB"))
        .unwrap_or_else(|| panic!("no RAM summary line: {lines:#?}"));
    let mib = |word: &str| -> u64 {
        let before = line.split(word).next().unwrap();
        before.split_whitespace().last().unwrap().parse().unwrap()
    };
    let below = mib(" MiB below 4 GiB");
    let above = mib(" MiB above");
    assert!(
        above >= 3 * 1024 - 64,
        "`{line}`: QEMU gave 3 GiB above 4 GiB"
    );
    assert!(below >= 1024, "`{line}`");
}

#[test]
fn a_3_5_gib_domain_reads_back_its_top_word_above_4_gib_and_is_stopped_in_the_hole() {
    let outcome = outcome();
    let lines = texts(outcome);
    let big = domain_lines(&lines, "big");
    assert!(
        !big.iter().any(|l| l.starts_with("FAILED")),
        "big: {big:#?}"
    );
    let checks: Vec<_> = big.iter().filter_map(|l| ram_top(l)).collect();
    let top = DOMAIN_HIGH_RAM_START + GIB / 2;
    // RAM below the ACPI tables' reserve, between it and the hole, and above 4 GiB.
    let acpi_end = ACPI_TABLES_GPA + ACPI_TABLES_SIZE;
    for (start, end) in [
        (0x2000, ACPI_TABLES_GPA),
        (acpi_end, DOMAIN_RAM_HOLE_START),
        (DOMAIN_HIGH_RAM_START, top),
    ] {
        for gpa in [start, end - 8] {
            let check = checks
                .iter()
                .find(|c| c.3 == gpa)
                .unwrap_or_else(|| panic!("no check of {gpa:#x}: {big:#?}"));
            assert_eq!((check.0, check.1), (start, end), "{check:x?}");
            assert_eq!(check.2, check.4, "{gpa:#x} did not read back: {check:x?}");
        }
    }
    // The domain's RAM ends at 4.5 GiB: nothing reports RAM past it.
    assert!(checks.iter().all(|c| c.1 <= top), "{checks:x?}");
    let stop = format!(
        "slipway: domain big stopped: write access at guest-physical {DOMAIN_RAM_HOLE_START:#x} outside its memory"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&stop)),
        "expected `{stop}`; big's lines: {big:#?}"
    );
}

#[test]
fn a_small_domain_next_to_it_keeps_its_one_range() {
    let outcome = outcome();
    let lines = texts(outcome);
    let small = domain_lines(&lines, "small");
    let checks: Vec<_> = small.iter().filter_map(|l| ram_top(l)).collect();
    assert!(
        checks.iter().any(|c| c.3 == (8 << 20) - 8 && c.2 == c.4),
        "small: {small:#?}"
    );
    assert!(checks.iter().all(|c| c.1 <= 8 << 20), "{checks:x?}");
    let stop = format!(
        "slipway: domain small stopped: write access at guest-physical {DOMAIN_RAM_HOLE_START:#x} outside its memory"
    );
    assert!(lines.iter().any(|l| l.starts_with(&stop)), "{small:#?}");
}

#[test]
fn the_run_ends_once_both_domains_are_stopped() {
    // Stopping a domain by rule is not a failure of the launch.
    let outcome = outcome();
    assert_eq!(outcome.verdict, Verdict::Success, "{:#?}", texts(outcome));
}
