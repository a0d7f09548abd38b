//! The `lapic` target: a guest's register traffic to its emulated local APIC, interleaved with
//! interrupts, acknowledgements, timer polls, INIT and SIPI, and time passing. Input: a stream of
//! 6-byte steps `[kind, a, b, c, d, e]`. Under test: `slipway_hv_core::lapic::LocalApic`.
//!
//! Besides "no panic": no vector below 16 is ever requested, in service or sent as a fixed IPI;
//! the PPR is the TPR or the in-service class, whichever is higher; a presented vector is above
//! the PPR's class and only while software-enabled; LVTs stay masked while disabled; the timer's
//! current count never exceeds its initial count; after a poll the next deadline lies ahead; an
//! acknowledged vector is in service; the version register never changes.

use slipway_hv_core::lapic::{
    FixedClock, IpiKind, IpiRequest, LVT_MASKED, LocalApic, VERSION_VALUE, reg,
};

/// Runs one input.
pub fn run(data: &[u8]) {
    let ratio = u64::from(data.first().copied().unwrap_or(1)).max(1);
    let mut apic = LocalApic::new(0, ratio, true);
    let mut now = 0u64;
    for step in data.get(1..).unwrap_or(&[]).chunks_exact(6) {
        let value = u32::from_le_bytes([step[2], step[3], step[4], step[5]]);
        let clock = FixedClock(now);
        match step[0] % 9 {
            // Register offsets: the 64 aligned registers mostly, any offset sometimes.
            0 => {
                apic.read(register(step[1]), &clock);
            }
            1 => {
                apic.read(u64::from(value), &clock);
            }
            2 | 3 => {
                let offset = if step[0] % 9 == 2 {
                    register(step[1])
                } else {
                    u64::from(step[1]) << 4 | u64::from(step[2] & 0xF)
                };
                if let Some(IpiRequest {
                    kind: IpiKind::Fixed { vector } | IpiKind::LowestPriority { vector },
                    ..
                }) = apic.write(offset, value, &clock)
                {
                    assert!(vector >= 16, "fixed IPI with vector {vector} sent");
                }
            }
            4 => {
                apic.accept_interrupt(step[1], step[2] & 1 != 0);
            }
            5 => {
                let pending = apic.pending_vector();
                let acked = apic.acknowledge();
                assert_eq!(pending, acked);
                if let Some(vector) = acked {
                    assert!(apic.isr().contains(vector));
                }
            }
            6 => {
                apic.poll_timer(&clock);
                if let Some(deadline) = apic.next_timer_deadline() {
                    assert!(deadline > now, "deadline {deadline} not after {now}");
                }
            }
            7 => {
                if step[1] & 1 == 0 {
                    apic.receive_init();
                } else {
                    apic.receive_startup(step[2]);
                }
            }
            _ => now = now.saturating_add(u64::from(value)),
        }
        check(&mut apic, now);
    }
}

/// One of the 64 16-byte-aligned offsets of the page.
fn register(index: u8) -> u64 {
    u64::from(index & 0x3F) << 4
}

fn check(apic: &mut LocalApic, now: u64) {
    let clock = FixedClock(now);
    for low in 0..16u8 {
        assert!(!apic.irr().contains(low) && !apic.isr().contains(low));
    }
    let tpr = apic.read(reg::TPR, &clock);
    let isr_class = u32::from(apic.isr().highest().unwrap_or(0)) & 0xF0;
    let ppr = apic.read(reg::PPR, &clock);
    assert!(ppr == tpr || ppr == isr_class);
    assert!(ppr >> 4 >= (tpr >> 4).max(isr_class >> 4));
    if let Some(vector) = apic.pending_vector() {
        assert!(u32::from(vector >> 4) > ppr >> 4);
        assert!(apic.software_enabled());
    }
    if !apic.software_enabled() {
        for lvt in [
            reg::LVT_TIMER,
            reg::LVT_THERMAL,
            reg::LVT_PERF,
            reg::LVT_LINT0,
            reg::LVT_LINT1,
            reg::LVT_ERROR,
        ] {
            assert_ne!(apic.read(lvt, &clock) & LVT_MASKED, 0);
        }
    }
    assert!(apic.read(reg::TIMER_CURRENT, &clock) <= apic.read(reg::TIMER_INITIAL, &clock));
    assert_eq!(apic.read(reg::VERSION, &clock), VERSION_VALUE);
}
