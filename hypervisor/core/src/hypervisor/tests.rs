//! The arch-neutral core over a fake machine: fake physical memory, a fake vCPU backend that
//! records what the core asks of it, and a host that records what it prints. Each test drives
//! the core as the binary's scheduler loop does: pick, (the guest "runs": the test sets
//! registers and memory), after_exit.

extern crate std;

use super::*;
use crate::frame_alloc::BitmapFrameAllocator;
use crate::testing::FakePhysMemory;
use crate::vmexit::{Event, ForbiddenInstruction, InterruptedEvent};
use slipway_measure::pcr::{InitialState, PcrBanks};
use slipway_protocol::v1::{
    Capabilities, DomainName, Request, ResponseOk, decode_boot_info, decode_response,
    encode_request,
};
use slipway_protocol::{Bytes, CALL_MESSAGE};
use std::boxed::Box;
use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

const BASE: u64 = 0x100_0000;
const RAM: u64 = 0x80_0000;
/// Room for the boot modules, right above the allocator's region.
const MODULE_SPACE: u64 = 0x10_0000;
const DOMB_MEMORY: u64 = 0x8_0000;
const DOMB_ENTRY: u32 = 0x1040;

#[derive(Debug, Default)]
struct FakeVcpu {
    regs: BTreeMap<&'static str, u64>,
    new: Option<NewVcpu>,
    injected: Vec<Event>,
    interrupted: Option<InterruptedEvent>,
    /// What `interrupt_ready` answers (the test sets it).
    ready: bool,
    /// The interrupt-window request the core left.
    window: bool,
    /// The TSC offset the core set.
    tsc_offset: u64,
    /// Whether the core asked RDTSC to exit.
    rdtsc_exiting: bool,
    /// The real-mode start a startup IPI gave.
    started_at: Option<crate::lapic::RealModeStart>,
}

fn reg_name(reg: Reg) -> &'static str {
    match reg {
        Reg::Rax => "rax",
        Reg::Rbx => "rbx",
        Reg::Rcx => "rcx",
        Reg::Rdx => "rdx",
        Reg::Rsi => "rsi",
        Reg::Rdi => "rdi",
        Reg::Rip => "rip",
        Reg::Efer => "efer",
        Reg::LongMode => "long",
        Reg::Cpl => "cpl",
        Reg::Rsp => "rsp",
        Reg::Rbp => "rbp",
        Reg::R8 => "r8",
        Reg::R9 => "r9",
        Reg::R10 => "r10",
        Reg::R11 => "r11",
        Reg::R12 => "r12",
        Reg::R13 => "r13",
        Reg::R14 => "r14",
        Reg::R15 => "r15",
        Reg::Cr0 => "cr0",
        Reg::Cr3 => "cr3",
        Reg::Cr4 => "cr4",
        Reg::CsBase => "cs_base",
        Reg::CodeBits => "code_bits",
        Reg::Xcr0 => "xcr0",
    }
}

impl VcpuBackend for FakeVcpu {
    fn run(&mut self) -> VmExit {
        unreachable!("the core never runs a vCPU itself")
    }
    fn reg(&self, reg: Reg) -> u64 {
        self.regs.get(reg_name(reg)).copied().unwrap_or(0)
    }
    fn set_reg(&mut self, reg: Reg, value: u64) {
        self.regs.insert(reg_name(reg), value);
    }
    fn inject(&mut self, event: Event) {
        self.injected.push(event);
    }
    fn interrupted_event(&self) -> Option<InterruptedEvent> {
        self.interrupted
    }
    fn interrupt_ready(&self) -> bool {
        self.ready
    }
    fn set_interrupt_window(&mut self, wanted: bool) {
        self.window = wanted;
    }
    fn set_tsc_offset(&mut self, offset: u64) {
        self.tsc_offset = offset;
    }
    fn set_rdtsc_exiting(&mut self, exiting: bool) {
        self.rdtsc_exiting = exiting;
    }
    fn start_real_mode(&mut self, start: crate::lapic::RealModeStart) -> Result<(), &'static str> {
        self.started_at = Some(start);
        Ok(())
    }
}

#[derive(Default)]
struct FakeVcpus {
    cells: BTreeMap<(usize, usize), FakeVcpu>,
    /// (cpu, outgoing, incoming) of every lazy-state switch.
    switches: Vec<(usize, Option<VcpuSlot>, VcpuSlot)>,
    destroyed: Vec<VcpuSlot>,
}

impl Vcpus for FakeVcpus {
    fn create(&mut self, at: VcpuSlot, new: NewVcpu) -> Result<(), Error> {
        assert!(
            !self.cells.contains_key(&(at.slot, at.index)),
            "vCPU created twice"
        );
        self.cells.insert(
            (at.slot, at.index),
            FakeVcpu {
                new: Some(new),
                ..FakeVcpu::default()
            },
        );
        Ok(())
    }
    fn destroy(&mut self, at: VcpuSlot) -> Option<VcpuContext> {
        self.destroyed.push(at);
        self.cells
            .remove(&(at.slot, at.index))
            .and_then(|v| v.new)
            .map(|n| n.context)
    }
    fn with<R>(
        &mut self,
        _cpu: usize,
        at: VcpuSlot,
        f: impl FnOnce(&mut dyn VcpuBackend) -> R,
    ) -> Option<R> {
        self.cells
            .get_mut(&(at.slot, at.index))
            .map(|v| f(v as &mut dyn VcpuBackend))
    }
    fn switch_lazy_state(&mut self, cpu: usize, outgoing: Option<VcpuSlot>, incoming: VcpuSlot) {
        self.switches.push((cpu, outgoing, incoming));
    }
}

/// A TPM that extends its PCR model (worlds without a TPM have no measurement at all).
struct FakeTpm(PcrBanks);

impl PcrExtend for FakeTpm {
    type Error = &'static str;
    fn pcr_extend(
        &mut self,
        pcr: u8,
        digests: &slipway_measure::DigestList,
    ) -> Result<(), &'static str> {
        self.0.extend_all(u32::from(pcr), digests).unwrap();
        Ok(())
    }
}

