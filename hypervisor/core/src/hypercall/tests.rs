//! Dispatcher tests over a fake platform: every error path, and that a refused request has no
//! effect and leaves no record.

extern crate std;

use super::*;
use crate::build_record::MAX_BUILD_STEPS;
use crate::domain::StopReason;
use slipway_protocol::v1::{Capabilities, DomainName, VcpuEntry, decode_response, encode_request};
use slipway_protocol::{BoundedVec, Bytes, HYPERCALL_BUFFER_SIZE, REQUEST_MAGIC};
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

#[derive(Default)]
struct FakePlatform {
    calls: Vec<String>,
    fail_create: Option<Error>,
    fail_measure: Option<Error>,
    fail_complete: Option<Error>,
    hash_populates: bool,
    events: u32,
    boot: Option<crate::boot_report::BootReport>,
}

impl Platform for FakePlatform {
    fn create_domain(
        &mut self,
        id: DomainId,
        memory_bytes: u64,
        vcpus: u16,
        _capabilities: Capabilities,
    ) -> Result<(), Error> {
        if let Some(error) = self.fail_create {
            return Err(error);
        }
        self.calls
            .push(format!("create {} {memory_bytes:#x} {vcpus}", id.0));
        Ok(())
    }
    fn populate_from_module(
        &mut self,
        id: DomainId,
        module: &BootModule,
        offset: u64,
        length: u64,
        gpa: u64,
    ) -> Result<(), Error> {
        self.calls.push(format!(
            "populate {} {} {offset:#x} {length:#x} {gpa:#x}",
            id.0, module.name
        ));
        Ok(())
    }
    fn populated_sha256(&mut self, _id: DomainId, gpa: u64, length: u64) -> Option<[u8; 32]> {
        self.hash_populates.then(|| {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&gpa.to_le_bytes());
            digest[8..16].copy_from_slice(&length.to_le_bytes());
            digest
        })
    }
    fn write_memory(&mut self, id: DomainId, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        self.calls
            .push(format!("write {} {gpa:#x} {}", id.0, bytes.len()));
        Ok(())
    }
    fn console_write(&mut self, caller: DomainId, bytes: &[u8]) {
        self.calls.push(format!(
            "console {} {}",
            caller.0,
            String::from_utf8_lossy(bytes)
        ));
    }
    fn measure(
        &mut self,
        _caller: DomainId,
        pcr: u8,
        event_type: u32,
        digests: &[Digest],
        event_data: &[u8],
    ) -> Result<u32, Error> {
        if let Some(error) = self.fail_measure {
            return Err(error);
        }
        self.calls.push(format!(
            "measure {pcr} {event_type:#x} {} {}",
            digests.len(),
            event_data.len()
        ));
        self.events += 1;
        Ok(self.events - 1)
    }
    fn seal_measurements(&mut self, planned: &[&Domain]) -> Result<(), Error> {
        if let Some(error) = self.fail_complete {
            return Err(error);
        }
        for domain in planned {
            self.calls.push(format!("complete {}", domain.name()));
        }
        Ok(())
    }
    fn slot_choice(&mut self, choice: SlotChoice) -> Result<(), Error> {
        let boot = self.boot.as_mut().ok_or(Error::EventDataMalformed)?;
        boot.slot_choice(choice)?;
        self.calls
            .push(format!("slot {} -> {}", choice.from, choice.to));
        Ok(())
    }
    fn report_boot_success(&mut self, caller: DomainId) -> Result<(), Error> {
        let boot = self.boot.as_mut().ok_or(Error::BootRecordUnavailable)?;
        let record = boot.success(false)?;
        boot.written(record);
        self.calls
            .push(format!("known good {} by {}", boot.slot(), caller.0));
        Ok(())
    }
}

const BANKS: [TpmAlgId; 2] = [TpmAlgId::SHA1, TpmAlgId::SHA256];

struct World {
    table: DomainTable,
    modules: Vec<BootModule>,
    platform: FakePlatform,
    domb: DomainId,
}

impl World {
    fn new() -> Self {
        let mut table = DomainTable::new();
        let domb = table.create_boot_domain(0x100_0000, 1).unwrap();
        let module = |name: &str, start: u64, len: u64, gpa: u64| BootModule {
            name: ModuleName::new(name).unwrap(),
            phys: PhysRange::new(start, start + len),
            domb_gpa: gpa,
        };
        let modules = vec![
            module("config", 0x40_0000, 0x800, 0x200_0000),
            module("hello", 0x50_0000, 0x1_2345, 0x200_1000),
        ];
        World {
            table,
            modules,
            platform: FakePlatform::default(),
            domb,
        }
    }

    fn call_raw(&mut self, caller: DomainId, bytes: &[u8]) -> (Result<ResponseOk, Error>, Outcome) {
        let launch = LaunchInfo {
            launch_kind: LaunchKind::Emulated,
            active_banks: &BANKS,
            modules: &self.modules,
        };
        let mut response = [0u8; HYPERCALL_BUFFER_SIZE];
        let reply = dispatch(
            &mut self.table,
            &launch,
            &mut self.platform,
            caller,
            bytes,
            &mut response,
        )
        .unwrap();
        (
            decode_response(&response[..reply.response_len]).unwrap(),
            reply.outcome,
        )
    }

