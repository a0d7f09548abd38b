//! The software VM-entry checks: a valid 64-bit guest passes (with and without unrestricted
//! guest, and a real-mode guest under unrestricted guest), and each class of rule catches a
//! deliberately broken state with a message naming the field and the rule.

extern crate std;

use super::caps::*;
use super::entry_checks::*;
use super::ept::ept_pointer;
use super::fields::VmcsField::{self, *};
use super::tests::skylake;
use super::vmcs::{Segment, SegmentState, VmcsState, access_rights as ar};
use crate::addr::{Frame, PhysAddr};
use std::string::{String, ToString};
use std::vec::Vec;

const PHYS_BITS: u8 = 39;

fn context(caps: &VmxCapabilities) -> EntryContext<'_> {
    EntryContext {
        caps,
        phys_addr_bits: PHYS_BITS,
        linear_addr_bits: 48,
        host_ia32e: true,
    }
}

fn failures(state: &VmcsState, caps: &VmxCapabilities) -> Vec<String> {
    let mut found = Vec::new();
    for_each_failure(state, &context(caps), &mut |error| {
        found.push(error.to_string())
    });
    found
}

/// Exactly one failure, with this message.
#[track_caller]
fn assert_only(state: &VmcsState, caps: &VmxCapabilities, expected: &str) {
    assert_eq!(failures(state, caps), [expected.to_string()]);
}

/// Among the failures (a broken field may break several rules at once).
#[track_caller]
fn assert_includes(state: &VmcsState, caps: &VmxCapabilities, expected: &str) {
    let found = failures(state, caps);
    assert!(
        found.iter().any(|f| f == expected),
        "{expected:?} not in {found:#?}"
    );
}

/// What the VMX backend sets up for a 64-bit guest: IA-32e mode, paging, EPT + VPID, I/O and MSR
/// bitmaps, HLT exiting, EFER loaded and saved, a 64-bit host.
fn long_mode_guest(caps: &VmxCapabilities, unrestricted: bool) -> VmcsState {
    let mut s = VmcsState::new();
    let pin = caps
        .control_value(
            Control::PinBased,
            pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING,
            pin::VIRTUAL_NMIS,
            0,
        )
        .unwrap();
    let primary = caps
        .control_value(
            Control::PrimaryProc,
            proc::HLT_EXITING
                | proc::USE_IO_BITMAPS
                | proc::USE_MSR_BITMAPS
                | proc::MWAIT_EXITING
                | proc::MONITOR_EXITING
                | proc::RDPMC_EXITING
                | proc::ACTIVATE_SECONDARY_CONTROLS,
            0,
            proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING,
        )
        .unwrap();
    let mut secondary_bits = proc2::ENABLE_EPT | proc2::ENABLE_VPID | proc2::WBINVD_EXITING;
    if unrestricted {
        secondary_bits |= proc2::UNRESTRICTED_GUEST;
    }
    let secondary = caps
        .control_value(Control::SecondaryProc, secondary_bits, 0, 0)
        .unwrap();
    let exit = caps
        .control_value(
            Control::Exit,
            exit::HOST_ADDRESS_SPACE_SIZE
                | exit::LOAD_EFER
                | exit::SAVE_EFER
                | exit::ACK_INTERRUPT_ON_EXIT,
            0,
            0,
        )
        .unwrap();
    let entry = caps
        .control_value(
            Control::Entry,
            entry::IA32E_MODE_GUEST | entry::LOAD_EFER,
            0,
            0,
        )
        .unwrap();
    s.set(PinBasedControls, pin.into());
    s.set(PrimaryProcControls, primary.into());
    s.set(SecondaryProcControls, secondary.into());
    s.set(ExitControls, exit.into());
    s.set(EntryControls, entry.into());
    s.set(ExceptionBitmap, (1 << 1) | (1 << 17) | (1 << 18));
    s.set(IoBitmapA, 0x10_0000);
    s.set(IoBitmapB, 0x10_1000);
    s.set(MsrBitmap, 0x10_2000);
    s.set(Vpid, 1);
    let root = Frame::from_start(PhysAddr(0x20_0000)).unwrap();
    s.set(
        EptPointer,
        ept_pointer(root, caps, false, PHYS_BITS).unwrap(),
    );
    s.set(Cr0GuestHostMask, 0xffff_ffff_ffff_ffff);
    s.set(Cr4GuestHostMask, 0xffff_ffff_ffff_ffff);

    // Host: a 64-bit hypervisor.
    s.set(HostCr0, 0x8005_0033);
    s.set(HostCr3, 0x30_0000);
    s.set(HostCr4, 0x2620);
    s.set(HostCsSelector, 0x08);
    s.set(HostSsSelector, 0x10);
    s.set(HostDsSelector, 0x10);
    s.set(HostEsSelector, 0x10);
    s.set(HostTrSelector, 0x18);
    s.set(HostTrBase, 0xffff_8000_0010_0000);
    s.set(HostGdtrBase, 0xffff_8000_0010_1000);
    s.set(HostIdtrBase, 0xffff_8000_0010_2000);
    s.set(HostIa32Efer, 0xd01);
    s.set(HostRsp, 0xffff_8000_0020_0000);
    s.set(HostRip, 0xffff_8000_0000_1000);

    // Guest: 64-bit mode, paging on, flat segments.
    s.set(GuestCr0, 0x8005_0033);
    s.set(GuestCr3, 0x1000);
    s.set(GuestCr4, 0x2020);
    s.set(GuestIa32Efer, 0xd01);
    s.set(GuestDr7, 0x400);
    let data = SegmentState {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        access_rights: ar::DATA,
    };
    for segment in [
        Segment::Es,
        Segment::Ss,
        Segment::Ds,
        Segment::Fs,
        Segment::Gs,
    ] {
        s.set_guest_segment(segment, data);
    }
    s.set_guest_segment(
        Segment::Cs,
        SegmentState {
            selector: 0x08,
            base: 0,
            limit: 0xffff_ffff,
            access_rights: ar::CODE64,
        },
    );
    s.set_guest_segment(
        Segment::Tr,
        SegmentState {
            selector: 0x18,
            base: 0x5000,
            limit: 0x67,
            access_rights: ar::TSS64_BUSY,
        },
    );
    s.set_guest_segment(
        Segment::Ldtr,
        SegmentState {
            selector: 0,
            base: 0,
            limit: 0,
            access_rights: ar::UNUSABLE_SEGMENT,
        },
    );
    s.set(GuestGdtrBase, 0x6000);
    s.set(GuestGdtrLimit, 0x27);
    s.set(GuestIdtrBase, 0);
    s.set(GuestIdtrLimit, 0);
    s.set(GuestRip, 0x10_0000);
    s.set(GuestRsp, 0x20_0000);
    s.set(GuestRflags, 0x2);
    s.set(GuestActivityState, 0);
    s.set(GuestInterruptibility, 0);
    s.set(GuestPendingDebugExceptions, 0);
    s.set(VmcsLinkPointer, u64::MAX);
    s
}

