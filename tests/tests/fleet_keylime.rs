//! Slipway's evidence in the tools fleets run, on real measured runs of
//! `images/test-measured-attest` (one SeaBIOS boot with a four-bank swtpm, one with a one-bank
//! sha256 swtpm, each shared by every test below):
//!
//! - Keylime 7.14.3 from PyPI (a venv xtask makes under the target directory, on demand) with
//!   the Slipway policy (`xtask/keylime/`), configured as `docs/fleet.md` says. Each layer is
//!   tested for what it does: the measured-boot engine (`mba.bootlog_parse` +
//!   `mba.bootlog_evaluate`) accepts the predicted launch and names the first differing event of
//!   a tampered module; the quote check (`Tpm.check_quote`: signature, nonce, PCR values against
//!   the TPM policy, then the engine) accepts a one-bank run and refuses a replayed nonce, which
//!   the measured-boot engine cannot see.
//! - tpm2-tools: `tpm2_checkquote` accepts what `verify` accepts (quote, PCR values file, event
//!   log) and refuses a wrong nonce, a changed PCR values file and a changed log;
//!   `tpm2_eventlog` and `cargo xtask log` agree on every event but the names and decoding of
//!   Slipway's.
//! - The Python decoder of the Keylime policy is pinned to the Rust one (`refstate::log_json`):
//!   identical JSON on the runs' logs and on a log exercising every rendering rule, and both
//!   refuse the same malformed logs.
//!
//! Keylime missing or not installable fails these tests (they never skip).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use slipway_integration_tests::{
    BuiltBundle, Firmware, Tpm, Verdict, boot, bundle, config, workspace,
};
use xtask::predict::{self, BundleInputs};
use xtask::refstate;
use xtask::verify::{self, Alg, Requirements, Transcript, fresh_nonce, nonce_input};

const BUNDLE: &str = "test-measured-attest";

/// One measured run and what the checks need from it.
struct Run {
    name: &'static str,
    nonce: Vec<u8>,
    transcript: Transcript,
    dir: PathBuf,
}

fn measured_run(banks: Option<&str>, name: &'static str) -> Run {
    let built = bundle(BUNDLE);
    let nonce = fresh_nonce().unwrap_or_else(|e| panic!("{e}"));
    let mut run = config(&built, Firmware::Bios, name);
    run.tpm = Tpm::Swtpm;
    run.tpm_banks = banks.map(str::to_owned);
    run.console_input = vec![nonce_input(&nonce)];
    let outcome = boot(&run);
    assert_eq!(outcome.verdict, Verdict::Success, "{}", outcome.verdict);
    let transcript = verify::parse_transcript(&verify::transcript_of(&outcome))
        .unwrap_or_else(|e| panic!("transcript: {e}"));
    // Precondition of every check here: Slipway's own verifier accepts the run.
    verify::verify_against_bundle(&built, &transcript, nonce.clone(), Alg::Sha256)
        .unwrap_or_else(|e| panic!("verify rejects the run: {e}"));
    let dir = built.output_dir.join(format!("fleet-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in xtask::fleet::export_files(&transcript).unwrap() {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let pcrs = std::fs::read(dir.join("quote.pcrs")).unwrap();
    std::fs::write(
        dir.join("quote.keylime"),
        xtask::fleet::keylime_quote(&transcript, &pcrs),
    )
    .unwrap();
    Run {
        name,
        nonce,
        transcript,
        dir,
    }
}

fn four_banks() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| measured_run(None, "fleet-four-banks"))
}

fn one_bank() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| measured_run(Some("sha256"), "fleet-one-bank"))
}

fn built() -> Arc<BuiltBundle> {
    bundle(BUNDLE)
}

fn inputs() -> BundleInputs {
    predict::bundle_inputs(&built()).unwrap()
}

/// The bundle's inputs with one byte of the hello kernel's loaded image changed.
fn tampered_inputs() -> BundleInputs {
    let mut inputs = inputs();
    let hello = &mut inputs
        .modules
        .iter_mut()
        .find(|(name, _)| name == "hello")
        .expect("the bundle has a hello module")
        .1;
    let at = loaded_byte(hello);
    hello[at] ^= 0x01;
    inputs
}

/// Offset of a byte inside the first `PT_LOAD` segment's file bytes of an ELF64 image (a byte
/// the loader copies into the domain, so the build record changes too).
fn loaded_byte(elf: &[u8]) -> usize {
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let phoff = u64_at(32);
    let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
    (0..phnum)
        .map(|i| phoff + 56 * i)
        .find(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| u64_at(ph + 8) + u64_at(ph + 32) / 2)
        .expect("a PT_LOAD segment")
}

