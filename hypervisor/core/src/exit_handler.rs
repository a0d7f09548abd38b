//! What to do for each exit: the policy half of the vCPU loop, free of hardware access.
//!
//! - I/O: the UART at COM1, the ACPI PM timer ([`PM_TIMER_PORT`]) and the ACPI sleep registers
//!   ([`ACPI_SLEEP_CONTROL_PORT`]: soft off ends the domain) are emulated; every other
//!   port behaves like an empty bus (reads all ones, writes ignored), so probing guests keep
//!   running and no port reaches hardware (not the debug-exit port, not the TPM, nothing). String
//!   I/O is not emulated and stops the domain.
//! - The local APIC page ([`XAPIC_BASE`]) is never mapped: its faults come back as
//!   [`ExitAction::ApicAccess`] for the caller, which owns the guest memory the instruction is
//!   fetched from and the other vCPUs' APICs an IPI reaches.
//! - CPUID: passed through from the host, filtered by [`filter_cpuid`].
//! - XSETBV: judged by [`XsaveOffer::check_xsetbv`] (#UD or #GP as the processor raises them);
//!   an accepted value becomes the vCPU's XCR0 ([`Reg::Xcr0`]), which the backend loads into the
//!   hardware only while that vCPU runs.
//! - MSRs: EFER is emulated (the guest may set SCE, LME, NXE; SVME stays set underneath because
//!   SVM requires it, and is hidden from the guest); `IA32_APIC_BASE` reads the xAPIC at its
//!   reset address, enabled (a write may only restate that); any other intercepted MSR raises
//!   #GP, as on a CPU without that MSR.
//! - Interrupt windows: [`VmExit::InterruptWindow`] only resumes; the caller injects before the
//!   next entry.
//! - Hypercalls are returned to the caller ([`ExitAction::Hypercall`]), which uses
//!   [`hypercall_registers`] and [`finish_hypercall`] around `hypercall::dispatch`, but only from
//!   CPL 0: from guest user space (CPL > 0) VMMCALL/VMCALL raises #UD in the guest, as on a CPU
//!   without a hypervisor, and nothing else happens (no buffer is read or written).
//! - Exceptions: every backend intercepts [`INTERCEPTED_EXCEPTIONS`]. #DB and #AC are reflected
//!   into the guest unchanged ([`ExitAction::Reflected`]): intercepting them keeps a guest from
//!   looping benign exception delivery inside the CPU with the hypervisor never running again
//!   (CVE-2015-5307, CVE-2015-8104). #MC stays with the host and stops the domain.
//! - An event whose delivery an exit interrupted is injected again ([`reinjection`]) before the
//!   exit is handled.
//! - Nested page faults, triple faults, forbidden instructions, intercepted exceptions, invalid
//!   state and unknown exits stop the domain with a reason.

use crate::domain::StopReason;
use crate::lapic::{LocalApic, XAPIC_BASE, XAPIC_PAGE_SIZE};
use crate::uart::Uart16550;
use crate::vmexit::{Event, InterruptedEvent, Reg, VcpuBackend, VmExit};
use crate::xsave::{CPUID1_ECX_AVX, CPUID1_ECX_OSXSAVE, CPUID1_ECX_XSAVE, CR4_OSXSAVE};
use crate::xsave::{GuestXsave, XSAVE_LEAF, XsaveOffer};
use slipway_protocol::platform::{
    ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, PM_TIMER_PORT,
};
use slipway_protocol::{CALL_MESSAGE, HYPERCALL_INSTRUCTION_LEN, TransportStatus};

