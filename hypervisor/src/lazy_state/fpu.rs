//! Guest x87/SSE/AVX state isolation and the guest's XCR0.
//!
//! VMRUN, VMLAUNCH/VMRESUME and their exits switch none of the x87, MMX, SSE or AVX registers,
//! nor XCR0: whatever a guest leaves in them is what the next guest on that physical CPU would
//! see. Each vCPU therefore owns a save area ([`FpuState`]), starting in the state FNINIT leaves
//! with the default MXCSR and every other component in its initial state, and a physical CPU
//! swaps areas only when it switches to a different vCPU (see `Vcpus::switch_lazy_state` in
//! `vm.rs`), not on every exit.
//!
//! That is correct only because **the hypervisor never touches these registers itself**: it is
//! built for the soft-float `x86_64-unknown-none` target (no x87/SSE code generated, its
//! compiler_builtins included), and no assembly outside this file uses them. Between a guest's
//! exit and its next entry its state stays live in the registers.
//!
//! What is switched follows hv-core's [`XsaveOffer`] for this CPU, computed once per CPU by
//! [`enable_on_this_cpu`]:
//! - with XSAVE, the hypervisor runs with XCR0 = the offer (x87|SSE, plus AVX where the CPU has
//!   it), a superset of every guest's XCR0, and saves and restores with XSAVE64/XRSTOR64 over
//!   the **whole offer**, not the vCPU's XCR0: a restore limited to the incoming vCPU's XCR0
//!   would leave the previous vCPU's YMM upper halves in the registers for a guest that enables
//!   AVX later. Components the area marks as unused (XSTATE_BV) are put in their initial state.
//! - each vCPU's XCR0 (x87 after reset, then whatever XSETBV the exit handler accepted) is in
//!   the hardware only around the entry instruction ([`with_guest_xcr0`]); switching to it can
//!   only disable components the guest does not use, and switching back only re-enables them.
//! - without XSAVE, x87 + SSE with FXSAVE64/FXRSTOR64, and guests see no XSAVE in CPUID.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use slipway_hv_core::xsave::{AREA_BYTES, CR4_OSXSAVE, XCR0_AVX, XCR0_SSE, XCR0_X87, XsaveOffer};

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CPUID.80000008h:EBX.RstrFpErrPtrs: FXSAVE/FXRSTOR always save and restore FIP, FDP and FOP.
const CPUID_80000008_EBX_RSTR_FP_ERR_PTRS: u32 = 1 << 2;
/// Offset of XSTATE_BV in the XSAVE header.
const XSTATE_BV_OFFSET: usize = 512;

/// The hypervisor's XCR0: the offer guests get (0: no XSAVE; FXSAVE switches x87/SSE). The same
/// on every CPU (each stores what its own CPUID gives; a machine is one CPU model).
static HOST_XCR0: AtomicU64 = AtomicU64::new(0);

/// One vCPU's x87/SSE/AVX registers: a standard-format XSAVE area (the first 512 bytes are the
/// FXSAVE layout, which the FXSAVE fallback uses alone).
#[repr(C, align(64))]
#[derive(Clone)]
pub struct FpuState([u8; AREA_BYTES]);

impl FpuState {
    /// The architectural initial state: what FNINIT leaves (FCW 0x037F, FSW 0, every tag
    /// empty, pointers 0) plus the default MXCSR 0x1F80 (all SIMD exceptions masked, round to
    /// nearest); every data register zero. XSTATE_BV says x87 and SSE come from this image
    /// (so MXCSR is loaded) and every other component starts in its initial state (zero).
    pub const fn initial() -> Self {
        let mut image = [0u8; AREA_BYTES];
        // FCW at offset 0.
        image[0] = 0x7f;
        image[1] = 0x03;
        // The abridged tag word at offset 4 stays 0: every register empty.
        // MXCSR at offset 24.
        image[24] = 0x80;
        image[25] = 0x1f;
        // XSTATE_BV; XCOMP_BV and the rest of the header stay 0 (standard format).
        image[XSTATE_BV_OFFSET] = (XCR0_X87 | XCR0_SSE) as u8;
        Self(image)
    }
}

