use crate::events::*;
use crate::*;
use proptest::prelude::*;

fn encode(event: &SlipwayEvent<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; event.encoded_len() + 8];
    let len = event.encode(&mut buf).unwrap();
    assert_eq!(len, event.encoded_len());
    buf.truncate(len);
    buf
}

#[test]
fn event_types_avoid_tcg_txt_tboot_and_trenchboot() {
    let ours = [
        EV_SLIPWAY_LAUNCH_KIND,
        EV_SLIPWAY_HYPERVISOR_CMDLINE,
        EV_SLIPWAY_DOMB_IMAGE,
        EV_SLIPWAY_LAUNCH_CONFIG,
        EV_SLIPWAY_POLICY,
        EV_SLIPWAY_BOOT_MODULE,
        EV_SLIPWAY_DOMAIN_BUILD,
        EV_SLIPWAY_POLICY_DECISION,
        EV_SLIPWAY_BANKS_CAPPED,
        EV_SLIPWAY_EMULATED_LAUNCH,
        EV_SLIPWAY_RECOVERY_IMAGE,
    ];
    for (i, ty) in ours.iter().enumerate() {
        assert!((0x600..0x700).contains(ty));
        assert!(!(0x401..=0x41a).contains(ty) && !(0x501..=0x504).contains(ty));
        assert!(!ours[..i].contains(ty), "{ty:#x} twice");
    }
}

