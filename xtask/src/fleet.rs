//! A transcript's evidence in the formats of the tools fleets already run: tpm2-tools
//! (`tpm2_checkquote`) and Keylime (its verifier's quote format). `cargo xtask export` writes
//! them as files; the tests hand them to the real tools as independent checks of `verify`.
//!
//! Formats (tpm2-tools 5.4, Keylime 7.14.3):
//! - the attestation key as a PEM SubjectPublicKeyInfo (`ak.pem`, `tpm2_checkquote -u`), and as
//!   a TPM2B_PUBLIC (`ak.pub`: big-endian u16 size, then the TPMT_PUBLIC; what Keylime's
//!   registrar stores and `tpm2_checkquote -u` also reads);
//! - the quote's TPMS_ATTEST (`quote.msg`, `-m`) and TPMT_SIGNATURE (`quote.sig`, `-s`), as the
//!   transcript carries them;
//! - the quoted PCR values (`quote.pcrs`, `-f`) in tpm2-tools' "serialized" layout, the one
//!   `tpm2_quote -o` writes and Keylime's agent sends: the TPML_PCR_SELECTION as C lays it out
//!   in memory (u32 count, then 16 TPMS_PCR_SELECTION slots of 8 bytes: u16 hash, u8
//!   sizeofSelect, u8 pcrSelect[4], 1 byte padding; little-endian), a u32 count of TPML_DIGEST,
//!   then that many TPML_DIGEST (u32 count, then 8 TPM2B_DIGEST slots of u16 size + 64 bytes),
//!   the values packed 8 per TPML_DIGEST in selection order.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use slipway_measure::{AlgId, Digest, EventLog, InitialState, PcrBanks};
use slipway_tpm::PcrMask;
use slipway_tpm::verify as quote_verify;

use crate::verify::Transcript;

/// The DER prefix of a SubjectPublicKeyInfo for an uncompressed NIST P-256 point
/// (id-ecPublicKey, prime256v1, BIT STRING of 66 bytes with no unused bits); the 65-byte point
/// follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Slots of a TPML_PCR_SELECTION (TPM2_NUM_PCR_BANKS in the TSS headers).
const PCR_SELECTION_SLOTS: usize = 16;
/// Digest slots of a TPML_DIGEST (the TPM returns at most 8 values per PCR_Read).
const DIGEST_SLOTS: usize = 8;
/// Size of a TPMU_HA (the largest digest, SHA-512).
const DIGEST_SLOT_BYTES: usize = 64;

/// The attestation key (a marshaled TPMT_PUBLIC, ECC P-256) as a PEM public key.
pub fn ak_pem(ak_public: &[u8]) -> Result<String, String> {
    let key = quote_verify::parse_public(ak_public).map_err(|e| e.to_string())?;
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&key.sec1_uncompressed());
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    Ok(pem)
}

/// A TPM2B: big-endian u16 size, then the bytes (a TPM2B_PUBLIC from a TPMT_PUBLIC).
pub fn tpm2b(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let size = u16::try_from(bytes.len())
        .map_err(|_| format!("{} bytes do not fit a TPM2B", bytes.len()))?;
    let mut out = size.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    Ok(out)
}

