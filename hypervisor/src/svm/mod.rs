//! The AMD SVM backend: enabling SVM, the world switch, VMCB setup with deny-by-default
//! intercepts, nested paging, event injection, and normalizing #VMEXITs into [`VmExit`].

pub mod vmcb;

use core::arch::global_asm;

use slipway_hv_core::frame_alloc::FrameAllocator;
use x86_64::registers::model_specific::Msr;

use slipway_hv_core::vmexit::{
    Event, ForbiddenInstruction, InterruptedEvent, Reg, VcpuBackend, VmExit,
};
use vmcb::{Vmcb, control, exit, save};

const MSR_EFER: u32 = 0xc000_0080;
const MSR_VM_CR: u32 = 0xc001_0114;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
const EFER_SVME: u64 = 1 << 12;
const VM_CR_SVMDIS: u64 = 1 << 4;

/// Guest general-purpose registers the VMCB does not hold (rax and rsp live in the VMCB).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
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

// World switch: svm_world_switch(vmcb_pa, regs, host_state_pa). GIF is cleared first, then
// RFLAGS.IF set: with V_INTR_MASKING the host's IF at VMRUN decides whether physical interrupts
// exit the guest, and GIF=0 keeps them from reaching the host meanwhile. VMLOAD the guest's
// FS/GS/TR/LDTR/syscall MSRs, load its GPRs, VMRUN; after #VMEXIT save the guest's GPRs and VMSAVE
// its hidden state, VMLOAD the host's (TR points at the TSS with the IST stacks), then STGI: a
// pending physical interrupt (the scheduler tick) is taken right there by the host's IDT, and
// CLI closes the window.
//
// x87/SSE/AVX state is not part of this switch (VMRUN does not switch it either; XCR0 is loaded
// around the call, `lazy_state::fpu::with_guest_xcr0`): it belongs to the
// vCPU that last ran on this pCPU and stays live in the registers across its exits. The
// hypervisor is soft-float and never touches those registers, which is what makes that sound;
// `Vcpus::switch_lazy_state` (vm.rs) swaps the state (lazy_state/fpu.rs, and the debug registers: lazy_state/debug_regs.rs) when
// the pCPU moves to a different vCPU.
global_asm!(
    r#"
    .section .text.svm_world_switch, "ax"
    .global svm_world_switch
svm_world_switch:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rsi
    push rdx
    push rdi
    clgi
    sti
    mov rax, rdi
    vmload rax
    mov rax, rsi
    mov rbx, [rax + 0]
    mov rcx, [rax + 8]
    mov rdx, [rax + 16]
    mov rsi, [rax + 24]
    mov rdi, [rax + 32]
    mov rbp, [rax + 40]
    mov r8,  [rax + 48]
    mov r9,  [rax + 56]
    mov r10, [rax + 64]
    mov r11, [rax + 72]
    mov r12, [rax + 80]
    mov r13, [rax + 88]
    mov r14, [rax + 96]
    mov r15, [rax + 104]
    mov rax, [rsp]
    vmrun rax
    vmsave rax
    mov rax, [rsp + 16]
    mov [rax + 0], rbx
    mov [rax + 8], rcx
    mov [rax + 16], rdx
    mov [rax + 24], rsi
    mov [rax + 32], rdi
    mov [rax + 40], rbp
    mov [rax + 48], r8
    mov [rax + 56], r9
    mov [rax + 64], r10
    mov [rax + 72], r11
    mov [rax + 80], r12
    mov [rax + 88], r13
    mov [rax + 96], r14
    mov [rax + 104], r15
    mov rax, [rsp + 8]
    vmload rax
    stgi
    nop
    cli
    add rsp, 24
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#
);

unsafe extern "C" {
    fn svm_world_switch(vmcb_pa: u64, regs: *mut GuestRegs, host_state_pa: u64);
}

/// Why SVM cannot be used.
#[derive(Debug)]
pub enum SvmError {
    /// the CPU does not offer SVM (CPUID 0x80000001 ECX bit 2)
    NotSupported,
    /// SVM is disabled by the firmware (VM_CR.SVMDIS)
    DisabledByFirmware,
    /// the CPU has no nested paging (CPUID 0x8000000A EDX bit 0)
    NoNestedPaging,
    /// no frame for the host save area or the permission maps
    OutOfMemory,
}

