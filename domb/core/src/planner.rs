//! The domain build planner: from the launch configuration and the boot modules, the exact
//! sequence of protocol v1 requests that builds and starts each domain.
//!
//! Domain memory layout (guest-physical, `slipway_protocol::platform::DomainRam`: RAM
//! `[0, min(memory, 3 GiB))` and the rest from 4 GiB; the hole between is never RAM):
//!
//! | range | content |
//! |---|---|
//! | `0x1000..0x2000` | start-info page ([`START_INFO_GPA`]; reserved in the memory map) |
//! | `0xE0000..0x100000` | the domain's ACPI tables ([`ACPI_TABLES_GPA`], `hvm_start_info.rsdp_paddr`; reserved) |
//! | ELF `p_paddr` ranges | kernel segments (inside one RAM range each) |
//! | top of the RAM below the hole, page aligned | ramdisk, if any |
//! | `platform::DOMAIN_MMIO_START..4 GiB` | platform MMIO (IOAPIC, TPM, local APIC): reserved |
//! | `4 GiB..` | the RAM past 3 GiB of a larger domain |
//!
//! A control domain's map also reserves the two event-log windows in the hole
//! (`v1::SLIPWAY_LOG_GPA`, `v1::FIRMWARE_LOG_GPA`, `v1::LOG_WINDOW_SIZE` each), listed after the
//! ramdisk as start-info modules `slipway-event-log` and `firmware-event-log`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use slipway_protocol::Bytes;
use slipway_protocol::platform::{DOMAIN_HIGH_RAM_START, DOMAIN_MMIO_START, DomainRam};
use slipway_protocol::v1::{self, DomainId, DomainName, Request, VcpuEntry, WRITE_MEMORY_MAX};

use crate::config::{DomainConfig, LaunchConfig, PAGE_SIZE};
use crate::elf_load::{self, ElfError, LoadPlan};
use crate::start_info::{
    self, MemoryMapEntry, MemoryType, StartInfoError, StartInfoSpec, StartModule,
};

/// Where each domain's start-info page goes.
pub const START_INFO_GPA: u64 = 0x1000;
/// Where each domain's ACPI tables go (RSDP first): the BIOS area below 1 MiB, where a guest
/// that ignores `rsdp_paddr` also finds the RSDP by the legacy scan.
pub const ACPI_TABLES_GPA: u64 = 0xE_0000;
/// The range reserved for them, up to 1 MiB.
pub const ACPI_TABLES_SIZE: u64 = 0x2_0000;

/// A boot module as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct ModuleData<'a> {
    /// Module name (first word of its command line).
    pub name: &'a str,
    /// Module index in multiboot2 order (as in requests).
    pub index: u16,
    /// The module's bytes.
    pub bytes: &'a [u8],
}

/// One build step of a domain; the domain id is filled in once `CreateDomain` has answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildStep {
    /// Copy part of a module into the domain.
    Populate {
        /// Module index.
        module: u16,
        /// Offset in the module.
        module_offset: u64,
        /// Bytes to copy.
        length: u64,
        /// Destination.
        gpa: u64,
    },
    /// Write bytes (a piece of the start-info page).
    Write {
        /// Destination.
        gpa: u64,
        /// The bytes (at most `WRITE_MEMORY_MAX`).
        bytes: Vec<u8>,
    },
    /// Set a vCPU's PVH entry state.
    SetVcpu {
        /// vCPU index.
        vcpu: u16,
        /// Entry state.
        entry: VcpuEntry,
    },
    /// Give the domain the console input focus.
    AssignConsole,
    /// Record the domain's start.
    RequestStart {
        /// Position in the start order.
        boot_order: u16,
    },
}

/// The plan of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPlan {
    /// Domain name.
    pub name: DomainName,
    /// The `CreateDomain` request.
    pub create: Request,
    /// The steps after creation, in order.
    pub steps: Vec<BuildStep>,
    /// The kernel's loading plan (for messages).
    pub kernel: LoadPlan,
}

impl DomainPlan {
    /// The requests after `CreateDomain`, for the domain id the hypervisor returned.
    pub fn requests(&self, domain: DomainId) -> impl Iterator<Item = Request> + '_ {
        self.steps.iter().map(move |step| step.to_request(domain))
    }
}

