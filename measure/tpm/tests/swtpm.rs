//! Integration tests against a real swtpm on this machine.
//!
//! Each test starts its own `swtpm socket --tpm2` with a fresh state directory under the system
//! temp dir: the data channel is a Unix socket (`<dir>/data.sock`, raw TPM 2.0 command bytes, the
//! [`SocketTransport`] below), the control channel another Unix socket (`<dir>/ctrl.sock`), used
//! through `swtpm_ioctl` to set the locality (CMD_SET_LOCALITY) and to run the emulated dynamic
//! launch (hash start/data/end). The [`Swtpm`] guard kills swtpm and removes the directory on
//! every path, panics included.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use slipway_measure::{
    InitialState, PcrBanks as PcrModel,
    hash::{event_digests, hash},
    pcr::emulated_launch_pcr17,
};
use slipway_tpm::{
    AkTemplate, AlgId, BankSet, CommandError, DigestList, HashAlg, Hierarchy, PcrMask, StartupType,
    Tpm, TpmTransport, verify,
};
use tpm2_protocol::data::TpmCc;

/// swtpm's data channel: raw TPM commands and responses over a Unix stream socket.
struct SocketTransport {
    stream: UnixStream,
}

#[derive(Debug)]
struct SocketError(String);

impl std::fmt::Display for SocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "swtpm socket: {}", self.0)
    }
}

impl TpmTransport for SocketTransport {
    type Error = SocketError;

    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, SocketError> {
        let io = |e: std::io::Error| SocketError(e.to_string());
        self.stream.write_all(command).map_err(io)?;
        let mut header = [0u8; 10];
        self.stream.read_exact(&mut header).map_err(io)?;
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        if !(10..=response.len()).contains(&size) {
            return Err(SocketError(format!("response size {size}")));
        }
        response[..10].copy_from_slice(&header);
        self.stream
            .read_exact(&mut response[10..size])
            .map_err(io)?;
        Ok(size)
    }
}

