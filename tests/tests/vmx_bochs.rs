//! The Intel VMX backend under bochs (`cargo xtask run --emulator bochs`): the same ISO as under
//! QEMU, with the backend chosen from CPUID. bochs has no TPM, so every run is unmeasured and the
//! bundle's policy starts everything (`images/test-vmx-demo`): domB plans and hands off, every
//! domain prints and finishes, the run ends with success.

use slipway_integration_tests::{Verdict, bochs_config, boot, bundle, started_domains};

const DOMAINS: [&str; 3] = ["control", "hello-a", "hello-b"];

#[test]
fn the_demo_shape_boots_plans_hands_off_and_finishes_under_vmx() {
    let built = bundle("test-vmx-demo");
    let outcome = boot(&bochs_config(&built, "vmx-demo"));
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.report());
    let lines: Vec<&str> = outcome.lines.iter().map(|l| l.text.as_str()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("slipway: backend: Intel VMX with EPT")),
        "the hypervisor did not say it picked VMX"
    );
    assert!(
        lines.iter().any(|l| l.contains("UNMEASURED")),
        "an unmeasured boot must say so"
    );
    let milestones: Vec<&str> = outcome.milestones.iter().map(|m| m.name.as_str()).collect();
    for name in DOMAINS {
        assert!(
            milestones.contains(&format!("planned:{name}").as_str()),
            "{milestones:?}"
        );
    }
    assert!(milestones.contains(&"hand-off"), "{milestones:?}");
    assert_eq!(started_domains(&outcome), DOMAINS);
    for name in DOMAINS {
        let prefix = format!("[{name}] ");
        assert!(
            lines.iter().any(|l| l.starts_with(&prefix)),
            "`{name}` printed nothing"
        );
        assert!(
            lines
                .iter()
                .any(|l| *l == format!("slipway: domain {name} shut down (exit code 0)")),
            "`{name}` did not finish"
        );
    }
    assert!(lines.contains(&"slipway: all domains have finished"));
}

#[test]
fn two_pcpus_share_the_domains_under_vmx() {
    let built = bundle("test-vmx-demo");
    let mut config = bochs_config(&built, "vmx-two-pcpus");
    config.smp = 2;
    let outcome = boot(&config);
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.report());
    let lines: Vec<&str> = outcome.lines.iter().map(|l| l.text.as_str()).collect();
    assert!(lines.contains(&"slipway: smp: 2 physical CPUs schedule vCPUs (tick 10 ms)"));
    // The AP entered VMX operation and ran at least one planned domain.
    let pcpu1 = lines
        .iter()
        .find(|l| l.starts_with("slipway: run accounting: pcpu 1: "))
        .expect("no accounting line for pcpu 1");
    assert!(
        DOMAINS.iter().any(|d| pcpu1.contains(&format!(" {d} "))),
        "pcpu 1 ran no domain: {pcpu1}"
    );
    for name in DOMAINS {
        assert!(
            lines.contains(&format!("slipway: domain {name} shut down (exit code 0)").as_str())
        );
    }
}

