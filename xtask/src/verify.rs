//! `cargo xtask verify`: the fleet's check of a run (`docs/measurement.md` section 7).
//!
//! The input is the console transcript of the attest control domain
//! (`images/guests/attest/README.md` defines the format): the attestation key's public area, the
//! quote (TPMS_ATTEST) and its signature, the Slipway event log, and diagnostics. Nothing in the
//! transcript is trusted until the quote is: the signature must check with the printed key, the
//! nonce must be the verifier's, the quoted PCR digest must equal the replay of the printed log,
//! and only then is the log compared with the prediction. Binding the key to a genuine TPM
//! (endorsement key certificate, credential activation) is the fleet's step and not done here.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use slipway_measure::events::{LaunchKind as EventLaunchKind, PCR_DRTM_DETAILS, SlipwayEvent};
use slipway_measure::log::Event;
use slipway_measure::{EventLog, HashAlg, InitialState, PcrBanks};
use slipway_tpm::PcrMask;
use slipway_tpm::verify::{self as quote_verify, VerifiedQuote};

use crate::predict::PREDICTED_PCR_MASK;

/// Re-exported for callers (the QEMU tests) that name banks and parse logs.
pub use slipway_measure::{EventLog as ParsedLog, HashAlg as Alg};

/// The prefix of every transcript line (after the console's `[domain] ` prefix).
pub const LINE_PREFIX: &str = "attest: ";

/// A parsed transcript: the blobs the attest domain printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    /// The nonce the domain says it received (the verifier uses its own).
    pub nonce: Option<Vec<u8>>,
    /// Marshaled TPMT_PUBLIC of the attestation key.
    pub ak_public: Vec<u8>,
    /// Marshaled TPMS_ATTEST of the quote.
    pub quote_attest: Vec<u8>,
    /// Marshaled TPMT_SIGNATURE.
    pub quote_signature: Vec<u8>,
    /// The Slipway event log (empty if the domain received none).
    pub slipway_log: Vec<u8>,
    /// The firmware's event log (empty if none).
    pub firmware_log: Vec<u8>,
    /// Printed PCR values (diagnostics only): (pcr, alg name, hex).
    pub pcrs: Vec<(u8, String, String)>,
}

/// Why a transcript is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscriptError {
    /// a blob is incomplete or framed wrongly
    #[error("transcript line {line}: {problem}")]
    Framing {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// a required blob is missing
    #[error("the transcript has no `{0}` (did the attest domain run to `attest: done`?)")]
    Missing(&'static str),
    /// the attest domain reported an error
    #[error("the attest domain failed: {0}")]
    DomainFailed(String),
}

fn blob_slot<'t>(t: &'t mut Transcript, kind: &str) -> Option<&'t mut Vec<u8>> {
    Some(match kind {
        "ak-public" => &mut t.ak_public,
        "quote-attest" => &mut t.quote_attest,
        "quote-signature" => &mut t.quote_signature,
        "slipway-log" => &mut t.slipway_log,
        "firmware-log" => &mut t.firmware_log,
        _ => return None,
    })
}

