//! The recovery environment's life in the core, over the fake machine with a TPM model: domB
//! ends without a hand-off (exit code, crash, watchdog), the hypervisor measures its decision,
//! builds, seals and starts the recovery domain with the console, and the run fails.

use super::*;
use slipway_measure::events::{
    DecisionAction, DecisionReason, EV_SLIPWAY_DOMAIN_BUILD, EV_SLIPWAY_POLICY_DECISION,
    EV_SLIPWAY_RECOVERY_IMAGE, PolicyDecision, SlipwayEvent,
};
use slipway_measure::log::EventLog;

use crate::domain::DomainState;
use crate::recovery::{RECOVERY_DOMAIN_NAME, RECOVERY_MEMORY, START_INFO_PAGES};

/// Event types of the measurement log, in order.
fn event_types(w: &World) -> Vec<u32> {
    let m = w.hv.measurement.as_ref().unwrap();
    let log = EventLog::parse(m.log_bytes()).unwrap();
    log.events().map(|e| e.unwrap().event_type).collect()
}

/// The policy-decision record the hypervisor logged.
fn decision(w: &World) -> (DecisionReason, DecisionAction, Vec<u8>) {
    let m = w.hv.measurement.as_ref().unwrap();
    let log = EventLog::parse(m.log_bytes()).unwrap();
    let event = log
        .events()
        .map(|e| e.unwrap())
        .find(|e| e.event_type == EV_SLIPWAY_POLICY_DECISION)
        .expect("a decision is logged");
    assert_eq!(event.pcr, 19);
    match SlipwayEvent::decode(event.event_type, event.data).unwrap() {
        Some(SlipwayEvent::PolicyDecision(PolicyDecision {
            reason,
            action,
            subject,
        })) => (reason, action, subject.to_vec()),
        other => panic!("not a decision: {other:?}"),
    }
}

/// The log replays to the TPM's PCR19-21.
fn assert_log_replays_to_the_tpm(w: &mut World) {
    let m = w.hv.measurement.as_mut().unwrap();
    let log = EventLog::parse(m.log_bytes()).unwrap();
    let replayed = log.replay(InitialState::DynamicLaunch).unwrap();
    for pcr in 19..=21 {
        assert_eq!(
            replayed.value(pcr, slipway_measure::HashAlg::Sha256),
            m.tpm_mut().0.value(pcr, slipway_measure::HashAlg::Sha256),
            "PCR{pcr}"
        );
    }
}

fn logged(w: &World, prefix: &str) -> bool {
    w.hv.host.log.iter().any(|l| l.starts_with(prefix))
}

/// The recovery domain in the table, if any.
fn recovery_domain(w: &World) -> Option<DomainId> {
    w.hv.table
        .iter()
        .find(|d| d.name().as_str() == RECOVERY_DOMAIN_NAME)
        .map(|d| d.id())
}

/// PCR19 of a recovery boot: the hypervisor's start events, then the recovery image.
const START_EVENTS: [u32; 4] = [0x601, 0x602, 0x603, EV_SLIPWAY_RECOVERY_IMAGE];