impl core::fmt::Display for SvmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotSupported => "the CPU does not offer SVM (CPUID 0x80000001 ECX bit 2)",
            Self::DisabledByFirmware => "SVM is disabled by the firmware (VM_CR.SVMDIS)",
            Self::NoNestedPaging => "the CPU has no nested paging (CPUID 0x8000000A EDX bit 0)",
            Self::OutOfMemory => "no frame for the host save area, a VMCB or the permission maps",
        })
    }
}

/// Per-physical-CPU SVM state: the host save area (VM_HSAVE_PA) and the host's VMSAVE page.
/// A plain copyable handle: the runner takes a copy under the lock and needs no reference.
#[derive(Clone, Copy)]
pub struct SvmCpu {
    host_state_pa: u64,
}

/// I/O and MSR permission maps, shared by every vCPU (all bits set: everything intercepted).
#[derive(Clone, Copy)]
pub struct PermissionMaps {
    iopm_pa: u64,
    msrpm_pa: u64,
}

fn alloc_zeroed(alloc: &mut impl FrameAllocator, count: u64) -> Result<u64, SvmError> {
    let frame = alloc
        .allocate_contiguous(count, 1)
        .map_err(|_| SvmError::OutOfMemory)?;
    let pa = frame.start().0;
    // SAFETY: freshly allocated frames from free RAM, identity-mapped RW in the hypervisor's tables.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, (count * 4096) as usize) };
    Ok(pa)
}

/// Checks SVM and nested-paging support.
pub fn check_support() -> Result<(), SvmError> {
    let ext = core::arch::x86_64::__cpuid(0x8000_0001);
    if ext.ecx & (1 << 2) == 0 {
        return Err(SvmError::NotSupported);
    }
    // SAFETY: VM_CR exists on every CPU with SVM; reading it has no side effects.
    if unsafe { Msr::new(MSR_VM_CR).read() } & VM_CR_SVMDIS != 0 {
        return Err(SvmError::DisabledByFirmware);
    }
    let svm_features = core::arch::x86_64::__cpuid(0x8000_000a);
    if svm_features.edx & 1 == 0 {
        return Err(SvmError::NoNestedPaging);
    }
    Ok(())
}

/// Clears GIF on this CPU: interrupts and NMIs stay pending until the world switch's VMRUN
/// (which sets GIF for the guest) or its STGI after the #VMEXIT.
pub fn clear_gif() {
    // SAFETY: CLGI only holds interrupts and NMIs pending; SVM is enabled on every CPU that runs
    // the scheduler loop, and the world switch, entered next, sets GIF again.
    unsafe { core::arch::asm!("clgi", options(nomem, nostack)) };
}

/// Number of ASIDs the CPU supports (CPUID 0x8000000A EBX); ASID 0 is the host's.
pub fn asid_count() -> u32 {
    core::arch::x86_64::__cpuid(0x8000_000a).ebx
}

/// Builds the permission maps: IOPM (12 KiB) and MSRPM (8 KiB), every bit set but the MSRs the
/// world switch keeps per guest (`slipway_hv_core::svm_msrpm`). Deny by default: no port and no
/// other MSR reaches hardware; the exit handler decides per access.
pub fn permission_maps(alloc: &mut impl FrameAllocator) -> Result<PermissionMaps, SvmError> {
    use slipway_hv_core::svm_msrpm::{MSRPM_SIZE, allow_guest_owned};
    let iopm_pa = alloc_zeroed(alloc, 3)?;
    let msrpm_pa = alloc_zeroed(alloc, 2)?;
    // SAFETY: both ranges were just allocated for these maps, are mapped RW and are not
    // referenced anywhere else yet; the MSRPM is two pages, MSRPM_SIZE bytes.
    unsafe {
        core::ptr::write_bytes(iopm_pa as *mut u8, 0xff, 3 * 4096);
        let msrpm = &mut *(msrpm_pa as *mut [u8; MSRPM_SIZE]);
        msrpm.fill(0xff);
        allow_guest_owned(msrpm);
    }
    Ok(PermissionMaps { iopm_pa, msrpm_pa })
}

