//! The page-table walker and builder shared by host, nested and EPT tables.

use super::entry::*;
use super::ept;
use super::{Access, PageSize, PagingError, TableKind};
use crate::addr::{Frame, LARGE_PAGE_SIZE, MAX_PHYS_ADDR, PAGE_SIZE, PhysAddr};
use crate::frame_alloc::FrameAllocator;
use crate::memory::PhysMemory;

/// One leaf mapping found in a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First (guest-physical or virtual) address of the page.
    pub virt: u64,
    /// First physical address of the page.
    pub phys: PhysAddr,
    /// Page size.
    pub size: PageSize,
    /// Access rights.
    pub access: Access,
}

impl Mapping {
    /// The physical address `addr` (inside this page) translates to.
    pub fn translate(&self, addr: u64) -> PhysAddr {
        PhysAddr(self.phys.0 + (addr - self.virt))
    }
}

/// A 4-level page table rooted at one frame. The table frames belong to the table (freed by
/// [`PageTable::teardown`]); the frames it maps belong to the caller.
#[derive(Debug)]
pub struct PageTable {
    root: Frame,
    kind: TableKind,
    large_pages: bool,
}

/// Index into the table at `level` (4 = PML4 .. 1 = PT) for `virt`.
const fn index(virt: u64, level: u32) -> u64 {
    (virt >> (12 + 9 * (level - 1))) & (ENTRIES - 1)
}

