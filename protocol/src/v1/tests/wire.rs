//! Pinned wire bytes (any encoding change fails here), strict decoding, and size bounds.

use std::vec::Vec;

use super::samples::{self, ERRORS};
use super::*;
use crate::{BOOT_INFO_MAGIC, DecodeError, EncodeError, HEADER_LEN, REQUEST_MAGIC, RESPONSE_MAGIC};

#[test]
fn every_request_variant_is_pinned() {
    let mut seen: Vec<usize> = samples::requests()
        .iter()
        .map(|(_, r, _)| request_variant(r))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..REQUEST_VARIANTS).collect::<Vec<_>>());
}

#[test]
fn every_response_variant_is_pinned() {
    let mut seen: Vec<usize> = samples::responses()
        .iter()
        .map(|(_, r, _)| response_variant(r))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, RESPONSE_VARIANTS_PINNED);
    let kinds: Vec<LaunchKind> = samples::boot_infos()
        .iter()
        .map(|(_, b, _)| b.launch_kind)
        .collect();
    assert!(kinds.contains(&LaunchKind::None) && kinds.contains(&LaunchKind::Txt));
}

#[test]
fn requests_encode_to_pinned_bytes_and_back() {
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    for (label, request, pinned) in samples::requests() {
        let len = encode_request(&request, &mut buffer).unwrap();
        assert_eq!(to_hex(&buffer[..len]), pinned, "request {label}");
        assert_eq!(
            decode_request(&parse_hex(pinned)),
            Ok(request),
            "request {label}"
        );
    }
}

#[test]
fn responses_encode_to_pinned_bytes_and_back() {
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    for (label, response, pinned) in samples::responses() {
        let len = encode_response(&response, &mut buffer).unwrap();
        assert_eq!(to_hex(&buffer[..len]), pinned, "response {label}");
        assert_eq!(
            decode_response(&parse_hex(pinned)),
            Ok(response),
            "response {label}"
        );
    }
}

#[test]
fn every_error_code_is_pinned() {
    assert_eq!(
        ERRORS.iter().map(|(error, _)| *error).collect::<Vec<_>>(),
        Error::ALL
    );
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    for (error, pinned_code) in ERRORS {
        let pinned = std::format!("53 57 52 53 04 00 01 {pinned_code}");
        let len = encode_response(&Err(*error), &mut buffer).unwrap();
        assert_eq!(to_hex(&buffer[..len]), pinned, "{error:?}");
        assert_eq!(decode_response(&parse_hex(&pinned)), Ok(Err(*error)));
        assert_eq!(Error::from_code(error.code()), Some(*error));
        assert!(!error.message().is_empty());
        assert_eq!(std::format!("{error}"), error.message());
    }
    assert_eq!(Error::MalformedRequest.code(), 0x0101);
    assert_eq!(Error::TpmFailed.code(), 0x0608);
    assert_eq!(Error::BuildRecordFull.code(), 0x0309);
    assert_eq!(Error::EventTypeNotAllowed.code(), 0x0609);
    assert_eq!(Error::MeasurementFailed.code(), 0x060D);
}

#[test]
fn boot_infos_encode_to_pinned_bytes_and_back() {
    let mut buffer = [0u8; 4096];
    for (label, info, pinned) in samples::boot_infos() {
        let len = encode_boot_info(&info, &mut buffer).unwrap();
        assert_eq!(to_hex(&buffer[..len]), pinned, "boot info {label}");
        assert_eq!(
            decode_boot_info(&parse_hex(pinned)),
            Ok(info),
            "boot info {label}"
        );
    }
}

/// A decoder with the decoded value dropped.
type Decoder = fn(&[u8]) -> Result<(), DecodeError>;

/// Every pinned message as (label, bytes, its decoder).
fn pinned_messages() -> Vec<(&'static str, Vec<u8>, Decoder)> {
    let mut all: Vec<(&'static str, Vec<u8>, Decoder)> = Vec::new();
    for (label, _, pinned) in samples::requests() {
        all.push((label, parse_hex(pinned), |b| decode_request(b).map(drop)));
    }
    for (label, _, pinned) in samples::responses() {
        all.push((label, parse_hex(pinned), |b| decode_response(b).map(drop)));
    }
    for (label, _, pinned) in samples::boot_infos() {
        all.push((label, parse_hex(pinned), |b| decode_boot_info(b).map(drop)));
    }
    all
}

#[test]
fn every_truncated_prefix_is_rejected_as_truncated() {
    for (label, bytes, decode) in pinned_messages() {
        assert_eq!(decode(&bytes), Ok(()), "{label}");
        for len in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..len]),
                Err(DecodeError::Truncated),
                "{label} cut at {len}"
            );
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    for (label, mut bytes, decode) in pinned_messages() {
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes), "{label}");
    }
}

