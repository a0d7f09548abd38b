//! The MLE loader's pre-launch sequence (MLE guide, "Measured Launch: MLE loader steps"), in the
//! guide's order, over the hardware seam [`TxtHardware`] and the MSRs ([`Msrs`]):
//!
//! 1. CPUID.SMX, GETSEC[CAPABILITIES] and GETSEC[PARAMETERS] ([`super::smx`]);
//! 2. the TXT regions from the public registers (heap, SINIT region) ([`txt_regions`]);
//! 3. the SINIT ACM given as the `sinit` boot module checked against the platform (header,
//!    info table, chipset and processor ID lists, size against GETSEC's maximum and the SINIT
//!    region) and copied to the SINIT region ([`super::acm`]);
//! 4. the MLE page tables built directly below the MLE and checked by the one rule checker
//!    ([`super::mle_pt`]);
//! 5. the low PMR over the page tables and the MLE ([`super::pmr`]);
//! 6. the event-log container SINIT appends to (crypto-agile header, [`super::heap`]);
//! 7. the MTRRs saved in OsMleData, OsMleData and OsSinitData written after BiosData;
//! 8. the MTRRs programmed for SINIT (default UC, SINIT WB) — last, just before SENTER.
//!
//! The APs are never started before the launch (they stay where the firmware left them, in
//! wait-for-SIPI), which is the state SENTER requires of them.
//!
//! [`TxtHardware`] is the one seam between the launch logic and what only Intel hardware has
//! (TXT register spaces, GETSEC, CPUID.SMX and the platform ID, the CPU's state transition): the
//! hypervisor binary implements it with the instructions and MMIO, and `launch=txt-simulated`
//! with the QEMU harness (documented there); nothing in this module branches on which.

use slipway_measure::BankSet;

use crate::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use crate::memory::PhysMemory;

use super::acm::{self, AcmError, PlatformIds, SinitInfo};
use super::heap::{self, HeapError, HeapTables};
use super::layout::{
    EventLogPointer2_1, OS_MLE_DATA_MAGIC, OS_MLE_DATA_VERSION, OS_SINIT_DATA_VERSION, OsMleData,
    OsSinitData, SLIPWAY_OS_SINIT_CAPABILITIES,
};
use super::mle_pt::{self, BuildError, CheckError, Forbidden};
use super::mtrr::{self, MtrrError, MtrrPlan};
use super::pmr::{self, PmrError, Pmrs};
use super::regs::{self, DidVid, TxtRegisters};
use super::smx::{self, Getsec, SmxError};

/// What only Intel hardware has, in one seam: the TXT register spaces, GETSEC, CPUID.SMX and
/// the platform ID, and GETSEC[SENTER] itself (with the CPU's state transition into the MLE).
pub trait TxtHardware: TxtRegisters + Getsec {
    /// CPUID.1: (EAX: family/model/stepping, ECX: feature flags incl. SMX).
    fn cpuid1(&mut self) -> (u32, u32);
    /// IA32_PLATFORM_ID (MSR 0x17).
    fn platform_id(&mut self) -> u64;
    /// GETSEC[SENTER] with the SINIT region (EBX = base, ECX = size, EDX = 0). On success the
    /// CPU never returns here: SINIT enters the MLE at its entry point. It returns only when the
    /// launch did not happen, with TXT.ERRORCODE's value (hardware instead resets the platform).
    fn senter(&mut self, sinit_base: u64, sinit_size: u32) -> u64;
}

/// The MSRs the sequence saves and programs (real on every backend: QEMU emulates MTRRs).
pub trait Msrs {
    fn read_msr(&mut self, msr: u32) -> u64;
    fn write_msr(&mut self, msr: u32, value: u64);
}

/// The TXT regions the public registers declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxtRegions {
    pub heap: PhysRange,
    pub sinit: PhysRange,
}

/// What the pre-launch stage launches.
#[derive(Clone, Copy, Debug)]
pub struct MlePlan<'a> {
    /// The MLE: physical base (page aligned) and size; linear address 0 is its first byte.
    pub mle_base: u64,
    pub mle_size: u64,
    /// Offset of the Intel MLE header in the MLE (its linear address).
    pub mle_header_offset: u64,
    /// The `sinit` boot module's bytes.
    pub sinit_module: &'a [u8],
    /// The event-log container SINIT appends to (physical, page aligned) and its size.
    pub log_base: u64,
    pub log_size: u32,
    /// The TPM's active banks, in its order (the container's header lists them).
    pub banks: BankSet,
    /// The hand-off record's physical address (recorded in OsMleData).
    pub handoff: u64,
    /// [`super::layout::LAUNCH_HARDWARE`] or [`super::layout::LAUNCH_SIMULATED`].
    pub launch: u32,
    /// The CPU's physical-address width (CPUID 0x80000008), for the MTRR masks.
    pub phys_bits: u32,
}

