//! The measured demo launch with the attest guest as control domain
//! (`images/test-measured-attest`): the harness types a fresh nonce on the control domain's
//! console, the domain quotes PCR17-21 in every active bank with the attestation key it creates,
//! and the host checks the quote (key, signature, nonce) against `cargo xtask predict`'s values
//! for the same bundle (and the harness's measured PCR17 against predict's), in a default
//! (four-bank) swtpm and in a one-bank (sha256) swtpm; then `verify`'s whole decision on the
//! run's own transcript, with the event log the hypervisor mapped into the control domain.
//! Without a TPM the launch is unmeasured, said loudly, and the default policy (the bundle has
//! no policy node) starts only the recovery domain.
//!
//! One SeaBIOS boot per case.

use slipway_integration_tests::{
    Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config, started_domains,
};
use xtask::predict::{self, PredictedLaunch};
use xtask::verify::{self, Alg, ParsedLog, Rejection, Requirements, fresh_nonce, nonce_input};

const BUNDLE: &str = "test-measured-attest";

fn nonce() -> Vec<u8> {
    fresh_nonce().unwrap_or_else(|e| panic!("{e}"))
}

fn attest_run(banks: Option<&str>, test: &str, nonce: &[u8]) -> RunOutcome {
    let built = bundle(BUNDLE);
    let mut run = config(&built, Firmware::Bios, test);
    run.tpm = Tpm::Swtpm;
    run.tpm_banks = banks.map(str::to_owned);
    run.console_input = vec![nonce_input(nonce)];
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
    verify::transcript_of(outcome)
}

/// One measured boot: the quote checks against the prediction (and the harness measured the
/// predicted PCR17). Returns what later checks need.
fn check_quote_against_prediction(
    banks: Option<&str>,
    test: &str,
) -> (Vec<u8>, verify::Transcript, predict::Prediction) {
    let nonce = nonce();
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
    // The harness (playing the CPU) measured exactly the predicted PCR17, in every bank.
    let launch = outcome
        .launch
        .as_ref()
        .expect("a TPM run has a launch report");
    let measured = launch
        .launch
        .measured()
        .unwrap_or_else(|| panic!("the launch request was not measured: {launch:?}"));
    assert_eq!(measured.len(), bank_set.len());
    for digest in measured.iter() {
        let alg = digest.hash_alg().expect("a bank Slipway hashes");
        assert_eq!(
            prediction.pcrs.value(17, alg).unwrap().as_ref(),
            Some(digest),
            "PCR17 {alg:?}"
        );
    }
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
    (nonce, transcript, prediction)
}

/// Offset of a byte inside the first `PT_LOAD` segment's file bytes of an ELF64 image (a byte
/// the loader copies into the domain).
fn loaded_byte(elf: &[u8]) -> usize {
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let phoff = u64_at(32);
    let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
    (0..phnum)
        .map(|i| phoff + 56 * i)
        .find(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| u64_at(ph + 8) + u64_at(ph + 32) / 2)
        .expect("a PT_LOAD segment")
}

/// The whole fleet check of `cargo xtask verify` on a run's own transcript (quote, nonce, the
/// event log from the control domain's log window replayed to the quote, prediction, SHA-256
/// required): accepted in every quoted bank. Returns the accepted result.
fn check_verify_accepts(
    transcript: &verify::Transcript,
    nonce: &[u8],
    prediction: &predict::Prediction,
) -> verify::Accepted {
    assert!(
        !transcript.slipway_log.is_empty(),
        "the transcript carries the run's own Slipway event log"
    );
    let log_banks = ParsedLog::parse(&transcript.slipway_log)
        .unwrap_or_else(|e| panic!("the transcript's log: {e}"))
        .header()
        .banks;
    assert_eq!(log_banks, prediction.banks, "one digest per active bank");
    verify::verify(
        transcript,
        &Requirements {
            nonce: nonce.to_vec(),
            bank: Alg::Sha256,
            expected_log: prediction.log.clone(),
        },
    )
    .unwrap_or_else(|e| panic!("verify: {e}"))
}

