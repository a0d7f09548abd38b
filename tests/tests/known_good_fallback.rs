//! Fallback to the last known-good configuration across consecutive boots of one machine: one
//! persistent swtpm state (its NV boot record carries over), bundles `test-fallback-slot-a`
//! (slot a, whose control domain reports success) and `test-fallback-slot-b` (the same files,
//! slot b requested, whose control domain never reports).
//!
//! 1. Slot a boots on a fresh TPM: the hypervisor creates the boot record (attempt 1), the
//!    control domain reports success, slot a is known good.
//! 2. Slot b boots twice: attempts 1 and 2 are counted, nothing reports.
//! 3. The third boot of slot b: the policy program sees 2 failed boots and chooses slot a; domB
//!    measures the choice and slot a's configuration, slot a's control domain starts and
//!    reports, slot a stays known good and slot b keeps its failures.
//! 4. The fourth boot of slot b falls back again (attempt 4).
//!
//! Every boot's printed steps are checked, and its PCR17-21 (the hypervisor's own replay of its
//! log) against `cargo xtask predict` given that boot's state.

use slipway_integration_tests::{Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config};
use slipway_measure::HashAlg;
use slipway_measure::events::{BootRecordStatus, BootStateRecord};
use xtask::predict::{self, PredictedLaunch};

