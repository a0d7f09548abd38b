//! Tests of the VMCS field table and the capability model.

extern crate std;

use super::caps::*;
use super::fields::*;
use std::collections::BTreeMap;
use std::format;
use std::string::ToString;

#[test]
fn field_table_is_sorted_unique_and_self_consistent() {
    let all = VmcsField::ALL;
    assert_eq!(all.len(), VmcsField::COUNT);
    for (index, pair) in all.windows(2).enumerate() {
        assert!(pair[0].encoding() < pair[1].encoding(), "{:?}", pair);
        assert_eq!(pair[0].index(), index);
    }
    for field in all {
        let encoding = field.encoding();
        assert_eq!(encoding & 1, 0, "{field}: full-access encodings are even");
        assert_eq!(encoding & (1 << 12), 0, "{field}: bit 12 is reserved");
        assert_eq!(encoding >> 15, 0, "{field}: bits 31:15 are reserved");
        assert_eq!(VmcsField::from_encoding(encoding), Some(*field));
        // Names say what the encoding says.
        let name = field.name();
        match field.field_type() {
            FieldType::GuestState => assert!(
                name.starts_with("GUEST_")
                    || name == "VMCS_LINK_POINTER"
                    || name.starts_with("VMX_PREEMPTION"),
                "{name}"
            ),
            FieldType::HostState => assert!(name.starts_with("HOST_"), "{name}"),
            FieldType::ExitInformation | FieldType::Control => {
                assert!(!name.starts_with("HOST_"), "{name}");
            }
        }
    }
    assert_eq!(
        VmcsField::from_encoding(0x4817),
        None,
        "high halves of 32-bit fields do not exist"
    );
}

#[test]
fn width_and_type_come_from_the_encoding() {
    use FieldType::*;
    use FieldWidth::*;
    for (field, width, kind) in [
        (VmcsField::Vpid, Bits16, Control),
        (VmcsField::GuestCsSelector, Bits16, GuestState),
        (VmcsField::HostTrSelector, Bits16, HostState),
        (VmcsField::EptPointer, Bits64, Control),
        (VmcsField::GuestPhysicalAddress, Bits64, ExitInformation),
        (VmcsField::VmcsLinkPointer, Bits64, GuestState),
        (VmcsField::HostIa32Efer, Bits64, HostState),
        (VmcsField::PinBasedControls, Bits32, Control),
        (VmcsField::ExitReason, Bits32, ExitInformation),
        (VmcsField::GuestCsAccessRights, Bits32, GuestState),
        (VmcsField::HostSysenterCs, Bits32, HostState),
        (VmcsField::Cr0GuestHostMask, Natural, Control),
        (VmcsField::ExitQualification, Natural, ExitInformation),
        (VmcsField::GuestRip, Natural, GuestState),
        (VmcsField::HostRip, Natural, HostState),
    ] {
        assert_eq!(
            (field.width(), field.field_type()),
            (width, kind),
            "{field}"
        );
    }
    // A few encodings pinned against the SDM's appendix B.
    assert_eq!(VmcsField::GuestCsAccessRights.encoding(), 0x4816);
    assert_eq!(VmcsField::SecondaryProcControls.encoding(), 0x401e);
    assert_eq!(VmcsField::GuestInterruptibility.encoding(), 0x4824);
    assert_eq!(VmcsField::HostRip.encoding(), 0x6c16);
    assert_eq!(VmcsField::EptPointer.encoding(), 0x201a);
    assert_eq!(FieldWidth::Bits16.mask(), 0xffff);
}