/// A running swtpm with a fresh state directory; killed and cleaned up on drop.
struct Swtpm {
    child: Child,
    dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Swtpm {
    /// Starts swtpm; `pcr_banks` provisions the state with `swtpm_setup --pcr-banks` first
    /// (without it a fresh state has sha1, sha256, sha384 and sha512 active).
    fn start(pcr_banks: Option<&str>) -> Swtpm {
        let dir = std::env::temp_dir().join(format!(
            "slipway-tpm-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(banks) = pcr_banks {
            let output = Command::new("swtpm_setup")
                .args(["--tpm2", "--overwrite", "--pcr-banks", banks, "--tpmstate"])
                .arg(&dir)
                .output()
                .unwrap_or_else(|e| panic!("swtpm_setup (package swtpm-tools) not runnable: {e}"));
            assert!(
                output.status.success(),
                "swtpm_setup failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let child = Command::new("swtpm")
            // --terminate: swtpm exits when the data connection closes, so even a test process
            // killed before its Drop guard runs leaves no swtpm behind.
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
            .arg("--log")
            .arg(format!("file={},level=1", dir.join("swtpm.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("swtpm (package swtpm) not runnable: {e}"));
        let mut swtpm = Swtpm { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(swtpm.data_socket().exists() && swtpm.ctrl_socket().exists()) {
            if let Some(status) = swtpm.child.try_wait().unwrap() {
                panic!("swtpm exited early: {status}");
            }
            assert!(Instant::now() < deadline, "swtpm sockets did not appear");
            thread::sleep(Duration::from_millis(10));
        }
        swtpm
    }

    fn data_socket(&self) -> PathBuf {
        self.dir.join("data.sock")
    }

    fn ctrl_socket(&self) -> PathBuf {
        self.dir.join("ctrl.sock")
    }

    /// Connects the data channel and runs TPM2_Startup(CLEAR) through the helpers.
    fn started(&self) -> Tpm<SocketTransport> {
        let stream = self.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut tpm = Tpm::new(SocketTransport { stream });
        tpm.startup(StartupType::Clear).unwrap();
        tpm
    }

    /// Connects the data channel. The socket file appears before swtpm listens on it, so a
    /// refused connection is retried. The connection is kept: with `--terminate`, closing it
    /// ends swtpm.
    fn connect(&self) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(self.data_socket()) {
                Ok(stream) => return stream,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("swtpm data socket: {e}"),
            }
        }
    }

    /// `swtpm_ioctl` on the control channel, with a time limit; a failure is retried while the
    /// control socket may not listen yet (a refused connection changes nothing in the TPM).
    fn ioctl(&self, args: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new("swtpm_ioctl")
                .arg("--unix")
                .arg(self.ctrl_socket())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("swtpm_ioctl (package swtpm-tools) not runnable: {e}"));
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("swtpm_ioctl {args:?} hung");
                }
                thread::sleep(Duration::from_millis(5));
            };
            if status.success() {
                return;
            }
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            let refused = stderr.contains("onnection refused") || stderr.contains("No such file");
            assert!(
                refused && Instant::now() < deadline,
                "swtpm_ioctl {args:?}: {status}: {stderr}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// CMD_SET_LOCALITY: later data-channel commands run at `locality`.
    fn set_locality(&self, locality: u8) {
        self.ioctl(&["-l", &locality.to_string()]);
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_all(tpm: &mut Tpm<SocketTransport>, banks: &BankSet, pcrs: PcrMask) -> PcrModel {
    let mut model = PcrModel::new(banks, InitialState::NoDynamicLaunch);
    for bank in banks.iter() {
        let values = tpm.pcr_read(bank.alg, pcrs).unwrap();
        for (pcr, digest) in values.iter() {
            model.set(u32::from(pcr), digest).unwrap();
        }
    }
    model
}

fn assert_pcrs_equal(tpm: &PcrModel, model: &PcrModel, banks: &BankSet, pcrs: PcrMask) {
    for alg in banks.supported() {
        for pcr in pcrs.iter() {
            assert_eq!(
                tpm.value(u32::from(pcr), alg).unwrap(),
                model.value(u32::from(pcr), alg).unwrap(),
                "PCR{pcr} {alg}"
            );
        }
    }
}

#[test]
fn fresh_swtpm_has_four_banks_and_drtm_pcrs_read_all_ff() {
    let swtpm = Swtpm::start(None);
    let mut tpm = swtpm.started();
    let allocation = tpm.pcr_allocation().unwrap();
    let banks = allocation.active_banks();
    assert_eq!(
        banks,
        BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256, AlgId::SHA384, AlgId::SHA512]).unwrap()
    );
    for bank in banks.iter() {
        assert_eq!(allocation.allocated(bank.alg), PcrMask::ALL);
    }
    let read = read_all(&mut tpm, &banks, PcrMask::ALL);
    let model = PcrModel::new(&banks, InitialState::NoDynamicLaunch);
    assert_pcrs_equal(&read, &model, &banks, PcrMask::ALL);
    // PCR_Read returns at most 8 digests: 24 PCRs take 3 commands per bank.
    assert_eq!(tpm.counts().get(TpmCc::PcrRead), 12);
}

#[test]
fn swtpm_setup_with_one_bank_leaves_only_sha256_active() {
    let swtpm = Swtpm::start(Some("sha256"));
    let mut tpm = swtpm.started();
    let allocation = tpm.pcr_allocation().unwrap();
    assert_eq!(allocation.active_banks(), BankSet::single(HashAlg::Sha256));
    // The other banks are implemented but have no PCR allocated.
    assert_eq!(allocation.allocated(AlgId::SHA1), PcrMask::EMPTY);
    assert!(allocation.iter().count() >= 2);
    assert!(matches!(
        tpm.pcr_read(AlgId::SHA1, PcrMask::DRTM),
        Err(CommandError::UnexpectedResponse { .. })
    ));
}

#[test]
fn extend_at_locality_0_matches_the_software_model() {
    let swtpm = Swtpm::start(None);
    let mut tpm = swtpm.started();
    let banks = tpm.active_banks().unwrap();
    let mut model = PcrModel::new(&banks, InitialState::NoDynamicLaunch);
    for (pcr, data) in [(16u8, &b"slipway"[..]), (23, b"debug"), (16, b"again")] {
        let digests: DigestList = event_digests(&banks, data);
        tpm.pcr_extend(pcr, &digests, &banks).unwrap();
        for digest in digests.iter() {
            model.extend(u32::from(pcr), digest).unwrap();
        }
    }
    let pcrs = PcrMask::range(16, 16).with(23);
    let read = read_all(&mut tpm, &banks, pcrs);
    assert_pcrs_equal(&read, &model, &banks, pcrs);
    assert_ne!(
        read.value(16, HashAlg::Sha256).unwrap(),
        PcrModel::new(&banks, InitialState::NoDynamicLaunch)
            .value(16, HashAlg::Sha256)
            .unwrap()
    );
    // One PCR_Extend per measured object, all banks in it.
    assert_eq!(tpm.counts().get(TpmCc::PcrExtend), 3);
}

#[test]
fn locality_rules_for_the_dynamic_launch_pcrs() {
    let swtpm = Swtpm::start(None);
    let mut tpm = swtpm.started();
    let banks = tpm.active_banks().unwrap();
    let digests = event_digests(&banks, b"policy");
    // Locality 0 may not extend PCR19-21: TPM_RC_LOCALITY.
    for pcr in [19, 20, 21] {
        match tpm.pcr_extend(pcr, &digests, &banks) {
            Err(CommandError::Tpm { command, rc }) => {
                assert_eq!(command, TpmCc::PcrExtend);
                assert!(rc.is_locality(), "{rc}");
                assert_eq!(rc.value(), 0x907);
            }
            other => panic!("PCR{pcr} at locality 0: {other:?}"),
        }
    }
    // Locality 2 (the hypervisor's) may: PCR19-21 start all-FF without a dynamic launch.
    swtpm.set_locality(2);
    let mut model = PcrModel::new(&banks, InitialState::NoDynamicLaunch);
    for pcr in [19u8, 20, 21] {
        tpm.pcr_extend(pcr, &digests, &banks).unwrap();
        for digest in digests.iter() {
            model.extend(u32::from(pcr), digest).unwrap();
        }
    }
    let read = read_all(&mut tpm, &banks, PcrMask::DRTM);
    assert_pcrs_equal(&read, &model, &banks, PcrMask::DRTM);
    let error = tpm
        .pcr_extend(
            19,
            &event_digests(&BankSet::single(HashAlg::Sha256), b"x"),
            &banks,
        )
        .unwrap_err();
    assert!(matches!(error, CommandError::Digests(_)), "{error}");
}

#[test]
fn emulated_dynamic_launch_resets_pcr17_to_the_region_hash() {
    let swtpm = Swtpm::start(None);
    let mut tpm = swtpm.started();
    let banks = tpm.active_banks().unwrap();
    let region = "slipway measured region";
    // hash start/data/end on the control channel: what SENTER/SKINIT do to PCR17-22.
    swtpm.ioctl(&["-h", region]);
    let read = read_all(&mut tpm, &banks, PcrMask::DRTM);
    let pcr17 = emulated_launch_pcr17(&banks, region.as_bytes());
    for digest in pcr17.iter() {
        let alg = digest.hash_alg().unwrap();
        assert_eq!(read.value(17, alg).unwrap().as_ref(), Some(digest), "{alg}");
        for pcr in 18..=22 {
            assert_eq!(
                read.value(pcr, alg).unwrap(),
                Some(slipway_measure::Digest::zero(alg)),
                "PCR{pcr} {alg}"
            );
        }
    }
}

/// Creates the AK, extends PCR17-21-relevant state, quotes and verifies on the host.
fn quote_round_trip(pcr_banks: Option<&str>) {
    let swtpm = Swtpm::start(pcr_banks);
    let mut tpm = swtpm.started();
    let banks = tpm.active_banks().unwrap();
    swtpm.ioctl(&["-h", "region"]);
    swtpm.set_locality(2);
    for (pcr, data) in [(19u8, &b"launch kind"[..]), (20, b"module"), (21, b"plan")] {
        tpm.pcr_extend(pcr, &event_digests(&banks, data), &banks)
            .unwrap();
    }
    // The control domain quotes at locality 0.
    swtpm.set_locality(0);
    let key = tpm
        .create_primary(Hierarchy::Endorsement, AkTemplate::EccP256)
        .unwrap();
    // Same template, same seed: the same key.
    let again = tpm
        .create_primary(Hierarchy::Endorsement, AkTemplate::EccP256)
        .unwrap();
    assert_eq!(key.public_area(), again.public_area());
    tpm.flush_context(again.handle).unwrap();
    // The re-marshaled public area is byte-exact: its hash is the TPM's name for the key.
    assert_eq!(verify::public_name(key.public_area()).unwrap(), key.name());

    let nonce = b"fleet nonce 0123456789";
    let quote = tpm.quote(&key, nonce, &banks, PcrMask::QUOTE).unwrap();
    let verified =
        verify::verify_quote(key.public_area(), quote.attest(), quote.signature(), nonce).unwrap();
    assert_eq!(verified.digest_alg, HashAlg::Sha256);
    let selection: Vec<_> = verified.info.pcr_selection.clone();
    assert_eq!(
        selection,
        banks
            .iter()
            .map(|bank| (bank.alg, PcrMask::QUOTE))
            .collect::<Vec<_>>()
    );
    // pcrDigest = H(concatenation of the PCR values read back).
    let read = read_all(&mut tpm, &banks, PcrMask::QUOTE);
    verified
        .check_pcrs(|alg, pcr| read.value(u32::from(pcr), alg.hash_alg()?).ok()?)
        .unwrap();
    let mut concatenated = Vec::new();
    for bank in banks.iter() {
        for pcr in 17..=21 {
            let value = read.value(pcr, bank.hash_alg().unwrap()).unwrap().unwrap();
            concatenated.extend_from_slice(value.as_bytes());
        }
    }
    assert_eq!(
        verified.info.pcr_digest,
        hash(HashAlg::Sha256, &concatenated).as_bytes()
    );
    // A wrong expectation is named.
    assert!(matches!(
        verified.check_pcrs(|alg, pcr| {
            let value = read.value(u32::from(pcr), alg.hash_alg()?).ok()??;
            Some(if pcr == 20 {
                hash(HashAlg::Sha256, b"x")
            } else {
                value
            })
        }),
        Err(verify::VerifyError::PcrDigestMismatch { .. })
    ));
    // Wrong nonce, tampered attestation, foreign key: refused.
    assert!(matches!(
        verify::verify_quote(
            key.public_area(),
            quote.attest(),
            quote.signature(),
            b"other"
        ),
        Err(verify::VerifyError::NonceMismatch { .. })
    ));
    let mut tampered = quote.attest().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        verify::verify_quote(key.public_area(), &tampered, quote.signature(), nonce),
        Err(verify::VerifyError::BadSignature)
    );
    let owner_key = tpm
        .create_primary(Hierarchy::Owner, AkTemplate::EccP256)
        .unwrap();
    assert_ne!(owner_key.public_area(), key.public_area());
    assert_eq!(
        verify::verify_quote(
            owner_key.public_area(),
            quote.attest(),
            quote.signature(),
            nonce
        ),
        Err(verify::VerifyError::BadSignature)
    );
    tpm.flush_context(owner_key.handle).unwrap();
    tpm.flush_context(key.handle).unwrap();
    let counts = tpm.counts();
    // swtpm (libtpms) answers the first ECDSA signature after start-up with TPM_RC_RETRY, and
    // the helper sends the command again: one quote, one or two TPM2_Quote commands.
    assert!((1..=2).contains(&counts.get(TpmCc::Quote)), "{counts}");
    assert_eq!(counts.get(TpmCc::CreatePrimary), 3);
    assert_eq!(counts.get(TpmCc::PcrExtend), 3);
    println!("{counts}");
}

#[test]
fn quote_over_four_banks_verifies_on_the_host() {
    quote_round_trip(None);
}

#[test]
fn quote_over_one_bank_verifies_on_the_host() {
    quote_round_trip(Some("sha256"));
}

#[test]
fn rsa_attestation_key_quotes_with_rsassa() {
    let swtpm = Swtpm::start(None);
    let mut tpm = swtpm.started();
    let banks = tpm.active_banks().unwrap();
    let key = tpm
        .create_primary(Hierarchy::Endorsement, AkTemplate::Rsa2048)
        .unwrap();
    assert_eq!(verify::public_name(key.public_area()).unwrap(), key.name());
    let quote = tpm.quote(&key, b"nonce", &banks, PcrMask::QUOTE).unwrap();
    let info = verify::parse_quote_attest(quote.attest()).unwrap();
    assert_eq!(info.extra_data, b"nonce");
    // TPMT_SIGNATURE: sigAlg TPM_ALG_RSASSA, hash SHA-256, a 256-byte signature.
    assert_eq!(
        &quote.signature()[..6],
        &[0x00, 0x14, 0x00, 0x0b, 0x01, 0x00]
    );
    assert_eq!(quote.signature().len(), 6 + 256);
    assert!(matches!(
        verify::parse_public(key.public_area()),
        Err(verify::VerifyError::UnsupportedKey(_))
    ));
    tpm.flush_context(key.handle).unwrap();
}

#[test]
fn commands_before_startup_are_refused_with_initialize() {
    let swtpm = Swtpm::start(None);
    let mut tpm = Tpm::new(SocketTransport {
        stream: swtpm.connect(),
    });
    match tpm.pcr_allocation() {
        Err(CommandError::Tpm { rc, .. }) => {
            assert_eq!(rc, slipway_tpm::ResponseCode::INITIALIZE, "{rc}")
        }
        other => panic!("{other:?}"),
    }
    tpm.startup(StartupType::Clear).unwrap();
    assert_eq!(tpm.counts().total(), 2);
}

/// The boot record's NV index on a real TPM: created on first use, counted, readable at
/// locality 0, writable only under the locality-2 policy.
#[test]
fn boot_record_index_is_created_counted_and_writable_only_at_locality_2() {
    use slipway_measure::events::BootRecordStatus;
    use slipway_tpm::boot_record::{self, BOOT_RECORD_INDEX, BootRecord, Note, count_boot};

    let swtpm = Swtpm::start(None);
    let mut tpm = swtpm.started();
    assert_eq!(tpm.nv_read_public(BOOT_RECORD_INDEX).unwrap(), None);

    // At locality 0 the index is defined (owner authorization is empty) but the counting
    // write is refused: nothing is counted.
    let (counted, error) = count_boot(&mut tpm, 1, 4);
    assert_eq!(counted.state.status, BootRecordStatus::Unavailable);
    assert_eq!(counted.note, Note::TpmFailed("NV_Write"));
    match error {
        Some(CommandError::Tpm { command, rc }) => {
            assert_eq!(command, TpmCc::NvWrite);
            assert!(rc.is_locality(), "{rc}");
        }
        other => panic!("write at locality 0: {other:?}"),
    }
    let public = tpm.nv_read_public(BOOT_RECORD_INDEX).unwrap().unwrap();
    assert!(public.matches(&boot_record::template()), "{public:?}");
    assert!(!public.written());

    // At locality 2 (the hypervisor's) the first count writes a fresh record.
    swtpm.set_locality(2);
    let (counted, error) = count_boot(&mut tpm, 1, 4);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(counted.state.status, BootRecordStatus::Created);
    assert_eq!(counted.state.attempts, 1);
    let (counted, _) = count_boot(&mut tpm, 1, 4);
    assert_eq!(counted.state.status, BootRecordStatus::Counted);
    assert_eq!(counted.state.attempts, 2);
    let success = counted.record.unwrap().after_success(1);
    tpm.nv_write_with_locality_policy(BOOT_RECORD_INDEX, 0x04, &success.encode())
        .unwrap();

    // Anyone reads it (locality 0, empty authValue); nobody at locality 0 writes it: not under
    // the locality-2 policy, and not with a policy for locality 0 (the index's authPolicy
    // differs).
    swtpm.set_locality(0);
    let mut bytes = [0u8; 16];
    tpm.nv_read(BOOT_RECORD_INDEX, &mut bytes).unwrap();
    assert_eq!(
        BootRecord::decode(&bytes, 4).unwrap(),
        BootRecord {
            current_slot: 1,
            attempts: 0,
            last_known_good: Some(1)
        }
    );
    let forged = BootRecord::fresh(0).encode();
    let error = tpm
        .nv_write_with_locality_policy(BOOT_RECORD_INDEX, 0x04, &forged)
        .unwrap_err();
    assert!(
        matches!(&error, CommandError::Tpm { rc, .. } if rc.is_locality()),
        "{error}"
    );
    let error = tpm
        .nv_write_with_locality_policy(BOOT_RECORD_INDEX, 0x01, &forged)
        .unwrap_err();
    assert!(matches!(error, CommandError::Tpm { .. }), "{error}");
    tpm.nv_read(BOOT_RECORD_INDEX, &mut bytes).unwrap();
    assert_eq!(
        BootRecord::decode(&bytes, 4).unwrap().last_known_good,
        Some(1)
    );
}
