//! The VMX capability MSRs (Intel SDM vol. 3, appendix A "VMX Capability Reporting Facility") and
//! the computation of control values from them.
//!
//! The backend reads the MSRs once per pCPU ([`VmxCapabilities::read`] over an `rdmsr` closure)
//! and asks [`VmxCapabilities::control_value`] for each control field: the bits it needs, the bits
//! it would like, and the CPU's must-be-one bits. A needed bit the CPU cannot set is an error
//! naming the control and the bit, never a silently different VMCS.

use core::fmt;

/// IA32_FEATURE_CONTROL (lock bit 0, VMX outside SMX bit 2).
pub const MSR_IA32_FEATURE_CONTROL: u32 = 0x3a;
/// IA32_VMX_BASIC.
pub const MSR_IA32_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_PINBASED_CTLS.
pub const MSR_IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// IA32_VMX_PROCBASED_CTLS.
pub const MSR_IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_EXIT_CTLS.
pub const MSR_IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// IA32_VMX_ENTRY_CTLS.
pub const MSR_IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// IA32_VMX_MISC.
pub const MSR_IA32_VMX_MISC: u32 = 0x485;
/// IA32_VMX_CR0_FIXED0.
pub const MSR_IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// IA32_VMX_CR0_FIXED1.
pub const MSR_IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// IA32_VMX_CR4_FIXED0.
pub const MSR_IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// IA32_VMX_CR4_FIXED1.
pub const MSR_IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// IA32_VMX_VMCS_ENUM.
pub const MSR_IA32_VMX_VMCS_ENUM: u32 = 0x48a;
/// IA32_VMX_PROCBASED_CTLS2.
pub const MSR_IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
/// IA32_VMX_EPT_VPID_CAP.
pub const MSR_IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
/// IA32_VMX_TRUE_PINBASED_CTLS.
pub const MSR_IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
/// IA32_VMX_TRUE_PROCBASED_CTLS.
pub const MSR_IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
/// IA32_VMX_TRUE_EXIT_CTLS.
pub const MSR_IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
/// IA32_VMX_TRUE_ENTRY_CTLS.
pub const MSR_IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// IA32_VMX_VMFUNC.
pub const MSR_IA32_VMX_VMFUNC: u32 = 0x491;

/// IA32_FEATURE_CONTROL bit 0: the MSR is locked.
pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL bit 2: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
/// IA32_FEATURE_CONTROL bit 1: VMXON allowed inside SMX operation (after a measured launch).
pub const FEATURE_CONTROL_VMX_INSIDE_SMX: u64 = 1 << 1;

/// Pin-based VM-execution control bits (SDM table "Definitions of Pin-Based VM-Execution
/// Controls").
pub mod pin {
    /// External-interrupt exiting.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMI exiting.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Virtual NMIs.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// Activate VMX-preemption timer.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
    /// Process posted interrupts.
    pub const POSTED_INTERRUPTS: u32 = 1 << 7;
}

