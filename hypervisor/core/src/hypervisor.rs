//! The arch-neutral hypervisor: every domain's life from creation to destruction, domB's
//! creation, the hand-off, scheduling and accounting, lazy FPU/debug-register ownership,
//! console input and the hypercall transport, over two small traits the binary implements:
//!
//! - [`Vcpus`]: the architecture backend's vCPUs (SVM: a VMCB each, VMX: a VMCS each), kept by
//!   the binary because a running vCPU is reached without the lock;
//! - [`Host`]: printing, the domain console queues, CPUID and the measurement reports.
//!
//! The recovery environment's life is here too (`hypervisor/recovery.rs`): the watchdog on domB,
//! and the recovery domain the hypervisor builds, seals and starts itself when domB stopped
//! without handing off (the decisions and the fixed plan are [`crate::recovery`]'s).
//!
//! Memory goes through [`PhysMemory`] and [`FrameAllocator`], so host tests run the whole life
//! of a domain against a fake machine (`hypervisor/tests.rs`).

use core::fmt;

use slipway_protocol::v1::{
    self, BootInfo, Digest, DomainId, Error, LaunchKind, ModuleInfo, ModuleName, TpmBanks,
    VcpuEntry,
};
use slipway_protocol::{HYPERCALL_BUFFER_SIZE, TransportStatus};

use crate::addr::{Frame, PAGE_SIZE, PhysAddr, PhysRange};
use crate::asid::AsidPool;
use crate::boot_report::{BootRecordState, slot_name};
use crate::console::{ConsoleMux, InputAction, Line, LineBuffer};
use crate::domain::{Domain, DomainTable, MAX_DOMAINS, StopReason};
use crate::exit_handler::{self, ExitAction};
use crate::frame_alloc::FrameAllocator;
use crate::guest_memory::GuestMemory;
use crate::hypercall::{self, LaunchInfo, Outcome};
use crate::lapic::{FixedClock, LocalApic};
use crate::log_window::{self, DOMAIN_LOG_FRAMES, WINDOW_FRAMES};
use crate::measurement::{Failure, Measurement, PcrExtend, Sealed};
use crate::memory::PhysMemory;
use crate::paging::{Access, PageTable, TableKind};
use crate::recovery::RecoveryState;
use crate::sched::{MAX_PCPUS, RunAccounting, Scheduler, VcpuRef};
use crate::uart::Uart16550;
use crate::vmexit::{Event, ExitCounts, Reg, VcpuBackend, VmExit};

/// vCPUs per domain.
pub const MAX_VCPUS: usize = 8;
/// Boot modules handled.
pub const MAX_MODULES: usize = slipway_protocol::boot_modules::MAX_BOOT_MODULES;
/// Longest module command line kept.
pub const MAX_MODULE_CMDLINE: usize = 256;
/// The TPM's locality-0 register page (guest-physical = host-physical in the domain holding the
/// tpm capability).
pub const TPM_LOCALITY0: u64 = slipway_protocol::platform::TPM_TIS_BASE;

/// A vCPU's initial state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// PVH: 32-bit flat protected mode, paging off, `rbx` = start-info address.
    Pvh32 {
        /// Entry point.
        rip: u64,
        /// Start-info address.
        rbx: u64,
    },
    /// 64-bit long mode with the guest's own page tables at `cr3`, `rsi` = argument.
    Long64 {
        /// Entry point.
        rip: u64,
        /// Stack pointer.
        rsp: u64,
        /// Guest page-table root.
        cr3: u64,
        /// Argument.
        rsi: u64,
    },
    /// An application processor waiting for INIT and a startup IPI (its local APIC says when
    /// it starts, and where: [`VcpuBackend::start_real_mode`]).
    WaitForStartupIpi,
}

impl From<VcpuEntry> for EntryState {
    fn from(entry: VcpuEntry) -> Self {
        match entry {
            VcpuEntry::Pvh32 {
                entry_eip,
                start_info_gpa,
            } => EntryState::Pvh32 {
                rip: u64::from(entry_eip),
                rbx: u64::from(start_info_gpa),
            },
            VcpuEntry::Long64 { rip, rsp, cr3, rsi } => EntryState::Long64 { rip, rsp, cr3, rsi },
            VcpuEntry::WaitForStartupIpi => EntryState::WaitForStartupIpi,
        }
    }
}

/// What a vCPU needs from the hardware, reserved with its domain (before hand-off, so nothing
/// is allocated for a planned domain afterwards): a tag (SVM: ASID, VMX: VPID) and one zeroed
/// frame (SVM: VMCB, VMX: VMCS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuContext {
    /// ASID or VPID (never 0).
    pub tag: u32,
    /// The zeroed control-structure frame.
    pub frame: Frame,
}

/// Everything the backend needs to create a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewVcpu {
    /// Its reserved context.
    pub context: VcpuContext,
    /// Root of the domain's second-level tables (nested page tables or EPT).
    pub table_root: u64,
    /// A number never given to another vCPU of this boot.
    pub serial: u64,
    /// Its initial state.
    pub entry: EntryState,
}

/// Where a vCPU lives: its domain's slot and its index in the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuSlot {
    /// Domain slot (= domain id).
    pub slot: usize,
    /// vCPU index.
    pub index: usize,
}

/// The architecture backend's vCPUs, as the core drives them. The core calls these only under
/// the hypervisor's lock and never for a vCPU it marked running.
pub trait Vcpus {
    /// Creates the vCPU at `at` over `new.context` (a zeroed frame it now owns).
    fn create(&mut self, at: VcpuSlot, new: NewVcpu) -> Result<(), Error>;
    /// Removes the vCPU at `at`, handing its context back (the core scrubs and frees it).
    fn destroy(&mut self, at: VcpuSlot) -> Option<VcpuContext>;
    /// Runs `f` with the vCPU at `at` bound to physical CPU `cpu`; `None` if there is none.
    fn with<R>(
        &mut self,
        cpu: usize,
        at: VcpuSlot,
        f: impl FnOnce(&mut dyn VcpuBackend) -> R,
    ) -> Option<R>;
    /// Makes `incoming`'s lazily switched state (x87/SSE, DR0-DR3: what the entry instruction
    /// does not switch) live on `cpu`, saving `outgoing`'s registers into it first (`None`:
    /// the registers belong to no live vCPU and are simply overwritten).
    fn switch_lazy_state(&mut self, cpu: usize, outgoing: Option<VcpuSlot>, incoming: VcpuSlot);
}

