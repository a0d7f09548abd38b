//! The simulated SINIT: what the QEMU harness does in place of GETSEC[SENTER] and Intel's SINIT
//! ACM for `launch=txt-simulated`, and what `cargo xtask predict` computes for PCR17/18.
//!
//! SIMULATED: no Intel code runs, no signature is checked (the processor checks it inside
//! GETSEC; here nothing can). The simulation applies the MLE guide's rules to what the
//! hypervisor prepared (heap tables, MLE header, page tables with hv-core's one checker, PMRs),
//! hashes the MLE by walking its page tables, and produces SINIT's measurements in the TPM 2.0
//! details/authorities mapping:
//!
//! - PCR17 starts with the locality-4 hash sequence over the ACM (`H(0^n || H(ACM))`, event
//!   0x402), then `H(data)` extends: BIOS ACM registration data (0x40a), processor S-CRTM status
//!   (0x40b), OsSinitData capabilities (0x40f), LCP control (0x40c), LCP details (0x412), STM
//!   (0x40e), the MLE hash (0x404, digest `H(MLE)`), NV info (0x414);
//! - PCR18: SINIT's public key (0x410, digest `H(key)`), S-CRTM status (0x40b), OsSinitData
//!   capabilities (0x40f), LCP control (0x40c), LCP authorities (0x413), NV info (0x414).
//!
//! Real SINITs decide their exact sequence (version- and policy-dependent); only hardware can
//! confirm it. The verifier therefore checks the MLE-hash event against the prediction and
//! PCR17/18 as a whole against golden values.

use std::fmt;

use slipway_hv_core::addr::PhysRange;
use slipway_hv_core::memory::PhysMemory;
use slipway_hv_core::txt::acm::{self, AcmError, SinitInfo};
use slipway_hv_core::txt::heap::{self, HeapError, SIZE_FIELD};
use slipway_hv_core::txt::layout::{
    CAP_TCG2_EVENT_LOG, EventLogPointer2_1, MLE_HEADER_UUID, MleHeader, SinitMdr, SinitMleData,
};
use slipway_hv_core::txt::mle_pt::{self, CheckError, Forbidden};
use slipway_hv_core::txt::pmr::{self, PmrError, Pmrs};
use slipway_measure::hash::{event_digests, hash};
use slipway_measure::log::LogWriter;
use slipway_measure::pcr::{InitialState, PcrBanks};
use slipway_measure::{BankSet, DigestList, HashAlg, MultiHasher};

/// TXT event types (the 0x400 block), defined once in hv-core.
pub use slipway_hv_core::txt::layout::{
    EVTYPE_BIOSAC_REG_DATA, EVTYPE_CPU_SCRTM_STAT, EVTYPE_HASH_START, EVTYPE_LCP_AUTHORITIES_HASH,
    EVTYPE_LCP_CONTROL_HASH, EVTYPE_LCP_DETAILS_HASH, EVTYPE_MLE_HASH, EVTYPE_NV_INFO_HASH,
    EVTYPE_OSSINITDATA_CAP_HASH, EVTYPE_SINIT_PUBKEY_HASH, EVTYPE_STM_HASH,
};

/// The platform the simulation presents (defined once, in hv-core).
pub use slipway_hv_core::txt::simulated::SIMULATED_PLATFORM;

/// The platform values SINIT measures besides the ACM and the MLE. The simulation uses
/// [`PlatformMeasurements::SIMULATED`]; for hardware these are the platform's (BIOS ACM, LCP,
/// STM, S-CRTM) and PCR17/18 are golden values of the fleet's platforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformMeasurements {
    pub bios_acm_id: [u8; 20],
    pub edx_senter_flags: u32,
    pub mseg_valid: u64,
    pub processor_scrtm_status: u32,
    pub lcp_policy_control: u32,
    pub lcp_details: [u8; 32],
    pub lcp_authorities: [u8; 32],
    pub stm_hash: [u8; 20],
    pub nv_info: [u8; 32],
}

impl PlatformMeasurements {
    /// No BIOS ACM, no STM, no launch-control policy, no S-CRTM.
    pub const SIMULATED: PlatformMeasurements = PlatformMeasurements {
        bios_acm_id: [0; 20],
        edx_senter_flags: 0,
        mseg_valid: 0,
        processor_scrtm_status: 0,
        lcp_policy_control: 0,
        lcp_details: [0; 32],
        lcp_authorities: [0; 32],
        stm_hash: [0; 20],
        nv_info: [0; 32],
    };
}

