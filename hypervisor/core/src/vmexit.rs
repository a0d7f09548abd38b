//! The normalized exit and the vCPU backend interface.
//!
//! Common code never sees a VMCB (or, later, a VMCS): the architecture backend turns each exit
//! into one [`VmExit`] and gives register access through [`VcpuBackend`]. What to do with an exit
//! is decided by the pure handler in [`crate::exit_handler`].

use core::fmt;

/// An instruction no guest may execute: each is intercepted, and executing it stops the domain.
/// (With guest EFER.SVME forced to 1, an unintercepted VMSAVE or VMLOAD would let a guest write or
/// load hypervisor state, CLGI would stop preemption, SKINIT would relaunch the machine.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForbiddenInstruction {
    /// VMRUN.
    Vmrun,
    /// VMLOAD.
    Vmload,
    /// VMSAVE.
    Vmsave,
    /// STGI.
    Stgi,
    /// CLGI.
    Clgi,
    /// SKINIT.
    Skinit,
    /// INVLPGA.
    Invlpga,
    /// INVD (would drop dirty cache lines, hypervisor data included).
    Invd,
    /// MONITOR (hidden in CPUID).
    Monitor,
    /// MWAIT (would idle the physical CPU).
    Mwait,
    /// ICEBP / INT1 (a debug trap meant for hardware debuggers).
    Icebp,
    /// A hardware task switch (no guest gets a TSS-based setup here).
    TaskSwitch,
    /// An XSETBV the processor executed without an exit (QEMU 7.2's emulated SVM has no XSETBV
    /// intercept) that left XCR0 outside what is offered ([`crate::xsave`]); the backend finds
    /// it by reading XCR0 after the exit. An accepted value is simply adopted.
    UninterceptedXsetbv,
    /// RDPRU, RDPMC and other instructions the backend intercepts without a name here.
    Other,
}

impl ForbiddenInstruction {
    /// Mnemonic, for the stop message.
    pub const fn name(self) -> &'static str {
        match self {
            ForbiddenInstruction::Vmrun => "VMRUN",
            ForbiddenInstruction::Vmload => "VMLOAD",
            ForbiddenInstruction::Vmsave => "VMSAVE",
            ForbiddenInstruction::Stgi => "STGI",
            ForbiddenInstruction::Clgi => "CLGI",
            ForbiddenInstruction::Skinit => "SKINIT",
            ForbiddenInstruction::Invlpga => "INVLPGA",
            ForbiddenInstruction::Invd => "INVD",
            ForbiddenInstruction::Monitor => "MONITOR",
            ForbiddenInstruction::Mwait => "MWAIT",
            ForbiddenInstruction::Icebp => "ICEBP",
            ForbiddenInstruction::TaskSwitch => "task switch",
            ForbiddenInstruction::UninterceptedXsetbv => {
                "XSETBV (without an exit) of state components not offered"
            }
            ForbiddenInstruction::Other => "an intercepted instruction",
        }
    }
}

impl fmt::Display for ForbiddenInstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a vCPU left guest mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// `out` to `port` of `size` bytes (1, 2 or 4); `next_rip` is the instruction after it.
    IoOut {
        /// Port.
        port: u16,
        /// Access size in bytes.
        size: u8,
        /// Value (low `size` bytes).
        value: u32,
        /// Address of the next instruction (SVM: EXITINFO2).
        next_rip: u64,
    },
    /// `in` from `port` of `size` bytes.
    IoIn {
        /// Port.
        port: u16,
        /// Access size in bytes.
        size: u8,
        /// Address of the next instruction.
        next_rip: u64,
    },
    /// `ins`/`outs` (string I/O): not emulated.
    IoString {
        /// Port.
        port: u16,
    },
    /// `rdmsr` of an intercepted MSR (2-byte instruction).
    MsrRead {
        /// MSR number (ecx).
        msr: u32,
    },
    /// `wrmsr` of an intercepted MSR (2-byte instruction).
    MsrWrite {
        /// MSR number (ecx).
        msr: u32,
        /// Value (edx:eax).
        value: u64,
    },
    /// `cpuid` (2-byte instruction).
    Cpuid {
        /// eax on entry.
        leaf: u32,
        /// ecx on entry.
        subleaf: u32,
    },
    /// `vmmcall` / `vmcall` (3-byte instruction).
    Hypercall,
    /// `hlt` (1-byte instruction).
    Halt,
    /// `xsetbv` (3-byte instruction; the register number in ecx, the value in edx:eax), judged
    /// by [`crate::xsave::XsaveOffer::check_xsetbv`].
    Xsetbv,
    /// `wbinvd` (2 bytes on SVM, which reports no length; `len` on VMX, which covers WBNOINVD's
    /// prefix): performed as a no-op ([`crate::exit_handler`]).
    Wbinvd {
        /// The instruction's length.
        len: u8,
    },
    /// `rdtsc` (2-byte instruction), intercepted only when asked for
    /// ([`VcpuBackend::set_rdtsc_exiting`]).
    Rdtsc,
    /// Nested page fault.
    NestedPageFault {
        /// Faulting guest-physical address.
        gpa: u64,
        /// The access was a write.
        write: bool,
        /// The access was an instruction fetch.
        execute: bool,
        /// A mapping was present (a rights violation rather than a hole).
        present: bool,
    },
    /// A physical interrupt arrived (the scheduler tick, or another device's).
    ExternalInterrupt,
    /// The guest can take a maskable interrupt now (the window asked for with
    /// [`VcpuBackend::set_interrupt_window`] opened).
    InterruptWindow,
    /// A physical NMI arrived.
    Nmi,
    /// A system-management interrupt was taken.
    Smi,
    /// An INIT signal arrived.
    Init,
    /// Triple fault.
    Shutdown,
    /// A forbidden instruction.
    Forbidden(ForbiddenInstruction),
    /// An intercepted guest exception.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if the exception has one.
        error_code: Option<u32>,
    },
    /// The hardware refused the vCPU state (SVM: VMEXIT_INVALID).
    InvalidState,
    /// Any other exit code.
    Unknown {
        /// The raw exit code.
        code: u64,
    },
}