impl BuildStep {
    /// The protocol request for this step.
    pub fn to_request(&self, domain: DomainId) -> Request {
        match self {
            Self::Populate {
                module,
                module_offset,
                length,
                gpa,
            } => Request::PopulateFromModule {
                domain,
                module: *module,
                module_offset: *module_offset,
                length: *length,
                gpa: *gpa,
            },
            Self::Write { gpa, bytes } => Request::WriteMemory {
                domain,
                gpa: *gpa,
                // The planner never makes a chunk longer than WRITE_MEMORY_MAX.
                bytes: Bytes::from_slice(bytes).unwrap_or_default(),
            },
            Self::SetVcpu { vcpu, entry } => Request::SetVcpuState {
                domain,
                vcpu: *vcpu,
                entry: *entry,
            },
            Self::AssignConsole => Request::AssignConsole { domain },
            Self::RequestStart { boot_order } => Request::RequestStart {
                domain,
                boot_order: *boot_order,
            },
        }
    }
}

/// What went wrong while planning a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanProblem {
    /// the module is not among the boot modules
    ModuleNotFound(String),
    /// the kernel image cannot be loaded
    Kernel(ElfError),
    /// a kernel segment overlaps the start-info page at 0x1000
    KernelOverlapsStartInfo,
    /// the ramdisk does not fit in the RAM below the hole left by the kernel and the start-info
    /// page
    RamdiskDoesNotFit,
    /// the memory size has no guest-physical layout
    BadMemorySize,
    /// the start-info page cannot be built
    StartInfo(StartInfoError),
    /// the domain name is not valid for the protocol
    BadName,
    /// a kernel segment overlaps the ACPI tables at 0xE0000-0xFFFFF, or the domain's RAM ends
    /// before them
    OverlapsAcpiTables,
    /// the domain's ACPI tables cannot be built
    Acpi(slipway_hv_core::domain_acpi::AcpiBuildError),
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ModuleNotFound(name) => write!(f, "no boot module is named \"{name}\""),
            Self::Kernel(error) => write!(f, "kernel image: {error}"),
            Self::KernelOverlapsStartInfo => {
                f.write_str("a kernel segment overlaps the start-info page at 0x1000")
            }
            Self::RamdiskDoesNotFit => f.write_str(
                "the ramdisk does not fit in the RAM below 3 GiB left by the kernel and the start-info page",
            ),
            Self::BadMemorySize => f.write_str("the memory size has no guest-physical layout"),
            Self::StartInfo(error) => write!(f, "start info: {error}"),
            Self::BadName => f.write_str("the domain name is not valid for the protocol"),
            Self::OverlapsAcpiTables => f.write_str(
                "a kernel segment overlaps the ACPI tables at 0xE0000-0xFFFFF, or the RAM ends before them",
            ),
            Self::Acpi(error) => write!(f, "ACPI tables: {error}"),
        }
    }
}

/// A planning error: the domain's node, the property that leads to the problem, and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// The domain's node.
    pub node: String,
    /// The property (`kernel`, `ramdisk`, `memory`, `bootargs`, ...).
    pub property: &'static str,
    /// What is wrong.
    pub problem: PlanProblem,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} property {}: {}",
            self.node, self.property, self.problem
        )
    }
}

/// Plans every domain named in `start` (in that order: it is the boot order).
pub fn plan(
    config: &LaunchConfig,
    start: &[String],
    modules: &[ModuleData<'_>],
) -> Result<Vec<DomainPlan>, PlanError> {
    let console_owner = start
        .iter()
        .filter_map(|name| config.domains.iter().find(|d| &d.name == name))
        .find(|d| d.capabilities.control)
        .map(|d| d.name.as_str());
    let mut plans = Vec::new();
    for (order, name) in start.iter().enumerate() {
        let Some(domain) = config.domains.iter().find(|d| &d.name == name) else {
            continue;
        };
        let console = console_owner == Some(domain.name.as_str());
        plans.push(plan_domain(domain, order as u16, console, modules)?);
    }
    Ok(plans)
}

fn find_module<'m, 'a>(
    domain: &DomainConfig,
    property: &'static str,
    name: &str,
    modules: &'m [ModuleData<'a>],
) -> Result<&'m ModuleData<'a>, PlanError> {
    modules
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| PlanError {
            node: domain.node.clone(),
            property,
            problem: PlanProblem::ModuleNotFound(String::from(name)),
        })
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The event-log windows' ranges (in the hole; reserved in control domains' maps).
fn log_window_ranges() -> [(u64, u64); 2] {
    [v1::SLIPWAY_LOG_GPA, v1::FIRMWARE_LOG_GPA].map(|gpa| (gpa, gpa + v1::LOG_WINDOW_SIZE))
}