#[derive(Default)]
struct FakeHost {
    log: Vec<String>,
    milestones: Vec<String>,
    /// (slot, line) of every console line.
    lines: Vec<(usize, String)>,
    open: Vec<usize>,
    closed: Vec<usize>,
    /// Bytes each slot may still print (no entry: unlimited).
    budget: BTreeMap<usize, usize>,
    /// Boot records written.
    boot_records: Vec<slipway_tpm::boot_record::BootRecord>,
    /// The TPM refuses boot-record writes.
    refuse_boot_record_write: bool,
}

impl Host for FakeHost {
    type Pcrs = FakeTpm;
    fn log(&mut self, message: fmt::Arguments<'_>) {
        self.log.push(message.to_string());
    }
    fn milestone(&mut self, name: fmt::Arguments<'_>) {
        self.milestones.push(name.to_string());
    }
    fn console_open(&mut self, slot: usize) {
        self.open.push(slot);
    }
    fn console_admit(&mut self, slot: usize, _name: &str, bytes: usize) -> bool {
        match self.budget.get_mut(&slot) {
            Some(left) if *left < bytes => false,
            Some(left) => {
                *left -= bytes;
                true
            }
            None => true,
        }
    }
    fn console_line(&mut self, slot: usize, _name: &str, line: &Line) {
        self.lines.push((slot, line.as_str().to_string()));
    }
    fn console_close(&mut self, slot: usize, _name: &str) {
        self.closed.push(slot);
    }
    fn host_cpuid(&mut self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [1, 2, 3, 4]
    }
    fn measurement_failed(&mut self, failure: Failure) {
        self.log.push(format!("measurement failed: {failure}"));
    }
    fn measurement_sealed(&mut self, _m: &mut Measurement<'_, FakeTpm>, sealed: Sealed) {
        self.log.push(format!("sealed: {sealed:?}"));
    }
    fn read_back_pcrs(&mut self, _m: &mut Measurement<'_, FakeTpm>) {
        self.log.push("PCR19-21 read back".into());
    }
    fn write_boot_record(
        &mut self,
        _m: &mut Measurement<'_, FakeTpm>,
        _caller: DomainId,
        record: &slipway_tpm::boot_record::BootRecord,
    ) -> Result<(), Error> {
        if self.refuse_boot_record_write {
            return Err(Error::BootRecordWriteFailed);
        }
        self.boot_records.push(*record);
        Ok(())
    }
}

type TestHv =
    Hypervisor<'static, FakePhysMemory, BitmapFrameAllocator<'static>, FakeVcpus, FakeHost>;

/// A minimal PVH ELF64: a PHYS32_ENTRY note naming `DOMB_ENTRY` and one loadable segment of
/// `0x800` bytes of 0xcc at guest-physical 0x1000.
fn pvh_image() -> Vec<u8> {
    const PT_LOAD: u32 = 1;
    const PT_NOTE: u32 = 4;
    let mut note = Vec::new();
    for value in [4u32, 4, 18] {
        note.extend_from_slice(&value.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&DOMB_ENTRY.to_le_bytes());
    let phdrs: [(u32, u64, u64, u64); 2] = [
        (PT_NOTE, 0x1000, 0, note.len() as u64),
        (PT_LOAD, 0x2000, 0x1000, 0x800),
    ];
    let mut out = Vec::new();
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&62u16.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&64u64.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, phdrs.len() as u16, 64, 0, 0] {
        out.extend_from_slice(&half.to_le_bytes());
    }
    for (p_type, offset, paddr, size) in phdrs {
        out.extend_from_slice(&p_type.to_le_bytes());
        out.extend_from_slice(&5u32.to_le_bytes());
        let align = if p_type == PT_NOTE { 4 } else { 0x1000 };
        for value in [offset, paddr, paddr, size, size, align] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.resize(0x1000, 0);
    out.extend_from_slice(&note);
    out.resize(0x2000, 0);
    out.extend_from_slice(&[0xcc; 0x800]);
    out
}

struct World {
    hv: TestHv,
    image: Vec<u8>,
    initial_free: u64,
    domb: DomainId,
    /// Domains planned from now on leave their vCPUs after the first waiting for a startup IPI.
    aps_wait: bool,
}

fn module(name: &str, range: PhysRange) -> HostModule {
    HostModule {
        range,
        name: ModuleName::new(name).unwrap(),
        cmdline: heapless::String::try_from(name).unwrap(),
    }
}

/// A core with domB created from a PVH image and a `guest` payload module, on `pcpus` pCPUs.
fn world(pcpus: usize) -> World {
    world_on(pcpus, TableKind::Nested)
}

/// [`world`] with second-level tables of `table_kind`.
fn world_on(pcpus: usize, table_kind: TableKind) -> World {
    world_with(Setup {
        pcpus,
        table_kind,
        ..Setup::default()
    })
}

/// How a test machine differs from the plain one.
struct Setup {
    pcpus: usize,
    table_kind: TableKind,
    /// RAM the allocator manages.
    ram: u64,
    /// The hypervisor command line (its recovery options).
    cmdline: &'static [u8],
    /// A third boot module `rescue` with these bytes and this command line.
    rescue: Option<(Vec<u8>, &'static str)>,
    /// A TPM and the measurement over it.
    measured: bool,
    /// The boot record as counted before domB.
    boot_record: crate::boot_report::BootRecordState,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            pcpus: 1,
            table_kind: TableKind::Nested,
            ram: RAM,
            cmdline: b"",
            rescue: None,
            measured: false,
            boot_record: crate::boot_report::BootRecordState::unknown(0),
        }
    }
}

/// RAM for worlds that build the recovery domain (16 MiB of its own).
const RECOVERY_WORLD_RAM: u64 = 0x200_0000;

/// A measured world whose boot has the recovery module `rescue` (a PVH image) and `cmdline`.
fn recovery_world(cmdline: &'static [u8], rescue: Option<Vec<u8>>) -> World {
    world_with(Setup {
        ram: RECOVERY_WORLD_RAM,
        cmdline,
        rescue: rescue.map(|image| (image, "rescue --verbose")),
        measured: true,
        ..Setup::default()
    })
}

