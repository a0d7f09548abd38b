//! Intel TXT in the hypervisor binary: the MLE loader's launch (pre-launch, up to
//! GETSEC[SENTER]) and the MLE's post-launch checks, over ONE hardware seam, [`TxtSeam`]
//! (hv-core's `TxtHardware` plus what only differs between hardware and simulation). The
//! launch logic here never asks which implementation it runs on.
//!
//! - [`SimulatedTxt`] is the seam of `launch=txt-simulated` (SIMULATED, QEMU + the harness,
//!   `docs/measurement.md` "Intel TXT"): the TXT public registers are a page of RAM at
//!   `slipway_protocol::platform::SIMULATED_TXT_REGS` that it fills as BIOS and chipset would,
//!   GETSEC answers are hv-core's documented stand-ins (`txt::simulated`), and SENTER is a
//!   `SLIPWAY-TXT-SENTER` request on debugcon: the harness plays CPU and SINIT, and the seam
//!   then makes the CPU's transition into the MLE entry point (32-bit protected mode, paging
//!   off, EBX = entry, ECX = MLE page tables). SINIT's own PCR17/18 extends after the hash
//!   start are sent by this seam at locality 2 from SINIT's events (QEMU gives the guest no
//!   locality 4 and the harness no TPM command path).
//! - The hardware seam (GETSEC, the TXT MMIO spaces at 0xFED30000/0xFED20000) is not written:
//!   nothing here can execute GETSEC, so `launch=txt` refuses (`launch.rs`).

use slipway_hv_core::addr::PhysRange;
use slipway_hv_core::txt::heap;
use slipway_hv_core::txt::layout::{
    EVTYPE_HASH_START, EVTYPE_MLE_HASH, LAUNCH_SIMULATED, OsMleData,
};
use slipway_hv_core::txt::post::{self, PostLaunchError};
use slipway_hv_core::txt::prelaunch::{self, Msrs, TxtHardware};
use slipway_hv_core::txt::regs::{self, TxtRegisters};
use slipway_hv_core::txt::simulated::{self, FaultTargets, SimulatedFault};
use slipway_hv_core::txt::smx::{self, Getsec};
use slipway_measure::log::{EventLog, LogWriter};
use slipway_measure::pcr::InitialState;
use slipway_measure::{BankSet, MultiHasher};
use slipway_protocol::platform::{
    SIMULATED_TXT_ENTRY, SIMULATED_TXT_HEAP, SIMULATED_TXT_HEAP_SIZE, SIMULATED_TXT_REGS,
    SIMULATED_TXT_SINIT, SIMULATED_TXT_SINIT_SIZE, TXT_SENTER_REQUEST_PREFIX,
};
use slipway_tpm::PcrMask;

use crate::launch::LaunchHandoff;
use crate::measurement::LOG_CAPACITY;
use crate::physmem::DirectMap;
use crate::tpm::HvTpm;

/// The one seam between the TXT launch logic and what differs between Intel hardware and the
/// simulation. Implemented by [`SimulatedTxt`] only in this version.
pub trait TxtSeam: TxtHardware {
    /// What OsMleData records as the launch (`LAUNCH_HARDWARE` / `LAUNCH_SIMULATED`).
    const LAUNCH: u32;
    /// The name the console prints (`txt`, `txt-simulated`).
    const NAME: &'static str;
    /// The launch kind (PCR19's event and what domB is told).
    const KIND: slipway_protocol::v1::LaunchKind;
    /// SINIT's extends after its hash start (PCR17 details, PCR18 authorities), post-launch.
    /// Hardware: SINIT sent them itself (nothing to do). Simulated: sent here at locality 2 from
    /// SINIT's events in `sinit_log`. Returns how many extends it sent.
    fn complete_sinit_extends(
        &mut self,
        tpm: &mut HvTpm,
        banks: &BankSet,
        sinit_log: &[u8],
    ) -> Result<u32, &'static str>;
}

/// The event-log container SINIT appends to: kept across the launch (not zeroed by the entry
/// stubs), page aligned, the size of the log the hypervisor keeps.
#[repr(C, align(4096))]
struct Container([u8; LOG_CAPACITY]);

