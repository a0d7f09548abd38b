use super::fixtures::*;
use crate::launch::{self, BootFacts, Hypervisor, LaunchError};
use crate::planner::ModuleData;
use slipway_measure::events;
use slipway_protocol::v1::{self, DomainId, LaunchKind, Request, ResponseOk, TpmAlgId};

/// A fake hypervisor: records every request (after a round trip through the wire encoding),
/// answers like the real one, and can refuse one kind of request.
#[derive(Default)]
struct Fake {
    requests: Vec<Request>,
    refuse_measure: bool,
    /// Refuse measure requests from this one on (0-based), as a TPM failing mid-launch.
    refuse_measure_from: Option<usize>,
    refuse_populate: bool,
    refuse_create: Option<v1::Error>,
    next_id: u16,
}

impl Hypervisor for Fake {
    type Error = v1::Error;
    fn call(&mut self, request: &Request) -> Result<ResponseOk, v1::Error> {
        let mut buffer = [0u8; slipway_protocol::HYPERCALL_BUFFER_SIZE];
        let len = v1::encode_request(request, &mut buffer).expect("every request fits the buffer");
        let request = v1::decode_request(&buffer[..len]).expect("decodes");
        self.requests.push(request.clone());
        match request {
            Request::Measure { .. } if self.refuse_measure => Err(v1::Error::NotPermitted),
            Request::Measure { .. }
                if self
                    .refuse_measure_from
                    .is_some_and(|from| measure_types(&self.requests).len() > from) =>
            {
                Err(v1::Error::TpmFailed)
            }
            Request::Measure { .. } => Ok(ResponseOk::Measured {
                event_index: self.requests.len() as u32,
            }),
            Request::CreateDomain { .. } if self.refuse_create.is_some() => {
                Err(self.refuse_create.unwrap())
            }
            Request::CreateDomain { .. } => {
                self.next_id += 1;
                Ok(ResponseOk::DomainCreated(DomainId(self.next_id)))
            }
            Request::PopulateFromModule { .. } if self.refuse_populate => {
                Err(v1::Error::RangeOutsideDomain)
            }
            Request::HandOff => Err(v1::Error::PlanIncomplete),
            _ => Ok(ResponseOk::Done),
        }
    }

    fn refusal(error: &v1::Error) -> Option<v1::Error> {
        Some(*error)
    }
}

fn run(
    fake: &mut Fake,
    kind: LaunchKind,
    banks: &[TpmAlgId],
    tree: &Node,
) -> (LaunchError, String) {
    run_slot(fake, kind, banks, tree, "config", 0)
}

/// [`run`] with the configuration carried as module `config_name` and slot `requested` asked for.
fn run_slot(
    fake: &mut Fake,
    kind: LaunchKind,
    banks: &[TpmAlgId],
    tree: &Node,
    config_name: &'static str,
    requested: u8,
) -> (LaunchError, String) {
    let config = dtb(tree);
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let modules = [
        ModuleData {
            name: "domb",
            index: 0,
            bytes: b"domb image",
        },
        ModuleData {
            name: config_name,
            index: 1,
            bytes: &config,
        },
        ModuleData {
            name: "hello",
            index: 2,
            bytes: &kernel,
        },
        ModuleData {
            name: "initrd",
            index: 3,
            bytes: b"unused ramdisk",
        },
    ];
    let mut out = String::new();
    let boot = BootFacts {
        launch_kind: kind,
        active_banks: banks,
        modules: &modules,
        boot_state: slipway_protocol::v1::BootState {
            requested_slot: requested,
            attempts: Some(1),
            last_known_good: None,
        },
    };
    let error = launch::run(&boot, fake, &mut out);
    (error, out)
}

fn measure_types(requests: &[Request]) -> Vec<(u8, u32)> {
    requests
        .iter()
        .filter_map(|r| match r {
            Request::Measure {
                pcr, event_type, ..
            } => Some((*pcr, *event_type)),
            _ => None,
        })
        .collect()
}

