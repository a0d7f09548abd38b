//! The cross-check: logs written by `slipway-measure` are parsed by `tpm2_eventlog` (Debian
//! tpm2-tools), and the PCR values it replays equal `slipway-measure`'s own replay, bank by bank.
//!
//! The tool must be installed: without it this test fails (it never passes silently).

use slipway_measure::events::*;
use slipway_measure::hash::{BoundModuleHasher, bound_module_digests};
use slipway_measure::pcr::PCR_COUNT;
use slipway_measure::{
    AlgId, BankSet, EventLog, HashAlg, InitialState, LogHeader, LogWriter, PcrBanks,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// Writes the events of a whole Slipway boot, following `docs/measurement.md`, plus a few that
/// exercise the format (a PCR0 event, large events, an empty event, PCR23).
///
/// No `EV_NO_ACTION` events after the header: tpm2-tools 5.4 (Debian bookworm) wrongly extends
/// them during replay (a StartupLocality event or a zero-digest note changes its PCR values), so
/// Slipway never writes any, and this cross-check cannot cover them; the unit tests check our
/// spec behaviour (not extended; StartupLocality sets PCR0's initial value).
fn write_boot(log: &mut LogWriter<'_>) {
    let banks = *log.banks();
    let mut data = vec![0u8; 4096];

    // EV_S_CRTM_VERSION in PCR0: tpm2_eventlog also checks that its digest is the data's hash.
    log.append_measured(0, 0x0000_0008, b"firmware-ish event in PCR0")
        .unwrap();

    // PCR17: the emulated launch's record of the region it measured.
    let region = vec![0x5au8; 100_000];
    let len = SlipwayEvent::EmulatedLaunch {
        region_start: 0x20_0000,
        region_size: region.len() as u64,
    }
    .encode(&mut data)
    .unwrap();
    let mut hasher = slipway_measure::MultiHasher::new(&banks);
    hasher.update(&region);
    log.append(
        17,
        EV_SLIPWAY_EMULATED_LAUNCH,
        &hasher.finalize_for(),
        &data[..len],
    )
    .unwrap();

    // PCR19: launch kind, command line, domB, configuration, policy.
    let len = SlipwayEvent::LaunchKind(LaunchKind::Emulated)
        .encode(&mut data)
        .unwrap();
    log.append_measured(19, EV_SLIPWAY_LAUNCH_KIND, &data[..len])
        .unwrap();
    log.append_measured(
        19,
        EV_SLIPWAY_HYPERVISOR_CMDLINE,
        b"console=com1 loglevel=3",
    )
    .unwrap();
    let domb_image: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut bound = BoundModuleHasher::new(&banks, b"domb");
    for piece in domb_image.chunks(4093) {
        bound.update(piece);
    }
    let (domb_digests, _) = bound.finalize();
    let len = SlipwayEvent::DombImage(ModuleRecord {
        name: b"domb",
        size: domb_image.len() as u64,
    })
    .encode(&mut data)
    .unwrap();
    log.append(19, EV_SLIPWAY_DOMB_IMAGE, &domb_digests, &data[..len])
        .unwrap();
    let config: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    log.append_measured(19, EV_SLIPWAY_LAUNCH_CONFIG, &config)
        .unwrap();
    log.append_measured(19, EV_SLIPWAY_POLICY, b"").unwrap();

    // PCR20: modules bound to their names.
    for (name, image) in [
        (&b"hello"[..], &b"hello image bytes"[..]),
        (b"recovery", &[0u8; 10_000][..]),
    ] {
        let len = SlipwayEvent::BootModule(ModuleRecord {
            name,
            size: image.len() as u64,
        })
        .encode(&mut data)
        .unwrap();
        log.append(
            20,
            EV_SLIPWAY_BOOT_MODULE,
            &bound_module_digests(&banks, name, image),
            &data[..len],
        )
        .unwrap();
    }
    // PCR19: the decision.
    let len = SlipwayEvent::PolicyDecision(PolicyDecision {
        reason: DecisionReason::AllChecksPassed,
        action: DecisionAction::StartAll,
        subject: b"",
    })
    .encode(&mut data)
    .unwrap();
    log.append_measured(19, EV_SLIPWAY_POLICY_DECISION, &data[..len])
        .unwrap();

    // PCR21: one build per domain, then separators.
    for name in [&b"hello"[..], b"recovery"] {
        let len = SlipwayEvent::DomainBuild(DomainBuildRecord {
            name,
            payload_format: BUILD_PAYLOAD_POSTCARD_V1,
            payload: b"\x01\x02opaque build record",
        })
        .encode(&mut data)
        .unwrap();
        log.append_measured(21, EV_SLIPWAY_DOMAIN_BUILD, &data[..len])
            .unwrap();
    }
    for pcr in SEPARATOR_PCRS {
        log.append_measured(pcr, EV_SEPARATOR, &SEPARATOR_DATA)
            .unwrap();
    }
    // PCR23 (any locality), with empty event data.
    log.append_measured(23, EV_EVENT_TAG, &[]).unwrap();
}

/// Runs tpm2_eventlog on `log`; returns its stdout (YAML) and stderr (warnings).
fn tool_output(log: &[u8], name: &str) -> (String, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("slipway-measure-{name}-{}.log", std::process::id()));
    std::fs::write(&path, log).unwrap();
    let output = match Command::new("tpm2_eventlog").arg(&path).output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "tpm2_eventlog is not installed; this cross-check needs it: \
             `apt-get install tpm2-tools` (Debian package tpm2-tools)"
        ),
        Err(error) => panic!("could not run tpm2_eventlog: {error}"),
    };
    let stdout = String::from_utf8(output.stdout).expect("tpm2_eventlog prints UTF-8");
    assert!(
        output.status.success(),
        "tpm2_eventlog rejected the log {}: {}\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr),
        stdout
    );
    std::fs::remove_file(&path).unwrap();
    (stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// tpm2_eventlog recomputes the digests of event types whose digest is the hash of their data
/// (EV_SEPARATOR, EV_S_CRTM_VERSION) and warns on a mismatch.
fn assert_no_digest_warnings(stderr: &str) {
    assert!(
        !stderr.contains("does not match"),
        "tpm2_eventlog found a digest that does not match its event data: {stderr}"
    );
}

/// The `pcrs:` section of tpm2_eventlog's YAML: `  <alg>:` then `    <n> : 0x<hex>` lines.
fn tool_pcrs(yaml: &str) -> BTreeMap<(String, u32), Vec<u8>> {
    let mut pcrs = BTreeMap::new();
    let mut lines = yaml.lines().skip_while(|line| *line != "pcrs:");
    assert!(
        lines.next().is_some(),
        "tpm2_eventlog printed no pcrs: section:\n{yaml}"
    );
    let mut alg = None;
    for line in lines {
        if !line.starts_with("  ") {
            break;
        }
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_suffix(':') {
            alg = Some(name.to_string());
            continue;
        }
        let (index, value) = trimmed
            .split_once(':')
            .unwrap_or_else(|| panic!("unexpected pcrs line {line:?}"));
        let index: u32 = index.trim().parse().expect("PCR index");
        let hex = value
            .trim()
            .strip_prefix("0x")
            .expect("0x-prefixed PCR value");
        let alg = alg.clone().expect("PCR value before a bank name");
        assert!(pcrs.insert((alg, index), decode_hex(hex)).is_none());
    }
    pcrs
}

fn tool_event_count(yaml: &str) -> usize {
    yaml.lines()
        .filter(|line| line.starts_with("- EventNum:"))
        .count()
}

fn decode_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Asserts tpm2_eventlog's replay equals ours for every bank Slipway hashes; returns how many
/// PCR values were compared, and the tool's warnings.
fn cross_check_with_warnings(log_bytes: &[u8], name: &str) -> (usize, String) {
    let log = EventLog::parse(log_bytes).unwrap();
    let ours: PcrBanks = log.replay(InitialState::DynamicLaunch).unwrap();
    let (yaml, stderr) = tool_output(log_bytes, name);
    let theirs = tool_pcrs(&yaml);
    let event_count = log.events().count();
    assert_eq!(
        tool_event_count(&yaml),
        event_count + 1,
        "tpm2_eventlog saw a different number of events (ours + header)"
    );

    // PCRs that some event extends: tpm2_eventlog prints exactly these.
    let mut extended = std::collections::BTreeSet::new();
    for event in log.events() {
        let event = event.unwrap();
        if !event.is_no_action() {
            extended.insert(event.pcr);
        }
    }
    let mut compared = 0;
    for alg in ours.banks() {
        for pcr in 0..PCR_COUNT as u32 {
            let our_value = ours.value(pcr, alg).unwrap().unwrap();
            match theirs.get(&(alg.name().to_string(), pcr)) {
                Some(their_value) => {
                    assert_eq!(
                        their_value.as_slice(),
                        our_value.as_bytes(),
                        "{name}: PCR{pcr} {alg} differs between tpm2_eventlog and measure"
                    );
                    compared += 1;
                }
                None => assert!(
                    !extended.contains(&pcr),
                    "{name}: tpm2_eventlog printed no {alg} value for extended PCR{pcr}"
                ),
            }
        }
    }
    // Every bank tpm2_eventlog printed that we track was compared in full.
    for (alg, pcr) in theirs.keys() {
        if let Some(alg) = HashAlg::from_name(alg) {
            assert!(
                ours.tracks(alg.id()),
                "{name}: untracked bank {alg} PCR{pcr}"
            );
        }
    }
    (compared, stderr)
}

/// [`cross_check_with_warnings`] for a log whose every digest must match its data.
fn cross_check(log_bytes: &[u8], name: &str) -> usize {
    let (compared, stderr) = cross_check_with_warnings(log_bytes, name);
    assert_no_digest_warnings(&stderr);
    compared
}

fn boot_log(banks: BankSet) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 20];
    let mut log = LogWriter::new(&mut buf, &LogHeader::slipway(banks)).unwrap();
    write_boot(&mut log);
    log.as_bytes().to_vec()
}

