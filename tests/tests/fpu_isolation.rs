//! Guest x87/SSE/AVX isolation (the hypervisor's `lazy_state/fpu.rs`). `images/test-fpu` runs, on
//! one pCPU (`cpus=1`, QEMU `-smp 1`), domB (built with SSE, and running SHA-384/512 on AVX2, so it
//! leaves its vector state behind) and then two domains of the hostile guest in `test=fpu` mode:
//! each checks that its XMM registers start zero and its x87/SSE control words in the initial
//! state, that XCR0 holds x87|SSE|AVX (guest-rt's entry enabled AVX with XSETBV; QEMU's `-cpu
//! max` has AVX) and the upper halves of YMM0-15 start zero, writes its own marker (XMM0-15, YMM
//! upper halves, x87 and SSE rounding control), and checks it for 40 million iterations while the
//! scheduler alternates the two domains (each counts the pauses where the other ran). The same
//! domains check the debug-address registers DR0-DR3 likewise (start zero, own values kept).
//! Without the hypervisor saving and restoring the state per vCPU, the second domain would start
//! with the first's (or domB's) registers, or a domain's marker would change under it.
//! A third domain (`xsetbv-pkru`) executes XSETBV with PKRU, which no guest is offered, and is
//! stopped.
//! Also checks that domB names its hashing backends: `software` for SHA-1/SHA-256 under QEMU's
//! TCG (no SHA-NI), `avx2` for SHA-384/512 (AVX offered to guests).

use std::sync::OnceLock;

use slipway_integration_tests::{Firmware, RunOutcome, Verdict, boot, bundle, config};

fn outcome() -> &'static RunOutcome {
    static OUTCOME: OnceLock<RunOutcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let built = bundle("test-fpu");
        boot(&config(&built, Firmware::Bios, "fpu"))
    })
}

/// The text after `[<domain>] ` of every line of `domain`.
fn domain_lines<'a>(outcome: &'a RunOutcome, domain: &str) -> Vec<&'a str> {
    let prefix = format!("[{domain}] ");
    outcome
        .lines
        .iter()
        .filter_map(|l| l.text.strip_prefix(prefix.as_str()))
        .collect()
}

/// `fpu: kept marker <m> for <n> iterations, <p> pauses` -> (m, n, p).
fn kept(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("fpu: kept marker ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [marker, "for", iterations, "iterations,", pauses, "pauses"] => Some((
            marker.parse().ok()?,
            iterations.parse().ok()?,
            pauses.parse().ok()?,
        )),
        _ => None,
    }
}

#[test]
fn each_domain_keeps_its_own_x87_sse_avx_state_on_a_shared_pcpu() {
    let outcome = outcome();
    let mut total_pauses = 0;
    for (domain, marker) in [("fpu-a", 1), ("fpu-b", 2)] {
        let lines = domain_lines(outcome, domain);
        assert!(
            !lines.iter().any(|l| l.starts_with("FAILED")),
            "{domain}: {lines:?}"
        );
        assert!(
            lines.contains(&"fpu: clean start"),
            "{domain} did not start clean: {lines:?}"
        );
        // DR0-DR3 (not switched by VMRUN) start zero and keep the domain's own values.
        assert!(
            lines.contains(&"debug registers: clean start"),
            "{domain}'s DR0-DR3 did not start clean: {lines:?}"
        );
        // AVX: offered (QEMU 7.2's `-cpu max` has it), enabled by the guest's XSETBV, its YMM
        // upper halves clean at the start and the domain's own kept.
        assert!(
            lines.contains(&"avx: xcr0 0x7, clean start"),
            "{domain}: AVX not enabled or its state not clean: {lines:?}"
        );
        let kept_avx = format!("avx: kept marker {marker}");
        assert!(
            lines.contains(&kept_avx.as_str()),
            "{domain} lost its YMM upper halves: {lines:?}"
        );
        let kept_debug = format!("debug registers: kept marker {marker}");
        assert!(
            lines.contains(&kept_debug.as_str()),
            "{domain} lost its DR0-DR3: {lines:?}"
        );
        let (seen_marker, iterations, pauses) = lines
            .iter()
            .find_map(|l| kept(l))
            .unwrap_or_else(|| panic!("{domain} did not report its marker kept: {lines:?}"));
        assert_eq!((seen_marker, iterations), (marker, 40_000_000), "{domain}");
        total_pauses += pauses;
    }
    // The two domains really alternated on the pCPU while holding their markers.
    assert!(
        total_pauses >= 2,
        "the domains were never interleaved ({total_pauses} pauses): the test proves nothing"
    );
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.report());
}

/// QEMU 7.2's SVM lets the guest's XSETBV through without an exit (it has no XSETBV intercept);
/// the backend finds the value in XCR0 after the next exit (the console write) and stops the
/// domain. On a CPU honouring the intercept the exit handler's #GP ends this IDT-less guest in
/// a triple fault instead (`vmx_bochs.rs`).
#[test]
fn xsetbv_of_a_component_not_offered_stops_the_domain() {
    let outcome = outcome();
    let lines = domain_lines(outcome, "xsetbv-pkru");
    assert!(
        lines.contains(&"executing xsetbv with XCR0 = 0x207 (PKRU is not offered)"),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("FAILED")),
        "survived: {lines:?}"
    );
    let stop = "slipway: domain xsetbv-pkru stopped: forbidden instruction XSETBV (without an \
                exit) of state components not offered";
    assert!(
        outcome.lines.iter().any(|l| l.text.starts_with(stop)),
        "{}",
        outcome.report()
    );
}

#[test]
fn domb_hashes_sha512_with_avx2_and_the_rest_in_software_under_tcg() {
    let lines = domain_lines(outcome(), "domb");
    assert!(
        lines.contains(
            &"hashing backend: software (SHA-1: software, SHA-256: software, SHA-384/512: avx2)"
        ),
        "domB's lines: {lines:?}"
    );
}
