//! Encoding of Intel EPT paging-structure entries (SDM vol. 3, "EPT Translation Mechanism").
//!
//! EPT shares the 4-level, 512-entry, 9-bits-per-level layout and bit 7 as the large-page bit
//! with long-mode tables, so one walker serves both; only the entry bits differ: an entry is
//! present when any of R/W/X is set, there is no U or NX bit, and a leaf carries its memory type.

/// Read access.
pub const READ: u64 = 1 << 0;
/// Write access.
pub const WRITE: u64 = 1 << 1;
/// Execute access (supervisor-mode execute when mode-based execute control is on).
pub const EXECUTE: u64 = 1 << 2;
/// R, W and X: what every non-leaf entry grants, so leaves alone decide.
pub const RWX: u64 = READ | WRITE | EXECUTE;
/// Leaf bits 5:3: EPT memory type.
pub const MEMORY_TYPE_SHIFT: u32 = 3;
/// Leaf memory-type field mask.
pub const MEMORY_TYPE_MASK: u64 = 7 << MEMORY_TYPE_SHIFT;
/// Memory type uncacheable (device registers).
pub const MEMORY_TYPE_UC: u64 = 0;
/// Memory type write-back (RAM).
pub const MEMORY_TYPE_WB: u64 = 6;
/// Leaf bit 6: ignore the guest's PAT, so the EPT memory type alone decides.
pub const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7: a 2 MiB leaf in a PDE (same position as the long-mode PS bit).
pub const LARGE: u64 = 1 << 7;
/// Accessed flag (set by the CPU when EPTP bit 6 enables A/D flags).
pub const ACCESSED: u64 = 1 << 8;
/// Dirty flag (leaves only, set by the CPU with A/D flags enabled).
pub const DIRTY: u64 = 1 << 9;
/// Bits this crate never writes: user-mode execute (10), ignored bits (11, 52..62) and suppress-#VE
/// (63). An entry with any of them set was not written by us (an unzeroed table, for example).
pub const FOREIGN_BITS: u64 = (1 << 10) | (1 << 11) | (0xfff << 52);
/// Bits 6:3 of a non-leaf entry are reserved (bit 7 too, where the entry is not a leaf).
pub const NON_LEAF_RESERVED: u64 = 0xf << 3;
