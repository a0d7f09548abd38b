//! Property tests: every message round-trips; no input makes a decoder panic.

use std::vec::Vec;

use proptest::collection::vec;
use proptest::prelude::*;

use super::samples;
use super::*;
use crate::HEADER_LEN;

fn domain_name() -> impl Strategy<Value = DomainName> {
    "[a-z0-9-]{1,31}".prop_map(|name| DomainName::new(&name).unwrap())
}

fn module_name() -> impl Strategy<Value = ModuleName> {
    "[A-Za-z0-9._-]{1,63}".prop_map(|name| ModuleName::new(&name).unwrap())
}

fn bytes<const N: usize>() -> impl Strategy<Value = Bytes<N>> {
    vec(any::<u8>(), 0..=N).prop_map(|bytes| Bytes::from_slice(&bytes).unwrap())
}

fn alg() -> impl Strategy<Value = TpmAlgId> {
    prop_oneof![
        Just(TpmAlgId::SHA1),
        Just(TpmAlgId::SHA256),
        Just(TpmAlgId::SHA384),
        Just(TpmAlgId::SHA512),
        any::<u16>().prop_map(TpmAlgId),
    ]
}

fn banks() -> impl Strategy<Value = TpmBanks> {
    vec(alg(), 0..=MAX_BANKS).prop_map(|banks| TpmBanks::from_slice(&banks).unwrap())
}

fn digest() -> impl Strategy<Value = Digest> {
    (alg(), vec(any::<u8>(), 0..=MAX_DIGEST_LEN))
        .prop_map(|(alg, bytes)| Digest::new(alg, &bytes).unwrap())
}

fn launch_kind() -> impl Strategy<Value = LaunchKind> {
    prop_oneof![
        Just(LaunchKind::None),
        Just(LaunchKind::Emulated),
        Just(LaunchKind::Txt),
        Just(LaunchKind::Skinit),
        Just(LaunchKind::TxtSimulated),
    ]
}

fn module_info() -> impl Strategy<Value = ModuleInfo> {
    (module_name(), any::<u64>(), any::<u64>()).prop_map(|(name, size, gpa)| ModuleInfo {
        name,
        size,
        gpa,
    })
}

fn domain() -> impl Strategy<Value = DomainId> {
    any::<u16>().prop_map(DomainId)
}

fn vcpu_entry() -> impl Strategy<Value = VcpuEntry> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(entry_eip, start_info_gpa)| VcpuEntry::Pvh32 {
            entry_eip,
            start_info_gpa
        }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(rip, rsp, cr3, rsi)| VcpuEntry::Long64 { rip, rsp, cr3, rsi }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::QueryBootInfo),
        Just(Request::ReportBootSuccess),
        any::<u16>().prop_map(|index| Request::QueryModule { index }),
        (
            domain_name(),
            any::<u64>(),
            any::<u16>(),
            any::<[bool; 4]>()
        )
            .prop_map(
                |(name, memory_bytes, vcpus, [control, hardware, recovery, tpm])| {
                    Request::CreateDomain {
                        name,
                        memory_bytes,
                        vcpus,
                        capabilities: Capabilities {
                            control,
                            hardware,
                            recovery,
                            tpm,
                        },
                    }
                }
            ),
        (
            domain(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(domain, module, module_offset, length, gpa)| {
                Request::PopulateFromModule {
                    domain,
                    module,
                    module_offset,
                    length,
                    gpa,
                }
            }),
        (domain(), any::<u64>(), bytes()).prop_map(|(domain, gpa, bytes)| Request::WriteMemory {
            domain,
            gpa,
            bytes
        }),
        (domain(), any::<u16>(), vcpu_entry()).prop_map(|(domain, vcpu, entry)| {
            Request::SetVcpuState {
                domain,
                vcpu,
                entry,
            }
        }),
        domain().prop_map(|domain| Request::AssignConsole { domain }),
        (domain(), any::<u16>())
            .prop_map(|(domain, boot_order)| Request::RequestStart { domain, boot_order }),
        bytes().prop_map(|bytes| Request::WriteConsole { bytes }),
        (
            any::<u8>(),
            any::<u32>(),
            vec(digest(), 0..=MAX_BANKS),
            bytes()
        )
            .prop_map(|(pcr, event_type, digests, event_data)| Request::Measure {
                pcr,
                event_type,
                digests: BoundedVec::from_slice(&digests).unwrap(),
                event_data,
            }),
        Just(Request::HandOff),
        any::<u32>().prop_map(|exit_code| Request::Shutdown { exit_code }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Ok(ResponseOk::Done)),
        (launch_kind(), banks(), any::<u16>()).prop_map(
            |(launch_kind, active_banks, module_count)| Ok(ResponseOk::BootInfo(BootSummary {
                launch_kind,
                active_banks,
                module_count
            }))
        ),
        module_info().prop_map(|info| Ok(ResponseOk::Module(info))),
        domain().prop_map(|domain| Ok(ResponseOk::DomainCreated(domain))),
        any::<u32>().prop_map(|event_index| Ok(ResponseOk::Measured { event_index })),
        proptest::sample::select(Error::ALL).prop_map(Err),
    ]
}