/// `cargo xtask refstate`'s JSON for `inputs` (four banks, every launch kind), as a file.
fn refstate_file(inputs: &BundleInputs, name: &str) -> (PathBuf, String) {
    let value = refstate::refstate(
        BUNDLE,
        inputs,
        &predict::parse_banks("sha1,sha256,sha384,sha512").unwrap(),
        &refstate::LAUNCHES,
    )
    .unwrap_or_else(|e| panic!("refstate: {e}"));
    let text = refstate::to_pretty(&value);
    let path = built().output_dir.join(format!("fleet-{name}.json"));
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn genuine_refstate() -> &'static (PathBuf, String) {
    static FILE: OnceLock<(PathBuf, String)> = OnceLock::new();
    FILE.get_or_init(|| refstate_file(&inputs(), "refstate"))
}

fn tampered_refstate() -> &'static (PathBuf, String) {
    static FILE: OnceLock<(PathBuf, String)> = OnceLock::new();
    FILE.get_or_init(|| refstate_file(&tampered_inputs(), "refstate-tampered-hello"))
}

fn keylime() -> &'static xtask::keylime::KeylimeEnv {
    static ENV: OnceLock<xtask::keylime::KeylimeEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let env = xtask::keylime::ensure(workspace())
            .unwrap_or_else(|e| panic!("the Keylime environment: {e}"));
        println!(
            "Keylime environment {} ({})",
            env.dir.display(),
            if env.created_in > 0.0 {
                format!("created in {:.1} s", env.created_in)
            } else {
                "reused".into()
            }
        );
        env
    })
}

