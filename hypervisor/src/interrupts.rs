//! Interrupts taken by the hypervisor itself (vectors 32-255). The hypervisor runs with
//! interrupts disabled except for a short window after each #VMEXIT, where a pending physical
//! interrupt (the scheduler tick) is delivered here.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};

/// Timer ticks seen, per CPU.
pub static TICKS: [AtomicU64; crate::cpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::cpu::MAX_CPUS];

/// Handles one interrupt vector.
pub fn handle(vector: u8) {
    match vector {
        TIMER_VECTOR => {
            TICKS[crate::percpu::current_cpu_index()].fetch_add(1, Ordering::Relaxed);
            crate::lapic::end_of_interrupt();
        }
        SPURIOUS_VECTOR => {}
        other => {
            // Legacy PIC vectors arrive here only if masking failed; acknowledge at the APIC
            // and report once per vector.
            crate::hvprintln!("unexpected interrupt vector {other:#x}");
            crate::lapic::end_of_interrupt();
        }
    }
}
