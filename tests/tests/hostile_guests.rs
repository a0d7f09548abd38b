//! Hostile test guests, all in one run of `images/test-hostile` (SeaBIOS, 2 pCPUs):
//! one domain per behaviour of `slipway-guest-hostile` beside two well-behaved hello domains
//! (`control` and `hello-a`). Each hostile domain is stopped with a hypervisor line naming the
//! reason, or its requests are refused; the hello domains finish normally and the run ends with
//! success. Every test here reads the same boot.

use std::sync::OnceLock;

use slipway_integration_tests::{Firmware, RunOutcome, Verdict, boot, bundle, config};

/// Domain output lines are capped at this many characters of escaped text (hv-core's
/// `console::MAX_LINE_TEXT`); a longer line continues on the next one after a `\`.
const MAX_LINE_TEXT: usize = 160;

/// Every domain of `images/test-hostile/config.dts`.
const DOMAINS: [&str; 13] = [
    "control",
    "hello-a",
    "write-outside",
    "builder",
    "vmsave",
    "vmload",
    "clgi",
    "stgi",
    "skinit",
    "rewrite-buffer",
    "imitate",
    "user-hypercall",
    "debug-exceptions",
];

/// The one boot all tests of this file check.
fn outcome() -> &'static RunOutcome {
    static OUTCOME: OnceLock<RunOutcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let built = bundle("test-hostile");
        boot(&config(&built, Firmware::Bios, "hostile"))
    })
}

fn texts(outcome: &RunOutcome) -> Vec<&str> {
    outcome.lines.iter().map(|l| l.text.as_str()).collect()
}

/// Index of the first line starting with `prefix`, or a panic naming it.
fn index_of_prefix(lines: &[&str], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with `{prefix}`"))
}

/// Lines of domain `name` (without the `[name] ` prefix), in order.
fn domain_lines<'a>(lines: &[&'a str], name: &str) -> Vec<&'a str> {
    let prefix = format!("[{name}] ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// Checks that `domain` was stopped by the hypervisor with a reason starting with `reason`,
/// after it announced the hostile act with a line starting with `announced`, and that it said
/// nothing afterwards (in particular no `FAILED:` of a survivor) and was not shut down normally.
fn check_stopped(domain: &str, announced: &str, reason: &str) {
    let lines = texts(outcome());
    let announce = index_of_prefix(&lines, &format!("[{domain}] {announced}"));
    let stop_prefix = format!("slipway: domain {domain} stopped: {reason}");
    let stops: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(&stop_prefix))
        .collect();
    assert_eq!(
        stops.len(),
        1,
        "expected one line starting with `{stop_prefix}`; the domain's hypervisor lines: {:?}",
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("slipway: domain {domain} ")))
            .collect::<Vec<_>>()
    );
    let stop = stops[0];
    assert!(
        announce < stop,
        "`{domain}` was stopped before it announced `{announced}`"
    );
    let own = format!("[{domain}] ");
    if let Some(after) = lines[stop..].iter().find(|l| l.starts_with(&own)) {
        panic!("`{domain}` printed `{after}` after it was stopped");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(&format!("slipway: domain {domain} shut down"))),
        "`{domain}` shut down by itself instead of being stopped"
    );
}

