//! Validation of the memory map and module list handed over by the pre-launch stage.
//!
//! After a dynamic launch everything the pre-launch stage produced is hostile input: a memory map
//! that claims RAM where the TPM's registers are, or a module that overlaps the hypervisor's image,
//! would let whoever controlled the pre-launch stage steer the post-launch hypervisor. So the map is
//! checked entry by entry (no zero size, no wraparound, nothing beyond 2^52, no overlaps, no RAM on
//! an MMIO hole), the image and every module must lie in RAM without overlapping each other or an
//! MMIO hole, and only what is left (RAM above 1 MiB, minus the image and the modules, rounded
//! inward to pages) goes to the frame allocator. Every error names the entry it is about.

use crate::addr::{MAX_PHYS_ADDR, PAGE_SIZE, PhysAddr, PhysRange};
use core::fmt;

/// Most memory-map entries accepted (EFI maps on large machines have a few hundred).
pub const MAX_MAP_ENTRIES: usize = 512;
/// Most boot modules accepted.
pub const MAX_MODULES: usize = slipway_protocol::boot_modules::MAX_BOOT_MODULES;
/// Memory below 1 MiB is never handed out: firmware, real-mode IVT/BDA, legacy video and ROMs.
pub const LOW_MEMORY_END: u64 = 0x10_0000;

/// MMIO ranges of the platform the hypervisor must never treat as RAM: the TPM (TIS, localities
/// 0-4), the IOAPIC and the local APIC.
pub const DEFAULT_MMIO_HOLES: [PhysRange; 3] = [
    PhysRange::new(
        slipway_protocol::platform::TPM_TIS_BASE,
        slipway_protocol::platform::TPM_TIS_BASE + slipway_protocol::platform::TPM_TIS_WINDOW_SIZE,
    ),
    PhysRange::new(0xfec0_0000, 0xfec0_1000),
    PhysRange::new(0xfee0_0000, 0xfee0_1000),
];

/// Type of a memory-map entry (multiboot2 basic types; EFI types are converted by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Available RAM.
    Usable,
    /// Reserved.
    Reserved,
    /// ACPI tables, reclaimable after the OS read them (not by us).
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Defective,
    /// Any other type code.
    Other(u32),
}

/// One memory-map entry as the pre-launch stage reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareRegion {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// Type.
    pub kind: RegionKind,
}

/// Why the memory map or the module list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryMapError {
    /// the memory map has more entries than MAX_MAP_ENTRIES
    TooManyEntries {
        /// Entries given.
        count: usize,
    },
    /// the module list has more entries than MAX_MODULES
    TooManyModules {
        /// Modules given.
        count: usize,
    },
    /// a memory-map entry has length zero
    ZeroSizeEntry {
        /// Entry index.
        index: usize,
    },
    /// a memory-map entry wraps around or ends beyond 2^52
    EntryOutOfRange {
        /// Entry index.
        index: usize,
    },
    /// two memory-map entries overlap
    EntriesOverlap {
        /// Index of the first entry.
        first: usize,
        /// Index of the second entry.
        second: usize,
    },
    /// a usable memory-map entry covers an MMIO hole
    RamOverlapsMmio {
        /// Entry index.
        index: usize,
        /// The hole.
        hole: PhysRange,
    },
    /// the hypervisor image is empty, wraps around, or is not entirely inside usable RAM
    ImageOutsideRam {
        /// The image range.
        image: PhysRange,
    },
    /// a module is empty, wraps around, or does not start on a page boundary
    BadModule {
        /// Module index.
        index: usize,
    },
    /// a module is not entirely inside usable RAM
    ModuleOutsideRam {
        /// Module index.
        index: usize,
    },
    /// a module overlaps the hypervisor image
    ModuleOverlapsImage {
        /// Module index.
        index: usize,
    },
    /// a module overlaps an MMIO hole
    ModuleOverlapsMmio {
        /// Module index.
        index: usize,
        /// The hole.
        hole: PhysRange,
    },
    /// two modules share a page
    ModulesOverlap {
        /// Index of the first module.
        first: usize,
        /// Index of the second module.
        second: usize,
    },
    /// more free regions than the output slice holds
    OutputFull {
        /// Capacity of the output slice.
        capacity: usize,
    },
    /// no usable memory is left for the frame allocator
    NoUsableMemory,
}