/// EFER MSR number.
pub const MSR_EFER: u32 = 0xc000_0080;
/// `IA32_APIC_BASE` MSR number.
pub const MSR_APIC_BASE: u32 = 0x1b;
/// `IA32_APIC_BASE`: this processor is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE`: the APIC is globally enabled (xAPIC mode; x2APIC, bit 10, is not offered).
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// EFER.SVME: must be 1 in the guest state on SVM; the guest never sees it.
pub const EFER_SVME: u64 = 1 << 12;
/// XSETBV's length (0F 01 D1).
pub const XSETBV_INSTRUCTION_LEN: u64 = 3;
/// Leaf of the hypervisor vendor signature.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// The vendor signature in CPUID 0x40000000 (ebx, ecx, edx).
pub const HYPERVISOR_SIGNATURE: &[u8; 12] = b"SlipwaySlipw";

/// #DB.
pub const VECTOR_DEBUG: u8 = 1;
/// #BP (INT3).
pub const VECTOR_BREAKPOINT: u8 = 3;
/// #OF (INTO).
pub const VECTOR_OVERFLOW: u8 = 4;
/// #AC.
pub const VECTOR_ALIGNMENT_CHECK: u8 = 17;
/// #MC.
pub const VECTOR_MACHINE_CHECK: u8 = 18;

/// Exceptions reflected into the guest after an intercept: #DB and #AC.
pub const REFLECTED_EXCEPTIONS: u32 = (1 << VECTOR_DEBUG) | (1 << VECTOR_ALIGNMENT_CHECK);
/// The exception intercept bitmap every backend sets (bit n = vector n): the reflected ones plus
/// #MC, which the host keeps.
pub const INTERCEPTED_EXCEPTIONS: u32 = REFLECTED_EXCEPTIONS | (1 << VECTOR_MACHINE_CHECK);

/// Whether the processor delivers exception `vector` with an error code (#DF, #TS, #NP, #SS,
/// #GP, #PF, #AC, #CP, #VC, #SX).
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// What to inject again after an exit that interrupted the delivery of `event`. Exceptions the
/// processor raised, NMIs and external interrupts are injected as they were. INT n, INT3 and INTO
/// are not: the saved instruction pointer still points at the instruction, which raises its
/// event again when the guest resumes (injecting it as well would deliver it twice).
pub fn reinjection(event: InterruptedEvent) -> Option<Event> {
    match event {
        InterruptedEvent::Exception { vector, error_code } => Some(Event::Exception {
            vector,
            error_code: if exception_has_error_code(vector) {
                Some(error_code.unwrap_or(0))
            } else {
                None
            },
        }),
        InterruptedEvent::Nmi => Some(Event::Nmi),
        InterruptedEvent::ExternalInterrupt { vector } => Some(Event::Interrupt { vector }),
        InterruptedEvent::SoftwareException { .. } | InterruptedEvent::SoftwareInterrupt { .. } => {
            None
        }
    }
}

/// What the vCPU loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Re-enter the guest.
    Resume,
    /// A hypercall: check and copy the buffer, dispatch, then [`finish_hypercall`].
    Hypercall,
    /// The guest entered ACPI S5 (soft off) through its sleep control register: the domain
    /// shut itself down (exit code 0).
    PowerOff,
    /// RDTSC (intercepted only while the caller asks): the caller answers from the domain's
    /// clock.
    Rdtsc,
    /// An access to the local APIC page at `gpa`: the caller decodes the instruction, performs
    /// it against this vCPU's APIC and delivers any IPI it sends.
    ApicAccess {
        /// The faulting guest-physical address (inside the APIC page).
        gpa: u64,
        /// The access was a write.
        write: bool,
    },
    /// The vCPU executed HLT (rip already advanced): it waits for an event; with no interrupts
    /// given to domains it is idle until the domain ends.
    Halt,
    /// A physical interrupt or NMI: let the host handle it and the scheduler decide.
    Preempt,
    /// An intercepted exception was reflected into the guest (queued for the next entry);
    /// re-enter the guest.
    Reflected {
        /// The exception's vector.
        vector: u8,
    },
    /// Stop the domain and print the reason.
    Stop(StopReason),
}

