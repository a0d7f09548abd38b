//! The VM-entry checks of Intel SDM vol. 3, chapter "VM Entries", done in software over a
//! [`VmcsState`] before VMLAUNCH: section "Checks on VMX Controls and Host-State Area" (VM-execution,
//! VM-exit and VM-entry control fields; host control registers and MSRs; host segment and
//! descriptor-table registers; address-space size) and section "Checking and Loading Guest State"
//! (guest control registers, debug registers and MSRs; segment registers; descriptor-table
//! registers; RIP and RFLAGS; non-register state; PDPTEs when EPT and PAE paging are used).
//!
//! Every failure is an [`EntryCheckError`] naming the field and the rule, e.g.
//! `GUEST_CS_AR_BYTES: L and D/B both set in an IA-32e mode guest`.
//!
//! Not checked (they need memory or model-specific knowledge the model does not have): the
//! VMCS revision identifier behind the VMCS link pointer and the link pointer against the current
//! VMCS; the virtual-APIC page's VTPR against the TPR threshold; reserved bits of
//! IA32_PERF_GLOBAL_CTRL, IA32_RTIT_CTL and CET state; the tertiary processor-based controls;
//! the contents of MSR-load lists (checked while loading, after these checks); SMM and
//! dual-monitor treatment beyond requiring both entry controls to be 0 (the hypervisor never runs
//! in SMM). The host is assumed to run in IA-32e mode when [`EntryContext::host_ia32e`] says so.

use super::caps::{CR0_PE, CR0_PG, Control, VmxCapabilities, entry, exit, pin, proc, proc2};
use super::ept::{check_ept_pointer, fits_physical_width};
use super::fields::{FieldType, VmcsField};
use super::vmcs::{Segment, VmcsState, access_rights as ar};
use core::fmt;

/// What the checks need to know about the processor.
#[derive(Clone, Copy, Debug)]
pub struct EntryContext<'a> {
    /// The capability MSRs.
    pub caps: &'a VmxCapabilities,
    /// Physical-address width (CPUID 0x80000008 EAX[7:0]).
    pub phys_addr_bits: u8,
    /// Linear-address width (CPUID 0x80000008 EAX[15:8]; 48 without 5-level paging).
    pub linear_addr_bits: u8,
    /// Whether the processor is in IA-32e mode when it executes VMLAUNCH (IA32_EFER.LMA).
    pub host_ia32e: bool,
}

/// The group of checks a failure belongs to (the SDM's subsections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckArea {
    /// A value wider than its field, or a read-only field written.
    FieldValues,
    /// Checks on VM-execution control fields.
    ExecutionControls,
    /// Checks on VM-exit control fields.
    ExitControls,
    /// Checks on VM-entry control fields.
    EntryControls,
    /// Checks on host control registers and MSRs.
    HostControlRegistersAndMsrs,
    /// Checks on host segment and descriptor-table registers.
    HostSegments,
    /// Checks related to address-space size.
    AddressSpaceSize,
    /// Checks on guest control registers, debug registers and MSRs.
    GuestControlRegistersAndMsrs,
    /// Checks on guest segment registers.
    GuestSegments,
    /// Checks on guest descriptor-table registers.
    GuestDescriptorTables,
    /// Checks on guest RIP and RFLAGS.
    GuestRipAndRflags,
    /// Checks on guest non-register state.
    GuestNonRegisterState,
    /// Checks on guest page-directory-pointer-table entries.
    GuestPdptes,
}

/// The bit a failure is about, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitName {
    /// A bit of a control field.
    Control(Control, u32),
    /// A CR0 bit.
    Cr0(u32),
    /// A CR4 bit.
    Cr4(u32),
}

/// One failed VM-entry check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryCheckError {
    /// The SDM subsection.
    pub area: CheckArea,
    /// The field whose value breaks the rule.
    pub field: VmcsField,
    /// The rule, in words.
    pub rule: &'static str,
    /// The bit concerned, if the rule is about one bit.
    pub bit: Option<BitName>,
}

impl fmt::Display for EntryCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bit {
            None => write!(f, "{}: {}", self.field, self.rule),
            Some(BitName::Control(control, bit)) => write!(
                f,
                "{}: bit {bit} ({}) {}",
                self.field,
                control.bit_name(bit),
                self.rule
            ),
            Some(BitName::Cr0(bit)) => {
                write!(
                    f,
                    "{}: bit {bit} ({}) {}",
                    self.field,
                    cr0_bit_name(bit),
                    self.rule
                )
            }
            Some(BitName::Cr4(bit)) => {
                write!(
                    f,
                    "{}: bit {bit} ({}) {}",
                    self.field,
                    cr4_bit_name(bit),
                    self.rule
                )
            }
        }
    }
}

const fn cr0_bit_name(bit: u32) -> &'static str {
    match bit {
        0 => "PE",
        1 => "MP",
        2 => "EM",
        3 => "TS",
        4 => "ET",
        5 => "NE",
        16 => "WP",
        18 => "AM",
        29 => "NW",
        30 => "CD",
        31 => "PG",
        _ => "reserved",
    }
}

const fn cr4_bit_name(bit: u32) -> &'static str {
    match bit {
        0 => "VME",
        1 => "PVI",
        2 => "TSD",
        3 => "DE",
        4 => "PSE",
        5 => "PAE",
        6 => "MCE",
        7 => "PGE",
        8 => "PCE",
        9 => "OSFXSR",
        10 => "OSXMMEXCPT",
        11 => "UMIP",
        12 => "LA57",
        13 => "VMXE",
        14 => "SMXE",
        16 => "FSGSBASE",
        17 => "PCIDE",
        18 => "OSXSAVE",
        19 => "KL",
        20 => "SMEP",
        21 => "SMAP",
        22 => "PKE",
        23 => "CET",
        24 => "PKS",
        25 => "UINTR",
        _ => "reserved",
    }
}

/// Runs every check and returns the first failure, in the SDM's order (controls, host state,
/// guest state), as the processor would report the first one it finds.
pub fn check_vm_entry(state: &VmcsState, ctx: &EntryContext<'_>) -> Result<(), EntryCheckError> {
    let mut first = None;
    for_each_failure(state, ctx, &mut |error| {
        if first.is_none() {
            first = Some(error);
        }
    });
    match first {
        None => Ok(()),
        Some(error) => Err(error),
    }
}

