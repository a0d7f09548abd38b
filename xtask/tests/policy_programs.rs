//! The example policy program `images/policies/machine-class`, built by `cargo xtask build`'s
//! builder for wasm32 and run in domB's interpreter (`slipway_domb_core::program`) on the inputs
//! domB would give it: per machine class its allow-list of domains, recovery-only when the
//! class is unknown or the launch cannot be trusted.

use std::sync::OnceLock;

use slipway_domb_core::program;
use slipway_policy::{
    ALG_SHA256, Action, BootState, Config, ConfigPolicy, Decision, DecisionAction, Domain, Input,
    LaunchKind, Module, ModuleDigest, Reason, TpmState, Verdict, capability,
};
use xtask::workspace::{POLICY_TARGET, Workspace};

const PACKAGE: &str = "slipway-policy-machine-class";

fn example() -> &'static [u8] {
    static PROGRAM: OnceLock<Vec<u8>> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let ws = Workspace::locate().expect("cargo metadata");
        xtask::builder::build_freestanding(&ws, &[PACKAGE]).expect("build the example");
        std::fs::read(ws.freestanding_binary(POLICY_TARGET, PACKAGE)).expect("the built program")
    })
}

fn module(name: &str, digest: u8) -> Module {
    Module {
        name: name.into(),
        size: 1,
        digests: vec![ModuleDigest {
            alg: ALG_SHA256,
            digest: vec![digest; 32],
        }],
    }
}

fn domain(name: &str, capabilities: u32) -> Domain {
    Domain {
        name: name.into(),
        kernel: "hello".into(),
        ramdisk: None,
        capabilities,
        memory_bytes: 8 << 20,
        vcpus: 1,
        allowed_sha256: vec![],
    }
}

fn input(class_modules: &[&str]) -> Input {
    let mut modules = vec![module("config", 9), module("hello", 1)];
    modules.extend(class_modules.iter().map(|name| module(name, 2)));
    Input {
        launch_kind: LaunchKind::Emulated,
        tpm: TpmState {
            available: true,
            banks: vec![ALG_SHA256],
        },
        boot_state: BootState {
            slots: 1,
            ..BootState::default()
        },
        modules,
        config: Config {
            policy: ConfigPolicy {
                present: false,
                unmeasured_launch: Action::RecoveryOnly,
                tpm_unavailable: Action::RecoveryOnly,
                digest_not_allowed: Action::Halt,
            },
            domains: vec![
                domain("control", capability::CONTROL | capability::RECOVERY),
                domain("hello", 0),
                domain("extra", 0),
            ],
        },
    }
}

fn rule(action: DecisionAction, subject: &str) -> Decision {
    Decision {
        reason: Reason::PolicyRule,
        action,
        subject: subject.into(),
    }
}

#[test]
fn each_machine_class_starts_its_allow_listed_domains() {
    let edge = program::run(example(), &input(&["machine-class-edge"])).unwrap();
    assert_eq!(
        edge.output.verdict,
        Verdict::StartListed(vec!["control".into(), "hello".into()])
    );
    assert_eq!(
        edge.output.decisions,
        [rule(DecisionAction::StartListed, "machine-class:edge")]
    );
    let vault = program::run(example(), &input(&["machine-class-vault"])).unwrap();
    assert_eq!(
        vault.output.verdict,
        Verdict::StartListed(vec!["control".into()])
    );
}

#[test]
fn an_unknown_missing_or_ambiguous_class_falls_back_to_recovery() {
    for (modules, subject) in [
        (&[][..], "machine-class:none"),
        (&["machine-class-lab"][..], "machine-class:lab"),
        (
            &["machine-class-edge", "machine-class-vault"][..],
            "machine-class:several",
        ),
    ] {
        let run = program::run(example(), &input(modules)).unwrap();
        assert_eq!(run.output.verdict, Verdict::RecoveryOnly, "{modules:?}");
        assert_eq!(
            run.output.decisions,
            [rule(DecisionAction::RecoveryOnly, subject)]
        );
    }
}

