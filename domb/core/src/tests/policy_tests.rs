use super::fixtures::*;
use crate::config::{self, LaunchConfig};
use crate::policy::{self, Action, Decision, HaltReason, LaunchFacts, Outcome, Policy, Trigger};

fn config_with(policy: Policy) -> LaunchConfig {
    let mut config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    config.policy = policy;
    config
}

fn facts(measured: bool, tpm: bool) -> LaunchFacts {
    LaunchFacts {
        measured_launch: measured,
        tpm_available: tpm,
        module_sha256: vec![("hello".into(), [1; 32])],
    }
}

fn names(list: &[&str]) -> Outcome {
    Outcome::Start(list.iter().map(|s| s.to_string()).collect())
}

#[test]
fn measured_launch_with_tpm_starts_all() {
    let evaluation = policy::evaluate(&config_with(Policy::default()), &facts(true, true));
    assert!(evaluation.decisions.is_empty());
    assert_eq!(evaluation.outcome, names(&["ctl", "hello-a", "hello-b"]));
}

#[test]
fn default_policy_unmeasured_starts_only_recovery() {
    let evaluation = policy::evaluate(&config_with(Policy::default()), &facts(false, true));
    assert_eq!(
        evaluation.decisions,
        vec![Decision {
            trigger: Trigger::UnmeasuredLaunch,
            action: Action::RecoveryOnly
        }]
    );
    assert_eq!(evaluation.outcome, names(&["ctl"]));
}

#[test]
fn recovery_only_without_recovery_domain_halts() {
    let mut config = config_with(Policy::default());
    for domain in &mut config.domains {
        domain.capabilities.recovery = false;
    }
    let evaluation = policy::evaluate(&config, &facts(false, false));
    assert_eq!(evaluation.decisions.len(), 2);
    assert_eq!(
        evaluation.outcome,
        Outcome::Halt(HaltReason::NoRecoveryDomain)
    );
}

#[test]
fn most_restrictive_action_wins() {
    let policy = Policy {
        unmeasured_launch: Action::StartAll,
        tpm_unavailable: Action::Halt,
        digest_not_allowed: Action::Halt,
    };
    let evaluation = policy::evaluate(&config_with(policy), &facts(false, false));
    assert_eq!(evaluation.outcome, Outcome::Halt(HaltReason::PolicyHalt));
    let policy = Policy {
        unmeasured_launch: Action::StartAll,
        tpm_unavailable: Action::StartAll,
        digest_not_allowed: Action::Halt,
    };
    assert_eq!(
        policy::evaluate(&config_with(policy), &facts(false, false)).outcome,
        names(&["ctl", "hello-a", "hello-b"])
    );
}

#[test]
fn allow_list_mismatch_triggers_its_action() {
    let policy = Policy {
        unmeasured_launch: Action::StartAll,
        tpm_unavailable: Action::StartAll,
        digest_not_allowed: Action::RecoveryOnly,
    };
    let mut config = config_with(policy);
    config.domains[1].allowed_sha256 = vec![[2; 32]];
    let evaluation = policy::evaluate(&config, &facts(true, true));
    assert_eq!(
        evaluation.decisions,
        vec![Decision {
            trigger: Trigger::DigestNotAllowed {
                domain: "hello-a".into(),
                module: "hello".into()
            },
            action: Action::RecoveryOnly
        }]
    );
    assert_eq!(evaluation.outcome, names(&["ctl"]));
    // The matching digest passes.
    config.domains[1].allowed_sha256.push([1; 32]);
    assert!(
        policy::evaluate(&config, &facts(true, true))
            .decisions
            .is_empty()
    );
    // A recovery domain that fails its own allow-list cannot be the fallback.
    config.domains[0].allowed_sha256 = vec![[3; 32]];
    assert_eq!(
        policy::evaluate(&config, &facts(true, true)).outcome,
        Outcome::Halt(HaltReason::RecoveryDomainNotAllowed)
    );
}

#[test]
fn policy_event_data_is_canonical_text() {
    let mut config = config_with(Policy::default());
    config.domains[1].allowed_sha256 = vec![[0xab; 32]];
    let text = String::from_utf8(policy::policy_event_data(&config)).unwrap();
    let expected = format!(
        "slipway launch policy v1\nsource: config\nunmeasured-launch: recovery-only\n\
         tpm-unavailable: recovery-only\ndigest-not-allowed: halt\nallow hello-a sha256:{}\n",
        "ab".repeat(32)
    );
    assert_eq!(text, expected);
    config.policy_node = None;
    assert!(
        String::from_utf8(policy::policy_event_data(&config))
            .unwrap()
            .contains("source: default\n")
    );
}