fn world_with(setup: Setup) -> World {
    let Setup {
        pcpus,
        table_kind,
        ram,
        ..
    } = setup;
    let modules_at = BASE + ram;
    let image = pvh_image();
    let mut mem = FakePhysMemory::new(BASE, ram + MODULE_SPACE);
    mem.write(PhysAddr(modules_at), &image).unwrap();
    let guest_at = modules_at + 0x8000;
    mem.write(PhysAddr(guest_at), b"guest payload").unwrap();
    let regions = [PhysRange::new(BASE, BASE + ram)];
    let storage =
        Box::leak(vec![0u64; BitmapFrameAllocator::storage_words(&regions)].into_boxed_slice());
    let alloc = BitmapFrameAllocator::new(&regions, storage).unwrap();
    let initial_free = alloc.free_frames();
    let mut modules = heapless::Vec::new();
    let _ = modules.push(module(
        "domb",
        PhysRange::new(modules_at, modules_at + image.len() as u64),
    ));
    let _ = modules.push(module("guest", PhysRange::new(guest_at, guest_at + 13)));
    let rescue: &'static [u8] = match setup.rescue {
        Some((bytes, cmdline)) => {
            let rescue_at = modules_at + 0x1_0000;
            mem.write(PhysAddr(rescue_at), &bytes).unwrap();
            let mut rescue = module(
                "rescue",
                PhysRange::new(rescue_at, rescue_at + bytes.len() as u64),
            );
            rescue.cmdline = heapless::String::try_from(cmdline).unwrap();
            let _ = modules.push(rescue);
            Box::leak(bytes.into_boxed_slice())
        }
        None => &[],
    };
    let names: Vec<ModuleName> = modules.iter().map(|m| m.name.clone()).collect();
    let recovery = RecoveryState::new(setup.cmdline, &names, |_| rescue).unwrap();
    let (launch_kind, active_banks, measurement) = if setup.measured {
        let banks = slipway_measure::BankSet::from_algs(&[slipway_measure::AlgId::SHA256]).unwrap();
        let tpm = FakeTpm(PcrBanks::new(&banks, InitialState::DynamicLaunch));
        let log = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
        let inputs = crate::measurement::LaunchInputs {
            kind: slipway_measure::events::LaunchKind::Emulated,
            region: None,
            cmdline: setup.cmdline,
            domb_image: &image,
            boot_state: None,
        };
        let mut active = heapless::Vec::new();
        let _ = active.push(slipway_measure::AlgId::SHA256.into());
        (
            LaunchKind::Emulated,
            active,
            Some(Measurement::start(tpm, banks, log, &inputs).unwrap()),
        )
    } else {
        (LaunchKind::None, heapless::Vec::new(), None)
    };
    let mut hv = Hypervisor::new(Parts {
        mem,
        alloc,
        vcpus: FakeVcpus::default(),
        host: FakeHost::default(),
        table_kind,
        ept_large_pages: true,
        tag_count: 16,
        sched: Box::leak(Box::new(Scheduler::new(1, 3))),
        accounting: Box::leak(Box::new(RunAccounting::new(1))),
        table: Box::leak(Box::new(DomainTable::new())),
        domains: Box::leak(Box::new([const { None }; MAX_DOMAINS])),
        launch_kind,
        active_banks,
        measurement,
        firmware_log: None,
        modules,
        domb_module: Some(0),
        recovery,
        boot_record: setup.boot_record,
    });
    hv.measure_recovery_image();
    hv.set_pcpus(pcpus, 3, 1000);
    let domb = hv.create_domb(&image, DOMB_MEMORY, "domb cmdline").unwrap();
    World {
        hv,
        image,
        initial_free,
        domb,
        aps_wait: false,
    }
}

const BUFFER: u64 = DOMB_MEMORY - 5 * PAGE_SIZE;

impl World {
    fn vcpu(&mut self, id: DomainId, index: usize) -> &mut FakeVcpu {
        self.hv
            .vcpus
            .cells
            .get_mut(&(usize::from(id.0), index))
            .expect("vCPU exists")
    }

    /// Picks on `cpu`, expecting `expected`.
    fn pick(&mut self, cpu: usize, expected: (DomainId, u16)) -> VcpuRef {
        let v = self.hv.pick(cpu).expect("something to run");
        assert_eq!((v.domain, v.vcpu), expected);
        v
    }

    fn exit(&mut self, cpu: usize, v: VcpuRef, exit: VmExit) {
        self.hv.after_exit(cpu, v, exit, 100, 0, 0);
    }

    /// Makes vCPU 0 of `caller` issue `request` from its buffer at `buffer`; returns the
    /// transport status, the decoded response (if `Ok`) and the rip advance.
    fn call_at(
        &mut self,
        caller: DomainId,
        buffer: u64,
        request: &Request,
    ) -> (u64, Option<Result<ResponseOk, Error>>, u64) {
        let mut bytes = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = encode_request(request, &mut bytes).unwrap();
        let slot = usize::from(caller.0);
        {
            let hv = &mut self.hv;
            let domain = hv.domains[slot].as_mut().unwrap();
            // A buffer outside the caller's RAM stays unwritten (the call must refuse it).
            let _ = domain.memory.write(&mut hv.mem, buffer, &bytes[..len]);
        }
        let vcpu = self.vcpu(caller, 0);
        vcpu.set_reg(Reg::Rax, CALL_MESSAGE);
        vcpu.set_reg(Reg::Rdi, buffer);
        vcpu.set_reg(Reg::Rsi, len as u64);
        vcpu.set_reg(Reg::LongMode, 1);
        vcpu.set_reg(Reg::Rip, 0x5000);
        let v = self.pick(0, (caller, 0));
        self.exit(0, v, VmExit::Hypercall);
        let Some(vcpu) = self.hv.vcpus.cells.get(&(slot, 0)) else {
            return (u64::MAX, None, 0);
        };
        let status = vcpu.reg(Reg::Rax);
        let advance = vcpu.reg(Reg::Rip) - 0x5000;
        let response_len = vcpu.reg(Reg::Rsi) as usize;
        if status != TransportStatus::Ok.code() {
            assert_eq!(response_len, 0, "a failed call returns no response");
            return (status, None, advance);
        }
        let mut out = vec![0u8; response_len];
        let hv = &mut self.hv;
        hv.domains[slot]
            .as_ref()
            .unwrap()
            .memory
            .read(&hv.mem, buffer, &mut out)
            .unwrap();
        (status, Some(decode_response(&out).unwrap()), advance)
    }

    fn call(&mut self, caller: DomainId, request: Request) -> Result<ResponseOk, Error> {
        let (status, response, advance) = self.call_at(caller, BUFFER, &request);
        assert_eq!(status, TransportStatus::Ok.code(), "{request:?}");
        assert_eq!(advance, 3, "rip past VMMCALL/VMCALL");
        response.unwrap()
    }