#[test]
fn encodings_are_pinned() {
    assert_eq!(
        encode(&SlipwayEvent::LaunchKind(LaunchKind::Emulated)),
        [1, 1]
    );
    assert_eq!(
        encode(&SlipwayEvent::LaunchKind(LaunchKind::IntelTxt)),
        [1, 2]
    );
    assert_eq!(
        encode(&SlipwayEvent::LaunchKind(LaunchKind::AmdSkinit)),
        [1, 3]
    );
    assert_eq!(
        encode(&SlipwayEvent::LaunchKind(LaunchKind::Unmeasured)),
        [1, 0]
    );
    assert_eq!(
        encode(&SlipwayEvent::LaunchKind(LaunchKind::TxtSimulated)),
        [1, 4]
    );
    assert_eq!(
        encode(&SlipwayEvent::BootModule(ModuleRecord {
            name: b"hello",
            size: 0x0102
        })),
        [
            1, 5, 0, b'h', b'e', b'l', b'l', b'o', 2, 1, 0, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(
        encode(&SlipwayEvent::DombImage(ModuleRecord {
            name: b"domb",
            size: 1
        })),
        [1, 4, 0, b'd', b'o', b'm', b'b', 1, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        encode(&SlipwayEvent::DomainBuild(DomainBuildRecord {
            name: b"a",
            payload_format: BUILD_PAYLOAD_POSTCARD_V1,
            payload: &[9, 8],
        })),
        [1, 1, 0, b'a', 1, 0, 2, 0, 0, 0, 9, 8]
    );
    assert_eq!(
        encode(&SlipwayEvent::PolicyDecision(PolicyDecision {
            reason: DecisionReason::ModuleNotAllowed,
            action: DecisionAction::StartRecoveryOnly,
            subject: b"m",
        })),
        [1, 3, 1, 1, 0, b'm']
    );
    assert_eq!(
        encode(&SlipwayEvent::BanksCapped(
            BankSet::from_algs(&[AlgId::SM3_256]).unwrap()
        )),
        [1, 1, 0x12, 0, 32, 0]
    );
    assert_eq!(
        encode(&SlipwayEvent::RecoveryImage(ModuleRecord {
            name: b"rescue",
            size: 2
        })),
        [
            1, 6, 0, b'r', b'e', b's', b'c', b'u', b'e', 2, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(encode(&SlipwayEvent::Separator), [0, 0, 0, 0]);
    assert_eq!(
        encode(&SlipwayEvent::EmulatedLaunch {
            region_start: 0x20_0000,
            region_size: 0x1000
        }),
        [1, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        encode(&SlipwayEvent::HypervisorCmdline(b"console=com1")),
        b"console=com1"
    );
    assert_eq!(
        encode(&SlipwayEvent::LaunchConfig(b"\xd0\x0d\xfe\xed")),
        b"\xd0\x0d\xfe\xed"
    );
    assert_eq!(encode(&SlipwayEvent::Policy(b"p")), b"p");
}

#[test]
fn every_variant_round_trips_with_its_type_pcr_and_rule() {
    let capped = BankSet::from_algs(&[AlgId::SM3_256, AlgId::SHA3_384]).unwrap();
    let cases = [
        (
            SlipwayEvent::LaunchKind(LaunchKind::Emulated),
            19,
            DigestRule::EventData,
        ),
        (SlipwayEvent::BanksCapped(capped), 19, DigestRule::EventData),
        (
            SlipwayEvent::HypervisorCmdline(b"x y"),
            19,
            DigestRule::EventData,
        ),
        (
            SlipwayEvent::DombImage(ModuleRecord {
                name: b"domb",
                size: 7,
            }),
            19,
            DigestRule::BoundModule,
        ),
        (
            SlipwayEvent::LaunchConfig(b"dtb"),
            19,
            DigestRule::EventData,
        ),
        (SlipwayEvent::Policy(b""), 19, DigestRule::EventData),
        (
            SlipwayEvent::PolicyDecision(PolicyDecision {
                reason: DecisionReason::UnmeasuredLaunch,
                action: DecisionAction::Halt,
                subject: b"",
            }),
            19,
            DigestRule::EventData,
        ),
        (
            SlipwayEvent::BootModule(ModuleRecord {
                name: b"m",
                size: u64::MAX,
            }),
            20,
            DigestRule::BoundModule,
        ),
        (
            SlipwayEvent::DomainBuild(DomainBuildRecord {
                name: b"d",
                payload_format: 7,
                payload: b"",
            }),
            21,
            DigestRule::EventData,
        ),
        (SlipwayEvent::Separator, 19, DigestRule::EventData),
        (
            SlipwayEvent::EmulatedLaunch {
                region_start: 1,
                region_size: 2,
            },
            17,
            DigestRule::LaunchRegion,
        ),
    ];
    for (event, pcr, rule) in cases {
        let bytes = encode(&event);
        assert_eq!(
            SlipwayEvent::decode(event.event_type(), &bytes),
            Ok(Some(event))
        );
        assert_eq!(event.pcr(), pcr, "{event:?}");
        assert_eq!(event.digest_rule(), rule, "{event:?}");
        // Every interpreted event's PCR is one the plan allows its writer to extend.
        assert!(crate::pcr::may_extend(event.pcr(), HYPERVISOR_LOCALITY).unwrap() || pcr == 17);
    }
    assert_eq!(SlipwayEvent::decode(0x404, b"anything"), Ok(None));
}

#[test]
fn bad_event_data_is_an_error() {
    let bad = |ty: u32, data: &[u8]| matches!(SlipwayEvent::decode(ty, data), Err(Error::BadEventData { event_type, .. }) if event_type == ty);
    assert!(bad(EV_SLIPWAY_LAUNCH_KIND, &[]));
    assert!(bad(EV_SLIPWAY_LAUNCH_KIND, &[2, 1]), "unknown version");
    assert!(bad(EV_SLIPWAY_LAUNCH_KIND, &[1, 9]), "unknown kind");
    assert!(bad(EV_SLIPWAY_LAUNCH_KIND, &[1, 1, 0]), "trailing");
    assert!(
        bad(EV_SLIPWAY_BOOT_MODULE, &[1, 5, 0, b'a']),
        "name cut off"
    );
    assert!(bad(EV_SLIPWAY_BOOT_MODULE, &[1, 0, 1]), "name over 255");
    assert!(
        bad(
            EV_SLIPWAY_DOMAIN_BUILD,
            &[1, 1, 0, b'a', 1, 0, 9, 0, 0, 0, 1]
        ),
        "payload cut off"
    );
    assert!(
        bad(EV_SLIPWAY_POLICY_DECISION, &[1, 13, 0, 0, 0]),
        "unknown reason"
    );
    assert!(
        bad(EV_SLIPWAY_POLICY_DECISION, &[1, 0, 9, 0, 0]),
        "unknown action"
    );
    assert!(
        bad(EV_SLIPWAY_BANKS_CAPPED, &[1, 1, 0x12, 0, 20, 0]),
        "wrong size for SM3"
    );
    assert!(bad(EV_SEPARATOR, &[0, 0, 0, 1]), "error separator");
    assert!(bad(EV_SLIPWAY_EMULATED_LAUNCH, &[1, 0]));
}

#[test]
fn encoders_check_lengths() {
    let long = [b'n'; 256];
    let mut buf = [0u8; 1024];
    assert_eq!(
        SlipwayEvent::BootModule(ModuleRecord {
            name: &long,
            size: 0
        })
        .encode(&mut buf),
        Err(Error::FieldTooLong {
            what: "module name",
            len: 256,
            max: 255
        })
    );
    assert_eq!(
        SlipwayEvent::LaunchKind(LaunchKind::Emulated).encode(&mut buf[..1]),
        Err(Error::BufferTooSmall {
            needed: 2,
            available: 1
        })
    );
}

#[test]
fn the_separator_goes_into_19_20_21_and_domb_only_gets_19_20() {
    assert_eq!(SEPARATOR_PCRS, [19, 20, 21]);
    assert_eq!(DOMB_PCRS, [19, 20]);
    assert_eq!(HYPERVISOR_LOCALITY, 2);
}

proptest! {
    #[test]
    fn module_and_build_records_round_trip(
        name in proptest::collection::vec(any::<u8>(), 0..=255),
        size in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..500),
        format in any::<u16>(),
    ) {
        let module = SlipwayEvent::BootModule(ModuleRecord { name: &name, size });
        let bytes = encode(&module);
        prop_assert_eq!(SlipwayEvent::decode(EV_SLIPWAY_BOOT_MODULE, &bytes), Ok(Some(module)));
        let build = SlipwayEvent::DomainBuild(DomainBuildRecord { name: &name, payload_format: format, payload: &payload });
        let bytes = encode(&build);
        prop_assert_eq!(SlipwayEvent::decode(EV_SLIPWAY_DOMAIN_BUILD, &bytes), Ok(Some(build)));
    }

    #[test]
    fn decoding_garbage_never_panics(ty in 0x5ffu32..0x60e, data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = SlipwayEvent::decode(ty, &data);
        let _ = SlipwayEvent::decode(EV_SEPARATOR, &data);
    }
}

/// The recovery reasons are the hypervisor's, pinned: verifiers, the Keylime parser and
/// `cargo xtask log` know them by these codes and names.
#[test]
fn recovery_decision_reasons_are_pinned() {
    let pinned = [
        (6, DecisionReason::ConfigMalformed, "config-malformed"),
        (7, DecisionReason::ModuleMissing, "module-missing"),
        (8, DecisionReason::PolicyHalted, "policy-halted"),
        (9, DecisionReason::PlanRefused, "plan-refused"),
        (10, DecisionReason::BootDomainFailed, "boot-domain-failed"),
        (11, DecisionReason::BootDomainCrashed, "boot-domain-crashed"),
        (12, DecisionReason::BootDomainHung, "boot-domain-hung"),
    ];
    for (code, reason, name) in pinned {
        assert_eq!(reason as u8, code);
        assert_eq!(reason.name(), name);
        assert_eq!(DecisionReason::from_code(code), Some(reason));
        assert!(reason.is_recovery());
        let data = encode(&SlipwayEvent::PolicyDecision(PolicyDecision {
            reason,
            action: DecisionAction::StartRecoveryOnly,
            subject: b"rescue",
        }));
        assert_eq!(&data[..3], &[1, code, 1]);
        assert_eq!(
            SlipwayEvent::decode(EV_SLIPWAY_POLICY_DECISION, &data).unwrap(),
            Some(SlipwayEvent::PolicyDecision(PolicyDecision {
                reason,
                action: DecisionAction::StartRecoveryOnly,
                subject: b"rescue",
            }))
        );
    }
    for code in 0..6 {
        assert!(!DecisionReason::from_code(code).unwrap().is_recovery());
    }
    assert_eq!(DecisionReason::from_code(13), None);
    let image = encode(&SlipwayEvent::RecoveryImage(ModuleRecord {
        name: b"rescue",
        size: 7,
    }));
    assert_eq!(
        SlipwayEvent::decode(EV_SLIPWAY_RECOVERY_IMAGE, &image).unwrap(),
        Some(SlipwayEvent::RecoveryImage(ModuleRecord {
            name: b"rescue",
            size: 7
        }))
    );
    assert_eq!(
        slipway_type_name(EV_SLIPWAY_RECOVERY_IMAGE),
        Some("EV_SLIPWAY_RECOVERY_IMAGE")
    );
    let event = SlipwayEvent::RecoveryImage(ModuleRecord {
        name: b"r",
        size: 1,
    });
    assert_eq!(event.pcr(), PCR_BUILD_INPUTS);
    assert_eq!(event.digest_rule(), DigestRule::BoundModule);
}

#[test]
fn boot_state_and_slot_choice_encode_to_pinned_bytes_and_back() {
    use crate::events::{
        BootRecordStatus, BootStateRecord, EV_SLIPWAY_BOOT_STATE, EV_SLIPWAY_SLOT_CHOICE,
        SlotChoice, slipway_type_name,
    };
    let cases = [
        (
            SlipwayEvent::BootState(BootStateRecord {
                status: BootRecordStatus::Counted,
                requested_slot: 1,
                attempts: 0x0102_0304,
                last_known_good: Some(0),
            }),
            vec![1u8, 1, 1, 4, 3, 2, 1, 0],
        ),
        (
            SlipwayEvent::BootState(BootStateRecord {
                status: BootRecordStatus::Unavailable,
                requested_slot: 0,
                attempts: 0,
                last_known_good: None,
            }),
            vec![1u8, 3, 0, 0, 0, 0, 0, 0xff],
        ),
        (
            SlipwayEvent::SlotChoice(SlotChoice { from: 1, to: 0 }),
            vec![1u8, 1, 0],
        ),
    ];
    for (event, bytes) in cases {
        let mut out = vec![0u8; event.encoded_len()];
        assert_eq!(event.encode(&mut out).unwrap(), bytes.len());
        assert_eq!(out, bytes);
        assert_eq!(event.pcr(), 19);
        assert_eq!(
            SlipwayEvent::decode(event.event_type(), &bytes).unwrap(),
            Some(event)
        );
    }
    assert_eq!(slipway_type_name(0x60C), Some("EV_SLIPWAY_BOOT_STATE"));
    assert_eq!(slipway_type_name(0x60D), Some("EV_SLIPWAY_SLOT_CHOICE"));
    let refused: [(u32, &[u8]); 7] = [
        (EV_SLIPWAY_BOOT_STATE, &[1, 4, 0, 0, 0, 0, 0, 0xff]),
        (EV_SLIPWAY_BOOT_STATE, &[1, 3, 0, 1, 0, 0, 0, 0xff]),
        (EV_SLIPWAY_BOOT_STATE, &[1, 1, 0, 1, 0, 0, 0]),
        (EV_SLIPWAY_BOOT_STATE, &[1, 1, 0, 1, 0, 0, 0, 0, 0]),
        (EV_SLIPWAY_BOOT_STATE, &[2, 1, 0, 1, 0, 0, 0, 0]),
        (EV_SLIPWAY_SLOT_CHOICE, &[1, 1, 1]),
        (EV_SLIPWAY_SLOT_CHOICE, &[1, 1]),
    ];
    for (event_type, bytes) in refused {
        assert!(
            SlipwayEvent::decode(event_type, bytes).is_err(),
            "{event_type:#x} {bytes:?}"
        );
    }
}
