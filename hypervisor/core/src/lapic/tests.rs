extern crate std;

use super::*;
use proptest::prelude::*;
use std::vec::Vec;

const T: FixedClock = FixedClock(1000);

/// A software-enabled BSP APIC (ID 0) whose timer counts once per TSC tick before the divider.
fn enabled() -> LocalApic {
    let mut apic = LocalApic::new(0, 1, true);
    apic.write(reg::SVR, SVR_ENABLE | 0xFF, &T);
    apic
}

#[test]
fn power_up_state_reads_as_the_sdm_says() {
    let mut apic = LocalApic::new(3, 1, true);
    assert_eq!(apic.read(reg::ID, &T), 3 << 24);
    assert_eq!(apic.read(reg::VERSION, &T), 0x0005_0014);
    assert_eq!(apic.read(reg::SVR, &T), 0xFF);
    assert_eq!(apic.read(reg::DFR, &T), 0xFFFF_FFFF);
    for lvt in [
        reg::LVT_TIMER,
        reg::LVT_THERMAL,
        reg::LVT_PERF,
        reg::LVT_LINT0,
        reg::LVT_LINT1,
        reg::LVT_ERROR,
    ] {
        assert_eq!(apic.read(lvt, &T), LVT_MASKED, "LVT {lvt:#x}");
    }
    assert!(!apic.software_enabled());
    assert_eq!(apic.run_state(), RunState::Running);
    assert_eq!(
        LocalApic::new(1, 1, false).run_state(),
        RunState::WaitForSipi
    );
}

#[test]
fn unknown_misaligned_and_out_of_page_offsets_read_zero_and_ignore_writes() {
    let mut apic = enabled();
    let before = std::format!("{apic:?}");
    for offset in [
        0x000,
        0x010,
        reg::APR,
        0x0C0,
        0x2F0,
        0x3A0,
        0x3F0,
        0x400,
        0xFF0,
        0x1000,
        u64::MAX,
        0x081,
        0x0F4,
    ] {
        assert_eq!(apic.write(offset, 0xFFFF_FFFF, &T), None);
        assert_eq!(apic.read(offset, &T), 0, "offset {offset:#x}");
    }
    for read_only in [
        reg::ID,
        reg::VERSION,
        reg::PPR,
        reg::ISR,
        reg::TMR + 0x10,
        reg::IRR + 0x70,
        reg::TIMER_CURRENT,
    ] {
        apic.write(read_only, 0xFFFF_FFFF, &T);
    }
    assert_eq!(
        std::format!("{apic:?}"),
        before,
        "no write changed any state"
    );
}

#[test]
fn writable_bits_are_kept_and_reserved_bits_dropped() {
    let mut apic = enabled();
    let cases = [
        (reg::TPR, 0xFFFF_FFFF, 0xFF),
        (reg::LDR, 0xFFFF_FFFF, 0xFF00_0000),
        (reg::DFR, 0x0000_0000, 0x0FFF_FFFF),
        (reg::SVR, 0xFFFF_FFFF, 0x3FF),
        (reg::ICR_HIGH, 0xFFFF_FFFF, 0xFF00_0000),
        (reg::LVT_TIMER, 0xFFFF_FFFF, 0x0003_00FF),
        (reg::LVT_LINT0, 0xFFFF_FFFF, 0x0001_A7FF),
        (reg::LVT_LINT1, 0xFFFF_FFFF, 0x0001_A7FF),
        (reg::LVT_ERROR, 0xFFFF_FFFF, 0x0001_00FF),
        (reg::LVT_THERMAL, 0xFFFF_FFFF, 0x0001_07FF),
        (reg::TIMER_DIVIDE, 0xFFFF_FFFF, 0xB),
    ];
    for (offset, write, read) in cases {
        apic.write(offset, write, &T);
        assert_eq!(apic.read(offset, &T), read, "register {offset:#x}");
    }
}