/// `python -m slipway_keylime ARGS`: (exit code, stdout, stderr).
fn slipway_keylime(args: &[&str]) -> (i32, String, String) {
    let output = keylime()
        .command()
        .args(args)
        .output()
        .expect("run the Keylime environment's python");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `check`'s JSON verdict on a run's evidence (Keylime's own verifier code).
fn keylime_check(run: &Run, refstate: &Path, quote: Option<(&[u8], &Path)>) -> Value {
    let file = |name: &str| run.dir.join(name).display().to_string();
    let refstate = refstate.display().to_string();
    let mut args = vec![
        "check".to_owned(),
        "--refstate".into(),
        refstate,
        "--log".into(),
        file("slipway.log"),
    ];
    if let Some((nonce, tpm_policy)) = quote {
        args.extend([
            "--quote".into(),
            file("quote.keylime"),
            "--ak".into(),
            file("ak.pub"),
            "--nonce".into(),
            verify::hex(nonce),
            "--tpm-policy".into(),
            tpm_policy.display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = slipway_keylime(&args);
    let verdict: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("check printed no JSON ({e}), exit {code}:\n{stdout}\n{stderr}")
    });
    let accepted = verdict
        .as_object()
        .unwrap()
        .values()
        .all(|layer| layer["accepted"] == true);
    assert_eq!(code, if accepted { 0 } else { 1 }, "{verdict:#}\n{stderr}");
    println!("keylime check ({}): {verdict:#}", run.name);
    verdict
}

fn event_ids(layer: &Value) -> Vec<String> {
    layer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn reasons(layer: &Value) -> String {
    layer["events"].to_string()
}

/// Keylime's TPM policy for sha256 from a reference state (the package's `tpm-policy`).
fn tpm_policy(refstate: &Path, name: &str) -> PathBuf {
    let (code, stdout, stderr) = slipway_keylime(&["tpm-policy", &refstate.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let policy: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(policy["mask"], "0x3e0000", "PCR17-21 pinned: {policy}");
    let path = built()
        .output_dir
        .join(format!("fleet-tpm-policy-{name}.json"));
    std::fs::write(&path, stdout).unwrap();
    path
}

/// Keylime's measured-boot engine with the Slipway policy: the predicted launch is accepted in a
/// four-bank and a one-bank run (one reference state for both), and a tampered hello module is
/// refused naming its PCR20 event; a log that lies about the module is refused the same way.
#[test]
fn keylime_measured_boot_engine_accepts_the_predicted_launch_and_names_a_tampered_module() {
    let (genuine, _) = genuine_refstate();
    let (tampered, _) = tampered_refstate();
    for run in [four_banks(), one_bank()] {
        let verdict = keylime_check(run, genuine, None);
        let engine = &verdict["measured_boot"];
        assert_eq!(engine["accepted"], true, "{}: {engine:#}", run.name);
        assert_eq!(
            engine["parser"], "slipway-log/1",
            "Slipway's parser, not tpm2_eventlog"
        );
        let replayed = fleet_replayed_sha256(&run.transcript);
        for pcr in [17, 19, 20, 21] {
            assert_eq!(
                engine["pcrs"][pcr.to_string()]
                    .as_str()
                    .map(|v| format!("{v:0>64}")),
                Some(replayed[&pcr].clone()),
                "PCR{pcr} as the parser gives it to Keylime"
            );
        }

        let verdict = keylime_check(run, tampered, None);
        let engine = &verdict["measured_boot"];
        assert_eq!(engine["accepted"], false, "{engine:#}");
        let why = reasons(engine);
        assert!(
            event_ids(engine).contains(&"measured_boot.policy_slipway".to_owned()),
            "{why}"
        );
        assert!(
            why.contains("PCR20 EV_SLIPWAY_BOOT_MODULE (type 0x606) module `hello`"),
            "the first differing event is named: {why}"
        );
    }

    // The log itself lies: the hello module's event carries other digests.
    let run = four_banks();
    let mut lying = run.transcript.slipway_log.clone();
    let log = xtask::verify::ParsedLog::parse(&run.transcript.slipway_log).unwrap();
    let hello = log
        .events()
        .map(Result::unwrap)
        .find(|e| e.event_type == 0x606 && e.data.windows(5).any(|w| w == b"hello"))
        .expect("the hello module's event");
    lying[hello.offset + 12 + 2] ^= 0x80; // first byte of its first digest
    let lying_file = run.dir.join("lying.log");
    std::fs::write(&lying_file, &lying).unwrap();
    let (code, stdout, stderr) = slipway_keylime(&[
        "evaluate",
        &genuine.display().to_string(),
        &lying_file.display().to_string(),
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("REJECTED") && stdout.contains("module `hello`"),
        "{stdout}"
    );
}

fn fleet_replayed_sha256(transcript: &Transcript) -> std::collections::HashMap<u32, String> {
    let pcrs = xtask::fleet::replayed_pcrs(transcript).unwrap();
    (17..=21)
        .map(|pcr| {
            let value = pcrs.value(pcr, Alg::Sha256).unwrap().unwrap();
            (pcr, refstate::hex(value.as_bytes()))
        })
        .collect()
}

/// Keylime's whole quote check (`Tpm.check_quote`) on a one-bank run, with the TPM policy
/// pinning PCR17-21 from the reference state and the Slipway measured-boot policy: accepted.
/// A replayed quote (the verifier sent another nonce) is refused by the quote layer, while the
/// measured-boot engine, which never sees the nonce, still accepts the log. A tampered module
/// fails both the pinned PCR values and the measured-boot policy.
#[test]
fn keylime_verifier_accepts_a_one_bank_run_and_refuses_a_replayed_nonce() {
    let run = one_bank();
    let (genuine, _) = genuine_refstate();
    let policy = tpm_policy(genuine, "genuine");
    let verdict = keylime_check(run, genuine, Some((&run.nonce, &policy)));
    assert_eq!(verdict["quote"]["accepted"], true, "{verdict:#}");
    assert_eq!(verdict["measured_boot"]["accepted"], true, "{verdict:#}");

    let mut fresh = run.nonce.clone();
    fresh[0] ^= 0xff;
    let verdict = keylime_check(run, genuine, Some((&fresh, &policy)));
    assert_eq!(verdict["quote"]["accepted"], false, "{verdict:#}");
    assert!(
        event_ids(&verdict["quote"]).contains(&"qoute_validation.quote_validation".to_owned()),
        "Keylime's own event id (sic): {verdict:#}"
    );
    assert!(reasons(&verdict["quote"]).contains("nonce"), "{verdict:#}");
    assert_eq!(
        verdict["measured_boot"]["accepted"], true,
        "the measured-boot engine does not check freshness"
    );

    let (tampered, _) = tampered_refstate();
    let tampered_policy = tpm_policy(tampered, "tampered");
    let verdict = keylime_check(run, tampered, Some((&run.nonce, &tampered_policy)));
    assert_eq!(verdict["quote"]["accepted"], false, "{verdict:#}");
    let ids = event_ids(&verdict["quote"]);
    for id in [
        "pcr_validation.invalid_pcr_20",
        "pcr_validation.invalid_pcr_21",
        "measured_boot.policy_slipway",
    ] {
        assert!(ids.contains(&id.to_owned()), "{id}: {verdict:#}");
    }
    assert!(
        !ids.contains(&"pcr_validation.invalid_pcr_19".to_owned()),
        "{verdict:#}"
    );
}

/// Keylime 7.14.3's quote layer on a four-bank quote: its own signature, nonce and PCR-digest
/// check (`tpm_util.checkquote`) passes, so the evidence is sound; its PCR table then holds the
/// last quoted bank's values under every index (it assumes one bank per quote), which is why a
/// Keylime agent quotes one bank (`docs/fleet.md`).
#[test]
fn keylime_checks_the_signature_and_nonce_of_a_four_bank_quote() {
    let run = four_banks();
    let (genuine, _) = genuine_refstate();
    let policy = tpm_policy(genuine, "genuine-four");
    let verdict = keylime_check(run, genuine, Some((&run.nonce, &policy)));
    let ids = event_ids(&verdict["quote"]);
    assert!(
        !ids.iter().any(|id| id.starts_with("qoute_validation")),
        "signature, nonce and digest pass: {verdict:#}"
    );
    let mut fresh = run.nonce.clone();
    fresh[0] ^= 0xff;
    let verdict = keylime_check(run, genuine, Some((&fresh, &policy)));
    assert!(
        event_ids(&verdict["quote"]).contains(&"qoute_validation.quote_validation".to_owned()),
        "{verdict:#}"
    );
}

fn checkquote(dir: &Path, pcrs: &str, log: Option<&str>, nonce: &[u8]) -> (bool, String) {
    let mut command = Command::new("tpm2_checkquote");
    command
        .arg("-u")
        .arg(dir.join("ak.pem"))
        .arg("-m")
        .arg(dir.join("quote.msg"))
        .arg("-s")
        .arg(dir.join("quote.sig"))
        .args(["-q", &verify::hex(nonce), "-g", "sha256", "-f"])
        .arg(dir.join(pcrs));
    if let Some(log) = log {
        command.arg("-e").arg(dir.join(log));
    }
    let output = command
        .output()
        .expect("tpm2_checkquote (apt-get install tpm2-tools)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// tpm2_checkquote (tpm2-tools), an independent oracle: it accepts both runs that verify
/// accepts, with the PCR values file and the event log, and refuses a wrong nonce, a changed
/// PCR value and a changed log.
#[test]
fn tpm2_checkquote_accepts_what_verify_accepts_and_refuses_tampering() {
    for run in [four_banks(), one_bank()] {
        let dir = &run.dir;
        let (ok, err) = checkquote(dir, "quote.pcrs", Some("slipway.log"), &run.nonce);
        assert!(ok, "{}: {err}", run.name);
        // The TPM2B_PUBLIC form of the key is accepted too.
        let output = Command::new("tpm2_checkquote")
            .arg("-u")
            .arg(dir.join("ak.pub"))
            .arg("-m")
            .arg(dir.join("quote.msg"))
            .arg("-s")
            .arg(dir.join("quote.sig"))
            .args(["-q", &verify::hex(&run.nonce), "-g", "sha256"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");

        let mut other = run.nonce.clone();
        other[3] ^= 1;
        assert!(
            !checkquote(dir, "quote.pcrs", None, &other).0,
            "wrong nonce"
        );
        let wrong = verify::verify(
            &run.transcript,
            &Requirements {
                nonce: other,
                bank: Alg::Sha256,
                expected_log: predict::predict(
                    &inputs(),
                    &xtask::verify::ParsedLog::parse(&run.transcript.slipway_log)
                        .unwrap()
                        .header()
                        .banks,
                    predict::PredictedLaunch::Emulated,
                )
                .unwrap()
                .log,
            },
        );
        assert!(wrong.is_err(), "verify refuses the wrong nonce too");

        let mut pcrs = std::fs::read(dir.join("quote.pcrs")).unwrap();
        let first_value = 4 + 16 * 8 + 4 + 4 + 2;
        pcrs[first_value] ^= 1;
        std::fs::write(dir.join("tampered.pcrs"), &pcrs).unwrap();
        let (ok, err) = checkquote(dir, "tampered.pcrs", None, &run.nonce);
        assert!(!ok && err.contains("digest"), "changed PCR value: {err}");

        let mut log = run.transcript.slipway_log.clone();
        let last = log.len() - 1;
        log[last - 40] ^= 1;
        std::fs::write(dir.join("tampered.log"), &log).unwrap();
        let (ok, err) = checkquote(dir, "quote.pcrs", Some("tampered.log"), &run.nonce);
        assert!(!ok, "changed log: {err}");
        let mut lying = run.transcript.clone();
        lying.slipway_log = log;
        assert!(
            verify::verify_against_bundle(&built(), &lying, run.nonce.clone(), Alg::Sha256)
                .is_err(),
            "verify refuses the changed log too"
        );
    }
}

/// One event of a tpm2_eventlog-shaped YAML document, as far as both tools print it alike.
#[derive(Debug, Default, PartialEq, Eq)]
struct YamlEvent {
    num: String,
    pcr: String,
    type_name: String,
    digests: Vec<(String, String)>,
    size: String,
    /// The one-line `Event: "hex"` form, if the event's data is printed that way.
    hex: Option<String>,
}

/// Reads the events and `pcrs` section of a tpm2_eventlog-shaped document (header excluded).
fn yaml_summary(text: &str) -> (Vec<YamlEvent>, Vec<String>) {
    let mut events: Vec<YamlEvent> = Vec::new();
    let mut pcrs = Vec::new();
    let mut in_pcrs = false;
    let mut alg = String::new();
    for line in text.lines() {
        if line == "pcrs:" {
            in_pcrs = true;
            continue;
        }
        if in_pcrs {
            if line.trim().is_empty() {
                continue;
            }
            pcrs.push(line.trim_end().to_owned());
            continue;
        }
        if let Some(num) = line.strip_prefix("- EventNum: ") {
            events.push(YamlEvent {
                num: num.to_owned(),
                ..YamlEvent::default()
            });
            continue;
        }
        let Some(event) = events.last_mut() else {
            continue;
        };
        let value = |prefix: &str| {
            line.strip_prefix(prefix)
                .map(|v| v.trim_matches('"').to_owned())
        };
        if let Some(v) = value("  PCRIndex: ") {
            event.pcr = v;
        } else if let Some(v) = value("  EventType: ") {
            event.type_name = v;
        } else if let Some(v) = value("  - AlgorithmId: ") {
            alg = v;
        } else if let Some(v) = value("    Digest: ") {
            event.digests.push((alg.clone(), v));
        } else if let Some(v) = value("  EventSize: ") {
            event.size = v;
        } else if let Some(v) = value("  Event: ") {
            event.hex = Some(v);
        }
    }
    events.retain(|e| e.num != "0");
    (events, pcrs)
}

/// `cargo xtask log` and tpm2_eventlog on the same logs (a run's Slipway log and SeaBIOS's):
/// the same events, PCRs, digests, sizes and replayed PCR values; they differ only where
/// Slipway's events are concerned (the tool: "Unknown event type" and hex; xtask: the name
/// and the decoded data) and where the tool decodes a firmware type itself (EV_IPL's string;
/// xtask prints firmware data as hex).
#[test]
fn xtask_log_agrees_with_tpm2_eventlog_and_names_slipway_events() {
    let run = four_banks();
    for (name, log) in [
        ("slipway.log", &run.transcript.slipway_log),
        ("firmware.log", &run.transcript.firmware_log),
    ] {
        assert!(!log.is_empty(), "{name}");
        let ours = xtask::logview::log_yaml(log).unwrap();
        let tool = Command::new("tpm2_eventlog")
            .arg(run.dir.join(name))
            .output()
            .expect("tpm2_eventlog (apt-get install tpm2-tools)");
        assert!(tool.status.success(), "{tool:?}");
        let tool = String::from_utf8(tool.stdout).unwrap();
        let (our_events, our_pcrs) = yaml_summary(&ours);
        let (tool_events, tool_pcrs) = yaml_summary(&tool);
        assert_eq!(our_events.len(), tool_events.len(), "{name}: event count");
        assert!(!our_events.is_empty());
        assert_eq!(our_pcrs, tool_pcrs, "{name}: replayed PCRs");
        let mut slipway = 0;
        for (ours, tool) in our_events.iter().zip(&tool_events) {
            assert_eq!(
                (&ours.num, &ours.pcr, &ours.digests, &ours.size),
                (&tool.num, &tool.pcr, &tool.digests, &tool.size),
                "{name}"
            );
            if ours.type_name.starts_with("EV_SLIPWAY_") {
                slipway += 1;
                assert_eq!(tool.type_name, "Unknown event type", "{ours:?}");
                assert!(ours.hex.is_none(), "decoded: {ours:?}");
            } else {
                assert_eq!(ours.type_name, tool.type_name, "{name}");
                if let Some(tool_hex) = &tool.hex {
                    assert_eq!(ours.hex.as_ref(), Some(tool_hex), "{name}: {ours:?}");
                }
            }
        }
        if name == "slipway.log" {
            assert!(slipway >= 10, "every Slipway event is named ({slipway})");
            assert!(ours.contains("    name: \"hello\""), "decoded module name");
        } else {
            assert_eq!(slipway, 0);
        }
    }
}

/// The Python decoder (the Keylime policy's parser) equals the Rust one: the same JSON for
/// both runs' Slipway and firmware logs and for a log exercising every rendering rule, and both
/// refuse the same malformed logs (truncations and corruptions of that log).
#[test]
fn python_decoder_equals_the_rust_decoder() {
    let dir = four_banks().dir.join("decoder");
    std::fs::create_dir_all(&dir).unwrap();
    let sample = refstate::rendering_sample_log();
    let mut logs = vec![
        ("four-slipway", four_banks().transcript.slipway_log.clone()),
        (
            "four-firmware",
            four_banks().transcript.firmware_log.clone(),
        ),
        ("one-slipway", one_bank().transcript.slipway_log.clone()),
        ("sample", sample.clone()),
    ];
    // Malformed variants: cut inside the header, inside an event's digests and data, and a
    // header whose algorithm count and an event whose digest count are wrong.
    for cut in [20, 40, 120, sample.len() / 2, sample.len() - 1] {
        logs.push(("cut", sample[..cut].to_vec()));
    }
    let mut bad_count = sample.clone();
    bad_count[56] = 9; // numberOfAlgorithms
    logs.push(("bad-header", bad_count));
    for (index, (name, log)) in logs.iter().enumerate() {
        let path = dir.join(format!("{index}-{name}.log"));
        std::fs::write(&path, log).unwrap();
        let rust = refstate::log_json(log);
        let (code, stdout, stderr) = slipway_keylime(&["decode", &path.display().to_string()]);
        match rust {
            Ok(value) => {
                assert_eq!(
                    code, 0,
                    "{name}: Python refuses what Rust decodes: {stderr}"
                );
                let python: Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(python, value, "{name}: Python and Rust decode differently");
            }
            Err(e) => {
                assert_eq!(
                    code, 2,
                    "{name}: Rust refuses ({e}), Python: {stdout}{stderr}"
                );
                assert!(stderr.contains("error"), "{stderr}");
            }
        }
    }
}

/// A changed input shows as a readable diff of `refstate`'s JSON: the same lines, and the
/// changed ones are the hello module's and hello's build's digests, their PCR20/21 values and
/// the build record's lines; PCR17-19 stay as they were.
#[test]
fn a_tampered_module_changes_few_lines_of_the_refstate() {
    let (_, genuine) = genuine_refstate();
    let (_, tampered) = tampered_refstate();
    let genuine: Vec<&str> = genuine.lines().collect();
    let tampered: Vec<&str> = tampered.lines().collect();
    assert_eq!(genuine.len(), tampered.len(), "the same structure");
    let changed: Vec<(usize, &str)> = genuine
        .iter()
        .zip(&tampered)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, _))| (i, *a))
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed.len() < genuine.len() / 10,
        "{} of {} lines change",
        changed.len(),
        genuine.len()
    );
    for (_, line) in &changed {
        let key = line.trim().split('"').nth(1).unwrap_or("");
        let is_hex_line = key.chars().all(|c| c.is_ascii_hexdigit()) && !key.is_empty();
        assert!(
            ["sha1", "sha256", "sha384", "sha512", "20", "21"].contains(&key) || is_hex_line,
            "only digests, PCR20/21 values and build-record lines change: {line}"
        );
    }
    let value: Value = serde_json::from_str(&genuine.join("\n")).unwrap();
    let other: Value = serde_json::from_str(&tampered.join("\n")).unwrap();
    for launch in ["emulated", "txt", "skinit"] {
        for pcr in ["19", "20", "21"] {
            let same = value["launches"][launch]["pcrs"]["sha256"][pcr]
                == other["launches"][launch]["pcrs"]["sha256"][pcr];
            assert_eq!(same, pcr == "19", "{launch} PCR{pcr}");
        }
    }
    assert_eq!(
        value["launches"]["emulated"]["pcrs"]["sha256"]["17"],
        other["launches"]["emulated"]["pcrs"]["sha256"]["17"]
    );
}
