use super::hex;
use crate::events::*;
use crate::hash::hash;
use crate::log::*;
use crate::*;
use proptest::prelude::*;

/// A one-bank SHA-256 header, written out by hand from the PC Client PFP layout.
fn sha256_header_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend(0u32.to_le_bytes()); // pcrIndex
    bytes.extend(3u32.to_le_bytes()); // EV_NO_ACTION
    bytes.extend([0u8; 20]); // SHA-1 digest
    bytes.extend(40u32.to_le_bytes()); // eventSize: 16+4+4+4+4+1+7
    bytes.extend(b"Spec ID Event03\0");
    bytes.extend(0u32.to_le_bytes()); // platformClass: client
    bytes.extend([0, 2, 2, 2]); // version 2.0, errata 2, UINTN 64-bit
    bytes.extend(1u32.to_le_bytes()); // numberOfAlgorithms
    bytes.extend(0x000Bu16.to_le_bytes());
    bytes.extend(32u16.to_le_bytes());
    bytes.push(7);
    bytes.extend(b"slipway");
    bytes
}

fn new_log(buf: &mut [u8], banks: BankSet) -> LogWriter<'_> {
    LogWriter::new(buf, &LogHeader::slipway(banks)).unwrap()
}

#[test]
fn header_bytes_are_pinned() {
    let mut buf = [0u8; 256];
    let log = new_log(&mut buf, BankSet::single(HashAlg::Sha256));
    assert_eq!(log.as_bytes(), sha256_header_bytes());
    let parsed = EventLog::parse(log.as_bytes()).unwrap();
    assert_eq!(
        parsed.header(),
        &LogHeader::slipway(BankSet::single(HashAlg::Sha256))
    );
    assert_eq!(parsed.events().count(), 0);
    assert_eq!(parsed.end().unwrap(), log.len());
}

#[test]
fn event_bytes_are_pinned() {
    let mut buf = [0u8; 512];
    let mut log = new_log(&mut buf, BankSet::single(HashAlg::Sha256));
    let start = log.len();
    let digests = log.append_measured(19, 0x601, b"abc").unwrap();
    let mut expected = Vec::new();
    expected.extend(19u32.to_le_bytes());
    expected.extend(0x601u32.to_le_bytes());
    expected.extend(1u32.to_le_bytes());
    expected.extend(0x000Bu16.to_le_bytes());
    expected.extend(hex(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ));
    expected.extend(3u32.to_le_bytes());
    expected.extend(b"abc");
    assert_eq!(&log.as_bytes()[start..], expected);
    assert_eq!(digests.as_slice(), &[hash(HashAlg::Sha256, b"abc")]);
    assert_eq!(event_len(log.banks(), 3), expected.len());
}

#[test]
fn round_trip_of_several_events_in_four_banks() {
    let banks = BankSet::all_supported();
    let mut buf = vec![0u8; 8192];
    let mut log = new_log(&mut buf, banks);
    let mut written = Vec::new();
    for (pcr, event_type, data) in [
        (19u32, EV_SLIPWAY_LAUNCH_KIND, &b"\x01\x01"[..]),
        (20, EV_SLIPWAY_BOOT_MODULE, b"module"),
        (21, EV_SLIPWAY_DOMAIN_BUILD, b""),
        (19, EV_SEPARATOR, &SEPARATOR_DATA),
    ] {
        let digests = log.append_measured(pcr, event_type, data).unwrap();
        written.push((pcr, event_type, digests, data.to_vec()));
    }
    let bytes = log.as_bytes().to_vec();
    let parsed = EventLog::parse(&bytes).unwrap();
    assert_eq!(parsed.header().banks, banks);
    let events: Vec<Event<'_>> = parsed.events().map(|e| e.unwrap()).collect();
    assert_eq!(events.len(), written.len());
    for (event, (pcr, event_type, digests, data)) in events.iter().zip(&written) {
        assert_eq!(event.pcr, *pcr);
        assert_eq!(event.event_type, *event_type);
        assert_eq!(&event.digests, digests);
        assert_eq!(event.data, data.as_slice());
    }
    assert_eq!(parsed.end().unwrap(), bytes.len());
}

