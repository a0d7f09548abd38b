//! The MLE page tables (MLE guide, "MLE page table requirements"): the builder Slipway uses
//! pre-launch and the one rule checker both the hypervisor's self-check and the simulated SINIT
//! run, so each rule is defined once.
//!
//! Format: PAE (a page-directory-pointer table, page directories, page tables), 4 KiB pages only.
//! Linear address 0 is the MLE's first byte; SINIT walks linear addresses from 0, skips
//! non-present pages up to the first valid page, then measures `mle_size` bytes.

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::memory::PhysMemory;

pub const PTE_PRESENT: u64 = 1 << 0;
pub const PTE_WRITABLE: u64 = 1 << 1;
pub const PDE_LARGE: u64 = 1 << 7;
/// PAE PDPTE bits that must be zero: 1, 2, 5-8.
pub const PDPTE_RESERVED: u64 = 0b1_1110_0110;
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Everything the MLE page tables describe lies below 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;
const ENTRIES: u64 = 512;

/// A rule of the MLE page tables, as SINIT applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageTableRule {
    /// PAE format: PDPTE reserved bits zero, page-directory entries never large pages (4 KiB only).
    PaeFourKibPages,
    /// Every table and page lies below 4 GiB.
    BelowFourGib,
    /// MLE pages in strictly increasing physical order.
    IncreasingOrder,
    /// No non-present page between the first valid page and the MLE's end.
    NoHoles,
    /// The page tables lie below the MLE in physical memory.
    TablesBelowMle,
    /// No table or page overlaps the TXT heap, SINIT or the DMA-protected DMAR/DPR range.
    NoOverlap,
    /// There is a first valid page, and the MLE fits the linear space the tables can map.
    MleMapped,
}

impl PageTableRule {
    pub fn describe(self) -> &'static str {
        match self {
            Self::PaeFourKibPages => "PAE format with 4 KiB pages only",
            Self::BelowFourGib => "every table and page below 4 GiB",
            Self::IncreasingOrder => "MLE pages in increasing physical order",
            Self::NoHoles => "no holes after the first valid page",
            Self::TablesBelowMle => "page tables below the MLE",
            Self::NoOverlap => "no overlap with the TXT heap, SINIT or DMAR",
            Self::MleMapped => "the whole MLE mapped from the first valid page",
        }
    }
}

/// A broken rule, with where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: PageTableRule,
    /// Linear address being walked (0 for table-level findings before a page).
    pub linear: u64,
    /// The physical address concerned (a table or page).
    pub phys: u64,
    /// For [`PageTableRule::NoOverlap`]: what it overlaps.
    pub with: &'static str,
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "MLE page tables break the rule \"{}\" at linear {:#x} (physical {:#x})",
            self.rule.describe(),
            self.linear,
            self.phys
        )?;
        if !self.with.is_empty() {
            write!(f, ": overlaps {}", self.with)?;
        }
        Ok(())
    }
}

/// A range tables and MLE must stay out of, with its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forbidden {
    pub what: &'static str,
    pub range: PhysRange,
}

/// What the walk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MleExtent {
    /// Linear address of the first valid page.
    pub first_valid_linear: u64,
    /// Physical address of the first and one past the last measured byte's page.
    pub first_page: u64,
    pub last_page_end: u64,
    /// Lowest and highest+4K of the tables used.
    pub tables_low: u64,
    pub tables_high: u64,
}

/// An error of the walk itself (memory unreadable) or a broken rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckError {
    Rule(Violation),
    Unreadable { phys: u64 },
}

impl core::fmt::Display for CheckError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CheckError::Rule(v) => v.fmt(f),
            CheckError::Unreadable { phys } => {
                write!(f, "MLE page tables: cannot read physical {phys:#x}")
            }
        }
    }
}

fn overlaps(range: PhysRange, forbidden: &[Forbidden]) -> Option<&'static str> {
    forbidden
        .iter()
        .find(|f| range.start.0 < f.range.end.0 && f.range.start.0 < range.end.0)
        .map(|f| f.what)
}

