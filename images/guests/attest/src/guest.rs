//! The demo control domain: attestation. Creates the attestation key (the fixed ECC P-256
//! template of `slipway-tpm`, endorsement hierarchy), asks for a nonce on its console, quotes
//! PCR17-21 in every active bank, and prints the quote, the key, the PCR values (diagnostics)
//! and the event logs from its log windows, in the transcript format of `README.md`.
//!
//! The thin glue here: volatile MMIO on the locality-0 TIS page (0xFED40000, the only TPM page
//! the hypervisor maps into a control domain), a TSC clock, and polling input from the
//! emulated 16550. Everything else is `slipway-tpm` and this crate's library.

use core::fmt::Write as _;

use slipway_guest_attest::{
    LineEvent, LineReader, NONCE_PROMPT, PREFIX, parse_nonce, write_blob, write_hex,
};
use slipway_guest_rt::pvh::read_c_string;
use slipway_guest_rt::{Boot, console, hypercall, memory, println};
use slipway_protocol::v1::{FIRMWARE_LOG_MODULE, LogWindowDescriptor, SLIPWAY_LOG_MODULE};
use slipway_tpm::{AkTemplate, Clock, Hierarchy, PcrMask, Tis, TisRegisters, Tpm};

slipway_guest_rt::entry!(run);

/// The locality-0 TIS page.
const TIS_PAGE: u64 = slipway_protocol::platform::TPM_TIS_BASE;
/// The emulated 16550 (the console).
const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const DATA_READY: u8 = 1;

/// The TIS page by volatile MMIO. Only locality 0 exists for a domain: any other locality's
/// page is not mapped, so the driver is created for locality 0 and asking for another is a bug
/// of this program, answered with all ones (no device) instead of touching unmapped memory.
struct Locality0Tis;

fn register(locality: u8, offset: u16) -> Option<u64> {
    (locality == 0).then(|| TIS_PAGE + u64::from(offset & 0xfff))
}

impl TisRegisters for Locality0Tis {
    fn read8(&mut self, locality: u8, offset: u16) -> u8 {
        let Some(address) = register(locality, offset) else {
            return 0xff;
        };
        // SAFETY: the address is inside the 4 KiB TIS page at 0xFED40000 (offset masked), which
        // the hypervisor maps uncached into this control domain and the runtime's identity map
        // covers (below 4 GiB); MMIO register reads have no effect on memory.
        unsafe { (address as *const u8).read_volatile() }
    }
    fn read32(&mut self, locality: u8, offset: u16) -> u32 {
        let Some(address) = register(locality, offset & !3) else {
            return u32::MAX;
        };
        // SAFETY: as in `read8`; the address is 4-byte aligned (TIS 32-bit registers are).
        unsafe { (address as *const u32).read_volatile() }
    }
    fn write8(&mut self, locality: u8, offset: u16, value: u8) {
        if let Some(address) = register(locality, offset) {
            // SAFETY: as in `read8`; writing a TIS register affects only the TPM device.
            unsafe { (address as *mut u8).write_volatile(value) }
        }
    }
    fn write32(&mut self, locality: u8, offset: u16, value: u32) {
        if let Some(address) = register(locality, offset & !3) {
            // SAFETY: as in `read32`; writing a TIS register affects only the TPM device.
            unsafe { (address as *mut u32).write_volatile(value) }
        }
    }
}

/// Microseconds from the TSC. A domain has no calibrated clock, so the TSC is taken to run at
/// [`ASSUMED_TSC_MHZ`] unless CPUID leaf 0x15 reports its frequency: assuming a fast TSC makes
/// the driver's timeouts longer in real time, never shorter, on any slower TSC.
struct TscClock {
    mhz: u64,
}

const ASSUMED_TSC_MHZ: u64 = 5000;

fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; Slipway does not intercept it and it touches no memory.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl TscClock {
    fn new() -> Self {
        let max_leaf = core::arch::x86_64::__cpuid(0).eax;
        let mut mhz = ASSUMED_TSC_MHZ;
        if max_leaf >= 0x15 {
            let leaf = core::arch::x86_64::__cpuid(0x15);
            if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
                let hz = u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax);
                mhz = (hz / 1_000_000).max(1);
            }
        }
        TscClock { mhz }
    }
}

