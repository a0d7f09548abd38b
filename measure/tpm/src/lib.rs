//! Slipway's TPM 2.0 stack: a TIS (PC Client PTP FIFO) driver over a register trait, TPM2
//! command helpers over any [`TpmTransport`] (marshaling by `tpm2-protocol`), per-command
//! counters, and (feature `verify`, std) the host-side quote verification.
//!
//! See README.md for the TIS sequence, the timeouts and what was verified against swtpm.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod alg;
pub mod boot_record;
pub mod command;
pub mod nv;
pub mod rc;
pub mod tis;
pub mod transport;
#[cfg(feature = "verify")]
pub mod verify;

#[cfg(test)]
mod boot_record_tests;
#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod tis_tests;

pub use alg::{AlgId, Bank, BankSet, Digest, DigestList, HashAlg, PcrMask};
pub use command::{
    AkTemplate, AttestationKey, CommandCounts, CommandError, Hierarchy, PcrAllocation, PcrValues,
    Quote, StartupType, Tpm,
};
pub use rc::ResponseCode;
pub use tis::{Clock, Tis, TisError, TisInfo, TisRegisters, TisTimeouts, WaitFor};
/// Command codes, as carried by [`CommandError`] and [`CommandCounts`].
pub use tpm2_protocol::data::TpmCc;
pub use transport::TpmTransport;
