//! Hypercall dispatch: decode a copied request, validate it, perform it through [`Platform`],
//! record it in the build record, and encode the response.
//!
//! The caller (the binary's exit handler) checks the transport registers with
//! `slipway_protocol::TransportStatus::check_buffer`, copies the request once from guest memory
//! into a hypervisor buffer, and passes that copy here: this module never sees guest memory, so a
//! second vCPU rewriting the buffer during the call changes nothing. Every check happens before
//! any effect, and every effect on a planned domain is recorded in its build record.

use crate::addr::PhysRange;
use crate::build_record::{BuildRecord, BuildStep};
use crate::domain::{Domain, DomainState, DomainTable, MAX_DOMAINS};
use slipway_measure::events::{
    DigestRule, EV_SLIPWAY_BOOT_MODULE, EV_SLIPWAY_LAUNCH_CONFIG, EV_SLIPWAY_POLICY,
    EV_SLIPWAY_POLICY_DECISION, EV_SLIPWAY_SLOT_CHOICE, PCR_BOOT_MODULES, PCR_BUILD_INPUTS,
    SlipwayEvent, SlotChoice,
};
use slipway_measure::hash::event_digests;
use slipway_protocol::EncodeError;
use slipway_protocol::platform::DomainRam;
use slipway_protocol::v1::{
    self, BootSummary, Capabilities, Digest, DomainId, Error, LaunchKind, ModuleInfo, ModuleName,
    Request, ResponseOk, TpmAlgId, TpmBanks,
};

/// The (PCR, event type) pairs domB may ask for (`docs/measurement.md`, section 4): the launch
/// configuration, the policy, policy decisions and the slot choice into PCR19, boot modules into
/// PCR20. Every other
/// Slipway event type (launch kind, command line, domB image, domain builds, separators) is the
/// hypervisor's own: a builder that could log one could make a verifier misread the log.
pub const BUILDER_EVENTS: [(u8, u32); 5] = [
    (PCR_BUILD_INPUTS as u8, EV_SLIPWAY_LAUNCH_CONFIG),
    (PCR_BUILD_INPUTS as u8, EV_SLIPWAY_POLICY),
    (PCR_BUILD_INPUTS as u8, EV_SLIPWAY_POLICY_DECISION),
    (PCR_BUILD_INPUTS as u8, EV_SLIPWAY_SLOT_CHOICE),
    (PCR_BOOT_MODULES as u8, EV_SLIPWAY_BOOT_MODULE),
];

/// A boot module as the hypervisor knows it after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootModule {
    /// Its name (first word of its multiboot2 command line).
    pub name: ModuleName,
    /// Where its bytes are in host-physical memory (`len()` is its size).
    pub phys: PhysRange,
    /// Where it is mapped read-only in domB.
    pub domb_gpa: u64,
}

/// Facts about the launch that queries report and measure requests are checked against.
#[derive(Clone, Copy, Debug)]
pub struct LaunchInfo<'a> {
    /// How the hypervisor was launched.
    pub launch_kind: LaunchKind,
    /// Active TPM banks (empty without a TPM).
    pub active_banks: &'a [TpmAlgId],
    /// Boot modules in multiboot2 order.
    pub modules: &'a [BootModule],
}

