//! The decision logic on synthetic runs: a real swtpm performs the emulated launch (hash
//! start/data/end), the extends at locality 2 and the quote at locality 0, exactly as the
//! hypervisor and the attest domain do; the transcript is rendered in the attest format.

use super::*;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use slipway_measure::events::{
    DomainBuildRecord, ModuleRecord, PCR_BOOT_MODULES, PCR_BUILD_INPUTS, PCR_DOMAIN_BUILDS,
    SEPARATOR_PCRS,
};
use slipway_measure::hash::bound_module_digests;
use slipway_measure::log::LogHeader;
use slipway_measure::{BankSet, LogWriter, MultiHasher};
use slipway_tpm::{AkTemplate, Hierarchy, StartupType, Tpm, TpmTransport};

struct SocketTransport(UnixStream);

impl TpmTransport for SocketTransport {
    type Error = std::io::Error;
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.write_all(command)?;
        let mut header = [0u8; 10];
        self.0.read_exact(&mut header)?;
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        assert!(
            (10..=response.len()).contains(&size),
            "response size {size}"
        );
        response[..10].copy_from_slice(&header);
        self.0.read_exact(&mut response[10..size])?;
        Ok(size)
    }
}

/// A swtpm with a fresh state directory, killed and removed on drop.
struct Swtpm {
    child: Child,
    dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Swtpm {
    fn start(pcr_banks: Option<&str>) -> (Swtpm, Tpm<SocketTransport>) {
        let dir = std::env::temp_dir().join(format!(
            "slipway-verify-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(banks) = pcr_banks {
            let out = Command::new("swtpm_setup")
                .args(["--tpm2", "--overwrite", "--pcr-banks", banks, "--tpmstate"])
                .arg(&dir)
                .output()
                .expect("swtpm_setup (apt-get install swtpm-tools)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let child = Command::new("swtpm")
            .args([
                "socket",
                "--tpm2",
                "--terminate",
                "--flags",
                "not-need-init",
            ])
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .arg("--server")
            .arg(format!(
                "type=unixio,path={}",
                dir.join("data.sock").display()
            ))
            .arg("--ctrl")
            .arg(format!(
                "type=unixio,path={}",
                dir.join("ctrl.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (apt-get install swtpm)");
        let swtpm = Swtpm { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(swtpm.dir.join("data.sock")) {
                Ok(stream) => break stream,
                Err(e) => {
                    assert!(Instant::now() < deadline, "swtpm data socket: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut tpm = Tpm::new(SocketTransport(stream));
        tpm.startup(StartupType::Clear).unwrap();
        (swtpm, tpm)
    }

    fn ioctl(&self, args: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("timeout")
                .arg("10")
                .arg("swtpm_ioctl")
                .arg("--unix")
                .arg(self.dir.join("ctrl.sock"))
                .args(args)
                .output()
                .expect("swtpm_ioctl");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "swtpm_ioctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const REGION: &str = "slipway measured region (test)";
const KERNEL: &[u8] = b"hello kernel bytes";

/// A Slipway-shaped log: the PCR17 launch event (emulated) or none, the launch kind, a module,
/// a build, the separators.
fn slipway_log(banks: &BankSet, launched: bool, kernel: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut log = LogWriter::new(&mut buf, &LogHeader::slipway(*banks)).unwrap();
    if launched {
        let mut hasher = MultiHasher::new(banks);
        hasher.update(REGION.as_bytes());
        log.append_slipway(
            17,
            &SlipwayEvent::EmulatedLaunch {
                region_start: 0x20_0000,
                region_size: REGION.len() as u64,
            },
            Some(&hasher.finalize()),
        )
        .unwrap();
    }
    let kind = if launched {
        EventLaunchKind::Emulated
    } else {
        EventLaunchKind::Unmeasured
    };
    log.append_slipway(PCR_BUILD_INPUTS, &SlipwayEvent::LaunchKind(kind), None)
        .unwrap();
    log.append_slipway(
        PCR_BOOT_MODULES,
        &SlipwayEvent::BootModule(ModuleRecord {
            name: b"hello",
            size: kernel.len() as u64,
        }),
        Some(&bound_module_digests(banks, b"hello", kernel)),
    )
    .unwrap();
    log.append_slipway(
        PCR_DOMAIN_BUILDS,
        &SlipwayEvent::DomainBuild(DomainBuildRecord {
            name: b"ctl",
            payload_format: 1,
            payload: b"record",
        }),
        None,
    )
    .unwrap();
    for pcr in SEPARATOR_PCRS {
        log.append_slipway(pcr, &SlipwayEvent::Separator, None)
            .unwrap();
    }
    log.as_bytes().to_vec()
}

fn blob(out: &mut String, kind: &str, bytes: &[u8]) {
    let _ = writeln!(out, "[ctl] attest: begin {kind} {}", bytes.len());
    for chunk in bytes.chunks(72) {
        let _ = writeln!(
            out,
            "[ctl] attest: b64 {}",
            base64::engine::general_purpose::STANDARD.encode(chunk)
        );
    }
    let _ = writeln!(out, "[ctl] attest: end {kind}");
}

/// Runs a machine: the launch (if `launched`), extends of `log`'s events at locality 2, then a
/// quote at locality 0. Returns the transcript text.
fn run_machine(
    pcr_banks: Option<&str>,
    launched: bool,
    log: impl Fn(&BankSet) -> Vec<u8>,
) -> (String, BankSet) {
    let (swtpm, mut tpm) = Swtpm::start(pcr_banks);
    let banks = tpm.active_banks().unwrap();
    let log = log(&banks);
    if launched {
        swtpm.ioctl(&["-h", REGION]);
    }
    swtpm.ioctl(&["-l", "2"]);
    for event in EventLog::parse(&log).unwrap().events() {
        let event = event.unwrap();
        if event.pcr != 17 {
            tpm.pcr_extend(event.pcr as u8, &event.digests, &banks)
                .unwrap();
        }
    }
    swtpm.ioctl(&["-l", "0"]);
    let key = tpm
        .create_primary(Hierarchy::Endorsement, AkTemplate::EccP256)
        .unwrap();
    let quote = tpm.quote(&key, NONCE, &banks, PcrMask::QUOTE).unwrap();
    let mut out = String::from("slipway: milestone hand-off at 1 us\n[ctl] attest: nonce?\n");
    let _ = writeln!(out, "[ctl] attest: nonce {}", hexs(NONCE));
    blob(&mut out, "ak-public", key.public_area());
    blob(&mut out, "quote-attest", quote.attest());
    blob(&mut out, "quote-signature", quote.signature());
    blob(&mut out, "slipway-log", &log);
    out.push_str("[ctl] attest: pcr 17 sha256 00\n[ctl] attest: done\n");
    (out, banks)
}

/// tpm2_checkquote (tpm2-tools), an independent oracle of the quote checks: the transcript's
/// evidence exported as `cargo xtask export` writes it (`ak.pem`, `quote.msg`, `quote.sig`, the
/// PCR values file from the log's replay, the log), checked with `nonce`, and again with a
/// changed PCR value. Returns whether the tool accepted the genuine files.
fn checkquote_accepts(transcript: &Transcript, nonce: &[u8], name: &str) -> bool {
    let dir = std::env::temp_dir().join(format!(
        "slipway-checkquote-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in crate::fleet::export_files(transcript).unwrap() {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let run = |pcrs: &str| {
        let out = Command::new("tpm2_checkquote")
            .arg("-u")
            .arg(dir.join("ak.pem"))
            .arg("-m")
            .arg(dir.join("quote.msg"))
            .arg("-s")
            .arg(dir.join("quote.sig"))
            .args(["-q", &hexs(nonce), "-g", "sha256", "-f"])
            .arg(dir.join(pcrs))
            .arg("-e")
            .arg(dir.join("slipway.log"))
            .output()
            .expect("tpm2_checkquote (apt-get install tpm2-tools)");
        out.status.success()
    };
    let accepted = run("quote.pcrs");
    let mut pcrs = std::fs::read(dir.join("quote.pcrs")).unwrap();
    let first_value = 4 + 16 * 8 + 4 + 4 + 2;
    pcrs[first_value] ^= 1;
    std::fs::write(dir.join("changed.pcrs"), &pcrs).unwrap();
    assert!(
        !run("changed.pcrs"),
        "tpm2_checkquote accepts a changed PCR value"
    );
    let _ = std::fs::remove_dir_all(&dir);
    accepted
}

fn hexs(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const NONCE: &[u8] = b"\x01\x02fleet-nonce-0123456789";

fn requirements(expected_log: Vec<u8>) -> Requirements {
    Requirements {
        nonce: NONCE.to_vec(),
        bank: HashAlg::Sha256,
        expected_log,
    }
}

#[test]
fn a_genuine_run_is_accepted_in_every_bank_and_tampering_is_named() {
    let (text, banks) = run_machine(None, true, |b| slipway_log(b, true, KERNEL));
    assert_eq!(banks.len(), 4);
    let transcript = parse_transcript(&text).unwrap();
    assert_eq!(transcript.nonce.as_deref(), Some(NONCE));
    let expected = slipway_log(&banks, true, KERNEL);
    let accepted = verify(&transcript, &requirements(expected.clone())).unwrap();
    assert_eq!(accepted.quoted_banks, HashAlg::ALL);
    assert_eq!(accepted.pcrs.len(), 5);
    assert!(
        checkquote_accepts(&transcript, NONCE, "genuine"),
        "the oracle agrees"
    );
    for bank in [HashAlg::Sha384, HashAlg::Sha512] {
        let mut req = requirements(expected.clone());
        req.bank = bank;
        verify(&transcript, &req).unwrap();
    }

    // SHA-1 is never enough.
    let mut req = requirements(expected.clone());
    req.bank = HashAlg::Sha1;
    assert_eq!(verify(&transcript, &req).unwrap_err().exit_code(), 2);

    // A different nonce: not fresh.
    let mut req = requirements(expected.clone());
    req.nonce = b"another nonce".to_vec();
    let error = verify(&transcript, &req).unwrap_err();
    assert!(matches!(error, Rejection::Quote(_)), "{error}");
    assert_eq!(error.exit_code(), 3);
    assert!(!checkquote_accepts(&transcript, b"another nonce", "nonce"));

    // A flipped bit in the signed attestation.
    let mut forged = transcript.clone();
    let last = forged.quote_attest.len() - 1;
    forged.quote_attest[last] ^= 1;
    assert!(matches!(
        verify(&forged, &requirements(expected.clone())),
        Err(Rejection::Quote(_))
    ));
    assert!(!checkquote_accepts(&forged, NONCE, "forged"));

    // A log that does not explain the quote (the module claims other bytes).
    let mut lying = transcript.clone();
    lying.slipway_log = slipway_log(&banks, true, b"other kernel");
    let error = verify(&lying, &requirements(expected.clone())).unwrap_err();
    assert!(matches!(error, Rejection::Log(_)), "{error}");
    assert!(!checkquote_accepts(&lying, NONCE, "lying-log"));

    // The machine ran another kernel than predicted: the module's event is named.
    let other = slipway_log(&banks, true, b"predicted kernel");
    let error = verify(&transcript, &requirements(other)).unwrap_err();
    let message = error.to_string();
    assert_eq!(error.exit_code(), 5, "{message}");
    assert!(message.contains("#2"), "{message}");
    assert!(message.contains("PCR20"), "{message}");
    assert!(message.contains("BOOT_MODULE module `hello`"), "{message}");
}

#[test]
fn one_bank_tpm_passes_and_a_missing_required_bank_is_named() {
    let (text, banks) = run_machine(Some("sha256"), true, |b| slipway_log(b, true, KERNEL));
    assert_eq!(banks.len(), 1);
    let transcript = parse_transcript(&text).unwrap();
    let expected = slipway_log(&banks, true, KERNEL);
    verify(&transcript, &requirements(expected.clone())).unwrap();
    assert!(
        checkquote_accepts(&transcript, NONCE, "one-bank"),
        "the oracle agrees"
    );
    let mut req = requirements(expected);
    req.bank = HashAlg::Sha384;
    let error = verify(&transcript, &req).unwrap_err();
    assert!(matches!(error, Rejection::BankMissing { .. }), "{error}");
}

#[test]
fn no_dynamic_launch_is_reported_as_unmeasured() {
    let (text, banks) = run_machine(Some("sha256"), false, |b| slipway_log(b, false, KERNEL));
    let transcript = parse_transcript(&text).unwrap();
    let error = verify(
        &transcript,
        &requirements(slipway_log(&banks, true, KERNEL)),
    )
    .unwrap_err();
    assert!(matches!(error, Rejection::Unmeasured(_)), "{error}");
    assert!(error.to_string().contains("unmeasured launch"));
    assert!(error.to_string().contains("`unmeasured`") || error.to_string().contains("unmeasured"));
    assert_eq!(error.exit_code(), 4);
}

#[test]
fn transcript_framing_errors_are_named() {
    let ok = "[ctl] attest: begin ak-public 3\n[ctl] attest: b64 AQID\n[ctl] attest: end ak-public\n\
              attest: begin quote-attest 1\nattest: b64 AA==\nattest: end quote-attest\n\
              attest: begin quote-signature 1\nattest: b64 AA==\nattest: end quote-signature\n\
              attest: nonce 0a0b\nattest: done\n";
    let t = parse_transcript(ok).unwrap();
    assert_eq!(t.ak_public, [1, 2, 3]);
    assert_eq!(t.nonce, Some(vec![10, 11]));
    assert!(t.slipway_log.is_empty());

    let truncated = &ok[..ok.find("attest: end quote-attest").unwrap()];
    assert!(matches!(
        parse_transcript(truncated),
        Err(TranscriptError::Framing { .. })
    ));
    assert_eq!(
        parse_transcript(&ok.replace("attest: done\n", "")),
        Err(TranscriptError::Missing("done"))
    );
    let wrong_len = ok.replace("ak-public 3", "ak-public 4");
    assert!(
        parse_transcript(&wrong_len)
            .unwrap_err()
            .to_string()
            .contains("4")
    );
    let bad_b64 = ok.replace("AQID", "A*ID");
    assert!(
        parse_transcript(&bad_b64)
            .unwrap_err()
            .to_string()
            .contains("base64")
    );
    let twice = format!("{ok}attest: begin ak-public 3\nattest: b64 AQID\nattest: end ak-public\n");
    assert!(
        parse_transcript(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    assert!(matches!(
        parse_transcript("attest: error no TPM page\n"),
        Err(TranscriptError::DomainFailed(_))
    ));
    assert_eq!(parse_hex("0x0A0b"), Ok(vec![10, 11]));
    assert!(parse_hex("abc").is_err());
    assert!(parse_hex("zz").is_err());
    assert!(parse_hex(&"00".repeat(65)).is_err());
}

#[test]
fn banks_are_named() {
    assert_eq!(parse_bank("sha384"), Ok(HashAlg::Sha384));
    assert!(parse_bank("md5").unwrap_err().contains("`md5`"));
}

#[test]
fn a_differing_policy_decision_or_program_is_named() {
    use slipway_measure::events::{
        DecisionAction, DecisionReason, EV_SLIPWAY_POLICY, EV_SLIPWAY_POLICY_DECISION,
        PolicyDecision, SlipwayEvent,
    };
    let decision = SlipwayEvent::PolicyDecision(PolicyDecision {
        reason: DecisionReason::PolicyFailed,
        action: DecisionAction::StartRecoveryOnly,
        subject: b"out-of-fuel",
    });
    let mut data = vec![0; decision.encoded_len()];
    decision.encode(&mut data).unwrap();
    let event = Event {
        offset: 0,
        pcr: 19,
        event_type: EV_SLIPWAY_POLICY_DECISION,
        digests: slipway_measure::DigestList::new(),
        data: &data,
    };
    assert_eq!(
        name_event(&event),
        "PCR19 type 0x608 EV_SLIPWAY_POLICY_DECISION policy decision policy-failed -> \
         start-recovery-only `out-of-fuel`"
    );
    let text = b"slipway launch policy v2\nprogram: module policy\nprogram-size: 9\n\
                 program-sha256: abcd\nhost-api: 1\n";
    let event = Event {
        offset: 0,
        pcr: 19,
        event_type: EV_SLIPWAY_POLICY,
        digests: slipway_measure::DigestList::new(),
        data: text,
    };
    assert_eq!(
        name_event(&event),
        "PCR19 type 0x605 EV_SLIPWAY_POLICY policy program `module policy` sha256:abcd"
    );
}

#[test]
fn a_hex_nonce_with_a_multibyte_character_is_refused_not_a_panic() {
    // "aé1": four bytes, an even count, but slicing two bytes at a time splits the "é".
    assert_eq!(
        parse_hex("a\u{e9}1"),
        Err("`a\u{e9}1` is not hex".to_owned())
    );
    let echoed = "attest: nonce 0\u{e9}0\nattest: done\n";
    assert!(matches!(
        parse_transcript(echoed),
        Err(TranscriptError::Framing { line: 1, .. })
    ));
}

#[test]
fn boot_state_and_slot_choice_events_are_named_with_their_contents() {
    use slipway_measure::events::{BootRecordStatus, BootStateRecord, SlotChoice};
    let banks = BankSet::single(slipway_measure::HashAlg::Sha256);
    let mut buf = vec![0u8; 4096];
    let mut log = LogWriter::new(&mut buf, &LogHeader::slipway(banks)).unwrap();
    let state = SlipwayEvent::BootState(BootStateRecord {
        status: BootRecordStatus::Counted,
        requested_slot: 1,
        attempts: 3,
        last_known_good: Some(0),
    });
    log.append_slipway(19, &state, None).unwrap();
    let choice = SlipwayEvent::SlotChoice(SlotChoice { from: 1, to: 0 });
    log.append_slipway(19, &choice, None).unwrap();
    let bytes = log.as_bytes().to_vec();
    let parsed = EventLog::parse(&bytes).unwrap();
    let names: Vec<String> = parsed.events().map(|e| name_event(&e.unwrap())).collect();
    assert!(
        names[0].ends_with(
            "(boot record counted: slot b requested, attempt 3, last known-good slot a)"
        ),
        "{}",
        names[0]
    );
    assert!(names[1].ends_with("(slot a chosen over b)"), "{}", names[1]);
    assert!(names[0].contains("EV_SLIPWAY_BOOT_STATE"), "{}", names[0]);
}

#[test]
fn bundles_with_the_attest_guest_or_the_linux_initramfs_attest() {
    let manifest = |modules: &str| {
        crate::bundle::Manifest::parse(std::path::Path::new("images/x/bundle.toml"), modules)
            .unwrap()
    };
    assert!(bundle_attests(&manifest(
        "[[module]]\nname = \"attest\"\nbinary = \"slipway-guest-attest\"\n"
    )));
    assert!(bundle_attests(&manifest(
        "[[module]]\nname = \"vmlinux\"\ngenerated = \"linux-kernel\"\n\
         [[module]]\nname = \"initramfs\"\ngenerated = \"linux-initramfs\"\n"
    )));
    assert!(!bundle_attests(&manifest(
        "[[module]]\nname = \"vmlinux\"\ngenerated = \"linux-kernel\"\n\
         [[module]]\nname = \"hello\"\nbinary = \"slipway-guest-hello\"\n"
    )));
}