/// What SENTER gets, and what the sequence set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub sinit_base: u64,
    pub sinit_size: u32,
    pub sinit: SinitInfo,
    pub mle_ptab: u64,
    pub pmrs: Pmrs,
    pub log: EventLogPointer2_1,
    pub tables: HeapTables,
    pub mtrrs: MtrrPlan,
}

/// Why the pre-launch stage does not launch; each names the step, the field and the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreLaunchError {
    Smx(SmxError),
    /// A TXT register's region is unusable.
    Region {
        register: &'static str,
        rule: &'static str,
    },
    Acm(AcmError),
    /// The SINIT module is not in the boot modules.
    NoSinitModule,
    PageTableBuild(BuildError),
    PageTables(CheckError),
    Pmr(PmrError),
    Heap(HeapError),
    Mtrr(MtrrError),
    /// A memory write failed (the range is not the pre-launch stage's to write).
    Memory {
        what: &'static str,
        addr: u64,
    },
    /// The log container cannot take the header, or is not page aligned.
    LogContainer,
}

impl core::fmt::Display for PreLaunchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Smx(e) => write!(f, "TXT pre-launch: {e}"),
            Self::Region { register, rule } => write!(f, "TXT pre-launch: {register}: {rule}"),
            Self::Acm(e) => write!(f, "TXT pre-launch: {e}"),
            Self::NoSinitModule => write!(
                f,
                "TXT pre-launch: no `sinit` boot module (the SINIT ACM is given as a module named sinit)"
            ),
            Self::PageTableBuild(e) => write!(f, "TXT pre-launch: MLE page tables: {e:?}"),
            Self::PageTables(e) => write!(f, "TXT pre-launch: self-check: {e}"),
            Self::Pmr(e) => write!(f, "TXT pre-launch: {e}"),
            Self::Heap(e) => write!(f, "TXT pre-launch: {e}"),
            Self::Mtrr(e) => write!(f, "TXT pre-launch: {e}"),
            Self::Memory { what, addr } => {
                write!(f, "TXT pre-launch: cannot write {what} at {addr:#x}")
            }
            Self::LogContainer => write!(
                f,
                "TXT pre-launch: the event-log container is not page aligned or cannot hold the log header"
            ),
        }
    }
}

const FOUR_GIB: u64 = 1 << 32;

/// The heap and SINIT region from TXT.HEAP.BASE/SIZE and TXT.SINIT.BASE/SIZE: nonzero, page
/// aligned, below 4 GiB, disjoint, and clear of the MLE.
pub fn txt_regions(r: &impl TxtRegisters, mle: PhysRange) -> Result<TxtRegions, PreLaunchError> {
    let region = |register, base: u64, size: u64| {
        let err = |rule| PreLaunchError::Region { register, rule };
        if size == 0 {
            return Err(err("size is 0"));
        }
        if !base.is_multiple_of(PAGE_SIZE) {
            return Err(err("base is not page aligned"));
        }
        let end = base.checked_add(size).ok_or(err("base + size overflows"))?;
        if end > FOUR_GIB {
            return Err(err("reaches above 4 GiB"));
        }
        let range = PhysRange::new(base, end);
        if range.start.0 < mle.end.0 && mle.start.0 < range.end.0 {
            return Err(err("overlaps the MLE"));
        }
        Ok(range)
    };
    let heap = region(
        "TXT.HEAP.BASE/SIZE",
        r.read(regs::HEAP_BASE),
        r.read(regs::HEAP_SIZE),
    )?;
    let sinit = region(
        "TXT.SINIT.BASE/SIZE",
        r.read(regs::SINIT_BASE),
        r.read(regs::SINIT_SIZE),
    )?;
    if heap.start.0 < sinit.end.0 && sinit.start.0 < heap.end.0 {
        return Err(PreLaunchError::Region {
            register: "TXT.SINIT.BASE/SIZE",
            rule: "overlaps the TXT heap",
        });
    }
    Ok(TxtRegions { heap, sinit })
}