/// A real-mode guest at the reset vector under unrestricted guest.
fn real_mode_guest(caps: &VmxCapabilities) -> VmcsState {
    let mut s = long_mode_guest(caps, true);
    let entry = s.get(EntryControls) & !u64::from(entry::IA32E_MODE_GUEST);
    s.set(EntryControls, entry);
    s.set(GuestCr0, 0x30);
    s.set(GuestCr4, 0x2000);
    s.set(GuestIa32Efer, 0);
    let data = SegmentState {
        selector: 0,
        base: 0,
        limit: 0xffff,
        access_rights: 0x93,
    };
    for segment in [
        Segment::Es,
        Segment::Ss,
        Segment::Ds,
        Segment::Fs,
        Segment::Gs,
    ] {
        s.set_guest_segment(segment, data);
    }
    s.set_guest_segment(
        Segment::Cs,
        SegmentState {
            selector: 0xf000,
            base: 0xffff_0000,
            limit: 0xffff,
            access_rights: 0x9b,
        },
    );
    s.set_guest_segment(
        Segment::Tr,
        SegmentState {
            selector: 0,
            base: 0,
            limit: 0xffff,
            access_rights: 0x8b,
        },
    );
    s.set(GuestRip, 0xfff0);
    s
}

#[test]
fn the_backends_long_mode_guest_passes_with_and_without_unrestricted_guest() {
    let caps = skylake();
    for unrestricted in [false, true] {
        let state = long_mode_guest(&caps, unrestricted);
        assert_eq!(
            failures(&state, &caps),
            Vec::<String>::new(),
            "unrestricted {unrestricted}"
        );
        assert_eq!(check_vm_entry(&state, &context(&caps)), Ok(()));
    }
    let state = real_mode_guest(&caps);
    assert_eq!(failures(&state, &caps), Vec::<String>::new());
}

#[test]
fn the_model_writes_exactly_what_was_set_in_encoding_order() {
    let mut s = VmcsState::new();
    s.set(GuestRip, 5);
    s.set(Vpid, 1);
    s.set(GuestRip, 7);
    let written: Vec<(VmcsField, u64)> = s.written().collect();
    assert_eq!(written, [(Vpid, 1), (GuestRip, 7)]);
    assert!(!s.is_written(GuestRsp));
    assert_eq!(s.get(GuestRsp), 0);
    let tr = SegmentState {
        selector: 0x18,
        base: 0x5000,
        limit: 0x67,
        access_rights: 0x8b,
    };
    s.set_guest_segment(Segment::Tr, tr);
    assert_eq!(s.guest_segment(Segment::Tr), tr);
    assert_eq!(s.get(GuestTrAccessRights), 0x8b);
}

#[test]
fn the_first_failure_follows_the_sdm_order() {
    let caps = skylake();
    let mut state = long_mode_guest(&caps, false);
    state.set(GuestRflags, 0); // guest-state failure
    state.set(HostTrSelector, 0); // host-state failure
    state.set(Vpid, 0); // control failure
    let first = check_vm_entry(&state, &context(&caps)).unwrap_err();
    assert_eq!(first.area, CheckArea::ExecutionControls);
    assert_eq!(first.field, Vpid);
    assert_eq!(
        first.to_string(),
        "VIRTUAL_PROCESSOR_ID: must not be 0 with enable VPID"
    );
    assert_eq!(failures(&state, &caps).len(), 3);
}

