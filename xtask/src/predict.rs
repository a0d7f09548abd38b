//! `cargo xtask predict`: the expected PCR17-21 values and the exact expected event log of a
//! bundle, from its files alone (`docs/measurement.md` section 7).
//!
//! The events domB and the hypervisor's dispatcher produce (launch configuration, policy, boot
//! modules, policy decisions, and the PCR21 build records) are not re-derived here: domB's real
//! launch (`slipway_domb_core::launch::run`) runs against hv-core's real hypercall dispatcher
//! (`slipway_hv_core::hypercall::dispatch`) on the host, over a platform that holds the bundle's
//! module bytes and writes every measure request and every build record into a
//! `slipway-measure` log. It is the code the machine runs, so a difference in a real run is a
//! real difference, never a re-implementation drifting.
//!
//! The hypervisor's own events around it are not re-derived either: the hypervisor's measurement
//! sequence (`slipway_hv_core::measurement`: PCR17's emulated-launch event, the launch kind, the
//! capped banks, the hypervisor command line, the domB image bound to `domb`; domB's events; at
//! hand-off one DOMAIN_BUILD per domain in creation order and the separators) runs here over a
//! TPM that only records. Only the launch region (from the MLE header, `docs/architecture.md`)
//! and the bundle's files are inputs.

use std::fmt::Write as _;
use std::path::PathBuf;

use slipway_domb_core::launch::{self, BootFacts, Hypervisor, LaunchError};
use slipway_domb_core::planner::ModuleData;
use slipway_hv_core::addr::PhysRange;
use slipway_hv_core::boot_report::BootReport;
use slipway_hv_core::domain::{Domain, DomainTable};
use slipway_hv_core::hypercall::{self, BootModule, LaunchInfo, Outcome, Platform};
use slipway_hv_core::measurement::{LaunchInputs, LaunchRegion, Measurement, PcrExtend, Sealed};
use slipway_hv_core::recovery::{self, BuilderEnd};
use slipway_measure::events::LaunchKind as EventLaunchKind;
use slipway_measure::events::{BootRecordStatus, BootStateRecord, SlotChoice};
use slipway_measure::{
    BankSet, Digest, DigestList, EventLog, HashAlg, InitialState, MultiHasher, PcrBanks,
};
use slipway_protocol::HYPERCALL_BUFFER_SIZE;
use slipway_protocol::boot_modules::slots;
use slipway_protocol::v1::{self, DomainId, LaunchKind, ModuleName, Request, ResponseOk, TpmAlgId};

/// The PCRs a prediction covers.
pub const PREDICTED_PCRS: [u32; 5] = [17, 18, 19, 20, 21];
/// Bit mask of [`PREDICTED_PCRS`].
pub const PREDICTED_PCR_MASK: u32 = slipway_tpm::PcrMask::QUOTE.bits();
/// Bit mask of the PCRs Slipway's own events go into (19-21).
pub const SLIPWAY_PCR_MASK: u32 = (1 << slipway_measure::events::PCR_BUILD_INPUTS)
    | (1 << slipway_measure::events::PCR_BOOT_MODULES)
    | (1 << slipway_measure::events::PCR_DOMAIN_BUILDS);

/// Size of the log buffer a prediction is written into (the hypervisor's log is smaller).
const LOG_CAPACITY: usize = 1 << 20;
/// Memory domB gets in the host run: the hypervisor's default (it does not matter to any
/// record: domB's own memory is never measured, only the builds it asks for).
const DOMB_MEMORY: u64 = slipway_hv_core::domain::BOOT_DOMAIN_DEFAULT_MEMORY;
/// Where the host run pretends modules lie (only their sizes matter to the dispatcher's checks).
const MODULE_BASE: u64 = 0x1000_0000;
/// Where the host run pretends modules are mapped in domB.
const DOMB_MODULE_BASE: u64 = 0x8000_0000;

/// The magic of the hypervisor's MLE-style header (`docs/architecture.md`).
pub use slipway_protocol::platform::MLE_HEADER_MAGIC as MLE_MAGIC;
/// The header lies in the first 32 KiB of the image (with the multiboot2 header).
use slipway_protocol::platform::{
    MLE_HEADER_REGION_END, MLE_HEADER_REGION_START, MLE_HEADER_SEARCH_LIMIT as MLE_SEARCH_LIMIT,
    MLE_HEADER_SIZE, MLE_HEADER_VERSION,
};

/// Which launch the prediction is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictedLaunch {
    /// The emulated dynamic launch under QEMU + swtpm: PCR17-21 from the bundle alone.
    Emulated,
    /// Intel TXT. Without a SINIT ACM (`--sinit`), PCR17/18 are the platform's and SINIT's golden
    /// values and only the Slipway events (PCR19-21) are predicted. With one, SINIT's events
    /// are computed as SINIT writes them in the TPM 2.0 details/authorities mapping
    /// (`crate::txt::sinit::sinit_measurement`) for the platform values of
    /// [`PlatformMeasurements::SIMULATED`] (no BIOS ACM data, S-CRTM status 0, no LCP, no STM),
    /// which a given SINIT version and platform policy decide: confirm on hardware.
    Txt,
    /// SIMULATED Intel TXT under QEMU + swtpm: the harness's simulated SINIT over the bundle's
    /// synthetic `sinit` module; PCR17-21 from the bundle alone. Never a hardware launch.
    TxtSimulated,
    /// AMD SKINIT: as for TXT, only the Slipway events.
    Skinit,
}

