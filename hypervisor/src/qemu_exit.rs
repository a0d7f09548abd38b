//! Ending the run through QEMU's isa-debug-exit device at port 0xf4
//! (QEMU exit status = value * 2 + 1: 0x10 -> 33 success, 0x11 -> 35 failure).

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The verdict written to isa-debug-exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    /// Every domain shut down (or the minimal banner completed).
    Success = 0x10,
    /// The hypervisor panicked or hit an exception.
    Failure = 0x11,
}

/// Prints the verdict and ends the run. Without the exit device (real hardware) halts forever.
pub fn exit(verdict: Verdict) -> ! {
    match verdict {
        Verdict::Success => crate::hvprintln!("exiting: success"),
        Verdict::Failure => crate::hvprintln!("exiting: failure"),
    }
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit (never given to a domain); on hardware
    // without it, the write is ignored and we halt below.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(verdict as u32) };
    halt_forever()
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

impl From<slipway_hv_core::hypervisor::Verdict> for Verdict {
    fn from(verdict: slipway_hv_core::hypervisor::Verdict) -> Self {
        match verdict {
            slipway_hv_core::hypervisor::Verdict::Success => Verdict::Success,
            slipway_hv_core::hypervisor::Verdict::Failure => Verdict::Failure,
        }
    }
}