#[unsafe(link_section = ".handoff")]
static mut SINIT_LOG_CONTAINER: Container = Container([0; LOG_CAPACITY]);

fn container_range() -> PhysRange {
    let start = core::ptr::addr_of!(SINIT_LOG_CONTAINER) as u64;
    PhysRange::new(start, start + LOG_CAPACITY as u64)
}

/// The MSRs, real on every backend (QEMU emulates MTRRs and MISC_ENABLE).
pub struct HwMsrs;

impl Msrs for HwMsrs {
    fn read_msr(&mut self, msr: u32) -> u64 {
        // SAFETY: only the architectural MSRs of the TXT sequence are read (MTRRCAP, MTRR
        // def type and variable pairs below MTRRCAP's count, MISC_ENABLE).
        unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
    }
    fn write_msr(&mut self, msr: u32, value: u64) {
        // SAFETY: the sequence writes the MTRRs (checked plans: valid types, masks within the
        // physical-address width) and MISC_ENABLE's saved value, on the boot CPU alone with
        // interrupts off, as the MLE guide prescribes.
        unsafe { x86_64::registers::model_specific::Msr::new(msr).write(value) }
    }
}

fn phys_bits() -> u32 {
    let leaf = core::arch::x86_64::__cpuid(0x8000_0008);
    leaf.eax & 0xff
}

/// Whether `range` lies in usable RAM of the firmware map and clear of the boot modules and the
/// image: the pre-launch stage writes it.
fn writable_ram(handoff: &LaunchHandoff, range: PhysRange) -> Result<(), &'static str> {
    let regions = &handoff.regions[..(handoff.region_count as usize).min(handoff.regions.len())];
    let usable = regions.iter().any(|r| {
        r.kind == crate::launch::RegionKind::Usable as u32
            && r.base <= range.start.0
            && range.end.0 <= r.base.saturating_add(r.len)
    });
    if !usable {
        return Err("not inside usable RAM of the firmware memory map");
    }
    let overlaps = |a: PhysRange, b: PhysRange| a.start.0 < b.end.0 && b.start.0 < a.end.0;
    let modules = &handoff.modules[..(handoff.module_count as usize).min(handoff.modules.len())];
    if modules
        .iter()
        .any(|m| overlaps(range, PhysRange::new(m.start, m.end.max(m.start))))
    {
        return Err("overlaps a boot module");
    }
    if overlaps(range, crate::address_space::image_range()) {
        return Err("overlaps the hypervisor image");
    }
    Ok(())
}

/// The bytes of a physical range the caller checked (identity-mapped, not aliased).
///
/// # Safety
/// `range` must be identity-mapped RAM that nothing else references while the slice lives.
unsafe fn phys_slice_mut(range: PhysRange) -> &'static mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts_mut(range.start.0 as *mut u8, range.len() as usize) }
}

