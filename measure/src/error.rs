//! The crate's error type. Each variant's doc comment is its message.

use crate::alg::AlgId;
use core::fmt;

/// Why a measurement operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The digest's length does not match its algorithm's digest size.
    DigestLength {
        /// The digest's algorithm.
        alg: AlgId,
        /// The length given.
        len: usize,
        /// The algorithm's digest size.
        expected: usize,
    },
    /// The digest size exceeds the 64-byte maximum Slipway supports.
    DigestTooLong {
        /// The digest's algorithm.
        alg: AlgId,
        /// The size given.
        len: usize,
    },
    /// The algorithm has no known digest size; give the size explicitly (a log header does).
    UnknownDigestSize(AlgId),
    /// The algorithm is not one Slipway can hash (SHA-1, SHA-256, SHA-384, SHA-512).
    UnsupportedAlgorithm(AlgId),
    /// More banks than the 8 a bank set or digest list can hold.
    TooManyBanks,
    /// A bank set needs at least one bank.
    NoBanks,
    /// The algorithm appears twice in one bank set or digest list.
    DuplicateBank(AlgId),
    /// The digest list lacks a digest for an active bank.
    MissingBank(AlgId),
    /// The digest list has a digest for a bank the log (or PCR model) does not have.
    UnexpectedBank(AlgId),
    /// PCR index out of range (a PC Client TPM has PCR 0-23).
    PcrIndex(u32),
    /// The log buffer is full: the event needs more bytes than are left.
    LogFull {
        /// Bytes the event needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// The log ends in the middle of a structure.
    Truncated {
        /// Byte offset in the log where the structure that does not fit starts.
        offset: usize,
        /// Which field or structure is cut off.
        what: &'static str,
    },
    /// The log is malformed.
    Malformed {
        /// Byte offset in the log of the offending field.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A field is too long for its encoding.
    FieldTooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The most the encoding allows.
        max: usize,
    },
    /// The output buffer is too small for the encoded event data.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The event goes into another PCR under the measurement plan.
    WrongPcr {
        /// The event type.
        event_type: u32,
        /// The PCR asked for.
        pcr: u32,
    },
    /// Digests were passed for an event whose digest is computed from its data, or not passed
    /// for one whose digest is not.
    DigestRule {
        /// The event type.
        event_type: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// The event data is not a valid encoding for its event type.
    BadEventData {
        /// The event type.
        event_type: u32,
        /// What is wrong.
        what: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::DigestLength { alg, len, expected } => write!(
                f,
                "digest of {len} bytes does not match {alg}'s digest size of {expected} bytes"
            ),
            Error::DigestTooLong { alg, len } => write!(
                f,
                "{alg} digest size of {len} bytes exceeds the 64-byte maximum Slipway supports"
            ),
            Error::UnknownDigestSize(alg) => write!(f, "algorithm {alg} has no known digest size"),
            Error::UnsupportedAlgorithm(alg) => write!(
                f,
                "algorithm {alg} is not one Slipway can hash (sha1, sha256, sha384, sha512)"
            ),
            Error::TooManyBanks => f.write_str("more than 8 banks"),
            Error::NoBanks => f.write_str("a bank set needs at least one bank"),
            Error::DuplicateBank(alg) => write!(f, "bank {alg} appears twice"),
            Error::MissingBank(alg) => write!(f, "no digest for active bank {alg}"),
            Error::UnexpectedBank(alg) => {
                write!(f, "digest for bank {alg}, which is not an active bank here")
            }
            Error::PcrIndex(pcr) => write!(f, "PCR index {pcr} out of range 0-23"),
            Error::LogFull { needed, available } => write!(
                f,
                "event log buffer full: the event needs {needed} bytes, {available} are left"
            ),
            Error::Truncated { offset, what } => {
                write!(
                    f,
                    "event log truncated: {what} at offset {offset} is cut off"
                )
            }
            Error::Malformed { offset, what } => {
                write!(f, "malformed event log at offset {offset}: {what}")
            }
            Error::FieldTooLong { what, len, max } => {
                write!(
                    f,
                    "{what} of {len} bytes is longer than the {max} bytes allowed"
                )
            }
            Error::BufferTooSmall { needed, available } => write!(
                f,
                "output buffer too small: need {needed} bytes, have {available}"
            ),
            Error::WrongPcr { event_type, pcr } => write!(
                f,
                "event type {event_type:#x} does not go into PCR{pcr} under the measurement plan"
            ),
            Error::DigestRule { event_type, what } => {
                write!(f, "wrong digests for event type {event_type:#x}: {what}")
            }
            Error::BadEventData { event_type, what } => {
                write!(f, "bad event data for event type {event_type:#x}: {what}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
