//! ELF images through both load planners: the hypervisor's for domB (`slipway-hv-core::pvh`)
//! and domB's for every other domain (`slipway-domb-core::elf_load`). Boot modules are outside
//! input (only measured, never trusted).
//!
//! Checked, for each accepted plan: every segment's file range lies inside the image and its
//! memory range inside the domain's RAM (no overflow), no two segments overlap, file sizes do
//! not exceed memory sizes, the entry lies inside a loaded segment (an executable one for
//! domB's planner). When both planners accept an image for the same RAM size they must agree on
//! the entry and the segments (two parsers of one format must not differ in meaning).

use slipway_domb_core::elf_load::{self, LoadPlan};
use slipway_hv_core::pvh::{self, PvhImage};

/// Runs one input: the first byte picks the RAM size, the rest is the image.
pub fn run(data: &[u8]) {
    let Some((&size, image)) = data.split_first() else {
        return;
    };
    // 1 MiB .. 4 GiB, or a size near the top of the address space.
    let ram = match size {
        0xff => u64::MAX - 0xfff,
        n => (1u64 << 20) << (n % 13),
    };
    let hv = pvh::plan(image, ram);
    let domb = elf_load::plan_load(image, ram);
    if let Ok(plan) = &hv {
        check_hv(plan, image.len() as u64, ram);
    }
    if let Ok(plan) = &domb {
        check_domb(plan, image.len() as u64, ram);
    }
    if let (Ok(hv), Ok(domb)) = (&hv, &domb) {
        assert_eq!(
            hv.entry, domb.entry,
            "the planners disagree on the entry point"
        );
        let hv_segments: Vec<_> = hv
            .segments
            .iter()
            .map(|s| (s.offset, s.file_len, s.gpa, s.mem_len))
            .collect();
        let domb_segments: Vec<_> = domb
            .segments
            .iter()
            .map(|s| (s.file_offset, s.file_len, s.gpa, s.mem_len))
            .collect();
        assert_eq!(
            hv_segments, domb_segments,
            "the planners disagree on the segments"
        );
    }
}

fn check_segment(offset: u64, file_len: u64, gpa: u64, mem_len: u64, image: u64, ram: u64) {
    assert!(mem_len > 0 && file_len <= mem_len);
    let file_end = offset.checked_add(file_len).expect("file range overflows");
    assert!(file_end <= image, "segment outside the image");
    let end = gpa.checked_add(mem_len).expect("memory range overflows");
    assert!(end <= ram, "segment outside the domain's RAM");
}

fn disjoint(ranges: &[(u64, u64)]) {
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            assert!(a.1 <= b.0 || b.1 <= a.0, "segments overlap: {a:?} {b:?}");
        }
    }
}

fn check_hv(plan: &PvhImage, image: u64, ram: u64) {
    assert!(!plan.segments.is_empty());
    for s in &plan.segments {
        check_segment(s.offset, s.file_len, s.gpa, s.mem_len, image, ram);
    }
    let ranges: Vec<_> = plan
        .segments
        .iter()
        .map(|s| (s.gpa, s.gpa + s.mem_len))
        .collect();
    disjoint(&ranges);
    let entry = u64::from(plan.entry);
    assert!(ranges.iter().any(|r| (r.0..r.1).contains(&entry)));
}

fn check_domb(plan: &LoadPlan, image: u64, ram: u64) {
    assert!(!plan.segments.is_empty());
    for s in &plan.segments {
        check_segment(s.file_offset, s.file_len, s.gpa, s.mem_len, image, ram);
    }
    let ranges: Vec<_> = plan.occupied().collect();
    disjoint(&ranges);
    let entry = u64::from(plan.entry);
    assert!(ranges.iter().any(|r| (r.0..r.1).contains(&entry)));
}
