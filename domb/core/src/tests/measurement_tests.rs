use super::fixtures::*;
use crate::config;
use crate::measurements::{self, MeasureError};
use crate::policy::{Decision, ProgramSource};
use slipway_measure::events::{self, SlipwayEvent};
use slipway_measure::{BankSet, HashAlg, hash};
use slipway_protocol::v1::{self, Request, TpmAlgId};

fn all_banks() -> BankSet {
    measurements::bank_set(&[
        TpmAlgId::SHA1,
        TpmAlgId::SHA256,
        TpmAlgId::SHA384,
        TpmAlgId::SHA512,
    ])
    .unwrap()
}

#[test]
fn config_is_measured_verbatim_into_pcr19_in_every_bank() {
    let blob = dtb(&config_tree());
    let m = measurements::config(&all_banks(), &blob).unwrap();
    assert_eq!(
        (m.pcr, m.event_type),
        (19, events::EV_SLIPWAY_LAUNCH_CONFIG)
    );
    assert_eq!(m.event_data, blob);
    assert_eq!(m.digests.len(), 4);
    for alg in HashAlg::ALL {
        assert_eq!(m.digests.get(alg.id()).unwrap(), &hash::hash(alg, &blob));
    }
    let Request::Measure {
        pcr,
        digests,
        event_data,
        ..
    } = m.to_request().unwrap()
    else {
        panic!()
    };
    assert_eq!(pcr, 19);
    assert_eq!(event_data.as_slice(), &blob[..]);
    v1::check_digests(
        &digests,
        &[
            TpmAlgId::SHA1,
            TpmAlgId::SHA256,
            TpmAlgId::SHA384,
            TpmAlgId::SHA512,
        ],
    )
    .unwrap();
}

#[test]
fn module_digest_is_bound_to_its_name() {
    let banks = measurements::bank_set(&[TpmAlgId::SHA256]).unwrap();
    let (m, image) = measurements::module(&banks, "hello", b"image bytes").unwrap();
    assert_eq!((m.pcr, m.event_type), (20, events::EV_SLIPWAY_BOOT_MODULE));
    let name = hash::hash(HashAlg::Sha256, b"hello");
    let body = hash::hash(HashAlg::Sha256, b"image bytes");
    let expected = hash::hash_parts(HashAlg::Sha256, &[name.as_bytes(), body.as_bytes()]);
    assert_eq!(m.digests.as_slice(), &[expected]);
    assert_eq!(image.as_slice(), &[body]);
    let Some(SlipwayEvent::BootModule(record)) =
        SlipwayEvent::decode(m.event_type, &m.event_data).unwrap()
    else {
        panic!("boot module event expected")
    };
    assert_eq!((record.name, record.size), (&b"hello"[..], 11));
}

#[test]
fn policy_and_decisions_go_to_pcr19() {
    let config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    let banks = all_banks();
    let m = measurements::policy(&banks, &config, ProgramSource::Default).unwrap();
    assert_eq!((m.pcr, m.event_type), (19, events::EV_SLIPWAY_POLICY));
    assert_eq!(
        m.event_data,
        crate::policy::policy_event_data(&config, ProgramSource::Default)
    );
    let decision = Decision::Program(slipway_policy::Decision {
        reason: slipway_policy::Reason::ModuleNotAllowed,
        action: slipway_policy::DecisionAction::RecoveryOnly,
        subject: "hello".into(),
    });
    let m = measurements::decision(&banks, &decision).unwrap();
    assert_eq!(
        (m.pcr, m.event_type),
        (19, events::EV_SLIPWAY_POLICY_DECISION)
    );
    assert_eq!(m.event_data, [1, 3, 1, 5, 0, b'h', b'e', b'l', b'l', b'o']);
    let all_passed = Decision::Program(slipway_policy::Decision {
        reason: slipway_policy::Reason::AllChecksPassed,
        action: slipway_policy::DecisionAction::StartAll,
        subject: String::new(),
    });
    let m = measurements::decision(&banks, &all_passed).unwrap();
    assert_eq!(m.event_data, [1, 0, 0, 0, 0]);
    let failed = Decision::Failed(crate::program::ProgramError::OutOfFuel);
    let m = measurements::decision(&banks, &failed).unwrap();
    let mut expected = vec![1, 4, 1, 11, 0];
    expected.extend_from_slice(b"out-of-fuel");
    assert_eq!(m.event_data, expected);
}

#[test]
fn no_active_banks_still_gives_a_request_without_digests() {
    let m = measurements::config(&BankSet::empty(), b"cfg").unwrap();
    let Request::Measure { digests, .. } = m.to_request().unwrap() else {
        panic!()
    };
    assert!(digests.is_empty());
    v1::check_digests(&digests, &[]).unwrap();
}

#[test]
fn oversized_event_data_is_refused() {
    let m = measurements::config(&all_banks(), &vec![0; 4000]).unwrap();
    assert_eq!(m.to_request(), Err(MeasureError::EventDataTooLong));
}