impl PredictedLaunch {
    fn event_kind(self) -> EventLaunchKind {
        match self {
            PredictedLaunch::Emulated => EventLaunchKind::Emulated,
            PredictedLaunch::Txt => EventLaunchKind::IntelTxt,
            PredictedLaunch::Skinit => EventLaunchKind::AmdSkinit,
            PredictedLaunch::TxtSimulated => EventLaunchKind::TxtSimulated,
        }
    }
    fn protocol_kind(self) -> LaunchKind {
        match self {
            PredictedLaunch::Emulated => LaunchKind::Emulated,
            PredictedLaunch::Txt => LaunchKind::Txt,
            PredictedLaunch::Skinit => LaunchKind::Skinit,
            PredictedLaunch::TxtSimulated => LaunchKind::TxtSimulated,
        }
    }

    /// Every launch kind, in the order `--launch` lists them.
    pub const ALL: [PredictedLaunch; 4] = [
        PredictedLaunch::Emulated,
        PredictedLaunch::Txt,
        PredictedLaunch::TxtSimulated,
        PredictedLaunch::Skinit,
    ];

    /// The name `--launch` takes and reports use.
    pub fn name(self) -> &'static str {
        match self {
            PredictedLaunch::Emulated => "emulated",
            PredictedLaunch::Txt => "txt",
            PredictedLaunch::Skinit => "skinit",
            PredictedLaunch::TxtSimulated => "txt-simulated",
        }
    }

    /// The launch a log's first PCR19 event names, if it is one `predict` knows.
    pub fn from_event_kind(kind: EventLaunchKind) -> Option<PredictedLaunch> {
        Some(match kind {
            EventLaunchKind::Emulated => PredictedLaunch::Emulated,
            EventLaunchKind::IntelTxt => PredictedLaunch::Txt,
            EventLaunchKind::AmdSkinit => PredictedLaunch::Skinit,
            EventLaunchKind::TxtSimulated => PredictedLaunch::TxtSimulated,
            _ => return None,
        })
    }
}

/// `--launch` of `predict` takes every kind by its [`PredictedLaunch::name`].
impl clap::ValueEnum for PredictedLaunch {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// What a prediction is made from: the bundle's files, in boot order.
#[derive(Clone, Debug)]
pub struct BundleInputs {
    /// The hypervisor ELF file, as GRUB loads it.
    pub hypervisor_elf: Vec<u8>,
    /// The hypervisor command line as the multiboot2 command-line tag carries it (GRUB passes
    /// the words after the image path, joined by spaces).
    pub hypervisor_cmdline: String,
    /// Every boot module, in multiboot2 order: (name, bytes).
    pub modules: Vec<(String, Vec<u8>)>,
    /// The words after the recovery module's name on its command line (bundle.toml `args`):
    /// the hypervisor passes them to the recovery domain (its start info, recorded in PCR21).
    pub recovery_arguments: Option<String>,
    /// The SINIT ACM of a hardware TXT prediction (`predict --sinit FILE`); the simulated TXT
    /// launch uses the bundle's `sinit` module instead.
    pub sinit_acm: Option<Vec<u8>>,
    /// The boot state the hypervisor measures from its TPM NV boot record: it is the machine's,
    /// not the bundle's. [`bundle_inputs`] sets a fresh TPM's first boot
    /// ([`first_boot_state`]); `predict --boot-state` and `verify` (from the run's own log,
    /// [`boot_state_of_log`]) give another.
    pub boot_state: BootStateRecord,
}

/// The boot state of a machine's first boot on a fresh TPM: the record is created, this boot is
/// attempt 1 of the slot the command line requests, and no slot is known good.
pub fn first_boot_state(hypervisor_cmdline: &str) -> BootStateRecord {
    BootStateRecord {
        status: BootRecordStatus::Created,
        requested_slot: slots::requested(hypervisor_cmdline).unwrap_or(slots::DEFAULT_SLOT),
        attempts: 1,
        last_known_good: None,
    }
}

/// The boot state a log records (its `EV_SLIPWAY_BOOT_STATE` event in PCR19), if any.
pub fn boot_state_of_log(log: &[u8]) -> Option<BootStateRecord> {
    let log = EventLog::parse(log).ok()?;
    log.events().flatten().find_map(|event| {
        match slipway_measure::events::SlipwayEvent::decode(event.event_type, event.data) {
            Ok(Some(slipway_measure::events::SlipwayEvent::BootState(state)))
                if event.pcr == 19 =>
            {
                Some(state)
            }
            _ => None,
        }
    })
}

/// Parses `predict --boot-state`: `STATUS:ATTEMPTS:KNOWN_GOOD` (`created`, `counted` or
/// `replaced-corrupt`; a count; a slot letter or `none`), or `unavailable`. The requested slot is
/// the command line's.
pub fn parse_boot_state(text: &str, hypervisor_cmdline: &str) -> Result<BootStateRecord, String> {
    let requested_slot = slots::requested(hypervisor_cmdline).map_err(|e| e.to_string())?;
    if text == "unavailable" {
        return Ok(BootStateRecord {
            status: BootRecordStatus::Unavailable,
            requested_slot,
            attempts: 0,
            last_known_good: None,
        });
    }
    let usage = || {
        format!(
            "--boot-state takes STATUS:ATTEMPTS:KNOWN_GOOD (e.g. counted:3:a, created:1:none) or \
             unavailable (got `{text}`)"
        )
    };
    let [status, attempts, good] = text.split(':').collect::<Vec<_>>()[..] else {
        return Err(usage());
    };
    let status = match status {
        "created" => BootRecordStatus::Created,
        "counted" => BootRecordStatus::Counted,
        "replaced-corrupt" => BootRecordStatus::ReplacedCorrupt,
        _ => return Err(usage()),
    };
    let attempts: u32 = attempts.parse().map_err(|_| usage())?;
    if attempts == 0 {
        return Err("--boot-state: a counted boot is attempt 1 or more".into());
    }
    let last_known_good = match good {
        "none" => None,
        name => Some(slots::from_name(name).ok_or_else(usage)?),
    };
    Ok(BootStateRecord {
        status,
        requested_slot,
        attempts,
        last_known_good,
    })
}

/// The region the hypervisor's MLE header declares, with its bytes as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasuredRegion {
    /// Physical start.
    pub start: u64,
    /// The region's bytes (`end - start` of them).
    pub bytes: Vec<u8>,
}