fn boot_info() -> impl Strategy<Value = BootInfo> {
    (
        launch_kind(),
        banks(),
        vec(module_info(), 0..=MAX_BOOT_MODULES),
        any::<u64>(),
        (any::<u8>(), any::<Option<u32>>(), any::<Option<u8>>()),
    )
        .prop_map(
            |(launch_kind, active_banks, modules, hypercall_buffer_gpa, boot_state)| BootInfo {
                launch_kind,
                active_banks,
                modules: BoundedVec::from_slice(&modules).unwrap(),
                hypercall_buffer_gpa,
                boot_state: BootState {
                    requested_slot: boot_state.0,
                    attempts: boot_state.1,
                    last_known_good: boot_state.2,
                },
            },
        )
}

/// Runs every decoder on `bytes`; the point is that none panics.
fn decode_all(bytes: &[u8]) {
    let _ = decode_request(bytes);
    let _ = decode_response(bytes);
    let _ = decode_boot_info(bytes);
}

fn pinned_bytes() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = samples::requests()
        .iter()
        .map(|(_, _, hex)| parse_hex(hex))
        .collect();
    all.extend(
        samples::responses()
            .iter()
            .map(|(_, _, hex)| parse_hex(hex)),
    );
    all.extend(
        samples::boot_infos()
            .iter()
            .map(|(_, _, hex)| parse_hex(hex)),
    );
    all
}

proptest! {
    #[test]
    fn requests_round_trip(request in request()) {
        let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = encode_request(&request, &mut buffer).unwrap();
        prop_assert!(len <= MAX_REQUEST_LEN);
        prop_assert_eq!(decode_request(&buffer[..len]), Ok(request));
    }

    #[test]
    fn every_cut_of_a_request_is_truncated(request in request(), cut in any::<proptest::sample::Index>()) {
        let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = encode_request(&request, &mut buffer).unwrap();
        let cut = cut.index(len);
        prop_assert_eq!(decode_request(&buffer[..cut]), Err(crate::DecodeError::Truncated));
    }

    #[test]
    fn responses_round_trip(response in response()) {
        let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = encode_response(&response, &mut buffer).unwrap();
        prop_assert!(len <= MAX_RESPONSE_LEN);
        prop_assert_eq!(decode_response(&buffer[..len]), Ok(response));
    }

    #[test]
    fn boot_infos_round_trip(info in boot_info()) {
        let mut buffer = [0u8; 4096];
        let len = encode_boot_info(&info, &mut buffer).unwrap();
        prop_assert!(len <= MAX_BOOT_INFO_LEN);
        prop_assert_eq!(decode_boot_info(&buffer[..len]), Ok(info));
    }

    #[test]
    fn garbage_never_panics(garbage in vec(any::<u8>(), 0..5000)) {
        decode_all(&garbage);
    }

    #[test]
    fn garbage_behind_a_valid_header_is_an_error_or_a_valid_message(
        kind in 0..3usize,
        body in vec(any::<u8>(), 0..300),
    ) {
        let magic = [crate::REQUEST_MAGIC, crate::RESPONSE_MAGIC, crate::BOOT_INFO_MAGIC][kind];
        let mut bytes = Vec::from(magic.to_le_bytes());
        bytes.extend(VERSION.to_le_bytes());
        bytes.extend(&body);
        let mut buffer = [0u8; 4096];
        // Whatever decodes must re-encode to exactly the same bytes (canonical form).
        match kind {
            0 => if let Ok(request) = decode_request(&bytes) {
                let len = encode_request(&request, &mut buffer).unwrap();
                prop_assert_eq!(&buffer[..len], &bytes[..]);
            },
            1 => if let Ok(response) = decode_response(&bytes) {
                let len = encode_response(&response, &mut buffer).unwrap();
                prop_assert_eq!(&buffer[..len], &bytes[..]);
            },
            _ => if let Ok(info) = decode_boot_info(&bytes) {
                let len = encode_boot_info(&info, &mut buffer).unwrap();
                prop_assert_eq!(&buffer[..len], &bytes[..]);
            },
        }
    }

    #[test]
    fn mutated_pinned_messages_never_panic(
        which in any::<proptest::sample::Index>(),
        position in any::<proptest::sample::Index>(),
        value in any::<u8>(),
    ) {
        let all = pinned_bytes();
        let mut bytes = all[which.index(all.len())].clone();
        let at = HEADER_LEN + position.index(bytes.len() - HEADER_LEN);
        bytes[at] = value;
        decode_all(&bytes);
    }
}