/// Pre-launch: the MLE loader's sequence over `seam`, then GETSEC[SENTER]. Returns only when no
/// launch happened (the reason printed, the MTRRs restored); the caller then continues
/// unmeasured. `fault` is the test-only `txt_fault=` knob (simulated launches only).
pub fn launch<S: TxtSeam>(
    seam: &mut S,
    handoff: &'static LaunchHandoff,
    fault: Option<SimulatedFault>,
) {
    let name = S::NAME;
    let (mle_start, mle_len) = crate::tpm::with_measured_region(|start, r| (start, r.len() as u64));
    let mle = PhysRange::new(mle_start, mle_start + mle_len);
    let regions = match prelaunch::txt_regions(seam, mle) {
        Ok(r) => r,
        Err(e) => return crate::hvprintln!("ERROR: launch backend `{name}`: {e}"),
    };
    let ptab = mle_start - slipway_hv_core::txt::mle_pt::tables_size(mle_len);
    let container = container_range();
    for (what, range) in [
        ("the TXT heap", regions.heap),
        ("the SINIT region", regions.sinit),
        ("the MLE page tables", PhysRange::new(ptab, mle_start)),
    ] {
        if let Err(why) = writable_ram(handoff, range) {
            return crate::hvprintln!(
                "ERROR: launch backend `{name}`: {what} {:#x}..{:#x} is {why}",
                range.start.0,
                range.end.0
            );
        }
    }
    let modules = &handoff.modules[..(handoff.module_count as usize).min(handoff.modules.len())];
    let Some(sinit) = modules.iter().find(|m| {
        slipway_protocol::boot_modules::first_word(&m.cmdline[..m.cmdline_len as usize])
            == slipway_protocol::boot_modules::SINIT_MODULE.as_bytes()
    }) else {
        return crate::hvprintln!(
            "ERROR: launch backend `{name}`: {}",
            prelaunch::PreLaunchError::NoSinitModule
        );
    };
    // SAFETY: GRUB loaded the module there (usable RAM, identity-mapped by the early tables);
    // nothing writes it.
    let sinit_module = unsafe {
        core::slice::from_raw_parts(sinit.start as *const u8, (sinit.end - sinit.start) as usize)
    };
    let banks = match crate::tpm::open().and_then(|mut tpm| {
        let banks = tpm
            .active_banks()
            .map_err(|_| "cannot read the active PCR banks");
        let _ = tpm.into_transport().relinquish_locality();
        banks
    }) {
        Ok(banks) => banks,
        Err(why) => return crate::hvprintln!("ERROR: launch backend `{name}`: TPM: {why}"),
    };
    // SAFETY: the heap lies in usable RAM outside the image and modules (checked above); this
    // is the only reference to it, last used before SENTER.
    let heap = unsafe { phys_slice_mut(regions.heap) };
    let mut mem = DirectMap::new();
    mem.allow_write(regions.sinit);
    mem.allow_write(PhysRange::new(ptab, mle_start));
    mem.allow_write(container);
    mem.allow_read(mle);
    let header_offset = core::ptr::addr_of!(INTEL_MLE_HEADER) as u64 - mle_start;
    let plan = prelaunch::MlePlan {
        mle_base: mle_start,
        mle_size: mle_len,
        mle_header_offset: header_offset,
        sinit_module,
        log_base: container.start.0,
        log_size: LOG_CAPACITY as u32,
        banks,
        handoff: handoff as *const LaunchHandoff as u64,
        launch: S::LAUNCH,
        phys_bits: phys_bits(),
    };
    let prepared = match prelaunch::prepare(seam, &mut HwMsrs, &mut mem, heap, &regions, &plan) {
        Ok(p) => p,
        Err(e) => {
            // `prepare` programs the MTRRs last: a failure leaves them as they were.
            return crate::hvprintln!("ERROR: launch backend `{name}`: {e}");
        }
    };
    crate::hvprintln!(
        "launch backend `{name}`: SINIT {:#x}+{:#x} checked and copied, MLE {mle_start:#x}+{mle_len:#x} with page tables at {:#x}, PMR {:#x}+{:#x}, heap tables written, MTRRs set for SINIT",
        prepared.sinit_base,
        prepared.sinit_size,
        prepared.mle_ptab,
        prepared.pmrs.lo_base,
        prepared.pmrs.lo_size
    );
    if let Some(fault) = fault {
        let targets = FaultTargets {
            tables: prepared.tables,
            sinit_base: prepared.sinit_base,
            mle_ptab: prepared.mle_ptab,
            log_base: container.start.0,
        };
        match simulated::inject_fault(fault, heap, &mut mem, &targets) {
            Ok(()) => crate::hvprintln!(
                "launch backend `{name}`: FAULT INJECTION (txt_fault={}): corrupted before SENTER",
                fault.class()
            ),
            Err(e) => crate::hvprintln!("launch backend `{name}`: fault injection failed: {e:?}"),
        }
    }
    // What the MTRRs were, as OsMleData records them: read now, since the heap is SINIT's (and
    // the harness's) from SENTER on and no reference to it lives across the call.
    let saved = heap::read_os_mle_data(prepared.tables.os_mle.body(heap)).ok();
    let code = seam.senter(prepared.sinit_base, prepared.sinit_size);
    // Still here: SENTER did not launch. Put the MTRRs back (they are set for SINIT).
    crate::hvprintln!(
        "ERROR: launch backend `{name}`: GETSEC[SENTER] did not launch: TXT.ERRORCODE {code:#x}"
    );
    match saved {
        Some(os_mle) => {
            if let Err(e) = prelaunch::restore_mtrrs(&mut HwMsrs, &os_mle, plan.phys_bits) {
                crate::hvprintln!("ERROR: launch backend `{name}`: MTRRs not restored: {e}");
            }
        }
        None => crate::hvprintln!(
            "ERROR: launch backend `{name}`: OsMleData unreadable: MTRRs not restored"
        ),
    }
}

