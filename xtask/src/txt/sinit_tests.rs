use slipway_hv_core::addr::{PAGE_SIZE, PhysAddr, PhysRange};
use slipway_hv_core::memory::PhysMemory;
use slipway_hv_core::testing::FakePhysMemory;
use slipway_hv_core::txt::acm::{SYNTHETIC_SIZE, write_synthetic_sinit};
use slipway_hv_core::txt::heap::{self, SIZE_FIELD};
use slipway_hv_core::txt::layout::*;
use slipway_hv_core::txt::{mle_pt, pmr, post};
use slipway_measure::hash::hash;
use slipway_measure::log::EventLog;
use slipway_measure::pcr::InitialState;
use slipway_measure::{AlgId, BankSet, HashAlg};

use super::sinit::*;

const MLE_BASE: u64 = 0x20_0000;
const MLE_SIZE: u64 = 0x2345;
const HEADER_AT: u64 = 0x100;
const ENTRY: u32 = 0x1000;
const LOG_BASE: u64 = 0x30_0000;
const LOG_SIZE: u32 = 0x2000;
const HEAP_BASE: u64 = 0x40_0000;
const SINIT_BASE: u64 = 0x50_0000;
const CAPS: u32 = CAP_RLP_WAKE_GETSEC | CAP_TCG2_EVENT_LOG;

/// Guest memory, heap and SINIT as Slipway's pre-launch stage leaves them (built with the same
/// hv-core functions it uses).
struct Machine {
    mem: FakePhysMemory,
    heap: Vec<u8>,
    acm: Vec<u8>,
    banks: BankSet,
}

fn ptab() -> u64 {
    MLE_BASE - mle_pt::tables_size(MLE_SIZE)
}

fn machine() -> Machine {
    let banks = BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256]).unwrap();
    let mut mem = FakePhysMemory::new(0x10_0000, 0x50_0000);
    let mle: Vec<u8> = (0..MLE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
    mem.write(PhysAddr(MLE_BASE), &mle).unwrap();
    let header = MleHeader {
        uuid: MLE_HEADER_UUID,
        length: MleHeader::SIZE as u32,
        version: MLE_HEADER_VERSION,
        entry_point: ENTRY,
        first_valid_page: 0,
        mle_start: 0,
        mle_end: MLE_SIZE as u32,
        capabilities: CAPS,
        cmdline_start: 0,
        cmdline_end: 0,
    };
    mem.write(PhysAddr(MLE_BASE + HEADER_AT), &header.to_bytes())
        .unwrap();
    mle_pt::build_mle_page_tables(&mut mem, ptab(), MLE_BASE, MLE_SIZE).unwrap();
    let mut container = vec![0u8; LOG_SIZE as usize];
    let log = heap::init_log_container(&mut container, LOG_BASE, banks).unwrap();
    mem.write(PhysAddr(LOG_BASE), &container).unwrap();
    let pmrs = pmr::compute_pmrs(&[PhysRange::new(ptab(), MLE_BASE + MLE_SIZE)]).unwrap();
    let mut heap = vec![0u8; 0x2000];
    heap[..8].copy_from_slice(&((SIZE_FIELD + BiosData::SIZE + 8) as u64).to_le_bytes());
    let mut bios = BiosData::ZERO;
    bios.version = 6;
    bios.write(&mut heap[8..]).unwrap();
    heap[8 + BiosData::SIZE + 4] = 8; // END element
    let mut os_mle = OsMleData::ZERO;
    os_mle.magic = OS_MLE_DATA_MAGIC;
    os_mle.version = OS_MLE_DATA_VERSION;
    os_mle.launch = LAUNCH_SIMULATED;
    os_mle.mle_base = MLE_BASE;
    os_mle.mle_size = MLE_SIZE;
    os_mle.mle_ptab = ptab();
    os_mle.event_log_base = LOG_BASE;
    os_mle.event_log_size = LOG_SIZE;
    let mut os_sinit = OsSinitData::ZERO;
    os_sinit.version = OS_SINIT_DATA_VERSION;
    os_sinit.mle_ptab = ptab();
    os_sinit.mle_size = MLE_SIZE;
    os_sinit.mle_hdr_base = HEADER_AT;
    os_sinit.vtd_pmr_lo_base = pmrs.lo_base;
    os_sinit.vtd_pmr_lo_size = pmrs.lo_size;
    os_sinit.capabilities = CAPS;
    heap::write_os_tables(&mut heap, &os_mle, &os_sinit, &log).unwrap();
    let mut acm = vec![0u8; SYNTHETIC_SIZE];
    write_synthetic_sinit(&mut acm, &SIMULATED_PLATFORM, 0x77).unwrap();
    Machine {
        mem,
        heap,
        acm,
        banks,
    }
}