/// Primary processor-based VM-execution control bits.
pub mod proc {
    /// Interrupt-window exiting.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// Use TSC offsetting.
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exiting.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exiting.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exiting.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exiting.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// RDTSC exiting.
    pub const RDTSC_EXITING: u32 = 1 << 12;
    /// CR3-load exiting.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// CR3-store exiting.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Activate tertiary controls.
    pub const ACTIVATE_TERTIARY_CONTROLS: u32 = 1 << 17;
    /// CR8-load exiting.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// CR8-store exiting.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// Use TPR shadow.
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    /// NMI-window exiting.
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// MOV-DR exiting.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Unconditional I/O exiting.
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// Use I/O bitmaps.
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Monitor trap flag.
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// Use MSR bitmaps.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exiting.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// PAUSE exiting.
    pub const PAUSE_EXITING: u32 = 1 << 30;
    /// Activate secondary controls.
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution control bits.
pub mod proc2 {
    /// Virtualize APIC accesses.
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    /// Enable EPT.
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// Descriptor-table exiting.
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    /// Enable RDTSCP.
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Virtualize x2APIC mode.
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    /// Enable VPID.
    pub const ENABLE_VPID: u32 = 1 << 5;
    /// WBINVD exiting.
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Unrestricted guest.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// APIC-register virtualization.
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    /// Virtual-interrupt delivery.
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    /// PAUSE-loop exiting.
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    /// RDRAND exiting.
    pub const RDRAND_EXITING: u32 = 1 << 11;
    /// Enable INVPCID.
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    /// Enable VM functions.
    pub const ENABLE_VM_FUNCTIONS: u32 = 1 << 13;
    /// VMCS shadowing.
    pub const VMCS_SHADOWING: u32 = 1 << 14;
    /// Enable ENCLS exiting.
    pub const ENABLE_ENCLS_EXITING: u32 = 1 << 15;
    /// RDSEED exiting.
    pub const RDSEED_EXITING: u32 = 1 << 16;
    /// Enable PML.
    pub const ENABLE_PML: u32 = 1 << 17;
    /// EPT-violation #VE.
    pub const EPT_VIOLATION_VE: u32 = 1 << 18;
    /// Conceal VMX from PT.
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 19;
    /// Enable XSAVES/XRSTORS.
    pub const ENABLE_XSAVES: u32 = 1 << 20;
    /// Mode-based execute control for EPT.
    pub const MODE_BASED_EPT_EXECUTE: u32 = 1 << 22;
    /// Sub-page write permissions for EPT.
    pub const SUB_PAGE_WRITE_PERMISSIONS: u32 = 1 << 23;
    /// Intel PT uses guest-physical addresses.
    pub const PT_USES_GUEST_PHYSICAL: u32 = 1 << 24;
    /// Use TSC scaling.
    pub const USE_TSC_SCALING: u32 = 1 << 25;
    /// Enable user wait and pause.
    pub const ENABLE_USER_WAIT_PAUSE: u32 = 1 << 26;
    /// Enable ENCLV exiting.
    pub const ENABLE_ENCLV_EXITING: u32 = 1 << 28;
}

/// Primary VM-exit control bits.
pub mod exit {
    /// Save debug controls.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// Host address-space size (a 64-bit host).
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    /// Load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    /// Acknowledge interrupt on exit.
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    /// Save IA32_PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Save IA32_EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
    /// Save VMX-preemption timer value.
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
    /// Clear IA32_BNDCFGS.
    pub const CLEAR_BNDCFGS: u32 = 1 << 23;
    /// Conceal VMX from PT.
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 24;
    /// Clear IA32_RTIT_CTL.
    pub const CLEAR_RTIT_CTL: u32 = 1 << 25;
    /// Load CET state.
    pub const LOAD_CET_STATE: u32 = 1 << 28;
    /// Load PKRS.
    pub const LOAD_PKRS: u32 = 1 << 29;
}

/// VM-entry control bits.
pub mod entry {
    /// Load debug controls.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// IA-32e mode guest.
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Entry to SMM.
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    /// Deactivate dual-monitor treatment.
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    /// Load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
    /// Load IA32_BNDCFGS.
    pub const LOAD_BNDCFGS: u32 = 1 << 16;
    /// Conceal VMX from PT.
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 17;
    /// Load IA32_RTIT_CTL.
    pub const LOAD_RTIT_CTL: u32 = 1 << 18;
    /// Load CET state.
    pub const LOAD_CET_STATE: u32 = 1 << 20;
    /// Load PKRS.
    pub const LOAD_PKRS: u32 = 1 << 22;
}

/// IA32_VMX_EPT_VPID_CAP bits.
pub mod ept_vpid {
    /// EPT execute-only translations.
    pub const EXECUTE_ONLY: u64 = 1 << 0;
    /// Page-walk length 4.
    pub const PAGE_WALK_4: u64 = 1 << 6;
    /// Page-walk length 5.
    pub const PAGE_WALK_5: u64 = 1 << 7;
    /// EPT paging-structure memory type uncacheable.
    pub const MEMORY_TYPE_UC: u64 = 1 << 8;
    /// EPT paging-structure memory type write-back.
    pub const MEMORY_TYPE_WB: u64 = 1 << 14;
    /// 2 MiB EPT pages.
    pub const PAGES_2M: u64 = 1 << 16;
    /// 1 GiB EPT pages.
    pub const PAGES_1G: u64 = 1 << 17;
    /// INVEPT supported.
    pub const INVEPT: u64 = 1 << 20;
    /// Accessed and dirty flags for EPT.
    pub const ACCESSED_DIRTY: u64 = 1 << 21;
    /// Advanced VM-exit information for EPT violations.
    pub const ADVANCED_EXIT_INFO: u64 = 1 << 22;
    /// Single-context INVEPT.
    pub const INVEPT_SINGLE_CONTEXT: u64 = 1 << 25;
    /// All-context INVEPT.
    pub const INVEPT_ALL_CONTEXT: u64 = 1 << 26;
    /// INVVPID supported.
    pub const INVVPID: u64 = 1 << 32;
    /// Individual-address INVVPID.
    pub const INVVPID_INDIVIDUAL_ADDRESS: u64 = 1 << 40;
    /// Single-context INVVPID.
    pub const INVVPID_SINGLE_CONTEXT: u64 = 1 << 41;
    /// All-context INVVPID.
    pub const INVVPID_ALL_CONTEXT: u64 = 1 << 42;
    /// Single-context-retaining-globals INVVPID.
    pub const INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS: u64 = 1 << 43;
}

/// One VMX control field whose allowed settings a capability MSR reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Pin-based VM-execution controls.
    PinBased,
    /// Primary processor-based VM-execution controls.
    PrimaryProc,
    /// Secondary processor-based VM-execution controls.
    SecondaryProc,
    /// VM-exit controls.
    Exit,
    /// VM-entry controls.
    Entry,
}

