//! Page-table builders over [`crate::memory::PhysMemory`] and [`crate::frame_alloc::FrameAllocator`].
//!
//! One implementation serves the hypervisor's own 4-level tables ([`TableKind::Host`]), AMD nested
//! page tables ([`TableKind::Nested`]) and Intel EPT ([`TableKind::Ept`]): the walk (4 levels of
//! 512 entries, bit 7 for 2 MiB leaves), map/unmap/translate/teardown, rollback and the invariant
//! checks are shared; the entry bits differ. Host and nested entries are long-mode entries that
//! differ in the U bit (set at every level in nested tables, never in host tables); EPT entries
//! are present when any of R/W/X is set, have no U or NX bit, and carry a memory type (WB with
//! ignore-PAT for RAM, UC for device registers) in each leaf. Host tables take canonical virtual
//! addresses and refuse writable+executable mappings; nested and EPT tables take guest-physical
//! addresses below 2^48. Every table frame is zeroed before it is linked, every
//! entry is written with one 64-bit store, and a failed multi-page mapping is rolled back.

pub mod entry;
pub mod ept;
mod table;

pub use table::{Mapping, PageTable, check_tables};

use crate::addr::{LARGE_PAGE_SIZE, PAGE_SIZE};
use crate::frame_alloc::AllocError;
use crate::memory::MemoryError;

/// Which kind of table a [`PageTable`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// The hypervisor's own long-mode tables: no U bit, W+X refused.
    Host,
    /// AMD nested page tables (guest-physical to host-physical): U bit at every level.
    Nested,
    /// Intel EPT (guest-physical to host-physical): RWX in every non-leaf entry, memory type WB
    /// with ignore-PAT in RAM leaves (UC for [`Access::uncached`]), no execute-disable bit.
    Ept,
}

impl TableKind {
    /// Whether addresses are guest-physical (nested and EPT) rather than host-virtual.
    pub const fn is_guest_physical(self) -> bool {
        !matches!(self, TableKind::Host)
    }
}

/// Access rights of a mapping. Read is always granted: x86 cannot express write- or
/// execute-only pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Writes allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
    /// Uncached (PCD|PWT), for device registers (MMIO) in the hypervisor's own tables.
    pub uncached: bool,
}

impl Access {
    /// Read-only data.
    pub const R: Access = Access {
        write: false,
        execute: false,
        uncached: false,
    };
    /// Read-write data.
    pub const RW: Access = Access {
        write: true,
        execute: false,
        uncached: false,
    };
    /// Code.
    pub const RX: Access = Access {
        write: false,
        execute: true,
        uncached: false,
    };
    /// Guest RAM (nested tables only: a guest manages its own W^X).
    pub const RWX: Access = Access {
        write: true,
        execute: true,
        uncached: false,
    };
    /// Device registers: read-write, not executable, uncached.
    pub const MMIO: Access = Access {
        write: true,
        execute: false,
        uncached: true,
    };
}

/// Size of one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB.
    Small,
    /// 2 MiB.
    Large,
}

impl PageSize {
    /// Bytes covered.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Small => PAGE_SIZE,
            PageSize::Large => LARGE_PAGE_SIZE,
        }
    }
}

/// Why a page-table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// a host mapping may not be both writable and executable
    WriteAndExecute {
        /// Virtual address of the refused mapping.
        virt: u64,
    },
    /// address or length not aligned to the page size
    Misaligned {
        /// The offending address or length.
        value: u64,
    },
    /// virtual address not canonical, or guest-physical address at or above 2^48
    BadVirtualAddress {
        /// The offending address.
        virt: u64,
    },
    /// physical address beyond what an entry can hold
    BadPhysicalAddress {
        /// The offending address.
        phys: u64,
    },
    /// address range wraps around
    Overflow,
    /// the address is mapped already (or a table sits where a 2 MiB page was asked)
    AlreadyMapped {
        /// Virtual address of the conflict.
        virt: u64,
    },
    /// nothing is mapped at the address
    NotMapped {
        /// Virtual address asked for.
        virt: u64,
    },
    /// a 2 MiB page was asked of a table whose processor cannot map 2 MiB pages (EPT without the
    /// capability)
    LargePagesUnsupported {
        /// Address of the refused mapping.
        virt: u64,
    },
    /// the operation would split a 2 MiB page
    SplitsLargePage {
        /// Virtual address inside the large page.
        virt: u64,
    },
    /// the table holds an entry this crate never writes (1 GiB page, foreign bits)
    Corrupt {
        /// Physical address of the entry.
        entry_addr: u64,
    },
    /// no frame left for a page table
    Alloc(AllocError),
    /// page-table memory could not be accessed
    Memory(MemoryError),
}

impl From<AllocError> for PagingError {
    fn from(error: AllocError) -> Self {
        PagingError::Alloc(error)
    }
}

impl From<MemoryError> for PagingError {
    fn from(error: MemoryError) -> Self {
        PagingError::Memory(error)
    }
}

#[cfg(test)]
mod tests;
