//! Test doubles: a checking fake of physical memory.
//!
//! Compiled for this crate's tests and, with the `testing` feature, for other crates' host tests.
//! The fake starts filled with a garbage pattern (all ones, which looks like a present entry with
//! every reserved bit set), so code that forgets to zero a frame before use is caught; an optional
//! observer runs after every write, so invariants can be checked on every intermediate state
//! (Hedron-style), not only on the final one.

extern crate std;

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::memory::{MemoryError, PhysMemory};
use std::boxed::Box;
use std::string::String;
use std::vec;
use std::vec::Vec;

/// Byte pattern a fresh [`FakePhysMemory`] is filled with.
pub const GARBAGE: u8 = 0xff;

/// Checks run after every write: gets the memory and the written range; `Err` records a violation.
pub type WriteObserver = Box<dyn FnMut(&FakePhysMemory, PhysRange) -> Result<(), String>>;

/// Fake physical memory covering one contiguous range.
pub struct FakePhysMemory {
    base: u64,
    bytes: Vec<u8>,
    observer: Option<WriteObserver>,
    /// Violations the observer reported, in order.
    pub violations: Vec<String>,
    /// Number of write calls so far.
    pub writes: u64,
}

impl FakePhysMemory {
    /// Memory `[base, base + size)` filled with [`GARBAGE`].
    pub fn new(base: u64, size: u64) -> Self {
        FakePhysMemory {
            base,
            bytes: vec![GARBAGE; size as usize],
            observer: None,
            violations: Vec::new(),
            writes: 0,
        }
    }

    /// The covered range.
    pub fn range(&self) -> PhysRange {
        PhysRange::new(self.base, self.base + self.bytes.len() as u64)
    }

    /// Installs a check run after every write.
    pub fn set_observer(&mut self, observer: WriteObserver) {
        self.observer = Some(observer);
    }

    /// Removes the observer.
    pub fn clear_observer(&mut self) {
        self.observer = None;
    }

    fn offset(&self, addr: PhysAddr, len: u64) -> Result<usize, MemoryError> {
        let err = MemoryError::OutOfRange { addr, len };
        let end = addr.0.checked_add(len).ok_or(err)?;
        if addr.0 < self.base || end > self.base + self.bytes.len() as u64 {
            return Err(err);
        }
        Ok((addr.0 - self.base) as usize)
    }

    /// A borrowed view of `[addr, addr + len)` (panics outside the memory: test helper).
    pub fn slice(&self, addr: u64, len: u64) -> &[u8] {
        let offset = self
            .offset(PhysAddr(addr), len)
            .expect("slice outside fake memory");
        &self.bytes[offset..offset + len as usize]
    }

    /// Whether the whole frame at `addr` is zero.
    pub fn frame_is_zero(&self, addr: u64) -> bool {
        self.slice(addr, PAGE_SIZE).iter().all(|&b| b == 0)
    }
}

impl PhysMemory for FakePhysMemory {
    fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let offset = self.offset(addr, buf.len() as u64)?;
        buf.copy_from_slice(&self.bytes[offset..offset + buf.len()]);
        Ok(())
    }

    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        let offset = self.offset(addr, data.len() as u64)?;
        self.bytes[offset..offset + data.len()].copy_from_slice(data);
        self.writes += 1;
        if let Some(mut observer) = self.observer.take() {
            let range = PhysRange::new(addr.0, addr.0 + data.len() as u64);
            if let Err(violation) = observer(self, range) {
                self.violations.push(violation);
            }
            self.observer = Some(observer);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_and_starts_with_garbage() {
        let mut mem = FakePhysMemory::new(0x1000, 0x2000);
        assert!(!mem.frame_is_zero(0x1000));
        mem.zero(PhysAddr(0x1000), 0x1000).unwrap();
        assert!(mem.frame_is_zero(0x1000));
        assert_eq!(
            mem.write(PhysAddr(0x2fff), &[1, 2]),
            Err(MemoryError::OutOfRange {
                addr: PhysAddr(0x2fff),
                len: 2
            })
        );
        assert!(mem.read_u64(PhysAddr(0x0)).is_err());
        assert_eq!(
            mem.read_u64(PhysAddr(0x1004)),
            Err(MemoryError::Misaligned {
                addr: PhysAddr(0x1004)
            })
        );
    }
}
