//! The SINIT authenticated code module: the checks the MLE guide asks the MLE loader to make
//! before GETSEC[SENTER] (header, module type, the information table, and the chipset and
//! processor ID lists against the platform). The signature is the processor's check inside
//! GETSEC; nothing here can replace it.

use super::layout::{
    AcmChipsetId, AcmHeader, AcmInfoTable, AcmProcessorId, CAP_RLP_WAKE_GETSEC, CAP_TCG2_EVENT_LOG,
    MLE_HEADER_VERSION, OS_SINIT_DATA_VERSION,
};
use super::regs::DidVid;

/// Module type of a chipset ACM.
pub const MODULE_TYPE_CHIPSET: u16 = 2;
/// Module vendor Intel.
pub const MODULE_VENDOR_INTEL: u32 = 0x8086;
/// Supported header versions (0.0 and 3.0).
pub const HEADER_VERSION_0: u32 = 0x0000_0000;
pub const HEADER_VERSION_3: u32 = 0x0003_0000;
/// The information table's UUID.
pub const ACM_INFO_UUID: [u8; 16] = [
    0xaa, 0x3a, 0xc0, 0x7f, 0xa7, 0x46, 0xdb, 0x18, 0x2e, 0xac, 0x69, 0x8f, 0x8d, 0x41, 0x7f, 0x5a,
];
/// Info-table chipset ACM types.
pub const CHIPSET_ACM_TYPE_SINIT: u8 = 1;
/// Info-table version from which the processor ID list exists.
pub const MIN_INFO_TABLE_VERSION: u8 = 4;
/// An ACM's size is a multiple of 64 bytes (GETSEC's rule).
pub const ACM_SIZE_ALIGN: u32 = 64;
/// Chipset ID flag: `revision_id` is a mask.
pub const CHIPSET_REVISION_IS_MASK: u32 = 1 << 0;
/// Longest ID list Slipway walks.
pub const MAX_ID_LIST: u32 = 64;

/// What the platform says about itself, for the ID lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformIds {
    /// TXT.DIDVID.
    pub didvid: DidVid,
    /// CPUID.1:EAX (family, model, stepping).
    pub fms: u32,
    /// IA32_PLATFORM_ID (MSR 0x17).
    pub platform_id: u64,
}

/// The facts of a checked SINIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinitInfo {
    /// The ACM's size in bytes (header `size` * 4): what SENTER gets in ECX.
    pub size: u32,
    pub header: AcmHeader,
    pub info: AcmInfoTable,
    /// The public key bytes' range in the module (for the authorities measurement).
    pub key_offset: usize,
    pub key_len: usize,
}

/// Why a SINIT module is refused; each names the field and the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmError {
    TooShort {
        len: usize,
    },
    ModuleType(u16),
    ModuleVendor(u32),
    HeaderVersion(u32),
    /// `size` * 4 is zero, not a multiple of 64, or larger than the module.
    Size {
        declared: u64,
        module: usize,
    },
    /// header_len * 4 + scratch_size * 4 + info table runs past the ACM.
    InfoTableOutside {
        offset: u64,
        size: u32,
    },
    InfoUuid,
    ChipsetAcmType(u8),
    InfoVersion(u8),
    OsSinitDataVersion {
        supported: u32,
        needed: u32,
    },
    MleHeaderVersion {
        minimum: u32,
        ours: u32,
    },
    /// SINIT lacks a capability Slipway needs.
    Capability(&'static str),
    /// An ID list's offset, count or entries lie outside the ACM.
    ListOutside {
        list: &'static str,
        offset: u32,
    },
    ListTooLong {
        list: &'static str,
        count: u32,
    },
    NoChipsetMatch(DidVid),
    NoProcessorMatch {
        fms: u32,
        platform_id: u64,
    },
    /// The ACM does not fit TXT.SINIT.SIZE.
    LargerThanSinitRegion {
        size: u32,
        region: u64,
    },
}

