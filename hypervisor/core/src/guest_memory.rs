//! A domain's RAM, laid out as `slipway_protocol::platform::DomainRam` says (`[0, size)` up to
//! the hole at 3 GiB, the rest from 4 GiB), backed by a few runs of host frames anywhere in host
//! memory (above 4 GiB too). No run crosses the hole.
//!
//! Memory is allocated in as few physically contiguous, 2 MiB aligned runs as the allocator can
//! give, so nested tables can use 2 MiB pages and the run list stays small enough for a fixed array
//! (no heap). Every guest-physical access the hypervisor makes on a domain's behalf (loading a
//! module, writing the start-info page) goes through [`GuestMemory::for_each_chunk`], which checks
//! the range against the domain's RAM ranges with overflow checks before touching anything: an
//! address in the hole is outside RAM.

use crate::addr::{Frame, LARGE_PAGE_SIZE, PAGE_SIZE, PhysAddr};
use crate::frame_alloc::{AllocError, FrameAllocator};
use crate::memory::{MemoryError, PhysMemory};
use crate::paging::{Access, PageTable, PagingError};
use slipway_protocol::platform::DomainRam;

/// Maximum number of contiguous runs backing one domain.
pub const MAX_RUNS: usize = 64;

const LARGE_FRAMES: u64 = LARGE_PAGE_SIZE / PAGE_SIZE;

/// One contiguous run: guest-physical `[gpa, gpa + frames * 4096)` at host frame `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First guest-physical address.
    pub gpa: u64,
    /// First host frame.
    pub first: Frame,
    /// Number of frames.
    pub frames: u64,
}

/// Why a guest memory operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMemoryError {
    /// memory size is zero, not a multiple of 4 KiB, or beyond the guest-physical address space
    BadSize(u64),
    /// the host has too little free memory, or it is too fragmented (more than MAX_RUNS runs)
    OutOfMemory,
    /// the guest-physical range lies (partly) outside the domain's RAM (in the hole below 4 GiB,
    /// across it, past the end) or wraps around
    OutOfBounds {
        /// First guest-physical address asked for.
        gpa: u64,
        /// Length asked for.
        len: u64,
    },
    /// host memory access failed
    Memory(MemoryError),
    /// mapping into the nested tables failed
    Paging(PagingError),
    /// giving frames back failed (bookkeeping bug)
    Alloc(AllocError),
}

impl From<MemoryError> for GuestMemoryError {
    fn from(error: MemoryError) -> Self {
        GuestMemoryError::Memory(error)
    }
}

/// The RAM of one domain.
#[derive(Debug)]
pub struct GuestMemory {
    runs: [Run; MAX_RUNS],
    run_count: usize,
    size: u64,
    layout: DomainRam,
}

impl GuestMemory {
    /// Allocates `size` bytes of frames (contents unspecified: call [`GuestMemory::zero`]).
    /// On failure every frame taken is given back.
    pub fn allocate<A: FrameAllocator>(alloc: &mut A, size: u64) -> Result<Self, GuestMemoryError> {
        let layout = DomainRam::new(size)
            .filter(|_| size != 0 && size.is_multiple_of(PAGE_SIZE))
            .ok_or(GuestMemoryError::BadSize(size))?;
        let empty = Run {
            gpa: 0,
            first: Frame::from_number(0),
            frames: 0,
        };
        let mut memory = GuestMemory {
            runs: [empty; MAX_RUNS],
            run_count: 0,
            size: 0,
            layout,
        };
        let mut remaining = size / PAGE_SIZE;
        while remaining > 0 {
            if memory.run_count == MAX_RUNS {
                memory.free_frames(alloc)?;
                return Err(GuestMemoryError::OutOfMemory);
            }
            // Largest run first, halving on failure; 2 MiB alignment while runs are that big.
            // A run ends at the hole (RAM offsets below it are the low range).
            let (low_start, low_end) = layout.low();
            let mut want = if memory.size < low_end {
                remaining.min((low_end - low_start - memory.size) / PAGE_SIZE)
            } else {
                remaining
            };
            let run = loop {
                let align = if want >= LARGE_FRAMES {
                    LARGE_FRAMES
                } else {
                    1
                };
                match alloc.allocate_contiguous(want, align) {
                    Ok(first) => break Some((first, want)),
                    Err(_) if want > 1 => want /= 2,
                    Err(_) => break None,
                }
            };
            let Some((first, frames)) = run else {
                memory.free_frames(alloc)?;
                return Err(GuestMemoryError::OutOfMemory);
            };
            // Cannot fail: `memory.size` < `size` and runs never cross the hole.
            let gpa = layout
                .gpa_of_offset(memory.size)
                .ok_or(GuestMemoryError::BadSize(size))?;
            memory.runs[memory.run_count] = Run { gpa, first, frames };
            memory.run_count += 1;
            memory.size += frames * PAGE_SIZE;
            remaining -= frames;
        }
        Ok(memory)
    }

