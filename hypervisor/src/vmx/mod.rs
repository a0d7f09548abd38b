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

use slipway_hv_core::exit_handler::INTERCEPTED_EXCEPTIONS;
use slipway_hv_core::frame_alloc::FrameAllocator;
use slipway_hv_core::vmexit::{Event, InterruptedEvent, Reg, VcpuBackend, VmExit};
use slipway_hv_core::vmx::caps::{self, entry, exit, pin, proc, proc2};
use slipway_hv_core::vmx::exits::{self, CrAccess, ExitInfo, VmInstructionError};
use slipway_hv_core::vmx::vmcs::access_rights as ar;
use slipway_hv_core::vmx::{
    Control, EntryContext, Segment, SegmentState, VmcsField as F, VmcsState, VmxCapabilities,
};
use x86_64::registers::model_specific::Msr;

pub use slipway_hv_core::hypervisor::EntryState;

const MSR_EFER: u32 = 0xc000_0080;
const MSR_PAT: u32 = 0x277;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// EFER.SVME: AMD's; reserved on Intel (hv-core's exit handler sets it for SVM).
const EFER_SVME: u64 = 1 << 12;
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const CR4_SMXE: u64 = 1 << 14;

/// Exit reasons the backend handles itself (SDM appendix C).
const EXIT_CR_ACCESS: u16 = 28;

/// Why VMX cannot be used.
#[derive(Debug)]
pub enum VmxError {
    /// the CPU does not offer VMX (CPUID 1 ECX bit 5)
    NotSupported,
    /// the firmware locked IA32_FEATURE_CONTROL with VMX outside SMX disabled
    DisabledByFirmware,
    /// a control the hypervisor needs is not available
    Control(slipway_hv_core::vmx::ControlError),
    /// the processor cannot build the EPT pointer
    Ept(slipway_hv_core::vmx::ept::EptpError),
    /// the hypervisor's CR0 or CR4 cannot meet the VMX fixed bits
    FixedBits { cr: u8, bit: u32, set: bool },
    /// no frame for the VMXON region, a VMCS or the bitmaps
    OutOfMemory,
    /// VMXON failed
    VmxonFailed,
}

impl core::fmt::Display for VmxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotSupported => f.write_str("the CPU does not offer VMX (CPUID 1 ECX bit 5)"),
            Self::DisabledByFirmware => f.write_str(
                "VMX is disabled by the firmware (IA32_FEATURE_CONTROL locked without VMX outside SMX)",
            ),
            Self::Control(error) => write!(f, "{error}"),
            Self::Ept(error) => write!(f, "EPT pointer: {error}"),
            Self::FixedBits { cr, bit, set } => write!(
                f,
                "CR{cr} bit {bit} must be {} in VMX operation and cannot be",
                if *set { "0" } else { "1" }
            ),
            Self::OutOfMemory => f.write_str("no frame for the VMXON region, a VMCS or the bitmaps"),
            Self::VmxonFailed => f.write_str("VMXON failed"),
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

/// What every vCPU shares: the control values, the bitmaps (all ones: every port and MSR
/// intercepted) and the capabilities.
#[derive(Clone, Copy)]
pub struct VmxShared {
    pub caps: VmxCapabilities,
    pin: u32,
    primary: u32,
    secondary: u32,
    exit: u32,
    entry: u32,
    io_bitmap_a: u64,
    io_bitmap_b: u64,
    msr_bitmap: u64,
    phys_bits: u8,
    linear_bits: u8,
}