/// A domain's PVH memory map, in address order: its RAM (`ram`) with the start-info page
/// reserved, the event-log windows in `log_windows` reserved, the platform MMIO below 4 GiB
/// reserved, and the RAM above 4 GiB of a domain larger than the hole's start.
pub fn memory_map(ram: DomainRam, log_windows: &[(u64, &str)]) -> Vec<MemoryMapEntry> {
    let entry = |addr, size, kind| MemoryMapEntry { addr, size, kind };
    let low_end = ram.low().1;
    let mut map = alloc::vec![
        entry(0, START_INFO_GPA.min(low_end), MemoryType::Ram),
        entry(START_INFO_GPA, PAGE_SIZE, MemoryType::Reserved),
    ];
    // RAM around the ACPI tables' reserve (the plan refuses RAM that ends before it).
    let acpi_end = ACPI_TABLES_GPA + ACPI_TABLES_SIZE;
    if low_end >= acpi_end {
        map.push(entry(
            START_INFO_GPA + PAGE_SIZE,
            ACPI_TABLES_GPA - START_INFO_GPA - PAGE_SIZE,
            MemoryType::Ram,
        ));
        map.push(entry(
            ACPI_TABLES_GPA,
            ACPI_TABLES_SIZE,
            MemoryType::Reserved,
        ));
        if low_end > acpi_end {
            map.push(entry(acpi_end, low_end - acpi_end, MemoryType::Ram));
        }
    }
    map.extend(
        log_windows
            .iter()
            .map(|&(gpa, _)| entry(gpa, v1::LOG_WINDOW_SIZE, MemoryType::Reserved)),
    );
    map.push(entry(
        DOMAIN_MMIO_START,
        DOMAIN_HIGH_RAM_START - DOMAIN_MMIO_START,
        MemoryType::Reserved,
    ));
    if let Some((start, end)) = ram.high() {
        map.push(entry(start, end - start, MemoryType::Ram));
    }
    map
}

