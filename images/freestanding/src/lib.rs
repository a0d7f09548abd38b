//! The C runtime symbols the host target's prebuilt `core`/`alloc` need in a freestanding image
//! (see README.md). Compiled only for `target_os = "linux"` with `--cfg slipway_freestanding`
//! (what xtask gives that target); empty elsewhere, so host tests link the real C library.
//!
//! The copies use `rep movsb`/`rep stosb` (fast-string microcode on current x86-64 CPUs); the
//! comparisons are plain loops. Written with inline assembly and raw loops because a Rust
//! `memcpy` written as a copy loop is turned back into a call to `memcpy` by LLVM.
#![no_std]

#[cfg(all(target_os = "linux", slipway_freestanding))]
mod c_runtime {
    /// # Safety
    /// C `memcpy`: `dest` and `src` valid for `n` bytes, not overlapping.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller guarantees both ranges; DF is clear (System V ABI).
        unsafe {
            core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _,
                inout("rsi") src => _, options(nostack, preserves_flags));
        }
        dest
    }

    /// # Safety
    /// C `memmove`: `dest` and `src` valid for `n` bytes; they may overlap.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        if (dest as usize).wrapping_sub(src as usize) >= n {
            // `dest` is below `src` or past its end: a forward copy never reads a byte it wrote.
            // SAFETY: as for `memcpy`; the overlap case is excluded by the check above.
            unsafe { memcpy(dest, src, n) }
        } else {
            // `dest` overlaps the tail of `src`: copy backwards.
            // SAFETY: the caller guarantees both ranges; DF is set only for this instruction and
            // cleared again, as the ABI requires.
            unsafe {
                core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
                    inout("rdi") dest.wrapping_add(n).wrapping_sub(1) => _,
                    inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _, options(nostack));
            }
            dest
        }
    }

    /// # Safety
    /// C `memset`: `dest` valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
        // SAFETY: the caller guarantees the range; DF is clear (System V ABI).
        unsafe {
            core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _,
                in("al") value as u8, options(nostack, preserves_flags));
        }
        dest
    }

    /// # Safety
    /// C `memcmp`: `a` and `b` valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` and the caller guarantees `n` readable bytes at each.
            let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        0
    }

    /// # Safety
    /// C `bcmp`: `a` and `b` valid for `n` bytes.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: same contract.
        unsafe { memcmp(a, b, n) }
    }

    /// # Safety
    /// C `strlen`: `s` points to a NUL-terminated string. (LLVM turns a loop looking for a NUL
    /// into a call to this.)
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
        let remaining: usize;
        // SAFETY: the caller guarantees a terminator; `repne scasb` reads up to and including
        // it. DF is clear (System V ABI).
        unsafe {
            core::arch::asm!("repne scasb", inout("rcx") usize::MAX => remaining,
                inout("rdi") s => _, in("al") 0u8, options(nostack, readonly));
        }
        // rcx counted down once per byte read, the terminator included.
        !remaining - 1
    }

    /// Named by the prebuilt `alloc`'s landing pads; with `panic = "abort"` nothing unwinds, so
    /// this is never reached.
    #[unsafe(no_mangle)]
    pub extern "C" fn _Unwind_Resume() -> ! {
        loop {
            core::hint::spin_loop();
        }
    }

    /// The personality routine the prebuilt `alloc`'s unwind tables name; never called (see
    /// [`_Unwind_Resume`]).
    #[unsafe(no_mangle)]
    pub extern "C" fn rust_eh_personality() {}
}