/// Why a prediction cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// the hypervisor image is not a valid ELF64 file: {0}
    #[error("the hypervisor image is not a valid ELF64 file: {0}")]
    Elf(String),
    /// the hypervisor declares no measured region (no `SLWYMLE` header in its first 32 KiB)
    #[error(
        "the hypervisor declares no measured region (no `SLWYMLE\\0` header in its first 32 KiB of loaded bytes)"
    )]
    NoMleHeader,
    /// the MLE header is malformed
    #[error("the hypervisor's MLE header is malformed: {0}")]
    BadMleHeader(String),
    /// no bank to predict
    #[error("no bank to predict (give at least sha256)")]
    NoBanks,
    /// a bank Slipway cannot hash
    #[error("bank {0} cannot be predicted: {1}")]
    Bank(String, String),
    /// the event log cannot be written
    #[error("writing the expected log failed: {0:?}")]
    Log(slipway_measure::Error),
    /// the bundle has no `domb` module
    #[error("the bundle has no module named `domb`")]
    NoDomb,
    /// a module name is not valid for the hypervisor
    #[error("module name `{0}` is refused by the hypervisor (1-63 bytes)")]
    ModuleName(String),
    /// a dispatcher refusal the machine would make too
    #[error("hv-core refused a request of domB's launch: {0}")]
    Dispatcher(String),
    /// the SINIT ACM for a TXT prediction is missing or refused
    #[error("TXT prediction: {0}")]
    Sinit(String),
    /// the recovery options of the command line are refused (as the hypervisor refuses the boot)
    #[error("the hypervisor refuses the boot: {0}")]
    Recovery(String),
}

impl From<slipway_measure::Error> for PredictError {
    fn from(error: slipway_measure::Error) -> Self {
        PredictError::Log(error)
    }
}

/// A prediction: the expected log and the PCR values it replays to.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// The launch predicted.
    pub launch: PredictedLaunch,
    /// The banks predicted, in log order.
    pub banks: BankSet,
    /// The exact expected event-log bytes.
    pub log: Vec<u8>,
    /// The log replayed from the post-launch state (PCR17-22 = 0).
    pub pcrs: PcrBanks,
    /// domB's console output during the host run (its decisions are printed there).
    pub domb_output: String,
    /// Whether PCR17/18 are predicted (emulated and simulated TXT launches, and TXT with a
    /// SINIT ACM); otherwise only PCR19-21 are (the platform's golden values come first).
    pub launch_pcrs_predicted: bool,
}

impl Prediction {
    /// `PCR<n> <alg> <hex>` lines: PCR17-21 for the emulated launch, PCR19-21 for hardware
    /// launches (the Slipway events replayed from 0).
    pub fn pcr_lines(&self) -> String {
        let mut out = String::new();
        let pcrs: &[u32] = if self.launch_pcrs_predicted {
            &PREDICTED_PCRS
        } else {
            &PREDICTED_PCRS[2..]
        };
        for alg in self.banks.supported() {
            for &pcr in pcrs {
                let value = self
                    .pcrs
                    .value(pcr, alg)
                    .ok()
                    .flatten()
                    .expect("a predicted bank is tracked");
                let _ = writeln!(out, "PCR{pcr} {} {value}", alg.name());
            }
        }
        out
    }
}

/// Parses a bank list such as `sha1,sha256`.
pub fn parse_banks(text: &str) -> Result<BankSet, PredictError> {
    let mut set = BankSet::empty();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let alg = HashAlg::from_name(name).ok_or_else(|| {
            PredictError::Bank(name.into(), "unknown (sha1, sha256, sha384, sha512)".into())
        })?;
        set.push(alg.into())
            .map_err(|e| PredictError::Bank(name.into(), format!("{e:?}")))?;
    }
    if set.is_empty() {
        return Err(PredictError::NoBanks);
    }
    Ok(set)
}

