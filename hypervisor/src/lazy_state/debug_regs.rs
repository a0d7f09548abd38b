//! Guest debug-address registers DR0-DR3, and DR6.
//!
//! VMRUN switches DR6 and DR7 (they are in the VMCB's save area) but not DR0-DR3; VMX switches
//! DR7 (the VMCS's guest DR7) but neither DR0-DR3 nor DR6. Guests
//! read and write those directly (DR accesses are not intercepted): without switching, one
//! domain's breakpoint addresses would be visible to, and armed for, the next vCPU on that
//! physical CPU. Each vCPU therefore owns a [`DebugRegs`] image (zero at creation), swapped
//! together with its x87/SSE state whenever a physical CPU changes vCPU (`Vcpus::switch_lazy_state` in `vm.rs`).
//! The hypervisor never uses DR0-DR3 itself (its DR7, restored at every #VMEXIT, arms nothing).

/// DR0-DR3 and DR6 of one vCPU while they are not live on a physical CPU (DR6 switched on both
/// backends: under SVM the VMCB's copy is what the guest sees, so the live one is unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegs {
    /// DR0-DR3.
    pub addresses: [u64; 4],
    /// DR6.
    pub status: u64,
}

/// DR6 after reset.
const DR6_RESET: u64 = 0xffff_0ff0;

impl Default for DebugRegs {
    fn default() -> Self {
        DebugRegs {
            addresses: [0; 4],
            status: DR6_RESET,
        }
    }
}

/// Reads this CPU's DR0-DR3 and DR6.
pub fn save() -> DebugRegs {
    let (mut d0, mut d1, mut d2, mut d3, mut d6): (u64, u64, u64, u64, u64);
    // SAFETY: reading debug registers at CPL 0 has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {0}, dr0",
            "mov {1}, dr1",
            "mov {2}, dr2",
            "mov {3}, dr3",
            "mov {4}, dr6",
            out(reg) d0, out(reg) d1, out(reg) d2, out(reg) d3, out(reg) d6,
            options(nomem, nostack, preserves_flags),
        );
    }
    DebugRegs {
        addresses: [d0, d1, d2, d3],
        status: d6,
    }
}

/// Loads this CPU's DR0-DR3 and DR6.
pub fn load(regs: &DebugRegs) {
    let [d0, d1, d2, d3] = regs.addresses;
    // Bits 63:32 of DR6 are reserved (a write of 1 faults).
    let d6 = regs.status & 0xffff_ffff;
    // SAFETY: DR0-DR3 hold addresses only and DR6 status bits; the hypervisor's DR7 (0x400
    // after every exit) enables no breakpoint, so loading any value has no effect on hypervisor
    // code.
    unsafe {
        core::arch::asm!(
            "mov dr0, {0}",
            "mov dr1, {1}",
            "mov dr2, {2}",
            "mov dr3, {3}",
            "mov dr6, {4}",
            in(reg) d0, in(reg) d1, in(reg) d2, in(reg) d3, in(reg) d6,
            options(nomem, nostack, preserves_flags),
        );
    }
}
