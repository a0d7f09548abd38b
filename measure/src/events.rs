//! Slipway's event types, PCR assignments and event-data encodings (`docs/measurement.md`).
//!
//! Event types: TCG's `EV_NO_ACTION` (0x3), `EV_SEPARATOR` (0x4) and `EV_EVENT_TAG` (0x6) keep
//! their meaning. Slipway's own types live in the block 0x600-0x6FF: DRTM software claims one
//! 0x100 block per project (Intel TXT 0x400-0x4FF, in use 0x401-0x41a; tboot 0x501 and TrenchBoot
//! 0x502-0x504 in the 0x500 block), so the next free block cannot collide with either, nor with
//! the TCG's own types (below 0x100 and the EFI range from 0x8000_0000).
//!
//! Every structured Slipway event datum starts with a format version byte ([`FORMAT_V1`]); the
//! launch configuration, the policy and the hypervisor command line are recorded verbatim.

use crate::alg::{AlgId, Bank, BankSet};
use crate::{Error, Result};

/// TCG `EV_NO_ACTION`: recorded, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// TCG `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// TCG `EV_EVENT_TAG`.
pub const EV_EVENT_TAG: u32 = 0x0000_0006;

/// First event type of Slipway's block (0x600-0x6FF).
pub const EV_SLIPWAY_BASE: u32 = 0x0000_0600;
/// PCR19, first event: how the launch was measured ([`LaunchKind`]).
pub const EV_SLIPWAY_LAUNCH_KIND: u32 = 0x0000_0601;
/// PCR19: the hypervisor's command line, verbatim (no terminating NUL).
pub const EV_SLIPWAY_HYPERVISOR_CMDLINE: u32 = 0x0000_0602;
/// PCR19: the domB image bound to its module name ([`ModuleRecord`]).
pub const EV_SLIPWAY_DOMB_IMAGE: u32 = 0x0000_0603;
/// PCR19: the launch configuration (device tree blob), verbatim.
pub const EV_SLIPWAY_LAUNCH_CONFIG: u32 = 0x0000_0604;
/// PCR19: the launch policy, verbatim (its encoding is domB's, `docs/launch-config.md`).
pub const EV_SLIPWAY_POLICY: u32 = 0x0000_0605;
/// PCR20: a boot module bound to its name ([`ModuleRecord`]).
pub const EV_SLIPWAY_BOOT_MODULE: u32 = 0x0000_0606;
/// PCR21: one domain's complete build ([`DomainBuildRecord`]).
pub const EV_SLIPWAY_DOMAIN_BUILD: u32 = 0x0000_0607;
/// PCR19: a launch-policy decision ([`PolicyDecision`]).
pub const EV_SLIPWAY_POLICY_DECISION: u32 = 0x0000_0608;
/// PCR19: the active banks Slipway cannot hash and caps ([`SlipwayEvent::BanksCapped`]).
pub const EV_SLIPWAY_BANKS_CAPPED: u32 = 0x0000_0609;
/// PCR17, logged but not extended by Slipway: the emulated dynamic launch's measurement of the
/// hypervisor's declared region (swtpm hash-start/data/end did the extend).
pub const EV_SLIPWAY_EMULATED_LAUNCH: u32 = 0x0000_060A;
/// PCR19: the recovery domain's image (the boot module `recovery=` names on the hypervisor
/// command line) bound to its module name ([`ModuleRecord`]); measured by the hypervisor right
/// after domB's image, only when the command line names one.
pub const EV_SLIPWAY_RECOVERY_IMAGE: u32 = 0x0000_060B;
/// PCR19: the boot state the hypervisor read from (and counted into) its TPM NV boot record
/// before domB runs ([`BootStateRecord`]).
pub const EV_SLIPWAY_BOOT_STATE: u32 = 0x0000_060C;
/// PCR19: the policy program chose another configuration slot than the one requested
/// ([`SlotChoice`]); measured by domB before it measures and parses that slot's configuration.
pub const EV_SLIPWAY_SLOT_CHOICE: u32 = 0x0000_060D;

