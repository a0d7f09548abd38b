//! The TXT and SKINIT backends refuse with a clear message. A
//! hypervisor command line with `launch=txt` (bundle `images/test-launch-txt`, swtpm attached)
//! must say that the backend is not implemented, that the boot is unmeasured, and go on
//! unmeasured: the launch harness sees no request, the default policy starts only the recovery
//! domain, and the run ends cleanly.

use slipway_integration_tests::{Firmware, Verdict, boot, bundle, config, started_domains};

#[test]
fn launch_txt_refuses_loudly_and_the_boot_is_unmeasured() {
    let built = bundle("test-launch-txt");
    let outcome = boot(&config(&built, Firmware::Bios, "launch-txt"));
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    let refusal = outcome
        .hypervisor_lines()
        .find(|l| l.starts_with("slipway: ERROR: launch backend `txt` is not implemented"))
        .map(str::to_owned);
    assert!(refusal.is_some(), "the txt backend names its refusal");
    assert!(
        outcome
            .hypervisor_lines()
            .any(|l| l.contains("NO DYNAMIC LAUNCH, this boot is UNMEASURED")),
        "the boot says it is unmeasured"
    );
    let launch = outcome
        .launch
        .as_ref()
        .expect("a TPM run has a launch report");
    assert!(
        launch.launch.launch.is_none(),
        "the harness received no launch request"
    );
    assert!(
        outcome.has_line("[domb] policy: unmeasured-launch: recovery-only"),
        "the decision is printed"
    );
    let started = started_domains(&outcome);
    assert_eq!(started, ["rescue"], "only the recovery domain starts");
}