fn inputs<'a>(m: &'a Machine, mdrs: &'a [SinitMdr]) -> SenterInputs<'a> {
    SenterInputs {
        heap_base: HEAP_BASE,
        sinit_region: PhysRange::new(SINIT_BASE, SINIT_BASE + 0x1_0000),
        acm: &m.acm,
        banks: m.banks,
        mdrs,
    }
}

const GOOD: [SinitMdr; 1] = [SinitMdr {
    base: 0x10_0000,
    length: 0x7000_0000,
    mem_type: 0,
    reserved: [0; 7],
}];

#[test]
fn a_simulated_senter_measures_the_mle_and_the_hypervisor_validates_and_resumes_what_it_leaves() {
    let mut m = machine();
    let out = simulate_senter(&m.mem, &m.heap, &inputs(&m, &GOOD)).unwrap();
    assert_eq!(out.entry, MLE_BASE + u64::from(ENTRY));
    let mle = m.mem.slice(MLE_BASE, MLE_SIZE).to_vec();
    assert_eq!(
        out.mle_hash.get(AlgId::SHA256).unwrap(),
        &hash(HashAlg::Sha256, &mle)
    );
    // The harness writes SinitMleData, the updated pointer and the container back.
    let at = out.sinit_mle_offset;
    m.heap[at..at + out.sinit_mle_table.len()].copy_from_slice(&out.sinit_mle_table);
    let tables = heap::locate_tables(&m.heap, 0).unwrap();
    let element = tables.os_sinit.offset + SIZE_FIELD + OsSinitData::SIZE + 8;
    out.log.write(&mut m.heap[element..]).unwrap();
    m.mem.write(PhysAddr(LOG_BASE), &out.log_container).unwrap();
    // Post-launch, as the hypervisor does it.
    let v = post::validate_heap(&m.heap, LAUNCH_SIMULATED).unwrap();
    let image = [("MLE", PhysRange::new(MLE_BASE, MLE_BASE + MLE_SIZE))];
    post::check_mdrs(&v.sinit_mle, &image, |_| panic!("nothing to reserve")).unwrap();
    assert_eq!(
        &{ v.sinit_mle.data.mle_hash }[..],
        hash(HashAlg::Sha1, &mle).as_bytes()
    );
    let mut container = m.mem.slice(LOG_BASE, u64::from(LOG_SIZE)).to_vec();
    let mut writer = heap::resume_sinit_log(&mut container, &v.log).unwrap();
    writer.append_measured(19, 0x601, &[1, 4]).unwrap();
    let log = EventLog::parse(writer.as_bytes()).unwrap();
    let kinds: Vec<(u32, u32)> = log
        .events()
        .map(|e| e.map(|e| (e.pcr, e.event_type)).unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&(17, EVTYPE_HASH_START)));
    assert!(kinds.contains(&(17, EVTYPE_MLE_HASH)));
    assert!(kinds.contains(&(18, EVTYPE_SINIT_PUBKEY_HASH)));
    assert_eq!(kinds.last(), Some(&(19, 0x601)));
    // Replaying the log gives exactly the PCR17/18 the simulation (and predict) computes.
    let replayed = log.replay(InitialState::DynamicLaunch).unwrap();
    for alg in [HashAlg::Sha1, HashAlg::Sha256] {
        for pcr in [17, 18] {
            assert_eq!(
                replayed.value(pcr, alg).unwrap(),
                out.measurement.pcrs.value(pcr, alg).unwrap()
            );
        }
    }
    // PCR17 depends on the MLE: a different MLE, a different PCR17 (and the same PCR18).
    let mut other_hash = slipway_measure::DigestList::new();
    for d in out.mle_hash.iter() {
        let zero = slipway_measure::Digest::new(d.alg(), &vec![0u8; d.len()]).unwrap();
        other_hash.push(zero).unwrap();
    }
    let key = &m.acm[128..128 + 256];
    let other = sinit_measurement(
        &m.banks,
        &m.acm,
        key,
        &other_hash,
        CAPS,
        &PlatformMeasurements::SIMULATED,
    );
    assert_ne!(
        other.pcrs.value(17, HashAlg::Sha256).unwrap(),
        out.measurement.pcrs.value(17, HashAlg::Sha256).unwrap()
    );
    assert_eq!(
        other.pcrs.value(18, HashAlg::Sha256).unwrap(),
        out.measurement.pcrs.value(18, HashAlg::Sha256).unwrap()
    );
}