/// The name of a Slipway event type (`EV_SLIPWAY_BOOT_MODULE`, ...), or `None` for a type
/// outside Slipway's block. The names are the constants' names above; tools print them
/// (`cargo xtask log`, `verify`, the Keylime policy).
pub const fn slipway_type_name(event_type: u32) -> Option<&'static str> {
    Some(match event_type {
        EV_SLIPWAY_LAUNCH_KIND => "EV_SLIPWAY_LAUNCH_KIND",
        EV_SLIPWAY_HYPERVISOR_CMDLINE => "EV_SLIPWAY_HYPERVISOR_CMDLINE",
        EV_SLIPWAY_DOMB_IMAGE => "EV_SLIPWAY_DOMB_IMAGE",
        EV_SLIPWAY_LAUNCH_CONFIG => "EV_SLIPWAY_LAUNCH_CONFIG",
        EV_SLIPWAY_POLICY => "EV_SLIPWAY_POLICY",
        EV_SLIPWAY_BOOT_MODULE => "EV_SLIPWAY_BOOT_MODULE",
        EV_SLIPWAY_DOMAIN_BUILD => "EV_SLIPWAY_DOMAIN_BUILD",
        EV_SLIPWAY_POLICY_DECISION => "EV_SLIPWAY_POLICY_DECISION",
        EV_SLIPWAY_BANKS_CAPPED => "EV_SLIPWAY_BANKS_CAPPED",
        EV_SLIPWAY_EMULATED_LAUNCH => "EV_SLIPWAY_EMULATED_LAUNCH",
        EV_SLIPWAY_RECOVERY_IMAGE => "EV_SLIPWAY_RECOVERY_IMAGE",
        EV_SLIPWAY_BOOT_STATE => "EV_SLIPWAY_BOOT_STATE",
        EV_SLIPWAY_SLOT_CHOICE => "EV_SLIPWAY_SLOT_CHOICE",
        _ => return None,
    })
}

/// PCR17: dynamic launch "details" (CPU/SINIT; Slipway never extends it).
pub const PCR_DRTM_DETAILS: u32 = 17;
/// PCR18: dynamic launch "authorities" (SINIT; Slipway never extends it).
pub const PCR_DRTM_AUTHORITIES: u32 = 18;
/// PCR19: what decides the build (launch kind, command line, domB, configuration, policy,
/// decisions).
pub const PCR_BUILD_INPUTS: u32 = 19;
/// PCR20: every other boot module, bound to its name.
pub const PCR_BOOT_MODULES: u32 = 20;
/// PCR21: one event per domain build, extended by the hypervisor at hand-off.
pub const PCR_DOMAIN_BUILDS: u32 = 21;
/// The PCRs domB may ask the hypervisor to extend.
pub const DOMB_PCRS: [u32; 2] = [PCR_BUILD_INPUTS, PCR_BOOT_MODULES];
/// The PCRs that receive a separator at hand-off, in this order.
pub const SEPARATOR_PCRS: [u32; 3] = [PCR_BUILD_INPUTS, PCR_BOOT_MODULES, PCR_DOMAIN_BUILDS];
/// The locality the hypervisor extends at.
pub const HYPERVISOR_LOCALITY: u8 = 2;

/// Event data of the hand-off separator (TCG's "normal" separator value, 4 zero bytes).
pub const SEPARATOR_DATA: [u8; 4] = [0; 4];

/// Format version byte that starts every structured Slipway event datum.
pub const FORMAT_V1: u8 = 1;

/// The most bytes of a module or domain name in an event (names are short identifiers).
pub const MAX_NAME_LEN: usize = 255;

/// How a launch was measured: the first event in PCR19.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
#[non_exhaustive]
pub enum LaunchKind {
    /// No dynamic launch happened (PCR17 all 0xFF); nothing is measured by a DRTM.
    Unmeasured = 0,
    /// The emulated dynamic launch under QEMU + swtpm (hash-start/data/end by the harness).
    Emulated = 1,
    /// Intel TXT (GETSEC[SENTER], SINIT ACM).
    IntelTxt = 2,
    /// AMD SKINIT.
    AmdSkinit = 3,
    /// SIMULATED Intel TXT under QEMU + swtpm: Slipway's real TXT pre- and post-launch code,
    /// with the QEMU harness playing GETSEC[SENTER] and a simulated SINIT (no Intel code runs,
    /// no ACM signature is checked). Never evidence of a hardware launch.
    TxtSimulated = 4,
}