/// Walks the MLE page tables at `ptab` (the PDPT) as SINIT does and checks every rule; calls
/// `visit(phys, len)` for each measured piece in linear order (whole pages except the last),
/// so the caller can hash the MLE. The table-position rule (below the MLE) is checked at the end,
/// against the first MLE page (the lowest, since pages increase).
pub fn check_mle_page_tables(
    mem: &impl PhysMemory,
    ptab: u64,
    mle_size: u64,
    forbidden: &[Forbidden],
    mut visit: impl FnMut(u64, u64),
) -> Result<MleExtent, CheckError> {
    let rule = |rule, linear, phys| {
        CheckError::Rule(Violation {
            rule,
            linear,
            phys,
            with: "",
        })
    };
    let read = |addr: u64| {
        mem.read_u64(PhysAddr(addr))
            .map_err(|_| CheckError::Unreadable { phys: addr })
    };
    let mut tables_low = u64::MAX;
    let mut tables_high = 0u64;
    let mut note_table = |phys: u64, linear: u64| -> Result<(), CheckError> {
        if !phys.is_multiple_of(PAGE_SIZE) || phys + PAGE_SIZE > FOUR_GIB {
            return Err(rule(PageTableRule::BelowFourGib, linear, phys));
        }
        if let Some(with) = overlaps(PhysRange::new(phys, phys + PAGE_SIZE), forbidden) {
            return Err(CheckError::Rule(Violation {
                rule: PageTableRule::NoOverlap,
                linear,
                phys,
                with,
            }));
        }
        tables_low = tables_low.min(phys);
        tables_high = tables_high.max(phys + PAGE_SIZE);
        Ok(())
    };
    if mle_size == 0 {
        return Err(rule(PageTableRule::MleMapped, 0, ptab));
    }
    note_table(ptab, 0)?;
    let mut first: Option<(u64, u64)> = None; // (linear, phys)
    let mut previous: Option<u64> = None;
    let mut measured = 0u64;
    let mut linear = 0u64;
    'walk: for pdpt_index in 0..4u64 {
        let pdpte = read(ptab + pdpt_index * 8)?;
        if pdpte & PTE_PRESENT == 0 {
            if first.is_some() {
                return Err(rule(PageTableRule::NoHoles, linear, ptab + pdpt_index * 8));
            }
            linear += ENTRIES * ENTRIES * PAGE_SIZE;
            continue;
        }
        if pdpte & PDPTE_RESERVED != 0 || pdpte & !ADDR_MASK & !0xFFF != 0 {
            return Err(rule(
                PageTableRule::PaeFourKibPages,
                linear,
                ptab + pdpt_index * 8,
            ));
        }
        let pd = pdpte & ADDR_MASK;
        note_table(pd, linear)?;
        for pd_index in 0..ENTRIES {
            let pde = read(pd + pd_index * 8)?;
            if pde & PTE_PRESENT == 0 {
                if first.is_some() {
                    return Err(rule(PageTableRule::NoHoles, linear, pd + pd_index * 8));
                }
                linear += ENTRIES * PAGE_SIZE;
                continue;
            }
            if pde & PDE_LARGE != 0 {
                return Err(rule(
                    PageTableRule::PaeFourKibPages,
                    linear,
                    pd + pd_index * 8,
                ));
            }
            let pt = pde & ADDR_MASK;
            note_table(pt, linear)?;
            for pt_index in 0..ENTRIES {
                let pte = read(pt + pt_index * 8)?;
                if pte & PTE_PRESENT == 0 {
                    if first.is_some() {
                        return Err(rule(PageTableRule::NoHoles, linear, pt + pt_index * 8));
                    }
                    linear += PAGE_SIZE;
                    continue;
                }
                let page = pte & ADDR_MASK;
                if page + PAGE_SIZE > FOUR_GIB {
                    return Err(rule(PageTableRule::BelowFourGib, linear, page));
                }
                if previous.is_some_and(|p| page <= p) {
                    return Err(rule(PageTableRule::IncreasingOrder, linear, page));
                }
                if let Some(with) = overlaps(PhysRange::new(page, page + PAGE_SIZE), forbidden) {
                    return Err(CheckError::Rule(Violation {
                        rule: PageTableRule::NoOverlap,
                        linear,
                        phys: page,
                        with,
                    }));
                }
                first.get_or_insert((linear, page));
                previous = Some(page);
                let len = (mle_size - measured).min(PAGE_SIZE);
                visit(page, len);
                measured += len;
                linear += PAGE_SIZE;
                if measured == mle_size {
                    break 'walk;
                }
            }
        }
    }
    let Some((first_linear, first_page)) = first else {
        return Err(rule(PageTableRule::MleMapped, 0, ptab));
    };
    if measured < mle_size {
        return Err(rule(
            PageTableRule::MleMapped,
            linear,
            previous.unwrap_or(0),
        ));
    }
    if tables_high > first_page {
        return Err(rule(
            PageTableRule::TablesBelowMle,
            first_linear,
            tables_high - PAGE_SIZE,
        ));
    }
    Ok(MleExtent {
        first_valid_linear: first_linear,
        first_page,
        last_page_end: previous.unwrap_or(first_page) + PAGE_SIZE,
        tables_low,
        tables_high,
    })
}