impl SvmCpu {
    /// Enables SVM on the calling CPU.
    pub fn enable(alloc: &mut impl FrameAllocator) -> Result<Self, SvmError> {
        check_support()?;
        let hsave = alloc_zeroed(alloc, 1)?;
        let host_state_pa = alloc_zeroed(alloc, 1)?;
        crate::lazy_state::fpu::enable_on_this_cpu();
        // SAFETY: setting EFER.SVME on a CPU that supports SVM (checked) and giving it a zeroed
        // page it owns as host save area; VMSAVE writes the host's current hidden segment state
        // (TR with the IST stacks, FS/GS) into a page this CPU owns.
        unsafe {
            let mut efer = Msr::new(MSR_EFER);
            efer.write(efer.read() | EFER_SVME);
            Msr::new(MSR_VM_HSAVE_PA).write(hsave);
            core::arch::asm!("vmsave rax", in("rax") host_state_pa, options(nostack));
        }
        Ok(Self { host_state_pa })
    }
}

/// One virtual CPU on SVM.
pub struct SvmVcpu {
    vmcb: Vmcb,
    pub regs: GuestRegs,
    /// Its address-space id (given back, and reused, when the vCPU is destroyed).
    asid: u32,
    /// Its x87/SSE registers and DR0-DR3 while they are not live on a pCPU (hv-core tracks
    /// which pCPU holds them).
    pub lazy: crate::lazy_state::LazyState,
}

pub use slipway_hv_core::hypervisor::EntryState;

// EVENTINJ / EXITINTINFO fields (APM vol. 2, 15.20): vector 7:0, type 10:8, EV 11, V 31,
// error code 63:32.
const EVENT_VALID: u64 = 1 << 31;
const EVENT_ERROR_CODE_VALID: u64 = 1 << 11;
const EVENT_TYPE_INTR: u64 = 0;
const EVENT_TYPE_NMI: u64 = 2;
const EVENT_TYPE_EXCEPTION: u64 = 3;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

// Segment attributes in the VMCB's packed format (type | S<<4 | DPL<<5 | P<<7 | L<<9 | D<<10 | G<<11).
const ATTR_CODE32: u16 = 0x9b | (1 << 10) | (1 << 11);
const ATTR_DATA32: u16 = 0x93 | (1 << 10) | (1 << 11);
const ATTR_TSS32_BUSY: u16 = 0x8b;
const ATTR_CODE64: u16 = 0x9b | (1 << 9) | (1 << 11);
const ATTR_TSS64_BUSY: u16 = 0x8b;
const ATTR_LDT: u16 = 0x82;