    /// Size in bytes (RAM, without the hole).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The guest-physical layout of this RAM.
    pub fn layout(&self) -> DomainRam {
        self.layout
    }

    /// The backing runs in guest-physical order.
    pub fn runs(&self) -> &[Run] {
        &self.runs[..self.run_count]
    }

    /// Zeroes all of the domain's memory (a domain starts with zeroed RAM).
    pub fn zero<M: PhysMemory>(&self, mem: &mut M) -> Result<(), GuestMemoryError> {
        for run in self.runs() {
            mem.zero(run.first.start(), run.frames * PAGE_SIZE)?;
        }
        Ok(())
    }

    /// Maps the whole RAM read-write-execute at its guest-physical ranges in `npt` (the hole
    /// stays unmapped).
    pub fn map_into<M: PhysMemory, A: FrameAllocator>(
        &self,
        npt: &mut PageTable,
        mem: &mut M,
        alloc: &mut A,
    ) -> Result<(), GuestMemoryError> {
        for (i, run) in self.runs().iter().enumerate() {
            if let Err(error) = npt.map_range(
                mem,
                alloc,
                run.gpa,
                run.first.start(),
                run.frames * PAGE_SIZE,
                Access::RWX,
                true,
            ) {
                for done in &self.runs[..i] {
                    let _ = npt.unmap_range(mem, alloc, done.gpa, done.frames * PAGE_SIZE);
                }
                return Err(GuestMemoryError::Paging(error));
            }
        }
        Ok(())
    }

    /// Checks `[gpa, gpa + len)` and calls `chunk(host_address, offset_in_request, chunk_len)` for
    /// each host-contiguous piece. Nothing is called unless the whole range is inside the domain.
    pub fn for_each_chunk(
        &self,
        gpa: u64,
        len: u64,
        chunk: &mut dyn FnMut(PhysAddr, u64, u64) -> Result<(), GuestMemoryError>,
    ) -> Result<(), GuestMemoryError> {
        let out = GuestMemoryError::OutOfBounds { gpa, len };
        let end = gpa.checked_add(len).ok_or(out)?;
        // One RAM range holds the whole request (never the hole, never across it), so the runs
        // below cover it without a gap.
        if !self.layout.contains(gpa, len) || self.size == 0 {
            return Err(out);
        }
        let mut cursor = gpa;
        for run in self.runs() {
            let run_end = run.gpa + run.frames * PAGE_SIZE;
            if cursor >= end {
                break;
            }
            if cursor >= run_end {
                continue;
            }
            let piece = end.min(run_end) - cursor;
            chunk(
                PhysAddr(run.first.start().0 + (cursor - run.gpa)),
                cursor - gpa,
                piece,
            )?;
            cursor += piece;
        }
        Ok(())
    }

    /// Writes `data` at guest-physical `gpa`.
    pub fn write<M: PhysMemory>(
        &self,
        mem: &mut M,
        gpa: u64,
        data: &[u8],
    ) -> Result<(), GuestMemoryError> {
        self.for_each_chunk(gpa, data.len() as u64, &mut |host, offset, len| {
            Ok(mem.write(host, &data[offset as usize..(offset + len) as usize])?)
        })
    }

    /// Reads guest-physical `[gpa, gpa + buf.len())` into `buf` (the hypercall buffer copy).
    pub fn read<M: PhysMemory>(
        &self,
        mem: &M,
        gpa: u64,
        buf: &mut [u8],
    ) -> Result<(), GuestMemoryError> {
        self.for_each_chunk(gpa, buf.len() as u64, &mut |host, offset, len| {
            Ok(mem.read(host, &mut buf[offset as usize..(offset + len) as usize])?)
        })
    }

