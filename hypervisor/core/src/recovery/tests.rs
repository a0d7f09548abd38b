extern crate std;

use super::*;
use crate::measurement::{LaunchInputs, Measurement, PcrExtend, Sealed};
use slipway_measure::events::{
    EV_SLIPWAY_DOMAIN_BUILD, EV_SLIPWAY_POLICY_DECISION, EV_SLIPWAY_RECOVERY_IMAGE, LaunchKind,
    PolicyDecision, SlipwayEvent,
};
use slipway_measure::log::EventLog;
use slipway_measure::pcr::{InitialState, PcrBanks};
use slipway_measure::{BankSet, DigestList};
use std::vec::Vec;

/// A minimal PVH ELF64: one PT_NOTE with the Xen PHYS32 entry note (entry 0x10_0000), one
/// PT_LOAD of `code` at 0x10_0000 (memsz `memsz`).
fn pvh_elf(code: &[u8], memsz: u64) -> Vec<u8> {
    let mut note = Vec::new();
    for value in [4u32, 4, pvh::PHYS32_ENTRY_NOTE as u32] {
        note.extend_from_slice(&value.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&0x10_0000u32.to_le_bytes());
    let note_off = 0x1000u64;
    let code_off = 0x2000u64;
    let mut out = Vec::new();
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&64u64.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 2, 64, 0, 0] {
        out.extend_from_slice(&half.to_le_bytes());
    }
    let phdrs = [
        (
            4u32,
            note_off,
            0u64,
            note.len() as u64,
            note.len() as u64,
            4u64,
        ),
        (1, code_off, 0x10_0000, code.len() as u64, memsz, 0x1000),
    ];
    for (p_type, offset, paddr, filesz, memsz, align) in phdrs {
        out.extend_from_slice(&p_type.to_le_bytes());
        out.extend_from_slice(&5u32.to_le_bytes());
        for value in [offset, paddr, paddr, filesz, memsz, align] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.resize(note_off as usize, 0);
    out.extend_from_slice(&note);
    out.resize(code_off as usize, 0);
    out.extend_from_slice(code);
    out
}

#[test]
fn options_default_to_no_recovery_module_and_the_documented_watchdog() {
    let options = parse_options(b"console=com1 domb_mem=8").unwrap();
    assert_eq!(options.module, None);
    assert_eq!(options.watchdog_seconds, DEFAULT_WATCHDOG_SECONDS);
    assert_eq!(DEFAULT_WATCHDOG_SECONDS, 120);
    let options = parse_options(b"console=com1 recovery=rescue-1.0 domb_watchdog=5").unwrap();
    assert_eq!(options.module, Some("rescue-1.0"));
    assert_eq!(options.watchdog_seconds, 5);
    assert_eq!(parse_options(b"").unwrap().module, None);
}

#[test]
fn bad_recovery_options_are_refused_naming_the_cause() {
    fn refused(cmdline: &[u8]) -> OptionError<'_> {
        parse_options(cmdline).unwrap_err()
    }
    assert!(matches!(
        refused(b"recovery="),
        OptionError::InvalidName { .. }
    ));
    assert!(matches!(
        refused(b"recovery=a/b"),
        OptionError::InvalidName { .. }
    ));
    assert!(matches!(
        refused(b"recovery=\xffx"),
        OptionError::InvalidName { .. }
    ));
    let long = [b"recovery=".as_slice(), &[b'a'; 64]].concat();
    assert!(matches!(refused(&long), OptionError::InvalidName { .. }));
    for reserved in ["domb", "config", "policy"] {
        let cmdline = std::format!("recovery={reserved}");
        assert_eq!(
            refused(cmdline.as_bytes()),
            OptionError::ReservedName(reserved)
        );
    }
    assert_eq!(
        refused(b"recovery=a recovery=b"),
        OptionError::Twice("recovery=")
    );
    assert_eq!(
        refused(b"domb_watchdog=5 domb_watchdog=6"),
        OptionError::Twice(WATCHDOG_OPTION)
    );
    for bad in [
        &b"domb_watchdog=0"[..],
        b"domb_watchdog=3601",
        b"domb_watchdog=",
        b"domb_watchdog=+5",
        b"domb_watchdog=5s",
        b"domb_watchdog=99999999999999999999999",
    ] {
        assert!(
            matches!(refused(bad), OptionError::BadWatchdog(_)),
            "{}",
            bad.escape_ascii()
        );
    }
    assert_eq!(
        parse_options(b"domb_watchdog=3600")
            .unwrap()
            .watchdog_seconds,
        3600
    );
    let message = std::format!("{}", refused(b"recovery=domb"));
    assert!(message.contains("recovery=domb"), "{message}");
}

