//! Bounded containers with a postcard `MaxSize`.
//!
//! postcard 1.1 implements `MaxSize` only for heapless 0.7, while the workspace uses heapless 0.8,
//! and the orphan rule forbids implementing postcard's trait for heapless's type here. So this
//! thin wrapper owns the bound and the `MaxSize` impl; heapless does the storage and the
//! capacity check on decode (more than `N` elements is a decode error).

use core::fmt;
use core::ops::Deref;

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// The input is longer than the container's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError {
    /// The container's capacity.
    pub capacity: usize,
    /// The length that was offered.
    pub len: usize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} elements exceed the capacity of {}",
            self.len, self.capacity
        )
    }
}

/// A vector of at most `N` elements, encoded as a postcard sequence (varint length, elements).
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedVec<T, const N: usize>(heapless::Vec<T, N>);

/// At most `N` bytes, encoded as varint length then the raw bytes.
pub type Bytes<const N: usize> = BoundedVec<u8, N>;

impl<T, const N: usize> BoundedVec<T, N> {
    /// The capacity.
    pub const CAPACITY: usize = N;

    /// An empty vector.
    pub const fn new() -> Self {
        Self(heapless::Vec::new())
    }

    /// Appends an element, failing when the vector is full.
    pub fn push(&mut self, value: T) -> Result<(), CapacityError> {
        self.0.push(value).map_err(|_| CapacityError {
            capacity: N,
            len: N + 1,
        })
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
}

impl<T: Clone, const N: usize> BoundedVec<T, N> {
    /// Copies `items`, failing when there are more than `N`.
    pub fn from_slice(items: &[T]) -> Result<Self, CapacityError> {
        heapless::Vec::from_slice(items)
            .map(Self)
            .map_err(|()| CapacityError {
                capacity: N,
                len: items.len(),
            })
    }
}

impl<T, const N: usize> Deref for BoundedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Clone, const N: usize> TryFrom<&[T]> for BoundedVec<T, N> {
    type Error = CapacityError;
    fn try_from(items: &[T]) -> Result<Self, CapacityError> {
        Self::from_slice(items)
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for BoundedVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl<T: MaxSize, const N: usize> MaxSize for BoundedVec<T, N> {
    const POSTCARD_MAX_SIZE: usize = N * T::POSTCARD_MAX_SIZE + varint_len(N as u64);
}

/// Encoded length of `value` as a postcard varint (7 bits per byte).
pub(crate) const fn varint_len(value: u64) -> usize {
    let mut len = 1;
    let mut rest = value >> 7;
    while rest != 0 {
        len += 1;
        rest >>= 7;
    }
    len
}
