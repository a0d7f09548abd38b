//! The VMCS every Slipway vCPU starts from: the control policy (what is intercepted), the host
//! state, and the guest state for each vCPU entry mode, as a [`VmcsState`] that the entry checks
//! validate before the backend writes it.
//!
//! Policy, mirroring the SVM backend so both behave the same:
//! - exits on external interrupts and NMIs (virtual NMIs when the CPU has them), HLT, every I/O
//!   port and MSR (bitmaps with every bit set, owned by the backend), MONITOR/MWAIT, WBINVD; the
//!   exception bitmap is [`INTERCEPTED_EXCEPTIONS`] (#DB, #AC, #MC); CPUID, INVD, XSETBV, GETSEC,
//!   task switches and every VMX instruction exit unconditionally;
//! - EPT (4-level, write-back) and a VPID per vCPU; unrestricted guest, because PVH entry starts
//!   in protected mode with paging off; RDTSCP and INVPCID enabled where the CPU has them so
//!   guests see the same instructions as under SVM;
//! - CR3-load/store exiting off (a CPU that forces them is refused: such exits would stop
//!   guests), no acknowledge-interrupt-on-exit (the host takes the interrupt through its IDT
//!   once it enables interrupts, as under SVM);
//! - guest EFER, PAT and debug controls loaded on entry and saved on exit, host EFER and PAT
//!   loaded on exit, a 64-bit host;
//! - CR0 and CR4 guest/host masks own every bit VMX operation fixes (CR0.NE, CR4.VMXE, and bits
//!   the CPU cannot set); the read shadows show the guest the values it set
//!   ([`guest_cr_write`] emulates a guest write to an owned bit).

use super::caps::{
    CR0_PE, CR0_PG, Control, ControlError, VmxCapabilities, entry, exit, pin, proc, proc2,
};
use super::fields::VmcsField::*;
use super::vmcs::{Segment, SegmentState, VmcsState, access_rights as ar};
use crate::exit_handler::INTERCEPTED_EXCEPTIONS;
use slipway_protocol::v1::VcpuEntry;

/// The control values for this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxControls {
    /// Pin-based controls.
    pub pin: u32,
    /// Primary processor-based controls.
    pub primary: u32,
    /// Secondary processor-based controls.
    pub secondary: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls without "IA-32e mode guest" (set per vCPU entry mode).
    pub entry: u32,
}

impl VmxControls {
    /// The policy above, or the first control bit this CPU cannot provide.
    pub fn for_cpu(caps: &VmxCapabilities) -> Result<VmxControls, ControlError> {
        Ok(VmxControls {
            pin: caps.control_value(
                Control::PinBased,
                pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING,
                pin::VIRTUAL_NMIS,
                0,
            )?,
            primary: caps.control_value(
                Control::PrimaryProc,
                proc::HLT_EXITING
                    | proc::USE_IO_BITMAPS
                    | proc::USE_MSR_BITMAPS
                    | proc::MWAIT_EXITING
                    | proc::MONITOR_EXITING
                    | proc::ACTIVATE_SECONDARY_CONTROLS,
                0,
                proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING | proc::UNCONDITIONAL_IO_EXITING,
            )?,
            secondary: caps.control_value(
                Control::SecondaryProc,
                proc2::ENABLE_EPT
                    | proc2::ENABLE_VPID
                    | proc2::UNRESTRICTED_GUEST
                    | proc2::WBINVD_EXITING,
                proc2::ENABLE_RDTSCP | proc2::ENABLE_INVPCID,
                0,
            )?,
            exit: caps.control_value(
                Control::Exit,
                exit::HOST_ADDRESS_SPACE_SIZE
                    | exit::SAVE_DEBUG_CONTROLS
                    | exit::SAVE_PAT
                    | exit::LOAD_PAT
                    | exit::SAVE_EFER
                    | exit::LOAD_EFER,
                0,
                exit::ACK_INTERRUPT_ON_EXIT,
            )?,
            entry: caps.control_value(
                Control::Entry,
                entry::LOAD_DEBUG_CONTROLS | entry::LOAD_PAT | entry::LOAD_EFER,
                0,
                entry::IA32E_MODE_GUEST | entry::ENTRY_TO_SMM | entry::DEACTIVATE_DUAL_MONITOR,
            )?,
        })
    }
}

/// The hypervisor's own state, loaded on every VM exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// CR0 (must satisfy the VMX fixed bits: PE, NE, PG; CD and NW clear).
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (VMXE and PAE set).
    pub cr4: u64,
    /// Code segment selector.
    pub cs: u16,
    /// Data segment selector (SS, DS, ES).
    pub ds: u16,
    /// Task register selector.
    pub tr: u16,
    /// TR base.
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// FS base.
    pub fs_base: u64,
    /// GS base (the per-CPU block).
    pub gs_base: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// Stack pointer on exit.
    pub rsp: u64,
    /// Exit handler address.
    pub rip: u64,
}