#[test]
fn an_untrusted_launch_falls_back_to_recovery_never_halts() {
    let mut unmeasured = input(&["machine-class-edge"]);
    unmeasured.launch_kind = LaunchKind::Unmeasured;
    unmeasured.tpm.available = false;
    unmeasured.config.domains[1].allowed_sha256 = vec![[7; 32]];
    let run = program::run(example(), &unmeasured).unwrap();
    assert_eq!(run.output.verdict, Verdict::RecoveryOnly);
    let reasons: Vec<Reason> = run.output.decisions.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        [
            Reason::UnmeasuredLaunch,
            Reason::TpmUnavailable,
            Reason::ModuleNotAllowed
        ]
    );
}

#[test]
fn too_many_failed_boots_without_a_known_good_slot_fall_back_to_recovery() {
    let mut retried = input(&["machine-class-edge"]);
    retried.boot_state.boot_attempts = Some(3);
    let run = program::run(example(), &retried).unwrap();
    assert_eq!(run.output.verdict, Verdict::RecoveryOnly);
    assert_eq!(run.output.slot, 0);
    assert_eq!(
        run.output.decisions,
        [rule(DecisionAction::RecoveryOnly, "boot-attempts")]
    );
    retried.boot_state.boot_attempts = Some(2);
    assert!(matches!(
        program::run(example(), &retried).unwrap().output.verdict,
        Verdict::StartListed(_)
    ));
}

#[test]
fn a_slot_that_failed_twice_falls_back_to_the_last_known_good_slot_once() {
    let mut failing = input(&["machine-class-edge"]);
    failing.boot_state = BootState {
        boot_attempts: Some(3),
        last_known_good_slot: Some(0),
        requested_slot: 1,
        config_slot: 1,
        slots: 0b11,
    };
    let run = program::run(example(), &failing).unwrap();
    assert_eq!(run.output.slot, 0, "{}", run.output.reason);
    assert!(
        run.output.reason.contains("slot b failed 2 times"),
        "{}",
        run.output.reason
    );
    // Two boots of slot b: not yet.
    failing.boot_state.boot_attempts = Some(2);
    let run = program::run(example(), &failing).unwrap();
    assert_eq!(run.output.slot, 1);
    assert!(matches!(run.output.verdict, Verdict::StartListed(_)));
    // The run after the fallback (slot a's configuration) starts its class's domains there.
    failing.boot_state.boot_attempts = Some(3);
    failing.boot_state.config_slot = 0;
    let run = program::run(example(), &failing).unwrap();
    assert_eq!(run.output.slot, 0);
    assert!(matches!(run.output.verdict, Verdict::StartListed(_)));
    // The known-good slot is the failing one, or missing from the boot: recovery only.
    for (good, slots) in [(1, 0b11), (2, 0b11)] {
        failing.boot_state = BootState {
            boot_attempts: Some(3),
            last_known_good_slot: Some(good),
            requested_slot: 1,
            config_slot: 1,
            slots,
        };
        let run = program::run(example(), &failing).unwrap();
        assert_eq!(run.output.slot, 1);
        assert_eq!(run.output.verdict, Verdict::RecoveryOnly);
    }
}

#[test]
fn domb_refuses_a_second_switch_and_a_slot_the_boot_lacks() {
    let mut input = input(&["machine-class-edge"]);
    input.boot_state = BootState {
        boot_attempts: Some(1),
        last_known_good_slot: None,
        requested_slot: 1,
        config_slot: 0,
        slots: 0b11,
    };
    let mut output = program::run(example(), &input).unwrap().output;
    assert_eq!(output.slot, 0);
    output.slot = 1;
    assert!(
        program::check_answer(&output, &input)
            .unwrap_err()
            .contains("one switch per boot")
    );
    input.boot_state.config_slot = 1;
    output.slot = 2;
    assert!(
        program::check_answer(&output, &input)
            .unwrap_err()
            .contains("does not exist")
    );
}

