//! The policy interpreter: every way a program can fail ends in a named error (which domB
//! measures as "policy failed" and answers with recovery-only), and refused features are
//! refused before anything runs.

use slipway_policy::{Decision, DecisionAction, Input, Output, Reason, Verdict, capability};
use slipway_protocol::v1::LaunchKind;

use super::fixtures::*;
use crate::config;
use crate::policy::{self, DEFAULT_PROGRAM, LaunchFacts, Outcome};
use crate::program::{self, LIMITS, Limits, ProgramError};

fn input() -> Input {
    let config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    policy::input(
        &config,
        &LaunchFacts {
            launch_kind: LaunchKind::Emulated,
            tpm_available: true,
            banks: vec![0xB],
            modules: vec![],
            boot_state: slipway_policy::BootState {
                slots: 1,
                ..Default::default()
            },
        },
    )
}

/// A program in WAT with the host API's imports and memory, whose entry body is `body`.
fn program(body: &str) -> Vec<u8> {
    program_with("", body)
}

fn program_with(extra: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "slipway_policy" "input_len" (func $input_len (result i32)))
            (import "slipway_policy" "input_read" (func $input_read (param i32)))
            (import "slipway_policy" "output" (func $output (param i32 i32)))
            (memory (export "memory") 1)
            {extra}
            (func (export "slipway_policy_v1") (result i32) {body}))"#
    ))
    .unwrap()
}

