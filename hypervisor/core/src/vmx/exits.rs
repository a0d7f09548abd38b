//! Decoding of VMX exit information (Intel SDM vol. 3, appendix C "VMX Basic Exit Reasons" and
//! chapter "VM Exits", section "Information for VM Exits") into the backend-neutral
//! [`VmExit`], so hostile guests, the console, timers and measurement see the same exits as
//! under SVM.
//!
//! The backend reads the few VMCS fields and guest registers an exit needs into an [`ExitInfo`]
//! and calls [`decode_exit`]. Exits with no [`VmExit`] counterpart become
//! [`VmExit::Unknown`] with the basic exit reason as the code ([`exit_reason_name`] names it);
//! control-register accesses (which the CR0/CR4 guest/host masks cause) have their own decoder,
//! [`decode_cr_access`], for the backend to handle before falling back to [`decode_exit`].

use crate::vmexit::{ForbiddenInstruction, InterruptedEvent, VmExit};
use core::fmt;

/// Basic exit reasons (bits 15:0 of the exit-reason field).
pub mod reason {
    /// Exception or non-maskable interrupt.
    pub const EXCEPTION_OR_NMI: u16 = 0;
    /// External interrupt.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// Triple fault.
    pub const TRIPLE_FAULT: u16 = 2;
    /// INIT signal.
    pub const INIT: u16 = 3;
    /// Start-up IPI.
    pub const SIPI: u16 = 4;
    /// I/O system-management interrupt.
    pub const IO_SMI: u16 = 5;
    /// Other SMI.
    pub const OTHER_SMI: u16 = 6;
    /// Interrupt window.
    pub const INTERRUPT_WINDOW: u16 = 7;
    /// NMI window.
    pub const NMI_WINDOW: u16 = 8;
    /// Task switch.
    pub const TASK_SWITCH: u16 = 9;
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// GETSEC.
    pub const GETSEC: u16 = 11;
    /// HLT.
    pub const HLT: u16 = 12;
    /// INVD.
    pub const INVD: u16 = 13;
    /// INVLPG.
    pub const INVLPG: u16 = 14;
    /// RDPMC.
    pub const RDPMC: u16 = 15;
    /// RDTSC.
    pub const RDTSC: u16 = 16;
    /// RSM.
    pub const RSM: u16 = 17;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// VMCLEAR.
    pub const VMCLEAR: u16 = 19;
    /// VMLAUNCH.
    pub const VMLAUNCH: u16 = 20;
    /// VMPTRLD.
    pub const VMPTRLD: u16 = 21;
    /// VMPTRST.
    pub const VMPTRST: u16 = 22;
    /// VMREAD.
    pub const VMREAD: u16 = 23;
    /// VMRESUME.
    pub const VMRESUME: u16 = 24;
    /// VMWRITE.
    pub const VMWRITE: u16 = 25;
    /// VMXOFF.
    pub const VMXOFF: u16 = 26;
    /// VMXON.
    pub const VMXON: u16 = 27;
    /// Control-register access.
    pub const CR_ACCESS: u16 = 28;
    /// MOV DR.
    pub const MOV_DR: u16 = 29;
    /// I/O instruction.
    pub const IO_INSTRUCTION: u16 = 30;
    /// RDMSR.
    pub const RDMSR: u16 = 31;
    /// WRMSR.
    pub const WRMSR: u16 = 32;
    /// VM-entry failure due to invalid guest state.
    pub const ENTRY_FAILURE_GUEST_STATE: u16 = 33;
    /// VM-entry failure due to MSR loading.
    pub const ENTRY_FAILURE_MSR_LOADING: u16 = 34;
    /// MWAIT.
    pub const MWAIT: u16 = 36;
    /// Monitor trap flag.
    pub const MONITOR_TRAP_FLAG: u16 = 37;
    /// MONITOR.
    pub const MONITOR: u16 = 39;
    /// PAUSE.
    pub const PAUSE: u16 = 40;
    /// VM-entry failure due to machine-check event.
    pub const ENTRY_FAILURE_MACHINE_CHECK: u16 = 41;
    /// TPR below threshold.
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    /// APIC access.
    pub const APIC_ACCESS: u16 = 44;
    /// Virtualized EOI.
    pub const VIRTUALIZED_EOI: u16 = 45;
    /// Access to GDTR or IDTR.
    pub const GDTR_IDTR_ACCESS: u16 = 46;
    /// Access to LDTR or TR.
    pub const LDTR_TR_ACCESS: u16 = 47;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIGURATION: u16 = 49;
    /// INVEPT.
    pub const INVEPT: u16 = 50;
    /// RDTSCP.
    pub const RDTSCP: u16 = 51;
    /// VMX-preemption timer expired.
    pub const PREEMPTION_TIMER: u16 = 52;
    /// INVVPID.
    pub const INVVPID: u16 = 53;
    /// WBINVD or WBNOINVD.
    pub const WBINVD: u16 = 54;
    /// XSETBV.
    pub const XSETBV: u16 = 55;
    /// APIC write.
    pub const APIC_WRITE: u16 = 56;
    /// RDRAND.
    pub const RDRAND: u16 = 57;
    /// INVPCID.
    pub const INVPCID: u16 = 58;
    /// VMFUNC.
    pub const VMFUNC: u16 = 59;
    /// ENCLS.
    pub const ENCLS: u16 = 60;
    /// RDSEED.
    pub const RDSEED: u16 = 61;
    /// Page-modification log full.
    pub const PML_FULL: u16 = 62;
    /// XSAVES.
    pub const XSAVES: u16 = 63;
    /// XRSTORS.
    pub const XRSTORS: u16 = 64;
    /// PCONFIG.
    pub const PCONFIG: u16 = 65;
    /// SPP-related event.
    pub const SPP_EVENT: u16 = 66;
    /// UMWAIT.
    pub const UMWAIT: u16 = 67;
    /// TPAUSE.
    pub const TPAUSE: u16 = 68;
    /// LOADIWKEY.
    pub const LOADIWKEY: u16 = 69;
    /// ENCLV.
    pub const ENCLV: u16 = 70;
    /// ENQCMD PASID translation failure.
    pub const ENQCMD_PASID_FAILURE: u16 = 72;
    /// ENQCMDS PASID translation failure.
    pub const ENQCMDS_PASID_FAILURE: u16 = 73;
    /// Bus lock.
    pub const BUS_LOCK: u16 = 74;
    /// Instruction timeout.
    pub const INSTRUCTION_TIMEOUT: u16 = 75;
}

