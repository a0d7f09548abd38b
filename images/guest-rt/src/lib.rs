//! Shared runtime of every Slipway guest image (domB and the demo and test guests), for
//! `x86_64-unknown-none`:
//!
//! - a PVH ELF note (`XEN_ELFNOTE_PHYS32_ENTRY`) and the 32-bit entry that switches to long mode
//!   with a static identity map of the first 4 GiB (2 MiB pages), one stack per vCPU, and calls
//!   the guest's `entry!` function on every vCPU;
//! - the console on the emulated 16550 at 0x3f8 (`print!`, `println!`);
//! - the hypercall wrapper (`VMMCALL` on AMD, `VMCALL` on Intel) speaking `slipway-protocol` v1;
//! - a panic handler that prints the panic and shuts the domain down with failure;
//! - a bump heap for `alloc`.
//!
//! The request/response exchange is `slipway_protocol::v1::call`; the hypercall module only
//! supplies the instruction. The pure parts (start-info parsing, command-line words) build and
//! test on the host; the hardware glue is compiled only for `target_os = "none"`.
#![no_std]

pub mod cmdline;
pub mod pvh;

#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
pub mod hypercall;
#[cfg(target_os = "none")]
pub mod memory;
#[cfg(target_os = "none")]
mod panic;

#[cfg(target_os = "none")]
pub use entry::{Boot, MAX_CPUS};

/// Image bounds from the linker script (for guests that want to know their own footprint).
#[cfg(target_os = "none")]
pub fn image_range() -> core::ops::Range<u64> {
    unsafe extern "C" {
        static __slipway_image_start: u8;
        static __slipway_image_end: u8;
    }
    // Only the addresses of the linker symbols are taken; nothing is read through them.
    let start = (&raw const __slipway_image_start) as u64;
    let end = (&raw const __slipway_image_end) as u64;
    start..end
}
