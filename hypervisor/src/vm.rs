//! Domains on the hardware: their RAM and nested page tables, vCPUs on the SVM backend, the
//! emulated console, hypercalls (copied once into hypervisor memory, then decoded), and the run
//! loop. Domain bookkeeping (names, states, capabilities, start order) is `slipway-hv-core`'s
//! `DomainTable`.

use core::cell::UnsafeCell;

use slipway_hv_core::addr::{Frame, PAGE_SIZE, PhysAddr, PhysRange};
use slipway_hv_core::asid::AsidPool;
use slipway_hv_core::console::{ConsoleMux, InputAction, LineBuffer};
use slipway_hv_core::domain::{Domain, DomainTable, MAX_DOMAINS, StopReason};
use slipway_hv_core::exit_handler::{self, ExitAction};
use slipway_hv_core::frame_alloc::{BitmapFrameAllocator, FrameAllocator};
use slipway_hv_core::guest_memory::GuestMemory;
use slipway_hv_core::hypercall::{self, LaunchInfo, Outcome};
use slipway_hv_core::paging::{Access, PageTable, TableKind};
use slipway_hv_core::sched::{RunAccounting, Scheduler, VcpuRef};
use slipway_hv_core::uart::Uart16550;
use slipway_hv_core::vmexit::VmExit;
use slipway_protocol::v1::{
    self, BootInfo, Digest, DomainId, Error, LaunchKind, ModuleInfo, ModuleName, TpmBanks,
    VcpuEntry,
};
use slipway_protocol::{HYPERCALL_BUFFER_SIZE, TransportStatus};

use crate::hvprintln;
use crate::physmem::DirectMap;
use crate::svm::{BoundVcpu, EntryState, PermissionMaps, SvmCpu, SvmVcpu};

/// The TPM's locality-0 register page (guest-physical = host-physical in control domains).
const TPM_LOCALITY0: u64 = slipway_protocol::platform::TPM_TIS_BASE;

/// Most boot modules handled.
pub const MAX_MODULES: usize = slipway_protocol::boot_modules::MAX_BOOT_MODULES;
/// Default domB RAM (hv-core's, which `cargo xtask predict` uses too).
pub use slipway_hv_core::domain::BOOT_DOMAIN_DEFAULT_MEMORY as DOMB_DEFAULT_MEMORY;
/// vCPUs per domain the hardware side holds.
pub const MAX_VCPUS: usize = 8;

/// One vCPU's state. Kept outside `DomainHw` so that a vCPU running on one CPU (reached through
/// a raw pointer, without the lock) is never covered by a `&mut` another CPU creates while it
/// handles some other exit under the lock.
struct VcpuCell(UnsafeCell<Option<SvmVcpu>>);

// SAFETY: a cell is touched only by the CPU holding the big lock while the vCPU is not marked
// running, or by the one CPU that marked it running (until `after_exit` clears the mark).
unsafe impl Sync for VcpuCell {}

static VCPUS: [VcpuCell; MAX_DOMAINS * MAX_VCPUS] =
    [const { VcpuCell(UnsafeCell::new(None)) }; MAX_DOMAINS * MAX_VCPUS];

/// The cell of vCPU `index` of the domain in slot `slot`.
fn vcpu_cell(slot: usize, index: usize) -> *mut Option<SvmVcpu> {
    assert!(
        slot < MAX_DOMAINS && index < MAX_VCPUS,
        "vCPU cell out of range"
    );
    VCPUS[slot * MAX_VCPUS + index].0.get()
}

/// A boot module: its exact physical range and its name (`slipway_protocol::boot_modules`).
#[derive(Clone)]
pub struct BootModule {
    pub range: PhysRange,
    pub name: ModuleName,
    pub cmdline: heapless::String<{ crate::launch::MAX_CMDLINE }>,
}

/// A domain's hardware side.
pub struct DomainHw {
    pub id: DomainId,
    pub name: heapless::String<32>,
    pub memory: GuestMemory,
    pub npt: PageTable,
    /// Number of vCPUs created (their state lives in [`VCPUS`]).
    pub vcpu_count: usize,
    /// What each vCPU not created yet will use (ASID and zeroed VMCB frame), taken when the
    /// domain was created: vCPU `vcpu_count` takes `contexts[vcpu_count]`.
    pub contexts: heapless::Vec<VcpuContext, MAX_VCPUS>,
    pub uart: Uart16550,
    pub line: LineBuffer,
    /// Which vCPUs are on a physical CPU right now (the domain is only destroyed when none is).
    pub running: [bool; MAX_VCPUS],
    /// The domain has stopped; it is destroyed once no vCPU of it is running any more.
    pub dying: bool,
    /// Frames of the event-log windows (control domains), freed with the domain.
    pub log_frames: heapless::Vec<Frame, { crate::log_windows::DOMAIN_LOG_FRAMES }>,
    /// Console input is being dropped because the domain's UART queue is full; said once per
    /// overrun, so a user typing faster than the domain reads learns that bytes were lost.
    pub input_overrun: bool,
    /// Exception vectors (bit n = vector n) already reflected into this domain once: the first
    /// reflection of each is reported, later ones are not (a guest could otherwise flood).
    pub reflected: u32,
}

/// The hardware context a vCPU needs, reserved with its domain.
#[derive(Clone, Copy, Debug)]
pub struct VcpuContext {
    pub asid: u32,
    pub vmcb: Frame,
}