impl LaunchKind {
    /// The code in the event data (`Unmeasured` 0 .. `TxtSimulated` 4).
    pub const fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<LaunchKind> {
        Some(match code {
            0 => LaunchKind::Unmeasured,
            1 => LaunchKind::Emulated,
            2 => LaunchKind::IntelTxt,
            3 => LaunchKind::AmdSkinit,
            4 => LaunchKind::TxtSimulated,
            _ => return None,
        })
    }

    /// A short name (`unmeasured`, `emulated`, `txt`, `skinit`, `txt-simulated`).
    pub fn name(self) -> &'static str {
        match self {
            LaunchKind::Unmeasured => "unmeasured",
            LaunchKind::Emulated => "emulated",
            LaunchKind::IntelTxt => "txt",
            LaunchKind::AmdSkinit => "skinit",
            LaunchKind::TxtSimulated => "txt-simulated",
        }
    }

    /// Whether the launch ran on a simulation rather than the CPU's own dynamic launch
    /// (emulated, txt-simulated): never evidence of a hardware launch.
    pub fn is_simulated(self) -> bool {
        matches!(self, LaunchKind::Emulated | LaunchKind::TxtSimulated)
    }
}

/// A boot module (or the domB image) as recorded in its event: name and size. The digest of the
/// event is `H(H(name) || H(image))`, computed by [`crate::BoundModuleHasher`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ModuleRecord<'a> {
    /// The module name (first word of its multiboot2 command line).
    pub name: &'a [u8],
    /// The image size in bytes.
    pub size: u64,
}

/// One domain's build as recorded in PCR21: a versioned container whose payload format is fixed
/// by the hypervisor (its build record).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DomainBuildRecord<'a> {
    /// The domain's name (also inside the payload; here so that tools can name the event
    /// without decoding the payload).
    pub name: &'a [u8],
    /// Which encoding the payload uses ([`BUILD_PAYLOAD_POSTCARD_V2`] today).
    pub payload_format: u16,
    /// The encoded build record.
    pub payload: &'a [u8],
}

/// Payload format 1 of [`DomainBuildRecord`]: the hypervisor's build record, postcard-encoded
/// (`slipway_hv_core::build_record`), with three capabilities (control, hardware, recovery).
/// No longer written.
pub const BUILD_PAYLOAD_POSTCARD_V1: u16 = 1;
/// Payload format 2: format 1 with the fourth capability, `tpm`, after `recovery`. Written today.
pub const BUILD_PAYLOAD_POSTCARD_V2: u16 = 2;

/// Why the launch policy decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
#[non_exhaustive]
pub enum DecisionReason {
    /// Every check passed.
    AllChecksPassed = 0,
    /// The launch was not measured (no dynamic launch, or its check failed).
    UnmeasuredLaunch = 1,
    /// The TPM is absent or failing.
    TpmUnavailable = 2,
    /// A module's digest is not in its domain's allow-list (subject: the module name).
    ModuleNotAllowed = 3,
    /// The policy program failed: refused at validation, trapped, ran out of fuel or memory,
    /// or gave an invalid answer (subject: which, e.g. `out-of-fuel`); the action is
    /// start-recovery-only.
    PolicyFailed = 4,
    /// A rule of the policy program's own (subject: the rule's name).
    PolicyRule = 5,
    /// Recovery (reasons 6-12 are the hypervisor's own, never domB's): the launch
    /// configuration is missing or malformed (domB exit code `ConfigMalformed`). Subject: the
    /// recovery module started, or empty when there is none (action halt).
    ConfigMalformed = 6,
    /// Recovery: a boot module the configuration names is not in the boot.
    ModuleMissing = 7,
    /// Recovery: the policy failed, halted, or chose recovery-only with no recovery domain in
    /// the configuration.
    PolicyHalted = 8,
    /// Recovery: no valid plan: a domain could not be planned or built, or the hand-off was
    /// refused.
    PlanRefused = 9,
    /// Recovery: domB stopped with another error (a panic, an unknown exit code).
    BootDomainFailed = 10,
    /// Recovery: domB crashed (an exception it could not handle, a triple fault, a forbidden
    /// instruction or access).
    BootDomainCrashed = 11,
    /// Recovery: domB did not hand off before the hypervisor's watchdog deadline.
    BootDomainHung = 12,
}

