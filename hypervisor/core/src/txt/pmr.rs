//! The VT-d protected memory ranges (PMRs) Slipway asks SINIT to set in OsSinitData: DMA
//! cannot reach what they cover. PMR base and size are 2 MiB granular; the low PMR lies below
//! 4 GiB. Slipway lives below 4 GiB, so its high PMR is empty.

use crate::addr::PhysRange;

pub const PMR_ALIGN: u64 = 2 << 20;
pub const FOUR_GIB: u64 = 1 << 32;

/// The four OsSinitData PMR fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pmrs {
    pub lo_base: u64,
    pub lo_size: u64,
    pub hi_base: u64,
    pub hi_size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmrError {
    /// Nothing to protect.
    Empty,
    /// A range Slipway must protect reaches above 4 GiB (the low PMR's limit).
    AboveFourGib(PhysRange),
    /// A base or size is not a multiple of 2 MiB.
    NotAligned { field: &'static str, value: u64 },
    /// A range is not inside the PMRs.
    NotCovered {
        what: &'static str,
        range: PhysRange,
    },
}

impl core::fmt::Display for PmrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PmrError::Empty => write!(f, "PMR: nothing to protect"),
            PmrError::AboveFourGib(r) => write!(
                f,
                "PMR: {:#x}..{:#x} reaches above 4 GiB, where the low PMR cannot cover it",
                r.start.0, r.end.0
            ),
            PmrError::NotAligned { field, value } => {
                write!(
                    f,
                    "PMR: OsSinitData.{field} {value:#x} is not a multiple of 2 MiB"
                )
            }
            PmrError::NotCovered { what, range } => write!(
                f,
                "PMR: {what} {:#x}..{:#x} is not inside the protected ranges",
                range.start.0, range.end.0
            ),
        }
    }
}

/// The smallest low PMR (2 MiB granular) covering every range in `protect`; empty high PMR.
pub fn compute_pmrs(protect: &[PhysRange]) -> Result<Pmrs, PmrError> {
    let mut low = u64::MAX;
    let mut high = 0u64;
    for r in protect.iter().filter(|r| !r.is_empty()) {
        if r.end.0 > FOUR_GIB {
            return Err(PmrError::AboveFourGib(*r));
        }
        low = low.min(r.start.0);
        high = high.max(r.end.0);
    }
    if low == u64::MAX {
        return Err(PmrError::Empty);
    }
    let base = low / PMR_ALIGN * PMR_ALIGN;
    let end = high.div_ceil(PMR_ALIGN) * PMR_ALIGN;
    Ok(Pmrs {
        lo_base: base,
        lo_size: end - base,
        hi_base: 0,
        hi_size: 0,
    })
}

/// SINIT's PMR rules: 2 MiB granular fields, the low PMR below 4 GiB, and `ranges` (the MLE
/// and its page tables) inside a PMR.
pub fn check_pmrs(pmrs: &Pmrs, ranges: &[(&'static str, PhysRange)]) -> Result<(), PmrError> {
    for (field, value) in [
        ("vtd_pmr_lo_base", pmrs.lo_base),
        ("vtd_pmr_lo_size", pmrs.lo_size),
        ("vtd_pmr_hi_base", pmrs.hi_base),
        ("vtd_pmr_hi_size", pmrs.hi_size),
    ] {
        if value % PMR_ALIGN != 0 {
            return Err(PmrError::NotAligned { field, value });
        }
    }
    let lo_end = pmrs.lo_base.saturating_add(pmrs.lo_size);
    if lo_end > FOUR_GIB {
        return Err(PmrError::AboveFourGib(PhysRange::new(pmrs.lo_base, lo_end)));
    }
    let hi_end = pmrs.hi_base.saturating_add(pmrs.hi_size);
    for &(what, range) in ranges {
        let in_lo = range.start.0 >= pmrs.lo_base && range.end.0 <= lo_end;
        let in_hi = pmrs.hi_size != 0 && range.start.0 >= pmrs.hi_base && range.end.0 <= hi_end;
        if !(in_lo || in_hi) {
            return Err(PmrError::NotCovered { what, range });
        }
    }
    Ok(())
}