/// Capability MSR values of a Skylake-class processor (TRUE controls, EPT, VPID, unrestricted
/// guest), as a map that refuses MSRs the code must not read.
pub(crate) fn skylake_msrs() -> BTreeMap<u32, u64> {
    BTreeMap::from([
        (MSR_IA32_VMX_BASIC, 0x00da_0400_0000_0004),
        (MSR_IA32_VMX_PINBASED_CTLS, 0x0000_007f_0000_0016),
        (MSR_IA32_VMX_PROCBASED_CTLS, 0xfff9_fffe_0401_e172),
        (MSR_IA32_VMX_EXIT_CTLS, 0x01ff_ffff_0003_6dff),
        (MSR_IA32_VMX_ENTRY_CTLS, 0x0003_ffff_0000_11ff),
        (MSR_IA32_VMX_MISC, 0x0000_0000_7004_c1e7),
        (MSR_IA32_VMX_CR0_FIXED0, 0x8000_0021),
        (MSR_IA32_VMX_CR0_FIXED1, 0xffff_ffff),
        (MSR_IA32_VMX_CR4_FIXED0, 0x2000),
        (MSR_IA32_VMX_CR4_FIXED1, 0x0037_27ff),
        (MSR_IA32_VMX_PROCBASED_CTLS2, 0x0055_3cfe_0000_0000),
        (MSR_IA32_VMX_EPT_VPID_CAP, 0x0000_0f01_0673_4141),
        (MSR_IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_007f_0000_0016),
        (MSR_IA32_VMX_TRUE_PROCBASED_CTLS, 0xfff9_fffe_0400_6172),
        (MSR_IA32_VMX_TRUE_EXIT_CTLS, 0x01ff_ffff_0003_6dfb),
        (MSR_IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_ffff_0000_11fb),
        (MSR_IA32_VMX_VMFUNC, 0x1),
    ])
}

pub(crate) fn skylake() -> VmxCapabilities {
    let msrs = skylake_msrs();
    VmxCapabilities::read(|msr| {
        *msrs
            .get(&msr)
            .unwrap_or_else(|| panic!("read of MSR {msr:#x}"))
    })
}

#[test]
fn capabilities_use_the_true_msrs_when_basic_says_so() {
    let caps = skylake();
    assert_eq!(caps.basic.revision_id(), 4);
    assert_eq!(caps.basic.region_size(), 0x400);
    assert_eq!(caps.basic.memory_type(), 6);
    assert!(caps.basic.true_controls());
    // TRUE procbased: CR3-load/store exiting (bits 15, 16) are default1 but may be cleared.
    assert_eq!(caps.primary_proc.must_be_one, 0x0400_6172);
    assert_eq!(caps.exit.must_be_one, 0x0003_6dfb);
    assert!(caps.misc.activity_state_supported(1));
    assert_eq!(caps.misc.cr3_target_count(), 4);
    assert_eq!(caps.misc.max_msr_list_entries(), 512);
    assert!(caps.has_ept_vpid(ept_vpid::PAGE_WALK_4 | ept_vpid::MEMORY_TYPE_WB));
    assert!(caps.has_ept_vpid(ept_vpid::ACCESSED_DIRTY));
    assert_eq!(caps.vmfunc, 1, "EPTP switching");
}

#[test]
fn capabilities_without_true_msrs_or_secondary_controls_read_nothing_more() {
    let mut msrs = skylake_msrs();
    msrs.insert(MSR_IA32_VMX_BASIC, 0x0058_0400_0000_0001); // no bit 55
    // A penryn-like CPU: no secondary controls.
    msrs.insert(MSR_IA32_VMX_PROCBASED_CTLS, 0x77f9_fffe_0401_e172);
    for msr in [
        MSR_IA32_VMX_TRUE_PINBASED_CTLS,
        MSR_IA32_VMX_TRUE_PROCBASED_CTLS,
        MSR_IA32_VMX_TRUE_EXIT_CTLS,
        MSR_IA32_VMX_TRUE_ENTRY_CTLS,
        MSR_IA32_VMX_PROCBASED_CTLS2,
        MSR_IA32_VMX_EPT_VPID_CAP,
        MSR_IA32_VMX_VMFUNC,
    ] {
        msrs.remove(&msr);
    }
    let caps = VmxCapabilities::read(|msr| {
        *msrs
            .get(&msr)
            .unwrap_or_else(|| panic!("read of MSR {msr:#x}"))
    });
    assert_eq!(caps.secondary_proc, AllowedBits::NONE);
    assert_eq!(caps.ept_vpid, 0);
    assert_eq!(
        caps.primary_proc.must_be_one, 0x0401_e172,
        "the non-TRUE default1 bits"
    );
    assert_eq!(
        caps.control_value(Control::SecondaryProc, proc2::ENABLE_EPT, 0, 0),
        Err(ControlError::Unsupported {
            control: Control::SecondaryProc,
            bit: 1
        })
    );
}