#[test]
fn clearing_the_software_enable_bit_masks_every_lvt_and_keeps_them_masked() {
    let mut apic = enabled();
    apic.write(reg::LVT_TIMER, 0x30, &T);
    apic.write(reg::LVT_LINT0, 0x700, &T);
    assert_eq!(apic.read(reg::LVT_TIMER, &T), 0x30);
    apic.write(reg::SVR, 0xFF, &T);
    assert_eq!(apic.read(reg::LVT_TIMER, &T), 0x30 | LVT_MASKED);
    assert_eq!(apic.read(reg::LVT_LINT0, &T), 0x700 | LVT_MASKED);
    apic.write(reg::LVT_TIMER, 0x31, &T);
    assert_eq!(
        apic.read(reg::LVT_TIMER, &T),
        0x31 | LVT_MASKED,
        "an LVT cannot be unmasked while disabled"
    );
    assert!(
        !apic.accept_interrupt(0x40, false),
        "disabled APIC drops fixed interrupts"
    );
}

#[test]
fn esr_reads_what_the_last_write_latched() {
    let mut apic = enabled();
    assert!(!apic.accept_interrupt(3, false));
    assert_eq!(apic.read(reg::ESR, &T), 0, "not latched before a write");
    apic.write(reg::ESR, 0, &T);
    assert_eq!(apic.read(reg::ESR, &T), ESR_RECEIVE_ILLEGAL_VECTOR);
    apic.write(reg::ESR, 0, &T);
    assert_eq!(
        apic.read(reg::ESR, &T),
        0,
        "the second write latches nothing new"
    );
    // A fixed IPI with an illegal vector is not sent and is a send error.
    assert_eq!(apic.write(reg::ICR_LOW, 0x0000_0005, &T), None);
    apic.write(reg::ESR, 0, &T);
    assert_eq!(apic.read(reg::ESR, &T), ESR_SEND_ILLEGAL_VECTOR);
}

#[test]
fn an_unmasked_error_lvt_raises_its_vector() {
    let mut apic = enabled();
    apic.write(reg::LVT_ERROR, 0xFE, &T);
    apic.accept_interrupt(7, false);
    assert!(apic.irr().contains(0xFE));
}

#[test]
fn priority_follows_irr_isr_and_tpr() {
    let mut apic = enabled();
    assert_eq!(apic.pending_vector(), None);
    apic.accept_interrupt(0x31, false);
    apic.accept_interrupt(0x52, true);
    assert!(apic.tmr().contains(0x52));
    assert_eq!(apic.pending_vector(), Some(0x52));
    assert_eq!(apic.acknowledge(), Some(0x52));
    assert_eq!(
        apic.read(reg::PPR, &T),
        0x50,
        "in-service class raises the PPR"
    );
    assert_eq!(apic.read(reg::ISR + 0x20, &T), 1 << (0x52 - 64));
    // 0x31's class (3) is below the in-service class (5): held.
    assert_eq!(apic.pending_vector(), None);
    assert_eq!(apic.acknowledge(), None);
    // A higher-class vector preempts.
    apic.accept_interrupt(0x61, false);
    assert_eq!(apic.acknowledge(), Some(0x61));
    assert_eq!(apic.read(reg::PPR, &T), 0x60);
    // EOI pops the highest in-service vector first.
    apic.write(reg::EOI, 0, &T);
    assert!(!apic.isr().contains(0x61) && apic.isr().contains(0x52));
    apic.write(reg::EOI, 0, &T);
    assert!(apic.isr().is_empty());
    assert_eq!(apic.read(reg::PPR, &T), 0);
    // TPR holds back classes at or below it.
    apic.write(reg::TPR, 0x35, &T);
    assert_eq!(apic.read(reg::PPR, &T), 0x35);
    assert_eq!(apic.pending_vector(), None);
    apic.write(reg::TPR, 0x20, &T);
    assert_eq!(apic.pending_vector(), Some(0x31));
    // An EOI with nothing in service changes nothing.
    apic.write(reg::EOI, 0, &T);
    assert!(apic.irr().contains(0x31));
    assert_eq!(apic.read(reg::IRR + 0x10, &T), 1 << (0x31 - 32));
}