/// The platform services the core uses.
pub trait Host {
    /// The TPM behind the measurement, when there is one.
    type Pcrs: PcrExtend;
    /// Prints a hypervisor line.
    fn log(&mut self, message: fmt::Arguments<'_>);
    /// Prints a milestone (the harness's table).
    fn milestone(&mut self, name: fmt::Arguments<'_>);
    /// Opens the console queue of the domain in `slot`.
    fn console_open(&mut self, slot: usize);
    /// Whether `bytes` more bytes of the domain's output are within its rate.
    fn console_admit(&mut self, slot: usize, name: &str, bytes: usize) -> bool;
    /// Queues one finished line of the domain's output.
    fn console_line(&mut self, slot: usize, name: &str, line: &Line);
    /// Closes the domain's console queue (what is queued is still printed).
    fn console_close(&mut self, slot: usize, name: &str);
    /// CPUID on the physical CPU.
    fn host_cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Measurement has just failed (said once).
    fn measurement_failed(&mut self, failure: Failure);
    /// The hand-off was accepted: report how the log ended, release what the TPM needs released.
    fn measurement_sealed(&mut self, m: &mut Measurement<'_, Self::Pcrs>, sealed: Sealed);
    /// A recovery seal (no domain will quote): print the TPM's own PCR19-21, read back, so the
    /// run can be compared with `cargo xtask predict`. Called before
    /// [`Host::measurement_sealed`] (which may give up the locality the read needs).
    fn read_back_pcrs(&mut self, m: &mut Measurement<'_, Self::Pcrs>);
    /// Writes `record` into the TPM NV boot record for `caller`'s success report (the binary:
    /// at locality 2, taken back for this one write and released; never while another locality
    /// is in use). An error says why it was not written (and was printed); nothing changed in
    /// the record then.
    fn write_boot_record(
        &mut self,
        m: &mut Measurement<'_, Self::Pcrs>,
        caller: DomainId,
        record: &slipway_tpm::boot_record::BootRecord,
    ) -> Result<(), Error>;
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every domain finished after a complete hand-off.
    Success,
    /// The launch or a domain start failed.
    Failure,
}

/// A boot module as the hypervisor received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostModule {
    /// Its exact physical range.
    pub range: PhysRange,
    /// Its name (`slipway_protocol::boot_modules`).
    pub name: ModuleName,
    /// Its command line.
    pub cmdline: heapless::String<MAX_MODULE_CMDLINE>,
}

/// A domain's hardware side.
pub struct DomainHw {
    /// Its id (= slot).
    pub id: DomainId,
    /// Its name (set at start).
    pub name: heapless::String<32>,
    /// Its RAM.
    pub memory: GuestMemory,
    /// Its second-level tables.
    pub tables: PageTable,
    /// vCPUs created.
    pub vcpu_count: usize,
    /// Contexts reserved at creation: vCPU `i` takes `contexts[i]`.
    pub contexts: heapless::Vec<VcpuContext, MAX_VCPUS>,
    /// Serial number of each created vCPU.
    pub serials: [u64; MAX_VCPUS],
    /// The pCPU whose registers hold each vCPU's lazily switched state.
    pub lazy_live_on: [Option<usize>; MAX_VCPUS],
    /// The emulated COM1.
    pub uart: Uart16550,
    /// Output line being assembled.
    pub line: LineBuffer,
    /// Which vCPUs are on a physical CPU right now (the domain is destroyed only when none is).
    pub running: [bool; MAX_VCPUS],
    /// The domain has stopped; it is destroyed once no vCPU of it runs.
    pub dying: bool,
    /// Frames of the event-log windows (control domains), freed with the domain.
    pub log_frames: heapless::Vec<Frame, DOMAIN_LOG_FRAMES>,
    /// Console input is being dropped (said once per overrun).
    pub input_overrun: bool,
    /// Exception vectors already reported as reflected into this domain (bit n = vector n).
    pub reflected: u32,
    /// Each vCPU's local APIC (APIC ID = vCPU index).
    pub lapics: [LocalApic; MAX_VCPUS],
    /// Which vCPUs wait in HLT with their APIC enabled: they are not entered until an
    /// interrupt is deliverable.
    pub halted: [bool; MAX_VCPUS],
    /// Added to the host TSC for every vCPU of the domain: the domain's TSC runs behind the
    /// host's by the time hidden from it ([`DomainHw::tsc_frozen`]). One value for all its
    /// vCPUs, so their TSCs stay synchronized.
    pub tsc_offset: u64,
    /// The domain's clock as frozen by a PM-timer read of each vCPU: while a domain runs on one
    /// vCPU, a PM-timer read stops its clock (TSC and PM timer) until the vCPU's next exit for
    /// anything else (RDTSC exits meanwhile and is answered from it), each read advancing it
    /// by [`TSC_READ_STEP_NS`]; the clock then goes on from there, the time in between hidden
    /// (the offset shrinks). So a read takes the same short time in the guest's view as on
    /// hardware, where a booting kernel calibrating its TSC against the PM timer checks that
    /// it took under ~50 µs of TSC time; an exit under an emulator takes longer. Both clocks
    /// keep their rates, and the TSC the guest reads only ever moves forward.
    pub tsc_frozen: [Option<u64>; MAX_VCPUS],
    /// Startup IPIs the backend could not act on were reported (said once per domain).
    pub startup_refused: bool,
}

/// How far the frozen clock advances per PM-timer or TSC read ([`DomainHw::tsc_frozen`]): 1 µs.
pub const TSC_READ_STEP_NS: u64 = 1_000;

impl DomainHw {
    /// The domain's TSC at host TSC `host_now`.
    pub fn guest_tsc(&self, host_now: u64) -> u64 {
        host_now.wrapping_add(self.tsc_offset)
    }

    /// How many of its vCPUs run (have not been waiting for a startup IPI since creation).
    fn running_vcpus(&self) -> usize {
        self.lapics[..self.vcpu_count]
            .iter()
            .filter(|l| l.run_state() == crate::lapic::RunState::Running)
            .count()
    }
}

/// A vCPU's local APIC as the MMIO emulator's device: 32-bit registers at 16-byte offsets in
/// the page; other sizes read the register's bytes and do not write (undefined on hardware).
struct ApicDevice<'a> {
    lapic: &'a mut LocalApic,
    clock: FixedClock,
    /// The IPI a write to the ICR sent, for the caller to deliver.
    ipi: Option<crate::lapic::IpiRequest>,
}

impl crate::mmio::MmioDevice for ApicDevice<'_> {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        let offset = gpa & (crate::lapic::XAPIC_PAGE_SIZE - 1);
        let value = self.lapic.read(offset & !3, &self.clock);
        u64::from(value >> (8 * (offset & 3)))
            & if size >= 4 {
                u64::MAX
            } else {
                (1 << (8 * u32::from(size))) - 1
            }
    }

    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        let offset = gpa & (crate::lapic::XAPIC_PAGE_SIZE - 1);
        if size == 4 && offset & 3 == 0 {
            self.ipi = self.lapic.write(offset, value as u32, &self.clock);
        }
    }
}

/// TSC ticks per count of the local APIC timer before its divider: the timer runs at the TSC's
/// rate (guests calibrate it against the TSC, as Linux does).
pub const APIC_TIMER_TSC_TICKS: u64 = 1;

/// The vCPU whose lazily switched state a pCPU holds (its serial tells a reused cell apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LazyOwner {
    at: VcpuSlot,
    serial: u64,
}

/// The hypervisor's state after the post-launch stage.
pub struct Hypervisor<'a, M: PhysMemory, F: FrameAllocator, V: Vcpus, H: Host> {
    /// Physical memory.
    pub mem: M,
    /// Free frames.
    pub alloc: F,
    /// The architecture backend's vCPUs.
    pub vcpus: V,
    /// Platform services.
    pub host: H,
    /// Nested page tables (SVM) or EPT (VMX).
    pub table_kind: TableKind,
    /// With EPT: whether 2 MiB EPT pages may be used.
    pub ept_large_pages: bool,
    /// The run queues.
    pub sched: &'a mut Scheduler,
    /// Guest time per pCPU and domain.
    pub accounting: &'a mut RunAccounting,
    /// TSC ticks per scheduler tick.
    pub tick_tsc: u64,
    /// The TSC's rate (the binary's calibration), for the PM timer domains read; 0 until set.
    pub tsc_hz: u64,
    /// The TSC at the last [`Hypervisor::account_ticks`] (the time [`Hypervisor::pick`] judges
    /// halted vCPUs by).
    now: u64,
    /// Exits handled, by kind ([`ExitCounts`]).
    pub exit_counts: ExitCounts,
    ticks_seen: [u64; MAX_PCPUS],
    lazy_owner: [Option<LazyOwner>; MAX_PCPUS],
    /// What the launch was and the TPM's active banks.
    pub launch_kind: LaunchKind,
    /// Active TPM banks (empty without a TPM).
    pub active_banks: heapless::Vec<v1::TpmAlgId, 8>,
    /// The measurement, when there is a TPM.
    pub measurement: Option<Measurement<'a, H::Pcrs>>,
    /// The firmware's event log, if it published one.
    pub firmware_log: Option<&'a [u8]>,
    /// Serial input focus.
    pub mux: ConsoleMux,
    /// Set when the run is over.
    pub verdict: Option<Verdict>,
    /// Boot modules.
    pub modules: heapless::Vec<HostModule, MAX_MODULES>,
    /// The module domB is.
    pub domb_module: Option<usize>,
    /// Domain bookkeeping.
    pub table: &'a mut DomainTable,
    /// Hardware side of each domain.
    pub domains: &'a mut [Option<DomainHw>; MAX_DOMAINS],
    /// Free ASIDs/VPIDs.
    pub tags: AsidPool,
    next_vcpu_serial: u64,
    /// domB, once created.
    pub domb: Option<DomainId>,
    core_modules: heapless::Vec<hypercall::BootModule, MAX_MODULES>,
    announced: [bool; MAX_DOMAINS],
    start_failed: bool,
    exits: u64,
    /// The recovery environment: its module, domB's watchdog, whether it ran.
    pub recovery: RecoveryState<'a>,
    /// The TPM NV boot record's state for this boot (`crate::boot_report`).
    pub boot_record: BootRecordState,
}

/// What the binary hands the core at start.
pub struct Parts<'a, M, F, V, H: Host> {
    /// Physical memory.
    pub mem: M,
    /// Free frames.
    pub alloc: F,
    /// The backend's vCPUs.
    pub vcpus: V,
    /// Platform services.
    pub host: H,
    /// Second-level table format.
    pub table_kind: TableKind,
    /// With [`TableKind::Ept`]: whether the processor maps 2 MiB EPT pages.
    pub ept_large_pages: bool,
    /// ASIDs/VPIDs the hardware has (1..count are handed out).
    pub tag_count: u32,
    /// Run queues (sized later with [`Hypervisor::set_pcpus`]).
    pub sched: &'a mut Scheduler,
    /// Accounting storage.
    pub accounting: &'a mut RunAccounting,
    /// Domain bookkeeping storage.
    pub table: &'a mut DomainTable,
    /// Hardware-side storage.
    pub domains: &'a mut [Option<DomainHw>; MAX_DOMAINS],
    /// How the launch went.
    pub launch_kind: LaunchKind,
    /// Active TPM banks.
    pub active_banks: heapless::Vec<v1::TpmAlgId, 8>,
    /// The measurement, if any.
    pub measurement: Option<Measurement<'a, H::Pcrs>>,
    /// The firmware log, if any.
    pub firmware_log: Option<&'a [u8]>,
    /// Boot modules.
    pub modules: heapless::Vec<HostModule, MAX_MODULES>,
    /// The module domB is (`slipway_protocol::boot_modules::find_module`: the one lookup both
    /// its measurement and its start use).
    pub domb_module: Option<usize>,
    /// The recovery options (`recovery=`, `domb_watchdog=`) and the recovery module.
    pub recovery: RecoveryState<'a>,
    /// The boot record as counted before domB runs.
    pub boot_record: BootRecordState,
}