#[test]
fn all_four_banks_match_tpm2_eventlog() {
    let compared = cross_check(&boot_log(BankSet::all_supported()), "four-banks");
    // PCR0, 17, 19, 20, 21, 23 in four banks.
    assert_eq!(compared, 6 * 4);
}

#[test]
fn one_sha256_bank_matches_tpm2_eventlog() {
    let compared = cross_check(&boot_log(BankSet::single(HashAlg::Sha256)), "sha256-only");
    assert_eq!(compared, 6);
}

#[test]
fn header_order_other_than_id_order_matches_tpm2_eventlog() {
    let banks = BankSet::from_algs(&[AlgId::SHA512, AlgId::SHA1, AlgId::SHA384]).unwrap();
    let compared = cross_check(&boot_log(banks), "reordered");
    assert_eq!(compared, 6 * 3);
}

#[test]
fn capped_sm3_bank_parses_and_other_banks_match_tpm2_eventlog() {
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SM3_256]).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut log = LogWriter::new(&mut buf, &LogHeader::slipway(banks)).unwrap();
    let mut data = [0u8; 64];
    let len = SlipwayEvent::LaunchKind(LaunchKind::Emulated)
        .encode(&mut data)
        .unwrap();
    log.append_measured(19, EV_SLIPWAY_LAUNCH_KIND, &data[..len])
        .unwrap();
    let mut capped = BankSet::empty();
    for bank in banks.unsupported() {
        capped.push(bank).unwrap();
    }
    let len = SlipwayEvent::BanksCapped(capped).encode(&mut data).unwrap();
    let digests = log
        .append_measured(19, EV_SLIPWAY_BANKS_CAPPED, &data[..len])
        .unwrap();
    assert_eq!(
        digests.get(AlgId::SM3_256).unwrap().as_bytes(),
        &[0xFF; 32],
        "the SM3 bank carries the cap"
    );
    write_boot(&mut log);
    let bytes = log.as_bytes().to_vec();
    let (compared, stderr) = cross_check_with_warnings(&bytes, "sm3-capped");
    assert_eq!(compared, 6);
    // tpm2_eventlog computes SM3 itself, so the capped SM3 digests of the events it can check
    // (PCR0's EV_S_CRTM_VERSION and the three separators: events 3, 15, 16, 17) differ from
    // SM3(data): the bank holds the cap, not a measurement anyone could mistake for one.
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("does not match"))
        .collect();
    assert_eq!(warned.len(), 4, "{stderr}");
}

