//! The Intel VMX backend: VMXON with the capability MSRs honoured (IA32_FEATURE_CONTROL, CR0/CR4
//! fixed bits), one VMCS per vCPU with EPT, VPID, unrestricted guest, I/O and MSR bitmaps that
//! intercept everything, CR0/CR4 guest/host masks, the common exception intercepts (#DB, #AC,
//! #MC), the world switch, and exits normalized into hv-core's `VmExit` (hv-core's `vmx::exits`).
//!
//! Every new VMCS is first built as hv-core's `vmx::VmcsState` and checked by its software
//! VM-entry checks (`vmx::check_vm_entry`) on the CPU that will run it, so a wrong field is a
//! message naming the field and the rule, never a bare VM-entry failure; only then is it written
//! with VMWRITE and launched.
//!
//! The vCPU keeps a software copy of the few guest fields common code reads and writes (rip,
//! EFER, CPL, long mode, the interrupted event, the event to inject): VMREAD/VMWRITE need the
//! VMCS to be current on the executing CPU, and common code may reach a vCPU from another CPU.

use core::arch::global_asm;

use slipway_hv_core::frame_alloc::FrameAllocator;
use slipway_hv_core::vmexit::{Event, InterruptedEvent, Reg, VcpuBackend, VmExit};
use slipway_hv_core::vmx::caps::{self, entry};
use slipway_hv_core::vmx::ept::{InvalidationType, invept_type, invvpid_type};
use slipway_hv_core::vmx::exits::{self, CrAccess, ExitInfo, VmInstructionError};
use slipway_hv_core::vmx::setup::{
    CrWriteRefused, GuestCr, HostState, VcpuResources, VmxControls, guest_cr_write, initial_vmcs,
};
use slipway_hv_core::vmx::vmcs::access_rights as ar;
use slipway_hv_core::vmx::{EntryContext, VmcsField as F, VmcsState, VmxCapabilities, VmxonError};
use slipway_protocol::v1::VcpuEntry;
use x86_64::registers::model_specific::Msr;

pub use slipway_hv_core::hypervisor::EntryState;

const MSR_EFER: u32 = 0xc000_0080;
const MSR_PAT: u32 = 0x277;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// EFER.SVME: AMD's; reserved on Intel (hv-core's exit handler sets it for SVM).
const EFER_SVME: u64 = 1 << 12;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;

/// Exit reasons the backend handles itself (SDM appendix C).
const EXIT_CR_ACCESS: u16 = 28;

/// Why VMX cannot be used.
#[derive(Debug)]
pub enum VmxError {
    /// the CPU does not offer VMX (CPUID 1 ECX bit 5)
    NotSupported,
    /// a control the hypervisor needs is not available
    Control(slipway_hv_core::vmx::ControlError),
    /// the processor cannot build the EPT pointer
    Ept(slipway_hv_core::vmx::ept::EptpError),
    /// the processor cannot invalidate EPT or VPID translations (reusing an EPT root or a VPID
    /// would then be unsafe)
    NoInvalidation(&'static str),
    /// VMXON's preconditions are not met
    Vmxon(VmxonError),
    /// no frame for the VMXON region, a VMCS or the bitmaps
    OutOfMemory,
    /// VMXON failed although its preconditions were checked
    VmxonFailed,
    /// a vCPU's entry state does not fit a PVH entry (above 4 GiB)
    EntryAbove4GiB,
}

impl core::fmt::Display for VmxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotSupported => f.write_str("the CPU does not offer VMX (CPUID 1 ECX bit 5)"),
            Self::Control(error) => write!(f, "{error}"),
            Self::Ept(error) => write!(f, "EPT pointer: {error}"),
            Self::NoInvalidation(what) => write!(f, "the CPU offers no {what}"),
            Self::Vmxon(error) => write!(f, "VMXON refused: {error}"),
            Self::OutOfMemory => {
                f.write_str("no frame for the VMXON region, a VMCS or the bitmaps")
            }
            Self::VmxonFailed => f.write_str("VMXON failed"),
            Self::EntryAbove4GiB => f.write_str("a PVH entry point or start info above 4 GiB"),
        }
    }
}

/// Whether this CPU offers VMX (CPUID 1 ECX bit 5).
pub fn supported() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 5) != 0
}

/// The capability MSRs of this CPU.
pub fn capabilities() -> VmxCapabilities {
    // SAFETY: VmxCapabilities::read only reads the capability MSRs the CPU reports (IA32_VMX_BASIC
    // first, then the ones its bits say exist); called only when CPUID reports VMX.
    VmxCapabilities::read(|msr| unsafe { Msr::new(msr).read() })
}

/// Physical- and linear-address widths (CPUID 0x80000008).
fn address_widths() -> (u8, u8) {
    let r = core::arch::x86_64::__cpuid(0x8000_0008);
    (r.eax as u8, (r.eax >> 8) as u8)
}

fn alloc_zeroed(alloc: &mut impl FrameAllocator, count: u64, fill: u8) -> Result<u64, VmxError> {
    let frame = alloc
        .allocate_contiguous(count, 1)
        .map_err(|_| VmxError::OutOfMemory)?;
    let pa = frame.start().0;
    // SAFETY: freshly allocated frames from free RAM, identity-mapped RW in the hypervisor's tables.
    unsafe { core::ptr::write_bytes(pa as *mut u8, fill, (count * 4096) as usize) };
    Ok(pa)
}

