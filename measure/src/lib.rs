//! Slipway's measurement core: hash banks, PCR model, the TCG crypto-agile event log and the
//! Slipway event types. The plan it implements is `docs/measurement.md`.
//!
//! Everything here is `no_std` and allocation-free: the hypervisor writes its log into a fixed
//! buffer, domB hashes modules for every active bank in one pass, and the host tools
//! (`cargo xtask predict` / `verify`, with the `std` feature) replay the same code.
//!
//! - [`alg`]: TPM algorithm ids, the four hash algorithms Slipway computes, bank sets.
//! - [`digest`]: a digest value (algorithm + up to 64 bytes) and a per-bank digest list.
//! - [`hash`]: the multi-bank hasher and the digests Slipway extends (event data, bound modules,
//!   caps for banks Slipway cannot hash).
//! - [`pcr`]: PCR values per bank, extend, initial values, locality rules.
//! - [`log`]: the TCG PC Client crypto-agile event log: header, writer (new or appending to a
//!   foreign log), parser, replay.
//! - [`events`]: Slipway's event types, PCR assignments and event-data encodings.
//!
//! ```
//! use slipway_measure::events::*;
//! use slipway_measure::hash::BoundModuleHasher;
//! use slipway_measure::{BankSet, EventLog, InitialState, LogHeader, LogWriter};
//!
//! let banks = BankSet::all_supported(); // the TPM's active banks, in its order
//! let mut buf = [0u8; 16 * 1024];
//! let mut log = LogWriter::new(&mut buf, &LogHeader::slipway(banks))?;
//! // An event a verifier interprets: its digests are computed from the bytes written.
//! let kind = SlipwayEvent::LaunchKind(LaunchKind::Emulated);
//! let digests = log.append_slipway(PCR_BUILD_INPUTS, &kind, None)?;
//! assert_eq!(digests.len(), 4); // extend PCR19 with these: one PCR_Extend, every bank
//! // A boot module bound to its name: the image is read once for every bank.
//! let mut hasher = BoundModuleHasher::new(&banks, b"hello");
//! hasher.update(b"image bytes");
//! let (bound, _image_digests) = hasher.finalize();
//! let module = SlipwayEvent::BootModule(ModuleRecord { name: b"hello", size: 11 });
//! log.append_slipway(PCR_BOOT_MODULES, &module, Some(&bound))?;
//! // Replay, as a verifier does.
//! let pcrs = EventLog::parse(log.as_bytes())?.replay(InitialState::DynamicLaunch)?;
//! assert!(pcrs.value(PCR_BOOT_MODULES, slipway_measure::HashAlg::Sha256)?.is_some());
//! # Ok::<(), slipway_measure::Error>(())
//! ```
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alg;
pub mod digest;
mod error;
pub mod events;
pub mod hash;
pub mod log;
pub mod pcr;

pub use alg::{AlgId, Bank, BankSet, HashAlg, MAX_BANKS};
pub use digest::{Digest, DigestList, MAX_DIGEST_SIZE};
pub use error::Error;
pub use hash::{BoundModuleHasher, MultiHasher};
pub use log::{Event, EventLog, LogHeader, LogWriter};
pub use pcr::{InitialState, PcrBanks};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests;
