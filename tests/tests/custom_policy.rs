//! A custom launch-policy program (`images/policies/machine-class`, bundle
//! `images/test-policy-machine-class`): domB measures the program (PCR19) and runs it in its
//! interpreter; on a machine of class "edge" it starts control and hello but not extra. The
//! attest control domain quotes PCR17-21, and the quote and `verify` on the run's transcript
//! check against `cargo xtask predict`, which runs the same program in the same interpreter on
//! the host: the replay equals the run, decisions included.
//!
//! One SeaBIOS boot.

use slipway_integration_tests::{Firmware, Tpm, Verdict, boot, bundle, config, started_domains};
use xtask::predict::{self, PredictedLaunch};
use xtask::verify::{self, Alg, Requirements, fresh_nonce, nonce_input};

const BUNDLE: &str = "test-policy-machine-class";

#[test]
fn a_custom_policy_program_starts_its_class_and_the_run_equals_the_prediction() {
    let nonce = fresh_nonce().unwrap_or_else(|e| panic!("{e}"));
    let built = bundle(BUNDLE);
    let mut run = config(&built, Firmware::Bios, "machine-class");
    run.tpm = Tpm::Swtpm;
    run.console_input = vec![nonce_input(&nonce)];
    let outcome = boot(&run);
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    assert!(
        outcome
            .lines
            .iter()
            .any(|l| l.text.starts_with("[domb] policy program: module policy (")),
        "domB runs the policy module"
    );
    assert!(
        outcome.has_line("[domb] policy: rule (machine-class:edge): start-listed"),
        "the program's decision is printed"
    );
    assert_eq!(
        started_domains(&outcome),
        ["control", "hello"],
        "the class's domains start, extra does not"
    );
    let timing = outcome
        .lines
        .iter()
        .find(|l| l.text.starts_with("[domb] policy: program run"))
        .expect("domB prints the program's run time");
    println!("{}", timing.text);

    let inputs = predict::bundle_inputs(&built).unwrap();
    let banks = predict::parse_banks("sha1,sha256,sha384,sha512").unwrap();
    let prediction = predict::predict(&inputs, &banks, PredictedLaunch::Emulated)
        .unwrap_or_else(|e| panic!("predict: {e}"));
    assert!(
        prediction
            .domb_output
            .contains("policy: rule (machine-class:edge): start-listed"),
        "{}",
        prediction.domb_output
    );
    let transcript = verify::parse_transcript(&verify::transcript_of(&outcome))
        .unwrap_or_else(|e| panic!("transcript: {e}"));
    verify::check_quote_attests(&transcript, &nonce, &prediction.pcrs).unwrap_or_else(|e| {
        panic!(
            "the quote does not attest the predicted PCR17-21: {e}\npredicted:\n{}",
            prediction.pcr_lines()
        )
    });
    verify::verify(
        &transcript,
        &Requirements {
            nonce: nonce.clone(),
            bank: Alg::Sha256,
            expected_log: prediction.log.clone(),
        },
    )
    .unwrap_or_else(|e| panic!("verify: {e}"));
}
