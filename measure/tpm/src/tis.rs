//! TIS driver: the PC Client PTP FIFO interface (TPM Interface Specification 1.3 registers).
//!
//! One 4 KiB register page per locality at `0xFED4_0000 + locality * 0x1000`. The driver is
//! generic over [`TisRegisters`] (the hypervisor implements it with volatile MMIO, tests with a
//! fake) and a [`Clock`] for timeouts. Sequence of one command (PTP 6.5.2):
//!
//! 1. the locality must be active (`TPM_ACCESS.activeLocality`, requested with `requestUse`);
//! 2. `TPM_STS.commandReady` is written until the TPM reports it (TIMEOUT_B);
//! 3. the command is written to `TPM_DATA_FIFO`, never more bytes at once than `burstCount`
//!    (a zero burst count is waited out for TIMEOUT_D); after each chunk `stsValid` is awaited
//!    (TIMEOUT_C) and `Expect` must still be set, and clear after the last byte;
//! 4. `tpmGo` starts execution; `dataAvail` is awaited for the command's duration;
//! 5. the 10-byte header is read, then the rest of `responseSize`, honoring `burstCount`; after
//!    the last byte `dataAvail` must be clear;
//! 6. `commandReady` returns the TPM to idle (also on every error after step 2).

use core::fmt;

/// Size of one locality's register page.
pub use slipway_protocol::platform::TPM_LOCALITY_PAGE_SIZE as LOCALITY_PAGE_SIZE;
/// Physical base of the locality-0 register page.
pub use slipway_protocol::platform::TPM_TIS_BASE as TIS_BASE;
/// The highest locality (4 belongs to the CPU's dynamic launch).
pub const MAX_LOCALITY: u8 = 4;

/// Physical address of `locality`'s register page.
pub const fn locality_page(locality: u8) -> u64 {
    TIS_BASE + locality as u64 * LOCALITY_PAGE_SIZE
}

/// Register offsets within a locality page (PTP table 19).
pub mod reg {
    /// TPM_ACCESS_x (8 bit).
    pub const ACCESS: u16 = 0x00;
    /// TPM_INT_ENABLE_x (32 bit).
    pub const INT_ENABLE: u16 = 0x08;
    /// TPM_INTF_CAPABILITY_x (32 bit).
    pub const INTF_CAPABILITY: u16 = 0x14;
    /// TPM_STS_x (32 bit: status byte, burstCount in bits 8-23, PTP bits 24-27).
    pub const STS: u16 = 0x18;
    /// TPM_DATA_FIFO_x (8-bit accesses).
    pub const DATA_FIFO: u16 = 0x24;
    /// TPM_INTERFACE_ID_x (32 bit; PTP).
    pub const INTERFACE_ID: u16 = 0x30;
    /// TPM_DID_VID_x (32 bit).
    pub const DID_VID: u16 = 0xF00;
    /// TPM_RID_x (8 bit).
    pub const RID: u16 = 0xF04;
}

/// TPM_ACCESS bits.
pub mod access {
    /// tpmEstablishment (read; 0 after a dynamic launch reset it).
    pub const ESTABLISHMENT: u8 = 1 << 0;
    /// requestUse (write 1 to request the locality; read: a request is pending).
    pub const REQUEST_USE: u8 = 1 << 1;
    /// pendingRequest (another locality is waiting).
    pub const PENDING_REQUEST: u8 = 1 << 2;
    /// Seize (write).
    pub const SEIZE: u8 = 1 << 3;
    /// beenSeized (a higher locality took the TPM from this one).
    pub const BEEN_SEIZED: u8 = 1 << 4;
    /// activeLocality (read: this locality is active; write 1: relinquish).
    pub const ACTIVE_LOCALITY: u8 = 1 << 5;
    /// tpmRegValidSts: the other bits are valid.
    pub const VALID: u8 = 1 << 7;
}

/// TPM_STS bits.
pub mod sts {
    /// responseRetry (write: resend the response from the start).
    pub const RESPONSE_RETRY: u32 = 1 << 1;
    /// selfTestDone.
    pub const SELF_TEST_DONE: u32 = 1 << 2;
    /// Expect: the TPM expects more command bytes.
    pub const EXPECT: u32 = 1 << 3;
    /// dataAvail: response bytes are available.
    pub const DATA_AVAIL: u32 = 1 << 4;
    /// tpmGo (write: execute the command).
    pub const GO: u32 = 1 << 5;
    /// commandReady (read: ready for a command; write: abort / go to ready).
    pub const COMMAND_READY: u32 = 1 << 6;
    /// stsValid: Expect and dataAvail are valid.
    pub const VALID: u32 = 1 << 7;
    /// burstCount field position.
    pub const BURST_SHIFT: u32 = 8;
    /// burstCount field mask (after shifting).
    pub const BURST_MASK: u32 = 0xFFFF;
}

