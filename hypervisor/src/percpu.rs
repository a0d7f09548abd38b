//! Which physical CPU is running: the index is found from the initial APIC ID (CPUID leaf 1),
//! which needs no per-CPU register set up first, so even an early exception can name its CPU.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::cpu::MAX_CPUS;

/// Each registered CPU's APIC ID plus one; 0 = no CPU (zero-initialised, so in .bss: the
/// measured .data must not change before the post-launch stage has checked the launch).
static APIC_IDS_PLUS_ONE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// The initial APIC ID of the calling CPU.
pub fn apic_id() -> u32 {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    leaf1.ebx >> 24
}

/// Records that CPU `index` has APIC ID `apic_id`.
pub fn register(index: usize, apic_id: u32) {
    APIC_IDS_PLUS_ONE[index].store(apic_id.wrapping_add(1), Ordering::SeqCst);
}

/// Index of the calling CPU (0 = boot CPU; also 0 before registration).
pub fn current_cpu_index() -> usize {
    // Initial APIC IDs are 8 bits (CPUID leaf 1), so the plus-one never wraps to 0.
    let id = apic_id() + 1;
    APIC_IDS_PLUS_ONE
        .iter()
        .position(|slot| slot.load(Ordering::Relaxed) == id)
        .unwrap_or(0)
}
