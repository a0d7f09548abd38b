//! Tests of the helpers around the messages: names, transport checks, digest checks.

use super::*;
use crate::{CapacityError, HYPERCALL_BUFFER_SIZE, TransportStatus, platform};

#[test]
fn domain_names_follow_the_pattern() {
    for good in ["a", "web-1", "0", "-", &"z".repeat(31)] {
        assert_eq!(DomainName::new(good).unwrap().as_str(), good);
    }
    assert_eq!(DomainName::new(""), Err(NameError::Empty));
    assert_eq!(
        DomainName::new(&"a".repeat(32)),
        Err(NameError::TooLong { max: 31 })
    );
    assert_eq!(
        DomainName::new("Web"),
        Err(NameError::InvalidCharacter { position: 0 })
    );
    assert_eq!(
        DomainName::new("web_1"),
        Err(NameError::InvalidCharacter { position: 3 })
    );
    assert_eq!(
        DomainName::new("a b"),
        Err(NameError::InvalidCharacter { position: 1 })
    );
    assert_eq!(
        DomainName::new("caf\u{e9}"),
        Err(NameError::InvalidCharacter { position: 3 })
    );
    assert_eq!(
        DomainName::new("x\n"),
        Err(NameError::InvalidCharacter { position: 1 })
    );
}

#[test]
fn module_names_are_words_of_letters_digits_dots_underscores_and_dashes() {
    for good in ["domb", "config", "hello.elf", "A_B-9", &"m".repeat(63)] {
        assert_eq!(&*ModuleName::new(good).unwrap(), good);
    }
    assert_eq!(ModuleName::new(""), Err(NameError::Empty));
    assert_eq!(
        ModuleName::new(&"m".repeat(64)),
        Err(NameError::TooLong { max: 63 })
    );
    assert_eq!(
        ModuleName::new("a b"),
        Err(NameError::InvalidCharacter { position: 1 })
    );
    assert_eq!(
        ModuleName::new("a\x1b"),
        Err(NameError::InvalidCharacter { position: 1 })
    );
    assert_eq!(
        ModuleName::new("\x7f"),
        Err(NameError::InvalidCharacter { position: 0 })
    );
}

#[test]
fn bounded_containers_refuse_more_than_their_capacity() {
    assert!(Bytes::<4>::from_slice(&[1, 2, 3, 4]).is_ok());
    assert_eq!(
        Bytes::<4>::from_slice(&[0; 5]),
        Err(CapacityError {
            capacity: 4,
            len: 5
        })
    );
    let mut banks = TpmBanks::new();
    for _ in 0..MAX_BANKS {
        banks.push(TpmAlgId::SHA256).unwrap();
    }
    assert_eq!(
        banks.push(TpmAlgId::SHA1),
        Err(CapacityError {
            capacity: 8,
            len: 9
        })
    );
    assert_eq!(
        Digest::new(TpmAlgId::SHA512, &[0; 65]).map(drop),
        Err(CapacityError {
            capacity: 64,
            len: 65
        })
    );
}

#[test]
fn transport_status_codes_round_trip_and_buffers_are_checked() {
    for status in [
        TransportStatus::Ok,
        TransportStatus::UnknownCall,
        TransportStatus::BadBufferAddress,
        TransportStatus::BadBufferAlignment,
        TransportStatus::BadLength,
    ] {
        assert_eq!(TransportStatus::from_code(status.code()), Some(status));
    }
    assert_eq!(TransportStatus::Ok.code(), 0);
    assert_eq!(TransportStatus::from_code(1), None);
    let ram = 16 * 4096;
    let page = HYPERCALL_BUFFER_SIZE as u64;
    assert_eq!(
        TransportStatus::check_buffer(0, 1, ram),
        TransportStatus::Ok
    );
    assert_eq!(
        TransportStatus::check_buffer(ram - page, page, ram),
        TransportStatus::Ok
    );
    assert_eq!(
        TransportStatus::check_buffer(ram, 1, ram),
        TransportStatus::BadBufferAddress
    );
    assert_eq!(
        TransportStatus::check_buffer(!0xfff, 1, ram),
        TransportStatus::BadBufferAddress
    );
    assert_eq!(
        TransportStatus::check_buffer(0, 1, page - 1),
        TransportStatus::BadBufferAddress
    );
    assert_eq!(
        TransportStatus::check_buffer(0x800, 1, ram),
        TransportStatus::BadBufferAlignment
    );
    // A domain larger than the hole's start: buffers in its high RAM are fine, in the hole not.
    let big = platform::DOMAIN_RAM_HOLE_START + (1 << 30);
    for (gpa, status) in [
        (platform::DOMAIN_RAM_HOLE_START - page, TransportStatus::Ok),
        (
            platform::DOMAIN_RAM_HOLE_START,
            TransportStatus::BadBufferAddress,
        ),
        (
            crate::v1::SLIPWAY_LOG_GPA,
            TransportStatus::BadBufferAddress,
        ),
        (
            platform::DOMAIN_HIGH_RAM_START - page,
            TransportStatus::BadBufferAddress,
        ),
        (platform::DOMAIN_HIGH_RAM_START, TransportStatus::Ok),
        (
            platform::DOMAIN_HIGH_RAM_START + (1 << 30) - page,
            TransportStatus::Ok,
        ),
        (
            platform::DOMAIN_HIGH_RAM_START + (1 << 30),
            TransportStatus::BadBufferAddress,
        ),
    ] {
        assert_eq!(
            TransportStatus::check_buffer(gpa, 1, big),
            status,
            "{gpa:#x}"
        );
    }
    assert_eq!(
        TransportStatus::check_buffer(0, 0, ram),
        TransportStatus::BadLength
    );
    assert_eq!(
        TransportStatus::check_buffer(0, page + 1, ram),
        TransportStatus::BadLength
    );
}

