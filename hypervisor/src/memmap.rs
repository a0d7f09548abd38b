//! Post-launch validation of the hand-off: the memory map, the module list and the command lines
//! are hostile input. The result is the list of RAM ranges the frame allocator may hand out.
//!
//! The memory map and module checks are `slipway-hv-core`'s (`memmap`); this module converts the
//! hand-off record and checks the record itself.

use slipway_hv_core::addr::{PAGE_SIZE, PhysRange};
use slipway_protocol::boot_modules::{self, ModuleIdentityError};
use slipway_protocol::v1::ModuleName;

pub use slipway_hv_core::memmap::split_at_4_gib;
use slipway_hv_core::memmap::{
    DEFAULT_MMIO_HOLES, FirmwareRegion, MemoryMapError, RegionKind as CoreKind, validate_memory_map,
};

use crate::launch::{
    HANDOFF_MAGIC, LaunchHandoff, MAX_CMDLINE, MAX_MODULES, MAX_REGIONS, RegionKind,
};

/// Free ranges handed to the frame allocator (its region limit).
pub const MAX_RANGES: usize = slipway_hv_core::frame_alloc::MAX_ALLOCATOR_REGIONS;
/// Ranges while the map is being processed (EFI maps have 100+ entries before merging).
const WORK_RANGES: usize = 256;
/// RAM the hypervisor uses starts at 1 MiB (low memory keeps firmware data and the AP trampoline);
/// all RAM above, below and above 4 GiB, is used (its own page tables map it).
pub const LOW_LIMIT: u64 = 0x10_0000;
/// Low ranges kept: the firmware's (at most 8 are looked at), each split at most once per module.
const LOW_RANGES: usize = 8 + MAX_MODULES;
/// The early identity map's reach: what the post-launch stage can touch before its own page
/// tables are active (the frame bitmap's storage, the first page-table frames).
pub const EARLY_MAP_LIMIT: u64 = 0x1_0000_0000;