impl Control {
    /// The VMCS field this control lives in.
    pub const fn field(self) -> super::VmcsField {
        use super::VmcsField;
        match self {
            Control::PinBased => VmcsField::PinBasedControls,
            Control::PrimaryProc => VmcsField::PrimaryProcControls,
            Control::SecondaryProc => VmcsField::SecondaryProcControls,
            Control::Exit => VmcsField::ExitControls,
            Control::Entry => VmcsField::EntryControls,
        }
    }

    /// The SDM's name for `bit` of this control, or "reserved".
    pub const fn bit_name(self, bit: u32) -> &'static str {
        match self {
            Control::PinBased => match bit {
                0 => "external-interrupt exiting",
                3 => "NMI exiting",
                5 => "virtual NMIs",
                6 => "activate VMX-preemption timer",
                7 => "process posted interrupts",
                _ => "reserved",
            },
            Control::PrimaryProc => match bit {
                2 => "interrupt-window exiting",
                3 => "use TSC offsetting",
                7 => "HLT exiting",
                9 => "INVLPG exiting",
                10 => "MWAIT exiting",
                11 => "RDPMC exiting",
                12 => "RDTSC exiting",
                15 => "CR3-load exiting",
                16 => "CR3-store exiting",
                17 => "activate tertiary controls",
                19 => "CR8-load exiting",
                20 => "CR8-store exiting",
                21 => "use TPR shadow",
                22 => "NMI-window exiting",
                23 => "MOV-DR exiting",
                24 => "unconditional I/O exiting",
                25 => "use I/O bitmaps",
                27 => "monitor trap flag",
                28 => "use MSR bitmaps",
                29 => "MONITOR exiting",
                30 => "PAUSE exiting",
                31 => "activate secondary controls",
                _ => "reserved",
            },
            Control::SecondaryProc => match bit {
                0 => "virtualize APIC accesses",
                1 => "enable EPT",
                2 => "descriptor-table exiting",
                3 => "enable RDTSCP",
                4 => "virtualize x2APIC mode",
                5 => "enable VPID",
                6 => "WBINVD exiting",
                7 => "unrestricted guest",
                8 => "APIC-register virtualization",
                9 => "virtual-interrupt delivery",
                10 => "PAUSE-loop exiting",
                11 => "RDRAND exiting",
                12 => "enable INVPCID",
                13 => "enable VM functions",
                14 => "VMCS shadowing",
                15 => "enable ENCLS exiting",
                16 => "RDSEED exiting",
                17 => "enable PML",
                18 => "EPT-violation #VE",
                19 => "conceal VMX from PT",
                20 => "enable XSAVES/XRSTORS",
                21 => "PASID translation",
                22 => "mode-based execute control for EPT",
                23 => "sub-page write permissions for EPT",
                24 => "Intel PT uses guest physical addresses",
                25 => "use TSC scaling",
                26 => "enable user wait and pause",
                27 => "enable PCONFIG",
                28 => "enable ENCLV exiting",
                _ => "reserved",
            },
            Control::Exit => match bit {
                2 => "save debug controls",
                9 => "host address-space size",
                12 => "load IA32_PERF_GLOBAL_CTRL",
                15 => "acknowledge interrupt on exit",
                18 => "save IA32_PAT",
                19 => "load IA32_PAT",
                20 => "save IA32_EFER",
                21 => "load IA32_EFER",
                22 => "save VMX-preemption timer value",
                23 => "clear IA32_BNDCFGS",
                24 => "conceal VMX from PT",
                25 => "clear IA32_RTIT_CTL",
                26 => "clear IA32_LBR_CTL",
                27 => "clear UINV",
                28 => "load CET state",
                29 => "load PKRS",
                30 => "save IA32_PERF_GLOBAL_CTL",
                31 => "activate secondary controls",
                _ => "reserved",
            },
            Control::Entry => match bit {
                2 => "load debug controls",
                9 => "IA-32e mode guest",
                10 => "entry to SMM",
                11 => "deactivate dual-monitor treatment",
                13 => "load IA32_PERF_GLOBAL_CTRL",
                14 => "load IA32_PAT",
                15 => "load IA32_EFER",
                16 => "load IA32_BNDCFGS",
                17 => "conceal VMX from PT",
                18 => "load IA32_RTIT_CTL",
                19 => "load UINV",
                20 => "load CET state",
                21 => "load guest IA32_LBR_CTL",
                22 => "load PKRS",
                _ => "reserved",
            },
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field().name())
    }
}