impl core::fmt::Display for AcmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use AcmError::*;
        match self {
            TooShort { len } => write!(f, "SINIT module: {len} bytes, shorter than an ACM header"),
            ModuleType(t) => write!(
                f,
                "SINIT AcmHeader.module_type {t}: must be 2 (chipset ACM)"
            ),
            ModuleVendor(v) => write!(f, "SINIT AcmHeader.module_vendor {v:#x}: must be 0x8086"),
            HeaderVersion(v) => write!(
                f,
                "SINIT AcmHeader.header_version {v:#x}: 0.0 or 3.0 supported"
            ),
            Size { declared, module } => write!(
                f,
                "SINIT AcmHeader.size*4 = {declared:#x}: must be nonzero, a multiple of 64 and at most the module's {module:#x} bytes"
            ),
            InfoTableOutside { offset, size } => write!(
                f,
                "SINIT information table at {offset:#x} (header_len + scratch_size) runs past the ACM's {size:#x} bytes"
            ),
            InfoUuid => write!(
                f,
                "SINIT AcmInfoTable.uuid is not the ACM information table UUID"
            ),
            ChipsetAcmType(t) => write!(
                f,
                "SINIT AcmInfoTable.chipset_acm_type {t}: must be 1 (SINIT)"
            ),
            InfoVersion(v) => write!(
                f,
                "SINIT AcmInfoTable.version {v}: at least 4 needed (processor ID list)"
            ),
            OsSinitDataVersion { supported, needed } => write!(
                f,
                "SINIT AcmInfoTable.os_sinit_data_ver {supported}: Slipway writes OsSinitData version {needed}"
            ),
            MleHeaderVersion { minimum, ours } => write!(
                f,
                "SINIT AcmInfoTable.min_mle_header_ver {minimum:#x} is above Slipway's MLE header version {ours:#x}"
            ),
            Capability(what) => write!(f, "SINIT AcmInfoTable.capabilities lack {what}"),
            ListOutside { list, offset } => {
                write!(f, "SINIT {list} at {offset:#x} lies outside the ACM")
            }
            ListTooLong { list, count } => {
                write!(f, "SINIT {list} has {count} entries (at most 64 walked)")
            }
            NoChipsetMatch(d) => write!(
                f,
                "SINIT chipset ID list has no entry for this chipset (TXT.DIDVID vendor {:#x} device {:#x} revision {:#x})",
                d.vendor_id, d.device_id, d.revision_id
            ),
            NoProcessorMatch { fms, platform_id } => write!(
                f,
                "SINIT processor ID list has no entry for this processor (CPUID.1:EAX {fms:#x}, IA32_PLATFORM_ID {platform_id:#x})"
            ),
            LargerThanSinitRegion { size, region } => write!(
                f,
                "SINIT ACM is {size:#x} bytes, TXT.SINIT.SIZE is {region:#x}"
            ),
        }
    }
}

fn list<'a>(
    acm: &'a [u8],
    offset: u32,
    entry: usize,
    name: &'static str,
) -> Result<impl Iterator<Item = &'a [u8]>, AcmError> {
    let outside = AcmError::ListOutside { list: name, offset };
    let at = offset as usize;
    let count_bytes = acm
        .get(at..at.checked_add(4).ok_or(outside)?)
        .ok_or(outside)?;
    let count = u32::from_le_bytes([
        count_bytes[0],
        count_bytes[1],
        count_bytes[2],
        count_bytes[3],
    ]);
    if count > MAX_ID_LIST {
        return Err(AcmError::ListTooLong { list: name, count });
    }
    let end = at + 4 + count as usize * entry;
    let entries = acm.get(at + 4..end).ok_or(outside)?;
    Ok(entries.chunks_exact(entry))
}

