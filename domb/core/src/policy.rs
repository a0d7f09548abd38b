//! The launch policy: the configuration's policy node (its actions), and the policy program that
//! decides (`docs/launch-policy.md`), run by [`evaluate`] after both are measured.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};

use slipway_policy::{
    BootState, ConfigPolicy, DecisionAction, Input, Module, Reason, TpmState, Verdict, capability,
};
use slipway_protocol::v1::LaunchKind;

use crate::config::LaunchConfig;
use crate::program::{self, ProgramError};

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

/// One measured decision: the program's, or the host's "policy failed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A decision the program returned.
    Program(slipway_policy::Decision),
    /// The program gave no usable answer: recovery-only.
    Failed(ProgramError),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Program(d) => {
                let reason = match d.reason {
                    Reason::AllChecksPassed => "all checks passed",
                    Reason::UnmeasuredLaunch => "unmeasured-launch",
                    Reason::TpmUnavailable => "tpm-unavailable",
                    Reason::ModuleNotAllowed => "digest-not-allowed",
                    Reason::PolicyRule => "rule",
                };
                let action = action_name(d.action);
                if d.subject.is_empty() {
                    write!(f, "{reason}: {action}")
                } else {
                    write!(f, "{reason} ({}): {action}", d.subject)
                }
            }
            Self::Failed(error) => write!(f, "policy failed: {error}: recovery-only"),
        }
    }
}

/// A decision action's name as domB prints it.
pub fn action_name(action: DecisionAction) -> &'static str {
    match action {
        DecisionAction::StartAll => "start-all",
        DecisionAction::StartListed => "start-listed",
        DecisionAction::RecoveryOnly => "recovery-only",
        DecisionAction::Halt => "halt",
    }
}

impl Decision {
    /// The decision as domB prints it: a module outside an allow-list also names its domain
    /// (the first domain with an allow-list built from it).
    pub fn describe(&self, config: &LaunchConfig) -> String {
        if let Self::Program(d) = self
            && d.reason == Reason::ModuleNotAllowed
        {
            let domain = config.domains.iter().find(|domain| {
                !domain.allowed_sha256.is_empty()
                    && (domain.kernel == d.subject
                        || domain.ramdisk.as_deref() == Some(d.subject.as_str()))
            });
            if let Some(domain) = domain {
                return format!(
                    "digest-not-allowed (domain {}, module {}): {}",
                    domain.name,
                    d.subject,
                    action_name(d.action)
                );
            }
        }
        self.to_string()
    }
}

/// What domB does after running the policy program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Build and start these domains (names, in boot order).
    Start(Vec<String>),
    /// Start nothing: why.
    Halt(String),
}

/// What domB knows when it runs the policy program (the rest of the program's input is the
/// configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFacts {
    /// How the launch was measured.
    pub launch_kind: LaunchKind,
    /// The TPM answered every measurement so far and has at least one active bank.
    pub tpm_available: bool,
    /// The active banks (TPM algorithm ids).
    pub banks: Vec<u16>,
    /// Every module domB measured, with its digests.
    pub modules: Vec<Module>,
    /// The boot record's state and the slot the configuration belongs to.
    pub boot_state: BootState,
}

/// The result of running the policy program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The decisions to measure, in order (at least one).
    pub decisions: Vec<Decision>,
    /// What domB does.
    pub outcome: Outcome,
    /// The program's reason, in words (or why it failed).
    pub reason: String,
    /// Fuel the program used (None when it did not run to an answer).
    pub fuel_used: Option<u64>,
    /// The configuration slot the answer chose (the input's slot when the program failed).
    pub slot: u8,
}

/// The program's input for `config` and `facts`.
pub fn input(config: &LaunchConfig, facts: &LaunchFacts) -> Input {
    let action = |a: Action| match a {
        Action::StartAll => slipway_policy::Action::StartAll,
        Action::RecoveryOnly => slipway_policy::Action::RecoveryOnly,
        Action::Halt => slipway_policy::Action::Halt,
    };
    Input {
        launch_kind: match facts.launch_kind {
            LaunchKind::Emulated => slipway_policy::LaunchKind::Emulated,
            LaunchKind::Txt => slipway_policy::LaunchKind::Txt,
            LaunchKind::Skinit => slipway_policy::LaunchKind::Skinit,
            LaunchKind::TxtSimulated => slipway_policy::LaunchKind::TxtSimulated,
            // None, and any kind this domB does not know, is unmeasured.
            _ => slipway_policy::LaunchKind::Unmeasured,
        },
        tpm: TpmState {
            available: facts.tpm_available,
            banks: facts.banks.clone(),
        },
        boot_state: facts.boot_state,
        modules: facts.modules.clone(),
        config: slipway_policy::Config {
            policy: ConfigPolicy {
                present: config.policy_node.is_some(),
                unmeasured_launch: action(config.policy.unmeasured_launch),
                tpm_unavailable: action(config.policy.tpm_unavailable),
                digest_not_allowed: action(config.policy.digest_not_allowed),
            },
            domains: config
                .domains
                .iter()
                .map(|d| slipway_policy::Domain {
                    name: d.name.clone(),
                    kernel: d.kernel.clone(),
                    ramdisk: d.ramdisk.clone(),
                    capabilities: [
                        (d.capabilities.control, capability::CONTROL),
                        (d.capabilities.hardware, capability::HARDWARE),
                        (d.capabilities.recovery, capability::RECOVERY),
                    ]
                    .iter()
                    .filter(|(has, _)| *has)
                    .fold(0, |bits, (_, bit)| bits | bit),
                    memory_bytes: d.memory_bytes,
                    vcpus: d.vcpus,
                    allowed_sha256: d.allowed_sha256.clone(),
                })
                .collect(),
        },
    }
}