#[test]
fn log_appended_to_a_foreign_start_matches_tpm2_eventlog() {
    // "Another party" (say, SINIT) writes a header with its own vendor info and server class,
    // and two PCR17/18 events; Slipway resumes the log and appends its boot.
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SHA1]).unwrap();
    let mut buf = vec![0xFFu8; 1 << 20];
    let used = {
        let header = LogHeader {
            platform_class: slipway_measure::log::PLATFORM_CLASS_SERVER,
            spec_version_minor: 0,
            spec_version_major: 2,
            spec_errata: 0,
            uintn_size: 1,
            banks,
            vendor_info: b"someone else's launch code",
        };
        let mut foreign = LogWriter::new(&mut buf, &header).unwrap();
        foreign.append_measured(17, 0x404, b"MLE hash").unwrap();
        foreign.append_measured(18, 0x40a, b"authority").unwrap();
        foreign.len()
    };
    let mut log = LogWriter::resume_at_end(&mut buf).unwrap();
    assert_eq!(log.len(), used);
    assert_eq!(log.banks(), &banks);
    write_boot(&mut log);
    let bytes = log.as_bytes().to_vec();
    // PCR0, 17, 18, 19, 20, 21, 23 in two banks.
    assert_eq!(cross_check(&bytes, "appended"), 7 * 2);
}
