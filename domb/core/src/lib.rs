//! domB's logic, free of hardware: launch-configuration parsing (device tree), the launch policy,
//! the PVH ELF loading plan, the PVH start-info builder, and the domain build planner that turns
//! all of it into protocol v1 requests. The `slipway-domb` binary is the thin glue around it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod config;
pub mod dtb;
pub mod elf_load;
pub mod launch;
pub mod measurements;
pub mod planner;
pub mod policy;
pub mod program;
pub mod start_info;

#[cfg(test)]
mod tests;