#[test]
fn one_shot_timer_counts_down_fires_once_and_stops() {
    let mut apic = enabled();
    apic.write(reg::TIMER_DIVIDE, 0b1011, &T); // divide by 1
    apic.write(reg::LVT_TIMER, 0xEC, &T);
    apic.write(reg::TIMER_INITIAL, 1000, &FixedClock(10_000));
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(10_000)), 1000);
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(10_400)), 600);
    assert_eq!(apic.next_timer_deadline(), Some(11_000));
    assert!(!apic.poll_timer(&FixedClock(10_999)));
    assert_eq!(apic.pending_vector(), None);
    assert!(apic.poll_timer(&FixedClock(11_000)));
    assert_eq!(apic.pending_vector(), Some(0xEC));
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(11_000)), 0);
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(99_000)), 0);
    assert_eq!(apic.next_timer_deadline(), None);
    assert!(!apic.poll_timer(&FixedClock(u64::MAX)));
    // Writing 0 stops a running timer.
    apic.write(reg::TIMER_INITIAL, 50, &FixedClock(20_000));
    apic.write(reg::TIMER_INITIAL, 0, &FixedClock(20_010));
    assert_eq!(apic.next_timer_deadline(), None);
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(20_020)), 0);
}

#[test]
fn periodic_timer_reloads_and_coalesces_missed_periods() {
    let mut apic = LocalApic::new(0, 4, true); // 4 TSC ticks per timer tick
    apic.write(reg::SVR, SVR_ENABLE | 0xFF, &T);
    apic.write(reg::TIMER_DIVIDE, 0b0001, &T); // divide by 4: 16 TSC ticks per count
    apic.write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | 0xEF, &T);
    apic.write(reg::TIMER_INITIAL, 100, &FixedClock(0)); // period 1600 ticks
    assert_eq!(apic.next_timer_deadline(), Some(1600));
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(1599)), 1);
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(1600)), 100);
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(1616)), 99);
    assert!(apic.poll_timer(&FixedClock(1600)));
    assert_eq!(apic.next_timer_deadline(), Some(3200));
    assert_eq!(apic.acknowledge(), Some(0xEF));
    apic.write(reg::EOI, 0, &T);
    // Three periods pass without a poll: one interrupt, the next deadline on the grid.
    assert!(apic.poll_timer(&FixedClock(8000)));
    assert_eq!(apic.next_timer_deadline(), Some(9600));
    assert_eq!(apic.acknowledge(), Some(0xEF));
    assert_eq!(apic.acknowledge(), None);
}

#[test]
fn a_masked_timer_counts_but_raises_nothing() {
    let mut apic = enabled();
    apic.write(reg::LVT_TIMER, LVT_MASKED | 0xEC, &T);
    apic.write(reg::TIMER_INITIAL, 10, &FixedClock(0));
    assert_eq!(
        apic.next_timer_deadline(),
        Some(20),
        "divide by 2 by default"
    );
    assert!(apic.poll_timer(&FixedClock(20)));
    assert!(apic.irr().is_empty());
}

#[test]
fn switching_mode_delivers_a_due_expiry_first() {
    let mut apic = enabled();
    apic.write(reg::TIMER_DIVIDE, 0b1011, &T);
    apic.write(reg::LVT_TIMER, 0xEC, &T);
    apic.write(reg::TIMER_INITIAL, 100, &FixedClock(0));
    // Due at 100, not yet polled; the guest switches to periodic at 150.
    apic.write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | 0xEC, &FixedClock(150));
    assert!(apic.irr().contains(0xEC));
    assert_eq!(apic.next_timer_deadline(), Some(200));
}

