//! `PhysMemory` over the hypervisor's identity map: every access is checked against the ranges
//! this accessor was given (free RAM the hypervisor manages, read-only module ranges).

use slipway_hv_core::addr::{PhysAddr, PhysRange};
use slipway_hv_core::memory::{MemoryError, PhysMemory};

/// Capacity of the accessor's range lists.
pub const MAX_RANGES: usize = 96;

/// Identity-mapped physical memory restricted to known ranges.
pub struct DirectMap {
    writable: [PhysRange; MAX_RANGES],
    writable_count: usize,
    readable: [PhysRange; MAX_RANGES],
    readable_count: usize,
}

impl DirectMap {
    pub const fn new() -> Self {
        Self {
            writable: [PhysRange::new(0, 0); MAX_RANGES],
            writable_count: 0,
            readable: [PhysRange::new(0, 0); MAX_RANGES],
            readable_count: 0,
        }
    }

    /// Allows reads and writes in `range` (must be mapped RW in the active page tables).
    pub fn allow_write(&mut self, range: PhysRange) {
        assert!(
            self.writable_count < MAX_RANGES,
            "DirectMap: too many writable ranges"
        );
        self.writable[self.writable_count] = range;
        self.writable_count += 1;
        self.allow_read(range);
    }

    /// Allows reads in `range` (must be mapped in the active page tables).
    pub fn allow_read(&mut self, range: PhysRange) {
        assert!(
            self.readable_count < MAX_RANGES,
            "DirectMap: too many readable ranges"
        );
        self.readable[self.readable_count] = range;
        self.readable_count += 1;
    }

    fn check(list: &[PhysRange], addr: PhysAddr, len: u64) -> Result<(), MemoryError> {
        let error = MemoryError::OutOfRange { addr, len };
        let range = PhysRange::from_start_len(addr.0, len).ok_or(error)?;
        if list.iter().any(|r| r.contains_range(&range)) {
            Ok(())
        } else {
            Err(error)
        }
    }
}

impl PhysMemory for DirectMap {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        Self::check(
            &self.readable[..self.readable_count],
            addr,
            buf.len() as u64,
        )?;
        // SAFETY: the range lies inside one readable range, which is identity-mapped; the
        // destination is a distinct Rust buffer.
        unsafe { core::ptr::copy_nonoverlapping(addr.0 as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        Self::check(
            &self.writable[..self.writable_count],
            addr,
            data.len() as u64,
        )?;
        // SAFETY: the range lies inside one writable range (RAM the hypervisor manages, mapped RW).
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), addr.0 as *mut u8, data.len()) };
        Ok(())
    }

    fn zero(&mut self, addr: PhysAddr, len: u64) -> Result<(), MemoryError> {
        Self::check(&self.writable[..self.writable_count], addr, len)?;
        if addr.is_aligned(8) && len.is_multiple_of(64) {
            // A plain loop of 64-bit stores instead of `rep stos` (what memset compiles to):
            // under the emulator a string instruction runs one helper call per element, a
            // compiled loop runs about ten times faster, and domain RAM is zeroed (and scrubbed)
            // in bulk. Volatile stores keep the compiler from turning the loop back into memset.
            let mut p = addr.0 as *mut u64;
            let end = (addr.0 + len) as *mut u64;
            while p < end {
                // SAFETY: `[addr, addr + len)` lies inside one writable range (checked above),
                // is 8-byte aligned, and `p` advances by 8 words while below `end`, a multiple
                // of 64 bytes from `addr`.
                unsafe {
                    for i in 0..8 {
                        p.add(i).write_volatile(0);
                    }
                    p = p.add(8);
                }
            }
        } else {
            // SAFETY: as in `write`.
            unsafe { core::ptr::write_bytes(addr.0 as *mut u8, 0, len as usize) };
        }
        Ok(())
    }

    fn read_u64(&self, addr: PhysAddr) -> Result<u64, MemoryError> {
        if !addr.is_aligned(8) {
            return Err(MemoryError::Misaligned { addr });
        }
        Self::check(&self.readable[..self.readable_count], addr, 8)?;
        // SAFETY: aligned, inside a readable identity-mapped range.
        Ok(unsafe { (addr.0 as *const u64).read_volatile() })
    }

    fn write_u64(&mut self, addr: PhysAddr, value: u64) -> Result<(), MemoryError> {
        if !addr.is_aligned(8) {
            return Err(MemoryError::Misaligned { addr });
        }
        Self::check(&self.writable[..self.writable_count], addr, 8)?;
        // SAFETY: aligned, inside a writable identity-mapped range; one 64-bit store, so the MMU
        // never sees a torn page-table entry.
        unsafe { (addr.0 as *mut u64).write_volatile(value) };
        Ok(())
    }
}