impl SvmVcpu {
    /// Creates a vCPU with its VMCB in the zeroed frame at `vmcb_pa`: deny-by-default
    /// intercepts, nested paging at `ncr3`, `asid` (never 0; its TLB entries are flushed at the
    /// first VMRUN, so a reused id carries nothing over), and the entry state.
    ///
    /// # Safety
    /// `vmcb_pa` is a zeroed, identity-mapped RW frame owned by this vCPU alone from now on.
    pub unsafe fn new(
        vmcb_pa: u64,
        maps: PermissionMaps,
        ncr3: u64,
        asid: u32,
        entry: EntryState,
    ) -> Self {
        assert!(asid != 0, "ASID 0 belongs to the host");
        // SAFETY: the caller gives this zeroed frame to this VMCB alone.
        let mut vmcb = unsafe { Vmcb::new(vmcb_pa) };
        use vmcb::*;
        vmcb.write32(
            control::INTERCEPT_MISC1,
            INTERCEPT_INTR
                | INTERCEPT_NMI
                | INTERCEPT_SMI
                | INTERCEPT_INIT
                | INTERCEPT_CPUID
                | INTERCEPT_INVD
                | INTERCEPT_HLT
                | INTERCEPT_INVLPGA
                | INTERCEPT_IOIO
                | INTERCEPT_MSR
                | INTERCEPT_TASK_SWITCH
                | INTERCEPT_SHUTDOWN,
        );
        vmcb.write32(
            control::INTERCEPT_MISC2,
            INTERCEPT_VMRUN
                | INTERCEPT_VMMCALL
                | INTERCEPT_VMLOAD
                | INTERCEPT_VMSAVE
                | INTERCEPT_STGI
                | INTERCEPT_CLGI
                | INTERCEPT_SKINIT
                | INTERCEPT_ICEBP
                | INTERCEPT_WBINVD
                | INTERCEPT_MONITOR
                | INTERCEPT_MWAIT
                | INTERCEPT_MWAIT_ARMED
                | INTERCEPT_XSETBV,
        );
        // #DB and #AC (reflected into the guest) and #MC (the host's): the common set.
        vmcb.write32(
            control::INTERCEPT_EXCEPTIONS,
            slipway_hv_core::exit_handler::INTERCEPTED_EXCEPTIONS,
        );
        vmcb.write64(control::IOPM_BASE, maps.iopm_pa);
        vmcb.write64(control::MSRPM_BASE, maps.msrpm_pa);
        vmcb.write32(control::GUEST_ASID, asid);
        // Flush this ASID's TLB entries on the first VMRUN (the emulator flushes anyway).
        vmcb.write8(control::TLB_CONTROL, 1);
        // V_INTR_MASKING: the guest's IF only masks virtual interrupts; physical ones exit.
        vmcb.write64(control::VINTR, 1 << 24);
        vmcb.write64(control::NP_CONTROL, 1);
        vmcb.write64(control::N_CR3, ncr3);

        // What differs between the two entry modes; everything else below is shared.
        let mut regs = GuestRegs::default();
        let (cs_attr, tr_attr, cr0, cr3, cr4, efer, rip, rsp) = match entry {
            // Loaded in real mode below; entered only after a startup IPI.
            EntryState::WaitForStartupIpi => {
                (ATTR_CODE32, ATTR_TSS32_BUSY, 0x11, 0, 0, EFER_SVME, 0, 0)
            }
            EntryState::Pvh32 { rip, rbx } => {
                regs.rbx = rbx;
                // PE | ET; no paging; guest EFER.SVME must be 1.
                (ATTR_CODE32, ATTR_TSS32_BUSY, 0x11, 0, 0, EFER_SVME, rip, 0)
            }
            EntryState::Long64 { rip, rsp, cr3, rsi } => {
                regs.rsi = rsi;
                // PG | NE | ET | MP | PE; PAE; LME | LMA | NXE.
                let efer = EFER_SVME | (1 << 8) | (1 << 10) | (1 << 11);
                (
                    ATTR_CODE64,
                    ATTR_TSS64_BUSY,
                    0x8000_0033,
                    cr3,
                    0x20,
                    efer,
                    rip,
                    rsp,
                )
            }
        };
        vmcb.set_segment(save::CS, 0x08, cs_attr, 0xffff_ffff, 0);
        for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
            vmcb.set_segment(seg, 0x10, ATTR_DATA32, 0xffff_ffff, 0);
        }
        vmcb.set_segment(save::TR, 0x18, tr_attr, 0x67, 0);
        vmcb.set_segment(save::LDTR, 0, ATTR_LDT, 0xffff, 0);
        vmcb.set_segment(save::GDTR, 0, 0, 0, 0);
        vmcb.set_segment(save::IDTR, 0, 0, 0, 0);
        vmcb.write64(save::CR0, cr0);
        vmcb.write64(save::CR3, cr3);
        vmcb.write64(save::CR4, cr4);
        vmcb.write64(save::EFER, efer);
        vmcb.write64(save::RFLAGS, 0x2);
        vmcb.write64(save::RIP, rip);
        vmcb.write64(save::RSP, rsp);
        vmcb.write64(save::RAX, 0);
        vmcb.write64(save::DR6, 0xffff_0ff0);
        vmcb.write64(save::DR7, 0x400);
        vmcb.write64(save::G_PAT, 0x0007_0406_0007_0406);
        vmcb.write8(save::CPL, 0);
        let mut vcpu = Self {
            vmcb,
            regs,
            asid,
            lazy: crate::lazy_state::LazyState::initial(),
        };
        if entry == EntryState::WaitForStartupIpi {
            vcpu.load_real_mode(slipway_hv_core::lapic::RealModeStart::from_sipi_vector(0));
        }
        vcpu
    }

    /// The state after INIT and a startup IPI (APM vol. 2, 14.1.3 "Processor Initialization
    /// State", with CS from the SIPI): real mode, paging off, every segment a 64 KiB real-mode
    /// segment, CS:IP = `start`, the general registers zero.
    pub fn load_real_mode(&mut self, start: slipway_hv_core::lapic::RealModeStart) {
        const ATTR_CODE16: u16 = 0x9b;
        const ATTR_DATA16: u16 = 0x93;
        let vmcb = &mut self.vmcb;
        vmcb.set_segment(
            save::CS,
            start.cs_selector,
            ATTR_CODE16,
            0xffff,
            u64::from(start.cs_base),
        );
        for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
            vmcb.set_segment(seg, 0, ATTR_DATA16, 0xffff, 0);
        }
        vmcb.set_segment(save::TR, 0, ATTR_TSS32_BUSY, 0xffff, 0);
        vmcb.set_segment(save::LDTR, 0, ATTR_LDT, 0xffff, 0);
        vmcb.set_segment(save::GDTR, 0, 0, 0xffff, 0);
        vmcb.set_segment(save::IDTR, 0, 0, 0xffff, 0);
        // ET; guest EFER.SVME must be 1.
        vmcb.write64(save::CR0, 0x10);
        vmcb.write64(save::CR3, 0);
        vmcb.write64(save::CR4, 0);
        vmcb.write64(save::EFER, EFER_SVME);
        vmcb.write64(save::RFLAGS, 0x2);
        vmcb.write64(save::RIP, u64::from(start.ip));
        vmcb.write64(save::RSP, 0);
        vmcb.write64(save::RAX, 0);
        vmcb.write64(save::DR6, 0xffff_0ff0);
        vmcb.write64(save::DR7, 0x400);
        vmcb.write8(save::CPL, 0);
        vmcb.write64(control::EVENT_INJECTION, 0);
        self.regs = GuestRegs::default();
    }

    /// The VMCB's physical address (freed by the owner when the vCPU is destroyed).
    pub fn vmcb_pa(&self) -> u64 {
        self.vmcb.pa()
    }

    /// The vCPU's ASID (unique among live vCPUs).
    pub fn asid(&self) -> u32 {
        self.asid
    }

    pub fn rip(&self) -> u64 {
        self.vmcb.read64(save::RIP)
    }
    pub fn set_rip(&mut self, rip: u64) {
        self.vmcb.write64(save::RIP, rip);
    }
    pub fn rax(&self) -> u64 {
        self.vmcb.read64(save::RAX)
    }
    pub fn set_rax(&mut self, value: u64) {
        self.vmcb.write64(save::RAX, value);
    }
    pub fn efer(&self) -> u64 {
        self.vmcb.read64(save::EFER)
    }
    pub fn set_efer(&mut self, value: u64) {
        self.vmcb.write64(save::EFER, value);
    }

    /// Advances RIP by `len` bytes (no NRIP-save: the exit handler knows the length).
    pub fn skip_instruction(&mut self, len: u64) {
        let rip = self.rip().wrapping_add(len);
        // Outside long mode RIP wraps at 32 bits.
        let long_mode = self.efer() & (1 << 10) != 0;
        self.set_rip(if long_mode { rip } else { rip & 0xffff_ffff });
    }

    /// Queues `event` for the next VMRUN (EVENTINJ; the processor clears it at the #VMEXIT).
    pub fn inject_event(&mut self, event: Event) {
        let (vector, kind, error_code) = match event {
            Event::Exception { vector, error_code } => (vector, EVENT_TYPE_EXCEPTION, error_code),
            Event::Nmi => (2, EVENT_TYPE_NMI, None),
            Event::Interrupt { vector } => (vector, EVENT_TYPE_INTR, None),
        };
        let mut word = u64::from(vector) | (kind << 8) | EVENT_VALID;
        if let Some(code) = error_code {
            word |= EVENT_ERROR_CODE_VALID | (u64::from(code) << 32);
        }
        self.vmcb.write64(control::EVENT_INJECTION, word);
    }

    /// The event whose delivery the last #VMEXIT interrupted (EXITINTINFO, same format as
    /// EVENTINJ). INT3 and INTO arrive as exceptions with vectors 3 and 4: without decode
    /// assists they are told apart from other exceptions by vector alone.
    pub fn interrupted_event(&self) -> Option<InterruptedEvent> {
        let word = self.vmcb.read64(control::EXIT_INT_INFO);
        if word & EVENT_VALID == 0 {
            return None;
        }
        let vector = word as u8;
        let error_code = (word & EVENT_ERROR_CODE_VALID != 0).then_some((word >> 32) as u32);
        Some(match (word >> 8) & 7 {
            EVENT_TYPE_INTR => InterruptedEvent::ExternalInterrupt { vector },
            EVENT_TYPE_NMI => InterruptedEvent::Nmi,
            EVENT_TYPE_EXCEPTION
                if vector == slipway_hv_core::exit_handler::VECTOR_BREAKPOINT
                    || vector == slipway_hv_core::exit_handler::VECTOR_OVERFLOW =>
            {
                InterruptedEvent::SoftwareException { vector }
            }
            EVENT_TYPE_EXCEPTION => InterruptedEvent::Exception { vector, error_code },
            _ => InterruptedEvent::SoftwareInterrupt { vector },
        })
    }

    /// Whether an interrupt injected at the next VMRUN is taken at once: guest RFLAGS.IF set, no
    /// interrupt shadow, EVENTINJ free.
    pub fn interrupt_ready(&self) -> bool {
        self.vmcb.read64(save::RFLAGS) & RFLAGS_IF != 0
            && self.vmcb.read64(control::INTERRUPT_SHADOW) & 1 == 0
            && self.vmcb.read64(control::EVENT_INJECTION) & EVENT_VALID == 0
    }

    /// Requests (or cancels) a #VMEXIT(VINTR) once the guest can take an interrupt: a virtual
    /// interrupt is made pending (V_IRQ, highest priority, TPR ignored) and its acceptance
    /// intercepted, so the guest never takes the dummy interrupt itself.
    pub fn set_interrupt_window(&mut self, wanted: bool) {
        const V_IRQ: u64 = 1 << 8;
        const V_INTR_PRIO_MAX: u64 = 0xf << 16;
        const V_IGN_TPR: u64 = 1 << 20;
        let bits = V_IRQ | V_INTR_PRIO_MAX | V_IGN_TPR;
        let vintr = self.vmcb.read64(control::VINTR);
        let vintr = if wanted { vintr | bits } else { vintr & !bits };
        self.vmcb.write64(control::VINTR, vintr);
        self.set_intercept(vmcb::INTERCEPT_VINTR, wanted);
    }

    /// Sets or clears one intercept bit of INTERCEPT_MISC1 (vector 3).
    pub fn set_intercept(&mut self, bit: u32, on: bool) {
        let intercepts = self.vmcb.read32(control::INTERCEPT_MISC1);
        let intercepts = if on {
            intercepts | bit
        } else {
            intercepts & !bit
        };
        self.vmcb.write32(control::INTERCEPT_MISC1, intercepts);
    }

    /// The guest's current privilege level (the VMCB's CPL field).
    pub fn cpl(&self) -> u8 {
        self.vmcb.read8(save::CPL)
    }

    /// The default operand size of the code being executed, in bits: 64 with CS.L in long
    /// mode, else 32 with CS.D, else 16 (the VMCB's packed attributes: L bit 9, D bit 10).
    pub fn code_bits(&self) -> u64 {
        let attributes = self.vmcb.read32(save::CS) >> 16;
        if self.efer() & (1 << 10) != 0 && attributes & (1 << 9) != 0 {
            64
        } else if attributes & (1 << 10) != 0 {
            32
        } else {
            16
        }
    }

    /// Runs the guest until the next #VMEXIT and returns it, normalized.
    pub fn run(&mut self, cpu: &SvmCpu) -> VmExit {
        let (vmcb_pa, regs) = (self.vmcb.pa(), &mut self.regs);
        // XCR0 is not in the VMCB: the guest's is loaded around VMRUN.
        let ((), left) = crate::lazy_state::fpu::with_guest_xcr0(self.lazy.xcr0, || {
            // SAFETY: the VMCB is this vCPU's, fully initialized (intercepts include VMRUN, ASID
            // != 0, nested paging over the domain's own frames); `regs` is a live Rust object;
            // the host state page was filled by VMSAVE when SVM was enabled on this CPU. The
            // world switch restores every callee-saved register and the host's hidden state.
            unsafe { svm_world_switch(vmcb_pa, regs, cpu.host_state_pa) }
        });
        self.vmcb.write8(control::TLB_CONTROL, 0);
        // An XSETBV that did not exit (QEMU's emulated SVM ignores the intercept): adopt a value
        // the exit handler would have accepted, stop the domain on any other.
        if let Some(xcr0) = left
            && !self.lazy.set_xcr0(xcr0)
        {
            return VmExit::Forbidden(ForbiddenInstruction::UninterceptedXsetbv);
        }
        self.decode_exit()
    }

    fn decode_exit(&mut self) -> VmExit {
        let code = self.vmcb.read64(control::EXIT_CODE);
        let info1 = self.vmcb.read64(control::EXIT_INFO1);
        let info2 = self.vmcb.read64(control::EXIT_INFO2);
        match code {
            exit::IOIO => {
                let port = (info1 >> 16) as u16;
                let size = if info1 & (1 << 4) != 0 {
                    1
                } else if info1 & (1 << 5) != 0 {
                    2
                } else {
                    4
                };
                if info1 & (1 << 2) != 0 {
                    VmExit::IoString { port }
                } else if info1 & 1 != 0 {
                    VmExit::IoIn {
                        port,
                        size,
                        next_rip: info2,
                    }
                } else {
                    let mask = if size == 4 {
                        0xffff_ffff
                    } else {
                        (1u64 << (size * 8)) - 1
                    };
                    VmExit::IoOut {
                        port,
                        size,
                        value: (self.rax() & mask) as u32,
                        next_rip: info2,
                    }
                }
            }
            exit::VMMCALL => VmExit::Hypercall,
            exit::CPUID => VmExit::Cpuid {
                leaf: self.rax() as u32,
                subleaf: self.regs.rcx as u32,
            },
            exit::HLT => VmExit::Halt,
            exit::MSR => {
                let msr = self.regs.rcx as u32;
                if info1 == 0 {
                    VmExit::MsrRead { msr }
                } else {
                    let value = (self.rax() & 0xffff_ffff) | (self.regs.rdx << 32);
                    VmExit::MsrWrite { msr, value }
                }
            }
            exit::NPF => VmExit::NestedPageFault {
                gpa: info2,
                write: info1 & 2 != 0,
                execute: info1 & 0x10 != 0,
                present: info1 & 1 != 0,
            },
            exit::INTR => VmExit::ExternalInterrupt,
            exit::NMI => VmExit::Nmi,
            exit::SMI => VmExit::Smi,
            exit::INIT => VmExit::Init,
            exit::VINTR => VmExit::InterruptWindow,
            exit::RDTSC => VmExit::Rdtsc,
            exit::SHUTDOWN => VmExit::Shutdown,
            exit::VMRUN => VmExit::Forbidden(ForbiddenInstruction::Vmrun),
            exit::VMLOAD => VmExit::Forbidden(ForbiddenInstruction::Vmload),
            exit::VMSAVE => VmExit::Forbidden(ForbiddenInstruction::Vmsave),
            exit::STGI => VmExit::Forbidden(ForbiddenInstruction::Stgi),
            exit::CLGI => VmExit::Forbidden(ForbiddenInstruction::Clgi),
            exit::SKINIT => VmExit::Forbidden(ForbiddenInstruction::Skinit),
            exit::INVLPGA => VmExit::Forbidden(ForbiddenInstruction::Invlpga),
            exit::XSETBV => VmExit::Xsetbv,
            exit::INVD => VmExit::Forbidden(ForbiddenInstruction::Invd),
            exit::MONITOR => VmExit::Forbidden(ForbiddenInstruction::Monitor),
            exit::MWAIT | exit::MWAIT_ARMED => VmExit::Forbidden(ForbiddenInstruction::Mwait),
            exit::WBINVD => VmExit::Wbinvd { len: 2 },
            exit::ICEBP | exit::TASK_SWITCH => VmExit::Forbidden(ForbiddenInstruction::Other),
            c if (exit::EXCEPTION_BASE..exit::EXCEPTION_BASE + 32).contains(&c) => {
                VmExit::Exception {
                    vector: (c - exit::EXCEPTION_BASE) as u8,
                    error_code: Some(info1 as u32),
                }
            }
            c if c & 0xffff_ffff == exit::INVALID_LOW32 => VmExit::InvalidState,
            c => VmExit::Unknown { code: c },
        }
    }
}