fn refusal(m: &Machine) -> Refusal {
    simulate_senter(&m.mem, &m.heap, &inputs(m, &GOOD))
        .expect_err("the simulated SINIT must refuse")
}

fn patch_os_sinit(m: &mut Machine, f: impl FnOnce(&mut OsSinitData)) {
    let t = heap::locate_tables(&m.heap, 0).unwrap();
    let at = t.os_sinit.offset + SIZE_FIELD;
    let mut d = OsSinitData::read(&m.heap[at..]).unwrap();
    f(&mut d);
    d.write(&mut m.heap[at..]).unwrap();
}

#[test]
fn each_refusal_class_names_its_rule() {
    let mut m = machine();
    patch_os_sinit(&mut m, |d| d.version = 6);
    let r = refusal(&m);
    assert_eq!(r.class(), "heap");
    assert!(r.to_string().contains("OsSinitData.version 6"), "{r}");

    let mut m = machine();
    m.acm[16] = 0x22; // module_vendor
    let r = refusal(&m);
    assert_eq!(r.class(), "acm");
    assert!(r.to_string().contains("module_vendor"), "{r}");

    let mut m = machine();
    let pt = ptab() + 2 * PAGE_SIZE;
    m.mem.write_u64(PhysAddr(pt + 8), 0).unwrap(); // a hole at the second page
    let r = refusal(&m);
    assert_eq!(r.class(), "page-tables");
    assert!(
        r.to_string()
            .contains("no holes after the first valid page"),
        "{r}"
    );

    let mut m = machine();
    m.mem.write(PhysAddr(MLE_BASE + HEADER_AT), &[0]).unwrap();
    let r = refusal(&m);
    assert_eq!(r.class(), "mle-header");
    assert!(r.to_string().contains("uuid"), "{r}");

    let mut m = machine();
    patch_os_sinit(&mut m, |d| d.vtd_pmr_lo_size = 0);
    let r = refusal(&m);
    assert_eq!(r.class(), "pmr");
    assert!(
        r.to_string().contains("not inside the protected ranges"),
        "{r}"
    );

    let mut m = machine();
    patch_os_sinit(&mut m, |d| d.capabilities = CAP_RLP_WAKE_GETSEC);
    let r = refusal(&m);
    assert_eq!(r.class(), "capabilities");
    assert!(r.to_string().contains("bit 9"), "{r}");

    let mut m = machine();
    m.mem.zero(PhysAddr(LOG_BASE), u64::from(LOG_SIZE)).unwrap();
    let r = refusal(&m);
    assert_eq!(r.class(), "event-log");
}

#[test]
fn tables_placed_over_the_heap_are_refused_by_the_no_overlap_rule() {
    let m = machine();
    let mut i = inputs(&m, &GOOD);
    i.heap_base = ptab();
    let r = simulate_senter(&m.mem, &m.heap, &i).unwrap_err();
    assert!(r.to_string().contains("overlaps the TXT heap"), "{r}");
}

/// The hardware seam as a test platform: the simulated platform's identity, the capabilities and
/// parameters a TXT-capable processor reports, the TXT registers over plain values.
struct TestTxt {
    regs: std::collections::HashMap<u32, u64>,
    smx: bool,
}

impl slipway_hv_core::txt::regs::TxtRegisters for TestTxt {
    fn read(&self, offset: u32) -> u64 {
        self.regs.get(&offset).copied().unwrap_or(0)
    }
    fn command(&mut self, _: u32) {}
    fn write(&mut self, offset: u32, value: u64) {
        self.regs.insert(offset, value);
    }
}

impl slipway_hv_core::txt::smx::Getsec for TestTxt {
    fn capabilities(&mut self, _: u32) -> u32 {
        use slipway_hv_core::txt::smx::*;
        CAP_CHIPSET_PRESENT | CAP_SENTER | CAP_SEXIT | CAP_PARAMETERS | CAP_WAKEUP
    }
    fn parameters(&mut self, index: u32) -> (u32, u32, u32) {
        match index {
            0 => (2 | 0x10_0000, 0, 0), // max ACM size 1 MiB
            1 => (3 | slipway_hv_core::txt::smx::ACM_MEMORY_TYPE_WB, 0, 0), // WB allowed
            _ => (0, 0, 0),
        }
    }
}

