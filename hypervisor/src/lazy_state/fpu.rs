//! Guest x87/SSE state isolation.
//!
//! VMRUN and #VMEXIT switch none of the x87, MMX or SSE registers: whatever a guest leaves in
//! them is what the next guest on that physical CPU would see. Each vCPU therefore owns an
//! FXSAVE image ([`FpuState`]), starting in the state FNINIT leaves with the default MXCSR, and a
//! physical CPU swaps images only when it switches to a different vCPU (see
//! `Vcpus::switch_lazy_state` in `vm.rs`), not on every exit.
//!
//! That is correct only because **the hypervisor never touches these registers itself**: it is
//! built for the soft-float `x86_64-unknown-none` target (no x87/SSE code generated, its
//! compiler_builtins included), and no assembly outside this file uses them. Between a guest's
//! #VMEXIT and its next VMRUN its state stays live in the registers.
//!
//! The state switched is x87 + SSE (FXSAVE64/FXRSTOR64). Nothing wider is reachable by a guest:
//! every pCPU sets XCR0 to x87|SSE at start (firmware such as OVMF may have left AVX enabled),
//! guests cannot change XCR0 (XSETBV is intercepted and refused) and CPUID hides XSAVE, OSXSAVE
//! and AVX from them.

use core::sync::atomic::{AtomicU8, Ordering};

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
/// XCR0: x87 | SSE, the only state components guests may use.
const XCR0_X87_SSE: u64 = 0b11;
/// CPUID.1:ECX.XSAVE.
const CPUID1_ECX_XSAVE: u32 = 1 << 26;
/// CPUID.80000008h:EBX.RstrFpErrPtrs: FXSAVE/FXRSTOR always save and restore FIP, FDP and FOP.
const CPUID_80000008_EBX_RSTR_FP_ERR_PTRS: u32 = 1 << 2;

/// One vCPU's x87/SSE registers in the FXSAVE (64-bit) layout.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState([u8; 512]);

impl FpuState {
    /// The architectural initial state: what FNINIT leaves (FCW 0x037F, FSW 0, every tag
    /// empty, pointers 0) plus the default MXCSR 0x1F80 (all SIMD exceptions masked, round to
    /// nearest); every data register zero.
    pub const fn initial() -> Self {
        let mut image = [0u8; 512];
        // FCW at offset 0.
        image[0] = 0x7f;
        image[1] = 0x03;
        // The abridged tag word at offset 4 stays 0: every register empty.
        // MXCSR at offset 24.
        image[24] = 0x80;
        image[25] = 0x1f;
        Self(image)
    }
}

/// Prepares the calling physical CPU for switching guest x87/SSE state: CR0.MP and NE set, EM
/// and TS clear (FXSAVE/FXRSTOR never fault), CR4.OSFXSR (FXSAVE includes the XMM registers)
/// and OSXMMEXCPT, and, where the CPU has XSAVE, XCR0 = x87|SSE.
pub fn enable_on_this_cpu() {
    let xsave = core::arch::x86_64::__cpuid(1).ecx & CPUID1_ECX_XSAVE != 0;
    // SAFETY: ring 0; the bits written are defined on every x86-64 CPU (OSXSAVE only when
    // CPUID reports XSAVE, and XCR0 = x87|SSE is always a valid value then). The hypervisor
    // uses none of this state itself, so changing how it is managed affects no running code.
    unsafe {
        let mut cr0: u64;
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        cr0 = (cr0 | CR0_MP | CR0_NE) & !(CR0_EM | CR0_TS);
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        let mut cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
        if xsave {
            cr4 |= CR4_OSXSAVE;
        }
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        if xsave {
            core::arch::asm!(
                "xsetbv",
                in("ecx") 0u32,
                in("eax") XCR0_X87_SSE as u32,
                in("edx") (XCR0_X87_SSE >> 32) as u32,
                options(nomem, nostack, preserves_flags),
            );
        }
    }
}

const UNKNOWN: u8 = 0;
const KEEPS_POINTERS: u8 = 1;
const LEAKS_POINTERS: u8 = 2;
static ERROR_POINTERS: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether FXRSTOR may leave the previous owner's FIP/FDP/FOP in place: AMD CPUs without
/// RstrFpErrPtrs save and restore them only while an x87 exception is pending.
fn fxrstor_may_keep_stale_pointers() -> bool {
    match ERROR_POINTERS.load(Ordering::Relaxed) {
        KEEPS_POINTERS => false,
        LEAKS_POINTERS => true,
        _ => {
            let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
            let restores = max_ext >= 0x8000_0008
                && core::arch::x86_64::__cpuid(0x8000_0008).ebx
                    & CPUID_80000008_EBX_RSTR_FP_ERR_PTRS
                    != 0;
            let value = if restores {
                KEEPS_POINTERS
            } else {
                LEAKS_POINTERS
            };
            ERROR_POINTERS.store(value, Ordering::Relaxed);
            !restores
        }
    }
}

/// Saves the registers into `outgoing` (if that vCPU still exists) and loads `incoming`'s.
/// Called on the physical CPU that will run `incoming` next, after [`enable_on_this_cpu`].
pub fn switch(outgoing: Option<&mut FpuState>, incoming: &FpuState) {
    if let Some(out) = outgoing {
        // SAFETY: `out` is a live, 16-byte aligned 512-byte area this CPU may write (the caller
        // holds the big lock and that vCPU is not running); CR0.EM/TS are clear and OSFXSR set.
        unsafe {
            core::arch::asm!("fxsave64 [{}]", in(reg) out.0.as_mut_ptr(), options(nostack, preserves_flags))
        };
    }
    if fxrstor_may_keep_stale_pointers() {
        // Overwrite the error pointers with values that say nothing about the previous owner:
        // clear pending exceptions, free st(7) so the load cannot overflow the stack, then load
        // an integer (exact, raises nothing). FXRSTOR below replaces everything else.
        // SAFETY: reads 4 bytes of `incoming`; changes only x87 state, which FXRSTOR then sets.
        unsafe {
            core::arch::asm!(
                "fnclex",
                "ffree st(7)",
                "fild dword ptr [{}]",
                in(reg) incoming.0.as_ptr(),
                options(nostack, preserves_flags, readonly),
            )
        };
    }
    // SAFETY: `incoming` is a 16-byte aligned FXSAVE image that was either built by
    // `FpuState::initial` or written by FXSAVE64 on this machine, so its MXCSR has no reserved
    // bit set and FXRSTOR cannot fault; CR0.EM/TS are clear and OSFXSR is set.
    unsafe {
        core::arch::asm!("fxrstor64 [{}]", in(reg) incoming.0.as_ptr(), options(nostack, preserves_flags, readonly))
    };
}