    /// domB plans one domain `name` of `vcpus` vCPUs with the guest module at 0x1000, its
    /// entry at 0x1000, and requests its start.
    fn plan(&mut self, name: &str, vcpus: u16) -> DomainId {
        self.plan_with(name, vcpus, Capabilities::default())
    }

    /// [`World::plan`] with `capabilities` granted.
    fn plan_with(&mut self, name: &str, vcpus: u16, capabilities: Capabilities) -> DomainId {
        let boot_order = self.hv.table.iter().count() as u16;
        let id = match self.call(
            self.domb,
            Request::CreateDomain {
                name: DomainName::new(name).unwrap(),
                memory_bytes: 0x2_0000,
                vcpus,
                capabilities,
            },
        ) {
            Ok(ResponseOk::DomainCreated(id)) => id,
            other => panic!("create: {other:?}"),
        };
        assert_eq!(
            self.call(
                self.domb,
                Request::PopulateFromModule {
                    domain: id,
                    module: 1,
                    module_offset: 0,
                    length: 13,
                    gpa: 0x1000,
                }
            ),
            Ok(ResponseOk::Done)
        );
        for vcpu in 0..vcpus {
            assert_eq!(
                self.call(
                    self.domb,
                    Request::SetVcpuState {
                        domain: id,
                        vcpu,
                        entry: if vcpu > 0 && self.aps_wait {
                            VcpuEntry::WaitForStartupIpi
                        } else {
                            VcpuEntry::Pvh32 {
                                entry_eip: 0x1000,
                                start_info_gpa: 0x8000,
                            }
                        },
                    }
                ),
                Ok(ResponseOk::Done)
            );
        }
        assert_eq!(
            self.call(
                self.domb,
                Request::RequestStart {
                    domain: id,
                    boot_order,
                }
            ),
            Ok(ResponseOk::Done)
        );
        id
    }

    fn hand_off(&mut self) {
        let (status, _, _) = self.call_at(self.domb, BUFFER, &Request::HandOff);
        assert_eq!(status, u64::MAX, "domB is gone after the hand-off");
    }

    fn print(&mut self, cpu: usize, v: VcpuRef, text: &[u8]) {
        for &byte in text {
            self.exit(
                cpu,
                v,
                VmExit::IoOut {
                    port: 0x3f8,
                    size: 1,
                    value: u32::from(byte),
                    next_rip: 0x1001,
                },
            );
            assert_eq!(self.hv.pick(cpu), Some(v));
        }
    }
}

#[test]
fn domb_is_created_from_its_module_with_boot_info_and_start_info() {
    let mut w = world(1);
    let hv = &mut w.hv;
    let slot = usize::from(w.domb.0);
    let domain = hv.domains[slot].as_ref().unwrap();
    assert_eq!(domain.name.as_str(), "domb");
    // The loadable segment is in its RAM.
    let mut code = [0u8; 0x800];
    domain.memory.read(&hv.mem, 0x1000, &mut code).unwrap();
    assert!(code.iter().all(|&b| b == 0xcc));
    // The modules are mapped read-only above RAM: the image first, then the guest module.
    let mut page = [0u8; 4096];
    domain
        .memory
        .read(&hv.mem, DOMB_MEMORY - 4 * PAGE_SIZE, &mut page)
        .unwrap();
    // The page holds the encoding and zeroes after it: the shortest prefix that decodes.
    let info = (1..page.len())
        .find_map(|len| decode_boot_info(&page[..len]).ok())
        .expect("a BootInfo");
    assert_eq!(info.hypercall_buffer_gpa, BUFFER);
    assert_eq!(info.modules.len(), 2);
    assert_eq!(info.modules[0].gpa, DOMB_MEMORY);
    assert_eq!(info.modules[0].size, w.image.len() as u64);
    assert_eq!(info.modules[1].gpa, DOMB_MEMORY + 0x3000);
    // One vCPU, PVH entry, start info in rbx, its context's tag never 0, queued on pCPU 0.
    let new = hv.vcpus.cells[&(slot, 0)].new.unwrap();
    assert_eq!(
        new.entry,
        EntryState::Pvh32 {
            rip: u64::from(DOMB_ENTRY),
            rbx: DOMB_MEMORY - 3 * PAGE_SIZE
        }
    );
    assert_ne!(new.context.tag, 0);
    assert_eq!(new.table_root, domain.tables.root().start().0);
    assert_eq!(hv.mux.focus(), Some(w.domb));
    assert_eq!(hv.domb, Some(w.domb));
    assert!(
        hv.host
            .log
            .iter()
            .any(|l| l.starts_with("domb: 512 KiB RAM"))
    );
    assert_eq!(hv.pick(0).map(|v| v.domain), Some(w.domb));
}

#[test]
fn domb_without_its_module_or_with_a_bad_image_is_refused() {
    let mut w = world(1);
    w.hv.domb_module = None;
    assert_eq!(
        w.hv.create_domb(&[], DOMB_MEMORY, ""),
        Err("no boot module named `domb`")
    );
    let mut w = world(1);
    let before = w.hv.alloc.free_frames();
    assert_eq!(
        w.hv.create_domb(b"not an elf", DOMB_MEMORY, ""),
        Err("domB image is not a loadable PVH ELF")
    );
    assert_eq!(w.hv.alloc.free_frames(), before, "nothing allocated");
    // domB's RAM and the modules mapped above it stay below the hole.
    let big = slipway_protocol::platform::DOMAIN_RAM_HOLE_START + 4096;
    assert_eq!(
        w.hv.create_domb(b"not an elf", big, ""),
        Err("domB memory larger than 3 GiB (the domain memory hole's start)")
    );
    assert_eq!(w.hv.alloc.free_frames(), before, "nothing allocated");
}

