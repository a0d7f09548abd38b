//! The hypervisor's measurements: `slipway_hv_core::measurement` (the sequence, failing closed)
//! over the TIS driver at locality 2, the static buffer of the event log, and the console lines
//! a run is read by.

use slipway_hv_core::measurement::{self as core_measurement, LaunchInputs, PcrExtend, Sealed};
use slipway_measure::events::SEPARATOR_PCRS;
use slipway_measure::{BankSet, DigestList};

use crate::tpm::HvTpm;

/// Capacity of the event log: what a control domain's log window carries after its descriptor.
pub const LOG_CAPACITY: usize = slipway_protocol::v1::LOG_WINDOW_CAPACITY;

static mut LOG_BUFFER: [u8; LOG_CAPACITY] = [0; LOG_CAPACITY];

/// The hypervisor's TPM for the measurement sequence: `PCR_Extend` in every active bank, with an
/// optional injected failure (`tpm_fault=N` on the hypervisor command line: the N-th extend of
/// the sequence is not sent and fails, as a TPM that stopped answering would; the command line is
/// measured, so a run that used it never passes for a normal one).
pub struct HvPcrs {
    tpm: HvTpm,
    banks: BankSet,
    extends: u32,
    fail_at: Option<u32>,
}

/// Why an extend failed.
pub enum ExtendError {
    Tpm(slipway_tpm::CommandError<slipway_tpm::TisError>),
    Injected(u32),
}

impl core::fmt::Display for ExtendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Tpm(error) => write!(f, "{error}"),
            Self::Injected(n) => write!(f, "injected failure of extend {n} (tpm_fault={n})"),
        }
    }
}

impl PcrExtend for HvPcrs {
    type Error = ExtendError;
    fn pcr_extend(&mut self, pcr: u8, digests: &DigestList) -> Result<(), ExtendError> {
        self.extends += 1;
        let result = if self.fail_at == Some(self.extends) {
            Err(ExtendError::Injected(self.extends))
        } else {
            self.tpm
                .pcr_extend(pcr, digests, &self.banks)
                .map_err(ExtendError::Tpm)
        };
        if let Err(error) = &result {
            crate::hvprintln!("tpm: PCR{pcr} extend failed: {error}");
        }
        result
    }
}

/// The measurement of this boot.
pub type Measurement = core_measurement::Measurement<'static, HvPcrs>;

/// Starts the log and measures the hypervisor's own inputs (see
/// [`core_measurement::Measurement::start`]); a failure is printed and kept.
pub fn start(
    tpm: HvTpm,
    banks: BankSet,
    fail_at: Option<u32>,
    launch: &LaunchInputs<'_>,
) -> Result<Measurement, &'static str> {
    // SAFETY: the buffer is handed out once, here, to the one Measurement (post-launch runs once).
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(LOG_BUFFER) };
    if banks.has_unsupported() {
        crate::hvprintln!(
            "WARNING: an active PCR bank uses an algorithm Slipway cannot hash: capped (no evidence)"
        );
    }
    if let Some(n) = fail_at {
        crate::hvprintln!("measurement: FAULT INJECTION: extend {n} of this boot will fail");
    }
    let pcrs = HvPcrs {
        tpm,
        banks,
        extends: 0,
        fail_at,
    };
    let m = Measurement::start(pcrs, banks, buf, launch).map_err(|_| "event log header")?;
    if let Some(failure) = m.failure() {
        report_failure(failure);
    }
    Ok(m)
}

/// As [`start`], but continues the log a dynamic launch began (Intel TXT: SINIT's events in the
/// container, `txt::post_launch`): the same sequence appended after them.
pub fn resume(
    tpm: HvTpm,
    banks: BankSet,
    fail_at: Option<u32>,
    log: slipway_measure::log::LogWriter<'static>,
    launch: &LaunchInputs<'_>,
) -> Result<Measurement, &'static str> {
    if banks.has_unsupported() {
        crate::hvprintln!(
            "WARNING: an active PCR bank uses an algorithm Slipway cannot hash: capped (no evidence)"
        );
    }
    if let Some(n) = fail_at {
        crate::hvprintln!("measurement: FAULT INJECTION: extend {n} of this boot will fail");
    }
    let pcrs = HvPcrs {
        tpm,
        banks,
        extends: 0,
        fail_at,
    };
    let m = Measurement::resume(pcrs, banks, log, launch)
        .map_err(|_| "SINIT's log lists other banks than the TPM's")?;
    if let Some(failure) = m.failure() {
        report_failure(failure);
    }
    Ok(m)
}

