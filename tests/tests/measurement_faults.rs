//! Measurement fails closed on a failing TPM. `images/test-measured-attest` (control domain
//! `control`, the attest guest with the recovery capability, and `hello`) boots once per
//! `PCR_Extend` of its measured launch with `tpm_fault=N` on the hypervisor command line, so the
//! N-th extend fails as a TPM that stopped answering would. For every N: either the failure comes
//! before the hand-off, and only the policy's tpm-unavailable fallback (`control`) starts and its
//! attestation is rejected by `verify`; or it comes while sealing the log at hand-off, and the
//! hand-off is refused and nothing starts. The run ends with the failure verdict either way.
//! A boot with `tpm_fault` beyond the sequence is the control case: `verify` accepts it against
//! the prediction for the same command line, so each rejection is the failure's doing.

use slipway_integration_tests::{
    Firmware, RunConfig, RunOutcome, Tpm, Verdict, boot, bundle, iso_variant, started_domains,
};
use slipway_measure::EventLog;
use slipway_measure::events::{EV_SEPARATOR, EV_SLIPWAY_DOMAIN_BUILD};
use xtask::predict::{self, PredictedLaunch, Prediction};
use xtask::verify::{self, Alg, Requirements, fresh_nonce, nonce_input};

const BUNDLE: &str = "test-measured-attest";
const MULTIBOOT: &str = "if multiboot2 /boot/slipway-hypervisor console=com1\n";

/// The prediction for the bundle with `tpm_fault=n` added to the hypervisor command line.
fn prediction(n: u32) -> Prediction {
    let built = bundle(BUNDLE);
    let mut inputs = predict::bundle_inputs(&built).unwrap();
    inputs
        .hypervisor_cmdline
        .push_str(&format!(" tpm_fault={n}"));
    let banks = predict::parse_banks("sha1,sha256,sha384,sha512").unwrap();
    predict::predict(&inputs, &banks, PredictedLaunch::Emulated).unwrap_or_else(|e| panic!("{e}"))
}

fn faulty_boot(n: u32, nonce: &[u8]) -> RunOutcome {
    let built = bundle(BUNDLE);
    let iso = iso_variant(&built, &format!("tpm-fault-{n}"), |cfg| {
        assert!(cfg.contains(MULTIBOOT), "{cfg}");
        cfg.replacen(
            MULTIBOOT,
            &format!("{} tpm_fault={n}\n", MULTIBOOT.trim_end()),
            1,
        )
    });
    let mut run = RunConfig::new(&iso, iso.with_extension("serial.log"));
    run.firmware = Firmware::Bios;
    run.tpm = Tpm::Swtpm;
    run.smp = 2;
    run.console_input = vec![nonce_input(nonce)];
    boot(&run)
}

/// The extends of the prediction's sequence, and how many of them seal the log at hand-off.
fn sequence(prediction: &Prediction) -> (u32, u32) {
    let log = EventLog::parse(&prediction.log).unwrap();
    let events: Vec<_> = log
        .events()
        .map(|e| e.unwrap())
        .filter(|e| (19..=21).contains(&e.pcr))
        .collect();
    let seal = events
        .iter()
        .filter(|e| e.event_type == EV_SLIPWAY_DOMAIN_BUILD || e.event_type == EV_SEPARATOR)
        .count();
    (events.len() as u32, seal as u32)
}

fn requirements(nonce: &[u8], prediction: &Prediction) -> Requirements {
    Requirements {
        nonce: nonce.to_vec(),
        bank: Alg::Sha256,
        expected_log: prediction.log.clone(),
    }
}

/// Boots with extend `n` failing and checks the fail-closed outcome.
fn check_fault(n: u32) {
    let prediction = prediction(n);
    let (extends, seal) = sequence(&prediction);
    assert!(
        n <= extends,
        "extend {n} is inside the sequence of {extends}"
    );
    let nonce = fresh_nonce().unwrap();
    let outcome = faulty_boot(n, &nonce);
    assert_eq!(
        outcome.verdict,
        Verdict::Failure,
        "extend {n}: the launch failed"
    );
    assert!(
        outcome.has_line(&format!(
            "slipway: measurement: FAULT INJECTION: extend {n} of this boot will fail"
        )),
        "extend {n}: the injection is announced"
    );
    assert!(
        outcome
            .hypervisor_lines()
            .any(|l| l.starts_with("slipway: LAUNCH FAILED: measurement stopped")),
        "extend {n}: the failure is reported"
    );
    let started = started_domains(&outcome);
    if n <= extends - seal {
        assert_eq!(
            started,
            ["control"],
            "extend {n}: only the tpm-unavailable fallback starts"
        );
        assert!(
            outcome.has_line("[domb] policy: tpm-unavailable: recovery-only"),
            "extend {n}: domB applied the tpm-unavailable rule"
        );
        let text = verify::transcript_of(&outcome);
        if let Ok(transcript) = verify::parse_transcript(&text) {
            let verdict = verify::verify(&transcript, &requirements(&nonce, &prediction));
            assert!(
                verdict.is_err(),
                "extend {n}: verify must not accept a run whose measurement failed"
            );
        }
    } else {
        assert!(
            started.is_empty(),
            "extend {n}: nothing starts: {started:?}"
        );
        assert!(
            outcome
                .hypervisor_lines()
                .any(|l| l.starts_with("slipway: hand-off refused")),
            "extend {n}: the hand-off is refused"
        );
    }
}

#[test]
fn an_injection_beyond_the_sequence_is_verified_against_its_prediction() {
    let prediction = prediction(999);
    let nonce = fresh_nonce().unwrap();
    let outcome = faulty_boot(999, &nonce);
    assert_eq!(outcome.verdict, Verdict::Success);
    let transcript = verify::parse_transcript(&verify::transcript_of(&outcome)).unwrap();
    verify::verify(&transcript, &requirements(&nonce, &prediction))
        .unwrap_or_else(|e| panic!("the fault-free run with tpm_fault=999 is accepted: {e}"));
}

/// Every extend of the sequence, split over a few tests so they run side by side.
fn check_every(part: u32, parts: u32) {
    let (extends, _) = sequence(&prediction(1));
    for n in (1..=extends).filter(|n| n % parts == part) {
        check_fault(n);
    }
}

#[test]
fn every_failing_extend_fails_closed_part_one() {
    check_every(0, 3);
}

#[test]
fn every_failing_extend_fails_closed_part_two() {
    check_every(1, 3);
}

#[test]
fn every_failing_extend_fails_closed_part_three() {
    check_every(2, 3);
}
