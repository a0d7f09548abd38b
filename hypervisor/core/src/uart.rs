//! An emulated 16550A UART, the console every domain sees at COM1 (0x3f8).
//!
//! Just enough for polled drivers (ours, Linux's 8250 probe): the transmitter is always empty
//! (LSR.THRE and TEMT set) because every byte written goes straight to the console multiplexer;
//! received bytes come from a small queue the multiplexer fills; the divisor latch, FIFO control,
//! modem control (including loopback, which Linux's probe uses) and scratch register behave as on
//! the real part. No interrupts are raised: domains get no interrupt lines, so IIR
//! reports what would be pending and a driver polls.

/// I/O port base of COM1.
pub use slipway_protocol::platform::COM1_PORT as COM1_BASE;
/// Number of ports the UART decodes.
pub const UART_PORT_COUNT: u16 = 8;
/// Bytes of input the UART buffers (a real 16550A has a 16-byte FIFO; more avoids losing typed
/// text while a domain is busy).
pub const INPUT_QUEUE: usize = 64;

const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;
const LSR_TRANSMITTER_EMPTY: u8 = 0x40;
const LCR_DLAB: u8 = 0x80;
const MCR_LOOPBACK: u8 = 0x10;
const IER_RX: u8 = 0x01;
const IER_TX: u8 = 0x02;
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;

/// Register offsets from the base port.
pub mod reg {
    /// Receive buffer (read) / transmit holding (write); divisor low with DLAB.
    pub const DATA: u16 = 0;
    /// Interrupt enable; divisor high with DLAB.
    pub const IER: u16 = 1;
    /// Interrupt identification (read) / FIFO control (write).
    pub const IIR_FCR: u16 = 2;
    /// Line control.
    pub const LCR: u16 = 3;
    /// Modem control.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    /// Modem status.
    pub const MSR: u16 = 6;
    /// Scratch.
    pub const SCR: u16 = 7;
}