#[test]
fn hello_domains_finish_and_the_run_ends_with_success() {
    let outcome = outcome();
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    let lines = texts(outcome);

    // Every configured domain was planned before and started after the one hand-off.
    let names: Vec<&str> = outcome.milestones.iter().map(|m| m.name.as_str()).collect();
    let hand_offs: Vec<usize> = (0..names.len())
        .filter(|&i| names[i] == "hand-off")
        .collect();
    assert_eq!(hand_offs.len(), 1, "milestones: {names:?}");
    for domain in DOMAINS {
        let planned = names.iter().position(|n| *n == format!("planned:{domain}"));
        let started = names.iter().position(|n| *n == format!("started:{domain}"));
        assert!(
            planned.is_some_and(|p| p < hand_offs[0]),
            "`{domain}` not planned before the hand-off: {names:?}"
        );
        assert!(
            started.is_some_and(|s| s > hand_offs[0]),
            "`{domain}` not started after the hand-off: {names:?}"
        );
    }

    // No domain line before the hand-off line (domB's own lines aside).
    let hand_off_line = index_of_prefix(&lines, "slipway: hand-off:");
    for line in &lines[..hand_off_line] {
        assert!(
            !line.starts_with('[') || line.starts_with("[domb] "),
            "domain line before the hand-off: `{line}`"
        );
    }

    // The well-behaved domains did their work and shut down normally.
    for domain in ["control", "hello-a"] {
        let own = domain_lines(&lines, domain);
        assert_eq!(own.first(), Some(&format!("hello from {domain}").as_str()));
        assert!(
            own.iter().any(|l| l.starts_with("work: below 20000, ")),
            "`{domain}` did not report its work: {own:?}"
        );
        assert_eq!(own.last(), Some(&"done, shutting down"));
        assert!(
            outcome.has_line(&format!("slipway: domain {domain} shut down (exit code 0)")),
            "`{domain}` did not shut down with exit code 0"
        );
    }

    // No hostile guest survived what should have stopped it.
    for line in &lines {
        assert!(!line.contains("FAILED:"), "`{line}`");
    }
    let all_finished = index_of_prefix(&lines, "slipway: all domains have finished");
    assert!(all_finished > hand_off_line);
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: success")
    );
}

#[test]
fn write_outside_memory_stops_the_domain_at_that_address() {
    let lines = texts(outcome());
    // `writing to 0x400000, outside my memory (RAM ends at 0x400000)`
    let announced = domain_lines(&lines, "write-outside")
        .into_iter()
        .find_map(|l| l.strip_prefix("writing to "))
        .expect("`[write-outside] writing to ...` line");
    let target = announced
        .split(',')
        .next()
        .expect("an address before the comma");
    assert!(target.starts_with("0x"), "`{announced}`");
    check_stopped(
        "write-outside",
        "writing to ",
        &format!("write access at guest-physical {target} outside its memory"),
    );
}

#[test]
fn svm_instructions_stop_their_domains() {
    for (domain, mnemonic) in [
        ("vmsave", "VMSAVE"),
        ("vmload", "VMLOAD"),
        ("clgi", "CLGI"),
        ("stgi", "STGI"),
        ("skinit", "SKINIT"),
    ] {
        check_stopped(
            domain,
            &format!("executing {domain} "),
            &format!("forbidden instruction {mnemonic} "),
        );
    }
}

#[test]
fn builder_hypercalls_after_hand_off_are_refused() {
    let outcome = outcome();
    let lines = texts(outcome);
    let own = domain_lines(&lines, "builder");
    // AfterHandOff is 0x0202; a Measure may also be refused for the missing capability
    // (NotPermitted, 0x0201).
    for (request, codes) in [
        ("CreateDomain", &["(0x0202)"][..]),
        ("Measure", &["(0x0202)", "(0x0201)"][..]),
        ("HandOff", &["(0x0202)"][..]),
    ] {
        let prefix = format!("{request}: refused: ");
        let line = own
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `[builder] {prefix}...` line: {own:?}"));
        assert!(
            codes.iter().any(|code| line.ends_with(code)),
            "`{line}` is not refused with one of {codes:?}"
        );
    }
    assert!(
        outcome.has_line("slipway: domain builder shut down (exit code 0)"),
        "the builder domain did not shut down with exit code 0 (all refused)"
    );
    // The refused requests changed nothing: no second hand-off, no `intruder` domain.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("slipway: hand-off:"))
            .count(),
        1
    );
    for line in &lines {
        assert!(!line.contains("intruder"), "`{line}`");
    }
}

