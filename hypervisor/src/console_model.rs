//! Per-domain console: the emulated 16550 registers a guest sees at 0x3f8 and the line buffer
//! that turns its bytes into `[<name>] <text>` lines on the real serial port.
//!
//! Pure logic, requested from `slipway-hv-core` (R2.2); replaced by hv-core's once it lands.

/// Longest line printed; longer output is split (so no line can grow without bound).
pub const MAX_LINE: usize = 200;

/// The 16550 registers a guest can observe.
#[derive(Default)]
pub struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scratch: u8,
    dll: u8,
    dlm: u8,
}

impl Uart {
    /// A write to `offset` (0-7); returns the transmitted byte for THR writes.
    pub fn io_out(&mut self, offset: u16, value: u8) -> Option<u8> {
        let dlab = self.lcr & 0x80 != 0;
        match (offset, dlab) {
            (0, false) => return Some(value),
            (0, true) => self.dll = value,
            (1, false) => self.ier = value & 0x0f,
            (1, true) => self.dlm = value,
            (3, _) => self.lcr = value,
            (4, _) => self.mcr = value & 0x1f,
            (7, _) => self.scratch = value,
            _ => {} // FCR and read-only registers: ignored
        }
        None
    }

    /// A read of `offset` (0-7). The transmitter is always ready; there is no input yet.
    pub fn io_in(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & 0x80 != 0;
        match (offset, dlab) {
            (0, false) => 0,
            (0, true) => self.dll,
            (1, false) => self.ier,
            (1, true) => self.dlm,
            (2, _) => 0xc1, // IIR: no interrupt pending, FIFOs enabled
            (3, _) => self.lcr,
            (4, _) => self.mcr,
            (5, _) => 0x60, // LSR: THRE | TEMT
            (6, _) => 0xb0, // MSR: DCD, DSR, CTS
            (7, _) => self.scratch,
            _ => 0xff,
        }
    }
}

/// Collects one domain's output into escaped, length-capped lines.
pub struct LineBuffer {
    text: heapless::String<{ MAX_LINE + 4 }>,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self {
            text: heapless::String::new(),
        }
    }
}

impl LineBuffer {
    /// Adds one byte; returns true when a line is complete (call [`LineBuffer::take`]).
    pub fn push(&mut self, byte: u8) -> bool {
        match byte {
            b'\n' => return true,
            b'\r' => {}
            0x20..=0x7e => {
                let _ = self.text.push(byte as char);
            }
            other => {
                // Escape: no control character (ESC sequences, CR tricks) reaches the terminal.
                let hex = b"0123456789abcdef";
                for c in [
                    b'\\',
                    b'x',
                    hex[(other >> 4) as usize],
                    hex[(other & 15) as usize],
                ] {
                    let _ = self.text.push(c as char);
                }
            }
        }
        self.text.len() >= MAX_LINE
    }

    /// Takes the collected line (escaped, printable ASCII only).
    pub fn take(&mut self) -> heapless::String<{ MAX_LINE + 4 }> {
        core::mem::take(&mut self.text)
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// CPUID as a guest sees it: SVM and SKINIT hidden, no SVM leaf, hypervisor bit set.
/// Requested from `slipway-hv-core` (R2.3).
pub fn filter_cpuid(leaf: u32, _subleaf: u32, mut regs: [u32; 4]) -> [u32; 4] {
    match leaf {
        1 => {
            regs[2] &= !(1 << 21); // x2APIC: no APIC is given to guests
            regs[2] &= !(1 << 3); // MONITOR/MWAIT (intercepted and forbidden)
            regs[2] |= 1 << 31; // running under a hypervisor
        }
        0x8000_0001 => {
            regs[2] &= !(1 << 2); // SVM
            regs[2] &= !(1 << 12); // SKINIT
        }
        0x8000_000a => regs = [0; 4],
        _ => {}
    }
    regs
}