#[test]
fn control_values_add_must_be_one_bits_and_name_what_is_missing() {
    let caps = skylake();
    let pin = caps
        .control_value(
            Control::PinBased,
            pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING,
            pin::VIRTUAL_NMIS,
            0,
        )
        .unwrap();
    assert_eq!(pin, 0x16 | 0x1 | 0x8 | 0x20);
    // Optional bits the CPU lacks are dropped; posted interrupts (bit 7) is not allowed here.
    let pin = caps
        .control_value(Control::PinBased, 0, pin::POSTED_INTERRUPTS, 0)
        .unwrap();
    assert_eq!(pin, 0x16);
    let error = caps
        .control_value(Control::PinBased, pin::POSTED_INTERRUPTS, 0, 0)
        .unwrap_err();
    assert_eq!(
        error,
        ControlError::Unsupported {
            control: Control::PinBased,
            bit: 7
        }
    );
    assert_eq!(
        error.to_string(),
        "PIN_BASED_VM_EXEC_CONTROL: bit 7 (process posted interrupts) is required but this CPU cannot set it"
    );
    // Bit 1 of the pin-based controls is default1: refusing it is an error, not a silent set.
    let error = caps
        .control_value(Control::PinBased, 0, 0, 1 << 1)
        .unwrap_err();
    assert_eq!(
        error,
        ControlError::MustBeOne {
            control: Control::PinBased,
            bit: 1
        }
    );
    assert!(format!("{error}").contains("requires it set"));
    let secondary = caps
        .control_value(
            Control::SecondaryProc,
            proc2::ENABLE_EPT | proc2::ENABLE_VPID | proc2::UNRESTRICTED_GUEST,
            0,
            0,
        )
        .unwrap();
    assert_eq!(secondary, 0xa2);
    assert_eq!(
        AllowedBits::from_msr(0x0000_00ff_0000_0016).first_violation(0x17),
        None
    );
    assert_eq!(
        AllowedBits::from_msr(0x0000_00ff_0000_0016).first_violation(0x114),
        Some((8, true))
    );
    assert_eq!(
        AllowedBits::from_msr(0x0000_00ff_0000_0016).first_violation(0x12),
        Some((2, false))
    );
}

#[test]
fn cr_fixed_bits_relax_pe_and_pg_only_for_unrestricted_guests() {
    let caps = skylake();
    assert_eq!(caps.cr0_violation(0x8000_0031, false), None);
    assert_eq!(caps.cr0_violation(0x0000_0030, false), Some((0, false)));
    assert_eq!(caps.cr0_violation(0x0000_0030, true), None);
    assert_eq!(caps.cr0_violation(0x1_8000_0031, false), Some((32, true)));
    assert_eq!(caps.cr4_violation(0x2020), None);
    assert_eq!(
        caps.cr4_violation(0x20),
        Some((13, false)),
        "CR4.VMXE must stay set"
    );
    assert_eq!(caps.cr4_violation(0x2020 | 1 << 24), Some((24, true)));
}

#[test]
fn ept_pointer_is_write_back_four_level_and_ad_only_when_supported() {
    use super::ept::*;
    use crate::addr::{Frame, PhysAddr};
    let caps = skylake();
    let root = Frame::from_start(PhysAddr(0x1234_5000)).unwrap();
    assert_eq!(ept_pointer(root, &caps, false, 39), Ok(0x1234_501e));
    assert_eq!(ept_pointer(root, &caps, true, 39), Ok(0x1234_505e));
    let mut no_ad = caps;
    no_ad.ept_vpid &= !ept_vpid::ACCESSED_DIRTY;
    assert_eq!(ept_pointer(root, &no_ad, true, 39), Ok(0x1234_501e));
    assert_eq!(
        check_ept_pointer(0x1234_505e, &no_ad, 39),
        Err(EptpError::AccessedDirtyUnsupported)
    );
    let mut uc_only = caps;
    uc_only.ept_vpid &= !ept_vpid::MEMORY_TYPE_WB;
    assert_eq!(ept_pointer(root, &uc_only, false, 39), Ok(0x1234_5018));
    let mut no_walk = caps;
    no_walk.ept_vpid &= !ept_vpid::PAGE_WALK_4;
    assert_eq!(
        ept_pointer(root, &no_walk, false, 39),
        Err(EptpError::NoFourLevelWalk)
    );
    assert_eq!(
        check_ept_pointer(0x1234_501e | 1 << 7, &caps, 39),
        Err(EptpError::ReservedBits)
    );
    assert_eq!(
        check_ept_pointer(0x1234_5026, &caps, 39),
        Err(EptpError::UnsupportedWalkLength)
    );
    assert_eq!(
        check_ept_pointer(0x1234_5019, &caps, 39),
        Err(EptpError::UnsupportedMemoryType)
    );
    let high = Frame::from_start(PhysAddr(1 << 40)).unwrap();
    assert_eq!(
        ept_pointer(high, &caps, false, 39),
        Err(EptpError::AddressTooWide)
    );
}

