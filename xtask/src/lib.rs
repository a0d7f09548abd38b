//! Slipway's harness as a library: `cargo xtask` (the binary in `main.rs`) and the QEMU
//! integration tests in `tests/` both use it.
//!
//! - [`builder`]: builds the freestanding binaries and assembles a bundle into a GRUB ISO
//!   ([`ship`]: stripped binaries and their debug files; [`iso`]: the reproducible ISO).
//! - [`runner`]: boots an ISO under QEMU with swtpm (or under bochs, [`bochs`]) and returns a
//!   [`runner::RunOutcome`].
//! - [`setup`]: installs what a fresh Debian machine lacks.
//! - [`predict`], [`verify`], [`refstate`], [`logview`], [`fleet`], [`keylime`]: the expected
//!   values of a bundle, the check of a run, and the same evidence for the tools fleets run
//!   (Keylime, tpm2-tools).
//! - [`bundle`], [`grub`], [`console`], [`verdict`], [`cli`]: the pure parts, unit-tested.
#![forbid(unsafe_code)]

pub mod bench;
pub mod bochs;
pub mod builder;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod console;
pub mod fleet;
pub mod fuzz;
pub mod grub;
pub mod iso;
pub mod keylime;
pub mod launch;
pub mod linux_initramfs;
pub mod linux_kernel;
pub mod logview;
pub mod predict;
pub mod procs;
pub mod refstate;
pub mod runner;
pub mod setup;
pub mod ship;
pub mod txt;
pub mod verdict;
pub mod verify;
pub mod workspace;

pub use builder::{BuiltBundle, BuiltModule, ShippedFile, build_bundle};
pub use runner::{ConsoleInput, DirectKernel, Emulator, Firmware, RunConfig, RunOutcome, Tpm, run};
pub use verdict::Verdict;
pub use workspace::Workspace;