#[test]
fn replay_equals_extending_by_hand() {
    let banks = BankSet::from_algs(&[AlgId::SHA384, AlgId::SHA1]).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut log = new_log(&mut buf, banks);
    let mut expected = PcrBanks::new(&banks, InitialState::DynamicLaunch);
    for (pcr, data) in [(19, &b"one"[..]), (20, b"two"), (19, b"three"), (23, b"")] {
        let digests = log.append_measured(pcr, 0x600, data).unwrap();
        expected
            .extend(pcr, digests.get(AlgId::SHA384).unwrap())
            .unwrap();
        expected
            .extend(pcr, digests.get(AlgId::SHA1).unwrap())
            .unwrap();
    }
    let parsed = EventLog::parse(log.as_bytes()).unwrap();
    assert_eq!(
        parsed.replay(InitialState::DynamicLaunch).unwrap(),
        expected
    );
    // PCR19 by hand in SHA-1 from the all-zero start.
    let step1 = crate::hash::extend_value(
        HashAlg::Sha1,
        &[0; 20],
        hash(HashAlg::Sha1, b"one").as_bytes(),
    );
    let step2 = crate::hash::extend_value(
        HashAlg::Sha1,
        step1.as_bytes(),
        hash(HashAlg::Sha1, b"three").as_bytes(),
    );
    assert_eq!(expected.value(19, HashAlg::Sha1).unwrap().unwrap(), step2);
    // Without a dynamic launch PCR17-22 start at all-FF, so PCR19 and 20 differ, PCR23 not.
    let unlaunched = parsed.replay(InitialState::NoDynamicLaunch).unwrap();
    assert_ne!(
        unlaunched.value(19, HashAlg::Sha1),
        expected.value(19, HashAlg::Sha1)
    );
    assert_eq!(
        unlaunched.value(23, HashAlg::Sha1),
        expected.value(23, HashAlg::Sha1)
    );
}

#[test]
fn no_action_events_extend_nothing_and_startup_locality_sets_pcr0() {
    let banks = BankSet::single(HashAlg::Sha256);
    let mut buf = vec![0u8; 4096];
    let mut log = new_log(&mut buf, banks);
    let zero = {
        let mut list = DigestList::new();
        list.push(Digest::zero(HashAlg::Sha256)).unwrap();
        list
    };
    log.append(20, EV_NO_ACTION, &zero, b"a note").unwrap();
    let mut startup = STARTUP_LOCALITY_SIGNATURE.to_vec();
    startup.push(3);
    log.append(0, EV_NO_ACTION, &zero, &startup).unwrap();
    let parsed = EventLog::parse(log.as_bytes()).unwrap();
    let pcrs = parsed.replay(InitialState::DynamicLaunch).unwrap();
    let mut pcr0 = [0u8; 32];
    pcr0[31] = 3;
    assert_eq!(
        pcrs.value(0, HashAlg::Sha256).unwrap().unwrap().as_bytes(),
        pcr0
    );
    assert_eq!(
        pcrs.value(20, HashAlg::Sha256).unwrap().unwrap().as_bytes(),
        [0; 32]
    );
    let events: Vec<_> = parsed.events().map(|e| e.unwrap()).collect();
    assert_eq!(events[1].startup_locality(), Some(3));
    assert_eq!(events[0].startup_locality(), None);
}

#[test]
fn writer_rejects_wrong_digests_and_pcrs_without_writing() {
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SHA1]).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut log = new_log(&mut buf, banks);
    let before = log.as_bytes().to_vec();
    let mut only_sha1 = DigestList::new();
    only_sha1.push(hash(HashAlg::Sha1, b"x")).unwrap();
    assert_eq!(
        log.append(19, 0x601, &only_sha1, b"x"),
        Err(Error::MissingBank(AlgId::SHA256))
    );
    let mut extra = crate::hash::event_digests(&banks, b"x");
    extra.push(hash(HashAlg::Sha512, b"x")).unwrap();
    assert_eq!(
        log.append(19, 0x601, &extra, b"x"),
        Err(Error::UnexpectedBank(AlgId::SHA512))
    );
    assert_eq!(
        log.append_measured(24, 0x601, b"x"),
        Err(Error::PcrIndex(24))
    );
    assert_eq!(log.as_bytes(), before.as_slice());
    // Digests given in another order are written in header order.
    let mut reversed = DigestList::new();
    reversed.push(hash(HashAlg::Sha1, b"x")).unwrap();
    reversed.push(hash(HashAlg::Sha256, b"x")).unwrap();
    log.append(19, 0x601, &reversed, b"x").unwrap();
    let parsed = EventLog::parse(log.as_bytes()).unwrap();
    let event = parsed.events().next().unwrap().unwrap();
    assert_eq!(event.digests.as_slice()[0].alg(), AlgId::SHA256);
}

