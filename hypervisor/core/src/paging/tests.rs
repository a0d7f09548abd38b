//! Page-table tests: every intermediate state is checked by an observer on the fake memory.

extern crate std;

use super::entry::*;
use super::*;
use crate::addr::{Frame, PhysAddr, PhysRange};
use crate::frame_alloc::{BitmapFrameAllocator, FrameAllocator};
use crate::guest_memory::GuestMemory;
use crate::memory::PhysMemory;
use crate::testing::FakePhysMemory;
use proptest::prelude::*;
use std::boxed::Box;
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::vec;
use std::vec::Vec;

const MEM_BASE: u64 = 0x100_0000;
const MEM_SIZE: u64 = 0x100_0000; // 16 MiB

struct Env {
    mem: FakePhysMemory,
    storage: Vec<u64>,
}

fn env() -> Env {
    let region = [PhysRange::new(MEM_BASE, MEM_BASE + MEM_SIZE)];
    Env {
        mem: FakePhysMemory::new(MEM_BASE, MEM_SIZE),
        storage: vec![0; BitmapFrameAllocator::storage_words(&region)],
    }
}

fn allocator(storage: &mut [u64], frames: u64) -> BitmapFrameAllocator<'_> {
    BitmapFrameAllocator::new(
        &[PhysRange::new(MEM_BASE, MEM_BASE + frames * 4096)],
        storage,
    )
    .unwrap()
}

/// Re-checks the whole table after every single write.
fn watch(mem: &mut FakePhysMemory, roots: Vec<(Frame, TableKind)>) {
    mem.set_observer(Box::new(move |mem, written| {
        for (root, kind) in &roots {
            check_tables(mem, *root, *kind)
                .map_err(|(at, why)| format!("after write to {written}: entry {at:#x}: {why}"))?;
        }
        Ok(())
    }));
}

#[test]
fn host_mappings_have_exactly_the_permissions_asked() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 2048);
    let mut table = PageTable::new(TableKind::Host, &mut env.mem, &mut alloc).unwrap();
    watch(&mut env.mem, vec![(table.root(), TableKind::Host)]);
    let base = 0xffff_8000_0020_0000u64;
    for (i, access) in [Access::R, Access::RW, Access::RX, Access::MMIO]
        .into_iter()
        .enumerate()
    {
        let virt = base + i as u64 * 0x1000;
        table
            .map(
                &mut env.mem,
                &mut alloc,
                virt,
                PhysAddr(0x3000_0000 + i as u64 * 0x1000),
                PageSize::Small,
                access,
            )
            .unwrap();
        let found = table.translate(&env.mem, virt + 0x123).unwrap().unwrap();
        assert_eq!(
            found,
            Mapping {
                virt,
                phys: PhysAddr(0x3000_0000 + i as u64 * 0x1000),
                size: PageSize::Small,
                access
            }
        );
        assert_eq!(
            found.translate(virt + 0x123),
            PhysAddr(0x3000_0123 + i as u64 * 0x1000)
        );
    }
    assert_eq!(
        table.map(
            &mut env.mem,
            &mut alloc,
            base + 0x5000,
            PhysAddr(0),
            PageSize::Small,
            Access::RWX
        ),
        Err(PagingError::WriteAndExecute {
            virt: base + 0x5000
        })
    );
    assert_eq!(
        table.map(
            &mut env.mem,
            &mut alloc,
            0x0000_8000_0000_0000,
            PhysAddr(0),
            PageSize::Small,
            Access::R
        ),
        Err(PagingError::BadVirtualAddress {
            virt: 0x0000_8000_0000_0000
        })
    );
    // A guard page after the mappings stays unmapped.
    assert_eq!(table.translate(&env.mem, base + 0x4000).unwrap(), None);
    assert!(env.mem.violations.is_empty(), "{:?}", env.mem.violations);
    assert!(env.mem.writes > 3);
}