#[test]
fn the_recovery_module_must_be_in_the_boot() {
    let names: Vec<ModuleName> = ["domb", "config", "rescue"]
        .iter()
        .map(|n| ModuleName::new(n).unwrap())
        .collect();
    let options = parse_options(b"recovery=rescue").unwrap();
    assert_eq!(options.find_module(&names), Ok(Some(2)));
    let options = parse_options(b"recovery=gone").unwrap();
    assert_eq!(
        options.find_module(&names),
        Err(OptionError::NoSuchModule("gone"))
    );
    assert_eq!(
        std::format!("{}", OptionError::NoSuchModule("gone")),
        "recovery=gone: no boot module is named `gone`"
    );
    assert_eq!(parse_options(b"").unwrap().find_module(&names), Ok(None));
}

#[test]
fn the_watchdog_expires_at_its_deadline_and_never_wraps() {
    let deadline = watchdog_deadline(1_000, 2, 500);
    assert_eq!(deadline, 2_000);
    assert!(!watchdog_expired(1_999, deadline));
    assert!(watchdog_expired(2_000, deadline));
    assert_eq!(watchdog_deadline(u64::MAX - 1, 3600, u64::MAX), u64::MAX);
}

#[test]
fn every_way_dom_b_ends_maps_to_one_measured_reason() {
    let cases = [
        (BuilderEnd::Exited(2), DecisionReason::ConfigMalformed),
        (BuilderEnd::Exited(3), DecisionReason::ModuleMissing),
        (BuilderEnd::Exited(4), DecisionReason::PolicyHalted),
        (BuilderEnd::Exited(5), DecisionReason::PlanRefused),
        (BuilderEnd::Exited(1), DecisionReason::BootDomainFailed),
        (BuilderEnd::Exited(0), DecisionReason::BootDomainFailed),
        (BuilderEnd::Exited(77), DecisionReason::BootDomainFailed),
        (
            BuilderEnd::Crashed(StopReason::TripleFault),
            DecisionReason::BootDomainCrashed,
        ),
        (BuilderEnd::Hung, DecisionReason::BootDomainHung),
    ];
    for (end, reason) in cases {
        assert_eq!(end.reason(), reason, "{end:?}");
        let started = decide(end, Some("rescue"));
        assert_eq!(
            started,
            RecoveryDecision {
                reason,
                action: DecisionAction::StartRecoveryOnly,
                subject: "rescue"
            }
        );
        let halted = decide(end, None);
        assert_eq!(
            halted,
            RecoveryDecision {
                reason,
                action: DecisionAction::Halt,
                subject: ""
            }
        );
    }
    assert_eq!(
        BuilderEnd::from_state(DomainState::ShutDown { exit_code: 4 }),
        Some(BuilderEnd::Exited(4))
    );
    assert_eq!(
        BuilderEnd::from_state(DomainState::Crashed(StopReason::WatchdogExpired)),
        Some(BuilderEnd::Hung)
    );
    assert_eq!(
        BuilderEnd::from_state(DomainState::Crashed(StopReason::TripleFault)),
        Some(BuilderEnd::Crashed(StopReason::TripleFault))
    );
    assert_eq!(BuilderEnd::from_state(DomainState::Running), None);
    assert_eq!(
        std::format!("{}", BuilderEnd::Exited(2)),
        "the launch configuration is missing or malformed (domB exit code 2)"
    );
    assert_eq!(
        std::format!("{}", BuilderEnd::Hung),
        "domB did not hand off before the watchdog deadline"
    );
}

#[test]
fn the_fixed_plan_loads_the_image_below_the_start_info_with_the_reason_on_its_command_line() {
    let image = pvh_elf(&[0xf4; 0x300], 0x2000);
    let plan = plan(&image, DecisionReason::BootDomainHung, " once  ").unwrap();
    assert_eq!(plan.image.entry, 0x10_0000);
    assert_eq!(plan.start_info_gpa, RECOVERY_MEMORY - 3 * PAGE_SIZE);
    assert_eq!(
        plan.cmdline.as_str(),
        "slipway.recovery=boot-domain-hung once"
    );
    assert_eq!(
        plan.entry(),
        VcpuEntry::Pvh32 {
            entry_eip: 0x10_0000,
            start_info_gpa: (RECOVERY_MEMORY - 3 * PAGE_SIZE) as u32
        }
    );
    // The start info: magic, no modules, one RAM entry; the command line is in it.
    assert_eq!(
        &plan.start_info[..4],
        &start_info::START_INFO_MAGIC.to_le_bytes()
    );
    let text = b"slipway.recovery=boot-domain-hung once\0";
    assert!(plan.start_info.windows(text.len()).any(|w| w == text));
    let bare = super::plan(&image, DecisionReason::ConfigMalformed, "").unwrap();
    assert_eq!(bare.cmdline.as_str(), "slipway.recovery=config-malformed");
}