/// Names the vCPU whose lazily switched state a pCPU holds: its cell and its serial number
/// (never reused, so a cell that now holds another vCPU, or none, is told apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpuOwner {
    slot: usize,
    index: usize,
    serial: u64,
}

/// The hypervisor's state after the post-launch stage.
pub struct Hv {
    pub mem: DirectMap,
    pub alloc: BitmapFrameAllocator<'static>,
    pub maps: PermissionMaps,
    /// SVM state of each physical CPU (enabled by that CPU).
    pub svm: [Option<SvmCpu>; crate::cpu::MAX_CPUS],
    /// Physical CPUs running the scheduler loop.
    pub pcpus: usize,
    pub sched: &'static mut Scheduler,
    pub accounting: &'static mut RunAccounting,
    /// TSC ticks per scheduler tick (the APIC timer period), for tick-slot accounting.
    pub tick_tsc: u64,
    /// Timer ticks each pCPU has accounted for so far.
    pub ticks_seen: [u64; crate::cpu::MAX_CPUS],
    /// The vCPU whose x87/SSE state is live in each pCPU's registers.
    pub fpu_owner: [Option<FpuOwner>; crate::cpu::MAX_CPUS],
    /// What the launch was (checked post-launch) and the TPM's active banks (empty without TPM).
    pub launch_kind: LaunchKind,
    pub active_banks: heapless::Vec<v1::TpmAlgId, 8>,
    /// The TPM and the event log, when there is a TPM.
    pub measurement: Option<crate::measurement::Measurement>,
    /// The firmware's event log (ACPI TPM2 log area, copied post-launch), if it published one.
    pub firmware_log: Option<&'static [u8]>,
    /// Serial input focus (and the Ctrl-] focus keys).
    pub mux: ConsoleMux,
    /// Set when the run is over (every domain finished): the verdict.
    pub verdict: Option<crate::qemu_exit::Verdict>,
    pub modules: heapless::Vec<BootModule, MAX_MODULES>,
    /// The module domB is: the one lookup both its measurement and its start use.
    pub domb_module: Option<usize>,
    /// Where domB sees each module (guest-physical, read-only).
    pub module_gpas: [u64; MAX_MODULES],
    pub table: &'static mut DomainTable,
    pub domains: &'static mut [Option<DomainHw>; MAX_DOMAINS],
    /// Free ASIDs (taken at domain creation, given back at destruction).
    pub asids: AsidPool,
    /// Serial number of the next vCPU created (never reused).
    pub next_vcpu_serial: u64,
    pub domb: Option<DomainId>,
    /// Boot modules as the hypercall dispatcher sees them (with their address in domB).
    pub core_modules: heapless::Vec<hypercall::BootModule, MAX_MODULES>,
    /// Domains whose `planned:` milestone was printed.
    pub announced: [bool; MAX_DOMAINS],
    /// A planned domain could not be started after hand-off: the run fails.
    pub start_failed: bool,
    /// The TPM NV boot record's state for this boot (`crate::boot_record`).
    pub boot_record: crate::boot_record::BootRecordState,
}

/// The hardware side of hypercalls: what `slipway_hv_core::hypercall::dispatch` asks for, after
/// it has checked the request (ranges, capabilities, state).
struct HwPlatform<'a> {
    measurement: Option<&'a mut crate::measurement::Measurement>,
    boot_record: &'a mut crate::boot_record::BootRecordState,
    mem: &'a mut DirectMap,
    alloc: &'a mut BitmapFrameAllocator<'static>,
    asids: &'a mut AsidPool,
    domains: &'a mut [Option<DomainHw>; MAX_DOMAINS],
}

impl HwPlatform<'_> {
    fn domain(&mut self, id: DomainId) -> Result<&mut DomainHw, Error> {
        self.domains
            .get_mut(usize::from(id.0))
            .and_then(Option::as_mut)
            .ok_or(Error::UnknownDomain)
    }
}