/// What every vCPU shares: the control values (hv-core's `vmx::setup` policy), the bitmaps (all
/// ones: every port and MSR intercepted), the capabilities and how to invalidate translations.
#[derive(Clone, Copy)]
pub struct VmxShared {
    pub caps: VmxCapabilities,
    controls: VmxControls,
    invept: InvalidationType,
    invvpid: InvalidationType,
    io_bitmap_a: u64,
    io_bitmap_b: u64,
    msr_bitmap: u64,
    phys_bits: u8,
    linear_bits: u8,
    /// VMX-preemption timer value for one scheduler tick (`None`: the CPU has no such timer).
    preemption_ticks: Option<u64>,
}

impl VmxShared {
    /// Computes the controls from the (TRUE) capability MSRs and allocates the bitmaps.
    pub fn new(alloc: &mut impl FrameAllocator) -> Result<Self, VmxError> {
        if !supported() {
            return Err(VmxError::NotSupported);
        }
        let caps = capabilities();
        let controls = VmxControls::for_cpu(&caps).map_err(VmxError::Control)?;
        let invept = invept_type(&caps).ok_or(VmxError::NoInvalidation("INVEPT"))?;
        let invvpid = invvpid_type(&caps).ok_or(VmxError::NoInvalidation("INVVPID"))?;
        let (phys_bits, linear_bits) = address_widths();
        // One scheduler tick of TSC, in units of the preemption timer (TSC >> rate).
        let tick_tsc = crate::tsc::hz() / 1000 * u64::from(crate::smp::TICK_MS);
        let preemption_ticks = caps
            .supports(
                slipway_hv_core::vmx::Control::PinBased,
                caps::pin::PREEMPTION_TIMER,
            )
            .then(|| (tick_tsc >> caps.misc.preemption_timer_rate()).clamp(1, 0xffff_ffff));
        Ok(VmxShared {
            caps,
            controls,
            preemption_ticks,
            invept,
            invvpid,
            io_bitmap_a: alloc_zeroed(alloc, 1, 0xff)?,
            io_bitmap_b: alloc_zeroed(alloc, 1, 0xff)?,
            msr_bitmap: alloc_zeroed(alloc, 1, 0xff)?,
            phys_bits,
            linear_bits,
        })
    }

    /// Whether 2 MiB EPT pages may be used.
    pub fn ept_large_pages(&self) -> bool {
        self.caps.has_ept_vpid(caps::ept_vpid::PAGES_2M)
    }

    /// VPIDs available to guests (1..=count; 0 is the host's).
    pub fn vpid_count(&self) -> u32 {
        0xffff
    }
}

/// Per-physical-CPU VMX state: in VMX operation (this handle exists only after VMXON).
#[derive(Clone, Copy)]
pub struct VmxCpu;

impl VmxCpu {
    /// Enters VMX operation on this CPU: IA32_FEATURE_CONTROL enabled for VMX outside SMX and
    /// locked if the firmware left it unlocked (a locked one is taken as it is), CR0.CD/NW
    /// cleared (firmware and GRUB may leave them set) and CR0/CR4 brought to the fixed bits,
    /// VMXON's preconditions checked (hv-core's `check_vmxon`, naming what is wrong), VMXON.
    pub fn enable(alloc: &mut impl FrameAllocator, shared: &VmxShared) -> Result<Self, VmxError> {
        use slipway_hv_core::vmx::caps::{
            FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMX_OUTSIDE_SMX, MSR_IA32_FEATURE_CONTROL,
        };
        let caps = &shared.caps;
        // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX (checked by VmxShared::new).
        let mut control = unsafe { Msr::new(MSR_IA32_FEATURE_CONTROL).read() };
        if control & FEATURE_CONTROL_LOCKED == 0 {
            control |= FEATURE_CONTROL_VMX_OUTSIDE_SMX | FEATURE_CONTROL_LOCKED;
            // SAFETY: the MSR is unlocked: enabling VMX outside SMX and locking is what firmware
            // would have done; nothing else depends on it.
            unsafe { Msr::new(MSR_IA32_FEATURE_CONTROL).write(control) };
        }
        // First the x87/SSE setup (it sets its own CR0/CR4 bits), then the VMX ones on top.
        crate::lazy_state::fpu::enable_on_this_cpu();
        let cr0 = (read_cr0() & !(CR0_CD | CR0_NW)) | caps.cr0_fixed0;
        let cr4 = read_cr4() | caps.cr4_fixed0 | CR4_VMXE;
        let vmxon_pa = alloc_zeroed(alloc, 1, 0)?;
        caps.check_vmxon(control, false, cr0, cr4, vmxon_pa)
            .map_err(VmxError::Vmxon)?;
        // SAFETY: the region is this CPU's own zeroed frame; the revision id goes in its first
        // four bytes; CR0/CR4 meet the fixed bits (checked above; the hypervisor's paging and
        // protection bits are among those allowed); VMXON enters VMX root operation.
        let ok = unsafe {
            (vmxon_pa as *mut u32).write_volatile(caps.basic.revision_id());
            core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack));
            core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack));
            let failed: u8;
            core::arch::asm!(
                "vmxon [{pa}]",
                "setbe {failed}",
                pa = in(reg) &vmxon_pa,
                failed = out(reg_byte) failed,
                options(nostack)
            );
            failed == 0
        };
        if !ok {
            return Err(VmxError::VmxonFailed);
        }
        Ok(VmxCpu)
    }
}

/// CS, SS, DS, ES, FS, GS and TR of this CPU.
fn read_selectors() -> [u16; 7] {
    let mut out = [0u16; 7];
    // SAFETY: reading segment selectors and the task register has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {0:x}, cs",
            "mov {1:x}, ss",
            "mov {2:x}, ds",
            "mov {3:x}, es",
            "mov {4:x}, fs",
            "mov {5:x}, gs",
            "str {6:x}",
            out(reg) out[0],
            out(reg) out[1],
            out(reg) out[2],
            out(reg) out[3],
            out(reg) out[4],
            out(reg) out[5],
            out(reg) out[6],
            options(nomem, nostack)
        )
    };
    out
}

fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) value, options(nomem, nostack)) };
    value
}

fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) value, options(nomem, nostack)) };
    value
}

fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) value, options(nomem, nostack)) };
    value
}

/// VMWRITE to the current VMCS; `Err` with the VM-instruction error on failure.
fn vmwrite(field: F, value: u64) -> Result<(), VmInstructionError> {
    let failed: u8;
    // SAFETY: called in VMX root operation with this vCPU's VMCS current (VMPTRLD in `run`);
    // VMWRITE touches only that VMCS.
    unsafe {
        core::arch::asm!(
            "vmwrite {field}, {value}",
            "setbe {failed}",
            field = in(reg) u64::from(field.encoding()),
            value = in(reg) value,
            failed = out(reg_byte) failed,
            options(nostack)
        )
    };
    if failed == 0 {
        Ok(())
    } else {
        Err(VmInstructionError(vmread(F::VmInstructionError) as u32))
    }
}

/// VMREAD from the current VMCS (0 if the read fails).
fn vmread(field: F) -> u64 {
    let value: u64;
    // SAFETY: as for `vmwrite`; VMREAD has no side effects.
    unsafe {
        core::arch::asm!(
            "vmread {value}, {field}",
            field = in(reg) u64::from(field.encoding()),
            value = out(reg) value,
            options(nostack)
        )
    };
    value
}

/// Guest general-purpose registers (rsp lives in the VMCS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

// World switch: vmx_world_switch(regs, launched) -> 0 after a VM exit, 1 if VMLAUNCH/VMRESUME
// (or the HOST_RSP write) failed. HOST_RSP is written here (this frame's stack pointer, with the
// regs pointer on top); HOST_RIP is `vmx_exit_point`. The guest's GPRs are loaded, the VMCS
// entered; at the exit the guest's GPRs are stored back and the host's callee-saved registers
// restored. RFLAGS after an exit has IF clear: `run` opens a window for the pending interrupt.
global_asm!(
    r#"
    .section .text.vmx_world_switch, "ax"
    .global vmx_world_switch
vmx_world_switch:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, 0x6c14
    vmwrite rax, rsp
    jbe 3f
    mov rax, rdi
    cmp rsi, 0
    mov rbx, [rax + 8]
    mov rcx, [rax + 16]
    mov rdx, [rax + 24]
    mov rsi, [rax + 32]
    mov rdi, [rax + 40]
    mov rbp, [rax + 48]
    mov r8,  [rax + 56]
    mov r9,  [rax + 64]
    mov r10, [rax + 72]
    mov r11, [rax + 80]
    mov r12, [rax + 88]
    mov r13, [rax + 96]
    mov r14, [rax + 104]
    mov r15, [rax + 112]
    mov rax, [rax + 0]
    jne 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    mov eax, 1
    ret

    .global vmx_exit_point
vmx_exit_point:
    push rax
    mov rax, [rsp + 8]
    mov [rax + 8], rbx
    mov [rax + 16], rcx
    mov [rax + 24], rdx
    mov [rax + 32], rsi
    mov [rax + 40], rdi
    mov [rax + 48], rbp
    mov [rax + 56], r8
    mov [rax + 64], r9
    mov [rax + 72], r10
    mov [rax + 80], r11
    mov [rax + 88], r12
    mov [rax + 96], r13
    mov [rax + 104], r14
    mov [rax + 112], r15
    pop qword ptr [rax]
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    xor eax, eax
    ret
"#
);

unsafe extern "C" {
    fn vmx_world_switch(regs: *mut GuestRegs, launched: u64) -> u64;
    fn vmx_exit_point();
}

/// One virtual CPU on VMX.
pub struct VmxVcpu {
    vmcs_pa: u64,
    vpid: u16,
    pub regs: GuestRegs,
    /// The EPT pointer and the entry the VMCS is built from at the first run (hv-core's
    /// `vmx::setup::initial_vmcs`, checked, then written).
    eptp: u64,
    entry: VcpuEntry,
    /// The CPU on which the VMCS was loaded first (it never moves).
    launched_on: Option<usize>,
    /// Launched since the VMCS was last made current: VMRESUME for the next entry.
    entered: bool,
    rip: u64,
    rip_dirty: bool,
    efer: u64,
    efer_dirty: bool,
    cs_access_rights: u32,
    ss_access_rights: u32,
    /// What an instruction emulator reads between runs (the VMCS is inactive then): RSP (written
    /// back before the next entry when `rsp_dirty`), CR0/CR3/CR4 and the CS base.
    rsp: u64,
    rsp_dirty: bool,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    cs_base: u64,
    pending: Option<Event>,
    interrupted: Option<InterruptedEvent>,
    /// Guest RFLAGS and interruptibility state at the last exit (for `interrupt_ready`).
    rflags: u64,
    interruptibility: u64,
    /// Interrupt-window exiting wanted, and what the VMCS has now.
    window_wanted: bool,
    window_set: bool,
    /// The TSC offset wanted, and what the VMCS has now.
    tsc_offset: u64,
    tsc_offset_set: u64,
    /// RDTSC exiting wanted, and what the VMCS has now.
    rdtsc_exiting: bool,
    rdtsc_exiting_set: bool,
    /// Its x87/SSE registers and DR0-DR3 while they are not live on a pCPU.
    pub lazy: crate::lazy_state::LazyState,
}

