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
//! - **Fallback rule.** When the requested configuration slot has failed [`MAX_FAILED_BOOTS`]
//!   times (boots counted by the hypervisor's TPM NV boot record that never reported success),
//!   the program chooses the last known-good slot; domB measures the choice and runs the program
//!   again on that slot's configuration. Without a known-good slot (or when it is the failing
//!   one), only the recovery domains start.
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

/// Failed boots of the requested slot (boots that never reported success) before the program
/// falls back to the last known-good slot. The current boot is attempt `failed + 1`.
const MAX_FAILED_BOOTS: u32 = 2;

fn decision(reason: Reason, action: DecisionAction, subject: &str) -> Decision {
    Decision {
        reason,
        action,
        subject: String::from(subject),
    }
}

fn recovery(input: &Input, decisions: Vec<Decision>, reason: String) -> Output {
    Output {
        verdict: Verdict::RecoveryOnly,
        slot: input.boot_state.config_slot,
        reason,
        decisions,
    }
}

/// The slot name (`a`..`d`) of slot `n`.
fn slot_name(n: u8) -> char {
    char::from(b'a' + n)
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
    let boot = &input.boot_state;
    if let Some(attempts) = boot.boot_attempts
        && attempts > MAX_FAILED_BOOTS
        && !boot.is_fallback_run()
    {
        match boot.last_known_good_slot {
            Some(good)
                if good != boot.config_slot && boot.has_slot(good) && untrusted.is_empty() =>
            {
                // Fall back: domB measures the choice and asks again with that configuration.
                return Output {
                    verdict: Verdict::RecoveryOnly,
                    slot: good,
                    reason: format!(
                        "slot {} failed {} times: falling back to the last known-good slot {}",
                        slot_name(boot.config_slot),
                        attempts - 1,
                        slot_name(good)
                    ),
                    decisions: alloc::vec![decision(
                        Reason::PolicyRule,
                        DecisionAction::RecoveryOnly,
                        "boot-attempts"
                    )],
                };
            }
            _ => untrusted.push(decision(
                Reason::PolicyRule,
                DecisionAction::RecoveryOnly,
                "boot-attempts",
            )),
        }
    }
    if !untrusted.is_empty() {
        return recovery(
            input,
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
            input,
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
            input,
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
        slot: input.boot_state.config_slot,
        decisions: alloc::vec![decision(
            Reason::PolicyRule,
            DecisionAction::StartListed,
            &subject
        )],
    }
}
