//! Extended processor state (XSAVE) offered to guests: which state components, the XSETBV rules
//! and the CPUID answers that describe them. Pure; the hypervisor binary performs XSETBV, XSAVE
//! and XRSTOR with what this module decides.
//!
//! - Offered ([`XsaveOffer::from_host`]): nothing on a CPU without XSAVE (guests keep x87/SSE,
//!   switched with FXSAVE); x87 | SSE with XSAVE; x87 | SSE | AVX where the CPU also has AVX and
//!   its state component fits the save area the hypervisor keeps per vCPU ([`AREA_BYTES`]).
//!   AVX-512, AMX, MPX, PKRU, CET and every other component stay hidden: their state would need
//!   a bigger area, supervisor-state handling (IA32_XSS) or MSRs no domain gets.
//! - The same offer is the XCR0 the hypervisor itself runs with, a superset of every guest's
//!   XCR0: switching XCR0 between host and guest then only disables components a guest does not
//!   use, and the per-vCPU save/restore covers every component a guest could ever enable, so no
//!   register state of one vCPU survives into another's.
//! - A guest's XCR0 starts at [`XCR0_RESET`] (x87 only, as after reset) and changes only by an
//!   XSETBV the exit handler accepts ([`XsaveOffer::check_xsetbv`]).

use crate::vmexit::Event;

/// XCR0 bit 0: x87 state.
pub const XCR0_X87: u64 = 1 << 0;
/// XCR0 bit 1: SSE state (XMM registers, MXCSR).
pub const XCR0_SSE: u64 = 1 << 1;
/// XCR0 bit 2: AVX state (upper halves of the YMM registers).
pub const XCR0_AVX: u64 = 1 << 2;
/// XCR0 after reset and INIT: x87 only.
pub const XCR0_RESET: u64 = XCR0_X87;
/// CR4.OSXSAVE: the OS enabled XSAVE, XGETBV and XSETBV.
pub const CR4_OSXSAVE: u64 = 1 << 18;
/// CPUID.1:ECX.XSAVE.
pub const CPUID1_ECX_XSAVE: u32 = 1 << 26;
/// CPUID.1:ECX.OSXSAVE (a copy of CR4.OSXSAVE).
pub const CPUID1_ECX_OSXSAVE: u32 = 1 << 27;
/// CPUID.1:ECX.AVX.
pub const CPUID1_ECX_AVX: u32 = 1 << 28;
/// The CPUID leaf that enumerates XSAVE state components.
pub const XSAVE_LEAF: u32 = 0xd;
/// Bytes of the standard-format area before any extended component: the 512-byte legacy
/// (FXSAVE) region and the 64-byte XSAVE header.
pub const LEGACY_AND_HEADER_BYTES: u32 = 512 + 64;
/// The per-vCPU save area the hypervisor keeps, in bytes (64-byte aligned): room for x87 | SSE |
/// AVX in the standard format (576 + 256 = 832 bytes on every CPU that has AVX).
pub const AREA_BYTES: usize = 1024;

/// Where a state component lives in the standard-format XSAVE area (CPUID.(0xD, i): EAX = size,
/// EBX = offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentLayout {
    /// Size in bytes.
    pub size: u32,
    /// Offset from the start of the area.
    pub offset: u32,
}

/// What extended state guests get on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XsaveOffer {
    /// The XCR0 bits a guest may set (0: XSAVE not offered). Also the hypervisor's own XCR0.
    pub xcr0: u64,
    /// The AVX component's layout, present exactly when [`XCR0_AVX`] is offered.
    pub avx: Option<ComponentLayout>,
}

impl XsaveOffer {
    /// Nothing offered: guests keep x87/SSE (FXSAVE).
    pub const NONE: XsaveOffer = XsaveOffer { xcr0: 0, avx: None };

    /// The offer on the host whose CPUID `host_cpuid(leaf, subleaf)` answers.
    pub fn from_host(host_cpuid: &mut dyn FnMut(u32, u32) -> [u32; 4]) -> Self {
        if host_cpuid(0, 0)[0] < XSAVE_LEAF {
            return Self::NONE;
        }
        let leaf1_ecx = host_cpuid(1, 0)[2];
        if leaf1_ecx & CPUID1_ECX_XSAVE == 0 {
            return Self::NONE;
        }
        let supported = u64::from(host_cpuid(XSAVE_LEAF, 0)[0]);
        if supported & (XCR0_X87 | XCR0_SSE) != XCR0_X87 | XCR0_SSE {
            // Every XSAVE CPU supports both; one that claims otherwise is not trusted with it.
            return Self::NONE;
        }
        let avx = if leaf1_ecx & CPUID1_ECX_AVX != 0 && supported & XCR0_AVX != 0 {
            let [size, offset, _, _] = host_cpuid(XSAVE_LEAF, 2);
            let layout = ComponentLayout { size, offset };
            let fits = offset >= LEGACY_AND_HEADER_BYTES
                && u64::from(offset) + u64::from(size) <= AREA_BYTES as u64
                && size != 0;
            fits.then_some(layout)
        } else {
            None
        };
        XsaveOffer {
            xcr0: XCR0_X87 | XCR0_SSE | if avx.is_some() { XCR0_AVX } else { 0 },
            avx,
        }
    }

