//! The measurement sequence over a software TPM that can fail any command, checked after every
//! failure: the log never claims an extend that did not complete, nothing is measured after a
//! failure (but the one fallback decision), and PCR21 is all or nothing.

extern crate std;

use super::*;
use crate::domain::DomainTable;
use slipway_measure::events::{
    DecisionAction, EV_SLIPWAY_DOMAIN_BUILD, EV_SLIPWAY_LAUNCH_CONFIG, PolicyDecision,
};
use slipway_measure::log::EventLog;
use slipway_measure::pcr::{InitialState, PcrBanks};
use slipway_measure::{HashAlg, hash};
use slipway_protocol::v1::{Capabilities, DomainName};
use std::vec;
use std::vec::Vec;

/// How the injected failure looks from the TPM's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailMode {
    /// The TPM refuses the command: the PCR is unchanged.
    Refused,
    /// The TPM extends, but the answer never arrives (a bus error after execution).
    AnswerLost,
}

struct FakeTpm {
    pcrs: PcrBanks,
    commands: u32,
    fail_at: Option<u32>,
    mode: FailMode,
}

impl FakeTpm {
    fn new(banks: &BankSet, fail_at: Option<u32>, mode: FailMode) -> Self {
        FakeTpm {
            pcrs: PcrBanks::new(banks, InitialState::DynamicLaunch),
            commands: 0,
            fail_at,
            mode,
        }
    }
}

impl PcrExtend for FakeTpm {
    type Error = &'static str;
    fn pcr_extend(&mut self, pcr: u8, digests: &DigestList) -> Result<(), &'static str> {
        self.commands += 1;
        if self.fail_at == Some(self.commands) {
            if self.mode == FailMode::AnswerLost {
                self.pcrs.extend_all(u32::from(pcr), digests).unwrap();
            }
            return Err("injected failure");
        }
        self.pcrs.extend_all(u32::from(pcr), digests).unwrap();
        Ok(())
    }
}

fn banks() -> BankSet {
    BankSet::from_algs(&[HashAlg::Sha1.id(), HashAlg::Sha256.id()]).unwrap()
}

fn inputs() -> LaunchInputs<'static> {
    LaunchInputs {
        kind: LaunchKind::Emulated,
        region: None,
        cmdline: b"console=com1",
        domb_image: b"\x7fELF domb image",
        boot_state: None,
    }
}

/// Two planned domains with a few recorded steps each.
fn planned_table() -> DomainTable {
    let mut table = DomainTable::new();
    table.create_boot_domain(0x100_0000, 1).unwrap();
    for name in ["alpha", "beta"] {
        let name = DomainName::new(name).unwrap();
        let id = table.check_create(&name, 0x10_0000, 1).unwrap();
        table.insert_planned(id, name, 0x10_0000, 1, Capabilities::default());
        table
            .planned_mut(id)
            .unwrap()
            .record(crate::build_record::BuildStep::AssignConsole)
            .unwrap();
    }
    table
}

fn config_event() -> (u32, Vec<u8>) {
    (EV_SLIPWAY_LAUNCH_CONFIG, b"/dts-v1/; config".to_vec())
}

fn decision(reason: DecisionReason) -> Vec<u8> {
    let event = SlipwayEvent::PolicyDecision(PolicyDecision {
        reason,
        action: DecisionAction::StartRecoveryOnly,
        subject: b"",
    });
    let mut data = vec![0u8; event.encoded_len()];
    event.encode(&mut data).unwrap();
    data
}

/// What one boot's measurement did.
struct Run {
    log: Vec<u8>,
    tpm_pcrs: PcrBanks,
    /// `PCR_Extend` commands the TPM saw.
    commands: u32,
    failure: Option<Failure>,
    measure_results: Vec<Result<u32, Error>>,
    seal: Result<Sealed, Error>,
    retry: Result<Sealed, Error>,
}