#[test]
fn field_values_wider_than_the_field_or_read_only_fields_are_refused() {
    let caps = skylake();
    let mut state = long_mode_guest(&caps, false);
    state.set(GuestLdtrSelector, 0x1_0000);
    assert_only(
        &state,
        &caps,
        "GUEST_LDTR_SELECTOR: value wider than the field",
    );
    let mut state = long_mode_guest(&caps, false);
    state.set(ExitReason, 0);
    // Writable only where IA32_VMX_MISC bit 29 says VMWRITE may write any field.
    assert_eq!(failures(&state, &caps), Vec::<String>::new());
    let strict = caps.with_misc(VmxMisc(caps.misc.0 & !(1 << 29)));
    assert_only(
        &state,
        &strict,
        "VM_EXIT_REASON: VM-exit information fields are read-only",
    );
}

#[test]
fn execution_control_rules() {
    let caps = skylake();
    let base = long_mode_guest(&caps, false);
    let with = |field: VmcsField, change: &dyn Fn(u64) -> u64| {
        let mut s = base.clone();
        s.set(field, change(s.get(field)));
        s
    };
    let pin_bit = |bit: u32| move |v: u64| v | u64::from(bit);
    assert_includes(
        &with(PinBasedControls, &pin_bit(pin::POSTED_INTERRUPTS)),
        &caps,
        "PIN_BASED_VM_EXEC_CONTROL: bit 7 (process posted interrupts) is set but this CPU does not allow it (capability MSR allowed 1-settings)",
    );
    assert_only(
        &with(PinBasedControls, &|v| v & !2),
        &caps,
        "PIN_BASED_VM_EXEC_CONTROL: bit 1 (reserved) is clear but this CPU requires it (capability MSR allowed 0-settings)",
    );
    assert_only(
        &with(PinBasedControls, &|v| v & !u64::from(pin::NMI_EXITING)),
        &caps,
        "PIN_BASED_VM_EXEC_CONTROL: bit 5 (virtual NMIs) requires NMI exiting",
    );
    let mut s = with(PinBasedControls, &|v| v & !u64::from(pin::VIRTUAL_NMIS));
    s.set(
        PrimaryProcControls,
        s.get(PrimaryProcControls) | u64::from(proc::NMI_WINDOW_EXITING),
    );
    assert_only(
        &s,
        &caps,
        "CPU_BASED_VM_EXEC_CONTROL: bit 22 (NMI-window exiting) requires virtual NMIs",
    );
    assert_only(
        &with(Vpid, &|_| 0),
        &caps,
        "VIRTUAL_PROCESSOR_ID: must not be 0 with enable VPID",
    );
    assert_only(
        &with(EptPointer, &|v| v | 1 << 6),
        &caps.with_ept_vpid(caps.ept_vpid & !ept_vpid::ACCESSED_DIRTY),
        "EPT_POINTER: A/D flags enabled (bit 6) but not supported by IA32_VMX_EPT_VPID_CAP",
    );
    assert_only(
        &with(EptPointer, &|v| v & !0x38 | 0x08),
        &caps,
        "EPT_POINTER: page-walk length (bits 5:3) not supported by IA32_VMX_EPT_VPID_CAP",
    );
    assert_only(
        &with(SecondaryProcControls, &|v| {
            (v & !u64::from(proc2::ENABLE_EPT)) | u64::from(proc2::UNRESTRICTED_GUEST)
        }),
        &caps,
        "SECONDARY_VM_EXEC_CONTROL: bit 7 (unrestricted guest) requires enable EPT",
    );
    assert_only(
        &with(IoBitmapB, &|v| v + 8),
        &caps,
        "IO_BITMAP_B: address not 4-KiB aligned",
    );
    assert_only(
        &with(MsrBitmap, &|_| 1 << 40),
        &caps,
        "MSR_BITMAP: address has bits beyond the physical-address width",
    );
    assert_only(
        &with(Cr3TargetCount, &|_| 5),
        &caps,
        "CR3_TARGET_COUNT: more CR3-target values than this CPU supports (IA32_VMX_MISC bits 24:16)",
    );
    // Secondary controls are ignored (and not checked) without "activate secondary controls".
    let mut s = with(PrimaryProcControls, &|v| {
        v & !u64::from(proc::ACTIVATE_SECONDARY_CONTROLS)
    });
    s.set(SecondaryProcControls, 0xffff_ffff);
    s.set(Vpid, 0);
    assert_eq!(failures(&s, &caps), Vec::<String>::new());
}