#[test]
fn a_divide_change_keeps_the_current_count() {
    let mut apic = enabled();
    apic.write(reg::TIMER_DIVIDE, 0b1011, &T); // /1
    apic.write(reg::LVT_TIMER, 0xEC, &T);
    apic.write(reg::TIMER_INITIAL, 100, &FixedClock(0));
    apic.write(reg::TIMER_DIVIDE, 0b0000, &FixedClock(40)); // /2 from 60 left
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(40)), 60);
    assert_eq!(apic.read(reg::TIMER_CURRENT, &FixedClock(60)), 50);
    assert_eq!(apic.next_timer_deadline(), Some(160));
}

#[test]
fn every_divide_code_gives_its_divisor() {
    for (code, divisor) in [
        (0b0000, 2),
        (0b0001, 4),
        (0b0010, 8),
        (0b0011, 16),
        (0b1000, 32),
        (0b1001, 64),
        (0b1010, 128),
        (0b1011, 1),
    ] {
        let mut apic = enabled();
        apic.write(reg::TIMER_DIVIDE, code, &T);
        apic.write(reg::TIMER_INITIAL, 10, &FixedClock(0));
        assert_eq!(
            apic.next_timer_deadline(),
            Some(10 * divisor),
            "code {code:#b}"
        );
    }
}

#[test]
fn a_deadline_beyond_the_tsc_range_never_comes() {
    let mut apic = LocalApic::new(0, u64::MAX, true);
    apic.write(reg::SVR, SVR_ENABLE, &T);
    apic.write(reg::TIMER_DIVIDE, 0b1010, &T);
    apic.write(reg::TIMER_INITIAL, u32::MAX, &FixedClock(u64::MAX - 5));
    assert_eq!(apic.next_timer_deadline(), None);
    assert_eq!(
        apic.read(reg::TIMER_CURRENT, &FixedClock(u64::MAX)),
        u32::MAX
    );
}

/// Linux's AP start (`wakeup_secondary_cpu_via_init`): ICR high = target, INIT level assert,
/// INIT level de-assert, then two startup IPIs with the trampoline's page number.
#[test]
fn init_sipi_sipi_starts_the_ap_in_real_mode_at_the_vector_page() {
    let mut bsp = enabled();
    let mut ap = LocalApic::new(1, 1, false);
    let mut starts = Vec::new();
    let mut deliver = |request: Option<IpiRequest>, ap: &mut LocalApic| {
        let Some(request) = request else { return };
        assert!(ap.accepts(request.destination, 0));
        match request.kind {
            IpiKind::Init => ap.receive_init(),
            IpiKind::Startup { vector } => starts.push(ap.receive_startup(vector)),
            other => panic!("unexpected {other:?}"),
        }
    };
    bsp.write(reg::ICR_HIGH, 1 << 24, &T);
    let init = bsp.write(reg::ICR_LOW, 0x0000_C500, &T);
    assert_eq!(
        init,
        Some(IpiRequest {
            destination: IpiDestination::Physical(1),
            kind: IpiKind::Init
        })
    );
    deliver(init, &mut ap);
    assert_eq!(ap.run_state(), RunState::WaitForSipi);
    assert_eq!(
        bsp.write(reg::ICR_LOW, 0x0000_8500, &T),
        None,
        "de-assert does nothing"
    );
    for _ in 0..2 {
        let sipi = bsp.write(reg::ICR_LOW, 0x0000_069A, &T);
        assert_eq!(
            sipi.map(|r| r.kind),
            Some(IpiKind::Startup { vector: 0x9A })
        );
        deliver(sipi, &mut ap);
    }
    assert_eq!(
        starts,
        [
            Some(RealModeStart {
                cs_selector: 0x9A00,
                cs_base: 0x9_A000,
                ip: 0
            }),
            None
        ],
        "the second SIPI finds the AP running"
    );
    assert_eq!(ap.run_state(), RunState::Running);
    assert_eq!(
        bsp.read(reg::ICR_LOW, &T) & (1 << 12),
        0,
        "delivery status idle"
    );
}

