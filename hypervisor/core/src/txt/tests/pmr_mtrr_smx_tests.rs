use crate::addr::PhysRange;
use crate::txt::mtrr::*;
use crate::txt::pmr::*;
use crate::txt::smx::*;

#[test]
fn the_low_pmr_covers_every_range_at_2_mib_granularity() {
    let pmrs = compute_pmrs(&[
        PhysRange::new(0x1f_c000, 0x20_0000),
        PhysRange::new(0x20_0000, 0x52_3000),
    ])
    .unwrap();
    assert_eq!(
        pmrs,
        Pmrs {
            lo_base: 0,
            lo_size: 0x60_0000,
            hi_base: 0,
            hi_size: 0
        }
    );
    assert!(check_pmrs(&pmrs, &[("MLE", PhysRange::new(0x20_0000, 0x52_3000))]).is_ok());
    assert!(matches!(
        compute_pmrs(&[PhysRange::new(0xffff_f000, 0x1_0000_1000)]),
        Err(PmrError::AboveFourGib(_))
    ));
    assert_eq!(compute_pmrs(&[]), Err(PmrError::Empty));
}

#[test]
fn pmr_checks_name_misalignment_and_uncovered_ranges() {
    let bad = Pmrs {
        lo_base: 0x10_0000,
        lo_size: 0x40_0000,
        hi_base: 0,
        hi_size: 0,
    };
    assert_eq!(
        check_pmrs(&bad, &[]),
        Err(PmrError::NotAligned {
            field: "vtd_pmr_lo_base",
            value: 0x10_0000
        })
    );
    let small = Pmrs {
        lo_base: 0,
        lo_size: 0x20_0000,
        hi_base: 0,
        hi_size: 0,
    };
    let mle = PhysRange::new(0x20_0000, 0x30_0000);
    assert_eq!(
        check_pmrs(&small, &[("MLE", mle)]),
        Err(PmrError::NotCovered {
            what: "MLE",
            range: mle
        })
    );
}

#[test]
fn sinit_region_is_write_back_in_aligned_power_of_two_mtrrs_and_the_rest_uncacheable() {
    // 0x7bf0_0000 + 0x30000: a 128 KiB and a 64 KiB piece.
    let plan = sinit_plan(0x7bf0_0000, 0x3_0000, 8, 39).unwrap();
    assert_eq!(plan.def_type, DEF_TYPE_ENABLE | TYPE_UC);
    assert_eq!(plan.used, 2);
    assert_eq!(
        plan.vars[0],
        VarMtrr {
            base: 0x7bf0_0000 | TYPE_WB,
            mask: 0x7f_fffe_0000 | MASK_VALID
        }
    );
    assert_eq!(
        plan.vars[1],
        VarMtrr {
            base: 0x7bf2_0000 | TYPE_WB,
            mask: 0x7f_ffff_0000 | MASK_VALID
        }
    );
    assert!(plan.vars[2..].iter().all(|v| v.mask & MASK_VALID == 0));
    // The plan itself passes the saved-MTRR checks.
    assert!(check_saved(plan.def_type, &plan.vars, 8, 39).is_ok());
    assert_eq!(
        sinit_plan(0x7bf0_1000, 0x1_f000, 2, 39),
        Err(MtrrError::TooFewMtrrs { needed: 5, have: 2 })
    );
    assert_eq!(
        sinit_plan(0x7bf0_0800, 0x1000, 8, 39),
        Err(MtrrError::Region {
            base: 0x7bf0_0800,
            size: 0x1000
        })
    );
    assert_eq!(sinit_plan(0, 0x1000, 0, 39), Err(MtrrError::VarCount(0)));
}