    /// Whether XSAVE is offered at all.
    pub fn offered(&self) -> bool {
        self.xcr0 != 0
    }

    /// Whether AVX is offered.
    pub fn avx(&self) -> bool {
        self.xcr0 & XCR0_AVX != 0
    }

    /// Size of a standard-format XSAVE area holding the components of `xcr0` (restricted to
    /// the offer).
    pub fn area_bytes(&self, xcr0: u64) -> u32 {
        match self.avx {
            Some(avx) if xcr0 & self.xcr0 & XCR0_AVX != 0 => {
                LEGACY_AND_HEADER_BYTES.max(avx.offset + avx.size)
            }
            _ => LEGACY_AND_HEADER_BYTES,
        }
    }

    /// Judges a guest's `XSETBV` of `value` into extended control register `xcr` (ECX) at
    /// privilege level `cpl` with control register 4 `cr4`, as the processor would: #UD without
    /// XSAVE or with CR4.OSXSAVE clear; #GP(0) outside CPL 0, for any register but XCR0, for a
    /// value without x87, with AVX but not SSE, or with a bit outside the offer.
    pub fn check_xsetbv(&self, cpl: u64, cr4: u64, xcr: u32, value: u64) -> Result<(), Event> {
        if !self.offered() || cr4 & CR4_OSXSAVE == 0 {
            return Err(Event::INVALID_OPCODE);
        }
        let valid = cpl == 0
            && xcr == 0
            && value & XCR0_X87 != 0
            && (value & XCR0_AVX == 0 || value & XCR0_SSE != 0)
            && value & !self.xcr0 == 0;
        if valid {
            Ok(())
        } else {
            Err(Event::GENERAL_PROTECTION)
        }
    }

    /// CPUID leaf 0xD, `subleaf`, for a guest whose XCR0 is `guest_xcr0`: subleaf 0 lists the
    /// offered components (EAX/EDX), the area size for the guest's current XCR0 (EBX) and for
    /// all offered components (ECX); subleaf 1 (XSAVEOPT, XSAVEC, XGETBV with ECX = 1, XSAVES,
    /// XFD) is all zero; subleaf 2 describes AVX when offered; every other subleaf is zero.
    pub fn cpuid_leaf_d(&self, subleaf: u32, guest_xcr0: u64) -> [u32; 4] {
        if !self.offered() {
            return [0; 4];
        }
        match (subleaf, self.avx) {
            (0, _) => [
                self.xcr0 as u32,
                self.area_bytes(guest_xcr0),
                self.area_bytes(self.xcr0),
                (self.xcr0 >> 32) as u32,
            ],
            (2, Some(avx)) => [avx.size, avx.offset, 0, 0],
            _ => [0; 4],
        }
    }
}