/// A program that answers `answer` verbatim (placed in a data segment).
fn answering(answer: &[u8]) -> Vec<u8> {
    let escaped: String = answer.iter().map(|b| format!("\\{b:02x}")).collect();
    program_with(
        &format!(r#"(data (i32.const 1024) "{escaped}")"#),
        &format!(
            "(call $output (i32.const 1024) (i32.const {})) (i32.const 0)",
            answer.len()
        ),
    )
}

fn output(verdict: Verdict, decisions: Vec<Decision>) -> Output {
    Output {
        verdict,
        slot: 0,
        reason: "test".into(),
        decisions,
    }
}

fn decision(action: DecisionAction) -> Decision {
    Decision {
        reason: Reason::PolicyRule,
        action,
        subject: "rule".into(),
    }
}

#[test]
fn a_well_formed_answer_is_accepted() {
    let answer = output(Verdict::StartAll, vec![decision(DecisionAction::StartAll)]);
    let run = program::run(&answering(&answer.encode().unwrap()), &input()).unwrap();
    assert_eq!(run.output, answer);
    assert!(run.fuel_used > 0);
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let looping = program("(loop $l (br $l)) (i32.const 0)");
    assert_eq!(
        program::run(&looping, &input()),
        Err(ProgramError::OutOfFuel)
    );
}

#[test]
fn a_trap_is_a_failure_naming_the_trap() {
    let trapping = program("(unreachable)");
    let error = program::run(&trapping, &input()).unwrap_err();
    assert!(matches!(error, ProgramError::Trap(_)), "{error:?}");
    assert!(error.to_string().contains("trapped"), "{error}");
}

#[test]
fn growing_memory_beyond_the_limit_fails_the_run() {
    // 4 MiB is 64 pages; the program has 1 and asks for 64 more.
    let grow = program("(drop (memory.grow (i32.const 64))) (i32.const 0)");
    assert_eq!(
        program::run(&grow, &input()),
        Err(ProgramError::MemoryLimit)
    );
    // A smaller growth is fine (then the program answers nothing).
    let small = program("(drop (memory.grow (i32.const 8))) (i32.const 0)");
    assert_eq!(program::run(&small, &input()), Err(ProgramError::NoAnswer));
}

#[test]
fn a_memory_declared_above_the_limit_cannot_be_instantiated() {
    let big = wat::parse_str(
        r#"(module (memory (export "memory") 65)
            (func (export "slipway_policy_v1") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert_eq!(program::run(&big, &input()), Err(ProgramError::MemoryLimit));
}

#[test]
fn deep_recursion_is_stopped() {
    let recursive = program_with("(func $down (call $down))", "(call $down) (i32.const 0)");
    let error = program::run(&recursive, &input()).unwrap_err();
    assert!(matches!(error, ProgramError::Trap(_)), "{error:?}");
}

#[test]
fn floating_point_is_refused_at_validation_even_if_never_called() {
    let float = program_with(
        "(func $never (result f64) (f64.add (f64.const 1) (f64.const 2)))",
        "(i32.const 0)",
    );
    let error = program::validate(&float).unwrap_err();
    assert!(matches!(error, ProgramError::Invalid(_)), "{error:?}");
    assert!(matches!(
        program::run(&float, &input()),
        Err(ProgramError::Invalid(_))
    ));
}

#[test]
fn simd_is_refused_at_validation() {
    let simd = program_with(
        "(func $never (drop (i32x4.splat (i32.const 1))))",
        "(i32.const 0)",
    );
    assert!(matches!(
        program::validate(&simd),
        Err(ProgramError::Invalid(_))
    ));
}

#[test]
fn threads_and_shared_memory_are_refused() {
    let shared = wat::parse_str(
        r#"(module (memory (export "memory") 1 1 shared)
            (func (export "slipway_policy_v1") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert!(matches!(
        program::run(&shared, &input()),
        Err(ProgramError::Invalid(_))
    ));
}

#[test]
fn host_time_and_any_other_import_are_refused() {
    let clock = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "clock_time_get"
                (func (param i32 i64 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "slipway_policy_v1") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    assert!(matches!(
        program::run(&clock, &input()),
        Err(ProgramError::Instantiate(_))
    ));
}

#[test]
fn a_start_function_is_refused() {
    let start = program_with("(func $s) (start $s)", "(i32.const 0)");
    assert!(program::run(&start, &input()).is_err());
}

#[test]
fn missing_entry_or_garbage_is_a_failure() {
    let no_entry = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    assert!(matches!(
        program::run(&no_entry, &input()),
        Err(ProgramError::NoEntry(_))
    ));
    assert!(matches!(
        program::run(b"not wasm", &input()),
        Err(ProgramError::Invalid(_))
    ));
}

#[test]
fn no_answer_a_failure_status_or_two_answers_fail() {
    assert_eq!(
        program::run(&program("(i32.const 0)"), &input()),
        Err(ProgramError::NoAnswer)
    );
    assert_eq!(
        program::run(&program("(i32.const 7)"), &input()),
        Err(ProgramError::Status(7))
    );
    let twice = program(
        "(call $output (i32.const 0) (i32.const 4)) (call $output (i32.const 0) (i32.const 4)) (i32.const 0)",
    );
    assert!(matches!(
        program::run(&twice, &input()),
        Err(ProgramError::HostCall(_))
    ));
    let outside = program("(call $output (i32.const 65530) (i32.const 100)) (i32.const 0)");
    assert!(matches!(
        program::run(&outside, &input()),
        Err(ProgramError::HostCall(_))
    ));
}

#[test]
fn the_input_reaches_the_program_intact() {
    // Echoes the input back as its answer: the host decodes it as an output and refuses it,
    // but only after reading it from the program's memory (the API version matches).
    let echo = program(
        "(call $input_read (i32.const 0)) (call $output (i32.const 0) (call $input_len)) (i32.const 0)",
    );
    let error = program::run(&echo, &input()).unwrap_err();
    assert!(matches!(error, ProgramError::Malformed(_)), "{error:?}");
}

#[test]
fn invalid_answers_are_refused_naming_why() {
    let cases: Vec<(Output, &str)> = vec![
        (
            Output {
                slot: 1,
                ..output(Verdict::StartAll, vec![decision(DecisionAction::StartAll)])
            },
            "slot 1 does not exist",
        ),
        (
            output(
                Verdict::StartListed(vec!["nope".into()]),
                vec![decision(DecisionAction::StartListed)],
            ),
            "\"nope\", which is not a domain",
        ),
        (
            output(
                Verdict::StartListed(vec!["ctl".into(), "ctl".into()]),
                vec![decision(DecisionAction::StartListed)],
            ),
            "twice",
        ),
        (
            output(Verdict::StartAll, vec![decision(DecisionAction::Halt)]),
            "less restrictive",
        ),
    ];
    for (answer, why) in cases {
        let error = program::run(&answering(&answer.encode().unwrap()), &input()).unwrap_err();
        assert!(matches!(error, ProgramError::Refused(_)), "{error:?}");
        assert!(error.to_string().contains(why), "{error} lacks {why}");
    }
    let error = program::run(&answering(&[1, 0, 0, 0, 9]), &input()).unwrap_err();
    assert!(matches!(error, ProgramError::Malformed(_)), "{error:?}");
}

#[test]
fn a_failed_program_is_one_policy_failed_decision_and_recovery_only() {
    let config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    let facts = LaunchFacts {
        launch_kind: LaunchKind::Emulated,
        tpm_available: true,
        banks: vec![0xB],
        modules: vec![],
        boot_state: slipway_policy::BootState {
            slots: 1,
            ..Default::default()
        },
    };
    let evaluation = policy::evaluate(&program("(loop $l (br $l)) (i32.const 0)"), &config, &facts);
    assert_eq!(
        evaluation.decisions,
        vec![policy::Decision::Failed(ProgramError::OutOfFuel)]
    );
    let recovery: Vec<String> = config
        .domains
        .iter()
        .filter(|d| d.capabilities.recovery)
        .map(|d| d.name.clone())
        .collect();
    assert!(!recovery.is_empty());
    assert_eq!(evaluation.outcome, Outcome::Start(recovery));
    assert!(
        evaluation.outcome
            != Outcome::Start(config.domains.iter().map(|d| d.name.clone()).collect())
    );
}

#[test]
fn runs_are_deterministic_and_the_default_program_fits_its_limits() {
    let input = input();
    let first = program::run(DEFAULT_PROGRAM, &input).unwrap();
    let second = program::run(DEFAULT_PROGRAM, &input).unwrap();
    assert_eq!(first, second);
    assert!(first.fuel_used < LIMITS.fuel / 100, "{}", first.fuel_used);
    // With a tenth of the fuel it used, the same program fails for want of fuel.
    let starved = Limits {
        fuel: first.fuel_used / 10,
        ..LIMITS
    };
    assert_eq!(
        program::run_with(DEFAULT_PROGRAM, &input, &starved),
        Err(ProgramError::OutOfFuel)
    );
    assert!(
        input
            .config
            .domains
            .iter()
            .any(|d| d.has(capability::RECOVERY))
    );
}
