//! Hypercall requests, and sequences of them from several callers, against hv-core's dispatcher
//! over a platform built from hv-core's own parts: the bitmap frame allocator, guest memory and
//! nested page tables in fake physical memory (as the binary's platform does with real memory),
//! and a `slipway-measure` event log.
//!
//! The input is a sequence of steps; each names a caller (mostly domB) and a request: raw
//! bytes, a structured request (valid in shape, with fields near the interesting limits), or a
//! structured request with one byte changed. Checked after every step:
//! - a request that decodes is the one encoding of its value (canonical), and its response
//!   decodes and answers it;
//! - a refused request changes nothing: the domain table, the event log, the free frames, and
//!   (except a creation cleaning up after itself) not one byte of memory;
//! - an accepted request has exactly its effect: a created domain's memory is zero and mapped;
//!   written and copied bytes read back; a copy is recorded with the SHA-256 of what arrived;
//!   each build step adds one record entry; a measurement is the log's next event;
//! - frame accounting: the free frames plus every live domain's memory and nested-table frames
//!   are all the frames, no frame is both, and at the end, every domain destroyed, all are free;
//! - the table's rules: one console, distinct boot orders, builder requests refused after
//!   hand-off, domains started in ascending boot order; the boot modules are never written.

use arbitrary::{Result as ArbitraryResult, Unstructured};
use slipway_hv_core::addr::{Frame, PAGE_SIZE, PhysAddr, PhysRange};
use slipway_hv_core::build_record::{BuildStep, MAX_BUILD_STEPS, MAX_ENCODED_LEN};
use slipway_hv_core::domain::{Domain, DomainState, DomainTable, MAX_DOMAINS};
use slipway_hv_core::frame_alloc::{AllocError, BitmapFrameAllocator, FrameAllocator};
use slipway_hv_core::guest_memory::GuestMemory;
use slipway_hv_core::hypercall::{self, BUILDER_EVENTS, BootModule, LaunchInfo, Outcome, Platform};
use slipway_hv_core::memory::PhysMemory;
use slipway_hv_core::paging::{PageTable, TableKind};
use slipway_hv_core::testing::FakePhysMemory;
use slipway_measure::events::{
    BUILD_PAYLOAD_POSTCARD_V1, DomainBuildRecord, PCR_DOMAIN_BUILDS, SlipwayEvent,
};
use slipway_measure::log::{LogHeader, LogWriter};
use slipway_measure::{BankSet, EventLog};
use slipway_protocol::v1::{
    self, Capabilities, Digest, DomainId, DomainName, Error, LaunchKind, ModuleName, Request,
    ResponseOk, TpmAlgId, VcpuEntry,
};
use slipway_protocol::{BoundedVec, Bytes, HYPERCALL_BUFFER_SIZE};

/// Fake physical memory: boot modules in the first 64 KiB, the allocator's frames above.
const PHYS_SIZE: u64 = 0x8_0000;
const MODULE_AREA: u64 = 0x1_0000;
/// domB's RAM (its buffer page is not modeled: the dispatcher gets the copied bytes).
const DOMB_MEMORY: u64 = 4 * PAGE_SIZE;
/// The event log's buffer: small, so that a full log is reached.
const LOG_SIZE: usize = 8 * 1024;
/// Steps per input.
const MAX_STEPS: usize = 24;

const MODULES: [(&str, u64, u64); 3] = [
    ("config", 0x0, 0x1800),
    ("hello", 0x2000, 0x9000),
    ("tiny", 0xc000, 0x10),
];

const BANK_CHOICES: [&[TpmAlgId]; 4] = [
    &[],
    &[TpmAlgId::SHA256],
    &[TpmAlgId::SHA1, TpmAlgId::SHA256],
    &[
        TpmAlgId::SHA1,
        TpmAlgId::SHA256,
        TpmAlgId::SHA384,
        TpmAlgId::SHA512,
    ],
];

/// A domain's hardware side, as the binary's `DomainHw` holds it.
struct Hw {
    memory: GuestMemory,
    npt: PageTable,
    /// Every frame the domain's creation took from the allocator (memory and nested tables).
    frames: Vec<u64>,
    /// Whether the dispatcher let this domain have the TPM (at most one live domain may).
    tpm: bool,
}