/// Parses the transcript text (a whole serial log is fine: only `attest: ` lines count, and any
/// `[domain] ` prefix before them is skipped).
pub fn parse_transcript(text: &str) -> Result<Transcript, TranscriptError> {
    let mut t = Transcript::default();
    // (kind, declared length, base64 text so far)
    let mut open: Option<(String, usize, String)> = None;
    let mut seen = Vec::new();
    let mut done = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let framing = |problem: String| TranscriptError::Framing { line, problem };
        let Some(at) = raw.find(LINE_PREFIX) else {
            continue;
        };
        let body = raw[at + LINE_PREFIX.len()..].trim_end();
        let (word, rest) = body.split_once(' ').unwrap_or((body, ""));
        match word {
            "begin" => {
                if let Some((kind, ..)) = &open {
                    return Err(framing(format!("`begin` inside the open blob `{kind}`")));
                }
                let (kind, len) = rest
                    .split_once(' ')
                    .ok_or_else(|| framing("`begin` needs a kind and a byte length".into()))?;
                let len: usize = len
                    .parse()
                    .map_err(|_| framing(format!("bad byte length `{len}`")))?;
                if blob_slot(&mut t, kind).is_none() {
                    return Err(framing(format!("unknown blob kind `{kind}`")));
                }
                if seen.iter().any(|k| k == kind) {
                    return Err(framing(format!("blob `{kind}` appears twice")));
                }
                open = Some((kind.to_owned(), len, String::new()));
            }
            "b64" => {
                let (_, _, text) = open
                    .as_mut()
                    .ok_or_else(|| framing("`b64` outside a blob".into()))?;
                text.push_str(rest);
            }
            "end" => {
                let (kind, len, text) = open
                    .take()
                    .ok_or_else(|| framing("`end` outside a blob".into()))?;
                if rest != kind {
                    return Err(framing(format!("`end {rest}` closes blob `{kind}`")));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| framing(format!("blob `{kind}` is not valid base64: {e}")))?;
                if bytes.len() != len {
                    return Err(framing(format!(
                        "blob `{kind}` has {} bytes, its `begin` says {len}",
                        bytes.len()
                    )));
                }
                *blob_slot(&mut t, &kind).expect("checked at begin") = bytes;
                seen.push(kind);
            }
            "nonce" => {
                t.nonce = Some(parse_hex(rest).map_err(|e| framing(format!("nonce echo: {e}")))?);
            }
            "pcr" => {
                let mut fields = rest.split(' ');
                if let (Some(pcr), Some(alg), Some(hex)) =
                    (fields.next(), fields.next(), fields.next())
                    && let Ok(pcr) = pcr.parse()
                {
                    t.pcrs.push((pcr, alg.to_owned(), hex.to_owned()));
                }
            }
            "error" => return Err(TranscriptError::DomainFailed(rest.to_owned())),
            "done" => done = true,
            _ => {}
        }
    }
    if let Some((kind, ..)) = open {
        return Err(TranscriptError::Framing {
            line: text.lines().count(),
            problem: format!("blob `{kind}` is not closed (transcript truncated?)"),
        });
    }
    for (kind, needed) in [
        ("ak-public", true),
        ("quote-attest", true),
        ("quote-signature", true),
        ("slipway-log", false),
    ] {
        if needed && !seen.iter().any(|k| k == kind) {
            return Err(TranscriptError::Missing(match kind {
                "ak-public" => "ak-public",
                "quote-attest" => "quote-attest",
                _ => "quote-signature",
            }));
        }
    }
    if !done {
        return Err(TranscriptError::Missing("done"));
    }
    Ok(t)
}

/// Parses a hex string (even length, 1-64 bytes): the nonce format of the transcript and the CLI.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 128 {
        return Err(format!(
            "`{text}` is not 1-64 bytes of hex (an even number of hex digits)"
        ));
    }
    // Checked before slicing two bytes at a time, which would split a multi-byte character.
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{text}` is not hex"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| format!("`{text}` is not hex"))
        })
        .collect()
}

/// What the verifier requires.
#[derive(Clone, Debug)]
pub struct Requirements {
    /// The nonce the verifier sent.
    pub nonce: Vec<u8>,
    /// The bank that must be quoted, logged and predicted (never SHA-1).
    pub bank: HashAlg,
    /// The expected log (`cargo xtask predict`), PCR17-21 of an emulated launch.
    pub expected_log: Vec<u8>,
}

/// Why a run is not accepted. Each has its own exit code ([`Rejection::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// the verifier's arguments are unusable
    #[error("{0}")]
    Usage(String),
    /// the transcript is malformed or incomplete
    #[error("{0}")]
    Transcript(#[from] TranscriptError),
    /// the quote does not check (signature, key, nonce, format)
    #[error("the quote is not genuine evidence: {0}")]
    Quote(String),
    /// the required bank is absent
    #[error("bank {bank} is required but {where_}: SHA-1 alone never passes")]
    BankMissing {
        /// The bank.
        bank: &'static str,
        /// Where it is missing.
        where_: String,
    },
    /// the log is malformed or does not replay to the quoted PCRs
    #[error("the event log does not explain the quote: {0}")]
    Log(String),
    /// PCR17 is all-FF: no dynamic launch happened
    #[error(
        "unmeasured launch: the quoted PCR17 is all-FF (no dynamic launch happened; the log's launch kind is {0}); nothing about this run is measured"
    )]
    Unmeasured(String),
    /// the run differs from the prediction
    #[error("the run differs from the prediction: {0}")]
    Mismatch(String),
}

