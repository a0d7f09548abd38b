//! Domains on the hardware: their RAM and nested page tables, vCPUs on the SVM backend, the
//! emulated console, hypercalls (copied once into hypervisor memory, then decoded), and the run
//! loop. Domain bookkeeping (names, states, capabilities, start order) is `slipway-hv-core`'s
//! `DomainTable`.

use slipway_hv_core::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use slipway_hv_core::domain::{DomainTable, MAX_DOMAINS, StopReason};
use slipway_hv_core::frame_alloc::{BitmapFrameAllocator, FrameAllocator};
use slipway_hv_core::guest_memory::GuestMemory;
use slipway_hv_core::paging::{Access, PageTable, TableKind};
use slipway_protocol::v1::{
    self, BootInfo, BootSummary, DomainId, Error, LaunchKind, ModuleInfo, ModuleName, Request,
    Response, ResponseOk, TpmBanks,
};
use slipway_protocol::{
    CALL_MESSAGE, HYPERCALL_BUFFER_SIZE, HYPERCALL_INSTRUCTION_LEN, TransportStatus,
};

use crate::console_model::{LineBuffer, Uart, filter_cpuid};
use crate::hvprintln;
use crate::physmem::DirectMap;
use crate::svm::{EntryState, PermissionMaps, SvmCpu, SvmVcpu};
use crate::vmexit::VmExit;

/// Most boot modules handled.
pub const MAX_MODULES: usize = 32;
/// Default domB RAM.
pub const DOMB_DEFAULT_MEMORY: u64 = 64 << 20;
/// vCPUs per domain the hardware side holds.
pub const MAX_VCPUS: usize = 8;

/// A boot module: its exact physical range and its name (first word of its command line).
#[derive(Clone)]
pub struct BootModule {
    pub range: PhysRange,
    pub name: heapless::String<64>,
    pub cmdline: heapless::String<256>,
}

/// A domain's hardware side.
pub struct DomainHw {
    pub id: DomainId,
    pub name: heapless::String<32>,
    pub memory: GuestMemory,
    pub npt: PageTable,
    pub vcpus: heapless::Vec<SvmVcpu, MAX_VCPUS>,
    pub uart: Uart,
    pub line: LineBuffer,
    /// Guest time (TSC ticks) per physical CPU.
    pub run_ticks: [u64; crate::cpu::MAX_CPUS],
}

/// The hypervisor's state after the post-launch stage.
pub struct Hv {
    pub mem: DirectMap,
    pub alloc: BitmapFrameAllocator<'static>,
    pub maps: PermissionMaps,
    pub svm: SvmCpu,
    pub modules: heapless::Vec<BootModule, MAX_MODULES>,
    /// Where domB sees each module (guest-physical, read-only).
    pub module_gpas: [u64; MAX_MODULES],
    pub table: &'static mut DomainTable,
    pub domains: &'static mut [Option<DomainHw>; MAX_DOMAINS],
    pub next_asid: u32,
    pub domb: Option<DomainId>,
    /// Guest time of every destroyed domain, per pCPU, for the end-of-run accounting.
    pub finished: heapless::Vec<(heapless::String<32>, [u64; crate::cpu::MAX_CPUS]), 32>,
}

/// What the run loop does after an exit.
enum Next {
    /// Resume the same vCPU.
    Resume,
    /// Let another vCPU run (timer tick, HLT).
    Yield,
    /// The domain stopped (shut down or crashed); its resources are released.
    Stopped,
}

fn module_bytes(range: PhysRange) -> &'static [u8] {
    // SAFETY: module ranges were validated post-launch (inside RAM, disjoint from the image and
    // every other module), are mapped read-only in the hypervisor's tables and nothing writes them.
    unsafe { core::slice::from_raw_parts(range.start.0 as *const u8, range.len() as usize) }
}

impl Hv {
    fn domain_mut(&mut self, id: DomainId) -> Option<&mut DomainHw> {
        self.domains
            .get_mut(usize::from(id.0))
            .and_then(Option::as_mut)
    }