/// The SDM's name of a basic exit reason.
pub const fn exit_reason_name(basic: u16) -> &'static str {
    use reason::*;
    match basic {
        EXCEPTION_OR_NMI => "exception or NMI",
        EXTERNAL_INTERRUPT => "external interrupt",
        TRIPLE_FAULT => "triple fault",
        INIT => "INIT signal",
        SIPI => "start-up IPI",
        IO_SMI => "I/O SMI",
        OTHER_SMI => "other SMI",
        INTERRUPT_WINDOW => "interrupt window",
        NMI_WINDOW => "NMI window",
        TASK_SWITCH => "task switch",
        CPUID => "CPUID",
        GETSEC => "GETSEC",
        HLT => "HLT",
        INVD => "INVD",
        INVLPG => "INVLPG",
        RDPMC => "RDPMC",
        RDTSC => "RDTSC",
        RSM => "RSM",
        VMCALL => "VMCALL",
        VMCLEAR => "VMCLEAR",
        VMLAUNCH => "VMLAUNCH",
        VMPTRLD => "VMPTRLD",
        VMPTRST => "VMPTRST",
        VMREAD => "VMREAD",
        VMRESUME => "VMRESUME",
        VMWRITE => "VMWRITE",
        VMXOFF => "VMXOFF",
        VMXON => "VMXON",
        CR_ACCESS => "control-register access",
        MOV_DR => "MOV DR",
        IO_INSTRUCTION => "I/O instruction",
        RDMSR => "RDMSR",
        WRMSR => "WRMSR",
        ENTRY_FAILURE_GUEST_STATE => "VM-entry failure due to invalid guest state",
        ENTRY_FAILURE_MSR_LOADING => "VM-entry failure due to MSR loading",
        MWAIT => "MWAIT",
        MONITOR_TRAP_FLAG => "monitor trap flag",
        MONITOR => "MONITOR",
        PAUSE => "PAUSE",
        ENTRY_FAILURE_MACHINE_CHECK => "VM-entry failure due to machine-check event",
        TPR_BELOW_THRESHOLD => "TPR below threshold",
        APIC_ACCESS => "APIC access",
        VIRTUALIZED_EOI => "virtualized EOI",
        GDTR_IDTR_ACCESS => "access to GDTR or IDTR",
        LDTR_TR_ACCESS => "access to LDTR or TR",
        EPT_VIOLATION => "EPT violation",
        EPT_MISCONFIGURATION => "EPT misconfiguration",
        INVEPT => "INVEPT",
        RDTSCP => "RDTSCP",
        PREEMPTION_TIMER => "VMX-preemption timer expired",
        INVVPID => "INVVPID",
        WBINVD => "WBINVD or WBNOINVD",
        XSETBV => "XSETBV",
        APIC_WRITE => "APIC write",
        RDRAND => "RDRAND",
        INVPCID => "INVPCID",
        VMFUNC => "VMFUNC",
        ENCLS => "ENCLS",
        RDSEED => "RDSEED",
        PML_FULL => "page-modification log full",
        XSAVES => "XSAVES",
        XRSTORS => "XRSTORS",
        PCONFIG => "PCONFIG",
        SPP_EVENT => "SPP-related event",
        UMWAIT => "UMWAIT",
        TPAUSE => "TPAUSE",
        LOADIWKEY => "LOADIWKEY",
        ENCLV => "ENCLV",
        ENQCMD_PASID_FAILURE => "ENQCMD PASID translation failure",
        ENQCMDS_PASID_FAILURE => "ENQCMDS PASID translation failure",
        BUS_LOCK => "bus lock",
        INSTRUCTION_TIMEOUT => "instruction timeout",
        _ => "unknown exit reason",
    }
}

