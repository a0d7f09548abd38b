//! Two physical CPUs. `images/test-two-pcpu` runs two single-vCPU domains (`spin-a`,
//! `spin-b`) that spin without exits, under QEMU `-smp 2`. The per-pCPU run accounting the
//! hypervisor prints at the end must show each pCPU running exactly one of them (domB aside,
//! which runs before the hand-off), and both pCPUs running guest code in the same scheduler ticks.
//!
//! Accounting format (hv-core `sched::Summary`), one line per pCPU and one for parallel ticks:
//! `slipway: run accounting: pcpu <n>: <domain> <us> us guest (<ticks> ticks); ...; idle <n> ticks`
//! `slipway: run accounting: parallel ticks <n>`

use slipway_integration_tests::{Firmware, RunOutcome, Verdict, boot, bundle, config};

const SPINNERS: [&str; 2] = ["spin-a", "spin-b"];
/// `spin=100` in the configuration: millions of iterations.
const ITERATIONS: u64 = 100_000_000;
/// Fewest timer ticks (10 ms each) a spinner must be seen running; each spins for about a
/// second under TCG.
const MIN_TICKS: u64 = 10;

/// One domain's entry on a pCPU accounting line.
#[derive(Debug)]
struct Entry {
    domain: String,
    guest_us: u64,
    ticks: u64,
}

/// One `slipway: run accounting: pcpu <n>: ...` line.
#[derive(Debug)]
struct PcpuAccounting {
    pcpu: u32,
    entries: Vec<Entry>,
}

fn parse_number(text: &str, what: &str, line: &str) -> u64 {
    text.parse()
        .unwrap_or_else(|_| panic!("{what} `{text}` is not a number in `{line}`"))
}

/// Parses `<domain> <us> us guest (<ticks> ticks)`.
fn parse_entry(part: &str, line: &str) -> Entry {
    let words: Vec<&str> = part.split_whitespace().collect();
    match words.as_slice() {
        [domain, us, "us", "guest", ticks, "ticks)"] => Entry {
            domain: (*domain).to_owned(),
            guest_us: parse_number(us, "guest time", line),
            ticks: parse_number(
                ticks.strip_prefix('(').unwrap_or_else(|| {
                    panic!("no `(` before the tick count in `{part}` of `{line}`")
                }),
                "tick count",
                line,
            ),
        },
        _ => panic!("unexpected accounting entry `{part}` in `{line}`"),
    }
}

/// The per-pCPU lines and the parallel tick count.
fn parse_accounting(outcome: &RunOutcome) -> (Vec<PcpuAccounting>, u64) {
    let mut pcpus = Vec::new();
    let mut parallel = None;
    for line in outcome.hypervisor_lines() {
        let Some(rest) = line.strip_prefix("slipway: run accounting: ") else {
            continue;
        };
        if let Some(count) = rest.strip_prefix("parallel ticks ") {
            assert!(parallel.is_none(), "two parallel-tick lines");
            parallel = Some(parse_number(count, "parallel ticks", line));
            continue;
        }
        let rest = rest
            .strip_prefix("pcpu ")
            .unwrap_or_else(|| panic!("unexpected accounting line `{line}`"));
        let (pcpu, rest) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("no `: ` after the pCPU number in `{line}`"));
        let mut parts: Vec<&str> = rest.split("; ").collect();
        let idle = parts.pop().expect("split gives one part at least");
        assert!(
            idle.starts_with("idle ") && idle.ends_with(" ticks"),
            "the line does not end with `idle <n> ticks`: `{line}`"
        );
        pcpus.push(PcpuAccounting {
            pcpu: parse_number(pcpu, "pCPU", line) as u32,
            entries: parts.iter().map(|p| parse_entry(p, line)).collect(),
        });
    }
    let parallel = parallel.expect("no `slipway: run accounting: parallel ticks` line");
    (pcpus, parallel)
}

#[test]
fn two_spinning_domains_run_on_two_pcpus_in_the_same_ticks() {
    let built = bundle("test-two-pcpu");
    let outcome = boot(&config(&built, Firmware::Bios, "bios"));
    assert_eq!(
        outcome.verdict,
        Verdict::Success,
        "verdict: {}",
        outcome.verdict
    );
    assert!(
        outcome.has_line("slipway: smp: cpu 1 (APIC ID 1) started"),
        "the second pCPU was not brought up"
    );

    // No domain line before the hand-off; both spinners finish their work afterwards.
    let hand_off = outcome
        .lines
        .iter()
        .position(|l| l.text.starts_with("slipway: hand-off:"))
        .expect("a `slipway: hand-off:` line");
    for line in &outcome.lines[..hand_off] {
        assert!(
            !line.text.starts_with('[') || line.text.starts_with("[domb] "),
            "domain line before the hand-off: `{}`",
            line.text
        );
    }
    for domain in SPINNERS {
        assert!(
            outcome.has_line(&format!(
                "[{domain}] spin: done after {ITERATIONS} iterations"
            )),
            "`{domain}` did not finish spinning"
        );
        assert!(
            outcome.has_line(&format!("slipway: domain {domain} shut down (exit code 0)")),
            "`{domain}` did not shut down with exit code 0"
        );
    }

    let (pcpus, parallel) = parse_accounting(&outcome);
    println!("accounting: {pcpus:?}, parallel ticks {parallel}");
    assert_eq!(
        pcpus.iter().map(|p| p.pcpu).collect::<Vec<_>>(),
        [0, 1],
        "one accounting line per pCPU"
    );

    // Each pCPU ran exactly one spinner (domB, before the hand-off, aside), and not the same one.
    let mut ran = Vec::new();
    for pcpu in &pcpus {
        let guests: Vec<&Entry> = pcpu.entries.iter().filter(|e| e.domain != "domb").collect();
        assert_eq!(
            guests.len(),
            1,
            "pCPU {} ran {guests:?}, expected exactly one domain",
            pcpu.pcpu
        );
        let entry = guests[0];
        assert!(
            SPINNERS.contains(&entry.domain.as_str()),
            "pCPU {} ran `{}`",
            pcpu.pcpu,
            entry.domain
        );
        assert!(
            entry.ticks >= MIN_TICKS && entry.guest_us > 0,
            "pCPU {}: `{}` ran {} ticks ({} us), expected at least {MIN_TICKS} ticks",
            pcpu.pcpu,
            entry.domain,
            entry.ticks,
            entry.guest_us
        );
        ran.push(entry);
    }
    assert_ne!(
        ran[0].domain, ran[1].domain,
        "both pCPUs ran the same domain"
    );

    // Both pCPUs ran guest code in the same ticks, for a good part of the shorter run.
    let shorter = ran[0].ticks.min(ran[1].ticks);
    assert!(
        parallel >= 5 && parallel * 5 >= shorter,
        "only {parallel} ticks with both pCPUs in guest mode (the shorter spinner ran {shorter} ticks)"
    );
}
