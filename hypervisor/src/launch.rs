//! The two boot stages and the dynamic-launch backend between them.
//!
//! The pre-launch stage copies what it learned from multiboot2 into a [`LaunchHandoff`] (a
//! fixed-size record inside the hypervisor image) and calls the launch backend. A real dynamic
//! launch (SENTER/SKINIT) re-enters the image at `post_launch_entry` with fresh CPU state; the
//! "none" backend jumps there directly and says loudly that nothing was measured. The
//! post-launch stage treats the hand-off as hostile input and validates all of it.

use multiboot2::{BootInformation, MemoryAreaType};

/// Capacity of the hand-off record.
pub const MAX_REGIONS: usize = 256;
pub const MAX_MODULES: usize = slipway_protocol::boot_modules::MAX_BOOT_MODULES;
pub const MAX_CMDLINE: usize = 256;
/// Tag identifying a hand-off record ("SLPWHOFF").
pub const HANDOFF_MAGIC: u64 = 0x4646_4f48_5750_4c53;

/// Kind of a firmware memory region, normalized from the basic (E820) or EFI map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RegionKind {
    Usable = 1,
    Reserved = 2,
    AcpiReclaimable = 3,
    AcpiNvs = 4,
    Defective = 5,
}

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct RawRegion {
    pub base: u64,
    pub len: u64,
    /// A [`RegionKind`] value; anything else is treated as reserved after validation.
    pub kind: u32,
    pub _pad: u32,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct RawModule {
    pub start: u64,
    pub end: u64,
    pub cmdline_len: u32,
    pub _pad: u32,
    pub cmdline: [u8; MAX_CMDLINE],
}

/// What the pre-launch stage passes to the post-launch stage. Plain data, no pointers.
#[repr(C)]
pub struct LaunchHandoff {
    pub magic: u64,
    /// 0 = BIOS, 1 = UEFI.
    pub boot_source: u32,
    /// 0 = basic (E820) map, 1 = EFI map.
    pub map_kind: u32,
    pub region_count: u32,
    pub module_count: u32,
    pub regions: [RawRegion; MAX_REGIONS],
    pub modules: [RawModule; MAX_MODULES],
    pub cmdline_len: u32,
    pub cmdline: [u8; MAX_CMDLINE],
    /// Local APIC IDs of the enabled processors in the ACPI MADT (0 if none was found).
    pub apic_id_count: u32,
    pub apic_ids: [u32; crate::acpi::MAX_APIC_IDS],
    /// The firmware's TPM event-log area from the ACPI TPM2 table (LASA, LAML); 0, 0 if none.
    pub firmware_log_start: u64,
    pub firmware_log_len: u64,
}

impl LaunchHandoff {
    pub const fn empty() -> Self {
        Self {
            magic: 0,
            boot_source: 0,
            map_kind: 0,
            region_count: 0,
            module_count: 0,
            regions: [RawRegion {
                base: 0,
                len: 0,
                kind: 0,
                _pad: 0,
            }; MAX_REGIONS],
            modules: [RawModule {
                start: 0,
                end: 0,
                cmdline_len: 0,
                _pad: 0,
                cmdline: [0; MAX_CMDLINE],
            }; MAX_MODULES],
            cmdline_len: 0,
            cmdline: [0; MAX_CMDLINE],
            apic_id_count: 0,
            apic_ids: [0; crate::acpi::MAX_APIC_IDS],
            firmware_log_start: 0,
            firmware_log_len: 0,
        }
    }
}

/// Why the pre-launch stage could not describe the boot.
#[derive(Debug)]
pub enum PreLaunchError {
    /// the multiboot2 information has no memory map
    NoMemoryMap,
    /// the firmware memory map has more entries than the hand-off holds
    TooManyRegions(usize),
    /// more boot modules than the hand-off holds
    TooManyModules(usize),
    /// a command line is longer than the hand-off holds
    CommandLineTooLong(usize),
    /// a command line is not valid UTF-8
    CommandLineNotUtf8,
    /// the boot modules' names break the module-identity rule
    ModuleNames(slipway_protocol::boot_modules::ModuleIdentityError),
}

fn copy_cmdline(dst: &mut [u8; MAX_CMDLINE], text: &str) -> Result<u32, PreLaunchError> {
    let bytes = text.as_bytes();
    if bytes.len() > MAX_CMDLINE {
        return Err(PreLaunchError::CommandLineTooLong(bytes.len()));
    }
    dst[..bytes.len()].copy_from_slice(bytes);
    Ok(bytes.len() as u32)
}

/// Fills `out` from the multiboot2 information.
pub fn describe_boot(
    info: &BootInformation<'_>,
    out: &mut LaunchHandoff,
) -> Result<(), PreLaunchError> {
    out.magic = HANDOFF_MAGIC;
    out.boot_source = u32::from(
        info.efi_sdt64_tag().is_some()
            || info.efi_sdt32_tag().is_some()
            || info.efi_memory_map_tag().is_some(),
    );
    let mut count = 0usize;
    let mut push = |base: u64, len: u64, kind: RegionKind| -> Result<(), PreLaunchError> {
        if count >= MAX_REGIONS {
            return Err(PreLaunchError::TooManyRegions(count + 1));
        }
        out.regions[count] = RawRegion {
            base,
            len,
            kind: kind as u32,
            _pad: 0,
        };
        count += 1;
        Ok(())
    };
    if let Some(efi) = info.efi_memory_map_tag() {
        out.map_kind = 1;
        for area in efi.memory_areas() {
            // Boot services are gone (GRUB exited them): loader and boot-services memory is
            // free RAM, except what the module list and the image occupy (checked post-launch).
            let kind = match area.ty.0 {
                1..=4 | 7 => RegionKind::Usable,
                8 => RegionKind::Defective,
                9 => RegionKind::AcpiReclaimable,
                10 => RegionKind::AcpiNvs,
                _ => RegionKind::Reserved,
            };
            push(area.phys_start, area.page_count.saturating_mul(4096), kind)?;
        }
    } else if let Some(map) = info.memory_map_tag() {
        out.map_kind = 0;
        for area in map.memory_areas() {
            let kind = match area.typ() {
                MemoryAreaType::Available => RegionKind::Usable,
                MemoryAreaType::AcpiAvailable => RegionKind::AcpiReclaimable,
                MemoryAreaType::ReservedHibernate => RegionKind::AcpiNvs,
                MemoryAreaType::Defective => RegionKind::Defective,
                _ => RegionKind::Reserved,
            };
            push(area.start_address(), area.size(), kind)?;
        }
    } else {
        return Err(PreLaunchError::NoMemoryMap);
    }
    out.region_count = count as u32;

    let mut modules = 0usize;
    for module in info.module_tags() {
        if modules >= MAX_MODULES {
            return Err(PreLaunchError::TooManyModules(modules + 1));
        }
        let line = module
            .cmdline()
            .map_err(|_| PreLaunchError::CommandLineNotUtf8)?;
        let slot = &mut out.modules[modules];
        slot.start = u64::from(module.start_address());
        slot.end = u64::from(module.end_address());
        slot.cmdline_len = copy_cmdline(&mut slot.cmdline, line)?;
        modules += 1;
    }
    out.module_count = modules as u32;
    // The rule the post-launch stage applies again (it trusts nothing from here): checked now
    // too, so a refused boot stops before the launch.
    let mut names = heapless::Vec::new();
    slipway_protocol::boot_modules::name_boot_modules(
        out.modules[..modules]
            .iter()
            .map(|m| &m.cmdline[..m.cmdline_len as usize]),
        &mut names,
    )
    .map_err(PreLaunchError::ModuleNames)?;
    let line = match info.command_line_tag() {
        Some(tag) => tag
            .cmdline()
            .map_err(|_| PreLaunchError::CommandLineNotUtf8)?,
        None => "",
    };
    out.cmdline_len = copy_cmdline(&mut out.cmdline, line)?;
    let root = if let Some(v2) = info.rsdp_v2_tag().filter(|t| t.xsdt_address() != 0) {
        Some((v2.xsdt_address() as u64, 8))
    } else {
        info.rsdp_v1_tag().map(|v1| (v1.rsdt_address() as u64, 4))
    };
    if let Some((root, entry_size)) = root {
        out.apic_id_count = crate::acpi::apic_ids(root, entry_size, &mut out.apic_ids) as u32;
        if let Some((start, len)) = crate::acpi::tpm2_log_area(root, entry_size) {
            out.firmware_log_start = start;
            out.firmware_log_len = u64::from(len);
        }
    }
    Ok(())
}

/// Dynamic-launch backends. `none`, `emulated` and `txt-simulated` work; `txt` and `skinit`
/// refuse (this machine has neither SMX nor SKINIT to test them on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchBackend {
    /// No dynamic launch: jump to the post-launch entry, unmeasured.
    None,
    /// The emulated launch of the QEMU + swtpm harness (debugcon request, PCR17 by swtpm).
    Emulated,
    /// Intel TXT on hardware (GETSEC[SENTER] with a SINIT ACM): refuses in this version (the
    /// hardware seam is not written: nothing here executes GETSEC to test it).
    Txt,
    /// SIMULATED Intel TXT under QEMU + the launch harness (`txt.rs`, `SimulatedTxt`): the
    /// whole TXT launch logic with the harness playing CPU and SINIT; measured as
    /// `txt-simulated`, never as a hardware launch.
    TxtSimulated,
    /// AMD SKINIT: not implemented yet, refuses.
    Skinit,
}