/// Runs every check and reports every failure.
pub fn for_each_failure(
    state: &VmcsState,
    ctx: &EntryContext<'_>,
    report: &mut dyn FnMut(EntryCheckError),
) {
    let mut checker = Checker {
        state,
        ctx,
        report,
        area: CheckArea::FieldValues,
    };
    checker.field_values();
    checker.execution_controls();
    checker.exit_controls();
    checker.entry_controls();
    checker.host_control_registers_and_msrs();
    checker.host_segments();
    checker.address_space_size();
    checker.guest_control_registers_and_msrs();
    checker.guest_segments();
    checker.guest_descriptor_tables();
    checker.guest_rip_and_rflags();
    checker.guest_non_register_state();
    checker.guest_pdptes();
}

const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// EFER bits an Intel processor defines; all others are reserved.
const EFER_DEFINED: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
const CR0_WP: u64 = 1 << 16;
const CR0_CD_NW: u64 = (1 << 29) | (1 << 30);
const CR4_PAE: u64 = 1 << 5;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_CET: u64 = 1 << 23;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_VM: u64 = 1 << 17;
/// RFLAGS bits 63:22, 15, 5 and 3 are reserved (must be 0); bit 1 must be 1.
const RFLAGS_RESERVED: u64 = !0x3f_ffff | (1 << 15) | (1 << 5) | (1 << 3);
/// IA32_DEBUGCTL architectural bits: LBR (0), BTF (1), TR .. RTM_DEBUG (6..15).
const DEBUGCTL_DEFINED: u64 = 0b11 | (0x3ff << 6);
const DEBUGCTL_BTF: u64 = 1 << 1;

const INTERRUPTIBILITY_STI: u64 = 1 << 0;
const INTERRUPTIBILITY_MOV_SS: u64 = 1 << 1;
const INTERRUPTIBILITY_SMI: u64 = 1 << 2;
const INTERRUPTIBILITY_NMI: u64 = 1 << 3;

const ACTIVITY_ACTIVE: u64 = 0;
const ACTIVITY_HLT: u64 = 1;
const ACTIVITY_SHUTDOWN: u64 = 2;
const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;

/// VM-entry interruption types (bits 10:8 of the interruption-information field).
const TYPE_EXTERNAL_INTERRUPT: u64 = 0;
const TYPE_NMI: u64 = 2;
const TYPE_HARDWARE_EXCEPTION: u64 = 3;
const TYPE_SOFTWARE_INTERRUPT: u64 = 4;
const TYPE_PRIVILEGED_SOFTWARE_EXCEPTION: u64 = 5;
const TYPE_SOFTWARE_EXCEPTION: u64 = 6;
const TYPE_OTHER_EVENT: u64 = 7;

/// Pending debug exceptions: reserved bits 11:4, 13, 15 and 63:17.
const PENDING_DBG_RESERVED: u64 = (0xff << 4) | (1 << 13) | (1 << 15) | !0x1_ffff;
const PENDING_DBG_ENABLED_BREAKPOINT: u64 = 1 << 12;
const PENDING_DBG_BS: u64 = 1 << 14;
const PENDING_DBG_RTM: u64 = 1 << 16;

struct Checker<'s, 'c, 'r> {
    state: &'s VmcsState,
    ctx: &'c EntryContext<'c>,
    report: &'r mut dyn FnMut(EntryCheckError),
    area: CheckArea,
}