/// The hypervisor's printed replay of its log, `PCR<n>` in SHA-256.
fn replayed(outcome: &RunOutcome, pcr: u32) -> String {
    let marker = format!("measurement: log replay PCR{pcr} sha256 ");
    outcome
        .lines
        .iter()
        .find_map(|l| {
            l.text
                .split_once(&marker)
                .map(|(_, hex)| hex.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no `{marker}` line"))
}

fn has(outcome: &RunOutcome, text: &str) -> bool {
    outcome.lines.iter().any(|l| l.text.contains(text))
}

fn assert_has(outcome: &RunOutcome, text: &str) {
    assert!(has(outcome, text), "no console line contains `{text}`");
}

/// Boots `bundle_name` on the persistent TPM state and checks its PCRs against the prediction
/// for `state`; returns the outcome and the predicted domB output.
fn boot_and_predict(
    bundle_name: &str,
    state_dir: &std::path::Path,
    label: &str,
    state: BootStateRecord,
) -> (RunOutcome, String) {
    let built = bundle(bundle_name);
    let mut run = config(&built, Firmware::Bios, label);
    run.tpm = Tpm::Swtpm;
    run.tpm_state_dir = Some(state_dir.to_owned());
    let outcome = boot(&run);
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "{label}: {}",
        outcome.verdict
    );

    let mut inputs = predict::bundle_inputs(&built).unwrap();
    inputs.boot_state = state;
    let banks = predict::parse_banks("sha1,sha256,sha384,sha512").unwrap();
    let prediction = predict::predict(&inputs, &banks, PredictedLaunch::Emulated)
        .unwrap_or_else(|e| panic!("{label}: predict: {e}"));
    for pcr in 17..=21 {
        let expected = prediction
            .pcrs
            .value(pcr, HashAlg::Sha256)
            .unwrap()
            .map(|d| xtask::verify::hex(d.as_bytes()))
            .unwrap();
        assert_eq!(
            replayed(&outcome, pcr),
            expected,
            "{label}: PCR{pcr} differs from the prediction\n{}",
            prediction.domb_output
        );
    }
    (outcome, prediction.domb_output)
}

#[test]
fn a_failing_slot_is_counted_then_the_last_known_good_slot_boots_and_is_reported() {
    let state_dir = xtask::procs::TempDir::new("fallback-tpm").unwrap();
    let counted = |attempts, good| BootStateRecord {
        status: BootRecordStatus::Counted,
        requested_slot: 1,
        attempts,
        last_known_good: good,
    };

    // 1. Slot a on a fresh TPM: the record is created, the boot reported.
    let first = BootStateRecord {
        status: BootRecordStatus::Created,
        requested_slot: 0,
        attempts: 1,
        last_known_good: None,
    };
    let (a, _) = boot_and_predict(
        "test-fallback-slot-a",
        state_dir.path(),
        "fallback-a",
        first,
    );
    assert_has(&a, "boot record: NV index 0x01005357 created (first boot)");
    assert_has(
        &a,
        "boot record: slot a requested, attempt 1 since its last success; last known-good slot none",
    );
    assert_has(&a, "[domb] config: slot a (config): 1 domains");
    assert_has(&a, "[control] boot reported successful");
    assert_has(
        &a,
        "reported a successful boot: slot a is known good (attempts of slot a: 0)",
    );

    // 2. Slot b twice: counted, never reported.
    for attempt in 1..=2 {
        let label = format!("fallback-b{attempt}");
        let (b, domb) = boot_and_predict(
            "test-fallback-slot-b",
            state_dir.path(),
            &label,
            counted(attempt, Some(0)),
        );
        assert_has(
            &b,
            &format!(
                "boot record: slot b requested, attempt {attempt} since its last success; last known-good slot a"
            ),
        );
        assert_has(
            &b,
            &format!(
                "[domb] boot state: slot b requested, attempt {attempt}, last known-good slot a"
            ),
        );
        assert_has(&b, "[domb] config: slot b (config.b): 1 domains");
        assert_has(&b, "[control] hello from slot-b");
        assert!(
            !has(&b, "chosen over the requested slot"),
            "{label}: no fallback yet"
        );
        assert!(
            !has(&b, "reported a successful boot"),
            "{label}: slot b never reports"
        );
        assert!(domb.contains("config: slot b (config.b)"), "{domb}");
    }

    // 3. The third boot of slot b: two failures, the program falls back to slot a.
    let (c, domb) = boot_and_predict(
        "test-fallback-slot-b",
        state_dir.path(),
        "fallback-b3",
        counted(3, Some(0)),
    );
    assert_has(
        &c,
        "boot record: slot b requested, attempt 3 since its last success; last known-good slot a",
    );
    assert_has(
        &c,
        "[domb] policy: slot a chosen over the requested slot b: slot b failed 2 times: falling back to the last known-good slot a",
    );
    assert_has(&c, "[domb] measure: slot choice -> PCR19");
    assert_has(
        &c,
        "boot record: the policy chose slot a over the requested slot b",
    );
    assert_has(&c, "[domb] config: slot a (config): 1 domains");
    assert_has(&c, "[domb] policy: rule (machine-class:edge): start-listed");
    assert_has(&c, "[control] hello from slot-a");
    assert_has(&c, "[control] boot reported successful");
    assert_has(
        &c,
        "reported a successful boot: slot a is known good (attempts of slot b: 3)",
    );
    assert!(
        domb.contains("policy: slot a chosen over the requested slot b"),
        "predict replays the fallback:\n{domb}"
    );
    // 4. Slot b keeps its failures: the next boot of slot b falls back again.
    let (d, _) = boot_and_predict(
        "test-fallback-slot-b",
        state_dir.path(),
        "fallback-b4",
        counted(4, Some(0)),
    );
    assert_has(
        &d,
        "[domb] policy: slot a chosen over the requested slot b: slot b failed 3 times",
    );
    assert_has(
        &d,
        "reported a successful boot: slot a is known good (attempts of slot b: 4)",
    );

    // The choice is measured: a prediction without the failures (attempt 1) differs in PCR19.
    let built = bundle("test-fallback-slot-b");
    let mut inputs = predict::bundle_inputs(&built).unwrap();
    inputs.boot_state = counted(1, Some(0));
    let banks = predict::parse_banks("sha256").unwrap();
    let other = predict::predict(&inputs, &banks, PredictedLaunch::Emulated).unwrap();
    let other19 = xtask::verify::hex(
        other
            .pcrs
            .value(19, HashAlg::Sha256)
            .unwrap()
            .unwrap()
            .as_bytes(),
    );
    assert_ne!(
        replayed(&c, 19),
        other19,
        "PCR19 binds the boot state and the choice"
    );
}