#[test]
fn vmxon_preconditions_name_what_blocks_vmx() {
    let caps = skylake();
    let (cr0, cr4) = (0x8005_0033, 0x2620);
    assert_eq!(caps.check_vmxon(0x5, false, cr0, cr4, 0x10_0000), Ok(()));
    assert_eq!(
        caps.check_vmxon(0x4, false, cr0, cr4, 0x10_0000),
        Err(VmxonError::FeatureControlUnlocked)
    );
    assert_eq!(
        caps.check_vmxon(0x3, false, cr0, cr4, 0x10_0000),
        Err(VmxonError::DisabledOutsideSmx)
    );
    // CR4.SMXE is settable only on a processor with SMX (this one has none).
    assert_eq!(
        caps.check_vmxon(0x7, true, cr0, cr4 | 1 << 14, 0x10_0000),
        Err(VmxonError::Cr4(14, true))
    );
    let caps = VmxCapabilities {
        cr4_fixed1: caps.cr4_fixed1 | 1 << 14,
        ..caps
    };
    // After a measured launch the hypervisor runs in SMX operation: bit 1 decides.
    assert_eq!(
        caps.check_vmxon(0x5, true, cr0, cr4 | 1 << 14, 0x10_0000),
        Err(VmxonError::DisabledInsideSmx)
    );
    assert_eq!(
        caps.check_vmxon(0x7, true, cr0, cr4 | 1 << 14, 0x10_0000),
        Ok(())
    );
    // Firmware that leaves CR4.VMXE clear, or a CR0 without NE.
    assert_eq!(
        caps.check_vmxon(0x5, false, cr0, 0x620, 0x10_0000),
        Err(VmxonError::Cr4(13, false))
    );
    let error = caps
        .check_vmxon(0x5, false, 0x8001_0013, cr4, 0x10_0000)
        .unwrap_err();
    assert_eq!(error, VmxonError::Cr0(5, false));
    assert_eq!(
        error.to_string(),
        "CR0 bit 5 is clear but VMX operation requires it set"
    );
    let mut narrow = caps;
    narrow.basic = VmxBasic(caps.basic.0 | 1 << 48);
    assert_eq!(
        narrow.check_vmxon(0x5, false, cr0, cr4, 0x1_0000_0000),
        Err(VmxonError::RegionAbove4GiB)
    );
}

#[test]
fn invalidation_uses_the_narrowest_supported_type() {
    use super::ept::*;
    let caps = skylake();
    assert_eq!(invept_type(&caps), Some(InvalidationType::SingleContext));
    assert_eq!(invvpid_type(&caps), Some(InvalidationType::SingleContext));
    let all_only = caps.with_ept_vpid(
        caps.ept_vpid & !(ept_vpid::INVEPT_SINGLE_CONTEXT | ept_vpid::INVVPID_SINGLE_CONTEXT),
    );
    assert_eq!(invept_type(&all_only), Some(InvalidationType::AllContext));
    assert_eq!(invvpid_type(&all_only), Some(InvalidationType::AllContext));
    let none = caps.with_ept_vpid(caps.ept_vpid & !(ept_vpid::INVEPT | ept_vpid::INVVPID));
    assert_eq!(invept_type(&none), None);
    assert_eq!(invvpid_type(&none), None);
    assert_eq!(InvalidationType::AllContext as u64, 2);
}
