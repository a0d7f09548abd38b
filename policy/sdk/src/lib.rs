//! The launch-policy host API, version 1 (`docs/launch-policy.md`): the one definition of the
//! contract between domB and a policy program, used by both sides.
//!
//! A policy program is a WebAssembly module. It imports three functions from module
//! [`IMPORT_MODULE`] and exports its linear memory as `memory` and one entry function
//! [`ENTRY_EXPORT`] `() -> i32`:
//!
//! - `input_len() -> i32`: the length of the encoded [`Input`];
//! - `input_read(dst: i32)`: copies the encoded [`Input`] to `dst` in the program's memory;
//! - `output(ptr: i32, len: i32)`: hands the encoded [`Output`] to the host (exactly once).
//!
//! The entry returns 0 after calling `output`; anything else, a trap, running out of fuel or
//! memory, or an output that does not decode or does not make sense is the measured decision
//! "policy failed", which starts only the recovery domains.
//!
//! The encodings are little-endian and length-prefixed ([`Input::encode`], [`Output::decode`]
//! and their twins); both start with [`API_VERSION`].
//!
//! Programs written in Rust use [`policy!`] on `wasm32-unknown-unknown`: it provides the
//! entry, the imports, an allocator and the panic handler (a panic traps).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod codec;
pub mod types;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

pub use codec::DecodeError;
pub use types::*;

/// The version of the host API this crate speaks. The encoded input and output start with it;
/// the host refuses an output of another version.
pub const API_VERSION: u32 = 1;
/// The import module of the host functions.
pub const IMPORT_MODULE: &str = "slipway_policy";
/// The host function that gives the length of the encoded input.
pub const IMPORT_INPUT_LEN: &str = "input_len";
/// The host function that copies the encoded input into the program's memory.
pub const IMPORT_INPUT_READ: &str = "input_read";
/// The host function that takes the encoded output.
pub const IMPORT_OUTPUT: &str = "output";
/// The program's entry function, `() -> i32`.
pub const ENTRY_EXPORT: &str = "slipway_policy_v1";
/// The program's exported linear memory.
pub const MEMORY_EXPORT: &str = "memory";
/// Longest string (name, subject, reason) in the encodings, in bytes.
pub const MAX_STRING_LEN: usize = 255;
/// Most decisions one output may carry.
pub const MAX_DECISIONS: usize = 32;

/// Declares a Rust function `fn(&Input) -> Output` as the policy program's entry. On
/// `wasm32-unknown-unknown` it exports [`ENTRY_EXPORT`]; elsewhere it does nothing, so the
/// program's crate also builds (and its logic is tested) on the host.
#[macro_export]
macro_rules! policy {
    ($decide:path) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn slipway_policy_v1() -> i32 {
            $crate::wasm::run($decide)
        }
    };
}