/// The effects the binary performs for the dispatcher. Each is called only after every check
/// passed; an `Err` is answered to the caller unchanged and nothing is recorded.
pub trait Platform {
    /// Takes everything a planned domain needs to start, while the builder can still react:
    /// zeroed memory, nested tables, a hardware context per vCPU, and what its capabilities
    /// bring (`capabilities`; e.g. the event-log windows of a control domain). Nothing is
    /// allocated for it after hand-off.
    fn create_domain(
        &mut self,
        id: DomainId,
        memory_bytes: u64,
        vcpus: u16,
        capabilities: Capabilities,
    ) -> Result<(), Error>;
    /// Copies `[offset, offset + length)` of `module` to `gpa` in domain `id` (ranges checked).
    fn populate_from_module(
        &mut self,
        id: DomainId,
        module: &BootModule,
        offset: u64,
        length: u64,
        gpa: u64,
    ) -> Result<(), Error>;
    /// SHA-256 of `[gpa, gpa + length)` in domain `id`, asked right after a successful
    /// [`Platform::populate_from_module`] and recorded with it (see
    /// [`crate::guest_memory::GuestMemory::sha256`]). Hashing costs time at boot (the software
    /// SHA-256 runs at roughly 0.2 GB/s), so it is the platform's choice; the default records none.
    fn populated_sha256(&mut self, id: DomainId, gpa: u64, length: u64) -> Option<[u8; 32]> {
        let _ = (id, gpa, length);
        None
    }
    /// Writes `bytes` at `gpa` in domain `id` (range checked).
    fn write_memory(&mut self, id: DomainId, gpa: u64, bytes: &[u8]) -> Result<(), Error>;
    /// Feeds `bytes` to the caller's console line buffer.
    fn console_write(&mut self, caller: DomainId, bytes: &[u8]);
    /// Extends `pcr` (19 or 20, checked) with the digests (one per active bank, checked) and
    /// appends the event; returns the event's index in the log.
    fn measure(
        &mut self,
        caller: DomainId,
        pcr: u8,
        event_type: u32,
        digests: &[Digest],
        event_data: &[u8],
    ) -> Result<u32, Error>;
    /// At hand-off, before anything irreversible, with every planned domain in creation order:
    /// their PCR21 build records and the separators, all or nothing
    /// ([`crate::measurement::Measurement::seal`]). An `Err` refuses the hand-off.
    fn seal_measurements(&mut self, planned: &[&Domain]) -> Result<(), Error>;
    /// domB measures that the policy program chose configuration slot `choice.to` over the
    /// requested one: called before the event is measured; an `Err` refuses the measurement
    /// ([`crate::boot_report::BootReport::slot_choice`]). The default refuses every choice
    /// (a platform without a boot record has one slot).
    fn slot_choice(&mut self, choice: SlotChoice) -> Result<(), Error> {
        let _ = choice;
        Err(Error::EventDataMalformed)
    }
    /// A control domain reports, after hand-off, that this boot succeeded: record the slot it
    /// used as known good in the boot record ([`crate::boot_report::BootReport::success`]).
    /// The default has no record.
    fn report_boot_success(&mut self, caller: DomainId) -> Result<(), Error> {
        let _ = caller;
        Err(Error::BootRecordUnavailable)
    }
}

/// What the vCPU that made the call does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the caller with the response.
    Resume,
    /// Hand-off happened: the table marked the caller (domB) destroyed and refuses builder
    /// requests from now on. The binary now destroys domB (tables, scrub, free), then starts
    /// `order[..count]` in that order, calling [`DomainTable::mark_started`] for each.
    HandedOff {
        /// Planned domains in ascending boot order.
        order: [DomainId; MAX_DOMAINS],
        /// How many entries of `order` are valid.
        count: usize,
    },
    /// The caller shut itself down (the table says so already): stop its vCPUs, release it.
    ShutDown {
        /// The exit code it gave.
        exit_code: u32,
    },
}

/// The result of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Length of the encoded response in the response buffer (write it to the guest page and
    /// return it in `rsi` when the caller is resumed).
    pub response_len: usize,
    /// What happens to the caller.
    pub outcome: Outcome,
}

/// Handles one request from `caller`. `request` is the hypervisor's own copy of the guest's
/// bytes; the encoded response is written into `response`.
pub fn dispatch<P: Platform>(
    table: &mut DomainTable,
    launch: &LaunchInfo<'_>,
    platform: &mut P,
    caller: DomainId,
    request: &[u8],
    response: &mut [u8],
) -> Result<Reply, EncodeError> {
    let (result, outcome) = match v1::decode_request(request) {
        Err(error) => (Err(Error::from(error)), Outcome::Resume),
        Ok(request) => handle(table, launch, platform, caller, &request),
    };
    let response_len = v1::encode_response(&result, response)?;
    Ok(Reply {
        response_len,
        outcome,
    })
}

fn handle<P: Platform>(
    table: &mut DomainTable,
    launch: &LaunchInfo<'_>,
    platform: &mut P,
    caller: DomainId,
    request: &Request,
) -> (Result<ResponseOk, Error>, Outcome) {
    let running = table
        .get(caller)
        .is_some_and(|d| d.state() == DomainState::Running);
    let builder = table.get(caller).is_some_and(|d| d.capabilities().builder);
    if !running {
        // Only a running vCPU can call; anything else is a binary bug, refused all the same.
        return (Err(Error::NotPermitted), Outcome::Resume);
    }
    if request.needs_builder() {
        if table.handed_off() {
            return (Err(Error::AfterHandOff), Outcome::Resume);
        }
        if !builder {
            return (Err(Error::NotPermitted), Outcome::Resume);
        }
    }
    match request {
        Request::HandOff => match hand_off(table, platform, caller) {
            Ok(outcome) => (Ok(ResponseOk::Done), outcome),
            Err(error) => (Err(error), Outcome::Resume),
        },
        Request::Shutdown { exit_code } => {
            // The caller is running (checked above), so the transition cannot fail.
            let _ = table.mark_shut_down(caller, *exit_code);
            (
                Ok(ResponseOk::Done),
                Outcome::ShutDown {
                    exit_code: *exit_code,
                },
            )
        }
        Request::ReportBootSuccess => {
            // A control domain, after hand-off: domB (before) has no control capability, and
            // the report means "the domains the plan started are up".
            let control = table
                .get(caller)
                .is_some_and(|d| d.capabilities().granted.control);
            if !control || !table.handed_off() {
                return (Err(Error::NotPermitted), Outcome::Resume);
            }
            (
                platform
                    .report_boot_success(caller)
                    .map(|()| ResponseOk::Done),
                Outcome::Resume,
            )
        }
        other => (
            perform(table, launch, platform, caller, other),
            Outcome::Resume,
        ),
    }
}

