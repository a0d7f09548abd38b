//! CPUID as guests see it. Pure logic requested from `slipway-hv-core` (R2.3); replaced by its
//! `exit_handler::filter_cpuid` once that is committed.

/// CPUID as a guest sees it: SVM and SKINIT hidden, no SVM leaf, hypervisor bit set.
/// Requested from `slipway-hv-core` (R2.3).
pub fn filter_cpuid(leaf: u32, _subleaf: u32, mut regs: [u32; 4]) -> [u32; 4] {
    match leaf {
        1 => {
            regs[2] &= !(1 << 21); // x2APIC: no APIC is given to guests
            regs[2] &= !(1 << 3); // MONITOR/MWAIT (intercepted and forbidden)
            regs[2] |= 1 << 31; // running under a hypervisor
        }
        0x8000_0001 => {
            regs[2] &= !(1 << 2); // SVM
            regs[2] &= !(1 << 12); // SKINIT
        }
        0x8000_000a => regs = [0; 4],
        _ => {}
    }
    regs
}
