//! The launch policy through the built-in default program, run in the interpreter: every case
//! of the policy node as domB always decided it gives the same decisions and the same outcome.

use slipway_policy::{ALG_SHA256, DecisionAction, Module, ModuleDigest, Reason};
use slipway_protocol::v1::LaunchKind;

use super::fixtures::*;
use crate::config::{self, LaunchConfig};
use crate::policy::{
    self, Action, DEFAULT_PROGRAM, Decision, LaunchFacts, Outcome, Policy, ProgramSource,
};

fn config_with(policy: Policy) -> LaunchConfig {
    let mut config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    config.policy = policy;
    config
}

fn facts(measured: bool, tpm: bool) -> LaunchFacts {
    LaunchFacts {
        boot_state: slipway_policy::BootState {
            slots: 1,
            ..Default::default()
        },
        launch_kind: if measured {
            LaunchKind::Emulated
        } else {
            LaunchKind::None
        },
        tpm_available: tpm,
        banks: if tpm { vec![ALG_SHA256] } else { vec![] },
        modules: vec![Module {
            name: "hello".into(),
            size: 5,
            digests: vec![ModuleDigest {
                alg: ALG_SHA256,
                digest: vec![1; 32],
            }],
        }],
    }
}

fn evaluate(config: &LaunchConfig, facts: &LaunchFacts) -> policy::Evaluation {
    policy::evaluate(DEFAULT_PROGRAM, config, facts)
}

fn names(list: &[&str]) -> Outcome {
    Outcome::Start(list.iter().map(|s| s.to_string()).collect())
}

fn decision(reason: Reason, action: DecisionAction, subject: &str) -> Decision {
    Decision::Program(slipway_policy::Decision {
        reason,
        action,
        subject: subject.into(),
    })
}

#[test]
fn measured_launch_with_tpm_starts_all() {
    let evaluation = evaluate(&config_with(Policy::default()), &facts(true, true));
    assert_eq!(
        evaluation.decisions,
        vec![decision(
            Reason::AllChecksPassed,
            DecisionAction::StartAll,
            ""
        )]
    );
    assert_eq!(evaluation.outcome, names(&["ctl", "hello-a", "hello-b"]));
    assert!(evaluation.fuel_used.is_some_and(|fuel| fuel > 0));
}

#[test]
fn default_policy_unmeasured_starts_only_recovery() {
    let evaluation = evaluate(&config_with(Policy::default()), &facts(false, true));
    assert_eq!(
        evaluation.decisions,
        vec![decision(
            Reason::UnmeasuredLaunch,
            DecisionAction::RecoveryOnly,
            ""
        )]
    );
    assert_eq!(evaluation.outcome, names(&["ctl"]));
}

#[test]
fn recovery_only_without_recovery_domain_halts() {
    let mut config = config_with(Policy::default());
    for domain in &mut config.domains {
        domain.capabilities.recovery = false;
    }
    let evaluation = evaluate(&config, &facts(false, false));
    assert_eq!(evaluation.decisions.len(), 2);
    assert_eq!(
        evaluation.outcome,
        Outcome::Halt("recovery-only, but no domain has the recovery capability".into())
    );
}

#[test]
fn most_restrictive_action_wins() {
    let policy = Policy {
        unmeasured_launch: Action::StartAll,
        tpm_unavailable: Action::Halt,
        digest_not_allowed: Action::Halt,
    };
    let evaluation = evaluate(&config_with(policy), &facts(false, false));
    assert_eq!(
        evaluation.decisions,
        vec![
            decision(Reason::UnmeasuredLaunch, DecisionAction::StartAll, ""),
            decision(Reason::TpmUnavailable, DecisionAction::Halt, ""),
        ]
    );
    assert_eq!(
        evaluation.outcome,
        Outcome::Halt("the policy's action is halt".into())
    );
    let policy = Policy {
        unmeasured_launch: Action::StartAll,
        tpm_unavailable: Action::StartAll,
        digest_not_allowed: Action::Halt,
    };
    assert_eq!(
        evaluate(&config_with(policy), &facts(false, false)).outcome,
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
    let evaluation = evaluate(&config, &facts(true, true));
    assert_eq!(
        evaluation.decisions,
        vec![decision(
            Reason::ModuleNotAllowed,
            DecisionAction::RecoveryOnly,
            "hello"
        )]
    );
    assert_eq!(evaluation.outcome, names(&["ctl"]));
    // The matching digest passes.
    config.domains[1].allowed_sha256.push([1; 32]);
    assert_eq!(
        evaluate(&config, &facts(true, true)).decisions,
        vec![decision(
            Reason::AllChecksPassed,
            DecisionAction::StartAll,
            ""
        )]
    );
    // A recovery domain that fails its own allow-list cannot be the fallback.
    config.domains[0].allowed_sha256 = vec![[3; 32]];
    assert_eq!(
        evaluate(&config, &facts(true, true)).outcome,
        Outcome::Halt(
            "recovery-only, but a recovery domain's digest is not in its allow-list".into()
        )
    );
}

#[test]
fn a_module_without_digests_is_not_allowed() {
    let mut config = config_with(Policy::default());
    config.domains[1].allowed_sha256 = vec![[1; 32]];
    let mut facts = facts(true, true);
    facts.modules.clear();
    let evaluation = evaluate(&config, &facts);
    assert_eq!(
        evaluation.decisions,
        vec![decision(
            Reason::ModuleNotAllowed,
            DecisionAction::Halt,
            "hello"
        )]
    );
}

#[test]
fn policy_event_data_is_canonical_text_binding_the_program() {
    let mut config = config_with(Policy::default());
    config.domains[1].allowed_sha256 = vec![[0xab; 32]];
    let text =
        String::from_utf8(policy::policy_event_data(&config, ProgramSource::Default)).unwrap();
    let program_sha256 =
        slipway_measure::hash::hash(slipway_measure::HashAlg::Sha256, DEFAULT_PROGRAM);
    let hex: String = program_sha256
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = format!(
        "slipway launch policy v2\nprogram: default\nprogram-size: {}\nprogram-sha256: {hex}\n\
         host-api: 1\nsource: config\nunmeasured-launch: recovery-only\n\
         tpm-unavailable: recovery-only\ndigest-not-allowed: halt\nallow hello-a sha256:{}\n",
        DEFAULT_PROGRAM.len(),
        "ab".repeat(32)
    );
    assert_eq!(text, expected);
    let other = String::from_utf8(policy::policy_event_data(
        &config,
        ProgramSource::Module(b"\0asm\x01\0\0\0"),
    ))
    .unwrap();
    assert!(
        other.contains("program: module policy\nprogram-size: 8\n"),
        "{other}"
    );
    config.policy_node = None;
    assert!(
        String::from_utf8(policy::policy_event_data(&config, ProgramSource::Default))
            .unwrap()
            .contains("source: default\n")
    );
}
