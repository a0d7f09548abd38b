//! What the host gives a policy program ([`Input`]) and what the program answers ([`Output`]).

use alloc::string::String;
use alloc::vec::Vec;

/// How the launch was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    /// No dynamic launch: nothing is measured.
    Unmeasured = 0,
    /// The emulated dynamic launch (QEMU + swtpm).
    Emulated = 1,
    /// Intel TXT.
    Txt = 2,
    /// AMD SKINIT.
    Skinit = 3,
    /// SIMULATED Intel TXT (the QEMU harness plays CPU and SINIT): never a hardware launch.
    TxtSimulated = 4,
}

/// The TPM as domB sees it when the policy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmState {
    /// The TPM answered every measurement so far and has at least one active bank.
    pub available: bool,
    /// The active PCR banks (TPM algorithm ids, e.g. 0x000B for SHA-256), in the TPM's order.
    pub banks: Vec<u16>,
}

/// What is known about earlier boots: the hypervisor's TPM NV boot record
/// (`docs/measurement.md`, "Boot record"), and which configuration slot this input describes.
/// Slots are numbered 0 (`a`) to 3 (`d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootState {
    /// Boots of the requested slot since it last reported success, this one included (`None`:
    /// unknown: no TPM, or the record could not be used).
    pub boot_attempts: Option<u32>,
    /// The configuration slot of the last boot that reported success (`None`: none recorded).
    pub last_known_good_slot: Option<u8>,
    /// The slot this boot was asked to use (the hypervisor's `slot=`).
    pub requested_slot: u8,
    /// The slot whose configuration [`Input::config`] is: the requested slot, or, in the
    /// second run after the program chose another slot, that slot.
    pub config_slot: u8,
    /// The slots the boot carries a configuration for (bit n = slot n).
    pub slots: u8,
}

impl BootState {
    /// Whether this run is the one after a fallback (the program chose another slot and now
    /// sees that slot's configuration; its answer must keep that slot).
    pub fn is_fallback_run(&self) -> bool {
        self.config_slot != self.requested_slot
    }

    /// Whether the boot carries a configuration for `slot`.
    pub fn has_slot(&self, slot: u8) -> bool {
        slot < 8 && self.slots & (1 << slot) != 0
    }
}

/// One digest of a module image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleDigest {
    /// TPM algorithm id (0x0004 SHA-1, 0x000B SHA-256, 0x000C SHA-384, 0x000D SHA-512).
    pub alg: u16,
    /// The plain digest of the image (`sha256sum` of the module file for SHA-256).
    pub digest: Vec<u8>,
}

/// A boot module domB measured (every module except `domb`, which the hypervisor measures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name (the first word of its command line).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The image digests: SHA-256 always, then every other active bank's.
    pub digests: Vec<ModuleDigest>,
}

impl Module {
    /// The image's SHA-256.
    pub fn sha256(&self) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.alg == ALG_SHA256)
            .map(|d| d.digest.as_slice())
    }
}

/// TPM algorithm id of SHA-256.
pub const ALG_SHA256: u16 = 0x000B;

/// An action of the configuration's policy node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// start every domain
    StartAll = 0,
    /// start only the recovery domains
    RecoveryOnly = 1,
    /// start nothing
    Halt = 2,
}

/// The configuration's policy node (or its defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigPolicy {
    /// The configuration has a policy node.
    pub present: bool,
    /// `unmeasured-launch`.
    pub unmeasured_launch: Action,
    /// `tpm-unavailable`.
    pub tpm_unavailable: Action,
    /// `digest-not-allowed`.
    pub digest_not_allowed: Action,
}

/// Capability bits of [`Domain::capabilities`].
pub mod capability {
    /// `control`
    pub const CONTROL: u32 = 1 << 0;
    /// `hardware`
    pub const HARDWARE: u32 = 1 << 1;
    /// `recovery`
    pub const RECOVERY: u32 = 1 << 2;
}