/// A vCPU bound to the physical CPU that runs it: the one backend interface common code
/// (`slipway_hv_core::exit_handler`) drives.
pub struct BoundVcpu<'a> {
    pub vcpu: &'a mut SvmVcpu,
    /// SVM state of the physical CPU this runs on (it enabled SVM there).
    pub cpu: &'a SvmCpu,
}

impl VcpuBackend for BoundVcpu<'_> {
    fn run(&mut self) -> VmExit {
        self.vcpu.run(self.cpu)
    }

    fn reg(&self, reg: Reg) -> u64 {
        let v = &self.vcpu;
        match reg {
            Reg::Rax => v.rax(),
            Reg::Rbx => v.regs.rbx,
            Reg::Rcx => v.regs.rcx,
            Reg::Rdx => v.regs.rdx,
            Reg::Rsi => v.regs.rsi,
            Reg::Rdi => v.regs.rdi,
            Reg::Rip => v.rip(),
            Reg::Efer => v.efer(),
            Reg::LongMode => u64::from(v.efer() & (1 << 10) != 0),
            Reg::Cpl => u64::from(v.cpl()),
            Reg::Rsp => v.vmcb.read64(save::RSP),
            Reg::Rbp => v.regs.rbp,
            Reg::R8 => v.regs.r8,
            Reg::R9 => v.regs.r9,
            Reg::R10 => v.regs.r10,
            Reg::R11 => v.regs.r11,
            Reg::R12 => v.regs.r12,
            Reg::R13 => v.regs.r13,
            Reg::R14 => v.regs.r14,
            Reg::R15 => v.regs.r15,
            Reg::Cr0 => v.vmcb.read64(save::CR0),
            Reg::Cr3 => v.vmcb.read64(save::CR3),
            Reg::Cr4 => v.vmcb.read64(save::CR4),
            Reg::CsBase => v.vmcb.read64(save::CS + 8),
            Reg::CodeBits => v.code_bits(),
            Reg::Xcr0 => v.lazy.xcr0,
        }
    }

    fn set_reg(&mut self, reg: Reg, value: u64) {
        let v = &mut self.vcpu;
        match reg {
            Reg::Rax => v.set_rax(value),
            Reg::Rbx => v.regs.rbx = value,
            Reg::Rcx => v.regs.rcx = value,
            Reg::Rdx => v.regs.rdx = value,
            Reg::Rsi => v.regs.rsi = value,
            Reg::Rdi => v.regs.rdi = value,
            Reg::Rip => v.set_rip(value),
            Reg::Efer => v.set_efer(value),
            Reg::Rsp => v.vmcb.write64(save::RSP, value),
            Reg::Rbp => v.regs.rbp = value,
            Reg::R8 => v.regs.r8 = value,
            Reg::R9 => v.regs.r9 = value,
            Reg::R10 => v.regs.r10 = value,
            Reg::R11 => v.regs.r11 = value,
            Reg::R12 => v.regs.r12 = value,
            Reg::R13 => v.regs.r13 = value,
            Reg::R14 => v.regs.r14 = value,
            Reg::R15 => v.regs.r15 = value,
            // LongMode follows from EFER.LMA and CS.L, the CPL from the segment state; the
            // control registers and CS are read for page walks and instruction decoding only.
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
        self.vcpu.inject_event(event);
    }

    fn interrupted_event(&self) -> Option<InterruptedEvent> {
        self.vcpu.interrupted_event()
    }

    fn interrupt_ready(&self) -> bool {
        self.vcpu.interrupt_ready()
    }

    fn set_interrupt_window(&mut self, wanted: bool) {
        self.vcpu.set_interrupt_window(wanted);
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vcpu.vmcb.write64(control::TSC_OFFSET, offset);
    }

    fn start_real_mode(
        &mut self,
        start: slipway_hv_core::lapic::RealModeStart,
    ) -> Result<(), &'static str> {
        self.vcpu.load_real_mode(start);
        Ok(())
    }

    fn set_rdtsc_exiting(&mut self, exiting: bool) {
        self.vcpu.set_intercept(vmcb::INTERCEPT_RDTSC, exiting);
    }

    fn advance_rip(&mut self, len: u64) {
        self.vcpu.skip_instruction(len);
    }
}
