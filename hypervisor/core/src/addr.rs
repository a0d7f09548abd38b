//! Physical addresses, frames and ranges.
//!
//! Newtypes instead of bare `u64` so that a guest-physical address, a host-physical address and a
//! frame number cannot be mixed up silently, and so that every arithmetic step on an address that
//! came from hostile input is checked.

use core::fmt;

/// Size of a small page / frame (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// Size of a large page (2 MiB).
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;
/// Highest physical address width x86-64 long mode page tables can express (52 bits).
pub const MAX_PHYS_BITS: u32 = 52;
/// One past the highest physical address a page-table entry can hold.
pub const MAX_PHYS_ADDR: u64 = 1 << MAX_PHYS_BITS;

/// A (host-)physical byte address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(pub u64);

impl PhysAddr {
    /// The address as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// `self + offset`, or `None` on overflow.
    pub const fn checked_add(self, offset: u64) -> Option<PhysAddr> {
        match self.0.checked_add(offset) {
            Some(value) => Some(PhysAddr(value)),
            None => None,
        }
    }
    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
    /// Rounds down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> PhysAddr {
        PhysAddr(self.0 & !(align - 1))
    }
    /// Rounds up to a multiple of `align` (a power of two); `None` on overflow.
    pub const fn align_up(self, align: u64) -> Option<PhysAddr> {
        match self.0.checked_add(align - 1) {
            Some(value) => Some(PhysAddr(value & !(align - 1))),
            None => None,
        }
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A 4 KiB physical frame, identified by its frame number (address / 4096).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frame(u64);

impl Frame {
    /// The frame with this number.
    pub const fn from_number(number: u64) -> Frame {
        Frame(number)
    }
    /// The frame starting at `addr`, or `None` if `addr` is not 4 KiB aligned.
    pub const fn from_start(addr: PhysAddr) -> Option<Frame> {
        if addr.is_aligned(PAGE_SIZE) {
            Some(Frame(addr.0 / PAGE_SIZE))
        } else {
            None
        }
    }
    /// The frame that contains `addr`.
    pub const fn containing(addr: PhysAddr) -> Frame {
        Frame(addr.0 / PAGE_SIZE)
    }
    /// The frame number.
    pub const fn number(self) -> u64 {
        self.0
    }
    /// The first byte of the frame.
    pub const fn start(self) -> PhysAddr {
        PhysAddr(self.0 * PAGE_SIZE)
    }
    /// The frame `count` frames further, or `None` on overflow.
    pub const fn checked_add(self, count: u64) -> Option<Frame> {
        match self.0.checked_add(count) {
            Some(number) => Some(Frame(number)),
            None => None,
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:#x})", self.start().0)
    }
}

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PhysRange {
    /// First byte.
    pub start: PhysAddr,
    /// One past the last byte.
    pub end: PhysAddr,
}

impl PhysRange {
    /// `[start, start + len)`, or `None` if that wraps around.
    pub const fn from_start_len(start: u64, len: u64) -> Option<PhysRange> {
        match start.checked_add(len) {
            Some(end) => Some(PhysRange {
                start: PhysAddr(start),
                end: PhysAddr(end),
            }),
            None => None,
        }
    }
    /// `[start, end)`; callers guarantee `start <= end`.
    pub const fn new(start: u64, end: u64) -> PhysRange {
        PhysRange {
            start: PhysAddr(start),
            end: PhysAddr(end),
        }
    }
    /// Length in bytes (0 for an empty or inverted range).
    pub const fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }
    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }
    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.start.0 < other.end.0
            && other.start.0 < self.end.0
    }
    /// Whether `other` lies entirely inside `self`.
    pub const fn contains_range(&self, other: &PhysRange) -> bool {
        self.start.0 <= other.start.0 && other.end.0 <= self.end.0
    }
    /// Whether `addr` lies inside the range.
    pub const fn contains(&self, addr: PhysAddr) -> bool {
        self.start.0 <= addr.0 && addr.0 < self.end.0
    }
    /// Number of whole frames (the range must be frame aligned for this to be exact).
    pub const fn frame_count(&self) -> u64 {
        self.len() / PAGE_SIZE
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_conversions() {
        assert_eq!(Frame::from_start(PhysAddr(0x2000)).unwrap().number(), 2);
        assert!(Frame::from_start(PhysAddr(0x2001)).is_none());
        assert_eq!(
            Frame::containing(PhysAddr(0x2fff)).start(),
            PhysAddr(0x2000)
        );
    }

    #[test]
    fn range_overlap_and_wrap() {
        let a = PhysRange::new(0x1000, 0x3000);
        assert!(a.overlaps(&PhysRange::new(0x2fff, 0x4000)));
        assert!(!a.overlaps(&PhysRange::new(0x3000, 0x4000)));
        assert!(!a.overlaps(&PhysRange::new(0x2000, 0x2000)));
        assert!(PhysRange::from_start_len(u64::MAX, 1).is_none());
        assert_eq!(PhysAddr(5).align_up(4096), Some(PhysAddr(4096)));
        assert_eq!(PhysAddr(u64::MAX).align_up(4096), None);
    }
}