/// Register access to the TIS pages: 8- and 32-bit reads and writes at `offset` (< 0x1000)
/// within `locality`'s page. The binary maps the pages uncached and uses volatile accesses.
pub trait TisRegisters {
    /// Reads one byte.
    fn read8(&mut self, locality: u8, offset: u16) -> u8;
    /// Reads a 32-bit little-endian register.
    fn read32(&mut self, locality: u8, offset: u16) -> u32;
    /// Writes one byte.
    fn write8(&mut self, locality: u8, offset: u16, value: u8);
    /// Writes a 32-bit little-endian register.
    fn write32(&mut self, locality: u8, offset: u16, value: u32);
}

impl<T: TisRegisters + ?Sized> TisRegisters for &mut T {
    fn read8(&mut self, locality: u8, offset: u16) -> u8 {
        (**self).read8(locality, offset)
    }
    fn read32(&mut self, locality: u8, offset: u16) -> u32 {
        (**self).read32(locality, offset)
    }
    fn write8(&mut self, locality: u8, offset: u16, value: u8) {
        (**self).write8(locality, offset, value)
    }
    fn write32(&mut self, locality: u8, offset: u16, value: u32) {
        (**self).write32(locality, offset, value)
    }
}

/// Time source and delay for the driver's timeouts (the hypervisor uses its calibrated TSC).
pub trait Clock {
    /// Monotonic time in microseconds.
    fn now_micros(&mut self) -> u64;
    /// Waits about `micros` microseconds (may return early; the driver re-reads the clock).
    fn delay_micros(&mut self, micros: u32);
}

impl<T: Clock + ?Sized> Clock for &mut T {
    fn now_micros(&mut self) -> u64 {
        (**self).now_micros()
    }
    fn delay_micros(&mut self, micros: u32) {
        (**self).delay_micros(micros)
    }
}

/// Timeouts in microseconds. Defaults: PTP 1.05 table 17 (TIMEOUT_A-D) and the TPM 2.0 command
/// durations Linux uses (long: 2 s; key generation: 300 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TisTimeouts {
    /// TIMEOUT_A (750 ms): locality request and release.
    pub a_us: u64,
    /// TIMEOUT_B (2 s): commandReady after a ready/abort request.
    pub b_us: u64,
    /// TIMEOUT_C (200 ms): stsValid after a FIFO access.
    pub c_us: u64,
    /// TIMEOUT_D (30 ms): a non-zero burstCount.
    pub d_us: u64,
    /// Execution of an ordinary command (dataAvail after tpmGo).
    pub command_us: u64,
    /// Execution of a key-generating command (CreatePrimary, Create, CreateLoaded).
    pub key_generation_us: u64,
    /// Delay between two status polls.
    pub poll_us: u32,
}

impl Default for TisTimeouts {
    fn default() -> Self {
        TisTimeouts {
            a_us: 750_000,
            b_us: 2_000_000,
            c_us: 200_000,
            d_us: 30_000,
            command_us: 2_000_000,
            key_generation_us: 300_000_000,
            poll_us: 10,
        }
    }
}

/// What the driver was waiting for when it timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// TPM_ACCESS.tpmRegValidSts.
    AccessValid,
    /// TPM_ACCESS.activeLocality after requestUse.
    LocalityGranted,
    /// TPM_ACCESS.activeLocality to clear after relinquishing.
    LocalityReleased,
    /// TPM_STS.commandReady.
    CommandReady,
    /// A non-zero TPM_STS.burstCount.
    BurstCount,
    /// TPM_STS.stsValid.
    StsValid,
    /// TPM_STS.dataAvail: the command to complete.
    CommandCompletion,
}

