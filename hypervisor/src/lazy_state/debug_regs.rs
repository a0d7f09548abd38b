//! Guest debug-address registers DR0-DR3.
//!
//! VMRUN switches DR6 and DR7 (they are in the VMCB's save area) but not DR0-DR3, and guests
//! read and write those directly (DR accesses are not intercepted): without switching, one
//! domain's breakpoint addresses would be visible to, and armed for, the next vCPU on that
//! physical CPU. Each vCPU therefore owns a [`DebugRegs`] image (zero at creation), swapped
//! together with its x87/SSE state whenever a physical CPU changes vCPU (`Hv::switch_lazy_state`).
//! The hypervisor never uses DR0-DR3 itself (its DR7, restored at every #VMEXIT, arms nothing).

/// DR0-DR3 of one vCPU while it is not live on a physical CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugRegs(pub [u64; 4]);

/// Reads this CPU's DR0-DR3.
pub fn save() -> DebugRegs {
    let (mut d0, mut d1, mut d2, mut d3): (u64, u64, u64, u64);
    // SAFETY: reading debug registers at CPL 0 has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {0}, dr0",
            "mov {1}, dr1",
            "mov {2}, dr2",
            "mov {3}, dr3",
            out(reg) d0, out(reg) d1, out(reg) d2, out(reg) d3,
            options(nomem, nostack, preserves_flags),
        );
    }
    DebugRegs([d0, d1, d2, d3])
}

/// Loads this CPU's DR0-DR3.
pub fn load(regs: &DebugRegs) {
    let [d0, d1, d2, d3] = regs.0;
    // SAFETY: DR0-DR3 hold addresses only; the hypervisor's DR7 (0x400 after every #VMEXIT)
    // enables no breakpoint, so loading any value has no effect on hypervisor code.
    unsafe {
        core::arch::asm!(
            "mov dr0, {0}",
            "mov dr1, {1}",
            "mov dr2, {2}",
            "mov dr3, {3}",
            in(reg) d0, in(reg) d1, in(reg) d2, in(reg) d3,
            options(nomem, nostack, preserves_flags),
        );
    }
}
