//! The SVM MSR permission map (AMD APM vol. 2, 15.11): which MSRs a guest reads and writes
//! without an exit. Everything is intercepted (the exit handler decides) except the MSRs whose
//! guest copy the world switch keeps apart from the host's:
//! - VMLOAD/VMSAVE switch FS.base, GS.base, KernelGSbase, STAR, LSTAR, CSTAR, SFMASK and
//!   SYSENTER_CS/ESP/EIP with the guest (the SVM backend runs VMLOAD/VMSAVE around every VMRUN);
//! - under nested paging the guest's PAT is the VMCB's G_PAT.
//!
//! A 64-bit guest kernel (Linux) programs all of them at boot: intercepted, each write would
//! raise #GP and system calls would not work. VMX has no such switch for STAR/LSTAR/SFMASK/
//! KernelGSbase without MSR load/store lists, so the VMX backend keeps intercepting them.

/// The MSRs a guest owns on SVM (see the module docs).
pub const GUEST_OWNED_MSRS: [u32; 11] = [
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x277,       // PAT (G_PAT)
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS.base
    0xc000_0101, // GS.base
    0xc000_0102, // KernelGSbase
];

/// Size of the MSR permission map in bytes (two pages).
pub const MSRPM_SIZE: usize = 8192;

/// The bit in the permission map that intercepts reads of `msr` (the next bit intercepts
/// writes), or `None` for an MSR outside the three ranges the map covers (always intercepted).
pub fn read_intercept_bit(msr: u32) -> Option<usize> {
    let (range_start, byte_offset) = match msr {
        0..=0x1fff => (0, 0),
        0xc000_0000..=0xc000_1fff => (0xc000_0000, 0x800),
        0xc001_0000..=0xc001_1fff => (0xc001_0000, 0x1000),
        _ => return None,
    };
    Some(byte_offset * 8 + (msr - range_start) as usize * 2)
}

/// Clears the read and write intercepts of [`GUEST_OWNED_MSRS`] in `map` (all other bits are
/// left as they are: set, i.e. intercepted).
pub fn allow_guest_owned(map: &mut [u8; MSRPM_SIZE]) {
    for msr in GUEST_OWNED_MSRS {
        if let Some(bit) = read_intercept_bit(msr) {
            map[bit / 8] &= !(0b11 << (bit % 8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_apm_layout() {
        // APM: MSR 0 is bits 0-1 of byte 0; 0xC0000000 starts at byte 0x800; 0xC0010000 at 0x1000.
        assert_eq!(read_intercept_bit(0), Some(0));
        assert_eq!(read_intercept_bit(0x277), Some(0x277 * 2));
        assert_eq!(read_intercept_bit(0xc000_0080), Some(0x800 * 8 + 0x80 * 2));
        assert_eq!(read_intercept_bit(0xc001_0015), Some(0x1000 * 8 + 0x15 * 2));
        assert_eq!(read_intercept_bit(0x2000), None);
        assert_eq!(read_intercept_bit(0xc000_2000), None);
        assert_eq!(read_intercept_bit(0xc002_0000), None);
    }

    #[test]
    fn only_the_guest_owned_msrs_are_let_through() {
        let mut map = [0xffu8; MSRPM_SIZE];
        allow_guest_owned(&mut map);
        let intercepted = |msr: u32| {
            let bit = read_intercept_bit(msr).unwrap();
            (map[bit / 8] >> (bit % 8)) & 0b11
        };
        for msr in GUEST_OWNED_MSRS {
            assert_eq!(intercepted(msr), 0, "{msr:#x}");
        }
        // EFER, APIC base, TSC, TSC_AUX, SPEC_CTRL and the SVM MSRs stay intercepted.
        for msr in [
            0xc000_0080,
            0x1b,
            0x10,
            0xc000_0103,
            0x48,
            0xc001_0114,
            0xc001_0117,
        ] {
            assert_eq!(intercepted(msr), 0b11, "{msr:#x}");
        }
        let cleared: u32 = map.iter().map(|b| b.count_zeros()).sum();
        assert_eq!(cleared as usize, 2 * GUEST_OWNED_MSRS.len());
    }
}