#[test]
fn rewriting_the_hypercall_buffer_from_a_second_vcpu_is_harmless() {
    let outcome = outcome();
    let lines = texts(outcome);
    // `rewrite-buffer: 200 calls during N rewrites: D done, R refused, U responses overwritten by
    // vCPU 1, T refused at transport`
    let summary = domain_lines(&lines, "rewrite-buffer")
        .into_iter()
        .find_map(|l| l.strip_prefix("rewrite-buffer: "))
        .expect("the `[rewrite-buffer] rewrite-buffer: ...` summary line");
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().expect("digits"))
        .collect();
    // 200, N, D, R, U, 1 (of "vCPU 1"), T
    assert_eq!(numbers.len(), 7, "unexpected summary `{summary}`");
    let (calls, rewrites, done, refused, overwritten, transport) = (
        numbers[0], numbers[1], numbers[2], numbers[3], numbers[4], numbers[6],
    );
    assert_eq!(calls, 200, "`{summary}`");
    assert!(
        rewrites > 0,
        "vCPU 1 never rewrote the buffer during the calls: `{summary}`"
    );
    assert_eq!(
        done + refused + overwritten + transport,
        calls,
        "every call must be answered or refused: `{summary}`"
    );
    assert!(
        outcome.has_line("slipway: domain rewrite-buffer shut down (exit code 0)"),
        "the rewrite-buffer domain did not shut down with exit code 0"
    );
}

#[test]
fn imitated_lines_stay_prefixed_and_escaped() {
    let outcome = outcome();
    let lines = texts(outcome);

    // The imitations appear verbatim behind the imitating domain's own prefix, control bytes
    // escaped, the 600-character line cut into continued pieces.
    let xs = |n: usize| "x".repeat(n);
    let continued = format!("{}\\", xs(MAX_LINE_TEXT));
    let expected = [
        "hostile guest: test=imitate",
        "[hello-a] this line pretends to come from hello-a",
        "slipway: exiting: success",
        "slipway: milestone hand-off at 1 us",
        r"innocent\x0d[control] overwritten? \x1b[2K\x1b[1Gslipway: fake",
        continued.as_str(),
        continued.as_str(),
        continued.as_str(),
        &xs(600 - 3 * MAX_LINE_TEXT),
        "imitate: done",
    ];
    assert_eq!(domain_lines(&lines, "imitate"), expected);
    assert!(
        outcome.has_line("slipway: domain imitate shut down (exit code 0)"),
        "the imitate domain did not shut down with exit code 0"
    );

    // None of them passes for another domain's or the hypervisor's line.
    for line in &lines {
        assert_ne!(*line, "[hello-a] this line pretends to come from hello-a");
        assert!(!line.starts_with("[control] overwritten?"), "`{line}`");
        assert!(!line.starts_with("slipway: fake"), "`{line}`");
        assert!(!line.starts_with("innocent"), "`{line}`");
        assert!(!line.starts_with("xxxxxxxxxx"), "`{line}`");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| **l == "slipway: exiting: success")
            .count(),
        1,
        "the success line appears more than once"
    );
    assert_eq!(
        outcome
            .milestones
            .iter()
            .filter(|m| m.name == "hand-off")
            .count(),
        1,
        "the harness took an imitated milestone for a real one"
    );

    // The raw serial bytes after the hand-off: no escape sequence or lone carriage return reached
    // the terminal, and every line starts with the hypervisor's prefix or a real domain's.
    let raw = std::fs::read(&outcome.serial_log).expect("the serial log");
    let start = raw
        .windows(b"slipway: hand-off:".len())
        .position(|w| w == b"slipway: hand-off:")
        .expect("the hand-off line in the raw log");
    let after = &raw[start..];
    assert!(
        !after.contains(&0x1b),
        "an escape byte reached the serial line"
    );
    for (i, &b) in after.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(
                after.get(i + 1),
                Some(&b'\n'),
                "a carriage return not ending a line reached the serial line"
            );
        }
    }
    for raw_line in after.split(|&b| b == b'\n') {
        let raw_line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if raw_line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(raw_line);
        let known = text.starts_with("slipway: ")
            || DOMAINS.iter().any(|d| text.starts_with(&format!("[{d}] ")));
        assert!(known, "raw serial line without a known prefix: `{text}`");
        if let Some(rest) = text.strip_prefix('[') {
            let body = rest.split_once("] ").map_or("", |(_, body)| body);
            assert!(
                body.len() <= MAX_LINE_TEXT + 1,
                "domain line longer than the cap: `{text}`"
            );
        }
    }
}