#[test]
fn data_pages_carry_nx_and_tables_do_not() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 2048);
    let mut table = PageTable::new(TableKind::Host, &mut env.mem, &mut alloc).unwrap();
    table
        .map(
            &mut env.mem,
            &mut alloc,
            0x40_0000,
            PhysAddr(0x40_0000),
            PageSize::Small,
            Access::RW,
        )
        .unwrap();
    let pml4e = env.mem.read_u64(table.root().start()).unwrap();
    assert_eq!(
        pml4e & (PRESENT | WRITABLE | USER | NO_EXECUTE),
        PRESENT | WRITABLE
    );
    let mut leaves = Vec::new();
    table
        .for_each_mapping(&env.mem, &mut |m| leaves.push(m))
        .unwrap();
    assert_eq!(leaves.len(), 1);
    let pdpt = address(pml4e);
    let pd = address(env.mem.read_u64(pdpt).unwrap());
    let pt = address(env.mem.read_u64(PhysAddr(pd.0 + 2 * 8)).unwrap());
    let pte = env.mem.read_u64(pt).unwrap();
    assert_eq!(pte, 0x40_0000 | PRESENT | WRITABLE | NO_EXECUTE);
}

#[test]
fn nested_tables_set_user_at_every_level() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 2048);
    let mut npt = PageTable::new(TableKind::Nested, &mut env.mem, &mut alloc).unwrap();
    watch(&mut env.mem, vec![(npt.root(), TableKind::Nested)]);
    npt.map(
        &mut env.mem,
        &mut alloc,
        0x1000,
        PhysAddr(0x5000_0000),
        PageSize::Small,
        Access::R,
    )
    .unwrap();
    npt.map(
        &mut env.mem,
        &mut alloc,
        0x20_0000,
        PhysAddr(0x5020_0000),
        PageSize::Large,
        Access::RWX,
    )
    .unwrap();
    let mut table = npt.root().start();
    for _level in (2..=4).rev() {
        let entry = env.mem.read_u64(table).unwrap();
        assert_ne!(entry & USER, 0);
        table = address(entry);
    }
    assert_eq!(
        env.mem.read_u64(PhysAddr(table.0 + 8)).unwrap(),
        0x5000_0000 | PRESENT | USER | NO_EXECUTE
    );
    assert_eq!(
        npt.translate(&env.mem, 0x20_1234).unwrap().unwrap().access,
        Access::RWX
    );
    assert_eq!(
        npt.map(
            &mut env.mem,
            &mut alloc,
            1 << 48,
            PhysAddr(0),
            PageSize::Small,
            Access::R
        ),
        Err(PagingError::BadVirtualAddress { virt: 1 << 48 })
    );
    assert!(env.mem.violations.is_empty(), "{:?}", env.mem.violations);
}

#[test]
fn the_checker_catches_a_table_linked_before_zeroing() {
    // Proves the observer can fail: link a frame full of garbage by hand.
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 64);
    let table = PageTable::new(TableKind::Nested, &mut env.mem, &mut alloc).unwrap();
    watch(&mut env.mem, vec![(table.root(), TableKind::Nested)]);
    let garbage = alloc.allocate().unwrap();
    env.mem
        .write_u64(
            table.root().start(),
            garbage.start().0 | PRESENT | WRITABLE | USER,
        )
        .unwrap();
    assert_eq!(env.mem.violations.len(), 1);
    assert!(
        env.mem.violations[0].contains("never sets"),
        "{}",
        env.mem.violations[0]
    );
}

#[test]
fn overlapping_mappings_are_refused_in_both_directions() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 2048);
    let mut npt = PageTable::new(TableKind::Nested, &mut env.mem, &mut alloc).unwrap();
    npt.map(
        &mut env.mem,
        &mut alloc,
        0x20_0000,
        PhysAddr(0x20_0000),
        PageSize::Large,
        Access::RW,
    )
    .unwrap();
    assert_eq!(
        npt.map(
            &mut env.mem,
            &mut alloc,
            0x20_1000,
            PhysAddr(0),
            PageSize::Small,
            Access::RW
        ),
        Err(PagingError::AlreadyMapped { virt: 0x20_1000 })
    );
    npt.map(
        &mut env.mem,
        &mut alloc,
        0x40_1000,
        PhysAddr(0),
        PageSize::Small,
        Access::RW,
    )
    .unwrap();
    assert_eq!(
        npt.map(
            &mut env.mem,
            &mut alloc,
            0x40_0000,
            PhysAddr(0x40_0000),
            PageSize::Large,
            Access::RW
        ),
        Err(PagingError::AlreadyMapped { virt: 0x40_0000 })
    );
    assert_eq!(
        npt.unmap(&mut env.mem, &mut alloc, 0x20_1000),
        Err(PagingError::SplitsLargePage { virt: 0x20_1000 })
    );
    assert_eq!(
        npt.map(
            &mut env.mem,
            &mut alloc,
            0x60_1000,
            PhysAddr(0x60_0000),
            PageSize::Large,
            Access::RW
        ),
        Err(PagingError::Misaligned { value: 0x60_1000 })
    );
}

