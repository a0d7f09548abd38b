//! The hypervisor's measurement sequence (`docs/measurement.md` sections 4 and 4a): the event log
//! and the PCR extends, generic over the TPM, failing closed.
//!
//! The hypervisor runs it over its TIS driver; `cargo xtask predict` runs the same code over a TPM
//! that only counts, so the sequence a verifier predicts is the sequence the hypervisor performs.
//!
//! The rules:
//! - **Extend, then log.** An event enters the log only once its `PCR_Extend` completed; room in
//!   the log is checked before the extend, so a full log never leaves an unlogged extend.
//! - **Fail closed.** The first failure (a TPM error, or a log that cannot take an event that was
//!   extended) ends measurement for the rest of the boot: every later measurement is refused with
//!   [`Error::MeasurementFailed`], except one policy decision with reason `tpm-unavailable`, which
//!   is still extended and logged if the TPM answers (so the fallback the policy chose is on record
//!   where possible). The launch then counts as failed, whatever starts.
//! - **All or nothing at hand-off.** The build records (PCR21) and the separators are extended
//!   first, every one, and only then logged: a failure part-way logs none of them, and the
//!   hand-off is refused for good (no retry can extend PCR21 twice).

use core::fmt;

use slipway_measure::events::{
    BUILD_PAYLOAD_POSTCARD_V2, BootStateRecord, DecisionReason, DomainBuildRecord,
    EV_SLIPWAY_POLICY_DECISION, LaunchKind, ModuleRecord, PCR_BUILD_INPUTS, PCR_DOMAIN_BUILDS,
    PCR_DRTM_DETAILS, SEPARATOR_PCRS, SlipwayEvent,
};
use slipway_measure::hash::{bound_module_digests, event_digests};
use slipway_measure::log::{LogHeader, LogWriter, event_len};
use slipway_measure::{BankSet, DigestList};
use slipway_protocol::boot_modules::DOMB_MODULE;
use slipway_protocol::v1::Error;

use crate::build_record;
use crate::domain::{Domain, MAX_DOMAINS};

/// The one TPM operation the sequence needs.
pub trait PcrExtend {
    /// Why an extend failed (printed).
    type Error: fmt::Display;
    /// Extends `pcr` with `digests`, one per active bank, in one `PCR_Extend`.
    fn pcr_extend(&mut self, pcr: u8, digests: &DigestList) -> Result<(), Self::Error>;
}

/// Why measurement stopped: the event that could not be completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `PCR_Extend` of this event failed (the TPM may or may not have extended it).
    Extend {
        /// The PCR.
        pcr: u32,
        /// The event type.
        event_type: u32,
    },
    /// The log had no room for this event (nothing was extended for it).
    LogFull {
        /// The PCR.
        pcr: u32,
        /// The event type.
        event_type: u32,
    },
    /// The event could not be encoded (a hypervisor bug; nothing was extended for it).
    Encoding {
        /// The event type.
        event_type: u32,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Extend { pcr, event_type } => write!(
                f,
                "PCR_Extend of PCR{pcr} (event type {event_type:#x}) failed"
            ),
            Self::LogFull { pcr, event_type } => write!(
                f,
                "the event log has no room for PCR{pcr} event type {event_type:#x}"
            ),
            Self::Encoding { event_type } => {
                write!(f, "event type {event_type:#x} could not be encoded")
            }
        }
    }
}

/// The dynamic launch as the hypervisor verified it, for the log's first event.
#[derive(Clone, Copy, Debug)]
pub struct LaunchRegion {
    /// Physical start of the measured region.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// `H(region)` per bank: what the launch extended into PCR17 (logged, not extended again).
    pub digests: DigestList,
}

/// What the hypervisor measures before domB runs.
#[derive(Clone, Copy, Debug)]
pub struct LaunchInputs<'a> {
    /// How the hypervisor was launched.
    pub kind: LaunchKind,
    /// The emulated launch's region (only for [`LaunchKind::Emulated`]).
    pub region: Option<LaunchRegion>,
    /// The hypervisor's command line, verbatim.
    pub cmdline: &'a [u8],
    /// domB's image: exactly the bytes the hypervisor starts as domB.
    pub domb_image: &'a [u8],
    /// The boot state counted into the TPM NV boot record (`slipway_tpm::boot_record`),
    /// measured after domB's image; `None` where no boot record is kept (an unmeasured launch).
    pub boot_state: Option<BootStateRecord>,
}