#[test]
fn an_image_the_fixed_plan_cannot_hold_is_refused() {
    assert!(matches!(
        plan(b"not an elf", DecisionReason::BootDomainHung, ""),
        Err(PlanError::Image(_))
    ));
    // A segment reaching into the start info.
    let too_big = pvh_elf(&[0; 16], RECOVERY_MEMORY);
    assert!(matches!(
        plan(&too_big, DecisionReason::BootDomainHung, ""),
        Err(PlanError::Image(_))
    ));
    assert!(matches!(
        plan(
            &pvh_elf(&[0xf4; 16], 0x1000),
            DecisionReason::BootDomainHung,
            "a\0b"
        ),
        Err(PlanError::CommandLineTooLong)
    ));
    let long = "x".repeat(MAX_CMDLINE);
    let image = pvh_elf(&[0xf4; 16], 0x1000);
    assert!(matches!(
        plan(&image, DecisionReason::BootDomainHung, &long),
        Err(PlanError::CommandLineTooLong)
    ));
}

fn lost_builder_table(exit: Option<u32>) -> (DomainTable, DomainId, DomainId) {
    let mut table = DomainTable::new();
    let domb = table.create_boot_domain(8 << 20, 1).unwrap();
    let name = DomainName::new("web").unwrap();
    let planned = table.check_create(&name, 1 << 20, 1).unwrap();
    table.insert_planned(planned, name, 1 << 20, 1, Capabilities::default());
    if let Some(code) = exit {
        table.mark_shut_down(domb, code).unwrap();
    }
    (table, domb, planned)
}

#[test]
fn the_table_takes_the_recovery_domain_only_once_the_builder_is_lost() {
    let image = pvh_elf(&[0xf4; 0x300], 0x2000);
    let plan = plan(&image, DecisionReason::ConfigMalformed, "").unwrap();
    let module = ModuleName::new("rescue").unwrap();

    // domB still runs: no recovery.
    let (mut table, _, _) = lost_builder_table(None);
    assert_eq!(
        insert_plan(&mut table, &plan, 3, &module, &image),
        Err(Error::AfterHandOff)
    );

    let (mut table, domb, planned) = lost_builder_table(Some(2));
    let id = insert_plan(&mut table, &plan, 3, &module, &image).unwrap();
    // domB's unfinished plan is gone; the table counts as handed off, with one planned domain.
    assert!(table.get(planned).is_none() || planned == id);
    assert!(table.handed_off());
    assert!(!table.builder_lost());
    let recovery = table.get(id).unwrap();
    assert_eq!(recovery.name().as_str(), RECOVERY_DOMAIN_NAME);
    assert_eq!(recovery.state(), DomainState::Planned);
    assert_eq!(recovery.memory_bytes(), RECOVERY_MEMORY);
    assert_eq!(recovery.vcpu_count(), 1);
    assert_eq!(recovery.vcpu_entry(0), Some(plan.entry()));
    assert!(recovery.has_console());
    assert_eq!(recovery.boot_order(), Some(0));
    assert!(recovery.capabilities().granted.recovery);
    assert!(!recovery.capabilities().granted.control);
    assert!(!recovery.capabilities().granted.tpm);
    assert_eq!(table.console_focus_default(), Some(id));
    assert!(!table.get(domb).unwrap().capabilities().builder);
    // The record says what the hypervisor does, in order.
    let steps = recovery.build_record().steps();
    assert_eq!(steps.len(), 5);
    assert_eq!(
        steps[0],
        BuildStep::PopulateFromModule {
            module: 3,
            module_name: module.clone(),
            module_offset: 0x2000,
            length: 0x300,
            gpa: 0x10_0000,
            sha256: Some(Sha256::digest([0xf4u8; 0x300]).into()),
        }
    );
    assert_eq!(
        steps[1],
        BuildRecord::write_step(plan.start_info_gpa, &plan.start_info)
    );
    assert_eq!(
        steps[2],
        BuildStep::SetVcpuEntry {
            vcpu: 0,
            entry: plan.entry()
        }
    );
    assert_eq!(steps[3], BuildStep::AssignConsole);
    assert_eq!(steps[4], BuildStep::RequestStart { boot_order: 0 });
    // Builder requests stay refused: the table is handed off.
    let name = DomainName::new("late").unwrap();
    assert_eq!(
        table.check_create(&name, 1 << 20, 1),
        Err(Error::AfterHandOff)
    );
    // And a second recovery is refused.
    assert_eq!(
        insert_plan(&mut table, &plan, 3, &module, &image),
        Err(Error::AfterHandOff)
    );
}

