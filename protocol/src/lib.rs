//! Slipway's hypercall ABI: the messages the boot domain (domB, the client) and the hypervisor
//! (the server) exchange, their wire encoding, error codes, the boot-information page, and the
//! register convention of the hypercall instruction.
//!
//! The full contract, including the server's copy-once rule and the error-code table, is in
//! `docs/abi.md`; this page summarises it.
//!
//! # Transport (version independent)
//!
//! A call is one `VMMCALL` (AMD, bytes `0f 01 d9`) or `VMCALL` (Intel, bytes `0f 01 c1`); both
//! are [`HYPERCALL_INSTRUCTION_LEN`] = 3 bytes long, so the hypervisor advances `rip` by 3.
//!
//! | register | on entry | on return |
//! |---|---|---|
//! | `rax` | call number: [`CALL_MESSAGE`] | [`TransportStatus`] code (0 = a response is in the buffer) |
//! | `rdi` | guest-physical address of the caller's hypercall buffer: one 4 KiB-aligned page inside the caller's own RAM | preserved |
//! | `rsi` | request length in bytes, `1..=HYPERCALL_BUFFER_SIZE` | response length in bytes (0 unless status is 0) |
//! | others | | preserved |
//!
//! In a 32-bit guest mode the hypervisor uses only the low 32 bits of each register; every call
//! number and status fits in 32 bits.
//!
//! # Messages
//!
//! Every message (request, response, boot-information page) starts with a fixed 6-byte
//! [`Header`]: a magic (`u32`, little endian) naming the message kind and the ABI version
//! (`u16`, little endian). The body after it is [postcard](https://docs.rs/postcard)-encoded and
//! defined per version: see [`v1`]. A `v2` module can sit beside `v1`; [`Header::peek`] tells a
//! server which one to use.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
#[macro_use]
extern crate std;

pub mod boot_modules;
mod bounded;
mod codec;
pub mod platform;
pub mod recovery;
pub mod v1;

pub use bounded::{BoundedVec, Bytes, CapacityError};
pub use codec::{DecodeError, EncodeError, HEADER_LEN, Header};

/// Size of a hypercall buffer: one page of the caller's RAM. Every encoded request and response
/// of every ABI version fits in it (checked at compile time).
pub const HYPERCALL_BUFFER_SIZE: usize = 4096;

/// Magic of a request message: the bytes `SWRQ`.
pub const REQUEST_MAGIC: u32 = u32::from_le_bytes(*b"SWRQ");
/// Magic of a response message: the bytes `SWRS`.
pub const RESPONSE_MAGIC: u32 = u32::from_le_bytes(*b"SWRS");
/// Magic of the boot-information page given to domB: the bytes `SWBI`.
pub const BOOT_INFO_MAGIC: u32 = u32::from_le_bytes(*b"SWBI");

/// `rax` value of the message call: the only call number; the request itself says what to do.
pub const CALL_MESSAGE: u64 = 0x534c_5701;
const _: () = assert!(CALL_MESSAGE > 0xffff && CALL_MESSAGE <= u32::MAX as u64);

/// Length in bytes of both `VMMCALL` and `VMCALL`.
pub const HYPERCALL_INSTRUCTION_LEN: u64 = 3;
/// Encoding of AMD's `VMMCALL`.
pub const VMMCALL_BYTES: [u8; 3] = [0x0f, 0x01, 0xd9];
/// Encoding of Intel's `VMCALL`.
pub const VMCALL_BYTES: [u8; 3] = [0x0f, 0x01, 0xc1];

/// What the hypervisor returns in `rax`. Anything but [`TransportStatus::Ok`] means the buffer
/// was not read and no response was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
#[non_exhaustive]
pub enum TransportStatus {
    /// A response envelope of `rsi` bytes is in the buffer.
    Ok = 0,
    /// `rax` is not a known call number.
    UnknownCall = 0x534c_e001,
    /// The buffer page (`rdi`) is not entirely inside the caller's RAM.
    BadBufferAddress = 0x534c_e002,
    /// The buffer address (`rdi`) is not 4 KiB aligned.
    BadBufferAlignment = 0x534c_e003,
    /// The request length (`rsi`) is zero or larger than [`HYPERCALL_BUFFER_SIZE`].
    BadLength = 0x534c_e004,
}

impl TransportStatus {
    /// The `rax` value of this status.
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// The status for an `rax` value, `None` for an unknown one.
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::Ok,
            0x534c_e001 => Self::UnknownCall,
            0x534c_e002 => Self::BadBufferAddress,
            0x534c_e003 => Self::BadBufferAlignment,
            0x534c_e004 => Self::BadLength,
            _ => return None,
        })
    }

    /// Checks the buffer registers of a call against the caller's RAM (of `ram_bytes`, laid out
    /// as [`platform::DomainRam`] says: never in the hole below 4 GiB): the hypervisor's first step. Returns the status to report, [`TransportStatus::Ok`] if the call may proceed.
    pub const fn check_buffer(buffer_gpa: u64, request_len: u64, ram_bytes: u64) -> Self {
        if !buffer_gpa.is_multiple_of(HYPERCALL_BUFFER_SIZE as u64) {
            Self::BadBufferAlignment
        } else if !match platform::DomainRam::new(ram_bytes) {
            Some(ram) => ram.contains(buffer_gpa, HYPERCALL_BUFFER_SIZE as u64),
            None => false,
        } {
            Self::BadBufferAddress
        } else if request_len == 0 || request_len > HYPERCALL_BUFFER_SIZE as u64 {
            Self::BadLength
        } else {
            Self::Ok
        }
    }
}