/// How the measurement ended at hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealed {
    /// Build records and separators extended and logged: the log is final and complete.
    Complete,
    /// Measurement had failed before the hand-off: nothing more was extended or logged.
    Failed(Failure),
}

/// The log, the TPM and the sequence's state.
pub struct Measurement<'log, T: PcrExtend> {
    tpm: T,
    banks: BankSet,
    log: LogWriter<'log>,
    kind: LaunchKind,
    extends: u32,
    events: u32,
    failure: Option<Failure>,
    /// The one decision accepted after a failure has been logged.
    fallback_decision_taken: bool,
    sealed: bool,
    /// A seal failed part-way: PCR21 may be half-written, so no later hand-off may count.
    seal_broken: bool,
}

impl<'log, T: PcrExtend> Measurement<'log, T> {
    /// Starts the log in `buf` (header for `banks`) and measures the hypervisor's own inputs into
    /// PCR19: launch kind, capped banks (if any), command line, domB's image. A failure here is
    /// kept ([`Measurement::failure`]); the measurement is returned either way, so domB's
    /// requests get [`Error::MeasurementFailed`] and the policy's `tpm-unavailable` rule applies.
    /// Only a buffer too small for the log header is an error.
    pub fn start(
        tpm: T,
        banks: BankSet,
        buf: &'log mut [u8],
        launch: &LaunchInputs<'_>,
    ) -> Result<Self, slipway_measure::Error> {
        let log = LogWriter::new(buf, &LogHeader::slipway(banks))?;
        Self::resume(tpm, banks, log, launch)
    }

    /// As [`Measurement::start`], but continues a log the dynamic launch began (Intel TXT: the
    /// log SINIT extended PCR17/18 into, resumed with `LogWriter::resume`): the same sequence is
    /// appended after the launch's own events. The log's banks must be `banks` in the TPM's order
    /// (Slipway wrote its header before the launch); otherwise [`slipway_measure::Error`] says so
    /// and nothing is extended.
    pub fn resume(
        tpm: T,
        banks: BankSet,
        log: LogWriter<'log>,
        launch: &LaunchInputs<'_>,
    ) -> Result<Self, slipway_measure::Error> {
        if let Some((ours, theirs)) = banks
            .iter()
            .map(Some)
            .chain(core::iter::repeat(None))
            .zip(log.banks().iter().map(Some).chain(core::iter::repeat(None)))
            .take(banks.len().max(log.banks().len()))
            .find(|(a, b)| a != b)
        {
            return Err(match (ours, theirs) {
                (Some(bank), _) => slipway_measure::Error::MissingBank(bank.alg),
                (None, Some(bank)) => slipway_measure::Error::UnexpectedBank(bank.alg),
                (None, None) => unreachable!("take() stops at the longer list"),
            });
        }
        let mut this = Measurement {
            tpm,
            banks,
            log,
            kind: launch.kind,
            extends: 0,
            events: 0,
            failure: None,
            fallback_decision_taken: false,
            sealed: false,
            seal_broken: false,
        };
        let _ = this.start_events(launch);
        Ok(this)
    }