#[test]
fn dom_b_ending_without_hand_off_builds_seals_and_starts_the_recovery_domain() {
    let mut w = recovery_world(b"recovery=rescue", Some(pvh_image()));
    assert_eq!(event_types(&w), START_EVENTS);
    assert!(logged(
        &w,
        "measurement: recovery module `rescue` (10240 bytes) in PCR19"
    ));
    // domB plans a domain, then gives up: the launch configuration is malformed (exit code 2).
    let never = w.plan("never", 1);
    let domb = w.domb;
    assert_eq!(
        w.call_at(domb, BUFFER, &Request::Shutdown { exit_code: 2 })
            .0,
        u64::MAX
    );
    // Nothing of domB's plan is left; the recovery domain runs in its place.
    assert!(w.hv.table.iter().all(|d| d.name().as_str() != "never"));
    let id = recovery_domain(&w).expect("the recovery domain is planned");
    assert_eq!(id, never, "domB's planned domain gave up its slot");
    assert_eq!(w.hv.domains.iter().flatten().count(), 1);
    assert!(w.hv.table.handed_off());
    let recovery = w.hv.table.get(id).unwrap();
    assert_eq!(recovery.state(), DomainState::Running);
    assert!(recovery.capabilities().granted.recovery);
    assert!(!recovery.capabilities().granted.control);
    assert_eq!(w.hv.verdict, None);
    assert_eq!(w.hv.recovery_ran(), Some(DecisionReason::ConfigMalformed));
    assert_eq!(w.hv.mux.focus(), Some(id));
    assert!(logged(
        &w,
        "RECOVERY: the launch configuration is missing or malformed (domB exit code 2): reason config-malformed (PCR19 decision reason 6), action start-recovery-only"
    ));
    assert!(w.hv.host.milestones.iter().any(|m| m == "started:recovery"));
    // Its vCPU starts at the image's PVH entry with the start info at the top of its RAM.
    let start_info = RECOVERY_MEMORY - START_INFO_PAGES * PAGE_SIZE;
    let created = w.vcpu(id, 0).new.unwrap();
    assert_eq!(
        created.entry,
        EntryState::Pvh32 {
            rip: u64::from(DOMB_ENTRY),
            rbx: start_info
        }
    );
    // Its RAM holds the image's segment and the start info with the reason and the module's
    // own arguments on the command line.
    let slot = usize::from(id.0);
    let hw = w.hv.domains[slot].as_ref().unwrap();
    assert_eq!(hw.memory.size(), RECOVERY_MEMORY);
    let mut segment = [0u8; 0x800];
    hw.memory.read(&w.hv.mem, 0x1000, &mut segment).unwrap();
    assert!(segment.iter().all(|&b| b == 0xcc));
    let mut info = vec![0u8; (START_INFO_PAGES * PAGE_SIZE) as usize];
    hw.memory.read(&w.hv.mem, start_info, &mut info).unwrap();
    let wanted = b"slipway.recovery=config-malformed --verbose\0";
    assert!(info.windows(wanted.len()).any(|w| w == wanted));
    // Measured as a hand-off: the decision, the recovery domain's build record, the separators;
    // the TPM's PCRs read back after the seal.
    assert_eq!(
        event_types(&w),
        [
            &START_EVENTS[..],
            &[EV_SLIPWAY_POLICY_DECISION, EV_SLIPWAY_DOMAIN_BUILD, 4, 4, 4]
        ]
        .concat()
    );
    assert_eq!(
        decision(&w),
        (
            DecisionReason::ConfigMalformed,
            DecisionAction::StartRecoveryOnly,
            b"rescue".to_vec()
        )
    );
    assert_log_replays_to_the_tpm(&mut w);
    let read_back = w.hv.host.log.iter().position(|l| l == "PCR19-21 read back");
    let sealed = w.hv.host.log.iter().position(|l| l == "sealed: Complete");
    assert!(read_back.is_some() && read_back < sealed);
    // Console input goes to it.
    w.hv.console_input(b'r');
    // The receive buffer register (offset 0) gives the byte to the guest.
    assert_eq!(w.hv.domains[slot].as_mut().unwrap().uart.io_read(0), b'r');
    // It ends: the run is over, as a failure, and everything is given back.
    assert_eq!(
        w.call_at(id, 0x4000, &Request::Shutdown { exit_code: 0 }).0,
        u64::MAX
    );
    assert_eq!(w.hv.verdict, Some(Verdict::Failure));
    assert!(logged(
        &w,
        "all domains have finished; this boot ran the recovery environment (config-malformed): the launch failed"
    ));
    assert_eq!(w.hv.alloc.free_frames(), w.initial_free);
}

#[test]
fn without_a_recovery_module_the_halt_is_measured_and_sealed_and_the_run_fails() {
    let mut w = recovery_world(b"", None);
    assert_eq!(event_types(&w), [0x601, 0x602, 0x603]);
    w.plan("never", 1);
    let domb = w.domb;
    assert_eq!(
        w.call_at(domb, BUFFER, &Request::Shutdown { exit_code: 4 })
            .0,
        u64::MAX
    );
    assert_eq!(w.hv.verdict, Some(Verdict::Failure));
    assert!(w.hv.domains.iter().all(Option::is_none));
    assert_eq!(recovery_domain(&w), None);
    assert_eq!(w.hv.recovery_ran(), None);
    assert_eq!(
        decision(&w),
        (
            DecisionReason::PolicyHalted,
            DecisionAction::Halt,
            Vec::new()
        )
    );
    assert_eq!(
        event_types(&w),
        [0x601, 0x602, 0x603, EV_SLIPWAY_POLICY_DECISION, 4, 4, 4]
    );
    assert_log_replays_to_the_tpm(&mut w);
    assert!(logged(&w, "RECOVERY: no recovery module"));
    assert!(logged(
        &w,
        "the boot domain ended without handing off: no domain was started"
    ));
    assert_eq!(w.hv.alloc.free_frames(), w.initial_free);
}

