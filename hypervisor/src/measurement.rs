//! The hypervisor's measurements (docs/measurement.md section 4): the event log and the TPM
//! extends, in the order `cargo xtask predict` reproduces: the emulated launch's PCR17 event
//! (logged, not extended), then into PCR19 the launch kind, the hypervisor command line and the
//! domB image before domB runs; domB's measure hypercalls (PCR19/20, checked by hv-core's
//! dispatcher); at hand-off one build record per planned domain into PCR21 and the separators.
//! Every event is written to the log first and extended with exactly the digests logged.

use slipway_measure::events::{
    BUILD_PAYLOAD_POSTCARD_V1, DomainBuildRecord, LaunchKind, ModuleRecord, PCR_BUILD_INPUTS,
    PCR_DOMAIN_BUILDS, PCR_DRTM_DETAILS, SEPARATOR_PCRS, SlipwayEvent,
};
use slipway_measure::hash::{MultiHasher, bound_module_digests};
use slipway_measure::log::{LogHeader, LogWriter};
use slipway_measure::{BankSet, Digest, DigestList};
use slipway_protocol::v1::{self, Error};

use slipway_protocol::boot_modules::DOMB_MODULE;

use crate::tpm::HvTpm;

/// Capacity of the event log: what a control domain's log window carries after its descriptor.
pub const LOG_CAPACITY: usize = slipway_protocol::v1::LOG_WINDOW_CAPACITY;

static mut LOG_BUFFER: [u8; LOG_CAPACITY] = [0; LOG_CAPACITY];

/// The TPM, the banks it has active, and the log.
pub struct Measurement {
    tpm: HvTpm,
    banks: BankSet,
    log: LogWriter<'static>,
    extends: u32,
    kind: LaunchKind,
}