/// Bytes one entry covers at `level`.
const fn span(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

fn entry_addr(table: PhysAddr, virt: u64, level: u32) -> PhysAddr {
    PhysAddr(table.0 + index(virt, level) * 8)
}

impl PageTable {
    /// Allocates and zeroes an empty root table.
    pub fn new<M: PhysMemory, A: FrameAllocator>(
        kind: TableKind,
        mem: &mut M,
        alloc: &mut A,
    ) -> Result<Self, PagingError> {
        let root = alloc.allocate()?;
        if let Err(error) = mem.zero_frame(root) {
            let _ = alloc.free(root);
            return Err(error.into());
        }
        Ok(PageTable {
            root,
            kind,
            large_pages: true,
        })
    }

    /// An empty EPT root; `large_pages` says whether the processor maps 2 MiB EPT pages
    /// (IA32_VMX_EPT_VPID_CAP bit 16). Without it, ranges are mapped with 4 KiB pages and a
    /// 2 MiB [`PageTable::map`] is refused.
    pub fn new_ept<M: PhysMemory, A: FrameAllocator>(
        mem: &mut M,
        alloc: &mut A,
        large_pages: bool,
    ) -> Result<Self, PagingError> {
        let mut table = PageTable::new(TableKind::Ept, mem, alloc)?;
        table.large_pages = large_pages;
        Ok(table)
    }

    /// The root frame (the value for CR3, the VMCB's nCR3, or the EPTP's address bits).
    pub fn root(&self) -> Frame {
        self.root
    }

    /// Host or nested.
    pub fn kind(&self) -> TableKind {
        self.kind
    }

    fn table_entry(&self, table: Frame) -> u64 {
        match self.kind {
            TableKind::Host => table.start().0 | PRESENT | WRITABLE,
            TableKind::Nested => table.start().0 | PRESENT | WRITABLE | USER,
            TableKind::Ept => table.start().0 | ept::RWX,
        }
    }

    fn leaf_entry(&self, phys: PhysAddr, size: PageSize, access: Access) -> u64 {
        if self.kind == TableKind::Ept {
            return ept_leaf_entry(phys, size, access);
        }
        let mut entry = phys.0 | PRESENT;
        if access.write {
            entry |= WRITABLE;
        }
        if access.uncached {
            entry |= WRITE_THROUGH | CACHE_DISABLE;
        }
        if !access.execute {
            entry |= NO_EXECUTE;
        }
        if self.kind == TableKind::Nested {
            entry |= USER;
        }
        if size == PageSize::Large {
            entry |= HUGE;
        }
        entry
    }

    fn check_virt(&self, virt: u64) -> Result<(), PagingError> {
        let valid = match self.kind {
            // Canonical: bits 63..47 all equal.
            TableKind::Host => ((virt as i64) << 16 >> 16) as u64 == virt,
            TableKind::Nested | TableKind::Ept => virt < (1 << 48),
        };
        if valid {
            Ok(())
        } else {
            Err(PagingError::BadVirtualAddress { virt })
        }
    }

    /// Maps one page of `size` at `virt` to `phys`.
    pub fn map<M: PhysMemory, A: FrameAllocator>(
        &mut self,
        mem: &mut M,
        alloc: &mut A,
        virt: u64,
        phys: PhysAddr,
        size: PageSize,
        access: Access,
    ) -> Result<(), PagingError> {
        if self.kind == TableKind::Host && access.write && access.execute {
            return Err(PagingError::WriteAndExecute { virt });
        }
        if size == PageSize::Large && !self.large_pages {
            return Err(PagingError::LargePagesUnsupported { virt });
        }
        let bytes = size.bytes();
        if !virt.is_multiple_of(bytes) {
            return Err(PagingError::Misaligned { value: virt });
        }
        if !phys.is_aligned(bytes) {
            return Err(PagingError::Misaligned { value: phys.0 });
        }
        self.check_virt(virt)?;
        self.check_virt(virt.checked_add(bytes - 1).ok_or(PagingError::Overflow)?)?;
        if phys
            .0
            .checked_add(bytes)
            .is_none_or(|end| end > MAX_PHYS_ADDR)
        {
            return Err(PagingError::BadPhysicalAddress { phys: phys.0 });
        }
        let leaf_level = if size == PageSize::Large { 2 } else { 1 };
        let result = self.map_inner(
            mem,
            alloc,
            virt,
            leaf_level,
            self.leaf_entry(phys, size, access),
        );
        if result.is_err() {
            // Give back tables allocated on the way that stayed empty.
            let _ = self.prune(mem, alloc, virt, leaf_level);
        }
        result
    }

    fn map_inner<M: PhysMemory, A: FrameAllocator>(
        &mut self,
        mem: &mut M,
        alloc: &mut A,
        virt: u64,
        leaf_level: u32,
        leaf: u64,
    ) -> Result<(), PagingError> {
        let mut table = self.root.start();
        for level in ((leaf_level + 1)..=4).rev() {
            let at = entry_addr(table, virt, level);
            let entry = mem.read_u64(at)?;
            if entry == 0 {
                let frame = alloc.allocate()?;
                // Zero before linking: the MMU may walk the new table as soon as it is linked.
                if let Err(error) = mem.zero_frame(frame) {
                    let _ = alloc.free(frame);
                    return Err(error.into());
                }
                mem.write_u64(at, self.table_entry(frame))?;
                table = frame.start();
            } else if entry & HUGE != 0 {
                return Err(if level == 2 {
                    PagingError::AlreadyMapped { virt }
                } else {
                    PagingError::Corrupt { entry_addr: at.0 }
                });
            } else if !present(self.kind, entry) {
                return Err(PagingError::Corrupt { entry_addr: at.0 });
            } else {
                table = address(entry);
            }
        }
        let at = entry_addr(table, virt, leaf_level);
        if mem.read_u64(at)? != 0 {
            return Err(PagingError::AlreadyMapped { virt });
        }
        mem.write_u64(at, leaf)?;
        Ok(())
    }

    /// Maps `[virt, virt + len)` to `[phys, phys + len)`, with 2 MiB pages where both sides are
    /// aligned and `allow_large` is set, else 4 KiB pages. On failure nothing stays mapped.
    #[allow(clippy::too_many_arguments)]
    pub fn map_range<M: PhysMemory, A: FrameAllocator>(
        &mut self,
        mem: &mut M,
        alloc: &mut A,
        virt: u64,
        phys: PhysAddr,
        len: u64,
        access: Access,
        allow_large: bool,
    ) -> Result<(), PagingError> {
        if !len.is_multiple_of(PAGE_SIZE) {
            return Err(PagingError::Misaligned { value: len });
        }
        virt.checked_add(len).ok_or(PagingError::Overflow)?;
        phys.checked_add(len).ok_or(PagingError::Overflow)?;
        let mut done = 0u64;
        while done < len {
            let (v, p) = (virt + done, PhysAddr(phys.0 + done));
            let large = allow_large
                && self.large_pages
                && v % LARGE_PAGE_SIZE == 0
                && p.is_aligned(LARGE_PAGE_SIZE)
                && len - done >= LARGE_PAGE_SIZE;
            let size = if large {
                PageSize::Large
            } else {
                PageSize::Small
            };
            if let Err(error) = self.map(mem, alloc, v, p, size, access) {
                if done > 0 {
                    let _ = self.unmap_range(mem, alloc, virt, done);
                }
                return Err(error);
            }
            done += size.bytes();
        }
        Ok(())
    }

    /// The mapping that covers `virt`, if any.
    pub fn translate<M: PhysMemory>(
        &self,
        mem: &M,
        virt: u64,
    ) -> Result<Option<Mapping>, PagingError> {
        self.check_virt(virt)?;
        let mut table = self.root.start();
        for level in (1..=4).rev() {
            let at = entry_addr(table, virt, level);
            let entry = mem.read_u64(at)?;
            if !present(self.kind, entry) {
                return Ok(None);
            }
            let leaf = level == 1 || entry & HUGE != 0;
            if leaf {
                if level > 2 {
                    return Err(PagingError::Corrupt { entry_addr: at.0 });
                }
                let size = if level == 2 {
                    PageSize::Large
                } else {
                    PageSize::Small
                };
                let mask = if level == 2 {
                    LARGE_ADDR_MASK
                } else {
                    ADDR_MASK
                };
                return Ok(Some(Mapping {
                    virt: virt & !(size.bytes() - 1),
                    phys: PhysAddr(entry & mask),
                    size,
                    access: access_of(self.kind, entry),
                }));
            }
            table = address(entry);
        }
        unreachable!("level 1 entries are always leaves")
    }

    /// Removes the page that starts at `virt` and frees tables that became empty.
    /// Returns what was mapped there (the caller owns that frame).
    pub fn unmap<M: PhysMemory, A: FrameAllocator>(
        &mut self,
        mem: &mut M,
        alloc: &mut A,
        virt: u64,
    ) -> Result<Mapping, PagingError> {
        let mapping = self
            .translate(mem, virt)?
            .ok_or(PagingError::NotMapped { virt })?;
        if mapping.virt != virt {
            return Err(match mapping.size {
                PageSize::Large => PagingError::SplitsLargePage { virt },
                PageSize::Small => PagingError::Misaligned { value: virt },
            });
        }
        let leaf_level = if mapping.size == PageSize::Large {
            2
        } else {
            1
        };
        let at = self.entry_path(mem, virt)?[leaf_level as usize - 1];
        mem.write_u64(at, 0)?;
        self.prune(mem, alloc, virt, leaf_level)?;
        Ok(mapping)
    }

    /// Removes every page in `[virt, virt + len)`. Checks first that the range is exactly covered
    /// by mappings (no hole, no 2 MiB page sticking out), so a refused call changes nothing.
    pub fn unmap_range<M: PhysMemory, A: FrameAllocator>(
        &mut self,
        mem: &mut M,
        alloc: &mut A,
        virt: u64,
        len: u64,
    ) -> Result<u64, PagingError> {
        let end = virt.checked_add(len).ok_or(PagingError::Overflow)?;
        let mut cursor = virt;
        while cursor < end {
            let mapping = self
                .translate(mem, cursor)?
                .ok_or(PagingError::NotMapped { virt: cursor })?;
            if mapping.virt != cursor || cursor + mapping.size.bytes() > end {
                return Err(PagingError::SplitsLargePage { virt: cursor });
            }
            cursor += mapping.size.bytes();
        }
        let mut pages = 0;
        cursor = virt;
        while cursor < end {
            cursor += self.unmap(mem, alloc, cursor)?.size.bytes();
            pages += 1;
        }
        Ok(pages)
    }

    /// Entry addresses along the walk for `virt`: index 0 = level 1 .. index 3 = level 4.
    /// Levels below a leaf or a hole are left at the root entry address (never used).
    fn entry_path<M: PhysMemory>(&self, mem: &M, virt: u64) -> Result<[PhysAddr; 4], PagingError> {
        let mut path = [self.root.start(); 4];
        let mut table = self.root.start();
        for level in (1..=4).rev() {
            let at = entry_addr(table, virt, level);
            path[level as usize - 1] = at;
            let entry = mem.read_u64(at)?;
            if !present(self.kind, entry) || entry & HUGE != 0 || level == 1 {
                break;
            }
            table = address(entry);
        }
        Ok(path)
    }

    /// Frees tables below level 4 on the walk for `virt` that hold no entry any more, bottom up,
    /// starting with the table at `from_level`.
    fn prune<M: PhysMemory, A: FrameAllocator>(
        &mut self,
        mem: &mut M,
        alloc: &mut A,
        virt: u64,
        from_level: u32,
    ) -> Result<(), PagingError> {
        let path = self.entry_path(mem, virt)?;
        for level in from_level..4 {
            let parent = path[level as usize];
            let parent_entry = mem.read_u64(parent)?;
            if !present(self.kind, parent_entry) || parent_entry & HUGE != 0 {
                continue;
            }
            let table = address(parent_entry);
            if !table_is_empty(mem, table)? {
                break;
            }
            // Unlink first, then free: the MMU must never walk a freed frame.
            mem.write_u64(parent, 0)?;
            alloc.free(Frame::containing(table))?;
        }
        Ok(())
    }

    /// Calls `visit` for every leaf mapping, in address order.
    pub fn for_each_mapping<M: PhysMemory>(
        &self,
        mem: &M,
        visit: &mut dyn FnMut(Mapping),
    ) -> Result<(), PagingError> {
        self.walk(mem, self.root.start(), 4, 0, visit)
    }

    fn walk<M: PhysMemory>(
        &self,
        mem: &M,
        table: PhysAddr,
        level: u32,
        base: u64,
        visit: &mut dyn FnMut(Mapping),
    ) -> Result<(), PagingError> {
        for i in 0..ENTRIES {
            let at = PhysAddr(table.0 + i * 8);
            let entry = mem.read_u64(at)?;
            if !present(self.kind, entry) {
                continue;
            }
            let mut virt = base + i * span(level);
            if level == 4 && self.kind == TableKind::Host && i >= 256 {
                virt |= 0xffff_0000_0000_0000; // sign-extend the upper half
            }
            if level == 1 || entry & HUGE != 0 {
                if level > 2 {
                    return Err(PagingError::Corrupt { entry_addr: at.0 });
                }
                let (size, mask) = if level == 2 {
                    (PageSize::Large, LARGE_ADDR_MASK)
                } else {
                    (PageSize::Small, ADDR_MASK)
                };
                visit(Mapping {
                    virt,
                    phys: PhysAddr(entry & mask),
                    size,
                    access: access_of(self.kind, entry),
                });
            } else {
                self.walk(mem, address(entry), level - 1, virt, visit)?;
            }
        }
        Ok(())
    }

    /// Frees every table frame (not the mapped frames) and returns how many were freed.
    /// The caller must have switched away from this table first (CR3 / nCR3).
    pub fn teardown<M: PhysMemory, A: FrameAllocator>(
        self,
        mem: &mut M,
        alloc: &mut A,
    ) -> Result<u64, PagingError> {
        let freed = free_tables(mem, alloc, self.root.start(), 4, self.kind)?;
        alloc.free(self.root)?;
        Ok(freed + 1)
    }
}

fn free_tables<M: PhysMemory, A: FrameAllocator>(
    mem: &mut M,
    alloc: &mut A,
    table: PhysAddr,
    level: u32,
    kind: TableKind,
) -> Result<u64, PagingError> {
    let mut freed = 0;
    if level == 1 {
        return Ok(0);
    }
    for i in 0..ENTRIES {
        let entry = mem.read_u64(PhysAddr(table.0 + i * 8))?;
        if present(kind, entry) && entry & HUGE == 0 {
            freed += free_tables(mem, alloc, address(entry), level - 1, kind)?;
            alloc.free(Frame::containing(address(entry)))?;
            freed += 1;
        }
    }
    Ok(freed)
}

/// Whether an entry maps or links anything: P for long-mode entries, any of R/W/X for EPT.
fn present(kind: TableKind, entry: u64) -> bool {
    match kind {
        TableKind::Host | TableKind::Nested => entry & PRESENT != 0,
        TableKind::Ept => entry & ept::RWX != 0,
    }
}

/// An EPT leaf: always readable (write-only is a misconfiguration), memory type WB with
/// ignore-PAT for RAM so the guest's PAT cannot make hypervisor-shared memory uncached or
/// write-combining behind our back, UC for device registers.
fn ept_leaf_entry(phys: PhysAddr, size: PageSize, access: Access) -> u64 {
    let mut entry = phys.0 | ept::READ | ept::IGNORE_PAT;
    if access.write {
        entry |= ept::WRITE;
    }
    if access.execute {
        entry |= ept::EXECUTE;
    }
    let memory_type = if access.uncached {
        ept::MEMORY_TYPE_UC
    } else {
        ept::MEMORY_TYPE_WB
    };
    entry |= memory_type << ept::MEMORY_TYPE_SHIFT;
    if size == PageSize::Large {
        entry |= ept::LARGE;
    }
    entry
}

fn access_of(kind: TableKind, entry: u64) -> Access {
    match kind {
        TableKind::Host | TableKind::Nested => Access {
            write: entry & WRITABLE != 0,
            execute: entry & NO_EXECUTE == 0,
            uncached: entry & CACHE_DISABLE != 0,
        },
        TableKind::Ept => Access {
            write: entry & ept::WRITE != 0,
            execute: entry & ept::EXECUTE != 0,
            uncached: (entry & ept::MEMORY_TYPE_MASK) >> ept::MEMORY_TYPE_SHIFT
                == ept::MEMORY_TYPE_UC,
        },
    }
}

fn table_is_empty<M: PhysMemory>(mem: &M, table: PhysAddr) -> Result<bool, PagingError> {
    for i in 0..ENTRIES {
        if mem.read_u64(PhysAddr(table.0 + i * 8))? != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks every entry reachable from `root` against the rules this crate follows: an entry is zero
/// or present; no foreign bits; 2 MiB leaves only at level 2 and aligned; tables writable and
/// executable so that leaves alone decide; U at every level of nested tables, nowhere in host
/// tables; no writable+executable host leaf; every table readable. EPT: every table entry RWX with
/// reserved bits 7:3 clear, every leaf readable (W without R and X-only are never written), memory
/// type WB or UC with ignore-PAT. Returns the address of the
/// first bad entry and why. Used after every write in tests, and usable as a boot-time assertion.
pub fn check_tables<M: PhysMemory>(
    mem: &M,
    root: Frame,
    kind: TableKind,
) -> Result<(), (u64, &'static str)> {
    check_level(mem, root.start(), 4, kind)
}

fn check_level<M: PhysMemory>(
    mem: &M,
    table: PhysAddr,
    level: u32,
    kind: TableKind,
) -> Result<(), (u64, &'static str)> {
    for i in 0..ENTRIES {
        let at = table.0 + i * 8;
        let entry = mem
            .read_u64(PhysAddr(at))
            .map_err(|_| (at, "table not readable"))?;
        if entry == 0 {
            continue;
        }
        if kind == TableKind::Ept {
            check_ept_entry(entry, at, level)?;
            if level > 1 && entry & HUGE == 0 {
                check_level(mem, address(entry), level - 1, kind)?;
            }
            continue;
        }
        if entry & PRESENT == 0 {
            return Err((at, "non-zero entry that is not present"));
        }
        if entry & FOREIGN_BITS != 0 {
            return Err((at, "entry has bits this crate never sets (unzeroed table?)"));
        }
        let user = entry & USER != 0;
        if kind == TableKind::Nested && !user {
            return Err((at, "nested entry without the U bit"));
        }
        if kind == TableKind::Host && user {
            return Err((at, "host entry with the U bit"));
        }
        let leaf = level == 1 || entry & HUGE != 0;
        if leaf {
            if level > 2 {
                return Err((at, "1 GiB page or huge bit at PML4"));
            }
            if level == 2 && entry & ADDR_MASK & !LARGE_ADDR_MASK != 0 {
                return Err((at, "2 MiB page not aligned"));
            }
            if (entry & WRITE_THROUGH != 0) != (entry & CACHE_DISABLE != 0) {
                return Err((at, "leaf with only one of PCD and PWT"));
            }
            if kind == TableKind::Host && entry & WRITABLE != 0 && entry & NO_EXECUTE == 0 {
                return Err((at, "host page both writable and executable"));
            }
        } else {
            if entry & WRITABLE == 0
                || entry & NO_EXECUTE != 0
                || entry & (WRITE_THROUGH | CACHE_DISABLE) != 0
            {
                return Err((at, "table entry restricts rights (leaves must decide)"));
            }
            check_level(mem, address(entry), level - 1, kind)?;
        }
    }
    Ok(())
}

fn check_ept_entry(entry: u64, at: u64, level: u32) -> Result<(), (u64, &'static str)> {
    if entry & ept::RWX == 0 {
        return Err((at, "non-zero EPT entry that is not present (no R/W/X)"));
    }
    if entry & ept::FOREIGN_BITS != 0 {
        return Err((
            at,
            "EPT entry has bits this crate never sets (unzeroed table?)",
        ));
    }
    let leaf = level == 1 || entry & HUGE != 0;
    if !leaf {
        if entry & ept::RWX != ept::RWX {
            return Err((at, "EPT table entry restricts rights (leaves must decide)"));
        }
        if entry & ept::NON_LEAF_RESERVED != 0 || entry & ept::DIRTY != 0 {
            return Err((at, "EPT table entry with reserved bits 7:3 or 9 set"));
        }
        return Ok(());
    }
    if level > 2 {
        return Err((at, "1 GiB EPT page or large bit at PML4"));
    }
    if level == 2 && entry & ADDR_MASK & !LARGE_ADDR_MASK != 0 {
        return Err((at, "2 MiB EPT page not aligned"));
    }
    if entry & ept::READ == 0 {
        return Err((at, "EPT leaf writable or executable but not readable"));
    }
    let memory_type = (entry & ept::MEMORY_TYPE_MASK) >> ept::MEMORY_TYPE_SHIFT;
    if memory_type != ept::MEMORY_TYPE_WB && memory_type != ept::MEMORY_TYPE_UC {
        return Err((at, "EPT leaf memory type neither WB nor UC"));
    }
    if entry & ept::IGNORE_PAT == 0 {
        return Err((at, "EPT leaf without ignore-PAT"));
    }
    Ok(())
}