    /// Allocates zeroed RAM and nested page tables for a domain.
    fn create_domain_hw(
        &mut self,
        id: DomainId,
        name: &str,
        memory_bytes: u64,
    ) -> Result<(), Error> {
        let memory =
            GuestMemory::allocate(&mut self.alloc, memory_bytes).map_err(|_| Error::OutOfMemory)?;
        if memory.zero(&mut self.mem).is_err() {
            let _ = memory.scrub_and_free(&mut self.mem, &mut self.alloc);
            return Err(Error::OutOfMemory);
        }
        let mut npt = match PageTable::new(TableKind::Nested, &mut self.mem, &mut self.alloc) {
            Ok(npt) => npt,
            Err(_) => {
                let _ = memory.scrub_and_free(&mut self.mem, &mut self.alloc);
                return Err(Error::OutOfMemory);
            }
        };
        if memory
            .map_into(&mut npt, &mut self.mem, &mut self.alloc)
            .is_err()
        {
            let _ = npt.teardown(&mut self.mem, &mut self.alloc);
            let _ = memory.scrub_and_free(&mut self.mem, &mut self.alloc);
            return Err(Error::OutOfMemory);
        }
        let mut domain_name = heapless::String::new();
        let _ = domain_name.push_str(name);
        self.domains[usize::from(id.0)] = Some(DomainHw {
            id,
            name: domain_name,
            memory,
            npt,
            vcpus: heapless::Vec::new(),
            uart: Uart::default(),
            line: LineBuffer::default(),
            run_ticks: [0; crate::cpu::MAX_CPUS],
        });
        Ok(())
    }

    fn add_vcpu(&mut self, id: DomainId, entry: EntryState) -> Result<(), Error> {
        let asid = self.next_asid;
        self.next_asid += 1;
        let Some(domain) = self.domains[usize::from(id.0)].as_mut() else {
            return Err(Error::UnknownDomain);
        };
        let ncr3 = domain.npt.root().start().0;
        let vcpu = SvmVcpu::new(&mut self.alloc, self.maps, ncr3, asid, entry)
            .map_err(|_| Error::OutOfMemory)?;
        domain.vcpus.push(vcpu).map_err(|_| Error::TooManyVcpus)
    }