impl Measurement {
    /// Starts the log (header for `banks`) and writes the hypervisor's events before domB runs.
    pub fn start(
        tpm: HvTpm,
        banks: BankSet,
        kind: LaunchKind,
        cmdline: &[u8],
        domb_image: &[u8],
    ) -> Result<Self, &'static str> {
        // SAFETY: the buffer is handed out once, here, to the one Measurement.
        let buf = unsafe { &mut *core::ptr::addr_of_mut!(LOG_BUFFER) };
        let log =
            LogWriter::new(buf, &LogHeader::slipway(banks)).map_err(|_| "event log header")?;
        let mut this = Measurement {
            tpm,
            banks,
            log,
            extends: 0,
            kind,
        };
        if kind == LaunchKind::Emulated {
            let (start, region) = crate::tpm::measured_region();
            let mut hasher = MultiHasher::new(&banks);
            hasher.update(region);
            let digests = hasher.finalize_for();
            let event = SlipwayEvent::EmulatedLaunch {
                region_start: start,
                region_size: region.len() as u64,
            };
            // Logged only: swtpm (the "CPU") extended PCR17 already.
            this.log
                .append_slipway(PCR_DRTM_DETAILS, &event, Some(&digests))
                .map_err(|_| "logging the launch event")?;
        }
        this.record(PCR_BUILD_INPUTS, &SlipwayEvent::LaunchKind(kind), None)?;
        // A bank Slipway cannot hash is capped in every event (the log writer does that), and
        // said so here, right after the launch kind (docs/measurement.md section 5).
        let mut capped = BankSet::empty();
        for bank in banks.unsupported() {
            let _ = capped.push(bank);
        }
        if !capped.is_empty() {
            crate::hvprintln!(
                "WARNING: {} active PCR bank(s) use an algorithm Slipway cannot hash: capped (no evidence)",
                capped.len()
            );
            this.record(PCR_BUILD_INPUTS, &SlipwayEvent::BanksCapped(capped), None)?;
        }
        this.record(
            PCR_BUILD_INPUTS,
            &SlipwayEvent::HypervisorCmdline(cmdline),
            None,
        )?;
        let digests = bound_module_digests(&banks, DOMB_MODULE.as_bytes(), domb_image);
        let event = SlipwayEvent::DombImage(ModuleRecord {
            name: DOMB_MODULE.as_bytes(),
            size: domb_image.len() as u64,
        });
        this.record(PCR_BUILD_INPUTS, &event, Some(&digests))?;
        Ok(this)
    }

    /// Appends a typed event and extends its PCR with the digests logged.
    fn record(
        &mut self,
        pcr: u32,
        event: &SlipwayEvent<'_>,
        digests: Option<&DigestList>,
    ) -> Result<(), &'static str> {
        let logged = self
            .log
            .append_slipway(pcr, event, digests)
            .map_err(|_| "the event log refused an event")?;
        self.extend(pcr, &logged).map_err(|_| "PCR_Extend failed")
    }

    fn extend(&mut self, pcr: u32, digests: &DigestList) -> Result<(), ()> {
        self.extends += 1;
        self.tpm
            .pcr_extend(pcr as u8, digests, &self.banks)
            .map_err(|error| {
                crate::hvprintln!("tpm: PCR{pcr} extend failed: {error}");
            })
    }

    /// A measure hypercall from domB (PCR, event type and digests checked by the dispatcher):
    /// logged with domB's digests, extended with the same. Returns the event's index.
    pub fn measure(
        &mut self,
        pcr: u8,
        event_type: u32,
        digests: &[v1::Digest],
        data: &[u8],
    ) -> Result<u32, Error> {
        let mut list = DigestList::new();
        for digest in digests {
            let digest = Digest::new(digest.alg.into(), &digest.bytes)
                .map_err(|_| Error::DigestLengthWrong)?;
            list.push(digest).map_err(|_| Error::DuplicateBank)?;
        }
        self.log
            .check_fits(data.len())
            .map_err(|_| Error::EventLogFull)?;
        self.log
            .append(u32::from(pcr), event_type, &list, data)
            .map_err(|_| Error::EventLogFull)?;
        self.extend(u32::from(pcr), &list)
            .map_err(|_| Error::TpmFailed)?;
        Ok(self.events() - 1)
    }

    /// One planned domain's build record into PCR21 (at hand-off, before the separators).
    pub fn domain_build(&mut self, name: &str, payload: &[u8]) -> Result<(), Error> {
        let event = SlipwayEvent::DomainBuild(DomainBuildRecord {
            name: name.as_bytes(),
            payload_format: BUILD_PAYLOAD_POSTCARD_V1,
            payload,
        });
        self.record(PCR_DOMAIN_BUILDS, &event, None)
            .map_err(|_| Error::EventLogFull)
    }

    /// The separators into PCR19, 20, 21: after them the log is final.
    pub fn separators(&mut self) -> Result<(), &'static str> {
        for pcr in SEPARATOR_PCRS {
            self.record(pcr, &SlipwayEvent::Separator, None)?;
        }
        crate::hvprintln!(
            "measurement: separators in PCR19-21; event log final: {} bytes, {} events, {} PCR_Extend commands ({})",
            self.log.len(),
            self.events(),
            self.extends,
            self.tpm.counts()
        );
        // The log's own replay, so a run can be compared with `cargo xtask predict` by eye.
        if let Ok(log) = slipway_measure::log::EventLog::parse(self.log.as_bytes())
            && let Ok(pcrs) = log.replay(match self.kind {
                LaunchKind::Unmeasured => slipway_measure::pcr::InitialState::NoDynamicLaunch,
                _ => slipway_measure::pcr::InitialState::DynamicLaunch,
            })
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
        Ok(())
    }

    /// After the separators: gives up locality 2, so that a control domain can use locality 0.
    /// The log's bytes (final once the separators are logged).
    pub fn log_bytes(&self) -> &[u8] {
        self.log.as_bytes()
    }

    pub fn release_locality(&mut self) {
        if let Err(error) = self.tpm.transport().relinquish_locality() {
            crate::hvprintln!("tpm: releasing locality 2: {error}");
        }
    }

    fn events(&self) -> u32 {
        slipway_measure::log::EventLog::parse(self.log.as_bytes())
            .map(|log| log.events().count() as u32)
            .unwrap_or(0)
    }
}

/// Lower-case hex of a byte string.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