/// What a TXT launch leaves the post-launch stage: the TPM at locality 2, its banks, and the
/// log SINIT started, resumed after SINIT's events.
pub struct TxtLaunched {
    pub tpm: HvTpm,
    pub banks: BankSet,
    pub log: LogWriter<'static>,
    pub kind: slipway_protocol::v1::LaunchKind,
    /// The hand-off record OsMleData names (checked to be the image's own).
    pub handoff: u64,
    /// Memory SINIT's MDRs mark as not good: never handed out.
    pub reserved: heapless::Vec<PhysRange, { heap::MAX_MDRS as usize }>,
}

/// A failed post-launch check; [`PostFailure::code`] is its TXT.ERRORCODE class.
pub enum PostFailure {
    Post(PostLaunchError),
    Regions(prelaunch::PreLaunchError),
    Mtrr(slipway_hv_core::txt::mtrr::MtrrError),
    /// One of this module's own checks (class code, what failed).
    Check(u64, &'static str),
}

impl PostFailure {
    pub fn code(&self) -> u64 {
        match self {
            PostFailure::Post(e) => e.code(),
            PostFailure::Regions(_) => post::ERROR_HEAP,
            PostFailure::Mtrr(_) => post::ERROR_MTRR,
            PostFailure::Check(code, _) => *code,
        }
    }
}

impl core::fmt::Display for PostFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PostFailure::Post(e) => e.fmt(f),
            PostFailure::Regions(e) => e.fmt(f),
            PostFailure::Mtrr(e) => write!(f, "MTRRs not restored: {e}"),
            PostFailure::Check(_, what) => f.write_str(what),
        }
    }
}

impl From<PostLaunchError> for PostFailure {
    fn from(e: PostLaunchError) -> Self {
        PostFailure::Post(e)
    }
}

