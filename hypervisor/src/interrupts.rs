//! Interrupts taken by the hypervisor itself (the NMI and vectors 32-255). The hypervisor runs
//! with interrupts disabled except for a short window after each #VMEXIT, where a pending
//! physical interrupt (the scheduler tick) is delivered here.
//!
//! NMIs: a host NMI that arrives while a guest runs causes an NMI #VMEXIT and stays pending
//! while GIF is clear; the STGI after the exit delivers it here (APM vol. 2, 15.17), as it does
//! any NMI taken in hypervisor code. Nothing in Slipway raises NMIs for itself yet, so the
//! handler counts them and returns (IRETQ unblocks further NMIs). It runs on its own IST stack,
//! may interrupt any hypervisor code, and therefore takes no lock and prints nothing; the count
//! is printed at the end of the run.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};

/// Timer ticks seen, per CPU.
pub static TICKS: [AtomicU64; crate::cpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::cpu::MAX_CPUS];

/// The NMI's vector.
pub const NMI_VECTOR: u8 = 2;

/// Host NMIs taken, per CPU.
pub static NMIS: [AtomicU64; crate::cpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::cpu::MAX_CPUS];

/// Handles one interrupt vector.
pub fn handle(vector: u8) {
    match vector {
        NMI_VECTOR => {
            NMIS[crate::percpu::current_cpu_index()].fetch_add(1, Ordering::Relaxed);
        }
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

/// Host NMIs taken on every CPU so far.
pub fn nmi_total() -> u64 {
    NMIS.iter().map(|n| n.load(Ordering::Relaxed)).sum()
}
