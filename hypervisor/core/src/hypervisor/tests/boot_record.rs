//! The TPM NV boot record through the core: the boot state domB is told, domB's slot choice,
//! and a control domain's success report after hand-off, written through the host once.

use super::*;
use crate::boot_report::{BootRecordState, BootReport};
use slipway_measure::events::SlotChoice;
use slipway_tpm::boot_record::BootRecord;

/// Slot b requested, its third attempt since slot a was last known good.
fn counted() -> BootRecordState {
    let record = BootRecord {
        current_slot: 1,
        attempts: 3,
        last_known_good: Some(0),
    };
    BootRecordState {
        info: v1::BootState {
            requested_slot: 1,
            attempts: Some(3),
            last_known_good: Some(0),
        },
        report: Some(BootReport::new(1, Some(record))),
    }
}

fn boot_record_world(boot_record: BootRecordState) -> World {
    world_with(Setup {
        measured: true,
        boot_record,
        ..Setup::default()
    })
}

fn control() -> Capabilities {
    Capabilities {
        control: true,
        ..Capabilities::default()
    }
}

#[test]
fn dom_b_is_told_the_counted_boot_state() {
    let w = boot_record_world(counted());
    let slot = usize::from(w.domb.0);
    let domain = w.hv.domains[slot].as_ref().unwrap();
    let mut page = vec![0u8; PAGE_SIZE as usize];
    domain
        .memory
        .read(&w.hv.mem, DOMB_MEMORY - 4 * PAGE_SIZE, &mut page)
        .unwrap();
    // The page holds the encoding and zeroes after it: the shortest prefix that decodes.
    let info = (1..page.len())
        .find_map(|len| decode_boot_info(&page[..len]).ok())
        .unwrap();
    assert_eq!(info.boot_state, counted().info);
}

#[test]
fn a_control_domain_reports_success_once_and_the_used_slot_is_written_known_good() {
    let mut w = boot_record_world(counted());
    let ctl = w.plan_with("ctl", 1, control());
    // Before hand-off nobody may report (domB has no control capability).
    assert_eq!(
        w.call(w.domb, Request::ReportBootSuccess),
        Err(Error::NotPermitted)
    );
    w.hand_off();
    let (_, response, _) = w.call_at(ctl, 0x4000, &Request::ReportBootSuccess);
    assert_eq!(response, Some(Ok(ResponseOk::Done)));
    assert_eq!(
        w.hv.host.boot_records,
        [BootRecord {
            current_slot: 1,
            attempts: 0,
            last_known_good: Some(1),
        }]
    );
    assert!(
        w.hv.host
            .log
            .iter()
            .any(|l| l.starts_with("boot record: domain ") && l.contains("slot b is known good"))
    );
    // A second report is refused and writes nothing.
    let (_, response, _) = w.call_at(ctl, 0x4000, &Request::ReportBootSuccess);
    assert_eq!(response, Some(Err(Error::BootAlreadyReported)));
    assert_eq!(w.hv.host.boot_records.len(), 1);
}

#[test]
fn a_write_the_tpm_refuses_leaves_the_report_open() {
    let mut w = boot_record_world(counted());
    let ctl = w.plan_with("ctl", 1, control());
    w.hand_off();
    w.hv.host.refuse_boot_record_write = true;
    let (_, response, _) = w.call_at(ctl, 0x4000, &Request::ReportBootSuccess);
    assert_eq!(response, Some(Err(Error::BootRecordWriteFailed)));
    assert!(w.hv.host.boot_records.is_empty());
    // The caller may report again once the TPM takes it.
    w.hv.host.refuse_boot_record_write = false;
    let (_, response, _) = w.call_at(ctl, 0x4000, &Request::ReportBootSuccess);
    assert_eq!(response, Some(Ok(ResponseOk::Done)));
    assert_eq!(w.hv.host.boot_records.len(), 1);
}

#[test]
fn without_a_boot_record_a_report_is_refused() {
    let mut w = boot_record_world(BootRecordState::unknown(0));
    let ctl = w.plan_with("ctl", 1, control());
    w.hand_off();
    let (_, response, _) = w.call_at(ctl, 0x4000, &Request::ReportBootSuccess);
    assert_eq!(response, Some(Err(Error::BootRecordUnavailable)));
    assert!(w.hv.host.boot_records.is_empty());
}

#[test]
fn the_slot_choice_goes_through_the_boot_report_once() {
    use crate::hypercall::Platform as _;
    let mut w = boot_record_world(counted());
    let choice = SlotChoice { from: 1, to: 0 };
    let hv = &mut w.hv;
    let mut effects = Effects {
        measurement: hv.measurement.as_mut(),
        boot_record: &mut hv.boot_record,
        host: &mut hv.host,
        mem: &mut hv.mem,
        alloc: &mut hv.alloc,
        tags: &mut hv.tags,
        domains: hv.domains,
        table_kind: hv.table_kind,
        ept_large_pages: hv.ept_large_pages,
    };
    assert_eq!(effects.slot_choice(choice), Ok(()));
    assert_eq!(
        effects.slot_choice(choice),
        Err(Error::EventDataMalformed),
        "a second choice is refused"
    );
    assert_eq!(hv.boot_record.report.unwrap().slot(), 0);
    assert!(
        hv.host
            .log
            .iter()
            .any(|l| l == "boot record: the policy chose slot a over the requested slot b")
    );
    // Without a boot record there is one slot: no choice.
    let mut w = boot_record_world(BootRecordState::unknown(1));
    let hv = &mut w.hv;
    let mut effects = Effects {
        measurement: hv.measurement.as_mut(),
        boot_record: &mut hv.boot_record,
        host: &mut hv.host,
        mem: &mut hv.mem,
        alloc: &mut hv.alloc,
        tags: &mut hv.tags,
        domains: hv.domains,
        table_kind: hv.table_kind,
        ept_large_pages: hv.ept_large_pages,
    };
    assert_eq!(effects.slot_choice(choice), Err(Error::EventDataMalformed));
}
