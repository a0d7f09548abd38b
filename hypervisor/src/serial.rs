//! COM1 (16550 at 0x3f8, 115200 8N1): the hypervisor's console.

use core::fmt;
use x86_64::instructions::port::Port;

use slipway_protocol::platform::COM1_PORT as COM1;

/// The hypervisor's serial port. Output is polled; there is one physical port, so writers
/// serialize through [`crate::console`].
pub struct Serial {
    _private: (),
}

impl Serial {
    /// Programs COM1 for 115200 8N1 with FIFOs enabled and interrupts off.
    pub fn init() -> Self {
        let setup: [(u16, u8); 7] = [
            (1, 0x00), // IER: no interrupts
            (3, 0x80), // LCR: DLAB on
            (0, 0x01), // DLL: divisor 1 = 115200
            (1, 0x00), // DLM
            (3, 0x03), // LCR: 8N1, DLAB off
            (2, 0xC7), // FCR: enable and clear FIFOs
            (4, 0x03), // MCR: DTR, RTS; OUT2 off (no IRQ)
        ];
        for (offset, value) in setup {
            // SAFETY: COM1 registers are owned by the hypervisor (no domain gets port I/O);
            // these writes only configure the UART.
            unsafe { Port::<u8>::new(COM1 + offset).write(value) };
        }
        Self { _private: () }
    }

    /// Writes one byte, waiting for the transmit holding register to empty.
    pub fn write_byte(&mut self, byte: u8) {
        let mut lsr = Port::<u8>::new(COM1 + 5);
        let mut data = Port::<u8>::new(COM1);
        // Bounded spin: a missing UART must not hang the hypervisor forever.
        for _ in 0..100_000 {
            // SAFETY: reading the line status register has no side effects.
            if unsafe { lsr.read() } & 0x20 != 0 {
                break;
            }
        }
        // SAFETY: writing the data register transmits one byte; COM1 belongs to the hypervisor.
        unsafe { data.write(byte) };
    }

    /// Returns a received byte, if one is waiting.
    pub fn try_read_byte(&mut self) -> Option<u8> {
        // SAFETY: reading LSR has no side effects; reading RBR consumes one received byte,
        // which only the hypervisor's console reads.
        unsafe {
            if Port::<u8>::new(COM1 + 5).read() & 0x01 != 0 {
                Some(Port::<u8>::new(COM1).read())
            } else {
                None
            }
        }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}