#[test]
fn a_whole_launch_plans_hands_off_runs_and_finishes() {
    let mut w = world(1);
    let guest = w.plan("guest", 1);
    assert_eq!(w.hv.host.milestones, ["planned:guest"]);
    let domb_slot = usize::from(w.domb.0);
    w.hand_off();
    // domB destroyed (every vCPU, its console closed), the guest started with its entry.
    assert!(w.hv.domains[domb_slot].is_none());
    assert!(w.hv.host.closed.contains(&domb_slot));
    assert_eq!(
        w.hv.host.milestones,
        ["planned:guest", "hand-off", "started:guest"]
    );
    assert!(
        w.hv.host
            .log
            .iter()
            .any(|l| l.starts_with("hand-off: domb destroyed,") && l.contains("pages reclaimed"))
    );
    assert_eq!(
        w.vcpu(guest, 0).new.unwrap().entry,
        EntryState::Pvh32 {
            rip: 0x1000,
            rbx: 0x8000
        }
    );
    // Its payload was copied.
    {
        let hv = &mut w.hv;
        let mut bytes = [0u8; 13];
        hv.domains[usize::from(guest.0)]
            .as_ref()
            .unwrap()
            .memory
            .read(&hv.mem, 0x1000, &mut bytes)
            .unwrap();
        assert_eq!(&bytes, b"guest payload");
    }
    // It prints through the emulated UART, a line at a time.
    let v = w.pick(0, (guest, 0));
    w.print(0, v, b"hello\n");
    assert_eq!(
        w.hv.host.lines,
        [(usize::from(guest.0), "hello".to_string())]
    );
    w.exit(0, v, VmExit::Halt);
    // It shuts down: destroyed, every frame back, the run succeeds.
    assert_eq!(
        w.call_at(guest, 0x4000, &Request::Shutdown { exit_code: 0 })
            .0,
        u64::MAX
    );
    assert!(w.hv.domains.iter().all(Option::is_none));
    assert_eq!(w.hv.verdict, Some(Verdict::Success));
    assert_eq!(
        w.hv.alloc.free_frames(),
        w.initial_free,
        "every frame came back"
    );
    assert_eq!(w.hv.tags.free_count(), 15, "every tag came back");
    assert!(
        w.hv.host
            .log
            .iter()
            .any(|l| l == "domain guest shut down (exit code 0)")
    );
}

#[test]
fn the_transport_checks_registers_before_reading_anything() {
    let mut w = world(1);
    let domb = w.domb;
    // Wrong call number: refused, rip past the instruction, nothing dispatched.
    w.vcpu(domb, 0).set_reg(Reg::Rax, 0x1234);
    w.vcpu(domb, 0).set_reg(Reg::Rip, 0x5000);
    let v = w.pick(0, (domb, 0));
    w.exit(0, v, VmExit::Hypercall);
    let vcpu = w.vcpu(domb, 0);
    assert_eq!(vcpu.reg(Reg::Rax), TransportStatus::UnknownCall.code());
    assert_eq!(vcpu.reg(Reg::Rsi), 0);
    assert_eq!(vcpu.reg(Reg::Rip), 0x5003);
    // A buffer running past the caller's RAM.
    let (status, _, advance) = w.call_at(domb, DOMB_MEMORY, &Request::QueryBootInfo);
    assert_eq!(status, TransportStatus::BadBufferAddress.code());
    assert_eq!(advance, 3);
    let (status, _, advance) = w.call_at(domb, BUFFER + 8, &Request::QueryBootInfo);
    assert_eq!(status, TransportStatus::BadBufferAlignment.code());
    assert_eq!(advance, 3);
    // From guest user space: #UD, rip unchanged, no call.
    w.vcpu(domb, 0).set_reg(Reg::Cpl, 3);
    w.vcpu(domb, 0).set_reg(Reg::Rax, CALL_MESSAGE);
    w.vcpu(domb, 0).set_reg(Reg::Rip, 0x5000);
    let v = w.pick(0, (domb, 0));
    w.exit(0, v, VmExit::Hypercall);
    let vcpu = w.vcpu(domb, 0);
    assert_eq!(vcpu.injected, [Event::INVALID_OPCODE]);
    assert_eq!(vcpu.reg(Reg::Rip), 0x5000);
    // A good call after all that works, and the response is written into the buffer.
    w.vcpu(domb, 0).set_reg(Reg::Cpl, 0);
    assert!(matches!(
        w.call(domb, Request::QueryBootInfo),
        Ok(ResponseOk::BootInfo(_))
    ));
}

#[test]
fn the_request_is_copied_once_and_a_hostile_request_gets_an_error() {
    let mut w = world(1);
    let domb = w.domb;
    // Garbage bytes: an error response, the caller resumes.
    {
        let hv = &mut w.hv;
        let domain = hv.domains[usize::from(domb.0)].as_mut().unwrap();
        domain
            .memory
            .write(&mut hv.mem, BUFFER, &[0xff; 64])
            .unwrap();
    }
    w.vcpu(domb, 0).set_reg(Reg::Rax, CALL_MESSAGE);
    w.vcpu(domb, 0).set_reg(Reg::Rdi, BUFFER);
    w.vcpu(domb, 0).set_reg(Reg::Rsi, 64);
    let v = w.pick(0, (domb, 0));
    w.exit(0, v, VmExit::Hypercall);
    assert_eq!(w.vcpu(domb, 0).reg(Reg::Rax), TransportStatus::Ok.code());
    let len = w.vcpu(domb, 0).reg(Reg::Rsi) as usize;
    let mut out = vec![0u8; len];
    {
        let hv = &mut w.hv;
        let domain = hv.domains[usize::from(domb.0)].as_ref().unwrap();
        domain.memory.read(&hv.mem, BUFFER, &mut out).unwrap();
    }
    assert!(decode_response(&out).unwrap().is_err());
    assert!(
        w.hv.domains[usize::from(domb.0)].is_some(),
        "domB keeps running"
    );
}

#[test]
fn a_forbidden_instruction_stops_the_domain_and_the_others_finish() {
    let mut w = world(1);
    let bad = w.plan("bad", 1);
    let good = w.plan("good", 1);
    w.hand_off();
    let v = w.hv.pick(0).unwrap();
    let (first, second) = if v.domain == bad { (v, good) } else { (v, bad) };
    if first.domain == bad {
        w.vcpu(bad, 0).set_reg(Reg::Rip, 0xdead);
        w.exit(0, first, VmExit::Forbidden(ForbiddenInstruction::Vmrun));
        let _ = second;
    } else {
        w.exit(0, first, VmExit::Halt);
        let v = w.pick(0, (bad, 0));
        w.vcpu(bad, 0).set_reg(Reg::Rip, 0xdead);
        w.exit(0, v, VmExit::Forbidden(ForbiddenInstruction::Vmrun));
    }
    assert!(w.hv.domains[usize::from(bad.0)].is_none());
    assert!(
        w.hv.host
            .log
            .iter()
            .any(|l| l == "domain bad stopped: forbidden instruction VMRUN (rip 0xdead)"),
        "{:?}",
        w.hv.host.log
    );
    assert_eq!(w.hv.verdict, None, "the good domain still runs");
    assert_eq!(
        w.call_at(good, 0x4000, &Request::Shutdown { exit_code: 0 })
            .0,
        u64::MAX
    );
    assert_eq!(w.hv.verdict, Some(Verdict::Success));
    assert_eq!(w.hv.alloc.free_frames(), w.initial_free);
}

