//! A control domain cannot write its read-only event-log window. One SeaBIOS boot of
//! `images/test-log-window` with swtpm (a measured launch, so the window holds the real log):
//! the control domain `writer` (the hostile guest, `test=write-log-window`) reads the window's
//! descriptor, then writes at `SLIPWAY_LOG_GPA + 16` and must be stopped there; the hello
//! domain beside it finishes normally and the run ends with success.

use std::sync::OnceLock;

use slipway_integration_tests::{Firmware, RunOutcome, Tpm, Verdict, boot, bundle, config};
use slipway_protocol::v1::{LOG_DESCRIPTOR_LEN, SLIPWAY_LOG_GPA};

/// The one boot all tests of this file check.
fn outcome() -> &'static RunOutcome {
    static OUTCOME: OnceLock<RunOutcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let built = bundle("test-log-window");
        let mut run = config(&built, Firmware::Bios, "log-window");
        run.tpm = Tpm::Swtpm;
        boot(&run)
    })
}

fn texts(outcome: &RunOutcome) -> Vec<&str> {
    outcome.lines.iter().map(|l| l.text.as_str()).collect()
}

/// Index of the only line starting with `prefix`, or a panic naming it.
fn only_line_starting(lines: &[&str], prefix: &str) -> usize {
    let found: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "lines starting with `{prefix}`: {found:?}");
    found[0]
}

#[test]
fn writing_the_log_window_stops_the_control_domain() {
    let lines = texts(outcome());

    // The hypervisor mapped the measured launch's log into the window, and the domain could
    // read the descriptor saying as much before it wrote.
    let mapped_prefix = "slipway: domain writer: slipway event log (";
    let mapped = lines[only_line_starting(&lines, mapped_prefix)];
    let mapped_len = mapped[mapped_prefix.len()..]
        .split(' ')
        .next()
        .expect("a length after the parenthesis");
    assert!(
        mapped.ends_with(&format!("bytes) mapped read-only at {SLIPWAY_LOG_GPA:#x}")),
        "`{mapped}`"
    );
    assert_ne!(mapped_len, "0", "a measured launch has a log: `{mapped}`");
    only_line_starting(
        &lines,
        &format!("[writer] log window at {SLIPWAY_LOG_GPA:#x}: {mapped_len} log bytes"),
    );

    // The write is announced, then stopped at exactly that address.
    let target = SLIPWAY_LOG_GPA + LOG_DESCRIPTOR_LEN as u64;
    let announce = only_line_starting(
        &lines,
        &format!("[writer] writing to {target:#x}, inside my read-only log window"),
    );
    let stop = only_line_starting(
        &lines,
        &format!("slipway: domain writer stopped: write access at guest-physical {target:#x} "),
    );
    assert!(announce < stop, "stopped before it announced the write");
    if let Some(after) = lines[stop..].iter().find(|l| l.starts_with("[writer] ")) {
        panic!("`writer` printed `{after}` after it was stopped");
    }
    assert!(
        !lines.iter().any(|l| l.contains("FAILED:")),
        "the write did not stop the domain"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("slipway: domain writer shut down")),
        "`writer` shut down by itself instead of being stopped"
    );
}

#[test]
fn the_other_domain_finishes_and_the_run_ends_with_success() {
    let outcome = outcome();
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    let lines = texts(outcome);
    let own: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("[hello-a] "))
        .collect();
    assert_eq!(own.first(), Some(&"hello from hello-a"), "{own:?}");
    assert_eq!(own.last(), Some(&"done, shutting down"), "{own:?}");
    assert!(
        outcome.has_line("slipway: domain hello-a shut down (exit code 0)"),
        "`hello-a` did not shut down with exit code 0"
    );
    only_line_starting(&lines, "slipway: all domains have finished");
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: success")
    );
}