impl WaitFor {
    fn describe(self) -> &'static str {
        match self {
            WaitFor::AccessValid => "TPM_ACCESS.tpmRegValidSts (TIMEOUT_A)",
            WaitFor::LocalityGranted => "the locality to be granted (TIMEOUT_A)",
            WaitFor::LocalityReleased => "the locality to be released (TIMEOUT_A)",
            WaitFor::CommandReady => "TPM_STS.commandReady (TIMEOUT_B)",
            WaitFor::BurstCount => "a non-zero TPM_STS.burstCount (TIMEOUT_D)",
            WaitFor::StsValid => "TPM_STS.stsValid (TIMEOUT_C)",
            WaitFor::CommandCompletion => "TPM_STS.dataAvail: the command to complete",
        }
    }
}

/// Errors of the TIS driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TisError {
    /// Locality {0} does not exist (0-4).
    InvalidLocality(u8),
    /// No TPM answers at this locality's page: its registers read all ones.
    NoDevice {
        /// The locality.
        locality: u8,
    },
    /// Timed out waiting for a register state.
    Timeout {
        /// The locality.
        locality: u8,
        /// What was awaited.
        waiting_for: WaitFor,
        /// How long the driver waited, in microseconds.
        waited_us: u64,
        /// The last TPM_STS (or TPM_ACCESS) value read.
        last_value: u32,
    },
    /// The TPM did not grant the locality (another locality is active, or it is not available
    /// to this requester, as locality 4 under QEMU).
    LocalityNotGranted {
        /// The locality.
        locality: u8,
        /// The last TPM_ACCESS value read.
        access: u8,
    },
    /// The locality is not active: request it first.
    LocalityNotActive {
        /// The locality.
        locality: u8,
        /// TPM_ACCESS as read.
        access: u8,
    },
    /// The command buffer is shorter than a TPM header or its size field disagrees with it.
    MalformedCommand {
        /// Bytes given.
        len: usize,
    },
    /// The TPM stopped expecting command bytes before the last one (TPM_STS.Expect clear).
    ExpectClearedEarly {
        /// Command bytes written so far.
        written: usize,
        /// Command length.
        len: usize,
        /// TPM_STS as read.
        status: u32,
    },
    /// The TPM still expects command bytes after the last one (TPM_STS.Expect set).
    ExpectStillSet {
        /// TPM_STS as read.
        status: u32,
    },
    /// The response header carries a size smaller than the header itself.
    ResponseTooShort {
        /// The size field.
        size: u32,
    },
    /// The response does not fit the caller's buffer.
    ResponseTooLong {
        /// The size field.
        size: u32,
        /// Buffer capacity.
        capacity: usize,
    },
    /// dataAvail is still set after the response's last byte.
    ResponseOverrun {
        /// TPM_STS as read.
        status: u32,
    },
    /// dataAvail dropped before the whole response was read.
    ResponseUnderrun {
        /// Bytes read.
        read: usize,
        /// Response size.
        size: usize,
        /// TPM_STS as read.
        status: u32,
    },
}

impl fmt::Display for TisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TisError::InvalidLocality(l) => write!(f, "TIS: locality {l} does not exist (0-4)"),
            TisError::NoDevice { locality } => write!(
                f,
                "TIS: no TPM at locality {locality} (registers read all ones at {:#x})",
                locality_page(locality)
            ),
            TisError::Timeout {
                locality,
                waiting_for,
                waited_us,
                last_value,
            } => write!(
                f,
                "TIS locality {locality}: timed out after {waited_us} us waiting for {} (last register value {last_value:#010x})",
                waiting_for.describe()
            ),
            TisError::LocalityNotGranted { locality, access } => write!(
                f,
                "TIS: locality {locality} not granted (TPM_ACCESS {access:#04x}{})",
                if access & access::PENDING_REQUEST != 0 {
                    ", another locality is pending"
                } else {
                    ""
                }
            ),
            TisError::LocalityNotActive { locality, access } => write!(
                f,
                "TIS: locality {locality} is not active (TPM_ACCESS {access:#04x}{}): request it first",
                if access & access::BEEN_SEIZED != 0 {
                    ", it was seized"
                } else {
                    ""
                }
            ),
            TisError::MalformedCommand { len } => write!(
                f,
                "TIS: malformed command of {len} bytes (shorter than a header or size field mismatch)"
            ),
            TisError::ExpectClearedEarly {
                written,
                len,
                status,
            } => write!(
                f,
                "TIS: TPM stopped expecting data after {written} of {len} command bytes (TPM_STS {status:#010x})"
            ),
            TisError::ExpectStillSet { status } => write!(
                f,
                "TIS: TPM still expects data after the last command byte (TPM_STS {status:#010x})"
            ),
            TisError::ResponseTooShort { size } => {
                write!(f, "TIS: response size {size} is shorter than a TPM header")
            }
            TisError::ResponseTooLong { size, capacity } => write!(
                f,
                "TIS: response of {size} bytes does not fit the {capacity}-byte buffer"
            ),
            TisError::ResponseOverrun { status } => write!(
                f,
                "TIS: TPM has more data after the response's last byte (TPM_STS {status:#010x})"
            ),
            TisError::ResponseUnderrun { read, size, status } => write!(
                f,
                "TIS: dataAvail dropped after {read} of {size} response bytes (TPM_STS {status:#010x})"
            ),
        }
    }
}