#[test]
fn wrong_magic_and_version_are_distinct_errors() {
    let request = parse_hex(samples::requests()[0].2);
    assert_eq!(
        decode_response(&request),
        Err(DecodeError::BadMagic {
            found: REQUEST_MAGIC
        })
    );
    assert_eq!(
        decode_boot_info(&request),
        Err(DecodeError::BadMagic {
            found: REQUEST_MAGIC
        })
    );
    let response = parse_hex(samples::responses()[0].2);
    assert_eq!(
        decode_request(&response),
        Err(DecodeError::BadMagic {
            found: RESPONSE_MAGIC
        })
    );
    let mut boot_info = parse_hex(samples::boot_infos()[0].2);
    assert_eq!(
        decode_request(&boot_info),
        Err(DecodeError::BadMagic {
            found: BOOT_INFO_MAGIC
        })
    );
    // Version 3 (before the startup-IPI vCPU entry) and 5 are both refused.
    for version in [3, 5] {
        boot_info[4] = version;
        assert_eq!(
            decode_boot_info(&boot_info),
            Err(DecodeError::UnsupportedVersion {
                found: u16::from(version)
            })
        );
    }
    let mut request = request;
    request[5] = 1;
    assert_eq!(
        decode_request(&request),
        Err(DecodeError::UnsupportedVersion { found: 0x0104 })
    );
    assert_eq!(
        Error::from(DecodeError::BadMagic { found: 0 }),
        Error::BadMagic
    );
    assert_eq!(
        Error::from(DecodeError::UnsupportedVersion { found: 2 }),
        Error::UnsupportedVersion
    );
    assert_eq!(Error::from(DecodeError::Truncated), Error::MalformedRequest);
    assert_eq!(
        Error::from(DecodeError::TrailingBytes),
        Error::MalformedRequest
    );
    assert_eq!(Error::from(DecodeError::Malformed), Error::MalformedRequest);
}

const REQUEST_HEADER: &str = "53 57 52 51 04 00";

fn decode_request_hex(body: &str) -> Result<Request, DecodeError> {
    decode_request(&parse_hex(&std::format!("{REQUEST_HEADER} {body}")))
}

#[test]
fn invalid_names_do_not_decode() {
    // CreateDomain body: variant 02, name, memory 1 MiB, 1 vCPU, no capabilities.
    let create =
        |name_hex: &str| decode_request_hex(&std::format!("02 {name_hex} 80 80 40 01 00 00 00 00"));
    assert!(matches!(create("01 61"), Ok(Request::CreateDomain { .. })));
    assert_eq!(create("01 41"), Err(DecodeError::Malformed), "upper case");
    assert_eq!(create("01 5f"), Err(DecodeError::Malformed), "underscore");
    assert_eq!(create("00"), Err(DecodeError::Malformed), "empty");
    assert_eq!(create("02 c3 a9"), Err(DecodeError::Malformed), "non-ASCII");
    assert_eq!(
        create("01 ff"),
        Err(DecodeError::Malformed),
        "invalid UTF-8"
    );
    let longest = std::format!("1f {}", ["61"; 31].join(" "));
    assert!(create(&longest).is_ok());
    let too_long = std::format!("20 {}", ["61"; 32].join(" "));
    assert_eq!(create(&too_long), Err(DecodeError::Malformed));
    // A module name with a space, in a Module response.
    let module = decode_response(&parse_hex("53 57 52 53 04 00 00 02 02 61 20 01 00"));
    assert_eq!(module, Err(DecodeError::Malformed));
}

#[test]
fn invalid_bodies_do_not_decode() {
    assert_eq!(
        decode_request_hex("0d"),
        Err(DecodeError::Malformed),
        "unknown request variant"
    );
    assert_eq!(
        decode_request_hex("05 01 00 03"),
        Err(DecodeError::Malformed),
        "unknown vCPU entry"
    );
    assert_eq!(
        decode_request_hex("02 01 61 80 80 40 01 02 00 00"),
        Err(DecodeError::Malformed),
        "bool 2"
    );
    assert_eq!(
        decode_request_hex("01 80 80 04"),
        Err(DecodeError::Malformed),
        "u16 overflow"
    );
    let response =
        |body: &str| decode_response(&parse_hex(&std::format!("53 57 52 53 04 00 {body}")));
    assert_eq!(
        response("01 00"),
        Err(DecodeError::Malformed),
        "error code 0"
    );
    // 0x06ff: the end of the measurement group, far from the next code to be assigned
    // (0x0609, the first choice here, became EventTypeNotAllowed).
    assert_eq!(
        response("01 ff 0d"),
        Err(DecodeError::Malformed),
        "unknown error code"
    );
    assert_eq!(
        response("02"),
        Err(DecodeError::Malformed),
        "Result discriminant 2"
    );
    assert_eq!(
        response("00 05"),
        Err(DecodeError::Malformed),
        "unknown response variant"
    );
    assert_eq!(
        response("00 01 05 00 00"),
        Err(DecodeError::Malformed),
        "unknown launch kind"
    );
    // Bounds: one element more than allowed is malformed, not truncated.
    let console = std::format!("08 81 08 {}", ["41"; CONSOLE_WRITE_MAX + 1].join(" "));
    assert_eq!(
        decode_request_hex(&console),
        Err(DecodeError::Malformed),
        "console bound"
    );
    let banks = std::format!("00 01 02 09 {} 00", ["04"; MAX_BANKS + 1].join(" "));
    assert_eq!(response(&banks), Err(DecodeError::Malformed), "bank bound");
}