/// Post-launch, entered through the MLE entry: every check of the MLE guide's post-launch steps,
/// then SINIT's log resumed. On a failure the caller records it in TXT.ERRORCODE
/// ([`post::record_failure`]) and ends the launch: nothing continues as measured.
pub fn post_launch<S: TxtSeam>(
    seam: &mut S,
    handoff: &LaunchHandoff,
    expected_handoff: u64,
) -> Result<TxtLaunched, PostFailure> {
    post::check_registers(seam)?;
    let (mle_start, region_hash_input_len) =
        crate::tpm::with_measured_region(|start, r| (start, r.len() as u64));
    let mle = PhysRange::new(mle_start, mle_start + region_hash_input_len);
    let regions = prelaunch::txt_regions(seam, mle).map_err(PostFailure::Regions)?;
    // SAFETY: TXT.HEAP.BASE/SIZE name memory below 4 GiB (checked), identity-mapped by the
    // early tables; only this function reads it, before any allocator exists.
    let heap_bytes: &[u8] = unsafe { phys_slice_mut(regions.heap) };
    let v = post::validate_heap(heap_bytes, S::LAUNCH)?;
    let os_mle: OsMleData = v.os_mle;
    let container = container_range();
    for (field, found, expected) in [
        ("OsMleData.handoff", os_mle.handoff, expected_handoff),
        ("OsMleData.mle_base", os_mle.mle_base, mle_start),
        ("OsMleData.mle_size", os_mle.mle_size, region_hash_input_len),
        (
            "OsMleData.event_log_base",
            os_mle.event_log_base,
            container.start.0,
        ),
        (
            "OsMleData.event_log_size",
            u64::from(os_mle.event_log_size),
            LOG_CAPACITY as u64,
        ),
    ] {
        if found != expected {
            return Err(PostLaunchError::Mismatch {
                field,
                found,
                expected,
            }
            .into());
        }
    }
    // Slipway's memory must be good memory; every other MDR is reserved.
    let mut used: heapless::Vec<(&'static str, PhysRange), 40> = heapless::Vec::new();
    let _ = used.push(("the hypervisor image", crate::address_space::image_range()));
    for m in &handoff.modules[..(handoff.module_count as usize).min(handoff.modules.len())] {
        let _ = used.push(("a boot module", PhysRange::new(m.start, m.end.max(m.start))));
    }
    let mut reserved = heapless::Vec::new();
    post::check_mdrs(&v.sinit_mle, &used, |r| {
        let _ = reserved.push(r);
    })?;
    prelaunch::restore_mtrrs(&mut HwMsrs, &os_mle, phys_bits()).map_err(PostFailure::Mtrr)?;
    post::open_locality2(seam)?;
    // SINIT's log: the container, checked against the re-read pointer.
    // SAFETY: the container is the image's own static, kept across the launch; handed out once,
    // here, to the one measurement (post-launch runs once).
    let buf = unsafe { &mut (*core::ptr::addr_of_mut!(SINIT_LOG_CONTAINER)).0 };
    let log = heap::resume_sinit_log(buf, &v.log).map_err(PostLaunchError::Heap)?;
    let mut tpm =
        crate::tpm::open().map_err(|why| PostFailure::Check(post::ERROR_LOCALITY, why))?;
    let banks = tpm.active_banks().map_err(|_| {
        PostFailure::Check(
            post::ERROR_LOCALITY,
            "TPM: cannot read the active PCR banks",
        )
    })?;
    let sinit_log = log.as_bytes();
    check_mle_hash(sinit_log, &banks)?;
    let extends = seam
        .complete_sinit_extends(&mut tpm, &banks, sinit_log)
        .map_err(|why| PostFailure::Check(post::ERROR_EVENT_LOG, why))?;
    check_launch_pcrs(&mut tpm, &banks, sinit_log)?;
    crate::hvprintln!(
        "launch: {} launch verified: SINIT's log ({} bytes; {extends} extends by the {} seam) replays to PCR17/18, PCR19-22 = 0 in {} banks; the MLE hash event is this image's",
        S::NAME,
        sinit_log.len(),
        S::NAME,
        banks.len()
    );
    Ok(TxtLaunched {
        tpm,
        banks,
        log,
        kind: S::KIND,
        handoff: os_mle.handoff,
        reserved,
    })
}

/// The post-launch stage entered through the MLE entry: picks the seam the (measured) command
/// line names and runs [`post_launch`]; a failure is recorded in TXT.ERRORCODE and ends the
/// boot (the MLE guide's rule: never continue as measured).
pub fn post_launch_entered(handoff: &LaunchHandoff, expected_handoff: u64) -> TxtLaunched {
    let cmdline = &handoff.cmdline[..(handoff.cmdline_len as usize).min(handoff.cmdline.len())];
    match crate::launch::asked_backend(cmdline) {
        Some(b"txt-simulated") => {
            let mut seam = SimulatedTxt::attach();
            match post_launch(&mut seam, handoff, expected_handoff) {
                Ok(launched) => launched,
                Err(f) => {
                    post::record_failure(&mut seam, f.code());
                    crate::hvprintln!(
                        "TXT post-launch (txt-simulated): {f}; TXT.ERRORCODE records class {:#x}; the launch ends, nothing starts",
                        f.code()
                    );
                    crate::qemu_exit::exit(crate::qemu_exit::Verdict::Failure)
                }
            }
        }
        _ => {
            crate::hvprintln!(
                "post-launch: entered through the TXT MLE entry, but the command line names no TXT backend this image implements; nothing starts"
            );
            crate::qemu_exit::exit(crate::qemu_exit::Verdict::Failure)
        }
    }
}

/// SINIT's MLE-hash event (0x404 in PCR17) must hold `H(MLE)` of this image in every bank.
fn check_mle_hash(sinit_log: &[u8], banks: &BankSet) -> Result<(), PostFailure> {
    let bad = |why| PostFailure::Check(post::ERROR_EVENT_LOG, why);
    let log = EventLog::parse(sinit_log).map_err(|_| bad("SINIT's log does not parse"))?;
    let mut found = None;
    for event in log.events() {
        let event = event.map_err(|_| bad("an event of SINIT's log does not parse"))?;
        if event.pcr == 17 && event.event_type == EVTYPE_MLE_HASH {
            if found.is_some() {
                return Err(bad("SINIT's log has two MLE-hash events"));
            }
            found = Some(event.digests);
        }
    }
    let found = found.ok_or(bad("SINIT's log has no MLE-hash event (0x404) in PCR17"))?;
    let expected = crate::tpm::with_measured_region(|_, region| {
        let mut hasher = MultiHasher::new(banks);
        hasher.update(region);
        hasher.finalize()
    });
    for digest in expected.iter() {
        if found.get(digest.alg()) != Some(digest) {
            return Err(bad(
                "SINIT's MLE-hash event differs from H(this image's MLE)",
            ));
        }
    }
    Ok(())
}

/// PCR17/18 must be what SINIT's log replays to from a dynamic launch, and PCR19-22 zero, in
/// every bank this hypervisor can hash.
fn check_launch_pcrs(
    tpm: &mut HvTpm,
    banks: &BankSet,
    sinit_log: &[u8],
) -> Result<(), PostFailure> {
    let bad = |why| PostFailure::Check(post::ERROR_EVENT_LOG, why);
    let replay = EventLog::parse(sinit_log)
        .and_then(|l| l.replay(InitialState::DynamicLaunch))
        .map_err(|_| bad("SINIT's log does not replay"))?;
    for alg in banks.supported() {
        let values = tpm
            .pcr_read(alg.id(), PcrMask::range(17, 22))
            .map_err(|_| bad("PCR_Read failed"))?;
        for pcr in 17..=18u8 {
            let expected = replay.value(u32::from(pcr), alg).ok().flatten();
            if values.get(pcr) != expected.as_ref() {
                return Err(bad(if pcr == 17 {
                    "PCR17 differs from SINIT's log"
                } else {
                    "PCR18 differs from SINIT's log"
                }));
            }
        }
        for pcr in 19..=22u8 {
            if values
                .get(pcr)
                .is_none_or(|d| d.as_bytes().iter().any(|&b| b != 0))
            {
                return Err(bad("PCR19-22 are not zero after the launch"));
            }
        }
    }
    Ok(())
}

unsafe extern "C" {
    /// The Intel MLE header (`boot.rs`).
    static INTEL_MLE_HEADER: [u8; 52];
    /// The MLE entry point (`boot.rs`).
    fn txt_mle_entry();
    /// The simulated CPU's SENTER transition (below).
    fn simulated_cpu_enter_mle(entry: u64, mle_ptab: u64) -> !;
}

// The CPU's transition at the end of a SIMULATED SENTER: from long mode into 32-bit protected
// mode with paging off (compatibility mode, CR0.PG off, EFER.LME off, CR4.PAE off), then a jump
// to the MLE entry with EBX = entry and ECX = the MLE page tables, as SINIT leaves the CPU.
// Runs from the identity-mapped image (below 4 GiB), with the image's early GDT (0x18: 32-bit
// code, 0x10: data).
core::arch::global_asm!(
    r#"
    .section .text.simulated_cpu_enter_mle, "ax"
    .code64
    .global simulated_cpu_enter_mle
simulated_cpu_enter_mle:
    cli
    mov rbx, rdi           /* EBX: the entry (below 4 GiB) */
                           /* ESI: the MLE page tables (below 4 GiB) */
    lgdt [rip + EARLY_GDT_PTR]
    push 0x18
    lea rax, [rip + 70f]
    push rax
    retfq
    .code32
70:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr0
    and eax, 0x7FFFFFFF
    mov cr0, eax
    mov ecx, 0xC0000080
    rdmsr
    and eax, 0xFFFFFEFF
    wrmsr
    mov eax, cr4
    and eax, 0xFFFFFFDF
    mov cr4, eax
    mov ecx, esi
    xor eax, eax
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    jmp ebx
"#
);

/// The SIMULATED TXT seam of `launch=txt-simulated` (see the module documentation).
pub struct SimulatedTxt {
    regs: u64,
}

impl SimulatedTxt {
    /// How long the seam waits for the harness's answer to SENTER.
    const SENTER_DEADLINE_US: u64 = 20_000_000;

    /// Pre-launch: the simulated platform as BIOS and chipset leave it: the register page
    /// (TXT.HEAP/SINIT base and size, TXT.DIDVID; STS, ESTS, ERRORCODE clear) and the heap's
    /// BiosData. The areas must be usable RAM clear of the modules and the image.
    pub fn set_up(handoff: &LaunchHandoff) -> Result<SimulatedTxt, &'static str> {
        let areas = PhysRange::new(
            SIMULATED_TXT_REGS,
            SIMULATED_TXT_SINIT + SIMULATED_TXT_SINIT_SIZE,
        );
        if let Err(why) = writable_ram(handoff, areas) {
            crate::hvprintln!(
                "ERROR: launch backend `txt-simulated`: the simulated TXT areas {:#x}..{:#x}: {why}",
                areas.start.0,
                areas.end.0
            );
            return Err("the simulated TXT areas cannot be used");
        }
        let page = PhysRange::new(SIMULATED_TXT_REGS, SIMULATED_TXT_REGS + 0x1000);
        // SAFETY: the page lies in usable RAM clear of the image and the modules (checked).
        unsafe { phys_slice_mut(page) }.fill(0);
        let mut txt = SimulatedTxt {
            regs: SIMULATED_TXT_REGS,
        };
        txt.write(regs::HEAP_BASE, SIMULATED_TXT_HEAP);
        txt.write(regs::HEAP_SIZE, SIMULATED_TXT_HEAP_SIZE);
        txt.write(regs::SINIT_BASE, SIMULATED_TXT_SINIT);
        txt.write(regs::SINIT_SIZE, SIMULATED_TXT_SINIT_SIZE);
        txt.write(
            regs::DIDVID,
            simulated::SIMULATED_PLATFORM.didvid.to_register(),
        );
        let heap = PhysRange::new(
            SIMULATED_TXT_HEAP,
            SIMULATED_TXT_HEAP + SIMULATED_TXT_HEAP_SIZE,
        );
        // SAFETY: as above (the heap is inside the checked areas).
        let heap = unsafe { phys_slice_mut(heap) };
        heap.fill(0);
        simulated::write_bios_heap(heap).ok_or("the simulated TXT heap cannot hold BiosData")?;
        Ok(txt)
    }

    /// Post-launch: the register page the harness answered in.
    pub fn attach() -> SimulatedTxt {
        SimulatedTxt {
            regs: SIMULATED_TXT_REGS,
        }
    }

    fn at(&self, offset: u32) -> *mut u64 {
        (self.regs + u64::from(offset & 0xff8)) as *mut u64
    }
}