/// The register state of one emulated UART.
#[derive(Clone, Debug)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    rx: [u8; INPUT_QUEUE],
    rx_head: usize,
    rx_len: usize,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// Power-on state: 8N1 with divisor 1 (115200 baud), FIFO off.
    pub const fn new() -> Self {
        Uart16550 {
            ier: 0,
            lcr: 0x03,
            mcr: 0,
            scr: 0,
            dll: 1,
            dlm: 0,
            fifo_enabled: false,
            rx: [0; INPUT_QUEUE],
            rx_head: 0,
            rx_len: 0,
        }
    }

    /// The register offset of `port` if it belongs to COM1.
    pub fn offset_of(port: u16) -> Option<u16> {
        port.checked_sub(COM1_BASE)
            .filter(|offset| *offset < UART_PORT_COUNT)
    }

    /// Queues a received byte; `false` if the queue is full (the byte is lost, as on hardware
    /// with an overrun).
    pub fn push_input(&mut self, byte: u8) -> bool {
        if self.rx_len == INPUT_QUEUE {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % INPUT_QUEUE] = byte;
        self.rx_len += 1;
        true
    }

    fn pop_input(&mut self) -> u8 {
        if self.rx_len == 0 {
            return 0;
        }
        let byte = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % INPUT_QUEUE;
        self.rx_len -= 1;
        byte
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// A guest `out` of `value` to register `offset`. Returns the byte to print, if the write
    /// transmitted one.
    pub fn io_write(&mut self, offset: u16, value: u8) -> Option<u8> {
        match offset {
            reg::DATA if self.dlab() => self.dll = value,
            reg::DATA if self.mcr & MCR_LOOPBACK != 0 => {
                self.push_input(value);
            }
            reg::DATA => return Some(value),
            reg::IER if self.dlab() => self.dlm = value,
            reg::IER => self.ier = value & 0x0f,
            reg::IIR_FCR => {
                self.fifo_enabled = value & FCR_ENABLE != 0;
                if value & FCR_CLEAR_RX != 0 {
                    self.rx_len = 0;
                }
            }
            reg::LCR => self.lcr = value,
            reg::MCR => self.mcr = value & 0x1f,
            reg::SCR => self.scr = value,
            // LSR and MSR are read-only; other offsets are not decoded.
            _ => {}
        }
        None
    }

    /// A guest `in` from register `offset`.
    pub fn io_read(&mut self, offset: u16) -> u8 {
        match offset {
            reg::DATA if self.dlab() => self.dll,
            reg::DATA => self.pop_input(),
            reg::IER if self.dlab() => self.dlm,
            reg::IER => self.ier,
            reg::IIR_FCR => {
                let fifo = if self.fifo_enabled { 0xc0 } else { 0 };
                let pending = if self.ier & IER_RX != 0 && self.rx_len > 0 {
                    0x04 // received data available
                } else if self.ier & IER_TX != 0 {
                    0x02 // transmitter holding register empty (always)
                } else {
                    0x01 // nothing pending
                };
                fifo | pending
            }
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => {
                let ready = if self.rx_len > 0 { LSR_DATA_READY } else { 0 };
                ready | LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY
            }
            reg::MSR => {
                if self.mcr & MCR_LOOPBACK != 0 {
                    // Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                    let m = self.mcr;
                    ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
                } else {
                    0xb0 // DCD, DSR, CTS: a connected terminal
                }
            }
            reg::SCR => self.scr,
            _ => 0xff,
        }
    }

    /// Current divisor (baud = 115200 / divisor); recorded, not enforced.
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_goes_out_and_lsr_is_always_ready() {
        let mut uart = Uart16550::new();
        assert_eq!(uart.io_read(reg::LSR), 0x60);
        assert_eq!(uart.io_write(reg::DATA, b'A'), Some(b'A'));
        assert_eq!(uart.io_read(reg::LSR), 0x60);
        assert_eq!(Uart16550::offset_of(0x3fd), Some(5));
        assert_eq!(Uart16550::offset_of(0x400), None);
        assert_eq!(Uart16550::offset_of(0x2f8), None);
    }

    #[test]
    fn divisor_latch_shadows_data_and_ier() {
        let mut uart = Uart16550::new();
        uart.io_write(reg::LCR, 0x83);
        assert_eq!(
            uart.io_write(reg::DATA, 0x0c),
            None,
            "DLL write is not transmitted"
        );
        uart.io_write(reg::IER, 0x00);
        assert_eq!(uart.divisor(), 12);
        uart.io_write(reg::LCR, 0x03);
        assert_eq!(uart.io_read(reg::IER), 0);
        uart.io_write(reg::IER, 0x05);
        assert_eq!(uart.io_read(reg::IER), 0x05);
        uart.io_write(reg::LCR, 0x83);
        assert_eq!(uart.io_read(reg::DATA), 0x0c);
        assert_eq!(uart.io_read(reg::IER), 0x00);
    }

    #[test]
    fn input_queue_feeds_rbr_and_lsr_data_ready() {
        let mut uart = Uart16550::new();
        assert!(uart.push_input(b'x'));
        assert!(uart.push_input(b'y'));
        assert_eq!(uart.io_read(reg::LSR) & 1, 1);
        uart.io_write(reg::IER, IER_RX);
        assert_eq!(uart.io_read(reg::IIR_FCR), 0x04);
        assert_eq!(uart.io_read(reg::DATA), b'x');
        assert_eq!(uart.io_read(reg::DATA), b'y');
        assert_eq!(uart.io_read(reg::LSR) & 1, 0);
        assert_eq!(uart.io_read(reg::IIR_FCR), 0x01);
        for i in 0..INPUT_QUEUE {
            assert!(uart.push_input(i as u8));
        }
        assert!(!uart.push_input(0), "overrun drops the byte");
        uart.io_write(reg::IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(uart.io_read(reg::LSR) & 1, 0);
        assert_eq!(uart.io_read(reg::IIR_FCR), 0xc1);
    }

    #[test]
    fn scratch_and_loopback_pass_the_linux_probe() {
        let mut uart = Uart16550::new();
        uart.io_write(reg::SCR, 0xa5);
        assert_eq!(uart.io_read(reg::SCR), 0xa5);
        uart.io_write(reg::MCR, MCR_LOOPBACK | 0x0a);
        assert_eq!(uart.io_read(reg::MSR) & 0xf0, 0x90);
        assert_eq!(
            uart.io_write(reg::DATA, b'L'),
            None,
            "loopback does not transmit"
        );
        assert_eq!(uart.io_read(reg::DATA), b'L');
        uart.io_write(reg::MCR, 0);
        assert_eq!(uart.io_read(reg::MSR), 0xb0);
        uart.io_write(reg::LSR, 0);
        assert_eq!(uart.io_read(reg::LSR), 0x60, "LSR is read-only");
    }
}
