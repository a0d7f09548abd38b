//! The default launch-policy program: domB runs it when the bundle has no `policy` module. It
//! applies the configuration's policy node exactly as domB's built-in policy always did
//! (`docs/launch-config.md`, "Policy node"):
//!
//! - every trigger that fires is a decision with the node's action for it: `unmeasured-launch`
//!   (the launch kind is unmeasured), `tpm-unavailable` (no usable TPM), `digest-not-allowed`
//!   (per kernel or ramdisk outside its domain's `allowed-sha256`, subject: the module);
//! - no trigger: one decision "all checks passed, start-all";
//! - the most restrictive action wins (halt > recovery-only > start-all); recovery-only halts
//!   when no domain has the recovery capability or a recovery domain is itself not allowed.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use slipway_policy::{
    Action, Decision, DecisionAction, Input, LaunchKind, Output, Reason, Verdict, capability,
};

slipway_policy::policy!(decide);

fn decision_action(action: Action) -> DecisionAction {
    match action {
        Action::StartAll => DecisionAction::StartAll,
        Action::RecoveryOnly => DecisionAction::RecoveryOnly,
        Action::Halt => DecisionAction::Halt,
    }
}

fn decide(input: &Input) -> Output {
    let policy = &input.config.policy;
    let mut decisions = Vec::new();
    let mut push = |reason, action: Action, subject: &str| {
        decisions.push(Decision {
            reason,
            action: decision_action(action),
            subject: String::from(subject),
        });
    };
    if input.launch_kind == LaunchKind::Unmeasured {
        push(Reason::UnmeasuredLaunch, policy.unmeasured_launch, "");
    }
    if !input.tpm.available {
        push(Reason::TpmUnavailable, policy.tpm_unavailable, "");
    }
    let mut not_allowed: Vec<&str> = Vec::new();
    for domain in input
        .config
        .domains
        .iter()
        .filter(|d| !d.allowed_sha256.is_empty())
    {
        for module in domain.modules() {
            let digest = input.module(module).and_then(|m| m.sha256());
            let allowed = digest.is_some_and(|d| domain.allowed_sha256.iter().any(|a| a[..] == *d));
            if !allowed {
                push(Reason::ModuleNotAllowed, policy.digest_not_allowed, module);
                not_allowed.push(&domain.name);
            }
        }
    }
    let combined = [
        (Reason::UnmeasuredLaunch, policy.unmeasured_launch),
        (Reason::TpmUnavailable, policy.tpm_unavailable),
    ]
    .iter()
    .filter(|(reason, _)| decisions.iter().any(|d| d.reason == *reason))
    .map(|&(_, action)| action)
    .chain(
        decisions
            .iter()
            .filter(|d| d.reason == Reason::ModuleNotAllowed)
            .map(|_| policy.digest_not_allowed),
    )
    .max();
    let (verdict, reason) = match combined {
        None => {
            decisions.push(Decision {
                reason: Reason::AllChecksPassed,
                action: DecisionAction::StartAll,
                subject: String::new(),
            });
            (Verdict::StartAll, "all checks passed")
        }
        Some(Action::StartAll) => (Verdict::StartAll, "every trigger's action is start-all"),
        Some(Action::Halt) => (Verdict::Halt, "the policy's action is halt"),
        Some(Action::RecoveryOnly) => {
            let mut recovery = input
                .config
                .domains
                .iter()
                .filter(|d| d.has(capability::RECOVERY))
                .peekable();
            if recovery.peek().is_none() {
                (
                    Verdict::Halt,
                    "recovery-only, but no domain has the recovery capability",
                )
            } else if recovery.any(|d| not_allowed.contains(&d.name.as_str())) {
                (
                    Verdict::Halt,
                    "recovery-only, but a recovery domain's digest is not in its allow-list",
                )
            } else {
                (Verdict::RecoveryOnly, "recovery-only")
            }
        }
    };
    Output {
        verdict,
        // The default program never falls back: it keeps the slot whose configuration it was
        // given (the requested one). Falling back is a rule of a policy program's own.
        slot: input.boot_state.config_slot,
        reason: String::from(reason),
        decisions,
    }
}
