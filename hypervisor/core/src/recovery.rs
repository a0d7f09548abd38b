//! The recovery environment (`docs/architecture.md`, "Recovery environment"): what the
//! hypervisor does when domB cannot make a valid plan.
//!
//! Whenever domB stops before hand-off (it exits with an error, crashes, or misses the
//! watchdog's deadline), the hypervisor decides here why ([`decide`]), measures that decision
//! into PCR19 and, if the command line names a recovery module (`recovery=<module name>`),
//! builds the recovery domain itself from a minimal fixed plan ([`plan`], [`insert_plan`]):
//! [`RECOVERY_MEMORY`] of RAM, one vCPU, the module loaded as a PVH ELF, the start info at the
//! top of its RAM carrying the reason on its command line, the console focus, no capability
//! but `recovery`. Without a recovery module the decision is `halt` and the run ends.
//!
//! Everything here is pure: the hypervisor binary performs the steps, `cargo xtask predict`
//! replays them, and both get the same build record and decision event.

use core::fmt;

use sha2::{Digest as _, Sha256};
use slipway_measure::events::{DecisionAction, DecisionReason};
use slipway_protocol::boot_modules::{CONFIG_MODULE, DOMB_MODULE, POLICY_MODULE};
use slipway_protocol::recovery::{BuilderExit, REASON_WORD};
use slipway_protocol::v1::{
    Capabilities, DomainId, DomainName, Error, ModuleName, NameError, VcpuEntry,
};

use crate::addr::PAGE_SIZE;
use crate::build_record::{BuildRecord, BuildStep};
use crate::domain::{DomainState, DomainTable, StopReason};
use crate::pvh::{self, PvhError, PvhImage};
use crate::start_info;

/// The recovery domain's name (its PCR21 build event and console prefix).
pub const RECOVERY_DOMAIN_NAME: &str = "recovery";
/// The fixed plan's RAM: 16 MiB, enough for a small PVH console image.
pub const RECOVERY_MEMORY: u64 = 16 << 20;
/// The fixed plan's start info: three pages at the top of RAM (as domB's).
pub const START_INFO_PAGES: u64 = 3;
/// The watchdog's default deadline for domB's hand-off, in seconds from domB's start.
pub const DEFAULT_WATCHDOG_SECONDS: u64 = 120;
/// The longest deadline `domb_watchdog=` accepts (one hour).
pub const MAX_WATCHDOG_SECONDS: u64 = 3600;
/// The command-line option naming the recovery module.
pub const RECOVERY_OPTION: &str = "recovery=";
/// The command-line option setting the watchdog deadline in seconds.
pub const WATCHDOG_OPTION: &str = "domb_watchdog=";
/// Longest recovery-domain command line (the reason word plus the module's own arguments).
pub const MAX_CMDLINE: usize = 512;

/// The recovery options of the hypervisor command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryOptions<'a> {
    /// The module `recovery=` names, if any (a valid module name, not `domb`/`config`/`policy`).
    pub module: Option<&'a str>,
    /// Seconds domB has, from its start, to hand off.
    pub watchdog_seconds: u64,
}

