//! The initial VMCS of both entry modes passes the VM-entry checks; the control policy refuses
//! CPUs that cannot provide it; guest control-register writes keep the fixed bits.

extern crate std;

use super::caps::*;
use super::entry_checks::{EntryContext, check_vm_entry, for_each_failure};
use super::ept::ept_pointer;
use super::fields::VmcsField::*;
use super::setup::*;
use super::tests::{skylake, skylake_msrs};
use crate::addr::{Frame, PhysAddr};
use proptest::prelude::*;
use slipway_protocol::v1::VcpuEntry;
use std::string::{String, ToString};
use std::vec::Vec;

fn host() -> HostState {
    HostState {
        cr0: 0x8005_0033,
        cr3: 0x30_0000,
        cr4: 0x2620,
        cs: 0x08,
        ds: 0x10,
        tr: 0x18,
        tr_base: 0xffff_8000_0010_0000,
        gdtr_base: 0xffff_8000_0010_1000,
        idtr_base: 0xffff_8000_0010_2000,
        fs_base: 0,
        gs_base: 0xffff_8000_0011_0000,
        efer: 0xd01,
        pat: RESET_PAT,
        rsp: 0xffff_8000_0020_0000,
        rip: 0xffff_8000_0000_1000,
    }
}

fn resources(caps: &VmxCapabilities) -> VcpuResources {
    VcpuResources {
        eptp: ept_pointer(
            Frame::from_start(PhysAddr(0x20_0000)).unwrap(),
            caps,
            false,
            39,
        )
        .unwrap(),
        vpid: 3,
        io_bitmap_a: 0x10_0000,
        io_bitmap_b: 0x10_1000,
        msr_bitmap: 0x10_2000,
    }
}

fn all_failures(state: &super::vmcs::VmcsState, caps: &VmxCapabilities) -> Vec<String> {
    let ctx = EntryContext {
        caps,
        phys_addr_bits: 39,
        linear_addr_bits: 48,
        host_ia32e: true,
    };
    let mut found = Vec::new();
    for_each_failure(state, &ctx, &mut |e| found.push(e.to_string()));
    found
}

const PVH: VcpuEntry = VcpuEntry::Pvh32 {
    entry_eip: 0x10_0000,
    start_info_gpa: 0x6000,
};
const LONG: VcpuEntry = VcpuEntry::Long64 {
    rip: 0x20_0000,
    rsp: 0x30_0000,
    cr3: 0x40_0000,
    rsi: 0x6000,
};

#[test]
fn both_entry_modes_pass_the_vm_entry_checks() {
    let caps = skylake();
    let controls = VmxControls::for_cpu(&caps).unwrap();
    for vcpu_entry in [PVH, LONG] {
        let state = initial_vmcs(&caps, &controls, &host(), &resources(&caps), vcpu_entry);
        assert_eq!(
            all_failures(&state, &caps),
            Vec::<String>::new(),
            "{vcpu_entry:?}"
        );
        let ctx = EntryContext {
            caps: &caps,
            phys_addr_bits: 39,
            linear_addr_bits: 48,
            host_ia32e: true,
        };
        assert_eq!(check_vm_entry(&state, &ctx), Ok(()));
    }
}

#[test]
fn the_policy_intercepts_what_the_svm_backend_intercepts() {
    let caps = skylake();
    let c = VmxControls::for_cpu(&caps).unwrap();
    assert_ne!(c.pin & pin::EXTERNAL_INTERRUPT_EXITING, 0);
    assert_ne!(c.pin & pin::NMI_EXITING, 0);
    for bit in [
        proc::HLT_EXITING,
        proc::USE_IO_BITMAPS,
        proc::USE_MSR_BITMAPS,
        proc::MWAIT_EXITING,
        proc::MONITOR_EXITING,
    ] {
        assert_ne!(c.primary & bit, 0, "{bit:#x}");
    }
    assert_eq!(
        c.primary & (proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING),
        0
    );
    for bit in [
        proc2::ENABLE_EPT,
        proc2::ENABLE_VPID,
        proc2::UNRESTRICTED_GUEST,
        proc2::WBINVD_EXITING,
    ] {
        assert_ne!(c.secondary & bit, 0, "{bit:#x}");
    }
    assert_eq!(c.exit & exit::ACK_INTERRUPT_ON_EXIT, 0);
    let state = initial_vmcs(&caps, &c, &host(), &resources(&caps), LONG);
    assert_eq!(
        state.get(ExceptionBitmap),
        (1 << 1) | (1 << 17) | (1 << 18),
        "#DB, #AC, #MC"
    );
    assert_eq!(
        state.get(EntryControls) & u64::from(entry::IA32E_MODE_GUEST),
        u64::from(entry::IA32E_MODE_GUEST)
    );
    let pvh = initial_vmcs(&caps, &c, &host(), &resources(&caps), PVH);
    assert_eq!(
        pvh.get(EntryControls) & u64::from(entry::IA32E_MODE_GUEST),
        0
    );
}

