//! VMCS field encodings (Intel SDM vol. 3, appendix B "Field Encoding in VMCS").
//!
//! An encoding is a 32-bit value: bit 0 is the access type (0 full, 1 the high half of a 64-bit
//! field), bits 9:1 the index, bits 11:10 the type (control, VM-exit information, guest state,
//! host state), bits 14:13 the width (16-bit, 64-bit, 32-bit, natural). Width and type are derived
//! from the encoding, never stored twice. Every field the backend writes or reads is one variant of
//! [`VmcsField`]; [`VmcsField::ALL`] lists them in encoding order, so a VMCS model can index an
//! array by [`VmcsField::index`].

use core::fmt;

/// Width of a VMCS field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldWidth {
    /// 16 bits.
    Bits16,
    /// 64 bits (the high half has its own encoding, `encoding | 1`).
    Bits64,
    /// 32 bits.
    Bits32,
    /// Natural width: 64 bits on processors that support Intel 64.
    Natural,
}

impl FieldWidth {
    /// Mask of the bits a field of this width holds (natural width on an Intel 64 processor).
    pub const fn mask(self) -> u64 {
        match self {
            FieldWidth::Bits16 => 0xffff,
            FieldWidth::Bits32 => 0xffff_ffff,
            FieldWidth::Bits64 | FieldWidth::Natural => u64::MAX,
        }
    }
}

/// Type of a VMCS field (encoding bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// VM-execution, VM-exit and VM-entry controls.
    Control,
    /// VM-exit information (read-only unless IA32_VMX_MISC bit 29).
    ExitInformation,
    /// Guest-state area.
    GuestState,
    /// Host-state area.
    HostState,
}