/// The hardware side of hypercalls: what `hypercall::dispatch` asks for after its checks.
struct Effects<'h, 'm, M, F, H: Host> {
    measurement: Option<&'h mut Measurement<'m, H::Pcrs>>,
    boot_record: &'h mut BootRecordState,
    host: &'h mut H,
    mem: &'h mut M,
    alloc: &'h mut F,
    tags: &'h mut AsidPool,
    domains: &'h mut [Option<DomainHw>; MAX_DOMAINS],
    table_kind: TableKind,
    ept_large_pages: bool,
}

fn domain_mut(
    domains: &mut [Option<DomainHw>; MAX_DOMAINS],
    id: DomainId,
) -> Result<&mut DomainHw, Error> {
    domains
        .get_mut(usize::from(id.0))
        .and_then(Option::as_mut)
        .ok_or(Error::UnknownDomain)
}

impl<M: PhysMemory, F: FrameAllocator, H: Host> hypercall::Platform for Effects<'_, '_, M, F, H> {
    fn create_domain(
        &mut self,
        id: DomainId,
        memory_bytes: u64,
        vcpus: u16,
        capabilities: v1::Capabilities,
    ) -> Result<(), Error> {
        if self
            .domains
            .get(usize::from(id.0))
            .is_none_or(Option::is_some)
        {
            return Err(Error::TooManyDomains);
        }
        let mut hw = allocate_domain(
            self.mem,
            self.alloc,
            self.tags,
            (self.table_kind, self.ept_large_pages),
            id,
            memory_bytes,
            usize::from(vcpus),
        )?;
        if let Err(error) = map_capability_pages(
            self.mem,
            self.alloc,
            &mut hw,
            capabilities,
            self.measurement.is_some(),
        ) {
            release_unstarted(self.mem, self.alloc, self.tags, hw);
            return Err(error);
        }
        self.host.console_open(usize::from(id.0));
        self.domains[usize::from(id.0)] = Some(hw);
        Ok(())
    }

    fn populate_from_module(
        &mut self,
        id: DomainId,
        module: &hypercall::BootModule,
        offset: u64,
        length: u64,
        gpa: u64,
    ) -> Result<(), Error> {
        let src = module
            .phys
            .start
            .checked_add(offset)
            .ok_or(Error::RangeOutsideModule)?;
        domain_mut(self.domains, id)?
            .memory
            .copy_from_host(self.mem, src, gpa, length)
            .map_err(|_| Error::RangeOutsideDomain)
    }

    fn populated_sha256(&mut self, id: DomainId, gpa: u64, length: u64) -> Option<[u8; 32]> {
        // Recorded in the build record (PCR21 in the measured launch): what the domain really
        // received, read back from its RAM. Loaded segments are small, so the cost is low.
        let domain = domain_mut(self.domains, id).ok()?;
        domain.memory.sha256(self.mem, gpa, length).ok()
    }

    fn write_memory(&mut self, id: DomainId, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        domain_mut(self.domains, id)?
            .memory
            .write(self.mem, gpa, bytes)
            .map_err(|_| Error::RangeOutsideDomain)
    }

    fn console_write(&mut self, caller: DomainId, bytes: &[u8]) {
        let slot = usize::from(caller.0);
        if let Ok(domain) = domain_mut(self.domains, caller) {
            // Over its rate a domain's bytes are dropped here, before any escaping.
            if !self.host.console_admit(slot, &domain.name, bytes.len()) {
                return;
            }
            for &byte in bytes {
                if let Some(line) = domain.line.push(byte) {
                    self.host.console_line(slot, &domain.name, &line);
                }
            }
        }
    }

    fn measure(
        &mut self,
        _caller: DomainId,
        pcr: u8,
        event_type: u32,
        digests: &[Digest],
        event_data: &[u8],
    ) -> Result<u32, Error> {
        // No TPM: nothing can be extended, and saying so is the only honest answer.
        let m = self.measurement.as_deref_mut().ok_or(Error::TpmFailed)?;
        let mut list = slipway_measure::DigestList::new();
        for digest in digests {
            let digest = slipway_measure::Digest::new(digest.alg.into(), &digest.bytes)
                .map_err(|_| Error::DigestLengthWrong)?;
            list.push(digest).map_err(|_| Error::DuplicateBank)?;
        }
        let before = m.failure();
        let result = m.measure(pcr, event_type, &list, event_data);
        if let (None, Some(failure)) = (before, m.failure()) {
            self.host.measurement_failed(failure);
        }
        result
    }

    fn seal_measurements(&mut self, planned: &[&Domain]) -> Result<(), Error> {
        let Some(m) = self.measurement.as_deref_mut() else {
            return Ok(());
        };
        let before = m.failure();
        let result = m.seal(planned);
        if let (None, Some(failure)) = (before, m.failure()) {
            self.host.measurement_failed(failure);
        }
        if let Err(error) = result {
            self.host.log(format_args!(
                "hand-off refused: measurement could not be sealed: {error}"
            ));
        }
        result.map(drop)
    }

    fn slot_choice(&mut self, choice: slipway_measure::events::SlotChoice) -> Result<(), Error> {
        let report = self
            .boot_record
            .report
            .as_mut()
            .ok_or(Error::EventDataMalformed)?;
        report.slot_choice(choice)?;
        self.host.log(format_args!(
            "boot record: the policy chose slot {} over the requested slot {}",
            slot_name(Some(choice.to)),
            slot_name(Some(choice.from))
        ));
        Ok(())
    }

    fn report_boot_success(&mut self, caller: DomainId) -> Result<(), Error> {
        let report = self
            .boot_record
            .report
            .as_mut()
            .ok_or(Error::BootRecordUnavailable)?;
        let failed = self
            .measurement
            .as_ref()
            .is_some_and(|m| m.failure().is_some());
        let updated = match report.success(failed) {
            Ok(updated) => updated,
            Err(error) => {
                self.host.log(format_args!(
                    "boot record: success report of domain {} refused: {error}",
                    caller.0
                ));
                return Err(error);
            }
        };
        let m = self
            .measurement
            .as_deref_mut()
            .ok_or(Error::BootRecordUnavailable)?;
        self.host.write_boot_record(m, caller, &updated)?;
        report.written(updated);
        self.host.log(format_args!(
            "boot record: domain {} reported a successful boot: slot {} is known good (attempts of slot {}: {})",
            caller.0,
            slot_name(Some(report.slot())),
            slot_name(Some(updated.current_slot)),
            updated.attempts
        ));
        Ok(())
    }
}

/// Scrubs and frees one frame; whether it went back.
fn scrub_and_free<M: PhysMemory, F: FrameAllocator>(
    mem: &mut M,
    alloc: &mut F,
    frame: Frame,
) -> bool {
    let _ = mem.zero_frame(frame);
    alloc.free(frame).is_ok()
}

/// Gives back what [`reserve_contexts`] took (frames scrubbed); returns frames freed.
fn release_contexts<M: PhysMemory, F: FrameAllocator>(
    mem: &mut M,
    alloc: &mut F,
    tags: &mut AsidPool,
    contexts: &mut heapless::Vec<VcpuContext, MAX_VCPUS>,
) -> u64 {
    let mut freed = 0;
    while let Some(context) = contexts.pop() {
        tags.give_back(context.tag);
        if scrub_and_free(mem, alloc, context.frame) {
            freed += 1;
        }
    }
    freed
}