/// The quoted PCR values in tpm2-tools' serialized layout (module documentation), for the
/// quote's `selection` (bank and PCRs, in quote order), each value from `value(alg, pcr)`.
pub fn tpm2_pcrs_file(
    selection: &[(AlgId, PcrMask)],
    value: impl Fn(AlgId, u32) -> Option<Digest>,
) -> Result<Vec<u8>, String> {
    if selection.len() > PCR_SELECTION_SLOTS {
        return Err(format!(
            "{} banks do not fit a TPML_PCR_SELECTION",
            selection.len()
        ));
    }
    let mut out = (selection.len() as u32).to_le_bytes().to_vec();
    let mut values = Vec::new();
    for slot in 0..PCR_SELECTION_SLOTS {
        let Some(&(alg, mask)) = selection.get(slot) else {
            out.extend_from_slice(&[0; 8]);
            continue;
        };
        out.extend_from_slice(&alg.0.to_le_bytes());
        let bits = mask.bits();
        out.extend_from_slice(&[3, bits as u8, (bits >> 8) as u8, (bits >> 16) as u8, 0, 0]);
        for pcr in 0..24u32 {
            if bits & (1 << pcr) != 0 {
                let digest = value(alg, pcr)
                    .ok_or_else(|| format!("no value for PCR{pcr} in bank {alg}"))?;
                values.push(digest);
            }
        }
    }
    let groups = values.chunks(DIGEST_SLOTS);
    out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    for group in groups {
        out.extend_from_slice(&(group.len() as u32).to_le_bytes());
        for slot in 0..DIGEST_SLOTS {
            let mut bytes = [0u8; DIGEST_SLOT_BYTES];
            let size = match group.get(slot) {
                Some(digest) => {
                    bytes[..digest.len()].copy_from_slice(digest.as_bytes());
                    digest.len()
                }
                None => 0,
            };
            out.extend_from_slice(&(size as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
    }
    Ok(out)
}

/// The values of the quoted PCRs as the transcript's Slipway log replays them (PCR17-22 from
/// the post-launch 0); `None` for a bank the log has no digests for.
pub fn replayed_pcrs(transcript: &Transcript) -> Result<PcrBanks, String> {
    EventLog::parse(&transcript.slipway_log)
        .and_then(|log| log.replay(InitialState::DynamicLaunch))
        .map_err(|e| format!("the transcript's Slipway log: {e}"))
}

/// The quote's PCR selection (bank and PCRs, quote order).
pub fn quote_selection(transcript: &Transcript) -> Result<Vec<(AlgId, PcrMask)>, String> {
    quote_verify::parse_quote_attest(&transcript.quote_attest)
        .map(|info| info.pcr_selection)
        .map_err(|e| format!("the quote: {e}"))
}

/// The quoted PCR values file of a transcript, with the values its Slipway log replays to.
pub fn transcript_pcrs_file(transcript: &Transcript) -> Result<Vec<u8>, String> {
    let pcrs = replayed_pcrs(transcript)?;
    tpm2_pcrs_file(&quote_selection(transcript)?, |alg, pcr| {
        pcrs.value(pcr, alg.hash_alg()?).ok().flatten()
    })
}

/// Keylime's quote string (`r<b64 TPMS_ATTEST>:<b64 TPMT_SIGNATURE>:<b64 PCR values file>`),
/// what its agent returns and `keylime.tpm.tpm_main.Tpm.check_quote` takes.
pub fn keylime_quote(transcript: &Transcript, pcrs_file: &[u8]) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "r{}:{}:{}",
        b64(&transcript.quote_attest),
        b64(&transcript.quote_signature),
        b64(pcrs_file)
    )
}

/// The files `export` writes, by name.
pub fn export_files(transcript: &Transcript) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let mut files = vec![
        ("ak.pem", ak_pem(&transcript.ak_public)?.into_bytes()),
        ("ak.pub", tpm2b(&transcript.ak_public)?),
        ("quote.msg", transcript.quote_attest.clone()),
        ("quote.sig", transcript.quote_signature.clone()),
    ];
    if !transcript.slipway_log.is_empty() {
        files.push(("quote.pcrs", transcript_pcrs_file(transcript)?));
        files.push(("slipway.log", transcript.slipway_log.clone()));
    }
    if !transcript.firmware_log.is_empty() {
        files.push(("firmware.log", transcript.firmware_log.clone()));
    }
    Ok(files)
}

/// The `tpm2_checkquote` command line that checks exported files in `dir` with `nonce` (hex).
pub fn checkquote_command(dir: &Path, nonce_hex: &str, with_log: bool) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut command = format!(
        "tpm2_checkquote -u {} -m {} -s {} -q {nonce_hex} -g sha256",
        file("ak.pem"),
        file("quote.msg"),
        file("quote.sig"),
    );
    if with_log {
        let _ = write!(
            command,
            " -f {} -e {}",
            file("quote.pcrs"),
            file("slipway.log")
        );
    }
    command
}