#[test]
fn domb_stopping_before_hand_off_fails_the_run_and_frees_everything() {
    let mut w = world(1);
    w.plan("never", 1);
    let domb = w.domb;
    let v = w.pick(0, (domb, 0));
    w.exit(0, v, VmExit::Shutdown);
    assert!(w.hv.domains.iter().all(Option::is_none));
    assert_eq!(w.hv.verdict, Some(Verdict::Failure));
    assert!(
        w.hv.host
            .log
            .iter()
            .any(|l| l == "the boot domain ended without handing off: no domain was started")
    );
    assert_eq!(w.hv.alloc.free_frames(), w.initial_free);
}

#[test]
fn a_domain_is_destroyed_only_when_none_of_its_vcpus_runs() {
    let mut w = world(2);
    let pair = w.plan("pair", 2);
    w.hand_off();
    let a = w.hv.pick(0).unwrap();
    let b = w.hv.pick(1).unwrap();
    assert_eq!((a.domain, b.domain), (pair, pair));
    assert_ne!(a.vcpu, b.vcpu, "two pCPUs run the two vCPUs side by side");
    w.exit(0, a, VmExit::Shutdown);
    assert!(
        w.hv.domains[usize::from(pair.0)].is_some(),
        "the other vCPU still runs: nothing freed yet"
    );
    assert!(
        w.hv.vcpus.destroyed.is_empty()
            || w.hv
                .vcpus
                .destroyed
                .iter()
                .all(|d| d.slot != usize::from(pair.0))
    );
    assert_eq!(w.hv.pick(0), None, "a dying domain is not picked again");
    w.hv.after_exit(1, b, VmExit::Halt, 100, 0, 0);
    assert!(w.hv.domains[usize::from(pair.0)].is_none());
    assert_eq!(w.hv.verdict, Some(Verdict::Success));
    assert_eq!(w.hv.alloc.free_frames(), w.initial_free);
}

#[test]
fn lazy_state_moves_only_when_another_vcpu_ran_on_the_pcpu() {
    let mut w = world(1);
    let domb = w.domb;
    let at = VcpuSlot {
        slot: usize::from(domb.0),
        index: 0,
    };
    let v = w.pick(0, (domb, 0));
    w.exit(0, v, VmExit::Halt);
    let v = w.pick(0, (domb, 0));
    w.exit(
        0,
        v,
        VmExit::Cpuid {
            leaf: 0,
            subleaf: 0,
        },
    );
    assert_eq!(w.hv.vcpus.switches, [(0, None, at)], "loaded once, kept");
    let guest = w.plan("guest", 1);
    w.hand_off();
    let v = w.pick(0, (guest, 0));
    let guest_at = VcpuSlot {
        slot: usize::from(guest.0),
        index: 0,
    };
    // domB's vCPU is gone: its registers are overwritten, not saved into a dead vCPU.
    assert_eq!(w.hv.vcpus.switches.last(), Some(&(0, None, guest_at)));
    w.exit(0, v, VmExit::Halt);
}

#[test]
fn two_vcpus_on_one_pcpu_swap_lazy_state() {
    let mut w = world(1);
    let pair = w.plan("pair", 2);
    w.hand_off();
    let slot = usize::from(pair.0);
    let at = |index| VcpuSlot { slot, index };
    let first = w.hv.pick(0).unwrap();
    w.exit(0, first, VmExit::Halt);
    let second = w.hv.pick(0).unwrap();
    assert_ne!(first, second);
    let switches = &w.hv.vcpus.switches;
    assert_eq!(
        switches[switches.len() - 2..],
        [
            (0, None, at(usize::from(first.vcpu))),
            (
                0,
                Some(at(usize::from(first.vcpu))),
                at(usize::from(second.vcpu))
            )
        ]
    );
}

#[test]
fn exits_are_accounted_and_ticks_advance_the_scheduler() {
    let mut w = world(1);
    let domb = w.domb;
    let v = w.pick(0, (domb, 0));
    w.hv.after_exit(0, v, VmExit::ExternalInterrupt, 5000, 3, 9000);
    assert_eq!(w.hv.accounting.guest_time(0, domb), 5000);
    assert_eq!(w.hv.exits(), 1);
    assert_eq!(w.hv.accounting.ticks(0, domb), 3);
    // Ticks seen once are not counted again.
    w.hv.account_ticks(0, None, 3, 9500);
    assert_eq!(w.hv.accounting.ticks(0, domb), 3);
}

#[test]
fn console_output_over_the_rate_is_dropped_and_input_reaches_the_focus() {
    let mut w = world(1);
    let domb = w.domb;
    w.hv.host.budget.insert(usize::from(domb.0), 3);
    let v = w.pick(0, (domb, 0));
    w.print(0, v, b"abcdef\n");
    w.exit(0, v, VmExit::Halt);
    // Three bytes admitted, the rest dropped (the newline too: the line is still open).
    assert!(w.hv.host.lines.is_empty());
    let slot = usize::from(domb.0);
    assert_eq!(
        w.hv.domains[slot]
            .as_mut()
            .unwrap()
            .line
            .flush()
            .map(|l| l.as_str().to_string()),
        Some("abc".to_string())
    );
    // Serial input goes to domB's UART (it has the focus).
    w.hv.console_input(b'x');
    let uart = &mut w.hv.domains[slot].as_mut().unwrap().uart;
    assert_eq!(uart.io_read(5) & 1, 1, "data ready");
    assert_eq!(uart.io_read(0), b'x');
}

