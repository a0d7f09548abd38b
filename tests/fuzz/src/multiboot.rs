//! The multiboot2 boot information as the pre-launch stage reads it: `BootInformation::load`
//! and the accessors `describe_boot` and the banner call (memory maps, modules, command lines,
//! RSDP and EFI system-table tags), then the memory map, image and modules through
//! `slipway-hv-core::memmap::validate_memory_map`, as the post-launch stage validates them.
//!
//! `multiboot2` 0.28's typed accessors assert on some malformed tags; the pre-launch stage
//! refuses any boot whose tags break hv-core's `multiboot_tags::check_tags` before it calls one.
//! This target applies the same rule and then calls every accessor the stage calls, without
//! exceptions: an input the rule accepts that still panics the crate is a finding.
//!
//! Checked: loading never reads past the information's declared size; every tag and every memory
//! area lies inside it; command lines that read as strings are NUL-free UTF-8; the validator's
//! free ranges are sorted, disjoint, page-aligned, at or above 1 MiB, inside usable RAM and clear
//! of the image, every module (page-rounded) and every MMIO hole.

use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
use slipway_hv_core::addr::{PAGE_SIZE, PhysRange};
use slipway_hv_core::memmap::{
    DEFAULT_MMIO_HOLES, FirmwareRegion, LOW_MEMORY_END, MAX_MAP_ENTRIES, MAX_MODULES, RegionKind,
    validate_memory_map,
};
use slipway_hv_core::multiboot_tags::check_tags;

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

fn read(info: &BootInformation<'_>) {
    let tags = info
        .tags()
        .map(|tag| (tag.header().typ.get(), tag.header().size, tag.payload()));
    if check_tags(tags).is_err() {
        // The pre-launch stage refuses this boot before reading any tag.
        return;
    }
    let _ = info.efi_sdt64_tag().map(|t| t.sdt_address());
    let _ = info.efi_sdt32_tag().map(|t| t.sdt_address());
    let _ = info.rsdp_v2_tag().map(|t| t.xsdt_address());
    let _ = info.rsdp_v1_tag().map(|t| t.rsdt_address());
    if let Some(Ok(line)) = info.command_line_tag().map(|t| t.cmdline()) {
        assert!(!line.contains('\0'));
    }
    let mut modules = Vec::new();
    for module in info.module_tags() {
        if let Ok(line) = module.cmdline() {
            assert!(!line.contains('\0'));
        }
        let (start, end) = (module.start_address(), module.end_address());
        assert_eq!(module.module_size(), end - start);
        modules.push(PhysRange::new(u64::from(start), u64::from(end)));
    }
    let mut map = Vec::new();
    if let Some(efi) = info.efi_memory_map_tag() {
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
    } else if let Some(basic) = info.memory_map_tag() {
        for area in basic.memory_areas() {
            assert_eq!(area.end_address(), area.start_address() + area.size());
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