impl Rejection {
    /// The process exit code: 2 malformed input or arguments, 3 the evidence does not check
    /// (quote, nonce, log vs quote, missing bank), 4 unmeasured launch, 5 differs from the
    /// prediction. (0 is acceptance, 1 the harness's own failures such as a build error.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Rejection::Usage(_) | Rejection::Transcript(_) => 2,
            Rejection::Quote(_) | Rejection::BankMissing { .. } | Rejection::Log(_) => 3,
            Rejection::Unmeasured(_) => 4,
            Rejection::Mismatch(_) => 5,
        }
    }
}

/// An accepted run.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The banks quoted (all checked against the log and the prediction where both have them).
    pub quoted_banks: Vec<HashAlg>,
    /// The number of events in the log.
    pub events: usize,
    /// The replayed PCR17-21 values of the required bank.
    pub pcrs: Vec<(u32, String)>,
    /// The launch kind the log's first PCR19 event names (matched by the prediction).
    pub launch: EventLaunchKind,
}

fn name_event(event: &Event<'_>) -> String {
    let type_name = crate::refstate::type_name(event.event_type);
    let subject = match SlipwayEvent::decode(event.event_type, event.data) {
        Ok(Some(
            SlipwayEvent::BootModule(m)
            | SlipwayEvent::DombImage(m)
            | SlipwayEvent::RecoveryImage(m),
        )) => {
            format!(" module `{}`", String::from_utf8_lossy(m.name))
        }
        Ok(Some(SlipwayEvent::DomainBuild(b))) => {
            format!(" domain `{}`", String::from_utf8_lossy(b.name))
        }
        Ok(Some(SlipwayEvent::PolicyDecision(d))) => format!(
            " policy decision {} -> {} `{}`",
            d.reason.name(),
            d.action.name(),
            String::from_utf8_lossy(d.subject)
        ),
        // The measured policy text names its program (`docs/launch-config.md`).
        Ok(Some(SlipwayEvent::Policy(text))) => {
            let text = String::from_utf8_lossy(text);
            let field = |key: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(key))
                    .unwrap_or("?")
                    .to_owned()
            };
            format!(
                " policy program `{}` sha256:{}",
                field("program: "),
                field("program-sha256: ")
            )
        }
        Ok(Some(SlipwayEvent::LaunchKind(kind))) => format!(" `{}`", kind.name()),
        Ok(Some(SlipwayEvent::BootState(state))) => {
            let slot = |s: Option<u8>| {
                s.and_then(slipway_protocol::boot_modules::slots::name)
                    .unwrap_or("none")
            };
            format!(
                " (boot record {}: slot {} requested, attempt {}, last known-good slot {})",
                state.status.name(),
                slot(Some(state.requested_slot)),
                state.attempts,
                slot(state.last_known_good)
            )
        }
        Ok(Some(SlipwayEvent::SlotChoice(choice))) => {
            let slot = |s| slipway_protocol::boot_modules::slots::name(s).unwrap_or("?");
            format!(
                " (slot {} chosen over {})",
                slot(choice.to),
                slot(choice.from)
            )
        }
        _ => String::new(),
    };
    format!(
        "PCR{} type {:#x} {type_name}{subject}",
        event.pcr, event.event_type
    )
}

fn launch_kind_of(log: &EventLog<'_>) -> Option<EventLaunchKind> {
    log.events().flatten().find_map(|event| {
        match SlipwayEvent::decode(event.event_type, event.data) {
            Ok(Some(SlipwayEvent::LaunchKind(kind))) if event.pcr == 19 => Some(kind),
            _ => None,
        }
    })
}