/// A recovery option on the command line is refused (the boot is refused, naming it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    /// `recovery=` does not give a valid module name.
    InvalidName {
        /// The value given.
        value: &'a [u8],
        /// Why it is not a module name.
        error: NameError,
    },
    /// `recovery=` names a module that is not a domain image (`domb`, `config`, `policy`).
    ReservedName(&'a str),
    /// An option is given twice (which would win is not obvious, so neither does).
    Twice(&'static str),
    /// `domb_watchdog=` is not a number of seconds in 1..=3600.
    BadWatchdog(&'a [u8]),
    /// `recovery=` names a module that is not in the boot.
    NoSuchModule(&'a str),
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName { value, error } => write!(
                f,
                "recovery={}: not a module name ({error})",
                value.escape_ascii()
            ),
            Self::ReservedName(name) => write!(
                f,
                "recovery={name}: `{name}` is not a domain image (domb, config and policy are reserved)"
            ),
            Self::Twice(option) => write!(f, "{option} is given twice"),
            Self::BadWatchdog(value) => write!(
                f,
                "{WATCHDOG_OPTION}{}: not a number of seconds in 1..={MAX_WATCHDOG_SECONDS}",
                value.escape_ascii()
            ),
            Self::NoSuchModule(name) => {
                write!(f, "recovery={name}: no boot module is named `{name}`")
            }
        }
    }
}

/// Reads `recovery=` and `domb_watchdog=` from the hypervisor command line (words separated by
/// spaces, as every hypervisor option).
pub fn parse_options(cmdline: &[u8]) -> Result<RecoveryOptions<'_>, OptionError<'_>> {
    let mut module = None;
    let mut watchdog = None;
    for word in cmdline.split(|&b| b == b' ') {
        if let Some(value) = word.strip_prefix(RECOVERY_OPTION.as_bytes()) {
            if module.is_some() {
                return Err(OptionError::Twice("recovery="));
            }
            let name = core::str::from_utf8(value).map_err(|e| OptionError::InvalidName {
                value,
                error: NameError::InvalidCharacter {
                    position: e.valid_up_to(),
                },
            })?;
            ModuleName::new(name).map_err(|error| OptionError::InvalidName { value, error })?;
            if [DOMB_MODULE, CONFIG_MODULE, POLICY_MODULE].contains(&name) {
                return Err(OptionError::ReservedName(name));
            }
            module = Some(name);
        } else if let Some(value) = word.strip_prefix(WATCHDOG_OPTION.as_bytes()) {
            if watchdog.is_some() {
                return Err(OptionError::Twice(WATCHDOG_OPTION));
            }
            let seconds = core::str::from_utf8(value)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok())
                .filter(|s| (1..=MAX_WATCHDOG_SECONDS).contains(s))
                .ok_or(OptionError::BadWatchdog(value))?;
            watchdog = Some(seconds);
        }
    }
    Ok(RecoveryOptions {
        module,
        watchdog_seconds: watchdog.unwrap_or(DEFAULT_WATCHDOG_SECONDS),
    })
}

impl<'a> RecoveryOptions<'a> {
    /// The index of the recovery module among the boot's modules (named by
    /// `slipway_protocol::boot_modules`), `None` when no `recovery=` is given; an error when it
    /// names no module of this boot.
    pub fn find_module(&self, names: &[ModuleName]) -> Result<Option<usize>, OptionError<'a>> {
        match self.module {
            None => Ok(None),
            Some(name) => names
                .iter()
                .position(|n| n.as_str() == name)
                .map(Some)
                .ok_or(OptionError::NoSuchModule(name)),
        }
    }
}

/// The TSC value at which the watchdog expires: `seconds` after `start` at `tsc_hz`.
pub fn watchdog_deadline(start: u64, seconds: u64, tsc_hz: u64) -> u64 {
    start.saturating_add(seconds.saturating_mul(tsc_hz))
}

/// Whether domB (still running, not handed off) has missed the watchdog's deadline at `now`.
pub fn watchdog_expired(now: u64, deadline: u64) -> bool {
    now >= deadline
}

/// How domB ended before hand-off, as the domain table recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuilderEnd {
    /// It shut down with this exit code (`slipway_protocol::recovery::BuilderExit`).
    Exited(u32),
    /// The hypervisor stopped it (an exception it could not handle, a triple fault, ...).
    Crashed(StopReason),
    /// The watchdog stopped it: it did not hand off in time.
    Hung,
}

impl BuilderEnd {
    /// How domB ended, from its state in the table; `None` while it runs (or if it handed off).
    pub fn from_state(state: DomainState) -> Option<Self> {
        match state {
            DomainState::ShutDown { exit_code } => Some(BuilderEnd::Exited(exit_code)),
            DomainState::Crashed(StopReason::WatchdogExpired) => Some(BuilderEnd::Hung),
            DomainState::Crashed(reason) => Some(BuilderEnd::Crashed(reason)),
            DomainState::Planned | DomainState::Running | DomainState::Destroyed => None,
        }
    }

    /// The measured reason.
    pub fn reason(self) -> DecisionReason {
        match self {
            BuilderEnd::Exited(code) => match BuilderExit::from_code(code) {
                Some(BuilderExit::ConfigMalformed) => DecisionReason::ConfigMalformed,
                Some(BuilderExit::ModuleMissing) => DecisionReason::ModuleMissing,
                Some(BuilderExit::PolicyHalted) => DecisionReason::PolicyHalted,
                Some(BuilderExit::PlanRefused) => DecisionReason::PlanRefused,
                Some(BuilderExit::Failed) | None => DecisionReason::BootDomainFailed,
            },
            BuilderEnd::Crashed(_) => DecisionReason::BootDomainCrashed,
            BuilderEnd::Hung => DecisionReason::BootDomainHung,
        }
    }
}