/// Exit-reason bit 31: the VM entry failed (the guest never ran).
pub const EXIT_REASON_ENTRY_FAILURE: u32 = 1 << 31;

/// What [`decode_exit`] needs from the VMCS and the guest's registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// VM_EXIT_REASON.
    pub reason: u32,
    /// EXIT_QUALIFICATION.
    pub qualification: u64,
    /// VM_EXIT_INTR_INFO (exception or NMI exits).
    pub interruption_info: u32,
    /// VM_EXIT_INTR_ERROR_CODE (valid when interruption-info bit 11 is set).
    pub interruption_error_code: u32,
    /// VM_EXIT_INSTRUCTION_LEN.
    pub instruction_length: u32,
    /// GUEST_PHYSICAL_ADDRESS (EPT violations).
    pub guest_physical_address: u64,
    /// GUEST_RIP.
    pub guest_rip: u64,
    /// Guest rax (OUT value, CPUID leaf, WRMSR low half).
    pub rax: u64,
    /// Guest rcx (CPUID subleaf, MSR number).
    pub rcx: u64,
    /// Guest rdx (WRMSR high half).
    pub rdx: u64,
}

impl ExitInfo {
    /// Basic exit reason (bits 15:0).
    pub const fn basic_reason(&self) -> u16 {
        self.reason as u16
    }
}

/// Interruption types of the VM-exit interruption-information and IDT-vectoring fields.
mod interruption {
    pub const EXTERNAL_INTERRUPT: u32 = 0;
    pub const NMI: u32 = 2;
    pub const HARDWARE_EXCEPTION: u32 = 3;
    pub const SOFTWARE_INTERRUPT: u32 = 4;
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5;
    pub const SOFTWARE_EXCEPTION: u32 = 6;
    pub const VALID: u32 = 1 << 31;
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
}