/// The frame allocator, recording what it hands out and takes back, so that a domain's frames
/// are known without walking its tables and a destruction must give back exactly those.
struct Tracking<'a> {
    inner: BitmapFrameAllocator<'a>,
    allocated: Vec<u64>,
    freed: Vec<u64>,
}

impl Tracking<'_> {
    fn start(&mut self) {
        self.allocated.clear();
        self.freed.clear();
    }
}

impl FrameAllocator for Tracking<'_> {
    fn allocate(&mut self) -> Result<Frame, AllocError> {
        let frame = self.inner.allocate()?;
        self.allocated.push(frame.number());
        Ok(frame)
    }
    fn allocate_contiguous(&mut self, count: u64, align_frames: u64) -> Result<Frame, AllocError> {
        let first = self.inner.allocate_contiguous(count, align_frames)?;
        self.allocated
            .extend((0..count).map(|i| first.number() + i));
        Ok(first)
    }
    fn free(&mut self, frame: Frame) -> Result<(), AllocError> {
        self.inner.free(frame)?;
        self.freed.push(frame.number());
        Ok(())
    }
    fn free_frames(&self) -> u64 {
        self.inner.free_frames()
    }
}

fn sorted(mut frames: Vec<u64>) -> Vec<u64> {
    frames.sort_unstable();
    frames
}

struct FuzzPlatform<'a> {
    mem: FakePhysMemory,
    alloc: Tracking<'a>,
    domains: [Option<Hw>; MAX_DOMAINS],
    log: Option<LogWriter<'a>>,
    events: u32,
    /// The boot's success report, as hv-core's `BootReport` keeps it (a record to mark).
    boot: slipway_hv_core::boot_report::BootReport,
}

impl FuzzPlatform<'_> {
    fn hw(&self, id: DomainId) -> Result<&Hw, Error> {
        self.domains
            .get(usize::from(id.0))
            .and_then(Option::as_ref)
            .ok_or(Error::UnknownDomain)
    }

    /// The binary's `allocate_domain_hw`: zeroed memory, nested tables mapping it, checked.
    fn create_hw(&mut self, id: DomainId, memory_bytes: u64) -> Result<(), Error> {
        let memory =
            GuestMemory::allocate(&mut self.alloc, memory_bytes).map_err(|_| Error::OutOfMemory)?;
        if memory.zero(&mut self.mem).is_err() {
            let _ = memory.scrub_and_free(&mut self.mem, &mut self.alloc);
            return Err(Error::OutOfMemory);
        }
        let mut npt = match PageTable::new(TableKind::Nested, &mut self.mem, &mut self.alloc) {
            Ok(npt) => npt,
            Err(_) => {
                memory
                    .scrub_and_free(&mut self.mem, &mut self.alloc)
                    .expect("frees");
                return Err(Error::OutOfMemory);
            }
        };
        if memory
            .map_into(&mut npt, &mut self.mem, &mut self.alloc)
            .is_err()
        {
            npt.teardown(&mut self.mem, &mut self.alloc).expect("frees");
            memory
                .scrub_and_free(&mut self.mem, &mut self.alloc)
                .expect("frees");
            return Err(Error::OutOfMemory);
        }
        // (The binary also runs `paging::check_tables` here: a paging self-check with its own
        // tests, left out because it costs more than the rest of a creation.)
        self.domains[usize::from(id.0)] = Some(Hw {
            memory,
            npt,
            frames: Vec::new(),
            tpm: false,
        });
        Ok(())
    }

    /// Destroys a domain's hardware side (the binary's destruction: tables, scrub, free); it
    /// must give back exactly the frames its creation took.
    fn destroy(&mut self, id: DomainId) {
        let Some(hw) = self.domains[usize::from(id.0)].take() else {
            return;
        };
        self.alloc.start();
        let frames = hw.memory.size() / PAGE_SIZE;
        hw.npt
            .teardown(&mut self.mem, &mut self.alloc)
            .expect("tables free");
        let freed = hw
            .memory
            .scrub_and_free(&mut self.mem, &mut self.alloc)
            .expect("memory frees");
        assert_eq!(freed, frames, "every memory frame is freed");
        assert!(self.alloc.allocated.is_empty(), "destruction allocated");
        assert_eq!(
            sorted(std::mem::take(&mut self.alloc.freed)),
            sorted(hw.frames),
            "destruction gives back exactly the domain's frames"
        );
    }
}

