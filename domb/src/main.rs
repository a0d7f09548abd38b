//! domB, the boot domain: measures every input before using it, parses the launch configuration,
//! evaluates the launch policy, builds every domain through protocol v1 hypercalls, and hands off.
//! The logic is `slipway_domb_core::launch::run`; this is the glue to the guest runtime: boot
//! information, module mappings, the hypercall and the console.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt::{self, Display};

use slipway_domb_core::launch::{self, BootFacts, Hypervisor};
use slipway_domb_core::planner::ModuleData;
use slipway_guest_rt::hypercall::{self, CallError};
use slipway_guest_rt::{Boot, memory, println};
use slipway_protocol::v1::{self, BootInfo, LaunchKind, Request, ResponseOk};

slipway_guest_rt::entry!(main);

// The run-time checks sha1 0.11 and sha2 0.11 make before using their x86 backends (the same
// feature lists, through the same crate): SHA-NI for SHA-1 and SHA-256, AVX2 for SHA-384/512.
// Slipway offers AVX where the CPU has it and guest-rt's entry enables it (XSETBV), so
// SHA-384/512 use AVX2 where the CPU has it; QEMU's TCG has AVX2 but no SHA-NI. On
// x86_64-unknown-none both always answer no.
cpufeatures::new!(sha1_x86_sha, "sha", "sse2", "ssse3", "sse4.1");
cpufeatures::new!(sha256_x86_sha, "sha", "sse4.1");
cpufeatures::new!(sha512_x86_avx2, "avx2");

/// Which code sha1/sha2 run on this CPU.
struct HashingBackends {
    sha1: &'static str,
    sha256: &'static str,
    sha512: &'static str,
}

impl HashingBackends {
    fn detect() -> Self {
        let pick = |fast: bool, name: &'static str| if fast { name } else { "software" };
        Self {
            sha1: pick(sha1_x86_sha::get(), "sha-ni"),
            sha256: pick(sha256_x86_sha::get(), "sha-ni"),
            sha512: pick(sha512_x86_avx2::get(), "avx2"),
        }
    }
}

impl Display for HashingBackends {
    /// `<SHA-256's backend> (SHA-1: ..., SHA-256: ..., SHA-384/512: ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (SHA-1: {}, SHA-256: {}, SHA-384/512: {})",
            self.sha256, self.sha1, self.sha256, self.sha512
        )
    }
}

/// Prints why domB stops and shuts it down with failure (the hypervisor reports it).
fn fail(what: &str, why: impl Display) -> ! {
    println!("error: {what}: {why}");
    hypercall::shutdown(1)
}

/// TEST ONLY (the measured configuration's `slipway,test-boot-domain-fault`): fails the way the
/// hypervisor's recovery tests need.
fn provoke(fault: slipway_domb_core::config::TestFault) -> ! {
    use slipway_domb_core::config::TestFault;
    match fault {
        TestFault::Panic => panic!("test fault: domB panics on purpose"),
        TestFault::Crash => {
            println!("test fault: domB crashes on purpose (ud2)");
            slipway_guest_rt::crash()
        }
        TestFault::Hang => {
            println!("test fault: domB hangs on purpose");
            loop {
                core::hint::spin_loop();
            }
        }
    }
}

struct Hypercall;

impl Hypervisor for Hypercall {
    type Error = CallError;
    fn call(&mut self, request: &Request) -> Result<ResponseOk, CallError> {
        hypercall::call(request)
    }

    fn refusal(error: &CallError) -> Option<v1::Error> {
        match error {
            CallError::Refused(refusal) => Some(*refusal),
            _ => None,
        }
    }

    fn timestamp(&mut self) -> Option<u64> {
        Some(slipway_guest_rt::timestamp())
    }
}

/// Line-buffered console output for the launch's progress lines.
struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        slipway_guest_rt::print!("{text}");
        Ok(())
    }
}

fn boot_info(start_info_gpa: u64) -> BootInfo {
    let info = memory::start_info(start_info_gpa).unwrap_or_else(|e| fail("start info", e));
    let entry = info
        .module(0)
        .unwrap_or_else(|| fail("start info", "no module 0 (the boot information)"));
    let bytes = memory::bytes(entry.paddr, entry.size)
        .unwrap_or_else(|| fail("boot information", "not inside the identity map"));
    v1::decode_boot_info(bytes)
        .unwrap_or_else(|e| fail("boot information", alloc::format!("{e:?}")))
}

fn main(boot: Boot) -> ! {
    if boot.cpu != 0 {
        fail("start", "domB runs on one vCPU");
    }
    let info = boot_info(boot.start_info_gpa);
    let launch_kind = match info.launch_kind {
        LaunchKind::None => "none (unmeasured)",
        LaunchKind::Emulated => "emulated",
        LaunchKind::Txt => "txt",
        LaunchKind::Skinit => "skinit",
        LaunchKind::TxtSimulated => "txt-simulated (SIMULATED TXT, not hardware)",
        _ => "unknown",
    };
    println!(
        "launch kind: {launch_kind}; {} boot modules",
        info.modules.len()
    );
    println!("hashing backend: {}", HashingBackends::detect());

    let mut modules = Vec::new();
    for (index, module) in info.modules.iter().enumerate() {
        let bytes = memory::bytes(module.gpa, module.size).unwrap_or_else(|| {
            fail(
                "boot module",
                alloc::format!("{} is not mapped below 4 GiB", module.name),
            )
        });
        modules.push(ModuleData {
            name: module.name.as_str(),
            index: index as u16,
            bytes,
        });
    }
    let facts = BootFacts {
        launch_kind: info.launch_kind,
        active_banks: &info.active_banks,
        modules: &modules,
        boot_state: info.boot_state,
    };
    let error = launch::run(&facts, &mut Hypercall, &mut Console);
    println!("error: {error}");
    if let launch::LaunchError::TestFault(fault) = error {
        provoke(fault);
    }
    // The exit code names the failure's class: the hypervisor measures it as the recovery reason.
    hypercall::shutdown(error.exit().code())
}