fn quoted_values_match(quote: &VerifiedQuote, pcrs: &PcrBanks) -> Result<(), String> {
    quote
        .check_pcrs(|alg, pcr| pcrs.value(u32::from(pcr), alg.hash_alg()?).ok().flatten())
        .map_err(|e| e.to_string())
}

/// Checks the quote alone (key, signature, nonce) and that it attests `expected`'s PCR values
/// (a prediction's replay) in every quoted bank; returns the quoted selection. This is a step of
/// [`verify`], which also requires the log; on its own it shows that a run's TPM state is the
/// predicted one.
pub fn check_quote_attests(
    transcript: &Transcript,
    nonce: &[u8],
    expected: &PcrBanks,
) -> Result<Vec<(slipway_measure::AlgId, PcrMask)>, Rejection> {
    let quote = quote_verify::verify_quote(
        &transcript.ak_public,
        &transcript.quote_attest,
        &transcript.quote_signature,
        nonce,
    )
    .map_err(|e| Rejection::Quote(e.to_string()))?;
    quoted_values_match(&quote, expected).map_err(Rejection::Mismatch)?;
    Ok(quote.info.pcr_selection)
}

/// The decision: accepts the run only if every check passes (see the module documentation).
pub fn verify(transcript: &Transcript, req: &Requirements) -> Result<Accepted, Rejection> {
    if req.bank == HashAlg::Sha1 {
        return Err(Rejection::Usage(
            "--bank sha1: SHA-1 alone never passes; require sha256, sha384 or sha512".into(),
        ));
    }
    // 1. The quote: key, signature, nonce.
    let quote = quote_verify::verify_quote(
        &transcript.ak_public,
        &transcript.quote_attest,
        &transcript.quote_signature,
        &req.nonce,
    )
    .map_err(|e| Rejection::Quote(e.to_string()))?;
    // 2. The required bank is quoted over PCR17-21.
    let bank_id = req.bank.id();
    let quoted_mask = quote
        .info
        .pcr_selection
        .iter()
        .find(|(alg, _)| *alg == bank_id)
        .map(|(_, mask)| *mask);
    if quoted_mask.is_none_or(|mask| {
        !PcrMask::QUOTE
            .iter()
            .all(|pcr| mask.iter().any(|q| q == pcr))
    }) {
        return Err(Rejection::BankMissing {
            bank: req.bank.name(),
            where_: "the quote does not cover PCR17-21 in it".into(),
        });
    }
    // 3. The log: well-formed, replays to the quoted digest.
    if transcript.slipway_log.is_empty() {
        return Err(Rejection::Log(
            "the transcript carries no Slipway event log (the control domain found no \
             `slipway-event-log` window in its start info)"
                .into(),
        ));
    }
    let log =
        EventLog::parse(&transcript.slipway_log).map_err(|e| Rejection::Log(e.to_string()))?;
    log.end().map_err(|e| Rejection::Log(e.to_string()))?;
    if !log.header().banks.contains(bank_id) {
        return Err(Rejection::BankMissing {
            bank: req.bank.name(),
            where_: "the event log has no digests in it".into(),
        });
    }
    let launched = log
        .replay(InitialState::DynamicLaunch)
        .map_err(|e| Rejection::Log(e.to_string()))?;
    if let Err(launched_error) = quoted_values_match(&quote, &launched) {
        // 4. PCR17 all-FF: the same log replayed from the no-launch state explains the quote.
        let unlaunched = log
            .replay(InitialState::NoDynamicLaunch)
            .map_err(|e| Rejection::Log(e.to_string()))?;
        if quoted_values_match(&quote, &unlaunched).is_ok() {
            let kind = launch_kind_of(&log).map_or("missing", EventLaunchKind::name);
            return Err(Rejection::Unmeasured(kind.into()));
        }
        return Err(Rejection::Log(format!(
            "replaying it does not give the quoted PCR digest ({launched_error})"
        )));
    }
    // 5. The prediction: the same events in PCR17-21, and the same values in the required bank.
    let expected = EventLog::parse(&req.expected_log)
        .map_err(|e| Rejection::Usage(format!("the expected log is malformed: {e}")))?;
    if !expected.header().banks.contains(bank_id) {
        return Err(Rejection::Usage(format!(
            "the expected log was not predicted for bank {}",
            req.bank.name()
        )));
    }
    let difference = slipway_measure::log::first_difference(&expected, &log, PREDICTED_PCR_MASK)
        .map_err(|e| Rejection::Log(e.to_string()))?;
    if let Some(diff) = difference {
        let describe = |event: &Option<Event<'_>>| {
            event
                .as_ref()
                .map_or_else(|| "nothing (the log ends)".to_owned(), name_event)
        };
        return Err(Rejection::Mismatch(format!(
            "first differing event #{} (counting events in PCR17-21): expected {}, the run has {}",
            diff.index,
            describe(&diff.expected),
            describe(&diff.actual)
        )));
    }
    let predicted = expected
        .replay(InitialState::DynamicLaunch)
        .map_err(|e| Rejection::Usage(format!("the expected log does not replay: {e}")))?;
    let mut pcrs = Vec::new();
    for pcr in 17..=21 {
        let want = predicted.value(pcr, req.bank).ok().flatten();
        let have = launched.value(pcr, req.bank).ok().flatten();
        if want != have || have.is_none() {
            return Err(Rejection::Mismatch(format!(
                "PCR{pcr} {} replays to {:?}, the prediction is {:?}",
                req.bank.name(),
                have.map(|d| d.to_string()),
                want.map(|d| d.to_string())
            )));
        }
        pcrs.push((pcr, have.expect("checked").to_string()));
    }
    // PCR17's emulated-launch event must be there (a log without it cannot have matched the
    // prediction, which always has it, but say it plainly if the prediction was for hardware).
    if !log.events().flatten().any(|e| e.pcr == PCR_DRTM_DETAILS) {
        return Err(Rejection::Mismatch(
            "the log has no PCR17 launch event".into(),
        ));
    }
    Ok(Accepted {
        quoted_banks: quote
            .info
            .pcr_selection
            .iter()
            .filter_map(|(alg, _)| alg.hash_alg())
            .collect(),
        events: log.events().count(),
        pcrs,
        launch: launch_kind_of(&log).unwrap_or(EventLaunchKind::Unmeasured),
    })
}

