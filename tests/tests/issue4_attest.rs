//! Issue 4: the measured demo launch with the attest guest as control domain
//! (`images/test-measured-attest`): the harness types a fresh nonce on the control domain's
//! console, the domain quotes PCR17-21 in every active bank with the attestation key it creates,
//! and the host checks the quote (key, signature, nonce) against `cargo xtask predict`'s values
//! for the same bundle, in a default (four-bank) swtpm and in a one-bank (sha256) swtpm. Without
//! a TPM the launch is unmeasured, said loudly, and the default policy (the bundle has no policy
//! node) starts only the recovery domain.
//!
//! One SeaBIOS boot per case.

use std::time::{SystemTime, UNIX_EPOCH};

use slipway_integration_tests::{Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config};
use xtask::ConsoleInput;
use xtask::predict::{self, PredictedLaunch};
use xtask::verify::{self, Alg, ParsedLog, Rejection, Requirements};

const BUNDLE: &str = "test-measured-attest";

/// A nonce no earlier run can have been asked for: time and process id.
fn fresh_nonce() -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut nonce = nanos.to_be_bytes().to_vec();
    nonce.extend(std::process::id().to_be_bytes());
    nonce
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attest_run(banks: Option<&str>, test: &str, nonce: &[u8]) -> RunOutcome {
    let built = bundle(BUNDLE);
    let mut run = config(&built, Firmware::Bios, test);
    run.tpm = Tpm::Swtpm;
    run.tpm_banks = banks.map(str::to_owned);
    run.console_input = vec![ConsoleInput {
        after_line_containing: "attest: nonce?".into(),
        bytes: format!("{}\r", hex(nonce)).into_bytes(),
    }];
    let outcome = boot(&run);
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    outcome
}

fn transcript_text(outcome: &RunOutcome) -> String {
    outcome
        .lines
        .iter()
        .map(|l| format!("{}\n", l.text))
        .collect()
}

fn check_quote_against_prediction(banks: Option<&str>, test: &str) {
    let nonce = fresh_nonce();
    let outcome = attest_run(banks, test, &nonce);
    let transcript = verify::parse_transcript(&transcript_text(&outcome))
        .unwrap_or_else(|e| panic!("transcript: {e}"));
    assert_eq!(transcript.nonce.as_deref(), Some(&nonce[..]));

    let bank_set = predict::parse_banks(banks.unwrap_or("sha1,sha256,sha384,sha512")).unwrap();
    let built = bundle(BUNDLE);
    let inputs = predict::bundle_inputs(&built).unwrap();
    let prediction = predict::predict(&inputs, &bank_set, PredictedLaunch::Emulated)
        .unwrap_or_else(|e| panic!("predict: {e}"));

    // The quote verifies with the printed key and the nonce, covers PCR17-21 in every active
    // bank, and its digest is the prediction's.
    let selection = verify::check_quote_attests(&transcript, &nonce, &prediction.pcrs)
        .unwrap_or_else(|e| {
            panic!(
                "the quote does not attest the predicted PCR17-21: {e}\npredicted:\n{}",
                prediction.pcr_lines()
            )
        });
    assert_eq!(selection.len(), bank_set.len(), "{selection:?}");
    // A wrong nonce is refused.
    let mut other = nonce.clone();
    other[0] ^= 1;
    let error = verify::verify(
        &transcript,
        &Requirements {
            nonce: other,
            bank: Alg::Sha256,
            expected_log: prediction.log.clone(),
        },
    )
    .unwrap_err();
    assert!(matches!(error, Rejection::Quote(_)), "{error}");
}

#[test]
fn quote_attests_the_predicted_pcrs_in_four_banks() {
    check_quote_against_prediction(None, "issue4-attest-four-banks");
}

#[test]
fn quote_attests_the_predicted_pcrs_with_one_bank() {
    check_quote_against_prediction(Some("sha256"), "issue4-attest-one-bank");
}

/// The whole fleet check of `cargo xtask verify`: needs the event log in the control domain's
/// log window (`docs/architecture.md`, "The log reaches control domains"), which the hypervisor
/// and domB do not provide yet.
#[test]
#[ignore = "the event-log window of control domains is not implemented yet (hypervisor/domB)"]
fn verify_accepts_the_transcript() {
    let nonce = fresh_nonce();
    let outcome = attest_run(None, "issue4-attest-verify", &nonce);
    let transcript = verify::parse_transcript(&transcript_text(&outcome)).unwrap();
    let built = bundle(BUNDLE);
    let inputs = predict::bundle_inputs(&built).unwrap();
    let banks = ParsedLog::parse(&transcript.slipway_log)
        .unwrap_or_else(|e| panic!("the transcript's log: {e}"))
        .header()
        .banks;
    let prediction = predict::predict(&inputs, &banks, PredictedLaunch::Emulated).unwrap();
    verify::verify(
        &transcript,
        &Requirements {
            nonce,
            bank: Alg::Sha256,
            expected_log: prediction.log,
        },
    )
    .unwrap_or_else(|e| panic!("verify: {e}"));
}

#[test]
fn without_a_tpm_the_launch_is_unmeasured_and_only_recovery_starts() {
    let built = bundle(BUNDLE);
    let mut run = config(&built, Firmware::Bios, "issue4-attest-no-tpm");
    run.tpm = Tpm::None;
    let outcome = boot(&run);
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    assert!(
        outcome
            .hypervisor_lines()
            .any(|l| l.starts_with("slipway: UNMEASURED LAUNCH")),
        "the hypervisor says so loudly"
    );
    assert!(
        outcome.has_line("[domb] policy: unmeasured-launch: recovery-only"),
        "the decision is printed"
    );
    let started: Vec<&str> = outcome
        .milestones
        .iter()
        .filter_map(|m| m.name.strip_prefix("started:"))
        .collect();
    assert_eq!(started, ["control"], "only the recovery domain starts");
}