/// The per-vCPU devices an exit may touch, and the time of the exit.
pub struct Devices<'a> {
    /// The domain's COM1.
    pub uart: &'a mut Uart16550,
    /// This vCPU's local APIC.
    pub lapic: &'a mut LocalApic,
    /// The ACPI PM timer's count at the exit ([`crate::pm_timer::count`]).
    pub pm_timer: u32,
}

/// Handles one exit. `console` receives each byte the guest transmits on its UART; `host_cpuid`
/// executes CPUID on the physical CPU.
pub fn handle_exit<B: VcpuBackend + ?Sized>(
    exit: VmExit,
    vcpu: &mut B,
    devices: &mut Devices<'_>,
    console: &mut dyn FnMut(u8),
    host_cpuid: &mut dyn FnMut(u32, u32) -> [u32; 4],
) -> ExitAction {
    let uart = &mut *devices.uart;
    // First the event the exit interrupted, so that nothing below can lose it; an event this
    // exit itself injects (a reflected exception) takes the one slot after it, as on bare metal,
    // where a benign exception during the delivery of another is delivered first.
    if let Some(event) = vcpu.interrupted_event().and_then(reinjection) {
        vcpu.inject(event);
    }
    match exit {
        VmExit::IoOut {
            port,
            size,
            value,
            next_rip,
        } => {
            if !matches!(size, 1 | 2 | 4) {
                // No x86 port access has another size: a backend bug or a corrupted exit, refused
                // as an access to that port.
                return ExitAction::Stop(StopReason::ForbiddenAccess {
                    what: u32::from(port),
                    msr: false,
                });
            }
            // ACPI soft off: SLP_EN with the S5 sleep type (other sleep states are not offered
            // and the write is ignored).
            if port == ACPI_SLEEP_CONTROL_PORT {
                const SLP_EN: u32 = 1 << 5;
                let sleep_type = ((value >> 2) & 0b111) as u8;
                if value & SLP_EN != 0 && sleep_type == ACPI_S5_SLEEP_TYPE {
                    vcpu.set_reg(Reg::Rip, next_rip);
                    return ExitAction::PowerOff;
                }
            }
            // A wide access touches consecutive ports, as on the ISA bus.
            for i in 0..size {
                let byte = (value >> (8 * i)) as u8;
                if let Some(offset) = port
                    .checked_add(u16::from(i))
                    .and_then(Uart16550::offset_of)
                    && let Some(out) = uart.io_write(offset, byte)
                {
                    console(out);
                }
            }
            vcpu.set_reg(Reg::Rip, next_rip);
            ExitAction::Resume
        }
        VmExit::IoIn {
            port,
            size,
            next_rip,
        } => {
            if !matches!(size, 1 | 2 | 4) {
                // No x86 port access has another size: a backend bug or a corrupted exit, refused
                // as an access to that port.
                return ExitAction::Stop(StopReason::ForbiddenAccess {
                    what: u32::from(port),
                    msr: false,
                });
            }
            let mut value = 0u32;
            for i in 0..size {
                let at = port.checked_add(u16::from(i));
                let byte = match at.and_then(Uart16550::offset_of) {
                    Some(offset) => uart.io_read(offset),
                    // The PM timer's four ports hold its count, low byte first.
                    None => match at.and_then(|p| p.checked_sub(PM_TIMER_PORT)) {
                        Some(k @ 0..=3) => (devices.pm_timer >> (8 * k)) as u8,
                        // No wake status ever: the only sleep state offered is soft off.
                        _ if at == Some(ACPI_SLEEP_STATUS_PORT) => 0,
                        _ => 0xff,
                    },
                };
                value |= u32::from(byte) << (8 * i);
            }
            let rax = vcpu.reg(Reg::Rax);
            let merged = match size {
                1 => (rax & !0xff) | u64::from(value),
                2 => (rax & !0xffff) | u64::from(value),
                _ => u64::from(value), // 32-bit results zero-extend
            };
            vcpu.set_reg(Reg::Rax, merged);
            vcpu.set_reg(Reg::Rip, next_rip);
            ExitAction::Resume
        }
        VmExit::IoString { port } => ExitAction::Stop(StopReason::ForbiddenAccess {
            what: u32::from(port),
            msr: false,
        }),
        VmExit::Cpuid { leaf, subleaf } => {
            let raw = if (HYPERVISOR_LEAF..0x5000_0000).contains(&leaf) {
                [0; 4]
            } else {
                host_cpuid(leaf, subleaf)
            };
            let xsave = GuestXsave {
                offer: XsaveOffer::from_host(host_cpuid),
                xcr0: vcpu.reg(Reg::Xcr0),
                cr4: vcpu.reg(Reg::Cr4),
            };
            let [a, b, c, d] = filter_cpuid(leaf, subleaf, raw, devices.lapic.apic_id(), &xsave);
            for (reg, value) in [(Reg::Rax, a), (Reg::Rbx, b), (Reg::Rcx, c), (Reg::Rdx, d)] {
                vcpu.set_reg(reg, u64::from(value));
            }
            vcpu.advance_rip(2);
            ExitAction::Resume
        }
        VmExit::MsrRead { msr } => {
            let value = match msr {
                MSR_EFER => Some(vcpu.reg(Reg::Efer) & !EFER_SVME),
                MSR_APIC_BASE => Some(apic_base(devices.lapic)),
                _ => None,
            };
            match value {
                Some(value) => {
                    vcpu.set_reg(Reg::Rax, value & 0xffff_ffff);
                    vcpu.set_reg(Reg::Rdx, value >> 32);
                    vcpu.advance_rip(2);
                }
                None => vcpu.inject(Event::GENERAL_PROTECTION),
            }
            ExitAction::Resume
        }
        VmExit::MsrWrite { msr, value } => {
            let writable = EFER_SCE | EFER_LME | EFER_NXE;
            if msr == MSR_EFER && value & !(writable | EFER_LMA) == 0 {
                // LMA is the CPU's to set; keep its current value, keep SVME set.
                let lma = vcpu.reg(Reg::Efer) & EFER_LMA;
                vcpu.set_reg(Reg::Efer, (value & writable) | lma | EFER_SVME);
                vcpu.advance_rip(2);
            } else if msr == MSR_APIC_BASE
                && value & !APIC_BASE_BSP == apic_base(devices.lapic) & !APIC_BASE_BSP
            {
                // Restating the only configuration offered (the BSP bit is read-only).
                vcpu.advance_rip(2);
            } else {
                vcpu.inject(Event::GENERAL_PROTECTION);
            }
            ExitAction::Resume
        }
        VmExit::Hypercall => {
            if vcpu.reg(Reg::Cpl) != 0 {
                // Hypercalls belong to the guest kernel: user space gets what a CPU without a
                // hypervisor gives it (VMMCALL/VMCALL raise #UD), rip stays on the instruction.
                vcpu.inject(Event::INVALID_OPCODE);
                return ExitAction::Resume;
            }
            ExitAction::Hypercall
        }
        VmExit::Rdtsc => ExitAction::Rdtsc,
        VmExit::Xsetbv => {
            let offer = XsaveOffer::from_host(host_cpuid);
            let value = (vcpu.reg(Reg::Rdx) << 32) | (vcpu.reg(Reg::Rax) & 0xffff_ffff);
            let xcr = vcpu.reg(Reg::Rcx) as u32;
            match offer.check_xsetbv(vcpu.reg(Reg::Cpl), vcpu.reg(Reg::Cr4), xcr, value) {
                Ok(()) => {
                    vcpu.set_reg(Reg::Xcr0, value);
                    vcpu.advance_rip(XSETBV_INSTRUCTION_LEN);
                }
                // A fault leaves rip on the instruction, as on hardware.
                Err(event) => vcpu.inject(event),
            }
            ExitAction::Resume
        }
        // Domain memory is coherent (nested paging, no device DMA), so skipping the flush is
        // correct, and performing it would let any guest stall every cache of the machine.
        // Linux executes it on every application processor's way up.
        VmExit::Wbinvd { len } => {
            vcpu.advance_rip(u64::from(len));
            ExitAction::Resume
        }
        VmExit::Halt => {
            vcpu.advance_rip(1);
            ExitAction::Halt
        }
        VmExit::NestedPageFault {
            gpa,
            write,
            execute: false,
            present: _,
        } if (XAPIC_BASE..XAPIC_BASE + XAPIC_PAGE_SIZE).contains(&gpa) => {
            ExitAction::ApicAccess { gpa, write }
        }
        VmExit::NestedPageFault {
            gpa,
            write,
            execute,
            present: _,
        } => {
            // All of a domain's RAM is mapped when it starts: any fault is outside its memory or
            // against its rights (e.g. a write to domB's read-only modules).
            ExitAction::Stop(StopReason::MemoryViolation {
                gpa,
                write,
                execute,
            })
        }
        VmExit::ExternalInterrupt | VmExit::Nmi => ExitAction::Preempt,
        // The caller injects the pending interrupt before the next entry.
        VmExit::InterruptWindow => ExitAction::Resume,
        // SMM ran on the host's behalf; an INIT aimed at a guest is dropped (no guest may reset
        // another's vCPU).
        VmExit::Smi | VmExit::Init => ExitAction::Resume,
        VmExit::Shutdown => ExitAction::Stop(StopReason::TripleFault),
        VmExit::Forbidden(instruction) => {
            ExitAction::Stop(StopReason::ForbiddenInstruction(instruction.name()))
        }
        VmExit::Exception { vector, error_code }
            if vector < 32 && REFLECTED_EXCEPTIONS & (1 << vector) != 0 =>
        {
            vcpu.inject(Event::Exception {
                vector,
                error_code: if exception_has_error_code(vector) {
                    Some(error_code.unwrap_or(0))
                } else {
                    None
                },
            });
            ExitAction::Reflected { vector }
        }
        VmExit::Exception { vector, .. } => ExitAction::Stop(StopReason::UnhandledExit {
            code: 0x40 + u64::from(vector),
        }),
        VmExit::InvalidState => ExitAction::Stop(StopReason::InvalidState),
        VmExit::Unknown { code } => ExitAction::Stop(StopReason::UnhandledExit { code }),
    }
}