fn perform<P: Platform>(
    table: &mut DomainTable,
    launch: &LaunchInfo<'_>,
    platform: &mut P,
    caller: DomainId,
    request: &Request,
) -> Result<ResponseOk, Error> {
    match request {
        Request::QueryBootInfo => Ok(ResponseOk::BootInfo(BootSummary {
            launch_kind: launch.launch_kind,
            active_banks: TpmBanks::from_slice(launch.active_banks)
                .map_err(|_| Error::UnknownAlgorithm)?,
            module_count: launch.modules.len() as u16,
        })),
        Request::QueryModule { index } => {
            let module = launch
                .modules
                .get(usize::from(*index))
                .ok_or(Error::UnknownModule)?;
            Ok(ResponseOk::Module(ModuleInfo {
                name: module.name.clone(),
                size: module.phys.len(),
                gpa: module.domb_gpa,
            }))
        }
        Request::CreateDomain {
            name,
            memory_bytes,
            vcpus,
            capabilities,
        } => {
            // One TPM FIFO: two domains could interleave commands and read each other's answers.
            if capabilities.tpm && table.iter().any(|d| d.capabilities().granted.tpm) {
                return Err(Error::TpmAlreadyGranted);
            }
            let id = table.check_create(name, *memory_bytes, *vcpus)?;
            platform.create_domain(id, *memory_bytes, *vcpus, *capabilities)?;
            table.insert_planned(id, name.clone(), *memory_bytes, *vcpus, *capabilities);
            Ok(ResponseOk::DomainCreated(id))
        }
        Request::PopulateFromModule {
            domain,
            module,
            module_offset,
            length,
            gpa,
        } => {
            let target = recordable(table, *domain)?;
            let source = launch
                .modules
                .get(usize::from(*module))
                .ok_or(Error::UnknownModule)?;
            if module_offset
                .checked_add(*length)
                .is_none_or(|end| end > source.phys.len())
            {
                return Err(Error::RangeOutsideModule);
            }
            inside_domain(target, *gpa, *length)?;
            platform.populate_from_module(*domain, source, *module_offset, *length, *gpa)?;
            let sha256 = platform.populated_sha256(*domain, *gpa, *length);
            target_mut(table, *domain)?.record(BuildStep::PopulateFromModule {
                module: *module,
                module_name: source.name.clone(),
                module_offset: *module_offset,
                length: *length,
                gpa: *gpa,
                sha256,
            })?;
            Ok(ResponseOk::Done)
        }
        Request::WriteMemory { domain, gpa, bytes } => {
            let target = recordable(table, *domain)?;
            inside_domain(target, *gpa, bytes.len() as u64)?;
            platform.write_memory(*domain, *gpa, bytes)?;
            target_mut(table, *domain)?.record(BuildRecord::write_step(*gpa, bytes))?;
            Ok(ResponseOk::Done)
        }
        Request::SetVcpuState {
            domain,
            vcpu,
            entry,
        } => {
            recordable(table, *domain)?;
            let target = target_mut(table, *domain)?;
            target.set_vcpu_entry(*vcpu, *entry)?;
            target.record(BuildStep::SetVcpuEntry {
                vcpu: *vcpu,
                entry: *entry,
            })?;
            Ok(ResponseOk::Done)
        }
        Request::AssignConsole { domain } => {
            recordable(table, *domain)?;
            table.assign_console(*domain)?;
            target_mut(table, *domain)?.record(BuildStep::AssignConsole)?;
            Ok(ResponseOk::Done)
        }
        Request::RequestStart { domain, boot_order } => {
            recordable(table, *domain)?;
            table.request_start(*domain, *boot_order)?;
            target_mut(table, *domain)?.record(BuildStep::RequestStart {
                boot_order: *boot_order,
            })?;
            Ok(ResponseOk::Done)
        }
        Request::WriteConsole { bytes } => {
            platform.console_write(caller, bytes);
            Ok(ResponseOk::Done)
        }
        Request::Measure {
            pcr,
            event_type,
            digests,
            event_data,
        } => {
            // A PCR that no planned event goes into (not 19/20) is the PCR's fault; a planned
            // PCR with an event type not planned for it is the event type's.
            if !BUILDER_EVENTS.iter().any(|&(allowed, _)| allowed == *pcr) {
                return Err(Error::PcrNotAllowed);
            }
            if !BUILDER_EVENTS.contains(&(*pcr, *event_type)) {
                return Err(Error::EventTypeNotAllowed);
            }
            v1::check_digests(digests, launch.active_banks)?;
            check_event(launch, *event_type, digests, event_data)?;
            if let Ok(Some(SlipwayEvent::SlotChoice(choice))) =
                SlipwayEvent::decode(*event_type, event_data)
            {
                platform.slot_choice(choice)?;
            }
            let event_index = platform.measure(caller, *pcr, *event_type, digests, event_data)?;
            Ok(ResponseOk::Measured { event_index })
        }
        // Handled before; a future variant is refused rather than guessed at.
        _ => Err(Error::MalformedRequest),
    }
}