#[test]
fn full_buffer_is_a_clean_error_and_writes_nothing() {
    let banks = BankSet::single(HashAlg::Sha256);
    let header_len = LogHeader::slipway(banks).encoded_len();
    assert_eq!(
        LogWriter::new(&mut [0u8; 10], &LogHeader::slipway(banks)).err(),
        Some(Error::LogFull {
            needed: header_len,
            available: 10
        })
    );
    let event = event_len(&banks, 10);
    let mut buf = vec![0xEEu8; header_len + event + event - 1];
    let mut log = new_log(&mut buf, banks);
    log.check_fits(10).unwrap();
    log.append_measured(19, 0x601, &[1; 10]).unwrap();
    assert_eq!(
        log.check_fits(10),
        Err(Error::LogFull {
            needed: event,
            available: event - 1
        })
    );
    let before = log.len();
    assert_eq!(
        log.append_measured(19, 0x601, &[1; 10]),
        Err(Error::LogFull {
            needed: event,
            available: event - 1
        })
    );
    assert_eq!(log.len(), before);
    log.append_measured(19, 0x601, &[1; 9]).unwrap();
    assert_eq!(log.remaining(), 0);
    assert!(EventLog::parse(&buf).unwrap().end().is_ok());
}

/// A log as another party (say, Intel's SINIT) might write it, built byte by byte: server class,
/// 32-bit UINTN, SHA-256 and SM3 banks, its own vendor info, one PCR17 event.
fn foreign_log() -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(3u32.to_le_bytes());
    bytes.extend([0u8; 20]);
    bytes.extend((16u32 + 4 + 4 + 4 + 8 + 1 + 3).to_le_bytes());
    bytes.extend(b"Spec ID Event03\0");
    bytes.extend(1u32.to_le_bytes());
    bytes.extend([0, 2, 0, 1]);
    bytes.extend(2u32.to_le_bytes());
    bytes.extend(0x000Bu16.to_le_bytes());
    bytes.extend(32u16.to_le_bytes());
    bytes.extend(0x0012u16.to_le_bytes());
    bytes.extend(32u16.to_le_bytes());
    bytes.push(3);
    bytes.extend(b"TXT");
    // PCR17, type 0x404 (TXT MLE hash), digests sha256 then sm3.
    bytes.extend(17u32.to_le_bytes());
    bytes.extend(0x404u32.to_le_bytes());
    bytes.extend(2u32.to_le_bytes());
    bytes.extend(0x000Bu16.to_le_bytes());
    bytes.extend([0x11; 32]);
    bytes.extend(0x0012u16.to_le_bytes());
    bytes.extend([0x22; 32]);
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(b"MLE!");
    bytes
}

