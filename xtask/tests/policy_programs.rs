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
    assert!(run.output.reason.contains("slot b failed 2 times"), "{}", run.output.reason);
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
    assert!(program::check_answer(&output, &input).unwrap_err().contains("one switch per boot"));
    input.boot_state.config_slot = 1;
    output.slot = 2;
    assert!(program::check_answer(&output, &input).unwrap_err().contains("does not exist"));
}
