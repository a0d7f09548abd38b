//! The recovery environment: whenever domB cannot make a valid plan, the hypervisor starts the
//! recovery domain from the `recovery=` module itself (fixed plan), gives it the console, prints
//! the reason and measures it into PCR19; without a recovery module it says so and halts.
//!
//! One SeaBIOS boot with swtpm per path (bundles `images/test-recovery-*`): a malformed
//! configuration, a missing module, a failing policy program, a domB that panics, crashes or
//! hangs (the test-only, measured configuration property `slipway,test-boot-domain-fault`), and
//! a boot without a recovery module. Each checks the printed reason, the console focus, the
//! recovery domain's banner with the reason it received, and the PCR19 decision; the
//! hypervisor's log replay of PCR19-21 must equal `cargo xtask predict` (which runs the same
//! recovery code on the host), and the predicted log must carry the decision.

use slipway_integration_tests::{
    Firmware, RunConfig, RunOutcome, Tpm, Verdict, boot, bundle, config, iso_variant,
    started_domains,
};
use slipway_measure::events::{
    DecisionAction, DecisionReason, EV_SLIPWAY_POLICY_DECISION, EV_SLIPWAY_RECOVERY_IMAGE,
    PolicyDecision, SlipwayEvent,
};
use slipway_measure::log::EventLog;
use xtask::predict::{self, PredictedLaunch};

fn run(bundle_name: &str) -> (RunOutcome, predict::Prediction) {
    run_typing(bundle_name, None)
}

/// As [`run`], typing `input` on the serial console once a line containing `after` appeared.
fn run_typing(
    bundle_name: &str,
    input: Option<(&str, &[u8])>,
) -> (RunOutcome, predict::Prediction) {
    let built = bundle(bundle_name);
    let mut run = config(&built, Firmware::Bios, "recovery");
    run.tpm = Tpm::Swtpm;
    if let Some((after, bytes)) = input {
        run.console_input = vec![xtask::ConsoleInput {
            after_line_containing: after.into(),
            bytes: bytes.to_vec(),
        }];
    }
    let outcome = boot(&run);
    let inputs = predict::bundle_inputs(&built).unwrap();
    let banks = predict::parse_banks("sha1,sha256,sha384,sha512").unwrap();
    let prediction = predict::predict(&inputs, &banks, PredictedLaunch::Emulated)
        .unwrap_or_else(|e| panic!("predict: {e}"));
    (outcome, prediction)
}

/// PCR19-21 (sha256) as the TPM holds them and as the hypervisor's log replays equal the
/// prediction.
fn check_measured_like_the_prediction(outcome: &RunOutcome, prediction: &predict::Prediction) {
    for pcr in 19..=21u32 {
        let predicted = prediction
            .pcrs
            .value(pcr, slipway_measure::HashAlg::Sha256)
            .unwrap()
            .unwrap();
        // The log's replay and the TPM's own value (read back by the hypervisor after the seal).
        for source in ["log replay", "TPM"] {
            let line = format!("slipway: measurement: {source} PCR{pcr} sha256 {predicted}");
            assert!(
                outcome.has_line(&line),
                "PCR{pcr} ({source}) differs from the prediction (`{line}` missing)\npredicted:\n{}",
                prediction.pcr_lines()
            );
        }
    }
}

/// The predicted log's decisions (PCR19): the recovery decision is the last one.
fn predicted_decisions(
    prediction: &predict::Prediction,
) -> Vec<(DecisionReason, DecisionAction, String)> {
    let log = EventLog::parse(&prediction.log).unwrap();
    log.events()
        .map(|e| e.unwrap())
        .filter(|e| e.event_type == EV_SLIPWAY_POLICY_DECISION)
        .map(
            |e| match SlipwayEvent::decode(e.event_type, e.data).unwrap() {
                Some(SlipwayEvent::PolicyDecision(PolicyDecision {
                    reason,
                    action,
                    subject,
                })) => (
                    reason,
                    action,
                    String::from_utf8_lossy(subject).into_owned(),
                ),
                other => panic!("not a decision: {other:?}"),
            },
        )
        .collect()
}

/// Recovery was reached for `reason`: printed, measured, predicted, console given, the recovery
/// domain started alone and printed the reason it received; the run ends with failure.
fn check_recovered(bundle_name: &str, reason: DecisionReason) -> RunOutcome {
    check_recovered_typing(bundle_name, reason, None)
}