fn maximal_request() -> Request {
    let digest = Digest {
        alg: TpmAlgId(u16::MAX),
        bytes: Bytes::from_slice(&[0xee; MAX_DIGEST_LEN]).unwrap(),
    };
    Request::Measure {
        pcr: u8::MAX,
        event_type: u32::MAX,
        digests: BoundedVec::from_slice(&vec![digest; MAX_BANKS]).unwrap(),
        event_data: Bytes::from_slice(&[0xdd; EVENT_DATA_MAX]).unwrap(),
    }
}

fn maximal_response() -> Response {
    Ok(ResponseOk::Module(ModuleInfo {
        name: ModuleName::new(&"_".repeat(MODULE_NAME_MAX)).unwrap(),
        size: u64::MAX,
        gpa: u64::MAX,
    }))
}

fn maximal_boot_info() -> BootInfo {
    let module = ModuleInfo {
        name: ModuleName::new(&"m".repeat(MODULE_NAME_MAX)).unwrap(),
        size: u64::MAX,
        gpa: u64::MAX,
    };
    BootInfo {
        launch_kind: LaunchKind::Skinit,
        active_banks: TpmBanks::from_slice(&[TpmAlgId(u16::MAX); MAX_BANKS]).unwrap(),
        modules: BoundedVec::from_slice(&vec![module; MAX_BOOT_MODULES]).unwrap(),
        hypercall_buffer_gpa: u64::MAX,
        boot_state: BootState {
            requested_slot: u8::MAX,
            attempts: Some(u32::MAX),
            last_known_good: Some(u8::MAX),
        },
    }
}

#[test]
fn size_bounds_are_exact_for_maximal_messages() {
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    let request = maximal_request();
    assert_eq!(encode_request(&request, &mut buffer), Ok(MAX_REQUEST_LEN));
    assert_eq!(decode_request(&buffer[..MAX_REQUEST_LEN]), Ok(request));
    let response = maximal_response();
    assert_eq!(
        encode_response(&response, &mut buffer),
        Ok(MAX_RESPONSE_LEN)
    );
    assert_eq!(decode_response(&buffer[..MAX_RESPONSE_LEN]), Ok(response));
    let info = maximal_boot_info();
    assert_eq!(encode_boot_info(&info, &mut buffer), Ok(MAX_BOOT_INFO_LEN));
    assert_eq!(decode_boot_info(&buffer[..MAX_BOOT_INFO_LEN]), Ok(info));
    // A whole page of start info goes in two WriteMemory calls.
    let half_page = Request::WriteMemory {
        domain: DomainId(u16::MAX),
        gpa: u64::MAX,
        bytes: Bytes::from_slice(&[0; 2048]).unwrap(),
    };
    assert!(encode_request(&half_page, &mut buffer).unwrap() <= HYPERCALL_BUFFER_SIZE);
}

#[test]
fn encoding_into_a_short_buffer_fails_cleanly() {
    let request = maximal_request();
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    for len in [
        0,
        1,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        100,
        MAX_REQUEST_LEN - 1,
    ] {
        assert_eq!(
            encode_request(&request, &mut buffer[..len]),
            Err(EncodeError::BufferTooSmall),
            "{len}"
        );
    }
}

#[test]
fn non_canonical_varints_are_rejected() {
    assert_eq!(
        decode_request_hex("01 03"),
        Ok(Request::QueryModule { index: 3 })
    );
    assert_eq!(
        decode_request_hex("01 83 00"),
        Err(DecodeError::NotCanonical)
    );
    assert_eq!(
        decode_request_hex("01 80 00"),
        Err(DecodeError::NotCanonical)
    );
    assert_eq!(
        decode_request_hex("0b ac 82 00"),
        Err(DecodeError::NotCanonical),
        "shutdown 300"
    );
    assert_eq!(
        decode_request_hex("8a 00"),
        Err(DecodeError::NotCanonical),
        "variant index"
    );
    let response = parse_hex("53 57 52 53 04 00 01 82 86 00");
    assert_eq!(
        decode_response(&response),
        Err(DecodeError::NotCanonical),
        "error code"
    );
    assert_eq!(
        Error::from(DecodeError::NotCanonical),
        Error::MalformedRequest
    );
}