impl slipway_hv_core::txt::prelaunch::TxtHardware for TestTxt {
    fn cpuid1(&mut self) -> (u32, u32) {
        let smx = if self.smx {
            slipway_hv_core::txt::smx::CPUID1_ECX_SMX
        } else {
            0
        };
        (SIMULATED_PLATFORM.fms, smx)
    }
    fn platform_id(&mut self) -> u64 {
        SIMULATED_PLATFORM.platform_id
    }
    fn senter(&mut self, _: u64, _: u32) -> u64 {
        unreachable!("the test plays SENTER with simulate_senter")
    }
}

#[derive(Default)]
struct TestMsrs(std::collections::HashMap<u32, u64>);

impl slipway_hv_core::txt::prelaunch::Msrs for TestMsrs {
    fn read_msr(&mut self, msr: u32) -> u64 {
        if msr == slipway_hv_core::txt::mtrr::IA32_MTRRCAP {
            return 8;
        }
        self.0.get(&msr).copied().unwrap_or(0)
    }
    fn write_msr(&mut self, msr: u32, value: u64) {
        self.0.insert(msr, value);
    }
}

const PRE_HEAP: u64 = 0x11_0000;
const PRE_SINIT: u64 = 0x14_0000;

fn prelaunch_machine(smx: bool) -> (FakePhysMemory, Vec<u8>, TestTxt, Vec<u8>) {
    use slipway_hv_core::txt::regs;
    let mut mem = FakePhysMemory::new(0x10_0000, 0x50_0000);
    let mle: Vec<u8> = (0..MLE_SIZE).map(|i| (i * 13 % 251) as u8).collect();
    mem.write(PhysAddr(MLE_BASE), &mle).unwrap();
    let header = MleHeader {
        uuid: MLE_HEADER_UUID,
        length: MleHeader::SIZE as u32,
        version: MLE_HEADER_VERSION,
        entry_point: ENTRY,
        first_valid_page: 0,
        mle_start: 0,
        mle_end: MLE_SIZE as u32,
        capabilities: SLIPWAY_MLE_CAPABILITIES,
        cmdline_start: 0,
        cmdline_end: 0,
    };
    mem.write(PhysAddr(MLE_BASE + HEADER_AT), &header.to_bytes())
        .unwrap();
    // The heap as BIOS leaves it: BiosData only.
    let mut heap = vec![0u8; 0x2_0000];
    heap[..8].copy_from_slice(&((SIZE_FIELD + BiosData::SIZE + 8) as u64).to_le_bytes());
    let mut bios = BiosData::ZERO;
    bios.version = 6;
    bios.write(&mut heap[8..]).unwrap();
    heap[8 + BiosData::SIZE + 4] = 8;
    let mut r = std::collections::HashMap::new();
    r.insert(regs::HEAP_BASE, PRE_HEAP);
    r.insert(regs::HEAP_SIZE, heap.len() as u64);
    r.insert(regs::SINIT_BASE, PRE_SINIT);
    r.insert(regs::SINIT_SIZE, 0x1_0000);
    r.insert(regs::DIDVID, SIMULATED_PLATFORM.didvid.to_register());
    let mut acm = vec![0u8; SYNTHETIC_SIZE];
    write_synthetic_sinit(&mut acm, &SIMULATED_PLATFORM, 0x42).unwrap();
    (mem, heap, TestTxt { regs: r, smx }, acm)
}

fn plan(acm: &[u8], banks: BankSet) -> slipway_hv_core::txt::prelaunch::MlePlan<'_> {
    slipway_hv_core::txt::prelaunch::MlePlan {
        mle_base: MLE_BASE,
        mle_size: MLE_SIZE,
        mle_header_offset: HEADER_AT,
        sinit_module: acm,
        log_base: LOG_BASE,
        log_size: LOG_SIZE,
        banks,
        handoff: 0x20_1000,
        launch: LAUNCH_SIMULATED,
        phys_bits: 40,
    }
}