/// The protocol's form of an entry state (what hv-core's VMCS policy takes).
fn vcpu_entry(entry: EntryState) -> Result<VcpuEntry, VmxError> {
    Ok(match entry {
        EntryState::Pvh32 { rip, rbx } => VcpuEntry::Pvh32 {
            entry_eip: u32::try_from(rip).map_err(|_| VmxError::EntryAbove4GiB)?,
            start_info_gpa: u32::try_from(rbx).map_err(|_| VmxError::EntryAbove4GiB)?,
        },
        EntryState::Long64 { rip, rsp, cr3, rsi } => VcpuEntry::Long64 { rip, rsp, cr3, rsi },
        EntryState::WaitForStartupIpi => VcpuEntry::WaitForStartupIpi,
    })
}

/// Sets or clears `bit` of the current VMCS's primary processor-based controls when `wanted`
/// differs from what the VMCS has (`set`), and records the new state.
fn sync_primary_control(bit: u32, wanted: bool, set: &mut bool) {
    if wanted == *set {
        return;
    }
    let controls = vmread(F::PrimaryProcControls);
    let controls = if wanted {
        controls | u64::from(bit)
    } else {
        controls & !u64::from(bit)
    };
    let _ = vmwrite(F::PrimaryProcControls, controls);
    *set = wanted;
}

impl VmxVcpu {
    /// Builds a vCPU over the zeroed frame at `vmcs_pa` with EPT at `eptp_root` and `vpid`
    /// (never 0). Nothing touches the hardware until its first [`VmxVcpu::run`].
    ///
    /// # Safety
    /// `vmcs_pa` is a zeroed, identity-mapped RW frame owned by this vCPU alone from now on.
    pub unsafe fn new(
        vmcs_pa: u64,
        shared: &VmxShared,
        eptp_root: u64,
        vpid: u32,
        entry_state: EntryState,
    ) -> Result<Self, VmxError> {
        let vpid = u16::try_from(vpid).ok().filter(|&v| v != 0);
        let vpid = vpid.expect("VPIDs are 1..=0xffff (0 belongs to the host)");
        let eptp = slipway_hv_core::vmx::ept::ept_pointer(
            slipway_hv_core::addr::Frame::containing(slipway_hv_core::addr::PhysAddr(eptp_root)),
            &shared.caps,
            false,
            shared.phys_bits,
        )
        .map_err(VmxError::Ept)?;
        let entry = vcpu_entry(entry_state)?;
        // The guest fields common code reads, from the same model the first run writes.
        let state = Self::state(shared, eptp, vpid, entry, &HostState::default());
        let regs = match entry_state {
            EntryState::Pvh32 { rbx, .. } => GuestRegs {
                rbx,
                ..GuestRegs::default()
            },
            EntryState::Long64 { rsi, .. } => GuestRegs {
                rsi,
                ..GuestRegs::default()
            },
            EntryState::WaitForStartupIpi => GuestRegs::default(),
        };
        Ok(VmxVcpu {
            vmcs_pa,
            vpid,
            regs,
            eptp,
            entry,
            launched_on: None,
            entered: false,
            rip: state.get(F::GuestRip),
            rip_dirty: false,
            efer: state.get(F::GuestIa32Efer),
            efer_dirty: false,
            cs_access_rights: state.get(F::GuestCsAccessRights) as u32,
            ss_access_rights: state.get(F::GuestSsAccessRights) as u32,
            rsp: state.get(F::GuestRsp),
            rsp_dirty: false,
            cr0: state.get(F::GuestCr0),
            cr3: state.get(F::GuestCr3),
            cr4: state.get(F::GuestCr4),
            cs_base: state.get(F::GuestCsBase),
            pending: None,
            interrupted: None,
            rflags: 0,
            interruptibility: 0,
            window_wanted: false,
            window_set: false,
            tsc_offset: 0,
            tsc_offset_set: 0,
            rdtsc_exiting: false,
            rdtsc_exiting_set: false,
            lazy: crate::lazy_state::LazyState::initial(),
        })
    }

    /// The VMCS of this vCPU: hv-core's policy (`vmx::setup::initial_vmcs`) over this CPU's
    /// host state.
    fn state(
        shared: &VmxShared,
        eptp: u64,
        vpid: u16,
        entry: VcpuEntry,
        host: &HostState,
    ) -> VmcsState {
        let resources = VcpuResources {
            eptp,
            vpid,
            io_bitmap_a: shared.io_bitmap_a,
            io_bitmap_b: shared.io_bitmap_b,
            msr_bitmap: shared.msr_bitmap,
        };
        let mut state = initial_vmcs(&shared.caps, &shared.controls, host, &resources, entry);
        // Every guest run ends within one scheduler tick even if the tick's external-interrupt
        // exit does not come (bochs 2.7 delivers it only while the guest's RFLAGS.IF is set;
        // the processor does regardless): the VMX-preemption timer, re-armed before each entry.
        if let Some(ticks) = shared.preemption_ticks {
            state.set(
                F::PinBasedControls,
                u64::from(shared.controls.pin | caps::pin::PREEMPTION_TIMER),
            );
            state.set(F::PreemptionTimerValue, ticks);
        }
        state
    }

    /// The VMCS's physical address (freed by the owner when the vCPU is destroyed).
    pub fn vmcs_pa(&self) -> u64 {
        self.vmcs_pa
    }

    /// The vCPU's VPID.
    pub fn vpid(&self) -> u32 {
        u32::from(self.vpid)
    }