/// `IA32_APIC_BASE` as the vCPU with `lapic` reads it: the xAPIC page, enabled, and the BSP
/// flag on APIC ID 0 (the first vCPU).
pub fn apic_base(lapic: &LocalApic) -> u64 {
    XAPIC_BASE
        | APIC_BASE_ENABLE
        | if lapic.apic_id() == 0 {
            APIC_BASE_BSP
        } else {
            0
        }
}

/// Filters what the host CPUID reports before the guest sees it.
///
/// Hidden: VMX (1.ECX bit 5), SVM (0x80000001.ECX bit 2) and SKINIT (0x80000001.ECX bit 12) and the SVM
/// leaf 0x8000000A, so no guest tries nested virtualization or a dynamic launch; MONITOR/MWAIT
/// (1.ECX bit 3), which are intercepted; x2APIC (1.ECX bit 21) and the TSC deadline timer (1.ECX bit 24):
/// the local APIC offered is the xAPIC model ([`crate::lapic`]); MTRRs, MCE and MCA
/// (1.EDX bits 12, 7, 14 and their 0x80000001.EDX copies), TSC_ADJUST (7.0 EBX bit 1), RDTSCP
/// (0x80000001.EDX bit 27) and RDPID (7.0 ECX bit 22), whose MSRs no domain gets; WBNOINVD
/// (0x80000008.EBX bit 9: WBINVD is a no-op of two bytes on SVM, which reports no length); the
/// host's topology (leaves 0xB, 0x1F,
/// 0x8000001E and TOPOEXT, 0x80000001.ECX bit 22). Set: the vCPU's APIC ID in 1.EBX bits 31:24,
/// the hypervisor-present bit (1.ECX bit 31) and the vendor leaf 0x40000000 ("SlipwaySlipw", no
/// further leaves).
///
/// Extended state follows `xsave` ([`crate::xsave`]): XSAVE (1.ECX bit 26) when offered,
/// OSXSAVE (bit 27) as the vCPU's own CR4.OSXSAVE, AVX (bit 28) when offered, and with AVX the
/// instructions that need its state (FMA, F16C, AVX2, VAES, VPCLMULQDQ, AVX-VNNI, AVX-IFMA,
/// XOP, FMA4), which are hidden without it; leaf 0xD describes only the offered components.
/// Always hidden: AVX-512 (7.0 EBX 16, 17, 21, 26-28, 30, 31; ECX 1, 6, 11, 12, 14; EDX 2, 3, 8,
/// 23; 7.1 EAX 5), AMX (7.0 EDX 22, 24, 25; 7.1 EAX 21), AVX10 and APX (7.1 EDX 19, 21), MPX
/// (7.0 EBX 14), protection keys (7.0 ECX 3, 4: PKRU is not switched) and CET (7.0 ECX 7, EDX
/// 20): their state is not switched or needs MSRs no domain gets.
pub fn filter_cpuid(
    leaf: u32,
    subleaf: u32,
    raw: [u32; 4],
    apic_id: u8,
    xsave: &GuestXsave,
) -> [u32; 4] {
    const MACHINE_CHECK_AND_MTRR: u32 = (1 << 7) | (1 << 12) | (1 << 14);
    let avx = xsave.offer.avx();
    let unless_avx = |bits: u32| if avx { 0 } else { bits };
    let [mut a, mut b, mut c, mut d] = raw;
    match leaf {
        0x1 => {
            b = (b & 0x00ff_ffff) | (u32::from(apic_id) << 24);
            c &= !((1 << 3)
                | (1 << 5)
                | (1 << 21)
                | (1 << 24)
                | CPUID1_ECX_XSAVE
                | CPUID1_ECX_OSXSAVE
                | CPUID1_ECX_AVX);
            // FMA (12) and F16C (29) use VEX encodings: only with AVX.
            c &= !unless_avx((1 << 12) | (1 << 29));
            if xsave.offer.offered() {
                c |= CPUID1_ECX_XSAVE;
                if xsave.cr4 & CR4_OSXSAVE != 0 {
                    c |= CPUID1_ECX_OSXSAVE;
                }
            }
            if avx {
                c |= CPUID1_ECX_AVX;
            }
            c |= 1 << 31;
            d &= !MACHINE_CHECK_AND_MTRR;
        }
        0x7 if subleaf == 0 => {
            // TSC_ADJUST (1), MPX (14), AVX-512 F/DQ/IFMA/PF/ER/CD/BW/VL (16, 17, 21, 26, 27,
            // 28, 30, 31); AVX2 (5) only with AVX.
            b &= !((1 << 1)
                | (1 << 14)
                | (1 << 16)
                | (1 << 17)
                | (1 << 21)
                | (1 << 26)
                | (1 << 27)
                | (1 << 28)
                | (1 << 30)
                | (1 << 31));
            b &= !unless_avx(1 << 5);
            // AVX-512 VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ (1, 6, 11, 12, 14), PKU/OSPKE (3, 4),
            // CET shadow stacks (7), RDPID (22); VAES and VPCLMULQDQ (9, 10) only with AVX.
            c &= !((1 << 1)
                | (1 << 3)
                | (1 << 4)
                | (1 << 6)
                | (1 << 7)
                | (1 << 11)
                | (1 << 12)
                | (1 << 14)
                | (1 << 22));
            c &= !unless_avx((1 << 9) | (1 << 10));
            // AVX-512 4VNNIW/4FMAPS/VP2INTERSECT/FP16 (2, 3, 8, 23), CET IBT (20), AMX (22, 24,
            // 25).
            d &= !((1 << 2)
                | (1 << 3)
                | (1 << 8)
                | (1 << 20)
                | (1 << 22)
                | (1 << 23)
                | (1 << 24)
                | (1 << 25));
        }
        0x7 if subleaf == 1 => {
            // AVX512_BF16 (5), AMX-FP16 (21); AVX-VNNI (4) and AVX-IFMA (23) only with AVX.
            a &= !((1 << 5) | (1 << 21));
            a &= !unless_avx((1 << 4) | (1 << 23));
            // AVX10 (19), APX (21); AVX-VNNI-INT8 and AVX-NE-CONVERT (4, 5) only with AVX.
            d &= !((1 << 19) | (1 << 21));
            d &= !unless_avx((1 << 4) | (1 << 5));
        }
        XSAVE_LEAF => [a, b, c, d] = xsave.offer.cpuid_leaf_d(subleaf, xsave.xcr0),
        0xb | 0x1f | 0x8000_000a | 0x8000_001e => [a, b, c, d] = [0; 4],
        0x8000_0008 => b &= !(1 << 9),
        0x8000_0001 => {
            c &= !((1 << 2) | (1 << 12) | (1 << 22));
            // XOP (11) and FMA4 (16) use AVX state.
            c &= !unless_avx((1 << 11) | (1 << 16));
            d &= !(MACHINE_CHECK_AND_MTRR | (1 << 27));
        }
        HYPERVISOR_LEAF => {
            let word = |i: usize| {
                u32::from_le_bytes([0, 1, 2, 3].map(|k| HYPERVISOR_SIGNATURE[4 * i + k]))
            };
            [a, b, c, d] = [HYPERVISOR_LEAF, word(0), word(1), word(2)];
        }
        0x4000_0001..0x5000_0000 => [a, b, c, d] = [0; 4],
        _ => {}
    }
    [a, b, c, d]
}