/// Hostile domains (`images/test-vmx-hostile`) with each behaviour's expected end.
#[test]
fn hostile_guests_are_stopped_or_refused_and_the_others_finish_under_vmx() {
    let built = bundle("test-vmx-hostile");
    let outcome = boot(&bochs_config(&built, "vmx-hostile"));
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.report());
    let lines: Vec<&str> = outcome.lines.iter().map(|l| l.text.as_str()).collect();
    let has_prefix = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    // VMX instructions (and SVM ones, which an Intel CPU does not know): #UD, and with no IDT
    // in this guest the domain ends in a triple fault, stopped by the hypervisor.
    for name in [
        "vmxon", "vmclear", "vmptrld", "vmlaunch", "vmread", "invept", "vmsave",
    ] {
        assert!(
            has_prefix(&format!("[{name}] executing {name}")),
            "`{name}` did not get to its instruction"
        );
        assert!(
            has_prefix(&format!("slipway: domain {name} stopped: triple fault")),
            "`{name}` was not stopped"
        );
        assert!(
            !has_prefix(&format!("[{name}] FAILED")),
            "`{name}` survived"
        );
    }
    assert!(has_prefix(
        "slipway: domain write-outside stopped: write access at guest-physical 0x400000"
    ));
    // Refused, and the domain shuts down by itself with 0.
    for name in ["builder", "user-hypercall", "rewrite-buffer", "imitate"] {
        assert!(
            lines.contains(&format!("slipway: domain {name} shut down (exit code 0)").as_str()),
            "`{name}` did not end cleanly"
        );
    }
    assert!(has_prefix(
        "[user-hypercall] user-hypercall: #UD at the ring-3 VMMCALL"
    ));
    // #DB and #AC are intercepted and reflected; the #DB arrives with DR6's single-step bit
    // (VMX leaves DR6 to the hypervisor), and bochs checks alignment.
    for vector in [1, 17] {
        assert!(lines.contains(
            &format!(
                "slipway: domain debug-exceptions: intercepted exception vector {vector} reflected into the guest (reported once)"
            )
            .as_str()
        ));
    }
    assert!(lines.contains(
        &"[debug-exceptions] debug-exceptions: #DB taken 1 time(s), single-step bit set"
    ));
    assert!(lines.contains(&"[debug-exceptions] debug-exceptions: #AC taken 1 time(s)"));
    assert!(lines.contains(&"slipway: domain debug-exceptions shut down (exit code 0)"));
    // A domain's imitation of the verdict stays its own line.
    assert!(lines.contains(&"[imitate] slipway: exiting: success"));
    for name in ["control", "hello-a"] {
        assert!(
            lines.contains(&format!("slipway: domain {name} shut down (exit code 0)").as_str())
        );
    }
    assert!(lines.contains(&"slipway: all domains have finished"));
}

/// `images/test-fpu` under VMX: two domains on one pCPU each keep their own x87/SSE/AVX state
/// and DR0-DR3 (none is switched by VM entries), starting clean, while the scheduler alternates
/// them. AVX (bochs' Skylake-X model has it) is enabled by each guest's XSETBV, which exits under
/// VMX (exit 55) and is emulated by the exit handler: one at entry per vCPU (domB, fpu-a, fpu-b,
/// xsetbv-pkru), and a fifth from `xsetbv-pkru`, whose XSETBV of PKRU (not offered) gets #GP:
/// without an IDT the guest triple-faults and is stopped.
#[test]
fn each_domain_keeps_its_own_fpu_and_debug_registers_under_vmx() {
    let built = bundle("test-fpu");
    let outcome = boot(&bochs_config(&built, "vmx-fpu"));
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.report());
    let mut total_pauses = 0u64;
    for (domain, marker) in [("fpu-a", 1), ("fpu-b", 2)] {
        let prefix = format!("[{domain}] ");
        let lines: Vec<&str> = outcome
            .lines
            .iter()
            .filter_map(|l| l.text.strip_prefix(prefix.as_str()))
            .collect();
        assert!(
            !lines.iter().any(|l| l.starts_with("FAILED")),
            "{domain}: {lines:?}"
        );
        for expected in [
            "fpu: clean start".to_owned(),
            "avx: xcr0 0x7, clean start".to_owned(),
            "debug registers: clean start".to_owned(),
            format!("debug registers: kept marker {marker}"),
            format!("avx: kept marker {marker}"),
        ] {
            assert!(lines.contains(&expected.as_str()), "{domain}: {lines:?}");
        }
        let kept = lines
            .iter()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "fpu: kept marker {marker} for 40000000 iterations, "
                ))
            })
            .unwrap_or_else(|| panic!("{domain} did not keep its marker: {lines:?}"));
        let pauses: u64 = kept
            .strip_suffix(" pauses")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{domain}: `{kept}`"));
        total_pauses += pauses;
    }
    assert!(
        total_pauses >= 2,
        "the domains were never interleaved ({total_pauses} pauses): the test proves nothing"
    );
    let xsetbv_exits: Option<u64> = outcome.lines.iter().find_map(|l| {
        let counts = l.text.strip_prefix("slipway: exits by reason: ")?;
        counts
            .split("; ")
            .find_map(|c| c.strip_prefix("XSETBV="))
            .and_then(|n| n.parse().ok())
    });
    assert_eq!(
        xsetbv_exits,
        Some(5),
        "one emulated XSETBV at entry per vCPU (domB, fpu-a, fpu-b, xsetbv-pkru) and the refused one"
    );
    assert!(
        outcome.lines.iter().any(|l| l
            .text
            .starts_with("slipway: domain xsetbv-pkru stopped: triple fault")),
        "{}",
        outcome.report()
    );
}