#[test]
fn measures_everything_before_use_then_builds_and_hands_off() {
    let mut fake = Fake::default();
    let banks = [
        TpmAlgId::SHA1,
        TpmAlgId::SHA256,
        TpmAlgId::SHA384,
        TpmAlgId::SHA512,
    ];
    let (error, out) = run(&mut fake, LaunchKind::Emulated, &banks, &config_tree());
    // The fake refuses the hand-off, so run() returns that error after everything else.
    assert_eq!(
        error,
        LaunchError::HandOff(format!("{}", v1::Error::PlanIncomplete))
    );
    assert_eq!(
        measure_types(&fake.requests),
        [
            (19, events::EV_SLIPWAY_LAUNCH_CONFIG),
            (19, events::EV_SLIPWAY_POLICY),
            (20, events::EV_SLIPWAY_BOOT_MODULE), // hello
            (20, events::EV_SLIPWAY_BOOT_MODULE), // initrd: measured although unused
            (19, events::EV_SLIPWAY_POLICY_DECISION),
        ]
    );
    // Every measurement comes before the first build request; the hand-off is last.
    let first_create = fake
        .requests
        .iter()
        .position(|r| matches!(r, Request::CreateDomain { .. }))
        .unwrap();
    assert!(
        fake.requests[first_create..]
            .iter()
            .all(|r| !matches!(r, Request::Measure { .. }))
    );
    assert_eq!(fake.requests.last(), Some(&Request::HandOff));
    let creates: Vec<_> = fake
        .requests
        .iter()
        .filter_map(|r| match r {
            Request::CreateDomain { name, .. } => Some(name.as_str().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(creates, ["ctl", "hello-a", "hello-b"]);
    for request in &fake.requests {
        if let Request::Measure { digests, .. } = request {
            v1::check_digests(digests, &banks).unwrap();
        }
    }
    assert!(
        out.contains("active TPM banks: sha1, sha256, sha384, sha512"),
        "{out}"
    );
    assert!(
        out.contains("policy: all checks passed: start-all"),
        "{out}"
    );
    assert!(out.contains("handing off"), "{out}");
}

#[test]
fn default_policy_unmeasured_without_tpm_starts_only_recovery() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor"])
        .children
        .retain(|c| c.name != "policy");
    let mut fake = Fake::default();
    let (_, out) = run(&mut fake, LaunchKind::None, &[], &tree);
    assert!(out.contains("active TPM banks: none"), "{out}");
    assert!(
        out.contains("policy: unmeasured-launch: recovery-only"),
        "{out}"
    );
    assert!(
        out.contains("policy: tpm-unavailable: recovery-only"),
        "{out}"
    );
    assert!(out.contains("policy: starting ctl\n"), "{out}");
    let creates = fake
        .requests
        .iter()
        .filter(|r| matches!(r, Request::CreateDomain { .. }))
        .count();
    assert_eq!(creates, 1);
    // Without banks the measure requests still go out, without digests.
    for request in &fake.requests {
        if let Request::Measure { digests, .. } = request {
            assert!(digests.is_empty());
        }
    }
}

#[test]
fn refused_measurements_count_as_tpm_unavailable() {
    let mut fake = Fake {
        refuse_measure: true,
        ..Fake::default()
    };
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "policy"])
        .set("tpm-unavailable", s("halt"));
    let (error, out) = run(&mut fake, LaunchKind::Emulated, &[TpmAlgId::SHA256], &tree);
    assert_eq!(
        error,
        LaunchError::PolicyHalt("the policy's action is halt".into())
    );
    assert!(
        out.contains("measure: config: the calling domain lacks"),
        "{out}"
    );
    assert!(
        !fake
            .requests
            .iter()
            .any(|r| matches!(r, Request::CreateDomain { .. }))
    );
}

#[test]
fn config_errors_and_build_errors_stop_the_launch() {
    let mut fake = Fake::default();
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("memory", u64v(3));
    let (error, _) = run(&mut fake, LaunchKind::Emulated, &[TpmAlgId::SHA256], &tree);
    assert_eq!(
        error.to_string(),
        "launch configuration: node /chosen/hypervisor/hello-b property memory: memory must be a multiple of 4 KiB"
    );
    // The configuration was measured before it was parsed, and nothing after.
    assert_eq!(
        measure_types(&fake.requests),
        [(19, events::EV_SLIPWAY_LAUNCH_CONFIG)]
    );

    let mut fake = Fake {
        refuse_populate: true,
        ..Fake::default()
    };
    let (error, _) = run(
        &mut fake,
        LaunchKind::Emulated,
        &[TpmAlgId::SHA256],
        &config_tree(),
    );
    assert_eq!(
        error,
        LaunchError::Build {
            domain: "ctl".into(),
            request: "populate",
            error: format!("{}", v1::Error::RangeOutsideDomain)
        }
    );
}

