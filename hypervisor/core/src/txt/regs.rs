//! The TXT configuration registers (MLE guide, appendix "TXT Configuration Registers") behind
//! [`TxtRegisters`]: the hypervisor binary implements it over the MMIO spaces; host tests and the
//! simulated launch implement it over plain memory. Nothing in the launch logic knows which.

/// Physical base of the public and private configuration spaces (64 KiB each).
pub const TXT_PUBLIC_BASE: u64 = 0xFED3_0000;
pub const TXT_PRIVATE_BASE: u64 = 0xFED2_0000;
pub const TXT_SPACE_SIZE: u64 = 0x1_0000;

/// Register offsets (the same in both spaces).
pub const STS: u32 = 0x000;
pub const ESTS: u32 = 0x008;
pub const ERRORCODE: u32 = 0x030;
pub const CMD_RESET: u32 = 0x038;
pub const CMD_CLOSE_PRIVATE: u32 = 0x048;
pub const DIDVID: u32 = 0x110;
pub const SINIT_BASE: u32 = 0x270;
pub const SINIT_SIZE: u32 = 0x278;
pub const MLE_JOIN: u32 = 0x290;
pub const HEAP_BASE: u32 = 0x300;
pub const HEAP_SIZE: u32 = 0x308;
pub const DPR: u32 = 0x330;
pub const CMD_OPEN_LOCALITY1: u32 = 0x380;
pub const CMD_CLOSE_LOCALITY1: u32 = 0x388;
pub const CMD_OPEN_LOCALITY2: u32 = 0x390;
pub const CMD_CLOSE_LOCALITY2: u32 = 0x398;
pub const CMD_SECRETS: u32 = 0x8E0;
pub const CMD_NO_SECRETS: u32 = 0x8E8;
pub const E2STS: u32 = 0x8F0;

/// TXT.STS bits.
pub const STS_SENTER_DONE: u64 = 1 << 0;
pub const STS_SEXIT_DONE: u64 = 1 << 1;
pub const STS_PRIVATE_OPEN: u64 = 1 << 7;
pub const STS_LOCALITY1_OPEN: u64 = 1 << 15;
pub const STS_LOCALITY2_OPEN: u64 = 1 << 16;
/// TXT.ESTS bit 0: a TXT reset happened (the platform needs a power cycle).
pub const ESTS_TXT_RESET: u64 = 1 << 0;
/// TXT.ERRORCODE bit 31: the code is valid (an error was recorded); bit 30: reported by
/// software (the MLE), not by SINIT/the CPU.
pub const ERRORCODE_VALID: u64 = 1 << 31;
pub const ERRORCODE_EXTERNAL: u64 = 1 << 30;

/// The TXT configuration spaces. `read` reads the public space (after SENTER the private space
/// reads the same); `command` writes a command register in the private space (the written value
/// is ignored by hardware).
pub trait TxtRegisters {
    fn read(&self, offset: u32) -> u64;
    fn command(&mut self, offset: u32);
    /// Writes a data register of the private space (ERRORCODE, MLE_JOIN).
    fn write(&mut self, offset: u32, value: u64);
}

/// TXT.DIDVID: the chipset's identity, matched against the ACM's chipset ID list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DidVid {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision_id: u16,
    pub extended_id: u16,
}

impl DidVid {
    pub fn from_register(value: u64) -> DidVid {
        DidVid {
            vendor_id: value as u16,
            device_id: (value >> 16) as u16,
            revision_id: (value >> 32) as u16,
            extended_id: (value >> 48) as u16,
        }
    }

    pub fn to_register(self) -> u64 {
        u64::from(self.vendor_id)
            | u64::from(self.device_id) << 16
            | u64::from(self.revision_id) << 32
            | u64::from(self.extended_id) << 48
    }
}