    fn start_events(&mut self, launch: &LaunchInputs<'_>) -> Result<(), Failure> {
        if let Some(region) = launch.region {
            // Logged only: the dynamic launch (the "CPU") extended PCR17 already.
            let event = SlipwayEvent::EmulatedLaunch {
                region_start: region.start,
                region_size: region.size,
            };
            self.log
                .append_slipway(PCR_DRTM_DETAILS, &event, Some(&region.digests))
                .map_err(|_| {
                    self.fail(Failure::LogFull {
                        pcr: PCR_DRTM_DETAILS,
                        event_type: event.event_type(),
                    })
                })?;
            self.events += 1;
        }
        self.record(
            PCR_BUILD_INPUTS,
            &SlipwayEvent::LaunchKind(launch.kind),
            None,
        )?;
        let mut capped = BankSet::empty();
        for bank in self.banks.unsupported() {
            let _ = capped.push(bank);
        }
        if !capped.is_empty() {
            self.record(PCR_BUILD_INPUTS, &SlipwayEvent::BanksCapped(capped), None)?;
        }
        self.record(
            PCR_BUILD_INPUTS,
            &SlipwayEvent::HypervisorCmdline(launch.cmdline),
            None,
        )?;
        let digests = bound_module_digests(&self.banks, DOMB_MODULE.as_bytes(), launch.domb_image);
        let event = SlipwayEvent::DombImage(ModuleRecord {
            name: DOMB_MODULE.as_bytes(),
            size: launch.domb_image.len() as u64,
        });
        self.record(PCR_BUILD_INPUTS, &event, Some(&digests))?;
        if let Some(state) = launch.boot_state {
            self.record(PCR_BUILD_INPUTS, &SlipwayEvent::BootState(state), None)?;
        }
        Ok(())
    }

    fn fail(&mut self, failure: Failure) -> Failure {
        *self.failure.get_or_insert(failure)
    }