#[test]
fn guests_see_their_own_control_registers_while_the_cpu_keeps_the_fixed_bits() {
    let caps = skylake();
    let c = VmxControls::for_cpu(&caps).unwrap();
    let pvh = initial_vmcs(&caps, &c, &host(), &resources(&caps), PVH);
    assert_eq!(pvh.get(Cr0ReadShadow), 0x11, "PE | ET, as under SVM");
    assert_eq!(pvh.get(GuestCr0), 0x31, "NE forced");
    assert_eq!(pvh.get(Cr4ReadShadow), 0);
    assert_eq!(pvh.get(GuestCr4), 0x2000, "VMXE forced");
    assert_ne!(pvh.get(Cr0GuestHostMask) & (1 << 5), 0, "NE is host-owned");
    assert_eq!(
        pvh.get(Cr0GuestHostMask) & (CR0_PE | CR0_PG),
        0,
        "PE/PG are the guest's"
    );
    assert_ne!(
        pvh.get(Cr4GuestHostMask) & (1 << 13),
        0,
        "VMXE is host-owned"
    );
    let long = initial_vmcs(&caps, &c, &host(), &resources(&caps), LONG);
    assert_eq!(long.get(GuestCr0), 0x8000_0033);
    assert_eq!(long.get(GuestCr4), 0x2020);
    assert_eq!(long.get(Cr4ReadShadow), 0x20);
    assert_eq!(long.get(GuestCr3), 0x40_0000);
    assert_eq!(long.get(GuestIa32Efer), 0xd00);
}

#[test]
fn a_cpu_without_the_policys_controls_is_refused_by_name() {
    // No unrestricted guest (bit 7 of the secondary controls' allowed 1-settings).
    let mut msrs = skylake_msrs();
    msrs.insert(MSR_IA32_VMX_PROCBASED_CTLS2, 0x0055_3c7e_0000_0000);
    let caps = VmxCapabilities::read(|msr| msrs[&msr]);
    let error = VmxControls::for_cpu(&caps).unwrap_err();
    assert_eq!(
        error.to_string(),
        "SECONDARY_VM_EXEC_CONTROL: bit 7 (unrestricted guest) is required but this CPU cannot set it"
    );
    // No TRUE controls: CR3-load/store exiting are then forced on.
    let mut msrs = skylake_msrs();
    msrs.insert(MSR_IA32_VMX_BASIC, 0x005a_0400_0000_0004);
    let caps = VmxCapabilities::read(|msr| msrs[&msr]);
    assert_eq!(
        VmxControls::for_cpu(&caps),
        Err(ControlError::MustBeOne {
            control: Control::PrimaryProc,
            bit: 15
        })
    );
}

#[test]
fn guest_control_register_writes_are_emulated_or_refused() {
    let caps = skylake();
    // Linux enabling PAE and PGE with the guest's CR4 view.
    assert_eq!(
        guest_cr_write(&caps, GuestCr::Cr4, 0xa0),
        Ok(CrUpdate {
            real: 0x20a0,
            shadow: 0xa0
        })
    );
    assert_eq!(
        guest_cr_write(&caps, GuestCr::Cr4, 0x2000),
        Err(CrWriteRefused::UnsupportedBit(13)),
        "a guest may not enable VMX"
    );
    assert_eq!(
        guest_cr_write(&caps, GuestCr::Cr4, 1 << 24),
        Err(CrWriteRefused::UnsupportedBit(24)),
        "PKS is not supported by this CPU"
    );
    assert_eq!(
        guest_cr_write(&caps, GuestCr::Cr0, 0x11),
        Ok(CrUpdate {
            real: 0x31,
            shadow: 0x11
        }),
        "the guest clears NE: it reads 0, the CPU keeps 1"
    );
    assert_eq!(
        guest_cr_write(&caps, GuestCr::Cr0, 0x8000_0010),
        Err(CrWriteRefused::InvalidCombination)
    );
    assert_eq!(
        guest_cr_write(&caps, GuestCr::Cr0, 0x2000_0011),
        Err(CrWriteRefused::InvalidCombination),
        "NW without CD"
    );
    assert_eq!(
        guest_cr_write(&caps, GuestCr::Cr0, 1 << 40 | 0x11),
        Err(CrWriteRefused::UnsupportedBit(40))
    );
}

proptest! {
    /// Whatever a guest writes, an accepted value leaves the guest-owned bits identical in the
    /// real register and the shadow, and the real register satisfies VMX operation.
    #[test]
    fn accepted_writes_keep_guest_owned_bits_and_fixed_bits(value in any::<u64>(), cr4 in any::<bool>(), low in proptest::bool::weighted(0.9)) {
        let caps = skylake();
        // Mostly values made of bits the CPU allows, so that acceptance is exercised.
        let allowed = if cr4 { caps.cr4_fixed1 & !caps.cr4_fixed0 } else { caps.cr0_fixed1 };
        let value = if low { value & allowed } else { value };
        let (cr, mask) = if cr4 {
            (GuestCr::Cr4, cr4_host_owned(&caps))
        } else {
            (GuestCr::Cr0, cr0_host_owned(&caps))
        };
        if let Ok(update) = guest_cr_write(&caps, cr, value) {
            prop_assert_eq!((update.real ^ update.shadow) & !mask, 0);
            prop_assert_eq!(update.shadow, value);
            if cr4 {
                prop_assert_eq!(caps.cr4_violation(update.real), None);
            } else {
                prop_assert_eq!(caps.cr0_violation(update.real, true), None);
            }
        }
    }
}
