//! The SIMULATED Intel TXT launch under QEMU: `images/test-measured-attest` built as
//! `cargo xtask run --launch txt-simulated` builds it (`launch=txt-simulated` on the hypervisor
//! command line, the synthetic `sinit` module added). The hypervisor runs the TXT pre-launch
//! sequence over its simulated seam, the harness plays CPU and SINIT over guest RAM, the
//! hypervisor enters through the Intel MLE entry and runs every post-launch check. Verified end
//! to end: the attest domain's quote against `cargo xtask predict --launch txt-simulated`, the
//! log, and `verify`'s decision (which names the launch SIMULATED, never hardware); the same
//! bundle's emulated launch is booted too, for the cost ratio.
//!
//! Then one boot per refusal class of the simulated SINIT (`txt_fault=<class>` on the measured
//! hypervisor command line corrupts one thing after the pre-launch sequence): SINIT refuses with
//! that class, nothing reaches the TPM, the hypervisor restores its MTRRs and continues
//! UNMEASURED (PCR17 all-FF), the default policy starts only the recovery domain, and `verify`
//! rejects the run as an unmeasured launch. And one launch SINIT accepts but the hypervisor's
//! post-launch check refuses (OsMleData changed behind its back): TXT.ERRORCODE records it and
//! the boot ends, nothing starts.

use std::sync::{Arc, OnceLock};

use slipway_hv_core::txt::simulated::SimulatedFault;
use slipway_integration_tests::{
    BuiltBundle, Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config, iso_variant,
    started_domains, workspace,
};
use xtask::builder::{BundleVariant, build_bundle_as};
use xtask::launch::TxtSenterOutcome;
use xtask::predict::{self, PredictedLaunch};
use xtask::verify::{self, Rejection, fresh_nonce, nonce_input};

const BUNDLE: &str = "test-measured-attest";

/// The bundle as `cargo xtask run test-measured-attest --launch txt-simulated` builds it, once.
fn txt_bundle() -> Arc<BuiltBundle> {
    static BUILT: OnceLock<Arc<BuiltBundle>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            Arc::new(
                build_bundle_as(workspace(), BUNDLE, BundleVariant::TxtSimulated)
                    .unwrap_or_else(|e| panic!("building `{BUNDLE}` for txt-simulated: {e}")),
            )
        })
        .clone()
}

fn run(iso: Option<std::path::PathBuf>, test: &str, nonce: &[u8]) -> RunOutcome {
    let built = txt_bundle();
    let mut run = config(&built, Firmware::Bios, test);
    if let Some(iso) = iso {
        run.iso = iso;
    }
    run.tpm = Tpm::Swtpm;
    run.timeout = std::time::Duration::from_secs(120);
    run.console_input = vec![nonce_input(nonce)];
    boot(&run)
}

fn txt_outcome(outcome: &RunOutcome) -> &TxtSenterOutcome {
    &outcome
        .launch
        .as_ref()
        .expect("a TPM run has a launch report")
        .launch
        .txt
        .as_ref()
        .expect("the hypervisor asked the harness for a simulated SENTER")
        .outcome
}