/// Allowed settings of one 32-bit control, from its capability MSR: bits 31:0 are the allowed
/// 0-settings (a 1 there means the control bit must be 1), bits 63:32 the allowed 1-settings (a 0
/// there means the control bit must be 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AllowedBits {
    /// Bits that must be 1.
    pub must_be_one: u32,
    /// Bits that may be 1 (a superset of `must_be_one` on a sane CPU).
    pub may_be_one: u32,
}

impl AllowedBits {
    /// Splits a capability MSR value.
    pub const fn from_msr(value: u64) -> AllowedBits {
        AllowedBits {
            must_be_one: value as u32,
            may_be_one: (value >> 32) as u32,
        }
    }

    /// Nothing allowed (a control the CPU lacks, e.g. secondary controls without the activate bit).
    pub const NONE: AllowedBits = AllowedBits {
        must_be_one: 0,
        may_be_one: 0,
    };

    /// Whether `bits` may all be set.
    pub const fn allows(self, bits: u32) -> bool {
        bits & !self.may_be_one == 0
    }

    /// The first bit of `value` that violates these settings (set where it must be 0, or clear
    /// where it must be 1), with whether it was set.
    pub const fn first_violation(self, value: u32) -> Option<(u32, bool)> {
        let set_but_not_allowed = value & !self.may_be_one;
        if set_but_not_allowed != 0 {
            return Some((set_but_not_allowed.trailing_zeros(), true));
        }
        let clear_but_required = !value & self.must_be_one;
        if clear_but_required != 0 {
            return Some((clear_but_required.trailing_zeros(), false));
        }
        None
    }
}

/// A control value the CPU cannot provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// A required bit is not an allowed 1-setting.
    Unsupported {
        /// Which control.
        control: Control,
        /// Bit number.
        bit: u32,
    },
    /// A bit the caller wants clear must be 1 on this CPU.
    MustBeOne {
        /// Which control.
        control: Control,
        /// Bit number.
        bit: u32,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ControlError::Unsupported { control, bit } => write!(
                f,
                "{control}: bit {bit} ({}) is required but this CPU cannot set it",
                control.bit_name(bit)
            ),
            ControlError::MustBeOne { control, bit } => write!(
                f,
                "{control}: bit {bit} ({}) must stay clear but this CPU requires it set",
                control.bit_name(bit)
            ),
        }
    }
}

/// IA32_VMX_BASIC, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// VMCS revision identifier (bits 30:0), written into the first dword of VMXON and VMCS regions.
    pub const fn revision_id(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }
    /// Bytes to allocate for the VMXON region and each VMCS (bits 44:32, at most 4096).
    pub const fn region_size(self) -> u32 {
        ((self.0 >> 32) & 0x1fff) as u32
    }
    /// Bit 48: VMXON, VMCS and referenced structures must lie below 4 GiB.
    pub const fn addresses_limited_to_32_bits(self) -> bool {
        self.0 & (1 << 48) != 0
    }
    /// Bits 53:50: memory type for the VMCS and referenced structures (6 = write-back).
    pub const fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xf) as u8
    }
    /// Bit 54: VM exits on INS/OUTS report instruction information.
    pub const fn ins_outs_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }
    /// Bit 55: the TRUE control MSRs exist (and default1 controls may be cleared).
    pub const fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }
    /// Bit 56: hardware exceptions may be injected without an error code whatever the vector.
    pub const fn inject_without_error_code(self) -> bool {
        self.0 & (1 << 56) != 0
    }
}