/// Takes a tag and a zeroed frame for each of `vcpus` vCPUs, all or nothing.
fn reserve_contexts<M: PhysMemory, F: FrameAllocator>(
    mem: &mut M,
    alloc: &mut F,
    tags: &mut AsidPool,
    vcpus: usize,
) -> Result<heapless::Vec<VcpuContext, MAX_VCPUS>, Error> {
    if vcpus > MAX_VCPUS {
        return Err(Error::TooManyVcpus);
    }
    let mut ids = [0u32; MAX_VCPUS];
    tags.take(vcpus, &mut ids[..vcpus])
        .map_err(|_| Error::NoVcpuContext)?;
    let mut contexts = heapless::Vec::new();
    for (i, &tag) in ids[..vcpus].iter().enumerate() {
        let frame = alloc.allocate().ok().filter(|frame| {
            if mem.zero_frame(*frame).is_ok() {
                true
            } else {
                let _ = alloc.free(*frame);
                false
            }
        });
        let Some(frame) = frame else {
            release_contexts(mem, alloc, tags, &mut contexts);
            for &unused in &ids[i..vcpus] {
                tags.give_back(unused);
            }
            return Err(Error::OutOfMemory);
        };
        // Cannot fail: at most MAX_VCPUS (checked above).
        let _ = contexts.push(VcpuContext { tag, frame });
    }
    Ok(contexts)
}

/// Maps what a planned domain's capabilities bring, at creation (before hand-off): the two
/// event-log windows of a control domain (zeroed frames, read-only, filled at start) and, for
/// the domain with the tpm capability when there is a TPM, the TPM's locality-0 register page
/// (uncached; localities 1-4 stay unmapped, so it can never extend PCR17-22).
fn map_capability_pages<M: PhysMemory, F: FrameAllocator>(
    mem: &mut M,
    alloc: &mut F,
    hw: &mut DomainHw,
    capabilities: v1::Capabilities,
    has_tpm: bool,
) -> Result<(), Error> {
    if capabilities.control {
        for gpa in [v1::SLIPWAY_LOG_GPA, v1::FIRMWARE_LOG_GPA] {
            log_window::map_window(mem, alloc, &mut hw.tables, gpa, None, &mut hw.log_frames)
                .map_err(|_| Error::OutOfMemory)?;
        }
    }
    if capabilities.tpm && has_tpm {
        hw.tables
            .map_range(
                mem,
                alloc,
                TPM_LOCALITY0,
                PhysAddr(TPM_LOCALITY0),
                PAGE_SIZE,
                Access::MMIO,
                false,
            )
            .map_err(|_| Error::OutOfMemory)?;
    }
    Ok(())
}

/// Frees a domain that never ran: contexts, log frames, tables, memory (scrubbed); pages freed.
fn release_unstarted<M: PhysMemory, F: FrameAllocator>(
    mem: &mut M,
    alloc: &mut F,
    tags: &mut AsidPool,
    mut hw: DomainHw,
) -> u64 {
    let mut pages = release_contexts(mem, alloc, tags, &mut hw.contexts);
    for frame in hw.log_frames.iter().copied() {
        if scrub_and_free(mem, alloc, frame) {
            pages += 1;
        }
    }
    let _ = hw.tables.teardown(mem, alloc);
    pages + hw.memory.scrub_and_free(mem, alloc).unwrap_or(0)
}

/// Allocates zeroed RAM, second-level tables and the vCPU contexts for a domain (everything
/// given back on failure).
fn allocate_domain<M: PhysMemory, F: FrameAllocator>(
    mem: &mut M,
    alloc: &mut F,
    tags: &mut AsidPool,
    (kind, ept_large_pages): (TableKind, bool),
    id: DomainId,
    memory_bytes: u64,
    vcpus: usize,
) -> Result<DomainHw, Error> {
    let mut contexts = reserve_contexts(mem, alloc, tags, vcpus)?;
    let release = |mem: &mut M, alloc: &mut F, tags: &mut AsidPool, contexts: &mut _| {
        release_contexts(mem, alloc, tags, contexts);
        Err(Error::OutOfMemory)
    };
    let Ok(memory) = GuestMemory::allocate(alloc, memory_bytes) else {
        return release(mem, alloc, tags, &mut contexts);
    };
    if memory.zero(mem).is_err() {
        let _ = memory.scrub_and_free(mem, alloc);
        return release(mem, alloc, tags, &mut contexts);
    }
    let new_tables = match kind {
        TableKind::Ept => PageTable::new_ept(mem, alloc, ept_large_pages),
        kind => PageTable::new(kind, mem, alloc),
    };
    let mut tables = match new_tables {
        Ok(tables) => tables,
        Err(_) => {
            let _ = memory.scrub_and_free(mem, alloc);
            return release(mem, alloc, tags, &mut contexts);
        }
    };
    if memory.map_into(&mut tables, mem, alloc).is_err()
        || crate::paging::check_tables(mem, tables.root(), kind).is_err()
    {
        let _ = tables.teardown(mem, alloc);
        let _ = memory.scrub_and_free(mem, alloc);
        return release(mem, alloc, tags, &mut contexts);
    }
    Ok(DomainHw {
        id,
        name: heapless::String::new(),
        memory,
        tables,
        vcpu_count: 0,
        contexts,
        serials: [0; MAX_VCPUS],
        lazy_live_on: [None; MAX_VCPUS],
        uart: Uart16550::default(),
        line: LineBuffer::new(),
        running: [false; MAX_VCPUS],
        dying: false,
        log_frames: heapless::Vec::new(),
        input_overrun: false,
        reflected: 0,
        lapics: core::array::from_fn(|i| LocalApic::new(i as u8, APIC_TIMER_TSC_TICKS, true)),
        halted: [false; MAX_VCPUS],
        tsc_offset: 0,
        tsc_frozen: [None; MAX_VCPUS],
        startup_refused: false,
    })
}

/// Guest-physical layout of domB's top pages.
struct DombLayout {
    start_info: u64,
    boot_info: u64,
    buffer: u64,
}

impl DombLayout {
    fn for_memory(memory_bytes: u64) -> Option<Self> {
        Some(Self {
            start_info: memory_bytes.checked_sub(3 * PAGE_SIZE)?,
            boot_info: memory_bytes.checked_sub(4 * PAGE_SIZE)?,
            buffer: memory_bytes.checked_sub(5 * PAGE_SIZE)?,
        })
    }
}

impl<'a, M: PhysMemory, F: FrameAllocator, V: Vcpus, H: Host> Hypervisor<'a, M, F, V, H> {
    /// The core over the binary's parts, with one pCPU until [`Hypervisor::set_pcpus`].
    pub fn new(parts: Parts<'a, M, F, V, H>) -> Self {
        Self {
            mem: parts.mem,
            alloc: parts.alloc,
            vcpus: parts.vcpus,
            host: parts.host,
            table_kind: parts.table_kind,
            ept_large_pages: parts.ept_large_pages,
            sched: parts.sched,
            accounting: parts.accounting,
            tick_tsc: 1,
            tsc_hz: 0,
            now: 0,
            exit_counts: ExitCounts::default(),
            ticks_seen: [0; MAX_PCPUS],
            lazy_owner: [None; MAX_PCPUS],
            launch_kind: parts.launch_kind,
            active_banks: parts.active_banks,
            measurement: parts.measurement,
            firmware_log: parts.firmware_log,
            mux: ConsoleMux::default(),
            verdict: None,
            modules: parts.modules,
            domb_module: parts.domb_module,
            table: parts.table,
            domains: parts.domains,
            tags: AsidPool::new(parts.tag_count),
            next_vcpu_serial: 1,
            domb: None,
            core_modules: heapless::Vec::new(),
            announced: [false; MAX_DOMAINS],
            start_failed: false,
            exits: 0,
            recovery: parts.recovery,
            boot_record: parts.boot_record,
        }
    }

    /// Sizes the scheduler and the accounting for `pcpus` physical CPUs, each tick `tick_tsc`
    /// TSC ticks long.
    pub fn set_pcpus(&mut self, pcpus: usize, slice_ticks: u32, tick_tsc: u64) {
        *self.sched = Scheduler::new(pcpus, slice_ticks);
        *self.accounting = RunAccounting::new(pcpus);
        self.tick_tsc = tick_tsc.max(1);
    }

    /// Exits handled so far (every backend, every pCPU).
    pub fn exits(&self) -> u64 {
        self.exits
    }

    /// Whether a planned domain could not be started after hand-off.
    pub fn start_failed(&self) -> bool {
        self.start_failed
    }

    fn create_vcpu(&mut self, id: DomainId, entry: EntryState) -> Result<(), Error> {
        let slot = usize::from(id.0);
        let domain = self.domains[slot].as_mut().ok_or(Error::UnknownDomain)?;
        // Its context was reserved when the domain was created (before hand-off).
        let index = domain.vcpu_count;
        let context = *domain.contexts.get(index).ok_or(Error::TooManyVcpus)?;
        let serial = self.next_vcpu_serial;
        self.next_vcpu_serial += 1;
        self.vcpus.create(
            VcpuSlot { slot, index },
            NewVcpu {
                context,
                table_root: domain.tables.root().start().0,
                serial,
                entry,
            },
        )?;
        domain.serials[index] = serial;
        domain.lazy_live_on[index] = None;
        // An application processor waits for its startup IPI; every other vCPU runs.
        let runs = entry != EntryState::WaitForStartupIpi;
        domain.lapics[index] = LocalApic::new(index as u8, APIC_TIMER_TSC_TICKS, runs);
        domain.vcpu_count += 1;
        Ok(())
    }

