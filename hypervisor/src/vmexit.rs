//! The normalized exit the arch backend hands to common code.
//!
//! Requested from `slipway-hv-core` (R1.4 in /work/notes/hv-core-requests.md); this local
//! definition is replaced by hv-core's once it lands.

/// An instruction no guest may execute: the domain is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForbiddenInstruction {
    Vmrun,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
    Skinit,
    Invlpga,
    Xsetbv,
    Invd,
    Wbinvd,
    MonitorMwait,
    Icebp,
    TaskSwitch,
    Init,
    Smi,
}

/// Why a guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// `out` to a port (`value` already masked to `size` bytes).
    IoOut {
        port: u16,
        size: u8,
        value: u32,
        next_rip: u64,
    },
    /// `in` from a port.
    IoIn { port: u16, size: u8, next_rip: u64 },
    /// `ins`/`outs` (string I/O is not emulated).
    IoString { port: u16 },
    /// VMMCALL.
    Hypercall,
    /// CPUID (leaf in rax, subleaf in rcx).
    Cpuid,
    /// HLT.
    Halt,
    /// RDMSR.
    MsrRead { msr: u32 },
    /// WRMSR.
    MsrWrite { msr: u32, value: u64 },
    /// Access to guest-physical memory the domain does not have (or not with that right).
    NestedPageFault { gpa: u64, write: bool, fetch: bool },
    /// A physical interrupt arrived (the scheduler tick).
    PhysicalInterrupt,
    /// A physical NMI arrived.
    Nmi,
    /// The guest triple-faulted.
    Shutdown,
    /// An instruction no guest may execute.
    Forbidden(ForbiddenInstruction),
    /// An intercepted exception.
    Exception { vector: u8, error_code: u64 },
    /// The VMCB was refused (VMEXIT_INVALID): a hypervisor bug or corrupted state.
    Invalid,
    /// An exit code this backend does not know.
    Unknown { code: u64 },
}

impl ForbiddenInstruction {
    /// The instruction's name, for the stop message.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Vmrun => "VMRUN",
            Self::Vmload => "VMLOAD",
            Self::Vmsave => "VMSAVE",
            Self::Stgi => "STGI",
            Self::Clgi => "CLGI",
            Self::Skinit => "SKINIT",
            Self::Invlpga => "INVLPGA",
            Self::Xsetbv => "XSETBV",
            Self::Invd => "INVD",
            Self::Wbinvd => "WBINVD",
            Self::MonitorMwait => "MONITOR/MWAIT",
            Self::Icebp => "ICEBP",
            Self::TaskSwitch => "task switch",
            Self::Init => "INIT",
            Self::Smi => "SMI",
        }
    }
}
