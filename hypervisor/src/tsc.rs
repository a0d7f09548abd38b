//! Time: the TSC, calibrated against the PIT, measured from the hypervisor's first instruction.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

const PIT_HZ: u64 = 1_193_182;
/// PIT counts for the calibration window (about 10 ms: 0.01% resolution at GHz TSC rates).
const CALIBRATION_COUNTS: u64 = 11_932;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    static BOOT_ENTRY_TSC: u64;
}

/// Reads the time-stamp counter.
pub fn now() -> u64 {
    // SAFETY: RDTSC has no side effects and is available on every x86-64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The TSC value the 32-bit entry stub read first.
pub fn entry() -> u64 {
    // SAFETY: written once by the entry stub before Rust runs; read-only afterwards.
    unsafe { core::ptr::addr_of!(BOOT_ENTRY_TSC).read_volatile() }
}

/// Measures the TSC frequency with PIT channel 2 (mode 0, gate through port 0x61).
pub fn calibrate() -> u64 {
    // SAFETY: the PIT and port 0x61 belong to the hypervisor (no domain gets port I/O);
    // channel 2 only drives the PC speaker gate, which stays off (bit 1 cleared).
    let hz = unsafe {
        let mut ctrl = Port::<u8>::new(0x61);
        let mut command = Port::<u8>::new(0x43);
        let mut channel2 = Port::<u8>::new(0x42);
        let gate = (ctrl.read() & !0x02) | 0x01;
        ctrl.write(gate);
        command.write(0xb0); // channel 2, lobyte/hibyte, mode 0, binary
        channel2.write((CALIBRATION_COUNTS & 0xff) as u8);
        channel2.write((CALIBRATION_COUNTS >> 8) as u8);
        let start = now();
        let mut spins = 0u64;
        while ctrl.read() & 0x20 == 0 {
            spins += 1;
            if spins > 200_000_000 {
                panic!("PIT channel 2 never reached terminal count: cannot calibrate the TSC");
            }
        }
        let end = now();
        (end - start) * PIT_HZ / CALIBRATION_COUNTS
    };
    if hz == 0 {
        panic!("TSC does not advance: cannot time the boot");
    }
    TSC_HZ.store(hz, Ordering::SeqCst);
    hz
}

/// Converts a TSC delta to microseconds.
pub fn ticks_to_us(ticks: u64) -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed).max(1);
    ((ticks as u128) * 1_000_000 / hz as u128) as u64
}

/// Microseconds since the hypervisor's first instruction.
pub fn since_entry_us() -> u64 {
    ticks_to_us(now().saturating_sub(entry()))
}

/// TSC ticks per second (after calibration).
pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Prints `slipway: milestone <name> at <us> us`.
pub fn milestone(name: core::fmt::Arguments<'_>) {
    crate::hvprintln!("milestone {name} at {} us", since_entry_us());
}