/// The normalized exit.
pub fn decode_exit(info: &ExitInfo) -> VmExit {
    use reason::*;
    if info.reason & EXIT_REASON_ENTRY_FAILURE != 0 {
        return VmExit::InvalidState;
    }
    let forbidden = VmExit::Forbidden;
    match info.basic_reason() {
        EXCEPTION_OR_NMI => decode_exception_or_nmi(info),
        EXTERNAL_INTERRUPT => VmExit::ExternalInterrupt,
        TRIPLE_FAULT => VmExit::Shutdown,
        INIT => VmExit::Init,
        IO_SMI | OTHER_SMI => VmExit::Smi,
        TASK_SWITCH => forbidden(ForbiddenInstruction::TaskSwitch),
        CPUID => VmExit::Cpuid {
            leaf: info.rax as u32,
            subleaf: info.rcx as u32,
        },
        HLT => VmExit::Halt,
        INTERRUPT_WINDOW => VmExit::InterruptWindow,
        RDTSC => VmExit::Rdtsc,
        INVD => forbidden(ForbiddenInstruction::Invd),
        VMCALL => VmExit::Hypercall,
        // Every VMX instruction, GETSEC (SMX: a guest must never relaunch the machine), RSM,
        // RDPMC, ENCLS/ENCLV and PCONFIG are refused; the stop message names them through
        // `exit_reason_name` when the backend logs the reason.
        GETSEC | RDPMC | RSM | VMCLEAR | VMLAUNCH | VMPTRLD | VMPTRST | VMREAD | VMRESUME
        | VMWRITE | VMXOFF | VMXON | INVEPT | INVVPID | VMFUNC | ENCLS | ENCLV | PCONFIG => {
            forbidden(ForbiddenInstruction::Other)
        }
        IO_INSTRUCTION => decode_io(info),
        RDMSR => VmExit::MsrRead {
            msr: info.rcx as u32,
        },
        WRMSR => VmExit::MsrWrite {
            msr: info.rcx as u32,
            value: (info.rdx << 32) | (info.rax & 0xffff_ffff),
        },
        ENTRY_FAILURE_GUEST_STATE | ENTRY_FAILURE_MSR_LOADING | ENTRY_FAILURE_MACHINE_CHECK => {
            VmExit::InvalidState
        }
        MWAIT => forbidden(ForbiddenInstruction::Mwait),
        MONITOR => forbidden(ForbiddenInstruction::Monitor),
        EPT_VIOLATION => {
            let q = info.qualification;
            VmExit::NestedPageFault {
                gpa: info.guest_physical_address,
                write: q & (1 << 1) != 0,
                execute: q & (1 << 2) != 0,
                // Bits 5:3: the address was readable / writable / executable, i.e. mapped.
                present: q & (0b111 << 3) != 0,
            }
        }
        WBINVD => VmExit::Wbinvd {
            len: info.instruction_length as u8,
        },
        XSETBV => VmExit::Xsetbv,
        basic => VmExit::Unknown {
            code: u64::from(basic),
        },
    }
}

fn decode_exception_or_nmi(info: &ExitInfo) -> VmExit {
    use interruption::*;
    let interruption_info = info.interruption_info;
    if interruption_info & VALID == 0 {
        return VmExit::Unknown {
            code: u64::from(reason::EXCEPTION_OR_NMI),
        };
    }
    let vector = interruption_info as u8;
    match (interruption_info >> 8) & 7 {
        NMI => VmExit::Nmi,
        // ICEBP / INT1: a debug trap meant for hardware debuggers.
        PRIVILEGED_SOFTWARE_EXCEPTION => VmExit::Forbidden(ForbiddenInstruction::Icebp),
        HARDWARE_EXCEPTION | SOFTWARE_EXCEPTION => VmExit::Exception {
            vector,
            error_code: (interruption_info & ERROR_CODE_VALID != 0)
                .then_some(info.interruption_error_code),
        },
        _ => VmExit::Unknown {
            code: u64::from(reason::EXCEPTION_OR_NMI),
        },
    }
}

fn decode_io(info: &ExitInfo) -> VmExit {
    let q = info.qualification;
    let port = (q >> 16) as u16;
    // Bits 2:0: size minus one (0, 1 or 3).
    let size = match q & 7 {
        0 => 1u8,
        1 => 2,
        3 => 4,
        _ => {
            return VmExit::Unknown {
                code: u64::from(reason::IO_INSTRUCTION),
            };
        }
    };
    if q & (1 << 4) != 0 {
        return VmExit::IoString { port };
    }
    let next_rip = info
        .guest_rip
        .wrapping_add(u64::from(info.instruction_length));
    if q & (1 << 3) != 0 {
        VmExit::IoIn {
            port,
            size,
            next_rip,
        }
    } else {
        let mask = (1u64 << (u32::from(size) * 8)) - 1;
        VmExit::IoOut {
            port,
            size,
            value: (info.rax & mask) as u32,
            next_rip,
        }
    }
}