/// Why the post-launch stage refused the hand-off.
#[derive(Debug)]
pub enum HandoffError {
    /// the hand-off record has the wrong magic (not written by the pre-launch stage)
    BadMagic(u64),
    /// the hand-off record claims more entries than it can hold
    CountTooLarge { what: &'static str, count: u32 },
    /// the memory map or module list is inconsistent
    Map(MemoryMapError),
    /// a command line is longer than its buffer or not UTF-8
    BadCommandLine { index: Option<usize> },
    /// the boot modules' names break the module-identity rule (invalid or not unique)
    ModuleNames(ModuleIdentityError),
    /// more disjoint RAM ranges than the allocator tracks
    TooManyRanges,
    /// no usable RAM remains below 4 GiB (the early identity map's reach)
    NoRam,
}

/// The validated view of the boot.
pub struct ValidatedBoot {
    /// RAM the allocator may hand out (sorted, disjoint, page-aligned, without image and modules).
    pub free: [PhysRange; MAX_RANGES],
    pub free_count: usize,
    /// Small free ranges left out because the allocator tracks at most MAX_RANGES.
    pub unused_ranges: usize,
    pub unused_bytes: u64,
    /// Usable RAM below 1 MiB (page-aligned) that no module occupies, for the AP trampoline
    /// (GRUB may load modules there: under UEFI it puts small ones at the lowest free pages).
    pub low: [PhysRange; LOW_RANGES],
    pub low_count: usize,
    /// Module ranges (page-rounded outward), in multiboot2 order.
    pub modules: [PhysRange; MAX_MODULES],
    pub module_count: usize,
    /// Each module's exact bytes, in multiboot2 order (`module_count` valid).
    pub module_bytes: [PhysRange; MAX_MODULES],
    /// Each module's name (`slipway_protocol::boot_modules`: valid and unique), in the same order.
    pub module_names: heapless::Vec<ModuleName, MAX_MODULES>,
    /// The firmware's memory map as hv-core sees it (for checks of firmware-owned areas).
    pub map: [FirmwareRegion; MAX_REGIONS],
    pub region_count: usize,
}

fn push(list: &mut [PhysRange], count: &mut usize, range: PhysRange) -> Result<(), HandoffError> {
    if range.is_empty() {
        return Ok(());
    }
    if *count >= list.len() {
        return Err(HandoffError::TooManyRanges);
    }
    list[*count] = range;
    *count += 1;
    Ok(())
}

/// Removes `hole` from every range in `list[..count]`.
fn subtract(
    list: &mut [PhysRange],
    count: &mut usize,
    hole: PhysRange,
) -> Result<(), HandoffError> {
    let mut out = [PhysRange::default(); WORK_RANGES];
    let mut n = 0;
    for range in &list[..*count] {
        if !range.overlaps(&hole) {
            push(&mut out, &mut n, *range)?;
            continue;
        }
        push(
            &mut out,
            &mut n,
            PhysRange::new(range.start.0, hole.start.0.max(range.start.0)),
        )?;
        push(
            &mut out,
            &mut n,
            PhysRange::new(hole.end.0.min(range.end.0), range.end.0),
        )?;
    }
    list[..n].copy_from_slice(&out[..n]);
    *count = n;
    Ok(())
}

/// Takes `range` out of the free RAM (memory SINIT's MDRs mark as not good, after a TXT launch).
pub fn reserve(boot: &mut ValidatedBoot, range: PhysRange) -> Result<(), HandoffError> {
    subtract(&mut boot.free, &mut boot.free_count, range)?;
    subtract(&mut boot.low, &mut boot.low_count, range)
}

/// Validates the hand-off against the image: the record itself here, the memory map and module
/// ranges through `slipway_hv_core::memmap::validate_memory_map`.
pub fn validate(handoff: &LaunchHandoff, image: PhysRange) -> Result<ValidatedBoot, HandoffError> {
    if handoff.magic != HANDOFF_MAGIC {
        return Err(HandoffError::BadMagic(handoff.magic));
    }
    let regions = handoff.region_count as usize;
    if regions > MAX_REGIONS {
        return Err(HandoffError::CountTooLarge {
            what: "memory regions",
            count: handoff.region_count,
        });
    }
    let module_count = handoff.module_count as usize;
    if module_count > MAX_MODULES {
        return Err(HandoffError::CountTooLarge {
            what: "modules",
            count: handoff.module_count,
        });
    }
    let mut map = [FirmwareRegion {
        base: 0,
        len: 0,
        kind: CoreKind::Reserved,
    }; MAX_REGIONS];
    for (slot, raw) in map.iter_mut().zip(&handoff.regions[..regions]) {
        let kind = match raw.kind {
            k if k == RegionKind::Usable as u32 => CoreKind::Usable,
            k if k == RegionKind::Reserved as u32 => CoreKind::Reserved,
            k if k == RegionKind::AcpiReclaimable as u32 => CoreKind::AcpiReclaimable,
            k if k == RegionKind::AcpiNvs as u32 => CoreKind::AcpiNvs,
            k if k == RegionKind::Defective as u32 => CoreKind::Defective,
            other => CoreKind::Other(other),
        };
        *slot = FirmwareRegion {
            base: raw.base,
            len: raw.len,
            kind,
        };
    }
    let mut modules = [PhysRange::default(); MAX_MODULES];
    for (index, module) in handoff.modules[..module_count].iter().enumerate() {
        if module.end < module.start {
            return Err(HandoffError::Map(MemoryMapError::BadModule { index }));
        }
        modules[index] = PhysRange::new(module.start, module.end);
        let len = module.cmdline_len as usize;
        if len > MAX_CMDLINE || core::str::from_utf8(&module.cmdline[..len]).is_err() {
            return Err(HandoffError::BadCommandLine { index: Some(index) });
        }
    }
    let mut module_names = heapless::Vec::new();
    boot_modules::name_boot_modules(
        handoff.modules[..module_count]
            .iter()
            .map(|m| &m.cmdline[..m.cmdline_len as usize]),
        &mut module_names,
    )
    .map_err(HandoffError::ModuleNames)?;
    let len = handoff.cmdline_len as usize;
    if len > MAX_CMDLINE || core::str::from_utf8(&handoff.cmdline[..len]).is_err() {
        return Err(HandoffError::BadCommandLine { index: None });
    }
    let mut free = [PhysRange::default(); WORK_RANGES];
    let free_count = validate_memory_map(
        &map[..regions],
        image,
        &modules[..module_count],
        &DEFAULT_MMIO_HOLES,
        &mut free,
    )
    .map_err(HandoffError::Map)?;

    let mut low = [PhysRange::default(); LOW_RANGES];
    let mut low_count = 0;
    for region in &map[..regions] {
        if region.kind == CoreKind::Usable && region.base < LOW_LIMIT && low_count < 8 {
            let start = region.base.div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let end = region.base.saturating_add(region.len).min(LOW_LIMIT) / PAGE_SIZE * PAGE_SIZE;
            if start < end {
                low[low_count] = PhysRange::new(start, end);
                low_count += 1;
            }
        }
    }
    for module in &modules[..module_count] {
        let pages = PhysRange::new(module.start.0, module.end.0.div_ceil(PAGE_SIZE) * PAGE_SIZE);
        subtract(&mut low, &mut low_count, pages)?;
    }
    // The first page tables are built under the early identity map: some RAM must lie below it.
    if !free[..free_count]
        .iter()
        .any(|r| r.start.0 < EARLY_MAP_LIMIT)
    {
        return Err(HandoffError::NoRam);
    }
    // The allocator tracks MAX_RANGES regions: keep the largest, report what is left unused.
    let list = &mut free[..free_count];
    list.sort_unstable_by_key(|r| core::cmp::Reverse(r.len()));
    let kept = free_count.min(MAX_RANGES);
    let unused_bytes: u64 = list[kept..].iter().map(|r| r.len()).sum();
    let mut out = [PhysRange::default(); MAX_RANGES];
    out[..kept].copy_from_slice(&list[..kept]);
    out[..kept].sort_unstable_by_key(|r| r.start.0);
    let mut module_pages = [PhysRange::default(); MAX_MODULES];
    for (index, module) in modules[..module_count].iter().enumerate() {
        module_pages[index] =
            PhysRange::new(module.start.0, module.end.0.div_ceil(PAGE_SIZE) * PAGE_SIZE);
    }
    Ok(ValidatedBoot {
        free: out,
        free_count: kept,
        unused_ranges: free_count - kept,
        unused_bytes,
        low,
        low_count,
        modules: module_pages,
        module_count,
        module_bytes: modules,
        module_names,
        map,
        region_count: regions,
    })
}

impl core::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic(m) => write!(
                f,
                "the hand-off record has magic {m:#x}: not written by the pre-launch stage"
            ),
            Self::CountTooLarge { what, count } => write!(
                f,
                "the hand-off record claims {count} {what}, more than it holds"
            ),
            Self::Map(error) => write!(f, "{error}"),
            Self::BadCommandLine { index: Some(i) } => {
                write!(f, "module {i}'s command line is too long or not UTF-8")
            }
            Self::BadCommandLine { index: None } => {
                write!(f, "the hypervisor command line is too long or not UTF-8")
            }
            Self::ModuleNames(error) => write!(f, "boot modules refused: {error}"),
            Self::TooManyRanges => {
                write!(f, "more disjoint RAM ranges than the validation can hold")
            }
            Self::NoRam => write!(f, "no usable RAM remains below 4 GiB"),
        }
    }
}
