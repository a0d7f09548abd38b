//! The hardware-independent core of the Slipway hypervisor.
//!
//! Everything here is pure logic over small traits, so it is tested on the host; the hypervisor
//! binary (`slipway-hypervisor`) implements the traits over real memory and the SVM backend.
//! See README.md for a map of the modules.
#![no_std]
#![forbid(unsafe_code)]

pub mod addr;
pub mod build_record;
pub mod console;
pub mod domain;
pub mod exit_handler;
pub mod frame_alloc;
pub mod guest_memory;
pub mod hypercall;
pub mod memmap;
pub mod memory;
pub mod paging;
pub mod sched;
pub mod uart;
pub mod vmexit;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
