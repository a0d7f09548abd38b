//! The multiboot2 boot information as the pre-launch stage reads it: `BootInformation::load`
//! and the accessors `describe_boot` and the banner call (memory maps, modules, command lines,
//! RSDP and EFI system-table tags), then the memory map, image and modules through
//! `slipway-hv-core::memmap::validate_memory_map`, as the post-launch stage validates them.
//!
//! Known panics of `multiboot2` 0.28 (its accessors assert on malformed tags; see
//! [`crate_would_panic`]) are recognized first and not fed to those accessors, so that the
//! campaign looks for everything else; the hypervisor's pre-launch stage still reaches them
//! (reported, not fixed here: the reading lives in the binary).
//!
//! Checked: loading never reads past the information's declared size; every tag and every memory
//! area lies inside it; command lines that read as strings are NUL-free UTF-8; the validator's
//! free ranges are sorted, disjoint, page-aligned, at or above 1 MiB, inside usable RAM and clear
//! of the image, every module (page-rounded) and every MMIO hole.

use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType, TagType};
use slipway_hv_core::addr::{PAGE_SIZE, PhysRange};
use slipway_hv_core::memmap::{
    DEFAULT_MMIO_HOLES, FirmwareRegion, LOW_MEMORY_END, MAX_MAP_ENTRIES, MAX_MODULES, RegionKind,
    validate_memory_map,
};

/// Where the hypervisor image lies (its link address, 2 MiB, and a typical size).
pub const IMAGE: PhysRange = PhysRange::new(0x20_0000, 0x30_0000);

/// EFI memory type of free RAM (EfiConventionalMemory).
const EFI_CONVENTIONAL: u32 = 7;

/// Runs one input.
pub fn run(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    // An 8-byte aligned copy whose declared size never exceeds the copy (GRUB's pointer is
    // valid for the size it declares; a larger claim is not this harness's to test).
    let mut words = vec![0u64; data.len().div_ceil(8)];
    for (word, chunk) in words.iter_mut().zip(data.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(bytes);
    }
    let declared = (words[0] & 0xffff_ffff) as usize;
    if declared > data.len() {
        words[0] = (words[0] & !0xffff_ffff) | data.len() as u64;
    }
    let Some(info) = load(&words) else {
        return;
    };
    let start = info.start_address();
    let end = start + info.total_size();
    assert!(info.total_size() <= data.len() && info.total_size() >= 8);
    for tag in info.tags() {
        let at = tag as *const _ as *const u8 as usize;
        let size = tag.header().size as usize;
        assert!(
            at >= start + 8 && at + size <= end,
            "tag outside the information"
        );
    }
    read(&info);
}

/// `BootInformation::load` over an owned, aligned buffer.
#[allow(unsafe_code)]
fn load(words: &[u64]) -> Option<BootInformation<'_>> {
    // SAFETY: the pointer is 8-aligned (a u64 slice) and valid for reads of the whole slice,
    // which is at least the total size the header declares (clamped above); the slice is not
    // written while the returned reference lives (it borrows `words`).
    unsafe { BootInformation::load(words.as_ptr().cast::<BootInformationHeader>()) }.ok()
}

/// Sizes below which `multiboot2` 0.28's typed accessors assert (`cast`, `dst_len`), and the
/// memory-map fields its iterators assert on. Returns the reason for a tag the crate would panic
/// on.
pub fn crate_would_panic(typ: u32, size: u32, payload: &[u8]) -> Option<&'static str> {
    let u32_at = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let size = size as usize;
    match typ {
        // Basic memory map: entry_size must be 24 and the areas a whole number of entries.
        6 => match u32_at(0) {
            _ if size < 16 || !size.is_multiple_of(8) => {
                Some("memory map tag size not 16 + whole entries")
            }
            Some(24) if (size - 16).is_multiple_of(24) => None,
            _ => Some("memory map entry size is not 24 or the areas are not whole entries"),
        },
        // EFI memory map: descriptor version 1, size a multiple of 8 covering a descriptor,
        // the map a whole number of descriptors.
        17 => match (u32_at(0), u32_at(4)) {
            _ if size < 16 || !size.is_multiple_of(8) => {
                Some("EFI memory map tag size not 16 + whole descriptors")
            }
            (Some(desc), Some(1)) if desc >= 40 && desc.is_multiple_of(8) => (!(size - 16)
                .is_multiple_of(desc as usize))
            .then_some("EFI map not whole descriptors"),
            _ => Some("EFI descriptor version is not 1 or its size is bad"),
        },
        // Module: start and end.
        3 if size < 16 => Some("module tag shorter than its fixed part"),
        // Fixed-size tags (RSDP v1/v2, EFI system tables, EFI boot services not exited, which
        // `efi_memory_map_tag` looks for): `cast` asserts that the tag, rounded up to 8 bytes,
        // is exactly the structure's size.
        11 | 12 | 14 | 15 | 18 => {
            let expected = match typ {
                18 => 8,
                11 | 12 => 16,
                14 => 32,
                _ => 48,
            };
            (size.div_ceil(8) * 8 != expected).then_some("fixed-size tag of another size")
        }
        _ => None,
    }
}

