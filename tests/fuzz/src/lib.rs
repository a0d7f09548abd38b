//! Slipway's fuzz targets: one per kind of outside input, each a plain function over the input
//! bytes that feeds them to the real parser and asserts what must hold of its answer (a panic is
//! a finding). `cargo xtask fuzz` runs them under libFuzzer (the binaries in `fuzz_targets/`);
//! `cargo test` replays the seed corpus in `corpus/<target>/` through each.
//!
//! | target | input | code under test |
//! |---|---|---|
//! | `hypercall` | sequences of raw and structured requests from several callers | `slipway-hv-core`'s dispatcher over a platform of hv-core's frame allocator, guest memory and nested tables |
//! | `launch_config` | device-tree blob | `slipway-domb-core`: config parse, policy, build plans, executed against the dispatcher |
//! | `multiboot` | multiboot2 boot information | `multiboot2::BootInformation::load` and the accessors the pre-launch stage uses, then `slipway-hv-core::memmap::validate_memory_map` |
//! | `elf` | ELF image | `slipway-hv-core::pvh::plan` (domB) and `slipway-domb-core::elf_load::plan_load` (domains) |
//! | `tpm_tis` | register values a TPM or bus returns | `slipway-tpm`'s TIS driver and the command layer over it |
//! | `tpm_commands` | TPM responses | `slipway-tpm`'s command layer (`Tpm<T>`) |
//! | `event_log` | TCG crypto-agile event log | `slipway-measure`'s log parser, replay and Slipway event codec |
//! | `transcript` | the attest domain's console transcript | `xtask verify`'s transcript parser and its checks |
//! | `lapic` | a guest's local-APIC register traffic and interrupt events | `slipway-hv-core::lapic::LocalApic` |
// One exception, `multiboot::load`: `multiboot2` offers no safe way to read boot information
// from a byte buffer.
#![deny(unsafe_code)]

pub mod elf;
pub mod event_log;
pub mod hypercall;
pub mod lapic;
pub mod launch_config;
pub mod multiboot;
pub mod tpm_commands;
pub mod tpm_tis;
pub mod transcript;

/// A target: one input in, a panic if anything it checks does not hold.
pub type Target = fn(&[u8]);

/// Every target: its name (the binary's and the corpus directory's) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("hypercall", hypercall::run),
    ("launch_config", launch_config::run),
    ("multiboot", multiboot::run),
    ("elf", elf::run),
    ("tpm_tis", tpm_tis::run),
    ("tpm_commands", tpm_commands::run),
    ("event_log", event_log::run),
    ("transcript", transcript::run),
    ("lapic", lapic::run),
];

#[cfg(test)]
mod corpus_tests;