/// The whole fallback in domB's real launch against the hypervisor's real dispatcher (what
/// `cargo xtask predict` runs): the bundle `test-fallback-slot-b`'s files with the example
/// program, for boot states before and at the fallback.
#[test]
fn domb_measures_the_slot_choice_and_the_fallback_configuration_before_using_them() {
    use slipway_measure::events::{
        BootRecordStatus, BootStateRecord, EV_SLIPWAY_BOOT_STATE, EV_SLIPWAY_LAUNCH_CONFIG,
        EV_SLIPWAY_POLICY_DECISION, EV_SLIPWAY_SLOT_CHOICE,
    };
    use xtask::predict::{self, BundleInputs, PredictedLaunch};
    use xtask::workspace::FREESTANDING_TARGET;

    let ws = Workspace::locate().expect("cargo metadata");
    xtask::builder::build_freestanding(&ws, &["slipway-guest-hello"]).expect("build hello");
    let hello = std::fs::read(ws.freestanding_binary(FREESTANDING_TARGET, "slipway-guest-hello"))
        .expect("the built guest");
    let dir = xtask::procs::TempDir::new("fallback-dtb").unwrap();
    let dtb = |name: &str| {
        let src = ws.root.join("images/test-fallback-slot-a").join(name);
        let out = dir.path().join(name).with_extension("dtb");
        let status = std::process::Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("dtc (device-tree-compiler)");
        assert!(status.success());
        std::fs::read(out).unwrap()
    };
    let modules = vec![
        ("domb".to_owned(), b"domb image".to_vec()),
        ("config".to_owned(), dtb("config.dts")),
        ("config.b".to_owned(), dtb("config-b.dts")),
        ("policy".to_owned(), example().to_vec()),
        ("machine-class-edge".to_owned(), b"edge\n".to_vec()),
        ("hello".to_owned(), hello),
    ];
    let banks = predict::parse_banks("sha256").unwrap();
    let run = |attempts: u32, good: Option<u8>| {
        let inputs = BundleInputs {
            hypervisor_elf: Vec::new(),
            hypervisor_cmdline: "console=com1 slot=b".into(),
            modules: modules.clone(),
            sinit_acm: None,
            recovery_arguments: None,
            boot_state: BootStateRecord {
                status: BootRecordStatus::Counted,
                requested_slot: 1,
                attempts,
                last_known_good: good,
            },
        };
        // SKINIT: nothing of the hypervisor's image is predicted, only Slipway's events.
        predict::predict(&inputs, &banks, PredictedLaunch::Skinit)
            .unwrap_or_else(|e| panic!("attempt {attempts}: {e}"))
    };
    let types = |log: &[u8]| -> Vec<u32> {
        slipway_measure::log::EventLog::parse(log)
            .unwrap()
            .events()
            .map(|e| e.unwrap())
            .filter(|e| e.pcr == 19)
            .map(|e| e.event_type)
            .collect()
    };

    // Attempt 2: slot b's configuration, no choice.
    let second = run(2, Some(0));
    assert!(
        second
            .domb_output
            .contains("config: slot b (config.b): 1 domains")
    );
    let t = types(&second.log);
    assert!(t.contains(&EV_SLIPWAY_BOOT_STATE));
    assert!(!t.contains(&EV_SLIPWAY_SLOT_CHOICE));
    assert_eq!(
        t.iter().filter(|&&e| e == EV_SLIPWAY_LAUNCH_CONFIG).count(),
        1
    );

    // Attempt 3: the choice, then slot a's configuration, then the second run's decision.
    let third = run(3, Some(0));
    let out = &third.domb_output;
    assert!(
        out.contains("policy: slot a chosen over the requested slot b: slot b failed 2 times"),
        "{out}"
    );
    let t = types(&third.log);
    let choice = t
        .iter()
        .position(|&e| e == EV_SLIPWAY_SLOT_CHOICE)
        .expect("measured");
    assert_eq!(
        t[choice + 1],
        EV_SLIPWAY_LAUNCH_CONFIG,
        "the fallback configuration next"
    );
    assert_eq!(
        t.iter().filter(|&&e| e == EV_SLIPWAY_LAUNCH_CONFIG).count(),
        2
    );
    assert_eq!(
        t.iter()
            .filter(|&&e| e == EV_SLIPWAY_POLICY_DECISION)
            .count(),
        1,
        "only the second run's decision is measured"
    );
    assert!(t[choice..].contains(&EV_SLIPWAY_POLICY_DECISION));
    assert!(out.contains("config: slot a (config): 1 domains"), "{out}");

    // Without a known-good slot the third attempt starts only recovery domains in slot b.
    let stuck = run(3, None);
    assert!(!types(&stuck.log).contains(&EV_SLIPWAY_SLOT_CHOICE));
    assert!(
        stuck.domb_output.contains("boot-attempts"),
        "{}",
        stuck.domb_output
    );
}