/// Reconstructs the measured region the hypervisor's MLE header declares: the header is found
/// in the first 32 KiB of the loaded image, and the region's bytes are the `PT_LOAD` segments'
/// file bytes at their physical addresses, zero-filled in gaps and beyond each segment's file
/// size (exactly what is in memory when the launch is requested).
pub fn measured_region(elf_bytes: &[u8]) -> Result<MeasuredRegion, PredictError> {
    use elf::ElfBytes;
    use elf::abi::PT_LOAD;
    use elf::endian::AnyEndian;

    let file = ElfBytes::<AnyEndian>::minimal_parse(elf_bytes)
        .map_err(|e| PredictError::Elf(e.to_string()))?;
    let segments = file
        .segments()
        .ok_or_else(|| PredictError::Elf("no program headers".into()))?;
    let loads: Vec<_> = segments.iter().filter(|p| p.p_type == PT_LOAD).collect();
    // The image starts at the lowest segment with file bytes (a segment that only reserves
    // memory, such as the hypervisor's 1 MiB below the image, holds no header).
    let image_start = loads
        .iter()
        .filter(|p| p.p_filesz > 0)
        .map(|p| p.p_paddr)
        .min()
        .ok_or_else(|| PredictError::Elf("no PT_LOAD segment".into()))?;
    // The loaded image from its lowest physical address, as far as the search needs.
    let load = |start: u64, len: usize| -> Result<Vec<u8>, PredictError> {
        let mut out = vec![0u8; len];
        let end = start + len as u64;
        for p in &loads {
            let seg_start = p.p_paddr;
            let seg_file_end = p.p_paddr + p.p_filesz;
            let from = seg_start.max(start);
            let to = seg_file_end.min(end);
            if from >= to {
                continue;
            }
            let file_from = (p.p_offset + (from - seg_start)) as usize;
            let file_to = file_from + (to - from) as usize;
            let src = elf_bytes.get(file_from..file_to).ok_or_else(|| {
                PredictError::Elf(format!("segment at {seg_start:#x} runs past the file"))
            })?;
            out[(from - start) as usize..(to - start) as usize].copy_from_slice(src);
        }
        Ok(out)
    };
    let head = load(image_start, MLE_SEARCH_LIMIT)?;
    let at = head
        .windows(MLE_MAGIC.len())
        .position(|w| w == MLE_MAGIC)
        .ok_or(PredictError::NoMleHeader)?;
    let header = head
        .get(at..at + MLE_HEADER_SIZE)
        .ok_or_else(|| PredictError::BadMleHeader("truncated at the 32 KiB limit".into()))?;
    let u32_at = |o: usize| u32::from_le_bytes(header[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().expect("8 bytes"));
    let (version, size, start, end) = (
        u32_at(8),
        u32_at(12),
        u64_at(MLE_HEADER_REGION_START),
        u64_at(MLE_HEADER_REGION_END),
    );
    if version != MLE_HEADER_VERSION || size as usize != MLE_HEADER_SIZE {
        return Err(PredictError::BadMleHeader(format!(
            "version {version}, size {size} (expected {MLE_HEADER_VERSION}, {MLE_HEADER_SIZE})"
        )));
    }
    if end <= start || end - start > 256 << 20 {
        return Err(PredictError::BadMleHeader(format!(
            "region [{start:#x}, {end:#x}) is empty or larger than 256 MiB"
        )));
    }
    Ok(MeasuredRegion {
        start,
        bytes: load(start, (end - start) as usize)?,
    })
}

/// The TPM of the host run: every extend succeeds and changes nothing (the PCR values are the
/// log's replay, which is what a real run's quote is checked against).
struct RecordingTpm;

impl PcrExtend for RecordingTpm {
    type Error = std::convert::Infallible;
    fn pcr_extend(&mut self, _: u8, _: &DigestList) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The platform of the host run: no domain memory (nothing the records hold depends on it:
/// writes are recorded with the SHA-256 of the request's bytes, module copies by module, range
/// and the SHA-256 of the copied bytes, which the hypervisor computes after each copy, as this
/// platform does from the module's bytes), and every measurement through the hypervisor's own
/// measurement sequence.
struct PredictPlatform<'log, 'm> {
    measurement: Measurement<'log, RecordingTpm>,
    modules: &'m [(String, Vec<u8>)],
    last_populated: Option<(DomainId, u64, u64, [u8; 32])>,
    error: Option<PredictError>,
    boot: BootReport,
}

fn measure_digests(digests: &[v1::Digest]) -> Result<DigestList, slipway_measure::Error> {
    let mut list = DigestList::new();
    for digest in digests {
        list.push(Digest::new(digest.alg.into(), &digest.bytes)?)?;
    }
    Ok(list)
}

impl Platform for PredictPlatform<'_, '_> {
    fn create_domain(
        &mut self,
        _: DomainId,
        _: u64,
        _: u16,
        _: v1::Capabilities,
    ) -> Result<(), v1::Error> {
        Ok(())
    }
    fn populate_from_module(
        &mut self,
        id: DomainId,
        module: &BootModule,
        offset: u64,
        length: u64,
        gpa: u64,
    ) -> Result<(), v1::Error> {
        // The dispatcher checked the range against the module's size.
        let bytes = self
            .modules
            .iter()
            .find(|(name, _)| name == module.name.as_str())
            .and_then(|(_, bytes)| bytes.get(offset as usize..(offset + length) as usize))
            .ok_or(v1::Error::RangeOutsideModule)?;
        let digest = slipway_measure::hash::hash(HashAlg::Sha256, bytes);
        let sha256 = digest.as_bytes().try_into().expect("32 bytes");
        self.last_populated = Some((id, gpa, length, sha256));
        Ok(())
    }
    fn populated_sha256(&mut self, id: DomainId, gpa: u64, length: u64) -> Option<[u8; 32]> {
        match self.last_populated.take() {
            Some((i, g, l, sha256)) if (i, g, l) == (id, gpa, length) => Some(sha256),
            _ => None,
        }
    }
    fn write_memory(&mut self, _: DomainId, _: u64, _: &[u8]) -> Result<(), v1::Error> {
        Ok(())
    }
    fn console_write(&mut self, _: DomainId, _: &[u8]) {}
    fn measure(
        &mut self,
        _: DomainId,
        pcr: u8,
        event_type: u32,
        digests: &[v1::Digest],
        data: &[u8],
    ) -> Result<u32, v1::Error> {
        let list = match measure_digests(digests) {
            Ok(list) => list,
            Err(e) => {
                self.error.get_or_insert(PredictError::Log(e));
                return Err(v1::Error::DigestLengthWrong);
            }
        };
        let result = self.measurement.measure(pcr, event_type, &list, data);
        if let Err(error) = result {
            self.error
                .get_or_insert(PredictError::Dispatcher(format!("measure: {error}")));
        }
        result
    }
    fn slot_choice(&mut self, choice: SlotChoice) -> Result<(), v1::Error> {
        self.boot.slot_choice(choice)
    }
    fn seal_measurements(&mut self, planned: &[&Domain]) -> Result<(), v1::Error> {
        match self.measurement.seal(planned) {
            Ok(Sealed::Complete) => Ok(()),
            Ok(Sealed::Failed(failure)) => {
                self.error
                    .get_or_insert(PredictError::Dispatcher(format!("measurement: {failure}")));
                Err(v1::Error::MeasurementFailed)
            }
            Err(error) => {
                self.error
                    .get_or_insert(PredictError::Dispatcher(format!("hand-off: {error}")));
                Err(error)
            }
        }
    }
}

struct HostHypervisor<'a, 'log> {
    table: DomainTable,
    launch: LaunchInfo<'a>,
    platform: PredictPlatform<'log, 'a>,
    domb: DomainId,
    handed_off: bool,
}

const HANDED_OFF: &str = "handed off";

impl Hypervisor for HostHypervisor<'_, '_> {
    type Error = String;
    fn call(&mut self, request: &Request) -> Result<ResponseOk, String> {
        let mut bytes = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = v1::encode_request(request, &mut bytes).map_err(|e| format!("{e:?}"))?;
        let mut response = [0u8; HYPERCALL_BUFFER_SIZE];
        let reply = hypercall::dispatch(
            &mut self.table,
            &self.launch,
            &mut self.platform,
            self.domb,
            &bytes[..len],
            &mut response,
        )
        .map_err(|e| format!("{e:?}"))?;
        if let Outcome::HandedOff { .. } = reply.outcome {
            self.handed_off = true;
            return Err(HANDED_OFF.into());
        }
        let answer =
            v1::decode_response(&response[..reply.response_len]).map_err(|e| format!("{e:?}"))?;
        answer.map_err(|e| e.message().to_string())
    }
}

/// Predicts the log and PCR values of `inputs` for `banks` (in the TPM's order: the log header
/// lists them in this order).
pub fn predict(
    inputs: &BundleInputs,
    banks: &BankSet,
    launch_kind: PredictedLaunch,
) -> Result<Prediction, PredictError> {
    if banks.is_empty() {
        return Err(PredictError::NoBanks);
    }
    if let Some(bank) = banks.unsupported().next() {
        return Err(PredictError::Bank(
            format!("{:#06x}", bank.alg.0),
            "Slipway caps it; a capped bank is no evidence and is not predicted".into(),
        ));
    }
    let domb_image = &inputs
        .modules
        .iter()
        .find(|(name, _)| name == launch::DOMB_MODULE)
        .ok_or(PredictError::NoDomb)?
        .1;
    let mut buf = vec![0u8; LOG_CAPACITY];
    let sinit_acm: Option<&[u8]> = match launch_kind {
        PredictedLaunch::TxtSimulated => Some(
            &inputs
                .modules
                .iter()
                .find(|(name, _)| name == SINIT_MODULE)
                .ok_or_else(|| {
                    PredictError::Sinit(format!(
                        "the bundle has no `{SINIT_MODULE}` module (the simulated SINIT)"
                    ))
                })?
                .1,
        ),
        PredictedLaunch::Txt => inputs.sinit_acm.as_deref(),
        _ => None,
    };

    // The hypervisor's events before domB runs: its own measurement sequence.
    let region = match launch_kind {
        PredictedLaunch::Emulated => {
            let region = measured_region(&inputs.hypervisor_elf)?;
            let mut hasher = MultiHasher::new(banks);
            hasher.update(&region.bytes);
            Some(LaunchRegion {
                start: region.start,
                size: region.bytes.len() as u64,
                digests: hasher.finalize(),
            })
        }
        PredictedLaunch::Txt | PredictedLaunch::TxtSimulated | PredictedLaunch::Skinit => None,
    };
    let hv_inputs = LaunchInputs {
        kind: launch_kind.event_kind(),
        region,
        cmdline: inputs.hypervisor_cmdline.as_bytes(),
        domb_image,
        boot_state: Some(inputs.boot_state),
    };
    let measurement = match sinit_acm {
        None => Measurement::start(RecordingTpm, *banks, &mut buf, &hv_inputs)?,
        Some(acm) => {
            // SINIT's log first (the container Slipway starts, SINIT's events), then the
            // hypervisor's sequence resumed after them, as on the machine.
            let writer = sinit_log(&mut buf, banks, acm, &inputs.hypervisor_elf, launch_kind)?;
            Measurement::resume(RecordingTpm, *banks, writer, &hv_inputs)?
        }
    };
    let mut measurement = measurement;
    // The recovery module `recovery=` names, measured right after domB's image, as the
    // hypervisor does (the same options parser, the same measurement sequence).
    let recovery_options = recovery::parse_options(inputs.hypervisor_cmdline.as_bytes())
        .map_err(|e| PredictError::Recovery(e.to_string()))?;
    let recovery_module = match recovery_options.module {
        Some(name) => {
            let index = inputs
                .modules
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| {
                    PredictError::Recovery(recovery::OptionError::NoSuchModule(name).to_string())
                })?;
            measurement
                .measure_recovery_image(name, &inputs.modules[index].1)
                .map_err(|f| PredictError::Dispatcher(format!("recovery image: {f}")))?;
            Some(index)
        }
        None => None,
    };
    if let Some(failure) = measurement.failure() {
        return Err(PredictError::Dispatcher(format!(
            "the hypervisor's own measurements: {failure}"
        )));
    }

    // domB's launch against hv-core's dispatcher.
    let mut modules = Vec::new();
    let mut next = MODULE_BASE;
    for (name, bytes) in &inputs.modules {
        let module_name =
            ModuleName::new(name).map_err(|_| PredictError::ModuleName(name.clone()))?;
        let start = next;
        next = (start + bytes.len() as u64 + 0xfff) & !0xfff;
        modules.push(BootModule {
            name: module_name,
            phys: PhysRange::new(start, start + bytes.len() as u64),
            domb_gpa: DOMB_MODULE_BASE + (start - MODULE_BASE),
        });
    }
    let alg_ids: Vec<TpmAlgId> = banks.iter().map(|b| b.alg.into()).collect();
    let mut table = DomainTable::new();
    let domb = table
        .create_boot_domain(DOMB_MEMORY, 1)
        .map_err(|e| PredictError::Dispatcher(e.message().into()))?;
    let mut hv = HostHypervisor {
        table,
        launch: LaunchInfo {
            launch_kind: launch_kind.protocol_kind(),
            active_banks: &alg_ids,
            modules: &modules,
        },
        platform: PredictPlatform {
            measurement,
            modules: &inputs.modules,
            last_populated: None,
            error: None,
            boot: BootReport::new(inputs.boot_state.requested_slot, None),
        },
        domb,
        handed_off: false,
    };
    let module_data: Vec<ModuleData<'_>> = inputs
        .modules
        .iter()
        .enumerate()
        .map(|(index, (name, bytes))| ModuleData {
            name,
            index: index as u16,
            bytes,
        })
        .collect();
    let state = inputs.boot_state;
    let boot = BootFacts {
        launch_kind: launch_kind.protocol_kind(),
        active_banks: &alg_ids,
        modules: &module_data,
        boot_state: v1::BootState {
            requested_slot: state.requested_slot,
            attempts: (state.status != BootRecordStatus::Unavailable).then_some(state.attempts),
            last_known_good: state.last_known_good,
        },
    };
    let mut domb_output = String::new();
    let error = launch::run(&boot, &mut hv, &mut domb_output);
    if let Some(error) = hv.platform.error.take() {
        return Err(error);
    }
    if !(hv.handed_off && error == LaunchError::HandOff(HANDED_OFF.into())) {
        // domB stops without handing off: the hypervisor's recovery, as it performs it.
        predict_recovery(&mut hv, &error, inputs, recovery_module, &mut domb_output)?;
    }

    // The hand-off sealed the log (build records and separators).
    let bytes = hv.platform.measurement.log_bytes().to_vec();
    let pcrs = EventLog::parse(&bytes)?.replay(InitialState::DynamicLaunch)?;
    Ok(Prediction {
        launch: launch_kind,
        banks: *banks,
        log: bytes,
        pcrs,
        domb_output,
        launch_pcrs_predicted: launch_kind == PredictedLaunch::Emulated || sinit_acm.is_some(),
    })
}

/// domB stopped with `error` before hand-off: how the machine ends domB (its exit code, or the
/// crash or watchdog its test fault provokes), the hypervisor's recovery decision, and the
/// recovery domain's build and the separators (or the separators alone when it halts), through
/// hv-core's recovery code as the hypervisor runs it.
fn predict_recovery(
    hv: &mut HostHypervisor<'_, '_>,
    error: &LaunchError,
    inputs: &BundleInputs,
    module: Option<usize>,
    output: &mut String,
) -> Result<(), PredictError> {
    use slipway_domb_core::config::TestFault;
    use slipway_hv_core::domain::StopReason;
    let end = match error {
        LaunchError::TestFault(TestFault::Panic) => {
            BuilderEnd::Exited(slipway_protocol::recovery::BuilderExit::Failed.code())
        }
        LaunchError::TestFault(TestFault::Crash) => BuilderEnd::Crashed(StopReason::TripleFault),
        LaunchError::TestFault(TestFault::Hang) => BuilderEnd::Hung,
        other => BuilderEnd::Exited(other.exit().code()),
    };
    let marked = match end {
        BuilderEnd::Exited(code) => hv.table.mark_shut_down(hv.domb, code),
        BuilderEnd::Crashed(reason) => hv.table.mark_crashed(hv.domb, reason),
        BuilderEnd::Hung => hv.table.mark_crashed(hv.domb, StopReason::WatchdogExpired),
    };
    marked.map_err(|e| PredictError::Dispatcher(format!("domB's end: {e:?}")))?;
    let module = module.map(|index| (index, &inputs.modules[index]));
    let decision = recovery::decide(end, module.map(|(_, (name, _))| name.as_str()));
    let _ = writeln!(
        output,
        "hypervisor: RECOVERY: {end}: reason {}, action {}",
        decision.reason.name(),
        decision.action.name()
    );
    let m = &mut hv.platform.measurement;
    m.record_recovery_decision(&decision)
        .map_err(|e| PredictError::Dispatcher(format!("recovery decision: {e}")))?;
    let built = match module {
        Some((index, (name, image))) => {
            let arguments = inputs.recovery_arguments.as_deref().unwrap_or_default();
            match recovery::plan(image, decision.reason, arguments) {
                Ok(plan) => {
                    let name = ModuleName::new(name)
                        .map_err(|_| PredictError::ModuleName(name.clone()))?;
                    Some(
                        recovery::insert_plan(&mut hv.table, &plan, index as u16, &name, image)
                            .map_err(|e| PredictError::Dispatcher(format!("recovery: {e}")))?,
                    )
                }
                Err(why) => {
                    let _ = writeln!(output, "hypervisor: RECOVERY: fixed plan: {why}; halting");
                    None
                }
            }
        }
        None => None,
    };
    let planned: Vec<&Domain> = built.and_then(|id| hv.table.get(id)).into_iter().collect();
    match m.seal(&planned) {
        Ok(Sealed::Complete) => Ok(()),
        Ok(Sealed::Failed(failure)) => {
            Err(PredictError::Dispatcher(format!("measurement: {failure}")))
        }
        Err(error) => Err(PredictError::Dispatcher(format!("recovery seal: {error}"))),
    }
}

/// The boot module that carries the SINIT ACM.
pub use slipway_protocol::boot_modules::SINIT_MODULE;

/// SINIT's part of a TXT launch's log: the container's header (Slipway's, for `banks`) and
/// SINIT's events for `acm` and the hypervisor's MLE (the region its MLE header declares, which
/// its MLE page tables map), computed as the simulated SINIT computes them.
fn sinit_log<'b>(
    buf: &'b mut [u8],
    banks: &BankSet,
    acm: &[u8],
    elf: &[u8],
    launch: PredictedLaunch,
) -> Result<slipway_measure::log::LogWriter<'b>, PredictError> {
    use crate::txt::sinit::{PlatformMeasurements, append_sinit_events, sinit_measurement};
    use slipway_hv_core::txt::acm;
    let simulated = acm::is_simulated(acm);
    match launch {
        PredictedLaunch::TxtSimulated if !simulated => {
            return Err(PredictError::Sinit(
                "the `sinit` module is not the synthetic SINIT the simulation runs".into(),
            ));
        }
        PredictedLaunch::Txt if simulated => {
            return Err(PredictError::Sinit(
                "--sinit is the synthetic, unsigned SINIT of the simulation, not an Intel ACM                  (predict --launch txt-simulated for it)"
                    .into(),
            ));
        }
        _ => {}
    }
    let info = acm::parse_sinit(acm).map_err(|e| PredictError::Sinit(e.to_string()))?;
    let region = measured_region(elf)?;
    let mut hasher = MultiHasher::new(banks);
    hasher.update(&region.bytes);
    let measurement = sinit_measurement(
        banks,
        &acm[..info.size as usize],
        &acm[info.key_offset..info.key_offset + info.key_len],
        &hasher.finalize(),
        slipway_hv_core::txt::layout::SLIPWAY_OS_SINIT_CAPABILITIES,
        &PlatformMeasurements::SIMULATED,
    );
    let mut writer = slipway_measure::log::LogWriter::new(
        buf,
        &slipway_measure::log::LogHeader::slipway(*banks),
    )?;
    append_sinit_events(&mut writer, &measurement)
        .map_err(|rule| PredictError::Sinit(rule.to_string()))?;
    Ok(writer)
}