/// Four banks: the quote attests the prediction, and verify accepts the run's own transcript
/// (its log, from the control domain's log window). `tpm2_eventlog` (tpm2-tools) parses that
/// captured log and replays it to the same PCR values, and SeaBIOS's own log reaches the
/// transcript too. Then one byte of the hello kernel changes: exactly PCR20 and PCR21 change,
/// and verify names the module's event.
#[test]
fn four_banks_verify_accepts_the_transcript_and_a_changed_kernel() {
    let (nonce, transcript, prediction) = check_quote_against_prediction(None, "attest-four-banks");
    let built = bundle(BUNDLE);
    let inputs = predict::bundle_inputs(&built).unwrap();
    let banks = prediction.banks;
    let accepted = check_verify_accepts(&transcript, &nonce, &prediction);
    assert_eq!(accepted.quoted_banks.len(), 4);
    assert!(
        !transcript.firmware_log.is_empty(),
        "SeaBIOS publishes its event log (ACPI TPM2); the control domain receives it"
    );

    // tpm2_eventlog (tpm2-tools) parses the captured log and replays it to the same PCR values.
    let log_file = built.output_dir.join("captured.log");
    std::fs::write(&log_file, &transcript.slipway_log).unwrap();
    let tool = std::process::Command::new("tpm2_eventlog")
        .arg(&log_file)
        .output()
        .expect("tpm2_eventlog (apt-get install tpm2-tools)");
    assert!(
        tool.status.success(),
        "{}",
        String::from_utf8_lossy(&tool.stderr)
    );
    let text = String::from_utf8_lossy(&tool.stdout);
    let sha256 = text
        .split("sha256:")
        .last()
        .expect("a sha256 bank in the pcrs section");
    // (PCR18 has no events; the tool lists only PCRs that have.)
    for pcr in [17, 19, 20, 21] {
        let value = prediction.pcrs.value(pcr, Alg::Sha256).unwrap().unwrap();
        assert!(
            sha256.contains(&format!("{pcr} : 0x{value}")),
            "tpm2_eventlog PCR{pcr}:\n{text}"
        );
    }

    // One byte of one domain's kernel changes.
    let mut changed = inputs.clone();
    let hello = &mut changed
        .modules
        .iter_mut()
        .find(|(name, _)| name == "hello")
        .unwrap()
        .1;
    let at = loaded_byte(hello);
    hello[at] ^= 0x01;
    let other = predict::predict(&changed, &banks, PredictedLaunch::Emulated).unwrap();
    for pcr in 17..=21 {
        for alg in [Alg::Sha1, Alg::Sha256, Alg::Sha384, Alg::Sha512] {
            let same =
                prediction.pcrs.value(pcr, alg).unwrap() == other.pcrs.value(pcr, alg).unwrap();
            assert_eq!(
                same,
                pcr < 20,
                "PCR{pcr} {alg:?}: only PCR20 and PCR21 change"
            );
        }
    }
    let error = verify::verify(
        &transcript,
        &Requirements {
            nonce: nonce.clone(),
            bank: Alg::Sha256,
            expected_log: other.log,
        },
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Rejection::Mismatch(_)), "{message}");
    assert!(message.contains("PCR20"), "{message}");
    assert!(message.contains("BOOT_MODULE module `hello`"), "{message}");
}

/// A TPM provisioned with one bank (sha256): the quote attests the prediction, the run's log
/// has one bank, and verify accepts the run's own transcript.
#[test]
fn verify_accepts_the_transcript() {
    let (nonce, transcript, prediction) =
        check_quote_against_prediction(Some("sha256"), "attest-one-bank");
    assert_eq!(prediction.banks.len(), 1);
    let accepted = check_verify_accepts(&transcript, &nonce, &prediction);
    assert_eq!(accepted.quoted_banks, [Alg::Sha256]);
}