impl Platform for FuzzPlatform<'_> {
    fn create_domain(
        &mut self,
        id: DomainId,
        memory_bytes: u64,
        _vcpus: u16,
        capabilities: Capabilities,
    ) -> Result<(), Error> {
        if self
            .domains
            .get(usize::from(id.0))
            .is_none_or(Option::is_some)
        {
            return Err(Error::TooManyDomains);
        }
        self.alloc.start();
        let result = self.create_hw(id, memory_bytes);
        let allocated = sorted(std::mem::take(&mut self.alloc.allocated));
        let freed = sorted(std::mem::take(&mut self.alloc.freed));
        match (&result, self.domains[usize::from(id.0)].as_mut()) {
            (Ok(()), Some(hw)) => {
                assert!(freed.is_empty(), "a successful creation freed frames");
                hw.frames = allocated;
                hw.tpm = capabilities.tpm;
            }
            (Err(_), None) => {
                assert_eq!(allocated, freed, "a failed creation gives back every frame")
            }
            _ => unreachable!("hardware exists exactly when the creation succeeded"),
        }
        result
    }

    fn populate_from_module(
        &mut self,
        id: DomainId,
        module: &BootModule,
        offset: u64,
        length: u64,
        gpa: u64,
    ) -> Result<(), Error> {
        let src = module
            .phys
            .start
            .checked_add(offset)
            .ok_or(Error::RangeOutsideModule)?;
        let hw = self.domains[usize::from(id.0)]
            .as_ref()
            .ok_or(Error::UnknownDomain)?;
        hw.memory
            .copy_from_host(&mut self.mem, src, gpa, length)
            .map_err(|_| Error::RangeOutsideDomain)
    }

    fn populated_sha256(&mut self, id: DomainId, gpa: u64, length: u64) -> Option<[u8; 32]> {
        self.hw(id).ok()?.memory.sha256(&self.mem, gpa, length).ok()
    }

    fn write_memory(&mut self, id: DomainId, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        let hw = self.domains[usize::from(id.0)]
            .as_ref()
            .ok_or(Error::UnknownDomain)?;
        hw.memory
            .write(&mut self.mem, gpa, bytes)
            .map_err(|_| Error::RangeOutsideDomain)
    }

    fn console_write(&mut self, _caller: DomainId, bytes: &[u8]) {
        assert!(bytes.len() <= v1::CONSOLE_WRITE_MAX);
    }

    fn measure(
        &mut self,
        _caller: DomainId,
        pcr: u8,
        event_type: u32,
        digests: &[Digest],
        event_data: &[u8],
    ) -> Result<u32, Error> {
        assert!(
            BUILDER_EVENTS.contains(&(pcr, event_type)),
            "measure asked for a forbidden event"
        );
        let log = self.log.as_mut().ok_or(Error::TpmFailed)?;
        let mut list = slipway_measure::DigestList::new();
        for digest in digests {
            let digest = slipway_measure::Digest::new(digest.alg.into(), &digest.bytes)
                .expect("checked digests convert");
            list.push(digest).expect("checked digests are distinct");
        }
        log.append(u32::from(pcr), event_type, &list, event_data)
            .map_err(|_| Error::EventLogFull)?;
        self.events += 1;
        Ok(self.events - 1)
    }

    fn report_boot_success(&mut self, _caller: DomainId) -> Result<(), Error> {
        let record = self.boot.success(false)?;
        self.boot.written(record);
        Ok(())
    }
    fn seal_measurements(&mut self, planned: &[&Domain]) -> Result<(), Error> {
        for domain in planned {
            let mut payload = vec![0u8; MAX_ENCODED_LEN];
            let len = domain
                .build_record()
                .encode(&mut payload)
                .expect("a build record encodes");
            let Some(log) = self.log.as_mut() else {
                return Ok(());
            };
            let event = SlipwayEvent::DomainBuild(DomainBuildRecord {
                name: domain.name().as_str().as_bytes(),
                payload_format: BUILD_PAYLOAD_POSTCARD_V1,
                payload: &payload[..len],
            });
            log.append_slipway(PCR_DOMAIN_BUILDS, &event, None)
                .map_err(|_| Error::EventLogFull)?;
            self.events += 1;
        }
        Ok(())
    }
}