#[test]
fn exit_control_rules() {
    let caps = skylake();
    let mut s = long_mode_guest(&caps, false);
    s.set(
        ExitControls,
        s.get(ExitControls) | u64::from(exit::SAVE_PREEMPTION_TIMER),
    );
    assert_only(
        &s,
        &caps,
        "VM_EXIT_CONTROLS: bit 22 (save VMX-preemption timer value) requires activate VMX-preemption timer",
    );
    let mut s = long_mode_guest(&caps, false);
    s.set(ExitMsrStoreCount, 2);
    s.set(ExitMsrStoreAddr, 0x40_0008);
    assert_only(
        &s,
        &caps,
        "VM_EXIT_MSR_STORE_ADDR: MSR list address not 16-byte aligned",
    );
    s.set(ExitMsrStoreAddr, (1 << PHYS_BITS) - 16);
    assert_only(
        &s,
        &caps,
        "VM_EXIT_MSR_STORE_ADDR: MSR list extends beyond the physical-address width",
    );
    s.set(ExitMsrStoreAddr, (1 << PHYS_BITS) - 32);
    assert_eq!(failures(&s, &caps), Vec::<String>::new());
}

#[test]
fn entry_control_rules() {
    let caps = skylake();
    let inject = |info: u64| {
        let mut s = long_mode_guest(&caps, false);
        s.set(EntryInterruptionInfo, info | 1 << 31);
        s
    };
    const HW: u64 = 3 << 8;
    const ERROR_CODE: u64 = 1 << 11;
    assert_eq!(
        failures(&inject(HW | 13 | ERROR_CODE), &caps),
        Vec::<String>::new()
    );
    assert_eq!(failures(&inject(HW | 6), &caps), Vec::<String>::new());
    assert_only(
        &inject(HW | 13),
        &caps,
        "VM_ENTRY_INTR_INFO_FIELD: deliver-error-code clear for an exception that pushes an error code",
    );
    // A CPU that may inject any hardware exception without an error code accepts that.
    let mut lenient = caps;
    lenient.basic = VmxBasic(caps.basic.0 | 1 << 56);
    assert_eq!(failures(&inject(HW | 13), &lenient), Vec::<String>::new());
    assert_only(
        &inject(HW | 6 | ERROR_CODE),
        &caps,
        "VM_ENTRY_INTR_INFO_FIELD: deliver-error-code set for an exception that pushes no error code",
    );
    assert_only(
        &inject((2 << 8) | 3),
        &caps,
        "VM_ENTRY_INTR_INFO_FIELD: vector must be 2 for an NMI",
    );
    assert_only(
        &inject(1 << 8),
        &caps,
        "VM_ENTRY_INTR_INFO_FIELD: interruption type 1 is reserved",
    );
    assert_only(
        &inject(HW | 40),
        &caps,
        "VM_ENTRY_INTR_INFO_FIELD: vector above 31 for a hardware exception",
    );
    let mut s = inject((4 << 8) | 0x80);
    s.set(EntryInstructionLength, 16);
    assert_only(
        &s,
        &caps,
        "VM_ENTRY_INSTRUCTION_LEN: must be 1-15 for a software interrupt or exception",
    );
    // Length 0 only where IA32_VMX_MISC bit 30 allows it.
    s.set(EntryInstructionLength, 0);
    assert_eq!(failures(&s, &caps), Vec::<String>::new());
    let strict = caps.with_misc(VmxMisc(caps.misc.0 & !(1 << 30)));
    assert_only(
        &s,
        &strict,
        "VM_ENTRY_INSTRUCTION_LEN: must be 1-15 for a software interrupt or exception",
    );
    let mut s = inject(HW | 14 | ERROR_CODE);
    s.set(EntryExceptionErrorCode, 0x1_0000);
    assert_only(
        &s,
        &caps,
        "VM_ENTRY_EXCEPTION_ERROR_CODE: bits 31:16 must be 0",
    );
    let mut s = long_mode_guest(&caps, false);
    s.set(
        EntryControls,
        s.get(EntryControls) | u64::from(entry::ENTRY_TO_SMM),
    );
    assert_only(
        &s,
        &caps,
        "VM_ENTRY_CONTROLS: bit 10 (entry to SMM) must be 0 outside SMM",
    );
    let mut s = long_mode_guest(&caps, false);
    s.set(EntryMsrLoadCount, 1);
    s.set(EntryMsrLoadAddr, 0x1004);
    assert_only(
        &s,
        &caps,
        "VM_ENTRY_MSR_LOAD_ADDR: MSR list address not 16-byte aligned",
    );
}

#[test]
fn host_control_register_and_msr_rules() {
    let caps = skylake();
    let with = |field: VmcsField, value: u64| {
        let mut s = long_mode_guest(&caps, false);
        s.set(field, value);
        s
    };
    assert_only(
        &with(HostCr4, 0x620),
        &caps,
        "HOST_CR4: bit 13 (VMXE) is clear but IA32_VMX_CR*_FIXED0 requires it set in VMX operation",
    );
    assert_only(
        &with(HostCr0, 0x8005_0032),
        &caps,
        "HOST_CR0: bit 0 (PE) is clear but IA32_VMX_CR*_FIXED0 requires it set in VMX operation",
    );
    assert_only(
        &with(HostCr3, 1 << 45),
        &caps,
        "HOST_CR3: bits beyond the physical-address width set",
    );
    assert_only(
        &with(HostIa32Efer, 0x901),
        &caps,
        "HOST_IA32_EFER: LMA must equal the host address-space size exit control",
    );
    assert_only(
        &with(HostSysenterEip, 0x0000_8000_0000_0000),
        &caps,
        "HOST_IA32_SYSENTER_EIP: not a canonical address",
    );
    let mut s = with(HostIa32Pat, 0x0007_0406_0007_0402);
    s.set(
        ExitControls,
        s.get(ExitControls) | u64::from(exit::LOAD_PAT),
    );
    assert_only(
        &s,
        &caps,
        "HOST_IA32_PAT: each byte must be a valid memory type (0, 1, 4, 5, 6 or 7)",
    );
}