    /// This CPU's state, loaded on every exit.
    fn host_state() -> HostState {
        let [cs, _ss, ds, _es, _fs, _gs, tr] = read_selectors();
        let gdt = x86_64::instructions::tables::sgdt();
        let idt = x86_64::instructions::tables::sidt();
        let gdt_base = gdt.base.as_u64();
        // SAFETY: the TSS descriptor the CPU's TR selects lies in this CPU's live GDT (16 bytes
        // in long mode), readable through the hypervisor's tables.
        let (low, high) = unsafe {
            let at = (gdt_base + u64::from(tr & !7)) as *const u64;
            (at.read_volatile(), at.add(1).read_volatile())
        };
        // SAFETY: these MSRs exist on every x86-64 CPU; reading them has no side effects.
        let (fs_base, gs_base, efer, pat) = unsafe {
            (
                Msr::new(MSR_FS_BASE).read(),
                Msr::new(MSR_GS_BASE).read(),
                Msr::new(MSR_EFER).read(),
                Msr::new(MSR_PAT).read(),
            )
        };
        HostState {
            cr0: read_cr0(),
            cr3: read_cr3(),
            cr4: read_cr4(),
            // RPL and TI are 0 in the hypervisor's own GDT selectors; the host area wants them so.
            cs: cs & !7,
            ds: ds & !7,
            tr: tr & !7,
            tr_base: ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | (high << 32),
            gdtr_base: gdt_base,
            idtr_base: idt.base.as_u64(),
            fs_base,
            gs_base,
            efer,
            pat,
            // Rewritten by the world switch before every entry; a canonical placeholder here.
            rsp: crate::cpu::main_stack(0).top,
            rip: vmx_exit_point as *const () as u64,
        }
    }

    /// First run on `cpu`: checks the whole VMCS in software, then VMCLEAR, VMPTRLD, drops stale
    /// translations, and a VMWRITE of every field.
    fn first_load(&mut self, cpu: usize, shared: &VmxShared) -> Result<(), VmExit> {
        let state = Self::state(
            shared,
            self.eptp,
            self.vpid,
            self.entry,
            &Self::host_state(),
        );
        let context = EntryContext {
            caps: &shared.caps,
            phys_addr_bits: shared.phys_bits,
            linear_addr_bits: shared.linear_bits,
            host_ia32e: true,
        };
        if let Err(error) = slipway_hv_core::vmx::check_vm_entry(&state, &context) {
            crate::hvprintln!(
                "vmx: VMCS refused before VMLAUNCH: {error} ({:?})",
                error.area
            );
            return Err(VmExit::InvalidState);
        }
        // SAFETY: the VMCS frame is this vCPU's own zeroed page; the revision id goes first;
        // VMCLEAR then VMPTRLD make it current on this CPU, in VMX operation (VmxCpu::enable).
        let ok = unsafe {
            (self.vmcs_pa as *mut u32).write_volatile(shared.caps.basic.revision_id());
            let failed: u8;
            core::arch::asm!(
                "vmclear [{pa}]",
                "setbe {f1}",
                "vmptrld [{pa}]",
                "setbe {failed}",
                "or {failed}, {f1}",
                pa = in(reg) &self.vmcs_pa,
                f1 = out(reg_byte) _,
                failed = out(reg_byte) failed,
                options(nostack)
            );
            failed == 0
        };
        if !ok {
            crate::hvprintln!("vmx: VMCLEAR/VMPTRLD of a new VMCS failed");
            return Err(VmExit::InvalidState);
        }
        self.flush_stale_translations(shared);
        for (field, value) in state.written() {
            if let Err(error) = vmwrite(field, value) {
                crate::hvprintln!(
                    "vmx: VMWRITE {field} = {value:#x} failed: {}",
                    error.description()
                );
                return Err(VmExit::InvalidState);
            }
        }
        self.launched_on = Some(cpu);
        Ok(())
    }

    /// A VPID and an EPT root frame are reused once their vCPU or domain is gone: before this
    /// vCPU first runs, this CPU forgets every translation cached under its VPID and its EPTP
    /// (hv-core's narrowest supported type). Translations are only used on the CPU that cached
    /// them and a vCPU never moves, so flushing here is enough.
    fn flush_stale_translations(&self, shared: &VmxShared) {
        let vpid: [u64; 2] = [u64::from(self.vpid), 0];
        let ept: [u64; 2] = [self.eptp, 0];
        // SAFETY: INVVPID and INVEPT only drop cached translations; the types are ones the CPU
        // reports (VmxShared::new) and the descriptors name this vCPU's VPID and checked EPTP.
        unsafe {
            core::arch::asm!(
                "invvpid {kind}, [{descriptor}]",
                kind = in(reg) shared.invvpid as u64,
                descriptor = in(reg) &vpid,
                options(nostack)
            );
            core::arch::asm!(
                "invept {kind}, [{descriptor}]",
                kind = in(reg) shared.invept as u64,
                descriptor = in(reg) &ept,
                options(nostack)
            );
        }
    }

    fn make_current(&self) {
        // SAFETY: the VMCS was initialised on this CPU (it never moves) and cleared at the end of
        // its last run; VMPTRLD makes it the current one for the VMREAD/VMWRITEs and the entry
        // that follow.
        unsafe {
            core::arch::asm!("vmptrld [{pa}]", pa = in(reg) &self.vmcs_pa, options(nostack));
        }
    }

