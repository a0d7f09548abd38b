//! MTRRs around SENTER (MLE guide, "MTRR setup prior to GETSEC[SENTER]"): SINIT must run in
//! write-back memory with everything else uncacheable. Pre-launch, Slipway saves the MTRRs in
//! OsMleData and programs: default type UC with fixed MTRRs off, and variable MTRRs covering
//! exactly the SINIT region as WB. Post-launch it checks the saved values and restores them.

/// MSRs.
pub const IA32_MTRRCAP: u32 = 0xFE;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
pub const IA32_MISC_ENABLE: u32 = 0x1A0;
pub const IA32_PLATFORM_ID: u32 = 0x17;

/// IA32_MTRR_DEF_TYPE bits.
pub const DEF_TYPE_ENABLE: u64 = 1 << 11;
pub const DEF_TYPE_FIXED_ENABLE: u64 = 1 << 10;
pub const MASK_VALID: u64 = 1 << 11;
pub const TYPE_UC: u64 = 0;
pub const TYPE_WB: u64 = 6;
/// Memory types an MTRR may hold (UC, WC, WT, WP, WB).
pub const VALID_TYPES: [u64; 5] = [0, 1, 4, 5, 6];
/// Variable MTRRs Slipway manages (OsMleData saves this many).
pub const MAX_VAR_MTRRS: usize = super::layout::MAX_SAVED_VAR_MTRRS;

/// One variable MTRR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VarMtrr {
    pub base: u64,
    pub mask: u64,
}

/// The MTRR programming for SENTER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtrrPlan {
    pub def_type: u64,
    /// Every variable MTRR the CPU has, in order (unused ones invalid).
    pub vars: [VarMtrr; MAX_VAR_MTRRS],
    pub used: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtrrError {
    /// IA32_MTRRCAP reports fewer or more variable MTRRs than Slipway handles.
    VarCount(u64),
    /// The SINIT region is not 4 KiB aligned or empty.
    Region { base: u64, size: u64 },
    /// Covering SINIT needs more variable MTRRs than the CPU has.
    TooFewMtrrs { needed: usize, have: usize },
    /// A saved MTRR is malformed.
    Saved { index: usize, rule: &'static str },
}

impl core::fmt::Display for MtrrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MtrrError::VarCount(n) => write!(
                f,
                "MTRR: IA32_MTRRCAP.VCNT {n}: Slipway handles 1 to {MAX_VAR_MTRRS} variable MTRRs"
            ),
            MtrrError::Region { base, size } => {
                write!(
                    f,
                    "MTRR: SINIT region {base:#x}+{size:#x} is not 4 KiB aligned or is empty"
                )
            }
            MtrrError::TooFewMtrrs { needed, have } => write!(
                f,
                "MTRR: covering SINIT as WB needs {needed} variable MTRRs, the CPU has {have}"
            ),
            MtrrError::Saved { index, rule } => {
                write!(f, "MTRR: saved variable MTRR {index} (OsMleData): {rule}")
            }
        }
    }
}

fn phys_mask(phys_bits: u32) -> u64 {
    (1u64 << phys_bits.min(52)) - 1
}

/// `[base, end)` as naturally aligned power-of-two pieces, largest first.
fn pieces(base: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut at = base;
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let mut chunk = if at == 0 {
            1u64 << 62
        } else {
            1u64 << at.trailing_zeros()
        };
        while chunk > end - at {
            chunk >>= 1;
        }
        let piece = (at, chunk);
        at += chunk;
        Some(piece)
    })
}

/// The MTRRs for SENTER: default UC (fixed MTRRs off), SINIT `[base, base+size)` WB in
/// power-of-two, naturally aligned pieces, every other variable MTRR invalid.
pub fn sinit_plan(
    base: u64,
    size: u64,
    var_count: u64,
    phys_bits: u32,
) -> Result<MtrrPlan, MtrrError> {
    if var_count == 0 || var_count > MAX_VAR_MTRRS as u64 {
        return Err(MtrrError::VarCount(var_count));
    }
    if size == 0 || !base.is_multiple_of(4096) {
        return Err(MtrrError::Region { base, size });
    }
    let end = base + size.div_ceil(4096) * 4096;
    let needed = pieces(base, end).count();
    if needed > var_count as usize {
        return Err(MtrrError::TooFewMtrrs {
            needed,
            have: var_count as usize,
        });
    }
    let mut plan = MtrrPlan {
        def_type: DEF_TYPE_ENABLE | TYPE_UC,
        vars: [VarMtrr::default(); MAX_VAR_MTRRS],
        used: 0,
    };
    for (at, chunk) in pieces(base, end) {
        plan.vars[plan.used] = VarMtrr {
            base: at | TYPE_WB,
            mask: (!(chunk - 1) & phys_mask(phys_bits)) | MASK_VALID,
        };
        plan.used += 1;
    }
    Ok(plan)
}

/// Checks saved MTRRs before they are restored post-launch: count within the CPU's, every valid
/// MTRR with a known type, a contiguous mask and a base aligned to it, no bits above MAXPHYADDR.
pub fn check_saved(
    def_type: u64,
    vars: &[VarMtrr],
    var_count: u64,
    phys_bits: u32,
) -> Result<(), MtrrError> {
    if vars.len() as u64 > var_count {
        return Err(MtrrError::VarCount(vars.len() as u64));
    }
    if !VALID_TYPES.contains(&(def_type & 0xff)) {
        return Err(MtrrError::Saved {
            index: usize::MAX,
            rule: "default type is not UC, WC, WT, WP or WB",
        });
    }
    let limit = phys_mask(phys_bits);
    for (index, v) in vars.iter().enumerate() {
        if v.mask & MASK_VALID == 0 {
            continue;
        }
        let err = |rule| MtrrError::Saved { index, rule };
        if !VALID_TYPES.contains(&(v.base & 0xff)) {
            return Err(err("type is not UC, WC, WT, WP or WB"));
        }
        let mask = v.mask & !0xfff;
        let base = v.base & !0xfff;
        if mask & !limit != 0 || base & !limit != 0 {
            return Err(err("bits above MAXPHYADDR"));
        }
        // Contiguous: the mask's ones run from its lowest one up to MAXPHYADDR.
        let low = mask & mask.wrapping_neg();
        if low == 0 || (mask | (low - 1)) != limit {
            return Err(err("mask is not contiguous"));
        }
        if base & !mask != 0 {
            return Err(err("base is not aligned to its size"));
        }
    }
    Ok(())
}
