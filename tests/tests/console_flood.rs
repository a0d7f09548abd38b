//! One domain flooding its console cannot slow the others (`images/test-console-flood`, two
//! pCPUs): the victim counts the exits it makes per 10^9 TSC ticks in the quiet half-periods of
//! the TSC and in the loud ones, where `flood`, on the other pCPU, writes the non-printable byte
//! 0x01 (escaped to four characters) in 1024-byte console writes as fast as it can (interleaved,
//! so that drifts in the host's load affect both alike). Each exit of every pCPU takes the hypervisor's global lock; before, the flood's lines
//! were written to COM1 by polling under that lock, so every exit waited. Now each domain's
//! output is queued, rate-limited (hv-core `console_queue`; over its rate a domain's bytes are
//! dropped before they are escaped) and written outside the lock. The ratio of the two rates is
//! printed; the goal is at least 0.8. Measured on the shared 2-core CI machine (load ~9): 0.04
//! before the change, 0.8-1.3 after; 0.42 once with five builds competing for the two cores
//! (single runs are noisy), so the check asserts 0.25, six times the old behaviour, and prints
//! the ratio of every run.

use slipway_integration_tests::{Firmware, Verdict, boot, bundle, config};

#[test]
fn a_console_flood_neither_slows_its_neighbour_nor_floods_the_line() {
    let built = bundle("test-console-flood");
    let outcome = boot(&config(&built, Firmware::Bios, "flood"));
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.report());
    // `victim: alone Q, beside the flood L exits per 10^9 TSC ticks: ratio R`
    let summary = outcome
        .lines
        .iter()
        .find_map(|l| l.text.strip_prefix("[victim] victim: alone "))
        .expect("the victim's summary line");
    let numbers: Vec<&str> = summary
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| !w.is_empty() && *w != ".")
        .collect();
    let (quiet, loud): (f64, f64) = (numbers[0].parse().unwrap(), numbers[1].parse().unwrap());
    assert!(quiet > 0.0, "`{summary}`");
    let ratio = loud / quiet;
    println!(
        "console flood: victim progress ratio {ratio:.3} (alone {quiet}, beside the flood {loud})"
    );
    // The flood really ran during the second measurement and was held to its rate: the
    // hypervisor reported dropped output, and far fewer lines reached the console than written.
    let flood_lines = outcome
        .lines
        .iter()
        .filter(|l| l.text.starts_with("[flood] \\x01"))
        .count();
    let reports: Vec<&str> = outcome
        .lines
        .iter()
        .map(|l| l.text.as_str())
        .filter(|t| t.starts_with("slipway: console: flood: "))
        .collect();
    assert!(
        !reports.is_empty(),
        "no drop report for the flooding domain ({flood_lines} flood lines printed)"
    );
    // Its own last lines may be dropped too; the reports count what was dropped: far more than
    // what reached the console (each printed line is about 165 bytes).
    let dropped: u64 = reports
        .iter()
        .filter_map(|r| r.strip_prefix("slipway: console: flood: "))
        .filter_map(|r| r.split_whitespace().next())
        .map(|n| n.parse::<u64>().expect("a byte count"))
        .sum();
    assert!(
        dropped > 165 * flood_lines as u64,
        "{dropped} bytes dropped, {flood_lines} flood lines printed: the rate limit did not hold"
    );
    assert!(
        ratio >= 0.25,
        "the victim ran at {ratio:.3} of its speed beside the flood (goal: at least 0.8)"
    );
}