impl fmt::Display for MemoryMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MemoryMapError::*;
        match self {
            TooManyEntries { count } => write!(
                f,
                "memory map has {count} entries, more than {MAX_MAP_ENTRIES}"
            ),
            TooManyModules { count } => write!(f, "{count} modules, more than {MAX_MODULES}"),
            ZeroSizeEntry { index } => write!(f, "memory map entry {index} has length zero"),
            EntryOutOfRange { index } => write!(
                f,
                "memory map entry {index} wraps around or ends beyond 2^52"
            ),
            EntriesOverlap { first, second } => {
                write!(f, "memory map entries {first} and {second} overlap")
            }
            RamOverlapsMmio { index, hole } => write!(
                f,
                "memory map entry {index} claims RAM on the MMIO hole {hole}"
            ),
            ImageOutsideRam { image } => {
                write!(f, "hypervisor image {image} is not inside usable RAM")
            }
            BadModule { index } => write!(
                f,
                "module {index} is empty, wraps around, or is not page aligned"
            ),
            ModuleOutsideRam { index } => write!(f, "module {index} is not inside usable RAM"),
            ModuleOverlapsImage { index } => {
                write!(f, "module {index} overlaps the hypervisor image")
            }
            ModuleOverlapsMmio { index, hole } => {
                write!(f, "module {index} overlaps the MMIO hole {hole}")
            }
            ModulesOverlap { first, second } => {
                write!(f, "modules {first} and {second} share a page")
            }
            OutputFull { capacity } => write!(f, "more than {capacity} free regions"),
            NoUsableMemory => write!(f, "no usable memory left"),
        }
    }
}

fn entry_range(index: usize, entry: &FirmwareRegion) -> Result<PhysRange, MemoryMapError> {
    if entry.len == 0 {
        return Err(MemoryMapError::ZeroSizeEntry { index });
    }
    match PhysRange::from_start_len(entry.base, entry.len) {
        Some(range) if range.end.0 <= MAX_PHYS_ADDR => Ok(range),
        _ => Err(MemoryMapError::EntryOutOfRange { index }),
    }
}

/// Rounds a module outward to whole pages (what it occupies as far as frames go).
fn pages_of(range: PhysRange) -> PhysRange {
    let end = range
        .end
        .align_up(PAGE_SIZE)
        .unwrap_or(PhysAddr(!(PAGE_SIZE - 1)));
    PhysRange {
        start: range.start.align_down(PAGE_SIZE),
        end,
    }
}