/// Per-vCPU structures the backend owns (physical addresses) and identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuResources {
    /// EPT pointer ([`super::ept::ept_pointer`]).
    pub eptp: u64,
    /// VPID (never 0).
    pub vpid: u16,
    /// I/O bitmap A (ports 0-0x7fff), all ones.
    pub io_bitmap_a: u64,
    /// I/O bitmap B (ports 0x8000-0xffff), all ones.
    pub io_bitmap_b: u64,
    /// MSR bitmaps, all ones.
    pub msr_bitmap: u64,
}

/// IA32_PAT after reset (WB, WT, UC-, UC, twice), what a guest starts with.
pub const RESET_PAT: u64 = 0x0007_0406_0007_0406;
/// DR7 after reset.
pub const RESET_DR7: u64 = 0x400;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// The CR0 bits the host owns: those VMX operation fixes (except PE and PG, which unrestricted
/// guest leaves to the guest).
pub fn cr0_host_owned(caps: &VmxCapabilities) -> u64 {
    (caps.cr0_fixed0 | !caps.cr0_fixed1) & !(CR0_PE | CR0_PG)
}

/// The CR4 bits the host owns: those VMX operation fixes (VMXE, and bits the CPU cannot set).
pub fn cr4_host_owned(caps: &VmxCapabilities) -> u64 {
    caps.cr4_fixed0 | !caps.cr4_fixed1
}

/// The value a control register really holds for a guest that believes it holds `guest`: the
/// host-owned bits forced to what VMX operation requires.
fn real_cr(guest: u64, fixed0: u64, fixed1: u64) -> u64 {
    (guest | fixed0) & fixed1
}

/// The initial VMCS of a vCPU entering as `vcpu_entry`.
pub fn initial_vmcs(
    caps: &VmxCapabilities,
    controls: &VmxControls,
    host: &HostState,
    resources: &VcpuResources,
    vcpu_entry: VcpuEntry,
) -> VmcsState {
    let mut s = VmcsState::new();
    let long_mode = matches!(vcpu_entry, VcpuEntry::Long64 { .. });

    // Controls.
    s.set(PinBasedControls, controls.pin.into());
    s.set(PrimaryProcControls, controls.primary.into());
    s.set(SecondaryProcControls, controls.secondary.into());
    s.set(ExitControls, controls.exit.into());
    let ia32e = if long_mode {
        entry::IA32E_MODE_GUEST
    } else {
        0
    };
    s.set(EntryControls, (controls.entry | ia32e).into());
    s.set(ExceptionBitmap, INTERCEPTED_EXCEPTIONS.into());
    s.set(PageFaultErrorCodeMask, 0);
    s.set(PageFaultErrorCodeMatch, 0);
    s.set(Cr3TargetCount, 0);
    s.set(ExitMsrStoreCount, 0);
    s.set(ExitMsrLoadCount, 0);
    s.set(EntryMsrLoadCount, 0);
    s.set(EntryInterruptionInfo, 0);
    s.set(IoBitmapA, resources.io_bitmap_a);
    s.set(IoBitmapB, resources.io_bitmap_b);
    s.set(MsrBitmap, resources.msr_bitmap);
    s.set(EptPointer, resources.eptp);
    s.set(Vpid, resources.vpid.into());
    s.set(TscOffset, 0);
    s.set(Cr0GuestHostMask, cr0_host_owned(caps));
    s.set(Cr4GuestHostMask, cr4_host_owned(caps));

    // Host state.
    s.set(HostCr0, host.cr0);
    s.set(HostCr3, host.cr3);
    s.set(HostCr4, host.cr4);
    s.set(HostCsSelector, host.cs.into());
    for field in [HostSsSelector, HostDsSelector, HostEsSelector] {
        s.set(field, host.ds.into());
    }
    s.set(HostFsSelector, 0);
    s.set(HostGsSelector, 0);
    s.set(HostTrSelector, host.tr.into());
    s.set(HostFsBase, host.fs_base);
    s.set(HostGsBase, host.gs_base);
    s.set(HostTrBase, host.tr_base);
    s.set(HostGdtrBase, host.gdtr_base);
    s.set(HostIdtrBase, host.idtr_base);
    s.set(HostSysenterCs, 0);
    s.set(HostSysenterEsp, 0);
    s.set(HostSysenterEip, 0);
    s.set(HostIa32Efer, host.efer);
    s.set(HostIa32Pat, host.pat);
    s.set(HostRsp, host.rsp);
    s.set(HostRip, host.rip);

    // Guest state: the same flat segments as the SVM backend.
    let (guest_cr0, cr3, guest_cr4, efer, rip, rsp, code, tss) = match vcpu_entry {
        // PE | ET; no paging. A vCPU waiting for a startup IPI is never entered on VMX (the
        // backend refuses the real-mode start): its VMCS holds this state at 0.
        VcpuEntry::WaitForStartupIpi => (
            0x11,
            0,
            0,
            0,
            0,
            0,
            0xb | ar::S | ar::P | ar::DB | ar::G,
            0xb | ar::P,
        ),
        VcpuEntry::Pvh32 { entry_eip, .. } => (
            0x11,
            0,
            0,
            0,
            u64::from(entry_eip),
            0,
            0xb | ar::S | ar::P | ar::DB | ar::G,
            0xb | ar::P, // 32-bit busy TSS
        ),
        // PG | NE | ET | MP | PE; PAE; LME | LMA | NXE.
        VcpuEntry::Long64 { rip, rsp, cr3, .. } => (
            0x8000_0033,
            cr3,
            0x20,
            EFER_LME | EFER_LMA | EFER_NXE,
            rip,
            rsp,
            ar::CODE64,
            ar::TSS64_BUSY,
        ),
    };
    let unrestricted_fixed0 = caps.cr0_fixed0 & !(CR0_PE | CR0_PG);
    s.set(
        GuestCr0,
        real_cr(guest_cr0, unrestricted_fixed0, caps.cr0_fixed1),
    );
    s.set(Cr0ReadShadow, guest_cr0);
    s.set(GuestCr3, cr3);
    s.set(
        GuestCr4,
        real_cr(guest_cr4, caps.cr4_fixed0, caps.cr4_fixed1),
    );
    s.set(Cr4ReadShadow, guest_cr4);
    s.set(GuestIa32Efer, efer);
    s.set(GuestIa32Pat, RESET_PAT);
    s.set(GuestIa32Debugctl, 0);
    s.set(GuestDr7, RESET_DR7);
    s.set_guest_segment(
        Segment::Cs,
        SegmentState {
            selector: 0x08,
            base: 0,
            limit: 0xffff_ffff,
            access_rights: code,
        },
    );
    for segment in [
        Segment::Ss,
        Segment::Ds,
        Segment::Es,
        Segment::Fs,
        Segment::Gs,
    ] {
        s.set_guest_segment(
            segment,
            SegmentState {
                selector: 0x10,
                base: 0,
                limit: 0xffff_ffff,
                access_rights: ar::DATA,
            },
        );
    }
    s.set_guest_segment(
        Segment::Tr,
        SegmentState {
            selector: 0x18,
            base: 0,
            limit: 0x67,
            access_rights: tss,
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
    s.set(GuestGdtrBase, 0);
    s.set(GuestGdtrLimit, 0);
    s.set(GuestIdtrBase, 0);
    s.set(GuestIdtrLimit, 0);
    s.set(GuestRip, rip);
    s.set(GuestRsp, rsp);
    s.set(GuestRflags, 0x2);
    s.set(GuestSysenterCs, 0);
    s.set(GuestSysenterEsp, 0);
    s.set(GuestSysenterEip, 0);
    s.set(GuestActivityState, 0);
    s.set(GuestInterruptibility, 0);
    s.set(GuestPendingDebugExceptions, 0);
    s.set(VmcsLinkPointer, u64::MAX);
    s
}

/// A control register a guest write may target through a CR-access exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestCr {
    /// CR0.
    Cr0,
    /// CR4.
    Cr4,
}

/// The outcome of a guest's `mov cr0/cr4` that exited because it touched a host-owned bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrUpdate {
    /// The new GUEST_CR0 / GUEST_CR4 (host-owned bits forced).
    pub real: u64,
    /// The new read shadow (what the guest reads back).
    pub shadow: u64,
}