    fn extend(&mut self, pcr: u32, event_type: u32, digests: &DigestList) -> Result<(), Failure> {
        self.extends += 1;
        // PCR indices here are 17..=21 (the plan's), so the cast cannot truncate.
        match self.tpm.pcr_extend(pcr as u8, digests) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.fail(Failure::Extend { pcr, event_type })),
        }
    }

    /// Extends, then logs, one typed event (digests computed from the event data unless given).
    fn record(
        &mut self,
        pcr: u32,
        event: &SlipwayEvent<'_>,
        given: Option<&DigestList>,
    ) -> Result<(), Failure> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        let event_type = event.event_type();
        let digests = match given {
            Some(digests) => *digests,
            None => self.event_data_digests(event)?,
        };
        if self.log.check_fits(event.encoded_len()).is_err() {
            return Err(self.fail(Failure::LogFull { pcr, event_type }));
        }
        self.extend(pcr, event_type, &digests)?;
        let logged = self.log.append_slipway(pcr, event, given);
        match logged {
            Ok(written) if written == digests => {
                self.events += 1;
                Ok(())
            }
            // Cannot happen (room was checked, the digests come from the same encoding); if it
            // did, the PCR holds an extend the log lacks: nothing after it may count.
            _ => Err(self.fail(Failure::LogFull { pcr, event_type })),
        }
    }

    /// `H(event data)` in every bank, from the event's exact encoding.
    fn event_data_digests(&mut self, event: &SlipwayEvent<'_>) -> Result<DigestList, Failure> {
        let mut scratch = [0u8; EVENT_SCRATCH];
        let event_type = event.event_type();
        let len = event.encoded_len();
        let encoded = scratch
            .get_mut(..len)
            .ok_or(Failure::Encoding { event_type })
            .and_then(|out| {
                event
                    .encode(out)
                    .map_err(|_| Failure::Encoding { event_type })
            });
        match encoded {
            Ok(n) => Ok(event_digests(&self.banks, &scratch[..n])),
            Err(failure) => Err(self.fail(failure)),
        }
    }

    /// A measure request from domB, already checked by the dispatcher (PCR, event type, banks,
    /// data format, digests of `H(data)` events). Returns the event's index in the log.
    pub fn measure(
        &mut self,
        pcr: u8,
        event_type: u32,
        digests: &DigestList,
        data: &[u8],
    ) -> Result<u32, Error> {
        if self.sealed {
            return Err(Error::AfterHandOff);
        }
        if self.failure.is_some() {
            if self.fallback_decision_taken || !is_tpm_unavailable_decision(event_type, data) {
                return Err(Error::MeasurementFailed);
            }
            self.fallback_decision_taken = true;
            return self.extend_and_log(pcr, event_type, digests, data);
        }
        self.extend_and_log(pcr, event_type, digests, data)
    }

    fn extend_and_log(
        &mut self,
        pcr: u8,
        event_type: u32,
        digests: &DigestList,
        data: &[u8],
    ) -> Result<u32, Error> {
        let pcr = u32::from(pcr);
        // A full log is refused before anything happens: domB may still react to it.
        self.log
            .check_fits(data.len())
            .map_err(|_| Error::EventLogFull)?;
        self.extend(pcr, event_type, digests)
            .map_err(|_| Error::TpmFailed)?;
        if self.log.append(pcr, event_type, digests, data).is_err() {
            self.fail(Failure::LogFull { pcr, event_type });
            return Err(Error::EventLogFull);
        }
        self.events += 1;
        Ok(self.events - 1)
    }

    /// At hand-off: one build record per planned domain (in `domains` order) into PCR21, then
    /// the separators into PCR19-21, all or nothing. Returns how the log ended; an `Err` refuses
    /// the hand-off (for good: measurement has failed).
    pub fn seal(&mut self, domains: &[&Domain]) -> Result<Sealed, Error> {
        if self.sealed {
            return Err(Error::AfterHandOff);
        }
        if self.seal_broken {
            return Err(Error::MeasurementFailed);
        }
        if let Some(failure) = self.failure {
            self.sealed = true;
            return Ok(Sealed::Failed(failure));
        }
        // Pass 1: every event's digests and the room they need, before any extend.
        let mut planned: heapless::Vec<(SealEvent, DigestList), { MAX_DOMAINS + 3 }> =
            heapless::Vec::new();
        let mut needed = 0usize;
        for (index, domain) in domains.iter().enumerate() {
            let (digests, len) = self.with_build_event(domain, |this, event| {
                Ok((this.event_data_digests(event)?, event.encoded_len()))
            })?;
            needed += event_len(&self.banks, len);
            planned
                .push((SealEvent::Build(index), digests))
                .map_err(|_| Error::TooManyDomains)?;
        }
        for pcr in SEPARATOR_PCRS {
            let digests = self
                .event_data_digests(&SlipwayEvent::Separator)
                .map_err(|_| Error::EventLogFull)?;
            needed += event_len(&self.banks, SlipwayEvent::Separator.encoded_len());
            planned
                .push((SealEvent::Separator(pcr), digests))
                .map_err(|_| Error::TooManyDomains)?;
        }
        if needed > self.log.remaining() {
            // Refused before any effect; measurement as such has not failed.
            return Err(Error::EventLogFull);
        }
        // Pass 2: extend every event.
        for (event, digests) in &planned {
            if self
                .extend(event.pcr(), event.event_type(), digests)
                .is_err()
            {
                self.seal_broken = true;
                return Err(Error::TpmFailed);
            }
        }
        // Pass 3: log them (room was checked; the digests must come out the same).
        for (event, digests) in &planned {
            let logged = match *event {
                SealEvent::Separator(pcr) => self
                    .log
                    .append_slipway(pcr, &SlipwayEvent::Separator, None)
                    .ok(),
                SealEvent::Build(index) => self
                    .with_build_event(domains[index], |this, event| {
                        this.log
                            .append_slipway(PCR_DOMAIN_BUILDS, event, None)
                            .map_err(|_| Failure::Encoding {
                                event_type: event.event_type(),
                            })
                    })
                    .ok(),
            };
            if logged.as_ref() != Some(digests) {
                // Cannot happen (room was checked, the digests come from the same encoding);
                // if it did, PCRs hold extends the log lacks: nothing after this may count.
                self.fail(Failure::LogFull {
                    pcr: event.pcr(),
                    event_type: event.event_type(),
                });
                self.seal_broken = true;
                return Err(Error::EventLogFull);
            }
            self.events += 1;
        }
        self.sealed = true;
        Ok(Sealed::Complete)
    }

    /// Calls `f` with `domain`'s PCR21 build event.
    fn with_build_event<R>(
        &mut self,
        domain: &Domain,
        f: impl FnOnce(&mut Self, &SlipwayEvent<'_>) -> Result<R, Failure>,
    ) -> Result<R, Error> {
        let mut payload = [0u8; build_record::MAX_ENCODED_LEN];
        let len = domain
            .build_record()
            .encode(&mut payload)
            .map_err(|_| Error::BuildRecordFull)?;
        let event = SlipwayEvent::DomainBuild(DomainBuildRecord {
            name: domain.name().as_str().as_bytes(),
            payload_format: BUILD_PAYLOAD_POSTCARD_V2,
            payload: &payload[..len],
        });
        f(self, &event).map_err(|_| Error::EventLogFull)
    }

    /// Measures the recovery module (`recovery=` on the command line) into PCR19, bound to its
    /// name, right after the hypervisor's start events (domB's image, the boot state) and
    /// before domB runs: the image the hypervisor may start on its own is on record before
    /// anything else happens.
    pub fn measure_recovery_image(&mut self, name: &str, image: &[u8]) -> Result<(), Failure> {
        let digests = bound_module_digests(&self.banks, name.as_bytes(), image);
        let event = SlipwayEvent::RecoveryImage(ModuleRecord {
            name: name.as_bytes(),
            size: image.len() as u64,
        });
        self.record(PCR_BUILD_INPUTS, &event, Some(&digests))
    }

    /// Measures the hypervisor's recovery decision into PCR19 (a policy decision record with one
    /// of the hypervisor's reasons), after domB stopped without handing off. Refused after the
    /// hand-off and once measurement has failed.
    pub fn record_recovery_decision(
        &mut self,
        decision: &crate::recovery::RecoveryDecision<'_>,
    ) -> Result<(), Error> {
        if self.sealed {
            return Err(Error::AfterHandOff);
        }
        let event = SlipwayEvent::PolicyDecision(slipway_measure::events::PolicyDecision {
            reason: decision.reason,
            action: decision.action,
            subject: decision.subject.as_bytes(),
        });
        self.record(PCR_BUILD_INPUTS, &event, None)
            .map_err(|_| Error::MeasurementFailed)
    }

    /// The first failure, if measurement failed.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// The log so far (final once [`Measurement::seal`] returned [`Sealed::Complete`]).
    pub fn log_bytes(&self) -> &[u8] {
        self.log.as_bytes()
    }

    /// Events in the log.
    pub fn events(&self) -> u32 {
        self.events
    }

    /// `PCR_Extend` commands sent (including a failed one).
    pub fn extends(&self) -> u32 {
        self.extends
    }

    /// The launch kind measured.
    pub fn kind(&self) -> LaunchKind {
        self.kind
    }

    /// The active banks.
    pub fn banks(&self) -> &BankSet {
        &self.banks
    }

    /// The TPM (to release its locality after hand-off, or read its counters).
    pub fn tpm_mut(&mut self) -> &mut T {
        &mut self.tpm
    }
}

