//! Physical frame allocation without a heap.
//!
//! The hypervisor has no heap when it builds its first page tables, so the concrete allocator keeps
//! one bit per frame in storage the caller provides (a static array or frames it reserved itself).
//! [`BitmapFrameAllocator::storage_words`] says how much storage a set of regions needs.
//! Frames come back with unspecified contents: whoever uses a frame zeroes it (page tables) or
//! fills it (domain memory), and whoever frees memory a guest could read scrubs it first.

use crate::addr::{Frame, PAGE_SIZE, PhysRange};

/// Maximum number of disjoint free regions the bitmap allocator tracks.
pub const MAX_ALLOCATOR_REGIONS: usize = 64;

/// Why an allocation or free failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// no free frame left
    OutOfFrames,
    /// no free run of the requested length and alignment
    NoContiguousRun {
        /// Frames requested.
        count: u64,
        /// Alignment requested, in frames.
        align_frames: u64,
    },
    /// the frame is not inside any region this allocator manages
    NotManaged(Frame),
    /// the frame was freed twice (or never allocated)
    DoubleFree(Frame),
    /// a region is not 4 KiB aligned, is empty, overlaps another or is out of order
    BadRegion(PhysRange),
    /// more regions than `MAX_ALLOCATOR_REGIONS`
    TooManyRegions,
    /// the storage slice is smaller than `storage_words` says
    StorageTooSmall {
        /// Words needed.
        needed: usize,
        /// Words provided.
        provided: usize,
    },
    /// a zero-length or badly aligned contiguous request
    BadRequest,
}

/// Hands out and takes back 4 KiB frames.
pub trait FrameAllocator {
    /// Allocates one frame (contents unspecified).
    fn allocate(&mut self) -> Result<Frame, AllocError>;
    /// Allocates `count` physically contiguous frames whose first frame number is a multiple of
    /// `align_frames` (a power of two); returns the first frame.
    fn allocate_contiguous(&mut self, count: u64, align_frames: u64) -> Result<Frame, AllocError>;
    /// Returns a frame. Freeing a frame that is free already is an error, never silently ignored.
    fn free(&mut self, frame: Frame) -> Result<(), AllocError>;
    /// Number of free frames.
    fn free_frames(&self) -> u64;
}

/// Storage for the bitmap of `regions[..*count]` when the caller's static storage of
/// `static_words` is too small (RAM above 4 GiB makes the bitmap larger): takes the pages it
/// needs from the end of the largest region that ends at or below `reach` (what the caller can
/// address before its own page tables exist) and returns them; that region shrinks (and is
/// removed if nothing is left). `Ok(None)`: the static storage suffices, nothing changed.
/// The caller keeps the returned range out of everything else (it is neither free nor guest
/// memory) and maps it read-write for itself.
pub fn carve_bitmap_storage(
    regions: &mut [PhysRange],
    count: &mut usize,
    static_words: usize,
    reach: u64,
) -> Result<Option<PhysRange>, AllocError> {
    let needed = BitmapFrameAllocator::storage_words(&regions[..*count]);
    if needed <= static_words {
        return Ok(None);
    }
    let bytes = (needed as u64 * 8).next_multiple_of(PAGE_SIZE);
    let (index, region) = regions[..*count]
        .iter()
        .enumerate()
        .filter(|(_, r)| r.end.0 <= reach && r.len() >= bytes)
        .max_by_key(|(_, r)| r.len())
        .map(|(i, r)| (i, *r))
        .ok_or(AllocError::StorageTooSmall {
            needed,
            provided: static_words,
        })?;
    let carved = PhysRange::new(region.end.0 - bytes, region.end.0);
    if carved.start == region.start {
        regions.copy_within(index + 1..*count, index);
        *count -= 1;
    } else {
        regions[index] = PhysRange::new(region.start.0, carved.start.0);
    }
    Ok(Some(carved))
}

#[derive(Clone, Copy, Default)]
struct Region {
    first: u64,
    count: u64,
    word_offset: usize,
}

/// A bitmap allocator over up to [`MAX_ALLOCATOR_REGIONS`] page-aligned regions (bit set = free).
pub struct BitmapFrameAllocator<'s> {
    regions: [Region; MAX_ALLOCATOR_REGIONS],
    region_count: usize,
    bits: &'s mut [u64],
    free: u64,
    /// Next-fit hint: region and frame index to start the next single-frame search at.
    hint: (usize, u64),
}

impl<'s> BitmapFrameAllocator<'s> {
    /// Number of `u64` words of storage needed to manage `regions`.
    pub fn storage_words(regions: &[PhysRange]) -> usize {
        regions
            .iter()
            .map(|r| (r.frame_count() as usize).div_ceil(64))
            .sum()
    }

