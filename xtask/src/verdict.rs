//! How a QEMU run ended (pure mapping from QEMU's exit status).
//!
//! isa-debug-exit at port 0xf4 ends QEMU with status `(value << 1) | 1`: the hypervisor writes
//! 0x10 for success (33) and 0x11 for failure (35); the generated `grub.cfg` writes 0x12 (37) when
//! GRUB cannot boot the hypervisor. QEMU runs with `-no-reboot`, so a triple fault or reset ends it
//! with status 0: a run without a verdict. QEMU is started under coreutils `timeout`, whose own
//! statuses (124 and up) are recognised too.

use std::fmt;
use std::time::Duration;

use crate::grub::GRUB_FAILURE_CODE;

/// Value the hypervisor writes to isa-debug-exit on success.
pub const HV_SUCCESS_CODE: u8 = 0x10;
/// Value the hypervisor writes to isa-debug-exit on failure.
pub const HV_FAILURE_CODE: u8 = 0x11;

/// QEMU's exit status for a value written to isa-debug-exit.
pub const fn debug_exit_status(value: u8) -> i32 {
    ((value as i32) << 1) | 1
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The hypervisor reported success (isa-debug-exit 0x10, QEMU status 33).
    Success,
    /// The hypervisor reported failure (isa-debug-exit 0x11, QEMU status 35).
    Failure,
    /// GRUB could not load the hypervisor or a module (isa-debug-exit 0x12, QEMU status 37).
    BootLoaderFailed,
    /// No verdict within the time limit; the harness stopped QEMU.
    Timeout(Duration),
    /// The user interrupted the run (Ctrl-C or SIGTERM).
    Interrupted,
    /// QEMU exited with status 0: with `-no-reboot` this is a guest reset (for example a triple
    /// fault) or power-off before any verdict.
    NoVerdict,
    /// The guest wrote a value to isa-debug-exit that is not a Slipway verdict.
    UnknownDebugExit(u8),
    /// QEMU itself failed (status 1: bad arguments, missing firmware, device error; see stderr).
    QemuFailed(i32),
    /// QEMU (or its `timeout` wrapper) was killed by a signal.
    Killed(i32),
    /// The `timeout` wrapper's hard limit ended QEMU (the harness's own deadline should come first).
    HardTimeout,
}

impl Verdict {
    /// Maps QEMU's exit status (as reported through the `timeout` wrapper).
    pub fn from_exit(code: Option<i32>, signal: Option<i32>) -> Verdict {
        match (code, signal) {
            (_, Some(sig)) => Verdict::Killed(sig),
            (None, None) => Verdict::Killed(0),
            (Some(code), None) => match code {
                0 => Verdict::NoVerdict,
                c if c == debug_exit_status(HV_SUCCESS_CODE) => Verdict::Success,
                c if c == debug_exit_status(HV_FAILURE_CODE) => Verdict::Failure,
                c if c == debug_exit_status(GRUB_FAILURE_CODE) => Verdict::BootLoaderFailed,
                // timeout(1): 124 time limit hit, 125 timeout failed, 126/127 cannot run QEMU,
                // 128+n killed by signal n (137 after --kill-after).
                124 => Verdict::HardTimeout,
                125..=127 => Verdict::QemuFailed(code),
                c if c > 128 => Verdict::Killed(c - 128),
                c if c % 2 == 1 && c > 1 => Verdict::UnknownDebugExit((c >> 1) as u8),
                c => Verdict::QemuFailed(c),
            },
        }
    }

    /// Whether the run counts as a success.
    pub fn is_success(&self) -> bool {
        *self == Verdict::Success
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Success => write!(
                f,
                "success (the hypervisor exited with 0x10, QEMU status 33)"
            ),
            Verdict::Failure => write!(
                f,
                "failure reported by the hypervisor (0x11, QEMU status 35)"
            ),
            Verdict::BootLoaderFailed => write!(
                f,
                "GRUB could not boot the hypervisor or load a module (QEMU status 37; GRUB's error is in the console output)"
            ),
            Verdict::Timeout(d) => write!(
                f,
                "timeout: no verdict after {} s; QEMU was stopped",
                d.as_secs()
            ),
            Verdict::Interrupted => write!(f, "interrupted; QEMU was stopped"),
            Verdict::NoVerdict => write!(
                f,
                "QEMU exited with status 0 without a verdict: the guest reset (triple fault?) or powered off"
            ),
            Verdict::UnknownDebugExit(v) => write!(
                f,
                "the guest wrote {v:#04x} to isa-debug-exit, which is not a Slipway verdict (QEMU status {})",
                debug_exit_status(*v)
            ),
            Verdict::QemuFailed(c) => {
                write!(f, "QEMU failed with status {c} (see its error output)")
            }
            Verdict::Killed(s) => write!(f, "QEMU was killed by signal {s}"),
            Verdict::HardTimeout => {
                write!(f, "QEMU hit the hard time limit of its timeout wrapper")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_status_class() {
        let v = |code| Verdict::from_exit(Some(code), None);
        assert_eq!(v(33), Verdict::Success);
        assert_eq!(v(35), Verdict::Failure);
        assert_eq!(v(37), Verdict::BootLoaderFailed);
        assert_eq!(v(0), Verdict::NoVerdict);
        assert_eq!(v(1), Verdict::QemuFailed(1));
        assert_eq!(v(3), Verdict::UnknownDebugExit(1));
        assert_eq!(v(39), Verdict::UnknownDebugExit(0x13));
        assert_eq!(v(124), Verdict::HardTimeout);
        assert_eq!(v(127), Verdict::QemuFailed(127));
        assert_eq!(v(137), Verdict::Killed(9));
        assert_eq!(v(2), Verdict::QemuFailed(2));
        assert_eq!(Verdict::from_exit(None, Some(15)), Verdict::Killed(15));
        assert!(v(33).is_success());
        assert!(!v(35).is_success() && !v(0).is_success());
    }

    #[test]
    fn codes_match_the_architecture_contract() {
        assert_eq!(debug_exit_status(HV_SUCCESS_CODE), 33);
        assert_eq!(debug_exit_status(HV_FAILURE_CODE), 35);
        assert_eq!(debug_exit_status(GRUB_FAILURE_CODE), 37);
    }

    #[test]
    fn messages_say_what_happened() {
        assert!(
            Verdict::Timeout(Duration::from_secs(30))
                .to_string()
                .contains("after 30 s")
        );
        assert!(Verdict::NoVerdict.to_string().contains("triple fault"));
        assert!(Verdict::BootLoaderFailed.to_string().contains("GRUB"));
    }
}