    /// Creates domB from `image` (the bytes of the module named `domb`): PVH ELF loaded into its
    /// RAM, every module mapped read-only above its RAM, boot-information page and start info at
    /// the top of its RAM, its one vCPU queued on pCPU 0 with the console focus.
    pub fn create_domb(
        &mut self,
        image: &[u8],
        memory_bytes: u64,
        cmdline: &str,
    ) -> Result<DomainId, &'static str> {
        let index = self.domb_module.ok_or("no boot module named `domb`")?;
        // domB's RAM is one range below the hole (its modules are mapped right above it).
        if memory_bytes > slipway_protocol::platform::DOMAIN_RAM_HOLE_START {
            return Err("domB memory larger than 3 GiB (the domain memory hole's start)");
        }
        let layout = DombLayout::for_memory(memory_bytes).ok_or("domB memory too small")?;
        let plan = crate::pvh::plan(image, layout.buffer).map_err(|e| {
            self.host.log(format_args!("domb: image refused: {e}"));
            "domB image is not a loadable PVH ELF"
        })?;
        let id = self
            .table
            .create_boot_domain(memory_bytes, 1)
            .map_err(|_| "domain table refused domB")?;
        let mut hw = allocate_domain(
            &mut self.mem,
            &mut self.alloc,
            &mut self.tags,
            (self.table_kind, self.ept_large_pages),
            id,
            memory_bytes,
            1,
        )
        .map_err(|_| "out of memory for domB")?;
        let _ = hw.name.push_str("domb");
        self.host.console_open(usize::from(id.0));
        let slot = usize::from(id.0);
        self.domains[slot] = Some(hw);
        let result = self.load_domb(slot, index, &plan, &layout, memory_bytes, cmdline);
        if let Err(why) = result {
            if let Some(hw) = self.domains[slot].take() {
                release_unstarted(&mut self.mem, &mut self.alloc, &mut self.tags, hw);
            }
            self.core_modules.clear();
            let _ = self.table.mark_crashed(id, StopReason::InvalidState);
            return Err(why);
        }
        self.create_vcpu(
            id,
            EntryState::Pvh32 {
                rip: u64::from(plan.entry),
                rbx: layout.start_info,
            },
        )
        .map_err(|_| "creating domB's vCPU failed")?;
        self.sched
            .add_to(
                0,
                VcpuRef {
                    domain: id,
                    vcpu: 0,
                },
            )
            .map_err(|_| "queueing domB's vCPU failed")?;
        self.domb = Some(id);
        self.mux.set_focus(Some(id));
        self.host.log(format_args!(
            "domb: {} KiB RAM, entry {:#x}, {} modules mapped read-only at {:#x}",
            memory_bytes >> 10,
            plan.entry,
            self.modules.len(),
            memory_bytes
        ));
        Ok(id)
    }

    fn load_domb(
        &mut self,
        slot: usize,
        index: usize,
        plan: &crate::pvh::PvhImage,
        layout: &DombLayout,
        memory_bytes: u64,
        cmdline: &str,
    ) -> Result<(), &'static str> {
        let domain = self.domains[slot].as_mut().ok_or("domB vanished")?;
        for segment in &plan.segments {
            let src = PhysAddr(self.modules[index].range.start.0 + segment.offset);
            domain
                .memory
                .copy_from_host(&mut self.mem, src, segment.gpa, segment.file_len)
                .map_err(|_| "copying domB's segments failed")?;
        }
        // Modules above RAM, read-only, page-aligned, in multiboot2 order.
        let mut module_gpas = [0u64; MAX_MODULES];
        let mut gpa = memory_bytes;
        for (i, module) in self.modules.iter().enumerate() {
            let pages = module.range.len().div_ceil(PAGE_SIZE) * PAGE_SIZE;
            domain
                .tables
                .map_range(
                    &mut self.mem,
                    &mut self.alloc,
                    gpa,
                    module.range.start,
                    pages,
                    Access::R,
                    false,
                )
                .map_err(|_| "mapping a module into domB failed")?;
            module_gpas[i] = gpa;
            self.core_modules
                .push(hypercall::BootModule {
                    name: module.name.clone(),
                    phys: module.range,
                    domb_gpa: gpa,
                })
                .map_err(|_| "more boot modules than the dispatcher holds")?;
            gpa += pages;
        }
        // Boot-information page (postcard BootInfo) and the PVH start info.
        let mut modules = heapless::Vec::<ModuleInfo, { v1::MAX_BOOT_MODULES }>::new();
        for (i, module) in self.modules.iter().enumerate() {
            modules
                .push(ModuleInfo {
                    name: module.name.clone(),
                    size: module.range.len(),
                    gpa: module_gpas[i],
                })
                .map_err(|_| "more boot modules than BootInfo lists")?;
        }
        let boot_info = BootInfo {
            launch_kind: self.launch_kind,
            active_banks: TpmBanks::from_slice(&self.active_banks)
                .map_err(|_| "too many TPM banks for BootInfo")?,
            modules: slipway_protocol::BoundedVec::from_slice(&modules)
                .map_err(|_| "too many modules for BootInfo")?,
            hypercall_buffer_gpa: layout.buffer,
            boot_state: self.boot_record.info,
        };
        let mut page = [0u8; 4096];
        let boot_info_len = v1::encode_boot_info(&boot_info, &mut page)
            .map_err(|_| "BootInfo does not fit a page")?;
        domain
            .memory
            .write(&mut self.mem, layout.boot_info, &page[..boot_info_len])
            .map_err(|_| "writing BootInfo failed")?;
        let mut start_modules =
            heapless::Vec::<crate::start_info::StartModule<'_>, { MAX_MODULES + 1 }>::new();
        let _ = start_modules.push(crate::start_info::StartModule {
            gpa: layout.boot_info,
            size: boot_info_len as u64,
            cmdline: "bootinfo",
        });
        for (i, module) in self.modules.iter().enumerate() {
            let _ = start_modules.push(crate::start_info::StartModule {
                gpa: module_gpas[i],
                size: module.range.len(),
                cmdline: &module.cmdline,
            });
        }
        let memmap = [
            (0, memory_bytes, crate::start_info::MEMMAP_RAM),
            (
                memory_bytes,
                gpa - memory_bytes,
                crate::start_info::MEMMAP_RESERVED,
            ),
        ];
        let mut area = [0u8; 3 * 4096];
        let len = crate::start_info::build(
            &mut area,
            layout.start_info,
            cmdline,
            &start_modules,
            &memmap,
        )
        .map_err(|_| "domB start info does not fit 12 KiB")?;
        domain
            .memory
            .write(&mut self.mem, layout.start_info, &area[..len])
            .map_err(|_| "writing start info failed")?;
        Ok(())
    }

    /// Under the lock: the next vCPU for physical CPU `cpu`, marked running (its domain is not
    /// destroyed until [`Hypervisor::after_exit`] clears the mark), its lazily switched state
    /// made live on `cpu`.
    pub fn pick(&mut self, cpu: usize) -> Option<VcpuRef> {
        // Halted vCPUs are passed over (to the back of the queue) at most this often per call.
        let mut passed_over = 0;
        loop {
            let v = self.sched.pick(cpu)?;
            let slot = usize::from(v.domain.0);
            let Some(domain) = self.domains.get_mut(slot).and_then(Option::as_mut) else {
                self.sched.remove(v);
                continue;
            };
            let index = usize::from(v.vcpu);
            if domain.dying || index >= domain.vcpu_count || domain.running[index] {
                self.sched.remove(v);
                continue;
            }
            if domain.lapics[index].run_state() == crate::lapic::RunState::WaitForSipi {
                // Not started yet: waits for its startup IPI, queued but never entered.
                self.sched.yield_now(cpu);
                passed_over += 1;
                if passed_over > crate::sched::MAX_QUEUED {
                    return None;
                }
                continue;
            }
            if domain.halted[index] {
                let guest_now = domain.guest_tsc(self.now);
                let lapic = &mut domain.lapics[index];
                lapic.poll_timer(&FixedClock(guest_now));
                if lapic.pending_vector().is_none() {
                    self.sched.yield_now(cpu);
                    passed_over += 1;
                    if passed_over > crate::sched::MAX_QUEUED {
                        return None;
                    }
                    continue;
                }
                domain.halted[index] = false;
            }
            domain.running[index] = true;
            self.switch_lazy_state(cpu, VcpuSlot { slot, index });
            return Some(v);
        }
    }

    /// Makes `at`'s x87/SSE state and DR0-DR3 the live ones on `cpu`. Nothing happens when `cpu`
    /// last ran it (the hypervisor never touches those registers); otherwise the previous owner's
    /// registers are saved into it (unless it is gone or running elsewhere) and `at`'s loaded.
    fn switch_lazy_state(&mut self, cpu: usize, at: VcpuSlot) {
        let Some(domain) = self.domains[at.slot].as_mut() else {
            return;
        };
        let serial = domain.serials[at.index];
        match domain.lazy_live_on[at.index] {
            Some(live) if live == cpu => return,
            // The scheduler never migrates a vCPU; if it ever does, it must save the state on
            // the old pCPU first.
            Some(live) => panic!(
                "vCPU {} of domain slot {} picked on cpu {cpu} while its FPU state is live on cpu {live}",
                at.index, at.slot
            ),
            None => {}
        }
        let outgoing = self.lazy_owner[cpu].take().and_then(|old| {
            if old.at == at {
                return None;
            }
            let previous = self.domains[old.at.slot].as_mut()?;
            let valid = old.at.index < previous.vcpu_count
                && previous.serials[old.at.index] == old.serial
                && !previous.running[old.at.index];
            valid.then(|| {
                previous.lazy_live_on[old.at.index] = None;
                old.at
            })
        });
        self.vcpus.switch_lazy_state(cpu, outgoing, at);
        if let Some(domain) = self.domains[at.slot].as_mut() {
            domain.lazy_live_on[at.index] = Some(cpu);
        }
        self.lazy_owner[cpu] = Some(LazyOwner { at, serial });
    }

    /// Under the lock: accounts the timer ticks `cpu` has seen up to `total_ticks`, at TSC `now`.
    pub fn account_ticks(
        &mut self,
        cpu: usize,
        running: Option<DomainId>,
        total_ticks: u64,
        now: u64,
    ) {
        self.now = self.now.max(now);
        while self.ticks_seen[cpu] < total_ticks {
            self.ticks_seen[cpu] += 1;
            let period = now / self.tick_tsc;
            self.accounting.record_tick(cpu, period, running);
            self.sched.tick(cpu);
        }
    }

    /// Under the lock: handles the exit of vCPU `v` that ran on `cpu` for `tsc_ticks`
    /// (`total_ticks` and `now` as for [`Hypervisor::account_ticks`]).
    pub fn after_exit(
        &mut self,
        cpu: usize,
        v: VcpuRef,
        exit: VmExit,
        tsc_ticks: u64,
        total_ticks: u64,
        now: u64,
    ) {
        let slot = usize::from(v.domain.0);
        let index = usize::from(v.vcpu);
        self.exits += 1;
        let step = self.tsc_read_step();
        self.accounting.charge(cpu, v.domain, tsc_ticks);
        self.account_ticks(cpu, Some(v.domain), total_ticks, now);
        let Some(domain) = self.domains[slot].as_mut() else {
            return;
        };
        domain.running[index] = false;
        if domain.dying {
            self.reap(slot);
            return;
        }
        self.exit_counts.count(&exit);
        let pm_read = matches!(exit, VmExit::IoIn { port, size, .. }
            if crate::pm_timer::reads_pm_timer(port, size));
        let pm_tsc = if pm_read && domain.running_vcpus() <= 1 {
            let frozen = domain.tsc_frozen[index]
                .map_or_else(|| domain.guest_tsc(now), |f| f.wrapping_add(step));
            domain.tsc_frozen[index] = Some(frozen);
            frozen
        } else {
            // Any other exit (RDTSC aside, answered below) thaws a frozen clock.
            if exit != VmExit::Rdtsc
                && let Some(frozen) = domain.tsc_frozen[index].take()
            {
                domain.tsc_offset = frozen.wrapping_add(step).wrapping_sub(now);
            }
            domain.guest_tsc(now)
        };
        // Only a PM-timer read shows the count: no 128-bit division on the other exits.
        let pm_timer = if pm_read {
            crate::pm_timer::count(pm_tsc, self.tsc_hz)
        } else {
            0
        };
        let DomainHw {
            uart,
            line,
            name,
            lapics,
            ..
        } = domain;
        let host = &mut self.host;
        let action = self.vcpus.with(cpu, VcpuSlot { slot, index }, |vcpu| {
            let mut console_bytes = heapless::Vec::<u8, 16>::new();
            let mut console = |byte: u8| {
                let _ = console_bytes.push(byte);
            };
            let mut cpuid = |leaf: u32, subleaf: u32| host.host_cpuid(leaf, subleaf);
            let mut devices = exit_handler::Devices {
                uart,
                lapic: &mut lapics[index],
                pm_timer,
            };
            let action =
                exit_handler::handle_exit(exit, vcpu, &mut devices, &mut console, &mut cpuid);
            (action, console_bytes)
        });
        let Some((action, console_bytes)) = action else {
            return;
        };
        for byte in console_bytes {
            if !self.host.console_admit(slot, name, 1) {
                continue;
            }
            if let Some(done) = line.push(byte) {
                self.host.console_line(slot, name, &done);
            }
        }
        match action {
            ExitAction::Resume | ExitAction::Preempt => {}
            ExitAction::Reflected { vector } => {
                if let Some(domain) = self.domains[slot].as_mut()
                    && domain.reflected & (1 << vector) == 0
                {
                    domain.reflected |= 1 << vector;
                    self.host.log(format_args!(
                        "domain {}: intercepted exception vector {vector} reflected into the guest (reported once)",
                        domain.name
                    ));
                }
            }
            ExitAction::Halt => self.halt(cpu, VcpuSlot { slot, index }, now),
            ExitAction::Rdtsc => self.rdtsc(cpu, VcpuSlot { slot, index }, now),
            ExitAction::PowerOff => self.shut_down(slot, 0, "powered off (ACPI S5)"),
            ExitAction::ApicAccess { gpa, write } => {
                self.apic_access(cpu, VcpuSlot { slot, index }, gpa, write, now)
            }
            ExitAction::Hypercall => self.hypercall(cpu, VcpuSlot { slot, index }),
            ExitAction::Stop(reason) => self.stop(cpu, VcpuSlot { slot, index }, reason),
        }
    }

    /// The domain in `slot` ended itself (`how`: "shut down", ...) with `exit_code`; the
    /// domain table already says so for a shutdown hypercall, and is told here otherwise.
    fn shut_down(&mut self, slot: usize, exit_code: u32, how: &str) {
        let id = DomainId(slot as u16);
        if let Some(domain) = self.table.get(id)
            && domain.state() == crate::domain::DomainState::Running
        {
            let _ = self.table.mark_shut_down(id, exit_code);
        }
        if let Some(domain) = self.domains[slot].as_mut() {
            self.host.log(format_args!(
                "domain {} {how} (exit code {exit_code})",
                domain.name
            ));
            domain.dying = true;
        }
        self.sched.remove_domain(id);
        self.reap(slot);
    }

    /// HLT: a vCPU whose APIC is enabled sleeps until an interrupt is deliverable ([`Self::pick`]
    /// passes it over until then); one without (a guest that takes no interrupts) gives up its
    /// slice and runs on after the HLT when its turn comes again, as before interrupts existed.
    fn halt(&mut self, cpu: usize, at: VcpuSlot, now: u64) {
        if let Some(domain) = self.domains[at.slot].as_mut() {
            let guest_now = domain.guest_tsc(now);
            let lapic = &mut domain.lapics[at.index];
            lapic.poll_timer(&FixedClock(guest_now));
            if lapic.software_enabled() && lapic.pending_vector().is_none() {
                domain.halted[at.index] = true;
            }
        }
        self.sched.yield_now(cpu);
    }

    /// The frozen clock's step per read, in TSC ticks.
    fn tsc_read_step(&self) -> u64 {
        (self.tsc_hz / (1_000_000_000 / TSC_READ_STEP_NS)).max(1)
    }

    /// An intercepted RDTSC: answered from the frozen clock, which thaws (the domain's TSC goes
    /// on from the answer), else from the domain's TSC.
    fn rdtsc(&mut self, cpu: usize, at: VcpuSlot, now: u64) {
        let step = self.tsc_read_step();
        let Some(domain) = self.domains[at.slot].as_mut() else {
            return;
        };
        let value = match domain.tsc_frozen[at.index].take() {
            Some(frozen) => {
                let value = frozen.wrapping_add(step);
                domain.tsc_offset = value.wrapping_sub(now);
                value
            }
            None => domain.guest_tsc(now),
        };
        self.vcpus.with(cpu, at, |vcpu| {
            vcpu.set_reg(Reg::Rax, value & 0xffff_ffff);
            vcpu.set_reg(Reg::Rdx, value >> 32);
            vcpu.advance_rip(2);
        });
    }

    /// Under the lock, right after [`Self::pick`] gave `v` to `cpu`, at TSC `now`: delivers its
    /// APIC timer's due expiry and injects the highest deliverable interrupt, or asks for an
    /// interrupt window while the guest cannot take it (interrupts masked, a shadow, or an
    /// exception queued first).
    pub fn prepare_entry(&mut self, cpu: usize, v: VcpuRef, now: u64) {
        let at = VcpuSlot {
            slot: usize::from(v.domain.0),
            index: usize::from(v.vcpu),
        };
        let Some(domain) = self.domains[at.slot].as_mut() else {
            return;
        };
        let frozen = domain.tsc_frozen[at.index];
        let tsc_offset = domain.tsc_offset;
        let guest_now = domain.guest_tsc(now);
        let lapic = &mut domain.lapics[at.index];
        lapic.poll_timer(&FixedClock(guest_now));
        self.vcpus.with(cpu, at, |vcpu| {
            vcpu.set_tsc_offset(tsc_offset);
            vcpu.set_rdtsc_exiting(frozen.is_some());
            if lapic.pending_vector().is_none() {
                vcpu.set_interrupt_window(false);
            } else if vcpu.interrupt_ready() {
                if let Some(vector) = lapic.acknowledge() {
                    vcpu.inject(Event::Interrupt { vector });
                }
                vcpu.set_interrupt_window(false);
            } else {
                vcpu.set_interrupt_window(true);
            }
        });
    }

    /// An access to the local APIC page: the instruction is decoded from guest memory and
    /// performed against the vCPU's APIC; an IPI it sends reaches the domain's other vCPUs. An
    /// instruction that cannot be emulated stops the domain.
    fn apic_access(&mut self, cpu: usize, at: VcpuSlot, gpa: u64, write: bool, now: u64) {
        let Some(domain) = self.domains[at.slot].as_mut() else {
            return;
        };
        let DomainHw { memory, lapics, .. } = domain;
        let mem = &self.mem;
        let lapic = &mut lapics[at.index];
        let mut device = ApicDevice {
            lapic,
            clock: FixedClock(now),
            ipi: None,
        };
        let result = self.vcpus.with(cpu, at, |vcpu| {
            let ram = crate::guest_memory::GuestRam { ram: memory, mem };
            crate::mmio::emulate_mmio(vcpu, &ram, gpa, write, &mut device)
        });
        let ipi = device.ipi;
        match result {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                self.stop(cpu, at, StopReason::MmioNotEmulated(error));
                return;
            }
            None => return,
        }
        if let Some(ipi) = ipi {
            self.deliver_ipi(cpu, at, ipi);
        }
    }

    /// Delivers an IPI the APIC of `from` sent to the APICs of its own domain that accept it.
    fn deliver_ipi(&mut self, cpu: usize, from: VcpuSlot, ipi: crate::lapic::IpiRequest) {
        use crate::lapic::IpiKind;
        let Some(domain) = self.domains[from.slot].as_mut() else {
            return;
        };
        let sender = domain.lapics[from.index].apic_id();
        for index in 0..domain.vcpu_count {
            let lapic = &mut domain.lapics[index];
            if !lapic.accepts(ipi.destination, sender) {
                continue;
            }
            match ipi.kind {
                IpiKind::Fixed { vector } => {
                    lapic.accept_interrupt(vector, false);
                }
                // Any destination will do: the first that accepts it.
                IpiKind::LowestPriority { vector } => {
                    lapic.accept_interrupt(vector, false);
                    if lapic.pending_vector().is_some() {
                        domain.halted[index] = false;
                    }
                    break;
                }
                // INIT resets a vCPU that has not started yet; one that runs is not reset (the
                // hypervisor does not rebuild a running vCPU's state), as the platform docs say.
                IpiKind::Init => {
                    if lapic.run_state() == crate::lapic::RunState::WaitForSipi {
                        lapic.receive_init();
                    }
                }
                // A vCPU waiting for it gets the real-mode start (it is not running: the core
                // never enters a waiting vCPU), then runs; a running one ignores it.
                IpiKind::Startup { vector } => {
                    if lapic.run_state() != crate::lapic::RunState::WaitForSipi {
                        continue;
                    }
                    let start = crate::lapic::RealModeStart::from_sipi_vector(vector);
                    let target = VcpuSlot {
                        slot: from.slot,
                        index,
                    };
                    match self.vcpus.with(cpu, target, |v| v.start_real_mode(start)) {
                        Some(Ok(())) => {
                            lapic.receive_startup(vector);
                        }
                        Some(Err(why)) if !domain.startup_refused => {
                            domain.startup_refused = true;
                            self.host.log(format_args!(
                                "domain {}: vCPU {index} stays waiting: {why}",
                                domain.name
                            ));
                        }
                        Some(Err(_)) | None => {}
                    }
                }
                // No NMI is given to guests.
                IpiKind::Nmi => {}
            }
            if lapic.pending_vector().is_some() {
                domain.halted[index] = false;
            }
        }
    }

    /// Stops a crashed domain (`at` is the vCPU whose exit stopped it, not running): prints
    /// why; its resources go once no vCPU of it runs.
    fn stop(&mut self, cpu: usize, at: VcpuSlot, reason: StopReason) {
        let slot = at.slot;
        let rip = self.vcpus.with(cpu, at, |v| v.reg(Reg::Rip)).unwrap_or(0);
        if let Some(domain) = self.domains[slot].as_mut() {
            self.host.log(format_args!(
                "domain {} stopped: {reason} (rip {rip:#x})",
                domain.name
            ));
            let id = domain.id;
            domain.dying = true;
            let _ = self.table.mark_crashed(id, reason);
            self.sched.remove_domain(id);
        }
        self.reap(slot);
    }

    /// Destroys a dying domain once none of its vCPUs runs; ends the run when nothing is left.
    fn reap(&mut self, slot: usize) {
        let idle = self.domains[slot]
            .as_ref()
            .is_some_and(|d| d.dying && !d.running.iter().any(|&r| r));
        if idle {
            self.destroy(slot);
        }
        self.check_finished();
    }

    fn check_finished(&mut self) {
        if self.verdict.is_some() {
            return;
        }
        if self.table.builder_lost() {
            // domB stopped before hand-off: nothing it planned will ever start; release it all.
            for slot in 0..MAX_DOMAINS {
                if self.domains[slot]
                    .as_ref()
                    .is_some_and(|d| !d.running.iter().any(|&r| r))
                {
                    self.destroy(slot);
                }
            }
            if self.domains.iter().all(Option::is_none) && !self.enter_recovery() {
                self.host.log(format_args!(
                    "the boot domain ended without handing off: no domain was started"
                ));
                self.verdict = Some(Verdict::Failure);
            }
            return;
        }
        if self.domains.iter().any(Option::is_some) {
            return;
        }
        if self.table.handed_off() {
            let launch_failure = self.measurement.as_ref().and_then(|m| m.failure());
            if let Some(failure) = launch_failure {
                self.host.log(format_args!(
                    "all domains have finished; the launch FAILED: {failure}"
                ));
                self.verdict = Some(Verdict::Failure);
            } else if let Some(reason) = self.recovery.ran {
                self.host.log(format_args!(
                    "all domains have finished; this boot ran the recovery environment ({}): the launch failed",
                    reason.name()
                ));
                self.verdict = Some(Verdict::Failure);
            } else if self.start_failed {
                self.host.log(format_args!(
                    "all domains have finished; a planned domain could not start"
                ));
                self.verdict = Some(Verdict::Failure);
            } else {
                self.host.log(format_args!("all domains have finished"));
                self.verdict = Some(Verdict::Success);
            }
        } else {
            self.host.log(format_args!(
                "the boot domain ended without handing off: no domain was started"
            ));
            self.verdict = Some(Verdict::Failure);
        }
    }

    /// Frees a domain's vCPUs, tables and memory (scrubbed). Returns pages reclaimed.
    fn destroy(&mut self, slot: usize) -> u64 {
        let Some(mut domain) = self.domains[slot].take() else {
            return 0;
        };
        self.sched.remove_domain(domain.id);
        if let Some(line) = domain.line.flush() {
            self.host.console_line(slot, &domain.name, &line);
        }
        self.host.console_close(slot, &domain.name);
        for cpu in 0..MAX_PCPUS {
            if self.lazy_owner[cpu].is_some_and(|o| o.at.slot == slot) {
                self.lazy_owner[cpu] = None;
            }
        }
        let mut pages = 0;
        for index in 0..domain.vcpu_count {
            // The tag can serve another vCPU (whose first entry flushes it); the frame is
            // scrubbed before it goes back.
            if let Some(context) = self.vcpus.destroy(VcpuSlot { slot, index }) {
                self.tags.give_back(context.tag);
                if scrub_and_free(&mut self.mem, &mut self.alloc, context.frame) {
                    pages += 1;
                }
            }
        }
        // Contexts of vCPUs never created (a domain that did not start) go back as they are.
        let created = domain.vcpu_count.min(domain.contexts.len());
        let mut unused = heapless::Vec::<VcpuContext, MAX_VCPUS>::new();
        for context in domain.contexts.iter().skip(created) {
            let _ = unused.push(*context);
        }
        domain.contexts = unused;
        pages + release_unstarted(&mut self.mem, &mut self.alloc, &mut self.tags, domain)
    }

    /// The hypercall transport, one call: checks the registers, copies the request once into
    /// hypervisor memory, dispatches that copy, writes the response back and finishes the exit
    /// (or stops the caller, or hands off).
    fn hypercall(&mut self, cpu: usize, at: VcpuSlot) {
        let Some(domain) = self.domains[at.slot].as_mut() else {
            return;
        };
        let ram = domain.memory.size();
        let registers = self
            .vcpus
            .with(cpu, at, |v| exit_handler::hypercall_registers(v, ram));
        let (buffer, len) = match registers {
            Some(Ok(registers)) => registers,
            Some(Err(status)) => {
                self.vcpus
                    .with(cpu, at, |v| exit_handler::finish_hypercall(v, status, 0));
                return;
            }
            None => return,
        };
        // The one copy: from here on the guest page is never read again for this call.
        let mut request = [0u8; HYPERCALL_BUFFER_SIZE];
        let request = &mut request[..len];
        if domain.memory.read(&self.mem, buffer, request).is_err() {
            self.vcpus.with(cpu, at, |v| {
                exit_handler::finish_hypercall(v, TransportStatus::BadBufferAddress, 0)
            });
            return;
        }
        let caller = domain.id;
        let mut response = [0u8; HYPERCALL_BUFFER_SIZE];
        let launch = LaunchInfo {
            launch_kind: self.launch_kind,
            active_banks: &self.active_banks,
            modules: &self.core_modules,
        };
        let mut effects = Effects {
            measurement: self.measurement.as_mut(),
            boot_record: &mut self.boot_record,
            host: &mut self.host,
            mem: &mut self.mem,
            alloc: &mut self.alloc,
            tags: &mut self.tags,
            domains: self.domains,
            table_kind: self.table_kind,
            ept_large_pages: self.ept_large_pages,
        };
        let reply = match hypercall::dispatch(
            self.table,
            &launch,
            &mut effects,
            caller,
            request,
            &mut response,
        ) {
            Ok(reply) => reply,
            Err(error) => panic!("hypercall response does not fit its buffer: {error:?}"),
        };
        self.announce_planned();
        match reply.outcome {
            Outcome::Resume => {
                let Some(domain) = self.domains[at.slot].as_mut() else {
                    return;
                };
                let written =
                    domain
                        .memory
                        .write(&mut self.mem, buffer, &response[..reply.response_len]);
                let status = if written.is_ok() {
                    TransportStatus::Ok
                } else {
                    TransportStatus::BadBufferAddress
                };
                self.vcpus.with(cpu, at, |v| {
                    exit_handler::finish_hypercall(v, status, reply.response_len)
                });
            }
            Outcome::ShutDown { exit_code } => self.shut_down(at.slot, exit_code, "shut down"),
            Outcome::HandedOff { order, count } => self.hand_off(at.slot, &order[..count]),
        }
    }

    /// One byte of serial input: to the focused domain's UART, or a focus key.
    pub fn console_input(&mut self, byte: u8) {
        match self.mux.input(byte, self.table) {
            InputAction::Deliver(id, byte) => {
                if let Ok(domain) = domain_mut(self.domains, id) {
                    if domain.uart.push_input(byte) {
                        domain.input_overrun = false;
                    } else if !domain.input_overrun {
                        domain.input_overrun = true;
                        self.host.log(format_args!(
                            "console: input for {} dropped: its UART queue is full (the domain is not reading)",
                            domain.name
                        ));
                    }
                }
            }
            InputAction::FocusChanged(id) => {
                if let Some(domain) = self.table.get(id) {
                    self.host.log(format_args!(
                        "console: input now goes to {}",
                        domain.name().as_str()
                    ));
                }
            }
            InputAction::Consumed | InputAction::NoFocus => {}
        }
    }

    /// Prints `planned:<name>` once per domain whose start has been requested.
    fn announce_planned(&mut self) {
        for domain in self.table.iter() {
            let slot = usize::from(domain.id().0);
            if domain.boot_order().is_some() && !self.announced[slot] {
                self.announced[slot] = true;
                self.host
                    .milestone(format_args!("planned:{}", domain.name().as_str()));
            }
        }
    }

    /// Hand-off: destroy domB (scrubbed, reclaimed), then start the recorded domains in order.
    fn hand_off(&mut self, domb_slot: usize, order: &[DomainId]) {
        if let Some(m) = self.measurement.as_mut() {
            let sealed = match m.failure() {
                Some(failure) => Sealed::Failed(failure),
                None => Sealed::Complete,
            };
            self.host.measurement_sealed(m, sealed);
        }
        let pages = self.destroy(domb_slot);
        self.host.log(format_args!(
            "hand-off: domb destroyed, {pages} pages reclaimed (scrubbed); builder requests are refused from now on"
        ));
        self.host.milestone(format_args!("hand-off"));
        let focus = self.table.console_focus_default();
        self.mux.set_focus(focus);
        if let Some(domain) = focus.and_then(|id| self.table.get(id)) {
            self.host.log(format_args!(
                "console: input goes to {} (Ctrl-] then a domain id digit, or n for the next, switches)",
                domain.name().as_str()
            ));
        }
        for &id in order {
            match self.start_domain(id) {
                Ok(()) => {
                    let _ = self.table.mark_started(id);
                    if let Some(domain) = self.table.get(id) {
                        self.host
                            .milestone(format_args!("started:{}", domain.name().as_str()));
                    }
                }
                Err(error) => {
                    self.host.log(format_args!(
                        "domain {}: cannot start: {error}; the run fails",
                        id.0
                    ));
                    self.start_failed = true;
                    let _ = self.table.mark_started(id);
                    let _ = self.table.mark_crashed(id, StopReason::InvalidState);
                    self.destroy(usize::from(id.0));
                }
            }
        }
        self.check_finished();
    }

    /// Creates a planned domain's vCPUs from the entries recorded in the domain table, fills its
    /// log windows, and queues its vCPUs.
    fn start_domain(&mut self, id: DomainId) -> Result<(), Error> {
        let domain = self.table.get(id).ok_or(Error::UnknownDomain)?;
        let mut name = heapless::String::<32>::new();
        let _ = name.push_str(domain.name().as_str());
        let count = domain.vcpu_count();
        let granted = domain.capabilities().granted;
        let hw = domain_mut(self.domains, id)?;
        hw.name = name;
        // Everything was mapped when the domain was created (nothing is allocated after
        // hand-off); here the finished logs (the separators are logged) go into the control
        // domain's two read-only windows (docs/abi.md, "Event-log windows").
        if granted.tpm && self.measurement.is_some() {
            self.host.log(format_args!(
                "domain {}: TPM locality 0 mapped (tpm capability)",
                hw.name
            ));
        }
        if granted.control {
            let slipway_log = self.measurement.as_ref().map(|m| m.log_bytes());
            let windows = hw.log_frames.chunks(WINDOW_FRAMES);
            for ((gpa, log, what), frames) in [
                (v1::SLIPWAY_LOG_GPA, slipway_log, "slipway"),
                (v1::FIRMWARE_LOG_GPA, self.firmware_log, "firmware"),
            ]
            .into_iter()
            .zip(windows)
            {
                log_window::fill_window(&mut self.mem, frames, log).map_err(|why| {
                    self.host.log(format_args!(
                        "domain {}: {what} log window: {why:?}",
                        hw.name
                    ));
                    Error::OutOfMemory
                })?;
                self.host.log(format_args!(
                    "domain {}: {what} event log ({} bytes) mapped read-only at {gpa:#x}",
                    hw.name,
                    log.map_or(0, <[u8]>::len)
                ));
            }
        }
        for v in 0..count {
            let entry = self
                .table
                .get(id)
                .and_then(|d| d.vcpu_entry(v))
                .ok_or(Error::InvalidEntryState)?;
            self.create_vcpu(id, entry.into())?;
            self.sched
                .add(VcpuRef {
                    domain: id,
                    vcpu: v,
                })
                .map_err(|_| Error::TooManyVcpus)?;
        }
        Ok(())
    }

    /// Writes per-pCPU guest time per domain and the ticks both pCPUs ran guests.
    pub fn write_accounting(&self, out: &mut dyn fmt::Write, tsc_per_us: u64) -> fmt::Result {
        let table = &*self.table;
        let name = |id: DomainId| table.get(id).map(|d| d.name().as_str());
        write!(out, "{}", self.accounting.summary(tsc_per_us, &name))
    }
}

mod recovery;
#[cfg(test)]
mod tests;