    /// Builds an allocator in which every frame of `regions` is free. The regions must be
    /// page-aligned, non-empty, sorted and disjoint (what [`crate::memmap`] produces).
    pub fn new(regions: &[PhysRange], storage: &'s mut [u64]) -> Result<Self, AllocError> {
        if regions.len() > MAX_ALLOCATOR_REGIONS {
            return Err(AllocError::TooManyRegions);
        }
        let needed = Self::storage_words(regions);
        if storage.len() < needed {
            return Err(AllocError::StorageTooSmall {
                needed,
                provided: storage.len(),
            });
        }
        let mut table = [Region::default(); MAX_ALLOCATOR_REGIONS];
        let mut word_offset = 0usize;
        let mut previous_end = 0u64;
        let mut free = 0u64;
        for (index, range) in regions.iter().enumerate() {
            let aligned = range.start.is_aligned(PAGE_SIZE) && range.end.is_aligned(PAGE_SIZE);
            if !aligned || range.is_empty() || (index > 0 && range.start.0 < previous_end) {
                return Err(AllocError::BadRegion(*range));
            }
            previous_end = range.end.0;
            let count = range.frame_count();
            table[index] = Region {
                first: range.start.0 / PAGE_SIZE,
                count,
                word_offset,
            };
            let words = (count as usize).div_ceil(64);
            for (w, word) in storage[word_offset..word_offset + words]
                .iter_mut()
                .enumerate()
            {
                let bits_here = (count - (w as u64) * 64).min(64);
                *word = if bits_here == 64 {
                    u64::MAX
                } else {
                    (1u64 << bits_here) - 1
                };
            }
            word_offset += words;
            free += count;
        }
        Ok(BitmapFrameAllocator {
            regions: table,
            region_count: regions.len(),
            bits: storage,
            free,
            hint: (0, 0),
        })
    }

    fn locate(&self, frame: Frame) -> Option<(usize, u64)> {
        let number = frame.number();
        self.regions[..self.region_count]
            .iter()
            .position(|r| number >= r.first && number - r.first < r.count)
            .map(|i| (i, number - self.regions[i].first))
    }

    fn is_free(&self, region: usize, index: u64) -> bool {
        let r = &self.regions[region];
        self.bits[r.word_offset + (index / 64) as usize] & (1 << (index % 64)) != 0
    }

    fn set(&mut self, region: usize, index: u64, free: bool) {
        let r = self.regions[region];
        let word = &mut self.bits[r.word_offset + (index / 64) as usize];
        if free {
            *word |= 1 << (index % 64);
        } else {
            *word &= !(1 << (index % 64));
        }
    }

    /// Whether `frame` is managed here and currently free (used by tests and assertions).
    pub fn is_frame_free(&self, frame: Frame) -> bool {
        self.locate(frame).is_some_and(|(r, i)| self.is_free(r, i))
    }

    /// Marks a managed frame as in use (for frames handed out before the allocator existed).
    pub fn reserve(&mut self, frame: Frame) -> Result<(), AllocError> {
        let (region, index) = self.locate(frame).ok_or(AllocError::NotManaged(frame))?;
        if !self.is_free(region, index) {
            return Err(AllocError::DoubleFree(frame));
        }
        self.set(region, index, false);
        self.free -= 1;
        Ok(())
    }

    fn find_free_in(&self, region: usize, from: u64) -> Option<u64> {
        let r = &self.regions[region];
        let mut index = from;
        while index < r.count {
            let word = self.bits[r.word_offset + (index / 64) as usize] >> (index % 64);
            if word == 0 {
                index = (index / 64 + 1) * 64;
                continue;
            }
            let found = index + u64::from(word.trailing_zeros());
            return (found < r.count).then_some(found);
        }
        None
    }
}

