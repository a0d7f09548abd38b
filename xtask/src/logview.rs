//! `cargo xtask log FILE|TRANSCRIPT`: an event log for operators, in the YAML shape
//! `tpm2_eventlog` (tpm2-tools) prints, with Slipway's event types named and their data decoded
//! (`tpm2_eventlog` says "Unknown event type" and prints hex). A transcript holds two logs,
//! Slipway's and the firmware's; both are printed, each as its own YAML document.
//!
//! Same fields as the tool: the header's Spec ID event, then per event `EventNum`, `PCRIndex`,
//! `EventType`, `DigestCount`, `Digests`, `EventSize`, `Event`, then `pcrs` (the log replayed
//! from 0, the PCRs that have events, every bank Slipway hashes). Event data of other types is
//! printed as hex, as the tool prints the types it does not decode; the decoded form of
//! Slipway's data is [`crate::refstate::event_data_json`] (`docs/fleet.md`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use slipway_measure::events::EV_SEPARATOR;
use slipway_measure::{EventLog, InitialState};

use crate::refstate::{self, alg_name, hex, is_slipway_event, type_name};

/// Writes a JSON value as a YAML block at `indent` spaces (strings as JSON-quoted scalars,
/// which YAML reads as double-quoted scalars).
fn yaml_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    let scalar = |v: &Value| serde_json::to_string(v).expect("JSON scalars serialize");
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match item {
                    Value::Object(inner) if !inner.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml_block(out, item, indent + 2);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml_block(out, item, indent + 2);
                    }
                    Value::Object(_) => {
                        let _ = writeln!(out, "{pad}{key}: {{}}");
                    }
                    Value::Array(_) => {
                        let _ = writeln!(out, "{pad}{key}: []");
                    }
                    other => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(other));
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        let mut nested = String::new();
                        yaml_block(&mut nested, item, indent + 2);
                        // `- ` takes the place of the first line's indentation.
                        let _ = write!(out, "{pad}- {}", &nested[indent + 2..]);
                    }
                    other => {
                        let _ = writeln!(out, "{pad}- {}", scalar(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

/// The YAML of one log (a document starting with `---`).
pub fn log_yaml(bytes: &[u8]) -> Result<String, slipway_measure::Error> {
    let log = EventLog::parse(bytes)?;
    log.end()?;
    let header = log.header();
    let mut out = String::from("---\nversion: 1\nevents:\n");
    let header_size = log.events().offset() - 32;
    let _ = write!(
        out,
        "- EventNum: 0\n  PCRIndex: 0\n  EventType: EV_NO_ACTION\n  Digest: \"{}\"\n  \
         EventSize: {header_size}\n  SpecID:\n  - Signature: Spec ID Event03\n    \
         platformClass: {}\n    specVersionMinor: {}\n    specVersionMajor: {}\n    \
         specErrata: {}\n    uintnSize: {}\n    numberOfAlgorithms: {}\n    Algorithms:\n",
        hex(&bytes[8..28]),
        header.platform_class,
        header.spec_version_minor,
        header.spec_version_major,
        header.spec_errata,
        header.uintn_size,
        header.banks.len(),
    );
    for (index, bank) in header.banks.iter().enumerate() {
        let _ = write!(
            out,
            "    - Algorithm[{index}]:\n      algorithmId: {}\n      digestSize: {}\n",
            alg_name(bank.alg),
            bank.size()
        );
    }
    let _ = writeln!(out, "    vendorInfoSize: {}", header.vendor_info.len());
    if !header.vendor_info.is_empty() {
        let _ = writeln!(out, "    vendorInfo: \"{}\"", hex(header.vendor_info));
    }
    let mut extended = Vec::new();
    for (index, event) in log.events().enumerate() {
        let event = event?;
        if !event.is_no_action() && !extended.contains(&event.pcr) {
            extended.push(event.pcr);
        }
        let _ = write!(
            out,
            "- EventNum: {}\n  PCRIndex: {}\n  EventType: {}\n  DigestCount: {}\n  Digests:\n",
            index + 1,
            event.pcr,
            type_name(event.event_type),
            event.digests.len()
        );
        for digest in event.digests.iter() {
            let _ = write!(
                out,
                "  - AlgorithmId: {}\n    Digest: \"{}\"\n",
                alg_name(digest.alg()),
                hex(digest.as_bytes())
            );
        }
        let _ = writeln!(out, "  EventSize: {}", event.data.len());
        // Slipway's own types are decoded; TCG's separator keeps the tool's hex form (in PCR17-21
        // its decoded form is the 4 zero bytes the hex shows).
        if is_slipway_event(&event) && event.event_type != EV_SEPARATOR {
            let _ = writeln!(out, "  EventTypeValue: {:#x}", event.event_type);
            out.push_str("  Event:\n");
            yaml_block(&mut out, &refstate::event_data_json(&event), 4);
        } else {
            let _ = writeln!(out, "  Event: \"{}\"", hex(event.data));
        }
    }
    extended.sort_unstable();
    let pcrs = log.replay(InitialState::DynamicLaunch)?;
    out.push_str("pcrs:\n");
    for alg in pcrs.banks() {
        let _ = writeln!(out, "  {}:", alg.name());
        for &pcr in &extended {
            if let Ok(Some(value)) = pcrs.value(pcr, alg) {
                let _ = writeln!(out, "    {pcr:<2} : 0x{}", hex(value.as_bytes()));
            }
        }
    }
    Ok(out)
}

/// The logs `log` prints: a transcript's (Slipway's, then the firmware's, when present), or the
/// whole file as one binary log.
pub fn logs_of_file(bytes: &[u8]) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains(crate::verify::LINE_PREFIX) && !bytes.starts_with(&[0, 0, 0, 0, 3, 0, 0, 0]) {
        let transcript = crate::verify::parse_transcript(&text)
            .map_err(|e| format!("the file is a transcript, but: {e}"))?;
        let mut logs = Vec::new();
        if !transcript.slipway_log.is_empty() {
            logs.push(("slipway-log", transcript.slipway_log));
        }
        if !transcript.firmware_log.is_empty() {
            logs.push(("firmware-log", transcript.firmware_log));
        }
        if logs.is_empty() {
            return Err("the transcript carries no event log".into());
        }
        return Ok(logs);
    }
    Ok(vec![("log", bytes.to_vec())])
}

/// Options of `cargo xtask log` (a part of [`crate::cli::Cli`]).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct LogArgs {
    /// A binary event log or an attest transcript (a serial log)
    #[arg(value_name = "FILE|TRANSCRIPT")]
    pub file: PathBuf,
    /// JSON (`slipway-log/1`, docs/fleet.md) instead of YAML
    #[arg(long)]
    pub json: bool,
}

/// `cargo xtask log`.
pub fn log_command(args: &LogArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("xtask log: error: {message}");
        ExitCode::FAILURE
    };
    let bytes = match std::fs::read(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => return fail(format!("cannot read {}: {e}", args.file.display())),
    };
    let logs = match logs_of_file(&bytes) {
        Ok(logs) => logs,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    let single = logs.len() == 1;
    let mut json = serde_json::Map::new();
    for (name, log) in logs {
        let problem = |e: slipway_measure::Error| {
            format!(
                "{} ({name}) is not a valid crypto-agile event log: {e}",
                args.file.display()
            )
        };
        if args.json {
            match refstate::log_json(&log) {
                Ok(value) if single => print!("{}", refstate::to_pretty(&value)),
                Ok(value) => {
                    json.insert(name.to_owned(), value);
                }
                Err(e) => return fail(problem(e)),
            }
        } else {
            match log_yaml(&log) {
                Ok(text) => {
                    if !single {
                        println!("# {name}");
                    }
                    print!("{text}");
                }
                Err(e) => return fail(problem(e)),
            }
        }
    }
    if args.json && !single {
        print!("{}", refstate::to_pretty(&Value::Object(json)));
    }
    ExitCode::SUCCESS
}