#[test]
fn append_to_a_foreign_log() {
    let foreign = foreign_log();
    let mut buf = vec![0u8; 4096];
    buf[..foreign.len()].copy_from_slice(&foreign);
    let mut log = LogWriter::resume(&mut buf, foreign.len()).unwrap();
    let expected_banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SM3_256]).unwrap();
    assert_eq!(log.banks(), &expected_banks);
    let digests = log
        .append_measured(19, EV_SLIPWAY_LAUNCH_KIND, b"\x01\x02")
        .unwrap();
    assert_eq!(digests.get(AlgId::SM3_256).unwrap().as_bytes(), [0xFF; 32]);
    let bytes = log.as_bytes().to_vec();
    assert_eq!(
        &bytes[..foreign.len()],
        foreign.as_slice(),
        "the foreign part is untouched"
    );

    let parsed = EventLog::parse(&bytes).unwrap();
    let header = parsed.header();
    assert_eq!(header.platform_class, PLATFORM_CLASS_SERVER);
    assert_eq!(
        (
            header.spec_version_major,
            header.spec_errata,
            header.uintn_size
        ),
        (2, 0, 1)
    );
    assert_eq!(header.vendor_info, b"TXT");
    let events: Vec<_> = parsed.events().map(|e| e.unwrap()).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].pcr, events[0].event_type, events[0].data),
        (17, 0x404, &b"MLE!"[..])
    );
    assert_eq!(
        events[0].digests.get(AlgId::SM3_256).unwrap().as_bytes(),
        [0x22; 32]
    );
    assert_eq!(events[1].offset, foreign.len());
    assert_eq!(events[1].digests, digests);

    // Replay tracks SHA-256 only; SM3 cannot be computed.
    let pcrs = parsed.replay(InitialState::DynamicLaunch).unwrap();
    assert_eq!(pcrs.banks().collect::<Vec<_>>(), [HashAlg::Sha256]);
    let pcr17 = crate::hash::extend_value(HashAlg::Sha256, &[0; 32], &[0x11; 32]);
    assert_eq!(pcrs.value(17, HashAlg::Sha256).unwrap().unwrap(), pcr17);
}

#[test]
fn resume_requires_the_exact_used_length() {
    let foreign = foreign_log();
    let mut buf = vec![0u8; 4096];
    buf[..foreign.len()].copy_from_slice(&foreign);
    // One byte short: the last event is cut off.
    assert!(matches!(
        LogWriter::resume(&mut buf, foreign.len() - 1),
        Err(Error::Truncated { .. })
    ));
    // Longer than the buffer.
    assert!(matches!(
        LogWriter::resume(&mut buf, 5000),
        Err(Error::Truncated { .. })
    ));
    // Header only.
    let header_len = foreign.len() - (4 + 4 + 4 + 2 * 34 + 4 + 4);
    let log = LogWriter::resume(&mut buf, header_len).unwrap();
    assert_eq!(log.len(), header_len);
}

#[test]
fn resume_at_end_finds_the_end_before_zero_or_ff_fill() {
    for fill in [0x00u8, 0xFF] {
        let foreign = foreign_log();
        let mut buf = vec![fill; 4096];
        buf[..foreign.len()].copy_from_slice(&foreign);
        let mut log = LogWriter::resume_at_end(&mut buf).unwrap();
        assert_eq!(log.len(), foreign.len());
        log.append_measured(20, EV_SLIPWAY_BOOT_MODULE, b"m")
            .unwrap();
        let second = log.len();
        let log = LogWriter::resume_at_end(&mut buf).unwrap();
        assert_eq!(log.len(), second);
    }
    // A buffer filled to its last byte.
    let mut exact = foreign_log();
    assert_eq!(LogWriter::resume_at_end(&mut exact).unwrap().remaining(), 0);
}

#[test]
fn every_truncation_of_a_log_is_an_error_or_a_shorter_log_never_a_panic() {
    let banks = BankSet::all_supported();
    let mut buf = vec![0u8; 4096];
    let mut log = new_log(&mut buf, banks);
    for pcr in [19, 20, 21] {
        log.append_measured(pcr, 0x601, b"some event data").unwrap();
    }
    let full = log.as_bytes().to_vec();
    let header_len = LogHeader::slipway(banks).encoded_len();
    let event = event_len(&banks, 15);
    for cut in 0..full.len() {
        let prefix = &full[..cut];
        match EventLog::parse(prefix) {
            Err(error) => {
                assert!(cut < header_len, "header parse failed at {cut}: {error}");
                assert!(
                    matches!(error, Error::Truncated { .. }),
                    "{error:?} at {cut}"
                );
            }
            Ok(parsed) => {
                assert!(cut >= header_len);
                let results: Vec<_> = parsed.events().collect();
                let whole = (cut - header_len) / event;
                let partial = !(cut - header_len).is_multiple_of(event);
                assert_eq!(results.len(), whole + usize::from(partial), "cut {cut}");
                assert!(results[..whole].iter().all(|r| r.is_ok()));
                if partial {
                    assert!(matches!(results[whole], Err(Error::Truncated { .. })));
                    assert!(parsed.end().is_err());
                    assert!(parsed.replay(InitialState::DynamicLaunch).is_err());
                }
            }
        }
    }
}

