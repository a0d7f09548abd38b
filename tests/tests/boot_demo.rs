//! Issue 3: the demo bundle (`images/demo`, the default of `cargo xtask run`) boots under
//! SeaBIOS and OVMF: domB plans every domain, hands off (reporting the pages it gave back), and
//! only then do the domains run, each line with its `[name]` prefix; the run ends with success
//! when every domain has shut down. Domain names come from the run's own milestones, so the test
//! follows the demo configuration as it changes.

use slipway_integration_tests::{Firmware, RunOutcome, Verdict, boot, bundle, config};

fn check_demo(outcome: &RunOutcome) {
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
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

#[test]
fn demo_bundle_boots_under_seabios() {
    let bundle = bundle("demo");
    check_demo(&boot(&config(&bundle, Firmware::Bios, "bios")));
}

#[test]
fn demo_bundle_boots_under_ovmf() {
    let bundle = bundle("demo");
    check_demo(&boot(&config(&bundle, Firmware::Uefi, "uefi")));
}
