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
