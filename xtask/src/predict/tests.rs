use super::*;
use slipway_measure::AlgId;

/// A minimal ELF64 with the given PT_LOAD segments: (paddr, file bytes, memsz).
fn elf_with(segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
    let phoff = 64u64;
    let data_start = phoff + 56 * segments.len() as u64;
    let mut out = vec![0u8; data_start as usize];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // 64-bit
    out[5] = 1; // little endian
    out[6] = 1; // version
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    let mut offset = data_start;
    for (i, (paddr, bytes, memsz)) in segments.iter().enumerate() {
        let ph = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
        ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&5u32.to_le_bytes());
        ph[8..16].copy_from_slice(&offset.to_le_bytes());
        ph[16..24].copy_from_slice(&paddr.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        offset += bytes.len() as u64;
    }
    for (_, bytes, _) in segments {
        out.extend_from_slice(bytes);
    }
    out
}

fn mle_header(start: u64, end: u64) -> Vec<u8> {
    let mut h = MLE_MAGIC.to_vec();
    h.extend(1u32.to_le_bytes());
    h.extend(32u32.to_le_bytes());
    h.extend(start.to_le_bytes());
    h.extend(end.to_le_bytes());
    h
}

#[test]
fn measured_region_is_the_loaded_bytes_with_gaps_zero_filled() {
    let mut text = vec![0x90u8; 0x40];
    text.extend(mle_header(0x20_0000, 0x20_3010));
    text.extend([0xC3; 0x10]);
    let rodata = [0xAAu8; 0x10];
    // .text at 2 MiB (file 0x60, memory 0x100: the tail is zero), .rodata at 2 MiB + 0x3000.
    let elf = elf_with(&[(0x20_0000, &text, 0x100), (0x20_3000, &rodata, 0x10)]);
    let region = measured_region(&elf).unwrap();
    assert_eq!(region.start, 0x20_0000);
    assert_eq!(region.bytes.len(), 0x3010);
    assert_eq!(&region.bytes[..text.len()], &text[..]);
    assert!(region.bytes[text.len()..0x3000].iter().all(|&b| b == 0));
    assert_eq!(&region.bytes[0x3000..], &rodata);
}

#[test]
fn a_hypervisor_without_mle_header_is_named() {
    let elf = elf_with(&[(0x20_0000, &[0x90; 0x100], 0x100)]);
    assert!(matches!(
        measured_region(&elf),
        Err(PredictError::NoMleHeader)
    ));
    let mut bad = mle_header(0x20_0000, 0x20_0000);
    bad.resize(0x40, 0);
    let elf = elf_with(&[(0x20_0000, &bad, 0x40)]);
    assert!(matches!(
        measured_region(&elf),
        Err(PredictError::BadMleHeader(_))
    ));
    assert!(matches!(
        measured_region(b"not an elf"),
        Err(PredictError::Elf(_))
    ));
}

#[test]
fn banks_and_arguments() {
    let banks = parse_banks("sha256,sha1").unwrap();
    assert_eq!(
        banks.iter().map(|b| b.alg).collect::<Vec<_>>(),
        [AlgId::SHA256, AlgId::SHA1]
    );
    assert!(parse_banks("md5").is_err());
    assert!(parse_banks("").is_err());
    assert!(parse_banks("sha1,sha1").is_err());
}

fn hypervisor_elf() -> Vec<u8> {
    let mut text = vec![0x90u8; 0x40];
    text.extend(mle_header(0x20_0000, 0x20_2000));
    text.resize(0x2000, 0xC3);
    elf_with(&[(0x20_0000, &text, 0x2000)])
}

fn synthetic_sinit() -> Vec<u8> {
    use slipway_hv_core::txt::acm::{SYNTHETIC_SIZE, write_synthetic_sinit};
    let mut acm = vec![0u8; SYNTHETIC_SIZE];
    write_synthetic_sinit(&mut acm, &crate::txt::sinit::SIMULATED_PLATFORM, 0x5a).unwrap();
    acm
}