#[test]
fn the_simulated_txt_launch_is_verified_end_to_end_as_simulated() {
    let nonce = fresh_nonce().unwrap();
    let outcome = run(None, "txt-simulated", &nonce);
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    let built = txt_bundle();
    assert!(
        built
            .manifest
            .hypervisor_cmdline
            .iter()
            .any(|w| w == "launch=txt-simulated")
            && built.modules.iter().any(|m| m.name == "sinit"),
        "the txt-simulated variant of the bundle"
    );
    let inputs = predict::bundle_inputs(&built).unwrap();
    let banks = predict::parse_banks("sha1,sha256,sha384,sha512").unwrap();
    let prediction = predict::predict(&inputs, &banks, PredictedLaunch::TxtSimulated)
        .unwrap_or_else(|e| panic!("predict: {e}"));

    // The harness's SINIT accepted and gave the predicted PCR17/18.
    match txt_outcome(&outcome) {
        TxtSenterOutcome::Launched { pcr17, pcr18, .. } => {
            for (pcr, list) in [(17, pcr17), (18, pcr18)] {
                assert_eq!(list.len(), 4);
                for d in list.iter() {
                    let alg = d.hash_alg().unwrap();
                    assert_eq!(
                        prediction.pcrs.value(pcr, alg).unwrap().as_ref(),
                        Some(d),
                        "PCR{pcr} {alg:?}"
                    );
                }
            }
        }
        other => panic!("the simulated SINIT did not launch: {other:?}"),
    }
    // The hypervisor went through the MLE entry and its post-launch checks.
    for line in [
        "launch backend `txt-simulated`: SENTER done (simulated)",
        "launch: txt-simulated launch verified",
    ] {
        assert!(
            outcome.hypervisor_lines().any(|l| l.contains(line)),
            "`{line}` missing"
        );
    }
    assert!(
        !outcome.hypervisor_lines().any(|l| l.contains("UNMEASURED")),
        "the launch is measured"
    );
    assert_eq!(started_domains(&outcome), ["control", "hello"]);

    // The quote attests the prediction; verify accepts the run and names it SIMULATED.
    let transcript = verify::parse_transcript(&verify::transcript_of(&outcome))
        .unwrap_or_else(|e| panic!("transcript: {e}"));
    verify::check_quote_attests(&transcript, &nonce, &prediction.pcrs).unwrap_or_else(|e| {
        panic!(
            "the quote does not attest the predicted PCR17-21: {e}\npredicted:\n{}",
            prediction.pcr_lines()
        )
    });
    let accepted = verify::verify_run(&built, &outcome, &nonce, slipway_measure::HashAlg::Sha256)
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert_eq!(
        accepted.launch,
        slipway_measure::events::LaunchKind::TxtSimulated
    );
    let report = verify::report(&accepted, slipway_measure::HashAlg::Sha256);
    assert!(
        report.contains("SIMULATED Intel TXT") && report.contains("NOT a hardware launch"),
        "{report}"
    );
    assert_eq!(
        transcript.slipway_log, prediction.log,
        "the log is the predicted one"
    );

    // The cost of the simulated TXT launch against the emulated one, measured in the same run
    // (printed, never asserted: speed is a ratio, not a timed test): the same attesting bundle
    // without `launch=txt-simulated` and the `sinit` module.
    let emulated_built = bundle(BUNDLE);
    let mut emulated = config(&emulated_built, Firmware::Bios, "txt-reference-emulated");
    emulated.tpm = Tpm::Swtpm;
    emulated.console_input = vec![nonce_input(&nonce)];
    let reference = boot(&emulated);
    assert_eq!(
        reference.verdict,
        Verdict::Success,
        "verdict: {}",
        reference.verdict
    );
    let hand_off = |o: &RunOutcome| {
        o.milestones
            .iter()
            .find(|m| m.name == "hand-off")
            .map(|m| m.host_at.as_micros() as u64)
            .expect("a hand-off milestone")
    };
    let tpm_commands = |o: &RunOutcome| {
        o.hypervisor_lines()
            .find_map(|l| l.split(" PCR_Extend commands (").nth(1).map(str::to_owned))
            .unwrap_or_default()
    };
    println!(
        "txt-simulated vs emulated launch: wall time {} ms / {} ms = {:.2}; hand-off (host time since QEMU start) {} us / {} us = {:.2}; hypervisor TPM commands: txt-simulated {}, emulated {}",
        outcome.elapsed.as_millis(),
        reference.elapsed.as_millis(),
        outcome.elapsed.as_secs_f64() / reference.elapsed.as_secs_f64(),
        hand_off(&outcome),
        hand_off(&reference),
        hand_off(&outcome) as f64 / hand_off(&reference) as f64,
        tpm_commands(&outcome),
        tpm_commands(&reference),
    );
}

