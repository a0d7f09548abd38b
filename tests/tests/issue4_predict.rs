//! Issue 4: `cargo xtask predict` computes PCR17 from the bundle's files alone, and a real boot
//! of the same bundle (emulated dynamic launch: the harness measures the region the hypervisor's
//! MLE header declares, from guest memory) produces exactly that PCR17 in every bank of a
//! default swtpm, and of a one-bank (sha256) swtpm. The prediction runs domB's real launch
//! against hv-core's real dispatcher, so the same call also checks that the demo launch
//! configuration reaches hand-off on the host.
//!
//! One boot per TPM setup, SeaBIOS only (the measured region does not depend on the firmware).

use slipway_integration_tests::{Firmware, Tpm, Verdict, boot, bundle, config};
use xtask::predict::{self, PredictedLaunch};

fn check(banks: Option<&str>, test: &str) {
    let built = bundle("demo");
    let inputs = predict::bundle_inputs(&built).expect("the bundle's files are readable");
    let bank_set = predict::parse_banks(banks.unwrap_or("sha1,sha256,sha384,sha512")).unwrap();
    let prediction = predict::predict(&inputs, &bank_set, PredictedLaunch::Emulated)
        .unwrap_or_else(|e| panic!("predict: {e}"));

    let mut run = config(&built, Firmware::Bios, test);
    run.tpm = Tpm::Swtpm;
    run.tpm_banks = banks.map(str::to_owned);
    let outcome = boot(&run);
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    let launch = outcome
        .launch
        .as_ref()
        .expect("a TPM run has a launch report");
    let measured = launch
        .launch
        .measured()
        .unwrap_or_else(|| panic!("the boot's launch request was not measured: {launch:?}"));
    assert_eq!(measured.len(), bank_set.len(), "{measured:?}");
    for digest in measured.iter() {
        let alg = digest.hash_alg().expect("a bank Slipway hashes");
        let predicted = prediction
            .pcrs
            .value(17, alg)
            .unwrap()
            .expect("predicted bank");
        assert_eq!(&predicted, digest, "PCR17 {alg}: prediction vs the machine");
        assert!(
            prediction
                .pcr_lines()
                .contains(&format!("PCR17 {} {predicted}", alg.name())),
            "{}",
            prediction.pcr_lines()
        );
    }
    assert!(
        outcome
            .hypervisor_lines()
            .any(|l| l.starts_with("slipway: launch: emulated dynamic launch verified")),
        "the hypervisor confirms the launch itself"
    );
}

#[test]
fn predicted_pcr17_equals_the_machines_in_four_banks() {
    check(None, "issue4-predict-four-banks");
}

#[test]
fn predicted_pcr17_equals_the_machines_with_one_bank() {
    check(Some("sha256"), "issue4-predict-one-bank");
}