fn digest(alg: TpmAlgId, len: usize) -> Digest {
    Digest::new(alg, &vec![0xab; len]).unwrap()
}

#[test]
fn digests_must_cover_every_active_bank_once_with_the_right_length() {
    let active = [TpmAlgId::SHA1, TpmAlgId::SHA256];
    let good = [digest(TpmAlgId::SHA256, 32), digest(TpmAlgId::SHA1, 20)];
    assert_eq!(check_digests(&good, &active), Ok(()));
    assert_eq!(check_digests(&good[..1], &active), Err(Error::BankMissing));
    assert_eq!(check_digests(&[], &active), Err(Error::BankMissing));
    assert_eq!(check_digests(&[], &[]), Ok(()), "no TPM: no digests");
    let foreign = [
        digest(TpmAlgId::SHA1, 20),
        digest(TpmAlgId::SHA256, 32),
        digest(TpmAlgId::SHA384, 48),
    ];
    assert_eq!(
        check_digests(&foreign, &active),
        Err(Error::UnknownAlgorithm)
    );
    let twice = [
        digest(TpmAlgId::SHA1, 20),
        digest(TpmAlgId::SHA1, 20),
        digest(TpmAlgId::SHA256, 32),
    ];
    assert_eq!(check_digests(&twice, &active), Err(Error::DuplicateBank));
    let short = [digest(TpmAlgId::SHA1, 20), digest(TpmAlgId::SHA256, 31)];
    assert_eq!(
        check_digests(&short, &active),
        Err(Error::DigestLengthWrong)
    );
    // An active bank of an unknown algorithm cannot be satisfied: any length is wrong.
    let unknown = TpmAlgId(0x7777);
    assert_eq!(
        check_digests(&[digest(unknown, 32)], &[unknown]),
        Err(Error::DigestLengthWrong)
    );
    assert_eq!(TpmAlgId::SHA512.digest_len(), Some(64));
    assert_eq!(TpmAlgId::SM3_256.digest_len(), Some(32));
    assert_eq!(unknown.digest_len(), None);
}

#[test]
fn each_request_knows_its_answer_and_whether_it_needs_the_builder() {
    let answers: &[(usize, ResponseOk)] = &[
        (
            0,
            ResponseOk::BootInfo(BootSummary {
                launch_kind: LaunchKind::None,
                active_banks: TpmBanks::new(),
                module_count: 0,
            }),
        ),
        (
            1,
            ResponseOk::Module(ModuleInfo {
                name: ModuleName::new("m").unwrap(),
                size: 0,
                gpa: 0,
            }),
        ),
        (2, ResponseOk::DomainCreated(DomainId(1))),
        (10, ResponseOk::Measured { event_index: 0 }),
    ];
    for (_, request, _) in super::samples::requests() {
        let variant = request_variant(&request);
        let expected = answers
            .iter()
            .find(|(v, _)| *v == variant)
            .map(|(_, ok)| ok);
        let never_returns = matches!(request, Request::HandOff | Request::Shutdown { .. });
        assert_eq!(
            ResponseOk::Done.answers(&request),
            expected.is_none() && !never_returns,
            "{request:?}"
        );
        for (_, ok) in answers {
            assert_eq!(
                ok.answers(&request),
                Some(ok) == expected,
                "{request:?} {ok:?}"
            );
        }
        let for_everyone = matches!(
            request,
            Request::WriteConsole { .. } | Request::Shutdown { .. } | Request::ReportBootSuccess
        );
        assert_eq!(request.needs_builder(), !for_everyone, "{request:?}");
    }
}

#[test]
fn statuses_fit_a_32_bit_register() {
    for status in [
        TransportStatus::UnknownCall,
        TransportStatus::BadBufferAddress,
        TransportStatus::BadBufferAlignment,
        TransportStatus::BadLength,
    ] {
        assert!(
            u32::try_from(status.code()).is_ok() && status.code() > 0xffff,
            "{status:?}"
        );
    }
}