fn check_recovered_typing(
    bundle_name: &str,
    reason: DecisionReason,
    input: Option<(&str, &[u8])>,
) -> RunOutcome {
    let (outcome, prediction) = run_typing(bundle_name, input);
    assert_eq!(
        outcome.verdict,
        Verdict::Failure,
        "verdict: {}",
        outcome.verdict
    );
    let code = reason as u8;
    let name = reason.name();
    assert!(
        outcome
            .hypervisor_lines()
            .any(|l| l.starts_with("slipway: RECOVERY: ")
                && l.ends_with(&format!(
                    ": reason {name} (PCR19 decision reason {code}), action start-recovery-only"
                ))),
        "no RECOVERY line for reason {name}"
    );
    assert!(outcome.has_line("slipway: measurement: recovery decision in PCR19"));
    assert!(
        outcome.has_line("slipway: measurement: recovery module `rescue` (74344 bytes) in PCR19")
            || outcome
                .hypervisor_lines()
                .any(|l| l.starts_with("slipway: measurement: recovery module `rescue` ("))
    );
    assert!(
        outcome.has_line("slipway: console: input goes to recovery (the recovery environment)"),
        "the recovery domain does not get the console"
    );
    assert_eq!(
        started_domains(&outcome),
        ["recovery"],
        "only the recovery domain starts"
    );
    assert!(outcome.has_line("[recovery] ==== SLIPWAY RECOVERY ENVIRONMENT ===="));
    assert!(
        outcome.has_line(&format!("[recovery] recovery reason: {name}")),
        "the recovery domain did not receive the reason"
    );
    assert!(outcome.has_line(&format!(
        "slipway: all domains have finished; this boot ran the recovery environment ({name}): the launch failed"
    )));
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: failure")
    );
    // Nothing of the configuration started.
    assert!(
        !outcome
            .lines
            .iter()
            .any(|l| l.text.starts_with("[hello-a]"))
    );

    let decisions = predicted_decisions(&prediction);
    assert_eq!(
        decisions.last(),
        Some(&(
            reason,
            DecisionAction::StartRecoveryOnly,
            "rescue".to_owned()
        )),
        "{decisions:?}"
    );
    let log = EventLog::parse(&prediction.log).unwrap();
    assert!(
        log.events()
            .any(|e| e.unwrap().event_type == EV_SLIPWAY_RECOVERY_IMAGE),
        "the recovery image is measured"
    );
    check_measured_like_the_prediction(&outcome, &prediction);
    outcome
}

#[test]
fn a_malformed_configuration_reaches_recovery() {
    let outcome = check_recovered(
        "test-recovery-malformed-config",
        DecisionReason::ConfigMalformed,
    );
    assert!(outcome.has_line("slipway: domain domb shut down (exit code 2)"));
}

#[test]
fn a_missing_module_reaches_recovery() {
    let outcome = check_recovered(
        "test-recovery-missing-module",
        DecisionReason::ModuleMissing,
    );
    assert!(outcome.has_line("slipway: domain domb shut down (exit code 3)"));
    assert!(
        outcome
            .lines
            .iter()
            .any(|l| l.text.contains("no boot module is named \"vmlinuz\""))
    );
}

#[test]
fn a_failing_policy_reaches_recovery() {
    let outcome = check_recovered("test-recovery-policy-failed", DecisionReason::PolicyHalted);
    assert!(outcome.has_line("slipway: domain domb shut down (exit code 4)"));
}

#[test]
fn a_dom_b_that_panics_reaches_recovery() {
    let outcome = check_recovered("test-recovery-domb-panic", DecisionReason::BootDomainFailed);
    assert!(
        outcome
            .lines
            .iter()
            .any(|l| l.text.starts_with("[domb] panic: "))
    );
    assert!(outcome.has_line("[domb] test fault: domB panics on purpose"));
    assert!(outcome.has_line("slipway: domain domb shut down (exit code 1)"));
}

