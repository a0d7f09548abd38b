//! The hypervisor's console: one lock around COM1 so lines from several CPUs never interleave.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::serial::Serial;

static LOCKED: AtomicBool = AtomicBool::new(false);
static mut SERIAL: Option<Serial> = None;

/// Initializes COM1. Called once by the boot CPU before any output.
pub fn init() {
    lock();
    // SAFETY: the console lock is held, so no other CPU touches SERIAL.
    unsafe { *core::ptr::addr_of_mut!(SERIAL) = Some(Serial::init()) };
    unlock();
}

fn lock() {
    // Bounded: a CPU that died holding the lock (exception while printing) must not silence
    // the panic report of another.
    for _ in 0..50_000_000u64 {
        if LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        core::hint::spin_loop();
    }
    LOCKED.store(true, Ordering::SeqCst);
}

fn unlock() {
    LOCKED.store(false, Ordering::Release);
}

/// Runs `f` with exclusive access to the serial port.
pub fn with_serial<R>(f: impl FnOnce(&mut Serial) -> R) -> Option<R> {
    lock();
    // SAFETY: the console lock is held for the duration of `f`.
    let result = unsafe { (*core::ptr::addr_of_mut!(SERIAL)).as_mut().map(f) };
    unlock();
    result
}

/// Prints one hypervisor line: `slipway: <text>`, after the domain output queued before it.
pub fn print_line(args: fmt::Arguments<'_>) {
    crate::domain_console::drain_all();
    with_serial(|serial| {
        let _ = serial.write_str("slipway: ");
        let _ = serial.write_fmt(args);
        let _ = serial.write_str("\n");
    });
}

/// Prints raw text (no prefix), for multi-part reports such as exception dumps.
pub fn print_raw(args: fmt::Arguments<'_>) {
    with_serial(|serial| {
        let _ = serial.write_fmt(args);
    });
}

/// `hvprintln!("...")` prints a `slipway: `-prefixed line on COM1.
#[macro_export]
macro_rules! hvprintln {
    ($($arg:tt)*) => { $crate::console::print_line(format_args!($($arg)*)) };
}

/// Writes text to the debugcon port 0xe9 (the launch harness's channel; ignored without one).
pub fn print_debugcon(args: fmt::Arguments<'_>) {
    struct Debugcon;
    impl Write for Debugcon {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for byte in s.bytes() {
                // SAFETY: the debugcon port is the hypervisor's (never passed to a domain);
                // writing it only emits a byte to QEMU's debugcon, or nothing.
                unsafe {
                    x86_64::instructions::port::Port::<u8>::new(
                        slipway_protocol::platform::DEBUGCON_PORT,
                    )
                    .write(byte)
                };
            }
            Ok(())
        }
    }
    let _ = Debugcon.write_fmt(args);
}