/// One refused launch: `txt_fault=<class>`.
fn refused(fault: SimulatedFault) {
    let built = txt_bundle();
    let class = fault.class();
    let iso = iso_variant(&built, &format!("txt-fault-{class}"), |cfg| {
        cfg.replace(
            "launch=txt-simulated",
            &format!("launch=txt-simulated txt_fault={class}"),
        )
    });
    let nonce = fresh_nonce().unwrap();
    let outcome = run(Some(iso), &format!("txt-fault-{class}"), &nonce);
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    match txt_outcome(&outcome) {
        TxtSenterOutcome::Refused { class: got, reason } => {
            assert_eq!(*got, class, "{reason}");
            assert!(
                reason.starts_with("simulated SINIT refuses the launch: "),
                "{reason}"
            );
        }
        other => panic!("{class}: the simulated SINIT did not refuse: {other:?}"),
    }
    for line in [
        "GETSEC[SENTER] did not launch: TXT.ERRORCODE",
        "NO DYNAMIC LAUNCH, this boot is UNMEASURED",
    ] {
        assert!(
            outcome.hypervisor_lines().any(|l| l.contains(line)),
            "{class}: `{line}` missing"
        );
    }
    assert!(
        !outcome
            .hypervisor_lines()
            .any(|l| l.contains("SENTER done")),
        "{class}: nothing entered the MLE"
    );
    assert!(
        outcome.has_line("[domb] policy: unmeasured-launch: recovery-only"),
        "{class}: the default policy's decision"
    );
    assert_eq!(
        started_domains(&outcome),
        ["control"],
        "{class}: only the recovery domain"
    );
    // The quoted PCR17 is all-FF: verify rejects the run as unmeasured.
    let error =
        verify::verify_run(&built, &outcome, &nonce, slipway_measure::HashAlg::Sha256).unwrap_err();
    assert!(
        matches!(error, Rejection::Unmeasured(_)),
        "{class}: {error}"
    );
}

#[test]
fn refused_heap() {
    refused(SimulatedFault::Heap);
}

#[test]
fn refused_acm() {
    refused(SimulatedFault::Acm);
}

#[test]
fn refused_page_tables() {
    refused(SimulatedFault::PageTables);
}

#[test]
fn refused_mle_header() {
    refused(SimulatedFault::MleHeader);
}

#[test]
fn refused_pmr() {
    refused(SimulatedFault::Pmr);
}

#[test]
fn refused_capabilities() {
    refused(SimulatedFault::Capabilities);
}

#[test]
fn refused_event_log() {
    refused(SimulatedFault::EventLog);
}

#[test]
fn a_heap_changed_behind_the_mle_is_refused_post_launch_and_nothing_starts() {
    let built = txt_bundle();
    let iso = iso_variant(&built, "txt-fault-post-launch-heap", |cfg| {
        cfg.replace(
            "launch=txt-simulated",
            "launch=txt-simulated txt_fault=post-launch-heap",
        )
    });
    let nonce = fresh_nonce().unwrap();
    let outcome = run(Some(iso), "txt-fault-post-launch-heap", &nonce);
    assert!(
        matches!(txt_outcome(&outcome), TxtSenterOutcome::Launched { .. }),
        "SINIT never reads OsMleData: it launches"
    );
    assert_eq!(
        outcome.verdict,
        Verdict::Failure,
        "verdict: {}",
        outcome.verdict
    );
    let refusal = outcome
        .hypervisor_lines()
        .find(|l| l.starts_with("slipway: TXT post-launch (txt-simulated): "))
        .unwrap_or_else(|| panic!("the post-launch refusal is named"));
    assert!(
        refusal.contains("OsMleData.handoff")
            && refusal.contains("TXT.ERRORCODE records class 0x2")
            && refusal.ends_with("the launch ends, nothing starts"),
        "{refusal}"
    );
    assert!(started_domains(&outcome).is_empty(), "nothing starts");
    assert!(
        !outcome
            .hypervisor_lines()
            .any(|l| l.contains("launch verified") || l.contains("measurement:")),
        "nothing is measured after the refusal"
    );
}
