//! Sample messages shared by the wire and property tests: one per request and response
//! variant, and boot-information pages, each with its pinned encoding.

use std::vec::Vec;

use crate::v1::*;
use crate::{BoundedVec, Bytes};

pub fn name(name: &str) -> DomainName {
    DomainName::new(name).unwrap()
}

pub fn module_name(name: &str) -> ModuleName {
    ModuleName::new(name).unwrap()
}

pub fn bytes<const N: usize>(bytes: &[u8]) -> Bytes<N> {
    Bytes::from_slice(bytes).unwrap()
}

pub fn digests(items: &[Digest]) -> BoundedVec<Digest, MAX_BANKS> {
    BoundedVec::from_slice(items).unwrap()
}

pub fn banks(items: &[TpmAlgId]) -> TpmBanks {
    TpmBanks::from_slice(items).unwrap()
}

/// (label, request, pinned encoding as hex)
pub fn requests() -> Vec<(&'static str, Request, &'static str)> {
    vec![
        (
            "query-boot-info",
            Request::QueryBootInfo,
            "53 57 52 51 04 00 00",
        ),
        (
            "query-module",
            Request::QueryModule { index: 3 },
            "53 57 52 51 04 00 01 03",
        ),
        (
            "create-domain",
            Request::CreateDomain {
                name: name("web-1"),
                memory_bytes: 64 << 20,
                vcpus: 2,
                capabilities: Capabilities {
                    control: true,
                    hardware: false,
                    recovery: true,
                    tpm: true,
                },
            },
            "53 57 52 51 04 00 02 05 77 65 62 2d 31 80 80 80 20 02 01 00 01 01",
        ),
        (
            "populate-from-module",
            Request::PopulateFromModule {
                domain: DomainId(1),
                module: 2,
                module_offset: 0x1000,
                length: 0x2345,
                gpa: 0x10_0000,
            },
            "53 57 52 51 04 00 03 01 02 80 20 c5 46 80 80 40",
        ),
        (
            "write-memory",
            Request::WriteMemory {
                domain: DomainId(1),
                gpa: 0x9000,
                bytes: bytes(b"console=com1\0"),
            },
            "53 57 52 51 04 00 04 01 80 a0 02 0d 63 6f 6e 73 6f 6c 65 3d 63 6f 6d 31 00",
        ),
        (
            "set-vcpu-state-pvh32",
            Request::SetVcpuState {
                domain: DomainId(1),
                vcpu: 0,
                entry: VcpuEntry::Pvh32 {
                    entry_eip: 0x10_0000,
                    start_info_gpa: 0x9000,
                },
            },
            "53 57 52 51 04 00 05 01 00 00 80 80 40 80 a0 02",
        ),
        (
            "set-vcpu-state-long64",
            Request::SetVcpuState {
                domain: DomainId(2),
                vcpu: 1,
                entry: VcpuEntry::Long64 {
                    rip: 0xffff_ffff_8100_0000,
                    rsp: 0x8000,
                    cr3: 0x1000,
                    rsi: 0x9000,
                },
            },
            "53 57 52 51 04 00 05 02 01 01 80 80 80 88 f8 ff ff ff ff 01 80 80 02 80 20 80 a0 02",
        ),
        (
            "set-vcpu-state-wait-for-startup-ipi",
            Request::SetVcpuState {
                domain: DomainId(2),
                vcpu: 1,
                entry: VcpuEntry::WaitForStartupIpi,
            },
            "53 57 52 51 04 00 05 02 01 02",
        ),
        (
            "assign-console",
            Request::AssignConsole {
                domain: DomainId(2),
            },
            "53 57 52 51 04 00 06 02",
        ),
        (
            "request-start",
            Request::RequestStart {
                domain: DomainId(1),
                boot_order: 5,
            },
            "53 57 52 51 04 00 07 01 05",
        ),
        (
            "write-console",
            Request::WriteConsole {
                bytes: bytes(b"hello\n"),
            },
            "53 57 52 51 04 00 08 06 68 65 6c 6c 6f 0a",
        ),
        (
            "measure",
            Request::Measure {
                pcr: 20,
                event_type: 0x0000_000d,
                digests: digests(&[
                    Digest::new(TpmAlgId::SHA1, &[0x11; 20]).unwrap(),
                    Digest::new(TpmAlgId::SHA256, &[0x22; 32]).unwrap(),
                ]),
                event_data: bytes(b"hello"),
            },
            "53 57 52 51 04 00 09 14 0d 02 04 14 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 0b 20 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 05 68 65 6c 6c 6f",
        ),
        ("hand-off", Request::HandOff, "53 57 52 51 04 00 0a"),
        (
            "shutdown",
            Request::Shutdown { exit_code: 300 },
            "53 57 52 51 04 00 0b ac 02",
        ),
        (
            "report-boot-success",
            Request::ReportBootSuccess,
            "53 57 52 51 04 00 0c",
        ),
    ]
}