#[test]
fn creating_a_domain_that_does_not_fit_leaves_nothing_behind() {
    let mut w = world(1);
    let before = w.hv.alloc.free_frames();
    let tags = w.hv.tags.free_count();
    let result = w.call(
        w.domb,
        Request::CreateDomain {
            name: DomainName::new("huge").unwrap(),
            memory_bytes: 2 * RAM,
            vcpus: 2,
            capabilities: Capabilities::default(),
        },
    );
    assert_eq!(result, Err(Error::OutOfMemory));
    assert_eq!(w.hv.alloc.free_frames(), before);
    assert_eq!(w.hv.tags.free_count(), tags);
    let result = w.call(
        w.domb,
        Request::WriteConsole {
            bytes: Bytes::from_slice(b"from domb\n").unwrap(),
        },
    );
    assert_eq!(result, Ok(ResponseOk::Done));
    assert_eq!(
        w.hv.host.lines,
        [(usize::from(w.domb.0), "from domb".to_string())]
    );
}

#[test]
fn the_same_launch_runs_on_ept_tables() {
    let mut w = world_on(1, TableKind::Ept);
    let slot = usize::from(w.domb.0);
    assert_eq!(
        w.hv.domains[slot].as_ref().unwrap().tables.kind(),
        TableKind::Ept
    );
    let guest = w.plan("guest", 1);
    w.hand_off();
    assert_eq!(
        w.hv.domains[usize::from(guest.0)]
            .as_ref()
            .unwrap()
            .tables
            .kind(),
        TableKind::Ept
    );
    assert_eq!(
        w.call_at(guest, 0x4000, &Request::Shutdown { exit_code: 0 })
            .0,
        u64::MAX
    );
    assert_eq!(w.hv.verdict, Some(Verdict::Success));
    assert_eq!(w.hv.alloc.free_frames(), w.initial_free);
}

mod boot_record;
mod recovery;

/// Writes `bytes` into `id`'s RAM at `gpa`.
fn poke(w: &mut World, id: DomainId, gpa: u64, bytes: &[u8]) {
    let hv = &mut w.hv;
    hv.domains[usize::from(id.0)]
        .as_ref()
        .unwrap()
        .memory
        .write(&mut hv.mem, gpa, bytes)
        .unwrap();
}

/// vCPU `v` stores `value` to the local APIC register at `offset` with `mov [eax], ecx` at
/// 0x3000 (32-bit code, paging off), as a guest's APIC driver does.
fn apic_store(w: &mut World, v: VcpuRef, offset: u64, value: u32) {
    let gpa = crate::lapic::XAPIC_BASE + offset;
    {
        let vcpu = w.vcpu(v.domain, usize::from(v.vcpu));
        vcpu.set_reg(Reg::CodeBits, 32);
        vcpu.set_reg(Reg::Rip, 0x3000);
        vcpu.set_reg(Reg::Rax, gpa);
        vcpu.set_reg(Reg::Rcx, u64::from(value));
    }
    w.exit(
        0,
        v,
        VmExit::NestedPageFault {
            gpa,
            write: true,
            execute: false,
            present: false,
        },
    );
    assert_eq!(
        w.vcpu(v.domain, usize::from(v.vcpu)).reg(Reg::Rip),
        0x3002,
        "the store was emulated and skipped"
    );
}

#[test]
fn the_apic_timer_interrupt_is_injected_when_the_guest_can_take_it_and_wakes_a_halted_vcpu() {
    use crate::lapic::reg;
    let mut w = world(1);
    let guest = w.plan("guest", 1);
    w.hand_off();
    poke(&mut w, guest, 0x3000, &[0x89, 0x08]); // mov [eax], ecx
    let v = w.pick(0, (guest, 0));
    apic_store(&mut w, v, reg::SVR, 0x1ff); // software-enable, spurious vector 0xff
    apic_store(&mut w, v, reg::LVT_TIMER, 0xec); // one-shot, vector 0xec
    apic_store(&mut w, v, reg::TIMER_INITIAL, 1000); // 1000 counts (x2 by the reset divider)
    // Before the deadline: nothing to inject, no window asked for.
    w.hv.account_ticks(0, None, 0, 1000);
    let v = w.pick(0, (guest, 0));
    w.hv.prepare_entry(0, v, 1000);
    assert!(w.vcpu(guest, 0).injected.is_empty());
    assert!(!w.vcpu(guest, 0).window);
    // The guest halts: passed over while nothing is deliverable.
    w.exit(0, v, VmExit::Halt);
    assert_eq!(
        w.hv.pick(0),
        None,
        "a halted vCPU with no interrupt is not entered"
    );
    // The deadline passes: the vCPU is picked again; with interrupts masked a window is asked
    // for, and the interrupt goes in once the guest can take it.
    w.hv.account_ticks(0, None, 0, 5000);
    let v = w.pick(0, (guest, 0));
    w.hv.prepare_entry(0, v, 5000);
    assert!(w.vcpu(guest, 0).injected.is_empty());
    assert!(w.vcpu(guest, 0).window, "interrupt window requested");
    w.exit(0, v, VmExit::InterruptWindow);
    let v = w.pick(0, (guest, 0));
    w.vcpu(guest, 0).ready = true;
    w.hv.prepare_entry(0, v, 5100);
    assert_eq!(
        w.vcpu(guest, 0).injected,
        [Event::Interrupt { vector: 0xec }]
    );
    assert!(!w.vcpu(guest, 0).window, "the window request is cancelled");
    // In service until EOI: not injected twice.
    w.vcpu(guest, 0).injected.clear();
    w.hv.prepare_entry(0, v, 5200);
    assert!(w.vcpu(guest, 0).injected.is_empty());
    apic_store(&mut w, v, reg::EOI, 0);
    assert_eq!(
        w.hv.exit_counts
            .iter()
            .find(|k| k.0 == "local APIC")
            .unwrap()
            .1,
        4
    );
}