/// Prepares the calling physical CPU for switching guest x87/SSE/AVX state: CR0.MP and NE set,
/// EM and TS clear (the save/restore instructions never fault), CR4.OSFXSR (FXSAVE includes the
/// XMM registers) and OSXMMEXCPT, and, where the CPU has XSAVE, CR4.OSXSAVE and XCR0 = the offer
/// (firmware such as OVMF may have left AVX-512 enabled: that is turned off here).
pub fn enable_on_this_cpu() {
    let offer = XsaveOffer::from_host(&mut |leaf, subleaf| {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    });
    // SAFETY: ring 0; the bits written are defined on every x86-64 CPU (OSXSAVE only when
    // CPUID reports XSAVE, and the offer's XCR0 has x87 and SSE and only components CPUID.0xD
    // lists, so XSETBV accepts it). The hypervisor uses none of this state itself, so changing
    // how it is managed affects no running code.
    unsafe {
        let mut cr0: u64;
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        cr0 = (cr0 | CR0_MP | CR0_NE) & !(CR0_EM | CR0_TS);
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        let mut cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
        if offer.offered() {
            cr4 |= CR4_OSXSAVE;
        }
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        if offer.offered() {
            xsetbv(offer.xcr0);
        }
    }
    HOST_XCR0.store(offer.xcr0, Ordering::Relaxed);
}

/// The hypervisor's XCR0 (0 without XSAVE).
pub fn host_xcr0() -> u64 {
    HOST_XCR0.load(Ordering::Relaxed)
}

/// Whether `xcr0` may be loaded for a guest on this machine: x87 set, AVX only with SSE, nothing
/// outside the offer. The exit handler only accepts such values; backends check again before
/// storing one, because XSETBV of anything else would fault in the hypervisor.
pub fn is_loadable_guest_xcr0(xcr0: u64) -> bool {
    let host = host_xcr0();
    host != 0
        && xcr0 & XCR0_X87 != 0
        && (xcr0 & XCR0_AVX == 0 || xcr0 & XCR0_SSE != 0)
        && xcr0 & !host == 0
}

/// Writes XCR0.
///
/// # Safety
/// CR4.OSXSAVE is set on this CPU and `value` is a valid XCR0 for it (x87 set, AVX only with
/// SSE, only components the CPU supports); nothing the hypervisor runs until the next write
/// depends on a component `value` disables.
unsafe fn xsetbv(value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!(
            "xsetbv",
            in("ecx") 0u32,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags),
        );
    }
}

/// Runs `enter` (a guest entry, up to its exit) with the hardware XCR0 = `guest_xcr0`, and puts
/// the hypervisor's back afterwards. Without XSAVE, or when the two are equal, nothing is
/// written. Returns `enter`'s result and, if the guest left XCR0 different from `guest_xcr0`,
/// the value it left: it executed XSETBV without an exit, which a CPU honouring the XSETBV
/// intercept (SVM) or exit (VMX) never allows, but QEMU 7.2's emulated SVM does (it has no
/// XSETBV intercept). The caller judges that value ([`is_loadable_guest_xcr0`]).
pub fn with_guest_xcr0<R>(guest_xcr0: u64, enter: impl FnOnce() -> R) -> (R, Option<u64>) {
    let host = host_xcr0();
    if host == 0 {
        return (enter(), None);
    }
    let switch = guest_xcr0 != host;
    // A vCPU's XCR0 was checked when it was stored (`is_loadable_guest_xcr0`); checked again
    // here because a bad value would fault in the hypervisor.
    assert!(
        is_loadable_guest_xcr0(guest_xcr0),
        "guest XCR0 {guest_xcr0:#x} outside the offer {host:#x}"
    );
    if switch {
        // SAFETY: OSXSAVE was set with the host XCR0 (`host != 0`); `guest_xcr0` is a subset of
        // it with x87, and AVX only with SSE (checked above); the hypervisor uses no x87/SSE/AVX
        // state, so disabling components affects nothing it runs.
        unsafe { xsetbv(guest_xcr0) };
    }
    let result = enter();
    let left = xgetbv();
    if left != host {
        // SAFETY: as above; the host XCR0 is the offer this CPU accepted at enable time. It
        // re-enables only components the guest had disabled, whose registers still hold this
        // vCPU's own values (or the initial ones) and are saved with it at the next switch.
        unsafe { xsetbv(host) };
    }
    (result, (left != guest_xcr0).then_some(left))
}