/// One SINIT event: PCR, type, digests per bank, data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinitEvent {
    pub pcr: u32,
    pub event_type: u32,
    pub digests: DigestList,
    pub data: Vec<u8>,
    /// The hash-start event: PCR17 is *set* to `H(0^n || digest)`, not extended by the guest.
    pub hash_start: bool,
}

/// SINIT's events and the PCR17/18 values they give.
#[derive(Clone, Debug)]
pub struct SinitMeasurement {
    pub events: Vec<SinitEvent>,
    pub pcrs: PcrBanks,
}

fn measured(banks: &BankSet, pcr: u32, event_type: u32, data: Vec<u8>) -> SinitEvent {
    SinitEvent {
        pcr,
        event_type,
        digests: event_digests(banks, &data),
        data,
        hash_start: false,
    }
}

/// SINIT's measurements for `acm` (its bytes, key at `key`) and an MLE whose per-bank hash is
/// `mle_hash`, with OsSinitData capabilities `caps`.
pub fn sinit_measurement(
    banks: &BankSet,
    acm_bytes: &[u8],
    key: &[u8],
    mle_hash: &DigestList,
    caps: u32,
    platform: &PlatformMeasurements,
) -> SinitMeasurement {
    let mut biosac = platform.bios_acm_id.to_vec();
    biosac.extend_from_slice(&platform.edx_senter_flags.to_le_bytes());
    biosac.extend_from_slice(&platform.mseg_valid.to_le_bytes());
    let scrtm = platform.processor_scrtm_status.to_le_bytes().to_vec();
    let caps = caps.to_le_bytes().to_vec();
    let lcp_control = platform.lcp_policy_control.to_le_bytes().to_vec();
    let events = vec![
        SinitEvent {
            pcr: 17,
            event_type: EVTYPE_HASH_START,
            digests: event_digests(banks, acm_bytes),
            data: Vec::new(),
            hash_start: true,
        },
        measured(banks, 17, EVTYPE_BIOSAC_REG_DATA, biosac),
        measured(banks, 17, EVTYPE_CPU_SCRTM_STAT, scrtm.clone()),
        measured(banks, 17, EVTYPE_OSSINITDATA_CAP_HASH, caps.clone()),
        measured(banks, 17, EVTYPE_LCP_CONTROL_HASH, lcp_control.clone()),
        measured(
            banks,
            17,
            EVTYPE_LCP_DETAILS_HASH,
            platform.lcp_details.to_vec(),
        ),
        measured(banks, 17, EVTYPE_STM_HASH, platform.stm_hash.to_vec()),
        SinitEvent {
            pcr: 17,
            event_type: EVTYPE_MLE_HASH,
            digests: *mle_hash,
            data: Vec::new(),
            hash_start: false,
        },
        measured(banks, 17, EVTYPE_NV_INFO_HASH, platform.nv_info.to_vec()),
        SinitEvent {
            pcr: 18,
            event_type: EVTYPE_SINIT_PUBKEY_HASH,
            digests: event_digests(banks, key),
            data: Vec::new(),
            hash_start: false,
        },
        measured(banks, 18, EVTYPE_CPU_SCRTM_STAT, scrtm),
        measured(banks, 18, EVTYPE_OSSINITDATA_CAP_HASH, caps),
        measured(banks, 18, EVTYPE_LCP_CONTROL_HASH, lcp_control),
        measured(
            banks,
            18,
            EVTYPE_LCP_AUTHORITIES_HASH,
            platform.lcp_authorities.to_vec(),
        ),
        measured(banks, 18, EVTYPE_NV_INFO_HASH, platform.nv_info.to_vec()),
    ];
    let mut pcrs = PcrBanks::new(banks, InitialState::DynamicLaunch);
    for e in &events {
        // Hash start from 0 and an extend of 0 give the same value: H(0^n || digest).
        let _ = pcrs.extend_all(e.pcr, &e.digests);
    }
    SinitMeasurement { events, pcrs }
}

/// Writes SINIT's events into its log container (after what is there), in order.
pub fn append_sinit_events(
    writer: &mut LogWriter<'_>,
    measurement: &SinitMeasurement,
) -> Result<(), &'static str> {
    for e in &measurement.events {
        let digests = e
            .digests
            .ordered_for(writer.banks())
            .map_err(|_| "banks differ from the TPM's")?;
        writer
            .append(e.pcr, e.event_type, &digests, &e.data)
            .map_err(|_| "SINIT's events do not fit")?;
    }
    Ok(())
}