/// What the interface registers say about the TPM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TisInfo {
    /// TCG vendor id (low half of TPM_DID_VID).
    pub vendor_id: u16,
    /// Device id (high half of TPM_DID_VID).
    pub device_id: u16,
    /// TPM_RID.
    pub revision_id: u8,
    /// TPM_INTERFACE_ID (interface type in bits 0-3: 0 = FIFO, 1 = CRB, 0xF = TIS 1.3).
    pub interface_id: u32,
    /// TPM_INTF_CAPABILITY.
    pub interface_capability: u32,
    /// TPM_ACCESS.tpmEstablishment: false once a dynamic launch has happened.
    pub established: bool,
}

const HEADER_SIZE: usize = 10;

/// The TIS driver bound to one locality.
pub struct Tis<R, C> {
    regs: R,
    clock: C,
    locality: u8,
    timeouts: TisTimeouts,
}

impl<R: TisRegisters, C: Clock> Tis<R, C> {
    /// A driver for `locality` with the default timeouts. Touches no register.
    pub fn new(regs: R, clock: C, locality: u8) -> Result<Self, TisError> {
        Self::with_timeouts(regs, clock, locality, TisTimeouts::default())
    }

    /// A driver for `locality` with explicit timeouts.
    pub fn with_timeouts(
        regs: R,
        clock: C,
        locality: u8,
        timeouts: TisTimeouts,
    ) -> Result<Self, TisError> {
        if locality > MAX_LOCALITY {
            return Err(TisError::InvalidLocality(locality));
        }
        Ok(Tis {
            regs,
            clock,
            locality,
            timeouts,
        })
    }