/// The pre-launch sequence up to (not including) GETSEC[SENTER]. `heap` is the TXT heap's
/// bytes (`regions.heap`), `mem` the physical memory the SINIT region, the page tables, the MLE
/// and the log container live in.
pub fn prepare(
    hw: &mut impl TxtHardware,
    msrs: &mut impl Msrs,
    mem: &mut impl PhysMemory,
    heap: &mut [u8],
    regions: &TxtRegions,
    plan: &MlePlan<'_>,
) -> Result<Prepared, PreLaunchError> {
    // 1. The processor.
    let (fms, cpuid1_ecx) = hw.cpuid1();
    smx::check_capabilities(cpuid1_ecx, hw).map_err(PreLaunchError::Smx)?;
    let params = smx::read_parameters(hw).map_err(PreLaunchError::Smx)?;
    // 3. SINIT against the platform, GETSEC's limits and the SINIT region.
    let platform = PlatformIds {
        didvid: DidVid::from_register(hw.read(regs::DIDVID)),
        fms,
        platform_id: hw.platform_id(),
    };
    let sinit = acm::check_sinit(plan.sinit_module, &platform).map_err(PreLaunchError::Acm)?;
    acm::check_fits_region(&sinit, regions.sinit.len()).map_err(PreLaunchError::Acm)?;
    smx::check_parameters(&params, sinit.size).map_err(PreLaunchError::Smx)?;
    mem.write(
        PhysAddr(regions.sinit.start.0),
        &plan.sinit_module[..sinit.size as usize],
    )
    .map_err(|_| PreLaunchError::Memory {
        what: "the SINIT ACM",
        addr: regions.sinit.start.0,
    })?;
    // 4. The MLE page tables, directly below the MLE, and the self-check by SINIT's rules.
    let ptab = plan
        .mle_base
        .checked_sub(mle_pt::tables_size(plan.mle_size))
        .ok_or(PreLaunchError::PageTableBuild(BuildError::Alignment))?;
    mle_pt::build_mle_page_tables(mem, ptab, plan.mle_base, plan.mle_size)
        .map_err(PreLaunchError::PageTableBuild)?;
    let forbidden = [
        Forbidden {
            what: "the TXT heap",
            range: regions.heap,
        },
        Forbidden {
            what: "the SINIT region",
            range: regions.sinit,
        },
    ];
    let extent = mle_pt::check_mle_page_tables(mem, ptab, plan.mle_size, &forbidden, |_, _| {})
        .map_err(PreLaunchError::PageTables)?;
    // 5. The PMR over tables and MLE.
    let protected = PhysRange::new(ptab, extent.last_page_end);
    let pmrs = pmr::compute_pmrs(&[protected]).map_err(PreLaunchError::Pmr)?;
    pmr::check_pmrs(
        &pmrs,
        &[
            (
                "the MLE",
                PhysRange::new(extent.first_page, extent.last_page_end),
            ),
            (
                "the MLE page tables",
                PhysRange::new(extent.tables_low, extent.tables_high),
            ),
        ],
    )
    .map_err(PreLaunchError::Pmr)?;
    // 6. The log container: Slipway's crypto-agile header, the rest zero.
    if !plan.log_base.is_multiple_of(PAGE_SIZE) || plan.log_size == 0 {
        return Err(PreLaunchError::LogContainer);
    }
    let mut header = [0u8; 512];
    let mut log = heap::init_log_container(&mut header, plan.log_base, plan.banks)
        .map_err(|_| PreLaunchError::LogContainer)?;
    if log.next_record_offset > plan.log_size {
        return Err(PreLaunchError::LogContainer);
    }
    log.allocated_size = plan.log_size;
    let memory = |what| PreLaunchError::Memory {
        what,
        addr: plan.log_base,
    };
    mem.zero(PhysAddr(plan.log_base), u64::from(plan.log_size))
        .map_err(|_| memory("the event-log container"))?;
    mem.write(
        PhysAddr(plan.log_base),
        &header[..log.next_record_offset as usize],
    )
    .map_err(|_| memory("the event-log container"))?;
    // 7. The MTRRs saved, and the heap tables.
    let var_count = msrs.read_msr(mtrr::IA32_MTRRCAP) & 0xff;
    let mtrrs = mtrr::sinit_plan(
        regions.sinit.start.0,
        u64::from(sinit.size),
        var_count,
        plan.phys_bits,
    )
    .map_err(PreLaunchError::Mtrr)?;
    let mut os_mle = OsMleData::ZERO;
    os_mle.magic = OS_MLE_DATA_MAGIC;
    os_mle.version = OS_MLE_DATA_VERSION;
    os_mle.launch = plan.launch;
    os_mle.saved_mtrr_def_type = msrs.read_msr(mtrr::IA32_MTRR_DEF_TYPE);
    os_mle.saved_misc_enable = msrs.read_msr(mtrr::IA32_MISC_ENABLE);
    os_mle.saved_var_mtrr_count = var_count as u32;
    let mut saved = [0u64; 16];
    for i in 0..var_count as usize {
        let base = mtrr::IA32_MTRR_PHYSBASE0 + 2 * i as u32;
        saved[2 * i] = msrs.read_msr(base);
        saved[2 * i + 1] = msrs.read_msr(base + 1);
    }
    os_mle.saved_var_mtrrs = saved;
    os_mle.mle_base = plan.mle_base;
    os_mle.mle_size = plan.mle_size;
    os_mle.mle_ptab = ptab;
    os_mle.event_log_base = plan.log_base;
    os_mle.event_log_size = plan.log_size;
    os_mle.handoff = plan.handoff;
    os_mle.sinit_base = regions.sinit.start.0;
    os_mle.sinit_size = u64::from(sinit.size);
    let mut os_sinit = OsSinitData::ZERO;
    os_sinit.version = OS_SINIT_DATA_VERSION;
    os_sinit.flags = 0;
    os_sinit.mle_ptab = ptab;
    os_sinit.mle_size = plan.mle_size;
    os_sinit.mle_hdr_base = plan.mle_header_offset;
    os_sinit.vtd_pmr_lo_base = pmrs.lo_base;
    os_sinit.vtd_pmr_lo_size = pmrs.lo_size;
    os_sinit.vtd_pmr_hi_base = pmrs.hi_base;
    os_sinit.vtd_pmr_hi_size = pmrs.hi_size;
    os_sinit.capabilities = SLIPWAY_OS_SINIT_CAPABILITIES;
    let tables =
        heap::write_os_tables(heap, &os_mle, &os_sinit, &log).map_err(PreLaunchError::Heap)?;
    // 8. The MTRRs for SINIT: MTRRs off, variable MTRRs, then the default type (UC, enabled).
    msrs.write_msr(mtrr::IA32_MTRR_DEF_TYPE, 0);
    for (i, v) in mtrrs.vars.iter().take(var_count as usize).enumerate() {
        let base = mtrr::IA32_MTRR_PHYSBASE0 + 2 * i as u32;
        msrs.write_msr(base, v.base);
        msrs.write_msr(base + 1, v.mask);
    }
    msrs.write_msr(mtrr::IA32_MTRR_DEF_TYPE, mtrrs.def_type);
    Ok(Prepared {
        sinit_base: regions.sinit.start.0,
        sinit_size: sinit.size,
        sinit,
        mle_ptab: ptab,
        pmrs,
        log,
        tables,
        mtrrs,
    })
}