impl DecisionReason {
    /// A short name (`all-checks-passed`, `unmeasured-launch`, `tpm-unavailable`,
    /// `module-not-allowed`, `policy-failed`, `policy-rule`).
    pub const fn name(self) -> &'static str {
        match self {
            DecisionReason::AllChecksPassed => "all-checks-passed",
            DecisionReason::UnmeasuredLaunch => "unmeasured-launch",
            DecisionReason::TpmUnavailable => "tpm-unavailable",
            DecisionReason::ModuleNotAllowed => "module-not-allowed",
            DecisionReason::PolicyFailed => "policy-failed",
            DecisionReason::PolicyRule => "policy-rule",
            DecisionReason::ConfigMalformed => "config-malformed",
            DecisionReason::ModuleMissing => "module-missing",
            DecisionReason::PolicyHalted => "policy-halted",
            DecisionReason::PlanRefused => "plan-refused",
            DecisionReason::BootDomainFailed => "boot-domain-failed",
            DecisionReason::BootDomainCrashed => "boot-domain-crashed",
            DecisionReason::BootDomainHung => "boot-domain-hung",
        }
    }

    /// The reason for `code`, if it is one.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => DecisionReason::AllChecksPassed,
            1 => DecisionReason::UnmeasuredLaunch,
            2 => DecisionReason::TpmUnavailable,
            3 => DecisionReason::ModuleNotAllowed,
            4 => DecisionReason::PolicyFailed,
            5 => DecisionReason::PolicyRule,
            6 => DecisionReason::ConfigMalformed,
            7 => DecisionReason::ModuleMissing,
            8 => DecisionReason::PolicyHalted,
            9 => DecisionReason::PlanRefused,
            10 => DecisionReason::BootDomainFailed,
            11 => DecisionReason::BootDomainCrashed,
            12 => DecisionReason::BootDomainHung,
            _ => return None,
        })
    }

    /// Whether only the hypervisor records this reason (its recovery decisions): the dispatcher
    /// refuses such a decision from domB.
    pub const fn is_recovery(self) -> bool {
        (self as u8) >= DecisionReason::ConfigMalformed as u8
    }
}

/// What the launch policy decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
#[non_exhaustive]
pub enum DecisionAction {
    /// Start every domain.
    StartAll = 0,
    /// Start only the recovery domain.
    StartRecoveryOnly = 1,
    /// Halt.
    Halt = 2,
    /// Start the domains the policy program listed (the builds in PCR21 say which).
    StartListed = 3,
}

impl DecisionAction {
    /// A short name (`start-all`, `start-recovery-only`, `halt`, `start-listed`).
    pub const fn name(self) -> &'static str {
        match self {
            DecisionAction::StartAll => "start-all",
            DecisionAction::StartRecoveryOnly => "start-recovery-only",
            DecisionAction::Halt => "halt",
            DecisionAction::StartListed => "start-listed",
        }
    }
}

/// A launch-policy decision.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PolicyDecision<'a> {
    /// Why.
    pub reason: DecisionReason,
    /// What.
    pub action: DecisionAction,
    /// What it is about (a module or domain name), possibly empty.
    pub subject: &'a [u8],
}

/// What the hypervisor found in its TPM NV boot record (`docs/measurement.md`, "Boot record").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
#[non_exhaustive]
pub enum BootRecordStatus {
    /// There was no record: the index was defined and a fresh record written (first boot).
    Created = 0,
    /// The record was read and this boot counted into it.
    Counted = 1,
    /// The record did not decode (corrupt): reported, replaced by a fresh one, this boot
    /// counted into that (no known-good slot survives).
    ReplacedCorrupt = 2,
    /// No record could be used (no TPM, an index of other attributes at the handle, a TPM
    /// error): nothing counted, the boot state is unknown.
    Unavailable = 3,
}

impl BootRecordStatus {
    /// A short name (`created`, `counted`, `replaced-corrupt`, `unavailable`).
    pub const fn name(self) -> &'static str {
        match self {
            BootRecordStatus::Created => "created",
            BootRecordStatus::Counted => "counted",
            BootRecordStatus::ReplacedCorrupt => "replaced-corrupt",
            BootRecordStatus::Unavailable => "unavailable",
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => BootRecordStatus::Created,
            1 => BootRecordStatus::Counted,
            2 => BootRecordStatus::ReplacedCorrupt,
            3 => BootRecordStatus::Unavailable,
            _ => return None,
        })
    }
}