#[test]
fn an_apic_access_that_cannot_be_emulated_stops_the_domain_with_the_bytes() {
    let mut w = world(1);
    let guest = w.plan("guest", 1);
    w.hand_off();
    poke(&mut w, guest, 0x3000, &[0xf3, 0xa5]); // rep movsd: not an MMIO move
    let v = w.pick(0, (guest, 0));
    {
        let vcpu = w.vcpu(guest, 0);
        vcpu.set_reg(Reg::CodeBits, 32);
        vcpu.set_reg(Reg::Rip, 0x3000);
    }
    w.exit(
        0,
        v,
        VmExit::NestedPageFault {
            gpa: crate::lapic::XAPIC_BASE + 0x80,
            write: true,
            execute: false,
            present: false,
        },
    );
    assert!(
        w.hv.domains[usize::from(guest.0)].is_none()
            || w.hv.domains[usize::from(guest.0)].as_ref().unwrap().dying
    );
    assert!(
        w.hv.host
            .log
            .iter()
            .any(|l| l.contains("f3 a5") && l.contains("guest")),
        "{:?}",
        w.hv.host.log
    );
}

#[test]
fn a_pm_timer_read_freezes_a_one_vcpu_domains_clock_until_its_next_other_exit() {
    use slipway_protocol::platform::{PM_TIMER_HZ, PM_TIMER_PORT};
    let mut w = world(1);
    // One TSC tick per PM timer tick keeps the numbers readable; the step is then 3 ticks.
    w.hv.tsc_hz = PM_TIMER_HZ;
    let guest = w.plan("guest", 1);
    w.hand_off();
    // Enter at host TSC `enter`, exit at `exit` with `exit_kind`.
    let run = |w: &mut World, enter: u64, exit: u64, exit_kind: VmExit| {
        let v = w.pick(0, (guest, 0));
        w.hv.prepare_entry(0, v, enter);
        w.hv.after_exit(0, v, exit_kind, exit - enter, 0, exit);
    };
    let pm_read = VmExit::IoIn {
        port: PM_TIMER_PORT,
        size: 4,
        next_rip: 0,
    };
    let rax = |w: &mut World| w.vcpu(guest, 0).reg(Reg::Rax);
    run(&mut w, 9_000, 10_000, pm_read);
    assert_eq!(rax(&mut w), 10_000);
    // Three reads in a row, however slow the exits: 3 ticks apart, RDTSC intercepted meanwhile.
    run(&mut w, 15_000, 15_300, pm_read);
    assert!(w.vcpu(guest, 0).rdtsc_exiting);
    assert_eq!(rax(&mut w), 10_003);
    run(&mut w, 19_000, 19_100, pm_read);
    assert_eq!(rax(&mut w), 10_006);
    // The TSC read right after: 3 ticks later; the clock thaws and goes on from there.
    w.vcpu(guest, 0).set_reg(Reg::Rip, 0x5000);
    run(&mut w, 25_000, 25_050, VmExit::Rdtsc);
    assert_eq!(rax(&mut w), 10_009);
    assert_eq!(w.vcpu(guest, 0).reg(Reg::Rip), 0x5002);
    run(
        &mut w,
        30_000,
        30_400,
        VmExit::Cpuid {
            leaf: 0,
            subleaf: 0,
        },
    );
    assert!(!w.vcpu(guest, 0).rdtsc_exiting);
    assert_eq!(w.vcpu(guest, 0).tsc_offset, 10_009u64.wrapping_sub(25_050));
    // Time runs normally again: everything since the RDTSC exit shows.
    run(&mut w, 31_000, 31_000, pm_read);
    assert_eq!(rax(&mut w), 10_009 + (31_000 - 25_050));
    // A frozen clock also thaws at any other exit (a HLT, say), so time never stands still.
    // (`World::exit` exits at host TSC 0.)
    let v = w.pick(0, (guest, 0));
    w.exit(0, v, VmExit::Halt);
    let domain = w.hv.domains[usize::from(guest.0)].as_ref().unwrap();
    assert_eq!(domain.tsc_offset, 10_009 + (31_000 - 25_050) + 3);
}

#[test]
fn an_application_processor_starts_in_real_mode_at_the_sipi_vector_after_init() {
    use crate::lapic::{RealModeStart, reg};
    let mut w = world(1);
    w.aps_wait = true;
    let pair = w.plan("pair", 2);
    w.hand_off();
    poke(&mut w, pair, 0x3000, &[0x89, 0x08]); // mov [eax], ecx
    // Only vCPU 0 runs; vCPU 1 waits, queued but never entered.
    let v = w.pick(0, (pair, 0));
    w.exit(
        0,
        v,
        VmExit::Cpuid {
            leaf: 0,
            subleaf: 0,
        },
    );
    let v = w.pick(0, (pair, 0));
    assert!(w.vcpu(pair, 1).started_at.is_none());
    // A startup IPI before the APIC was told about INIT still starts a waiting AP; here the
    // kernel's order: INIT, then SIPI twice, to APIC ID 1.
    apic_store(&mut w, v, reg::ICR_HIGH, 1 << 24);
    apic_store(&mut w, v, reg::ICR_LOW, 0x0000_4500); // INIT, assert
    let v = w.pick(0, (pair, 0));
    apic_store(&mut w, v, reg::ICR_LOW, 0x0000_0600 | 0x9a); // SIPI, vector 0x9a
    assert_eq!(
        w.vcpu(pair, 1).started_at,
        Some(RealModeStart {
            cs_selector: 0x9a00,
            cs_base: 0x9_a000,
            ip: 0
        })
    );
    // The second SIPI finds it running and changes nothing.
    w.vcpu(pair, 1).started_at = None;
    let v = w.pick(0, (pair, 0));
    apic_store(&mut w, v, reg::ICR_LOW, 0x0000_0600 | 0x9a);
    assert!(w.vcpu(pair, 1).started_at.is_none());
    // Both vCPUs now take turns on the pCPU.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let v = w.hv.pick(0).unwrap();
        seen.insert(v.vcpu);
        w.exit(0, v, VmExit::Halt);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn vcpu_0_may_not_wait_for_a_startup_ipi() {
    let mut w = world(1);
    let id = match w.call(
        w.domb,
        Request::CreateDomain {
            name: DomainName::new("lonely").unwrap(),
            memory_bytes: 0x2_0000,
            vcpus: 1,
            capabilities: Capabilities::default(),
        },
    ) {
        Ok(ResponseOk::DomainCreated(id)) => id,
        other => panic!("create: {other:?}"),
    };
    assert_eq!(
        w.call(
            w.domb,
            Request::SetVcpuState {
                domain: id,
                vcpu: 0,
                entry: VcpuEntry::WaitForStartupIpi,
            }
        ),
        Err(Error::InvalidEntryState)
    );
}