/// (label, response, pinned encoding as hex); errors are pinned separately, one per code.
pub fn responses() -> Vec<(&'static str, Response, &'static str)> {
    vec![
        ("done", Ok(ResponseOk::Done), "53 57 52 53 04 00 00 00"),
        (
            "boot-info-emulated",
            Ok(ResponseOk::BootInfo(BootSummary {
                launch_kind: LaunchKind::Emulated,
                active_banks: banks(&[TpmAlgId::SHA1, TpmAlgId::SHA256]),
                module_count: 3,
            })),
            "53 57 52 53 04 00 00 01 01 02 04 0b 03",
        ),
        (
            "boot-info-skinit",
            Ok(ResponseOk::BootInfo(BootSummary {
                launch_kind: LaunchKind::Skinit,
                active_banks: banks(&[]),
                module_count: 0,
            })),
            "53 57 52 53 04 00 00 01 03 00 00",
        ),
        (
            "boot-info-txt-simulated",
            Ok(ResponseOk::BootInfo(BootSummary {
                launch_kind: LaunchKind::TxtSimulated,
                active_banks: banks(&[TpmAlgId::SHA256]),
                module_count: 2,
            })),
            "53 57 52 53 04 00 00 01 04 01 0b 02",
        ),
        (
            "module",
            Ok(ResponseOk::Module(ModuleInfo {
                name: module_name("hello"),
                size: 12345,
                gpa: 0x1_0000_0000,
            })),
            "53 57 52 53 04 00 00 02 05 68 65 6c 6c 6f b9 60 80 80 80 80 10",
        ),
        (
            "domain-created",
            Ok(ResponseOk::DomainCreated(DomainId(1))),
            "53 57 52 53 04 00 00 03 01",
        ),
        (
            "measured",
            Ok(ResponseOk::Measured { event_index: 7 }),
            "53 57 52 53 04 00 00 04 07",
        ),
        ("error", Err(Error::NameTaken), "53 57 52 53 04 00 01 82 06"),
    ]
}

/// (label, boot-information page, pinned encoding as hex)
pub fn boot_infos() -> Vec<(&'static str, BootInfo, &'static str)> {
    vec![
        (
            "txt-two-modules",
            BootInfo {
                launch_kind: LaunchKind::Txt,
                active_banks: banks(&[TpmAlgId::SHA256, TpmAlgId::SHA384]),
                modules: BoundedVec::from_slice(&[
                    ModuleInfo {
                        name: module_name("domb"),
                        size: 0x1_2345,
                        gpa: 0x400_0000,
                    },
                    ModuleInfo {
                        name: module_name("config"),
                        size: 900,
                        gpa: 0x402_0000,
                    },
                ])
                .unwrap(),
                hypercall_buffer_gpa: 0x3000,
                boot_state: BootState {
                    requested_slot: 1,
                    attempts: Some(3),
                    last_known_good: Some(0),
                },
            },
            "53 57 42 49 04 00 02 02 0b 0c 02 04 64 6f 6d 62 c5 c6 04 80 80 80 20 06 63 6f 6e 66 69 67 84 07 80 80 88 20 80 60 01 01 03 01 00",
        ),
        (
            "none-empty",
            BootInfo {
                launch_kind: LaunchKind::None,
                active_banks: banks(&[]),
                modules: BoundedVec::new(),
                hypercall_buffer_gpa: 0,
                boot_state: BootState {
                    requested_slot: 0,
                    attempts: None,
                    last_known_good: None,
                },
            },
            "53 57 42 49 04 00 00 00 00 00 00 00 00",
        ),
    ]
}

/// Every error with its pinned body bytes after `Err` (the code as a postcard varint).
pub const ERRORS: &[(Error, &str)] = &[
    (Error::MalformedRequest, "81 02"),
    (Error::BadMagic, "82 02"),
    (Error::UnsupportedVersion, "83 02"),
    (Error::NotPermitted, "81 04"),
    (Error::AfterHandOff, "82 04"),
    (Error::PlanIncomplete, "83 04"),
    (Error::UnknownDomain, "81 06"),
    (Error::NameTaken, "82 06"),
    (Error::NameReserved, "83 06"),
    (Error::InvalidMemorySize, "84 06"),
    (Error::OutOfMemory, "85 06"),
    (Error::TooManyDomains, "86 06"),
    (Error::DuplicateStartRequest, "87 06"),
    (Error::ConsoleAlreadyAssigned, "88 06"),
    (Error::BuildRecordFull, "89 06"),
    (Error::TpmAlreadyGranted, "8a 06"),
    (Error::UnknownModule, "81 08"),
    (Error::RangeOutsideModule, "82 08"),
    (Error::RangeOutsideDomain, "83 08"),
    (Error::NoVcpus, "81 0a"),
    (Error::TooManyVcpus, "82 0a"),
    (Error::InvalidVcpu, "83 0a"),
    (Error::InvalidEntryState, "84 0a"),
    (Error::NoVcpuContext, "85 0a"),
    (Error::PcrNotAllowed, "81 0c"),
    (Error::BankMissing, "82 0c"),
    (Error::UnknownAlgorithm, "83 0c"),
    (Error::DuplicateBank, "84 0c"),
    (Error::DigestLengthWrong, "85 0c"),
    (Error::EventDataTooLarge, "86 0c"),
    (Error::EventLogFull, "87 0c"),
    (Error::TpmFailed, "88 0c"),
    (Error::EventTypeNotAllowed, "89 0c"),
    (Error::DigestMismatch, "8a 0c"),
    (Error::EventDataMalformed, "8b 0c"),
    (Error::ModuleRecordMismatch, "8c 0c"),
    (Error::MeasurementFailed, "8d 0c"),
    (Error::BootAlreadyReported, "81 0e"),
    (Error::BootRecordUnavailable, "82 0e"),
    (Error::BootRecordWriteFailed, "83 0e"),
];
