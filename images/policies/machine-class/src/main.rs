//! Example launch-policy program: which domains a machine may start depends on its class, with
//! a fallback to the recovery domains whenever the launch cannot be trusted.
//!
//! - **Machine class.** A machine's boot carries one (measured) boot module named
//!   `machine-class-<class>`; its contents do not matter. [`CLASSES`] lists, per class, the
//!   domains that class may start. A machine with no class module, two of them, or a class not
//!   in the table starts only its recovery domains.
//! - **Trust checks first.** An unmeasured launch, an unavailable TPM or a kernel or ramdisk
//!   outside its domain's `allowed-sha256` each fall back to recovery-only (never halt: this
//!   machine class must stay reachable).
//! - **Fallback rule.** After [`MAX_BOOT_ATTEMPTS`] boots that did not reach their domains,
//!   only the recovery domains start. Nothing counts boots yet (the input says "unknown"), so
//!   this rule does not fire today; it is written against the host API as it is.
//!
//! Decisions are `policy-rule` with the rule in the subject (`machine-class:<class>`,
//! `boot-attempts`), or the standard trigger reasons for the trust checks.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use slipway_policy::{Decision, DecisionAction, Input, LaunchKind, Output, Reason, Verdict};

slipway_policy::policy!(decide);

/// The prefix of a machine-class module's name.
const CLASS_MODULE_PREFIX: &str = "machine-class-";

/// Per machine class, the domains it may start.
const CLASSES: &[(&str, &[&str])] = &[("edge", &["control", "hello"]), ("vault", &["control"])];

/// Boots in a row that did not reach their domains before only recovery starts.
const MAX_BOOT_ATTEMPTS: u32 = 3;

fn decision(reason: Reason, action: DecisionAction, subject: &str) -> Decision {
    Decision {
        reason,
        action,
        subject: String::from(subject),
    }
}

fn recovery(decisions: Vec<Decision>, reason: String) -> Output {
    Output {
        verdict: Verdict::RecoveryOnly,
        slot: 0,
        reason,
        decisions,
    }
}

fn decide(input: &Input) -> Output {
    let mut untrusted = Vec::new();
    if input.launch_kind == LaunchKind::Unmeasured {
        untrusted.push(decision(
            Reason::UnmeasuredLaunch,
            DecisionAction::RecoveryOnly,
            "",
        ));
    }
    if !input.tpm.available {
        untrusted.push(decision(
            Reason::TpmUnavailable,
            DecisionAction::RecoveryOnly,
            "",
        ));
    }
    for domain in input
        .config
        .domains
        .iter()
        .filter(|d| !d.allowed_sha256.is_empty())
    {
        for module in domain.modules() {
            let digest = input.module(module).and_then(|m| m.sha256());
            if !digest.is_some_and(|d| domain.allowed_sha256.iter().any(|a| a[..] == *d)) {
                untrusted.push(decision(
                    Reason::ModuleNotAllowed,
                    DecisionAction::RecoveryOnly,
                    module,
                ));
            }
        }
    }
    if let Some(attempts) = input.boot_state.boot_attempts
        && attempts >= MAX_BOOT_ATTEMPTS
    {
        untrusted.push(decision(
            Reason::PolicyRule,
            DecisionAction::RecoveryOnly,
            "boot-attempts",
        ));
    }
    if !untrusted.is_empty() {
        return recovery(
            untrusted,
            String::from("the launch is not trusted: recovery only"),
        );
    }

    let classes: Vec<&str> = input
        .modules
        .iter()
        .filter_map(|m| m.name.strip_prefix(CLASS_MODULE_PREFIX))
        .collect();
    let known = match classes.as_slice() {
        [class] => CLASSES.iter().find(|(name, _)| name == class),
        _ => None,
    };
    let Some((class, allowed)) = known else {
        let subject = match classes.as_slice() {
            [] => String::from("machine-class:none"),
            [class] => format!("machine-class:{class}"),
            _ => String::from("machine-class:several"),
        };
        return recovery(
            alloc::vec![decision(
                Reason::PolicyRule,
                DecisionAction::RecoveryOnly,
                &subject
            )],
            format!("{subject} is not a known class: recovery only"),
        );
    };
    let start: Vec<String> = input
        .config
        .domains
        .iter()
        .filter(|d| allowed.contains(&d.name.as_str()))
        .map(|d| d.name.clone())
        .collect();
    let subject = format!("machine-class:{class}");
    if start.is_empty() {
        return recovery(
            alloc::vec![decision(
                Reason::PolicyRule,
                DecisionAction::RecoveryOnly,
                &subject
            )],
            format!("class {class} allows no configured domain: recovery only"),
        );
    }
    Output {
        reason: format!("class {class} starts {}", start.join(", ")),
        verdict: Verdict::StartListed(start),
        slot: 0,
        decisions: alloc::vec![decision(
            Reason::PolicyRule,
            DecisionAction::StartListed,
            &subject
        )],
    }
}