/// Why a guest's control-register write is refused (the backend injects #GP(0), as the
/// processor would).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrWriteRefused {
    /// A bit this processor cannot set (reserved, or a feature it lacks).
    UnsupportedBit(u32),
    /// CR0.PG without CR0.PE, or CR0.NW without CR0.CD.
    InvalidCombination,
}

/// Emulates `mov crN, value` for a guest whose write exited: the guest sees `value` (read
/// shadow), the processor runs with the host-owned bits forced. Bits the CPU cannot set and
/// architecturally invalid CR0 combinations are refused. Checks that need more guest state
/// (CR4.PCIDE with CR3[11:0], clearing CR4.PAE or CR0.PG in long mode, CR0.PG with EFER.LME
/// and CR4.PAE clear) stay with the caller, which has that state.
pub fn guest_cr_write(
    caps: &VmxCapabilities,
    cr: GuestCr,
    value: u64,
) -> Result<CrUpdate, CrWriteRefused> {
    let (fixed0, fixed1) = match cr {
        GuestCr::Cr0 => (caps.cr0_fixed0 & !(CR0_PE | CR0_PG), caps.cr0_fixed1),
        GuestCr::Cr4 => (caps.cr4_fixed0, caps.cr4_fixed1),
    };
    // What the guest may set: bits the CPU allows, except that VMXE (fixed to 1 here) is not
    // the guest's to enable: it would claim VMX the guest cannot use.
    let settable = fixed1 & !(if cr == GuestCr::Cr4 { fixed0 } else { 0 });
    let (cd, nw) = (1u64 << 30, 1u64 << 29);
    let unsupported = value & !settable;
    if unsupported != 0 {
        return Err(CrWriteRefused::UnsupportedBit(unsupported.trailing_zeros()));
    }
    if cr == GuestCr::Cr0
        && ((value & CR0_PG != 0 && value & CR0_PE == 0) || (value & nw != 0 && value & cd == 0))
    {
        return Err(CrWriteRefused::InvalidCombination);
    }
    Ok(CrUpdate {
        real: real_cr(value, fixed0, fixed1),
        shadow: value,
    })
}