#[test]
fn malformed_headers_and_events_are_named() {
    let good = sha256_header_bytes();
    let malformed = |mutate: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        mutate(&mut bytes);
        match EventLog::parse(&bytes) {
            Err(Error::Malformed { what, .. }) => what,
            other => panic!("expected malformed, got {other:?}"),
        }
    };
    assert!(malformed(&|b| b[0] = 1).contains("pcrIndex"));
    assert!(malformed(&|b| b[4] = 4).contains("EV_NO_ACTION"));
    assert!(malformed(&|b| b[32] = b'X').contains("Spec ID Event03"));
    assert!(
        malformed(&|b| b[56..60].copy_from_slice(&0u32.to_le_bytes())).contains("no algorithms")
    );
    assert!(malformed(&|b| b[56..60].copy_from_slice(&9u32.to_le_bytes())).contains("more than 8"));
    assert!(malformed(&|b| b[62] = 20).contains("digest size"));
    // eventSize larger than the Spec ID structure (vendor info shorter than declared room).
    assert!(
        malformed(&|b| {
            b[28..32].copy_from_slice(&41u32.to_le_bytes());
            b.push(0);
        })
        .contains("eventSize")
    );
    // eventSize smaller: a Spec ID field is cut off inside the event.
    assert!(matches!(
        EventLog::parse(&{
            let mut b = good.clone();
            b[28..32].copy_from_slice(&39u32.to_le_bytes());
            b
        }),
        Err(Error::Malformed { .. } | Error::Truncated { .. })
    ));

    // Events: a digest of an algorithm the header lacks; too many digests; repeated digest.
    let event = |count: u32, algs: &[u16]| {
        let mut bytes = good.clone();
        bytes.extend(19u32.to_le_bytes());
        bytes.extend(0x601u32.to_le_bytes());
        bytes.extend(count.to_le_bytes());
        for &alg in algs {
            bytes.extend(alg.to_le_bytes());
            bytes.extend([0u8; 32]);
        }
        bytes.extend(0u32.to_le_bytes());
        bytes
    };
    let first_error = |bytes: Vec<u8>| {
        let parsed = EventLog::parse(&bytes).unwrap();
        parsed.events().next().unwrap().unwrap_err()
    };
    assert!(
        matches!(first_error(event(1, &[0x0012])), Error::Malformed { what, .. } if what.contains("not in the log header"))
    );
    assert!(
        matches!(first_error(event(2, &[0x000B, 0x000B])), Error::Malformed { what, .. } if what.contains("more digests"))
    );
    assert!(EventLog::parse(&event(1, &[0x000B])).unwrap().end().is_ok());
    // An event extending PCR 30 parses, but replay refuses it.
    let mut bad_pcr = event(1, &[0x000B]);
    let at = good.len();
    bad_pcr[at..at + 4].copy_from_slice(&30u32.to_le_bytes());
    let parsed = EventLog::parse(&bad_pcr).unwrap();
    assert!(matches!(
        parsed.replay(InitialState::DynamicLaunch),
        Err(Error::Malformed { what, .. }) if what.contains("above 23")
    ));
}

#[test]
fn repeated_digest_in_an_event_is_malformed() {
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SHA1]).unwrap();
    let mut buf = vec![0u8; 1024];
    let log = new_log(&mut buf, banks);
    let mut bytes = log.as_bytes().to_vec();
    bytes.extend(19u32.to_le_bytes());
    bytes.extend(0x601u32.to_le_bytes());
    bytes.extend(2u32.to_le_bytes());
    for _ in 0..2 {
        bytes.extend(0x0004u16.to_le_bytes());
        bytes.extend([0u8; 20]);
    }
    bytes.extend(0u32.to_le_bytes());
    let parsed = EventLog::parse(&bytes).unwrap();
    assert!(matches!(
        parsed.events().next().unwrap(),
        Err(Error::Malformed { what, .. }) if what.contains("two digests")
    ));
}