#[test]
fn allow_list_mismatch_is_decided_and_measured() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-a"])
        .set("allowed-sha256", vec![0; 32]);
    let mut fake = Fake::default();
    let (error, out) = run(&mut fake, LaunchKind::Emulated, &[TpmAlgId::SHA1], &tree);
    assert_eq!(
        error,
        LaunchError::PolicyHalt("the policy's action is halt".into())
    );
    assert!(
        out.contains("policy: digest-not-allowed (domain hello-a, module hello): halt"),
        "{out}"
    );
    assert_eq!(
        measure_types(&fake.requests).last(),
        Some(&(19, events::EV_SLIPWAY_POLICY_DECISION))
    );
}

#[test]
fn a_configuration_too_large_to_measure_is_not_used() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-a"])
        .set("bootargs", s(&"x".repeat(1000)));
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("bootargs", s(&"y".repeat(1000)));
    tree.find(&["chosen", "hypervisor", "ctl"])
        .set("bootargs", s(&"z".repeat(1000)));
    let mut fake = Fake::default();
    let (error, _) = run(&mut fake, LaunchKind::Emulated, &[TpmAlgId::SHA256], &tree);
    assert!(
        matches!(
            &error,
            LaunchError::Unmeasurable { what, error: crate::measurements::MeasureError::EventDataTooLong } if what == "config"
        ),
        "{error:?}"
    );
    assert!(fake.requests.is_empty(), "nothing is sent or built");
}

#[test]
fn a_refused_creation_names_the_node_and_the_property_behind_it() {
    for (refusal, property) in [
        (v1::Error::OutOfMemory, "memory"),
        (v1::Error::TooManyVcpus, "cpus"),
        (v1::Error::NameTaken, "domain-name"),
    ] {
        let mut fake = Fake {
            refuse_create: Some(refusal),
            ..Fake::default()
        };
        let (error, _) = run(
            &mut fake,
            LaunchKind::Emulated,
            &[TpmAlgId::SHA256],
            &config_tree(),
        );
        let message = format!("{error}");
        assert!(
            message.contains(&format!(
                "node /chosen/hypervisor/ctl property {property}: "
            )),
            "{message}"
        );
    }
    // A refusal no property explains keeps the plain build error.
    let mut fake = Fake {
        refuse_create: Some(v1::Error::NotPermitted),
        ..Fake::default()
    };
    let (error, _) = run(
        &mut fake,
        LaunchKind::Emulated,
        &[TpmAlgId::SHA256],
        &config_tree(),
    );
    assert!(!format!("{error}").contains("property"), "{error}");
}

#[test]
fn a_tpm_failing_while_the_decision_is_measured_makes_the_policy_decide_again() {
    // config, policy, hello, initrd: four measurements; the fifth (the decision) fails.
    let mut fake = Fake {
        refuse_measure_from: Some(4),
        ..Fake::default()
    };
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "policy"])
        .set("tpm-unavailable", s("halt"));
    let (error, out) = run(&mut fake, LaunchKind::Emulated, &[TpmAlgId::SHA256], &tree);
    assert!(
        out.contains("policy: all checks passed: start-all"),
        "{out}"
    );
    assert!(out.contains("evaluating again"), "{out}");
    assert!(out.contains("policy: tpm-unavailable: halt"), "{out}");
    assert_eq!(
        error,
        LaunchError::PolicyHalt("the policy's action is halt".into()),
        "the first start-all decision does not stand"
    );
    assert!(
        !fake
            .requests
            .iter()
            .any(|r| matches!(r, Request::CreateDomain { .. }))
    );
}

#[test]
fn the_requested_slot_picks_its_configuration_module_and_a_missing_one_stops_the_launch() {
    // Slot b requested, its module `config.b` present: measured first, the default program
    // keeps slot b, the launch hands off.
    let mut fake = Fake::default();
    let (error, out) = run_slot(
        &mut fake,
        LaunchKind::Emulated,
        &[TpmAlgId::SHA256],
        &config_tree(),
        "config.b",
        1,
    );
    assert!(matches!(error, LaunchError::HandOff(_)), "{error}\n{out}");
    assert!(
        out.contains("boot state: slot b requested, attempt 1, last known-good slot none"),
        "{out}"
    );
    assert!(out.contains("measure: config.b -> PCR19"), "{out}");
    assert!(out.contains("config: slot b (config.b)"), "{out}");
    assert!(!out.contains("chosen over"), "{out}");
    // Slot b requested but only slot a's module present: nothing is measured or built.
    let mut fake = Fake::default();
    let (error, _) = run_slot(
        &mut fake,
        LaunchKind::Emulated,
        &[TpmAlgId::SHA256],
        &config_tree(),
        "config",
        1,
    );
    assert_eq!(error, LaunchError::NoConfig(1));
    assert_eq!(
        error.to_string(),
        "launch configuration: slot b: no boot module is named \"config.b\""
    );
}