/// Options of `cargo xtask verify` (a part of [`crate::cli::Cli`]).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct VerifyArgs {
    /// The transcript: a run's serial log
    pub transcript: PathBuf,
    /// The nonce sent, hex [default: the one the transcript echoes, which proves no freshness]
    // `::std::vec::Vec`: one value (the nonce's bytes), not a list of values.
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    pub nonce: Option<::std::vec::Vec<u8>>,
    /// The bank that must be quoted, logged and predicted (never sha1)
    #[arg(long, value_name = "BANK", default_value = "sha256", value_parser = parse_bank)]
    pub bank: HashAlg,
    /// Predict from this bundle [default: demo, unless --expected-log]
    #[arg(long, value_name = "BUNDLE", conflicts_with = "expected_log")]
    pub bundle: Option<String>,
    /// Compare with this predicted event log instead of a bundle's prediction
    #[arg(long, value_name = "FILE")]
    pub expected_log: Option<PathBuf>,
    /// txt-simulated: predict from the bundle as `run --launch txt-simulated` built it
    #[arg(
        long = "launch",
        value_name = "txt-simulated",
        value_parser = crate::builder::BundleVariant::from_launch,
        conflicts_with = "expected_log"
    )]
    pub variant: Option<crate::builder::BundleVariant>,
}

/// A bank by its name (`sha256`), the value parser of `--bank`.
pub fn parse_bank(name: &str) -> Result<HashAlg, String> {
    HashAlg::from_name(name).ok_or_else(|| {
        let banks: Vec<_> = HashAlg::ALL.iter().map(|alg| alg.name()).collect();
        format!("`{name}` is not a bank ({})", banks.join(", "))
    })
}