impl LaunchBackend {
    /// The backend the hypervisor command line asks for with
    /// `launch=auto|none|emulated|txt|txt-simulated|skinit`
    /// (default `auto`: emulated when the launch harness answers on debugcon, else none). An
    /// unknown value or an unavailable backend is said loudly and gives `none`: the boot is then
    /// unmeasured and the launch policy decides, never a silent fallback to something measured.
    pub fn choose(cmdline: &[u8]) -> Self {
        match asked_backend(cmdline) {
            None | Some(b"auto") => Self::detect(),
            Some(b"none") => LaunchBackend::None,
            Some(b"emulated") if crate::tpm::harness_attached() => LaunchBackend::Emulated,
            Some(b"emulated") => {
                crate::hvprintln!(
                    "ERROR: launch=emulated, but no launch harness answers on the debugcon port"
                );
                LaunchBackend::None
            }
            Some(b"txt") => LaunchBackend::Txt,
            Some(b"txt-simulated") if crate::tpm::harness_attached() => LaunchBackend::TxtSimulated,
            Some(b"txt-simulated") => {
                crate::hvprintln!(
                    "ERROR: launch=txt-simulated, but no launch harness answers on the debugcon port"
                );
                LaunchBackend::None
            }
            Some(b"skinit") => LaunchBackend::Skinit,
            Some(other) => {
                crate::hvprintln!(
                    "ERROR: unknown launch={} (expected auto, none, emulated, txt, txt-simulated or skinit)",
                    core::str::from_utf8(other).unwrap_or("<not UTF-8>")
                );
                LaunchBackend::None
            }
        }
    }