/// IA32_VMX_MISC, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxMisc(pub u64);

impl VmxMisc {
    /// Bits 4:0: the preemption timer counts down once every 2^rate TSC ticks.
    pub const fn preemption_timer_rate(self) -> u8 {
        (self.0 & 0x1f) as u8
    }
    /// Bit 5: VM exits store EFER.LMA into the "IA-32e mode guest" entry control.
    pub const fn exit_stores_lma(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    /// Whether activity state `state` (1 HLT, 2 shutdown, 3 wait-for-SIPI; 0 active always) is
    /// supported (bits 8:6).
    pub const fn activity_state_supported(self, state: u32) -> bool {
        match state {
            0 => true,
            1..=3 => self.0 & (1 << (5 + state)) != 0,
            _ => false,
        }
    }
    /// Bits 24:16: number of CR3-target values.
    pub const fn cr3_target_count(self) -> u32 {
        ((self.0 >> 16) & 0x1ff) as u32
    }
    /// Recommended maximum number of MSRs in each MSR list: 512 * (bits 27:25 + 1).
    pub const fn max_msr_list_entries(self) -> u32 {
        512 * ((((self.0 >> 25) & 7) as u32) + 1)
    }
    /// Bit 29: VMWRITE may write VM-exit information fields.
    pub const fn vmwrite_any_field(self) -> bool {
        self.0 & (1 << 29) != 0
    }
    /// Bit 30: software interrupts, software and privileged software exceptions may be injected
    /// with instruction length 0.
    pub const fn inject_zero_length(self) -> bool {
        self.0 & (1 << 30) != 0
    }
}

/// Everything the VMX capability MSRs say about one processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxCapabilities {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// Pin-based controls (TRUE MSR when [`VmxBasic::true_controls`]).
    pub pin_based: AllowedBits,
    /// Primary processor-based controls (TRUE MSR when available).
    pub primary_proc: AllowedBits,
    /// Secondary processor-based controls ([`AllowedBits::NONE`] without "activate secondary
    /// controls").
    pub secondary_proc: AllowedBits,
    /// VM-exit controls (TRUE MSR when available).
    pub exit: AllowedBits,
    /// VM-entry controls (TRUE MSR when available).
    pub entry: AllowedBits,
    /// IA32_VMX_MISC.
    pub misc: VmxMisc,
    /// IA32_VMX_CR0_FIXED0: CR0 bits that must be 1 in VMX operation.
    pub cr0_fixed0: u64,
    /// IA32_VMX_CR0_FIXED1: CR0 bits that may be 1.
    pub cr0_fixed1: u64,
    /// IA32_VMX_CR4_FIXED0: CR4 bits that must be 1.
    pub cr4_fixed0: u64,
    /// IA32_VMX_CR4_FIXED1: CR4 bits that may be 1.
    pub cr4_fixed1: u64,
    /// IA32_VMX_EPT_VPID_CAP (0 when neither EPT nor VPID can be enabled).
    pub ept_vpid: u64,
    /// IA32_VMX_VMFUNC (0 when VM functions cannot be enabled).
    pub vmfunc: u64,
}

