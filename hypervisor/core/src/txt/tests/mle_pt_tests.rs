extern crate std;
use std::vec::Vec;

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::memory::PhysMemory;
use crate::testing::FakePhysMemory;
use crate::txt::mle_pt::*;

const PTAB: u64 = 0x1f_c000 - 0x1000;
const MLE: u64 = 0x20_0000;
const SIZE: u64 = 0x20_1234; // just over 2 MiB: two page tables, a partial last page

fn built() -> FakePhysMemory {
    let mut mem = FakePhysMemory::new(0x10_0000, 0x80_0000);
    let used = build_mle_page_tables(&mut mem, PTAB, MLE, SIZE).unwrap();
    assert_eq!(used, tables_size(SIZE));
    assert_eq!(used, 4 * PAGE_SIZE);
    mem
}

fn violation(mem: &FakePhysMemory, forbidden: &[Forbidden]) -> Violation {
    match check_mle_page_tables(mem, PTAB, SIZE, forbidden, |_, _| {}) {
        Err(CheckError::Rule(v)) => v,
        other => panic!("expected a rule violation, got {other:?}"),
    }
}

fn pte(page_index: u64) -> u64 {
    let pt = PTAB + 2 * PAGE_SIZE + (page_index / 512) * PAGE_SIZE;
    pt + (page_index % 512) * 8
}

#[test]
fn built_tables_pass_every_rule_and_the_walk_visits_the_mle_in_order() {
    let mem = built();
    let mut pieces = Vec::new();
    let extent = check_mle_page_tables(&mem, PTAB, SIZE, &[], |p, l| pieces.push((p, l))).unwrap();
    assert_eq!(extent.first_valid_linear, 0);
    assert_eq!(extent.first_page, MLE);
    assert_eq!(
        (extent.tables_low, extent.tables_high),
        (PTAB, PTAB + 4 * PAGE_SIZE)
    );
    assert_eq!(pieces.len(), 514);
    assert_eq!(pieces[0], (MLE, PAGE_SIZE));
    assert_eq!(pieces[513], (MLE + 513 * PAGE_SIZE, 0x234));
    assert_eq!(pieces.iter().map(|p| p.1).sum::<u64>(), SIZE);
}

#[test]
fn the_builder_refuses_tables_that_would_not_end_below_the_mle() {
    let mut mem = FakePhysMemory::new(0x10_0000, 0x80_0000);
    assert!(matches!(
        build_mle_page_tables(&mut mem, MLE - PAGE_SIZE, MLE, SIZE),
        Err(BuildError::TablesNotBelowMle { .. })
    ));
    assert_eq!(
        build_mle_page_tables(&mut mem, PTAB + 8, MLE, SIZE),
        Err(BuildError::Alignment)
    );
}

#[test]
fn a_large_page_breaks_the_pae_4_kib_rule() {
    let mut mem = built();
    let pde = mem.read_u64(PhysAddr(PTAB + PAGE_SIZE)).unwrap();
    mem.write_u64(PhysAddr(PTAB + PAGE_SIZE), pde | PDE_LARGE)
        .unwrap();
    assert_eq!(violation(&mem, &[]).rule, PageTableRule::PaeFourKibPages);
    let mut mem = built();
    let pdpte = mem.read_u64(PhysAddr(PTAB)).unwrap();
    mem.write_u64(PhysAddr(PTAB), pdpte | PTE_WRITABLE).unwrap();
    assert_eq!(violation(&mem, &[]).rule, PageTableRule::PaeFourKibPages);
}

#[test]
fn a_page_above_4_gib_breaks_the_below_4_gib_rule() {
    let mut mem = built();
    mem.write_u64(PhysAddr(pte(5)), 0x1_0000_0000 | PTE_PRESENT)
        .unwrap();
    assert_eq!(violation(&mem, &[]).rule, PageTableRule::BelowFourGib);
}