/// Checks a measure request's event against its digests: the data decodes as its type; for an
/// event whose digest is `H(event data)` the hypervisor recomputes it in every active bank and
/// refuses any difference (a caller cannot extend one thing and log another); a boot-module event
/// names a boot module and its exact size (its bound digest is domB's, which is measured itself).
fn check_event(
    launch: &LaunchInfo<'_>,
    event_type: u32,
    digests: &[Digest],
    data: &[u8],
) -> Result<(), Error> {
    let event = match SlipwayEvent::decode(event_type, data) {
        Ok(Some(event)) => event,
        _ => return Err(Error::EventDataMalformed),
    };
    // The recovery reasons are the hypervisor's own record of domB's failure: never domB's.
    if let SlipwayEvent::PolicyDecision(decision) = event
        && decision.reason.is_recovery()
    {
        return Err(Error::EventDataMalformed);
    }
    match (event.digest_rule(), event) {
        (DigestRule::EventData, _) => {
            let mut algs: heapless::Vec<slipway_measure::AlgId, { v1::MAX_BANKS }> =
                heapless::Vec::new();
            for &alg in launch.active_banks {
                algs.push(alg.into()).map_err(|_| Error::UnknownAlgorithm)?;
            }
            let banks =
                slipway_measure::BankSet::from_algs(&algs).map_err(|_| Error::UnknownAlgorithm)?;
            let expected = event_digests(&banks, data);
            for digest in digests {
                let computed = expected
                    .get(slipway_measure::AlgId::from(digest.alg))
                    .ok_or(Error::UnknownAlgorithm)?;
                if computed.as_bytes() != digest.bytes.as_slice() {
                    return Err(Error::DigestMismatch);
                }
            }
            Ok(())
        }
        (DigestRule::BoundModule, SlipwayEvent::BootModule(record)) => {
            let named = launch
                .modules
                .iter()
                .find(|m| m.name.as_bytes() == record.name);
            match named {
                Some(module) if module.phys.len() == record.size => Ok(()),
                _ => Err(Error::ModuleRecordMismatch),
            }
        }
        // Every other rule belongs to the hypervisor's own events, refused above already.
        _ => Err(Error::EventTypeNotAllowed),
    }
}

/// A planned domain whose build record has room for one more step.
fn recordable(table: &mut DomainTable, id: DomainId) -> Result<&Domain, Error> {
    let domain = table.planned_mut(id)?;
    if !domain.can_record() {
        // The record bounds a build; a plan needing more steps is refused before any effect.
        return Err(Error::BuildRecordFull);
    }
    Ok(domain)
}

fn target_mut(table: &mut DomainTable, id: DomainId) -> Result<&mut Domain, Error> {
    table.planned_mut(id)
}

/// `[gpa, gpa + length)` lies inside one of the domain's RAM ranges (`platform::DomainRam`):
/// never in the hole below 4 GiB (log windows, MMIO), never across it.
fn inside_domain(domain: &Domain, gpa: u64, length: u64) -> Result<(), Error> {
    match DomainRam::new(domain.memory_bytes()) {
        Some(ram) if ram.contains(gpa, length) => Ok(()),
        _ => Err(Error::RangeOutsideDomain),
    }
}

fn hand_off<P: Platform>(
    table: &mut DomainTable,
    platform: &mut P,
    builder: DomainId,
) -> Result<Outcome, Error> {
    table.check_plan()?;
    {
        let planned: heapless::Vec<&Domain, MAX_DOMAINS> = table
            .iter()
            .filter(|d| d.state() == DomainState::Planned)
            .collect();
        platform.seal_measurements(&planned)?;
    }
    let mut order = [DomainId(0); MAX_DOMAINS];
    let count = table.hand_off(builder, &mut order)?;
    Ok(Outcome::HandedOff { order, count })
}

#[cfg(test)]
mod tests;