#[test]
fn host_segment_and_descriptor_table_rules() {
    let caps = skylake();
    let with = |field: VmcsField, value: u64| {
        let mut s = long_mode_guest(&caps, false);
        s.set(field, value);
        s
    };
    assert_only(
        &with(HostCsSelector, 0x0b),
        &caps,
        "HOST_CS_SELECTOR: RPL and TI must be 0",
    );
    assert_only(
        &with(HostTrSelector, 0),
        &caps,
        "HOST_TR_SELECTOR: must not be 0",
    );
    assert_only(
        &with(HostGdtrBase, 0x1234_0000_0000_0000),
        &caps,
        "HOST_GDTR_BASE: not a canonical address",
    );
}

#[test]
fn address_space_size_rules() {
    let caps = skylake();
    let mut s = long_mode_guest(&caps, false);
    s.set(HostCr4, 0x2600);
    assert_only(&s, &caps, "HOST_CR4: PAE must be 1 for a 64-bit host");
    let mut s = long_mode_guest(&caps, false);
    s.set(HostRip, 0x0001_0000_0000_0000);
    assert_only(&s, &caps, "HOST_RIP: not a canonical address");
    let mut s = long_mode_guest(&caps, false);
    s.set(
        ExitControls,
        s.get(ExitControls) & !u64::from(exit::HOST_ADDRESS_SPACE_SIZE),
    );
    s.set(HostCr4, s.get(HostCr4) | 1 << 17);
    let found = failures(&s, &caps);
    for expected in [
        "VM_EXIT_CONTROLS: host address-space size must be 1 when VM entry runs in IA-32e mode",
        "VM_ENTRY_CONTROLS: IA-32e mode guest requires host address-space size",
        "HOST_RIP: bits 63:32 must be 0 for a 32-bit host",
        "HOST_CR4: bit 17 (PCIDE) must be 0 for a 32-bit host",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} not in {found:#?}"
        );
    }
}

#[test]
fn guest_control_register_debug_register_and_msr_rules() {
    let caps = skylake();
    let with = |field: VmcsField, value: u64| {
        let mut s = long_mode_guest(&caps, false);
        s.set(field, value);
        s
    };
    // PE clear: allowed only with unrestricted guest.
    assert_includes(
        &with(GuestCr0, 0x0005_0032),
        &caps,
        "GUEST_CR0: bit 0 (PE) is clear but IA32_VMX_CR*_FIXED0 requires it set in VMX operation",
    );
    let mut s = long_mode_guest(&caps, true);
    s.set(GuestCr0, 0x0005_0033);
    assert_includes(
        &s,
        &caps,
        "GUEST_CR0: bit 31 (PG) must be 1 in an IA-32e mode guest",
    );
    let mut s = long_mode_guest(&caps, true);
    s.set(GuestCr0, 0x8005_0032);
    assert_only(&s, &caps, "GUEST_CR0: bit 31 (PG) set without PE");
    // CD and NW are not checked (VM entry leaves them alone); other bits above 31 are.
    let strict_cr0 = VmxCapabilities {
        cr0_fixed1: 0x9fff_ffff,
        ..caps
    };
    assert_eq!(
        failures(&with(GuestCr0, 0xe005_0033), &strict_cr0),
        Vec::<String>::new()
    );
    assert_only(
        &with(GuestCr0, 0x1_8005_0033),
        &caps,
        "GUEST_CR0: bit 32 (reserved) is set but IA32_VMX_CR*_FIXED1 requires it clear in VMX operation",
    );
    assert_only(
        &with(GuestCr4, 0x2000),
        &caps,
        "GUEST_CR4: bit 5 (PAE) must be 1 in an IA-32e mode guest",
    );
    assert_includes(
        &with(GuestIa32Efer, 0x901),
        &caps,
        "GUEST_IA32_EFER: LMA must equal the IA-32e mode guest entry control",
    );
    assert_only(
        &with(GuestIa32Efer, 0xc01),
        &caps,
        "GUEST_IA32_EFER: LMA must equal LME while CR0.PG is set",
    );
    assert_only(
        &with(GuestIa32Efer, 0x1d01),
        &caps,
        "GUEST_IA32_EFER: reserved bits set",
    );
    assert_only(
        &with(GuestSysenterEsp, 0x0000_8000_0000_0000),
        &caps,
        "GUEST_SYSENTER_ESP: not a canonical address",
    );
    let mut s = with(GuestIa32Debugctl, 1 << 3);
    s.set(
        EntryControls,
        s.get(EntryControls) | u64::from(entry::LOAD_DEBUG_CONTROLS),
    );
    assert_only(&s, &caps, "GUEST_IA32_DEBUGCTL: reserved bits set");
    s.set(GuestIa32Debugctl, 0);
    s.set(GuestDr7, 1 << 32);
    assert_only(&s, &caps, "GUEST_DR7: bits 63:32 must be 0");
    // PCIDE outside IA-32e mode.
    let mut s = real_mode_guest(&caps);
    s.set(GuestCr4, 0x2000 | 1 << 17);
    assert_only(
        &s,
        &caps,
        "GUEST_CR4: bit 17 (PCIDE) must be 0 outside IA-32e mode",
    );
}

