//! The launch policy: what to start when the launch is unmeasured, the TPM is unavailable, or a
//! module's digest is not in its domain's allow-list. Evaluated by domB after it is measured.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::config::LaunchConfig;

/// What to do when a policy trigger fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// start every configured domain
    StartAll,
    /// start only the domains with the recovery capability
    RecoveryOnly,
    /// start nothing; the launch stops
    Halt,
}

impl Action {
    /// The action's name in the binding.
    pub fn name(self) -> &'static str {
        match self {
            Self::StartAll => "start-all",
            Self::RecoveryOnly => "recovery-only",
            Self::Halt => "halt",
        }
    }

    /// Parses an action name of the binding.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "start-all" => Some(Self::StartAll),
            "recovery-only" => Some(Self::RecoveryOnly),
            "halt" => Some(Self::Halt),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The policy node's actions. `Default` is the policy of a configuration without a policy node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// When the launch was not measured by a dynamic launch.
    pub unmeasured_launch: Action,
    /// When there is no TPM or it failed (no active PCR bank).
    pub tpm_unavailable: Action,
    /// When a kernel or ramdisk digest is not in its domain's allow-list.
    pub digest_not_allowed: Action,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            unmeasured_launch: Action::RecoveryOnly,
            tpm_unavailable: Action::RecoveryOnly,
            digest_not_allowed: Action::Halt,
        }
    }
}

/// Why a policy action applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// the launch is unmeasured
    UnmeasuredLaunch,
    /// the TPM is absent or failing
    TpmUnavailable,
    /// a module's SHA-256 is not in its domain's allow-list
    DigestNotAllowed {
        /// the domain
        domain: String,
        /// the module
        module: String,
    },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnmeasuredLaunch => f.write_str("unmeasured-launch"),
            Self::TpmUnavailable => f.write_str("tpm-unavailable"),
            Self::DigestNotAllowed { domain, module } => {
                write!(f, "digest-not-allowed (domain {domain}, module {module})")
            }
        }
    }
}

/// One fired trigger and the action the policy gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What fired.
    pub trigger: Trigger,
    /// The policy's action for it.
    pub action: Action,
}

/// What domB does after evaluating the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Build and start these domains (names, in boot order).
    Start(Vec<String>),
    /// Start nothing.
    Halt(HaltReason),
}

/// Why the launch halts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltReason {
    /// a trigger's action is halt
    PolicyHalt,
    /// the policy asks for recovery-only but no domain has the recovery capability
    NoRecoveryDomain,
    /// the policy asks for recovery-only but a recovery domain's own digest is not allowed
    RecoveryDomainNotAllowed,
}

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PolicyHalt => "the policy's action is halt",
            Self::NoRecoveryDomain => "recovery-only, but no domain has the recovery capability",
            Self::RecoveryDomainNotAllowed => {
                "recovery-only, but a recovery domain's digest is not in its allow-list"
            }
        })
    }
}

/// What domB knows when it evaluates the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFacts {
    /// The launch was measured (a dynamic launch that the hypervisor verified).
    pub measured_launch: bool,
    /// The TPM answered and has at least one active PCR bank.
    pub tpm_available: bool,
    /// SHA-256 of each boot module, by name.
    pub module_sha256: Vec<(String, [u8; 32])>,
}

/// The result of evaluating the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Every trigger that fired, with its action, in evaluation order.
    pub decisions: Vec<Decision>,
    /// The combined result (the most restrictive action wins).
    pub outcome: Outcome,
}

/// Evaluates `config.policy` against `facts`. A module missing from `facts.module_sha256` counts
/// as not allowed for a domain with an allow-list.
pub fn evaluate(config: &LaunchConfig, facts: &LaunchFacts) -> Evaluation {
    let policy = config.policy;
    let mut decisions = Vec::new();
    if !facts.measured_launch {
        decisions.push(Decision {
            trigger: Trigger::UnmeasuredLaunch,
            action: policy.unmeasured_launch,
        });
    }
    if !facts.tpm_available {
        decisions.push(Decision {
            trigger: Trigger::TpmUnavailable,
            action: policy.tpm_unavailable,
        });
    }
    let mut not_allowed_domains: Vec<&str> = Vec::new();
    for domain in &config.domains {
        if domain.allowed_sha256.is_empty() {
            continue;
        }
        for module in core::iter::once(&domain.kernel).chain(domain.ramdisk.as_ref()) {
            let digest = facts
                .module_sha256
                .iter()
                .find(|(name, _)| name == module)
                .map(|(_, d)| d);
            if !digest.is_some_and(|d| domain.allowed_sha256.contains(d)) {
                decisions.push(Decision {
                    trigger: Trigger::DigestNotAllowed {
                        domain: domain.name.clone(),
                        module: module.clone(),
                    },
                    action: policy.digest_not_allowed,
                });
                not_allowed_domains.push(&domain.name);
            }
        }
    }
    let combined = decisions
        .iter()
        .map(|d| d.action)
        .max()
        .unwrap_or(Action::StartAll);
    let outcome = match combined {
        Action::Halt => Outcome::Halt(HaltReason::PolicyHalt),
        Action::StartAll => Outcome::Start(config.domains.iter().map(|d| d.name.clone()).collect()),
        Action::RecoveryOnly => {
            let recovery: Vec<_> = config
                .domains
                .iter()
                .filter(|d| d.capabilities.recovery)
                .collect();
            if recovery.is_empty() {
                Outcome::Halt(HaltReason::NoRecoveryDomain)
            } else if recovery
                .iter()
                .any(|d| not_allowed_domains.contains(&d.name.as_str()))
            {
                Outcome::Halt(HaltReason::RecoveryDomainNotAllowed)
            } else {
                Outcome::Start(recovery.iter().map(|d| d.name.clone()).collect())
            }
        }
    };
    Evaluation { decisions, outcome }
}

/// The exact bytes domB measures for the policy (PCR19): a small text document, independent of
/// where anything is loaded, that `cargo xtask predict` can rebuild from the bundle's files.
///
/// ```text
/// slipway launch policy v1
/// source: config|default
/// unmeasured-launch: <action>
/// tpm-unavailable: <action>
/// digest-not-allowed: <action>
/// allow <domain> sha256:<hex>        (one line per allow-list entry, domains in boot order)
/// ```
pub fn policy_event_data(config: &LaunchConfig) -> Vec<u8> {
    let mut text = String::new();
    let policy = &config.policy;
    let source = if config.policy_node.is_some() {
        "config"
    } else {
        "default"
    };
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "slipway launch policy v1\nsource: {source}\nunmeasured-launch: {}\ntpm-unavailable: {}\n\
         digest-not-allowed: {}\n",
        policy.unmeasured_launch, policy.tpm_unavailable, policy.digest_not_allowed
    );
    for domain in &config.domains {
        for digest in &domain.allowed_sha256 {
            let _ = write!(text, "allow {} sha256:", domain.name);
            for byte in digest {
                let _ = write!(text, "{byte:02x}");
            }
            text.push('\n');
        }
    }
    text.into_bytes()
}
