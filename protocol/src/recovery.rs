//! The recovery environment's contracts between components (`docs/architecture.md`,
//! "Recovery environment"): how domB tells the hypervisor why it stopped without handing off
//! (its shutdown exit code), and how the hypervisor tells the recovery domain why it runs (a word
//! on the recovery domain's start-info command line).
//!
//! domB is measured and trusted; its exit code only selects which recovery reason the hypervisor
//! measures, never whether recovery happens (every domB that stops before hand-off leads to it).

/// Why domB stopped before hand-off: the exit code of its `Shutdown` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BuilderExit {
    /// Any other failure (a panic in domB: `slipway-guest-rt`'s panic handler exits with 1, a
    /// boot-information error, a measurement it could not express).
    Failed = 1,
    /// The launch configuration is missing (no `config` module) or malformed.
    ConfigMalformed = 2,
    /// The launch configuration names a boot module that is not in the boot.
    ModuleMissing = 3,
    /// The policy halted the launch (a halt action, a failed program, or recovery-only with no
    /// recovery domain in the configuration).
    PolicyHalted = 4,
    /// No valid plan: a domain could not be planned or built, or the hand-off was refused.
    PlanRefused = 5,
}

impl BuilderExit {
    /// The exit code.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The builder exit for `code`; `None` for a code domB never uses (the hypervisor then
    /// treats it as [`BuilderExit::Failed`] and prints the code).
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => BuilderExit::Failed,
            2 => BuilderExit::ConfigMalformed,
            3 => BuilderExit::ModuleMissing,
            4 => BuilderExit::PolicyHalted,
            5 => BuilderExit::PlanRefused,
            _ => return None,
        })
    }
}

/// The start-info command-line word that carries the recovery reason to the recovery domain:
/// `slipway.recovery=<reason name>` (the names of `slipway_measure`'s `DecisionReason`, e.g.
/// `boot-domain-hung`). The hypervisor writes it first, followed by the recovery module's own
/// arguments (the words after its name on its `module2` line).
pub const REASON_WORD: &str = "slipway.recovery";

#[cfg(test)]
mod tests {
    use super::*;

    /// The exit codes are a contract between domB and the hypervisor: pinned.
    #[test]
    fn builder_exit_codes_are_pinned() {
        let pinned = [
            (1, BuilderExit::Failed),
            (2, BuilderExit::ConfigMalformed),
            (3, BuilderExit::ModuleMissing),
            (4, BuilderExit::PolicyHalted),
            (5, BuilderExit::PlanRefused),
        ];
        for (code, exit) in pinned {
            assert_eq!(exit.code(), code);
            assert_eq!(BuilderExit::from_code(code), Some(exit));
        }
        assert_eq!(BuilderExit::from_code(0), None);
        assert_eq!(BuilderExit::from_code(6), None);
        assert_eq!(REASON_WORD, "slipway.recovery");
    }
}