    /// Writes what common code changed since the last exit, and re-arms the preemption timer.
    fn sync_to_vmcs(&mut self, shared: &VmxShared) {
        if let Some(ticks) = shared.preemption_ticks {
            let _ = vmwrite(F::PreemptionTimerValue, ticks);
        }
        if self.rip_dirty {
            let _ = vmwrite(F::GuestRip, self.rip);
            self.rip_dirty = false;
        }
        if self.efer_dirty {
            let _ = vmwrite(F::GuestIa32Efer, self.efer);
            self.efer_dirty = false;
        }
        use slipway_hv_core::vmx::caps::proc::{INTERRUPT_WINDOW_EXITING, RDTSC_EXITING};
        sync_primary_control(
            INTERRUPT_WINDOW_EXITING,
            self.window_wanted,
            &mut self.window_set,
        );
        sync_primary_control(
            RDTSC_EXITING,
            self.rdtsc_exiting,
            &mut self.rdtsc_exiting_set,
        );
        if self.tsc_offset != self.tsc_offset_set {
            use slipway_hv_core::vmx::caps::proc::USE_TSC_OFFSETTING;
            let controls = vmread(F::PrimaryProcControls) | u64::from(USE_TSC_OFFSETTING);
            let _ = vmwrite(F::PrimaryProcControls, controls);
            let _ = vmwrite(F::TscOffset, self.tsc_offset);
            self.tsc_offset_set = self.tsc_offset;
        }
        if self.rsp_dirty {
            let _ = vmwrite(F::GuestRsp, self.rsp);
            self.rsp_dirty = false;
        }
        if let Some(event) = self.pending.take() {
            // VM-entry interruption information: vector 7:0, type 10:8, error code valid 11,
            // valid 31.
            let (vector, kind, error_code) = match event {
                Event::Exception { vector, error_code } => (vector, 3u32, error_code),
                Event::Nmi => (2, 2, None),
                Event::Interrupt { vector } => (vector, 0, None),
            };
            let mut info = u32::from(vector) | (kind << 8) | (1 << 31);
            if let Some(code) = error_code {
                info |= 1 << 11;
                let _ = vmwrite(F::EntryExceptionErrorCode, u64::from(code));
            }
            let _ = vmwrite(F::EntryInterruptionInfo, u64::from(info));
        }
    }

    /// Reads the exit and what common code reads.
    fn sync_from_vmcs(&mut self) -> ExitInfo {
        self.rip = vmread(F::GuestRip);
        self.efer = vmread(F::GuestIa32Efer);
        self.cs_access_rights = vmread(F::GuestCsAccessRights) as u32;
        self.ss_access_rights = vmread(F::GuestSsAccessRights) as u32;
        self.rflags = vmread(F::GuestRflags);
        self.interruptibility = vmread(F::GuestInterruptibility);
        self.rsp = vmread(F::GuestRsp);
        self.cr0 = vmread(F::GuestCr0);
        self.cr3 = vmread(F::GuestCr3);
        self.cr4 = vmread(F::GuestCr4);
        self.cs_base = vmread(F::GuestCsBase);
        self.interrupted = exits::decode_idt_vectoring(
            vmread(F::IdtVectoringInfo) as u32,
            vmread(F::IdtVectoringErrorCode) as u32,
        );
        ExitInfo {
            reason: vmread(F::ExitReason) as u32,
            qualification: vmread(F::ExitQualification),
            interruption_info: vmread(F::ExitInterruptionInfo) as u32,
            interruption_error_code: vmread(F::ExitInterruptionErrorCode) as u32,
            instruction_length: vmread(F::ExitInstructionLength) as u32,
            guest_physical_address: vmread(F::GuestPhysicalAddress),
            guest_rip: self.rip,
            rax: self.regs.rax,
            rcx: self.regs.rcx,
            rdx: self.regs.rdx,
        }
    }

    fn gpr(&self, index: u8) -> Option<u64> {
        let r = &self.regs;
        Some(match index {
            0 => r.rax,
            1 => r.rcx,
            2 => r.rdx,
            3 => r.rbx,
            4 => self.rsp,
            5 => r.rbp,
            6 => r.rsi,
            7 => r.rdi,
            8 => r.r8,
            9 => r.r9,
            10 => r.r10,
            11 => r.r11,
            12 => r.r12,
            13 => r.r13,
            14 => r.r14,
            15 => r.r15,
            _ => return None,
        })
    }

    /// A guest write to CR0 or CR4 that touched a host-owned bit: hv-core's `guest_cr_write`
    /// gives the real value and the read shadow, or refuses (#GP, as the processor would). A
    /// write that switches paging switches IA-32e mode with EFER.LME, as the processor does for
    /// a write that does not exit. Returns whether the exit was handled here.
    fn control_register_write(&mut self, qualification: u64, shared: &VmxShared) -> bool {
        let CrAccess::MovToCr { cr, gpr } = exits::decode_cr_access(qualification) else {
            return false;
        };
        let Some(value) = self.gpr(gpr) else {
            return false;
        };
        let which = match cr {
            0 => GuestCr::Cr0,
            4 => GuestCr::Cr4,
            _ => return false,
        };
        let update = match guest_cr_write(&shared.caps, which, value) {
            Ok(update) => update,
            Err(CrWriteRefused::UnsupportedBit(_) | CrWriteRefused::InvalidCombination) => {
                self.pending = Some(Event::GENERAL_PROTECTION);
                return true;
            }
        };
        match which {
            GuestCr::Cr0 => {
                let old = vmread(F::GuestCr0);
                let paging_on = update.real & CR0_PG != 0;
                if (old ^ update.real) & CR0_PG != 0 && self.efer & EFER_LME != 0 {
                    // Long mode needs PAE (else #GP, as on the processor).
                    if paging_on && vmread(F::GuestCr4) & CR4_PAE == 0 {
                        self.pending = Some(Event::GENERAL_PROTECTION);
                        return true;
                    }
                    let controls = vmread(F::EntryControls) as u32;
                    let controls = if paging_on {
                        self.efer |= EFER_LMA;
                        controls | entry::IA32E_MODE_GUEST
                    } else {
                        self.efer &= !EFER_LMA;
                        controls & !entry::IA32E_MODE_GUEST
                    };
                    let _ = vmwrite(F::EntryControls, u64::from(controls));
                    self.efer_dirty = true;
                }
                let _ = vmwrite(F::GuestCr0, update.real);
                let _ = vmwrite(F::Cr0ReadShadow, update.shadow);
            }
            GuestCr::Cr4 => {
                let _ = vmwrite(F::GuestCr4, update.real);
                let _ = vmwrite(F::Cr4ReadShadow, update.shadow);
            }
        }
        // `mov crN, reg` is 3 bytes (4 with a REX prefix): the exit says how long it was.
        let length = vmread(F::ExitInstructionLength);
        self.rip = self.rip.wrapping_add(length);
        self.rip_dirty = true;
        true
    }