impl TxtRegisters for SimulatedTxt {
    fn read(&self, offset: u32) -> u64 {
        // SAFETY: the register page is the simulated platform's page of RAM (checked at
        // set-up; identity-mapped by the early tables), offsets masked to the page.
        unsafe { self.at(offset).read_volatile() }
    }
    fn command(&mut self, offset: u32) {
        // The simulated chipset's answer to the locality commands (hardware sets STS itself).
        let sts = self.read(regs::STS);
        match offset {
            regs::CMD_OPEN_LOCALITY2 => self.write(regs::STS, sts | regs::STS_LOCALITY2_OPEN),
            regs::CMD_CLOSE_LOCALITY2 => self.write(regs::STS, sts & !regs::STS_LOCALITY2_OPEN),
            _ => {}
        }
    }
    fn write(&mut self, offset: u32, value: u64) {
        // SAFETY: as in `read`.
        unsafe { self.at(offset).write_volatile(value) }
    }
}

impl Getsec for SimulatedTxt {
    fn capabilities(&mut self, _index: u32) -> u32 {
        simulated::SIMULATED_GETSEC_CAPABILITIES
    }
    fn parameters(&mut self, index: u32) -> (u32, u32, u32) {
        simulated::simulated_getsec_parameters(index)
    }
}

