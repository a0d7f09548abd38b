//! The TIS (PTP FIFO) driver against a hostile TPM or bus: every register read returns the
//! input's next bytes (1 for an 8-bit register, 4 little-endian for a 32-bit one; an exhausted
//! input reads all ones, as a bus with no device does). The clock advances by what the driver
//! waits, so every timeout is reached.
//!
//! Checked: the driver never panics or hangs; a transmission it accepts returns a response of
//! at least a header whose size field is its length, within the buffer; the command layer over
//! it holds [`crate::tpm_commands::session`]'s checks; the driver wrote only the registers and
//! values the PTP sequence allows.

use slipway_tpm::tis::{access, reg, sts};
use slipway_tpm::{Clock, Tis, TisRegisters, TisTimeouts, Tpm};

/// Register reads served from the input.
pub struct HostileRegisters<'a> {
    data: &'a [u8],
    /// Register reads served.
    pub reads: u64,
}

impl<'a> HostileRegisters<'a> {
    /// Registers answering with `data`.
    pub fn new(data: &'a [u8]) -> Self {
        HostileRegisters { data, reads: 0 }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        self.reads += 1;
        match self.data.split_first_chunk::<N>() {
            Some((value, rest)) => {
                self.data = rest;
                *value
            }
            None => {
                self.data = &[];
                [0xff; N]
            }
        }
    }
}

fn check_write(locality: u8, offset: u16, value: u32) {
    assert!(locality <= 4 && offset < 0x1000);
    let allowed = match offset {
        reg::ACCESS => {
            value == u32::from(access::REQUEST_USE) || value == u32::from(access::ACTIVE_LOCALITY)
        }
        reg::STS => value == sts::COMMAND_READY || value == sts::GO,
        reg::DATA_FIFO => value <= 0xff,
        _ => false,
    };
    assert!(allowed, "write of {value:#x} to register {offset:#x}");
}

impl TisRegisters for HostileRegisters<'_> {
    fn read8(&mut self, locality: u8, offset: u16) -> u8 {
        assert!(locality <= 4 && offset < 0x1000);
        self.take::<1>()[0]
    }
    fn read32(&mut self, locality: u8, offset: u16) -> u32 {
        assert!(locality <= 4 && offset < 0x1000 && offset.is_multiple_of(4));
        u32::from_le_bytes(self.take::<4>())
    }
    fn write8(&mut self, locality: u8, offset: u16, value: u8) {
        check_write(locality, offset, u32::from(value));
    }
    fn write32(&mut self, locality: u8, offset: u16, value: u32) {
        check_write(locality, offset, value);
    }
}

/// A clock that moves only when the driver waits (plus one microsecond per reading).
#[derive(Default)]
pub struct SteppingClock {
    now: u64,
}

impl Clock for SteppingClock {
    fn now_micros(&mut self) -> u64 {
        self.now += 1;
        self.now
    }
    fn delay_micros(&mut self, micros: u32) {
        self.now += u64::from(micros.max(1));
    }
}

/// Short timeouts (the defaults, scaled down), so that a stalled TPM costs few reads.
pub const TIMEOUTS: TisTimeouts = TisTimeouts {
    a_us: 2_000,
    b_us: 2_000,
    c_us: 2_000,
    d_us: 2_000,
    command_us: 20_000,
    key_generation_us: 40_000,
    poll_us: 500,
};

/// TPM2_Startup(CLEAR), the first command of [`crate::tpm_commands::session`].
const STARTUP: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut registers = HostileRegisters::new(data);
    let mut tis = Tis::with_timeouts(&mut registers, SteppingClock::default(), 2, TIMEOUTS)
        .expect("locality 2 exists");
    let _ = tis.probe();
    if tis.request_locality().is_err() {
        return;
    }
    let mut response = [0u8; 64];
    if let Ok(len) = tis.transmit(&STARTUP, &mut response) {
        assert!((10..=response.len()).contains(&len));
        let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]);
        assert_eq!(
            size as usize, len,
            "the length is the response's size field"
        );
    }
    let mut tpm = Tpm::new(tis);
    crate::tpm_commands::session(&mut tpm);
    let _ = tpm.into_transport().relinquish_locality();
}