    /// The locality this driver uses.
    pub fn locality(&self) -> u8 {
        self.locality
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> TisTimeouts {
        self.timeouts
    }

    /// Gives back the register access and clock.
    pub fn into_parts(self) -> (R, C) {
        (self.regs, self.clock)
    }

    /// Reads the identification registers; fails when nothing answers at the page.
    pub fn probe(&mut self) -> Result<TisInfo, TisError> {
        let access = self.wait_access_valid()?;
        let did_vid = self.regs.read32(self.locality, reg::DID_VID);
        if did_vid == u32::MAX {
            return Err(TisError::NoDevice {
                locality: self.locality,
            });
        }
        Ok(TisInfo {
            vendor_id: did_vid as u16,
            device_id: (did_vid >> 16) as u16,
            revision_id: self.regs.read8(self.locality, reg::RID),
            interface_id: self.regs.read32(self.locality, reg::INTERFACE_ID),
            interface_capability: self.regs.read32(self.locality, reg::INTF_CAPABILITY),
            established: access & access::ESTABLISHMENT != 0,
        })
    }

    /// Whether this locality is the active one.
    pub fn is_active(&mut self) -> Result<bool, TisError> {
        let value = self.wait_access_valid()?;
        Ok(value & access::ACTIVE_LOCALITY != 0)
    }

    /// Requests the locality and waits (TIMEOUT_A) until the TPM grants it.
    pub fn request_locality(&mut self) -> Result<(), TisError> {
        let value = self.wait_access_valid()?;
        if value & access::ACTIVE_LOCALITY != 0 {
            return Ok(());
        }
        self.regs
            .write8(self.locality, reg::ACCESS, access::REQUEST_USE);
        let granted = access::VALID | access::ACTIVE_LOCALITY;
        match self.wait_access(WaitFor::LocalityGranted, |a| a & granted == granted) {
            Ok(_) => Ok(()),
            Err(TisError::Timeout { last_value, .. }) => Err(TisError::LocalityNotGranted {
                locality: self.locality,
                access: last_value as u8,
            }),
            Err(other) => Err(other),
        }
    }

    /// Relinquishes the locality and waits (TIMEOUT_A) until it is no longer active.
    pub fn relinquish_locality(&mut self) -> Result<(), TisError> {
        let value = self.wait_access_valid()?;
        if value & access::ACTIVE_LOCALITY == 0 {
            return Ok(());
        }
        self.regs
            .write8(self.locality, reg::ACCESS, access::ACTIVE_LOCALITY);
        self.wait_access(WaitFor::LocalityReleased, |a| {
            a & access::VALID != 0 && a & access::ACTIVE_LOCALITY == 0
        })
        .map(|_| ())
    }

    /// Sends `command` and reads the response into `response`; returns the response length.
    /// The locality must be active.
    pub fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TisError> {
        if command.len() < HEADER_SIZE
            || u32::from_be_bytes([command[2], command[3], command[4], command[5]]) as usize
                != command.len()
        {
            return Err(TisError::MalformedCommand { len: command.len() });
        }
        let access_value = self.wait_access_valid()?;
        if access_value & access::ACTIVE_LOCALITY == 0 {
            return Err(TisError::LocalityNotActive {
                locality: self.locality,
                access: access_value,
            });
        }
        let code = u32::from_be_bytes([command[6], command[7], command[8], command[9]]);
        let result = self.exchange(command, code, response);
        // Back to idle on success and on every failure (aborts a command in flight).
        self.regs
            .write32(self.locality, reg::STS, sts::COMMAND_READY);
        result
    }

    fn exchange(
        &mut self,
        command: &[u8],
        code: u32,
        response: &mut [u8],
    ) -> Result<usize, TisError> {
        self.make_ready()?;
        self.write_command(command)?;
        self.regs.write32(self.locality, reg::STS, sts::GO);
        let duration = if is_key_generation(code) {
            self.timeouts.key_generation_us
        } else {
            self.timeouts.command_us
        };
        let want = sts::VALID | sts::DATA_AVAIL;
        self.wait_sts(WaitFor::CommandCompletion, duration, |s| s & want == want)?;
        self.read_response(response)
    }

    fn make_ready(&mut self) -> Result<(), TisError> {
        let status = self.read_sts()?;
        if status & sts::COMMAND_READY != 0 {
            return Ok(());
        }
        self.regs
            .write32(self.locality, reg::STS, sts::COMMAND_READY);
        self.wait_sts(WaitFor::CommandReady, self.timeouts.b_us, |s| {
            s & sts::COMMAND_READY != 0
        })
        .map(|_| ())
    }

    fn write_command(&mut self, command: &[u8]) -> Result<(), TisError> {
        let len = command.len();
        let mut written = 0;
        // Everything but the last byte in bursts; Expect must stay set throughout.
        while written < len - 1 {
            let burst = self.burst_count()?;
            let chunk = burst.min(len - 1 - written);
            for byte in &command[written..written + chunk] {
                self.regs.write8(self.locality, reg::DATA_FIFO, *byte);
            }
            written += chunk;
            let status = self.wait_sts_valid()?;
            if status & sts::EXPECT == 0 {
                return Err(TisError::ExpectClearedEarly {
                    written,
                    len,
                    status,
                });
            }
        }
        self.burst_count()?;
        self.regs
            .write8(self.locality, reg::DATA_FIFO, command[len - 1]);
        let status = self.wait_sts_valid()?;
        if status & sts::EXPECT != 0 {
            return Err(TisError::ExpectStillSet { status });
        }
        Ok(())
    }

    fn read_response(&mut self, response: &mut [u8]) -> Result<usize, TisError> {
        if response.len() < HEADER_SIZE {
            return Err(TisError::ResponseTooLong {
                size: HEADER_SIZE as u32,
                capacity: response.len(),
            });
        }
        self.read_fifo(&mut response[..HEADER_SIZE], 0, HEADER_SIZE)?;
        let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]);
        if (size as usize) < HEADER_SIZE {
            return Err(TisError::ResponseTooShort { size });
        }
        if size as usize > response.len() {
            return Err(TisError::ResponseTooLong {
                size,
                capacity: response.len(),
            });
        }
        let size = size as usize;
        self.read_fifo(&mut response[HEADER_SIZE..size], HEADER_SIZE, size)?;
        let status = self.wait_sts_valid()?;
        if status & sts::DATA_AVAIL != 0 {
            return Err(TisError::ResponseOverrun { status });
        }
        Ok(size)
    }

    /// Reads `out.len()` bytes; `done` bytes of the `size`-byte response were read before.
    fn read_fifo(&mut self, out: &mut [u8], done: usize, size: usize) -> Result<(), TisError> {
        let mut read = 0;
        while read < out.len() {
            let status = self.wait_sts_valid()?;
            if status & sts::DATA_AVAIL == 0 {
                return Err(TisError::ResponseUnderrun {
                    read: done + read,
                    size,
                    status,
                });
            }
            let burst = self.burst_count()?;
            let chunk = burst.min(out.len() - read);
            for byte in &mut out[read..read + chunk] {
                *byte = self.regs.read8(self.locality, reg::DATA_FIFO);
            }
            read += chunk;
        }
        Ok(())
    }

    fn burst_count(&mut self) -> Result<usize, TisError> {
        let status = self.wait_sts(WaitFor::BurstCount, self.timeouts.d_us, |s| {
            (s >> sts::BURST_SHIFT) & sts::BURST_MASK != 0
        })?;
        Ok(((status >> sts::BURST_SHIFT) & sts::BURST_MASK) as usize)
    }

    fn read_sts(&mut self) -> Result<u32, TisError> {
        let status = self.regs.read32(self.locality, reg::STS);
        if status == u32::MAX {
            // An inactive locality's TPM_STS reads all ones: the locality was lost (seized), or
            // there is no TPM at all.
            let access_value = self.read_access()?;
            return Err(TisError::LocalityNotActive {
                locality: self.locality,
                access: access_value,
            });
        }
        Ok(status)
    }

    fn wait_sts_valid(&mut self) -> Result<u32, TisError> {
        self.wait_sts(WaitFor::StsValid, self.timeouts.c_us, |s| {
            s & sts::VALID != 0
        })
    }

    fn wait_sts(
        &mut self,
        waiting_for: WaitFor,
        timeout_us: u64,
        done: impl Fn(u32) -> bool,
    ) -> Result<u32, TisError> {
        let start = self.clock.now_micros();
        loop {
            let status = self.read_sts()?;
            if done(status) {
                return Ok(status);
            }
            let waited_us = self.clock.now_micros().saturating_sub(start);
            if waited_us >= timeout_us {
                return Err(TisError::Timeout {
                    locality: self.locality,
                    waiting_for,
                    waited_us,
                    last_value: status,
                });
            }
            self.clock.delay_micros(self.timeouts.poll_us);
        }
    }

    fn read_access(&mut self) -> Result<u8, TisError> {
        let value = self.regs.read8(self.locality, reg::ACCESS);
        if value == u8::MAX {
            return Err(TisError::NoDevice {
                locality: self.locality,
            });
        }
        Ok(value)
    }

    fn wait_access_valid(&mut self) -> Result<u8, TisError> {
        self.wait_access(WaitFor::AccessValid, |a| a & access::VALID != 0)
    }

    fn wait_access(
        &mut self,
        waiting_for: WaitFor,
        done: impl Fn(u8) -> bool,
    ) -> Result<u8, TisError> {
        let start = self.clock.now_micros();
        loop {
            let value = self.read_access()?;
            if done(value) {
                return Ok(value);
            }
            let waited_us = self.clock.now_micros().saturating_sub(start);
            if waited_us >= self.timeouts.a_us {
                return Err(TisError::Timeout {
                    locality: self.locality,
                    waiting_for,
                    waited_us,
                    last_value: u32::from(value),
                });
            }
            self.clock.delay_micros(self.timeouts.poll_us);
        }
    }
}

/// CreatePrimary (0x131), Create (0x153), CreateLoaded (0x191) may generate a key.
fn is_key_generation(code: u32) -> bool {
    matches!(code, 0x131 | 0x153 | 0x191)
}

impl<R: TisRegisters, C: Clock> crate::transport::TpmTransport for Tis<R, C> {
    type Error = TisError;

    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TisError> {
        Tis::transmit(self, command, response)
    }

    /// Backs off 20 ms, 40 ms, ... up to 1.28 s (Linux's TPM2 retry policy is similar).
    fn before_retry(&mut self, attempt: u32) {
        let micros = 20_000u32 << attempt.min(6);
        let start = self.clock.now_micros();
        while self.clock.now_micros().saturating_sub(start) < u64::from(micros) {
            self.clock.delay_micros(micros);
        }
    }
}