#[test]
fn hypercalls_from_guest_user_space_raise_invalid_opcode() {
    let outcome = outcome();
    let lines = texts(outcome);
    let own = domain_lines(&lines, "user-hypercall");
    assert!(
        own.iter()
            .any(|l| l.starts_with("calling the hypervisor from ring 3")),
        "`user-hypercall` did not reach ring 3: {own:?}"
    );
    assert!(
        own.iter()
            .any(|l| l.starts_with("user-hypercall: #UD at the ring-3 VMMCALL")),
        "the ring-3 hypercall did not raise #UD in the guest: {own:?}"
    );
    // The request (a console write) was never carried out, and the domain ended by itself.
    for line in &own {
        assert!(!line.contains("came from ring 3"), "`{line}`");
    }
    assert!(
        outcome.has_line("slipway: domain user-hypercall shut down (exit code 0)"),
        "the user-hypercall domain did not shut down with exit code 0: {own:?}"
    );
}

#[test]
fn debug_and_alignment_check_exceptions_are_intercepted_and_reach_the_guest() {
    let outcome = outcome();
    let lines = texts(outcome);
    let own = domain_lines(&lines, "debug-exceptions");
    // The hypervisor saw the #DB (intercepted) and the guest's handler still got it.
    assert!(
        outcome.has_line(
            "slipway: domain debug-exceptions: intercepted exception vector 1 reflected into the guest (reported once)"
        ),
        "#DB was not intercepted and reflected: {own:?}"
    );
    assert!(
        own.contains(&"debug-exceptions: #DB taken 1 time(s), single-step bit set"),
        "the guest did not get its single-step #DB: {own:?}"
    );
    // QEMU's emulator does not check alignment: #AC is then reported absent; where the CPU
    // raises it, the hypervisor must have intercepted and reflected it.
    if own
        .iter()
        .any(|l| l.starts_with("debug-exceptions: #AC taken"))
    {
        assert!(outcome.has_line(
            "slipway: domain debug-exceptions: intercepted exception vector 17 reflected into the guest (reported once)"
        ));
    } else {
        assert!(
            own.contains(&"debug-exceptions: no #AC: this CPU does not check alignment"),
            "{own:?}"
        );
    }
    assert!(
        outcome.has_line("slipway: domain debug-exceptions shut down (exit code 0)"),
        "{own:?}"
    );
}

#[test]
fn host_nmis_during_guest_execution_are_handled_and_the_run_continues() {
    let outcome = outcome();
    // `nmi_test=3` (bundle.toml): each NMI arrives while a guest runs on cpu 0, causes an NMI
    // exit and is taken by the host's handler after it; none may end the run.
    assert!(
        outcome.has_line("slipway: nmi test: 3 NMIs will be sent to cpu 0 while a guest runs"),
        "the NMI test was not armed"
    );
    assert!(
        outcome.has_line("slipway: host NMIs handled: 3; the run went on"),
        "host NMI count missing: {:?}",
        outcome
            .hypervisor_lines()
            .filter(|l| l.contains("NMI"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    assert!(
        !outcome
            .lines
            .iter()
            .any(|l| l.text.contains("EXCEPTION in hypervisor"))
    );
}
