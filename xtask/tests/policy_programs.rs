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
        boot_state: BootState::default(),
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
fn too_many_failed_boots_fall_back_to_recovery() {
    // Nothing counts boots yet (domB always says "unknown"); the rule is written against the
    // host API and fires once a count arrives.
    let mut retried = input(&["machine-class-edge"]);
    retried.boot_state.boot_attempts = Some(3);
    let run = program::run(example(), &retried).unwrap();
    assert_eq!(run.output.verdict, Verdict::RecoveryOnly);
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