/// Bytes of page tables Slipway builds for an MLE of `mle_size` bytes (PDPT, one page
/// directory, one page table per 2 MiB).
pub const fn tables_size(mle_size: u64) -> u64 {
    let pages = mle_size.div_ceil(PAGE_SIZE);
    (2 + pages.div_ceil(ENTRIES)) * PAGE_SIZE
}

/// Largest MLE the builder maps (one page directory).
pub const MAX_MLE_SIZE: u64 = ENTRIES * ENTRIES * PAGE_SIZE;

/// Why the builder refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// MLE base or tables base not page-aligned, or an empty MLE.
    Alignment,
    /// MLE larger than one page directory maps.
    TooLarge(u64),
    /// The tables do not end at or below the MLE.
    TablesNotBelowMle {
        tables_end: u64,
        mle_base: u64,
    },
    Memory,
}

/// Builds the MLE page tables at `ptab` (PDPT, PD, page tables, contiguous) mapping linear
/// `[0, mle_size)` to physical `[mle_base, ...)`: first valid page 0, pages contiguous.
/// Returns the bytes used.
pub fn build_mle_page_tables(
    mem: &mut impl PhysMemory,
    ptab: u64,
    mle_base: u64,
    mle_size: u64,
) -> Result<u64, BuildError> {
    if !ptab.is_multiple_of(PAGE_SIZE) || !mle_base.is_multiple_of(PAGE_SIZE) || mle_size == 0 {
        return Err(BuildError::Alignment);
    }
    if mle_size > MAX_MLE_SIZE {
        return Err(BuildError::TooLarge(mle_size));
    }
    let size = tables_size(mle_size);
    if ptab + size > mle_base {
        return Err(BuildError::TablesNotBelowMle {
            tables_end: ptab + size,
            mle_base,
        });
    }
    mem.zero(PhysAddr(ptab), size)
        .map_err(|_| BuildError::Memory)?;
    let pd = ptab + PAGE_SIZE;
    let w = |mem: &mut _, addr, value| {
        PhysMemory::write_u64(mem, PhysAddr(addr), value).map_err(|_| BuildError::Memory)
    };
    w(mem, ptab, pd | PTE_PRESENT)?;
    let pages = mle_size.div_ceil(PAGE_SIZE);
    for page in 0..pages {
        let pt = pd + PAGE_SIZE * (1 + page / ENTRIES);
        if page % ENTRIES == 0 {
            w(
                mem,
                pd + (page / ENTRIES) * 8,
                pt | PTE_PRESENT | PTE_WRITABLE,
            )?;
        }
        w(
            mem,
            pt + (page % ENTRIES) * 8,
            (mle_base + page * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE,
        )?;
    }
    Ok(size)
}