/// The event whose delivery an exit interrupted, from the IDT-vectoring information field and
/// its error code.
pub fn decode_idt_vectoring(info: u32, error_code: u32) -> Option<InterruptedEvent> {
    use interruption::*;
    if info & VALID == 0 {
        return None;
    }
    let vector = info as u8;
    Some(match (info >> 8) & 7 {
        EXTERNAL_INTERRUPT => InterruptedEvent::ExternalInterrupt { vector },
        NMI => InterruptedEvent::Nmi,
        HARDWARE_EXCEPTION => InterruptedEvent::Exception {
            vector,
            error_code: (info & ERROR_CODE_VALID != 0).then_some(error_code),
        },
        SOFTWARE_INTERRUPT => InterruptedEvent::SoftwareInterrupt { vector },
        PRIVILEGED_SOFTWARE_EXCEPTION | SOFTWARE_EXCEPTION => {
            InterruptedEvent::SoftwareException { vector }
        }
        // Type 1 is reserved and 7 ("other event") is never reported here: treat as nothing to
        // re-inject rather than inventing an event.
        _ => return None,
    })
}

/// A control-register access (exit reason 28).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// `mov crN, reg`.
    MovToCr {
        /// Control register number.
        cr: u8,
        /// General-purpose register number (0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp, 6 rsi,
        /// 7 rdi, 8-15 r8-r15).
        gpr: u8,
    },
    /// `mov reg, crN`.
    MovFromCr {
        /// Control register number.
        cr: u8,
        /// General-purpose register number.
        gpr: u8,
    },
    /// `clts`.
    Clts,
    /// `lmsw`.
    Lmsw {
        /// The 16-bit source operand.
        source: u16,
        /// The operand was in memory (else a register).
        memory_operand: bool,
    },
}

/// Decodes the exit qualification of a control-register access.
pub const fn decode_cr_access(qualification: u64) -> CrAccess {
    let cr = (qualification & 0xf) as u8;
    let gpr = ((qualification >> 8) & 0xf) as u8;
    match (qualification >> 4) & 3 {
        0 => CrAccess::MovToCr { cr, gpr },
        1 => CrAccess::MovFromCr { cr, gpr },
        2 => CrAccess::Clts,
        _ => CrAccess::Lmsw {
            source: (qualification >> 16) as u16,
            memory_operand: qualification & (1 << 6) != 0,
        },
    }
}

/// A VM-instruction error number (the VM_INSTRUCTION_ERROR field after VMfailValid), with the
/// SDM's description (table "VM-Instruction Error Numbers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmInstructionError(pub u32);

impl VmInstructionError {
    /// VM entry with invalid control field(s).
    pub const INVALID_CONTROL_FIELDS: VmInstructionError = VmInstructionError(7);
    /// VM entry with invalid host-state field(s).
    pub const INVALID_HOST_STATE_FIELDS: VmInstructionError = VmInstructionError(8);

    /// The SDM's description.
    pub const fn description(self) -> &'static str {
        match self.0 {
            1 => "VMCALL executed in VMX root operation",
            2 => "VMCLEAR with invalid physical address",
            3 => "VMCLEAR with VMXON pointer",
            4 => "VMLAUNCH with non-clear VMCS",
            5 => "VMRESUME with non-launched VMCS",
            6 => "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)",
            7 => "VM entry with invalid control field(s)",
            8 => "VM entry with invalid host-state field(s)",
            9 => "VMPTRLD with invalid physical address",
            10 => "VMPTRLD with VMXON pointer",
            11 => "VMPTRLD with incorrect VMCS revision identifier",
            12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
            13 => "VMWRITE to read-only VMCS component",
            15 => "VMXON executed in VMX root operation",
            16 => "VM entry with invalid executive-VMCS pointer",
            17 => "VM entry with non-launched executive VMCS",
            18 => "VM entry with executive-VMCS pointer not VMXON pointer",
            19 => "VMCALL with non-clear VMCS",
            20 => "VMCALL with invalid VM-exit control fields",
            22 => "VMCALL with incorrect MSEG revision identifier",
            23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            24 => "VMCALL with invalid SMM-monitor features",
            25 => "VM entry with invalid VM-execution control fields in executive VMCS",
            26 => "VM entry with events blocked by MOV SS",
            28 => "invalid operand to INVEPT/INVVPID",
            _ => "unknown VM-instruction error",
        }
    }
}

impl fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VM-instruction error {}: {}", self.0, self.description())
    }
}

/// The exit qualification of a VM-entry failure due to invalid guest state (exit reason 33),
/// described.
pub const fn entry_failure_qualification(qualification: u64) -> &'static str {
    match qualification {
        0 | 1 => "a guest-state check failed",
        2 => "failure loading the PDPTEs",
        3 => "attempt to inject an NMI into a guest blocking events by STI",
        4 => "invalid VMCS link pointer",
        _ => "unknown entry-failure qualification",
    }
}