/// Options of `cargo xtask predict` (a part of [`crate::cli::Cli`]).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct PredictArgs {
    /// The bundle (images/BUNDLE)
    #[arg(default_value = crate::bundle::DEFAULT_BUNDLE)]
    pub bundle: String,
    /// The banks to predict, comma-separated [default: sha1,sha256,sha384,sha512]
    #[arg(long, value_name = "sha1,sha256,..", value_parser = parse_banks)]
    pub banks: Option<BankSet>,
    /// Where to write the expected event log [default: <bundle output>/expected-<launch>.log]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The launch kind
    #[arg(long, value_enum, default_value_t = PredictedLaunch::Emulated)]
    pub launch: PredictedLaunch,
    /// The SINIT ACM (with --launch txt): PCR17/18 then predicted too, as SINIT extends them
    #[arg(long, value_name = "ACM")]
    pub sinit: Option<PathBuf>,
    /// The boot state counted in the TPM's NV record, STATUS:ATTEMPTS:KNOWN_GOOD (e.g.
    /// counted:1:a) [default: a fresh TPM's first boot]
    // Parsed by `parse_boot_state` once the bundle (its hypervisor command line) is read.
    #[arg(long = "boot-state", value_name = "STATUS:ATTEMPTS:KNOWN_GOOD")]
    pub boot_state: Option<String>,
    /// Take the boot state from this event log's EV_SLIPWAY_BOOT_STATE event
    #[arg(
        long = "boot-state-from-log",
        value_name = "FILE",
        conflicts_with = "boot_state"
    )]
    pub boot_state_log: Option<PathBuf>,
}