/// Reads the hypercall registers (rax = call number, rdi = buffer gpa, rsi = length; low 32 bits
/// only outside 64-bit mode) and checks them against the caller's RAM size. On `Ok`, copy
/// `len` bytes from `gpa` once and dispatch.
pub fn hypercall_registers<B: VcpuBackend + ?Sized>(
    vcpu: &B,
    ram_bytes: u64,
) -> Result<(u64, usize), TransportStatus> {
    let mask = if vcpu.reg(Reg::LongMode) != 0 {
        u64::MAX
    } else {
        0xffff_ffff
    };
    let (call, gpa, len) = (
        vcpu.reg(Reg::Rax) & mask,
        vcpu.reg(Reg::Rdi) & mask,
        vcpu.reg(Reg::Rsi) & mask,
    );
    // In 32-bit mode the call number cannot be passed whole: accept its low half there.
    if call != CALL_MESSAGE & mask {
        return Err(TransportStatus::UnknownCall);
    }
    match TransportStatus::check_buffer(gpa, len, ram_bytes) {
        TransportStatus::Ok => Ok((gpa, len as usize)),
        status => Err(status),
    }
}

/// Completes a hypercall the caller resumes from: status in rax, response length in rsi (0 unless
/// the status is `Ok`), rip past the 3-byte instruction.
pub fn finish_hypercall<B: VcpuBackend + ?Sized>(
    vcpu: &mut B,
    status: TransportStatus,
    response_len: usize,
) {
    vcpu.set_reg(Reg::Rax, status.code());
    let len = if status == TransportStatus::Ok {
        response_len as u64
    } else {
        0
    };
    vcpu.set_reg(Reg::Rsi, len);
    vcpu.advance_rip(HYPERCALL_INSTRUCTION_LEN);
}

#[cfg(test)]
mod tests;
