//! The hardware-independent core of the Slipway hypervisor.
//!
//! Everything here is pure logic over small traits, so it is tested on the host; the hypervisor
//! binary (`slipway-hypervisor`) implements the traits over real memory and the SVM backend.
//! See README.md for a map of the modules. In short, the binary:
//! 1. validates the pre-launch stage's memory map with [`memmap::validate_memory_map`] and builds a
//!    [`frame_alloc::BitmapFrameAllocator`] over the result;
//! 2. builds its own tables and each domain's nested tables with [`paging::PageTable`] and
//!    [`guest_memory::GuestMemory`];
//! 3. runs vCPUs through its [`vmexit::VcpuBackend`], handing each exit to
//!    [`exit_handler::handle_exit`] and each hypercall to [`hypercall::dispatch`] over the
//!    [`domain::DomainTable`];
//! 4. prints domain output through [`console::ConsoleMux`] and schedules with [`sched::Scheduler`].
#![no_std]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod addr;
pub mod asid;
pub mod boot_report;
pub mod build_record;
pub mod console;
pub mod console_queue;
pub mod domain;
pub mod domain_acpi;
pub mod exit_handler;
pub mod firmware_log;
pub mod frame_alloc;
pub mod guest_memory;
pub mod hypercall;
pub mod hypervisor;
pub mod lapic;
pub mod log_window;
pub mod measurement;
pub mod memmap;
pub mod memory;
pub mod mmio;
pub mod multiboot_tags;
pub mod paging;
pub mod pm_timer;
pub mod pvh;
pub mod recovery;
pub mod sched;
pub mod start_info;
pub mod svm_msrpm;
pub mod txt;
pub mod uart;
pub mod vmexit;
pub mod vmx;
pub mod xsave;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