/// The boot state as measured: `[FORMAT_V1, status, requested slot, u32 attempts, last
/// known-good slot or 0xFF]`. `attempts` counts this boot (1 on the first boot of a slot); it is
/// 0 and there is no known-good slot when the status is `Unavailable`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BootStateRecord {
    /// What the hypervisor found.
    pub status: BootRecordStatus,
    /// The configuration slot this boot was asked to use (the hypervisor's `slot=`).
    pub requested_slot: u8,
    /// Boots of the requested slot since it last reported success, this one included.
    pub attempts: u32,
    /// The slot of the last boot that reported success.
    pub last_known_good: Option<u8>,
}

/// The byte that stands for "no slot" in [`BootStateRecord`].
pub const NO_SLOT: u8 = 0xFF;

/// The policy program chose configuration slot `to` although slot `from` was requested.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SlotChoice {
    /// The requested slot (whose configuration the program saw first).
    pub from: u8,
    /// The slot the program chose.
    pub to: u8,
}

/// How an event's digest is computed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DigestRule {
    /// `H(event data)`: [`crate::LogWriter::append_measured`] (all events a verifier interprets).
    EventData,
    /// `H(H(name) || H(image))`: [`crate::BoundModuleHasher`].
    BoundModule,
    /// `H(region)` measured by the dynamic launch, logged but not extended by Slipway.
    LaunchRegion,
}