#[test]
fn unmap_and_teardown_return_every_table_frame() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 2048);
    let before = alloc.free_frames();
    let mut npt = PageTable::new(TableKind::Nested, &mut env.mem, &mut alloc).unwrap();
    npt.map_range(
        &mut env.mem,
        &mut alloc,
        0x1000,
        PhysAddr(0x7000_1000),
        0x40_0000,
        Access::RW,
        true,
    )
    .unwrap();
    assert_eq!(
        npt.unmap_range(&mut env.mem, &mut alloc, 0x1000, 0x40_0000)
            .unwrap(),
        511 + 1 + 1,
        "small, large, small"
    );
    assert_eq!(alloc.free_frames(), before - 1, "only the root remains");
    npt.map_range(
        &mut env.mem,
        &mut alloc,
        0x80_0000_0000,
        PhysAddr(0x7000_0000),
        0x60_0000,
        Access::RW,
        true,
    )
    .unwrap();
    npt.map(
        &mut env.mem,
        &mut alloc,
        0x5000,
        PhysAddr(0x1000),
        PageSize::Small,
        Access::R,
    )
    .unwrap();
    let freed = npt.teardown(&mut env.mem, &mut alloc).unwrap();
    assert_eq!(freed, 1 + 2 + 3); // root; PDPT+PD for the large pages; PDPT+PD+PT for the small one
    assert_eq!(alloc.free_frames(), before);
}

#[test]
fn unmap_range_with_a_hole_changes_nothing() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 2048);
    let mut npt = PageTable::new(TableKind::Nested, &mut env.mem, &mut alloc).unwrap();
    npt.map(
        &mut env.mem,
        &mut alloc,
        0x1000,
        PhysAddr(0x1000),
        PageSize::Small,
        Access::R,
    )
    .unwrap();
    assert_eq!(
        npt.unmap_range(&mut env.mem, &mut alloc, 0x1000, 0x2000),
        Err(PagingError::NotMapped { virt: 0x2000 })
    );
    assert!(npt.translate(&env.mem, 0x1000).unwrap().is_some());
}

#[test]
fn a_failed_range_is_rolled_back() {
    let mut env = env();
    // Root + 3 tables fit; the second page table (past the first 2 MiB) does not.
    let mut alloc = allocator(&mut env.storage, 4);
    let mut npt = PageTable::new(TableKind::Nested, &mut env.mem, &mut alloc).unwrap();
    watch(&mut env.mem, vec![(npt.root(), TableKind::Nested)]);
    let free = alloc.free_frames();
    let result = npt.map_range(
        &mut env.mem,
        &mut alloc,
        0x1f_f000,
        PhysAddr(0x9000_0000),
        0x2000,
        Access::RW,
        true,
    );
    assert_eq!(
        result,
        Err(PagingError::Alloc(
            crate::frame_alloc::AllocError::OutOfFrames
        ))
    );
    assert_eq!(alloc.free_frames(), free);
    let mut count = 0;
    npt.for_each_mapping(&env.mem, &mut |_| count += 1).unwrap();
    assert_eq!(count, 0);
    assert!(env.mem.frame_is_zero(npt.root().start().0));
    assert!(env.mem.violations.is_empty(), "{:?}", env.mem.violations);
}