/// Why the simulated SINIT refuses the launch: each names the guide's rule.
#[derive(Debug)]
pub enum Refusal {
    Heap(HeapError),
    Acm(AcmError),
    PageTables(CheckError),
    MleHeader(&'static str),
    Pmr(PmrError),
    Capabilities(&'static str),
    /// The log container is unreadable or SINIT's events do not fit it.
    EventLog(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("simulated SINIT refuses the launch: ")?;
        match self {
            Refusal::Heap(e) => e.fmt(f),
            Refusal::Acm(e) => e.fmt(f),
            Refusal::PageTables(e) => e.fmt(f),
            Refusal::MleHeader(rule) => write!(f, "MLE header: {rule}"),
            Refusal::Pmr(e) => e.fmt(f),
            Refusal::Capabilities(rule) => write!(f, "OsSinitData.capabilities: {rule}"),
            Refusal::EventLog(rule) => write!(f, "event-log container: {rule}"),
        }
    }
}

impl Refusal {
    /// The refusal class (one QEMU test per class).
    pub fn class(&self) -> &'static str {
        match self {
            Refusal::Heap(_) => "heap",
            Refusal::Acm(_) => "acm",
            Refusal::PageTables(_) => "page-tables",
            Refusal::MleHeader(_) => "mle-header",
            Refusal::Pmr(_) => "pmr",
            Refusal::Capabilities(_) => "capabilities",
            Refusal::EventLog(_) => "event-log",
        }
    }
}

/// What the platform gives the simulated SINIT besides guest memory.
pub struct SenterInputs<'a> {
    pub heap_base: u64,
    pub sinit_region: PhysRange,
    /// The SINIT module as the hypervisor copied it to the SINIT region.
    pub acm: &'a [u8],
    pub banks: BankSet,
    /// SINIT's memory descriptor records for this machine.
    pub mdrs: &'a [SinitMdr],
}

/// The state after a simulated SENTER.
#[derive(Debug)]
pub struct SenterOutcome {
    pub measurement: SinitMeasurement,
    pub mle_hash: DigestList,
    /// The MLE's entry point (physical, from the header and the page tables).
    pub entry: u64,
    /// SinitMleData's table (from its size field on), to write at `sinit_mle_offset` in the heap.
    pub sinit_mle_table: Vec<u8>,
    pub sinit_mle_offset: usize,
    /// The log container after SINIT's events, and the updated pointer element.
    pub log: EventLogPointer2_1,
    pub log_container: Vec<u8>,
}