impl VmxCapabilities {
    /// Reads every capability MSR through `rdmsr`, only those the CPU reports to exist (reading a
    /// missing one would fault): TRUE controls when IA32_VMX_BASIC bit 55 says so, secondary
    /// controls only with "activate secondary controls" allowed, EPT/VPID caps only with EPT or
    /// VPID allowed, VM functions only with "enable VM functions" allowed.
    pub fn read(mut rdmsr: impl FnMut(u32) -> u64) -> VmxCapabilities {
        let basic = VmxBasic(rdmsr(MSR_IA32_VMX_BASIC));
        let (pin, primary, exit, entry) = if basic.true_controls() {
            (
                MSR_IA32_VMX_TRUE_PINBASED_CTLS,
                MSR_IA32_VMX_TRUE_PROCBASED_CTLS,
                MSR_IA32_VMX_TRUE_EXIT_CTLS,
                MSR_IA32_VMX_TRUE_ENTRY_CTLS,
            )
        } else {
            (
                MSR_IA32_VMX_PINBASED_CTLS,
                MSR_IA32_VMX_PROCBASED_CTLS,
                MSR_IA32_VMX_EXIT_CTLS,
                MSR_IA32_VMX_ENTRY_CTLS,
            )
        };
        let primary_proc = AllowedBits::from_msr(rdmsr(primary));
        let secondary_proc = if primary_proc.allows(proc::ACTIVATE_SECONDARY_CONTROLS) {
            AllowedBits::from_msr(rdmsr(MSR_IA32_VMX_PROCBASED_CTLS2))
        } else {
            AllowedBits::NONE
        };
        let ept_vpid = if secondary_proc.may_be_one & (proc2::ENABLE_EPT | proc2::ENABLE_VPID) != 0
        {
            rdmsr(MSR_IA32_VMX_EPT_VPID_CAP)
        } else {
            0
        };
        let vmfunc = if secondary_proc.allows(proc2::ENABLE_VM_FUNCTIONS) {
            rdmsr(MSR_IA32_VMX_VMFUNC)
        } else {
            0
        };
        VmxCapabilities {
            basic,
            pin_based: AllowedBits::from_msr(rdmsr(pin)),
            primary_proc,
            secondary_proc,
            exit: AllowedBits::from_msr(rdmsr(exit)),
            entry: AllowedBits::from_msr(rdmsr(entry)),
            misc: VmxMisc(rdmsr(MSR_IA32_VMX_MISC)),
            cr0_fixed0: rdmsr(MSR_IA32_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(MSR_IA32_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(MSR_IA32_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(MSR_IA32_VMX_CR4_FIXED1),
            ept_vpid,
            vmfunc,
        }
    }

    /// The allowed settings of `control`.
    pub const fn allowed(&self, control: Control) -> AllowedBits {
        match control {
            Control::PinBased => self.pin_based,
            Control::PrimaryProc => self.primary_proc,
            Control::SecondaryProc => self.secondary_proc,
            Control::Exit => self.exit,
            Control::Entry => self.entry,
        }
    }

    /// Whether every bit of `bits` may be set in `control`.
    pub const fn supports(&self, control: Control, bits: u32) -> bool {
        self.allowed(control).allows(bits)
    }

    /// The value for `control`: every `required` bit (an error names the first one the CPU cannot
    /// set), each `optional` bit the CPU allows, and the CPU's must-be-one bits. A must-be-one bit
    /// listed in `forbidden` is an error too (a control the hypervisor relies on being off).
    pub fn control_value(
        &self,
        control: Control,
        required: u32,
        optional: u32,
        forbidden: u32,
    ) -> Result<u32, ControlError> {
        let allowed = self.allowed(control);
        let missing = required & !allowed.may_be_one;
        if missing != 0 {
            return Err(ControlError::Unsupported {
                control,
                bit: missing.trailing_zeros(),
            });
        }
        let forced = forbidden & allowed.must_be_one;
        if forced != 0 {
            return Err(ControlError::MustBeOne {
                control,
                bit: forced.trailing_zeros(),
            });
        }
        Ok(required | (optional & allowed.may_be_one) | allowed.must_be_one)
    }

    /// The first CR0 bit (number, whether set) that breaks CR0_FIXED0/FIXED1; with `unrestricted_guest`, PE and PG may be 0.
    pub const fn cr0_violation(&self, cr0: u64, unrestricted_guest: bool) -> Option<(u32, bool)> {
        let mut fixed0 = self.cr0_fixed0;
        if unrestricted_guest {
            fixed0 &= !(CR0_PE | CR0_PG);
        }
        fixed_violation(cr0, fixed0, self.cr0_fixed1)
    }

    /// The first CR4 bit (number, whether set) that breaks CR4_FIXED0/FIXED1.
    pub const fn cr4_violation(&self, cr4: u64) -> Option<(u32, bool)> {
        fixed_violation(cr4, self.cr4_fixed0, self.cr4_fixed1)
    }

    /// A copy with another IA32_VMX_EPT_VPID_CAP (tests of processors lacking a feature).
    pub const fn with_ept_vpid(mut self, ept_vpid: u64) -> VmxCapabilities {
        self.ept_vpid = ept_vpid;
        self
    }

    /// A copy with another IA32_VMX_MISC.
    pub const fn with_misc(mut self, misc: VmxMisc) -> VmxCapabilities {
        self.misc = misc;
        self
    }

    /// Whether the EPT / VPID capability `bit` (see [`ept_vpid`]) is reported.
    pub const fn has_ept_vpid(&self, bit: u64) -> bool {
        self.ept_vpid & bit != 0
    }
}

/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;

/// The first bit of `value` that breaks FIXED0 (must be 1) / FIXED1 (may be 1): (bit, was set).
const fn fixed_violation(value: u64, fixed0: u64, fixed1: u64) -> Option<(u32, bool)> {
    let clear_but_fixed = fixed0 & !value;
    if clear_but_fixed != 0 {
        return Some((clear_but_fixed.trailing_zeros(), false));
    }
    let set_but_not_allowed = value & !fixed1;
    if set_but_not_allowed != 0 {
        return Some((set_but_not_allowed.trailing_zeros(), true));
    }
    None
}

/// Why VMXON would fail (#GP or VMfailInvalid) on this processor in its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxonError {
    /// IA32_FEATURE_CONTROL is not locked (firmware did not configure VMX; VMXON would #GP).
    FeatureControlUnlocked,
    /// VMX is disabled outside SMX operation by IA32_FEATURE_CONTROL bit 2.
    DisabledOutsideSmx,
    /// VMX is disabled inside SMX operation (after a measured launch) by IA32_FEATURE_CONTROL
    /// bit 1.
    DisabledInsideSmx,
    /// A CR0 bit breaks IA32_VMX_CR0_FIXED0/FIXED1 (bit number, whether it is set).
    Cr0(u32, bool),
    /// A CR4 bit breaks IA32_VMX_CR4_FIXED0/FIXED1 (bit number, whether it is set).
    Cr4(u32, bool),
    /// The VMXON region would lie above 4 GiB on a processor limited to 32-bit addresses.
    RegionAbove4GiB,
}

impl fmt::Display for VmxonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmxonError::FeatureControlUnlocked => {
                f.write_str("IA32_FEATURE_CONTROL is not locked: firmware left VMX unconfigured")
            }
            VmxonError::DisabledOutsideSmx => {
                f.write_str("IA32_FEATURE_CONTROL disables VMX outside SMX operation (bit 2)")
            }
            VmxonError::DisabledInsideSmx => f.write_str(
                "IA32_FEATURE_CONTROL disables VMX inside SMX operation (bit 1), needed after a measured launch",
            ),
            VmxonError::Cr0(bit, set) => write!(
                f,
                "CR0 bit {bit} is {} but VMX operation requires it {}",
                if set { "set" } else { "clear" },
                if set { "clear" } else { "set" }
            ),
            VmxonError::Cr4(bit, set) => write!(
                f,
                "CR4 bit {bit} is {} but VMX operation requires it {}",
                if set { "set" } else { "clear" },
                if set { "clear" } else { "set" }
            ),
            VmxonError::RegionAbove4GiB => f.write_str(
                "the VMXON region lies above 4 GiB but IA32_VMX_BASIC bit 48 limits VMX structures to 32-bit addresses",
            ),
        }
    }
}