fn recovery_domains(config: &LaunchConfig, why: &str) -> Outcome {
    let recovery: Vec<String> = config
        .domains
        .iter()
        .filter(|d| d.capabilities.recovery)
        .map(|d| d.name.clone())
        .collect();
    if recovery.is_empty() {
        Outcome::Halt(format!("{why}, but no domain has the recovery capability"))
    } else {
        Outcome::Start(recovery)
    }
}

/// Runs the policy `program` for `config` and `facts` and turns its answer into what domB
/// does. A program without a usable answer is one decision "policy failed" and recovery-only.
pub fn evaluate(program: &[u8], config: &LaunchConfig, facts: &LaunchFacts) -> Evaluation {
    let run = match program::run(program, &input(config, facts)) {
        Ok(run) => run,
        Err(error) => {
            let reason = format!("policy failed: {error}");
            return Evaluation {
                decisions: alloc::vec![Decision::Failed(error)],
                outcome: recovery_domains(config, "the policy failed: recovery-only"),
                reason,
                fuel_used: None,
                slot: facts.boot_state.config_slot,
            };
        }
    };
    let output = run.output;
    let outcome = match &output.verdict {
        Verdict::StartAll => {
            Outcome::Start(config.domains.iter().map(|d| d.name.clone()).collect())
        }
        Verdict::StartListed(names) => Outcome::Start(
            config
                .domains
                .iter()
                .filter(|d| names.contains(&d.name))
                .map(|d| d.name.clone())
                .collect(),
        ),
        Verdict::RecoveryOnly => recovery_domains(config, "recovery-only"),
        Verdict::Halt if output.reason.is_empty() => {
            Outcome::Halt(String::from("the policy program's verdict is halt"))
        }
        Verdict::Halt => Outcome::Halt(output.reason.clone()),
    };
    Evaluation {
        decisions: output
            .decisions
            .into_iter()
            .map(Decision::Program)
            .collect(),
        outcome,
        reason: output.reason,
        fuel_used: Some(run.fuel_used),
        slot: output.slot,
    }
}

/// The policy program that decides: the `policy` boot module's bytes, or domB's built-in
/// default program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramSource<'a> {
    /// The built-in default program ([`DEFAULT_PROGRAM`]).
    Default,
    /// The `policy` boot module.
    Module(&'a [u8]),
}

impl<'a> ProgramSource<'a> {
    /// The program's bytes.
    pub fn bytes(self) -> &'a [u8] {
        match self {
            Self::Default => DEFAULT_PROGRAM,
            Self::Module(bytes) => bytes,
        }
    }

    /// `default` or `module policy`, as measured.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Module(_) => "module policy",
        }
    }
}

/// The built-in default program (`policy/default`, built for wasm32 by `cargo xtask build`; the
/// committed file is checked against its source by `xtask`'s tests). It applies the policy
/// node as domB always did.
pub const DEFAULT_PROGRAM: &[u8] =
    include_bytes!("../../../policy/default/slipway-policy-default.wasm");

/// The exact bytes domB measures for the policy (PCR19), before the program runs: a small text
/// document, independent of where anything is loaded, that `cargo xtask predict` can rebuild
/// from the bundle's files. The program is bound by its SHA-256.
///
/// ```text
/// slipway launch policy v2
/// program: default|module policy
/// program-size: <bytes>
/// program-sha256: <hex>
/// host-api: <version>
/// source: config|default
/// unmeasured-launch: <action>
/// tpm-unavailable: <action>
/// digest-not-allowed: <action>
/// allow <domain> sha256:<hex>        (one line per allow-list entry, domains in boot order)
/// ```
pub fn policy_event_data(config: &LaunchConfig, program: ProgramSource<'_>) -> Vec<u8> {
    let mut text = String::new();
    let policy = &config.policy;
    let source = if config.policy_node.is_some() {
        "config"
    } else {
        "default"
    };
    let bytes = program.bytes();
    let digest = slipway_measure::hash::hash(slipway_measure::HashAlg::Sha256, bytes);
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "slipway launch policy v2\nprogram: {}\nprogram-size: {}\nprogram-sha256: ",
        program.name(),
        bytes.len()
    );
    for byte in digest.as_bytes() {
        let _ = write!(text, "{byte:02x}");
    }
    let _ = write!(
        text,
        "\nhost-api: {}\nsource: {source}\nunmeasured-launch: {}\ntpm-unavailable: {}\n\
         digest-not-allowed: {}\n",
        program::HOST_API_VERSION,
        policy.unmeasured_launch,
        policy.tpm_unavailable,
        policy.digest_not_allowed
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
