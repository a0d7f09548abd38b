//! Slipway's harness as a library: `cargo xtask` (the binary in `main.rs`) and the QEMU
//! integration tests in `tests/` both use it.
//!
//! - [`builder`]: builds the freestanding binaries and assembles a bundle into a GRUB ISO.
//! - [`runner`]: boots an ISO under QEMU with swtpm and returns a [`runner::RunOutcome`].
//! - [`setup`]: installs what a fresh Debian machine lacks.
//! - [`bundle`], [`grub`], [`console`], [`verdict`], [`cli`]: the pure parts, unit-tested.
#![forbid(unsafe_code)]

pub mod bench;
pub mod builder;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod console;
pub mod fuzz;
pub mod grub;
pub mod launch;
pub mod predict;
pub mod procs;
pub mod runner;
pub mod setup;
pub mod verdict;
pub mod verify;
pub mod workspace;

pub use builder::{BuiltBundle, BuiltModule, build_bundle};
pub use runner::{ConsoleInput, Firmware, RunConfig, RunOutcome, Tpm, run};
pub use verdict::Verdict;
pub use workspace::Workspace;