/// Reads a domain's bytes back.
fn read_back(platform: &FuzzPlatform<'_>, id: DomainId, gpa: u64, len: u64) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    platform
        .hw(id)
        .expect("hw")
        .memory
        .read(&platform.mem, gpa, &mut out)
        .expect("in range");
    out
}

#[derive(Debug, PartialEq, Eq)]
struct DomainSummary {
    id: u16,
    state: DomainState,
    records: usize,
    console: bool,
    boot_order: Option<u16>,
    entries: usize,
}

fn summary(table: &DomainTable) -> (bool, Vec<DomainSummary>) {
    let domains = table
        .iter()
        .map(|d| DomainSummary {
            id: d.id().0,
            state: d.state(),
            records: d.build_record().steps().len(),
            console: d.has_console(),
            boot_order: d.boot_order(),
            entries: (0..d.vcpu_count())
                .filter(|&v| d.vcpu_entry(v).is_some())
                .count(),
        })
        .collect();
    (table.handed_off(), domains)
}

struct World<'a> {
    table: DomainTable,
    platform: FuzzPlatform<'a>,
    modules: Vec<BootModule>,
    module_bytes: Vec<u8>,
    banks: &'static [TpmAlgId],
    domb: DomainId,
    total_frames: u64,
}

impl World<'_> {
    fn ids(&self) -> Vec<DomainId> {
        self.table.iter().map(Domain::id).collect()
    }

    /// Frame accounting and the table's rules.
    fn check(&self) {
        let tpm_holders = self
            .platform
            .domains
            .iter()
            .flatten()
            .filter(|hw| hw.tpm)
            .count();
        assert!(tpm_holders <= 1, "{tpm_holders} live domains hold the TPM");
        let mut owned = vec![false; (PHYS_SIZE / PAGE_SIZE) as usize];
        let mut owned_count = 0u64;
        for (slot, hw) in self.platform.domains.iter().enumerate() {
            let Some(hw) = hw else {
                continue;
            };
            let domain = self
                .table
                .get(DomainId(slot as u16))
                .expect("hardware only for known domains");
            assert!(matches!(
                domain.state(),
                DomainState::Planned | DomainState::Running
            ));
            assert_eq!(hw.memory.size(), domain.memory_bytes());
            for run in hw.memory.runs() {
                for i in 0..run.frames {
                    let frame = run.first.number() + i;
                    assert!(
                        hw.frames.binary_search(&frame).is_ok(),
                        "memory frame {frame:#x} was not allocated for it"
                    );
                }
            }
            for &number in &hw.frames {
                let frame = number * PAGE_SIZE;
                assert!(
                    (MODULE_AREA..PHYS_SIZE).contains(&frame),
                    "frame {frame:#x} outside the allocator"
                );
                assert!(
                    !self
                        .platform
                        .alloc
                        .inner
                        .is_frame_free(Frame::from_number(number)),
                    "owned frame {frame:#x} is free"
                );
                assert!(
                    !std::mem::replace(&mut owned[number as usize], true),
                    "frame {frame:#x} owned twice"
                );
                owned_count += 1;
            }
        }
        assert_eq!(
            self.platform.alloc.free_frames() + owned_count,
            self.total_frames,
            "free frames plus owned frames are all frames"
        );
        let consoles = self.table.iter().filter(|d| d.has_console()).count();
        assert!(consoles <= 1);
        let orders: Vec<u16> = self.table.iter().filter_map(Domain::boot_order).collect();
        let mut unique = orders.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), orders.len(), "boot orders are distinct");
        for domain in self.table.iter() {
            assert!(domain.build_record().steps().len() <= MAX_BUILD_STEPS);
            assert_eq!(
                domain.capabilities().builder,
                domain.id() == self.domb && !self.table.handed_off()
            );
        }
    }

    fn step(&mut self, caller: DomainId, bytes: &[u8]) {
        let before = summary(&self.table);
        let writes = self.platform.mem.writes;
        let free = self.platform.alloc.free_frames();
        let log_len = self.platform.log.as_ref().map(LogWriter::len);
        let events = self.platform.events;
        let launch = LaunchInfo {
            launch_kind: LaunchKind::Emulated,
            active_banks: self.banks,
            modules: &self.modules,
        };
        let mut response = [0u8; HYPERCALL_BUFFER_SIZE];
        let reply = hypercall::dispatch(
            &mut self.table,
            &launch,
            &mut self.platform,
            caller,
            bytes,
            &mut response,
        )
        .expect("every response encodes");
        assert!(reply.response_len <= v1::MAX_RESPONSE_LEN);
        let answer =
            v1::decode_response(&response[..reply.response_len]).expect("responses decode");
        let request = v1::decode_request(bytes);
        if let Ok(request) = &request {
            let mut again = [0u8; HYPERCALL_BUFFER_SIZE];
            let len = v1::encode_request(request, &mut again).expect("decoded requests encode");
            assert_eq!(
                &again[..len],
                bytes,
                "a request has exactly one accepted encoding"
            );
        }
        match (&request, &answer) {
            (_, Err(error)) => {
                assert_eq!(reply.outcome, Outcome::Resume);
                assert_eq!(
                    summary(&self.table),
                    before,
                    "refused ({error:?}) but the table changed"
                );
                assert_eq!(
                    self.platform.alloc.free_frames(),
                    free,
                    "refused ({error:?}) but frames moved"
                );
                assert_eq!(
                    self.platform.log.as_ref().map(LogWriter::len),
                    log_len,
                    "refused but logged"
                );
                assert_eq!(self.platform.events, events);
                if !matches!(request, Ok(Request::CreateDomain { .. })) {
                    assert_eq!(
                        self.platform.mem.writes, writes,
                        "refused ({error:?}) but memory was written"
                    );
                }
                if request.is_err() {
                    assert!(matches!(
                        error,
                        Error::MalformedRequest | Error::BadMagic | Error::UnsupportedVersion
                    ));
                }
            }
            (Err(_), Ok(_)) => panic!("an undecodable request was answered Ok"),
            (Ok(request), Ok(ok)) => self.accepted(caller, request, ok, reply.outcome, &before),
        }
        self.check();
    }

    fn accepted(
        &mut self,
        caller: DomainId,
        request: &Request,
        ok: &ResponseOk,
        outcome: Outcome,
        before: &(bool, Vec<DomainSummary>),
    ) {
        let records = |id: DomainId, summary: &(bool, Vec<DomainSummary>)| {
            summary.1.iter().find(|d| d.id == id.0).map(|d| d.records)
        };
        let now = summary(&self.table);
        let recorded_one = |id: &DomainId| {
            assert_eq!(
                records(*id, &now),
                records(*id, before).map(|n| n + 1),
                "one record entry per build step"
            );
        };
        if request.needs_builder() {
            assert_eq!(caller, self.domb, "only domB builds");
            assert!(!before.0, "builder request accepted after hand-off");
        }
        if matches!(request, Request::ReportBootSuccess) {
            assert!(before.0, "a boot reported successful before hand-off");
            let control = self
                .table
                .get(caller)
                .is_some_and(|d| d.capabilities().granted.control);
            assert!(
                control,
                "a boot reported successful by a domain without control"
            );
            assert_eq!(
                self.platform.boot.success(false),
                Err(Error::BootAlreadyReported),
                "a second report is refused"
            );
        }
        match request {
            Request::CreateDomain {
                name,
                memory_bytes,
                vcpus,
                capabilities,
            } => {
                let ResponseOk::DomainCreated(id) = ok else {
                    panic!("{ok:?}")
                };
                let domain = self.table.get(*id).expect("created");
                assert_eq!(
                    (domain.name(), domain.memory_bytes(), domain.vcpu_count()),
                    (name, *memory_bytes, *vcpus)
                );
                assert_eq!(domain.capabilities().granted, *capabilities);
                assert_eq!(domain.state(), DomainState::Planned);
                let memory = read_back(&self.platform, *id, 0, *memory_bytes);
                assert!(
                    memory.iter().all(|&b| b == 0),
                    "a new domain's memory is zero"
                );
            }
            Request::WriteMemory { domain, gpa, bytes } => {
                assert_eq!(
                    read_back(&self.platform, *domain, *gpa, bytes.len() as u64),
                    bytes.as_slice()
                );
                recorded_one(domain);
            }
            Request::PopulateFromModule {
                domain,
                module,
                module_offset,
                length,
                gpa,
            } => {
                let source = &self.modules[usize::from(*module)];
                let start = (source.phys.start.0 + module_offset) as usize;
                let expected = &self.module_bytes[start..start + *length as usize];
                assert_eq!(read_back(&self.platform, *domain, *gpa, *length), expected);
                recorded_one(domain);
                let steps = self
                    .table
                    .get(*domain)
                    .expect("exists")
                    .build_record()
                    .steps();
                let Some(BuildStep::PopulateFromModule {
                    sha256: Some(sha256),
                    ..
                }) = steps.last()
                else {
                    panic!("a copy is recorded with its digest: {:?}", steps.last())
                };
                use sha2::Digest as _;
                assert_eq!(sha256.as_slice(), sha2::Sha256::digest(expected).as_slice());
            }
            Request::SetVcpuState { domain, .. }
            | Request::AssignConsole { domain }
            | Request::RequestStart { domain, .. } => {
                recorded_one(domain);
            }
            Request::Measure {
                pcr,
                event_type,
                event_data,
                ..
            } => {
                let ResponseOk::Measured { event_index } = ok else {
                    panic!("{ok:?}")
                };
                assert_eq!(*event_index + 1, self.platform.events);
                let log = self.platform.log.as_ref().expect("measured without a TPM");
                let parsed = EventLog::parse(log.as_bytes()).expect("the log parses");
                let last = parsed.events().last().expect("an event").expect("parses");
                assert_eq!(
                    (last.pcr, last.event_type, last.data),
                    (u32::from(*pcr), *event_type, event_data.as_slice())
                );
            }
            Request::HandOff => {
                let Outcome::HandedOff { order, count } = outcome else {
                    panic!("{outcome:?}")
                };
                let planned: Vec<u16> = before
                    .1
                    .iter()
                    .filter(|d| d.state == DomainState::Planned)
                    .map(|d| d.id)
                    .collect();
                assert_eq!(count, planned.len());
                let mut previous = None;
                for id in &order[..count] {
                    let domain = self.table.get(*id).expect("exists");
                    assert!(planned.contains(&id.0));
                    let order = domain.boot_order().expect("start requested");
                    assert!(
                        previous.is_none_or(|p| p < order),
                        "start order not ascending"
                    );
                    previous = Some(order);
                    for vcpu in 0..domain.vcpu_count() {
                        assert!(domain.vcpu_entry(vcpu).is_some());
                    }
                }
                assert_eq!(
                    self.table.get(self.domb).map(Domain::state),
                    Some(DomainState::Destroyed)
                );
                self.platform.destroy(self.domb);
                for id in &order[..count] {
                    self.table.mark_started(*id).expect("planned domains start");
                }
            }
            Request::Shutdown { exit_code } => {
                assert_eq!(
                    outcome,
                    Outcome::ShutDown {
                        exit_code: *exit_code
                    }
                );
                assert_eq!(
                    self.table.get(caller).map(Domain::state),
                    Some(DomainState::ShutDown {
                        exit_code: *exit_code
                    })
                );
                self.platform.destroy(caller);
            }
            _ => {}
        }
        if !matches!(request, Request::HandOff | Request::Shutdown { .. }) {
            assert_eq!(outcome, Outcome::Resume);
            assert!(ok.answers(request));
        }
    }
}

