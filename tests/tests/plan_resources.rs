//! A valid plan that needs more hardware than the machine has is refused before hand-off:
//! `images/test-too-many-vcpus` asks for two domains of 8 vCPUs, one ASID each, and QEMU's SVM
//! offers 15 guest ASIDs, one of them domB's. The hypervisor takes each domain's ASIDs (and
//! VMCB frames) at CreateDomain, so the second domain is refused with `NoVcpuContext` while domB
//! can still react; domB names the refusal and stops; nothing is handed off or started, and the
//! run fails. (Before, both were accepted, the second could not start after hand-off, and the
//! run ended in success.)

use slipway_integration_tests::{Firmware, Verdict, boot, bundle, config};

#[test]
fn a_plan_needing_more_asids_than_the_cpu_has_is_refused_before_hand_off() {
    let built = bundle("test-too-many-vcpus");
    let outcome = boot(&config(&built, Firmware::Bios, "bios"));
    assert_eq!(outcome.verdict, Verdict::Failure, "{}", outcome.report());
    let domb: Vec<&str> = outcome
        .lines
        .iter()
        .filter_map(|l| l.text.strip_prefix("[domb] "))
        .collect();
    let refusal = domb
        .iter()
        .find(|l| l.contains("ASIDs") || l.contains("0x0505"))
        .unwrap_or_else(|| panic!("domB did not report the NoVcpuContext refusal: {domb:?}"));
    assert!(
        refusal.contains("wide-b"),
        "the refusal names no domain: `{refusal}`"
    );
    for milestone in &outcome.milestones {
        let name = milestone.name.as_str();
        assert!(
            !(name == "hand-off" || name.starts_with("started:")),
            "milestone `{name}` in a refused plan"
        );
    }
    assert!(
        !outcome
            .lines
            .iter()
            .any(|l| l.text.contains("cannot start")),
        "a domain failed to start after hand-off instead"
    );
}
