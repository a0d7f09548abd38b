//! A bump heap for `alloc`: memory is never freed (domB and the guests allocate little and
//! only at start), which keeps the allocator trivially correct.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Heap size.
#[cfg(not(feature = "large-heap"))]
pub const HEAP_SIZE: usize = 2 << 20;
/// Heap size with the `large-heap` feature (domB: the policy program's interpreter allocates
/// its engine, the translated module and the program's memory, never freed).
#[cfg(feature = "large-heap")]
pub const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Heap {
    memory: UnsafeCell<[u8; HEAP_SIZE]>,
    next: AtomicUsize,
}

// SAFETY: `next` hands out each byte of `memory` at most once (compare-exchange), so no two
// allocations alias, whichever vCPU asks.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap {
    memory: UnsafeCell::new([0; HEAP_SIZE]),
    next: AtomicUsize::new(0),
};

// SAFETY: `alloc` returns either null or a block of `layout.size()` bytes aligned to
// `layout.align()` inside `memory` that no other allocation overlaps; `dealloc` does nothing.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.memory.get() as usize;
        let mut current = self.next.load(Ordering::Relaxed);
        loop {
            let Some(start) = (base + current).checked_next_multiple_of(layout.align()) else {
                return core::ptr::null_mut();
            };
            let offset = start - base;
            let Some(end) = offset
                .checked_add(layout.size())
                .filter(|&end| end <= HEAP_SIZE)
            else {
                return core::ptr::null_mut();
            };
            match self.next.compare_exchange_weak(
                current,
                end,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return start as *mut u8,
                Err(actual) => current = actual,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}