impl FrameAllocator for BitmapFrameAllocator<'_> {
    fn allocate(&mut self) -> Result<Frame, AllocError> {
        if self.free == 0 {
            return Err(AllocError::OutOfFrames);
        }
        let (start_region, start_index) = self.hint;
        // Visit the hint region from the hint, then every region from its start, wrapping around.
        for step in 0..=self.region_count {
            let region = (start_region + step) % self.region_count.max(1);
            let from = if step == 0 { start_index } else { 0 };
            if let Some(index) = self.find_free_in(region, from) {
                self.set(region, index, false);
                self.free -= 1;
                self.hint = (region, index + 1);
                return Ok(Frame::from_number(self.regions[region].first + index));
            }
        }
        Err(AllocError::OutOfFrames)
    }

    fn allocate_contiguous(&mut self, count: u64, align_frames: u64) -> Result<Frame, AllocError> {
        if count == 0 || align_frames == 0 || !align_frames.is_power_of_two() {
            return Err(AllocError::BadRequest);
        }
        for region in 0..self.region_count {
            let r = self.regions[region];
            // First index in this region whose frame number is aligned.
            let mut index = r.first.next_multiple_of(align_frames) - r.first;
            while index.checked_add(count).is_some_and(|end| end <= r.count) {
                match (0..count).find(|k| !self.is_free(region, index + k)) {
                    None => {
                        for k in 0..count {
                            self.set(region, index + k, false);
                        }
                        self.free -= count;
                        return Ok(Frame::from_number(r.first + index));
                    }
                    Some(busy) => {
                        let next = r.first + index + busy + 1;
                        index = next.next_multiple_of(align_frames) - r.first;
                    }
                }
            }
        }
        Err(AllocError::NoContiguousRun {
            count,
            align_frames,
        })
    }

    fn free(&mut self, frame: Frame) -> Result<(), AllocError> {
        let (region, index) = self.locate(frame).ok_or(AllocError::NotManaged(frame))?;
        if self.is_free(region, index) {
            return Err(AllocError::DoubleFree(frame));
        }
        self.set(region, index, true);
        self.free += 1;
        Ok(())
    }

    fn free_frames(&self) -> u64 {
        self.free
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec;

    fn regions() -> [PhysRange; 2] {
        [
            PhysRange::new(0x10_0000, 0x10_0000 + 70 * PAGE_SIZE),
            PhysRange::new(0x40_0000, 0x80_0000),
        ]
    }

    #[test]
    fn hands_out_every_frame_once_then_runs_out() {
        let regions = regions();
        let mut storage = vec![0u64; BitmapFrameAllocator::storage_words(&regions)];
        let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
        let total = 70 + 1024;
        assert_eq!(alloc.free_frames(), total);
        let mut seen = BTreeSet::new();
        for _ in 0..total {
            let frame = alloc.allocate().unwrap();
            assert!(regions.iter().any(|r| r.contains(frame.start())));
            assert!(seen.insert(frame), "{frame:?} handed out twice");
        }
        assert_eq!(alloc.allocate(), Err(AllocError::OutOfFrames));
        let some = *seen.iter().next().unwrap();
        alloc.free(some).unwrap();
        assert_eq!(alloc.free(some), Err(AllocError::DoubleFree(some)));
        assert_eq!(alloc.allocate(), Ok(some));
    }

    #[test]
    fn rejects_bad_regions_and_small_storage() {
        let mut storage = vec![0u64; 4];
        let unaligned = [PhysRange::new(0x1000, 0x2800)];
        assert!(matches!(
            BitmapFrameAllocator::new(&unaligned, &mut storage),
            Err(AllocError::BadRegion(_))
        ));
        let overlapping = [
            PhysRange::new(0x1000, 0x3000),
            PhysRange::new(0x2000, 0x4000),
        ];
        assert!(matches!(
            BitmapFrameAllocator::new(&overlapping, &mut storage),
            Err(AllocError::BadRegion(_))
        ));
        let big = [PhysRange::new(0, 0x100_0000)];
        assert_eq!(
            BitmapFrameAllocator::new(&big, &mut storage).err(),
            Some(AllocError::StorageTooSmall {
                needed: 64,
                provided: 4
            })
        );
        let mut alloc =
            BitmapFrameAllocator::new(&[PhysRange::new(0x1000, 0x2000)], &mut storage).unwrap();
        assert_eq!(
            alloc.free(Frame::from_number(9)),
            Err(AllocError::NotManaged(Frame::from_number(9)))
        );
    }

    #[test]
    fn contiguous_runs_are_aligned_and_exclusive() {
        let regions = regions();
        let mut storage = vec![0u64; BitmapFrameAllocator::storage_words(&regions)];
        let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
        let single = alloc.allocate().unwrap();
        let run = alloc.allocate_contiguous(512, 512).unwrap();
        assert_eq!(run.number() % 512, 0);
        assert!(!(run.number()..run.number() + 512).contains(&single.number()));
        let second = alloc.allocate_contiguous(512, 512).unwrap();
        assert_ne!(run, second);
        assert_eq!(
            alloc.allocate_contiguous(512, 512),
            Err(AllocError::NoContiguousRun {
                count: 512,
                align_frames: 512
            })
        );
        assert_eq!(alloc.allocate_contiguous(0, 1), Err(AllocError::BadRequest));
    }

    #[test]
    fn ram_above_4_gib_is_handed_out_once_low_frames_run_out() {
        const GIB: u64 = 1 << 30;
        let regions = [
            PhysRange::new(0x10_0000, 0x10_0000 + 8 * PAGE_SIZE),
            PhysRange::new(4 * GIB, 6 * GIB),
        ];
        let mut storage = vec![0u64; BitmapFrameAllocator::storage_words(&regions)];
        let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
        assert_eq!(alloc.free_frames(), 8 + 2 * GIB / PAGE_SIZE);
        // Single frames come from the lowest region first (page tables built under the early
        // 4 GiB identity map need them there).
        for _ in 0..8 {
            assert!(alloc.allocate().unwrap().start().0 < 4 * GIB);
        }
        let high = alloc.allocate().unwrap();
        assert_eq!(high.start().0, 4 * GIB);
        // A 1 GiB run, 2 MiB aligned, above 4 GiB; the last frame of the machine is managed.
        let run = alloc.allocate_contiguous(GIB / PAGE_SIZE, 512).unwrap();
        assert!(run.start().0 >= 4 * GIB && run.number().is_multiple_of(512));
        let last = Frame::from_number(6 * GIB / PAGE_SIZE - 1);
        assert!(alloc.is_frame_free(last));
        alloc.reserve(last).unwrap();
        alloc.free(last).unwrap();
        alloc.free(high).unwrap();
        assert_eq!(alloc.free(high), Err(AllocError::DoubleFree(high)));
    }

    #[test]
    fn bitmap_storage_is_carved_below_the_reach_only_when_the_static_is_too_small() {
        const GIB: u64 = 1 << 30;
        let mut regions = [
            PhysRange::new(0x10_0000, 0x20_0000),
            PhysRange::new(0x100_0000, 0x8000_0000),
            PhysRange::new(4 * GIB, 8 * GIB),
            PhysRange::default(),
        ];
        let mut count = 3;
        let needed = BitmapFrameAllocator::storage_words(&regions[..count]);
        // The static suffices: nothing changes.
        assert_eq!(
            carve_bitmap_storage(&mut regions, &mut count, needed, 4 * GIB),
            Ok(None)
        );
        assert_eq!(count, 3);
        // Too small: the pages come from the end of the largest region below 4 GiB.
        let carved = carve_bitmap_storage(&mut regions, &mut count, 16384, 4 * GIB)
            .unwrap()
            .unwrap();
        let bytes = (needed as u64 * 8).next_multiple_of(PAGE_SIZE);
        assert_eq!(carved, PhysRange::new(0x8000_0000 - bytes, 0x8000_0000));
        assert_eq!(count, 3);
        assert_eq!(regions[1], PhysRange::new(0x100_0000, carved.start.0));
        // The shrunk regions need no more than what was carved, and the allocator over them
        // never hands out a carved frame.
        let words = carved.len() as usize / 8;
        assert!(BitmapFrameAllocator::storage_words(&regions[..count]) <= words);
        let mut storage = vec![0u64; words];
        let alloc = BitmapFrameAllocator::new(&regions[..count], &mut storage).unwrap();
        assert!(!alloc.is_frame_free(Frame::from_number(carved.start.0 / PAGE_SIZE)));
        // Nowhere below the reach large enough: refused by name.
        let mut only_high = [
            PhysRange::new(0x10_0000, 0x11_0000),
            PhysRange::new(4 * GIB, 64 * GIB),
        ];
        let mut n = 2;
        assert!(matches!(
            carve_bitmap_storage(&mut only_high, &mut n, 0, 4 * GIB),
            Err(AllocError::StorageTooSmall { .. })
        ));
        // A region used up entirely is removed.
        let mut exact = [
            PhysRange::new(0x10_0000, 0x10_1000),
            PhysRange::new(4 * GIB, 4 * GIB + 0x8_0000),
        ];
        let mut n = 2;
        let carved = carve_bitmap_storage(&mut exact, &mut n, 0, 4 * GIB)
            .unwrap()
            .unwrap();
        assert_eq!((carved, n), (PhysRange::new(0x10_0000, 0x10_1000), 1));
        assert_eq!(exact[0], PhysRange::new(4 * GIB, 4 * GIB + 0x8_0000));
    }

    proptest! {
        #[test]
        fn allocate_free_sequences_keep_count_and_exclusivity(ops in proptest::collection::vec(0u8..4, 1..300)) {
            let regions = regions();
            let mut storage = vec![0u64; BitmapFrameAllocator::storage_words(&regions)];
            let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
            let total = alloc.free_frames();
            let mut held: std::vec::Vec<Frame> = std::vec::Vec::new();
            for op in ops {
                match op {
                    0 | 1 => if let Ok(f) = alloc.allocate() { prop_assert!(!held.contains(&f)); held.push(f) },
                    2 => if let Ok(f) = alloc.allocate_contiguous(3, 4) {
                        for k in 0..3 { let g = f.checked_add(k).unwrap(); prop_assert!(!held.contains(&g)); held.push(g) }
                    },
                    _ => if let Some(f) = held.pop() { alloc.free(f).unwrap() },
                }
                prop_assert_eq!(alloc.free_frames() + held.len() as u64, total);
            }
        }
    }
}