fn sample_log() -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let banks = BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256, AlgId::SM3_256]).unwrap();
    let mut log = new_log(&mut buf, banks);
    log.append_measured(19, 0x601, b"\x01\x01").unwrap();
    log.append_measured(20, 0x606, b"module record").unwrap();
    log.append_measured(21, EV_SEPARATOR, &SEPARATOR_DATA)
        .unwrap();
    log.as_bytes().to_vec()
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(parsed) = EventLog::parse(&bytes) {
            for event in parsed.events() {
                let _ = event;
            }
            let _ = parsed.replay(InitialState::DynamicLaunch);
        }
        let mut copy = bytes.clone();
        let _ = LogWriter::resume_at_end(&mut copy);
    }

    #[test]
    fn mutated_logs_never_panic(
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut bytes = sample_log();
        let at = position.index(bytes.len());
        bytes[at] = value;
        bytes.extend(tail);
        if let Ok(parsed) = EventLog::parse(&bytes) {
            let _ = parsed.end();
            let _ = parsed.replay(InitialState::NoDynamicLaunch);
        }
        let used = bytes.len();
        let mut buf = bytes.clone();
        buf.resize(used + 200, 0);
        if let Ok(mut log) = LogWriter::resume(&mut buf, used) {
            log.append_measured(19, 0x601, b"after").unwrap();
            prop_assert!(EventLog::parse(log.as_bytes()).unwrap().end().is_ok());
        }
    }

    #[test]
    fn written_events_parse_back(
        events in proptest::collection::vec(
            (0u32..24, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)),
            0..12,
        ),
        bank_mask in 1u8..16,
    ) {
        let mut banks = BankSet::empty();
        for (bit, alg) in HashAlg::ALL.into_iter().enumerate() {
            if bank_mask & (1 << bit) != 0 {
                banks.push(alg.into()).unwrap();
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut log = new_log(&mut buf, banks);
        let mut expected = PcrBanks::new(&banks, InitialState::DynamicLaunch);
        for (pcr, event_type, data) in &events {
            let event_type = if *event_type == EV_NO_ACTION { 0x600 } else { *event_type };
            let digests = log.append_measured(*pcr, event_type, data).unwrap();
            expected.extend_all(*pcr, &digests).unwrap();
        }
        let parsed = EventLog::parse(log.as_bytes()).unwrap();
        let back: Vec<_> = parsed.events().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back.len(), events.len());
        for (event, (pcr, _, data)) in back.iter().zip(&events) {
            prop_assert_eq!(event.pcr, *pcr);
            prop_assert_eq!(event.data, data.as_slice());
            prop_assert_eq!(event.digests, crate::hash::event_digests(&banks, data));
        }
        prop_assert_eq!(parsed.replay(InitialState::DynamicLaunch).unwrap(), expected);
    }
}

#[test]
fn append_slipway_encodes_in_place_and_enforces_the_plan() {
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SM3_256]).unwrap();
    let mut buf = vec![0u8; 8192];
    let mut log = new_log(&mut buf, banks);
    let kind = SlipwayEvent::LaunchKind(LaunchKind::Emulated);
    let digests = log.append_slipway(19, &kind, None).unwrap();
    assert_eq!(digests, crate::hash::event_digests(&banks, &[1, 1]));
    let config = vec![0x42u8; 3000];
    log.append_slipway(19, &SlipwayEvent::LaunchConfig(&config), None)
        .unwrap();
    let module = SlipwayEvent::BootModule(ModuleRecord {
        name: b"hello",
        size: 3,
    });
    let bound = crate::hash::bound_module_digests(&banks, b"hello", b"abc");
    assert_eq!(
        log.append_slipway(20, &module, Some(&bound)).unwrap(),
        bound
    );
    for pcr in SEPARATOR_PCRS {
        log.append_slipway(pcr, &SlipwayEvent::Separator, None)
            .unwrap();
    }
    let before = log.len();
    assert_eq!(
        log.append_slipway(20, &kind, None),
        Err(Error::WrongPcr {
            event_type: EV_SLIPWAY_LAUNCH_KIND,
            pcr: 20
        })
    );
    assert_eq!(
        log.append_slipway(22, &SlipwayEvent::Separator, None),
        Err(Error::WrongPcr {
            event_type: EV_SEPARATOR,
            pcr: 22
        })
    );
    assert!(matches!(
        log.append_slipway(20, &module, None),
        Err(Error::DigestRule { .. })
    ));
    assert!(matches!(
        log.append_slipway(19, &kind, Some(&bound)),
        Err(Error::DigestRule { .. })
    ));
    assert_eq!(log.len(), before);

    // Same bytes as encoding by hand and appending.
    let mut other_buf = vec![0u8; 8192];
    let mut other = new_log(&mut other_buf, banks);
    other
        .append_measured(19, EV_SLIPWAY_LAUNCH_KIND, &[1, 1])
        .unwrap();
    other
        .append_measured(19, EV_SLIPWAY_LAUNCH_CONFIG, &config)
        .unwrap();
    let mut data = [0u8; 64];
    let len = module.encode(&mut data).unwrap();
    other
        .append(20, EV_SLIPWAY_BOOT_MODULE, &bound, &data[..len])
        .unwrap();
    for pcr in SEPARATOR_PCRS {
        other
            .append_measured(pcr, EV_SEPARATOR, &SEPARATOR_DATA)
            .unwrap();
    }
    assert_eq!(log.as_bytes(), other.as_bytes());
}