fn small(u: &mut Unstructured<'_>, typical: u64) -> ArbitraryResult<u64> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => u64::arbitrary_take(u)?,
        1 => u64::MAX - u.int_in_range(0..=typical)?,
        n => u.int_in_range(0..=typical)? & if n < 5 { !0xfff } else { !0 },
    })
}

trait Take: Sized {
    fn arbitrary_take(u: &mut Unstructured<'_>) -> ArbitraryResult<Self>;
}
impl Take for u64 {
    fn arbitrary_take(u: &mut Unstructured<'_>) -> ArbitraryResult<Self> {
        u.arbitrary()
    }
}

fn domain_id(u: &mut Unstructured<'_>, ids: &[DomainId]) -> ArbitraryResult<DomainId> {
    if !ids.is_empty() && u.ratio(7u8, 8u8)? {
        Ok(*u.choose(ids)?)
    } else {
        Ok(DomainId(u.int_in_range(0..=20)?))
    }
}

fn bytes<const N: usize>(u: &mut Unstructured<'_>, max: usize) -> ArbitraryResult<Bytes<N>> {
    let len = u.int_in_range(0..=max.min(N))?;
    let mut out = vec![0u8; len];
    u.fill_buffer(&mut out)?;
    Ok(Bytes::from_slice(&out).expect("bounded"))
}

const NAMES: [&str; 7] = [
    "web-1",
    "web-2",
    "ctl",
    "domb",
    "slipway",
    "a",
    "x-0123456789012345678901234567",
];

fn structured(u: &mut Unstructured<'_>, world: &World<'_>) -> ArbitraryResult<Request> {
    let ids = world.ids();
    let memory = |id: DomainId| world.table.get(id).map_or(0x10000, Domain::memory_bytes);
    Ok(match u.int_in_range(0..=12u8)? {
        0 => Request::QueryBootInfo,
        1 => Request::QueryModule {
            index: u.int_in_range(0..=4)?,
        },
        2 => Request::CreateDomain {
            name: DomainName::new(u.choose(&NAMES)?).expect("valid"),
            memory_bytes: match u.int_in_range(0..=7u8)? {
                0 => u.arbitrary()?,
                1 => u.int_in_range(0..=u64::from(u32::MAX))? << 12,
                2 => v1::SLIPWAY_LOG_GPA + PAGE_SIZE * u.int_in_range(0..=1)?,
                _ => PAGE_SIZE * u.int_in_range(0..=48)?,
            },
            vcpus: u.int_in_range(0..=9)?,
            capabilities: Capabilities {
                control: u.arbitrary()?,
                hardware: u.arbitrary()?,
                recovery: u.arbitrary()?,
                tpm: u.arbitrary()?,
            },
        },
        3 => {
            let domain = domain_id(u, &ids)?;
            Request::PopulateFromModule {
                domain,
                module: u.int_in_range(0..=3)?,
                module_offset: small(u, 0x9000)?,
                length: small(u, 0x9000)?,
                gpa: small(u, memory(domain))?,
            }
        }
        4 => {
            let domain = domain_id(u, &ids)?;
            let gpa = small(u, memory(domain))?;
            let max = if u.ratio(1u8, 16u8)? { 2048 } else { 64 };
            Request::WriteMemory {
                domain,
                gpa,
                bytes: bytes(u, max)?,
            }
        }
        5 => {
            let domain = domain_id(u, &ids)?;
            let entry = if u.arbitrary()? {
                VcpuEntry::Pvh32 {
                    entry_eip: small(u, memory(domain))? as u32,
                    start_info_gpa: small(u, memory(domain))? as u32,
                }
            } else {
                VcpuEntry::Long64 {
                    rip: small(u, memory(domain))?,
                    rsp: small(u, memory(domain))?,
                    cr3: small(u, memory(domain))?,
                    rsi: small(u, memory(domain))?,
                }
            };
            Request::SetVcpuState {
                domain,
                vcpu: u.int_in_range(0..=9)?,
                entry,
            }
        }
        6 => Request::AssignConsole {
            domain: domain_id(u, &ids)?,
        },
        7 => Request::RequestStart {
            domain: domain_id(u, &ids)?,
            boot_order: u.int_in_range(0..=4)?,
        },
        8 => Request::WriteConsole {
            bytes: bytes(u, 80)?,
        },
        9 => {
            let (pcr, event_type) = if u.ratio(7u8, 8u8)? {
                *u.choose(&BUILDER_EVENTS)?
            } else {
                (u.int_in_range(17..=23)?, u.arbitrary()?)
            };
            let mut digests = Vec::new();
            for alg in world.banks {
                if u.ratio(15u8, 16u8)? {
                    let len = alg.digest_len().unwrap_or(32);
                    let len = if u.ratio(15u8, 16u8)? {
                        len
                    } else {
                        u.int_in_range(0..=64)?
                    };
                    digests.push(Digest::new(*alg, &vec![0xab; len]).expect("bounded"));
                }
            }
            if u.ratio(1u8, 16u8)? {
                digests.push(Digest::new(TpmAlgId(u.arbitrary()?), &[1; 32]).expect("bounded"));
            }
            let max_data = if u.ratio(1u8, 16u8)? { 3072 } else { 200 };
            Request::Measure {
                pcr,
                event_type,
                digests: BoundedVec::from_slice(&digests[..digests.len().min(v1::MAX_BANKS)])
                    .expect("bounded"),
                event_data: bytes(u, max_data)?,
            }
        }
        10 => Request::HandOff,
        11 => Request::ReportBootSuccess,
        _ => Request::Shutdown {
            exit_code: u.arbitrary()?,
        },
    })
}

/// The boot modules' bytes (a fixed pattern, made once).
fn module_contents() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        (0..MODULE_AREA as u32)
            .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect()
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let banks = BANK_CHOICES[usize::from(u.arbitrary::<u8>().unwrap_or(3)) % BANK_CHOICES.len()];
    let region = PhysRange::new(MODULE_AREA, PHYS_SIZE);
    let mut storage = vec![0u64; BitmapFrameAllocator::storage_words(&[region])];
    let alloc = Tracking {
        inner: BitmapFrameAllocator::new(&[region], &mut storage).expect("allocator"),
        allocated: Vec::new(),
        freed: Vec::new(),
    };
    let total_frames = alloc.free_frames();
    let mut log_buffer = vec![0u8; LOG_SIZE];
    let log = (!banks.is_empty()).then(|| {
        let algs: Vec<_> = banks.iter().map(|&a| a.into()).collect();
        let set = BankSet::from_algs(&algs).expect("banks");
        LogWriter::new(&mut log_buffer, &LogHeader::slipway(set)).expect("header fits")
    });
    let mut mem = FakePhysMemory::new(0, PHYS_SIZE);
    let module_bytes = module_contents().to_vec();
    mem.write(PhysAddr(0), &module_bytes).expect("fits");
    let modules = MODULES
        .iter()
        .map(|&(name, start, len)| BootModule {
            name: ModuleName::new(name).expect("valid"),
            phys: PhysRange::new(start, start + len),
            domb_gpa: DOMB_MEMORY + start,
        })
        .collect();
    let mut table = DomainTable::new();
    let domb = table.create_boot_domain(DOMB_MEMORY, 1).expect("domB");
    let mut world = World {
        table,
        platform: FuzzPlatform {
            mem,
            alloc,
            domains: [const { None }; MAX_DOMAINS],
            log,
            events: 0,
            boot: slipway_hv_core::boot_report::BootReport::new(
                0,
                Some(slipway_tpm::boot_record::BootRecord::fresh(0).counted(0)),
            ),
        },
        modules,
        module_bytes,
        banks,
        domb,
        total_frames,
    };
    world
        .platform
        .create_domain(domb, DOMB_MEMORY, 1, Capabilities::default())
        .expect("domB's memory");
    world.check();
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(step) = next_step(&mut u, &world) else {
            break;
        };
        world.step(step.0, &step.1);
    }
    assert_eq!(
        world.platform.mem.slice(0, MODULE_AREA),
        world.module_bytes.as_slice(),
        "a boot module was written"
    );
    for id in world.ids() {
        world.platform.destroy(id);
    }
    assert_eq!(
        world.platform.alloc.free_frames(),
        world.total_frames,
        "frames leaked"
    );
}

fn next_step(u: &mut Unstructured<'_>, world: &World<'_>) -> ArbitraryResult<(DomainId, Vec<u8>)> {
    let caller = if u.ratio(7u8, 8u8)? {
        world.domb
    } else {
        domain_id(u, &world.ids())?
    };
    let bytes = match u.int_in_range(0..=7u8)? {
        0 => {
            let len = u.int_in_range(0..=256usize)?;
            u.bytes(len)?.to_vec()
        }
        kind => {
            let request = structured(u, world)?;
            let mut out = [0u8; HYPERCALL_BUFFER_SIZE];
            let len = v1::encode_request(&request, &mut out).expect("requests encode");
            let mut bytes = out[..len].to_vec();
            if kind == 1 {
                let at = u.choose_index(bytes.len())?;
                bytes[at] = u.arbitrary()?;
            }
            bytes
        }
    };
    Ok((caller, bytes))
}