impl PredictArgs {
    /// The rule between options clap cannot state (it depends on `--launch`'s value).
    pub fn check(&self) -> Result<(), String> {
        if self.sinit.is_some() && self.launch != PredictedLaunch::Txt {
            return Err(format!(
                "--sinit goes with --launch txt (not --launch {})",
                self.launch.name()
            ));
        }
        Ok(())
    }
}

/// Reads a built bundle's inputs: the files GRUB loads, as shipped (stripped).
pub fn bundle_inputs(bundle: &crate::builder::BuiltBundle) -> Result<BundleInputs, std::io::Error> {
    let hypervisor = &bundle.hypervisor.path;
    let mut modules = Vec::new();
    for module in &bundle.modules {
        modules.push((module.name.clone(), std::fs::read(&module.file.path)?));
    }
    let hypervisor_cmdline = bundle.manifest.hypervisor_cmdline.join(" ");
    let recovery_arguments = recovery::parse_options(hypervisor_cmdline.as_bytes())
        .ok()
        .and_then(|options| options.module)
        .and_then(|name| bundle.manifest.modules.iter().find(|m| m.name == name))
        .map(|module| module.args.join(" "));
    Ok(BundleInputs {
        recovery_arguments,
        sinit_acm: None,
        hypervisor_elf: std::fs::read(hypervisor)?,
        boot_state: first_boot_state(&hypervisor_cmdline),
        hypervisor_cmdline,
        modules,
    })
}