    /// The backend for this platform: emulated when the launch harness answers on debugcon.
    pub fn detect() -> Self {
        if crate::tpm::harness_attached() {
            LaunchBackend::Emulated
        } else {
            LaunchBackend::None
        }
    }
}

/// The value of the command line's `launch=` word, if any.
pub fn asked_backend(cmdline: &[u8]) -> Option<&[u8]> {
    cmdline
        .split(|&b| b == b' ')
        .find_map(|word| word.strip_prefix(b"launch=".as_slice()))
}

/// The test-only `txt_fault=<class>` word (`slipway_hv_core::txt::simulated::SimulatedFault`).
fn txt_fault(cmdline: &[u8]) -> Option<slipway_hv_core::txt::simulated::SimulatedFault> {
    let word = cmdline
        .split(|&b| b == b' ')
        .find_map(|word| word.strip_prefix(b"txt_fault=".as_slice()))?;
    let fault = core::str::from_utf8(word)
        .ok()
        .and_then(slipway_hv_core::txt::simulated::SimulatedFault::parse);
    if fault.is_none() {
        crate::hvprintln!(
            "ERROR: unknown txt_fault={} (expected heap, acm, page-tables, mle-header, pmr, capabilities, event-log or post-launch-heap): no fault injected",
            word.escape_ascii()
        );
    }
    fault
}

unsafe extern "C" {
    fn post_launch_entry(handoff: u64) -> !;
}