#[test]
fn malformed_saved_mtrrs_are_refused_before_restoring() {
    let ok = VarMtrr {
        base: 0x8000_0000 | TYPE_UC,
        mask: 0x7f_8000_0000 | MASK_VALID,
    };
    assert!(check_saved(DEF_TYPE_ENABLE | TYPE_WB, &[ok], 8, 39).is_ok());
    let holey = VarMtrr {
        base: 0x8000_0000,
        mask: 0x7f_0800_0000 | MASK_VALID,
    };
    assert!(
        matches!(check_saved(6, &[holey], 8, 39), Err(MtrrError::Saved { index: 0, rule }) if rule.contains("contiguous"))
    );
    let bad_type = VarMtrr {
        base: 0x8000_0002,
        mask: ok.mask,
    };
    assert!(
        matches!(check_saved(6, &[bad_type], 8, 39), Err(MtrrError::Saved { rule, .. }) if rule.contains("type"))
    );
    let unaligned = VarMtrr {
        base: 0x8010_0006,
        mask: ok.mask,
    };
    assert!(
        matches!(check_saved(6, &[unaligned], 8, 39), Err(MtrrError::Saved { rule, .. }) if rule.contains("aligned"))
    );
    assert!(check_saved(6, &[ok; 3], 2, 39).is_err());
}

struct FakeGetsec {
    caps: u32,
    params: &'static [(u32, u32, u32)],
}

impl Getsec for FakeGetsec {
    fn capabilities(&mut self, _index: u32) -> u32 {
        self.caps
    }
    fn parameters(&mut self, index: u32) -> (u32, u32, u32) {
        self.params
            .get(index as usize)
            .copied()
            .unwrap_or((0, 0, 0))
    }
}

const ALL_CAPS: u32 =
    CAP_CHIPSET_PRESENT | CAP_SENTER | CAP_SEXIT | CAP_PARAMETERS | CAP_WAKEUP | CAP_SMCTRL;

#[test]
fn getsec_capabilities_need_smx_and_every_leaf_slipway_uses() {
    let mut g = FakeGetsec {
        caps: ALL_CAPS,
        params: &[],
    };
    assert_eq!(check_capabilities(CPUID1_ECX_SMX, &mut g), Ok(ALL_CAPS));
    assert_eq!(check_capabilities(0, &mut g), Err(SmxError::NoSmx));
    let mut g = FakeGetsec {
        caps: ALL_CAPS & !CAP_WAKEUP,
        params: &[],
    };
    assert!(
        matches!(check_capabilities(CPUID1_ECX_SMX, &mut g), Err(SmxError::MissingCapability(w)) if w.starts_with("WAKEUP"))
    );
}

#[test]
fn getsec_parameters_are_decoded_and_checked_against_the_sinit() {
    let mut g = FakeGetsec {
        caps: ALL_CAPS,
        params: &[
            (1, 0, 0),
            (2 | 0x4_0000, 0, 0),
            (3 | ACM_MEMORY_TYPE_WB | 0x100, 0, 0),
            (4, 0, 0),
        ],
    };
    let p = read_parameters(&mut g).unwrap();
    assert_eq!(
        (p.max_acm_size, p.acm_memory_types, p.senter_controls),
        (0x4_0000, ACM_MEMORY_TYPE_WB | 0x100, 0)
    );
    assert!(check_parameters(&p, 0x1_0000).is_ok());
    assert_eq!(
        check_parameters(&p, 0x8_0000),
        Err(SmxError::AcmTooLarge {
            size: 0x8_0000,
            max: 0x4_0000
        })
    );
    // Without parameters: the SDM's defaults (32 KiB, UC only) refuse a WB SINIT.
    let mut g = FakeGetsec {
        caps: ALL_CAPS,
        params: &[],
    };
    let p = read_parameters(&mut g).unwrap();
    assert!(matches!(
        check_parameters(&p, 0x1000),
        Err(SmxError::WriteBackNotSupported { .. })
    ));
    let mut g = FakeGetsec {
        caps: ALL_CAPS,
        params: &[(9, 0, 0)],
    };
    assert_eq!(
        read_parameters(&mut g),
        Err(SmxError::UnknownParameterType { index: 0, kind: 9 })
    );
    let mut g = FakeGetsec {
        caps: ALL_CAPS,
        params: &[(3 | ACM_MEMORY_TYPE_WB, 0, 0), (4 | 0x100, 0, 0)],
    };
    let p = read_parameters(&mut g).unwrap();
    assert_eq!(
        check_parameters(&p, 0x1000),
        Err(SmxError::SenterControls(1))
    );
}
