//! What domB measures, as exact measure requests: the launch configuration and the policy into
//! PCR19, every other boot module into PCR20 bound to its name (`H(H(name) || H(image))`), and
//! each policy decision into PCR19. Event types and encodings are `slipway-measure`'s.

use alloc::vec::Vec;
use core::fmt;

use slipway_measure::events::{
    self, DecisionAction, DecisionReason, ModuleRecord, PolicyDecision, SlipwayEvent,
};
use slipway_measure::{BankSet, BoundModuleHasher, DigestList, hash};
use slipway_protocol::v1::{self, EVENT_DATA_MAX, MAX_BANKS, Request, TpmAlgId};
use slipway_protocol::{BoundedVec, Bytes};

use crate::config::LaunchConfig;
use slipway_policy::Reason;

use crate::policy::{self, Decision, ProgramSource};

/// One measurement: what domB asks the hypervisor to extend and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// PCR index (19 or 20).
    pub pcr: u8,
    /// TCG event type.
    pub event_type: u32,
    /// One digest per active bank, in bank order.
    pub digests: DigestList,
    /// The exact event data.
    pub event_data: Vec<u8>,
}

/// Why a measurement cannot be expressed as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureError {
    /// the event data is longer than one measure request carries (3 KiB)
    EventDataTooLong,
    /// more digests than the protocol carries
    TooManyDigests,
    /// the event could not be encoded
    Encoding,
}

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EventDataTooLong => {
                "the event data is longer than one measure request carries (3 KiB)"
            }
            Self::TooManyDigests => "more digests than the protocol carries",
            Self::Encoding => "the event could not be encoded",
        })
    }
}

fn encode(event: &SlipwayEvent<'_>) -> Result<Vec<u8>, MeasureError> {
    let mut data = alloc::vec![0u8; event.encoded_len()];
    event
        .encode(&mut data)
        .map_err(|_| MeasureError::Encoding)?;
    Ok(data)
}

fn measured_event(banks: &BankSet, event: &SlipwayEvent<'_>) -> Result<Measurement, MeasureError> {
    let event_data = encode(event)?;
    Ok(Measurement {
        pcr: event.pcr() as u8,
        event_type: event.event_type(),
        digests: hash::event_digests(banks, &event_data),
        event_data,
    })
}

/// The launch configuration blob, verbatim, into PCR19.
pub fn config(banks: &BankSet, blob: &[u8]) -> Result<Measurement, MeasureError> {
    measured_event(banks, &SlipwayEvent::LaunchConfig(blob))
}

/// The policy program's choice of configuration slot `to` over the requested `from`, into PCR19.
pub fn slot_choice(banks: &BankSet, from: u8, to: u8) -> Result<Measurement, MeasureError> {
    measured_event(
        banks,
        &SlipwayEvent::SlotChoice(slipway_measure::events::SlotChoice { from, to }),
    )
}

/// The policy ([`policy::policy_event_data`]: the policy node and the program's digest) into
/// PCR19.
pub fn policy(
    banks: &BankSet,
    config: &LaunchConfig,
    program: ProgramSource<'_>,
) -> Result<Measurement, MeasureError> {
    let data = policy::policy_event_data(config, program);
    measured_event(banks, &SlipwayEvent::Policy(&data))
}

/// A boot module bound to its name into PCR20. Also returns the plain image digests of the
/// supported banks.
pub fn module(
    banks: &BankSet,
    name: &str,
    image: &[u8],
) -> Result<(Measurement, DigestList), MeasureError> {
    let mut hasher = BoundModuleHasher::new(banks, name.as_bytes());
    hasher.update(image);
    let (digests, image_digests) = hasher.finalize();
    let event = SlipwayEvent::BootModule(ModuleRecord {
        name: name.as_bytes(),
        size: image.len() as u64,
    });
    let measurement = Measurement {
        pcr: event.pcr() as u8,
        event_type: event.event_type(),
        digests,
        event_data: encode(&event)?,
    };
    Ok((measurement, image_digests))
}

/// One policy decision into PCR19: the program's (reason, action, subject), or "policy
/// failed" (start-recovery-only, subject: the failure's kind, e.g. `out-of-fuel`).
pub fn decision(banks: &BankSet, decision: &Decision) -> Result<Measurement, MeasureError> {
    let (reason, action, subject): (_, _, &[u8]) = match decision {
        Decision::Failed(error) => (
            DecisionReason::PolicyFailed,
            DecisionAction::StartRecoveryOnly,
            error.kind().as_bytes(),
        ),
        Decision::Program(d) => {
            let reason = match d.reason {
                Reason::AllChecksPassed => DecisionReason::AllChecksPassed,
                Reason::UnmeasuredLaunch => DecisionReason::UnmeasuredLaunch,
                Reason::TpmUnavailable => DecisionReason::TpmUnavailable,
                Reason::ModuleNotAllowed => DecisionReason::ModuleNotAllowed,
                Reason::PolicyRule => DecisionReason::PolicyRule,
            };
            let action = match d.action {
                slipway_policy::DecisionAction::StartAll => DecisionAction::StartAll,
                slipway_policy::DecisionAction::StartListed => DecisionAction::StartListed,
                slipway_policy::DecisionAction::RecoveryOnly => DecisionAction::StartRecoveryOnly,
                slipway_policy::DecisionAction::Halt => DecisionAction::Halt,
            };
            (reason, action, d.subject.as_bytes())
        }
    };
    measured_event(
        banks,
        &SlipwayEvent::PolicyDecision(PolicyDecision {
            reason,
            action,
            subject,
        }),
    )
}

impl Measurement {
    /// The protocol v1 measure request.
    pub fn to_request(&self) -> Result<Request, MeasureError> {
        if self.event_data.len() > EVENT_DATA_MAX {
            return Err(MeasureError::EventDataTooLong);
        }
        let mut digests: BoundedVec<v1::Digest, MAX_BANKS> = BoundedVec::new();
        for digest in self.digests.iter() {
            let digest = v1::Digest::new(digest.alg().into(), digest.as_bytes())
                .map_err(|_| MeasureError::TooManyDigests)?;
            digests
                .push(digest)
                .map_err(|_| MeasureError::TooManyDigests)?;
        }
        Ok(Request::Measure {
            pcr: self.pcr,
            event_type: self.event_type,
            digests,
            event_data: Bytes::from_slice(&self.event_data)
                .map_err(|_| MeasureError::EventDataTooLong)?,
        })
    }
}

/// The banks of the boot information as a `slipway-measure` bank set (order kept).
pub fn bank_set(active_banks: &[TpmAlgId]) -> Result<BankSet, slipway_measure::Error> {
    let algs: Vec<slipway_measure::AlgId> = active_banks.iter().map(|&alg| alg.into()).collect();
    BankSet::from_algs(&algs)
}

/// The PCRs domB measures into, for messages and tests.
pub const PCRS: [u32; 2] = events::DOMB_PCRS;