impl TxtHardware for SimulatedTxt {
    fn cpuid1(&mut self) -> (u32, u32) {
        (simulated::SIMULATED_PLATFORM.fms, smx::CPUID1_ECX_SMX)
    }
    fn platform_id(&mut self) -> u64 {
        simulated::SIMULATED_PLATFORM.platform_id
    }
    fn senter(&mut self, _sinit_base: u64, _sinit_size: u32) -> u64 {
        crate::console::print_debugcon(format_args!(
            "{TXT_SENTER_REQUEST_PREFIX} {:#x}\n",
            self.regs
        ));
        let deadline = crate::tsc::since_entry_us() + Self::SENTER_DEADLINE_US;
        loop {
            let sts = self.read(regs::STS);
            let code = self.read(regs::ERRORCODE);
            if code & regs::ERRORCODE_VALID != 0 {
                return code;
            }
            if sts & regs::STS_SENTER_DONE != 0 {
                break;
            }
            if crate::tsc::since_entry_us() > deadline {
                crate::hvprintln!(
                    "launch backend `txt-simulated`: no answer from the harness to SENTER"
                );
                return 0;
            }
            core::hint::spin_loop();
        }
        let entry = self.read(SIMULATED_TXT_ENTRY);
        let expected = txt_mle_entry as *const () as u64;
        if entry != expected {
            crate::hvprintln!(
                "launch backend `txt-simulated`: the harness names entry {entry:#x}, not the MLE entry {expected:#x}: not entered"
            );
            return regs::ERRORCODE_VALID | 0x1e;
        }
        // ECX: the MLE page tables, as SINIT passes them (OsSinitData.mle_ptab).
        let ptab = {
            let heap = PhysRange::new(
                SIMULATED_TXT_HEAP,
                SIMULATED_TXT_HEAP + SIMULATED_TXT_HEAP_SIZE,
            );
            // SAFETY: the simulated heap (checked at set-up), identity-mapped; no other
            // reference to it is live (the launch logic's last use was before SENTER) and the
            // harness wrote it while the guest was paused, before SENTER.DONE.
            let heap: &[u8] = unsafe {
                core::slice::from_raw_parts(heap.start.0 as *const u8, heap.len() as usize)
            };
            heap::locate_tables(heap, 0)
                .ok()
                .and_then(|t| heap::read_os_sinit_data(t.os_sinit.body(heap)).ok())
                .map_or(0, |(d, _)| d.mle_ptab)
        };
        crate::hvprintln!(
            "launch backend `txt-simulated`: SENTER done (simulated): entering the MLE at {entry:#x}"
        );
        // SAFETY: `entry` is this image's MLE entry (checked), which expects exactly the state
        // this transition leaves; nothing of the pre-launch stage is used afterwards.
        unsafe { simulated_cpu_enter_mle(entry, ptab) }
    }
}

