//! The tables disassembled by ACPICA's `iasl -d` (Debian `acpica-tools`, installed by
//! `cargo xtask setup`): an independent parser of every table and of the DSDT's AML.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(std::format!("slipway-acpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Disassembles `table` with `iasl -d`; returns the `.dsl` text.
fn disassemble(dir: &Path, file: &str, table: &[u8]) -> String {
    let path = dir.join(std::format!("{file}.dat"));
    std::fs::write(&path, table).unwrap();
    let output = Command::new("iasl")
        .arg("-d")
        .arg(&path)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "`iasl` not runnable ({e}): install Debian's acpica-tools (`cargo xtask setup` does)"
            )
        });
    let dsl = dir.join(std::format!("{file}.dsl"));
    assert!(
        output.status.success() && dsl.exists(),
        "iasl -d {file}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(dsl).unwrap()
}

/// Whether `text` has a line with all of `words`, in order (iasl aligns its columns with spaces).
fn has_line(text: &str, words: &[&str]) -> bool {
    text.lines().any(|line| {
        let mut rest = line;
        words.iter().all(|w| match rest.find(w) {
            Some(at) => {
                rest = &rest[at + w.len()..];
                true
            }
            None => false,
        })
    })
}

#[test]
fn iasl_reads_back_every_table_as_built() {
    let (blob, layout) = build_vec(&config(&[0, 2, 5], Some(LOG)));
    let dir = scratch("iasl");
    let slice = |(at, len): (usize, usize)| &blob[at..at + len];
    let xsdt = disassemble(&dir, "xsdt", slice(layout.xsdt));
    let fadt = disassemble(&dir, "facp", slice(layout.fadt));
    let dsdt = disassemble(&dir, "dsdt", slice(layout.dsdt));
    let madt = disassemble(&dir, "apic", slice(layout.madt));
    let tpm2 = disassemble(&dir, "tpm2", slice(layout.tpm2.unwrap()));
    for (name, text) in [
        ("XSDT", &xsdt),
        ("FADT", &fadt),
        ("DSDT", &dsdt),
        ("MADT", &madt),
        ("TPM2", &tpm2),
    ] {
        // iasl checks the length and says "Incorrect checksum, should be .." on a bad sum.
        assert!(
            !text.contains("Incorrect") && !text.contains("Invalid"),
            "{name}:\n{text}"
        );
        assert!(
            has_line(text, &["Oem ID", "\"SLIPWY\""]) || name == "DSDT",
            "{name}:\n{text}"
        );
    }
    let address = |(at, _): (usize, usize)| std::format!("{:016X}", BASE + at as u64);
    assert!(
        has_line(&xsdt, &["ACPI Table Address   0", &address(layout.fadt)]),
        "{xsdt}"
    );
    assert!(
        has_line(&xsdt, &["ACPI Table Address   1", &address(layout.madt)]),
        "{xsdt}"
    );
    assert!(
        has_line(
            &xsdt,
            &["ACPI Table Address   2", &address(layout.tpm2.unwrap())]
        ),
        "{xsdt}"
    );

    assert!(has_line(&fadt, &["Revision", ": 06"]), "{fadt}");
    assert!(has_line(&fadt, &["Hardware Reduced (V5)", ": 1"]), "{fadt}");
    assert!(
        has_line(&fadt, &["CMOS RTC Not Present (V5)", ": 1"]),
        "{fadt}"
    );
    assert!(
        has_line(&fadt, &["8042 Present on ports 60/64 (V2)", ": 0"]),
        "{fadt}"
    );
    assert!(
        has_line(&fadt, &["FACS Address", ": 0000000000000000"]),
        "{fadt}"
    );
    assert!(
        has_line(&fadt, &["DSDT Address", &address(layout.dsdt)]),
        "{fadt}"
    );
    assert!(
        has_line(&fadt, &["DSDT Address", &address(layout.dsdt)[8..]]),
        "{fadt}"
    );

    assert!(dsdt.contains("Device (COM1)"), "{dsdt}");
    assert!(dsdt.contains("Name (_HID, EisaId (\"PNP0501\")"), "{dsdt}");
    assert!(has_line(&dsdt, &["IO (Decode16,"]), "{dsdt}");
    assert!(has_line(&dsdt, &["0x03F8", "Range Minimum"]), "{dsdt}");
    assert!(has_line(&dsdt, &["0x08", "Length"]), "{dsdt}");
    assert!(!dsdt.contains("IRQ"), "the UART has no interrupt: {dsdt}");
    assert!(dsdt.contains("Device (TPM)"), "{dsdt}");
    assert!(dsdt.contains("Name (_HID, \"MSFT0101\""), "{dsdt}");
    assert!(has_line(&dsdt, &["Memory32Fixed (ReadWrite,"]), "{dsdt}");
    assert!(has_line(&dsdt, &["0xFED40000", "Address Base"]), "{dsdt}");
    assert!(has_line(&dsdt, &["0x00005000", "Address Length"]), "{dsdt}");

    assert!(
        has_line(&madt, &["Local Apic Address", ": FEE00000"]),
        "{madt}"
    );
    assert!(has_line(&madt, &["PC-AT Compatibility", ": 0"]), "{madt}");
    let entries: Vec<&str> = madt
        .lines()
        .filter(|l| l.contains("Local Apic ID"))
        .collect();
    assert_eq!(entries.len(), 3, "{madt}");
    for (entry, id) in entries.iter().zip(["00", "02", "05"]) {
        assert!(entry.ends_with(&std::format!(": {id}")), "{entry}");
    }
    assert_eq!(madt.matches("Processor Enabled : 1").count(), 3, "{madt}");

    assert!(has_line(&tpm2, &["Revision", ": 04"]), "{tpm2}");
    assert!(has_line(&tpm2, &["Start Method", ": 06"]), "{tpm2}");
    assert!(
        has_line(&tpm2, &["Minimum Log Length", ": 00010000"]),
        "{tpm2}"
    );
    assert!(
        has_line(&tpm2, &["Log Address", ": 000000007F000000"]),
        "{tpm2}"
    );

    // The DSDT's source compiled back by iasl gives the same AML (headers differ in the
    // compiler ID and checksum).
    let output = Command::new("iasl")
        .args(["-p", "recompiled"])
        .arg(dir.join("dsdt.dsl"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let recompiled = std::fs::read(dir.join("recompiled.aml")).unwrap();
    assert_eq!(
        &recompiled[36..],
        &slice(layout.dsdt)[36..],
        "AML differs from iasl's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