fn read(info: &BootInformation<'_>) {
    let mut avoid = Vec::new();
    for tag in info.tags() {
        let header = tag.header();
        let typ = header.typ.get();
        if crate_would_panic(typ, header.size, tag.payload()).is_some() {
            avoid.push(typ);
        }
    }
    let safe = |typ: TagType| !avoid.contains(&typ.val());
    // `efi_memory_map_tag` also casts the boot-services-not-exited tag.
    let efi_map_safe = safe(TagType::EfiMmap) && safe(TagType::EfiBs);
    if safe(TagType::Efi64) {
        let _ = info.efi_sdt64_tag().map(|t| t.sdt_address());
    }
    if safe(TagType::Efi32) {
        let _ = info.efi_sdt32_tag().map(|t| t.sdt_address());
    }
    if safe(TagType::AcpiV2) {
        let _ = info.rsdp_v2_tag().map(|t| t.xsdt_address());
    }
    if safe(TagType::AcpiV1) {
        let _ = info.rsdp_v1_tag().map(|t| t.rsdt_address());
    }
    if safe(TagType::Cmdline)
        && let Some(Ok(line)) = info.command_line_tag().map(|t| t.cmdline())
    {
        assert!(!line.contains('\0'));
    }
    let mut modules = Vec::new();
    if safe(TagType::Module) {
        for module in info.module_tags() {
            if let Ok(line) = module.cmdline() {
                assert!(!line.contains('\0'));
            }
            let (start, end) = (module.start_address(), module.end_address());
            // `module_size` asserts that the end is not below the start (a known panic the
            // banner reaches): asked only of modules that satisfy it.
            if end >= start {
                assert_eq!(module.module_size(), end - start);
            }
            modules.push(PhysRange::new(u64::from(start), u64::from(end)));
        }
    }
    let mut map = Vec::new();
    if efi_map_safe && let Some(efi) = info.efi_memory_map_tag() {
        for area in efi.memory_areas() {
            let kind = match area.ty.0 {
                EFI_CONVENTIONAL => RegionKind::Usable,
                other => RegionKind::Other(other),
            };
            map.push(FirmwareRegion {
                base: area.phys_start,
                len: area.page_count.saturating_mul(PAGE_SIZE),
                kind,
            });
        }
    } else if safe(TagType::Mmap)
        && let Some(basic) = info.memory_map_tag()
    {
        for area in basic.memory_areas() {
            // Not `end_address()`: it overflows (an overflow-checked panic) for an area reaching
            // past 2^64; the pre-launch stage reads only the start and the size.
            let kind = match area.typ() {
                MemoryAreaType::Available => RegionKind::Usable,
                other => RegionKind::Other(other.val()),
            };
            map.push(FirmwareRegion {
                base: area.start_address(),
                len: area.size(),
                kind,
            });
        }
    }
    check_validation(&map, &modules);
}

fn check_validation(map: &[FirmwareRegion], modules: &[PhysRange]) {
    let mut out = [PhysRange::default(); MAX_MAP_ENTRIES + MAX_MODULES + 2];
    let Ok(count) = validate_memory_map(map, IMAGE, modules, &DEFAULT_MMIO_HOLES, &mut out) else {
        return;
    };
    let free = &out[..count];
    let pages = |r: &PhysRange| {
        PhysRange::new(
            r.start.0 & !(PAGE_SIZE - 1),
            r.end.0.div_ceil(PAGE_SIZE) * PAGE_SIZE,
        )
    };
    for (i, range) in free.iter().enumerate() {
        assert!(!range.is_empty(), "empty free range");
        assert!(range.start.is_aligned(PAGE_SIZE) && range.end.is_aligned(PAGE_SIZE));
        assert!(range.start.0 >= LOW_MEMORY_END, "free range below 1 MiB");
        if i > 0 {
            assert!(
                free[i - 1].end <= range.start,
                "free ranges unsorted or overlapping"
            );
        }
        assert!(!range.overlaps(&pages(&IMAGE)), "free range on the image");
        for module in modules {
            assert!(!range.overlaps(&pages(module)), "free range on a module");
        }
        for hole in &DEFAULT_MMIO_HOLES {
            assert!(!range.overlaps(hole), "free range on an MMIO hole");
        }
        // Inside usable RAM: every byte is covered by usable entries (which may touch).
        let mut cursor = range.start.0;
        while cursor < range.end.0 {
            let entry = map
                .iter()
                .filter(|e| e.kind == RegionKind::Usable)
                .find(|e| e.base <= cursor && cursor - e.base < e.len)
                .unwrap_or_else(|| panic!("free byte {cursor:#x} is not in usable RAM"));
            cursor = entry.base + entry.len;
        }
    }
}