#[test]
fn what_the_pre_launch_sequence_prepares_the_simulated_sinit_accepts_and_post_launch_validates() {
    use slipway_hv_core::txt::prelaunch::{self, Msrs};
    let (mut mem, mut heap, mut txt, acm) = prelaunch_machine(true);
    let banks = BankSet::from_algs(&[AlgId::SHA256]).unwrap();
    let mut msrs = TestMsrs::default();
    msrs.write_msr(slipway_hv_core::txt::mtrr::IA32_MTRR_DEF_TYPE, 0xc06);
    msrs.write_msr(slipway_hv_core::txt::mtrr::IA32_MISC_ENABLE, 0x850089);
    let mle = PhysRange::new(MLE_BASE, MLE_BASE + MLE_SIZE);
    let regions = prelaunch::txt_regions(&txt, mle).unwrap();
    let prepared = prelaunch::prepare(
        &mut txt,
        &mut msrs,
        &mut mem,
        &mut heap,
        &regions,
        &plan(&acm, banks),
    )
    .unwrap();
    // SINIT runs write-back, everything else uncacheable.
    assert_eq!(
        msrs.read_msr(slipway_hv_core::txt::mtrr::IA32_MTRR_DEF_TYPE),
        prepared.mtrrs.def_type
    );
    assert_eq!(prepared.sinit_base, PRE_SINIT);
    let copied = mem.slice(PRE_SINIT, SYNTHETIC_SIZE as u64).to_vec();
    assert_eq!(copied, acm);
    let inputs = SenterInputs {
        heap_base: PRE_HEAP,
        sinit_region: regions.sinit,
        acm: &copied,
        banks,
        mdrs: &GOOD,
    };
    let out = simulate_senter(&mem, &heap, &inputs).unwrap();
    assert_eq!(out.entry, MLE_BASE + u64::from(ENTRY));
    let at = out.sinit_mle_offset;
    heap[at..at + out.sinit_mle_table.len()].copy_from_slice(&out.sinit_mle_table);
    let v = post::validate_heap(&heap, LAUNCH_SIMULATED).unwrap();
    assert_eq!({ v.os_mle.mle_ptab }, prepared.mle_ptab);
    // Post-launch puts back what SINIT's MTRRs replaced.
    prelaunch::restore_mtrrs(&mut msrs, &v.os_mle, 40).unwrap();
    assert_eq!(
        msrs.read_msr(slipway_hv_core::txt::mtrr::IA32_MTRR_DEF_TYPE),
        0xc06
    );
    assert_eq!(
        msrs.read_msr(slipway_hv_core::txt::mtrr::IA32_MISC_ENABLE),
        0x850089
    );
}

#[test]
fn the_pre_launch_sequence_names_what_stops_it() {
    use slipway_hv_core::txt::prelaunch;
    let banks = BankSet::from_algs(&[AlgId::SHA256]).unwrap();
    let mle = PhysRange::new(MLE_BASE, MLE_BASE + MLE_SIZE);
    // No SMX.
    let (mut mem, mut heap, mut txt, acm) = prelaunch_machine(false);
    let regions = prelaunch::txt_regions(&txt, mle).unwrap();
    let e = prelaunch::prepare(
        &mut txt,
        &mut TestMsrs::default(),
        &mut mem,
        &mut heap,
        &regions,
        &plan(&acm, banks),
    )
    .unwrap_err();
    assert!(e.to_string().contains("SMX"), "{e}");
    // A SINIT for another chipset.
    let (mut mem, mut heap, mut txt, acm) = prelaunch_machine(true);
    txt.regs.insert(
        slipway_hv_core::txt::regs::DIDVID,
        slipway_hv_core::txt::regs::DidVid {
            device_id: 0x1234,
            ..SIMULATED_PLATFORM.didvid
        }
        .to_register(),
    );
    let e = prelaunch::prepare(
        &mut txt,
        &mut TestMsrs::default(),
        &mut mem,
        &mut heap,
        &regions,
        &plan(&acm, banks),
    )
    .unwrap_err();
    assert!(e.to_string().contains("chipset ID list"), "{e}");
    // A SINIT region over the MLE.
    txt.regs
        .insert(slipway_hv_core::txt::regs::SINIT_BASE, MLE_BASE);
    let e = prelaunch::txt_regions(&txt, mle).unwrap_err();
    assert!(
        e.to_string()
            .contains("TXT.SINIT.BASE/SIZE: overlaps the MLE"),
        "{e}"
    );
}