/// Renders an acceptance for the console.
pub fn report(accepted: &Accepted, bank: HashAlg) -> String {
    let mut out = String::new();
    let banks: Vec<_> = accepted.quoted_banks.iter().map(|b| b.name()).collect();
    let _ = writeln!(
        out,
        "verify: ACCEPTED: quote signature and nonce check, the log ({} events) replays to the \
         quoted PCRs in every quoted bank ({}), and matches the prediction",
        accepted.events,
        banks.join(", ")
    );
    let _ = match accepted.launch {
        EventLaunchKind::TxtSimulated => writeln!(
            out,
            "verify: launch: txt-simulated: a SIMULATED Intel TXT launch (QEMU harness as CPU and \
             SINIT, no Intel code, no ACM signature): NOT a hardware launch"
        ),
        EventLaunchKind::Emulated => writeln!(
            out,
            "verify: launch: emulated: the QEMU harness's emulated dynamic launch: NOT a hardware \
             launch"
        ),
        kind => writeln!(out, "verify: launch: {}", kind.name()),
    };
    for (pcr, value) in &accepted.pcrs {
        let _ = writeln!(out, "PCR{pcr} {} {value}", bank.name());
    }
    let _ = writeln!(
        out,
        "verify: note: binding the attestation key to a genuine TPM (EK certificate, credential \
         activation) is the fleet's step"
    );
    out
}

/// `cargo xtask verify`: exit 0 on acceptance, else [`Rejection::exit_code`].
pub fn verify_command(ws: &crate::Workspace, args: &VerifyArgs) -> ExitCode {
    match verify_from_args(ws, args) {
        Ok((accepted, bank)) => {
            print!("{}", report(&accepted, bank));
            ExitCode::SUCCESS
        }
        Err(rejection) => {
            eprintln!("verify: REJECTED: {rejection}");
            ExitCode::from(rejection.exit_code())
        }
    }
}

fn verify_from_args(
    ws: &crate::Workspace,
    args: &VerifyArgs,
) -> Result<(Accepted, HashAlg), Rejection> {
    let text = std::fs::read(&args.transcript)
        .map_err(|e| Rejection::Usage(format!("cannot read {}: {e}", args.transcript.display())))?;
    let transcript = parse_transcript(&String::from_utf8_lossy(&text))?;
    let bank = args.bank;
    let nonce = match &args.nonce {
        Some(nonce) => nonce.clone(),
        None => {
            eprintln!(
                "verify: warning: no --nonce given: checking against the nonce the transcript \
                 echoes, which proves no freshness"
            );
            transcript
                .nonce
                .clone()
                .ok_or(Rejection::Transcript(TranscriptError::Missing("nonce")))?
        }
    };
    match (&args.expected_log, &args.bundle) {
        (Some(path), _) => {
            let expected_log = std::fs::read(path)
                .map_err(|e| Rejection::Usage(format!("cannot read {}: {e}", path.display())))?;
            let accepted = verify(
                &transcript,
                &Requirements {
                    nonce,
                    bank,
                    expected_log,
                },
            )?;
            Ok((accepted, bank))
        }
        (None, bundle) => {
            let bundle = bundle.as_deref().unwrap_or(crate::bundle::DEFAULT_BUNDLE);
            let variant = args
                .variant
                .unwrap_or(crate::builder::BundleVariant::AsWritten);
            let built = crate::builder::build_bundle_as(ws, bundle, variant)
                .map_err(|e| Rejection::Usage(format!("cannot build bundle `{bundle}`: {e}")))?;
            let accepted = verify_against_bundle(&built, &transcript, nonce, bank)?;
            Ok((accepted, bank))
        }
    }
}