/// One event of the seal at hand-off.
#[derive(Clone, Copy)]
enum SealEvent {
    /// The build record of the `n`-th planned domain (PCR21).
    Build(usize),
    /// The separator into this PCR.
    Separator(u32),
}

impl SealEvent {
    fn pcr(self) -> u32 {
        match self {
            Self::Build(_) => PCR_DOMAIN_BUILDS,
            Self::Separator(pcr) => pcr,
        }
    }

    fn event_type(self) -> u32 {
        match self {
            Self::Build(_) => slipway_measure::events::EV_SLIPWAY_DOMAIN_BUILD,
            Self::Separator(_) => SlipwayEvent::Separator.event_type(),
        }
    }
}

/// Largest event data the hypervisor encodes itself: a build record with its container.
const EVENT_SCRATCH: usize = build_record::MAX_ENCODED_LEN + 64;

/// Whether `data` is a policy decision with reason `tpm-unavailable`.
fn is_tpm_unavailable_decision(event_type: u32, data: &[u8]) -> bool {
    event_type == EV_SLIPWAY_POLICY_DECISION
        && matches!(
            SlipwayEvent::decode(event_type, data),
            Ok(Some(SlipwayEvent::PolicyDecision(decision)))
                if decision.reason == DecisionReason::TpmUnavailable
        )
}

#[cfg(test)]
mod tests;
