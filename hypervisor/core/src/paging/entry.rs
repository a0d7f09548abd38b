//! Encoding of x86-64 long-mode page-table entries (the same format serves AMD nested tables).

use crate::addr::PhysAddr;

/// Present.
pub const PRESENT: u64 = 1 << 0;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// User: must be set at every level of a nested table (AMD APM vol. 2, 15.25.5: nested walks
/// are user accesses), must be clear in the hypervisor's own tables.
pub const USER: u64 = 1 << 2;
/// Page-level write-through.
pub const WRITE_THROUGH: u64 = 1 << 3;
/// Page-level cache disable.
pub const CACHE_DISABLE: u64 = 1 << 4;
/// Accessed (set by the MMU).
pub const ACCESSED: u64 = 1 << 5;
/// Dirty (set by the MMU, leaves only).
pub const DIRTY: u64 = 1 << 6;
/// Page size: a 2 MiB leaf at the page-directory level.
pub const HUGE: u64 = 1 << 7;
/// No-execute (needs EFER.NXE, also for nested tables).
pub const NO_EXECUTE: u64 = 1 << 63;
/// Physical address bits 12..52.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Address bits of a 2 MiB leaf (bit 12 would be the PAT bit there).
pub const LARGE_ADDR_MASK: u64 = 0x000f_ffff_ffe0_0000;
/// Bits this crate never writes. An entry with any of them set was not written by us: for
/// example a table that was linked before it was zeroed. (Global, software-available and
/// protection-key bits; MMU-set A/D are allowed; PCD/PWT only in leaves, checked separately.)
pub const FOREIGN_BITS: u64 = (1 << 8) | (0x7 << 9) | (0x7ff << 52);

/// Entries per table.
pub const ENTRIES: u64 = 512;

/// The physical address an entry points to (table or 4 KiB page).
pub const fn address(entry: u64) -> PhysAddr {
    PhysAddr(entry & ADDR_MASK)
}