impl TxtSeam for SimulatedTxt {
    const LAUNCH: u32 = LAUNCH_SIMULATED;
    const NAME: &'static str = "txt-simulated";
    const KIND: slipway_protocol::v1::LaunchKind = slipway_protocol::v1::LaunchKind::TxtSimulated;

    /// SIMULATED: SINIT's extends after the hash start, sent at locality 2 (PCR17/18 accept
    /// 2-4) from its events: every event of the container is SINIT's; the first must be the
    /// hash start (0x402 in PCR17, which the harness performed on the TPM), the rest extend
    /// PCR17 or PCR18 only, with TXT event types (0x400-0x4ff).
    fn complete_sinit_extends(
        &mut self,
        tpm: &mut HvTpm,
        banks: &BankSet,
        sinit_log: &[u8],
    ) -> Result<u32, &'static str> {
        let log = EventLog::parse(sinit_log).map_err(|_| "SINIT's log does not parse")?;
        let mut extends = 0;
        for (index, event) in log.events().enumerate() {
            let event = event.map_err(|_| "an event of SINIT's log does not parse")?;
            if index == 0 {
                if event.pcr != 17 || event.event_type != EVTYPE_HASH_START {
                    return Err(
                        "SINIT's log does not start with the hash-start event (0x402, PCR17)",
                    );
                }
                continue;
            }
            if !(17..=18).contains(&event.pcr) || !(0x400..0x500).contains(&event.event_type) {
                return Err("SINIT's log has an event outside PCR17/18 or the TXT event types");
            }
            let digests = event
                .digests
                .ordered_for(banks)
                .map_err(|_| "SINIT's events lack a bank of the TPM")?;
            tpm.pcr_extend(event.pcr as u8, &digests, banks)
                .map_err(|_| "PCR_Extend of a SINIT event failed")?;
            extends += 1;
        }
        Ok(extends)
    }
}