/// This bundle's recovery module has no `exit` argument: the recovery environment keeps the
/// console, and what the operator types reaches it (the console focus is real).
#[test]
fn a_dom_b_that_crashes_reaches_recovery() {
    let outcome = check_recovered_typing(
        "test-recovery-domb-crash",
        DecisionReason::BootDomainCrashed,
        Some(("the console is yours", b"reason\rbogus\rexit\r")),
    );
    assert!(outcome.has_line("[recovery] unknown command `bogus`"));
    assert_eq!(
        outcome
            .lines
            .iter()
            .filter(|l| l.text == "[recovery] recovery reason: boot-domain-crashed")
            .count(),
        2,
        "the banner and the typed `reason` command"
    );
    assert!(outcome.has_line("[recovery] recovery environment done (operator typed exit)"));
    assert!(
        outcome
            .hypervisor_lines()
            .any(|l| l.starts_with("slipway: domain domb stopped: "))
    );
}

#[test]
fn a_dom_b_that_hangs_is_stopped_by_the_watchdog_and_reaches_recovery() {
    let outcome = check_recovered("test-recovery-domb-hang", DecisionReason::BootDomainHung);
    assert!(outcome.has_line(
        "slipway: watchdog: domB has not handed off 5 s after it started (domb_watchdog=5): stopping it"
    ));
    assert!(outcome.hypervisor_lines().any(|l| {
        l.starts_with("slipway: domain domb stopped: watchdog: no hand-off before the deadline")
    }));
}

#[test]
fn without_a_recovery_module_the_boot_says_so_and_halts_cleanly() {
    let (outcome, prediction) = run("test-recovery-none");
    assert_eq!(
        outcome.verdict,
        Verdict::Failure,
        "verdict: {}",
        outcome.verdict
    );
    assert!(outcome.has_line(
        "slipway: RECOVERY: the launch configuration is missing or malformed (domB exit code 2): reason config-malformed (PCR19 decision reason 6), action halt"
    ));
    assert!(outcome.has_line(
        "slipway: RECOVERY: no recovery module (the hypervisor command line has no `recovery=<module name>`): halting"
    ));
    assert!(outcome.has_line("slipway: measurement: recovery decision in PCR19"));
    assert!(started_domains(&outcome).is_empty());
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: failure")
    );
    let decisions = predicted_decisions(&prediction);
    assert_eq!(
        decisions.last(),
        Some(&(
            DecisionReason::ConfigMalformed,
            DecisionAction::Halt,
            String::new()
        ))
    );
    check_measured_like_the_prediction(&outcome, &prediction);
}

/// `recovery=` naming a module the boot does not have refuses the boot before anything runs,
/// naming the option and the name.
#[test]
fn a_recovery_option_naming_no_module_refuses_the_boot() {
    let built = bundle("test-recovery-none");
    const MULTIBOOT: &str = "if multiboot2 /boot/slipway-hypervisor console=com1\n";
    let iso = iso_variant(&built, "recovery-missing", |cfg| {
        assert!(cfg.contains(MULTIBOOT), "{cfg}");
        cfg.replacen(
            MULTIBOOT,
            "if multiboot2 /boot/slipway-hypervisor console=com1 recovery=nothere\n",
            1,
        )
    });
    let mut run = RunConfig::new(&iso, iso.with_extension("serial.log"));
    run.firmware = Firmware::Bios;
    run.smp = 2;
    let outcome = boot(&run);
    assert_eq!(outcome.verdict, Verdict::Failure);
    assert!(outcome.has_line(
        "slipway: post-launch: boot refused: recovery=nothere: no boot module is named `nothere`; nothing starts"
    ));
    assert!(!outcome.lines.iter().any(|l| l.text.starts_with("[domb]")));
}

/// Without a TPM the recovery environment still runs; the hypervisor says the decision is not
/// measured (there is nothing to measure into).
#[test]
fn without_a_tpm_recovery_still_reaches_the_console() {
    let built = bundle("test-recovery-malformed-config");
    let mut run = config(&built, Firmware::Bios, "recovery-no-tpm");
    run.tpm = Tpm::None;
    let outcome = boot(&run);
    assert_eq!(
        outcome.verdict,
        Verdict::Failure,
        "verdict: {}",
        outcome.verdict
    );
    assert!(outcome.has_line(
        "slipway: RECOVERY: the launch configuration is missing or malformed (domB exit code 2): reason config-malformed (PCR19 decision reason 6), action start-recovery-only"
    ));
    assert!(
        outcome.has_line("slipway: measurement: no TPM: the recovery decision is not measured")
    );
    assert!(
        outcome.has_line("slipway: console: input goes to recovery (the recovery environment)")
    );
    assert!(outcome.has_line("[recovery] recovery reason: config-malformed"));
    assert_eq!(started_domains(&outcome), ["recovery"]);
}