struct CountingTpm(PcrBanks);

impl PcrExtend for CountingTpm {
    type Error = &'static str;
    fn pcr_extend(&mut self, pcr: u8, digests: &DigestList) -> Result<(), &'static str> {
        self.0.extend_all(u32::from(pcr), digests).unwrap();
        Ok(())
    }
}

/// The whole recovery measurement: the image after domB's, the decision, the recovery build and
/// the separators; the log replays to the TPM's PCRs.
#[test]
fn recovery_is_measured_image_decision_build_and_separators() {
    let banks = BankSet::from_algs(&[slipway_measure::AlgId::SHA256]).unwrap();
    let image = pvh_elf(&[0xf4; 0x300], 0x2000);
    let mut buf = std::vec![0u8; 64 * 1024];
    let inputs = LaunchInputs {
        kind: LaunchKind::Emulated,
        region: None,
        cmdline: b"recovery=rescue",
        domb_image: b"domb",
        boot_state: None,
    };
    let tpm = CountingTpm(PcrBanks::new(&banks, InitialState::DynamicLaunch));
    let mut m = Measurement::start(tpm, banks, &mut buf, &inputs).unwrap();
    m.measure_recovery_image("rescue", &image).unwrap();

    let (mut table, _, _) = lost_builder_table(Some(2));
    let decision = decide(BuilderEnd::Exited(2), Some("rescue"));
    m.record_recovery_decision(&decision).unwrap();
    let plan = plan(&image, decision.reason, "").unwrap();
    let module = ModuleName::new("rescue").unwrap();
    let id = insert_plan(&mut table, &plan, 3, &module, &image).unwrap();
    let recovery = table.get(id).unwrap();
    assert_eq!(m.seal(&[recovery]), Ok(Sealed::Complete));
    // No second decision after the seal.
    assert_eq!(
        m.record_recovery_decision(&decision),
        Err(Error::AfterHandOff)
    );

    let log = EventLog::parse(m.log_bytes()).unwrap();
    let events: Vec<_> = log.events().map(|e| e.unwrap()).collect();
    let types: Vec<u32> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            0x601,
            0x602,
            0x603,
            EV_SLIPWAY_RECOVERY_IMAGE,
            EV_SLIPWAY_POLICY_DECISION,
            EV_SLIPWAY_DOMAIN_BUILD,
            4,
            4,
            4
        ]
    );
    assert_eq!(
        SlipwayEvent::decode(events[4].event_type, events[4].data).unwrap(),
        Some(SlipwayEvent::PolicyDecision(PolicyDecision {
            reason: DecisionReason::ConfigMalformed,
            action: DecisionAction::StartRecoveryOnly,
            subject: b"rescue",
        }))
    );
    assert_eq!(events[4].pcr, 19);
    assert_eq!(events[3].pcr, 19);
    let replayed = log.replay(InitialState::DynamicLaunch).unwrap();
    for pcr in 19..=21 {
        assert_eq!(
            replayed
                .value(pcr, slipway_measure::HashAlg::Sha256)
                .unwrap(),
            m.tpm_mut()
                .0
                .value(pcr, slipway_measure::HashAlg::Sha256)
                .unwrap()
        );
    }
}

/// Without a recovery module the decision is halt; the hypervisor still seals (separators only),
/// so the PCRs are final.
#[test]
fn a_halt_is_measured_and_sealed_without_a_build() {
    let banks = BankSet::from_algs(&[slipway_measure::AlgId::SHA256]).unwrap();
    let mut buf = std::vec![0u8; 64 * 1024];
    let inputs = LaunchInputs {
        kind: LaunchKind::Emulated,
        region: None,
        cmdline: b"",
        domb_image: b"domb",
        boot_state: None,
    };
    let tpm = CountingTpm(PcrBanks::new(&banks, InitialState::DynamicLaunch));
    let mut m = Measurement::start(tpm, banks, &mut buf, &inputs).unwrap();
    let decision = decide(BuilderEnd::Hung, None);
    m.record_recovery_decision(&decision).unwrap();
    assert_eq!(m.seal(&[]), Ok(Sealed::Complete));
    let log = EventLog::parse(m.log_bytes()).unwrap();
    let types: Vec<u32> = log.events().map(|e| e.unwrap().event_type).collect();
    assert_eq!(
        types,
        [0x601, 0x602, 0x603, EV_SLIPWAY_POLICY_DECISION, 4, 4, 4]
    );
}