/// One domain of the launch configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The domain's name.
    pub name: String,
    /// Its kernel's module name.
    pub kernel: String,
    /// Its ramdisk's module name.
    pub ramdisk: Option<String>,
    /// [`capability`] bits.
    pub capabilities: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// The `allowed-sha256` digests.
    pub allowed_sha256: Vec<[u8; 32]>,
}

impl Domain {
    /// The domain has `capability` (a [`capability`] bit).
    pub fn has(&self, capability: u32) -> bool {
        self.capabilities & capability != 0
    }

    /// The modules this domain is built from: its kernel, then its ramdisk.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        core::iter::once(self.kernel.as_str()).chain(self.ramdisk.as_deref())
    }
}

/// The parsed launch configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The policy node.
    pub policy: ConfigPolicy,
    /// The domains, in boot order.
    pub domains: Vec<Domain>,
}

/// Everything a policy program is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// How the launch was measured.
    pub launch_kind: LaunchKind,
    /// The TPM.
    pub tpm: TpmState,
    /// Earlier boots.
    pub boot_state: BootState,
    /// Every module domB measured, in boot order.
    pub modules: Vec<Module>,
    /// The launch configuration.
    pub config: Config,
}

impl Input {
    /// The module named `name`.
    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name == name)
    }
}

/// Why a decision was taken (measured as the decision event's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// every check passed
    AllChecksPassed = 0,
    /// the launch is unmeasured
    UnmeasuredLaunch = 1,
    /// the TPM is absent or failing
    TpmUnavailable = 2,
    /// a module is not allowed (subject: the module)
    ModuleNotAllowed = 3,
    /// a rule of the program's own (subject: which)
    PolicyRule = 5,
}

/// Reason code 4 is the host's alone: the program failed.
pub const REASON_POLICY_FAILED: u8 = 4;

/// What a decision asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DecisionAction {
    /// start every domain
    StartAll = 0,
    /// start the domains the verdict lists
    StartListed = 3,
    /// start only the recovery domains
    RecoveryOnly = 1,
    /// start nothing
    Halt = 2,
}

impl DecisionAction {
    /// How restrictive the action is: start-all < start-listed < recovery-only < halt.
    pub fn rank(self) -> u8 {
        match self {
            Self::StartAll => 0,
            Self::StartListed => 1,
            Self::RecoveryOnly => 2,
            Self::Halt => 3,
        }
    }
}

/// One measured decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Why.
    pub reason: Reason,
    /// What.
    pub action: DecisionAction,
    /// What it is about (a module or rule name), possibly empty.
    pub subject: String,
}

/// The program's verdict: what domB does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Start every domain.
    StartAll,
    /// Start these domains (names of the configuration; they start in boot order).
    StartListed(Vec<String>),
    /// Start only the domains with the recovery capability.
    RecoveryOnly,
    /// Start nothing.
    Halt,
}

impl Verdict {
    /// The decision action that matches this verdict.
    pub fn action(&self) -> DecisionAction {
        match self {
            Self::StartAll => DecisionAction::StartAll,
            Self::StartListed(_) => DecisionAction::StartListed,
            Self::RecoveryOnly => DecisionAction::RecoveryOnly,
            Self::Halt => DecisionAction::Halt,
        }
    }
}

/// The program's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// What to start. It must be at least as restrictive as every decision's action.
    pub verdict: Verdict,
    /// The configuration slot to use: [`BootState::config_slot`] to go on with the
    /// configuration given, another slot the boot carries to fall back to it (domB then runs the
    /// program again on that slot's configuration, and that answer must keep the slot).
    pub slot: u8,
    /// Why, in words (printed by domB, measured with the last decision; at most 255 bytes).
    pub reason: String,
    /// The decisions to measure, one event each (1 to [`crate::MAX_DECISIONS`]).
    pub decisions: Vec<Decision>,
}