    /// Copies `len` bytes from host-physical `src` (a boot module) to guest-physical `gpa`.
    pub fn copy_from_host<M: PhysMemory>(
        &self,
        mem: &mut M,
        src: PhysAddr,
        gpa: u64,
        len: u64,
    ) -> Result<(), GuestMemoryError> {
        self.for_each_chunk(gpa, len, &mut |host, offset, piece| {
            let from = src
                .checked_add(offset)
                .ok_or(GuestMemoryError::OutOfBounds { gpa, len })?;
            Ok(mem.copy(from, host, piece)?)
        })
    }

    /// SHA-256 of guest-physical `[gpa, gpa + len)` (for build records).
    pub fn sha256<M: PhysMemory>(
        &self,
        mem: &M,
        gpa: u64,
        len: u64,
    ) -> Result<[u8; 32], GuestMemoryError> {
        use sha2::{Digest as _, Sha256};
        let mut hasher = Sha256::new();
        let mut buf = [0u8; 512];
        self.for_each_chunk(gpa, len, &mut |host, _, piece| {
            let mut done = 0;
            while done < piece {
                let n = (piece - done).min(buf.len() as u64) as usize;
                let at = host
                    .checked_add(done)
                    .ok_or(GuestMemoryError::OutOfBounds { gpa, len })?;
                mem.read(at, &mut buf[..n])?;
                hasher.update(&buf[..n]);
                done += n as u64;
            }
            Ok(())
        })?;
        Ok(hasher.finalize().into())
    }

    /// Zeroes every frame (so no secret leaves with them) and gives them back. Returns the number
    /// of frames reclaimed.
    pub fn scrub_and_free<M: PhysMemory, A: FrameAllocator>(
        mut self,
        mem: &mut M,
        alloc: &mut A,
    ) -> Result<u64, GuestMemoryError> {
        self.zero(mem)?;
        self.free_frames(alloc)
    }

    fn free_frames<A: FrameAllocator>(&mut self, alloc: &mut A) -> Result<u64, GuestMemoryError> {
        let mut freed = 0;
        for run in &self.runs[..self.run_count] {
            for k in 0..run.frames {
                let frame = run
                    .first
                    .checked_add(k)
                    .ok_or(GuestMemoryError::OutOfMemory)?;
                alloc.free(frame).map_err(GuestMemoryError::Alloc)?;
                freed += 1;
            }
        }
        self.run_count = 0;
        self.size = 0;
        Ok(freed)
    }
}

/// Read access to one domain's guest-physical memory: what an instruction emulator needs to walk
/// the guest's page tables and fetch its instructions ([`crate::mmio`]). Bounds are the
/// implementation's: a read outside the domain's RAM is an error, never a host access.
pub trait GuestPhysRead {
    /// Reads guest-physical `[gpa, gpa + buf.len())` into `buf`.
    fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError>;
}

/// A domain's RAM together with the host memory backing it, as [`GuestPhysRead`].
pub struct GuestRam<'a, M: PhysMemory> {
    /// The domain's RAM.
    pub ram: &'a GuestMemory,
    /// Host memory.
    pub mem: &'a M,
}

impl<M: PhysMemory> GuestPhysRead for GuestRam<'_, M> {
    fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.ram.read(self.mem, gpa, buf)
    }
}

