//! Glue of the TPM NV boot record (`slipway_tpm::boot_record`, `slipway_hv_core::boot_report`):
//! counting this boot before domB runs, and the control domain's success report after
//! hand-off, written at locality 2, which the hypervisor takes back for that one write.

use slipway_hv_core::boot_report::BootReport;
use slipway_measure::events::{BootRecordStatus, BootStateRecord, SlotChoice};
use slipway_protocol::boot_modules::slots::{self, MAX_SLOTS};
use slipway_protocol::v1::{self, DomainId, Error};
use slipway_tpm::boot_record::{self as record, BootRecordStore, Note};

use crate::hvprintln;
use crate::tpm::HvTpm;

/// This boot's boot state: what domB is told, and the report state (`None` without a TPM).
pub struct BootRecordState {
    pub info: v1::BootState,
    pub report: Option<BootReport>,
}

impl BootRecordState {
    /// No boot record (no TPM): the state is unknown.
    pub const fn unknown(requested: u8) -> Self {
        BootRecordState {
            info: v1::BootState {
                requested_slot: requested,
                attempts: None,
                last_known_good: None,
            },
            report: None,
        }
    }
}

fn slot_name(slot: Option<u8>) -> &'static str {
    slot.and_then(slots::name).unwrap_or("none")
}

/// Counts this boot of `requested` in the record (creating it on first boot) and prints what
/// it found. Returns what is measured and the boot's state.
pub fn count(tpm: &mut HvTpm, requested: u8) -> (BootStateRecord, BootRecordState) {
    let (counted, error) = record::count_boot(tpm, requested, MAX_SLOTS);
    let index = record::BOOT_RECORD_INDEX;
    match counted.note {
        Note::None => {}
        Note::Corrupt(why) => hvprintln!(
            "boot record: the record in NV index {index:#010x} is CORRUPT ({why}): replaced by a fresh record (attempts restart, no known-good slot)"
        ),
        Note::ForeignIndex => hvprintln!(
            "boot record: NV index {index:#010x} exists with other attributes, policy or size: not Slipway's boot record, neither trusted nor written; the boot state is unknown"
        ),
        Note::TpmFailed(step) => match error {
            Some(error) => hvprintln!(
                "boot record: {step} failed: {error}; nothing counted, the boot state is unknown"
            ),
            None => hvprintln!("boot record: {step} failed; the boot state is unknown"),
        },
    }
    let state = counted.state;
    if state.status == BootRecordStatus::Created {
        hvprintln!(
            "boot record: NV index {index:#010x} created (first boot): 16 bytes, written only at locality 2"
        );
    }
    let attempts = (state.status != BootRecordStatus::Unavailable).then_some(state.attempts);
    match attempts {
        Some(n) => hvprintln!(
            "boot record: slot {} requested, attempt {n} since its last success; last known-good slot {}",
            slot_name(Some(requested)),
            slot_name(state.last_known_good)
        ),
        None => hvprintln!(
            "boot record: slot {} requested; attempts unknown, no known-good slot",
            slot_name(Some(requested))
        ),
    }
    let info = v1::BootState {
        requested_slot: requested,
        attempts,
        last_known_good: state.last_known_good,
    };
    (
        state,
        BootRecordState {
            info,
            report: Some(BootReport::new(requested, counted.record)),
        },
    )
}

/// domB measures a slot choice: the boot now uses that slot.
pub fn slot_choice(state: &mut BootRecordState, choice: SlotChoice) -> Result<(), Error> {
    let report = state.report.as_mut().ok_or(Error::EventDataMalformed)?;
    report.slot_choice(choice)?;
    hvprintln!(
        "boot record: the policy chose slot {} over the requested slot {}",
        slot_name(Some(choice.to)),
        slot_name(Some(choice.from))
    );
    Ok(())
}

/// A control domain reports success. The write needs locality 2, which the hypervisor gave up
/// at hand-off: it is taken back for this one write only if no other locality is active (a
/// domain holding locality 0 mid-command is never interrupted; the caller may report again),
/// then released.
pub fn report_success(
    state: &mut BootRecordState,
    measurement: Option<&mut crate::measurement::Measurement>,
    caller: DomainId,
) -> Result<(), Error> {
    let report = state.report.as_mut().ok_or(Error::BootRecordUnavailable)?;
    let failed = measurement.as_ref().is_some_and(|m| m.failure().is_some());
    let updated = report.success(failed).inspect_err(|error| {
        hvprintln!(
            "boot record: success report of domain {} refused: {error}",
            caller.0
        );
    })?;
    let tpm = measurement.map(crate::measurement::tpm);
    let tpm = tpm.ok_or(Error::BootRecordUnavailable)?;
    if crate::tpm::locality_zero_active() {
        hvprintln!(
            "boot record: success report of domain {} not written: locality 0 is active (the TPM is in use); report again after relinquishing it",
            caller.0
        );
        return Err(Error::BootRecordWriteFailed);
    }
    if let Err(error) = tpm.transport().request_locality() {
        hvprintln!("boot record: locality 2 not granted: {error}");
        return Err(Error::BootRecordWriteFailed);
    }
    let written = tpm.write(&updated.encode());
    if let Err(error) = tpm.transport().relinquish_locality() {
        hvprintln!("tpm: releasing locality 2: {error}");
    }
    if let Err(error) = written {
        hvprintln!("boot record: NV_Write failed: {error}");
        return Err(Error::BootRecordWriteFailed);
    }
    report.written(updated);
    hvprintln!(
        "boot record: domain {} reported a successful boot: slot {} is known good (attempts of slot {}: {})",
        caller.0,
        slot_name(Some(report.slot())),
        slot_name(Some(updated.current_slot)),
        updated.attempts
    );
    Ok(())
}