#[test]
fn the_watchdog_stops_a_dom_b_that_does_not_hand_off_and_recovery_follows() {
    let mut w = recovery_world(b"recovery=rescue domb_watchdog=2", Some(pvh_image()));
    w.hv.start_watchdog(1000, 1000);
    assert!(logged(
        &w,
        "recovery: watchdog: domB must hand off within 2 s (domb_watchdog=); recovery module: rescue"
    ));
    let domb = w.domb;
    w.hv.check_watchdog(2999);
    assert!(w.hv.domains[usize::from(domb.0)].is_some());
    assert!(w.hv.recovery.watchdog_armed());
    // domB is on a pCPU when the deadline passes: it is stopped, and destroyed (and recovery
    // entered) only once its vCPU has left the pCPU.
    let v = w.pick(0, (domb, 0));
    w.hv.check_watchdog(3000);
    assert!(!w.hv.recovery.watchdog_armed());
    assert!(logged(
        &w,
        "watchdog: domB has not handed off 2 s after it started (domb_watchdog=2): stopping it"
    ));
    assert!(logged(
        &w,
        "domain domb stopped: watchdog: no hand-off before the deadline"
    ));
    assert!(w.hv.domains[usize::from(domb.0)].is_some());
    assert_eq!(recovery_domain(&w), None);
    w.exit(0, v, VmExit::Halt);
    assert!(w.hv.domains[usize::from(domb.0)].is_none());
    let id = recovery_domain(&w).expect("recovery after the watchdog");
    assert_eq!(w.hv.recovery_ran(), Some(DecisionReason::BootDomainHung));
    assert_eq!(
        decision(&w),
        (
            DecisionReason::BootDomainHung,
            DecisionAction::StartRecoveryOnly,
            b"rescue".to_vec()
        )
    );
    // It runs: the next pick on pCPU 0 is its vCPU.
    w.pick(0, (id, 0));
}

#[test]
fn the_watchdog_is_disarmed_by_the_hand_off() {
    let mut w = recovery_world(b"recovery=rescue domb_watchdog=1", Some(pvh_image()));
    w.hv.start_watchdog(0, 1000);
    let guest = w.plan("guest", 1);
    w.hand_off();
    w.hv.check_watchdog(u64::MAX);
    assert!(!w.hv.recovery.watchdog_armed());
    assert!(!logged(&w, "watchdog:"));
    assert!(w.hv.domains[usize::from(guest.0)].is_some());
    assert_eq!(recovery_domain(&w), None);
    assert_eq!(
        w.call_at(guest, 0x4000, &Request::Shutdown { exit_code: 0 })
            .0,
        u64::MAX
    );
    assert_eq!(w.hv.verdict, Some(Verdict::Success));
}

#[test]
fn a_crashed_dom_b_is_named_in_the_decision() {
    let mut w = recovery_world(b"recovery=rescue", Some(pvh_image()));
    let domb = w.domb;
    let v = w.pick(0, (domb, 0));
    w.exit(0, v, VmExit::Shutdown);
    assert_eq!(w.hv.recovery_ran(), Some(DecisionReason::BootDomainCrashed));
    assert!(recovery_domain(&w).is_some());
}

#[test]
fn a_recovery_module_that_cannot_be_built_halts_sealed_and_frees_everything() {
    let mut w = recovery_world(b"recovery=rescue", Some(b"not an ELF".to_vec()));
    let domb = w.domb;
    assert_eq!(
        w.call_at(domb, BUFFER, &Request::Shutdown { exit_code: 5 })
            .0,
        u64::MAX
    );
    assert_eq!(w.hv.verdict, Some(Verdict::Failure));
    assert_eq!(w.hv.recovery_ran(), None);
    assert!(logged(
        &w,
        "RECOVERY: the recovery domain from module `rescue` cannot be built: the fixed plan cannot hold the module; halting"
    ));
    // The decision (start the recovery module) is on record, then the seal with no domain.
    assert_eq!(
        decision(&w),
        (
            DecisionReason::PlanRefused,
            DecisionAction::StartRecoveryOnly,
            b"rescue".to_vec()
        )
    );
    assert_eq!(
        event_types(&w),
        [&START_EVENTS[..], &[EV_SLIPWAY_POLICY_DECISION, 4, 4, 4]].concat()
    );
    assert!(w.hv.domains.iter().all(Option::is_none));
    assert_eq!(w.hv.alloc.free_frames(), w.initial_free);
}