#[test]
fn guest_segment_register_rules() {
    let caps = skylake();
    let with_ar = |segment: Segment, access_rights: u32| {
        let mut s = long_mode_guest(&caps, false);
        let mut state = s.guest_segment(segment);
        state.access_rights = access_rights;
        s.set_guest_segment(segment, state);
        s
    };
    assert_only(
        &with_ar(Segment::Cs, ar::CODE64 | ar::DB),
        &caps,
        "GUEST_CS_AR_BYTES: L and D/B both set in an IA-32e mode guest",
    );
    assert_only(
        &with_ar(Segment::Tr, 0x89),
        &caps,
        "GUEST_TR_AR_BYTES: type must be 11 (64-bit busy TSS) in an IA-32e mode guest",
    );
    assert_only(
        &with_ar(Segment::Tr, ar::TSS64_BUSY | ar::UNUSABLE),
        &caps,
        "GUEST_TR_AR_BYTES: TR must be usable",
    );
    assert_only(
        &with_ar(Segment::Cs, ar::CODE64 & !ar::P),
        &caps,
        "GUEST_CS_AR_BYTES: P must be 1",
    );
    // CS type 3 (data) is allowed only for unrestricted guests.
    assert_includes(
        &with_ar(Segment::Cs, 0x3 | ar::S | ar::P | ar::G | ar::DB),
        &caps,
        "GUEST_CS_AR_BYTES: type must be an accessed code segment (9, 11, 13, 15) without unrestricted guest",
    );
    assert_only(
        &with_ar(Segment::Ss, ar::DATA & !ar::TYPE_READ_WRITE),
        &caps,
        "GUEST_SS_AR_BYTES: type must be 3 or 7 (read/write accessed data)",
    );
    assert_only(
        &with_ar(Segment::Ds, ar::DATA & !ar::TYPE_ACCESSED),
        &caps,
        "GUEST_DS_AR_BYTES: type must be accessed (bit 0)",
    );
    assert_only(
        &with_ar(Segment::Es, ar::DATA & !ar::G),
        &caps,
        "GUEST_ES_AR_BYTES: G clear but limit bits 31:20 are not all 0",
    );
    assert_only(
        &with_ar(Segment::Fs, ar::DATA | 1 << 9),
        &caps,
        "GUEST_FS_AR_BYTES: reserved bits 11:8 must be 0",
    );
    // An unusable data segment is not checked; an unusable CS is.
    assert_eq!(
        failures(&with_ar(Segment::Gs, ar::UNUSABLE | 0xff), &caps),
        Vec::<String>::new()
    );
    assert_only(
        &with_ar(Segment::Ldtr, 0x82 & !ar::P),
        &caps,
        "GUEST_LDTR_AR_BYTES: P must be 1",
    );
    // DPL rules: SS.DPL must equal its RPL, CS.DPL must equal SS.DPL.
    assert_includes(
        &with_ar(Segment::Ss, ar::DATA | 3 << ar::DPL_SHIFT),
        &caps,
        "GUEST_SS_AR_BYTES: DPL must equal the selector's RPL without unrestricted guest",
    );
    assert_includes(
        &with_ar(Segment::Ss, ar::DATA | 3 << ar::DPL_SHIFT),
        &caps,
        "GUEST_CS_AR_BYTES: DPL must equal SS's DPL for a non-conforming code segment",
    );
    // SS.DPL becomes the CPL: checked even when SS is unusable (a 64-bit guest's null SS).
    assert_eq!(
        failures(&with_ar(Segment::Ss, ar::UNUSABLE), &caps),
        Vec::<String>::new()
    );
    assert_includes(
        &with_ar(Segment::Ss, ar::UNUSABLE | 3 << ar::DPL_SHIFT),
        &caps,
        "GUEST_SS_AR_BYTES: DPL must equal the selector's RPL without unrestricted guest",
    );
    // Selector and base rules.
    let mut s = long_mode_guest(&caps, false);
    s.set(GuestSsSelector, 0x13);
    assert_includes(&s, &caps, "GUEST_SS_SELECTOR: RPL must equal CS's RPL");
    let mut s = long_mode_guest(&caps, false);
    s.set(GuestTrSelector, 0x1c);
    assert_only(&s, &caps, "GUEST_TR_SELECTOR: TI flag must be 0");
    let mut s = long_mode_guest(&caps, false);
    s.set(GuestCsBase, 1 << 32);
    assert_only(&s, &caps, "GUEST_CS_BASE: bits 63:32 must be 0");
    let mut s = long_mode_guest(&caps, false);
    s.set(GuestFsBase, 0x0000_8000_0000_0000);
    assert_only(&s, &caps, "GUEST_FS_BASE: not a canonical address");
    // Virtual-8086 mode: base = selector * 16, limit 0xffff, access rights 0xf3.
    let mut s = real_mode_guest(&caps);
    s.set(GuestCr0, 0x31);
    s.set(GuestRflags, 0x2 | 1 << 17);
    let v86 = SegmentState {
        selector: 0x1000,
        base: 0x1_0000,
        limit: 0xffff,
        access_rights: 0xf3,
    };
    for segment in [
        Segment::Es,
        Segment::Cs,
        Segment::Ss,
        Segment::Ds,
        Segment::Fs,
        Segment::Gs,
    ] {
        s.set_guest_segment(segment, v86);
    }
    assert_eq!(failures(&s, &caps), Vec::<String>::new());
    s.set(GuestDsBase, 0x2_0000);
    assert_only(
        &s,
        &caps,
        "GUEST_DS_BASE: must be the selector times 16 in virtual-8086 mode",
    );
}