/// Runs the whole sequence the hypervisor runs for a boot: its own events, domB's three
/// measurements, then (as domB would after a failure) the tpm-unavailable decision, and the seal
/// at hand-off with two planned domains, then a retried hand-off.
fn run(fail_at: Option<u32>, mode: FailMode) -> Run {
    let banks = banks();
    let mut buf = vec![0u8; 64 * 1024];
    let tpm = FakeTpm::new(&banks, fail_at, mode);
    let mut m = Measurement::start(tpm, banks, &mut buf, &inputs()).unwrap();
    let (config_type, config) = config_event();
    let mut measure_results = Vec::new();
    for (pcr, event_type, data) in [
        (19u8, config_type, config.clone()),
        (
            19,
            EV_SLIPWAY_POLICY_DECISION,
            decision(DecisionReason::AllChecksPassed),
        ),
    ] {
        let digests = event_digests(&banks, &data);
        measure_results.push(m.measure(pcr, event_type, &digests, &data));
    }
    if m.failure().is_some() {
        let data = decision(DecisionReason::TpmUnavailable);
        let digests = event_digests(&banks, &data);
        measure_results.push(m.measure(19, EV_SLIPWAY_POLICY_DECISION, &digests, &data));
    }
    let table = planned_table();
    let planned: Vec<&Domain> = table
        .iter()
        .filter(|d| d.state() == crate::domain::DomainState::Planned)
        .collect();
    let seal = m.seal(&planned);
    let retry = m.seal(&planned);
    let failure = m.failure();
    let log = m.log_bytes().to_vec();
    let tpm_pcrs = m.tpm_mut().pcrs.clone();
    let commands = m.tpm_mut().commands;
    Run {
        log,
        tpm_pcrs,
        commands,
        failure,
        measure_results,
        seal,
        retry,
    }
}

fn replay(log: &[u8]) -> PcrBanks {
    EventLog::parse(log)
        .unwrap()
        .replay(InitialState::DynamicLaunch)
        .unwrap()
}

fn same_pcrs(a: &PcrBanks, b: &PcrBanks) -> bool {
    (17..=23).all(|pcr| {
        [HashAlg::Sha1, HashAlg::Sha256]
            .iter()
            .all(|&alg| a.value(pcr, alg).unwrap() == b.value(pcr, alg).unwrap())
    })
}

fn event_types(log: &[u8]) -> Vec<(u32, u32)> {
    EventLog::parse(log)
        .unwrap()
        .events()
        .map(|e| {
            let e = e.unwrap();
            (e.pcr, e.event_type)
        })
        .collect()
}

#[test]
fn a_boot_without_failure_logs_exactly_what_it_extended_and_seals() {
    let run = run(None, FailMode::Refused);
    assert_eq!(run.failure, None);
    assert_eq!(run.seal, Ok(Sealed::Complete));
    assert_eq!(run.retry, Err(Error::AfterHandOff));
    assert!(same_pcrs(&replay(&run.log), &run.tpm_pcrs));
    let types = event_types(&run.log);
    // Launch kind, command line, domB image, config, decision, 2 build records, 3 separators.
    assert_eq!(types.len(), 10, "{types:?}");
    assert_eq!(
        types.iter().filter(|(pcr, _)| *pcr == 21).count(),
        3,
        "two build records and a separator in PCR21"
    );
}

/// Every command of the sequence fails once, in both failure modes: after the failure nothing
/// but the tpm-unavailable decision is measured, a completed log never disagrees with the TPM
/// where the TPM refused, always disagrees where it executed but did not answer, PCR21 holds no
/// logged build record unless all were written, and no retried hand-off counts.
#[test]
fn every_failing_command_leaves_a_log_that_never_claims_more_than_the_tpm_did() {
    // Start's 3 + domB's 2 + 2 build records + 3 separators.
    let commands = run(None, FailMode::Refused).commands;
    assert_eq!(commands, 10);
    for mode in [FailMode::Refused, FailMode::AnswerLost] {
        for n in 1..=commands {
            let run = run(Some(n), mode);
            let failure = run
                .failure
                .unwrap_or_else(|| panic!("command {n} failed unnoticed"));
            let replayed = replay(&run.log);
            // Where the TPM refused the first command of a step, log and TPM agree (the log is
            // just shorter than planned). Where it executed a command it did not confirm, or the
            // seal failed after extending earlier records, they disagree: then no verifier can
            // accept, and (below) the hand-off is refused, so no domain ever quotes it.
            // The seal is the last five commands (two build records, three separators).
            let first_of_seal = commands - 5 + 1;
            let agree = mode == FailMode::Refused && n <= first_of_seal;
            assert_eq!(
                same_pcrs(&replayed, &run.tpm_pcrs),
                agree,
                "{mode:?} at {n}: log and TPM agreement"
            );
            let types = event_types(&run.log);
            let builds = types
                .iter()
                .filter(|&&(_, t)| t == EV_SLIPWAY_DOMAIN_BUILD)
                .count();
            assert!(
                builds == 0,
                "{mode:?} at {n}: no build record is logged: {types:?}"
            );
            assert!(
                !types
                    .iter()
                    .any(|&(_, t)| t == slipway_measure::events::EV_SEPARATOR),
                "{mode:?} at {n}: the log is never sealed after a failure"
            );
            if n < first_of_seal {
                // Before hand-off: domB is refused, the fallback decision is still measured
                // (the TPM answers again), and the hand-off goes ahead unsealed.
                assert_eq!(
                    run.measure_results.last(),
                    Some(&Ok(types.len() as u32 - 1)),
                    "{mode:?} at {n}: the tpm-unavailable decision is the last event"
                );
                assert!(
                    run.measure_results[..run.measure_results.len() - 1]
                        .iter()
                        .any(|r| r.is_err()),
                    "{mode:?} at {n}: a measurement was refused"
                );
                assert_eq!(run.seal, Ok(Sealed::Failed(failure)));
            } else {
                // At hand-off: refused, and refused again on retry.
                assert_eq!(run.seal, Err(Error::TpmFailed), "{mode:?} at {n}");
                assert_eq!(run.retry, Err(Error::MeasurementFailed), "{mode:?} at {n}");
            }
        }
    }
}