impl Clock for TscClock {
    fn now_micros(&mut self) -> u64 {
        rdtsc() / self.mhz
    }
    fn delay_micros(&mut self, micros: u32) {
        let end = self.now_micros() + u64::from(micros);
        while self.now_micros() < end {
            core::hint::spin_loop();
        }
    }
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading the emulated 16550's registers (data, line status) has no effect on
    // memory; the hypervisor gives this domain the console ports.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Prints a line of the transcript through the console lock.
fn emit(args: core::fmt::Arguments<'_>) {
    console::with_lock(|console| {
        let _ = console.write_fmt(args);
    });
}

fn fail(what: &str, error: impl core::fmt::Display) -> ! {
    println!("{PREFIX}error {what}: {error}");
    hypercall::shutdown(1)
}

fn run(boot: Boot) -> ! {
    if boot.cpu != 0 {
        loop {
            core::hint::spin_loop();
        }
    }
    let info =
        memory::start_info(boot.start_info_gpa).unwrap_or_else(|error| fail("start info", error));

    // The TPM: locality 0 only.
    let did_vid = Locality0Tis.read32(0, 0xf00);
    if did_vid == 0 || did_vid == u32::MAX {
        fail(
            "TPM",
            "no TPM page at 0xFED40000 (TPM_DID_VID reads 0 or all ones): nothing to attest",
        );
    }
    let mut tis =
        Tis::new(Locality0Tis, TscClock::new(), 0).unwrap_or_else(|e| fail("TPM locality 0", e));
    tis.request_locality()
        .unwrap_or_else(|e| fail("TPM locality 0", e));
    let mut tpm = Tpm::new(tis);
    let banks = tpm
        .active_banks()
        .unwrap_or_else(|e| fail("TPM2_GetCapability", e));
    let key = tpm
        .create_primary(Hierarchy::Endorsement, AkTemplate::EccP256)
        .unwrap_or_else(|e| fail("TPM2_CreatePrimary", e));
    println!("{PREFIX}attestation key created (ECC P-256, endorsement hierarchy)");

    // The nonce, typed by the verifier (the harness) at run time.
    println!("{NONCE_PROMPT}");
    let mut reader = LineReader::new();
    let nonce = loop {
        while inb(LINE_STATUS) & DATA_READY == 0 {
            core::hint::spin_loop();
        }
        match reader.push(inb(COM1)) {
            Some(LineEvent::Line(line)) => match parse_nonce(line) {
                Ok(nonce) => break nonce,
                Err(error) => println!("{PREFIX}refused nonce: {error}; {NONCE_PROMPT}"),
            },
            Some(LineEvent::Overlong) => {
                println!("{PREFIX}refused nonce: longer than 64 bytes; {NONCE_PROMPT}")
            }
            None => {}
        }
    };
    emit(format_args!("{PREFIX}nonce "));
    console::with_lock(|c| {
        let _ = write_hex(c, nonce.as_bytes());
        let _ = writeln!(c);
    });

    let quote = tpm
        .quote(&key, nonce.as_bytes(), &banks, PcrMask::QUOTE)
        .unwrap_or_else(|e| fail("TPM2_Quote", e));
    console::with_lock(|c| {
        let _ = write!(c, "{PREFIX}banks");
        for bank in banks.iter() {
            let _ = write!(c, " {:#06x}", bank.alg.0);
        }
        let _ = writeln!(c);
        let _ = write_blob(c, "ak-public", key.public_area());
        let _ = write_blob(c, "quote-attest", quote.attest());
        let _ = write_blob(c, "quote-signature", quote.signature());
    });

    // Diagnostics only: the verifier trusts the quote, never these lines.
    for bank in banks.iter() {
        match tpm.pcr_read(bank.alg, PcrMask::QUOTE) {
            Ok(values) => {
                for (pcr, digest) in values.iter() {
                    let name = bank.alg.name().unwrap_or("unknown");
                    console::with_lock(|c| {
                        let _ = write!(c, "{PREFIX}pcr {pcr} {name} ");
                        let _ = write_hex(c, digest.as_bytes());
                        let _ = writeln!(c);
                    });
                }
            }
            Err(error) => println!("{PREFIX}pcr read failed: {error}"),
        }
    }

    // The log windows, from the start-info module list.
    let mut found = [false; 2];
    for index in 0..info.module_count {
        let Some(module) = info.module(index) else {
            continue;
        };
        if module.cmdline_paddr == 0 {
            continue;
        }
        let Ok(cmdline) = read_c_string(&memory::IdentityMapped, module.cmdline_paddr) else {
            continue;
        };
        let (kind, slot) = match cmdline {
            SLIPWAY_LOG_MODULE => ("slipway-log", 0),
            FIRMWARE_LOG_MODULE => ("firmware-log", 1),
            _ => continue,
        };
        found[slot] = true;
        let Some(window) = memory::bytes(module.paddr, module.size) else {
            println!(
                "{PREFIX}{kind} window at {:#x} is outside the map",
                module.paddr
            );
            continue;
        };
        match LogWindowDescriptor::log_in(window) {
            Ok(Some(log)) => console::with_lock(|c| {
                let _ = write_blob(c, kind, log);
            }),
            Ok(None) => println!("{PREFIX}{kind} none"),
            Err(error) => println!("{PREFIX}{kind} window unusable: {error}"),
        }
    }
    if !found[0] {
        println!("{PREFIX}no slipway-event-log window in the start info");
    }
    println!("{PREFIX}done");
    hypercall::shutdown(0)
}