/// Each way domB's launch stops has the exit code that tells the hypervisor which recovery
/// reason to measure (`slipway_protocol::recovery::BuilderExit`).
#[test]
fn every_launch_error_exits_with_the_code_of_its_recovery_reason() {
    use slipway_protocol::recovery::BuilderExit;
    let emulated = |tree: &Node| {
        let mut fake = Fake::default();
        run(&mut fake, LaunchKind::Emulated, &[TpmAlgId::SHA256], tree).0
    };
    // Malformed configuration.
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("memory", u64v(3));
    assert_eq!(emulated(&tree).exit(), BuilderExit::ConfigMalformed);
    // A module the configuration names is missing.
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("kernel", s("vmlinuz"));
    assert_eq!(emulated(&tree).exit(), BuilderExit::ModuleMissing);
    // The policy halts: recovery-only (unmeasured launch) with no recovery domain.
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "policy"])
        .set("unmeasured-launch", s("recovery-only"));
    tree.find(&["chosen", "hypervisor", "ctl"])
        .set("capabilities", strs(&["control"]));
    let mut fake = Fake::default();
    let (error, _) = run(&mut fake, LaunchKind::None, &[TpmAlgId::SHA256], &tree);
    assert!(matches!(error, LaunchError::PolicyHalt(_)), "{error}");
    assert_eq!(error.exit(), BuilderExit::PolicyHalted);
    // A refused build or hand-off: no valid plan.
    let mut fake = Fake {
        refuse_populate: true,
        ..Fake::default()
    };
    let (error, _) = run(
        &mut fake,
        LaunchKind::Emulated,
        &[TpmAlgId::SHA256],
        &config_tree(),
    );
    assert_eq!(error.exit(), BuilderExit::PlanRefused);
    let (error, _) = run(
        &mut Fake::default(),
        LaunchKind::Emulated,
        &[TpmAlgId::SHA256],
        &config_tree(),
    );
    assert!(matches!(error, LaunchError::HandOff(_)), "{error}");
    assert_eq!(error.exit(), BuilderExit::PlanRefused);
    assert_eq!(
        LaunchError::NoConfig(0).exit(),
        BuilderExit::ConfigMalformed
    );
    assert_eq!(LaunchError::Banks("x".into()).exit(), BuilderExit::Failed);
}

/// The test-only fault property stops domB right after the configuration was measured and
/// parsed, before anything else: the fault is on record in PCR19 with the configuration.
#[test]
fn a_test_fault_in_the_measured_configuration_stops_the_launch_after_it_is_measured() {
    use crate::config::{TEST_FAULT_PROPERTY, TestFault};
    for (value, fault) in [
        ("panic", TestFault::Panic),
        ("crash", TestFault::Crash),
        ("hang", TestFault::Hang),
    ] {
        let mut tree = config_tree();
        tree.find(&["chosen", "hypervisor"])
            .set(TEST_FAULT_PROPERTY, s(value));
        let mut fake = Fake::default();
        let (error, _) = run(&mut fake, LaunchKind::Emulated, &[TpmAlgId::SHA256], &tree);
        assert_eq!(error, LaunchError::TestFault(fault));
        assert_eq!(
            measure_types(&fake.requests),
            [(19, events::EV_SLIPWAY_LAUNCH_CONFIG)]
        );
    }
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor"])
        .set(TEST_FAULT_PROPERTY, s("explode"));
    let (error, _) = run(
        &mut Fake::default(),
        LaunchKind::Emulated,
        &[TpmAlgId::SHA256],
        &tree,
    );
    assert_eq!(
        error.to_string(),
        "launch configuration: node /chosen/hypervisor property slipway,test-boot-domain-fault: test fault \"explode\" is not one of \"panic\", \"crash\", \"hang\""
    );
}