/// Reads XCR0 (CR4.OSXSAVE is set wherever the hypervisor's XCR0 is not 0).
fn xgetbv() -> u64 {
    let (eax, edx): (u32, u32);
    // SAFETY: XGETBV of XCR0 only reads it; the callers run with CR4.OSXSAVE set.
    unsafe {
        core::arch::asm!(
            "xgetbv",
            in("ecx") 0u32,
            out("eax") eax,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    (u64::from(edx) << 32) | u64::from(eax)
}

const UNKNOWN: u8 = 0;
const KEEPS_POINTERS: u8 = 1;
const LEAKS_POINTERS: u8 = 2;
static ERROR_POINTERS: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether FXRSTOR/XRSTOR may leave the previous owner's FIP/FDP/FOP in place: AMD CPUs without
/// RstrFpErrPtrs save and restore them only while an x87 exception is pending.
fn restore_may_keep_stale_pointers() -> bool {
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
/// Called on the physical CPU that will run `incoming` next, after [`enable_on_this_cpu`], with
/// the hypervisor's XCR0 in the hardware (guest XCR0 values are only loaded inside
/// [`with_guest_xcr0`]).
pub fn switch(outgoing: Option<&mut FpuState>, incoming: &FpuState) {
    let host = host_xcr0();
    if let Some(out) = outgoing {
        if host != 0 {
            // SAFETY: `out` is a live, 64-byte aligned area of AREA_BYTES this CPU may write
            // (the caller holds the big lock and that vCPU is not running), large enough for
            // every component of `host` (`XsaveOffer::from_host` checked the layout); CR4.OSXSAVE
            // is set and XCR0 = `host`.
            unsafe {
                core::arch::asm!(
                    "xsave64 [{}]",
                    in(reg) out.0.as_mut_ptr(),
                    in("eax") host as u32,
                    in("edx") (host >> 32) as u32,
                    options(nostack, preserves_flags),
                )
            };
        } else {
            // SAFETY: `out` is a live, 16-byte aligned area of at least 512 bytes this CPU may
            // write (as above); CR0.EM/TS are clear and OSFXSR set.
            unsafe {
                core::arch::asm!("fxsave64 [{}]", in(reg) out.0.as_mut_ptr(), options(nostack, preserves_flags))
            };
        }
    }
    if restore_may_keep_stale_pointers() {
        // Overwrite the error pointers with values that say nothing about the previous owner:
        // clear pending exceptions, free st(7) so the load cannot overflow the stack, then load
        // an integer (exact, raises nothing). The restore below replaces everything else.
        // SAFETY: reads 4 bytes of `incoming`; changes only x87 state, which the restore sets.
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
    if host != 0 {
        // SAFETY: `incoming` is a 64-byte aligned standard-format area that was either built by
        // `FpuState::initial` (XSTATE_BV = x87|SSE, header otherwise zero) or written by XSAVE64
        // with this same mask on this machine (which writes only XSTATE_BV in the header), so its
        // XSTATE_BV is within XCR0 = `host`, its XCOMP_BV and reserved header bytes are zero and
        // its MXCSR has no reserved bit set: XRSTOR cannot fault. Components whose XSTATE_BV bit
        // is clear are initialized, so nothing of the previous owner survives.
        unsafe {
            core::arch::asm!(
                "xrstor64 [{}]",
                in(reg) incoming.0.as_ptr(),
                in("eax") host as u32,
                in("edx") (host >> 32) as u32,
                options(nostack, preserves_flags, readonly),
            )
        };
    } else {
        // SAFETY: `incoming`'s first 512 bytes are an FXSAVE image built by
        // `FpuState::initial` or written by FXSAVE64 on this machine, so its MXCSR has no
        // reserved bit set and FXRSTOR cannot fault; CR0.EM/TS are clear and OSFXSR is set.
        unsafe {
            core::arch::asm!("fxrstor64 [{}]", in(reg) incoming.0.as_ptr(), options(nostack, preserves_flags, readonly))
        };
    }
}