/// [`verify`] against the prediction for a built bundle, in the banks the run's log has (its
/// header lists them in TPM order): `cargo xtask verify --bundle` and the end of
/// `cargo xtask run`.
pub fn verify_against_bundle(
    built: &crate::builder::BuiltBundle,
    transcript: &Transcript,
    nonce: Vec<u8>,
    bank: HashAlg,
) -> Result<Accepted, Rejection> {
    let bundle = &built.name;
    let expected_log = if transcript.slipway_log.is_empty() {
        // No log: nothing to predict for; `verify` reports the quote or the missing log.
        Vec::new()
    } else {
        let banks = EventLog::parse(&transcript.slipway_log)
            .map(|log| log.header().banks)
            .map_err(|e| Rejection::Log(e.to_string()))?;
        let mut inputs = crate::predict::bundle_inputs(built)
            .map_err(|e| Rejection::Usage(format!("cannot read bundle `{bundle}`: {e}")))?;
        // The boot state is the machine's (its TPM NV boot record), not the bundle's: predicted
        // from the state the run's log records, which the quote covers like every PCR19 event.
        if let Some(state) = crate::predict::boot_state_of_log(&transcript.slipway_log) {
            inputs.boot_state = state;
        }
        // The launch the log names (a txt-simulated run is predicted as one; anything else as
        // the emulated launch, whose prediction it then fails to match).
        let launch = EventLog::parse(&transcript.slipway_log)
            .ok()
            .and_then(|log| launch_kind_of(&log))
            .and_then(crate::predict::PredictedLaunch::from_event_kind)
            .filter(|l| *l == crate::predict::PredictedLaunch::TxtSimulated)
            .unwrap_or(crate::predict::PredictedLaunch::Emulated);
        crate::predict::predict(&inputs, &banks, launch)
            .map_err(|e| Rejection::Usage(format!("cannot predict `{bundle}`: {e}")))?
            .log
    };
    verify(
        transcript,
        &Requirements {
            nonce,
            bank,
            expected_log,
        },
    )
}

/// The package of the attest control domain: a bundle with a module built from it prints a
/// transcript that `cargo xtask run` verifies.
pub const ATTEST_PACKAGE: &str = "slipway-guest-attest";

/// The line on which the attest domain waits for its nonce.
pub const NONCE_PROMPT: &str = "attest: nonce?";

/// The bytes of a nonce `cargo xtask run` generates: 128 bits, never repeated in practice.
pub const NONCE_BYTES: usize = 16;

/// Whether the bundle has a module built from [`ATTEST_PACKAGE`], or the Linux initramfs whose
/// attest role prints the same transcript (docs/linux-kernel.md): its runs print a transcript.
pub fn bundle_attests(manifest: &crate::bundle::Manifest) -> bool {
    manifest.modules.iter().any(|m| match &m.source {
        crate::bundle::ModuleSource::Binary(package) => package == ATTEST_PACKAGE,
        crate::bundle::ModuleSource::LinuxInitramfs => true,
        _ => false,
    })
}

/// A fresh nonce from the operating system's random source (`/dev/urandom`).
pub fn fresh_nonce() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut nonce = vec![0u8; NONCE_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut nonce))
        .map_err(|e| std::io::Error::new(e.kind(), format!("/dev/urandom: {e}")))?;
    Ok(nonce)
}

/// Lower-case hex, the nonce format of the console and the CLI.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Typing `nonce` (hex, then Enter) once the attest domain prompts for it.
pub fn nonce_input(nonce: &[u8]) -> crate::runner::ConsoleInput {
    crate::runner::ConsoleInput {
        after_line_containing: NONCE_PROMPT.into(),
        bytes: format!("{}\r", hex(nonce)).into_bytes(),
    }
}

/// The transcript of a run: its console lines (only the `attest: ` ones count).
pub fn transcript_of(outcome: &crate::runner::RunOutcome) -> String {
    outcome
        .lines
        .iter()
        .map(|l| format!("{}\n", l.text))
        .collect()
}

/// The verification `cargo xtask run` performs at the end of a run with a TPM: the run's
/// transcript, with the nonce `run` typed, against the bundle's prediction, requiring `bank`.
/// Exactly the checks of `cargo xtask verify SERIAL_LOG --nonce HEX --bundle BUNDLE`.
pub fn verify_run(
    built: &crate::builder::BuiltBundle,
    outcome: &crate::runner::RunOutcome,
    nonce: &[u8],
    bank: HashAlg,
) -> Result<Accepted, Rejection> {
    let transcript = parse_transcript(&transcript_of(outcome))?;
    verify_against_bundle(built, &transcript, nonce.to_vec(), bank)
}

#[cfg(test)]
mod tests;