/// Guest registers common code reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// rax.
    Rax,
    /// rbx.
    Rbx,
    /// rcx.
    Rcx,
    /// rdx.
    Rdx,
    /// rsi.
    Rsi,
    /// rdi.
    Rdi,
    /// rsp.
    Rsp,
    /// rbp.
    Rbp,
    /// r8.
    R8,
    /// r9.
    R9,
    /// r10.
    R10,
    /// r11.
    R11,
    /// r12.
    R12,
    /// r13.
    R13,
    /// r14.
    R14,
    /// r15.
    R15,
    /// rip.
    Rip,
    /// EFER (the guest's view; the backend keeps SVME set underneath, see the exit handler).
    Efer,
    /// CS.L && EFER.LMA as 0/1: whether the vCPU executes 64-bit code (read-only).
    LongMode,
    /// The current privilege level, 0-3 (read-only; SVM: the VMCB's CPL field, VMX: SS.DPL).
    /// Real mode is 0, virtual-8086 mode 3.
    Cpl,
    /// CR0 as the processor uses it (PG, PE: what a guest page walk needs; read-only).
    Cr0,
    /// CR3 (the guest's page-table root; read-only).
    Cr3,
    /// CR4 as the processor uses it (PAE, PSE, LA57, OSXSAVE; read-only).
    Cr4,
    /// The CS segment base (read-only; ignored by the processor in 64-bit code).
    CsBase,
    /// The default operand and address size of the code the vCPU executes, in bits (read-only):
    /// 64 (CS.L in IA-32e mode), 32 (CS.D/B set) or 16.
    CodeBits,
    /// The vCPU's XCR0 (read-write; starts at [`crate::xsave::XCR0_RESET`]). The backend keeps
    /// it per vCPU and has the hardware XCR0 hold it only while the vCPU runs; common code writes
    /// only values [`crate::xsave::XsaveOffer::check_xsetbv`] accepted.
    Xcr0,
}

impl Reg {
    /// The general-purpose registers in the x86 encoding order (ModRM.reg / REX.R numbering):
    /// rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8-r15.
    pub const GPRS: [Reg; 16] = [
        Reg::Rax,
        Reg::Rcx,
        Reg::Rdx,
        Reg::Rbx,
        Reg::Rsp,
        Reg::Rbp,
        Reg::Rsi,
        Reg::Rdi,
        Reg::R8,
        Reg::R9,
        Reg::R10,
        Reg::R11,
        Reg::R12,
        Reg::R13,
        Reg::R14,
        Reg::R15,
    ];
}

/// An event to inject into the guest on the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A hardware exception.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if the exception has one.
        error_code: Option<u32>,
    },
    /// A non-maskable interrupt.
    Nmi,
    /// An external (maskable) interrupt.
    Interrupt {
        /// Vector (32-255).
        vector: u8,
    },
}

/// An event whose delivery into the guest was cut short by an exit (SVM: EXITINTINFO, VMX:
/// IDT-vectoring information). The guest state saved at such an exit is the state before the
/// delivery began, so the event is lost unless it is injected again
/// ([`crate::exit_handler::reinjection`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptedEvent {
    /// An exception the processor raised (fault, trap or abort).
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if it was delivered with one.
        error_code: Option<u32>,
    },
    /// An exception raised by an instruction that exists to raise it (INT3: #BP, INTO: #OF).
    SoftwareException {
        /// Vector.
        vector: u8,
    },
    /// `INT n`.
    SoftwareInterrupt {
        /// Vector.
        vector: u8,
    },
    /// An NMI.
    Nmi,
    /// An external interrupt.
    ExternalInterrupt {
        /// Vector.
        vector: u8,
    },
}