/// Maps a boot module read-only and not executable at `gpa` in domB's nested tables. The module
/// starts on a page boundary ([`crate::memmap`] checks that); its last page is mapped whole, which
/// is safe because memmap also keeps the rest of that page out of the frame allocator.
pub fn map_module_read_only<M: PhysMemory, A: FrameAllocator>(
    npt: &mut PageTable,
    mem: &mut M,
    alloc: &mut A,
    gpa: u64,
    module: crate::addr::PhysRange,
) -> Result<(), PagingError> {
    let len = module
        .len()
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(PagingError::Overflow)?;
    npt.map_range(mem, alloc, gpa, module.start, len, Access::R, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PhysRange;
    use crate::frame_alloc::BitmapFrameAllocator;
    use crate::testing::FakePhysMemory;

    extern crate std;
    use std::vec;

    const BASE: u64 = 0x20_0000;

    #[test]
    fn fragmented_memory_is_read_and_written_across_runs() {
        // Two small regions force at least two runs.
        let regions = [
            PhysRange::new(BASE, BASE + 0x3000),
            PhysRange::new(BASE + 0x10_0000, BASE + 0x10_2000),
        ];
        let mut storage = vec![0; BitmapFrameAllocator::storage_words(&regions)];
        let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
        let mut mem = FakePhysMemory::new(BASE, 0x20_0000);
        let memory = GuestMemory::allocate(&mut alloc, 0x5000).unwrap();
        assert!(memory.runs().len() >= 2);
        assert_eq!(memory.size(), 0x5000);
        memory.zero(&mut mem).unwrap();
        let data: std::vec::Vec<u8> = (0..0x2100u32).map(|i| i as u8).collect();
        memory.write(&mut mem, 0x2f00, &data).unwrap();
        use sha2::{Digest as _, Sha256};
        let expected: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(
            memory.sha256(&mem, 0x2f00, data.len() as u64).unwrap(),
            expected
        );
        let mut back = vec![0u8; data.len()];
        memory.read(&mem, 0x2f00, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(
            memory.write(&mut mem, 0x4fff, &[1, 2]),
            Err(GuestMemoryError::OutOfBounds {
                gpa: 0x4fff,
                len: 2
            })
        );
        assert_eq!(
            memory.for_each_chunk(u64::MAX, 2, &mut |_, _, _| panic!("must not be called")),
            Err(GuestMemoryError::OutOfBounds {
                gpa: u64::MAX,
                len: 2
            })
        );
        let frames: std::vec::Vec<Run> = memory.runs().to_vec();
        assert_eq!(memory.scrub_and_free(&mut mem, &mut alloc).unwrap(), 5);
        for run in frames {
            assert!(
                mem.frame_is_zero(run.first.start().0),
                "scrubbed before free"
            );
        }
        assert_eq!(alloc.free_frames(), 5);
    }

    #[test]
    fn domb_sees_its_ram_writable_and_modules_read_only() {
        use crate::paging::TableKind;
        let regions = [PhysRange::new(BASE, BASE + 0x20_0000)];
        let mut storage = vec![0; BitmapFrameAllocator::storage_words(&regions)];
        let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
        let mut mem = FakePhysMemory::new(BASE, 0x20_0000);
        let ram = GuestMemory::allocate(&mut alloc, 0x8_0000).unwrap();
        let mut npt = PageTable::new(TableKind::Nested, &mut mem, &mut alloc).unwrap();
        ram.map_into(&mut npt, &mut mem, &mut alloc).unwrap();
        let module = PhysRange::new(0x100_0000, 0x100_1801);
        map_module_read_only(&mut npt, &mut mem, &mut alloc, 0x10_0000, module).unwrap();
        let at = |gpa| npt.translate(&mem, gpa).unwrap();
        assert_eq!(at(0x7_f000).unwrap().access, Access::RWX);
        let module_page = at(0x10_1800).unwrap();
        assert_eq!(module_page.access, Access::R);
        assert_eq!(module_page.translate(0x10_1800), PhysAddr(0x100_1800));
        assert!(
            at(0x10_2000).is_none(),
            "nothing past the module's last page"
        );
        assert!(at(0x8_0000).is_none(), "nothing past RAM");
        crate::paging::check_tables(&mem, npt.root(), TableKind::Nested).unwrap();
    }

    #[test]
    fn ram_past_the_hole_continues_at_4_gib_backed_by_host_frames_above_4_gib() {
        use crate::paging::TableKind;
        use slipway_protocol::platform::{DOMAIN_HIGH_RAM_START, DOMAIN_RAM_HOLE_START};
        const GIB: u64 = 1 << 30;
        let size = 3 * GIB + GIB / 2;
        // Table frames low (the fake memory covers them); the domain's RAM lies in host RAM
        // above 4 GiB, which the fake does not back (nothing here touches it).
        let regions = [
            PhysRange::new(BASE, BASE + 0x40_0000),
            PhysRange::new(4 * GIB, 4 * GIB + size),
        ];
        let mut storage = vec![0; BitmapFrameAllocator::storage_words(&regions)];
        let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
        let mut mem = FakePhysMemory::new(BASE, 0x40_0000);
        let memory = GuestMemory::allocate(&mut alloc, size).unwrap();
        assert_eq!(memory.size(), size);
        let mut total = 0;
        for run in memory.runs() {
            let end = run.gpa + run.frames * PAGE_SIZE;
            assert!(
                end <= DOMAIN_RAM_HOLE_START || run.gpa >= DOMAIN_HIGH_RAM_START,
                "{run:?} lies in or across the hole"
            );
            assert!(
                run.first.start().0 >= 4 * GIB,
                "{run:?}: host frames above 4 GiB"
            );
            total += run.frames * PAGE_SIZE;
        }
        assert_eq!(total, size);
        let last = memory.runs().last().unwrap();
        assert_eq!(
            last.gpa + last.frames * PAGE_SIZE,
            DOMAIN_HIGH_RAM_START + GIB / 2
        );

        let mut npt = PageTable::new(TableKind::Nested, &mut mem, &mut alloc).unwrap();
        memory.map_into(&mut npt, &mut mem, &mut alloc).unwrap();
        crate::paging::check_tables(&mem, npt.root(), TableKind::Nested).unwrap();
        let mapped = |gpa: u64| npt.translate(&mem, gpa).unwrap().is_some();
        assert!(mapped(0) && mapped(DOMAIN_RAM_HOLE_START - PAGE_SIZE));
        for hole in [
            DOMAIN_RAM_HOLE_START,
            slipway_protocol::v1::SLIPWAY_LOG_GPA,
            DOMAIN_HIGH_RAM_START - PAGE_SIZE,
        ] {
            assert!(!mapped(hole), "{hole:#x} in the hole is mapped");
        }
        assert!(mapped(DOMAIN_HIGH_RAM_START));
        assert!(mapped(DOMAIN_HIGH_RAM_START + GIB / 2 - PAGE_SIZE));
        assert!(!mapped(DOMAIN_HIGH_RAM_START + GIB / 2), "past the end");

        // Accesses: inside either range fine (at the backing host address), in or across the
        // hole refused before anything is touched.
        let mut seen = std::vec::Vec::new();
        memory
            .for_each_chunk(
                DOMAIN_HIGH_RAM_START + GIB / 2 - 8,
                8,
                &mut |host, _, len| {
                    seen.push((host, len));
                    Ok(())
                },
            )
            .unwrap();
        let top = npt
            .translate(&mem, DOMAIN_HIGH_RAM_START + GIB / 2 - 8)
            .unwrap()
            .unwrap()
            .translate(DOMAIN_HIGH_RAM_START + GIB / 2 - 8);
        assert_eq!(seen, [(top, 8)]);
        for (gpa, len) in [
            (DOMAIN_RAM_HOLE_START - 8, 16),
            (DOMAIN_RAM_HOLE_START, 8),
            (slipway_protocol::v1::SLIPWAY_LOG_GPA, 16),
            (DOMAIN_HIGH_RAM_START - 8, 16),
            (DOMAIN_HIGH_RAM_START + GIB / 2 - 8, 9),
            // The RAM size as an address (the old `[0, size)` layout): in the hole here.
            (size - 8, 8),
        ] {
            assert_eq!(
                memory.for_each_chunk(gpa, len, &mut |_, _, _| panic!("must not be called")),
                Err(GuestMemoryError::OutOfBounds { gpa, len }),
                "{gpa:#x}+{len}"
            );
        }
    }

    #[test]
    fn allocation_failure_gives_everything_back() {
        let regions = [PhysRange::new(BASE, BASE + 0x4000)];
        let mut storage = vec![0; 1];
        let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
        assert_eq!(
            GuestMemory::allocate(&mut alloc, 0x5000).unwrap_err(),
            GuestMemoryError::OutOfMemory
        );
        assert_eq!(alloc.free_frames(), 4);
        assert_eq!(
            GuestMemory::allocate(&mut alloc, 0x1001).unwrap_err(),
            GuestMemoryError::BadSize(0x1001)
        );
        let big = GuestMemory::allocate(&mut alloc, 0x4000).unwrap();
        assert_eq!(big.runs().len(), 1);
    }
}