    /// Runs the guest until an exit common code handles, and returns it normalized. Control-
    /// register writes and VMX instructions are handled here (VMX instructions raise #UD, as on
    /// a CPU without VMX: CPUID hides it and CR4.VMXE reads 0).
    ///
    /// The VMCS is active on this CPU only during the call: VMCLEAR at its end writes the
    /// processor's cached copy back and deactivates it, so a vCPU that is not running never has
    /// an active VMCS, and its frame can be scrubbed and freed by whichever CPU destroys it
    /// (the processor would otherwise be free to write the cached copy into a reused frame).
    pub fn run(&mut self, cpu: usize, shared: &VmxShared) -> VmExit {
        match self.launched_on {
            None => {
                if let Err(exit) = self.first_load(cpu, shared) {
                    self.clear();
                    return exit;
                }
            }
            Some(on) => {
                assert_eq!(on, cpu, "a VMCS launched on cpu {on} runs on cpu {cpu}");
                self.make_current();
            }
        }
        let exit = self.run_loaded(shared);
        self.clear();
        exit
    }

    /// VMCLEAR: this vCPU's VMCS is written back and inactive; the next entry is a VMLAUNCH.
    fn clear(&mut self) {
        // SAFETY: the VMCS is this vCPU's own frame, initialised by its first load; VMCLEAR
        // only writes the processor's copy back to it and marks it clear.
        unsafe {
            core::arch::asm!("vmclear [{pa}]", pa = in(reg) &self.vmcs_pa, options(nostack));
        }
        self.entered = false;
    }

    /// Entries and exits with the VMCS current, until one for common code.
    fn run_loaded(&mut self, shared: &VmxShared) -> VmExit {
        loop {
            self.sync_to_vmcs(shared);
            let launched = self.launched() as u64;
            let regs = &mut self.regs;
            // XCR0 is not in the VMCS: the guest's is loaded around the entry.
            let (failed, left) = crate::lazy_state::fpu::with_guest_xcr0(self.lazy.xcr0, || {
                // SAFETY: this vCPU's VMCS is current on this CPU (above), fully written and
                // checked; `regs` is a live Rust object; the world switch restores every
                // callee-saved register and the host state comes from the VMCS's host area (this
                // CPU's, written at the first load).
                unsafe { vmx_world_switch(regs, launched) }
            });
            if failed != 0 {
                let error = VmInstructionError(vmread(F::VmInstructionError) as u32);
                crate::hvprintln!(
                    "vmx: VM entry failed: {} (error {})",
                    error.description(),
                    error.0
                );
                return VmExit::InvalidState;
            }
            self.entered = true;
            // XSETBV always exits under VMX: a changed XCR0 is adopted only if the exit handler
            // would have accepted it (as under SVM), else the domain stops.
            if let Some(xcr0) = left
                && !self.lazy.set_xcr0(xcr0)
            {
                return VmExit::Forbidden(
                    slipway_hv_core::vmexit::ForbiddenInstruction::UninterceptedXsetbv,
                );
            }
            // The exit left IF clear: a pending host interrupt (the tick) is taken here, in a
            // window of a few instructions after STI's one-instruction shadow.
            // SAFETY: the host's IDT handles every vector; interrupts are closed again before
            // anything else runs.
            unsafe { core::arch::asm!("sti", "nop", "nop", "nop", "cli", options(nomem, nostack)) };
            let info = self.sync_from_vmcs();
            let basic = info.basic_reason();
            // A #DB exit happens before the processor updates DR6 (the exit qualification has
            // the bits it would have set: B0-B3, BD, BS): set them in DR6, which VMX does not
            // switch and which is this vCPU's while it runs here, so the reflected #DB finds
            // them as on bare metal (SVM updates DR6 itself).
            if basic == exits::reason::EXCEPTION_OR_NMI
                && info.interruption_info & (1 << 31) != 0
                && (info.interruption_info >> 8) & 7 == 3
                && info.interruption_info as u8 == 1
            {
                const TRAP_BITS: u64 = 0xf | (1 << 13) | (1 << 14);
                let dr6: u64;
                // SAFETY: DR6 is the running vCPU's (the hypervisor never uses debug
                // registers); reading and writing its status bits has no other effect.
                unsafe {
                    core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack));
                    let dr6 = (dr6 & !TRAP_BITS) | (info.qualification & TRAP_BITS);
                    core::arch::asm!("mov dr6, {}", in(reg) dr6, options(nomem, nostack));
                }
            }
            // An NMI exit consumed the host's NMI (NMI exiting): hand it to the host's handler,
            // which counts it, as SVM's STGI does after an NMI #VMEXIT.
            if basic == exits::reason::EXCEPTION_OR_NMI
                && info.interruption_info & (1 << 31) != 0
                && (info.interruption_info >> 8) & 7 == 2
            {
                // SAFETY: vector 2 is the host's NMI gate (its own IST stack); it counts and
                // returns with IRETQ.
                unsafe { core::arch::asm!("int 2", options(nomem)) };
            }
            use exits::reason;
            match basic {
                EXIT_CR_ACCESS if self.control_register_write(info.qualification, shared) => {
                    continue;
                }
                // The slice's bound: a scheduling point like the tick's interrupt exit (the
                // pending tick itself was taken by the host right above).
                reason::PREEMPTION_TIMER => return VmExit::ExternalInterrupt,
                reason::VMCLEAR
                | reason::VMLAUNCH
                | reason::VMPTRLD
                | reason::VMPTRST
                | reason::VMREAD
                | reason::VMRESUME
                | reason::VMWRITE
                | reason::VMXOFF
                | reason::VMXON
                | reason::INVEPT
                | reason::INVVPID
                | reason::VMFUNC
                | reason::GETSEC => {
                    self.pending = Some(Event::INVALID_OPCODE);
                    continue;
                }
                _ => return exits::decode_exit(&info),
            }
        }
    }

    fn launched(&self) -> bool {
        self.entered
    }

    fn cpl(&self) -> u8 {
        ((self.ss_access_rights >> ar::DPL_SHIFT) & 3) as u8
    }
}