#[test]
fn after_a_failure_only_one_tpm_unavailable_decision_is_measured() {
    let banks = banks();
    let mut buf = vec![0u8; 64 * 1024];
    // The first command (launch kind) fails.
    let tpm = FakeTpm::new(&banks, Some(1), FailMode::Refused);
    let mut m = Measurement::start(tpm, banks, &mut buf, &inputs()).unwrap();
    assert_eq!(
        m.failure(),
        Some(Failure::Extend {
            pcr: 19,
            event_type: slipway_measure::events::EV_SLIPWAY_LAUNCH_KIND
        })
    );
    let (config_type, config) = config_event();
    let digests = event_digests(&banks, &config);
    assert_eq!(
        m.measure(19, config_type, &digests, &config),
        Err(Error::MeasurementFailed)
    );
    let other = decision(DecisionReason::AllChecksPassed);
    assert_eq!(
        m.measure(
            19,
            EV_SLIPWAY_POLICY_DECISION,
            &event_digests(&banks, &other),
            &other
        ),
        Err(Error::MeasurementFailed),
        "a decision other than tpm-unavailable is refused"
    );
    let fallback = decision(DecisionReason::TpmUnavailable);
    let digests = event_digests(&banks, &fallback);
    assert_eq!(
        m.measure(19, EV_SLIPWAY_POLICY_DECISION, &digests, &fallback),
        Ok(0)
    );
    assert_eq!(
        m.measure(19, EV_SLIPWAY_POLICY_DECISION, &digests, &fallback),
        Err(Error::MeasurementFailed),
        "only once"
    );
    assert_eq!(event_types(m.log_bytes()).len(), 1);
}

#[test]
fn a_full_log_is_refused_before_the_extend() {
    let banks = banks();
    let header = event_len(&banks, 0);
    // Room for the header event and the hypervisor's events, not for a 2 KiB config.
    let mut buf = vec![0u8; 1024 + header * 4];
    let tpm = FakeTpm::new(&banks, None, FailMode::Refused);
    let mut m = Measurement::start(tpm, banks, &mut buf, &inputs()).unwrap();
    assert_eq!(m.failure(), None);
    let extends = m.extends();
    let big = vec![b'x'; 2048];
    assert_eq!(
        m.measure(
            19,
            EV_SLIPWAY_LAUNCH_CONFIG,
            &event_digests(&banks, &big),
            &big
        ),
        Err(Error::EventLogFull)
    );
    assert_eq!(m.extends(), extends, "nothing was extended");
    assert_eq!(m.failure(), None, "domB may still react");
}

#[test]
fn the_domb_event_carries_the_bound_digest_of_the_image_given() {
    let banks = banks();
    let mut buf = vec![0u8; 16 * 1024];
    let tpm = FakeTpm::new(&banks, None, FailMode::Refused);
    let m = Measurement::start(tpm, banks, &mut buf, &inputs()).unwrap();
    let log = EventLog::parse(m.log_bytes()).unwrap();
    let domb = log.events().map(|e| e.unwrap()).last().unwrap();
    let expected = hash::bound_module_digests(&banks, b"domb", inputs().domb_image);
    assert_eq!(domb.digests, expected);
}