impl VmxCapabilities {
    /// Checks VMXON's preconditions: IA32_FEATURE_CONTROL locked with VMX enabled for the
    /// current mode (`in_smx`: after GETSEC[SENTER], before SEXIT), and CR0 / CR4 (with CR4.VMXE
    /// already set) within the fixed bits; `region` is the VMXON region's physical address.
    pub fn check_vmxon(
        &self,
        feature_control: u64,
        in_smx: bool,
        cr0: u64,
        cr4: u64,
        region: u64,
    ) -> Result<(), VmxonError> {
        if feature_control & FEATURE_CONTROL_LOCKED == 0 {
            return Err(VmxonError::FeatureControlUnlocked);
        }
        if in_smx && feature_control & FEATURE_CONTROL_VMX_INSIDE_SMX == 0 {
            return Err(VmxonError::DisabledInsideSmx);
        }
        if !in_smx && feature_control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            return Err(VmxonError::DisabledOutsideSmx);
        }
        if let Some((bit, set)) = self.cr0_violation(cr0, false) {
            return Err(VmxonError::Cr0(bit, set));
        }
        if let Some((bit, set)) = self.cr4_violation(cr4) {
            return Err(VmxonError::Cr4(bit, set));
        }
        if self.basic.addresses_limited_to_32_bits() && region >> 32 != 0 {
            return Err(VmxonError::RegionAbove4GiB);
        }
        Ok(())
    }
}
