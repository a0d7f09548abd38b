//! Shared runtime of every Slipway guest image (domB and the demo and test guests), for
//! `x86_64-unknown-none` or the host target `x86_64-unknown-linux-gnu` used freestanding (with
//! `--cfg slipway_freestanding`, see `docs/architecture.md`):
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
//! test on the host; the hardware glue is compiled only for `target_os = "none"` or with
//! `slipway_freestanding`.
#![no_std]

// The C runtime symbols of the host target's prebuilt core/alloc (empty on x86_64-unknown-none).
#[cfg(slipway_freestanding)]
extern crate slipway_freestanding as _;

pub mod cmdline;
pub mod pvh;

#[cfg(any(target_os = "none", slipway_freestanding))]
pub mod console;
#[cfg(any(target_os = "none", slipway_freestanding))]
mod entry;
#[cfg(any(target_os = "none", slipway_freestanding))]
mod heap;
#[cfg(any(target_os = "none", slipway_freestanding))]
pub mod hypercall;
#[cfg(any(target_os = "none", slipway_freestanding))]
pub mod memory;
#[cfg(any(target_os = "none", slipway_freestanding))]
mod panic;

#[cfg(any(target_os = "none", slipway_freestanding))]
pub use entry::{Boot, MAX_CPUS};

/// Image bounds from the linker script (for guests that want to know their own footprint).
#[cfg(any(target_os = "none", slipway_freestanding))]
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

/// The CPU's time-stamp counter (the hypervisor prints its rate: `post-launch: TSC <n> kHz`).
#[cfg(target_arch = "x86_64")]
pub fn timestamp() -> u64 {
    // SAFETY: RDTSC reads a counter; it touches no memory and changes no state the program
    // relies on.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Executes `ud2`: an invalid-opcode exception the guest does not handle (guests install no
/// IDT), which the hypervisor reports as a crash and stops the domain for. For tests that need
/// a crashing guest (e.g. domB's test-only fault property).
#[cfg(target_arch = "x86_64")]
pub fn crash() -> ! {
    // SAFETY: `ud2` raises #UD and never falls through; it touches no memory.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