/// What the CPUID filter needs to know about a vCPU's extended state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestXsave {
    /// The host's offer.
    pub offer: XsaveOffer,
    /// The vCPU's XCR0.
    pub xcr0: u64,
    /// The vCPU's CR4 (OSXSAVE is reported in CPUID.1:ECX bit 27).
    pub cr4: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPUID of a host with XSAVE and AVX (AVX at offset 576, 256 bytes), AVX-512 too.
    fn avx_host(leaf: u32, subleaf: u32) -> [u32; 4] {
        match (leaf, subleaf) {
            (0, _) => [0x16, 0, 0, 0],
            (1, _) => [
                0,
                0,
                CPUID1_ECX_XSAVE | CPUID1_ECX_OSXSAVE | CPUID1_ECX_AVX,
                0,
            ],
            (0xd, 0) => [0xe7, 2696, 2696, 0],
            (0xd, 2) => [256, 576, 0, 0],
            (0xd, 5) => [64, 832, 0, 0],
            _ => [0; 4],
        }
    }

    fn offer_of(host: fn(u32, u32) -> [u32; 4]) -> XsaveOffer {
        XsaveOffer::from_host(&mut |l, s| host(l, s))
    }

    #[test]
    fn an_avx_host_offers_x87_sse_avx_and_nothing_wider() {
        let offer = offer_of(avx_host);
        assert_eq!(offer.xcr0, 0b111);
        assert_eq!(
            offer.avx,
            Some(ComponentLayout {
                size: 256,
                offset: 576
            })
        );
    }

    #[test]
    fn a_host_without_xsave_or_avx_offers_less() {
        let no_xsave = offer_of(|l, s| {
            let mut r = avx_host(l, s);
            if l == 1 {
                r[2] = 0;
            }
            r
        });
        assert_eq!(no_xsave, XsaveOffer::NONE);
        let no_avx = offer_of(|l, s| {
            let mut r = avx_host(l, s);
            if l == 1 {
                r[2] &= !CPUID1_ECX_AVX;
            }
            r
        });
        assert_eq!(no_avx.xcr0, 0b11);
        assert_eq!(no_avx.avx, None);
        // Max leaf below 0xD: no way to size the area.
        let old = offer_of(|l, s| {
            if l == 0 {
                [0xc, 0, 0, 0]
            } else {
                avx_host(l, s)
            }
        });
        assert_eq!(old, XsaveOffer::NONE);
    }

    #[test]
    fn an_avx_component_outside_the_area_is_not_offered() {
        let far = offer_of(|l, s| match (l, s) {
            (0xd, 2) => [256, 896, 0, 0],
            _ => avx_host(l, s),
        });
        assert_eq!(far.xcr0, 0b11);
        let overlapping = offer_of(|l, s| match (l, s) {
            (0xd, 2) => [256, 100, 0, 0],
            _ => avx_host(l, s),
        });
        assert_eq!(overlapping.xcr0, 0b11);
        let wrapping = offer_of(|l, s| match (l, s) {
            (0xd, 2) => [u32::MAX, 576, 0, 0],
            _ => avx_host(l, s),
        });
        assert_eq!(wrapping.xcr0, 0b11);
    }

    #[test]
    fn xsetbv_follows_the_processor_rules() {
        let offer = offer_of(avx_host);
        let ok = |cpl, xcr, value| offer.check_xsetbv(cpl, CR4_OSXSAVE, xcr, value);
        assert_eq!(ok(0, 0, 0b001), Ok(()));
        assert_eq!(ok(0, 0, 0b011), Ok(()));
        assert_eq!(ok(0, 0, 0b111), Ok(()));
        let gp = Err(Event::GENERAL_PROTECTION);
        assert_eq!(ok(0, 0, 0b000), gp, "x87 must stay set");
        assert_eq!(ok(0, 0, 0b110), gp, "x87 must stay set");
        assert_eq!(ok(0, 0, 0b101), gp, "AVX needs SSE");
        assert_eq!(ok(0, 0, 0xe7), gp, "AVX-512 is not offered");
        assert_eq!(ok(0, 0, 0b111 | (1 << 9)), gp, "PKRU is not offered");
        assert_eq!(ok(0, 0, 0b111 | (1 << 63)), gp, "reserved bit");
        assert_eq!(ok(0, 1, 0b011), gp, "only XCR0 exists");
        assert_eq!(ok(0, 0x8000_0000, 0b011), gp);
        assert_eq!(ok(3, 0, 0b011), gp, "user space");
        assert_eq!(ok(1, 0, 0b011), gp);
        let ud = Err(Event::INVALID_OPCODE);
        assert_eq!(offer.check_xsetbv(0, 0, 0, 0b011), ud, "CR4.OSXSAVE clear");
        assert_eq!(XsaveOffer::NONE.check_xsetbv(0, CR4_OSXSAVE, 0, 1), ud);
        let sse_only = XsaveOffer {
            xcr0: 0b11,
            avx: None,
        };
        assert_eq!(sse_only.check_xsetbv(0, CR4_OSXSAVE, 0, 0b111), gp);
        assert_eq!(sse_only.check_xsetbv(0, CR4_OSXSAVE, 0, 0b011), Ok(()));
    }

    #[test]
    fn leaf_d_sizes_follow_the_guest_xcr0() {
        let offer = offer_of(avx_host);
        assert_eq!(offer.cpuid_leaf_d(0, XCR0_RESET), [0b111, 576, 832, 0]);
        assert_eq!(offer.cpuid_leaf_d(0, 0b011), [0b111, 576, 832, 0]);
        assert_eq!(offer.cpuid_leaf_d(0, 0b111), [0b111, 832, 832, 0]);
        assert_eq!(offer.cpuid_leaf_d(1, 0b111), [0; 4]);
        assert_eq!(offer.cpuid_leaf_d(2, 0b111), [256, 576, 0, 0]);
        // AVX-512 state exists on the host but is not described.
        for subleaf in [3, 5, 6, 7, 9, 63, 64, u32::MAX] {
            assert_eq!(
                offer.cpuid_leaf_d(subleaf, 0b111),
                [0; 4],
                "subleaf {subleaf}"
            );
        }
        let sse_only = XsaveOffer {
            xcr0: 0b11,
            avx: None,
        };
        assert_eq!(sse_only.cpuid_leaf_d(0, 0b011), [0b11, 576, 576, 0]);
        assert_eq!(sse_only.cpuid_leaf_d(2, 0b011), [0; 4]);
        assert_eq!(XsaveOffer::NONE.cpuid_leaf_d(0, 1), [0; 4]);
    }
}
