//! The event-log windows of control domains (`docs/abi.md`, "Event-log windows").
//!
//! At hand-off the hypervisor maps two windows read-only into every domain with the control
//! capability: the finished Slipway event log at [`SLIPWAY_LOG_GPA`] and the firmware's own log
//! (from the ACPI TPM2 table, unchanged) at [`FIRMWARE_LOG_GPA`]. domB reserves both in the
//! domain's PVH memory map (E820 type 2) and lists them as start-info modules with the command
//! lines [`SLIPWAY_LOG_MODULE`] and [`FIRMWARE_LOG_MODULE`], each [`LOG_WINDOW_SIZE`] bytes long.
//!
//! Each window starts with a 16-byte [`LogWindowDescriptor`]: magic `SLWYLOG\0`, u32 length of
//! the log that follows (little-endian), u32 0. Length 0 means "no log"; the rest of the window
//! after the log is zero.
//!
//! Placement: the windows sit at 0xF000_0000, in the hole of every domain's memory layout
//! (`platform::DomainRam`: RAM below `DOMAIN_RAM_HOLE_START`, 3 GiB, and above 4 GiB) below the
//! platform MMIO (`platform::DOMAIN_MMIO_START`): fixed, whatever the domain's size, and below
//! 4 GiB so that a 32-bit PVH kernel and the guest runtime's identity map of the first 4 GiB
//! reach them.

use core::fmt;

/// Guest-physical address of the Slipway event-log window (4 KiB aligned).
pub const SLIPWAY_LOG_GPA: u64 = 0xF000_0000;
/// Guest-physical address of the firmware event-log window (4 KiB aligned).
pub const FIRMWARE_LOG_GPA: u64 = SLIPWAY_LOG_GPA + LOG_WINDOW_SIZE;
/// Size of each window, descriptor included (256 KiB, a multiple of 4 KiB).
pub const LOG_WINDOW_SIZE: u64 = 256 * 1024;
/// Size of the descriptor at the start of each window.
pub const LOG_DESCRIPTOR_LEN: usize = 16;
/// Most log bytes a window carries after its descriptor.
pub const LOG_WINDOW_CAPACITY: usize = LOG_WINDOW_SIZE as usize - LOG_DESCRIPTOR_LEN;
/// Magic of the descriptor.
pub const LOG_WINDOW_MAGIC: [u8; 8] = *b"SLWYLOG\0";
/// Start-info module command line of the Slipway log window.
pub const SLIPWAY_LOG_MODULE: &str = "slipway-event-log";
/// Start-info module command line of the firmware log window.
pub const FIRMWARE_LOG_MODULE: &str = "firmware-event-log";

use crate::platform::{DOMAIN_MMIO_START, DOMAIN_RAM_HOLE_START};

const _: () = assert!(SLIPWAY_LOG_GPA.is_multiple_of(4096));
const _: () = assert!(LOG_WINDOW_SIZE.is_multiple_of(4096));
const _: () = assert!(SLIPWAY_LOG_GPA >= DOMAIN_RAM_HOLE_START);
const _: () = assert!(FIRMWARE_LOG_GPA + LOG_WINDOW_SIZE <= DOMAIN_MMIO_START);

/// The descriptor at the start of a log window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogWindowDescriptor {
    /// Length of the log after the descriptor; 0 = no log.
    pub length: u32,
}

/// Why a window's descriptor is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWindowError {
    /// the window is shorter than its 16-byte descriptor
    TooShort,
    /// the descriptor's magic is not `SLWYLOG\0`
    BadMagic,
    /// the descriptor's reserved word is not 0
    ReservedNotZero,
    /// the log length runs past the window
    LengthPastWindow,
}

impl fmt::Display for LogWindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooShort => "the window is shorter than its 16-byte descriptor",
            Self::BadMagic => "the descriptor's magic is not SLWYLOG\\0",
            Self::ReservedNotZero => "the descriptor's reserved word is not 0",
            Self::LengthPastWindow => "the log length runs past the window",
        })
    }
}

impl LogWindowDescriptor {
    /// The descriptor of a window without a log.
    pub const NONE: Self = Self { length: 0 };

    /// The descriptor for a log of `len` bytes, if it fits a window.
    pub fn for_log(len: usize) -> Result<Self, LogWindowError> {
        if len > LOG_WINDOW_CAPACITY {
            return Err(LogWindowError::LengthPastWindow);
        }
        Ok(Self { length: len as u32 })
    }

    /// The descriptor's 16 bytes.
    pub fn encode(&self) -> [u8; LOG_DESCRIPTOR_LEN] {
        let mut out = [0u8; LOG_DESCRIPTOR_LEN];
        out[..8].copy_from_slice(&LOG_WINDOW_MAGIC);
        out[8..12].copy_from_slice(&self.length.to_le_bytes());
        out
    }

    /// Decodes the descriptor at the start of `window` (the whole window, or at least as much of
    /// it as the log needs) and checks that the log fits in `window`.
    pub fn decode(window: &[u8]) -> Result<Self, LogWindowError> {
        let header = window
            .get(..LOG_DESCRIPTOR_LEN)
            .ok_or(LogWindowError::TooShort)?;
        if header[..8] != LOG_WINDOW_MAGIC {
            return Err(LogWindowError::BadMagic);
        }
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        if word(12) != 0 {
            return Err(LogWindowError::ReservedNotZero);
        }
        let length = word(8);
        if length as usize > window.len() - LOG_DESCRIPTOR_LEN {
            return Err(LogWindowError::LengthPastWindow);
        }
        Ok(Self { length })
    }

    /// The log in `window` (`None` when the descriptor says "no log").
    pub fn log_in(window: &[u8]) -> Result<Option<&[u8]>, LogWindowError> {
        let descriptor = Self::decode(window)?;
        let end = LOG_DESCRIPTOR_LEN + descriptor.length as usize;
        Ok((descriptor.length != 0).then(|| &window[LOG_DESCRIPTOR_LEN..end]))
    }
}