#[test]
fn guest_descriptor_table_rules() {
    let caps = skylake();
    let mut s = long_mode_guest(&caps, false);
    s.set(GuestGdtrLimit, 0x1_0000);
    assert_only(&s, &caps, "GUEST_GDTR_LIMIT: bits 31:16 must be 0");
    let mut s = long_mode_guest(&caps, false);
    s.set(GuestIdtrBase, 0x0000_8000_0000_0000);
    assert_only(&s, &caps, "GUEST_IDTR_BASE: not a canonical address");
}

#[test]
fn guest_rip_and_rflags_rules() {
    let caps = skylake();
    let with = |field: VmcsField, value: u64| {
        let mut s = long_mode_guest(&caps, false);
        s.set(field, value);
        s
    };
    assert_only(
        &with(GuestRip, 0x0000_8000_0000_0000),
        &caps,
        "GUEST_RIP: not canonical in 64-bit mode",
    );
    assert_eq!(
        failures(&with(GuestRip, 0xffff_8000_0000_0000), &caps),
        Vec::<String>::new()
    );
    let mut s = real_mode_guest(&caps);
    s.set(GuestRip, 1 << 32);
    assert_only(
        &s,
        &caps,
        "GUEST_RIP: bits 63:32 must be 0 outside 64-bit mode",
    );
    assert_only(
        &with(GuestRflags, 0),
        &caps,
        "GUEST_RFLAGS: bit 1 must be 1",
    );
    assert_only(
        &with(GuestRflags, 0x2 | 1 << 15),
        &caps,
        "GUEST_RFLAGS: reserved bits (63:22, 15, 5, 3) must be 0",
    );
    assert_includes(
        &with(GuestRflags, 0x2 | 1 << 17),
        &caps,
        "GUEST_RFLAGS: VM must be 0 in an IA-32e mode guest or with CR0.PE 0",
    );
    let mut s = with(GuestRflags, 0x2);
    s.set(EntryInterruptionInfo, 1 << 31 | 0x20);
    assert_only(
        &s,
        &caps,
        "GUEST_RFLAGS: IF must be 1 to inject an external interrupt",
    );
}

#[test]
fn guest_non_register_state_rules() {
    let caps = skylake();
    let with = |field: VmcsField, value: u64| {
        let mut s = long_mode_guest(&caps, false);
        s.set(field, value);
        s
    };
    assert_eq!(
        failures(&with(GuestActivityState, 1), &caps),
        Vec::<String>::new(),
        "HLT"
    );
    assert_only(
        &with(GuestActivityState, 4),
        &caps,
        "GUEST_ACTIVITY_STATE: activity state not supported by this CPU (IA32_VMX_MISC bits 8:6)",
    );
    let no_sipi = caps.with_misc(VmxMisc(caps.misc.0 & !(1 << 8)));
    assert_only(
        &with(GuestActivityState, 3),
        &no_sipi,
        "GUEST_ACTIVITY_STATE: activity state not supported by this CPU (IA32_VMX_MISC bits 8:6)",
    );
    let mut s = with(GuestActivityState, 2);
    s.set(EntryInterruptionInfo, 1 << 31 | 3 << 8 | 6);
    assert_only(
        &s,
        &caps,
        "GUEST_ACTIVITY_STATE: the injected event cannot be delivered in this activity state",
    );
    assert_only(
        &with(GuestInterruptibility, 1),
        &caps,
        "GUEST_INTERRUPTIBILITY_INFO: blocking by STI requires RFLAGS.IF",
    );
    let mut s = with(GuestInterruptibility, 3);
    s.set(GuestRflags, 0x202);
    assert_only(
        &s,
        &caps,
        "GUEST_INTERRUPTIBILITY_INFO: blocking by STI and by MOV SS cannot both be set",
    );
    let mut s = with(GuestInterruptibility, 2);
    s.set(GuestActivityState, 1);
    assert_only(
        &s,
        &caps,
        "GUEST_ACTIVITY_STATE: must be active while blocking by STI or MOV SS",
    );
    assert_only(
        &with(GuestInterruptibility, 1 << 5),
        &caps,
        "GUEST_INTERRUPTIBILITY_INFO: reserved bits 31:5 must be 0",
    );
    assert_only(
        &with(GuestInterruptibility, 1 << 2),
        &caps,
        "GUEST_INTERRUPTIBILITY_INFO: blocking by SMI must be 0 outside SMM",
    );
    let mut s = with(GuestInterruptibility, 2);
    s.set(EntryInterruptionInfo, 1 << 31 | 2 << 8 | 2);
    assert_only(
        &s,
        &caps,
        "GUEST_INTERRUPTIBILITY_INFO: no blocking by MOV SS while injecting an NMI",
    );
    assert_only(
        &with(GuestPendingDebugExceptions, 1 << 4),
        &caps,
        "GUEST_PENDING_DBG_EXCEPTIONS: reserved bits (11:4, 13, 15, 63:17) must be 0",
    );
    // Single-step under MOV SS blocking must leave BS pending.
    let mut s = with(GuestInterruptibility, 2);
    s.set(GuestRflags, 0x102);
    assert_only(
        &s,
        &caps,
        "GUEST_PENDING_DBG_EXCEPTIONS: BS must be 1 with RFLAGS.TF set, BTF clear, and blocking or HLT",
    );
    s.set(GuestPendingDebugExceptions, 1 << 14);
    assert_eq!(failures(&s, &caps), Vec::<String>::new());
    assert_only(
        &with(VmcsLinkPointer, 0x1234),
        &caps,
        "VMCS_LINK_POINTER: not all ones and not 4-KiB aligned",
    );
    assert_only(
        &with(VmcsLinkPointer, 1 << 45),
        &caps,
        "VMCS_LINK_POINTER: not all ones and has bits beyond the physical-address width",
    );
}