impl Event {
    /// General protection fault with error code 0 (refused MSR access).
    pub const GENERAL_PROTECTION: Event = Event::Exception {
        vector: 13,
        error_code: Some(0),
    };
    /// Invalid opcode.
    pub const INVALID_OPCODE: Event = Event::Exception {
        vector: 6,
        error_code: None,
    };
}

/// One vCPU as the architecture backend drives it.
pub trait VcpuBackend {
    /// Enters the guest until the next exit.
    fn run(&mut self) -> VmExit;
    /// Reads a register.
    fn reg(&self, reg: Reg) -> u64;
    /// Writes a register (writes to the read-only ones, [`Reg::LongMode`], [`Reg::Cpl`], the
    /// control registers, [`Reg::CsBase`] and [`Reg::CodeBits`], are ignored).
    fn set_reg(&mut self, reg: Reg, value: u64);
    /// Queues an event for the next entry (one slot: a later call replaces an earlier one).
    fn inject(&mut self, event: Event);
    /// The event whose delivery the last exit interrupted, if any.
    fn interrupted_event(&self) -> Option<InterruptedEvent>;
    /// Whether the guest would take a maskable interrupt injected at the next entry: RFLAGS.IF
    /// set, no interrupt shadow (after STI or MOV SS), and no event already queued.
    fn interrupt_ready(&self) -> bool;
    /// Asks for an exit ([`VmExit::InterruptWindow`]) as soon as the guest can take a maskable
    /// interrupt (`false` cancels the request). The request stays until cancelled.
    fn set_interrupt_window(&mut self, wanted: bool);
    /// Sets the value added to the TSC the guest reads (RDTSC, RDTSCP) from the next entry on.
    fn set_tsc_offset(&mut self, offset: u64);
    /// Makes RDTSC exit ([`VmExit::Rdtsc`]) or not, from the next entry on.
    fn set_rdtsc_exiting(&mut self, exiting: bool);
    /// Puts a vCPU that waited for a startup IPI into the state the SIPI gives: real mode at
    /// `start`, everything else as after INIT. `Err` names why this backend cannot (the vCPU
    /// then keeps waiting).
    fn start_real_mode(&mut self, start: crate::lapic::RealModeStart) -> Result<(), &'static str>;
    /// Advances rip past an instruction of `len` bytes (no NRIP-save under QEMU: common code
    /// knows the lengths).
    fn advance_rip(&mut self, len: u64) {
        let rip = self.reg(Reg::Rip);
        self.set_reg(Reg::Rip, rip.wrapping_add(len));
    }
}

/// Exits counted by kind, for the run's closing report (`slipway: exits by reason`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    counts: [u64; ExitCounts::KINDS.len()],
}

impl ExitCounts {
    /// The kinds, in report order.
    pub const KINDS: [&'static str; 15] = [
        "I/O",
        "MSR",
        "CPUID/RDTSC/WBINVD",
        "hypercall",
        "HLT",
        "local APIC",
        "other nested page fault",
        "external interrupt",
        "interrupt window",
        "NMI/SMI/INIT",
        "exception",
        "forbidden",
        "shutdown/invalid",
        "XSETBV",
        "other",
    ];

    /// Counts `exit`.
    pub fn count(&mut self, exit: &VmExit) {
        use crate::lapic::{XAPIC_BASE, XAPIC_PAGE_SIZE};
        let kind = match exit {
            VmExit::IoOut { .. } | VmExit::IoIn { .. } | VmExit::IoString { .. } => 0,
            VmExit::MsrRead { .. } | VmExit::MsrWrite { .. } => 1,
            VmExit::Cpuid { .. } | VmExit::Rdtsc | VmExit::Wbinvd { .. } => 2,
            VmExit::Hypercall => 3,
            VmExit::Halt => 4,
            VmExit::NestedPageFault { gpa, .. }
                if (XAPIC_BASE..XAPIC_BASE + XAPIC_PAGE_SIZE).contains(gpa) =>
            {
                5
            }
            VmExit::NestedPageFault { .. } => 6,
            VmExit::ExternalInterrupt => 7,
            VmExit::InterruptWindow => 8,
            VmExit::Nmi | VmExit::Smi | VmExit::Init => 9,
            VmExit::Exception { .. } => 10,
            VmExit::Forbidden(_) => 11,
            VmExit::Shutdown | VmExit::InvalidState => 12,
            VmExit::Xsetbv => 13,
            VmExit::Unknown { .. } => 14,
        };
        self.counts[kind] += 1;
    }

    /// Each kind with its count, in [`Self::KINDS`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::KINDS.iter().copied().zip(self.counts.iter().copied())
    }

    /// All exits counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}