#[test]
fn init_resets_the_apic_but_keeps_its_id() {
    let mut apic = enabled();
    apic.accept_interrupt(0x40, false);
    apic.write(reg::TPR, 0x20, &T);
    apic.receive_init();
    assert_eq!(apic.read(reg::ID, &T), 0);
    assert_eq!(apic.read(reg::TPR, &T), 0);
    assert!(apic.irr().is_empty() && !apic.software_enabled());
}

#[test]
fn ipi_shorthands_destinations_and_kinds_decode() {
    let mut apic = enabled();
    apic.write(reg::ICR_HIGH, 0x0300_0000, &T);
    let sent = |apic: &mut LocalApic, low| apic.write(reg::ICR_LOW, low, &T);
    assert_eq!(
        sent(&mut apic, 0x0000_4041),
        Some(IpiRequest {
            destination: IpiDestination::Physical(3),
            kind: IpiKind::Fixed { vector: 0x41 }
        })
    );
    assert_eq!(
        sent(&mut apic, 0x0000_0941).map(|r| r.destination),
        Some(IpiDestination::Logical(3))
    );
    assert_eq!(
        sent(&mut apic, 0x0000_0141).map(|r| r.kind),
        Some(IpiKind::LowestPriority { vector: 0x41 })
    );
    assert_eq!(
        sent(&mut apic, 0x000C_0400),
        Some(IpiRequest {
            destination: IpiDestination::AllExcludingSelf,
            kind: IpiKind::Nmi
        })
    );
    assert_eq!(
        sent(&mut apic, 0x0008_0050).map(|r| r.destination),
        Some(IpiDestination::AllIncludingSelf)
    );
    assert_eq!(sent(&mut apic, 0x0000_0200), None, "SMI is not offered");
    assert_eq!(sent(&mut apic, 0x0000_0700), None, "reserved mode");
    // The self shorthand is handled here.
    assert_eq!(sent(&mut apic, 0x0004_0077), None);
    assert!(apic.irr().contains(0x77));
}

#[test]
fn destinations_match_physical_logical_flat_and_cluster() {
    let mut apic = enabled();
    apic.write(reg::LDR, 0x2400_0000, &T);
    assert!(apic.accepts(IpiDestination::Physical(0), 5));
    assert!(apic.accepts(IpiDestination::Physical(0xFF), 5));
    assert!(!apic.accepts(IpiDestination::Physical(1), 5));
    assert!(apic.accepts(IpiDestination::Logical(0x04), 5));
    assert!(!apic.accepts(IpiDestination::Logical(0x0B), 5));
    assert!(!apic.accepts(IpiDestination::AllExcludingSelf, 0));
    assert!(apic.accepts(IpiDestination::AllIncludingSelf, 0));
    apic.write(reg::DFR, 0x0FFF_FFFF, &T); // cluster model: cluster 2, member bit 2
    assert!(apic.accepts(IpiDestination::Logical(0x24), 5));
    assert!(apic.accepts(IpiDestination::Logical(0xF4), 5));
    assert!(!apic.accepts(IpiDestination::Logical(0x14), 5));
    assert!(!apic.accepts(IpiDestination::Logical(0x21), 5));
}

#[test]
fn vector_sets_find_their_highest_member() {
    let mut set = VectorSet::default();
    assert_eq!(set.highest(), None);
    for v in [0u8, 31, 32, 200, 255] {
        set.set(v);
        assert_eq!(set.highest(), Some(v));
    }
    set.clear(255);
    assert_eq!(set.highest(), Some(200));
    assert_eq!(set.word(8), 0);
}