#[test]
fn guest_pdpte_rules_apply_to_pae_paging_with_ept() {
    let caps = skylake();
    // A 32-bit protected-mode guest with PAE paging.
    let mut s = long_mode_guest(&caps, false);
    s.set(
        EntryControls,
        s.get(EntryControls) & !u64::from(entry::IA32E_MODE_GUEST),
    );
    s.set(GuestIa32Efer, 0);
    s.set_guest_segment(
        Segment::Cs,
        SegmentState {
            selector: 0x08,
            base: 0,
            limit: 0xffff_ffff,
            access_rights: 0xc09b,
        },
    );
    s.set_guest_segment(
        Segment::Tr,
        SegmentState {
            selector: 0x18,
            base: 0x5000,
            limit: 0x67,
            access_rights: 0x8b,
        },
    );
    s.set(GuestPdpte0, 0x7000 | 1);
    s.set(GuestPdpte1, 0xffff_ffff_ffff_fffe); // not present: not checked
    assert_eq!(failures(&s, &caps), Vec::<String>::new());
    s.set(GuestPdpte2, 0x8000 | 1 | 1 << 1);
    assert_only(
        &s,
        &caps,
        "GUEST_PDPTR2: present PDPTE with reserved bits 2:1 or 8:5 set",
    );
    s.set(GuestPdpte2, (1 << 45) | 1);
    assert_only(
        &s,
        &caps,
        "GUEST_PDPTR2: present PDPTE with bits beyond the physical-address width",
    );
}

mod hostile_values {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = VmcsField> {
        (0..VmcsField::COUNT).prop_map(|index| VmcsField::ALL[index])
    }

    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0u32..64).prop_map(|bit| 1u64 << bit),
            Just(0u64),
            Just(u64::MAX),
            any::<u32>().prop_map(u64::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any values in any fields: the checks never panic, the first failure is the first one
        /// reported, and a state with no failure is exactly one `check_vm_entry` accepts.
        #[test]
        fn the_checks_take_any_state(
            changes in proptest::collection::vec((field(), value()), 0..12),
            unrestricted in any::<bool>(),
            phys_bits in 32u8..=64,
        ) {
            let caps = skylake();
            let mut state = long_mode_guest(&caps, unrestricted);
            for (field, value) in changes {
                state.set(field, value);
            }
            let ctx = EntryContext { caps: &caps, phys_addr_bits: phys_bits, linear_addr_bits: 48, host_ia32e: true };
            let mut all = Vec::new();
            for_each_failure(&state, &ctx, &mut |error| all.push(error));
            prop_assert_eq!(check_vm_entry(&state, &ctx).err(), all.first().copied());
            for error in all {
                // Every message starts with the field's name.
                prop_assert!(error.to_string().starts_with(error.field.name()));
            }
        }

        /// One field changed away from the valid state: both entry points agree on whether it
        /// is accepted.
        #[test]
        fn one_change_gets_the_same_verdict_from_both_entry_points(field in field(), value in value()) {
            let caps = skylake();
            let mut state = long_mode_guest(&caps, false);
            state.set(field, value);
            let ctx = context(&caps);
            let first = check_vm_entry(&state, &ctx);
            let mut count = 0;
            for_each_failure(&state, &ctx, &mut |_| count += 1);
            prop_assert_eq!(first.is_ok(), count == 0);
        }
    }
}