    /// Creates domB from the module named `domb`: PVH ELF loaded into its RAM, modules mapped
    /// read-only above its RAM, boot-information page and start info at the top of its RAM.
    pub fn create_domb(
        &mut self,
        memory_bytes: u64,
        cmdline: &str,
    ) -> Result<DomainId, &'static str> {
        let index = self
            .modules
            .iter()
            .position(|m| m.name == "domb")
            .ok_or("no boot module named `domb`")?;
        let image = module_bytes(self.modules[index].range);
        // Top of RAM: start info (3 pages), boot-information page, hypercall buffer.
        let start_info_gpa = memory_bytes - 3 * PAGE_SIZE;
        let boot_info_gpa = memory_bytes - 4 * PAGE_SIZE;
        let buffer_gpa = memory_bytes - 5 * PAGE_SIZE;
        let plan = crate::pvh::plan(image, buffer_gpa).map_err(|e| {
            hvprintln!("domb: image refused: {e:?}");
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
            gpa += pages;
        }
        // Boot-information page (postcard BootInfo) and the PVH start info.
        let mut modules = heapless::Vec::<ModuleInfo, { v1::MAX_BOOT_MODULES }>::new();
        for (i, module) in self.modules.iter().enumerate() {
            let name = ModuleName::new(&module.name)
                .map_err(|_| "a module name is not a valid protocol name")?;
            let _ = modules.push(ModuleInfo {
                name,
                size: module.range.len(),
                gpa: self.module_gpas[i],
            });
        }
        let boot_info = BootInfo {
            launch_kind: LaunchKind::None,
            active_banks: TpmBanks::new(),
            modules: slipway_protocol::BoundedVec::from_slice(&modules)
                .map_err(|_| "too many modules for BootInfo")?,
            hypercall_buffer_gpa: buffer_gpa,
        };
        let mut page = [0u8; 4096];
        let boot_info_len = v1::encode_boot_info(&boot_info, &mut page)
            .map_err(|_| "BootInfo does not fit a page")?;
        domain
            .memory
            .write(&mut self.mem, boot_info_gpa, &page[..boot_info_len])
            .map_err(|_| "writing BootInfo failed")?;
        {
            let mut start_modules =
                heapless::Vec::<crate::start_info::StartModule<'_>, { MAX_MODULES + 1 }>::new();
            let _ = start_modules.push(crate::start_info::StartModule {
                gpa: boot_info_gpa,
                size: boot_info_len as u64,
                cmdline: "bootinfo",
            });
            for (i, module) in self.modules.iter().enumerate() {
                let _ = start_modules.push(crate::start_info::StartModule {
                    gpa: self.module_gpas[i],
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
        self.domb = Some(id);
        hvprintln!(
            "domb: {} KiB RAM, entry {:#x}, {} modules mapped read-only at {:#x}",
            memory_bytes >> 10,
            plan.entry,
            self.modules.len(),
            memory_bytes
        );
        Ok(id)
    }

    /// Runs every runnable vCPU until all domains have finished.
    pub fn run(&mut self) {
        let mut current = 0usize;
        loop {
            // Pick the next domain with a vCPU (round robin).
            let Some(index) = (0..MAX_DOMAINS)
                .map(|i| (current + i) % MAX_DOMAINS)
                .find(|&i| {
                    self.domains[i]
                        .as_ref()
                        .is_some_and(|d| !d.vcpus.is_empty())
                })
            else {
                return;
            };
            current = index;
            match self.run_vcpu(index, 0) {
                Next::Resume => {}
                Next::Yield | Next::Stopped => current = (index + 1) % MAX_DOMAINS,
            }
        }
    }

    fn run_vcpu(&mut self, index: usize, vcpu: usize) -> Next {
        loop {
            let Some(domain) = self.domains[index].as_mut() else {
                return Next::Stopped;
            };
            let start = crate::tsc::now();
            let exit = domain.vcpus[vcpu].run(&self.svm);
            let cpu = crate::percpu::current_cpu_index();
            domain.run_ticks[cpu] += crate::tsc::now() - start;
            match self.handle_exit(index, vcpu, exit) {
                Next::Resume => {}
                other => return other,
            }
        }
    }

    fn handle_exit(&mut self, index: usize, vcpu_index: usize, exit: VmExit) -> Next {
        let Some(domain) = self.domains[index].as_mut() else {
            return Next::Stopped;
        };
        let vcpu = &mut domain.vcpus[vcpu_index];
        match exit {
            VmExit::IoOut {
                port,
                size,
                value,
                next_rip,
            } => {
                if (0x3f8..=0x3ff).contains(&port)
                    && size == 1
                    && let Some(byte) = domain.uart.io_out(port - 0x3f8, value as u8)
                    && domain.line.push(byte)
                {
                    let line = domain.line.take();
                    crate::console::print_domain_line(&domain.name, &line);
                }
                // Every other port: no device (writes dropped).
                vcpu.set_rip(next_rip);
                Next::Resume
            }
            VmExit::IoIn {
                port,
                size,
                next_rip,
            } => {
                let value: u64 = if (0x3f8..=0x3ff).contains(&port) && size == 1 {
                    u64::from(domain.uart.io_in(port - 0x3f8))
                } else {
                    // No device: all ones, like an empty bus.
                    (1u64 << (size * 8)) - 1
                };
                let mask = (1u64 << (size * 8)) - 1;
                vcpu.set_rax((vcpu.rax() & !mask) | value);
                vcpu.set_rip(next_rip);
                Next::Resume
            }
            VmExit::Cpuid => {
                let leaf = vcpu.rax() as u32;
                let subleaf = vcpu.regs.rcx as u32;
                let raw = core::arch::x86_64::__cpuid_count(leaf, subleaf);
                let [a, b, c, d] =
                    filter_cpuid(leaf, subleaf, [raw.eax, raw.ebx, raw.ecx, raw.edx]);
                vcpu.set_rax(u64::from(a));
                vcpu.regs.rbx = u64::from(b);
                vcpu.regs.rcx = u64::from(c);
                vcpu.regs.rdx = u64::from(d);
                vcpu.skip_instruction(2);
                Next::Resume
            }
            VmExit::MsrRead { msr } => {
                if msr == 0xc000_0080 {
                    let efer = vcpu.efer() & !(1 << 12); // the guest never sees SVME
                    vcpu.set_rax(efer & 0xffff_ffff);
                    vcpu.regs.rdx = efer >> 32;
                    vcpu.skip_instruction(2);
                } else {
                    vcpu.inject_exception(13, Some(0));
                }
                Next::Resume
            }
            VmExit::MsrWrite { msr, value } => {
                // EFER: SCE, LME, NXE only; SVME stays set (a hardware requirement).
                const ALLOWED: u64 = (1 << 0) | (1 << 8) | (1 << 11);
                if msr == 0xc000_0080 && value & !(ALLOWED | (1 << 10) | (1 << 12)) == 0 {
                    let lma = vcpu.efer() & (1 << 10);
                    vcpu.set_efer((value & ALLOWED) | lma | (1 << 12));
                    vcpu.skip_instruction(2);
                } else {
                    vcpu.inject_exception(13, Some(0));
                }
                Next::Resume
            }
            VmExit::Hypercall => self.hypercall(index, vcpu_index),
            VmExit::Halt => {
                vcpu.skip_instruction(1);
                Next::Yield
            }
            VmExit::PhysicalInterrupt => {
                crate::svm::take_pending_interrupts();
                Next::Yield
            }
            VmExit::Nmi => Next::Resume,
            VmExit::Shutdown => self.stop(index, StopReason::TripleFault),
            VmExit::NestedPageFault { gpa, write, fetch } => self.stop(
                index,
                StopReason::MemoryViolation {
                    gpa,
                    write,
                    execute: fetch,
                },
            ),
            VmExit::Forbidden(what) => {
                let name = match what {
                    crate::vmexit::ForbiddenInstruction::Vmrun => "VMRUN",
                    crate::vmexit::ForbiddenInstruction::Vmload => "VMLOAD",
                    crate::vmexit::ForbiddenInstruction::Vmsave => "VMSAVE",
                    crate::vmexit::ForbiddenInstruction::Stgi => "STGI",
                    crate::vmexit::ForbiddenInstruction::Clgi => "CLGI",
                    crate::vmexit::ForbiddenInstruction::Skinit => "SKINIT",
                    crate::vmexit::ForbiddenInstruction::Invlpga => "INVLPGA",
                    crate::vmexit::ForbiddenInstruction::Xsetbv => "XSETBV",
                    crate::vmexit::ForbiddenInstruction::Invd => "INVD",
                    crate::vmexit::ForbiddenInstruction::Wbinvd => "WBINVD",
                    crate::vmexit::ForbiddenInstruction::MonitorMwait => "MONITOR/MWAIT",
                    crate::vmexit::ForbiddenInstruction::Icebp => "ICEBP",
                    crate::vmexit::ForbiddenInstruction::TaskSwitch => "task switch",
                    crate::vmexit::ForbiddenInstruction::Init => "INIT",
                    crate::vmexit::ForbiddenInstruction::Smi => "SMI",
                };
                self.stop(index, StopReason::ForbiddenInstruction(name))
            }
            VmExit::IoString { port } => {
                hvprintln!(
                    "domain {}: string I/O on port {port:#x} is not emulated",
                    domain.name
                );
                self.stop(index, StopReason::UnhandledExit { code: 0x7b })
            }
            VmExit::Exception { vector, .. } => self.stop(
                index,
                StopReason::UnhandledExit {
                    code: 0x40 + u64::from(vector),
                },
            ),
            VmExit::Invalid => self.stop(index, StopReason::InvalidState),
            VmExit::Unknown { code } => self.stop(index, StopReason::UnhandledExit { code }),
        }
    }

    /// Stops a domain: prints why, releases its vCPUs, scrubs and frees its memory.
    fn stop(&mut self, index: usize, reason: StopReason) -> Next {
        if let Some(domain) = self.domains[index].as_ref() {
            let rip = domain.vcpus.first().map_or(0, |v| v.rip());
            hvprintln!("domain {} stopped: {reason} (rip {rip:#x})", domain.name);
            let id = domain.id;
            let _ = self.table.mark_crashed(id, reason);
        }
        let reclaimed = self.destroy(index);
        let _ = reclaimed;
        Next::Stopped
    }

    /// Frees a domain's vCPUs, nested tables and memory (scrubbed). Returns pages reclaimed.
    fn destroy(&mut self, index: usize) -> u64 {
        let Some(mut domain) = self.domains[index].take() else {
            return 0;
        };
        if !domain.line.is_empty() {
            let line = domain.line.take();
            crate::console::print_domain_line(&domain.name, &line);
        }
        let _ = self.finished.push((domain.name.clone(), domain.run_ticks));
        let mut pages = 0;
        while let Some(vcpu) = domain.vcpus.pop() {
            let frame = slipway_hv_core::addr::Frame::containing(PhysAddr(vcpu.vmcb_pa()));
            // The VMCB page is scrubbed before it goes back.
            let _ = slipway_hv_core::memory::PhysMemory::zero_frame(&mut self.mem, frame);
            if self.alloc.free(frame).is_ok() {
                pages += 1;
            }
        }
        let _ = domain.npt.teardown(&mut self.mem, &mut self.alloc);
        pages
            + domain
                .memory
                .scrub_and_free(&mut self.mem, &mut self.alloc)
                .unwrap_or(0)
    }

    /// VMMCALL: checks the transport registers, copies the request once into hypervisor memory,
    /// decodes that copy, carries it out and writes the response into the caller's buffer.
    fn hypercall(&mut self, index: usize, vcpu_index: usize) -> Next {
        let Some(domain) = self.domains[index].as_mut() else {
            return Next::Stopped;
        };
        let vcpu = &mut domain.vcpus[vcpu_index];
        let long_mode = vcpu.efer() & (1 << 10) != 0;
        let narrow = |v: u64| if long_mode { v } else { v & 0xffff_ffff };
        let call = narrow(vcpu.rax());
        let buffer = narrow(vcpu.regs.rdi);
        let len = narrow(vcpu.regs.rsi);
        vcpu.skip_instruction(HYPERCALL_INSTRUCTION_LEN);
        if call != CALL_MESSAGE {
            vcpu.set_rax(TransportStatus::UnknownCall as u64);
            vcpu.regs.rsi = 0;
            return Next::Resume;
        }
        let status = TransportStatus::check_buffer(buffer, len, domain.memory.size());
        if status != TransportStatus::Ok {
            vcpu.set_rax(status as u64);
            vcpu.regs.rsi = 0;
            return Next::Resume;
        }
        let mut request_bytes = [0u8; HYPERCALL_BUFFER_SIZE];
        let request_bytes = &mut request_bytes[..len as usize];
        if domain
            .memory
            .read(&self.mem, buffer, request_bytes)
            .is_err()
        {
            vcpu.set_rax(TransportStatus::BadBufferAddress as u64);
            vcpu.regs.rsi = 0;
            return Next::Resume;
        }
        let id = domain.id;
        let response: Response = match v1::decode_request(request_bytes) {
            Err(error) => Err(Error::from(error)),
            Ok(Request::Shutdown { exit_code }) => return self.shut_down(index, exit_code),
            Ok(request) => self.dispatch(index, id, request),
        };
        let Some(domain) = self.domains[index].as_mut() else {
            return Next::Stopped;
        };
        let mut out = [0u8; v1::MAX_RESPONSE_LEN];
        let vcpu = &mut domain.vcpus[vcpu_index];
        match v1::encode_response(&response, &mut out) {
            Ok(n)
                if domain
                    .memory
                    .write(&mut self.mem, buffer, &out[..n])
                    .is_ok() =>
            {
                vcpu.set_rax(TransportStatus::Ok as u64);
                vcpu.regs.rsi = n as u64;
            }
            _ => {
                vcpu.set_rax(TransportStatus::BadBufferAddress as u64);
                vcpu.regs.rsi = 0;
            }
        }
        Next::Resume
    }

    fn shut_down(&mut self, index: usize, exit_code: u32) -> Next {
        if let Some(domain) = self.domains[index].as_ref() {
            hvprintln!("domain {} shut down (exit code {exit_code})", domain.name);
            let _ = self.table.mark_shut_down(domain.id, exit_code);
        }
        self.destroy(index);
        Next::Stopped
    }

    /// Carries out one decoded request for `caller`.
    fn dispatch(&mut self, index: usize, caller: DomainId, request: Request) -> Response {
        let builder = self
            .table
            .get(caller)
            .is_some_and(|d| d.capabilities().builder);
        if request.needs_builder() {
            if self.table.handed_off() {
                return Err(Error::AfterHandOff);
            }
            if !builder {
                return Err(Error::NotPermitted);
            }
        }
        match request {
            Request::WriteConsole { bytes } => {
                if let Some(domain) = self.domains[index].as_mut() {
                    for &byte in bytes.iter() {
                        if domain.line.push(byte) {
                            let line = domain.line.take();
                            crate::console::print_domain_line(&domain.name, &line);
                        }
                    }
                }
                Ok(ResponseOk::Done)
            }
            Request::QueryBootInfo => Ok(ResponseOk::BootInfo(BootSummary {
                launch_kind: LaunchKind::None,
                active_banks: TpmBanks::new(),
                module_count: self.modules.len() as u16,
            })),
            Request::QueryModule { index: module } => {
                let module_index = usize::from(module);
                let m = self.modules.get(module_index).ok_or(Error::UnknownModule)?;
                Ok(ResponseOk::Module(ModuleInfo {
                    name: ModuleName::new(&m.name).map_err(|_| Error::UnknownModule)?,
                    size: m.range.len(),
                    gpa: self.module_gpas[module_index],
                }))
            }
            _ => Err(Error::NotPermitted),
        }
    }

    /// Prints per-pCPU guest time per domain (accumulated by the run loop).
    pub fn print_accounting(&self) {
        for (name, ticks) in &self.finished {
            hvprintln!(
                "accounting: {name}: pcpu0 {} us, pcpu1 {} us",
                crate::tsc::ticks_to_us(ticks[0]),
                crate::tsc::ticks_to_us(ticks[1])
            );
        }
    }
}
