//! The EPT pointer (SDM vol. 3, "Extended-Page-Table Pointer (EPTP)"): bits 2:0 the memory type
//! of the paging structures, bits 5:3 the page-walk length minus one, bit 6 enables accessed and
//! dirty flags, bits 11:7 reserved, bits N-1:12 the root table's address.
//!
//! The tables themselves are built by [`crate::paging::PageTable::new_ept`].

use super::caps::{VmxCapabilities, ept_vpid};
use crate::addr::Frame;
use core::fmt;

/// EPTP memory type uncacheable.
pub const EPTP_MEMORY_TYPE_UC: u64 = 0;
/// EPTP memory type write-back.
pub const EPTP_MEMORY_TYPE_WB: u64 = 6;
/// Bits 5:3 for a 4-level walk (length minus one).
pub const EPTP_WALK_LENGTH_4: u64 = 3 << 3;
/// Bits 5:3 for a 5-level walk.
pub const EPTP_WALK_LENGTH_5: u64 = 4 << 3;
/// Bit 6: accessed and dirty flags.
pub const EPTP_ACCESSED_DIRTY: u64 = 1 << 6;

/// Why no EPT pointer can be built, or why a given one is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptpError {
    /// the processor cannot walk 4-level EPT tables
    NoFourLevelWalk,
    /// the processor supports neither WB nor UC for EPT paging structures
    NoMemoryType,
    /// the memory type (bits 2:0) is not one the processor supports
    UnsupportedMemoryType,
    /// the page-walk length (bits 5:3) is not one the processor supports
    UnsupportedWalkLength,
    /// A/D flags (bit 6) enabled without processor support
    AccessedDirtyUnsupported,
    /// reserved bits 11:7 are set
    ReservedBits,
    /// the root address has bits beyond the processor's physical-address width
    AddressTooWide,
}

impl EptpError {
    /// The rule broken, for messages.
    pub const fn rule(self) -> &'static str {
        match self {
            EptpError::NoFourLevelWalk => "the processor cannot walk 4-level EPT tables",
            EptpError::NoMemoryType => {
                "the processor supports neither WB nor UC for EPT paging structures"
            }
            EptpError::UnsupportedMemoryType => {
                "memory type (bits 2:0) not supported by IA32_VMX_EPT_VPID_CAP"
            }
            EptpError::UnsupportedWalkLength => {
                "page-walk length (bits 5:3) not supported by IA32_VMX_EPT_VPID_CAP"
            }
            EptpError::AccessedDirtyUnsupported => {
                "A/D flags enabled (bit 6) but not supported by IA32_VMX_EPT_VPID_CAP"
            }
            EptpError::ReservedBits => "reserved bits 11:7 set",
            EptpError::AddressTooWide => "bits beyond the physical-address width set",
        }
    }
}

impl fmt::Display for EptpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rule())
    }
}

/// The EPTP for a 4-level table rooted at `root`: write-back paging structures if supported
/// (else uncacheable), A/D flags only if asked and supported (the hypervisor does not need them;
/// enabling them makes the CPU write the tables).
pub fn ept_pointer(
    root: Frame,
    caps: &VmxCapabilities,
    accessed_dirty: bool,
    phys_addr_bits: u8,
) -> Result<u64, EptpError> {
    if !caps.has_ept_vpid(ept_vpid::PAGE_WALK_4) {
        return Err(EptpError::NoFourLevelWalk);
    }
    let memory_type = if caps.has_ept_vpid(ept_vpid::MEMORY_TYPE_WB) {
        EPTP_MEMORY_TYPE_WB
    } else if caps.has_ept_vpid(ept_vpid::MEMORY_TYPE_UC) {
        EPTP_MEMORY_TYPE_UC
    } else {
        return Err(EptpError::NoMemoryType);
    };
    let ad = if accessed_dirty && caps.has_ept_vpid(ept_vpid::ACCESSED_DIRTY) {
        EPTP_ACCESSED_DIRTY
    } else {
        0
    };
    let eptp = root.start().0 | memory_type | EPTP_WALK_LENGTH_4 | ad;
    check_ept_pointer(eptp, caps, phys_addr_bits)?;
    Ok(eptp)
}