/// A kernel outside its domain's allow-list: the policy's action (recovery only) is taken and
/// measured, and the quote still attests exactly the predicted values (predict runs the same
/// policy code): verify accepts the run.
#[test]
fn a_module_outside_its_allow_list_starts_only_recovery() {
    let nonce = nonce();
    let built = bundle("test-measured-allowlist");
    let mut run = config(&built, Firmware::Bios, "allowlist");
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
        outcome.has_line(
            "[domb] policy: digest-not-allowed (domain hello, module hello): recovery-only"
        ),
        "the decision is printed"
    );
    let started = started_domains(&outcome);
    assert_eq!(started, ["control"], "only the recovery domain starts");
    let transcript = verify::parse_transcript(&transcript_text(&outcome)).unwrap();
    let inputs = predict::bundle_inputs(&built).unwrap();
    let banks = predict::parse_banks("sha1,sha256,sha384,sha512").unwrap();
    let prediction = predict::predict(&inputs, &banks, PredictedLaunch::Emulated).unwrap();
    assert!(
        prediction.domb_output.contains("digest-not-allowed"),
        "{}",
        prediction.domb_output
    );
    verify::check_quote_attests(&transcript, &nonce, &prediction.pcrs)
        .unwrap_or_else(|e| panic!("{e}"));
    check_verify_accepts(&transcript, &nonce, &prediction);
}

#[test]
fn without_a_tpm_the_launch_is_unmeasured_and_only_recovery_starts() {
    let built = bundle(BUNDLE);
    let mut run = config(&built, Firmware::Bios, "attest-no-tpm");
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
    let started = started_domains(&outcome);
    assert_eq!(started, ["control"], "only the recovery domain starts");
}

/// A domain prints text imitating a launch request and writes it to the launch channel's port
/// (0xe9); the hypervisor's own request is the boot's only one. The harness served exactly one
/// hash sequence, saw nothing from the domain, and the attest domain's quote (started after it)
/// attests exactly the predicted PCR17-21, which verify accepts: the TPM was not touched.
#[test]
fn a_fake_launch_request_does_not_touch_the_tpm() {
    let nonce = nonce();
    let built = bundle("test-measured-hostile");
    let mut run = config(&built, Firmware::Bios, "fake-launch");
    run.tpm = Tpm::Swtpm;
    run.console_input = vec![nonce_input(&nonce)];
    let outcome = boot(&run);
    assert!(
        outcome.has_line("[fake] slipway-launch-request region=0x200000 size=0x100000"),
        "the imitation stays on the domain's own, prefixed console"
    );
    let report = outcome.launch.as_ref().expect("a launch report");
    assert!(report.launch.measured().is_some(), "{report:?}");
    assert!(
        report.launch.ignored_requests.is_empty()
            && !report
                .launch
                .other_lines
                .iter()
                .any(|l| l.contains("slipway-launch-request")),
        "nothing of the domain reached the launch channel: {report:?}"
    );
    let hash_starts = report
        .tpm
        .log
        .iter()
        .filter(|f| f.name() == "CMD_HASH_START")
        .count();
    assert_eq!(hash_starts, 1, "{:?}", report.tpm.log);
    let transcript = verify::parse_transcript(&transcript_text(&outcome)).unwrap();
    let inputs = predict::bundle_inputs(&built).unwrap();
    let banks = predict::parse_banks("sha1,sha256,sha384,sha512").unwrap();
    let prediction = predict::predict(&inputs, &banks, PredictedLaunch::Emulated).unwrap();
    verify::check_quote_attests(&transcript, &nonce, &prediction.pcrs)
        .unwrap_or_else(|e| panic!("{e}"));
    check_verify_accepts(&transcript, &nonce, &prediction);
}