/// The machine after the pre-launch sequence, with the heap and the simulated register page in
/// guest memory, as the harness finds it.
fn prepared_guest() -> (FakePhysMemory, Vec<u8>, BankSet) {
    prepared_guest_with(None)
}

/// As [`prepared_guest`], with `fault` (the hypervisor's `txt_fault=` knob) applied after the
/// pre-launch sequence, as the hypervisor applies it.
fn prepared_guest_with(
    fault: Option<slipway_hv_core::txt::simulated::SimulatedFault>,
) -> (FakePhysMemory, Vec<u8>, BankSet) {
    use slipway_hv_core::txt::prelaunch;
    use slipway_protocol::platform::SIMULATED_TXT_REGS;
    let (mut mem, mut heap, mut txt, acm) = prelaunch_machine(true);
    let banks = BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256]).unwrap();
    let mle = PhysRange::new(MLE_BASE, MLE_BASE + MLE_SIZE);
    let regions = prelaunch::txt_regions(&txt, mle).unwrap();
    let prepared = prelaunch::prepare(
        &mut txt,
        &mut TestMsrs::default(),
        &mut mem,
        &mut heap,
        &regions,
        &plan(&acm, banks),
    )
    .unwrap();
    if let Some(fault) = fault {
        let targets = slipway_hv_core::txt::simulated::FaultTargets {
            tables: prepared.tables,
            sinit_base: prepared.sinit_base,
            mle_ptab: prepared.mle_ptab,
            log_base: LOG_BASE,
        };
        slipway_hv_core::txt::simulated::inject_fault(fault, &mut heap, &mut mem, &targets)
            .unwrap();
    }
    mem.write(PhysAddr(PRE_HEAP), &heap).unwrap();
    for (&offset, &value) in &txt.regs {
        mem.write_u64(PhysAddr(SIMULATED_TXT_REGS + u64::from(offset)), value)
            .unwrap();
    }
    (mem, acm, banks)
}

#[test]
fn the_harness_serves_a_simulated_senter_into_guest_memory_and_launches_the_tpm_over_the_acm() {
    use super::senter::{SenterResult, serve};
    use slipway_hv_core::txt::regs;
    use slipway_protocol::platform::{SIMULATED_TXT_ENTRY, SIMULATED_TXT_REGS};
    let (mut mem, acm, banks) = prepared_guest();
    let mut launched = Vec::new();
    let result = serve(&mut mem, SIMULATED_TXT_REGS, banks, &GOOD, &mut |bytes| {
        launched.push(bytes.to_vec());
        Ok(())
    });
    let SenterResult::Launched(out) = result else {
        panic!("{result:?}")
    };
    // The TPM saw exactly the ACM (PCR17 = H(0 || H(ACM))).
    assert_eq!(launched, std::slice::from_ref(&acm));
    let reg = |o: u32| {
        mem.read_u64(PhysAddr(SIMULATED_TXT_REGS + u64::from(o)))
            .unwrap()
    };
    assert_ne!(reg(regs::STS) & regs::STS_SENTER_DONE, 0);
    assert_eq!(reg(regs::ERRORCODE), 0);
    assert_eq!(reg(SIMULATED_TXT_ENTRY), MLE_BASE + u64::from(ENTRY));
    // The hypervisor's post-launch checks accept the heap in guest memory, and the log in the
    // container replays to the PCR17/18 the simulation computed.
    let heap = mem.slice(PRE_HEAP, 0x2_0000).to_vec();
    let v = post::validate_heap(&heap, LAUNCH_SIMULATED).unwrap();
    let mut container = mem.slice(LOG_BASE, u64::from(LOG_SIZE)).to_vec();
    let writer = heap::resume_sinit_log(&mut container, &v.log).unwrap();
    let replayed = EventLog::parse(writer.as_bytes())
        .unwrap()
        .replay(InitialState::DynamicLaunch)
        .unwrap();
    assert_eq!(
        replayed.value(17, HashAlg::Sha256).unwrap(),
        out.measurement.pcrs.value(17, HashAlg::Sha256).unwrap()
    );
}

