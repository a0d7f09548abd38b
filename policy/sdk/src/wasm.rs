//! The program side of the host API on `wasm32-unknown-unknown`: the imports, the entry's body,
//! a bump allocator and the panic handler. This is the platform glue of a policy program, the
//! only place with `unsafe`.

use alloc::vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::{Input, Output};

#[link(wasm_import_module = "slipway_policy")]
unsafe extern "C" {
    fn input_len() -> i32;
    fn input_read(dst: *mut u8);
    fn output(ptr: *const u8, len: i32);
}

/// Status the entry returns when the program could not produce an answer (the host then
/// records "policy failed").
const NO_ANSWER: i32 = 1;

/// Reads the input, runs `decide`, hands over the answer.
pub fn run(decide: fn(&Input) -> Output) -> i32 {
    // SAFETY: a host function without arguments.
    let len = unsafe { input_len() };
    let Ok(len) = usize::try_from(len) else {
        return NO_ANSWER;
    };
    let mut buffer = vec![0u8; len];
    // SAFETY: the host writes exactly `input_len()` bytes at `dst`, and `buffer` holds that many.
    unsafe { input_read(buffer.as_mut_ptr()) };
    let Ok(input) = Input::decode(&buffer) else {
        return NO_ANSWER;
    };
    let Ok(answer) = decide(&input).encode() else {
        return NO_ANSWER;
    };
    let Ok(answer_len) = i32::try_from(answer.len()) else {
        return NO_ANSWER;
    };
    // SAFETY: `answer` is `answer_len` readable bytes; the host copies them before returning.
    unsafe { output(answer.as_ptr(), answer_len) };
    0
}

/// The program's heap: a bump allocator over a static arena (a policy runs once and allocates
/// little; memory is never freed).
const ARENA_SIZE: usize = 256 << 10;

#[repr(C, align(16))]
struct Arena {
    memory: UnsafeCell<[u8; ARENA_SIZE]>,
    next: AtomicUsize,
}

// SAFETY: `next` hands out each byte of `memory` at most once; wasm32 programs here are
// single-threaded anyway (threads are refused by the host).
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena {
    memory: UnsafeCell::new([0; ARENA_SIZE]),
    next: AtomicUsize::new(0),
};

// SAFETY: `alloc` returns null or a block of `layout.size()` bytes aligned to `layout.align()`
// inside `memory` that overlaps no other block; `dealloc` does nothing.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.memory.get() as usize;
        let current = self.next.load(Ordering::Relaxed);
        let Some(start) = (base + current).checked_next_multiple_of(layout.align()) else {
            return core::ptr::null_mut();
        };
        let offset = start - base;
        match offset.checked_add(layout.size()) {
            Some(end) if end <= ARENA_SIZE => {
                self.next.store(end, Ordering::Relaxed);
                start as *mut u8
            }
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