#[test]
fn swapped_pages_break_the_increasing_order_rule() {
    let mut mem = built();
    let a = mem.read_u64(PhysAddr(pte(3))).unwrap();
    let b = mem.read_u64(PhysAddr(pte(4))).unwrap();
    mem.write_u64(PhysAddr(pte(3)), b).unwrap();
    mem.write_u64(PhysAddr(pte(4)), a).unwrap();
    let v = violation(&mem, &[]);
    assert_eq!(
        (v.rule, v.linear),
        (PageTableRule::IncreasingOrder, 4 * PAGE_SIZE)
    );
}

#[test]
fn a_missing_page_after_the_first_valid_one_breaks_the_no_holes_rule() {
    let mut mem = built();
    mem.write_u64(PhysAddr(pte(100)), 0).unwrap();
    let v = violation(&mem, &[]);
    assert_eq!(
        (v.rule, v.linear),
        (PageTableRule::NoHoles, 100 * PAGE_SIZE)
    );
    // Missing pages before the first valid page are skipped: the MLE then starts later.
    let mut mem = built();
    mem.write_u64(PhysAddr(pte(0)), 0).unwrap();
    let mut first = None;
    let r = check_mle_page_tables(&mem, PTAB, SIZE - PAGE_SIZE, &[], |p, _| {
        first.get_or_insert(p);
    });
    assert_eq!(r.unwrap().first_valid_linear, PAGE_SIZE);
    assert_eq!(first, Some(MLE + PAGE_SIZE));
}

#[test]
fn a_table_above_the_mle_breaks_the_tables_below_rule() {
    let mut mem = built();
    // Move the second page table above the MLE's first page.
    let high_pt = MLE + 0x40_0000;
    let old = PTAB + 3 * PAGE_SIZE;
    let mut page = [0u8; 4096];
    mem.read(PhysAddr(old), &mut page).unwrap();
    mem.write(PhysAddr(high_pt), &page).unwrap();
    mem.write_u64(
        PhysAddr(PTAB + PAGE_SIZE + 8),
        high_pt | PTE_PRESENT | PTE_WRITABLE,
    )
    .unwrap();
    assert_eq!(violation(&mem, &[]).rule, PageTableRule::TablesBelowMle);
}

#[test]
fn tables_or_pages_in_the_heap_sinit_or_dmar_break_the_no_overlap_rule() {
    let mem = built();
    let heap = Forbidden {
        what: "TXT heap",
        range: PhysRange::new(MLE + 0x10_0000, MLE + 0x10_1000),
    };
    let v = violation(&mem, &[heap]);
    assert_eq!((v.rule, v.with), (PageTableRule::NoOverlap, "TXT heap"));
    let sinit = Forbidden {
        what: "SINIT",
        range: PhysRange::new(PTAB, PTAB + 1),
    };
    assert_eq!(violation(&mem, &[sinit]).with, "SINIT");
}

#[test]
fn an_mle_longer_than_the_mapping_breaks_the_mapped_rule() {
    let mem = built();
    let r = check_mle_page_tables(&mem, PTAB, SIZE + 2 * PAGE_SIZE, &[], |_, _| {});
    assert!(matches!(
        r,
        Err(CheckError::Rule(Violation {
            rule: PageTableRule::NoHoles | PageTableRule::MleMapped,
            ..
        }))
    ));
    let r = check_mle_page_tables(&mem, PTAB, 0, &[], |_, _| {});
    assert!(matches!(
        r,
        Err(CheckError::Rule(Violation {
            rule: PageTableRule::MleMapped,
            ..
        }))
    ));
    let mut empty = FakePhysMemory::new(0x10_0000, 0x10_0000);
    empty.zero(PhysAddr(0x10_0000), 0x1000).unwrap();
    let r = check_mle_page_tables(&empty, 0x10_0000, 0x1000, &[], |_, _| {});
    assert!(matches!(
        r,
        Err(CheckError::Rule(Violation {
            rule: PageTableRule::MleMapped,
            ..
        }))
    ));
}
