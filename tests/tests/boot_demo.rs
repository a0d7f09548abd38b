//! The demo bundle (`images/demo`, the default of `cargo xtask run`) boots under
//! SeaBIOS and OVMF: domB plans every domain, hands off (reporting the pages it gave back), and
//! only then do the domains run, each line with its `[name]` prefix; the run ends with success
//! when every domain has shut down. Domain names come from the run's own milestones, so the test
//! follows the demo configuration as it changes.
//!
//! The demo's control domain is the attest guest. Each run types a fresh nonce when it
//! asks (as `cargo xtask run` does), and the check `cargo xtask run` performs at the end
//! (`xtask::verify::verify_run`: quote, nonce, log replay, prediction, SHA-256 required) accepts
//! the run in every bank of a default swtpm. Without a TPM the launch is unmeasured, the
//! default policy starts only the recovery domain, and the run ends on its own (the attest
//! domain stops: it has no TPM page), never at a nonce prompt.

use slipway_integration_tests::{
    BuiltBundle, Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config, started_domains,
};
use xtask::verify::{self, Alg};

fn check_demo(outcome: &RunOutcome) {
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );

    // The post-launch stage starts from a clean state: the pre-launch stage's zero-initialised
    // state (its canary included) is gone.
    assert!(
        outcome.has_line(
            "slipway: post-launch: clean state: .bss zeroed (the pre-launch canary is gone), initialised data as measured"
        ),
        "the post-launch stage checks its clean start"
    );

    // Milestones of the boot path, in order, with hypervisor time never going backwards.
    let names: Vec<&str> = outcome.milestones.iter().map(|m| m.name.as_str()).collect();
    let position = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("milestone `{name}` missing in {names:?}"))
    };
    let (entry, memory, domb, hand_off) = (
        position("entry"),
        position("memory-ready"),
        position("domb-started"),
        position("hand-off"),
    );
    assert!(
        entry < memory && memory < domb && domb < hand_off,
        "{names:?}"
    );
    assert!(
        outcome
            .milestones
            .windows(2)
            .all(|w| w[0].since_entry_us <= w[1].since_entry_us),
        "milestone times go backwards: {:?}",
        outcome.milestones
    );

    // Every planned domain is started after the hand-off, and nothing else is.
    let planned: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("planned:"))
        .collect();
    let started: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("started:"))
        .collect();
    assert!(
        planned.len() >= 3,
        "the demo has a control domain and two others: {planned:?}"
    );
    let mut sorted_planned = planned.clone();
    let mut sorted_started = started.clone();
    sorted_planned.sort_unstable();
    sorted_started.sort_unstable();
    assert_eq!(
        sorted_planned, sorted_started,
        "planned and started domains differ"
    );
    for name in &planned {
        assert!(position(&format!("planned:{name}")) < hand_off);
        assert!(position(&format!("started:{name}")) > hand_off);
    }

    // The hand-off line reports the reclaimed pages.
    let hand_off_line = outcome
        .lines
        .iter()
        .position(|l| l.text.starts_with("slipway: hand-off:"))
        .expect("a `slipway: hand-off:` line");
    let text = &outcome.lines[hand_off_line].text;
    let pages: u64 = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(3)
        .find(|w| w[1] == "pages" && w[2].starts_with("reclaimed"))
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no `<N> pages reclaimed` in `{text}`"));
    assert!(pages > 0, "{text}");

    // Before the hand-off only domB and the hypervisor speak; afterwards every domain does.
    for line in &outcome.lines[..hand_off_line] {
        if let Some(rest) = line.text.strip_prefix('[') {
            assert!(
                rest.starts_with("domb] "),
                "domain line before the hand-off: `{}`",
                line.text
            );
        }
    }
    for name in &planned {
        let prefix = format!("[{name}] ");
        assert!(
            outcome.lines[hand_off_line..]
                .iter()
                .any(|l| l.text.starts_with(&prefix)),
            "no `{prefix}` line after the hand-off"
        );
    }
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: success")
    );
}

/// A demo run with a TPM, typing a fresh nonce at the attest domain's prompt.
fn measured_demo_run(
    firmware: Firmware,
    test: &str,
) -> (std::sync::Arc<BuiltBundle>, RunOutcome, Vec<u8>) {
    let built = bundle("demo");
    let nonce = verify::fresh_nonce().unwrap_or_else(|e| panic!("{e}"));
    let mut run = config(&built, firmware, test);
    run.tpm = Tpm::Swtpm;
    run.console_input = vec![verify::nonce_input(&nonce)];
    let outcome = boot(&run);
    (built, outcome, nonce)
}

/// The control domain is the attest guest and quoted the typed nonce; `cargo xtask run`'s
/// verification accepts the run in all four banks of the default swtpm.
fn check_attestation(built: &BuiltBundle, outcome: &RunOutcome, nonce: &[u8]) {
    assert!(
        outcome.has_line(&format!("[control] attest: nonce {}", verify::hex(nonce))),
        "the attest control domain did not receive the typed nonce"
    );
    assert!(outcome.has_line("[control] attest: done"));
    let accepted = verify::verify_run(built, outcome, nonce, Alg::Sha256).unwrap_or_else(|e| {
        panic!("the verification of `cargo xtask run` rejects the demo run: {e}")
    });
    assert_eq!(
        accepted.quoted_banks,
        [Alg::Sha1, Alg::Sha256, Alg::Sha384, Alg::Sha512]
    );
    // The same checks refuse another nonce.
    let mut other = nonce.to_vec();
    other[0] ^= 1;
    assert!(matches!(
        verify::verify_run(built, outcome, &other, Alg::Sha256),
        Err(verify::Rejection::Quote(_))
    ));
}

#[test]
fn demo_bundle_boots_measured_under_seabios() {
    let (built, outcome, nonce) = measured_demo_run(Firmware::Bios, "bios");
    check_demo(&outcome);
    check_attestation(&built, &outcome, &nonce);
}

#[test]
fn demo_bundle_boots_measured_under_ovmf() {
    let (built, outcome, nonce) = measured_demo_run(Firmware::Uefi, "uefi");
    check_demo(&outcome);
    check_attestation(&built, &outcome, &nonce);
}

/// `cargo xtask run --no-tpm`: unmeasured, only the recovery domain, and a clean end.
#[test]
fn demo_bundle_without_a_tpm_starts_only_the_recovery_domain() {
    let built = bundle("demo");
    let mut run = config(&built, Firmware::Bios, "no-tpm");
    run.tpm = Tpm::None;
    run.console_input = vec![verify::nonce_input(&[0x5a; 16])];
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
        "the default policy's decision is printed"
    );
    let started = started_domains(&outcome);
    assert_eq!(started, ["control"], "only the recovery domain starts");
    assert!(
        !outcome
            .lines
            .iter()
            .any(|l| l.text.contains(verify::NONCE_PROMPT)),
        "without a TPM the attest domain never asks for a nonce"
    );
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: success")
    );
}
