//! The VMCB (AMD APM vol. 2, appendix B): one 4 KiB page per vCPU, accessed by offset.
#![allow(dead_code)] // the full register map, including fields not used yet

/// Control-area offsets.
pub mod control {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const VINTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const NP_CONTROL: usize = 0x090;
    pub const EVENT_INJECTION: usize = 0x0a8;
    pub const N_CR3: usize = 0x0b0;
    pub const CLEAN_BITS: usize = 0x0c0;
}

/// State-save-area offsets.
pub mod save {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

// Intercept bits in INTERCEPT_MISC1 (vector 3).
pub const INTERCEPT_INTR: u32 = 1 << 0;
pub const INTERCEPT_NMI: u32 = 1 << 1;
pub const INTERCEPT_SMI: u32 = 1 << 2;
pub const INTERCEPT_INIT: u32 = 1 << 3;
pub const INTERCEPT_VINTR: u32 = 1 << 4;
pub const INTERCEPT_RDTSC: u32 = 1 << 14;
pub const INTERCEPT_CPUID: u32 = 1 << 18;
pub const INTERCEPT_INVD: u32 = 1 << 22;
pub const INTERCEPT_HLT: u32 = 1 << 24;
pub const INTERCEPT_INVLPGA: u32 = 1 << 26;
pub const INTERCEPT_IOIO: u32 = 1 << 27;
pub const INTERCEPT_MSR: u32 = 1 << 28;
pub const INTERCEPT_TASK_SWITCH: u32 = 1 << 29;
pub const INTERCEPT_SHUTDOWN: u32 = 1 << 31;
// Intercept bits in INTERCEPT_MISC2 (vector 4).
pub const INTERCEPT_VMRUN: u32 = 1 << 0;
pub const INTERCEPT_VMMCALL: u32 = 1 << 1;
pub const INTERCEPT_VMLOAD: u32 = 1 << 2;
pub const INTERCEPT_VMSAVE: u32 = 1 << 3;
pub const INTERCEPT_STGI: u32 = 1 << 4;
pub const INTERCEPT_CLGI: u32 = 1 << 5;
pub const INTERCEPT_SKINIT: u32 = 1 << 6;
pub const INTERCEPT_RDTSCP: u32 = 1 << 7;
pub const INTERCEPT_ICEBP: u32 = 1 << 8;
pub const INTERCEPT_WBINVD: u32 = 1 << 9;
pub const INTERCEPT_MONITOR: u32 = 1 << 10;
pub const INTERCEPT_MWAIT: u32 = 1 << 11;
pub const INTERCEPT_MWAIT_ARMED: u32 = 1 << 12;
pub const INTERCEPT_XSETBV: u32 = 1 << 13;

/// Exit codes (APM vol. 2, table C-1).
pub mod exit {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const RDTSC: u64 = 0x6e;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const TASK_SWITCH: u64 = 0x7d;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const ICEBP: u64 = 0x88;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_ARMED: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID (-1); the emulator reports it as 0xffff_ffff, so compare the low 32 bits.
    pub const INVALID_LOW32: u64 = 0xffff_ffff;
}

/// A VMCB page, owned by one vCPU, identity-mapped RW in the hypervisor's tables.
pub struct Vmcb {
    pa: u64,
}

impl Vmcb {
    /// Wraps the zeroed page at `pa`.
    ///
    /// # Safety
    /// `pa` is a zeroed, 4 KiB-aligned, identity-mapped RW frame owned by this VMCB only.
    pub unsafe fn new(pa: u64) -> Self {
        Self { pa }
    }

    pub fn pa(&self) -> u64 {
        self.pa
    }

    pub fn read64(&self, offset: usize) -> u64 {
        assert!(offset + 8 <= 4096 && offset.is_multiple_of(8));
        // SAFETY: within the VMCB page this object owns (constructor invariant), aligned.
        unsafe { ((self.pa as usize + offset) as *const u64).read_volatile() }
    }

    pub fn write64(&mut self, offset: usize, value: u64) {
        assert!(offset + 8 <= 4096 && offset.is_multiple_of(8));
        // SAFETY: as in `read64`.
        unsafe { ((self.pa as usize + offset) as *mut u64).write_volatile(value) }
    }

    pub fn read32(&self, offset: usize) -> u32 {
        assert!(offset + 4 <= 4096 && offset.is_multiple_of(4));
        // SAFETY: as in `read64`.
        unsafe { ((self.pa as usize + offset) as *const u32).read_volatile() }
    }

    pub fn write32(&mut self, offset: usize, value: u32) {
        assert!(offset + 4 <= 4096 && offset.is_multiple_of(4));
        // SAFETY: as in `read64`.
        unsafe { ((self.pa as usize + offset) as *mut u32).write_volatile(value) }
    }

    pub fn read8(&self, offset: usize) -> u8 {
        assert!(offset < 4096);
        // SAFETY: as in `read64`.
        unsafe { ((self.pa as usize + offset) as *const u8).read_volatile() }
    }

    pub fn write8(&mut self, offset: usize, value: u8) {
        assert!(offset < 4096);
        // SAFETY: as in `read64`.
        unsafe { ((self.pa as usize + offset) as *mut u8).write_volatile(value) }
    }

    /// Writes a segment register: selector, attributes (VMCB packed format), limit, base.
    pub fn set_segment(
        &mut self,
        offset: usize,
        selector: u16,
        attrib: u16,
        limit: u32,
        base: u64,
    ) {
        self.write32(offset, u32::from(selector) | (u32::from(attrib) << 16));
        self.write32(offset + 4, limit);
        self.write64(offset + 8, base);
    }
}