/// Performs the dynamic launch: does not return.
pub fn launch(backend: LaunchBackend, handoff: &'static LaunchHandoff) -> ! {
    match backend {
        LaunchBackend::None => {
            crate::hvprintln!(
                "WARNING: launch backend `none`: NO DYNAMIC LAUNCH, this boot is UNMEASURED"
            );
            crate::hvprintln!(
                "WARNING: PCR17-22 keep their reset values; nothing below is attested"
            );
        }
        LaunchBackend::Emulated => {
            let (start, len) =
                crate::tpm::with_measured_region(|start, region| (start, region.len()));
            crate::hvprintln!(
                "launch backend `emulated`: asking the harness to measure {start:#x}+{len:#x}"
            );
            if crate::tpm::request_emulated_launch() {
                crate::hvprintln!("launch backend `emulated`: PCR17 shows the launch");
            } else {
                crate::hvprintln!(
                    "WARNING: launch backend `emulated`: no launch seen: this boot is UNMEASURED"
                );
            }
        }
        LaunchBackend::TxtSimulated => {
            crate::hvprintln!(
                "launch backend `txt-simulated`: SIMULATED Intel TXT (the harness plays CPU and SINIT; never a hardware launch)"
            );
            let cmdline = &handoff.cmdline[..(handoff.cmdline_len as usize).min(MAX_CMDLINE)];
            let fault = txt_fault(cmdline);
            match crate::txt::SimulatedTxt::set_up(handoff) {
                // Returns only when no launch happened.
                Ok(mut seam) => crate::txt::launch(&mut seam, handoff, fault),
                Err(why) => crate::hvprintln!("ERROR: launch backend `txt-simulated`: {why}"),
            }
            crate::hvprintln!("WARNING: NO DYNAMIC LAUNCH, this boot is UNMEASURED");
        }
        LaunchBackend::Txt | LaunchBackend::Skinit => {
            let (name, needs) = match backend {
                LaunchBackend::Txt => ("txt", "GETSEC[SENTER], a SINIT ACM and the TXT heap"),
                _ => ("skinit", "SKINIT and a secure loader block"),
            };
            crate::hvprintln!(
                "ERROR: launch backend `{name}` is not implemented in this version (it needs {needs}): refusing to launch"
            );
            crate::hvprintln!("WARNING: NO DYNAMIC LAUNCH, this boot is UNMEASURED");
        }
    }
    // SAFETY: `post_launch_entry` resets the stack and never returns; the hand-off is a static
    // inside the image, which stays mapped.
    unsafe { post_launch_entry(handoff as *const LaunchHandoff as u64) }
}

impl LaunchBackend {
    /// Starts the application processors the pre-launch stage left parked. After a real dynamic
    /// launch they wait in a launch-specific state (TXT: GETSEC[WAKEUP]; SKINIT: INIT); with
    /// "none" they are still where the firmware left them, so INIT-SIPI-SIPI starts them.
    pub fn start_application_processors(
        self,
        page_table_root: u64,
        apic_ids: &[u32],
        wanted: usize,
    ) -> usize {
        match self {
            // The emulated launch leaves the APs where the firmware put them, as "none" does.
            // A refused TXT/SKINIT launch did nothing either.
            // SIMULATED TXT: the harness's SINIT leaves the APs where the firmware put them
            // (in wait-for-SIPI, as SENTER requires); hardware TXT would need GETSEC[WAKEUP].
            LaunchBackend::None
            | LaunchBackend::Emulated
            | LaunchBackend::Txt
            | LaunchBackend::TxtSimulated
            | LaunchBackend::Skinit => crate::smp::start_aps(page_table_root, apic_ids, wanted),
        }
    }
}

impl core::fmt::Display for PreLaunchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoMemoryMap => write!(f, "the multiboot2 information has no memory map"),
            Self::TooManyRegions(n) => write!(
                f,
                "the firmware memory map has {n} entries, more than {MAX_REGIONS}"
            ),
            Self::TooManyModules(n) => write!(f, "{n} boot modules, more than {MAX_MODULES}"),
            Self::CommandLineTooLong(n) => {
                write!(f, "a command line of {n} bytes, longer than {MAX_CMDLINE}")
            }
            Self::CommandLineNotUtf8 => write!(f, "a command line is not valid UTF-8"),
            Self::ModuleNames(error) => write!(f, "boot modules refused: {error}"),
        }
    }
}
