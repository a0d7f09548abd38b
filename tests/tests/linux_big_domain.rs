//! A Linux domain larger than 3 GiB on a machine with more than 4 GiB (`images/test-linux-big`):
//! Debian's stock kernel with the initramfs's info role in a 3.5 GiB domain, on a 5 GiB QEMU
//! machine (q35: 2 GiB below 4 GiB, 3 GiB above) without a TPM (the bundle's policy starts the
//! domain on an unmeasured launch). The domain's RAM is `[0, 3 GiB)` and `[4 GiB, 4.5 GiB)`; the
//! kernel's MemTotal can only exceed 3 GiB if Linux took the range above 4 GiB from the start
//! info's memory map and runs in it. The domain then powers off through ACPI S5.

use std::time::Duration;

use slipway_integration_tests::{Firmware, Tpm, Verdict, boot, bundle, config};

const KIB_PER_GIB: u64 = 1 << 20;

#[test]
fn a_3_5_gib_linux_domain_boots_uses_ram_above_4_gib_and_powers_off() {
    let built = bundle("test-linux-big");
    let mut config = config(&built, Firmware::Bios, "linux-big");
    // No TPM: its shared RAM file would be written through by the zeroing of 3.5 GiB; without
    // it QEMU's RAM stays anonymous memory.
    config.tpm = Tpm::None;
    // Decline the init's shell offer at once (it would power off after its wait anyway).
    config
        .console_input
        .push(xtask::linux_initramfs::shell_offer_answer(false));
    config.timeout = Duration::from_secs(built.manifest.run.timeout_seconds.unwrap_or(300));
    let outcome = boot(&config);
    let texts: Vec<&str> = outcome.lines.iter().map(|l| l.text.as_str()).collect();
    let lines: Vec<&str> = texts
        .iter()
        .filter_map(|l| l.strip_prefix("[linux-big] "))
        .collect();

    assert!(
        lines.contains(&"info: nproc 1"),
        "linux-big printed no `info: nproc 1`: {lines:#?}"
    );
    let kib: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("info: memtotal-kib "))
        .unwrap_or_else(|| panic!("linux-big printed no memtotal: {lines:#?}"))
        .parse()
        .unwrap();
    // MemTotal is the RAM the kernel manages: the 3.5 GiB less the kernel's image (physical
    // 16-74 MiB), its page structures and reservations. Below 3 GiB of RAM lies under the
    // hole, so more than 3 GiB means the range above 4 GiB is in use.
    assert!(
        (3 * KIB_PER_GIB..7 * KIB_PER_GIB / 2).contains(&kib),
        "MemTotal {kib} KiB for a 3.5 GiB domain (must be above 3 GiB, below 3.5 GiB)"
    );
    assert!(lines.contains(&"info: done"), "{lines:#?}");
    assert!(
        texts
            .iter()
            .any(|l| l.starts_with("slipway: domain linux-big powered off (ACPI S5)")),
        "the hypervisor reported no ACPI S5 power-off of linux-big: {texts:#?}"
    );
    assert_eq!(outcome.verdict, Verdict::Success, "{texts:#?}");
}
