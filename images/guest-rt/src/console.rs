//! Console output on the (emulated) 16550 UART at I/O port 0x3f8, polling THRE.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use slipway_protocol::platform::COM1_PORT as COM1;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;
const DATA_READY: u8 = 1;

static LOCK: AtomicBool = AtomicBool::new(false);

fn outb(port: u16, value: u8) {
    // SAFETY: writing the COM1 data register only queues a byte on the (emulated) UART; it
    // touches no memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading the COM1 line-status register has no side effect on memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes one byte, waiting until the transmit holding register is empty.
pub fn write_byte(byte: u8) {
    while inb(LINE_STATUS) & TRANSMIT_EMPTY == 0 {
        core::hint::spin_loop();
    }
    outb(COM1, byte);
}

/// One byte of console input, if the UART has received one (the hypervisor delivers serial input
/// to the domain that has the console focus).
pub fn try_read_byte() -> Option<u8> {
    (inb(LINE_STATUS) & DATA_READY != 0).then(|| inb(COM1))
}

/// The console as a `fmt::Write` sink (no locking; see [`with_lock`]).
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                write_byte(b'\r');
            }
            write_byte(byte);
        }
        Ok(())
    }
}

/// Runs `f` with the console held, so lines of different vCPUs do not interleave.
pub fn with_lock<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let result = f(&mut Console);
    LOCK.store(false, Ordering::Release);
    result
}

/// Forgets a holder of the console lock (the panic handler uses it: the panicking vCPU may hold it).
pub fn force_unlock() {
    LOCK.store(false, Ordering::Release);
}

#[doc(hidden)]
pub fn print_args(args: fmt::Arguments<'_>) {
    with_lock(|console| {
        let _ = fmt::Write::write_fmt(console, args);
    });
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_args(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print_args(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print_args(format_args!("{}\n", format_args!($($arg)*))) };
}