/// Says, once, that measurement failed and what that means for this boot.
pub fn report_failure(failure: core_measurement::Failure) {
    crate::hvprintln!(
        "LAUNCH FAILED: measurement stopped: {failure}; no further measurement is accepted, the log ends before it, and only the policy's tpm-unavailable fallback may start"
    );
}

/// After the hand-off was accepted: prints how the log ended and gives up locality 2, so that a
/// control domain can use locality 0.
pub fn after_hand_off(m: &mut core_measurement::Measurement<'_, HvPcrs>, sealed: Sealed) {
    match sealed {
        Sealed::Complete => {
            crate::hvprintln!(
                "measurement: separators in PCR{}-{}; event log final: {} bytes, {} events, {} PCR_Extend commands ({})",
                SEPARATOR_PCRS[0],
                SEPARATOR_PCRS[SEPARATOR_PCRS.len() - 1],
                m.log_bytes().len(),
                m.events(),
                m.extends(),
                m.tpm_mut().tpm.counts()
            );
            print_replay(m);
        }
        Sealed::Failed(failure) => crate::hvprintln!(
            "measurement: LAUNCH FAILED ({failure}): no build records or separators; the log ({} events) is incomplete",
            m.events()
        ),
    }
    if let Err(error) = m.tpm_mut().tpm.transport().relinquish_locality() {
        crate::hvprintln!("tpm: releasing locality 2: {error}");
    }
}

/// The TPM's own PCR19-21 (SHA-256 bank, if active), read back after a seal: what a quote would
/// attest, for runs with no attesting domain (the recovery environment), so a test compares the
/// TPM itself with `cargo xtask predict`. Call before [`after_hand_off`] (which gives up
/// locality 2).
pub fn print_tpm_pcrs(m: &mut core_measurement::Measurement<'_, HvPcrs>) {
    let sha256 = slipway_measure::AlgId::SHA256;
    if !m.banks().iter().any(|bank| bank.alg == sha256) {
        return;
    }
    match m
        .tpm_mut()
        .tpm
        .pcr_read(sha256, slipway_tpm::PcrMask::range(19, 21))
    {
        Ok(values) => {
            for pcr in 19..=21u8 {
                if let Some(value) = values.get(pcr) {
                    crate::console::print_line(format_args!(
                        "measurement: TPM PCR{pcr} sha256 {}",
                        Hex(value.as_bytes())
                    ));
                }
            }
        }
        Err(error) => crate::hvprintln!("measurement: reading PCR19-21 back failed: {error}"),
    }
}

/// The hypervisor's TPM inside the measurement (for the boot record's late write).
pub fn tpm<'m>(m: &'m mut core_measurement::Measurement<'_, HvPcrs>) -> &'m mut HvTpm {
    &mut m.tpm_mut().tpm
}

/// The log's own replay, so a run can be compared with `cargo xtask predict` by eye.
fn print_replay(m: &core_measurement::Measurement<'_, HvPcrs>) {
    use slipway_measure::events::LaunchKind;
    let initial = match m.kind() {
        LaunchKind::Unmeasured => slipway_measure::pcr::InitialState::NoDynamicLaunch,
        _ => slipway_measure::pcr::InitialState::DynamicLaunch,
    };
    if let Ok(log) = slipway_measure::log::EventLog::parse(m.log_bytes())
        && let Ok(pcrs) = log.replay(initial)
    {
        for pcr in 17..=21 {
            if let Ok(Some(value)) = pcrs.value(pcr, slipway_measure::HashAlg::Sha256) {
                crate::console::print_line(format_args!(
                    "measurement: log replay PCR{pcr} sha256 {}",
                    Hex(value.as_bytes())
                ));
            }
        }
    }
}

/// Lower-case hex of a byte string.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