impl Checker<'_, '_, '_> {
    fn get(&self, field: VmcsField) -> u64 {
        self.state.get(field)
    }

    fn fail(&mut self, field: VmcsField, rule: &'static str) {
        (self.report)(EntryCheckError {
            area: self.area,
            field,
            rule,
            bit: None,
        });
    }

    fn fail_bit(&mut self, field: VmcsField, bit: BitName, rule: &'static str) {
        (self.report)(EntryCheckError {
            area: self.area,
            field,
            rule,
            bit: Some(bit),
        });
    }

    fn require(&mut self, ok: bool, field: VmcsField, rule: &'static str) {
        if !ok {
            self.fail(field, rule);
        }
    }

    fn canonical(&self, value: u64) -> bool {
        let shift = 64 - u32::from(self.ctx.linear_addr_bits.clamp(32, 64));
        (((value << shift) as i64) >> shift) as u64 == value
    }

    fn require_canonical(&mut self, field: VmcsField) {
        let ok = self.canonical(self.get(field));
        self.require(ok, field, "not a canonical address");
    }

    fn fits_width(&self, value: u64) -> bool {
        fits_physical_width(value, self.ctx.phys_addr_bits)
    }

    /// A physical address of a structure the processor uses: aligned and within the
    /// physical-address width.
    fn require_address(&mut self, field: VmcsField, align: u64) {
        let value = self.get(field);
        if value & (align - 1) != 0 {
            self.fail(
                field,
                match align {
                    16 => "address not 16-byte aligned",
                    64 => "address not 64-byte aligned",
                    _ => "address not 4-KiB aligned",
                },
            );
        } else if !self.fits_width(value) {
            self.fail(field, "address has bits beyond the physical-address width");
        }
    }

    /// An MSR list: 16-byte aligned and its last byte within the physical-address width.
    fn require_msr_list(&mut self, count_field: VmcsField, address_field: VmcsField) {
        let count = self.get(count_field) & 0xffff_ffff;
        if count == 0 {
            return;
        }
        let address = self.get(address_field);
        if address & 0xf != 0 {
            self.fail(address_field, "MSR list address not 16-byte aligned");
            return;
        }
        let last = address.checked_add(count * 16 - 1);
        if last.is_none_or(|last| !self.fits_width(last)) {
            self.fail(
                address_field,
                "MSR list extends beyond the physical-address width",
            );
        }
    }

    fn pin(&self) -> u32 {
        self.get(VmcsField::PinBasedControls) as u32
    }
    fn primary(&self) -> u32 {
        self.get(VmcsField::PrimaryProcControls) as u32
    }
    /// Secondary controls in effect: 0 unless "activate secondary controls" is set.
    fn secondary(&self) -> u32 {
        if self.primary() & proc::ACTIVATE_SECONDARY_CONTROLS != 0 {
            self.get(VmcsField::SecondaryProcControls) as u32
        } else {
            0
        }
    }
    fn exit(&self) -> u32 {
        self.get(VmcsField::ExitControls) as u32
    }
    fn entry(&self) -> u32 {
        self.get(VmcsField::EntryControls) as u32
    }
    fn ia32e_guest(&self) -> bool {
        self.entry() & entry::IA32E_MODE_GUEST != 0
    }
    fn unrestricted_guest(&self) -> bool {
        self.secondary() & proc2::UNRESTRICTED_GUEST != 0
    }
    /// Interruption-information field, if an event is to be injected (bit 31).
    fn injected_event(&self) -> Option<(u64, u64)> {
        let info = self.get(VmcsField::EntryInterruptionInfo);
        (info & (1 << 31) != 0).then_some(((info >> 8) & 7, info & 0xff))
    }

    fn check_allowed(&mut self, control: Control, value: u32) {
        if let Some((bit, set)) = self.ctx.caps.allowed(control).first_violation(value) {
            let rule = if set {
                "is set but this CPU does not allow it (capability MSR allowed 1-settings)"
            } else {
                "is clear but this CPU requires it (capability MSR allowed 0-settings)"
            };
            self.fail_bit(control.field(), BitName::Control(control, bit), rule);
        }
    }

    fn field_values(&mut self) {
        self.area = CheckArea::FieldValues;
        for (field, value) in self.state.written() {
            if value & !field.width().mask() != 0 {
                self.fail(field, "value wider than the field");
            }
            if field.field_type() == FieldType::ExitInformation
                && !self.ctx.caps.misc.vmwrite_any_field()
            {
                self.fail(field, "VM-exit information fields are read-only");
            }
        }
    }

    fn execution_controls(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::ExecutionControls;
        let (pin, primary) = (self.pin(), self.primary());
        self.check_allowed(Control::PinBased, pin);
        self.check_allowed(Control::PrimaryProc, primary);
        let secondary = self.secondary();
        if primary & proc::ACTIVATE_SECONDARY_CONTROLS != 0 {
            self.check_allowed(Control::SecondaryProc, secondary);
        }
        let cr3_targets = self.ctx.caps.misc.cr3_target_count();
        self.require(
            self.get(Cr3TargetCount) <= u64::from(cr3_targets),
            Cr3TargetCount,
            "more CR3-target values than this CPU supports (IA32_VMX_MISC bits 24:16)",
        );
        if primary & proc::USE_IO_BITMAPS != 0 {
            self.require_address(IoBitmapA, 4096);
            self.require_address(IoBitmapB, 4096);
        }
        if primary & proc::USE_MSR_BITMAPS != 0 {
            self.require_address(MsrBitmap, 4096);
        }
        if primary & proc::USE_TPR_SHADOW != 0 {
            self.require_address(VirtualApicPageAddr, 4096);
            if secondary & proc2::VIRTUAL_INTERRUPT_DELIVERY == 0 {
                self.require(
                    self.get(TprThreshold) & !0xf == 0,
                    TprThreshold,
                    "bits 31:4 must be 0 with use TPR shadow and without virtual-interrupt delivery",
                );
            }
        } else {
            for (bit, rule) in [
                (proc2::VIRTUALIZE_X2APIC_MODE, "requires use TPR shadow"),
                (
                    proc2::APIC_REGISTER_VIRTUALIZATION,
                    "requires use TPR shadow",
                ),
                (proc2::VIRTUAL_INTERRUPT_DELIVERY, "requires use TPR shadow"),
            ] {
                if secondary & bit != 0 {
                    self.fail_bit(
                        SecondaryProcControls,
                        BitName::Control(Control::SecondaryProc, bit.trailing_zeros()),
                        rule,
                    );
                }
            }
        }
        if pin & pin::NMI_EXITING == 0 && pin & pin::VIRTUAL_NMIS != 0 {
            self.fail_bit(
                PinBasedControls,
                BitName::Control(Control::PinBased, 5),
                "requires NMI exiting",
            );
        }
        if pin & pin::VIRTUAL_NMIS == 0 && primary & proc::NMI_WINDOW_EXITING != 0 {
            self.fail_bit(
                PrimaryProcControls,
                BitName::Control(Control::PrimaryProc, 22),
                "requires virtual NMIs",
            );
        }
        if secondary & proc2::VIRTUALIZE_APIC_ACCESSES != 0 {
            self.require_address(ApicAccessAddr, 4096);
            if secondary & proc2::VIRTUALIZE_X2APIC_MODE != 0 {
                self.fail_bit(
                    SecondaryProcControls,
                    BitName::Control(Control::SecondaryProc, 4),
                    "cannot be set together with virtualize APIC accesses",
                );
            }
        }
        if secondary & proc2::VIRTUAL_INTERRUPT_DELIVERY != 0
            && pin & pin::EXTERNAL_INTERRUPT_EXITING == 0
        {
            self.fail_bit(
                SecondaryProcControls,
                BitName::Control(Control::SecondaryProc, 9),
                "requires external-interrupt exiting",
            );
        }
        if pin & pin::POSTED_INTERRUPTS != 0 {
            if secondary & proc2::VIRTUAL_INTERRUPT_DELIVERY == 0 {
                self.fail_bit(
                    PinBasedControls,
                    BitName::Control(Control::PinBased, 7),
                    "requires virtual-interrupt delivery",
                );
            }
            if self.exit() & exit::ACK_INTERRUPT_ON_EXIT == 0 {
                self.fail_bit(
                    PinBasedControls,
                    BitName::Control(Control::PinBased, 7),
                    "requires acknowledge interrupt on exit",
                );
            }
            self.require(
                self.get(PostedIntrNotificationVector) & 0xff00 == 0,
                PostedIntrNotificationVector,
                "bits 15:8 must be 0",
            );
            self.require_address(PostedIntrDescAddr, 64);
        }
        if secondary & proc2::ENABLE_VPID != 0 {
            self.require(self.get(Vpid) != 0, Vpid, "must not be 0 with enable VPID");
        }
        let ept = secondary & proc2::ENABLE_EPT != 0;
        if ept
            && let Err(error) =
                check_ept_pointer(self.get(EptPointer), self.ctx.caps, self.ctx.phys_addr_bits)
        {
            self.fail(EptPointer, error.rule());
        }
        if secondary & proc2::ENABLE_PML != 0 {
            self.require_address(PmlAddress, 4096);
        }
        for bit in [
            proc2::ENABLE_PML,
            proc2::UNRESTRICTED_GUEST,
            proc2::MODE_BASED_EPT_EXECUTE,
            proc2::SUB_PAGE_WRITE_PERMISSIONS,
        ] {
            if secondary & bit != 0 && !ept {
                self.fail_bit(
                    SecondaryProcControls,
                    BitName::Control(Control::SecondaryProc, bit.trailing_zeros()),
                    "requires enable EPT",
                );
            }
        }
        if secondary & proc2::ENABLE_VM_FUNCTIONS != 0 {
            let functions = self.get(VmFunctionControls);
            self.require(
                functions & !self.ctx.caps.vmfunc == 0,
                VmFunctionControls,
                "VM function not supported by IA32_VMX_VMFUNC",
            );
            if functions & 1 != 0 {
                self.require(
                    ept,
                    VmFunctionControls,
                    "EPTP switching requires enable EPT",
                );
                self.require_address(EptpListAddress, 4096);
            }
        }
        if secondary & proc2::VMCS_SHADOWING != 0 {
            self.require_address(VmreadBitmap, 4096);
            self.require_address(VmwriteBitmap, 4096);
        }
        if secondary & proc2::EPT_VIOLATION_VE != 0 {
            self.require_address(VeInfoAddress, 4096);
        }
    }

    fn exit_controls(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::ExitControls;
        let exit = self.exit();
        self.check_allowed(Control::Exit, exit);
        if self.pin() & pin::PREEMPTION_TIMER == 0 && exit & exit::SAVE_PREEMPTION_TIMER != 0 {
            self.fail_bit(
                ExitControls,
                BitName::Control(Control::Exit, 22),
                "requires activate VMX-preemption timer",
            );
        }
        self.require_msr_list(ExitMsrStoreCount, ExitMsrStoreAddr);
        self.require_msr_list(ExitMsrLoadCount, ExitMsrLoadAddr);
    }

    fn entry_controls(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::EntryControls;
        let entry = self.entry();
        self.check_allowed(Control::Entry, entry);
        if let Some((kind, vector)) = self.injected_event() {
            self.check_injected_event(kind, vector);
        }
        self.require_msr_list(EntryMsrLoadCount, EntryMsrLoadAddr);
        for bit in [entry::ENTRY_TO_SMM, entry::DEACTIVATE_DUAL_MONITOR] {
            if entry & bit != 0 {
                self.fail_bit(
                    EntryControls,
                    BitName::Control(Control::Entry, bit.trailing_zeros()),
                    "must be 0 outside SMM",
                );
            }
        }
    }

    fn check_injected_event(&mut self, kind: u64, vector: u64) {
        use VmcsField::*;
        let info = self.get(EntryInterruptionInfo);
        match kind {
            1 => self.fail(EntryInterruptionInfo, "interruption type 1 is reserved"),
            TYPE_OTHER_EVENT => {
                let mtf = self
                    .ctx
                    .caps
                    .supports(Control::PrimaryProc, proc::MONITOR_TRAP_FLAG);
                self.require(
                    mtf,
                    EntryInterruptionInfo,
                    "interruption type 7 (other event) needs monitor trap flag support",
                );
                self.require(
                    vector == 0,
                    EntryInterruptionInfo,
                    "vector must be 0 for interruption type 7 (other event)",
                );
            }
            TYPE_NMI => self.require(
                vector == 2,
                EntryInterruptionInfo,
                "vector must be 2 for an NMI",
            ),
            TYPE_HARDWARE_EXCEPTION => self.require(
                vector <= 31,
                EntryInterruptionInfo,
                "vector above 31 for a hardware exception",
            ),
            _ => {}
        }
        let protected_mode = !self.unrestricted_guest() || self.get(GuestCr0) & CR0_PE != 0;
        let deliver_error_code = info & (1 << 11) != 0;
        let could_have_code = protected_mode && kind == TYPE_HARDWARE_EXCEPTION;
        let has_code = could_have_code && matches!(vector, 8 | 10..=14 | 17);
        if deliver_error_code && !could_have_code {
            self.fail(
                EntryInterruptionInfo,
                "deliver-error-code set for an event that has none (not a hardware exception in protected mode)",
            );
        } else if deliver_error_code != has_code
            && !(could_have_code && self.ctx.caps.basic.inject_without_error_code())
        {
            self.fail(
                EntryInterruptionInfo,
                if has_code {
                    "deliver-error-code clear for an exception that pushes an error code"
                } else {
                    "deliver-error-code set for an exception that pushes no error code"
                },
            );
        }
        self.require(
            info & 0x7fff_f000 == 0,
            EntryInterruptionInfo,
            "reserved bits 30:12 must be 0",
        );
        if deliver_error_code {
            self.require(
                self.get(EntryExceptionErrorCode) & 0xffff_0000 == 0,
                EntryExceptionErrorCode,
                "bits 31:16 must be 0",
            );
        }
        if matches!(
            kind,
            TYPE_SOFTWARE_INTERRUPT | TYPE_PRIVILEGED_SOFTWARE_EXCEPTION | TYPE_SOFTWARE_EXCEPTION
        ) {
            let length = self.get(EntryInstructionLength);
            let zero_ok = self.ctx.caps.misc.inject_zero_length();
            self.require(
                (1..=15).contains(&length) || (length == 0 && zero_ok),
                EntryInstructionLength,
                "must be 1-15 for a software interrupt or exception",
            );
        }
    }

    fn host_control_registers_and_msrs(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::HostControlRegistersAndMsrs;
        let cr0 = self.get(HostCr0);
        if let Some((bit, set)) = self.ctx.caps.cr0_violation(cr0, false) {
            self.fail_bit(HostCr0, BitName::Cr0(bit), fixed_rule(set));
        }
        let cr4 = self.get(HostCr4);
        if let Some((bit, set)) = self.ctx.caps.cr4_violation(cr4) {
            self.fail_bit(HostCr4, BitName::Cr4(bit), fixed_rule(set));
        }
        let cr3_ok = self.fits_width(self.get(HostCr3));
        self.require(
            cr3_ok,
            HostCr3,
            "bits beyond the physical-address width set",
        );
        if cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0 {
            self.fail_bit(HostCr4, BitName::Cr4(23), "requires CR0.WP");
        }
        self.require_canonical(HostSysenterEsp);
        self.require_canonical(HostSysenterEip);
        let exit = self.exit();
        if exit & exit::LOAD_PAT != 0 {
            let ok = pat_valid(self.get(HostIa32Pat));
            self.require(ok, HostIa32Pat, PAT_RULE);
        }
        if exit & exit::LOAD_EFER != 0 {
            let efer = self.get(HostIa32Efer);
            let wide = exit & exit::HOST_ADDRESS_SPACE_SIZE != 0;
            self.require(efer & !EFER_DEFINED == 0, HostIa32Efer, "reserved bits set");
            self.require(
                (efer & EFER_LMA != 0) == wide,
                HostIa32Efer,
                "LMA must equal the host address-space size exit control",
            );
            self.require(
                (efer & EFER_LME != 0) == wide,
                HostIa32Efer,
                "LME must equal the host address-space size exit control",
            );
        }
        if exit & exit::LOAD_PKRS != 0 {
            self.require(
                self.get(HostIa32Pkrs) >> 32 == 0,
                HostIa32Pkrs,
                "bits 63:32 must be 0",
            );
        }
    }

    fn host_segments(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::HostSegments;
        for field in [
            HostEsSelector,
            HostCsSelector,
            HostSsSelector,
            HostDsSelector,
            HostFsSelector,
            HostGsSelector,
            HostTrSelector,
        ] {
            self.require(self.get(field) & 7 == 0, field, "RPL and TI must be 0");
        }
        self.require(
            self.get(HostCsSelector) != 0,
            HostCsSelector,
            "must not be 0",
        );
        self.require(
            self.get(HostTrSelector) != 0,
            HostTrSelector,
            "must not be 0",
        );
        if self.exit() & exit::HOST_ADDRESS_SPACE_SIZE == 0 {
            self.require(
                self.get(HostSsSelector) != 0,
                HostSsSelector,
                "must not be 0 for a 32-bit host",
            );
        }
        for field in [
            HostFsBase,
            HostGsBase,
            HostGdtrBase,
            HostIdtrBase,
            HostTrBase,
        ] {
            self.require_canonical(field);
        }
    }

    fn address_space_size(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::AddressSpaceSize;
        let wide = self.exit() & exit::HOST_ADDRESS_SPACE_SIZE != 0;
        if self.ctx.host_ia32e {
            self.require(
                wide,
                ExitControls,
                "host address-space size must be 1 when VM entry runs in IA-32e mode",
            );
        } else {
            self.require(
                !wide,
                ExitControls,
                "host address-space size must be 0 outside IA-32e mode",
            );
            self.require(
                !self.ia32e_guest(),
                EntryControls,
                "IA-32e mode guest must be 0 outside IA-32e mode",
            );
        }
        if wide {
            self.require(
                self.get(HostCr4) & CR4_PAE != 0,
                HostCr4,
                "PAE must be 1 for a 64-bit host",
            );
            self.require_canonical(HostRip);
        } else {
            self.require(
                !self.ia32e_guest(),
                EntryControls,
                "IA-32e mode guest requires host address-space size",
            );
            self.require(
                self.get(HostRip) >> 32 == 0,
                HostRip,
                "bits 63:32 must be 0 for a 32-bit host",
            );
            if self.get(HostCr4) & CR4_PCIDE != 0 {
                self.fail_bit(HostCr4, BitName::Cr4(17), "must be 0 for a 32-bit host");
            }
        }
    }

    fn guest_control_registers_and_msrs(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::GuestControlRegistersAndMsrs;
        let cr0 = self.get(GuestCr0);
        let cr4 = self.get(GuestCr4);
        // CD and NW are never checked: VM entry does not change them.
        let checked_cr0 = (cr0 & !CR0_CD_NW) | (self.ctx.caps.cr0_fixed0 & CR0_CD_NW);
        if let Some((bit, set)) = self
            .ctx
            .caps
            .cr0_violation(checked_cr0, self.unrestricted_guest())
        {
            self.fail_bit(GuestCr0, BitName::Cr0(bit), fixed_rule(set));
        }
        if cr0 & CR0_PG != 0 && cr0 & CR0_PE == 0 {
            self.fail_bit(GuestCr0, BitName::Cr0(31), "set without PE");
        }
        if let Some((bit, set)) = self.ctx.caps.cr4_violation(cr4) {
            self.fail_bit(GuestCr4, BitName::Cr4(bit), fixed_rule(set));
        }
        if cr4 & CR4_CET != 0 && cr0 & CR0_WP == 0 {
            self.fail_bit(GuestCr4, BitName::Cr4(23), "requires CR0.WP");
        }
        let entry = self.entry();
        if entry & entry::LOAD_DEBUG_CONTROLS != 0 {
            self.require(
                self.get(GuestIa32Debugctl) & !DEBUGCTL_DEFINED == 0,
                GuestIa32Debugctl,
                "reserved bits set",
            );
            self.require(
                self.get(GuestDr7) >> 32 == 0,
                GuestDr7,
                "bits 63:32 must be 0",
            );
        }
        if self.ia32e_guest() {
            if cr0 & CR0_PG == 0 {
                self.fail_bit(
                    GuestCr0,
                    BitName::Cr0(31),
                    "must be 1 in an IA-32e mode guest",
                );
            }
            if cr4 & CR4_PAE == 0 {
                self.fail_bit(
                    GuestCr4,
                    BitName::Cr4(5),
                    "must be 1 in an IA-32e mode guest",
                );
            }
        } else if cr4 & CR4_PCIDE != 0 {
            self.fail_bit(GuestCr4, BitName::Cr4(17), "must be 0 outside IA-32e mode");
        }
        let cr3_ok = self.fits_width(self.get(GuestCr3));
        self.require(
            cr3_ok,
            GuestCr3,
            "bits beyond the physical-address width set",
        );
        self.require_canonical(GuestSysenterEsp);
        self.require_canonical(GuestSysenterEip);
        if entry & entry::LOAD_PAT != 0 {
            let ok = pat_valid(self.get(GuestIa32Pat));
            self.require(ok, GuestIa32Pat, PAT_RULE);
        }
        if entry & entry::LOAD_EFER != 0 {
            let efer = self.get(GuestIa32Efer);
            self.require(
                efer & !EFER_DEFINED == 0,
                GuestIa32Efer,
                "reserved bits set",
            );
            self.require(
                (efer & EFER_LMA != 0) == self.ia32e_guest(),
                GuestIa32Efer,
                "LMA must equal the IA-32e mode guest entry control",
            );
            if cr0 & CR0_PG != 0 {
                self.require(
                    (efer & EFER_LMA != 0) == (efer & EFER_LME != 0),
                    GuestIa32Efer,
                    "LMA must equal LME while CR0.PG is set",
                );
            }
        }
        if entry & entry::LOAD_BNDCFGS != 0 {
            let bndcfgs = self.get(GuestIa32Bndcfgs);
            self.require(
                bndcfgs & 0xffc == 0,
                GuestIa32Bndcfgs,
                "reserved bits 11:2 set",
            );
            let ok = self.canonical(bndcfgs & !0xfff);
            self.require(ok, GuestIa32Bndcfgs, "bits 63:12 not a canonical address");
        }
        if entry & entry::LOAD_PKRS != 0 {
            self.require(
                self.get(GuestIa32Pkrs) >> 32 == 0,
                GuestIa32Pkrs,
                "bits 63:32 must be 0",
            );
        }
    }

    fn guest_segments(&mut self) {
        self.area = CheckArea::GuestSegments;
        let v86 = self.get(VmcsField::GuestRflags) & RFLAGS_VM != 0;
        let ia32e = self.ia32e_guest();
        let unrestricted = self.unrestricted_guest();
        let cs = self.state.guest_segment(Segment::Cs);
        let ss = self.state.guest_segment(Segment::Ss);
        let tr = self.state.guest_segment(Segment::Tr);
        let ldtr = self.state.guest_segment(Segment::Ldtr);
        let usable = |access: u32| access & ar::UNUSABLE == 0;
        let f = |segment: Segment| segment.fields();

        // Selectors.
        self.require(
            tr.selector & 4 == 0,
            f(Segment::Tr).selector,
            "TI flag must be 0",
        );
        if usable(ldtr.access_rights) {
            self.require(
                ldtr.selector & 4 == 0,
                f(Segment::Ldtr).selector,
                "TI flag must be 0 while LDTR is usable",
            );
        }
        if !v86 && !unrestricted {
            self.require(
                ss.selector & 3 == cs.selector & 3,
                f(Segment::Ss).selector,
                "RPL must equal CS's RPL",
            );
        }

        // Bases.
        for segment in [
            Segment::Es,
            Segment::Cs,
            Segment::Ss,
            Segment::Ds,
            Segment::Fs,
            Segment::Gs,
        ] {
            let state = self.state.guest_segment(segment);
            if v86 {
                self.require(
                    state.base == u64::from(state.selector) << 4,
                    f(segment).base,
                    "must be the selector times 16 in virtual-8086 mode",
                );
            }
        }
        for segment in [Segment::Tr, Segment::Fs, Segment::Gs] {
            self.require_canonical(f(segment).base);
        }
        if usable(ldtr.access_rights) {
            self.require_canonical(f(Segment::Ldtr).base);
        }
        self.require(
            cs.base >> 32 == 0,
            f(Segment::Cs).base,
            "bits 63:32 must be 0",
        );
        for segment in [Segment::Ss, Segment::Ds, Segment::Es] {
            let state = self.state.guest_segment(segment);
            if usable(state.access_rights) {
                self.require(
                    state.base >> 32 == 0,
                    f(segment).base,
                    "bits 63:32 must be 0 while the segment is usable",
                );
            }
        }

        // Limits and access rights of CS, SS, DS, ES, FS, GS.
        for segment in [
            Segment::Es,
            Segment::Cs,
            Segment::Ss,
            Segment::Ds,
            Segment::Fs,
            Segment::Gs,
        ] {
            let state = self.state.guest_segment(segment);
            let fields = f(segment);
            if v86 {
                self.require(
                    state.limit == 0xffff,
                    fields.limit,
                    "must be 0xffff in virtual-8086 mode",
                );
                self.require(
                    state.access_rights == 0xf3,
                    fields.access_rights,
                    "must be 0xf3 in virtual-8086 mode",
                );
                continue;
            }
            self.check_code_data_access_rights(segment, state, cs, ss, unrestricted, ia32e);
        }

        // TR.
        let field = f(Segment::Tr).access_rights;
        let kind = tr.access_rights & ar::TYPE_MASK;
        if ia32e {
            self.require(
                kind == 11,
                field,
                "type must be 11 (64-bit busy TSS) in an IA-32e mode guest",
            );
        } else {
            self.require(
                kind == 3 || kind == 11,
                field,
                "type must be 3 or 11 (busy TSS)",
            );
        }
        self.require(
            tr.access_rights & ar::S == 0,
            field,
            "S must be 0 (system descriptor)",
        );
        self.require(tr.access_rights & ar::P != 0, field, "P must be 1");
        self.require(
            tr.access_rights & ar::RESERVED_11_8 == 0,
            field,
            "reserved bits 11:8 must be 0",
        );
        self.check_granularity(field, tr);
        self.require(usable(tr.access_rights), field, "TR must be usable");
        self.require(
            tr.access_rights & ar::RESERVED_31_17 == 0,
            field,
            "reserved bits 31:17 must be 0",
        );

        // LDTR.
        if usable(ldtr.access_rights) {
            let field = f(Segment::Ldtr).access_rights;
            self.require(
                ldtr.access_rights & ar::TYPE_MASK == 2,
                field,
                "type must be 2 (LDT)",
            );
            self.require(
                ldtr.access_rights & ar::S == 0,
                field,
                "S must be 0 (system descriptor)",
            );
            self.require(ldtr.access_rights & ar::P != 0, field, "P must be 1");
            self.require(
                ldtr.access_rights & ar::RESERVED_11_8 == 0,
                field,
                "reserved bits 11:8 must be 0",
            );
            self.check_granularity(field, ldtr);
            self.require(
                ldtr.access_rights & ar::RESERVED_31_17 == 0,
                field,
                "reserved bits 31:17 must be 0",
            );
        }
    }

    /// G must agree with the limit: limit bits 11:0 not all 1 → G = 0; limit bits 31:20 not all
    /// 0 → G = 1.
    fn check_granularity(&mut self, field: VmcsField, state: super::vmcs::SegmentState) {
        let g = state.access_rights & ar::G != 0;
        if state.limit & 0xfff != 0xfff && g {
            self.fail(field, "G set but limit bits 11:0 are not all 1");
        }
        if state.limit & 0xfff0_0000 != 0 && !g {
            self.fail(field, "G clear but limit bits 31:20 are not all 0");
        }
    }

    fn check_code_data_access_rights(
        &mut self,
        segment: Segment,
        state: super::vmcs::SegmentState,
        cs: super::vmcs::SegmentState,
        ss: super::vmcs::SegmentState,
        unrestricted: bool,
        ia32e: bool,
    ) {
        let field = segment.fields().access_rights;
        let access = state.access_rights;
        let is_cs = segment == Segment::Cs;
        let usable = access & ar::UNUSABLE == 0;
        let dpl = (access >> ar::DPL_SHIFT) & 3;
        if segment == Segment::Ss {
            // SS.DPL is the CPL after entry: checked whether or not SS is usable.
            if !unrestricted {
                self.require(
                    dpl == u32::from(state.selector & 3),
                    field,
                    "DPL must equal the selector's RPL without unrestricted guest",
                );
            }
            let cr0_pe = self.get(VmcsField::GuestCr0) & CR0_PE != 0;
            if cs.access_rights & ar::TYPE_MASK == 3 || !cr0_pe {
                self.require(
                    dpl == 0,
                    field,
                    "DPL must be 0 when CS type is 3 or CR0.PE is 0",
                );
            }
        }
        if !is_cs && !usable {
            return;
        }
        let kind = access & ar::TYPE_MASK;
        let ss_dpl = (ss.access_rights >> ar::DPL_SHIFT) & 3;
        match segment {
            Segment::Cs => {
                let code = matches!(kind, 9 | 11 | 13 | 15);
                if unrestricted {
                    self.require(
                        code || kind == 3,
                        field,
                        "type must be 3 or an accessed code segment (9, 11, 13, 15)",
                    );
                } else {
                    self.require(
                        code,
                        field,
                        "type must be an accessed code segment (9, 11, 13, 15) without unrestricted guest",
                    );
                }
                match kind {
                    3 => self.require(dpl == 0, field, "DPL must be 0 for type 3"),
                    9 | 11 => self.require(
                        dpl == ss_dpl,
                        field,
                        "DPL must equal SS's DPL for a non-conforming code segment",
                    ),
                    13 | 15 => self.require(
                        dpl <= ss_dpl,
                        field,
                        "DPL must not exceed SS's DPL for a conforming code segment",
                    ),
                    _ => {}
                }
            }
            Segment::Ss => {
                self.require(
                    kind == 3 || kind == 7,
                    field,
                    "type must be 3 or 7 (read/write accessed data)",
                );
            }
            _ => {
                self.require(
                    kind & ar::TYPE_ACCESSED != 0,
                    field,
                    "type must be accessed (bit 0)",
                );
                if kind & ar::TYPE_CODE != 0 {
                    self.require(
                        kind & ar::TYPE_READ_WRITE != 0,
                        field,
                        "a code segment must be readable",
                    );
                }
                if !unrestricted && kind <= 11 {
                    self.require(
                        dpl >= u32::from(state.selector & 3),
                        field,
                        "DPL must not be below the selector's RPL (data or non-conforming code)",
                    );
                }
            }
        }
        self.require(access & ar::S != 0, field, "S must be 1 (code or data)");
        self.require(access & ar::P != 0, field, "P must be 1");
        self.require(
            access & ar::RESERVED_11_8 == 0,
            field,
            "reserved bits 11:8 must be 0",
        );
        if is_cs && ia32e && access & ar::L != 0 && access & ar::DB != 0 {
            self.fail(field, "L and D/B both set in an IA-32e mode guest");
        }
        self.check_granularity(field, state);
        self.require(
            access & ar::RESERVED_31_17 == 0,
            field,
            "reserved bits 31:17 must be 0",
        );
    }

    fn guest_descriptor_tables(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::GuestDescriptorTables;
        self.require_canonical(GuestGdtrBase);
        self.require_canonical(GuestIdtrBase);
        for field in [GuestGdtrLimit, GuestIdtrLimit] {
            self.require(self.get(field) >> 16 == 0, field, "bits 31:16 must be 0");
        }
    }

    fn guest_rip_and_rflags(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::GuestRipAndRflags;
        let rip = self.get(GuestRip);
        let cs_l = self.get(GuestCsAccessRights) as u32 & ar::L != 0;
        if self.ia32e_guest() && cs_l {
            let ok = self.canonical(rip);
            self.require(ok, GuestRip, "not canonical in 64-bit mode");
        } else {
            self.require(
                rip >> 32 == 0,
                GuestRip,
                "bits 63:32 must be 0 outside 64-bit mode",
            );
        }
        let rflags = self.get(GuestRflags);
        self.require(
            rflags & RFLAGS_RESERVED == 0,
            GuestRflags,
            "reserved bits (63:22, 15, 5, 3) must be 0",
        );
        self.require(rflags & 2 != 0, GuestRflags, "bit 1 must be 1");
        if self.ia32e_guest() || self.get(GuestCr0) & CR0_PE == 0 {
            self.require(
                rflags & RFLAGS_VM == 0,
                GuestRflags,
                "VM must be 0 in an IA-32e mode guest or with CR0.PE 0",
            );
        }
        if let Some((TYPE_EXTERNAL_INTERRUPT, _)) = self.injected_event() {
            self.require(
                rflags & RFLAGS_IF != 0,
                GuestRflags,
                "IF must be 1 to inject an external interrupt",
            );
        }
    }

    fn guest_non_register_state(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::GuestNonRegisterState;
        let activity = self.get(GuestActivityState);
        let interruptibility = self.get(GuestInterruptibility);
        let rflags = self.get(GuestRflags);
        let event = self.injected_event();

        // Activity state.
        if activity > ACTIVITY_WAIT_FOR_SIPI
            || !self.ctx.caps.misc.activity_state_supported(activity as u32)
        {
            self.fail(
                GuestActivityState,
                "activity state not supported by this CPU (IA32_VMX_MISC bits 8:6)",
            );
        }
        let ss_dpl = (self.get(GuestSsAccessRights) >> ar::DPL_SHIFT) & 3;
        if activity == ACTIVITY_HLT {
            self.require(ss_dpl == 0, GuestActivityState, "HLT requires SS.DPL 0");
        }
        if interruptibility & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS) != 0 {
            self.require(
                activity == ACTIVITY_ACTIVE,
                GuestActivityState,
                "must be active while blocking by STI or MOV SS",
            );
        }
        if let Some((kind, vector)) = event {
            let allowed = match activity {
                ACTIVITY_ACTIVE => true,
                ACTIVITY_HLT => match kind {
                    TYPE_EXTERNAL_INTERRUPT | TYPE_NMI | TYPE_OTHER_EVENT => true,
                    TYPE_HARDWARE_EXCEPTION => vector == 1 || vector == 18,
                    _ => false,
                },
                ACTIVITY_SHUTDOWN => {
                    kind == TYPE_NMI || (kind == TYPE_HARDWARE_EXCEPTION && vector == 18)
                }
                _ => false,
            };
            self.require(
                allowed,
                GuestActivityState,
                "the injected event cannot be delivered in this activity state",
            );
        }

        // Interruptibility state.
        self.require(
            interruptibility & !0x1f == 0,
            GuestInterruptibility,
            "reserved bits 31:5 must be 0",
        );
        self.require(
            interruptibility & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS)
                != (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS),
            GuestInterruptibility,
            "blocking by STI and by MOV SS cannot both be set",
        );
        if rflags & RFLAGS_IF == 0 {
            self.require(
                interruptibility & INTERRUPTIBILITY_STI == 0,
                GuestInterruptibility,
                "blocking by STI requires RFLAGS.IF",
            );
        }
        match event {
            Some((TYPE_EXTERNAL_INTERRUPT, _)) => self.require(
                interruptibility & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS) == 0,
                GuestInterruptibility,
                "no blocking by STI or MOV SS while injecting an external interrupt",
            ),
            Some((TYPE_NMI, _)) => {
                self.require(
                    interruptibility & INTERRUPTIBILITY_MOV_SS == 0,
                    GuestInterruptibility,
                    "no blocking by MOV SS while injecting an NMI",
                );
                if self.pin() & pin::VIRTUAL_NMIS != 0 {
                    self.require(
                        interruptibility & INTERRUPTIBILITY_NMI == 0,
                        GuestInterruptibility,
                        "no blocking by NMI while injecting an NMI with virtual NMIs",
                    );
                }
            }
            _ => {}
        }
        self.require(
            interruptibility & INTERRUPTIBILITY_SMI == 0,
            GuestInterruptibility,
            "blocking by SMI must be 0 outside SMM",
        );

        // Pending debug exceptions.
        let pending = self.get(GuestPendingDebugExceptions);
        self.require(
            pending & PENDING_DBG_RESERVED == 0,
            GuestPendingDebugExceptions,
            "reserved bits (11:4, 13, 15, 63:17) must be 0",
        );
        if interruptibility & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS) != 0
            || activity == ACTIVITY_HLT
        {
            let tf = rflags & RFLAGS_TF != 0;
            let btf = self.get(GuestIa32Debugctl) & DEBUGCTL_BTF != 0;
            let bs = pending & PENDING_DBG_BS != 0;
            if tf && !btf {
                self.require(
                    bs,
                    GuestPendingDebugExceptions,
                    "BS must be 1 with RFLAGS.TF set, BTF clear, and blocking or HLT",
                );
            } else {
                self.require(
                    !bs,
                    GuestPendingDebugExceptions,
                    "BS must be 0 with RFLAGS.TF clear or BTF set, and blocking or HLT",
                );
            }
        }
        if pending & PENDING_DBG_RTM != 0 {
            self.require(
                pending & 0xfff == 0 && pending & PENDING_DBG_BS == 0,
                GuestPendingDebugExceptions,
                "RTM set with bits 11:0 or BS set",
            );
            self.require(
                pending & PENDING_DBG_ENABLED_BREAKPOINT != 0,
                GuestPendingDebugExceptions,
                "RTM set without enabled breakpoint (bit 12)",
            );
        }

        // VMCS link pointer.
        let link = self.get(VmcsLinkPointer);
        if link != u64::MAX {
            if link & 0xfff != 0 {
                self.fail(VmcsLinkPointer, "not all ones and not 4-KiB aligned");
            } else if !self.fits_width(link) {
                self.fail(
                    VmcsLinkPointer,
                    "not all ones and has bits beyond the physical-address width",
                );
            }
        }
    }

    fn guest_pdptes(&mut self) {
        use VmcsField::*;
        self.area = CheckArea::GuestPdptes;
        let pae_paging = self.get(GuestCr0) & CR0_PG != 0
            && self.get(GuestCr4) & CR4_PAE != 0
            && !self.ia32e_guest();
        // With EPT, the PDPTEs come from these fields; without, the CPU reads them from guest
        // memory (not modelled).
        if !pae_paging || self.secondary() & proc2::ENABLE_EPT == 0 {
            return;
        }
        for field in [GuestPdpte0, GuestPdpte1, GuestPdpte2, GuestPdpte3] {
            let pdpte = self.get(field);
            if pdpte & 1 == 0 {
                continue;
            }
            self.require(
                pdpte & 0x1e6 == 0,
                field,
                "present PDPTE with reserved bits 2:1 or 8:5 set",
            );
            let ok = self.fits_width(pdpte & !0xfff & !(1 << 63));
            self.require(
                ok,
                field,
                "present PDPTE with bits beyond the physical-address width",
            );
        }
    }
}

const PAT_RULE: &str = "each byte must be a valid memory type (0, 1, 4, 5, 6 or 7)";

fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&memory_type| matches!(memory_type, 0 | 1 | 4..=7))
}

fn fixed_rule(set: bool) -> &'static str {
    if set {
        "is set but IA32_VMX_CR*_FIXED1 requires it clear in VMX operation"
    } else {
        "is clear but IA32_VMX_CR*_FIXED0 requires it set in VMX operation"
    }
}