#[test]
fn a_resumed_launch_log_keeps_the_launch_events_and_appends_the_same_sequence_after_them() {
    let banks = banks();
    // A log the dynamic launch began (as SINIT does): its header, then one PCR17 event.
    let mut buf = vec![0u8; 8192];
    let launch_digests = slipway_measure::hash::event_digests(&banks, b"sinit event");
    let used = {
        let mut w = LogWriter::new(&mut buf, &LogHeader::slipway(banks)).unwrap();
        w.append(17, 0x404, &launch_digests, &[]).unwrap();
        w.len()
    };
    let log = LogWriter::resume(&mut buf, used).unwrap();
    let mut tpm = FakeTpm::new(&banks, None, FailMode::Refused);
    tpm.pcrs.extend_all(17, &launch_digests).unwrap();
    let mut resumed_inputs = inputs();
    resumed_inputs.kind = LaunchKind::TxtSimulated;
    let mut m = Measurement::resume(tpm, banks, log, &resumed_inputs).unwrap();
    assert!(m.failure().is_none());
    let types = event_types(m.log_bytes());
    assert_eq!(types[0], (17, 0x404));
    // The sequence after it is the one `start` writes: launch kind, command line, domB.
    let mut fresh = vec![0u8; 8192];
    let started = Measurement::start(
        FakeTpm::new(&banks, None, FailMode::Refused),
        banks,
        &mut fresh,
        &resumed_inputs,
    )
    .unwrap();
    assert_eq!(&types[1..], &event_types(started.log_bytes())[..]);
    let replayed = replay(m.log_bytes());
    assert!(same_pcrs(&replayed, &m.tpm_mut().pcrs));
}

#[test]
fn a_launch_log_in_other_banks_is_not_resumed() {
    let mut buf = vec![0u8; 4096];
    let sha256_only = BankSet::from_algs(&[HashAlg::Sha256.id()]).unwrap();
    let used = LogWriter::new(&mut buf, &LogHeader::slipway(sha256_only))
        .unwrap()
        .len();
    let log = LogWriter::resume(&mut buf, used).unwrap();
    let tpm = FakeTpm::new(&banks(), None, FailMode::Refused);
    let refused = Measurement::resume(tpm, banks(), log, &inputs()).err();
    assert_eq!(
        refused,
        Some(slipway_measure::Error::MissingBank(HashAlg::Sha1.id()))
    );
}

#[test]
fn the_boot_state_is_measured_into_pcr19_right_after_domb() {
    use slipway_measure::events::{BootRecordStatus, EV_SLIPWAY_BOOT_STATE, EV_SLIPWAY_DOMB_IMAGE};
    let banks = banks();
    let mut buf = vec![0u8; 16 * 1024];
    let tpm = FakeTpm::new(&banks, None, FailMode::Refused);
    let state = BootStateRecord {
        status: BootRecordStatus::Counted,
        requested_slot: 1,
        attempts: 3,
        last_known_good: Some(0),
    };
    let launch = LaunchInputs {
        boot_state: Some(state),
        ..inputs()
    };
    let m = Measurement::start(tpm, banks, &mut buf, &launch).unwrap();
    assert!(m.failure().is_none());
    let types = event_types(m.log_bytes());
    let at = types
        .iter()
        .position(|t| *t == (19, EV_SLIPWAY_DOMB_IMAGE))
        .unwrap();
    assert_eq!(types[at + 1], (19, EV_SLIPWAY_BOOT_STATE));
    let log = EventLog::parse(m.log_bytes()).unwrap();
    let event = log.events().map(|e| e.unwrap()).last().unwrap();
    assert_eq!(event.data, [1, 1, 1, 3, 0, 0, 0, 0]);
    assert_eq!(event.digests, hash::event_digests(&banks, event.data));
    // Without a boot state (no record kept) the sequence is the old one.
    let mut buf = vec![0u8; 16 * 1024];
    let tpm = FakeTpm::new(&banks, None, FailMode::Refused);
    let m = Measurement::start(tpm, banks, &mut buf, &inputs()).unwrap();
    assert!(!event_types(m.log_bytes()).contains(&(19, EV_SLIPWAY_BOOT_STATE)));
}