impl fmt::Display for BuilderEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuilderEnd::Exited(code) => {
                let what = match BuilderExit::from_code(*code) {
                    Some(BuilderExit::ConfigMalformed) => {
                        "the launch configuration is missing or malformed"
                    }
                    Some(BuilderExit::ModuleMissing) => {
                        "the launch configuration names a module that is not in the boot"
                    }
                    Some(BuilderExit::PolicyHalted) => "the launch policy halted the launch",
                    Some(BuilderExit::PlanRefused) => "no valid plan could be built",
                    Some(BuilderExit::Failed) => "domB failed",
                    None => "domB failed with an exit code it does not use",
                };
                write!(f, "{what} (domB exit code {code})")
            }
            BuilderEnd::Crashed(reason) => write!(f, "domB crashed: {reason}"),
            BuilderEnd::Hung => write!(f, "domB did not hand off before the watchdog deadline"),
        }
    }
}

/// The hypervisor's recovery decision, measured into PCR19 as a policy decision record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryDecision<'a> {
    /// Why (reasons 6-12: the hypervisor's own).
    pub reason: DecisionReason,
    /// Start the recovery domain, or halt when there is no recovery module.
    pub action: DecisionAction,
    /// The recovery module started, or empty (halt).
    pub subject: &'a str,
}

/// What the hypervisor does when domB ended before hand-off.
pub fn decide(end: BuilderEnd, recovery_module: Option<&str>) -> RecoveryDecision<'_> {
    match recovery_module {
        Some(module) => RecoveryDecision {
            reason: end.reason(),
            action: DecisionAction::StartRecoveryOnly,
            subject: module,
        },
        None => RecoveryDecision {
            reason: end.reason(),
            action: DecisionAction::Halt,
            subject: "",
        },
    }
}

/// The recovery domain's fixed plan.
#[derive(Debug)]
pub struct RecoveryPlan {
    /// The image's entry point and segments.
    pub image: PvhImage,
    /// Where the start info goes (top of RAM).
    pub start_info_gpa: u64,
    /// The start info's bytes.
    pub start_info: heapless::Vec<u8, { (START_INFO_PAGES * PAGE_SIZE) as usize }>,
    /// The command line in it: `slipway.recovery=<reason> [module arguments]`.
    pub cmdline: heapless::String<MAX_CMDLINE>,
}

/// The fixed plan cannot be made.
#[derive(Debug)]
pub enum PlanError {
    /// The recovery module is not a loadable PVH ELF that fits the fixed RAM.
    Image(PvhError),
    /// The module's arguments make the command line longer than [`MAX_CMDLINE`] or the start
    /// info larger than its pages, or contain a NUL byte.
    CommandLineTooLong,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(error) => write!(
                f,
                "the recovery module is not a PVH ELF that fits {} MiB: {error}",
                RECOVERY_MEMORY >> 20
            ),
            Self::CommandLineTooLong => write!(
                f,
                "the recovery module's arguments are too long (command line at most {MAX_CMDLINE} bytes) or contain a NUL byte"
            ),
        }
    }
}

/// The fixed plan for the recovery module `image`: its segments below the start info, the start
/// info with `slipway.recovery=<reason>` and the module's own `arguments` (the words after its
/// name on its command line) on the command line, and a memory map of its RAM.
pub fn plan(
    image: &[u8],
    reason: DecisionReason,
    arguments: &str,
) -> Result<RecoveryPlan, PlanError> {
    let start_info_gpa = RECOVERY_MEMORY - START_INFO_PAGES * PAGE_SIZE;
    let image = pvh::plan(image, start_info_gpa).map_err(PlanError::Image)?;
    let mut cmdline = heapless::String::new();
    let arguments = arguments.trim_matches(' ');
    let fits = cmdline.push_str(REASON_WORD).is_ok()
        && cmdline.push('=').is_ok()
        && cmdline.push_str(reason.name()).is_ok()
        && (arguments.is_empty()
            || (cmdline.push(' ').is_ok() && cmdline.push_str(arguments).is_ok()));
    if !fits {
        return Err(PlanError::CommandLineTooLong);
    }
    let mut area = [0u8; (START_INFO_PAGES * PAGE_SIZE) as usize];
    let memmap = [(0, RECOVERY_MEMORY, start_info::MEMMAP_RAM)];
    let len = start_info::build(&mut area, start_info_gpa, &cmdline, &[], &memmap)
        .map_err(|_| PlanError::CommandLineTooLong)?;
    let start_info =
        heapless::Vec::from_slice(&area[..len]).map_err(|()| PlanError::CommandLineTooLong)?;
    Ok(RecoveryPlan {
        image,
        start_info_gpa,
        start_info,
        cmdline,
    })
}