impl VmxShared {
    /// Computes the controls from the (TRUE) capability MSRs and allocates the bitmaps.
    pub fn new(alloc: &mut impl FrameAllocator) -> Result<Self, VmxError> {
        if !supported() {
            return Err(VmxError::NotSupported);
        }
        let caps = capabilities();
        let value = |control, required, optional, forbidden| {
            caps.control_value(control, required, optional, forbidden)
                .map_err(VmxError::Control)
        };
        let pin = value(
            Control::PinBased,
            pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING,
            0,
            pin::POSTED_INTERRUPTS | pin::PREEMPTION_TIMER,
        )?;
        let primary = value(
            Control::PrimaryProc,
            proc::HLT_EXITING
                | proc::MWAIT_EXITING
                | proc::MONITOR_EXITING
                | proc::RDPMC_EXITING
                | proc::USE_IO_BITMAPS
                | proc::USE_MSR_BITMAPS
                | proc::ACTIVATE_SECONDARY_CONTROLS,
            0,
            // Exits the backend does not decode: a CPU that forces them is named, not run.
            proc::CR3_LOAD_EXITING
                | proc::CR3_STORE_EXITING
                | proc::CR8_LOAD_EXITING
                | proc::CR8_STORE_EXITING
                | proc::INVLPG_EXITING
                | proc::MOV_DR_EXITING
                | proc::RDTSC_EXITING
                | proc::MONITOR_TRAP_FLAG,
        )?;
        let secondary = value(
            Control::SecondaryProc,
            proc2::ENABLE_EPT
                | proc2::ENABLE_VPID
                | proc2::UNRESTRICTED_GUEST
                | proc2::WBINVD_EXITING,
            0,
            0,
        )?;
        let exit = value(
            Control::Exit,
            exit::HOST_ADDRESS_SPACE_SIZE | exit::SAVE_EFER | exit::LOAD_EFER,
            exit::SAVE_PAT | exit::LOAD_PAT,
            exit::ACK_INTERRUPT_ON_EXIT,
        )?;
        let entry = value(Control::Entry, entry::LOAD_EFER, entry::LOAD_PAT, 0)?;
        let (phys_bits, linear_bits) = address_widths();
        Ok(VmxShared {
            caps,
            pin,
            primary,
            secondary,
            exit,
            entry,
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

/// Per-physical-CPU VMX state: in VMX operation with this VMXON region. A plain copyable handle.
#[derive(Clone, Copy)]
pub struct VmxCpu {
    #[allow(dead_code)]
    vmxon_pa: u64,
}

impl VmxCpu {
    /// Enters VMX operation on this CPU: IA32_FEATURE_CONTROL set (and locked) if the firmware
    /// left it unlocked, CR0 and CR4 brought to the fixed bits (CR0.CD/NW cleared: firmware and
    /// GRUB may leave them set), VMXON.
    pub fn enable(alloc: &mut impl FrameAllocator, shared: &VmxShared) -> Result<Self, VmxError> {
        use slipway_hv_core::vmx::caps::{
            FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMX_OUTSIDE_SMX, MSR_IA32_FEATURE_CONTROL,
        };
        let caps = &shared.caps;
        // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX (checked by VmxShared::new).
        let control = unsafe { Msr::new(MSR_IA32_FEATURE_CONTROL).read() };
        if control & FEATURE_CONTROL_LOCKED != 0 {
            if control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
                return Err(VmxError::DisabledByFirmware);
            }
        } else {
            // SAFETY: the MSR is unlocked: enabling VMX outside SMX and locking is what firmware
            // would have done; nothing else depends on it.
            unsafe {
                Msr::new(MSR_IA32_FEATURE_CONTROL)
                    .write(control | FEATURE_CONTROL_VMX_OUTSIDE_SMX | FEATURE_CONTROL_LOCKED)
            };
        }
        let cr0 = (read_cr0() & !(CR0_CD | CR0_NW)) | caps.cr0_fixed0;
        if let Some((bit, set)) = caps.cr0_violation(cr0, false) {
            return Err(VmxError::FixedBits { cr: 0, bit, set });
        }
        let cr4 = read_cr4() | caps.cr4_fixed0 | CR4_VMXE;
        if let Some((bit, set)) = caps.cr4_violation(cr4) {
            return Err(VmxError::FixedBits { cr: 4, bit, set });
        }
        crate::lazy_state::fpu::enable_on_this_cpu();
        let vmxon_pa = alloc_zeroed(alloc, 1, 0)?;
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
        Ok(VmxCpu { vmxon_pa })
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
    /// The EPT pointer and the entry state the VMCS is built from at the first run (checked,
    /// then written).
    eptp: u64,
    entry_state: EntryState,
    /// The CPU on which the VMCS was loaded first (it never moves).
    launched_on: Option<usize>,
    /// VMLAUNCH succeeded once: VMRESUME from now on.
    entered: bool,
    rip: u64,
    rip_dirty: bool,
    efer: u64,
    efer_dirty: bool,
    cs_access_rights: u32,
    ss_access_rights: u32,
    pending: Option<Event>,
    interrupted: Option<InterruptedEvent>,
    /// Its x87/SSE registers and DR0-DR3 while they are not live on a pCPU.
    pub lazy: crate::lazy_state::LazyState,
}

fn segment(selector: u16, access_rights: u32, limit: u32) -> SegmentState {
    SegmentState {
        selector,
        base: 0,
        limit,
        access_rights,
    }
}

impl VmxVcpu {
    /// Builds a vCPU over the zeroed frame at `vmcs_pa`: the VMCS model with deny-by-default
    /// controls, EPT at `eptp_root`, `vpid` (never 0), the CR0/CR4 masks and the entry state.
    /// Nothing touches the hardware until its first [`VmxVcpu::run`].
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
        assert!(vpid != 0 && vpid <= 0xffff, "VPID 0 belongs to the host");
        let caps = &shared.caps;
        let eptp = slipway_hv_core::vmx::ept::ept_pointer(
            slipway_hv_core::addr::Frame::containing(slipway_hv_core::addr::PhysAddr(eptp_root)),
            caps,
            false,
            shared.phys_bits,
        )
        .map_err(VmxError::Ept)?;
        let s = Self::build_state(shared, eptp, vpid, entry_state);
        let (rbx, rsi) = match entry_state {
            EntryState::Pvh32 { rbx, .. } => (rbx, 0),
            EntryState::Long64 { rsi, .. } => (0, rsi),
        };
        let regs = GuestRegs {
            rbx,
            rsi,
            ..GuestRegs::default()
        };
        Ok(VmxVcpu {
            vmcs_pa,
            vpid: vpid as u16,
            regs,
            eptp,
            entry_state,
            launched_on: None,
            entered: false,
            rip: s.get(F::GuestRip),
            rip_dirty: false,
            efer: s.get(F::GuestIa32Efer),
            efer_dirty: false,
            cs_access_rights: s.get(F::GuestCsAccessRights) as u32,
            ss_access_rights: ar::DATA,
            pending: None,
            interrupted: None,
            lazy: crate::lazy_state::LazyState::initial(),
        })
    }

    /// The VMCS model of a new vCPU: deny-by-default controls, EPT at `eptp`, `vpid`, the
    /// CR0/CR4 masks and shadows, and the guest state of `entry_state` (host state is added on
    /// the CPU that runs it).
    fn build_state(shared: &VmxShared, eptp: u64, vpid: u32, entry_state: EntryState) -> VmcsState {
        let caps = &shared.caps;
        let mut s = VmcsState::new();
        s.set(F::PinBasedControls, u64::from(shared.pin));
        s.set(F::PrimaryProcControls, u64::from(shared.primary));
        s.set(F::SecondaryProcControls, u64::from(shared.secondary));
        s.set(F::ExitControls, u64::from(shared.exit));
        s.set(F::ExceptionBitmap, u64::from(INTERCEPTED_EXCEPTIONS));
        s.set(F::IoBitmapA, shared.io_bitmap_a);
        s.set(F::IoBitmapB, shared.io_bitmap_b);
        s.set(F::MsrBitmap, shared.msr_bitmap);
        s.set(F::EptPointer, eptp);
        s.set(F::Vpid, u64::from(vpid));
        s.set(F::VmcsLinkPointer, u64::MAX);
        s.set(F::Cr3TargetCount, 0);
        // The guest owns every CR0/CR4 bit except those VMX fixes (NE; VMXE; PE and PG are free
        // with unrestricted guest) and the ones it may never set (SMXE: GETSEC; VMXE: VMX is
        // hidden): a write that changes one of them exits and is checked here.
        let cr0_mask = (caps.cr0_fixed0 & !(CR0_PE | CR0_PG)) | CR0_NE | CR0_CD | CR0_NW;
        let cr4_mask = caps.cr4_fixed0 | CR4_VMXE | CR4_SMXE | !caps.cr4_fixed1;
        s.set(F::Cr0GuestHostMask, cr0_mask);
        s.set(F::Cr4GuestHostMask, cr4_mask);

        let (cs, tr_type, cr0_view, cr3, cr4_view, efer, rip, rsp, ia32e) = match entry_state {
            EntryState::Pvh32 { rip, .. } => (
                0xb | ar::S | ar::P | ar::DB | ar::G,
                0xb,
                CR0_PE | CR0_ET | CR0_NE,
                0,
                0,
                0,
                rip,
                0,
                false,
            ),
            EntryState::Long64 { rip, rsp, cr3, .. } => (
                ar::CODE64,
                0xb,
                CR0_PG | CR0_NE | CR0_ET | CR0_MP | CR0_PE,
                cr3,
                CR4_PAE,
                EFER_LME | EFER_LMA | EFER_NXE,
                rip,
                rsp,
                true,
            ),
        };
        let entry_controls = shared.entry | if ia32e { entry::IA32E_MODE_GUEST } else { 0 };
        s.set(F::EntryControls, u64::from(entry_controls));
        s.set(F::Cr0ReadShadow, cr0_view);
        s.set(F::Cr4ReadShadow, cr4_view);
        // The fixed bits on top of the guest's view, except PE and PG, which are the guest's own
        // with unrestricted guest.
        s.set(
            F::GuestCr0,
            (cr0_view | (caps.cr0_fixed0 & !(CR0_PE | CR0_PG))) & !(CR0_CD | CR0_NW),
        );
        s.set(F::GuestCr3, cr3);
        s.set(F::GuestCr4, cr4_view | caps.cr4_fixed0);
        s.set(F::GuestIa32Efer, efer);
        s.set(F::GuestIa32Pat, 0x0007_0406_0007_0406);
        s.set(F::GuestIa32Debugctl, 0);
        s.set(F::GuestDr7, 0x400);
        s.set(F::GuestRflags, 0x2);
        s.set(F::GuestRip, rip);
        s.set(F::GuestRsp, rsp);
        s.set(F::GuestSysenterCs, 0);
        s.set(F::GuestSysenterEsp, 0);
        s.set(F::GuestSysenterEip, 0);
        s.set(F::GuestInterruptibility, 0);
        s.set(F::GuestActivityState, 0);
        s.set(F::GuestPendingDebugExceptions, 0);
        s.set_guest_segment(Segment::Cs, segment(0x08, cs, 0xffff_ffff));
        for seg in [
            Segment::Ds,
            Segment::Es,
            Segment::Ss,
            Segment::Fs,
            Segment::Gs,
        ] {
            s.set_guest_segment(seg, segment(0x10, ar::DATA, 0xffff_ffff));
        }
        s.set_guest_segment(Segment::Tr, segment(0x18, tr_type | ar::P, 0x67));
        s.set_guest_segment(Segment::Ldtr, segment(0, ar::UNUSABLE_SEGMENT, 0));
        s.set(F::GuestGdtrBase, 0);
        s.set(F::GuestGdtrLimit, 0);
        s.set(F::GuestIdtrBase, 0);
        s.set(F::GuestIdtrLimit, 0);
        s
    }

    /// The VMCS's physical address (freed by the owner when the vCPU is destroyed).
    pub fn vmcs_pa(&self) -> u64 {
        self.vmcs_pa
    }

    /// The vCPU's VPID.
    pub fn vpid(&self) -> u32 {
        u32::from(self.vpid)
    }

    /// Host state of this CPU, added to the model before the checks and the first write.
    fn host_state(s: &mut VmcsState, shared: &VmxShared) {
        s.set(F::HostCr0, read_cr0());
        s.set(F::HostCr3, read_cr3());
        s.set(F::HostCr4, read_cr4());
        let selectors = read_selectors();
        for (field, value) in [
            F::HostCsSelector,
            F::HostSsSelector,
            F::HostDsSelector,
            F::HostEsSelector,
            F::HostFsSelector,
            F::HostGsSelector,
            F::HostTrSelector,
        ]
        .into_iter()
        .zip(selectors)
        {
            // RPL and TI are 0 in the hypervisor's own GDT selectors; the host area wants them so.
            s.set(field, u64::from(value & !7));
        }
        let tr = selectors[6];
        let gdt = x86_64::instructions::tables::sgdt();
        let idt = x86_64::instructions::tables::sidt();
        let gdt_base = gdt.base.as_u64();
        s.set(F::HostGdtrBase, gdt_base);
        s.set(F::HostIdtrBase, idt.base.as_u64());
        // SAFETY: the TSS descriptor the CPU's TR selects lies in this CPU's live GDT (16 bytes
        // in long mode), readable through the hypervisor's tables.
        let (low, high) = unsafe {
            let at = (gdt_base + u64::from(tr & !7)) as *const u64;
            (at.read_volatile(), at.add(1).read_volatile())
        };
        let tr_base = ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | (high << 32);
        s.set(F::HostTrBase, tr_base);
        // SAFETY: these MSRs exist on every x86-64 CPU; reading them has no side effects.
        unsafe {
            s.set(F::HostFsBase, Msr::new(MSR_FS_BASE).read());
            s.set(F::HostGsBase, Msr::new(MSR_GS_BASE).read());
            s.set(
                F::HostSysenterCs,
                Msr::new(MSR_SYSENTER_CS).read() & 0xffff_ffff,
            );
            s.set(F::HostSysenterEsp, Msr::new(MSR_SYSENTER_ESP).read());
            s.set(F::HostSysenterEip, Msr::new(MSR_SYSENTER_EIP).read());
            s.set(F::HostIa32Efer, Msr::new(MSR_EFER).read());
            if shared.exit & exit::LOAD_PAT != 0 {
                s.set(F::HostIa32Pat, Msr::new(MSR_PAT).read());
            }
        }
        // Rewritten by the world switch before every entry; a canonical placeholder for the checks.
        s.set(F::HostRsp, crate::cpu::main_stack(0).top);
        s.set(F::HostRip, vmx_exit_point as *const () as u64);
    }

    /// First run on `cpu`: checks the whole VMCS in software, then VMCLEAR, VMPTRLD and a
    /// VMWRITE of every field.
    fn first_load(&mut self, cpu: usize, shared: &VmxShared) -> Result<(), VmExit> {
        let mut state =
            Self::build_state(shared, self.eptp, u32::from(self.vpid), self.entry_state);
        Self::host_state(&mut state, shared);
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
    /// (single-context when the CPU offers it, else all contexts). Translations are only used
    /// on the CPU that cached them and a vCPU never moves, so flushing here is enough.
    fn flush_stale_translations(&self, shared: &VmxShared) {
        use caps::ept_vpid::{
            INVEPT, INVEPT_ALL_CONTEXT, INVEPT_SINGLE_CONTEXT, INVVPID, INVVPID_ALL_CONTEXT,
            INVVPID_SINGLE_CONTEXT,
        };
        let caps = &shared.caps;
        let vpid_type = if caps.has_ept_vpid(INVVPID) && caps.has_ept_vpid(INVVPID_SINGLE_CONTEXT) {
            Some(1u64)
        } else if caps.has_ept_vpid(INVVPID) && caps.has_ept_vpid(INVVPID_ALL_CONTEXT) {
            Some(2)
        } else {
            None
        };
        let ept_type = if caps.has_ept_vpid(INVEPT) && caps.has_ept_vpid(INVEPT_SINGLE_CONTEXT) {
            Some(1u64)
        } else if caps.has_ept_vpid(INVEPT) && caps.has_ept_vpid(INVEPT_ALL_CONTEXT) {
            Some(2)
        } else {
            None
        };
        if let Some(kind) = vpid_type {
            let descriptor: [u64; 2] = [u64::from(self.vpid), 0];
            // SAFETY: INVVPID only drops cached translations; the type is one the CPU reports
            // and the descriptor names this vCPU's VPID (never 0).
            unsafe {
                core::arch::asm!("invvpid {}, [{}]", in(reg) kind, in(reg) &descriptor, options(nostack))
            };
        }
        if let Some(kind) = ept_type {
            let descriptor: [u64; 2] = [self.eptp, 0];
            // SAFETY: INVEPT only drops cached translations; the type is one the CPU reports
            // and the descriptor holds this vCPU's checked EPTP.
            unsafe {
                core::arch::asm!("invept {}, [{}]", in(reg) kind, in(reg) &descriptor, options(nostack))
            };
        }
        if vpid_type.is_none() || ept_type.is_none() {
            crate::hvprintln!(
                "vmx: WARNING: the CPU cannot invalidate {} translations: a reused VPID or EPT root may see stale entries",
                if vpid_type.is_none() { "VPID" } else { "EPT" }
            );
        }
    }

    fn make_current(&self) {
        // SAFETY: the VMCS was cleared and launched on this CPU (it never moves); VMPTRLD makes it
        // the current one for the VMREAD/VMWRITEs and the entry that follow.
        unsafe {
            core::arch::asm!("vmptrld [{pa}]", pa = in(reg) &self.vmcs_pa, options(nostack));
        }
    }

    /// Writes what common code changed since the last exit.
    fn sync_to_vmcs(&mut self) {
        if self.rip_dirty {
            let _ = vmwrite(F::GuestRip, self.rip);
            self.rip_dirty = false;
        }
        if self.efer_dirty {
            let _ = vmwrite(F::GuestIa32Efer, self.efer);
            self.efer_dirty = false;
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
            4 => vmread(F::GuestRsp),
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

    /// A guest write to CR0 or CR4 that touched a masked bit: applied with the fixed bits kept
    /// (the guest sees its own value in the read shadow); a bit the guest may never set (VMXE,
    /// SMXE, one the CPU lacks) raises #GP, as on a CPU without VMX. Returns whether handled.
    fn control_register_write(&mut self, qualification: u64, shared: &VmxShared) -> bool {
        let caps = &shared.caps;
        let CrAccess::MovToCr { cr, gpr } = exits::decode_cr_access(qualification) else {
            return false;
        };
        let Some(value) = self.gpr(gpr) else {
            return false;
        };
        match cr {
            0 => {
                if value >> 32 != 0 || (value & CR0_PG != 0 && value & CR0_PE == 0) {
                    self.pending = Some(Event::GENERAL_PROTECTION);
                    return true;
                }
                let old = vmread(F::GuestCr0);
                let real = (value | (caps.cr0_fixed0 & !(CR0_PE | CR0_PG))) & !(CR0_CD | CR0_NW);
                // Paging switched by this write: IA-32e mode follows EFER.LME, as the CPU does
                // when the write does not exit.
                if (old ^ real) & CR0_PG != 0 && self.efer & EFER_LME != 0 {
                    let entry_controls = vmread(F::EntryControls) as u32;
                    if real & CR0_PG != 0 {
                        self.efer |= EFER_LMA;
                        let _ = vmwrite(
                            F::EntryControls,
                            u64::from(entry_controls | entry::IA32E_MODE_GUEST),
                        );
                    } else {
                        self.efer &= !EFER_LMA;
                        let _ = vmwrite(
                            F::EntryControls,
                            u64::from(entry_controls & !entry::IA32E_MODE_GUEST),
                        );
                    }
                    self.efer_dirty = true;
                }
                let _ = vmwrite(F::GuestCr0, real);
                let _ = vmwrite(F::Cr0ReadShadow, value);
            }
            4 => {
                if value & (CR4_VMXE | CR4_SMXE) != 0 || value & !caps.cr4_fixed1 != 0 {
                    self.pending = Some(Event::GENERAL_PROTECTION);
                    return true;
                }
                let _ = vmwrite(F::GuestCr4, value | caps.cr4_fixed0);
                let _ = vmwrite(F::Cr4ReadShadow, value);
            }
            _ => return false,
        }
        self.rip = self.rip.wrapping_add(3);
        self.rip_dirty = true;
        true
    }

    /// Runs the guest until an exit common code handles, and returns it normalized. Control-
    /// register writes and VMX instructions are handled here (VMX instructions raise #UD, as on
    /// a CPU without VMX: CPUID hides it and CR4.VMXE reads 0).
    pub fn run(&mut self, cpu: usize, shared: &VmxShared) -> VmExit {
        match self.launched_on {
            None => {
                if let Err(exit) = self.first_load(cpu, shared) {
                    return exit;
                }
            }
            Some(on) => {
                assert_eq!(on, cpu, "a VMCS launched on cpu {on} runs on cpu {cpu}");
                self.make_current();
            }
        }
        loop {
            self.sync_to_vmcs();
            // SAFETY: this vCPU's VMCS is current on this CPU (above), fully written and checked;
            // `regs` is a live Rust object; the world switch restores every callee-saved register
            // and the host state comes from the VMCS's host area (this CPU's, written at the
            // first load).
            let failed = unsafe { vmx_world_switch(&mut self.regs, self.launched() as u64) };
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
            // The exit left IF clear: a pending host interrupt (the tick) is taken here.
            x86_64::instructions::interrupts::enable();
            core::hint::spin_loop();
            x86_64::instructions::interrupts::disable();
            let info = self.sync_from_vmcs();
            let basic = info.basic_reason();
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
            Reg::LongMode | Reg::Cpl => {}
        }
    }

    fn inject(&mut self, event: Event) {
        self.vcpu.pending = Some(event);
    }

    fn interrupted_event(&self) -> Option<InterruptedEvent> {
        self.vcpu.interrupted
    }
}