/// Sorts a small fixed array by start address (insertion sort: no allocation, n is small).
fn sort_by_start(ranges: &mut [PhysRange]) {
    for i in 1..ranges.len() {
        let mut j = i;
        while j > 0 && ranges[j - 1].start > ranges[j].start {
            ranges.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Bytes of `ranges` below 4 GiB and at or above it (for the hypervisor's RAM summary).
pub fn split_at_4_gib(ranges: &[PhysRange]) -> (u64, u64) {
    const FOUR_GIB: u64 = 1 << 32;
    ranges.iter().fold((0, 0), |(below, above), r| {
        let low = r.end.0.min(FOUR_GIB).saturating_sub(r.start.0);
        (below + low, above + (r.len() - low))
    })
}

/// Validates `map`, `image` and `modules` against each other and `mmio_holes`, and writes the
/// frames the allocator may hand out into `out` as sorted, disjoint, page-aligned ranges.
/// Returns how many ranges were written.
pub fn validate_memory_map(
    map: &[FirmwareRegion],
    image: PhysRange,
    modules: &[PhysRange],
    mmio_holes: &[PhysRange],
    out: &mut [PhysRange],
) -> Result<usize, MemoryMapError> {
    if map.len() > MAX_MAP_ENTRIES {
        return Err(MemoryMapError::TooManyEntries { count: map.len() });
    }
    if modules.len() > MAX_MODULES {
        return Err(MemoryMapError::TooManyModules {
            count: modules.len(),
        });
    }
    // Entries one by one, then pairwise overlap (n^2 over at most 512 entries, once per boot).
    for (index, entry) in map.iter().enumerate() {
        let range = entry_range(index, entry)?;
        for (earlier, other) in map[..index].iter().enumerate() {
            if range.overlaps(&entry_range(earlier, other)?) {
                return Err(MemoryMapError::EntriesOverlap {
                    first: earlier,
                    second: index,
                });
            }
        }
        if entry.kind == RegionKind::Usable
            && let Some(hole) = mmio_holes.iter().find(|hole| hole.overlaps(&range))
        {
            return Err(MemoryMapError::RamOverlapsMmio { index, hole: *hole });
        }
    }

    // Usable RAM, sorted and with touching entries merged (EFI splits RAM into many entries).
    let mut ram = [PhysRange::default(); MAX_MAP_ENTRIES];
    let mut ram_count = 0;
    for entry in map.iter().filter(|e| e.kind == RegionKind::Usable) {
        ram[ram_count] = PhysRange::new(entry.base, entry.base + entry.len);
        ram_count += 1;
    }
    sort_by_start(&mut ram[..ram_count]);
    let mut merged = 0;
    for i in 0..ram_count {
        if merged > 0 && ram[merged - 1].end == ram[i].start {
            ram[merged - 1].end = ram[i].end;
        } else {
            ram[merged] = ram[i];
            merged += 1;
        }
    }
    let ram = &ram[..merged];
    let in_ram = |range: &PhysRange| ram.iter().any(|r| r.contains_range(range));

    if image.is_empty() || !in_ram(&image) {
        return Err(MemoryMapError::ImageOutsideRam { image });
    }
    let image_pages = pages_of(image);
    for (index, module) in modules.iter().enumerate() {
        if module.is_empty()
            || !module.start.is_aligned(PAGE_SIZE)
            || module.end.align_up(PAGE_SIZE).is_none()
        {
            return Err(MemoryMapError::BadModule { index });
        }
        if let Some(hole) = mmio_holes.iter().find(|hole| hole.overlaps(module)) {
            return Err(MemoryMapError::ModuleOverlapsMmio { index, hole: *hole });
        }
        if !in_ram(&pages_of(*module)) {
            return Err(MemoryMapError::ModuleOutsideRam { index });
        }
        if pages_of(*module).overlaps(&image_pages) {
            return Err(MemoryMapError::ModuleOverlapsImage { index });
        }
        if let Some(first) = modules[..index]
            .iter()
            .position(|m| pages_of(*m).overlaps(&pages_of(*module)))
        {
            return Err(MemoryMapError::ModulesOverlap {
                first,
                second: index,
            });
        }
    }

    // Everything carved out of RAM, sorted.
    let mut excluded = [PhysRange::default(); MAX_MODULES + 2];
    excluded[0] = PhysRange::new(0, LOW_MEMORY_END);
    excluded[1] = image_pages;
    for (slot, module) in excluded[2..].iter_mut().zip(modules) {
        *slot = pages_of(*module);
    }
    let excluded = &mut excluded[..modules.len() + 2];
    sort_by_start(excluded);

    let mut count = 0;
    for region in ram {
        // Whole pages only: a partial page at either end may share a frame with something else.
        let (Some(start), end) = (
            region.start.align_up(PAGE_SIZE),
            region.end.align_down(PAGE_SIZE),
        ) else {
            continue;
        };
        let mut cursor = start;
        for hole in excluded.iter() {
            if hole.end <= cursor || hole.start >= end {
                continue;
            }
            if hole.start > cursor {
                push(
                    out,
                    &mut count,
                    PhysRange {
                        start: cursor,
                        end: hole.start,
                    },
                )?;
            }
            cursor = cursor.max(hole.end);
        }
        if cursor < end {
            push(out, &mut count, PhysRange { start: cursor, end })?;
        }
    }
    if count == 0 {
        return Err(MemoryMapError::NoUsableMemory);
    }
    Ok(count)
}

fn push(out: &mut [PhysRange], count: &mut usize, range: PhysRange) -> Result<(), MemoryMapError> {
    let capacity = out.len();
    let slot = out
        .get_mut(*count)
        .ok_or(MemoryMapError::OutputFull { capacity })?;
    *slot = range;
    *count += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec;

    const MIB: u64 = 0x10_0000;

    fn qemu_map() -> Vec<FirmwareRegion> {
        // What SeaBIOS reports on q35 with 2 GiB, as GRUB passes it on.
        let usable = RegionKind::Usable;
        let reserved = RegionKind::Reserved;
        [
            (0, 0x9fc00, usable),
            (0x9fc00, 0x400, reserved),
            (0xf0000, 0x10000, reserved),
            (MIB, 0x7fee_0000 - MIB, usable),
            (0x7fee_0000, 0x20000, reserved),
            (0xb000_0000, 0x1000_0000, reserved),
            (0xfffc_0000, 0x40000, reserved),
        ]
        .into_iter()
        .map(|(base, len, kind)| FirmwareRegion { base, len, kind })
        .collect()
    }

    fn run(
        map: &[FirmwareRegion],
        image: PhysRange,
        modules: &[PhysRange],
    ) -> Result<Vec<PhysRange>, MemoryMapError> {
        let mut out = [PhysRange::default(); 16];
        let n = validate_memory_map(map, image, modules, &DEFAULT_MMIO_HOLES, &mut out)?;
        Ok(out[..n].to_vec())
    }

    const IMAGE: PhysRange = PhysRange::new(2 * MIB, 2 * MIB + 0x5_4321);

    #[test]
    fn free_regions_exclude_low_memory_image_and_modules() {
        let modules = [
            PhysRange::new(0x40_0000, 0x40_1801),
            PhysRange::new(0x50_0000, 0x58_0000),
        ];
        let free = run(&qemu_map(), IMAGE, &modules).unwrap();
        assert_eq!(
            free,
            [
                PhysRange::new(MIB, 2 * MIB),
                PhysRange::new(0x25_5000, 0x40_0000),
                PhysRange::new(0x40_2000, 0x50_0000),
                PhysRange::new(0x58_0000, 0x7fee_0000),
            ]
        );
    }

    #[test]
    fn hostile_maps_are_refused_naming_the_entry() {
        let mut map = qemu_map();
        map[2].len = 0;
        assert_eq!(
            run(&map, IMAGE, &[]),
            Err(MemoryMapError::ZeroSizeEntry { index: 2 })
        );
        let mut map = qemu_map();
        map[6].len = u64::MAX;
        assert_eq!(
            run(&map, IMAGE, &[]),
            Err(MemoryMapError::EntryOutOfRange { index: 6 })
        );
        let mut map = qemu_map();
        map.push(FirmwareRegion {
            base: 0x7fe0_0000,
            len: 0x20_0000,
            kind: RegionKind::Reserved,
        });
        assert_eq!(
            run(&map, IMAGE, &[]),
            Err(MemoryMapError::EntriesOverlap {
                first: 3,
                second: 7
            })
        );
        let mut map = qemu_map();
        map.push(FirmwareRegion {
            base: 0xfed0_0000,
            len: 0x10_0000,
            kind: RegionKind::Usable,
        });
        assert_eq!(
            run(&map, IMAGE, &[]),
            Err(MemoryMapError::RamOverlapsMmio {
                index: 7,
                hole: DEFAULT_MMIO_HOLES[0]
            })
        );
        let many = std::vec![FirmwareRegion { base: 0, len: 1, kind: RegionKind::Reserved }; MAX_MAP_ENTRIES + 1];
        assert_eq!(
            run(&many, IMAGE, &[]),
            Err(MemoryMapError::TooManyEntries {
                count: MAX_MAP_ENTRIES + 1
            })
        );
    }

    #[test]
    fn image_and_modules_must_sit_in_ram_apart() {
        let map = qemu_map();
        let reserved_image = PhysRange::new(0xb000_0000, 0xb010_0000);
        assert_eq!(
            run(&map, reserved_image, &[]),
            Err(MemoryMapError::ImageOutsideRam {
                image: reserved_image
            })
        );
        let on_image = [PhysRange::new(0x20_0000 + 0x5_4000, 0x26_0000)];
        assert_eq!(
            run(&map, IMAGE, &on_image),
            Err(MemoryMapError::ModuleOverlapsImage { index: 0 })
        );
        let outside = [
            PhysRange::new(0x40_0000, 0x41_0000),
            PhysRange::new(0x7fed_0000, 0x7fef_0000),
        ];
        assert_eq!(
            run(&map, IMAGE, &outside),
            Err(MemoryMapError::ModuleOutsideRam { index: 1 })
        );
        let on_tpm = [PhysRange::new(0xfed4_0000, 0xfed4_1000)];
        assert_eq!(
            run(&map, IMAGE, &on_tpm),
            Err(MemoryMapError::ModuleOverlapsMmio {
                index: 0,
                hole: DEFAULT_MMIO_HOLES[0]
            })
        );
        let sharing = [
            PhysRange::new(0x40_0000, 0x40_0010),
            PhysRange::new(0x40_0000, 0x40_2000),
        ];
        assert_eq!(
            run(&map, IMAGE, &sharing),
            Err(MemoryMapError::ModulesOverlap {
                first: 0,
                second: 1
            })
        );
        let unaligned = [PhysRange::new(0x40_0010, 0x40_2000)];
        assert_eq!(
            run(&map, IMAGE, &unaligned),
            Err(MemoryMapError::BadModule { index: 0 })
        );
        let empty = [PhysRange::new(0x40_0000, 0x40_0000)];
        assert_eq!(
            run(&map, IMAGE, &empty),
            Err(MemoryMapError::BadModule { index: 0 })
        );
    }

    #[test]
    fn split_ram_entries_are_merged_and_partial_pages_dropped() {
        let map = [
            FirmwareRegion {
                base: MIB,
                len: MIB,
                kind: RegionKind::Usable,
            },
            FirmwareRegion {
                base: 2 * MIB,
                len: 6 * MIB + 0x800,
                kind: RegionKind::Usable,
            },
        ];
        let free = run(&map, IMAGE, &[]).unwrap();
        assert_eq!(
            free,
            [
                PhysRange::new(MIB, 2 * MIB),
                PhysRange::new(0x25_5000, 8 * MIB)
            ]
        );
        let tiny = [FirmwareRegion {
            base: 2 * MIB,
            len: 0x5_5000,
            kind: RegionKind::Usable,
        }];
        assert_eq!(run(&tiny, IMAGE, &[]), Err(MemoryMapError::NoUsableMemory));
    }

    proptest! {
        #[test]
        fn output_never_touches_image_modules_holes_or_non_ram(
            module_pages in proptest::collection::vec((0u64..2000, 1u64..40), 0..8),
        ) {
            let mut modules: Vec<PhysRange> = Vec::new();
            for (page, pages) in module_pages {
                let m = PhysRange::new(0x30_0000 + page * PAGE_SIZE, 0x30_0000 + (page + pages) * PAGE_SIZE - 7);
                if modules.iter().all(|o| !pages_of(*o).overlaps(&pages_of(m))) { modules.push(m); }
            }
            let map = qemu_map();
            let mut out = [PhysRange::default(); 16];
            let n = validate_memory_map(&map, IMAGE, &modules, &DEFAULT_MMIO_HOLES, &mut out).unwrap();
            let free = &out[..n];
            let mut total = 0;
            for (i, r) in free.iter().enumerate() {
                prop_assert!(r.start.is_aligned(PAGE_SIZE) && r.end.is_aligned(PAGE_SIZE) && !r.is_empty());
                prop_assert!(r.start.0 >= LOW_MEMORY_END);
                prop_assert!(!r.overlaps(&pages_of(IMAGE)));
                prop_assert!(modules.iter().all(|m| !r.overlaps(&pages_of(*m))));
                prop_assert!(map.iter().any(|e| e.kind == RegionKind::Usable && PhysRange::new(e.base, e.base + e.len).contains_range(r)));
                if i > 0 { prop_assert!(free[i - 1].end <= r.start); }
                total += r.len();
            }
            // Nothing usable is lost either: RAM above 1 MiB minus what is excluded.
            let excluded: u64 = modules.iter().map(|m| pages_of(*m).len()).sum::<u64>() + pages_of(IMAGE).len();
            prop_assert_eq!(total, 0x7fee_0000 - MIB - excluded);
        }
    }

    #[test]
    fn ram_is_counted_below_and_above_4_gib() {
        let ranges = [
            PhysRange::new(0x10_0000, 0x8000_0000),
            PhysRange::new(0xF000_0000, 0x1_1000_0000),
            PhysRange::new(0x1_2000_0000, 0x1_4000_0000),
        ];
        assert_eq!(
            split_at_4_gib(&ranges),
            (0x7FF0_0000 + 0x1000_0000, 0x1000_0000 + 0x2000_0000)
        );
        assert_eq!(split_at_4_gib(&[]), (0, 0));
    }
}