/// The VM-entry check on an EPTP (SDM "Checks on VMX Controls": enable EPT).
pub fn check_ept_pointer(
    eptp: u64,
    caps: &VmxCapabilities,
    phys_addr_bits: u8,
) -> Result<(), EptpError> {
    let memory_type_ok = match eptp & 7 {
        EPTP_MEMORY_TYPE_UC => caps.has_ept_vpid(ept_vpid::MEMORY_TYPE_UC),
        EPTP_MEMORY_TYPE_WB => caps.has_ept_vpid(ept_vpid::MEMORY_TYPE_WB),
        _ => false,
    };
    if !memory_type_ok {
        return Err(EptpError::UnsupportedMemoryType);
    }
    let walk_ok = match eptp & (7 << 3) {
        EPTP_WALK_LENGTH_4 => caps.has_ept_vpid(ept_vpid::PAGE_WALK_4),
        EPTP_WALK_LENGTH_5 => caps.has_ept_vpid(ept_vpid::PAGE_WALK_5),
        _ => false,
    };
    if !walk_ok {
        return Err(EptpError::UnsupportedWalkLength);
    }
    if eptp & EPTP_ACCESSED_DIRTY != 0 && !caps.has_ept_vpid(ept_vpid::ACCESSED_DIRTY) {
        return Err(EptpError::AccessedDirtyUnsupported);
    }
    if eptp & (0x1f << 7) != 0 {
        return Err(EptpError::ReservedBits);
    }
    if !fits_physical_width(eptp, phys_addr_bits) {
        return Err(EptpError::AddressTooWide);
    }
    Ok(())
}

/// Whether `value` has no bit at or above `phys_addr_bits` (CPUID 0x80000008 EAX[7:0]).
pub const fn fits_physical_width(value: u64, phys_addr_bits: u8) -> bool {
    phys_addr_bits >= 64 || value >> phys_addr_bits == 0
}

/// The INVEPT / INVVPID type operand (SDM "INVEPT" and "INVVPID" instruction references).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum InvalidationType {
    /// INVVPID only: one linear address of one VPID.
    IndividualAddress = 0,
    /// Mappings of one EPTP (INVEPT) or one VPID (INVVPID).
    SingleContext = 1,
    /// Mappings of every EPTP or every VPID.
    AllContext = 2,
}

/// The narrowest INVEPT type this processor supports, or `None` without INVEPT (EPT tables
/// could then never be changed safely: the backend must refuse to use EPT).
pub const fn invept_type(caps: &VmxCapabilities) -> Option<InvalidationType> {
    if !caps.has_ept_vpid(ept_vpid::INVEPT) {
        None
    } else if caps.has_ept_vpid(ept_vpid::INVEPT_SINGLE_CONTEXT) {
        Some(InvalidationType::SingleContext)
    } else if caps.has_ept_vpid(ept_vpid::INVEPT_ALL_CONTEXT) {
        Some(InvalidationType::AllContext)
    } else {
        None
    }
}

/// The narrowest INVVPID type that drops every mapping of one VPID (used when a VPID is
/// reused for a new vCPU), or `None` without INVVPID.
pub const fn invvpid_type(caps: &VmxCapabilities) -> Option<InvalidationType> {
    if !caps.has_ept_vpid(ept_vpid::INVVPID) {
        None
    } else if caps.has_ept_vpid(ept_vpid::INVVPID_SINGLE_CONTEXT) {
        Some(InvalidationType::SingleContext)
    } else if caps.has_ept_vpid(ept_vpid::INVVPID_ALL_CONTEXT) {
        Some(InvalidationType::AllContext)
    } else {
        None
    }
}