/// Options of `cargo xtask export` (a part of [`crate::cli::Cli`]).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ExportArgs {
    /// The transcript: a run's serial log
    pub transcript: PathBuf,
    /// The directory to write into [default: <TRANSCRIPT>.evidence/]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `cargo xtask export`: writes a transcript's evidence as files for tpm2-tools and Keylime.
pub fn export_command(args: &ExportArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("xtask export: error: {message}");
        ExitCode::FAILURE
    };
    let text = match std::fs::read(&args.transcript) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return fail(format!("cannot read {}: {e}", args.transcript.display())),
    };
    let transcript = match crate::verify::parse_transcript(&text) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let files = match export_files(&transcript) {
        Ok(files) => files,
        Err(e) => return fail(e),
    };
    let dir = args.out.clone().unwrap_or_else(|| {
        let mut name = args.transcript.clone().into_os_string();
        name.push(".evidence");
        PathBuf::from(name)
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(format!("cannot create {}: {e}", dir.display()));
    }
    for (name, bytes) in &files {
        if let Err(e) = std::fs::write(dir.join(name), bytes) {
            return fail(format!("cannot write {}: {e}", dir.join(name).display()));
        }
        println!("{}", dir.join(name).display());
    }
    let nonce = transcript
        .nonce
        .as_deref()
        .map_or_else(|| "NONCE".to_owned(), crate::verify::hex);
    eprintln!(
        "xtask export: check with tpm2-tools (the nonce must be the one you sent; the transcript \
         echoes {nonce}):\n  {}",
        checkquote_command(&dir, &nonce, !transcript.slipway_log.is_empty())
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_measure::HashAlg;

    #[test]
    fn pcr_values_file_has_the_layout_tpm2_tools_and_keylime_read() {
        let selection = [
            (AlgId::SHA1, PcrMask::QUOTE),
            (AlgId::SHA256, PcrMask::QUOTE),
        ];
        let file = tpm2_pcrs_file(&selection, |alg, pcr| {
            let alg = alg.hash_alg()?;
            Some(Digest::new(alg.id(), &vec![pcr as u8; alg.digest_size()]).unwrap())
        })
        .unwrap();
        // Selection: count 2, slot 0 = sha1 with PCR17-21 (bits 17..21 in the third byte).
        assert_eq!(&file[..4], &[2, 0, 0, 0]);
        assert_eq!(&file[4..12], &[0x04, 0, 3, 0, 0, 0x3e, 0, 0]);
        assert_eq!(&file[12..20], &[0x0b, 0, 3, 0, 0, 0x3e, 0, 0]);
        assert!(file[20..4 + 16 * 8].iter().all(|&b| b == 0));
        // 10 values: two TPML_DIGEST (8 + 2).
        let digests = 4 + 16 * 8;
        assert_eq!(&file[digests..digests + 4], &[2, 0, 0, 0]);
        assert_eq!(file.len(), digests + 4 + 2 * (4 + 8 * 66));
        let first = digests + 4;
        assert_eq!(&file[first..first + 4], &[8, 0, 0, 0]);
        assert_eq!(&file[first + 4..first + 6], &[20, 0], "sha1 PCR17 size");
        assert_eq!(file[first + 6], 17);
        // Slot 5 is sha256 PCR17 (after five sha1 values).
        let slot5 = first + 4 + 5 * 66;
        assert_eq!(&file[slot5..slot5 + 2], &[32, 0]);
        assert_eq!(file[slot5 + 2], 17);
        let second = first + 4 + 8 * 66;
        assert_eq!(&file[second..second + 4], &[2, 0, 0, 0]);
        let missing = tpm2_pcrs_file(&selection, |_, pcr| {
            (pcr != 19).then(|| Digest::zero(HashAlg::Sha256))
        });
        assert!(missing.unwrap_err().contains("PCR19"));
    }

    #[test]
    fn tpm2b_prefixes_the_big_endian_size() {
        assert_eq!(tpm2b(&[7; 3]).unwrap(), [0, 3, 7, 7, 7]);
        assert!(tpm2b(&vec![0; 70_000]).is_err());
    }
}