/// A Slipway event, typed: encodes to and decodes from exact event-data bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SlipwayEvent<'a> {
    /// [`EV_SLIPWAY_LAUNCH_KIND`]: `[FORMAT_V1, kind]`.
    LaunchKind(LaunchKind),
    /// [`EV_SLIPWAY_BANKS_CAPPED`]: `[FORMAT_V1, count, {u16 alg, u16 size} * count]`.
    BanksCapped(BankSet),
    /// [`EV_SLIPWAY_HYPERVISOR_CMDLINE`]: verbatim.
    HypervisorCmdline(&'a [u8]),
    /// [`EV_SLIPWAY_DOMB_IMAGE`]: `[FORMAT_V1, u16 name_len, name, u64 size]`.
    DombImage(ModuleRecord<'a>),
    /// [`EV_SLIPWAY_RECOVERY_IMAGE`]: `[FORMAT_V1, u16 name_len, name, u64 size]`.
    RecoveryImage(ModuleRecord<'a>),
    /// [`EV_SLIPWAY_LAUNCH_CONFIG`]: verbatim.
    LaunchConfig(&'a [u8]),
    /// [`EV_SLIPWAY_POLICY`]: verbatim.
    Policy(&'a [u8]),
    /// [`EV_SLIPWAY_POLICY_DECISION`]: `[FORMAT_V1, reason, action, u16 len, subject]`.
    PolicyDecision(PolicyDecision<'a>),
    /// [`EV_SLIPWAY_BOOT_MODULE`]: `[FORMAT_V1, u16 name_len, name, u64 size]`.
    BootModule(ModuleRecord<'a>),
    /// [`EV_SLIPWAY_DOMAIN_BUILD`]:
    /// `[FORMAT_V1, u16 name_len, name, u16 payload_format, u32 payload_len, payload]`.
    DomainBuild(DomainBuildRecord<'a>),
    /// [`EV_SEPARATOR`] into PCR19, 20 or 21 at hand-off: [`SEPARATOR_DATA`].
    Separator,
    /// [`EV_SLIPWAY_EMULATED_LAUNCH`]: `[FORMAT_V1, u64 region_start, u64 region_size]`.
    EmulatedLaunch {
        /// Physical address of the measured region.
        region_start: u64,
        /// Its size in bytes.
        region_size: u64,
    },
    /// [`EV_SLIPWAY_BOOT_STATE`]: `[FORMAT_V1, status, requested slot, u32 attempts, slot]`.
    BootState(BootStateRecord),
    /// [`EV_SLIPWAY_SLOT_CHOICE`]: `[FORMAT_V1, from, to]`.
    SlotChoice(SlotChoice),
}

impl<'a> SlipwayEvent<'a> {
    /// The event type.
    pub fn event_type(&self) -> u32 {
        match self {
            SlipwayEvent::LaunchKind(_) => EV_SLIPWAY_LAUNCH_KIND,
            SlipwayEvent::BanksCapped(_) => EV_SLIPWAY_BANKS_CAPPED,
            SlipwayEvent::HypervisorCmdline(_) => EV_SLIPWAY_HYPERVISOR_CMDLINE,
            SlipwayEvent::DombImage(_) => EV_SLIPWAY_DOMB_IMAGE,
            SlipwayEvent::RecoveryImage(_) => EV_SLIPWAY_RECOVERY_IMAGE,
            SlipwayEvent::LaunchConfig(_) => EV_SLIPWAY_LAUNCH_CONFIG,
            SlipwayEvent::Policy(_) => EV_SLIPWAY_POLICY,
            SlipwayEvent::PolicyDecision(_) => EV_SLIPWAY_POLICY_DECISION,
            SlipwayEvent::BootModule(_) => EV_SLIPWAY_BOOT_MODULE,
            SlipwayEvent::DomainBuild(_) => EV_SLIPWAY_DOMAIN_BUILD,
            SlipwayEvent::Separator => EV_SEPARATOR,
            SlipwayEvent::EmulatedLaunch { .. } => EV_SLIPWAY_EMULATED_LAUNCH,
            SlipwayEvent::BootState(_) => EV_SLIPWAY_BOOT_STATE,
            SlipwayEvent::SlotChoice(_) => EV_SLIPWAY_SLOT_CHOICE,
        }
    }

    /// The PCR the plan assigns (the separator goes into each of [`SEPARATOR_PCRS`]; this
    /// returns the first).
    pub fn pcr(&self) -> u32 {
        match self {
            SlipwayEvent::BootModule(_) => PCR_BOOT_MODULES,
            SlipwayEvent::DomainBuild(_) => PCR_DOMAIN_BUILDS,
            SlipwayEvent::EmulatedLaunch { .. } => PCR_DRTM_DETAILS,
            _ => PCR_BUILD_INPUTS,
        }
    }

    /// How the event's digest is computed.
    pub fn digest_rule(&self) -> DigestRule {
        match self {
            SlipwayEvent::DombImage(_)
            | SlipwayEvent::RecoveryImage(_)
            | SlipwayEvent::BootModule(_) => DigestRule::BoundModule,
            SlipwayEvent::EmulatedLaunch { .. } => DigestRule::LaunchRegion,
            _ => DigestRule::EventData,
        }
    }

    /// Encoded length of the event data.
    pub fn encoded_len(&self) -> usize {
        match self {
            SlipwayEvent::LaunchKind(_) => 2,
            SlipwayEvent::BanksCapped(banks) => 2 + 4 * banks.len(),
            SlipwayEvent::HypervisorCmdline(bytes)
            | SlipwayEvent::LaunchConfig(bytes)
            | SlipwayEvent::Policy(bytes) => bytes.len(),
            SlipwayEvent::DombImage(module)
            | SlipwayEvent::RecoveryImage(module)
            | SlipwayEvent::BootModule(module) => 1 + 2 + module.name.len() + 8,
            SlipwayEvent::PolicyDecision(decision) => 1 + 2 + 2 + decision.subject.len(),
            SlipwayEvent::DomainBuild(build) => {
                1 + 2 + build.name.len() + 2 + 4 + build.payload.len()
            }
            SlipwayEvent::Separator => SEPARATOR_DATA.len(),
            SlipwayEvent::EmulatedLaunch { .. } => 1 + 8 + 8,
            SlipwayEvent::BootState(_) => 1 + 1 + 1 + 4 + 1,
            SlipwayEvent::SlotChoice(_) => 3,
        }
    }

    /// Writes the exact event data into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize> {
        let len = self.encoded_len();
        let available = out.len();
        let out = out.get_mut(..len).ok_or(Error::BufferTooSmall {
            needed: len,
            available,
        })?;
        let mut w = Out { out, pos: 0 };
        match *self {
            SlipwayEvent::LaunchKind(kind) => w.bytes(&[FORMAT_V1, kind as u8]),
            SlipwayEvent::BanksCapped(banks) => {
                w.bytes(&[FORMAT_V1, banks.len() as u8]);
                for bank in banks.iter() {
                    w.bytes(&bank.alg.0.to_le_bytes());
                    w.bytes(&u16::from(bank.digest_size).to_le_bytes());
                }
            }
            SlipwayEvent::HypervisorCmdline(bytes)
            | SlipwayEvent::LaunchConfig(bytes)
            | SlipwayEvent::Policy(bytes) => w.bytes(bytes),
            SlipwayEvent::DombImage(module)
            | SlipwayEvent::RecoveryImage(module)
            | SlipwayEvent::BootModule(module) => {
                w.bytes(&[FORMAT_V1]);
                w.name(module.name, "module name")?;
                w.bytes(&module.size.to_le_bytes());
            }
            SlipwayEvent::PolicyDecision(decision) => {
                w.bytes(&[FORMAT_V1, decision.reason as u8, decision.action as u8]);
                w.name(decision.subject, "policy decision subject")?;
            }
            SlipwayEvent::DomainBuild(build) => {
                w.bytes(&[FORMAT_V1]);
                w.name(build.name, "domain name")?;
                w.bytes(&build.payload_format.to_le_bytes());
                let payload_len =
                    u32::try_from(build.payload.len()).map_err(|_| Error::FieldTooLong {
                        what: "domain build payload",
                        len: build.payload.len(),
                        max: u32::MAX as usize,
                    })?;
                w.bytes(&payload_len.to_le_bytes());
                w.bytes(build.payload);
            }
            SlipwayEvent::Separator => w.bytes(&SEPARATOR_DATA),
            SlipwayEvent::EmulatedLaunch {
                region_start,
                region_size,
            } => {
                w.bytes(&[FORMAT_V1]);
                w.bytes(&region_start.to_le_bytes());
                w.bytes(&region_size.to_le_bytes());
            }
            SlipwayEvent::BootState(state) => {
                w.bytes(&[FORMAT_V1, state.status as u8, state.requested_slot]);
                w.bytes(&state.attempts.to_le_bytes());
                w.bytes(&[state.last_known_good.unwrap_or(NO_SLOT)]);
            }
            SlipwayEvent::SlotChoice(choice) => w.bytes(&[FORMAT_V1, choice.from, choice.to]),
        }
        debug_assert_eq!(w.pos, len);
        Ok(len)
    }

    /// Decodes the event data of a Slipway event (or a separator). Returns `Ok(None)` for an
    /// event type that is not Slipway's; an error for a Slipway type with bad data.
    /// `EV_SEPARATOR` is TCG's: firmware also writes it (with 0x00000001 for an error), so decode
    /// only events in Slipway's PCRs (17-21).
    pub fn decode(event_type: u32, data: &'a [u8]) -> Result<Option<SlipwayEvent<'a>>> {
        let bad = |what: &'static str| Error::BadEventData { event_type, what };
        let mut r = In { data, pos: 0 };
        let versioned = |r: &mut In<'a>| -> Result<()> {
            match r.u8() {
                Some(FORMAT_V1) => Ok(()),
                Some(_) => Err(bad("unknown format version")),
                None => Err(bad("empty")),
            }
        };
        let event = match event_type {
            EV_SLIPWAY_LAUNCH_KIND => {
                versioned(&mut r)?;
                let code = r.u8().ok_or(bad("launch kind missing"))?;
                SlipwayEvent::LaunchKind(
                    LaunchKind::from_code(code).ok_or(bad("unknown launch kind"))?,
                )
            }
            EV_SLIPWAY_BANKS_CAPPED => {
                versioned(&mut r)?;
                let count = r.u8().ok_or(bad("bank count missing"))?;
                let mut banks = BankSet::empty();
                for _ in 0..count {
                    let alg = AlgId(r.u16().ok_or(bad("bank cut off"))?);
                    let size = r.u16().ok_or(bad("bank cut off"))?;
                    let bank = Bank::with_size(alg, size.into())
                        .map_err(|_| bad("bank digest size wrong"))?;
                    banks
                        .push(bank)
                        .map_err(|_| bad("bank repeated or too many"))?;
                }
                SlipwayEvent::BanksCapped(banks)
            }
            EV_SLIPWAY_HYPERVISOR_CMDLINE => SlipwayEvent::HypervisorCmdline(r.rest()),
            EV_SLIPWAY_LAUNCH_CONFIG => SlipwayEvent::LaunchConfig(r.rest()),
            EV_SLIPWAY_POLICY => SlipwayEvent::Policy(r.rest()),
            EV_SLIPWAY_DOMB_IMAGE | EV_SLIPWAY_RECOVERY_IMAGE | EV_SLIPWAY_BOOT_MODULE => {
                versioned(&mut r)?;
                let name = r.name().ok_or(bad("module name cut off"))?;
                let size = r.u64().ok_or(bad("module size cut off"))?;
                let module = ModuleRecord { name, size };
                match event_type {
                    EV_SLIPWAY_DOMB_IMAGE => SlipwayEvent::DombImage(module),
                    EV_SLIPWAY_RECOVERY_IMAGE => SlipwayEvent::RecoveryImage(module),
                    _ => SlipwayEvent::BootModule(module),
                }
            }
            EV_SLIPWAY_POLICY_DECISION => {
                versioned(&mut r)?;
                let reason = DecisionReason::from_code(r.u8().ok_or(bad("reason missing"))?)
                    .ok_or(bad("unknown decision reason"))?;
                let action = match r.u8().ok_or(bad("action missing"))? {
                    0 => DecisionAction::StartAll,
                    1 => DecisionAction::StartRecoveryOnly,
                    2 => DecisionAction::Halt,
                    3 => DecisionAction::StartListed,
                    _ => return Err(bad("unknown decision action")),
                };
                let subject = r.name().ok_or(bad("subject cut off"))?;
                SlipwayEvent::PolicyDecision(PolicyDecision {
                    reason,
                    action,
                    subject,
                })
            }
            EV_SLIPWAY_DOMAIN_BUILD => {
                versioned(&mut r)?;
                let name = r.name().ok_or(bad("domain name cut off"))?;
                let payload_format = r.u16().ok_or(bad("payload format cut off"))?;
                let len = r.u32().ok_or(bad("payload length cut off"))?;
                let payload = r.take(len as usize).ok_or(bad("payload cut off"))?;
                SlipwayEvent::DomainBuild(DomainBuildRecord {
                    name,
                    payload_format,
                    payload,
                })
            }
            EV_SEPARATOR => {
                if data != SEPARATOR_DATA {
                    return Err(bad("separator data is not 4 zero bytes"));
                }
                r.rest();
                SlipwayEvent::Separator
            }
            EV_SLIPWAY_EMULATED_LAUNCH => {
                versioned(&mut r)?;
                let region_start = r.u64().ok_or(bad("region start cut off"))?;
                let region_size = r.u64().ok_or(bad("region size cut off"))?;
                SlipwayEvent::EmulatedLaunch {
                    region_start,
                    region_size,
                }
            }
            EV_SLIPWAY_BOOT_STATE => {
                versioned(&mut r)?;
                let status = r.u8().ok_or(bad("status missing"))?;
                let status =
                    BootRecordStatus::from_code(status).ok_or(bad("unknown boot record status"))?;
                let requested_slot = r.u8().ok_or(bad("requested slot missing"))?;
                let attempts = r.u32().ok_or(bad("attempts cut off"))?;
                let last_known_good = match r.u8().ok_or(bad("known-good slot missing"))? {
                    NO_SLOT => None,
                    slot => Some(slot),
                };
                if status == BootRecordStatus::Unavailable
                    && (attempts != 0 || last_known_good.is_some())
                {
                    return Err(bad("an unavailable boot record with attempts or a slot"));
                }
                SlipwayEvent::BootState(BootStateRecord {
                    status,
                    requested_slot,
                    attempts,
                    last_known_good,
                })
            }
            EV_SLIPWAY_SLOT_CHOICE => {
                versioned(&mut r)?;
                let from = r.u8().ok_or(bad("slot cut off"))?;
                let to = r.u8().ok_or(bad("slot cut off"))?;
                if from == to {
                    return Err(bad("a slot choice names one slot twice"));
                }
                SlipwayEvent::SlotChoice(SlotChoice { from, to })
            }
            _ => return Ok(None),
        };
        if r.pos != data.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(Some(event))
    }
}

struct Out<'b> {
    out: &'b mut [u8],
    pos: usize,
}

impl Out<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn name(&mut self, name: &[u8], what: &'static str) -> Result<()> {
        if name.len() > MAX_NAME_LEN {
            return Err(Error::FieldTooLong {
                what,
                len: name.len(),
                max: MAX_NAME_LEN,
            });
        }
        self.bytes(&(name.len() as u16).to_le_bytes());
        self.bytes(name);
        Ok(())
    }
}

struct In<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> In<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }
    fn rest(&mut self) -> &'a [u8] {
        let bytes = &self.data[self.pos..];
        self.pos = self.data.len();
        bytes
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn name(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()? as usize;
        if len > MAX_NAME_LEN {
            return None;
        }
        self.take(len)
    }
}