impl RecoveryPlan {
    /// The vCPU's entry state: the PVH entry in 32-bit mode, `ebx` = the start info.
    pub fn entry(&self) -> VcpuEntry {
        VcpuEntry::Pvh32 {
            entry_eip: self.image.entry,
            // Below RECOVERY_MEMORY (16 MiB): fits 32 bits.
            start_info_gpa: self.start_info_gpa as u32,
        }
    }
}

/// Enters the fixed plan into the domain table once domB is lost: the table gives up domB's
/// unfinished plan and holds the recovery domain, planned, with the build record of exactly
/// what the hypervisor does next (the segment copies with the SHA-256 of the module's bytes,
/// the start-info write, the entry, the console, the start). The hypervisor then performs those
/// steps and seals the measurement with this one domain. Returns its id.
pub fn insert_plan(
    table: &mut DomainTable,
    plan: &RecoveryPlan,
    module_index: u16,
    module_name: &ModuleName,
    module_image: &[u8],
) -> Result<DomainId, Error> {
    let name = DomainName::new(RECOVERY_DOMAIN_NAME).map_err(|_| Error::NameReserved)?;
    let capabilities = Capabilities {
        recovery: true,
        ..Capabilities::default()
    };
    let mut record = BuildRecord::new(name, RECOVERY_MEMORY, 1, capabilities);
    for segment in plan.image.segments.iter().filter(|s| s.file_len > 0) {
        let bytes = usize::try_from(segment.offset)
            .ok()
            .zip(usize::try_from(segment.offset + segment.file_len).ok())
            .and_then(|(start, end)| module_image.get(start..end))
            .ok_or(Error::RangeOutsideModule)?;
        record
            .push(BuildStep::PopulateFromModule {
                module: module_index,
                module_name: module_name.clone(),
                module_offset: segment.offset,
                length: segment.file_len,
                gpa: segment.gpa,
                sha256: Some(Sha256::digest(bytes).into()),
            })
            .map_err(|_| Error::BuildRecordFull)?;
    }
    let entry = plan.entry();
    for step in [
        BuildRecord::write_step(plan.start_info_gpa, &plan.start_info),
        BuildStep::SetVcpuEntry { vcpu: 0, entry },
        BuildStep::AssignConsole,
        BuildStep::RequestStart { boot_order: 0 },
    ] {
        record.push(step).map_err(|_| Error::BuildRecordFull)?;
    }
    table.take_over_for_recovery(record, entry)
}

/// The recovery module of this boot: its index among the boot modules and its bytes (exactly
/// what is measured, planned and loaded).
#[derive(Clone, Copy, Debug)]
pub struct RecoveryModule<'a> {
    /// Index among the boot modules (`slipway_protocol::boot_modules`' order).
    pub index: usize,
    /// The module's bytes.
    pub image: &'a [u8],
}

/// The recovery options of this boot and what became of them; the hypervisor core
/// (`crate::hypervisor`) drives it: the watchdog from domB's start to its hand-off, recovery
/// entered at most once, the reason the recovery domain ran for.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryState<'a> {
    /// The module `recovery=` names, if any.
    pub module: Option<RecoveryModule<'a>>,
    /// domB's hand-off deadline in seconds (`domb_watchdog=`).
    pub watchdog_seconds: u64,
    /// The watchdog's TSC deadline, while armed.
    pub(crate) deadline: Option<u64>,
    /// Recovery was entered (it happens at most once).
    pub(crate) entered: bool,
    /// The recovery domain was started for this reason.
    pub(crate) ran: Option<DecisionReason>,
}

impl<'a> RecoveryState<'a> {
    /// The state for the command line's options, `image_of` giving a boot module's bytes by its
    /// index; an error (which refuses the boot) when an option is malformed or `recovery=` names
    /// no module of this boot.
    pub fn new<'c>(
        cmdline: &'c [u8],
        names: &[ModuleName],
        image_of: impl FnOnce(usize) -> &'a [u8],
    ) -> Result<Self, OptionError<'c>> {
        let options = parse_options(cmdline)?;
        let module = options.find_module(names)?.map(|index| RecoveryModule {
            index,
            image: image_of(index),
        });
        Ok(RecoveryState {
            module,
            watchdog_seconds: options.watchdog_seconds,
            deadline: None,
            entered: false,
            ran: None,
        })
    }

    /// The reason the recovery domain was started for, if it was.
    pub fn ran(&self) -> Option<DecisionReason> {
        self.ran
    }

    /// Whether the watchdog is armed (domB started and has not handed off or stopped).
    pub fn watchdog_armed(&self) -> bool {
        self.deadline.is_some()
    }
}

#[cfg(test)]
mod tests;