impl hypercall::Platform for HwPlatform<'_> {
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
        let mut hw = allocate_domain_hw(
            self.mem,
            self.alloc,
            self.asids,
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
            release_domain_hw(self.mem, self.alloc, self.asids, hw);
            return Err(error);
        }
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
        let mem = &mut *self.mem;
        let domain = self
            .domains
            .get_mut(usize::from(id.0))
            .and_then(Option::as_mut)
            .ok_or(Error::UnknownDomain)?;
        domain
            .memory
            .copy_from_host(mem, src, gpa, length)
            .map_err(|_| Error::RangeOutsideDomain)
    }

    fn populated_sha256(&mut self, id: DomainId, gpa: u64, length: u64) -> Option<[u8; 32]> {
        // Recorded in the build record (PCR21 in the measured launch): what the domain really
        // received, read back from its RAM. Loaded segments are small, so the cost is low.
        let mem = &*self.mem;
        let domain = self
            .domains
            .get(usize::from(id.0))
            .and_then(Option::as_ref)?;
        domain.memory.sha256(mem, gpa, length).ok()
    }

    fn write_memory(&mut self, id: DomainId, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        let mem = &mut *self.mem;
        let domain = self
            .domains
            .get_mut(usize::from(id.0))
            .and_then(Option::as_mut)
            .ok_or(Error::UnknownDomain)?;
        domain
            .memory
            .write(mem, gpa, bytes)
            .map_err(|_| Error::RangeOutsideDomain)
    }

    fn console_write(&mut self, caller: DomainId, bytes: &[u8]) {
        if let Ok(domain) = self.domain(caller) {
            // Over its rate a domain's bytes are dropped here, before any escaping.
            if !crate::domain_console::admit(usize::from(caller.0), &domain.name, bytes.len()) {
                return;
            }
            for &byte in bytes {
                if let Some(line) = domain.line.push(byte) {
                    crate::domain_console::push_line(usize::from(caller.0), &domain.name, &line);
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
            crate::measurement::report_failure(failure);
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
            crate::measurement::report_failure(failure);
        }
        if let Err(error) = result {
            hvprintln!("hand-off refused: measurement could not be sealed: {error}");
        }
        result.map(drop)
    }

    fn slot_choice(&mut self, choice: slipway_measure::events::SlotChoice) -> Result<(), Error> {
        crate::boot_record::slot_choice(self.boot_record, choice)
    }

    fn report_boot_success(&mut self, caller: DomainId) -> Result<(), Error> {
        crate::boot_record::report_success(
            self.boot_record,
            self.measurement.as_deref_mut(),
            caller,
        )
    }
}

/// Gives back what [`reserve_contexts`] took (VMCB frames scrubbed); returns frames freed.
fn release_contexts(
    mem: &mut DirectMap,
    alloc: &mut BitmapFrameAllocator<'static>,
    asids: &mut AsidPool,
    contexts: &mut heapless::Vec<VcpuContext, MAX_VCPUS>,
) -> u64 {
    let mut freed = 0;
    while let Some(context) = contexts.pop() {
        asids.give_back(context.asid);
        let _ = slipway_hv_core::memory::PhysMemory::zero_frame(mem, context.vmcb);
        if alloc.free(context.vmcb).is_ok() {
            freed += 1;
        }
    }
    freed
}

/// Takes an ASID and a zeroed VMCB frame for each of `vcpus` vCPUs, all or nothing.
fn reserve_contexts(
    mem: &mut DirectMap,
    alloc: &mut BitmapFrameAllocator<'static>,
    asids: &mut AsidPool,
    vcpus: usize,
) -> Result<heapless::Vec<VcpuContext, MAX_VCPUS>, Error> {
    if vcpus > MAX_VCPUS {
        return Err(Error::TooManyVcpus);
    }
    let mut ids = [0u32; MAX_VCPUS];
    asids
        .take(vcpus, &mut ids[..vcpus])
        .map_err(|_| Error::NoVcpuContext)?;
    let mut contexts = heapless::Vec::new();
    for (i, &asid) in ids[..vcpus].iter().enumerate() {
        let frame = alloc
            .allocate()
            .ok()
            .filter(|frame| slipway_hv_core::memory::PhysMemory::zero_frame(mem, *frame).is_ok());
        let Some(vmcb) = frame else {
            release_contexts(mem, alloc, asids, &mut contexts);
            for &unused in &ids[i..vcpus] {
                asids.give_back(unused);
            }
            return Err(Error::OutOfMemory);
        };
        // Cannot fail: at most MAX_VCPUS (checked above).
        let _ = contexts.push(VcpuContext { asid, vmcb });
    }
    Ok(contexts)
}

/// Maps what a planned domain's capabilities bring, at creation (before hand-off): the two
/// event-log windows of a control domain (zeroed frames, read-only, filled at start) and, for
/// the domain with the tpm capability when there is a TPM, the TPM's locality-0 register page
/// (uncached; localities 1-4 stay unmapped, so it can never extend PCR17-22). The domain does
/// not run before hand-off, so nothing is reachable early.
fn map_capability_pages(
    mem: &mut DirectMap,
    alloc: &mut BitmapFrameAllocator<'static>,
    hw: &mut DomainHw,
    capabilities: v1::Capabilities,
    has_tpm: bool,
) -> Result<(), Error> {
    if capabilities.control {
        for gpa in [v1::SLIPWAY_LOG_GPA, v1::FIRMWARE_LOG_GPA] {
            crate::log_windows::map_window(mem, alloc, &mut hw.npt, gpa, None, &mut hw.log_frames)
                .map_err(|_| Error::OutOfMemory)?;
        }
    }
    if capabilities.tpm && has_tpm {
        hw.npt
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

/// Frees a domain that never ran: contexts, log frames, nested tables, memory (scrubbed).
fn release_domain_hw(
    mem: &mut DirectMap,
    alloc: &mut BitmapFrameAllocator<'static>,
    asids: &mut AsidPool,
    mut hw: DomainHw,
) {
    release_contexts(mem, alloc, asids, &mut hw.contexts);
    for frame in hw.log_frames.iter().copied() {
        let _ = slipway_hv_core::memory::PhysMemory::zero_frame(mem, frame);
        let _ = alloc.free(frame);
    }
    let _ = hw.npt.teardown(mem, alloc);
    let _ = hw.memory.scrub_and_free(mem, alloc);
}

/// Allocates zeroed RAM, nested page tables and the vCPU contexts for a domain (cleaned up on
/// failure).
fn allocate_domain_hw(
    mem: &mut DirectMap,
    alloc: &mut BitmapFrameAllocator<'static>,
    asids: &mut AsidPool,
    id: DomainId,
    memory_bytes: u64,
    vcpus: usize,
) -> Result<DomainHw, Error> {
    let mut contexts = reserve_contexts(mem, alloc, asids, vcpus)?;
    let mut hw = match allocate_domain_memory(mem, alloc, id, memory_bytes) {
        Ok(hw) => hw,
        Err(error) => {
            release_contexts(mem, alloc, asids, &mut contexts);
            return Err(error);
        }
    };
    hw.contexts = contexts;
    Ok(hw)
}

/// Allocates zeroed RAM and nested page tables for a domain (cleaned up on failure).
fn allocate_domain_memory(
    mem: &mut DirectMap,
    alloc: &mut BitmapFrameAllocator<'static>,
    id: DomainId,
    memory_bytes: u64,
) -> Result<DomainHw, Error> {
    let memory = GuestMemory::allocate(alloc, memory_bytes).map_err(|_| Error::OutOfMemory)?;
    let zr = memory.zero(mem);
    if zr.is_err() {
        let _ = memory.scrub_and_free(mem, alloc);
        return Err(Error::OutOfMemory);
    }
    let mut npt = match PageTable::new(TableKind::Nested, mem, alloc) {
        Ok(npt) => npt,
        Err(_) => {
            let _ = memory.scrub_and_free(mem, alloc);
            return Err(Error::OutOfMemory);
        }
    };
    if memory.map_into(&mut npt, mem, alloc).is_err()
        || slipway_hv_core::paging::check_tables(mem, npt.root(), TableKind::Nested).is_err()
    {
        let _ = npt.teardown(mem, alloc);
        let _ = memory.scrub_and_free(mem, alloc);
        return Err(Error::OutOfMemory);
    }
    crate::domain_console::start(usize::from(id.0));
    Ok(DomainHw {
        id,
        name: heapless::String::new(),
        memory,
        npt,
        vcpu_count: 0,
        contexts: heapless::Vec::new(),
        uart: Uart16550::default(),
        line: LineBuffer::new(),
        running: [false; MAX_VCPUS],
        dying: false,
        log_frames: heapless::Vec::new(),
        input_overrun: false,
        reflected: 0,
    })
}

pub fn module_bytes(range: PhysRange) -> &'static [u8] {
    // SAFETY: module ranges were validated post-launch (inside RAM, disjoint from the image and
    // every other module), are mapped read-only in the hypervisor's tables and nothing writes them.
    unsafe { core::slice::from_raw_parts(range.start.0 as *const u8, range.len() as usize) }
}

impl Hv {
    fn create_domain_hw(
        &mut self,
        id: DomainId,
        name: &str,
        memory_bytes: u64,
    ) -> Result<(), Error> {
        let mut hw = allocate_domain_hw(
            &mut self.mem,
            &mut self.alloc,
            &mut self.asids,
            id,
            memory_bytes,
            1,
        )?;
        let _ = hw.name.push_str(name);
        self.domains[usize::from(id.0)] = Some(hw);
        Ok(())
    }

    fn add_vcpu(&mut self, id: DomainId, entry: EntryState) -> Result<(), Error> {
        let Some(domain) = self.domains[usize::from(id.0)].as_mut() else {
            return Err(Error::UnknownDomain);
        };
        // Its ASID and VMCB were reserved when the domain was created (before hand-off).
        let index = domain.vcpu_count;
        let context = *domain.contexts.get(index).ok_or(Error::TooManyVcpus)?;
        let ncr3 = domain.npt.root().start().0;
        let serial = self.next_vcpu_serial;
        self.next_vcpu_serial += 1;
        // SAFETY: the VMCB frame was allocated and zeroed for this vCPU alone when its domain
        // was created; it is identity-mapped RW.
        let vcpu = unsafe {
            SvmVcpu::new(
                context.vmcb.start().0,
                self.maps,
                ncr3,
                context.asid,
                serial,
                entry,
            )
        };
        // SAFETY: the lock is held and the vCPU does not exist yet, so no CPU runs it.
        unsafe { *vcpu_cell(usize::from(id.0), index) = Some(vcpu) };
        domain.vcpu_count += 1;
        Ok(())
    }

    /// Creates domB from the module named `domb`: PVH ELF loaded into its RAM, modules mapped
    /// read-only above its RAM, boot-information page and start info at the top of its RAM.
    pub fn create_domb(
        &mut self,
        memory_bytes: u64,
        cmdline: &str,
    ) -> Result<DomainId, &'static str> {
        let index = self.domb_module.ok_or("no boot module named `domb`")?;
        let image = module_bytes(self.modules[index].range);
        // Top of RAM: start info (3 pages), boot-information page, hypercall buffer.
        let start_info_gpa = memory_bytes - 3 * PAGE_SIZE;
        let boot_info_gpa = memory_bytes - 4 * PAGE_SIZE;
        let buffer_gpa = memory_bytes - 5 * PAGE_SIZE;
        let plan = slipway_hv_core::pvh::plan(image, buffer_gpa).map_err(|e| {
            hvprintln!("domb: image refused: {e}");
            "domB image is not a loadable PVH ELF"
        })?;
        let id = self
            .table
            .create_boot_domain(memory_bytes, 1)
            .map_err(|_| "domain table refused domB")?;
        self.create_domain_hw(id, "domb", memory_bytes)
            .map_err(|_| "out of memory for domB")?;
        let domain = self.domains[usize::from(id.0)]
            .as_mut()
            .ok_or("domB vanished")?;
        for segment in &plan.segments {
            let src = PhysAddr(self.modules[index].range.start.0 + segment.offset);
            domain
                .memory
                .copy_from_host(&mut self.mem, src, segment.gpa, segment.file_len)
                .map_err(|_| "copying domB's segments failed")?;
        }
        // Modules above RAM, read-only, page-aligned, in multiboot2 order.
        let mut gpa = memory_bytes;
        for (i, module) in self.modules.iter().enumerate() {
            let pages = module.range.len().div_ceil(PAGE_SIZE) * PAGE_SIZE;
            domain
                .npt
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
            self.module_gpas[i] = gpa;
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
                    gpa: self.module_gpas[i],
                })
                .map_err(|_| "more boot modules than BootInfo lists")?;
        }
        let boot_info = BootInfo {
            launch_kind: self.launch_kind,
            active_banks: TpmBanks::from_slice(&self.active_banks)
                .map_err(|_| "too many TPM banks for BootInfo")?,
            modules: slipway_protocol::BoundedVec::from_slice(&modules)
                .map_err(|_| "too many modules for BootInfo")?,
            hypercall_buffer_gpa: buffer_gpa,
            boot_state: self.boot_record.info,
        };
        let mut page = [0u8; 4096];
        let boot_info_len = v1::encode_boot_info(&boot_info, &mut page)
            .map_err(|_| "BootInfo does not fit a page")?;
        domain
            .memory
            .write(&mut self.mem, boot_info_gpa, &page[..boot_info_len])
            .map_err(|_| "writing BootInfo failed")?;
        {
            let mut start_modules = heapless::Vec::<
                slipway_hv_core::start_info::StartModule<'_>,
                { MAX_MODULES + 1 },
            >::new();
            let _ = start_modules.push(slipway_hv_core::start_info::StartModule {
                gpa: boot_info_gpa,
                size: boot_info_len as u64,
                cmdline: "bootinfo",
            });
            for (i, module) in self.modules.iter().enumerate() {
                let _ = start_modules.push(slipway_hv_core::start_info::StartModule {
                    gpa: self.module_gpas[i],
                    size: module.range.len(),
                    cmdline: &module.cmdline,
                });
            }
            let memmap = [
                (0, memory_bytes, slipway_hv_core::start_info::MEMMAP_RAM),
                (
                    memory_bytes,
                    gpa - memory_bytes,
                    slipway_hv_core::start_info::MEMMAP_RESERVED,
                ),
            ];
            let mut area = [0u8; 3 * 4096];
            let len = slipway_hv_core::start_info::build(
                &mut area,
                start_info_gpa,
                cmdline,
                &start_modules,
                &memmap,
            )
            .map_err(|_| "domB start info does not fit 12 KiB")?;
            domain
                .memory
                .write(&mut self.mem, start_info_gpa, &area[..len])
                .map_err(|_| "writing start info failed")?;
        }
        self.add_vcpu(
            id,
            EntryState::Pvh32 {
                rip: u64::from(plan.entry),
                rbx: start_info_gpa,
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
        hvprintln!(
            "domb: {} KiB RAM, entry {:#x}, {} modules mapped read-only at {:#x}",
            memory_bytes >> 10,
            plan.entry,
            self.modules.len(),
            memory_bytes
        );
        Ok(id)
    }

    /// Under the lock: the next vCPU for physical CPU `cpu`, marked running. The returned
    /// pointer stays valid until [`Hv::after_exit`] for it: a domain is only destroyed when none
    /// of its vCPUs is marked running.
    pub fn pick(&mut self, cpu: usize) -> Option<(VcpuRef, *mut SvmVcpu)> {
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
            // SAFETY: lock held, vCPU not running: this CPU is the only one touching the cell.
            let Some(vcpu) = (unsafe { (*vcpu_cell(slot, index)).as_mut() }) else {
                self.sched.remove(v);
                continue;
            };
            domain.running[index] = true;
            return Some((v, vcpu as *mut SvmVcpu));
        }
    }

    /// Under the lock, right after [`Hv::pick`] gave `v` to `cpu` and before it runs there:
    /// makes `v`'s x87/SSE state and DR0-DR3 (the guest state VMRUN does not switch) the live
    /// ones on `cpu`. Nothing happens when `cpu` last ran `v`
    /// (the state is still in the registers: the hypervisor never touches them); otherwise the
    /// previous owner's registers are saved into its vCPU (or dropped with it if its domain is
    /// gone: the restore overwrites them all) and `v`'s are loaded.
    pub fn switch_lazy_state(&mut self, cpu: usize, v: VcpuRef) {
        let (slot, index) = (usize::from(v.domain.0), usize::from(v.vcpu));
        // SAFETY: lock held and `pick` marked `v` running on this CPU: only this CPU touches it.
        let Some(incoming) = (unsafe { (*vcpu_cell(slot, index)).as_mut() }) else {
            return;
        };
        let key = FpuOwner {
            slot,
            index,
            serial: incoming.serial(),
        };
        match incoming.fpu_live_on {
            Some(live) if live == cpu => return,
            // The scheduler never migrates a vCPU; if it ever does, it must save the state on
            // the old pCPU first.
            Some(live) => panic!(
                "vCPU {index} of domain slot {slot} picked on cpu {cpu} while its FPU state is live on cpu {live}"
            ),
            None => {}
        }
        let outgoing = self.fpu_owner[cpu].take().and_then(|old| {
            let running = self.domains[old.slot]
                .as_ref()
                .is_some_and(|d| d.running[old.index]);
            if running || (old.slot, old.index) == (slot, index) {
                return None;
            }
            // SAFETY: lock held, that vCPU is not running (checked) and is a different cell from
            // `incoming`: this CPU is the only one touching it.
            let previous = unsafe { (*vcpu_cell(old.slot, old.index)).as_mut() }?;
            (previous.serial() == old.serial).then_some(previous)
        });
        match outgoing {
            Some(previous) => {
                previous.fpu_live_on = None;
                crate::svm::fpu::switch(Some(&mut previous.fpu), &incoming.fpu);
                previous.debug = crate::svm::debug_regs::save();
            }
            None => crate::svm::fpu::switch(None, &incoming.fpu),
        }
        crate::svm::debug_regs::load(&incoming.debug);
        incoming.fpu_live_on = Some(cpu);
        self.fpu_owner[cpu] = Some(key);
    }

    /// Under the lock: accounts timer ticks `cpu` has seen since the last call.
    pub fn account_ticks(&mut self, cpu: usize, running: Option<DomainId>) {
        let total = crate::interrupts::TICKS[cpu].load(core::sync::atomic::Ordering::Relaxed);
        while self.ticks_seen[cpu] < total {
            self.ticks_seen[cpu] += 1;
            let period = crate::tsc::now() / self.tick_tsc.max(1);
            self.accounting.record_tick(cpu, period, running);
            self.sched.tick(cpu);
        }
    }

    /// Under the lock: handles the exit of vCPU `v` that ran on `cpu` for `tsc_ticks`.
    pub fn after_exit(&mut self, cpu: usize, v: VcpuRef, exit: VmExit, tsc_ticks: u64) {
        let slot = usize::from(v.domain.0);
        let index = usize::from(v.vcpu);
        self.accounting.charge(cpu, v.domain, tsc_ticks);
        self.account_ticks(cpu, Some(v.domain));
        let Some(domain) = self.domains[slot].as_mut() else {
            return;
        };
        domain.running[index] = false;
        if domain.dying {
            self.reap(slot);
            return;
        }
        let Some(svm) = self.svm[cpu].as_ref() else {
            return;
        };
        let DomainHw {
            uart, line, name, ..
        } = domain;
        // SAFETY: lock held and the vCPU no longer marked running: only this CPU touches it.
        let Some(vcpu) = (unsafe { (*vcpu_cell(slot, index)).as_mut() }) else {
            return;
        };
        let mut bound = BoundVcpu { vcpu, cpu: svm };
        let mut console = |byte: u8| {
            if !crate::domain_console::admit(slot, name, 1) {
                return;
            }
            if let Some(done) = line.push(byte) {
                crate::domain_console::push_line(slot, name, &done);
            }
        };
        let mut host_cpuid = |leaf: u32, subleaf: u32| {
            let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
            [r.eax, r.ebx, r.ecx, r.edx]
        };
        let action =
            exit_handler::handle_exit(exit, &mut bound, uart, &mut console, &mut host_cpuid);
        match action {
            ExitAction::Resume | ExitAction::Preempt => {}
            ExitAction::Reflected { vector } => {
                if let Some(domain) = self.domains[slot].as_mut()
                    && domain.reflected & (1 << vector) == 0
                {
                    domain.reflected |= 1 << vector;
                    hvprintln!(
                        "domain {}: intercepted exception vector {vector} reflected into the guest (reported once)",
                        domain.name
                    );
                }
            }
            ExitAction::Halt => self.sched.yield_now(cpu),
            ExitAction::Hypercall => self.hypercall(cpu, slot, index),
            ExitAction::Stop(reason) => self.stop(slot, reason),
        }
    }

    /// Stops a crashed domain: prints why; its resources go once no vCPU of it runs.
    fn stop(&mut self, slot: usize, reason: StopReason) {
        if let Some(domain) = self.domains[slot].as_mut() {
            // SAFETY: reading one register of vCPU 0 under the lock; if it is running on another
            // CPU the value may be stale, which only affects this message.
            let rip = unsafe { (*vcpu_cell(slot, 0)).as_ref().map_or(0, |v| v.rip()) };
            hvprintln!("domain {} stopped: {reason} (rip {rip:#x})", domain.name);
            let id = domain.id;
            domain.dying = true;
            let _ = self.table.mark_crashed(id, reason);
            self.sched.remove_domain(id);
        }
        self.reap(slot);
    }

    /// Destroys a dying domain once none of its vCPUs is running; ends the run when nothing is left.
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
            if self.domains.iter().all(Option::is_none) {
                hvprintln!("the boot domain ended without handing off: no domain was started");
                self.verdict = Some(crate::qemu_exit::Verdict::Failure);
            }
            return;
        }
        if self.domains.iter().any(Option::is_some) {
            return;
        }
        if self.table.handed_off() {
            let launch_failure = self.measurement.as_ref().and_then(|m| m.failure());
            if let Some(failure) = launch_failure {
                hvprintln!("all domains have finished; the launch FAILED: {failure}");
                self.verdict = Some(crate::qemu_exit::Verdict::Failure);
            } else if self.start_failed {
                hvprintln!("all domains have finished; a planned domain could not start");
                self.verdict = Some(crate::qemu_exit::Verdict::Failure);
            } else {
                hvprintln!("all domains have finished");
                self.verdict = Some(crate::qemu_exit::Verdict::Success);
            }
        } else {
            hvprintln!("the boot domain ended without handing off: no domain was started");
            self.verdict = Some(crate::qemu_exit::Verdict::Failure);
        }
    }

    /// Frees a domain's vCPUs, nested tables and memory (scrubbed). Returns pages reclaimed.
    fn destroy(&mut self, slot: usize) -> u64 {
        let Some(mut domain) = self.domains[slot].take() else {
            return 0;
        };
        self.sched.remove_domain(domain.id);
        if let Some(line) = domain.line.flush() {
            crate::domain_console::push_line(slot, &domain.name, &line);
        }
        crate::domain_console::finish(slot, &domain.name);
        // Contexts of vCPUs never created (a domain that did not start) go back as they are.
        let mut unused = heapless::Vec::<VcpuContext, MAX_VCPUS>::new();
        for context in domain.contexts.iter().skip(domain.vcpu_count) {
            let _ = unused.push(*context);
        }
        let mut pages =
            release_contexts(&mut self.mem, &mut self.alloc, &mut self.asids, &mut unused);
        for index in 0..domain.vcpu_count {
            // SAFETY: the domain is destroyed only when none of its vCPUs is running (or before
            // any ran), and the lock is held: the cell is this CPU's alone.
            let Some(vcpu) = (unsafe { (*vcpu_cell(slot, index)).take() }) else {
                continue;
            };
            // The ASID can serve another vCPU (whose first VMRUN flushes it); the VMCB page is
            // scrubbed before it goes back.
            self.asids.give_back(vcpu.asid());
            let frame = slipway_hv_core::addr::Frame::containing(PhysAddr(vcpu.vmcb_pa()));
            let _ = slipway_hv_core::memory::PhysMemory::zero_frame(&mut self.mem, frame);
            if self.alloc.free(frame).is_ok() {
                pages += 1;
            }
        }
        let _ = domain.npt.teardown(&mut self.mem, &mut self.alloc);
        for frame in domain.log_frames.iter().copied() {
            let _ = slipway_hv_core::memory::PhysMemory::zero_frame(&mut self.mem, frame);
            if self.alloc.free(frame).is_ok() {
                pages += 1;
            }
        }
        pages
            + domain
                .memory
                .scrub_and_free(&mut self.mem, &mut self.alloc)
                .unwrap_or(0)
    }

    /// VMMCALL: checks the transport registers, copies the request once into hypervisor memory
    /// and hands that copy to `slipway_hv_core::hypercall::dispatch`; writes the response back.
    fn hypercall(&mut self, cpu: usize, slot: usize, index: usize) {
        let Some(svm) = self.svm[cpu].as_ref() else {
            return;
        };
        let Some(domain) = self.domains[slot].as_mut() else {
            return;
        };
        let ram = domain.memory.size();
        // SAFETY: called from `after_exit` under the lock, the vCPU not running.
        let Some(vcpu) = (unsafe { (*vcpu_cell(slot, index)).as_mut() }) else {
            return;
        };
        let mut bound = BoundVcpu { vcpu, cpu: svm };
        let (buffer, len) = match exit_handler::hypercall_registers(&bound, ram) {
            Ok(registers) => registers,
            Err(status) => {
                exit_handler::finish_hypercall(&mut bound, status, 0);
                return;
            }
        };
        // The one copy: from here on the guest page is never read again for this call.
        let mut request = [0u8; HYPERCALL_BUFFER_SIZE];
        let request = &mut request[..len];
        if domain.memory.read(&self.mem, buffer, request).is_err() {
            exit_handler::finish_hypercall(&mut bound, TransportStatus::BadBufferAddress, 0);
            return;
        }
        let caller = domain.id;
        let mut response = [0u8; HYPERCALL_BUFFER_SIZE];
        let launch = LaunchInfo {
            launch_kind: self.launch_kind,
            active_banks: &self.active_banks,
            modules: &self.core_modules,
        };
        let mut platform = HwPlatform {
            measurement: self.measurement.as_mut(),
            boot_record: &mut self.boot_record,
            mem: &mut self.mem,
            alloc: &mut self.alloc,
            asids: &mut self.asids,
            domains: self.domains,
        };
        let reply = match hypercall::dispatch(
            self.table,
            &launch,
            &mut platform,
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
                let Some(svm) = self.svm[cpu].as_ref() else {
                    return;
                };
                let Some(domain) = self.domains[slot].as_mut() else {
                    return;
                };
                let written =
                    domain
                        .memory
                        .write(&mut self.mem, buffer, &response[..reply.response_len]);
                // SAFETY: as above: under the lock, the vCPU not running.
                let Some(vcpu) = (unsafe { (*vcpu_cell(slot, index)).as_mut() }) else {
                    return;
                };
                let mut bound = BoundVcpu { vcpu, cpu: svm };
                let status = if written.is_ok() {
                    TransportStatus::Ok
                } else {
                    TransportStatus::BadBufferAddress
                };
                exit_handler::finish_hypercall(&mut bound, status, reply.response_len);
            }
            Outcome::ShutDown { exit_code } => {
                if let Some(domain) = self.domains[slot].as_mut() {
                    hvprintln!("domain {} shut down (exit code {exit_code})", domain.name);
                    domain.dying = true;
                }
                self.sched.remove_domain(caller);
                self.reap(slot);
            }
            Outcome::HandedOff { order, count } => self.hand_off(slot, &order[..count]),
        }
    }

    /// One byte of serial input: to the focused domain's UART, or a focus key.
    pub fn console_input(&mut self, byte: u8) {
        match self.mux.input(byte, self.table) {
            InputAction::Deliver(id, byte) => {
                if let Some(domain) = self
                    .domains
                    .get_mut(usize::from(id.0))
                    .and_then(Option::as_mut)
                {
                    if domain.uart.push_input(byte) {
                        domain.input_overrun = false;
                    } else if !domain.input_overrun {
                        domain.input_overrun = true;
                        hvprintln!(
                            "console: input for {} dropped: its UART queue is full (the domain is not reading)",
                            domain.name
                        );
                    }
                }
            }
            InputAction::FocusChanged(id) => {
                if let Some(domain) = self.table.get(id) {
                    hvprintln!("console: input now goes to {}", domain.name().as_str());
                }
            }
            InputAction::Consumed | InputAction::NoFocus => {}
        }
    }

    /// Prints `milestone planned:<name>` once per domain whose start has been requested.
    fn announce_planned(&mut self) {
        for domain in self.table.iter() {
            let slot = usize::from(domain.id().0);
            if domain.boot_order().is_some() && !self.announced[slot] {
                self.announced[slot] = true;
                crate::tsc::milestone(format_args!("planned:{}", domain.name().as_str()));
            }
        }
    }

    /// Hand-off: destroy domB (scrubbed, reclaimed), then start the recorded domains in order.
    fn hand_off(&mut self, domb_slot: usize, order: &[DomainId]) {
        if let Some(m) = self.measurement.as_mut() {
            let sealed = match m.failure() {
                Some(failure) => slipway_hv_core::measurement::Sealed::Failed(failure),
                None => slipway_hv_core::measurement::Sealed::Complete,
            };
            crate::measurement::after_hand_off(m, sealed);
        }
        let pages = self.destroy(domb_slot);
        hvprintln!(
            "hand-off: domb destroyed, {pages} pages reclaimed (scrubbed); builder requests are refused from now on"
        );
        crate::tsc::milestone(format_args!("hand-off"));
        let focus = self.table.console_focus_default();
        self.mux.set_focus(focus);
        if let Some(domain) = focus.and_then(|id| self.table.get(id)) {
            hvprintln!(
                "console: input goes to {} (Ctrl-] then a domain id digit, or n for the next, switches)",
                domain.name().as_str()
            );
        }
        for &id in order {
            match self.start_domain(id) {
                Ok(()) => {
                    let _ = self.table.mark_started(id);
                    if let Some(domain) = self.table.get(id) {
                        crate::tsc::milestone(format_args!("started:{}", domain.name().as_str()));
                    }
                }
                Err(error) => {
                    hvprintln!("domain {}: cannot start: {error}; the run fails", id.0);
                    self.start_failed = true;
                    let _ = self.table.mark_started(id);
                    let _ = self.table.mark_crashed(id, StopReason::InvalidState);
                    self.destroy(usize::from(id.0));
                }
            }
        }
        self.check_finished();
    }

    /// Creates a planned domain's vCPUs from the entries recorded in the domain table and queues
    /// them with the scheduler.
    fn start_domain(&mut self, id: DomainId) -> Result<(), Error> {
        let (name, count) = {
            let domain = self.table.get(id).ok_or(Error::UnknownDomain)?;
            let mut name = heapless::String::<32>::new();
            let _ = name.push_str(domain.name().as_str());
            (name, domain.vcpu_count())
        };
        let granted = self.table.get(id).map(|d| d.capabilities().granted);
        let control = granted.is_some_and(|g| g.control);
        let tpm = granted.is_some_and(|g| g.tpm);
        if let Some(hw) = self.domains[usize::from(id.0)].as_mut() {
            hw.name = name;
            // Everything was mapped when the domain was created (nothing is allocated after
            // hand-off); here the finished logs (the separators are logged) go into the
            // control domain's two read-only windows (docs/abi.md, "Event-log windows").
            if tpm && self.measurement.is_some() {
                hvprintln!("domain {}: TPM locality 0 mapped (tpm capability)", hw.name);
            }
            if control {
                let slipway_log = self.measurement.as_ref().map(|m| m.log_bytes());
                let windows = hw.log_frames.chunks(crate::log_windows::WINDOW_FRAMES);
                for ((gpa, log, what), frames) in [
                    (v1::SLIPWAY_LOG_GPA, slipway_log, "slipway"),
                    (v1::FIRMWARE_LOG_GPA, self.firmware_log, "firmware"),
                ]
                .into_iter()
                .zip(windows)
                {
                    crate::log_windows::fill_window(&mut self.mem, frames, log).map_err(|why| {
                        hvprintln!("domain {}: {what} log window: {why:?}", hw.name);
                        Error::OutOfMemory
                    })?;
                    hvprintln!(
                        "domain {}: {what} event log ({} bytes) mapped read-only at {gpa:#x}",
                        hw.name,
                        log.map_or(0, <[u8]>::len)
                    );
                }
            }
        }
        for v in 0..count {
            let entry = self
                .table
                .get(id)
                .and_then(|d| d.vcpu_entry(v))
                .ok_or(Error::InvalidEntryState)?;
            let state = match entry {
                VcpuEntry::Pvh32 {
                    entry_eip,
                    start_info_gpa,
                } => EntryState::Pvh32 {
                    rip: u64::from(entry_eip),
                    rbx: u64::from(start_info_gpa),
                },
                VcpuEntry::Long64 { rip, rsp, cr3, rsi } => {
                    EntryState::Long64 { rip, rsp, cr3, rsi }
                }
            };
            self.add_vcpu(id, state)?;
            self.sched
                .add(VcpuRef {
                    domain: id,
                    vcpu: v,
                })
                .map_err(|_| Error::TooManyVcpus)?;
        }
        Ok(())
    }

    /// Prints per-pCPU guest time per domain and the ticks both pCPUs ran guests.
    pub fn print_accounting(&self) {
        let tsc_per_us = crate::tsc::hz() / 1_000_000;
        let table = &*self.table;
        let name = |id: DomainId| table.get(id).map(|d| d.name().as_str());
        crate::console::print_raw(format_args!(
            "{}",
            self.accounting.summary(tsc_per_us, &name)
        ));
    }
}