#[test]
fn first_difference_names_the_first_differing_event() {
    let banks = BankSet::all_supported();
    let write = |module: &[u8]| {
        let mut buf = vec![0u8; 8192];
        let mut log = new_log(&mut buf, banks);
        log.append_measured(17, 0x404, b"hardware").unwrap();
        log.append_measured(19, EV_SLIPWAY_LAUNCH_KIND, &[1, 1])
            .unwrap();
        let data = [1, 1, 0, b'm', 3, 0, 0, 0, 0, 0, 0, 0];
        let bound = crate::hash::bound_module_digests(&banks, b"m", module);
        log.append(20, EV_SLIPWAY_BOOT_MODULE, &bound, &data)
            .unwrap();
        log.append_measured(21, EV_SEPARATOR, &SEPARATOR_DATA)
            .unwrap();
        log.as_bytes().to_vec()
    };
    let expected_bytes = write(b"abc");
    let same_bytes = write(b"abc");
    let changed_bytes = write(b"abd");
    let expected = EventLog::parse(&expected_bytes).unwrap();
    let same = EventLog::parse(&same_bytes).unwrap();
    let changed = EventLog::parse(&changed_bytes).unwrap();
    let slipway_pcrs = (1 << 19) | (1 << 20) | (1 << 21);
    assert_eq!(
        first_difference(&expected, &same, slipway_pcrs).unwrap(),
        None
    );
    let difference = first_difference(&expected, &changed, slipway_pcrs)
        .unwrap()
        .unwrap();
    assert_eq!(
        difference.index, 1,
        "the module is the second Slipway event"
    );
    assert_eq!(
        difference.expected.unwrap().event_type,
        EV_SLIPWAY_BOOT_MODULE
    );
    assert_eq!(difference.actual.unwrap().pcr, 20);
    // Only PCR21 selected: they agree.
    assert_eq!(
        first_difference(&expected, &changed, 1 << 21).unwrap(),
        None
    );
    // A log that stops early.
    let short = EventLog::parse(&expected_bytes[..expected_bytes.len() - 70]).unwrap();
    assert!(first_difference(&expected, &short, slipway_pcrs).is_err());
}

#[test]
fn a_header_bank_of_unknown_algorithm_is_capped_at_its_declared_size() {
    let mut banks = BankSet::single(HashAlg::Sha256);
    banks
        .push(Bank::with_size(AlgId(0x4242), 16).unwrap())
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let mut log = new_log(&mut buf, banks);
    let digests = log.append_measured(19, 0x601, b"x").unwrap();
    assert_eq!(digests.get(AlgId(0x4242)).unwrap().as_bytes(), [0xFF; 16]);
    let parsed = EventLog::parse(log.as_bytes()).unwrap();
    assert_eq!(parsed.header().banks, banks);
    let event = parsed.events().next().unwrap().unwrap();
    assert_eq!(event.digests, digests);
    let pcrs = parsed.replay(InitialState::DynamicLaunch).unwrap();
    assert_eq!(pcrs.banks().collect::<Vec<_>>(), [HashAlg::Sha256]);
}