#[cfg(test)]
mod tests;

/// `cargo xtask predict`: builds the bundle, predicts, prints the PCR lines and writes the log.
pub fn predict_command(ws: &crate::Workspace, args: &PredictArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |message: String| {
        eprintln!("xtask predict: error: {message}");
        ExitCode::FAILURE
    };
    let banks = args.banks.unwrap_or_else(BankSet::all_supported);
    let bundle = match crate::builder::build_bundle(ws, &args.bundle) {
        Ok(bundle) => bundle,
        Err(e) => return fail(e.to_string()),
    };
    let mut inputs = match bundle_inputs(&bundle) {
        Ok(inputs) => inputs,
        Err(e) => return fail(format!("cannot read the bundle's files: {e}")),
    };
    if let Err(e) = args.check() {
        return fail(e);
    }
    match (&args.boot_state, &args.boot_state_log) {
        (Some(_), Some(_)) => {
            return fail("give --boot-state or --boot-state-from-log, not both".into());
        }
        (Some(text), None) => match parse_boot_state(text, &inputs.hypervisor_cmdline) {
            Ok(state) => inputs.boot_state = state,
            Err(e) => return fail(e),
        },
        (None, Some(path)) => {
            let log = match std::fs::read(path) {
                Ok(log) => log,
                Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
            };
            match boot_state_of_log(&log) {
                Some(state) => inputs.boot_state = state,
                None => {
                    return fail(format!(
                        "{} has no EV_SLIPWAY_BOOT_STATE event in PCR19",
                        path.display()
                    ));
                }
            }
        }
        (None, None) => {}
    }
    let state = inputs.boot_state;
    println!(
        "# boot state: {} record, slot {} requested, attempt {}, last known-good slot {}",
        state.status.name(),
        slots::name(state.requested_slot).unwrap_or("?"),
        state.attempts,
        state
            .last_known_good
            .and_then(slots::name)
            .unwrap_or("none")
    );
    if let Some(path) = &args.sinit {
        match std::fs::read(path) {
            Ok(bytes) => inputs.sinit_acm = Some(bytes),
            Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
        }
    }
    let prediction = match predict(&inputs, &banks, args.launch) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let launch = args.launch.name();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| bundle.output_dir.join(format!("expected-{launch}.log")));
    if let Err(e) = std::fs::write(&out, &prediction.log) {
        return fail(format!("cannot write {}: {e}", out.display()));
    }
    match args.launch {
        PredictedLaunch::Emulated => {}
        PredictedLaunch::TxtSimulated => println!(
            "# txt-simulated launch: SIMULATED TXT (the QEMU harness's SINIT over the synthetic \
             `sinit` module), never a hardware launch; PCR17/18 are the simulation's"
        ),
        PredictedLaunch::Txt if prediction.launch_pcrs_predicted => println!(
            "# txt launch: PCR17/18 as SINIT extends them in the TPM 2.0 details/authorities \
             mapping for this ACM and MLE, assuming no BIOS ACM data, S-CRTM status 0, no LCP and \
             no STM; a given SINIT version and platform policy decide: confirm on hardware"
        ),
        _ => println!(
            "# {launch} launch: PCR17/18 are the platform's and SINIT's golden values; the lines \
             below replay only Slipway's events (PCR19-21) from 0: append them to the launch's own"
        ),
    }
    print!("{}", prediction.pcr_lines());
    eprintln!(
        "xtask predict: expected event log ({} bytes) written to {}",
        prediction.log.len(),
        out.display()
    );
    ExitCode::SUCCESS
}