/// A vCPU bound to the physical CPU that runs it: the interface common code drives.
pub struct BoundVcpu<'a> {
    pub vcpu: &'a mut VmxVcpu,
    pub cpu: usize,
    pub shared: &'a VmxShared,
}

impl VcpuBackend for BoundVcpu<'_> {
    fn run(&mut self) -> VmExit {
        self.vcpu.run(self.cpu, self.shared)
    }

    fn reg(&self, reg: Reg) -> u64 {
        let v = &self.vcpu;
        match reg {
            Reg::Rax => v.regs.rax,
            Reg::Rbx => v.regs.rbx,
            Reg::Rcx => v.regs.rcx,
            Reg::Rdx => v.regs.rdx,
            Reg::Rsi => v.regs.rsi,
            Reg::Rdi => v.regs.rdi,
            Reg::Rip => v.rip,
            Reg::Efer => v.efer,
            Reg::LongMode => u64::from(v.efer & EFER_LMA != 0 && v.cs_access_rights & ar::L != 0),
            Reg::Cpl => u64::from(v.cpl()),
            Reg::Rsp => v.rsp,
            Reg::Rbp => v.regs.rbp,
            Reg::R8 => v.regs.r8,
            Reg::R9 => v.regs.r9,
            Reg::R10 => v.regs.r10,
            Reg::R11 => v.regs.r11,
            Reg::R12 => v.regs.r12,
            Reg::R13 => v.regs.r13,
            Reg::R14 => v.regs.r14,
            Reg::R15 => v.regs.r15,
            Reg::Cr0 => v.cr0,
            Reg::Cr3 => v.cr3,
            Reg::Cr4 => v.cr4,
            Reg::CsBase => v.cs_base,
            Reg::CodeBits => {
                if v.efer & EFER_LMA != 0 && v.cs_access_rights & ar::L != 0 {
                    64
                } else if v.cs_access_rights & ar::DB != 0 {
                    32
                } else {
                    16
                }
            }
            Reg::Xcr0 => v.lazy.xcr0,
        }
    }

    fn set_reg(&mut self, reg: Reg, value: u64) {
        let v = &mut self.vcpu;
        match reg {
            Reg::Rax => v.regs.rax = value,
            Reg::Rbx => v.regs.rbx = value,
            Reg::Rcx => v.regs.rcx = value,
            Reg::Rdx => v.regs.rdx = value,
            Reg::Rsi => v.regs.rsi = value,
            Reg::Rdi => v.regs.rdi = value,
            Reg::Rip => {
                v.rip = value;
                v.rip_dirty = true;
            }
            Reg::Efer => {
                // SVME is AMD's (reserved here); LMA stays the CPU's.
                v.efer = (value & !(EFER_SVME | EFER_LMA)) | (v.efer & EFER_LMA);
                v.efer_dirty = true;
            }
            Reg::Rsp => {
                v.rsp = value;
                v.rsp_dirty = true;
            }
            Reg::Rbp => v.regs.rbp = value,
            Reg::R8 => v.regs.r8 = value,
            Reg::R9 => v.regs.r9 = value,
            Reg::R10 => v.regs.r10 = value,
            Reg::R11 => v.regs.r11 = value,
            Reg::R12 => v.regs.r12 = value,
            Reg::R13 => v.regs.r13 = value,
            Reg::R14 => v.regs.r14 = value,
            Reg::R15 => v.regs.r15 = value,
            Reg::LongMode
            | Reg::Cpl
            | Reg::Cr0
            | Reg::Cr3
            | Reg::Cr4
            | Reg::CsBase
            | Reg::CodeBits => {}
            Reg::Xcr0 => {
                v.lazy.set_xcr0(value);
            }
        }
    }

    fn inject(&mut self, event: Event) {
        self.vcpu.pending = Some(event);
    }

    fn interrupted_event(&self) -> Option<InterruptedEvent> {
        self.vcpu.interrupted
    }

    fn interrupt_ready(&self) -> bool {
        const RFLAGS_IF: u64 = 1 << 9;
        // Blocking by STI or by MOV SS.
        const SHADOW: u64 = 0b11;
        let v = &self.vcpu;
        v.pending.is_none() && v.rflags & RFLAGS_IF != 0 && v.interruptibility & SHADOW == 0
    }

    fn set_interrupt_window(&mut self, wanted: bool) {
        self.vcpu.window_wanted = wanted;
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vcpu.tsc_offset = offset;
    }

    fn start_real_mode(
        &mut self,
        _start: slipway_hv_core::lapic::RealModeStart,
    ) -> Result<(), &'static str> {
        Err(
            "the VMX backend does not start vCPUs at a startup IPI yet (real mode needs its \
             unrestricted-guest state written at the SIPI)",
        )
    }

    fn set_rdtsc_exiting(&mut self, exiting: bool) {
        self.vcpu.rdtsc_exiting = exiting;
    }
}