/// Plans one domain: `boot_order` is its position in the start order.
pub fn plan_domain(
    domain: &DomainConfig,
    boot_order: u16,
    assign_console: bool,
    modules: &[ModuleData<'_>],
) -> Result<DomainPlan, PlanError> {
    let error = |property, problem| PlanError {
        node: domain.node.clone(),
        property,
        problem,
    };
    let name =
        DomainName::new(&domain.name).map_err(|_| error("domain-name", PlanProblem::BadName))?;
    let memory = domain.memory_bytes;
    let start_info_range = (START_INFO_GPA, START_INFO_GPA + PAGE_SIZE);
    let ram = DomainRam::new(memory).ok_or_else(|| error("memory", PlanProblem::BadMemorySize))?;
    if ram.low().1 < start_info_range.1 {
        return Err(error("memory", PlanProblem::KernelOverlapsStartInfo));
    }
    let acpi_range = (ACPI_TABLES_GPA, ACPI_TABLES_GPA + ACPI_TABLES_SIZE);
    if ram.low().1 < acpi_range.1 {
        return Err(error("memory", PlanProblem::OverlapsAcpiTables));
    }

    let kernel_module = find_module(domain, "kernel", &domain.kernel, modules)?;
    let kernel = elf_load::plan_load(kernel_module.bytes, memory)
        .map_err(|e| error("kernel", PlanProblem::Kernel(e)))?;
    if kernel
        .occupied()
        .any(|range| overlaps(range, start_info_range))
    {
        return Err(error("kernel", PlanProblem::KernelOverlapsStartInfo));
    }
    if kernel.occupied().any(|range| overlaps(range, acpi_range)) {
        return Err(error("kernel", PlanProblem::OverlapsAcpiTables));
    }

    let mut steps = Vec::new();
    for segment in kernel.segments.iter().filter(|s| s.file_len > 0) {
        steps.push(BuildStep::Populate {
            module: kernel_module.index,
            module_offset: segment.file_offset,
            length: segment.file_len,
            gpa: segment.gpa,
        });
    }

    let mut start_modules = Vec::new();
    if let Some(ramdisk_name) = &domain.ramdisk {
        let ramdisk = find_module(domain, "ramdisk", ramdisk_name, modules)?;
        let size = ramdisk.bytes.len() as u64;
        // Below the hole (where a 32-bit loader reaches it), clear of every reserved range.
        let gpa = ram
            .low()
            .1
            .checked_sub(size)
            .map(|gpa| gpa & !(PAGE_SIZE - 1))
            .ok_or_else(|| error("ramdisk", PlanProblem::RamdiskDoesNotFit))?;
        let range = (gpa, gpa + size);
        let reserved = memory_map(ram, &[])
            .into_iter()
            .filter(|e| e.kind == MemoryType::Reserved)
            .map(|e| (e.addr, e.addr + e.size))
            .chain(log_window_ranges());
        if !ram.contains(gpa, size)
            || reserved.clone().any(|r| overlaps(r, range))
            || kernel.occupied().any(|k| overlaps(k, range))
        {
            return Err(error("ramdisk", PlanProblem::RamdiskDoesNotFit));
        }
        if size > 0 {
            steps.push(BuildStep::Populate {
                module: ramdisk.index,
                module_offset: 0,
                length: size,
                gpa,
            });
        }
        start_modules.push(StartModule {
            paddr: gpa,
            size,
            cmdline: "",
        });
    }

    // A control domain gets the two event-log windows (docs/abi.md, "Event-log windows"):
    // reserved in its memory map and listed as modules; the hypervisor maps them at hand-off.
    let log_windows = [
        (v1::SLIPWAY_LOG_GPA, v1::SLIPWAY_LOG_MODULE),
        (v1::FIRMWARE_LOG_GPA, v1::FIRMWARE_LOG_MODULE),
    ];
    let log_windows: &[(u64, &str)] = if domain.capabilities.control {
        &log_windows
    } else {
        &[]
    };
    for &(gpa, cmdline) in log_windows {
        start_modules.push(StartModule {
            paddr: gpa,
            size: v1::LOG_WINDOW_SIZE,
            cmdline,
        });
    }

    let memory_map = memory_map(ram, log_windows);
    // The ACPI tables describe the vCPUs (APIC ID = vCPU index) and, for the domain holding the
    // TPM with the event-log windows, the TPM and its log (Slipway's log window) so the kernel
    // exposes the log the standard way.
    let apic_ids: Vec<u8> = (0..domain.vcpus).map(|i| i as u8).collect();
    let tpm_log = (domain.capabilities.tpm && domain.capabilities.control).then_some(
        // The log itself, after the window's descriptor; the zeros after its end stop a
        // reader's event walk.
        slipway_hv_core::domain_acpi::TpmLog {
            address: v1::SLIPWAY_LOG_GPA + v1::LOG_DESCRIPTOR_LEN as u64,
            length: v1::LOG_WINDOW_CAPACITY as u32,
        },
    );
    let mut acpi = alloc::vec![0u8; ACPI_TABLES_SIZE as usize];
    let layout = slipway_hv_core::domain_acpi::build(
        &slipway_hv_core::domain_acpi::AcpiConfig {
            base: ACPI_TABLES_GPA,
            apic_ids: &apic_ids,
            tpm: tpm_log,
        },
        &mut acpi,
    )
    .map_err(|e| error("cpus", PlanProblem::Acpi(e)))?;
    let page = start_info::build(&StartInfoSpec {
        page_gpa: START_INFO_GPA,
        cmdline: &domain.bootargs,
        modules: &start_modules,
        memory_map: &memory_map,
        rsdp_paddr: layout.rsdp_address,
    })
    .map_err(|e| error("bootargs", PlanProblem::StartInfo(e)))?;
    for (index, chunk) in page.chunks(WRITE_MEMORY_MAX).enumerate() {
        steps.push(BuildStep::Write {
            gpa: START_INFO_GPA + (index * WRITE_MEMORY_MAX) as u64,
            bytes: chunk.to_vec(),
        });
    }
    for (index, chunk) in acpi[..layout.len].chunks(WRITE_MEMORY_MAX).enumerate() {
        steps.push(BuildStep::Write {
            gpa: ACPI_TABLES_GPA + (index * WRITE_MEMORY_MAX) as u64,
            bytes: chunk.to_vec(),
        });
    }

    // vCPU 0 gets the PVH entry state; so do the others (the guest runtime tells them apart by
    // arrival order), unless `ap-start = "startup-ipi"` makes them wait for the kernel's
    // INIT-SIPI-SIPI.
    let entry = VcpuEntry::Pvh32 {
        entry_eip: kernel.entry,
        start_info_gpa: START_INFO_GPA as u32,
    };
    for vcpu in 0..domain.vcpus {
        let entry = match domain.ap_start {
            crate::config::ApStart::StartupIpi if vcpu > 0 => VcpuEntry::WaitForStartupIpi,
            _ => entry,
        };
        steps.push(BuildStep::SetVcpu {
            vcpu: vcpu as u16,
            entry,
        });
    }
    if assign_console {
        steps.push(BuildStep::AssignConsole);
    }
    steps.push(BuildStep::RequestStart { boot_order });

    let capabilities = v1::Capabilities {
        control: domain.capabilities.control,
        hardware: domain.capabilities.hardware,
        recovery: domain.capabilities.recovery,
        tpm: domain.capabilities.tpm,
    };
    let create = Request::CreateDomain {
        name: name.clone(),
        memory_bytes: memory,
        vcpus: domain.vcpus as u16,
        capabilities,
    };
    Ok(DomainPlan {
        name,
        create,
        steps,
        kernel,
    })
}
