//! A launch configuration with a wrong memory size, a duplicate name, a malformed name, two
//! domains with the TPM capability or a missing module is refused by domB with a message naming the device-tree node and the
//! property at fault; no domain is planned or started, and the hypervisor ends the run with
//! failure (the boot domain ended without handing off; with no `recovery=` module the hypervisor
//! says so and halts: `tests/tests/recovery.rs` covers the recovery environment).
//!
//! One bundle per error (`images/test-bad-config-*`): domB stops at the first error, so a bundle
//! with several errors would test only one of them.

use slipway_integration_tests::{Firmware, RunOutcome, Verdict, boot, bundle, config};

/// Boots `bundle_name` under SeaBIOS and returns the outcome.
fn boot_bundle(bundle_name: &str) -> RunOutcome {
    let built = bundle(bundle_name);
    boot(&config(&built, Firmware::Bios, "bios"))
}

/// Checks that the run failed because domB refused the launch before planning anything, and
/// returns domB's one `error:` line (without the `[domb] ` prefix).
fn refused_launch_error(outcome: &RunOutcome) -> String {
    assert_eq!(
        outcome.verdict,
        Verdict::Failure,
        "a launch that domB refuses must end the run with failure; verdict: {}",
        outcome.verdict
    );

    let errors: Vec<&str> = outcome
        .lines
        .iter()
        .filter_map(|l| l.text.strip_prefix("[domb] error: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "domB prints exactly one error line: {errors:?}"
    );

    // Nothing was planned, handed off or started; no domain but domB said anything.
    for milestone in &outcome.milestones {
        let name = milestone.name.as_str();
        assert!(
            !(name == "hand-off" || name.starts_with("started:")),
            "milestone `{name}` in a refused launch"
        );
    }
    assert!(
        !outcome
            .lines
            .iter()
            .any(|l| l.text.starts_with("slipway: hand-off")),
        "a hand-off line in a refused launch"
    );
    for line in &outcome.lines {
        if line.text.starts_with('[') {
            assert!(
                line.text.starts_with("[domb] "),
                "a domain other than domB printed `{}`",
                line.text
            );
        }
    }

    // The hypervisor reports domB's failed shutdown and why it ends the run with failure.
    // domB's exit code names the class (`slipway_protocol::recovery::BuilderExit`): 2 a
    // malformed configuration, 3 a missing module, 5 a plan the hypervisor refused.
    assert!(
        ["2", "3", "5"].iter().any(|code| outcome.has_line(&format!(
            "slipway: domain domb shut down (exit code {code})"
        ))),
        "no `slipway: domain domb shut down (exit code 2|3|5)` line"
    );
    // Without a recovery module (no `recovery=`), the hypervisor says so and halts.
    assert!(
        outcome.has_line(
            "slipway: RECOVERY: no recovery module (the hypervisor command line has no `recovery=<module name>`): halting"
        ),
        "the hypervisor does not say that there is no recovery module"
    );
    assert!(
        outcome
            .hypervisor_lines()
            .any(|l| l.starts_with("slipway: the boot domain ended without handing off")),
        "the hypervisor does not say that the boot domain ended without handing off"
    );
    assert_eq!(
        outcome.hypervisor_lines().last(),
        Some("slipway: exiting: failure")
    );
    errors[0].to_owned()
}

/// Checks the refusal of a configuration that domB's parser rejects: the error line starts with
/// `launch configuration: node <node> property <property>: ` and the problem mentions `problem`.
fn check_config_refused(bundle_name: &str, node: &str, property: &str, problem: &str) {
    let outcome = boot_bundle(bundle_name);
    let error = refused_launch_error(&outcome);
    let prefix = format!("launch configuration: node {node} property {property}: ");
    let rest = error.strip_prefix(&prefix).unwrap_or_else(|| {
        panic!("expected `[domb] error: {prefix}...`, got `[domb] error: {error}`")
    });
    assert!(
        rest.contains(problem),
        "the problem `{rest}` does not mention `{problem}`"
    );
    // Parsing failed before the policy ran or any domain was planned.
    assert!(
        !outcome
            .milestones
            .iter()
            .any(|m| m.name.starts_with("planned:")),
        "a domain was planned: {:?}",
        outcome.milestones
    );
}

#[test]
fn memory_size_not_a_page_multiple_is_refused() {
    check_config_refused(
        "test-bad-config-memory",
        "/chosen/hypervisor/hello-b",
        "memory",
        "memory must be a multiple of 4 KiB",
    );
}

#[test]
fn duplicate_domain_name_is_refused() {
    check_config_refused(
        "test-bad-config-duplicate-name",
        "/chosen/hypervisor/hello-b",
        "domain-name",
        "the name is already used by /chosen/hypervisor/hello-a",
    );
}

#[test]
fn a_second_domain_with_the_tpm_capability_is_refused_naming_both_nodes() {
    check_config_refused(
        "test-bad-config-two-tpm",
        "/chosen/hypervisor/attest-b",
        "capabilities",
        "/chosen/hypervisor/attest-a already has the tpm capability",
    );
}

#[test]
fn malformed_domain_name_is_refused() {
    check_config_refused(
        "test-bad-config-malformed-name",
        "/chosen/hypervisor/Hello_B",
        "node name",
        "the name is not 1 to 31 characters from a-z, 0-9 and '-'",
    );
}

#[test]
fn missing_kernel_module_is_refused() {
    check_config_refused(
        "test-bad-config-missing-module",
        "/chosen/hypervisor/hello-b",
        "kernel",
        "no boot module is named \"vmlinuz\"",
    );
}

/// A memory size the parser accepts (1 GiB) but the machine (512 MiB) cannot give: the
/// hypervisor refuses the domain's creation, and domB's message must still name the node and
/// the property, as every configuration error does.
#[test]
fn memory_size_larger_than_the_machine_is_refused_naming_the_node() {
    let outcome = boot_bundle("test-bad-config-memory-too-big");
    let error = refused_launch_error(&outcome);
    assert!(
        error.contains("node /chosen/hypervisor/hello-b property memory"),
        "the error does not name node /chosen/hypervisor/hello-b and property memory: \
         `[domb] error: {error}`"
    );
}