    fn call(&mut self, caller: DomainId, request: Request) -> Result<ResponseOk, Error> {
        let mut bytes = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = encode_request(&request, &mut bytes).unwrap();
        let (result, outcome) = self.call_raw(caller, &bytes[..len]);
        assert_eq!(outcome, Outcome::Resume);
        result
    }

    fn create(&mut self, name: &str, memory_bytes: u64, vcpus: u16) -> Result<DomainId, Error> {
        let capabilities = Capabilities {
            control: name == "ctl",
            ..Default::default()
        };
        let request = Request::CreateDomain {
            name: DomainName::new(name).unwrap(),
            memory_bytes,
            vcpus,
            capabilities,
        };
        match self.call(self.domb, request)? {
            ResponseOk::DomainCreated(id) => Ok(id),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Checks that a refused request changed nothing on the platform.
    fn refused(&mut self, caller: DomainId, request: Request, error: Error) {
        let calls = self.platform.calls.len();
        let records: Vec<usize> = self
            .table
            .iter()
            .map(|d| d.build_record().steps().len())
            .collect();
        assert_eq!(
            self.call(caller, request.clone()),
            Err(error),
            "{request:?}"
        );
        assert_eq!(
            self.platform.calls.len(),
            calls,
            "refused {request:?} had an effect"
        );
        let after: Vec<usize> = self
            .table
            .iter()
            .map(|d| d.build_record().steps().len())
            .collect();
        assert_eq!(records, after, "refused {request:?} was recorded");
    }
}

fn entry() -> VcpuEntry {
    VcpuEntry::Pvh32 {
        entry_eip: 0x10_0000,
        start_info_gpa: 0x1000,
    }
}

fn digests(list: &[(TpmAlgId, usize)]) -> BoundedVec<Digest, { v1::MAX_BANKS }> {
    let all: Vec<Digest> = list
        .iter()
        .map(|(alg, len)| Digest::new(*alg, &vec![0xab; *len]).unwrap())
        .collect();
    BoundedVec::from_slice(&all).unwrap()
}

/// The data of a valid event for `pcr`: the launch configuration `hello` into PCR19, the `hello`
/// module's record (name and exact size) into PCR20.
fn event_data(pcr: u8) -> (u32, Vec<u8>) {
    use slipway_measure::events::ModuleRecord;
    let event = if pcr == 20 {
        SlipwayEvent::BootModule(ModuleRecord {
            name: b"hello",
            size: 0x1_2345,
        })
    } else {
        SlipwayEvent::LaunchConfig(b"hello")
    };
    let mut data = vec![0u8; event.encoded_len()];
    event.encode(&mut data).unwrap();
    (event.event_type(), data)
}

/// A valid measure request of `event_type` into `pcr` (both banks, true digests).
fn valid_measure(pcr: u8, event_type: u32) -> Request {
    use slipway_measure::events::{DecisionAction, DecisionReason, ModuleRecord, PolicyDecision};
    let event = match event_type {
        slipway_measure::events::EV_SLIPWAY_POLICY => SlipwayEvent::Policy(b"policy"),
        EV_SLIPWAY_POLICY_DECISION => SlipwayEvent::PolicyDecision(PolicyDecision {
            reason: DecisionReason::AllChecksPassed,
            action: DecisionAction::StartAll,
            subject: b"",
        }),
        EV_SLIPWAY_BOOT_MODULE => SlipwayEvent::BootModule(ModuleRecord {
            name: b"hello",
            size: 0x1_2345,
        }),
        EV_SLIPWAY_SLOT_CHOICE => SlipwayEvent::SlotChoice(SlotChoice { from: 1, to: 0 }),
        _ => SlipwayEvent::LaunchConfig(b"hello"),
    };
    let mut data = vec![0u8; event.encoded_len()];
    event.encode(&mut data).unwrap();
    let banks =
        slipway_measure::BankSet::from_algs(&[TpmAlgId::SHA1.into(), TpmAlgId::SHA256.into()])
            .unwrap();
    let all: Vec<Digest> = event_digests(&banks, &data)
        .iter()
        .map(|d| Digest::new(d.alg().into(), d.as_bytes()).unwrap())
        .collect();
    Request::Measure {
        pcr,
        event_type,
        digests: BoundedVec::from_slice(&all).unwrap(),
        event_data: Bytes::from_slice(&data).unwrap(),
    }
}

/// A measure request for `pcr` with one digest per `(bank, length)`: the right `H(event data)`
/// where the length is the algorithm's, filler bytes otherwise (for the digest-shape checks).
fn measure(pcr: u8, list: &[(TpmAlgId, usize)]) -> Request {
    let (event_type, data) = event_data(pcr);
    let all: Vec<Digest> = list
        .iter()
        .map(|&(alg, len)| {
            let bank = slipway_measure::BankSet::from_algs(&[alg.into()]).unwrap();
            let digest = event_digests(&bank, &data);
            match digest.as_slice().first() {
                Some(d) if alg.digest_len() == Some(len) => Digest::new(alg, d.as_bytes()).unwrap(),
                _ => Digest::new(alg, &vec![0xab; len]).unwrap(),
            }
        })
        .collect();
    Request::Measure {
        pcr,
        event_type,
        digests: BoundedVec::from_slice(&all).unwrap(),
        event_data: Bytes::from_slice(&data).unwrap(),
    }
}

#[test]
fn queries_report_the_launch_and_modules() {
    let mut w = World::new();
    let domb = w.domb;
    match w.call(domb, Request::QueryBootInfo).unwrap() {
        ResponseOk::BootInfo(summary) => {
            assert_eq!(summary.launch_kind, LaunchKind::Emulated);
            assert_eq!(&*summary.active_banks, &BANKS);
            assert_eq!(summary.module_count, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.call(domb, Request::QueryModule { index: 1 }),
        Ok(ResponseOk::Module(ModuleInfo {
            name: ModuleName::new("hello").unwrap(),
            size: 0x1_2345,
            gpa: 0x200_1000
        }))
    );
    w.refused(
        domb,
        Request::QueryModule { index: 2 },
        Error::UnknownModule,
    );
}

#[test]
fn garbage_requests_get_decode_errors() {
    let mut w = World::new();
    let domb = w.domb;
    assert_eq!(w.call_raw(domb, &[]).0, Err(Error::MalformedRequest));
    assert_eq!(w.call_raw(domb, &[0xff; 40]).0, Err(Error::BadMagic));
    let mut bad_version = REQUEST_MAGIC.to_le_bytes().to_vec();
    bad_version.extend_from_slice(&[5, 0, 0]);
    assert_eq!(
        w.call_raw(domb, &bad_version).0,
        Err(Error::UnsupportedVersion)
    );
    let mut bytes = [0u8; 64];
    let len = encode_request(&Request::QueryModule { index: 1 }, &mut bytes).unwrap();
    assert_eq!(
        w.call_raw(domb, &bytes[..len - 1]).0,
        Err(Error::MalformedRequest)
    );
    assert_eq!(
        w.call_raw(domb, &bytes[..len + 1]).0,
        Err(Error::MalformedRequest)
    );
    assert!(w.platform.calls.is_empty());
}

#[test]
fn create_domain_errors() {
    let mut w = World::new();
    let domb = w.domb;
    let create = |name: &str, memory_bytes, vcpus| Request::CreateDomain {
        name: DomainName::new(name).unwrap(),
        memory_bytes,
        vcpus,
        capabilities: Capabilities::default(),
    };
    w.refused(domb, create("domb", 4096, 1), Error::NameReserved);
    w.refused(domb, create("slipway", 4096, 1), Error::NameReserved);
    w.refused(domb, create("a", 0, 1), Error::InvalidMemorySize);
    w.refused(domb, create("a", 4095, 1), Error::InvalidMemorySize);
    w.refused(domb, create("a", !0xfff, 1), Error::InvalidMemorySize);
    w.refused(domb, create("a", 4096, 0), Error::NoVcpus);
    w.refused(domb, create("a", 4096, 200), Error::TooManyVcpus);
    w.platform.fail_create = Some(Error::OutOfMemory);
    w.refused(domb, create("a", 4096, 1), Error::OutOfMemory);
    w.platform.fail_create = None;
    let a = w.create("a", 4096, 1).unwrap();
    assert_eq!(w.platform.calls, ["create 1 0x1000 1"]);
    assert_eq!(w.table.get(a).unwrap().state(), DomainState::Planned);
    w.refused(domb, create("a", 4096, 1), Error::NameTaken);
    // A control domain larger than the hole's start: its RAM continues at 4 GiB, its event-log
    // windows stay in the hole (nothing to refuse).
    let big = w.create("ctl", v1::SLIPWAY_LOG_GPA + 4096, 1).unwrap();
    assert_eq!(w.table.get(big).unwrap().state(), DomainState::Planned);
}

#[test]
fn memory_requests_into_the_hole_below_4_gib_are_outside_the_domain() {
    use slipway_protocol::platform::{DOMAIN_HIGH_RAM_START, DOMAIN_RAM_HOLE_START};
    let mut w = World::new();
    let domb = w.domb;
    // 3.5 GiB: RAM [0, 3 GiB) and [4 GiB, 4.5 GiB).
    let big = w
        .create("big", DOMAIN_RAM_HOLE_START + (1 << 29), 1)
        .unwrap();
    let populate = |gpa, length| Request::PopulateFromModule {
        domain: big,
        module: 1,
        module_offset: 0,
        length,
        gpa,
    };
    let write = |gpa| Request::WriteMemory {
        domain: big,
        gpa,
        bytes: Bytes::from_slice(&[7u8; 16]).unwrap(),
    };
    for gpa in [
        DOMAIN_RAM_HOLE_START - 8,
        DOMAIN_RAM_HOLE_START,
        v1::SLIPWAY_LOG_GPA,
        slipway_protocol::platform::TPM_TIS_BASE,
        DOMAIN_HIGH_RAM_START - 8,
        DOMAIN_HIGH_RAM_START + (1 << 29) - 8,
    ] {
        w.refused(domb, populate(gpa, 16), Error::RangeOutsideDomain);
        w.refused(domb, write(gpa), Error::RangeOutsideDomain);
    }
    for gpa in [DOMAIN_RAM_HOLE_START - 16, DOMAIN_HIGH_RAM_START] {
        assert_eq!(w.call(domb, populate(gpa, 16)), Ok(ResponseOk::Done));
        assert_eq!(w.call(domb, write(gpa)), Ok(ResponseOk::Done));
    }
    // An entry state in the hole is refused like one past the end.
    let entry = |start_info_gpa| Request::SetVcpuState {
        domain: big,
        vcpu: 0,
        entry: VcpuEntry::Pvh32 {
            entry_eip: 0x10_0000,
            start_info_gpa,
        },
    };
    w.refused(domb, entry(0xF000_0000), Error::InvalidEntryState);
    assert_eq!(w.call(domb, entry(0x1000)), Ok(ResponseOk::Done));
}

#[test]
fn memory_requests_check_every_range_with_overflow() {
    let mut w = World::new();
    let domb = w.domb;
    let web = w.create("web", 0x20_0000, 1).unwrap();
    let populate = |domain, module, module_offset, length, gpa| Request::PopulateFromModule {
        domain,
        module,
        module_offset,
        length,
        gpa,
    };
    w.refused(
        domb,
        populate(DomainId(9), 1, 0, 1, 0),
        Error::UnknownDomain,
    );
    w.refused(domb, populate(domb, 1, 0, 1, 0), Error::UnknownDomain);
    w.refused(domb, populate(web, 2, 0, 1, 0), Error::UnknownModule);
    w.refused(
        domb,
        populate(web, 1, 0, 0x1_2346, 0),
        Error::RangeOutsideModule,
    );
    w.refused(
        domb,
        populate(web, 1, 0x1_2345, 1, 0),
        Error::RangeOutsideModule,
    );
    w.refused(
        domb,
        populate(web, 1, u64::MAX, 2, 0),
        Error::RangeOutsideModule,
    );
    w.refused(
        domb,
        populate(web, 1, 0, 0x1000, 0x20_0000 - 0xfff),
        Error::RangeOutsideDomain,
    );
    w.refused(
        domb,
        populate(web, 1, 0, 0x1000, u64::MAX - 0x10),
        Error::RangeOutsideDomain,
    );
    assert_eq!(
        w.call(domb, populate(web, 1, 0x345, 0x1_2000, 0x1f_0000 - 0x2000)),
        Ok(ResponseOk::Done)
    );
    let write = |domain, gpa, n: usize| Request::WriteMemory {
        domain,
        gpa,
        bytes: Bytes::from_slice(&vec![7u8; n]).unwrap(),
    };
    w.refused(
        domb,
        write(web, 0x20_0000 - 10, 11),
        Error::RangeOutsideDomain,
    );
    w.refused(
        domb,
        write(web, u64::MAX - 4, 11),
        Error::RangeOutsideDomain,
    );
    w.refused(domb, write(DomainId(0), 0, 1), Error::UnknownDomain);
    assert_eq!(
        w.call(domb, write(web, 0x20_0000 - 11, 11)),
        Ok(ResponseOk::Done)
    );
    assert_eq!(
        w.platform.calls[1..],
        [
            "populate 1 hello 0x345 0x12000 0x1ee000",
            "write 1 0x1ffff5 11"
        ]
    );
    let steps = w.table.get(web).unwrap().build_record().steps();
    assert_eq!(steps.len(), 2);
    let populated = BuildStep::PopulateFromModule {
        module: 1,
        module_name: ModuleName::new("hello").unwrap(),
        module_offset: 0x345,
        length: 0x1_2000,
        gpa: 0x1e_e000,
        sha256: None,
    };
    assert_eq!(steps[0], populated);
    assert_eq!(steps[1], BuildRecord::write_step(0x20_0000 - 11, &[7; 11]));
    // A platform that hashes what it copied gets the digest recorded.
    w.platform.hash_populates = true;
    w.call(domb, populate(web, 0, 0, 0x10, 0x100)).unwrap();
    let BuildStep::PopulateFromModule {
        sha256: Some(digest),
        ..
    } = w.table.get(web).unwrap().build_record().steps()[2]
    else {
        panic!("no digest recorded")
    };
    assert_eq!(
        digest[..16],
        [0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn vcpu_console_and_start_requests() {
    let mut w = World::new();
    let domb = w.domb;
    let web = w.create("web", 0x20_0000, 2).unwrap();
    let ctl = w.create("ctl", 0x20_0000, 1).unwrap();
    let set = |domain, vcpu, entry| Request::SetVcpuState {
        domain,
        vcpu,
        entry,
    };
    w.refused(domb, set(web, 2, entry()), Error::InvalidVcpu);
    w.refused(
        domb,
        set(
            web,
            0,
            VcpuEntry::Pvh32 {
                entry_eip: 0x20_0000,
                start_info_gpa: 0,
            },
        ),
        Error::InvalidEntryState,
    );
    w.refused(domb, set(DomainId(7), 0, entry()), Error::UnknownDomain);
    assert_eq!(w.call(domb, set(web, 1, entry())), Ok(ResponseOk::Done));
    assert_eq!(
        w.call(domb, Request::AssignConsole { domain: ctl }),
        Ok(ResponseOk::Done)
    );
    w.refused(
        domb,
        Request::AssignConsole { domain: web },
        Error::ConsoleAlreadyAssigned,
    );
    assert_eq!(
        w.call(
            domb,
            Request::RequestStart {
                domain: web,
                boot_order: 2
            }
        ),
        Ok(ResponseOk::Done)
    );
    w.refused(
        domb,
        Request::RequestStart {
            domain: web,
            boot_order: 3,
        },
        Error::DuplicateStartRequest,
    );
    w.refused(
        domb,
        Request::RequestStart {
            domain: ctl,
            boot_order: 2,
        },
        Error::DuplicateStartRequest,
    );
    let record = w.table.get(web).unwrap().build_record();
    assert_eq!(
        record.steps(),
        [
            BuildStep::SetVcpuEntry {
                vcpu: 1,
                entry: entry()
            },
            BuildStep::RequestStart { boot_order: 2 }
        ]
    );
}

#[test]
fn measure_accepts_only_pcr_19_and_20_with_every_bank_once() {
    let mut w = World::new();
    let domb = w.domb;
    let good = [(TpmAlgId::SHA1, 20), (TpmAlgId::SHA256, 32)];
    for pcr in [0, 17, 18, 21, 22, 23, 255] {
        w.refused(domb, measure(pcr, &good), Error::PcrNotAllowed);
    }
    // Only the planned event types, each into its PCR: a PCR no planned event goes into is the
    // PCR's fault, an unplanned event type into PCR 19/20 (another PCR's type too) the type's.
    for (pcr, event_type, error) in [
        (19, 0x601, Error::EventTypeNotAllowed),
        (19, 0x603, Error::EventTypeNotAllowed),
        (19, 0x606, Error::EventTypeNotAllowed),
        (20, 0x604, Error::EventTypeNotAllowed),
        (20, 0x605, Error::EventTypeNotAllowed),
        (20, 0x608, Error::EventTypeNotAllowed),
        (21, 0x607, Error::PcrNotAllowed),
        (21, 0x606, Error::PcrNotAllowed),
        (19, 0x4, Error::EventTypeNotAllowed),
        (20, 0x3, Error::EventTypeNotAllowed),
    ] {
        let Request::Measure {
            digests,
            event_data,
            ..
        } = measure(19, &good)
        else {
            unreachable!()
        };
        w.refused(
            domb,
            Request::Measure {
                pcr,
                event_type,
                digests,
                event_data,
            },
            error,
        );
    }
    w.platform.boot = Some(crate::boot_report::BootReport::new(1, None));
    for (pcr, event_type) in BUILDER_EVENTS {
        assert!(
            w.call(domb, valid_measure(pcr, event_type)).is_ok(),
            "PCR{pcr} event type {event_type:#x}"
        );
    }
    w.platform.events = 0;
    w.refused(domb, measure(19, &good[..1]), Error::BankMissing);
    w.refused(
        domb,
        measure(
            19,
            &[
                (TpmAlgId::SHA1, 20),
                (TpmAlgId::SHA256, 32),
                (TpmAlgId::SHA384, 48),
            ],
        ),
        Error::UnknownAlgorithm,
    );
    w.refused(
        domb,
        measure(19, &[(TpmAlgId::SHA1, 20), (TpmAlgId::SHA1, 20)]),
        Error::DuplicateBank,
    );
    w.refused(
        domb,
        measure(20, &[(TpmAlgId::SHA1, 20), (TpmAlgId::SHA256, 20)]),
        Error::DigestLengthWrong,
    );
    assert_eq!(
        w.call(domb, measure(19, &good)),
        Ok(ResponseOk::Measured { event_index: 0 })
    );
    assert_eq!(
        w.call(domb, measure(20, &good)),
        Ok(ResponseOk::Measured { event_index: 1 })
    );
    w.platform.fail_measure = Some(Error::TpmFailed);
    w.refused(domb, measure(20, &good), Error::TpmFailed);
}

#[test]
fn build_records_are_bounded_before_any_effect() {
    let mut w = World::new();
    let domb = w.domb;
    let web = w.create("web", 0x20_0000, 1).unwrap();
    let write = Request::WriteMemory {
        domain: web,
        gpa: 0,
        bytes: Bytes::from_slice(b"x").unwrap(),
    };
    for _ in 0..MAX_BUILD_STEPS {
        assert_eq!(w.call(domb, write.clone()), Ok(ResponseOk::Done));
    }
    w.refused(domb, write, Error::BuildRecordFull);
    w.refused(
        domb,
        Request::RequestStart {
            domain: web,
            boot_order: 0,
        },
        Error::BuildRecordFull,
    );
}

#[test]
fn hand_off_starts_in_order_and_closes_the_builder_interface() {
    let mut w = World::new();
    let domb = w.domb;
    let web = w.create("web", 0x20_0000, 1).unwrap();
    let ctl = w.create("ctl", 0x20_0000, 1).unwrap();
    assert_eq!(w.call(domb, Request::HandOff), Err(Error::PlanIncomplete));
    for (domain, order) in [(web, 9), (ctl, 1)] {
        w.call(
            domb,
            Request::SetVcpuState {
                domain,
                vcpu: 0,
                entry: entry(),
            },
        )
        .unwrap();
        w.call(
            domb,
            Request::RequestStart {
                domain,
                boot_order: order,
            },
        )
        .unwrap();
    }
    // A failing completion (the PCR21 extend, later) leaves everything as it was.
    w.platform.fail_complete = Some(Error::TpmFailed);
    assert_eq!(w.call(domb, Request::HandOff), Err(Error::TpmFailed));
    assert!(!w.table.handed_off());
    w.platform.fail_complete = None;
    w.platform.calls.clear();
    let mut bytes = [0u8; 16];
    let len = encode_request(&Request::HandOff, &mut bytes).unwrap();
    let (result, outcome) = w.call_raw(domb, &bytes[..len]);
    assert_eq!(result, Ok(ResponseOk::Done));
    let Outcome::HandedOff { order, count } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(&order[..count], &[ctl, web]);
    assert_eq!(w.platform.calls, ["complete web", "complete ctl"]);
    assert_eq!(w.table.get(domb).unwrap().state(), DomainState::Destroyed);
    for id in &order[..count] {
        w.table.mark_started(*id).unwrap();
    }

    // From now on every builder request is refused, from anyone, with AfterHandOff.
    let builder_requests = [
        Request::QueryBootInfo,
        Request::QueryModule { index: 0 },
        Request::CreateDomain {
            name: DomainName::new("late").unwrap(),
            memory_bytes: 4096,
            vcpus: 1,
            capabilities: Capabilities::default(),
        },
        Request::PopulateFromModule {
            domain: web,
            module: 0,
            module_offset: 0,
            length: 1,
            gpa: 0,
        },
        Request::WriteMemory {
            domain: web,
            gpa: 0,
            bytes: Bytes::from_slice(b"x").unwrap(),
        },
        Request::SetVcpuState {
            domain: web,
            vcpu: 0,
            entry: entry(),
        },
        Request::AssignConsole { domain: web },
        Request::RequestStart {
            domain: web,
            boot_order: 3,
        },
        measure(19, &[(TpmAlgId::SHA1, 20), (TpmAlgId::SHA256, 32)]),
        Request::HandOff,
    ];
    for request in builder_requests {
        for caller in [web, ctl] {
            w.refused(caller, request.clone(), Error::AfterHandOff);
        }
    }
    // The success report: a control domain, once; the slot it marks is the one domB's
    // measured choice named.
    w.refused(web, Request::ReportBootSuccess, Error::NotPermitted);
    assert_eq!(
        w.call(ctl, Request::ReportBootSuccess),
        Err(Error::BootRecordUnavailable),
        "no boot record: nothing to mark"
    );
    let record = slipway_tpm::boot_record::BootRecord {
        current_slot: 1,
        attempts: 3,
        last_known_good: None,
    };
    let mut boot = crate::boot_report::BootReport::new(1, Some(record));
    boot.slot_choice(SlotChoice { from: 1, to: 0 }).unwrap();
    w.platform.boot = Some(boot);
    assert_eq!(
        w.call(ctl, Request::ReportBootSuccess),
        Ok(ResponseOk::Done)
    );
    assert_eq!(
        w.platform.calls.last().unwrap(),
        &format!("known good 0 by {}", ctl.0)
    );
    w.refused(ctl, Request::ReportBootSuccess, Error::BootAlreadyReported);
    // domB is gone: it cannot call anything any more.
    w.refused(
        domb,
        Request::WriteConsole {
            bytes: Bytes::from_slice(b"hi").unwrap(),
        },
        Error::NotPermitted,
    );
    // The console and shutdown remain.
    assert_eq!(
        w.call(
            web,
            Request::WriteConsole {
                bytes: Bytes::from_slice(b"hi").unwrap()
            }
        ),
        Ok(ResponseOk::Done)
    );
    assert_eq!(w.platform.calls.last().unwrap(), "console 1 hi");
    let len = encode_request(&Request::Shutdown { exit_code: 3 }, &mut bytes).unwrap();
    assert_eq!(
        w.call_raw(web, &bytes[..len]).1,
        Outcome::ShutDown { exit_code: 3 }
    );
    assert_eq!(
        w.table.get(web).unwrap().state(),
        DomainState::ShutDown { exit_code: 3 }
    );
    w.table.mark_crashed(ctl, StopReason::TripleFault).unwrap();
    assert!(w.table.all_finished());
}

#[test]
fn non_builders_cannot_build_before_hand_off() {
    let mut w = World::new();
    // A second running domain without the builder capability (only reachable through a binary
    // bug before hand-off, but the dispatcher must not rely on that).
    let other = w.create("other", 0x1000, 1).unwrap();
    w.table.mark_started(other).unwrap();
    w.refused(other, Request::QueryBootInfo, Error::NotPermitted);
    w.refused(other, Request::HandOff, Error::NotPermitted);
    // Before hand-off nobody reports success: domB is no control domain.
    let domb = w.domb;
    w.refused(domb, Request::ReportBootSuccess, Error::NotPermitted);
    w.refused(other, Request::ReportBootSuccess, Error::NotPermitted);
    let planned = w.create("planned", 0x1000, 1).unwrap();
    w.refused(
        planned,
        Request::WriteConsole {
            bytes: Bytes::from_slice(b"x").unwrap(),
        },
        Error::NotPermitted,
    );
}

#[test]
fn the_build_record_encodes_as_the_pcr21_payload() {
    let mut w = World::new();
    let domb = w.domb;
    let web = w.create("web", 0x20_0000, 1).unwrap();
    w.call(
        domb,
        Request::PopulateFromModule {
            domain: web,
            module: 1,
            module_offset: 0,
            length: 16,
            gpa: 0x1000,
        },
    )
    .unwrap();
    w.call(
        domb,
        Request::SetVcpuState {
            domain: web,
            vcpu: 0,
            entry: entry(),
        },
    )
    .unwrap();
    let mut out = [0u8; 512];
    let len = w
        .table
        .get(web)
        .unwrap()
        .build_record()
        .encode(&mut out)
        .unwrap();
    // version 1, name "web", memory 0x200000 (varint), 1 vCPU, capabilities, 2 steps...
    assert_eq!(&out[..9], &[1, 3, b'w', b'e', b'b', 0x80, 0x80, 0x80, 0x01]);
    assert!(len > 20);
    assert_eq!(
        w.table
            .get(web)
            .unwrap()
            .build_record()
            .encode(&mut out[..8]),
        Err(crate::build_record::RecordError::BufferTooSmall)
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes after a valid header never panic the dispatcher, always get a
        /// decodable response, and a refused request has no effect.
        #[test]
        fn arbitrary_requests_are_answered_without_panics(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            as_builder in any::<bool>(),
        ) {
            let mut w = World::new();
            let other = w.create("other", 0x10_0000, 1).unwrap();
            let caller = if as_builder { w.domb } else { other };
            if !as_builder {
                w.table.mark_started(other).unwrap();
            }
            let mut bytes = REQUEST_MAGIC.to_le_bytes().to_vec();
            bytes.extend_from_slice(&v1::VERSION.to_le_bytes());
            bytes.extend_from_slice(&body);
            let calls = w.platform.calls.len();
            let (result, outcome) = w.call_raw(caller, &bytes);
            if result.is_err() {
                prop_assert_eq!(w.platform.calls.len(), calls);
                prop_assert_eq!(outcome, Outcome::Resume);
            }
            if !as_builder {
                // A non-builder can only write to the console or shut down.
                prop_assert!(w.platform.calls[calls..].iter().all(|c| c.starts_with("console")));
            }
        }
    }

    fn edge() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..0x30_0000,
            Just(u64::MAX),
            Just(u64::MAX - 0xfff),
            Just(0x10_0000),
            Just(0x1_2345)
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        let domain = (0u16..4).prop_map(DomainId);
        prop_oneof![
            Just(Request::QueryBootInfo),
            (0u16..3).prop_map(|index| Request::QueryModule { index }),
            (0usize..3, edge(), 0u16..3).prop_map(|(n, memory_bytes, vcpus)| {
                Request::CreateDomain {
                    name: DomainName::new(["a", "b", "domb"][n]).unwrap(),
                    memory_bytes: memory_bytes & !0xfff,
                    vcpus,
                    capabilities: Capabilities::default(),
                }
            }),
            (domain.clone(), 0u16..3, edge(), edge(), edge()).prop_map(
                |(domain, module, module_offset, length, gpa)| {
                    Request::PopulateFromModule {
                        domain,
                        module,
                        module_offset,
                        length: length % 0x2_0000,
                        gpa,
                    }
                }
            ),
            (domain.clone(), edge(), 0usize..64).prop_map(|(domain, gpa, n)| {
                Request::WriteMemory {
                    domain,
                    gpa,
                    bytes: Bytes::from_slice(&vec![1u8; n]).unwrap(),
                }
            }),
            (domain.clone(), 0u16..3, edge(), edge()).prop_map(|(domain, vcpu, eip, info)| {
                Request::SetVcpuState {
                    domain,
                    vcpu,
                    entry: VcpuEntry::Pvh32 {
                        entry_eip: eip as u32,
                        start_info_gpa: info as u32,
                    },
                }
            }),
            domain
                .clone()
                .prop_map(|domain| Request::AssignConsole { domain }),
            (domain, 0u16..4)
                .prop_map(|(domain, boot_order)| Request::RequestStart { domain, boot_order }),
            Just(Request::HandOff),
        ]
    }

    proptest! {
        /// Random plans: whatever domB asks, every recorded memory step lies inside its domain,
        /// nothing but planned domains is changed, and after hand-off nothing more is built.
        #[test]
        fn random_plans_keep_the_invariants(requests in proptest::collection::vec(request(), 1..40)) {
            let mut w = World::new();
            let domb = w.domb;
            for request in requests {
                let handed_off = w.table.handed_off();
                let mut bytes = [0u8; HYPERCALL_BUFFER_SIZE];
                let len = encode_request(&request, &mut bytes).unwrap();
                let calls = w.platform.calls.len();
                let (result, _) = w.call_raw(domb, &bytes[..len]);
                if handed_off {
                    prop_assert_eq!(result, Err(Error::NotPermitted), "domB is gone after hand-off");
                    prop_assert_eq!(w.platform.calls.len(), calls);
                }
            }
            for domain in w.table.iter() {
                let size = domain.memory_bytes();
                for step in domain.build_record().steps() {
                    match step {
                        BuildStep::PopulateFromModule { gpa, length, module, module_offset, .. } => {
                            prop_assert!(gpa + length <= size);
                            prop_assert!(module_offset + length <= w.modules[usize::from(*module)].phys.len());
                        }
                        BuildStep::WriteMemory { gpa, length, .. } => prop_assert!(gpa + length <= size),
                        BuildStep::SetVcpuEntry { vcpu, .. } => prop_assert!(*vcpu < domain.vcpu_count()),
                        _ => {}
                    }
                }
            }
        }
    }
}

#[test]
fn a_digest_that_is_not_the_hash_of_the_event_data_is_refused() {
    let mut w = World::new();
    let domb = w.domb;
    let good = [(TpmAlgId::SHA1, 20), (TpmAlgId::SHA256, 32)];
    let Request::Measure {
        pcr,
        event_type,
        mut digests,
        event_data,
    } = measure(19, &good)
    else {
        unreachable!()
    };
    // One bit of the SHA-256 digest flipped: the hypervisor's own H(data) differs.
    let mut bytes = digests.as_slice()[1].bytes.as_slice().to_vec();
    bytes[0] ^= 1;
    let mut all = digests.as_slice().to_vec();
    all[1] = Digest::new(TpmAlgId::SHA256, &bytes).unwrap();
    digests = BoundedVec::from_slice(&all).unwrap();
    let lying = Request::Measure {
        pcr,
        event_type,
        digests,
        event_data: event_data.clone(),
    };
    w.refused(domb, lying, Error::DigestMismatch);
    // The same data with its true digests is accepted.
    assert!(matches!(
        w.call(domb, measure(19, &good)),
        Ok(ResponseOk::Measured { .. })
    ));
}

#[test]
fn event_data_that_does_not_decode_as_its_type_is_refused() {
    let mut w = World::new();
    let domb = w.domb;
    // A policy decision's data is [format, reason, action, u16 len, subject]: one byte is not.
    let request = Request::Measure {
        pcr: 19,
        event_type: slipway_measure::events::EV_SLIPWAY_POLICY_DECISION,
        digests: digests(&[(TpmAlgId::SHA1, 20), (TpmAlgId::SHA256, 32)]),
        event_data: Bytes::from_slice(&[1]).unwrap(),
    };
    w.refused(domb, request, Error::EventDataMalformed);
}

#[test]
fn a_module_event_must_name_a_boot_module_and_its_exact_size() {
    use slipway_measure::events::ModuleRecord;
    let mut w = World::new();
    let domb = w.domb;
    for (name, size) in [
        (&b"hello"[..], 0x1_2344),
        (b"absent", 0x1_2345),
        (b"config", 0x1_2345),
    ] {
        let event = SlipwayEvent::BootModule(ModuleRecord { name, size });
        let mut data = vec![0u8; event.encoded_len()];
        event.encode(&mut data).unwrap();
        let request = Request::Measure {
            pcr: 20,
            event_type: event.event_type(),
            digests: digests(&[(TpmAlgId::SHA1, 20), (TpmAlgId::SHA256, 32)]),
            event_data: Bytes::from_slice(&data).unwrap(),
        };
        w.refused(domb, request, Error::ModuleRecordMismatch);
    }
    assert!(matches!(
        w.call(
            domb,
            measure(20, &[(TpmAlgId::SHA1, 20), (TpmAlgId::SHA256, 32)])
        ),
        Ok(ResponseOk::Measured { .. })
    ));
}

#[test]
fn a_second_domain_with_the_tpm_capability_is_refused() {
    let mut w = World::new();
    let domb = w.domb;
    let create = |name: &str, tpm: bool| Request::CreateDomain {
        name: DomainName::new(name).unwrap(),
        memory_bytes: 1 << 20,
        vcpus: 1,
        capabilities: Capabilities {
            control: true,
            tpm,
            ..Default::default()
        },
    };
    assert!(matches!(
        w.call(domb, create("attest", true)),
        Ok(ResponseOk::DomainCreated(_))
    ));
    assert!(matches!(
        w.call(domb, create("other", false)),
        Ok(ResponseOk::DomainCreated(_))
    ));
    assert_eq!(
        w.call(domb, create("snoop", true)),
        Err(Error::TpmAlreadyGranted)
    );
    assert_eq!(
        w.table
            .iter()
            .filter(|d| d.capabilities().granted.tpm)
            .count(),
        1
    );
}

#[test]
fn domb_cannot_record_a_recovery_decision_the_hypervisor_alone_records() {
    use slipway_measure::events::{DecisionAction, DecisionReason, PolicyDecision};
    let mut w = World::new();
    let domb = w.domb;
    let banks =
        slipway_measure::BankSet::from_algs(&[TpmAlgId::SHA1.into(), TpmAlgId::SHA256.into()])
            .unwrap();
    for code in 6..=12u8 {
        let event = SlipwayEvent::PolicyDecision(PolicyDecision {
            reason: DecisionReason::from_code(code).unwrap(),
            action: DecisionAction::StartRecoveryOnly,
            subject: b"rescue",
        });
        let mut data = vec![0u8; event.encoded_len()];
        event.encode(&mut data).unwrap();
        // True digests: only the reason makes it wrong.
        let all: Vec<Digest> = event_digests(&banks, &data)
            .iter()
            .map(|d| Digest::new(d.alg().into(), d.as_bytes()).unwrap())
            .collect();
        let request = Request::Measure {
            pcr: 19,
            event_type: EV_SLIPWAY_POLICY_DECISION,
            digests: BoundedVec::from_slice(&all).unwrap(),
            event_data: Bytes::from_slice(&data).unwrap(),
        };
        w.refused(domb, request, Error::EventDataMalformed);
    }
    // Reason 5 (a program's rule) is still domB's to record.
    assert!(matches!(
        w.call(domb, valid_measure(19, EV_SLIPWAY_POLICY_DECISION)),
        Ok(ResponseOk::Measured { .. })
    ));
}
