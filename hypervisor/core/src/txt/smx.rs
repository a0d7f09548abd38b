//! GETSEC[CAPABILITIES] and GETSEC[PARAMETERS] (Intel SDM vol. 2, chapter "Safer Mode
//! Extensions Reference"): decoding and the checks the MLE guide asks for before SENTER.

/// GETSEC leaves.
pub const LEAF_CAPABILITIES: u32 = 0;
pub const LEAF_SENTER: u32 = 4;
pub const LEAF_SEXIT: u32 = 5;
pub const LEAF_PARAMETERS: u32 = 6;
pub const LEAF_SMCTRL: u32 = 7;
pub const LEAF_WAKEUP: u32 = 8;

/// GETSEC[CAPABILITIES] (index 0) result bits.
pub const CAP_CHIPSET_PRESENT: u32 = 1 << 0;
pub const CAP_ENTERACCS: u32 = 1 << 2;
pub const CAP_EXITAC: u32 = 1 << 3;
pub const CAP_SENTER: u32 = 1 << 4;
pub const CAP_SEXIT: u32 = 1 << 5;
pub const CAP_PARAMETERS: u32 = 1 << 6;
pub const CAP_SMCTRL: u32 = 1 << 7;
pub const CAP_WAKEUP: u32 = 1 << 8;

/// The capabilities Slipway's launch uses, with the name each check reports.
pub const REQUIRED_CAPABILITIES: &[(u32, &str)] = &[
    (CAP_CHIPSET_PRESENT, "chipset present (TXT-capable chipset)"),
    (CAP_SENTER, "SENTER"),
    (CAP_SEXIT, "SEXIT"),
    (CAP_PARAMETERS, "PARAMETERS"),
    (CAP_WAKEUP, "WAKEUP (the APs are woken with GETSEC[WAKEUP])"),
];

/// CPUID.1:ECX bit 6: SMX.
pub const CPUID1_ECX_SMX: u32 = 1 << 6;
/// CR4 bit 14: SMXE (must be set before GETSEC).
pub const CR4_SMXE: u64 = 1 << 14;

/// Memory-type bits of the ACM memory-types parameter: bit (8 + MTRR type).
pub const ACM_MEMORY_TYPE_WB: u32 = 1 << (8 + 6);
/// Defaults when GETSEC[PARAMETERS] does not report a value.
pub const DEFAULT_MAX_ACM_SIZE: u32 = 0x8000;
pub const DEFAULT_ACM_MEMORY_TYPES: u32 = 1 << 8; // UC only
/// Parameter indices are scanned up to this many.
pub const MAX_PARAMETER_INDICES: u32 = 32;

/// The processor's GETSEC instruction. The hypervisor binary implements it with the instruction;
/// the simulated launch with fixed, documented values (never a branch in the launch logic).
pub trait Getsec {
    /// GETSEC[CAPABILITIES] with EBX = `index`.
    fn capabilities(&mut self, index: u32) -> u32;
    /// GETSEC[PARAMETERS] with EBX = `index`: (EAX, EBX, ECX).
    fn parameters(&mut self, index: u32) -> (u32, u32, u32);
}

/// GETSEC[PARAMETERS], collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmxParameters {
    pub max_acm_size: u32,
    pub acm_memory_types: u32,
    pub senter_controls: u32,
    pub txt_extensions: u32,
    /// The first supported ACM version (mask, version), if reported.
    pub acm_version: Option<(u32, u32)>,
}

/// Why the processor cannot launch Slipway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmxError {
    /// CPUID.1:ECX.SMX is clear.
    NoSmx,
    /// GETSEC[CAPABILITIES] lacks a leaf Slipway needs.
    MissingCapability(&'static str),
    /// GETSEC[PARAMETERS] reported a type outside 0-5 (the SDM's list).
    UnknownParameterType { index: u32, kind: u32 },
    /// The SINIT ACM is larger than GETSEC[PARAMETERS]' maximum ACM size.
    AcmTooLarge { size: u32, max: u32 },
    /// The processor cannot run an ACM in write-back memory (Slipway maps SINIT WB).
    WriteBackNotSupported { types: u32 },
    /// SENTER controls are nonzero; Slipway passes EDX = 0 and needs none.
    SenterControls(u32),
}

impl core::fmt::Display for SmxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmxError::NoSmx => write!(
                f,
                "CPUID.1:ECX.SMX is clear: the processor has no SMX (GETSEC)"
            ),
            SmxError::MissingCapability(what) => {
                write!(f, "GETSEC[CAPABILITIES] lacks {what}")
            }
            SmxError::UnknownParameterType { index, kind } => write!(
                f,
                "GETSEC[PARAMETERS] index {index} reports unknown type {kind}"
            ),
            SmxError::AcmTooLarge { size, max } => write!(
                f,
                "SINIT ACM is {size:#x} bytes, GETSEC[PARAMETERS] allows at most {max:#x}"
            ),
            SmxError::WriteBackNotSupported { types } => write!(
                f,
                "GETSEC[PARAMETERS] ACM memory types {types:#x} lack write-back"
            ),
            SmxError::SenterControls(c) => {
                write!(
                    f,
                    "GETSEC[PARAMETERS] SENTER controls {c:#x} are not supported"
                )
            }
        }
    }
}

/// Checks CPUID.1:ECX.SMX and GETSEC[CAPABILITIES] (index 0).
pub fn check_capabilities(cpuid1_ecx: u32, getsec: &mut impl Getsec) -> Result<u32, SmxError> {
    if cpuid1_ecx & CPUID1_ECX_SMX == 0 {
        return Err(SmxError::NoSmx);
    }
    let caps = getsec.capabilities(0);
    for &(bit, name) in REQUIRED_CAPABILITIES {
        if caps & bit == 0 {
            return Err(SmxError::MissingCapability(name));
        }
    }
    Ok(caps)
}

/// Reads GETSEC[PARAMETERS] from index 0 until the null type.
pub fn read_parameters(getsec: &mut impl Getsec) -> Result<SmxParameters, SmxError> {
    let mut params = SmxParameters {
        max_acm_size: DEFAULT_MAX_ACM_SIZE,
        acm_memory_types: DEFAULT_ACM_MEMORY_TYPES,
        senter_controls: 0,
        txt_extensions: 0,
        acm_version: None,
    };
    for index in 0..MAX_PARAMETER_INDICES {
        let (eax, ebx, ecx) = getsec.parameters(index);
        match eax & 0x1f {
            0 => break,
            1 => {
                params.acm_version.get_or_insert((ebx, ecx));
            }
            2 => params.max_acm_size = eax & !0x1f,
            3 => params.acm_memory_types = eax & !0xff,
            4 => params.senter_controls = (eax >> 8) & 0x7f,
            5 => params.txt_extensions = eax & 0x60,
            kind => return Err(SmxError::UnknownParameterType { index, kind }),
        }
    }
    Ok(params)
}

/// The checks of the parameters against the SINIT Slipway launches.
pub fn check_parameters(params: &SmxParameters, acm_size: u32) -> Result<(), SmxError> {
    if acm_size > params.max_acm_size {
        return Err(SmxError::AcmTooLarge {
            size: acm_size,
            max: params.max_acm_size,
        });
    }
    if params.acm_memory_types & ACM_MEMORY_TYPE_WB == 0 {
        return Err(SmxError::WriteBackNotSupported {
            types: params.acm_memory_types,
        });
    }
    if params.senter_controls != 0 {
        return Err(SmxError::SenterControls(params.senter_controls));
    }
    Ok(())
}