#[test]
fn a_refused_simulated_senter_sets_txt_errorcode_and_never_senter_done_or_the_tpm() {
    use super::senter::{SenterResult, refusal_code, serve};
    use slipway_hv_core::txt::regs;
    use slipway_protocol::platform::SIMULATED_TXT_REGS;
    let (mut mem, _, banks) = prepared_guest();
    // A hole in the MLE page tables: the second page unmapped.
    let ptab = MLE_BASE - mle_pt::tables_size(MLE_SIZE);
    mem.write_u64(PhysAddr(ptab + 2 * PAGE_SIZE + 8), 0)
        .unwrap();
    let mut tpm_used = false;
    let result = serve(&mut mem, SIMULATED_TXT_REGS, banks, &GOOD, &mut |_| {
        tpm_used = true;
        Ok(())
    });
    let SenterResult::Refused(refusal) = result else {
        panic!("{result:?}")
    };
    assert_eq!(refusal.class(), "page-tables");
    assert!(
        refusal
            .to_string()
            .contains("no holes after the first valid page"),
        "{refusal}"
    );
    assert!(!tpm_used);
    let reg = |o: u32| {
        mem.read_u64(PhysAddr(SIMULATED_TXT_REGS + u64::from(o)))
            .unwrap()
    };
    assert_eq!(reg(regs::STS) & regs::STS_SENTER_DONE, 0);
    assert_eq!(reg(regs::ERRORCODE), refusal_code(&refusal));
    assert_ne!(reg(regs::ERRORCODE) & regs::ERRORCODE_VALID, 0);
}

#[test]
fn each_injected_fault_makes_the_simulated_sinit_refuse_with_its_class() {
    use super::senter::{SenterResult, serve};
    use slipway_hv_core::txt::simulated::SimulatedFault;
    use slipway_protocol::platform::SIMULATED_TXT_REGS;
    for fault in SimulatedFault::SINIT_REFUSALS {
        assert_eq!(SimulatedFault::parse(fault.class()), Some(fault));
        let (mut mem, _, banks) = prepared_guest_with(Some(fault));
        let mut tpm_used = false;
        let result = serve(&mut mem, SIMULATED_TXT_REGS, banks, &GOOD, &mut |_| {
            tpm_used = true;
            Ok(())
        });
        let SenterResult::Refused(refusal) = result else {
            panic!("{fault:?}: {result:?}")
        };
        assert_eq!(refusal.class(), fault.class(), "{fault:?}: {refusal}");
        assert!(!tpm_used, "{fault:?}");
    }
    assert_eq!(SimulatedFault::parse("smx"), None);
}

#[test]
fn a_changed_os_mle_data_passes_the_simulated_sinit_and_the_post_launch_check_refuses_it() {
    use super::senter::{SenterResult, serve};
    use slipway_hv_core::txt::simulated::SimulatedFault;
    use slipway_protocol::platform::SIMULATED_TXT_REGS;
    let fault = SimulatedFault::parse("post-launch-heap").unwrap();
    let (mut mem, _, banks) = prepared_guest_with(Some(fault));
    let result = serve(&mut mem, SIMULATED_TXT_REGS, banks, &GOOD, &mut |_| Ok(()));
    assert!(matches!(result, SenterResult::Launched(_)), "{result:?}");
    let heap = mem.slice(PRE_HEAP, 0x2_0000).to_vec();
    let v = post::validate_heap(&heap, LAUNCH_SIMULATED).unwrap();
    // The hand-off pointer Slipway wrote (`plan`) is not what the heap holds now.
    assert_eq!({ v.os_mle.handoff }, 0x20_1000 ^ 0x1000);
}

#[test]
fn the_simulated_bios_heap_is_what_the_pre_launch_sequence_reads() {
    let mut heap = vec![0xffu8; 0x1000];
    slipway_hv_core::txt::simulated::write_bios_heap(&mut heap).unwrap();
    let (bios, table) = heap::read_bios_data(&heap).unwrap();
    assert_eq!(
        { bios.version },
        slipway_hv_core::txt::simulated::SIMULATED_BIOS_DATA_VERSION
    );
    assert_eq!(table.offset, 0);
    assert!(slipway_hv_core::txt::simulated::write_bios_heap(&mut [0u8; 16]).is_none());
}

#[test]
fn the_simulated_mdrs_cover_the_ram_above_1_mib_as_good_memory() {
    let mdrs = super::senter::simulated_mdrs(512 << 20);
    assert_eq!(mdrs.len(), 3);
    assert_eq!(
        ({ mdrs[1].base }, { mdrs[1].length }),
        (0x10_0000, (512 << 20) - 0x10_0000)
    );
    assert_eq!(mdrs[2].mem_type, post::MDR_PCIE_CONFIG);
}
