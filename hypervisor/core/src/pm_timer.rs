//! The ACPI power-management timer every domain sees at
//! [`slipway_protocol::platform::PM_TIMER_PORT`]: a free-running 24-bit count at
//! [`PM_TIMER_HZ`] derived from the TSC.
//!
//! It is how a domain learns its TSC frequency without the measured build depending on the
//! machine: the FADT names the timer (fixed bytes), and the guest calibrates against it at run
//! time, as it would against a chipset's timer (Linux: "using PMTIMER reference calibration").
//! The count is a pure function of the TSC, so every vCPU reads one consistent clock.

use slipway_protocol::platform::{PM_TIMER_HZ, PM_TIMER_PORT};

/// Whether an `in` of `size` bytes from `port` reads any of the timer's four ports.
pub fn reads_pm_timer(port: u16, size: u8) -> bool {
    let start = u32::from(port);
    let end = start + u32::from(size);
    let timer = u32::from(PM_TIMER_PORT);
    start < timer + 4 && timer < end
}

/// The count's width: 24 bits (the FADT does not set TMR_VAL_EXT).
pub const PM_TIMER_MASK: u32 = 0x00ff_ffff;

/// The timer's count at TSC `tsc` on a TSC running at `tsc_hz` (0 reads as a stopped timer).
pub fn count(tsc: u64, tsc_hz: u64) -> u32 {
    if tsc_hz == 0 {
        return 0;
    }
    let ticks = u128::from(tsc) * u128::from(PM_TIMER_HZ) / u128::from(tsc_hz);
    (ticks as u32) & PM_TIMER_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_of_tsc_is_one_second_of_pm_timer_ticks() {
        let hz = 2_500_000_000;
        let start = 123_456_789_012;
        let a = count(start, hz);
        let b = count(start + hz, hz);
        assert_eq!(
            b.wrapping_sub(a) & PM_TIMER_MASK,
            (PM_TIMER_HZ as u32) & PM_TIMER_MASK
        );
    }

    #[test]
    fn the_count_wraps_at_24_bits_and_never_runs_backwards_within_a_period() {
        let hz = 3_000_000_000u64;
        let mut last = count(0, hz);
        // Sample across more than one wrap (2^24 ticks ~ 4.69 s).
        for step in 1..2000u64 {
            let now = count(step * hz / 200, hz);
            assert!(now <= PM_TIMER_MASK);
            let delta = now.wrapping_sub(last) & PM_TIMER_MASK;
            // 5 ms is ~17,898 ticks: forward by that much, modulo the wrap.
            assert!((17_800..18_000).contains(&delta), "delta {delta}");
            last = now;
        }
    }

    #[test]
    fn reads_of_any_timer_port_are_recognised() {
        assert!(reads_pm_timer(PM_TIMER_PORT, 4));
        assert!(reads_pm_timer(PM_TIMER_PORT + 3, 1));
        assert!(reads_pm_timer(PM_TIMER_PORT - 1, 2));
        assert!(!reads_pm_timer(PM_TIMER_PORT - 4, 4));
        assert!(!reads_pm_timer(PM_TIMER_PORT + 4, 1));
        assert!(!reads_pm_timer(u16::MAX, 4));
    }

    #[test]
    fn an_unknown_tsc_rate_reads_a_stopped_timer_and_huge_tscs_do_not_overflow() {
        assert_eq!(count(12345, 0), 0);
        assert!(count(u64::MAX, 1) <= PM_TIMER_MASK);
    }
}
