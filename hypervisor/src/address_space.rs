//! The hypervisor's own page tables (built with `slipway-hv-core`'s builder): an identity map
//! where text is R+X, rodata R, data and bss RW+NX with every stack guard page left unmapped,
//! free RAM RW+NX, modules R+NX, the local APIC and TPM MMIO RW+NX. No page is writable and
//! executable (the builder refuses it).

use core::ptr::addr_of;

use slipway_hv_core::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use slipway_hv_core::frame_alloc::FrameAllocator;
use slipway_hv_core::paging::{Access, PageTable, PagingError, TableKind};

use crate::physmem::DirectMap;

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// The image's sections as `(range, access, name)`.
pub fn image_sections() -> [(PhysRange, Access, &'static str); 3] {
    // SAFETY: only addresses of linker-script symbols are taken.
    unsafe {
        [
            (
                PhysRange::new(sym(&*addr_of!(__text_start)), sym(&*addr_of!(__text_end))),
                Access::RX,
                "text",
            ),
            (
                PhysRange::new(
                    sym(&*addr_of!(__rodata_start)),
                    sym(&*addr_of!(__rodata_end)),
                ),
                Access::R,
                "rodata",
            ),
            (
                PhysRange::new(sym(&*addr_of!(__data_start)), sym(&*addr_of!(__data_end))),
                Access::RW,
                "data",
            ),
        ]
    }
}

/// The whole image `[start of text, end of bss)`.
pub fn image_range() -> PhysRange {
    let [text, _, data] = image_sections();
    PhysRange::new(text.0.start.0, data.0.end.0)
}

/// Builds the tables. `free` is RAM the hypervisor owns (what the allocator manages and the
/// frame bitmap, below and above 4 GiB), `modules` the boot modules,
/// `trampoline` the AP start page (R+X: written before the switch, executed by APs).
pub fn build(
    mem: &mut DirectMap,
    alloc: &mut impl FrameAllocator,
    free: &[PhysRange],
    modules: &[PhysRange],
    trampoline: Option<u64>,
) -> Result<PageTable, PagingError> {
    let mut table = PageTable::new(TableKind::Host, mem, alloc)?;
    let guards: heapless::Vec<u64, 16> = crate::cpu::guard_pages().collect();
    for (range, access, _) in image_sections() {
        let mut page = range.start.0;
        while page < range.end.0 {
            // Runs of pages between guard pages.
            let mut end = page;
            while end < range.end.0 && !guards.contains(&end) {
                end += PAGE_SIZE;
            }
            if end > page {
                table.map_range(mem, alloc, page, PhysAddr(page), end - page, access, false)?;
            }
            page = end + PAGE_SIZE; // skip the guard page
        }
    }
    for range in free {
        table.map_range(
            mem,
            alloc,
            range.start.0,
            range.start,
            range.len(),
            Access::RW,
            true,
        )?;
    }
    for range in modules {
        table.map_range(
            mem,
            alloc,
            range.start.0,
            range.start,
            range.len(),
            Access::R,
            true,
        )?;
    }
    // Local APIC and TPM registers (the IOAPIC is not used).
    for (base, len) in [
        (crate::lapic::DEFAULT_BASE, PAGE_SIZE),
        (
            slipway_protocol::platform::TPM_TIS_BASE,
            slipway_protocol::platform::TPM_TIS_WINDOW_SIZE,
        ),
    ] {
        table.map_range(mem, alloc, base, PhysAddr(base), len, Access::MMIO, false)?;
    }
    if let Some(page) = trampoline {
        table.map_range(
            mem,
            alloc,
            page,
            PhysAddr(page),
            PAGE_SIZE,
            Access::RX,
            false,
        )?;
    }
    Ok(table)
}

/// Switches the calling CPU to `root`.
///
/// # Safety
/// `root` must map everything the CPU touches next (code, stack, data) with the same addresses.
pub unsafe fn activate(root: u64) {
    // SAFETY: the caller guarantees the new tables identity-map the running code and stack.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
}