/// Checks a SINIT module on its own (header, module type and vendor, size, information table,
/// OsSinitData and MLE header versions, capabilities, key): what `cargo xtask predict` needs to
/// compute SINIT's measurements without the platform at hand.
pub fn parse_sinit(module: &[u8]) -> Result<SinitInfo, AcmError> {
    let header = AcmHeader::read(module).map_err(|_| AcmError::TooShort { len: module.len() })?;
    if header.module_type != MODULE_TYPE_CHIPSET {
        return Err(AcmError::ModuleType(header.module_type));
    }
    if header.module_vendor != MODULE_VENDOR_INTEL {
        return Err(AcmError::ModuleVendor(header.module_vendor));
    }
    if header.header_version != HEADER_VERSION_0 && header.header_version != HEADER_VERSION_3 {
        return Err(AcmError::HeaderVersion(header.header_version));
    }
    let declared = u64::from(header.size) * 4;
    if declared == 0 || declared % u64::from(ACM_SIZE_ALIGN) != 0 || declared > module.len() as u64
    {
        return Err(AcmError::Size {
            declared,
            module: module.len(),
        });
    }
    let acm = &module[..declared as usize];
    let info_offset = (u64::from(header.header_len) + u64::from(header.scratch_size)) * 4;
    let info_end = info_offset + AcmInfoTable::SIZE as u64;
    if info_end > declared || (header.header_len as usize * 4) < AcmHeader::SIZE {
        return Err(AcmError::InfoTableOutside {
            offset: info_offset,
            size: declared as u32,
        });
    }
    let info = AcmInfoTable::read(&acm[info_offset as usize..]).map_err(|_| {
        AcmError::InfoTableOutside {
            offset: info_offset,
            size: declared as u32,
        }
    })?;
    if info.uuid != ACM_INFO_UUID {
        return Err(AcmError::InfoUuid);
    }
    if info.chipset_acm_type != CHIPSET_ACM_TYPE_SINIT {
        return Err(AcmError::ChipsetAcmType(info.chipset_acm_type));
    }
    if info.version < MIN_INFO_TABLE_VERSION {
        return Err(AcmError::InfoVersion(info.version));
    }
    if info.os_sinit_data_ver < OS_SINIT_DATA_VERSION {
        return Err(AcmError::OsSinitDataVersion {
            supported: info.os_sinit_data_ver,
            needed: OS_SINIT_DATA_VERSION,
        });
    }
    if info.min_mle_header_ver > MLE_HEADER_VERSION {
        return Err(AcmError::MleHeaderVersion {
            minimum: info.min_mle_header_ver,
            ours: MLE_HEADER_VERSION,
        });
    }
    if info.capabilities & CAP_RLP_WAKE_GETSEC == 0 {
        return Err(AcmError::Capability(
            "RLP wake-up by GETSEC[WAKEUP] (bit 0)",
        ));
    }
    if info.capabilities & CAP_TCG2_EVENT_LOG == 0 {
        return Err(AcmError::Capability(
            "the TCG 2.0 crypto-agile event log (bit 9)",
        ));
    }
    let key_len = header.key_size as usize * 4;
    let key_offset = AcmHeader::SIZE;
    if key_offset + key_len > header.header_len as usize * 4 {
        return Err(AcmError::InfoTableOutside {
            offset: info_offset,
            size: declared as u32,
        });
    }
    Ok(SinitInfo {
        size: declared as u32,
        header,
        info,
        key_offset,
        key_len,
    })
}

/// Checks a SINIT module against the platform: [`parse_sinit`], then the chipset and processor
/// ID lists against `platform`.
pub fn check_sinit(module: &[u8], platform: &PlatformIds) -> Result<SinitInfo, AcmError> {
    let sinit = parse_sinit(module)?;
    let acm = &module[..sinit.size as usize];
    let info = sinit.info;
    let d = platform.didvid;
    let chipset_match = list(
        acm,
        info.chipset_id_list,
        AcmChipsetId::SIZE,
        "chipset ID list",
    )?
    .filter_map(|bytes| AcmChipsetId::read(bytes).ok())
    .any(|c| {
        let revision = if c.flags & CHIPSET_REVISION_IS_MASK != 0 {
            d.revision_id & c.revision_id != 0
        } else {
            d.revision_id == c.revision_id
        };
        c.vendor_id == d.vendor_id && c.device_id == d.device_id && revision
    });
    if !chipset_match {
        return Err(AcmError::NoChipsetMatch(d));
    }
    let cpu_match = list(
        acm,
        info.processor_id_list,
        AcmProcessorId::SIZE,
        "processor ID list",
    )?
    .filter_map(|bytes| AcmProcessorId::read(bytes).ok())
    .any(|p| {
        p.fms & p.fms_mask == platform.fms & p.fms_mask
            && p.platform_id & p.platform_mask == platform.platform_id & p.platform_mask
    });
    if !cpu_match {
        return Err(AcmError::NoProcessorMatch {
            fms: platform.fms,
            platform_id: platform.platform_id,
        });
    }
    Ok(sinit)
}