/// Offsets the random traffic draws from: every register, plus misaligned and out-of-page ones.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..0x40).prop_map(|i| i * 16),
        any::<u64>(),
        0u64..0x1100,
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Read(u64),
    Write(u64, u32),
    Accept(u8, bool),
    Ack,
    Poll,
    Init,
    Sipi(u8),
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        offset().prop_map(Op::Read),
        (offset(), any::<u32>()).prop_map(|(o, v)| Op::Write(o, v)),
        // Writes that matter most, with plausible values.
        (
            prop_oneof![
                Just(reg::SVR),
                Just(reg::TIMER_INITIAL),
                Just(reg::LVT_TIMER),
                Just(reg::TIMER_DIVIDE),
                Just(reg::EOI),
                Just(reg::TPR),
                Just(reg::ICR_LOW)
            ],
            prop_oneof![any::<u32>(), 0u32..0x400, Just(SVR_ENABLE | 0xFF)]
        )
            .prop_map(|(o, v)| Op::Write(o, v)),
        (any::<u8>(), any::<bool>()).prop_map(|(v, l)| Op::Accept(v, l)),
        Just(Op::Ack),
        Just(Op::Poll),
        Just(Op::Init),
        any::<u8>().prop_map(Op::Sipi),
        any::<u32>().prop_map(Op::Advance),
    ]
}

proptest! {
    /// Random guest register traffic and events never panic and keep the invariants: no vector
    /// below 16 is ever requested or in service, DFR's low bits read 1, PPR follows TPR and ISR,
    /// what is presented is above PPR, LVTs stay masked while disabled, the timer's current
    /// count never exceeds its initial count, and the next deadline is never in the past after a
    /// poll.
    #[test]
    fn random_register_traffic_never_panics_and_keeps_invariants(
        ops in proptest::collection::vec(op(), 1..200),
        ratio in 1u64..64,
    ) {
        let mut apic = LocalApic::new(0, ratio, true);
        let mut now = 0u64;
        for op in ops {
            let clock = FixedClock(now);
            match op {
                Op::Read(o) => { apic.read(o, &clock); }
                Op::Write(o, v) => {
                    if let Some(IpiRequest {
                        kind: IpiKind::Fixed { vector } | IpiKind::LowestPriority { vector },
                        ..
                    }) = apic.write(o, v, &clock)
                    {
                        prop_assert!(vector >= 16);
                    }
                }
                Op::Accept(v, l) => { apic.accept_interrupt(v, l); }
                Op::Ack => { apic.acknowledge(); }
                Op::Poll => {
                    apic.poll_timer(&FixedClock(now));
                    if let Some(deadline) = apic.next_timer_deadline() {
                        prop_assert!(deadline > now);
                    }
                }
                Op::Init => apic.receive_init(),
                Op::Sipi(v) => { apic.receive_startup(v); }
                Op::Advance(d) => now = now.saturating_add(u64::from(d)),
            }
            let clock = FixedClock(now);
            for low in 0..16u8 {
                prop_assert!(!apic.irr().contains(low) && !apic.isr().contains(low));
            }
            prop_assert_eq!(apic.read(reg::DFR, &clock) & 0x0FFF_FFFF, 0x0FFF_FFFF);
            let tpr = apic.read(reg::TPR, &clock);
            let isr_class = u32::from(apic.isr().highest().unwrap_or(0)) & 0xF0;
            let ppr = apic.read(reg::PPR, &clock);
            prop_assert!(ppr == tpr || ppr == isr_class);
            prop_assert!(ppr >> 4 >= (tpr >> 4).max(isr_class >> 4));
            if let Some(v) = apic.pending_vector() {
                prop_assert!(u32::from(v >> 4) > ppr >> 4);
                prop_assert!(apic.software_enabled());
            }
            if !apic.software_enabled() {
                for lvt in [reg::LVT_TIMER, reg::LVT_LINT0, reg::LVT_LINT1, reg::LVT_ERROR] {
                    prop_assert!(apic.read(lvt, &clock) & LVT_MASKED != 0);
                }
            }
            prop_assert!(apic.read(reg::TIMER_CURRENT, &clock) <= apic.read(reg::TIMER_INITIAL, &clock));
            prop_assert_eq!(apic.read(reg::VERSION, &clock), VERSION_VALUE);
        }
    }
}
