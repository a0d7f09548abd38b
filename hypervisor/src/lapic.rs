//! Local APIC (xAPIC, MMIO at the base from IA32_APIC_BASE) and the legacy PICs.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use crate::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};

/// Default xAPIC MMIO base.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;

static BASE: AtomicU64 = AtomicU64::new(DEFAULT_BASE);

const REG_EOI: u64 = 0xb0;
const REG_SPURIOUS: u64 = 0xf0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_LINT0: u64 = 0x350;
const REG_LVT_LINT1: u64 = 0x360;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3e0;

fn read(reg: u64) -> u32 {
    // SAFETY: the APIC page is mapped uncached in the hypervisor's tables; registers are
    // 32-bit aligned and reads have no side effects for the registers used here.
    unsafe { ((BASE.load(Ordering::Relaxed) + reg) as *const u32).read_volatile() }
}

fn write(reg: u64, value: u32) {
    // SAFETY: as in `read`; the APIC belongs to the hypervisor, no domain can reach it.
    unsafe { ((BASE.load(Ordering::Relaxed) + reg) as *mut u32).write_volatile(value) }
}

/// Masks every line of both 8259 PICs: SeaBIOS leaves the PIT on vector 8 unmasked, which
/// would look like a double fault once interrupts are enabled.
pub fn mask_legacy_pics() {
    // SAFETY: the PIC data ports belong to the hypervisor; writing 0xff masks every line.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
}

/// Enables this CPU's local APIC with the spurious vector, LINT0/LINT1 masked.
pub fn init_this_cpu() {
    // SAFETY: reading IA32_APIC_BASE has no side effects.
    let base_msr = unsafe { x86_64::registers::model_specific::Msr::new(0x1b).read() };
    let base = base_msr & 0x000f_ffff_ffff_f000;
    if base != BASE.load(Ordering::Relaxed) {
        panic!(
            "local APIC at {base:#x}, expected {DEFAULT_BASE:#x} (only the default base is mapped)"
        );
    }
    if base_msr & (1 << 11) == 0 {
        // SAFETY: setting the global enable bit of this CPU's own APIC, base unchanged.
        unsafe { x86_64::registers::model_specific::Msr::new(0x1b).write(base_msr | (1 << 11)) };
    }
    write(REG_SPURIOUS, 0x100 | SPURIOUS_VECTOR as u32);
    write(REG_LVT_LINT0, 1 << 16);
    write(REG_LVT_LINT1, 1 << 16);
    write(REG_LVT_TIMER, 1 << 16);
}

/// Signals end of interrupt.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}

/// Measures the APIC timer rate (divide by 16) against the calibrated TSC: ticks per ms.
pub fn calibrate_timer() -> u32 {
    write(REG_TIMER_DIVIDE, 0x3);
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_TIMER_INITIAL, u32::MAX);
    let start = crate::tsc::now();
    let window = crate::tsc::hz() / 100; // 10 ms
    while crate::tsc::now() - start < window {
        core::hint::spin_loop();
    }
    let elapsed = u32::MAX - read(REG_TIMER_CURRENT);
    write(REG_TIMER_INITIAL, 0);
    (elapsed / 10).max(1)
}

/// Starts the periodic scheduler tick.
pub fn start_periodic_timer(ticks_per_ms: u32, period_ms: u32) {
    write(REG_TIMER_DIVIDE, 0x3);
    write(REG_LVT_TIMER, (1 << 17) | TIMER_VECTOR as u32);
    write(REG_TIMER_INITIAL, ticks_per_ms.saturating_mul(period_ms));
}

/// Stops the timer.
pub fn stop_timer() {
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_TIMER_INITIAL, 0);
}

fn wait_icr_idle() {
    for _ in 0..1_000_000 {
        if read(REG_ICR_LOW) & (1 << 12) == 0 {
            return;
        }
        core::hint::spin_loop();
    }
    panic!("local APIC never finished sending an IPI");
}

/// Sends an NMI to the CPU with local APIC ID `apic_id` (physical destination; the self
/// shorthand is not defined for NMIs).
pub fn send_nmi(apic_id: u32) {
    write(REG_ICR_HIGH, apic_id << 24);
    write(REG_ICR_LOW, 0x4400); // NMI, level assert
    wait_icr_idle();
}

/// Sends INIT (assert), then the two STARTUP IPIs with the trampoline page `vector`.
pub fn send_init_sipi_sipi(apic_id: u32, vector: u8) {
    let delay_us = |us: u64| {
        let start = crate::tsc::now();
        let ticks = crate::tsc::hz() / 1_000_000 * us;
        while crate::tsc::now() - start < ticks {
            core::hint::spin_loop();
        }
    };
    write(REG_ICR_HIGH, apic_id << 24);
    write(REG_ICR_LOW, 0x4500); // INIT, level assert
    wait_icr_idle();
    delay_us(10_000);
    for _ in 0..2 {
        write(REG_ICR_HIGH, apic_id << 24);
        write(REG_ICR_LOW, 0x4600 | vector as u32); // STARTUP
        wait_icr_idle();
        delay_us(200);
    }
}