#[test]
fn a_txt_launch_log_starts_with_sinit_events_over_the_acm_and_the_measured_region() {
    use crate::txt::sinit::{EVTYPE_HASH_START, EVTYPE_MLE_HASH, EVTYPE_SINIT_PUBKEY_HASH};
    let banks = parse_banks("sha1,sha256").unwrap();
    let elf = hypervisor_elf();
    let acm = synthetic_sinit();
    let mut buf = vec![0u8; 1 << 16];
    let writer = sinit_log(&mut buf, &banks, &acm, &elf, PredictedLaunch::TxtSimulated).unwrap();
    let bytes = writer.as_bytes().to_vec();
    let log = EventLog::parse(&bytes).unwrap();
    let events: Vec<_> = log.events().map(|e| e.unwrap()).collect();
    assert_eq!(
        (events[0].pcr, events[0].event_type),
        (17, EVTYPE_HASH_START)
    );
    let region = measured_region(&elf).unwrap();
    let mle = events
        .iter()
        .find(|e| e.event_type == EVTYPE_MLE_HASH)
        .unwrap();
    assert_eq!(
        mle.digests.get(AlgId::SHA256).unwrap(),
        &slipway_measure::hash::hash(HashAlg::Sha256, &region.bytes)
    );
    assert!(
        events
            .iter()
            .any(|e| e.pcr == 18 && e.event_type == EVTYPE_SINIT_PUBKEY_HASH)
    );
    // PCR17 = H(0 || H(ACM)) extended with the rest: a different hypervisor, a different PCR17,
    // the same PCR18.
    let pcrs = log.replay(InitialState::DynamicLaunch).unwrap();
    let mut other_text = vec![0x90u8; 0x40];
    other_text.extend(mle_header(0x20_0000, 0x20_2000));
    other_text.resize(0x2000, 0xCC);
    let other_elf = elf_with(&[(0x20_0000, &other_text, 0x2000)]);
    let mut other_buf = vec![0u8; 1 << 16];
    let other = sinit_log(
        &mut other_buf,
        &banks,
        &acm,
        &other_elf,
        PredictedLaunch::TxtSimulated,
    )
    .unwrap();
    let other = EventLog::parse(other.as_bytes())
        .unwrap()
        .replay(InitialState::DynamicLaunch)
        .unwrap();
    assert_ne!(
        pcrs.value(17, HashAlg::Sha256).unwrap(),
        other.value(17, HashAlg::Sha256).unwrap()
    );
    assert_eq!(
        pcrs.value(18, HashAlg::Sha256).unwrap(),
        other.value(18, HashAlg::Sha256).unwrap()
    );
}

#[test]
fn a_hardware_txt_prediction_refuses_the_synthetic_sinit_and_the_simulated_one_needs_it() {
    let banks = parse_banks("sha256").unwrap();
    let elf = hypervisor_elf();
    let mut buf = vec![0u8; 1 << 16];
    let err = sinit_log(
        &mut buf,
        &banks,
        &synthetic_sinit(),
        &elf,
        PredictedLaunch::Txt,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("synthetic"), "{err}");
    let mut not_synthetic = synthetic_sinit();
    not_synthetic[56] = 0; // the marker in the reserved bytes
    let err = sinit_log(
        &mut buf,
        &banks,
        &not_synthetic,
        &elf,
        PredictedLaunch::TxtSimulated,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("not the synthetic SINIT"), "{err}");
    // A hardware ACM is checked by the same rules as on the machine.
    not_synthetic[16] = 0x22;
    let err = sinit_log(&mut buf, &banks, &not_synthetic, &elf, PredictedLaunch::Txt)
        .err()
        .unwrap();
    assert!(err.to_string().contains("module_vendor"), "{err}");
}

#[test]
fn launch_names_round_trip() {
    for launch in PredictedLaunch::ALL {
        assert_eq!(
            <PredictedLaunch as clap::ValueEnum>::from_str(launch.name(), false),
            Ok(launch)
        );
    }
    assert_eq!(PredictedLaunch::TxtSimulated.name(), "txt-simulated");
}

#[test]
fn boot_state_option_parses_status_attempts_and_known_good_slot() {
    use slipway_measure::events::{BootRecordStatus, BootStateRecord};
    let state = parse_boot_state("counted:3:a", "console=com1 slot=b").unwrap();
    assert_eq!(
        state,
        BootStateRecord {
            status: BootRecordStatus::Counted,
            requested_slot: 1,
            attempts: 3,
            last_known_good: Some(0),
        }
    );
    let fresh = parse_boot_state("created:1:none", "console=com1").unwrap();
    assert_eq!(fresh, first_boot_state("console=com1"));
    let unavailable = parse_boot_state("unavailable", "slot=c").unwrap();
    assert_eq!(unavailable.status, BootRecordStatus::Unavailable);
    assert_eq!((unavailable.requested_slot, unavailable.attempts), (2, 0));
    for bad in [
        "counted:0:a",
        "counted:x:a",
        "counted:3:e",
        "counted:3",
        "bogus:1:a",
        "",
    ] {
        assert!(parse_boot_state(bad, "console=com1").is_err(), "{bad}");
    }
    assert!(parse_boot_state("counted:1:a", "slot=z").is_err());
}

#[test]
fn a_log_without_a_boot_state_event_has_none() {
    assert_eq!(boot_state_of_log(b"not a log"), None);
}