macro_rules! vmcs_fields {
    ($($(#[$doc:meta])* $variant:ident = $encoding:literal, $name:literal;)*) => {
        /// A VMCS field, by its SDM appendix B encoding.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        pub enum VmcsField {
            $($(#[$doc])* $variant = $encoding,)*
        }

        impl VmcsField {
            /// Every field, in encoding order.
            pub const ALL: &'static [VmcsField] = &[$(VmcsField::$variant,)*];

            /// The SDM / Linux-style name (e.g. `GUEST_CS_AR_BYTES`), for messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $(VmcsField::$variant => $name,)*
                }
            }

            /// The field with this (full-access) encoding, if it is one this crate knows.
            pub const fn from_encoding(encoding: u32) -> Option<VmcsField> {
                match encoding {
                    $($encoding => Some(VmcsField::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

vmcs_fields! {
    // 16-bit control fields.
    /// Virtual-processor identifier.
    Vpid = 0x0000, "VIRTUAL_PROCESSOR_ID";
    /// Posted-interrupt notification vector.
    PostedIntrNotificationVector = 0x0002, "POSTED_INTR_NV";
    /// EPTP index.
    EptpIndex = 0x0004, "EPTP_INDEX";
    // 16-bit guest-state fields.
    /// Guest ES selector.
    GuestEsSelector = 0x0800, "GUEST_ES_SELECTOR";
    /// Guest CS selector.
    GuestCsSelector = 0x0802, "GUEST_CS_SELECTOR";
    /// Guest SS selector.
    GuestSsSelector = 0x0804, "GUEST_SS_SELECTOR";
    /// Guest DS selector.
    GuestDsSelector = 0x0806, "GUEST_DS_SELECTOR";
    /// Guest FS selector.
    GuestFsSelector = 0x0808, "GUEST_FS_SELECTOR";
    /// Guest GS selector.
    GuestGsSelector = 0x080a, "GUEST_GS_SELECTOR";
    /// Guest LDTR selector.
    GuestLdtrSelector = 0x080c, "GUEST_LDTR_SELECTOR";
    /// Guest TR selector.
    GuestTrSelector = 0x080e, "GUEST_TR_SELECTOR";
    /// Guest interrupt status (virtual-interrupt delivery).
    GuestInterruptStatus = 0x0810, "GUEST_INTR_STATUS";
    /// PML index.
    PmlIndex = 0x0812, "GUEST_PML_INDEX";
    // 16-bit host-state fields.
    /// Host ES selector.
    HostEsSelector = 0x0c00, "HOST_ES_SELECTOR";
    /// Host CS selector.
    HostCsSelector = 0x0c02, "HOST_CS_SELECTOR";
    /// Host SS selector.
    HostSsSelector = 0x0c04, "HOST_SS_SELECTOR";
    /// Host DS selector.
    HostDsSelector = 0x0c06, "HOST_DS_SELECTOR";
    /// Host FS selector.
    HostFsSelector = 0x0c08, "HOST_FS_SELECTOR";
    /// Host GS selector.
    HostGsSelector = 0x0c0a, "HOST_GS_SELECTOR";
    /// Host TR selector.
    HostTrSelector = 0x0c0c, "HOST_TR_SELECTOR";
    // 64-bit control fields.
    /// Address of I/O bitmap A (ports 0000-7FFF).
    IoBitmapA = 0x2000, "IO_BITMAP_A";
    /// Address of I/O bitmap B (ports 8000-FFFF).
    IoBitmapB = 0x2002, "IO_BITMAP_B";
    /// Address of the MSR bitmaps.
    MsrBitmap = 0x2004, "MSR_BITMAP";
    /// VM-exit MSR-store address.
    ExitMsrStoreAddr = 0x2006, "VM_EXIT_MSR_STORE_ADDR";
    /// VM-exit MSR-load address.
    ExitMsrLoadAddr = 0x2008, "VM_EXIT_MSR_LOAD_ADDR";
    /// VM-entry MSR-load address.
    EntryMsrLoadAddr = 0x200a, "VM_ENTRY_MSR_LOAD_ADDR";
    /// Executive-VMCS pointer.
    ExecutiveVmcsPointer = 0x200c, "EXECUTIVE_VMCS_POINTER";
    /// PML address.
    PmlAddress = 0x200e, "PML_ADDRESS";
    /// TSC offset.
    TscOffset = 0x2010, "TSC_OFFSET";
    /// Virtual-APIC address.
    VirtualApicPageAddr = 0x2012, "VIRTUAL_APIC_PAGE_ADDR";
    /// APIC-access address.
    ApicAccessAddr = 0x2014, "APIC_ACCESS_ADDR";
    /// Posted-interrupt descriptor address.
    PostedIntrDescAddr = 0x2016, "POSTED_INTR_DESC_ADDR";
    /// VM-function controls.
    VmFunctionControls = 0x2018, "VM_FUNCTION_CONTROL";
    /// EPT pointer.
    EptPointer = 0x201a, "EPT_POINTER";
    /// EOI-exit bitmap 0.
    EoiExitBitmap0 = 0x201c, "EOI_EXIT_BITMAP0";
    /// EOI-exit bitmap 1.
    EoiExitBitmap1 = 0x201e, "EOI_EXIT_BITMAP1";
    /// EOI-exit bitmap 2.
    EoiExitBitmap2 = 0x2020, "EOI_EXIT_BITMAP2";
    /// EOI-exit bitmap 3.
    EoiExitBitmap3 = 0x2022, "EOI_EXIT_BITMAP3";
    /// EPTP-list address.
    EptpListAddress = 0x2024, "EPTP_LIST_ADDRESS";
    /// VMREAD-bitmap address.
    VmreadBitmap = 0x2026, "VMREAD_BITMAP";
    /// VMWRITE-bitmap address.
    VmwriteBitmap = 0x2028, "VMWRITE_BITMAP";
    /// Virtualization-exception information address.
    VeInfoAddress = 0x202a, "VE_INFORMATION_ADDRESS";
    /// XSS-exiting bitmap.
    XssExitBitmap = 0x202c, "XSS_EXIT_BITMAP";
    /// ENCLS-exiting bitmap.
    EnclsExitingBitmap = 0x202e, "ENCLS_EXITING_BITMAP";
    /// TSC multiplier.
    TscMultiplier = 0x2032, "TSC_MULTIPLIER";
    /// Tertiary processor-based VM-execution controls.
    TertiaryVmExecControl = 0x2034, "TERTIARY_VM_EXEC_CONTROL";
    // 64-bit read-only data field.
    /// Guest-physical address (EPT violations and misconfigurations).
    GuestPhysicalAddress = 0x2400, "GUEST_PHYSICAL_ADDRESS";
    // 64-bit guest-state fields.
    /// VMCS link pointer.
    VmcsLinkPointer = 0x2800, "VMCS_LINK_POINTER";
    /// Guest IA32_DEBUGCTL.
    GuestIa32Debugctl = 0x2802, "GUEST_IA32_DEBUGCTL";
    /// Guest IA32_PAT.
    GuestIa32Pat = 0x2804, "GUEST_IA32_PAT";
    /// Guest IA32_EFER.
    GuestIa32Efer = 0x2806, "GUEST_IA32_EFER";
    /// Guest IA32_PERF_GLOBAL_CTRL.
    GuestIa32PerfGlobalCtrl = 0x2808, "GUEST_IA32_PERF_GLOBAL_CTRL";
    /// Guest PDPTE0.
    GuestPdpte0 = 0x280a, "GUEST_PDPTR0";
    /// Guest PDPTE1.
    GuestPdpte1 = 0x280c, "GUEST_PDPTR1";
    /// Guest PDPTE2.
    GuestPdpte2 = 0x280e, "GUEST_PDPTR2";
    /// Guest PDPTE3.
    GuestPdpte3 = 0x2810, "GUEST_PDPTR3";
    /// Guest IA32_BNDCFGS.
    GuestIa32Bndcfgs = 0x2812, "GUEST_BNDCFGS";
    /// Guest IA32_RTIT_CTL.
    GuestIa32RtitCtl = 0x2814, "GUEST_IA32_RTIT_CTL";
    /// Guest IA32_PKRS.
    GuestIa32Pkrs = 0x2818, "GUEST_IA32_PKRS";
    // 64-bit host-state fields.
    /// Host IA32_PAT.
    HostIa32Pat = 0x2c00, "HOST_IA32_PAT";
    /// Host IA32_EFER.
    HostIa32Efer = 0x2c02, "HOST_IA32_EFER";
    /// Host IA32_PERF_GLOBAL_CTRL.
    HostIa32PerfGlobalCtrl = 0x2c04, "HOST_IA32_PERF_GLOBAL_CTRL";
    /// Host IA32_PKRS.
    HostIa32Pkrs = 0x2c06, "HOST_IA32_PKRS";
    // 32-bit control fields.
    /// Pin-based VM-execution controls.
    PinBasedControls = 0x4000, "PIN_BASED_VM_EXEC_CONTROL";
    /// Primary processor-based VM-execution controls.
    PrimaryProcControls = 0x4002, "CPU_BASED_VM_EXEC_CONTROL";
    /// Exception bitmap.
    ExceptionBitmap = 0x4004, "EXCEPTION_BITMAP";
    /// Page-fault error-code mask.
    PageFaultErrorCodeMask = 0x4006, "PAGE_FAULT_ERROR_CODE_MASK";
    /// Page-fault error-code match.
    PageFaultErrorCodeMatch = 0x4008, "PAGE_FAULT_ERROR_CODE_MATCH";
    /// CR3-target count.
    Cr3TargetCount = 0x400a, "CR3_TARGET_COUNT";
    /// Primary VM-exit controls.
    ExitControls = 0x400c, "VM_EXIT_CONTROLS";
    /// VM-exit MSR-store count.
    ExitMsrStoreCount = 0x400e, "VM_EXIT_MSR_STORE_COUNT";
    /// VM-exit MSR-load count.
    ExitMsrLoadCount = 0x4010, "VM_EXIT_MSR_LOAD_COUNT";
    /// VM-entry controls.
    EntryControls = 0x4012, "VM_ENTRY_CONTROLS";
    /// VM-entry MSR-load count.
    EntryMsrLoadCount = 0x4014, "VM_ENTRY_MSR_LOAD_COUNT";
    /// VM-entry interruption-information field.
    EntryInterruptionInfo = 0x4016, "VM_ENTRY_INTR_INFO_FIELD";
    /// VM-entry exception error code.
    EntryExceptionErrorCode = 0x4018, "VM_ENTRY_EXCEPTION_ERROR_CODE";
    /// VM-entry instruction length.
    EntryInstructionLength = 0x401a, "VM_ENTRY_INSTRUCTION_LEN";
    /// TPR threshold.
    TprThreshold = 0x401c, "TPR_THRESHOLD";
    /// Secondary processor-based VM-execution controls.
    SecondaryProcControls = 0x401e, "SECONDARY_VM_EXEC_CONTROL";
    /// PLE_Gap.
    PleGap = 0x4020, "PLE_GAP";
    /// PLE_Window.
    PleWindow = 0x4022, "PLE_WINDOW";
    // 32-bit read-only data fields.
    /// VM-instruction error.
    VmInstructionError = 0x4400, "VM_INSTRUCTION_ERROR";
    /// Exit reason.
    ExitReason = 0x4402, "VM_EXIT_REASON";
    /// VM-exit interruption information.
    ExitInterruptionInfo = 0x4404, "VM_EXIT_INTR_INFO";
    /// VM-exit interruption error code.
    ExitInterruptionErrorCode = 0x4406, "VM_EXIT_INTR_ERROR_CODE";
    /// IDT-vectoring information.
    IdtVectoringInfo = 0x4408, "IDT_VECTORING_INFO_FIELD";
    /// IDT-vectoring error code.
    IdtVectoringErrorCode = 0x440a, "IDT_VECTORING_ERROR_CODE";
    /// VM-exit instruction length.
    ExitInstructionLength = 0x440c, "VM_EXIT_INSTRUCTION_LEN";
    /// VM-exit instruction information.
    ExitInstructionInfo = 0x440e, "VMX_INSTRUCTION_INFO";
    // 32-bit guest-state fields.
    /// Guest ES limit.
    GuestEsLimit = 0x4800, "GUEST_ES_LIMIT";
    /// Guest CS limit.
    GuestCsLimit = 0x4802, "GUEST_CS_LIMIT";
    /// Guest SS limit.
    GuestSsLimit = 0x4804, "GUEST_SS_LIMIT";
    /// Guest DS limit.
    GuestDsLimit = 0x4806, "GUEST_DS_LIMIT";
    /// Guest FS limit.
    GuestFsLimit = 0x4808, "GUEST_FS_LIMIT";
    /// Guest GS limit.
    GuestGsLimit = 0x480a, "GUEST_GS_LIMIT";
    /// Guest LDTR limit.
    GuestLdtrLimit = 0x480c, "GUEST_LDTR_LIMIT";
    /// Guest TR limit.
    GuestTrLimit = 0x480e, "GUEST_TR_LIMIT";
    /// Guest GDTR limit.
    GuestGdtrLimit = 0x4810, "GUEST_GDTR_LIMIT";
    /// Guest IDTR limit.
    GuestIdtrLimit = 0x4812, "GUEST_IDTR_LIMIT";
    /// Guest ES access rights.
    GuestEsAccessRights = 0x4814, "GUEST_ES_AR_BYTES";
    /// Guest CS access rights.
    GuestCsAccessRights = 0x4816, "GUEST_CS_AR_BYTES";
    /// Guest SS access rights.
    GuestSsAccessRights = 0x4818, "GUEST_SS_AR_BYTES";
    /// Guest DS access rights.
    GuestDsAccessRights = 0x481a, "GUEST_DS_AR_BYTES";
    /// Guest FS access rights.
    GuestFsAccessRights = 0x481c, "GUEST_FS_AR_BYTES";
    /// Guest GS access rights.
    GuestGsAccessRights = 0x481e, "GUEST_GS_AR_BYTES";
    /// Guest LDTR access rights.
    GuestLdtrAccessRights = 0x4820, "GUEST_LDTR_AR_BYTES";
    /// Guest TR access rights.
    GuestTrAccessRights = 0x4822, "GUEST_TR_AR_BYTES";
    /// Guest interruptibility state.
    GuestInterruptibility = 0x4824, "GUEST_INTERRUPTIBILITY_INFO";
    /// Guest activity state.
    GuestActivityState = 0x4826, "GUEST_ACTIVITY_STATE";
    /// Guest SMBASE.
    GuestSmbase = 0x4828, "GUEST_SMBASE";
    /// Guest IA32_SYSENTER_CS.
    GuestSysenterCs = 0x482a, "GUEST_SYSENTER_CS";
    /// VMX-preemption timer value.
    PreemptionTimerValue = 0x482e, "VMX_PREEMPTION_TIMER_VALUE";
    // 32-bit host-state field.
    /// Host IA32_SYSENTER_CS.
    HostSysenterCs = 0x4c00, "HOST_IA32_SYSENTER_CS";
    // Natural-width control fields.
    /// CR0 guest/host mask.
    Cr0GuestHostMask = 0x6000, "CR0_GUEST_HOST_MASK";
    /// CR4 guest/host mask.
    Cr4GuestHostMask = 0x6002, "CR4_GUEST_HOST_MASK";
    /// CR0 read shadow.
    Cr0ReadShadow = 0x6004, "CR0_READ_SHADOW";
    /// CR4 read shadow.
    Cr4ReadShadow = 0x6006, "CR4_READ_SHADOW";
    /// CR3-target value 0.
    Cr3Target0 = 0x6008, "CR3_TARGET_VALUE0";
    /// CR3-target value 1.
    Cr3Target1 = 0x600a, "CR3_TARGET_VALUE1";
    /// CR3-target value 2.
    Cr3Target2 = 0x600c, "CR3_TARGET_VALUE2";
    /// CR3-target value 3.
    Cr3Target3 = 0x600e, "CR3_TARGET_VALUE3";
    // Natural-width read-only data fields.
    /// Exit qualification.
    ExitQualification = 0x6400, "EXIT_QUALIFICATION";
    /// I/O RCX.
    IoRcx = 0x6402, "IO_RCX";
    /// I/O RSI.
    IoRsi = 0x6404, "IO_RSI";
    /// I/O RDI.
    IoRdi = 0x6406, "IO_RDI";
    /// I/O RIP.
    IoRip = 0x6408, "IO_RIP";
    /// Guest-linear address.
    GuestLinearAddress = 0x640a, "GUEST_LINEAR_ADDRESS";
    // Natural-width guest-state fields.
    /// Guest CR0.
    GuestCr0 = 0x6800, "GUEST_CR0";
    /// Guest CR3.
    GuestCr3 = 0x6802, "GUEST_CR3";
    /// Guest CR4.
    GuestCr4 = 0x6804, "GUEST_CR4";
    /// Guest ES base.
    GuestEsBase = 0x6806, "GUEST_ES_BASE";
    /// Guest CS base.
    GuestCsBase = 0x6808, "GUEST_CS_BASE";
    /// Guest SS base.
    GuestSsBase = 0x680a, "GUEST_SS_BASE";
    /// Guest DS base.
    GuestDsBase = 0x680c, "GUEST_DS_BASE";
    /// Guest FS base.
    GuestFsBase = 0x680e, "GUEST_FS_BASE";
    /// Guest GS base.
    GuestGsBase = 0x6810, "GUEST_GS_BASE";
    /// Guest LDTR base.
    GuestLdtrBase = 0x6812, "GUEST_LDTR_BASE";
    /// Guest TR base.
    GuestTrBase = 0x6814, "GUEST_TR_BASE";
    /// Guest GDTR base.
    GuestGdtrBase = 0x6816, "GUEST_GDTR_BASE";
    /// Guest IDTR base.
    GuestIdtrBase = 0x6818, "GUEST_IDTR_BASE";
    /// Guest DR7.
    GuestDr7 = 0x681a, "GUEST_DR7";
    /// Guest RSP.
    GuestRsp = 0x681c, "GUEST_RSP";
    /// Guest RIP.
    GuestRip = 0x681e, "GUEST_RIP";
    /// Guest RFLAGS.
    GuestRflags = 0x6820, "GUEST_RFLAGS";
    /// Guest pending debug exceptions.
    GuestPendingDebugExceptions = 0x6822, "GUEST_PENDING_DBG_EXCEPTIONS";
    /// Guest IA32_SYSENTER_ESP.
    GuestSysenterEsp = 0x6824, "GUEST_SYSENTER_ESP";
    /// Guest IA32_SYSENTER_EIP.
    GuestSysenterEip = 0x6826, "GUEST_SYSENTER_EIP";
    /// Guest IA32_S_CET.
    GuestSCet = 0x6828, "GUEST_S_CET";
    /// Guest SSP.
    GuestSsp = 0x682a, "GUEST_SSP";
    /// Guest IA32_INTERRUPT_SSP_TABLE_ADDR.
    GuestInterruptSspTable = 0x682c, "GUEST_INTR_SSP_TABLE";
    // Natural-width host-state fields.
    /// Host CR0.
    HostCr0 = 0x6c00, "HOST_CR0";
    /// Host CR3.
    HostCr3 = 0x6c02, "HOST_CR3";
    /// Host CR4.
    HostCr4 = 0x6c04, "HOST_CR4";
    /// Host FS base.
    HostFsBase = 0x6c06, "HOST_FS_BASE";
    /// Host GS base.
    HostGsBase = 0x6c08, "HOST_GS_BASE";
    /// Host TR base.
    HostTrBase = 0x6c0a, "HOST_TR_BASE";
    /// Host GDTR base.
    HostGdtrBase = 0x6c0c, "HOST_GDTR_BASE";
    /// Host IDTR base.
    HostIdtrBase = 0x6c0e, "HOST_IDTR_BASE";
    /// Host IA32_SYSENTER_ESP.
    HostSysenterEsp = 0x6c10, "HOST_IA32_SYSENTER_ESP";
    /// Host IA32_SYSENTER_EIP.
    HostSysenterEip = 0x6c12, "HOST_IA32_SYSENTER_EIP";
    /// Host RSP.
    HostRsp = 0x6c14, "HOST_RSP";
    /// Host RIP.
    HostRip = 0x6c16, "HOST_RIP";
    /// Host IA32_S_CET.
    HostSCet = 0x6c18, "HOST_S_CET";
    /// Host SSP.
    HostSsp = 0x6c1a, "HOST_SSP";
    /// Host IA32_INTERRUPT_SSP_TABLE_ADDR.
    HostInterruptSspTable = 0x6c1c, "HOST_INTR_SSP_TABLE";
}

impl VmcsField {
    /// The full-access encoding (the operand of VMREAD / VMWRITE).
    pub const fn encoding(self) -> u32 {
        self as u32
    }

    /// Width, from encoding bits 14:13.
    pub const fn width(self) -> FieldWidth {
        match (self.encoding() >> 13) & 3 {
            0 => FieldWidth::Bits16,
            1 => FieldWidth::Bits64,
            2 => FieldWidth::Bits32,
            _ => FieldWidth::Natural,
        }
    }

    /// Type, from encoding bits 11:10.
    pub const fn field_type(self) -> FieldType {
        match (self.encoding() >> 10) & 3 {
            0 => FieldType::Control,
            1 => FieldType::ExitInformation,
            2 => FieldType::GuestState,
            _ => FieldType::HostState,
        }
    }

    /// Position in [`VmcsField::ALL`] (dense: usable as an array index).
    pub fn index(self) -> usize {
        // ALL is sorted by encoding (checked by a test), so a binary search finds every variant.
        match VmcsField::ALL.binary_search(&self) {
            Ok(index) => index,
            Err(_) => unreachable!("every variant is listed in ALL"),
        }
    }

    /// Number of known fields.
    pub const COUNT: usize = VmcsField::ALL.len();
}

impl fmt::Display for VmcsField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
