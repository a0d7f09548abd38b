//! The boot's entry in the TPM NV boot record after domB ran: which configuration slot the
//! boot used (the requested one, or the one domB's measured slot choice names) and the one
//! success report a control domain may send after hand-off. The binary writes the record
//! (`slipway_tpm::boot_record`) when [`BootReport::success`] says what to write, and confirms
//! with [`BootReport::written`]; everything else is decided here.

use slipway_measure::events::SlotChoice;
use slipway_protocol::boot_modules::slots::MAX_SLOTS;
use slipway_protocol::v1::{self, Error};
use slipway_tpm::boot_record::BootRecord;

/// What this boot knows about its boot record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootReport {
    requested: u8,
    used: u8,
    choice_seen: bool,
    record: Option<BootRecord>,
    reported: bool,
}

impl BootReport {
    /// The boot of slot `requested`, with the record counted before domB ran (`None` when
    /// there is no usable record).
    pub const fn new(requested: u8, record: Option<BootRecord>) -> Self {
        BootReport {
            requested,
            used: requested,
            choice_seen: false,
            record,
            reported: false,
        }
    }

    /// The slot this boot uses.
    pub fn slot(&self) -> u8 {
        self.used
    }

    /// The requested slot.
    pub fn requested(&self) -> u8 {
        self.requested
    }

    /// domB asks to measure a slot choice: accepted once, from the requested slot to another
    /// slot that exists; the boot then uses that slot.
    pub fn slot_choice(&mut self, choice: SlotChoice) -> Result<(), Error> {
        if self.choice_seen
            || choice.from != self.requested
            || choice.to == choice.from
            || choice.to >= MAX_SLOTS
        {
            return Err(Error::EventDataMalformed);
        }
        self.choice_seen = true;
        self.used = choice.to;
        Ok(())
    }

    /// A control domain reports success: the record to write (the used slot known good), or
    /// why not. A boot whose measurement failed is never recorded as good (it started at most
    /// the policy's `tpm-unavailable` fallback, and a slot choice it made may not be in the
    /// log). Nothing changes until [`BootReport::written`].
    pub fn success(&self, measurement_failed: bool) -> Result<BootRecord, Error> {
        if self.reported {
            return Err(Error::BootAlreadyReported);
        }
        if measurement_failed {
            return Err(Error::MeasurementFailed);
        }
        let record = self.record.ok_or(Error::BootRecordUnavailable)?;
        Ok(record.after_success(self.used))
    }

    /// The TPM took `record`: the report is done, a second one is refused.
    pub fn written(&mut self, record: BootRecord) {
        self.record = Some(record);
        self.reported = true;
    }
}

/// This boot's boot state: what domB is told (`BootInfo::boot_state`), and the report (`None`
/// without a usable boot record). The hypervisor core keeps it; the binary counts the boot
/// before domB runs and writes the record when a success report asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootRecordState {
    /// What domB is told.
    pub info: v1::BootState,
    /// The report state (`None`: no boot record).
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

/// A slot's name for the console (`a`..`d`), `none` for no slot.
pub fn slot_name(slot: Option<u8>) -> &'static str {
    slot.and_then(slipway_protocol::boot_modules::slots::name)
        .unwrap_or("none")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(current: u8, attempts: u32, lkg: Option<u8>) -> BootRecord {
        BootRecord {
            current_slot: current,
            attempts,
            last_known_good: lkg,
        }
    }

    #[test]
    fn a_success_marks_the_requested_slot_known_good_once() {
        let mut report = BootReport::new(1, Some(record(1, 2, Some(0))));
        let new = report.success(false).unwrap();
        assert_eq!(new, record(1, 0, Some(1)));
        assert_eq!(
            report.success(false),
            Ok(new),
            "nothing changes before the write"
        );
        report.written(new);
        assert_eq!(report.success(false), Err(Error::BootAlreadyReported));
    }

    #[test]
    fn after_a_measured_fallback_the_fallback_slot_is_marked_and_the_failures_kept() {
        let mut report = BootReport::new(1, Some(record(1, 3, Some(0))));
        report.slot_choice(SlotChoice { from: 1, to: 0 }).unwrap();
        assert_eq!(report.slot(), 0);
        assert_eq!(report.success(false), Ok(record(1, 3, Some(0))));
    }

    #[test]
    fn slot_choices_must_start_at_the_requested_slot_exist_and_come_once() {
        let mut report = BootReport::new(1, None);
        for bad in [
            SlotChoice { from: 0, to: 2 },
            SlotChoice { from: 1, to: 1 },
            SlotChoice {
                from: 1,
                to: MAX_SLOTS,
            },
        ] {
            assert_eq!(report.slot_choice(bad), Err(Error::EventDataMalformed));
            assert_eq!(report.slot(), 1);
        }
        report.slot_choice(SlotChoice { from: 1, to: 2 }).unwrap();
        assert_eq!(
            report.slot_choice(SlotChoice { from: 1, to: 0 }),
            Err(Error::EventDataMalformed)
        );
        assert_eq!(report.slot(), 2);
    }

    #[test]
    fn a_boot_whose_measurement_failed_is_never_marked_good() {
        let report = BootReport::new(0, Some(record(0, 1, None)));
        assert_eq!(report.success(true), Err(Error::MeasurementFailed));
    }

    #[test]
    fn without_a_record_there_is_nothing_to_mark() {
        let report = BootReport::new(0, None);
        assert_eq!(report.success(false), Err(Error::BootRecordUnavailable));
    }
}