#[test]
fn two_domains_never_share_a_frame() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 4096);
    let mut owners: BTreeMap<u64, usize> = BTreeMap::new();
    let mut tables = Vec::new();
    for (domain, size) in [(0usize, 0x30_0000u64), (1, 0x21_3000)] {
        let memory = GuestMemory::allocate(&mut alloc, size).unwrap();
        memory.zero(&mut env.mem).unwrap();
        let mut npt = PageTable::new(TableKind::Nested, &mut env.mem, &mut alloc).unwrap();
        memory.map_into(&mut npt, &mut env.mem, &mut alloc).unwrap();
        let mut mapped = 0;
        npt.for_each_mapping(&env.mem, &mut |m| {
            mapped += m.size.bytes();
            for frame in (m.phys.0..m.phys.0 + m.size.bytes()).step_by(4096) {
                assert_eq!(
                    owners.insert(frame, domain),
                    None,
                    "frame {frame:#x} mapped twice"
                );
            }
        })
        .unwrap();
        assert_eq!(mapped, size);
        tables.push(npt);
    }
    // Table frames are not domain frames either.
    for npt in &tables {
        assert!(!owners.contains_key(&npt.root().start().0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Domains of random sizes, created and destroyed in random order from one allocator, never
    /// share a frame, and nested tables never map a table frame.
    #[test]
    fn domains_never_share_frames(sizes in proptest::collection::vec((1u64..300, any::<bool>()), 1..8), ept in any::<bool>()) {
        let kind = if ept { TableKind::Ept } else { TableKind::Nested };
        let mut env = env();
        let mut alloc = allocator(&mut env.storage, 4096);
        let mut live: Vec<(GuestMemory, PageTable)> = Vec::new();
        for (pages, destroy_one) in sizes {
            if destroy_one && !live.is_empty() {
                let (memory, npt) = live.remove(0);
                npt.teardown(&mut env.mem, &mut alloc).unwrap();
                memory.scrub_and_free(&mut env.mem, &mut alloc).unwrap();
            }
            let Ok(memory) = GuestMemory::allocate(&mut alloc, pages * 4096) else { continue };
            let mut npt = PageTable::new(kind, &mut env.mem, &mut alloc).unwrap();
            memory.map_into(&mut npt, &mut env.mem, &mut alloc).unwrap();
            live.push((memory, npt));
        }
        let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
        let mut tables: BTreeSet<u64> = BTreeSet::new();
        for (index, (memory, npt)) in live.iter().enumerate() {
            tables.insert(npt.root().start().0);
            let mut mapped = 0;
            npt.for_each_mapping(&env.mem, &mut |m| {
                mapped += m.size.bytes();
                for frame in (m.phys.0..m.phys.0 + m.size.bytes()).step_by(4096) {
                    assert!(owner.insert(frame, index).is_none(), "frame {frame:#x} in two domains");
                }
            }).unwrap();
            prop_assert_eq!(mapped, memory.size());
            check_tables(&env.mem, npt.root(), kind).unwrap();
        }
        prop_assert!(tables.iter().all(|t| !owner.contains_key(t)));
    }
}

fn arbitrary_layout() -> impl Strategy<Value = Vec<(u64, bool, u8)>> {
    // (page slot, large, access index); slots are 2 MiB apart so large and small pages mix freely.
    proptest::collection::vec((0u64..64, any::<bool>(), 0u8..5), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn walking_gives_back_exactly_what_was_mapped(layout in arbitrary_layout(), kind in 0u8..3, sub in 0u64..512) {
        let mut env = env();
        let mut alloc = allocator(&mut env.storage, 2048);
        let kind = [TableKind::Host, TableKind::Nested, TableKind::Ept][kind as usize];
        let mut table = PageTable::new(kind, &mut env.mem, &mut alloc).unwrap();
        watch(&mut env.mem, vec![(table.root(), kind)]);
        let mut expected = BTreeMap::new();
        let mut used = BTreeSet::new();
        for (slot, large, access) in layout {
            let access = [Access::R, Access::RW, Access::RX, Access::RWX, Access::MMIO][access as usize];
            // Spread slots over several PML4/PDPT entries.
            let base = (slot % 8) << 39 | (slot / 8) << 30 | (slot % 5) << 21;
            let (virt, size) = if large { (base, PageSize::Large) } else { (base + sub * 4096, PageSize::Small) };
            let phys = PhysAddr(0x1_0000_0000 + slot * 0x20_0000 + (virt & 0x1f_f000));
            let result = table.map(&mut env.mem, &mut alloc, virt, phys, size, access);
            if kind == TableKind::Host && access == Access::RWX {
                prop_assert_eq!(result, Err(PagingError::WriteAndExecute { virt }));
            } else if !used.insert(base) {
                prop_assert!(result.is_err());
            } else {
                prop_assert_eq!(result, Ok(()));
                expected.insert(virt, Mapping { virt, phys, size, access });
            }
        }
        let mut found = BTreeMap::new();
        table.for_each_mapping(&env.mem, &mut |m| { found.insert(m.virt, m); }).unwrap();
        prop_assert_eq!(&found, &expected);
        for (virt, mapping) in &expected {
            prop_assert_eq!(table.translate(&env.mem, virt + 8).unwrap(), Some(*mapping));
        }
        prop_assert!(env.mem.violations.is_empty(), "{:?}", env.mem.violations);
        for virt in expected.keys() {
            table.unmap(&mut env.mem, &mut alloc, *virt).unwrap();
        }
        prop_assert_eq!(alloc.free_frames(), 2048 - 1);
        prop_assert!(env.mem.violations.is_empty(), "{:?}", env.mem.violations);
    }
}

#[test]
fn ept_tables_link_with_rwx_and_leaves_carry_write_back_and_ignore_pat() {
    use super::ept::*;
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 2048);
    let mut table = PageTable::new_ept(&mut env.mem, &mut alloc, true).unwrap();
    watch(&mut env.mem, vec![(table.root(), TableKind::Ept)]);
    let cases = [
        (Access::R, READ),
        (Access::RW, READ | WRITE),
        (Access::RX, READ | EXECUTE),
        (Access::RWX, READ | WRITE | EXECUTE),
    ];
    for (i, (access, _)) in cases.into_iter().enumerate() {
        let gpa = 0x1000 * (i as u64 + 1);
        let phys = PhysAddr(0x4000_0000 + gpa);
        table
            .map(&mut env.mem, &mut alloc, gpa, phys, PageSize::Small, access)
            .unwrap();
        let found = table.translate(&env.mem, gpa + 0x10).unwrap().unwrap();
        assert_eq!(found.access, access);
        assert_eq!(found.phys, phys);
    }
    table
        .map(
            &mut env.mem,
            &mut alloc,
            0xfee0_0000,
            PhysAddr(0xfee0_0000),
            PageSize::Small,
            Access::MMIO,
        )
        .unwrap();
    table
        .map(
            &mut env.mem,
            &mut alloc,
            0x40_0000,
            PhysAddr(0x8000_0000),
            PageSize::Large,
            Access::RWX,
        )
        .unwrap();
    // Walk by hand: every table entry is address | RWX, nothing else.
    let pml4e = env.mem.read_u64(table.root().start()).unwrap();
    assert_eq!(pml4e & !ADDR_MASK, RWX);
    let pdpte = env.mem.read_u64(address(pml4e)).unwrap();
    assert_eq!(pdpte & !ADDR_MASK, RWX);
    let pde = env.mem.read_u64(address(pdpte)).unwrap();
    assert_eq!(pde & !ADDR_MASK, RWX);
    let pt = address(pde);
    for (i, (_, rights)) in cases.into_iter().enumerate() {
        let pte = env
            .mem
            .read_u64(PhysAddr(pt.0 + (i as u64 + 1) * 8))
            .unwrap();
        assert_eq!(
            pte,
            (0x4000_0000 + 0x1000 * (i as u64 + 1)) | rights | IGNORE_PAT | (MEMORY_TYPE_WB << 3)
        );
    }
    let large = env
        .mem
        .read_u64(PhysAddr(address(pdpte).0 + 2 * 8))
        .unwrap();
    assert_eq!(
        large,
        0x8000_0000 | RWX | IGNORE_PAT | MEMORY_TYPE_WB << 3 | LARGE
    );
    let mmio = table.translate(&env.mem, 0xfee0_0000).unwrap().unwrap();
    assert_eq!(
        mmio.access,
        Access::MMIO,
        "device registers are uncacheable"
    );
    assert_eq!(
        table.map(
            &mut env.mem,
            &mut alloc,
            1 << 48,
            PhysAddr(0),
            PageSize::Small,
            Access::R
        ),
        Err(PagingError::BadVirtualAddress { virt: 1 << 48 })
    );
    assert!(env.mem.violations.is_empty(), "{:?}", env.mem.violations);
    let before = alloc.free_frames();
    let freed = table.teardown(&mut env.mem, &mut alloc).unwrap();
    assert_eq!(alloc.free_frames(), before + freed);
}

#[test]
fn the_checker_catches_bad_ept_entries() {
    use super::ept::*;
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 64);
    let mut table = PageTable::new_ept(&mut env.mem, &mut alloc, true).unwrap();
    table
        .map(
            &mut env.mem,
            &mut alloc,
            0x1000,
            PhysAddr(0x5000),
            PageSize::Small,
            Access::RW,
        )
        .unwrap();
    watch(&mut env.mem, vec![(table.root(), TableKind::Ept)]);
    let pdpt = address(env.mem.read_u64(table.root().start()).unwrap());
    let pd = address(env.mem.read_u64(pdpt).unwrap());
    let pt = address(env.mem.read_u64(pd).unwrap());
    let good = env.mem.read_u64(PhysAddr(pt.0 + 8)).unwrap();
    let cases: [(PhysAddr, u64, &str); 6] = [
        // A garbage (unzeroed) frame linked as a table.
        (
            PhysAddr(table.root().start().0 + 8),
            alloc.allocate().unwrap().start().0 | RWX,
            "never sets",
        ),
        // Write-only leaf: an EPT misconfiguration.
        (PhysAddr(pt.0 + 8), (good & !READ) | WRITE, "not readable"),
        // A table entry that restricts rights.
        (pd, (pt.0) | READ | WRITE, "restricts rights"),
        // Memory type 1 (WC).
        (
            PhysAddr(pt.0 + 8),
            (good & !MEMORY_TYPE_MASK) | 1 << 3,
            "memory type",
        ),
        // Guest PAT honoured.
        (PhysAddr(pt.0 + 8), good & !IGNORE_PAT, "ignore-PAT"),
        // Not present but not zero.
        (PhysAddr(pt.0 + 8), good & !RWX, "not present"),
    ];
    for (at, value, why) in cases {
        let old = env.mem.read_u64(at).unwrap();
        env.mem.write_u64(at, value).unwrap();
        let violation = env
            .mem
            .violations
            .pop()
            .unwrap_or_else(|| panic!("{why}: not caught"));
        assert!(violation.contains(why), "{violation} should say {why}");
        env.mem.clear_observer();
        env.mem.write_u64(at, old).unwrap();
        watch(&mut env.mem, vec![(table.root(), TableKind::Ept)]);
    }
}

#[test]
fn ept_without_large_page_support_maps_4k_pages_only() {
    let mut env = env();
    let mut alloc = allocator(&mut env.storage, 4096);
    let mut table = PageTable::new_ept(&mut env.mem, &mut alloc, false).unwrap();
    watch(&mut env.mem, vec![(table.root(), TableKind::Ept)]);
    assert_eq!(
        table.map(
            &mut env.mem,
            &mut alloc,
            0x20_0000,
            PhysAddr(0x20_0000),
            PageSize::Large,
            Access::RWX
        ),
        Err(PagingError::LargePagesUnsupported { virt: 0x20_0000 })
    );
    let memory = GuestMemory::allocate(&mut alloc, 0x40_0000).unwrap();
    memory
        .map_into(&mut table, &mut env.mem, &mut alloc)
        .unwrap();
    let mut pages = 0;
    table
        .for_each_mapping(&env.mem, &mut |m| {
            assert_eq!(m.size, PageSize::Small);
            assert_eq!(m.access, Access::RWX);
            pages += 1;
        })
        .unwrap();
    assert_eq!(pages, 0x400);
    assert!(env.mem.violations.is_empty(), "{:?}", env.mem.violations);
}