/// Restores the MTRRs and IA32_MISC_ENABLE saved in OsMleData (post-launch), after checking
/// them ([`mtrr::check_saved`]): SINIT left its own.
pub fn restore_mtrrs(
    msrs: &mut impl Msrs,
    os_mle: &OsMleData,
    phys_bits: u32,
) -> Result<(), MtrrError> {
    let var_count = msrs.read_msr(mtrr::IA32_MTRRCAP) & 0xff;
    let saved = os_mle.saved_var_mtrrs;
    let count = (os_mle.saved_var_mtrr_count as usize).min(mtrr::MAX_VAR_MTRRS);
    if os_mle.saved_var_mtrr_count as usize > mtrr::MAX_VAR_MTRRS {
        return Err(MtrrError::VarCount(u64::from(os_mle.saved_var_mtrr_count)));
    }
    let mut vars = [mtrr::VarMtrr::default(); mtrr::MAX_VAR_MTRRS];
    for (i, v) in vars.iter_mut().enumerate().take(count) {
        *v = mtrr::VarMtrr {
            base: saved[2 * i],
            mask: saved[2 * i + 1],
        };
    }
    mtrr::check_saved(
        os_mle.saved_mtrr_def_type,
        &vars[..count],
        var_count,
        phys_bits,
    )?;
    msrs.write_msr(mtrr::IA32_MTRR_DEF_TYPE, 0);
    for (i, v) in vars[..count].iter().enumerate() {
        let base = mtrr::IA32_MTRR_PHYSBASE0 + 2 * i as u32;
        msrs.write_msr(base, v.base);
        msrs.write_msr(base + 1, v.mask);
    }
    msrs.write_msr(mtrr::IA32_MTRR_DEF_TYPE, os_mle.saved_mtrr_def_type);
    msrs.write_msr(mtrr::IA32_MISC_ENABLE, os_mle.saved_misc_enable);
    Ok(())
}