/// GETSEC[SENTER] and SINIT, simulated: checks the heap, SINIT, the MLE page tables, header and
/// PMRs by the guide's rules, hashes the MLE and prepares SINIT's measurements and SinitMleData.
/// `heap` is the TXT heap's bytes; `mem` guest memory (page tables, MLE, log container).
pub fn simulate_senter(
    mem: &impl PhysMemory,
    heap: &[u8],
    input: &SenterInputs<'_>,
) -> Result<SenterOutcome, Refusal> {
    let tables = heap::locate_tables(heap, 0).map_err(Refusal::Heap)?;
    let (os_sinit, log) =
        heap::read_os_sinit_data(tables.os_sinit.body(heap)).map_err(Refusal::Heap)?;
    let info: SinitInfo = acm::check_sinit(input.acm, &SIMULATED_PLATFORM).map_err(Refusal::Acm)?;
    acm::check_fits_region(&info, input.sinit_region.len()).map_err(Refusal::Acm)?;
    let heap_range = PhysRange::new(input.heap_base, input.heap_base + heap.len() as u64);
    let forbidden = [
        Forbidden {
            what: "the TXT heap",
            range: heap_range,
        },
        Forbidden {
            what: "the SINIT region",
            range: input.sinit_region,
        },
    ];
    let mut pieces = Vec::new();
    let extent = mle_pt::check_mle_page_tables(
        mem,
        os_sinit.mle_ptab,
        os_sinit.mle_size,
        &forbidden,
        |p, l| pieces.push((p, l)),
    )
    .map_err(Refusal::PageTables)?;
    let mut hasher = MultiHasher::new(&input.banks);
    let mut mle = Vec::with_capacity(os_sinit.mle_size as usize);
    for &(page, len) in &pieces {
        let mut buf = vec![0u8; len as usize];
        mem.read(slipway_hv_core::addr::PhysAddr(page), &mut buf)
            .map_err(|_| Refusal::PageTables(CheckError::Unreadable { phys: page }))?;
        hasher.update(&buf);
        mle.extend_from_slice(&buf);
    }
    let mle_hash = hasher.finalize();
    // The MLE header, at its linear address (relative to the first valid page here).
    let hdr_at = os_sinit
        .mle_hdr_base
        .checked_sub(extent.first_valid_linear)
        .map(|o| o as usize)
        .filter(|&o| o + MleHeader::SIZE <= mle.len())
        .ok_or(Refusal::MleHeader(
            "mle_hdr_base does not lie inside the measured MLE",
        ))?;
    let header = MleHeader::read(&mle[hdr_at..]).map_err(|_| Refusal::MleHeader("unreadable"))?;
    if header.uuid != MLE_HEADER_UUID {
        return Err(Refusal::MleHeader("uuid is not the MLE header UUID"));
    }
    if header.version < info.info.min_mle_header_ver {
        return Err(Refusal::MleHeader(
            "version is below SINIT's min_mle_header_ver",
        ));
    }
    if u64::from(header.entry_point) >= os_sinit.mle_size
        || header.mle_start > header.mle_end
        || u64::from(header.mle_end - header.mle_start) != os_sinit.mle_size
    {
        return Err(Refusal::MleHeader(
            "entry point outside the MLE, or mle_end - mle_start differs from OsSinitData.mle_size",
        ));
    }
    let pmrs = Pmrs {
        lo_base: os_sinit.vtd_pmr_lo_base,
        lo_size: os_sinit.vtd_pmr_lo_size,
        hi_base: os_sinit.vtd_pmr_hi_base,
        hi_size: os_sinit.vtd_pmr_hi_size,
    };
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
    .map_err(Refusal::Pmr)?;
    let allowed = info.info.capabilities & header.capabilities;
    if os_sinit.capabilities & !allowed != 0 {
        return Err(Refusal::Capabilities(
            "selects a capability SINIT or the MLE header does not offer",
        ));
    }
    if os_sinit.capabilities & CAP_TCG2_EVENT_LOG == 0 {
        return Err(Refusal::Capabilities(
            "the TCG 2.0 event log (bit 9) is not selected",
        ));
    }
    let acm_bytes = &input.acm[..info.size as usize];
    let key = &input.acm[info.key_offset..info.key_offset + info.key_len];
    let measurement = sinit_measurement(
        &input.banks,
        acm_bytes,
        key,
        &mle_hash,
        os_sinit.capabilities,
        &PlatformMeasurements::SIMULATED,
    );
    // SINIT's events into the container.
    let mut container = vec![0u8; log.allocated_size as usize];
    mem.read(
        slipway_hv_core::addr::PhysAddr(log.phys_addr),
        &mut container,
    )
    .map_err(|_| Refusal::EventLog("unreadable"))?;
    let used = {
        let mut writer = LogWriter::resume(&mut container, log.next_record_offset as usize)
            .map_err(|_| {
                Refusal::EventLog("does not hold a crypto-agile log up to next_record_offset")
            })?;
        append_sinit_events(&mut writer, &measurement).map_err(Refusal::EventLog)?;
        writer.len()
    };
    let mut new_log = log;
    new_log.next_record_offset = used as u32;
    let sinit_mle_table = sinit_mle_data(acm_bytes, &mle, input.mdrs);
    Ok(SenterOutcome {
        measurement,
        mle_hash,
        entry: extent.first_page + u64::from(header.entry_point) - extent.first_valid_linear,
        sinit_mle_table,
        sinit_mle_offset: tables.sinit_mle.offset,
        log: new_log,
        log_container: container,
    })
}

/// SinitMleData version 9 with the MDRs (no DMAR copy: QEMU has no VT-d here).
fn sinit_mle_data(acm: &[u8], mle: &[u8], mdrs: &[SinitMdr]) -> Vec<u8> {
    let mdrs_off = SIZE_FIELD + SinitMleData::SIZE;
    let size = mdrs_off + mdrs.len() * SinitMdr::SIZE;
    let mut data = SinitMleData::ZERO;
    data.version = slipway_hv_core::txt::layout::SINIT_MLE_DATA_VERSION;
    data.sinit_hash
        .copy_from_slice(hash(HashAlg::Sha1, acm).as_bytes());
    data.mle_hash
        .copy_from_slice(hash(HashAlg::Sha1, mle).as_bytes());
    data.num_mdrs = mdrs.len() as u32;
    data.mdrs_off = mdrs_off as u32;
    data.dmar_off = size as u32;
    data.dmar_size = 0;
    let mut table = vec![0u8; size];
    table[..8].copy_from_slice(&(size as u64).to_le_bytes());
    let _ = data.write(&mut table[8..]);
    for (i, m) in mdrs.iter().enumerate() {
        let _ = m.write(&mut table[mdrs_off + i * SinitMdr::SIZE..]);
    }
    table
}