/// Checks that the ACM fits the SINIT region (TXT.SINIT.SIZE) it is copied to.
pub fn check_fits_region(info: &SinitInfo, region_size: u64) -> Result<(), AcmError> {
    if u64::from(info.size) > region_size {
        return Err(AcmError::LargerThanSinitRegion {
            size: info.size,
            region: region_size,
        });
    }
    Ok(())
}

/// Marker in the reserved bytes of a synthetic ACM ([`write_synthetic_sinit`]).
pub const SIMULATED_MARKER: &[u8; 32] = b"SLIPWAY SIMULATED SINIT, NO SIG\0";
/// Size of the synthetic ACM.
pub const SYNTHETIC_SIZE: usize = 4096;
const SYNTHETIC_HEADER_LEN: u32 = 161; // header, 256-byte key, exponent, 256-byte signature
const SYNTHETIC_SCRATCH: u32 = 143;

/// Whether a module carries [`SIMULATED_MARKER`] (a synthetic SINIT, never a real one).
pub fn is_simulated(module: &[u8]) -> bool {
    AcmHeader::read(module).is_ok_and(|h| h.reserved[..32] == SIMULATED_MARKER[..])
}

/// Writes a synthetic, unsigned SINIT for `platform` into `out` (at least [`SYNTHETIC_SIZE`]
/// bytes): a well-formed header (version 0.0), a key of `key_byte`s, an information table
/// (SINIT, version 5, OsSinitData up to 7, GETSEC wake-up and the TCG 2.0 log), one chipset ID
/// and one processor ID matching `platform`. Marked [`SIMULATED_MARKER`]. For host tests and
/// the QEMU harness's simulated SINIT; real hardware refuses it (no signature).
pub fn write_synthetic_sinit(
    out: &mut [u8],
    platform: &PlatformIds,
    key_byte: u8,
) -> Option<usize> {
    let out = out.get_mut(..SYNTHETIC_SIZE)?;
    out.fill(0);
    let mut header = AcmHeader::ZERO;
    header.module_type = MODULE_TYPE_CHIPSET;
    header.header_len = SYNTHETIC_HEADER_LEN;
    header.header_version = HEADER_VERSION_0;
    header.module_vendor = MODULE_VENDOR_INTEL;
    header.date = 0x2025_0101;
    header.size = (SYNTHETIC_SIZE / 4) as u32;
    header.key_size = 64;
    header.scratch_size = SYNTHETIC_SCRATCH;
    header.reserved[..32].copy_from_slice(SIMULATED_MARKER);
    header.write(out).ok()?;
    out[AcmHeader::SIZE..AcmHeader::SIZE + 256].fill(key_byte);
    let info_at = ((SYNTHETIC_HEADER_LEN + SYNTHETIC_SCRATCH) * 4) as usize;
    let chipset_at = info_at + AcmInfoTable::SIZE;
    let cpu_at = chipset_at + 4 + AcmChipsetId::SIZE;
    let info = AcmInfoTable {
        uuid: ACM_INFO_UUID,
        chipset_acm_type: CHIPSET_ACM_TYPE_SINIT,
        version: 5,
        length: AcmInfoTable::SIZE as u16,
        chipset_id_list: chipset_at as u32,
        os_sinit_data_ver: OS_SINIT_DATA_VERSION,
        min_mle_header_ver: 0x0002_0000,
        capabilities: CAP_RLP_WAKE_GETSEC | CAP_TCG2_EVENT_LOG,
        acm_version_revision: [0; 4],
        processor_id_list: cpu_at as u32,
        tpm_info_list: 0,
    };
    info.write(&mut out[info_at..]).ok()?;
    out[chipset_at..chipset_at + 4].copy_from_slice(&1u32.to_le_bytes());
    AcmChipsetId {
        flags: 0,
        vendor_id: platform.didvid.vendor_id,
        device_id: platform.didvid.device_id,
        revision_id: platform.didvid.revision_id,
        reserved: 0,
        extended_id: 0,
    }
    .write(&mut out[chipset_at + 4..])
    .ok()?;
    out[cpu_at..cpu_at + 4].copy_from_slice(&1u32.to_le_bytes());
    AcmProcessorId {
        fms: platform.fms,
        fms_mask: 0x0fff_3fff,
        platform_id: platform.platform_id,
        platform_mask: 0,
    }
    .write(&mut out[cpu_at + 4..])
    .ok()?;
    Some(SYNTHETIC_SIZE)
}
