//! Page-table builders over [`crate::memory::PhysMemory`] and [`crate::frame_alloc::FrameAllocator`].
//!
//! One implementation serves both the hypervisor's own 4-level tables ([`TableKind::Host`]) and
//! AMD nested page tables ([`TableKind::Nested`]): the format is the same; they differ in the U bit
//! (set at every level in nested tables, never in host tables), in what addresses are valid
//! (canonical virtual addresses versus guest-physical addresses below 2^48) and in that host tables
//! refuse writable+executable mappings. Every table frame is zeroed before it is linked, every
//! entry is written with one 64-bit store, and a failed multi-page mapping is rolled back.

pub mod entry;
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
