//! Access to physical memory by physical address.
//!
//! The hypervisor binary implements [`PhysMemory`] over its direct map (with `unsafe`); everything
//! in this crate that touches memory (page tables, domain loading) goes through the trait so that
//! host tests can substitute a checking fake (`testing::FakePhysMemory`, feature `testing`).

use crate::addr::{Frame, PAGE_SIZE, PhysAddr};

/// Why a physical memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// The physical range is not backed by memory this accessor may touch.
    OutOfRange {
        /// First byte of the access.
        addr: PhysAddr,
        /// Length of the access.
        len: u64,
    },
    /// A 64-bit access was not 8-byte aligned.
    Misaligned {
        /// Address of the access.
        addr: PhysAddr,
    },
}

/// Byte-granular access to physical memory.
///
/// Implementations must reject (not clamp) accesses outside the memory they manage.
pub trait PhysMemory {
    /// Copies `buf.len()` bytes starting at `addr` into `buf`.
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Copies `data` to physical memory starting at `addr`.
    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), MemoryError>;

    /// Writes `len` zero bytes starting at `addr`.
    fn zero(&mut self, addr: PhysAddr, len: u64) -> Result<(), MemoryError> {
        const ZEROES: [u8; 256] = [0; 256];
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(ZEROES.len() as u64);
            let at = addr
                .checked_add(done)
                .ok_or(MemoryError::OutOfRange { addr, len })?;
            self.write(at, &ZEROES[..chunk as usize])?;
            done += chunk;
        }
        Ok(())
    }

    /// Zeroes one whole frame.
    fn zero_frame(&mut self, frame: Frame) -> Result<(), MemoryError> {
        self.zero(frame.start(), PAGE_SIZE)
    }

    /// Copies `len` bytes from `src` to `dst` (the ranges must not overlap).
    fn copy(&mut self, src: PhysAddr, dst: PhysAddr, len: u64) -> Result<(), MemoryError> {
        let mut buf = [0u8; 256];
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(buf.len() as u64) as usize;
            let from = src
                .checked_add(done)
                .ok_or(MemoryError::OutOfRange { addr: src, len })?;
            let to = dst
                .checked_add(done)
                .ok_or(MemoryError::OutOfRange { addr: dst, len })?;
            self.read(from, &mut buf[..chunk])?;
            self.write(to, &buf[..chunk])?;
            done += chunk as u64;
        }
        Ok(())
    }

    /// Reads an aligned little-endian `u64` (a page-table entry).
    fn read_u64(&self, addr: PhysAddr) -> Result<u64, MemoryError> {
        if !addr.is_aligned(8) {
            return Err(MemoryError::Misaligned { addr });
        }
        let mut bytes = [0u8; 8];
        self.read(addr, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Writes an aligned little-endian `u64` (a page-table entry). Implementations over real memory
    /// should make this a single 64-bit store so that the MMU never sees a torn entry.
    fn write_u64(&mut self, addr: PhysAddr, value: u64) -> Result<(), MemoryError> {
        if !addr.is_aligned(8) {
            return Err(MemoryError::Misaligned { addr });
        }
        self.write(addr, &value.to_le_bytes())
    }
}
