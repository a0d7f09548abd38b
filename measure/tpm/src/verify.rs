//! Quote verification for host tools (`cargo xtask verify`): parse a TPMS_ATTEST, check that it
//! is a genuine-TPM quote (magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_QUOTE) over the expected
//! nonce, verify its signature with the attestation key's public area, and compare its pcrDigest
//! with PCR values the verifier computed (for example by replaying the event log).
//!
//! Parsing is `tpm2-protocol`'s; ECDSA P-256 verification is the `p256` crate's. Binding the key
//! to a genuine TPM (endorsement-key certificate) is not this module's job.

use std::{fmt, vec::Vec};

use p256::ecdsa::{Signature, VerifyingKey, signature::hazmat::PrehashVerifier};
use tpm2_protocol::{
    TpmUnmarshal,
    data::{
        TpmAlgId, TpmEccCurve, TpmSt, TpmaObject, TpmsAttest, TpmtPublic, TpmtSignature,
        TpmuAttest, TpmuPublicId, TpmuPublicParms, TpmuSignature,
    },
};

use crate::alg::{AlgId, HashAlg, PcrMask};

/// Why a quote was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// A structure does not parse.
    Malformed {
        /// Which structure.
        what: &'static str,
        /// tpm2-protocol's error.
        error: tpm2_protocol::TpmError,
    },
    /// Bytes follow a structure.
    TrailingBytes {
        /// Which structure.
        what: &'static str,
        /// How many.
        count: usize,
    },
    /// The attestation is not a quote (TPM_ST_ATTEST_QUOTE).
    NotAQuote {
        /// The attestation type found.
        attest_type: u16,
    },
    /// The quote's extraData is not the verifier's nonce.
    NonceMismatch {
        /// extraData in the quote.
        quoted: Vec<u8>,
    },
    /// The key is not a restricted signing key fixed to its TPM.
    NotAnAttestationKey {
        /// Its objectAttributes.
        attributes: u32,
    },
    /// The key type or curve is not supported here.
    UnsupportedKey(&'static str),
    /// The signature algorithm does not fit the key or is not supported.
    UnsupportedSignature {
        /// TPM_ALG_ID of the signature.
        sig_alg: u16,
    },
    /// A hash algorithm this module cannot compute.
    UnsupportedHash {
        /// TPM_ALG_ID.
        alg: u16,
    },
    /// The signature does not verify with the key over the attestation bytes.
    BadSignature,
    /// The verifier has no value for a quoted PCR.
    PcrValueMissing {
        /// Bank.
        alg: AlgId,
        /// PCR.
        pcr: u8,
    },
    /// The quoted pcrDigest differs from the digest of the expected PCR values.
    PcrDigestMismatch {
        /// Digest of the expected values.
        expected: Vec<u8>,
        /// pcrDigest in the quote.
        quoted: Vec<u8>,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed { what, error } => write!(f, "malformed {what}: {error:?}"),
            VerifyError::TrailingBytes { what, count } => {
                write!(f, "{count} bytes follow the {what}")
            }
            VerifyError::NotAQuote { attest_type } => write!(
                f,
                "the attestation is of type {attest_type:#06x}, not TPM_ST_ATTEST_QUOTE"
            ),
            VerifyError::NonceMismatch { quoted } => {
                write!(
                    f,
                    "the quote's nonce {} is not the expected one",
                    Hex(quoted)
                )
            }
            VerifyError::NotAnAttestationKey { attributes } => write!(
                f,
                "the key (attributes {attributes:#010x}) is not a restricted signing key fixed to its TPM"
            ),
            VerifyError::UnsupportedKey(what) => write!(f, "unsupported key: {what}"),
            VerifyError::UnsupportedSignature { sig_alg } => {
                write!(
                    f,
                    "unsupported signature algorithm {sig_alg:#06x} for this key"
                )
            }
            VerifyError::UnsupportedHash { alg } => {
                write!(f, "hash algorithm {alg:#06x} is not supported")
            }
            VerifyError::BadSignature => {
                f.write_str("the quote's signature does not verify with the attestation key")
            }
            VerifyError::PcrValueMissing { alg, pcr } => {
                write!(f, "no expected value for quoted PCR{pcr} in the {alg} bank")
            }
            VerifyError::PcrDigestMismatch { expected, quoted } => write!(
                f,
                "quoted pcrDigest {} differs from the expected {}",
                Hex(quoted),
                Hex(expected)
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The fields of a quote's TPMS_ATTEST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    /// qualifiedSigner: the key's qualified name.
    pub qualified_signer: Vec<u8>,
    /// extraData: the nonce.
    pub extra_data: Vec<u8>,
    /// clockInfo.clock (ms).
    pub clock: u64,
    /// clockInfo.resetCount.
    pub reset_count: u32,
    /// clockInfo.restartCount.
    pub restart_count: u32,
    /// clockInfo.safe.
    pub safe: bool,
    /// firmwareVersion.
    pub firmware_version: u64,
    /// The quoted PCRs, per bank, in quote order.
    pub pcr_selection: Vec<(AlgId, PcrMask)>,
    /// pcrDigest: H(concatenation of the selected PCR values), H the signing scheme's hash.
    pub pcr_digest: Vec<u8>,
}

/// Parses a quote's TPMS_ATTEST (magic, type, fields); checks no signature.
pub fn parse_quote_attest(attest: &[u8]) -> Result<QuoteInfo, VerifyError> {
    let (parsed, rest) = TpmsAttest::unmarshal(attest).map_err(|error| VerifyError::Malformed {
        what: "TPMS_ATTEST",
        error,
    })?;
    if !rest.is_empty() {
        return Err(VerifyError::TrailingBytes {
            what: "TPMS_ATTEST",
            count: rest.len(),
        });
    }
    let TpmuAttest::Quote(quote) = &parsed.attested else {
        return Err(VerifyError::NotAQuote {
            attest_type: parsed.attest_type.value(),
        });
    };
    if parsed.attest_type != TpmSt::AttestQuote {
        return Err(VerifyError::NotAQuote {
            attest_type: parsed.attest_type.value(),
        });
    }
    let mut pcr_selection = Vec::new();
    for selection in quote.pcr_select.iter() {
        let alg = AlgId(selection.hash.value());
        let mask =
            PcrMask::from_select_bytes(&selection.pcr_select).ok_or(VerifyError::Malformed {
                what: "TPMS_PCR_SELECTION (PCR above 23)",
                error: tpm2_protocol::TpmError::TooManyItems {
                    offset: 0,
                    limit: 3,
                    actual: selection.pcr_select.len(),
                },
            })?;
        pcr_selection.push((alg, mask));
    }
    Ok(QuoteInfo {
        qualified_signer: parsed.qualified_signer.to_vec(),
        extra_data: parsed.extra_data.to_vec(),
        clock: parsed.clock_info.clock.value(),
        reset_count: parsed.clock_info.reset_count.value(),
        restart_count: parsed.clock_info.restart_count.value(),
        safe: parsed.clock_info.safe.into(),
        firmware_version: parsed.firmware_version.value(),
        pcr_selection,
        pcr_digest: quote.pcr_digest.to_vec(),
    })
}

/// An attestation key's public part, ready to verify signatures.
#[derive(Clone, Debug)]
pub struct AkPublic {
    key: VerifyingKey,
    name_alg: HashAlg,
    sec1: [u8; 65],
}

impl AkPublic {
    /// The public point in SEC1 uncompressed form (`04 || x || y`), for exporting the key to
    /// other tools (a PEM SubjectPublicKeyInfo for tpm2_checkquote, OpenSSL, Keylime).
    pub fn sec1_uncompressed(&self) -> [u8; 65] {
        self.sec1
    }

    /// The key's nameAlg.
    pub fn name_alg(&self) -> HashAlg {
        self.name_alg
    }
}

/// Parses a marshaled TPMT_PUBLIC of an attestation key (restricted, sign, fixedTPM; ECC P-256).
pub fn parse_public(public: &[u8]) -> Result<AkPublic, VerifyError> {
    let (parsed, rest) = TpmtPublic::unmarshal(public).map_err(|error| VerifyError::Malformed {
        what: "TPMT_PUBLIC",
        error,
    })?;
    if !rest.is_empty() {
        return Err(VerifyError::TrailingBytes {
            what: "TPMT_PUBLIC",
            count: rest.len(),
        });
    }
    let required = TpmaObject::RESTRICTED | TpmaObject::SIGN_ENCRYPT | TpmaObject::FIXED_TPM;
    if !parsed.object_attributes.contains(required)
        || parsed.object_attributes.contains(TpmaObject::DECRYPT)
    {
        return Err(VerifyError::NotAnAttestationKey {
            attributes: parsed.object_attributes.bits(),
        });
    }
    let name_alg = hash_alg(parsed.name_alg.value())?;
    match (&parsed.parameters, &parsed.unique) {
        (TpmuPublicParms::Ecc(params), TpmuPublicId::Ecc(point)) => {
            if params.curve_id != TpmEccCurve::NistP256 {
                return Err(VerifyError::UnsupportedKey(
                    "ECC curve other than NIST P-256",
                ));
            }
            let mut sec1 = [0u8; 65];
            sec1[0] = 0x04;
            left_pad(&point.x, &mut sec1[1..33])?;
            left_pad(&point.y, &mut sec1[33..65])?;
            let key = VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| VerifyError::UnsupportedKey("the ECC point is not on P-256"))?;
            Ok(AkPublic {
                key,
                name_alg,
                sec1,
            })
        }
        (TpmuPublicParms::Rsa(_), _) => Err(VerifyError::UnsupportedKey(
            "RSA attestation keys (this verifier checks ECDSA P-256 quotes)",
        )),
        _ => Err(VerifyError::UnsupportedKey("neither ECC nor RSA")),
    }
}

fn left_pad(value: &[u8], out: &mut [u8]) -> Result<(), VerifyError> {
    if value.len() > out.len() {
        return Err(VerifyError::UnsupportedKey(
            "a P-256 coordinate longer than 32 bytes",
        ));
    }
    let start = out.len() - value.len();
    out[..start].fill(0);
    out[start..].copy_from_slice(value);
    Ok(())
}

/// The TPM name of a public area: nameAlg (2 bytes, big endian) || H_nameAlg(TPMT_PUBLIC).
pub fn public_name(public: &[u8]) -> Result<Vec<u8>, VerifyError> {
    if public.len() < 4 {
        return Err(VerifyError::Malformed {
            what: "TPMT_PUBLIC",
            error: tpm2_protocol::TpmError::UnexpectedEnd {
                offset: 0,
                needed: 4,
                available: public.len(),
            },
        });
    }
    let id = u16::from_be_bytes([public[2], public[3]]);
    let alg = hash_alg(id)?;
    let mut name = id.to_be_bytes().to_vec();
    name.extend(hash(alg, public));
    Ok(name)
}

/// Verifies a marshaled TPMT_SIGNATURE over `message` with `key`; returns the signature's hash.
pub fn verify_signature(
    key: &AkPublic,
    message: &[u8],
    signature: &[u8],
) -> Result<HashAlg, VerifyError> {
    let (parsed, rest) =
        TpmtSignature::unmarshal(signature).map_err(|error| VerifyError::Malformed {
            what: "TPMT_SIGNATURE",
            error,
        })?;
    if !rest.is_empty() {
        return Err(VerifyError::TrailingBytes {
            what: "TPMT_SIGNATURE",
            count: rest.len(),
        });
    }
    let TpmuSignature::Ecdsa(ecdsa) = &parsed.signature else {
        return Err(VerifyError::UnsupportedSignature {
            sig_alg: parsed.sig_alg.value(),
        });
    };
    if parsed.sig_alg != TpmAlgId::Ecdsa {
        return Err(VerifyError::UnsupportedSignature {
            sig_alg: parsed.sig_alg.value(),
        });
    }
    let digest_alg = hash_alg(ecdsa.hash.value())?;
    let digest = hash(digest_alg, message);
    let mut rs = [0u8; 64];
    left_pad(&ecdsa.signature_r, &mut rs[..32]).map_err(|_| VerifyError::BadSignature)?;
    left_pad(&ecdsa.signature_s, &mut rs[32..]).map_err(|_| VerifyError::BadSignature)?;
    let signature = Signature::from_slice(&rs).map_err(|_| VerifyError::BadSignature)?;
    key.key
        .verify_prehash(&digest, &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(digest_alg)
}

/// A quote whose signature and nonce checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedQuote {
    /// The attested fields.
    pub info: QuoteInfo,
    /// The signing scheme's hash, which is also pcrDigest's hash.
    pub digest_alg: HashAlg,
}

impl VerifiedQuote {
    /// Compares pcrDigest with H(concatenation of the expected values of the quoted PCRs, bank
    /// by bank in quote order, ascending PCR index within a bank). `expected(alg, pcr)` gives
    /// the verifier's value (from a log replay or a prediction).
    pub fn check_pcrs<V: AsRef<[u8]>>(
        &self,
        mut expected: impl FnMut(AlgId, u8) -> Option<V>,
    ) -> Result<(), VerifyError> {
        let mut concatenated = Vec::new();
        for (alg, mask) in &self.info.pcr_selection {
            for pcr in mask.iter() {
                let value =
                    expected(*alg, pcr).ok_or(VerifyError::PcrValueMissing { alg: *alg, pcr })?;
                concatenated.extend_from_slice(value.as_ref());
            }
        }
        let expected = hash(self.digest_alg, &concatenated);
        if expected != self.info.pcr_digest {
            return Err(VerifyError::PcrDigestMismatch {
                expected,
                quoted: self.info.pcr_digest.clone(),
            });
        }
        Ok(())
    }
}

/// Verifies a quote: the key is an attestation key, the signature over `attest` verifies, the
/// attestation is a quote, and its extraData equals `nonce`. PCR values are checked afterwards
/// with [`VerifiedQuote::check_pcrs`].
pub fn verify_quote(
    public: &[u8],
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
) -> Result<VerifiedQuote, VerifyError> {
    let key = parse_public(public)?;
    let digest_alg = verify_signature(&key, attest, signature)?;
    let info = parse_quote_attest(attest)?;
    if info.extra_data != nonce {
        return Err(VerifyError::NonceMismatch {
            quoted: info.extra_data,
        });
    }
    Ok(VerifiedQuote { info, digest_alg })
}

/// H_alg(data) (`slipway-measure`'s hashing).
pub fn hash(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    slipway_measure::hash::hash(alg, data).as_bytes().to_vec()
}

fn hash_alg(id: u16) -> Result<HashAlg, VerifyError> {
    AlgId(id)
        .hash_alg()
        .ok_or(VerifyError::UnsupportedHash { alg: id })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from swtpm 0.7.1 (`swtpm_setup --pcr-banks sha256`, no dynamic launch): the
    // ECC P-256 AK of the endorsement hierarchy quoting PCR17-21 (all FF) with this nonce.
    const PUBLIC: &str = "0023000b00050072000000100018000b000300100020670c6505ef194c9ababd1eaa523660a1e3cb203f5d7ee60507da347da3db422200208954e8358935675205a5623d6ef3aa4a7f419bbb772eccb5a8d952c998c7744b";
    const ATTEST: &str = "ff54434780180022000b0267b47fa214e6d63d5a0bec0ff26fea2ac42795b7830ec66313dd52b8418a67000d736c6970776179206e6f6e6365000000000000000c000000020000000001201910230016363600000001000b0300003e00200052516839b94ee314a4e3b398c8036de3790d672194987a394ee60323848539";
    const SIGNATURE: &str = "0018000b0020ca29adb522083fefca8dd2fe5d6264c11057ba0c2bb7032911fd546c0ce5d8b200201635a74cb18ed76e639806d22e33215467ef1ed3137459c786e709308083c6ee";
    const NONCE: &[u8] = b"slipway nonce";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn all_ff(_: AlgId, _: u8) -> Option<[u8; 32]> {
        Some([0xff; 32])
    }

    #[test]
    fn captured_quote_verifies() {
        let verified =
            verify_quote(&unhex(PUBLIC), &unhex(ATTEST), &unhex(SIGNATURE), NONCE).unwrap();
        assert_eq!(verified.digest_alg, HashAlg::Sha256);
        assert_eq!(verified.info.extra_data, NONCE);
        assert_eq!(
            verified.info.pcr_selection,
            [(AlgId::SHA256, PcrMask::QUOTE)]
        );
        assert_eq!(verified.info.reset_count, 2);
        verified.check_pcrs(all_ff).unwrap();
        assert_eq!(
            verified.check_pcrs(|_, pcr| (pcr != 21).then_some([0xff; 32])),
            Err(VerifyError::PcrValueMissing {
                alg: AlgId::SHA256,
                pcr: 21
            })
        );
        let error = verified
            .check_pcrs(|_, pcr| Some(if pcr == 19 { [0; 32] } else { [0xff; 32] }))
            .unwrap_err();
        assert!(
            std::format!("{error}").starts_with(
                "quoted pcrDigest 0052516839b94ee314a4e3b398c8036de3790d672194987a394ee60323848539 differs"
            ),
            "{error}"
        );
    }

    #[test]
    fn any_changed_byte_breaks_the_signature() {
        let attest = unhex(ATTEST);
        for index in [0, 6, 40, attest.len() - 1] {
            let mut tampered = attest.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                verify_quote(&unhex(PUBLIC), &tampered, &unhex(SIGNATURE), NONCE),
                Err(VerifyError::BadSignature),
                "byte {index}"
            );
        }
        let mut signature = unhex(SIGNATURE);
        signature[10] ^= 0x80;
        assert_eq!(
            verify_quote(&unhex(PUBLIC), &attest, &signature, NONCE),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn wrong_nonce_is_named() {
        assert_eq!(
            verify_quote(
                &unhex(PUBLIC),
                &unhex(ATTEST),
                &unhex(SIGNATURE),
                b"replayed"
            ),
            Err(VerifyError::NonceMismatch {
                quoted: NONCE.to_vec()
            })
        );
    }

    #[test]
    fn malformed_attestations_are_refused() {
        let mut attest = unhex(ATTEST);
        attest[0] = 0;
        assert!(matches!(
            parse_quote_attest(&attest),
            Err(VerifyError::Malformed {
                what: "TPMS_ATTEST",
                error: tpm2_protocol::TpmError::InvalidMagicNumber { .. }
            })
        ));
        let mut attest = unhex(ATTEST);
        attest.push(0);
        assert_eq!(
            parse_quote_attest(&attest),
            Err(VerifyError::TrailingBytes {
                what: "TPMS_ATTEST",
                count: 1
            })
        );
        let attest = unhex(ATTEST);
        for len in [0, 3, 10, attest.len() - 1] {
            assert!(
                matches!(
                    parse_quote_attest(&attest[..len]),
                    Err(VerifyError::Malformed { .. })
                ),
                "{len}"
            );
        }
        // TPM_ST_ATTEST_QUOTE (0x8018) changed to TPM_ST_ATTEST_TIME (0x8019).
        let mut attest = unhex(ATTEST);
        attest[5] = 0x19;
        assert!(parse_quote_attest(&attest).is_err());
    }

    #[test]
    fn only_restricted_signing_keys_are_attestation_keys() {
        let mut public = unhex(PUBLIC);
        public[5] |= 0x02; // decrypt (0x00020000)
        assert_eq!(
            parse_public(&public).unwrap_err(),
            VerifyError::NotAnAttestationKey {
                attributes: 0x0007_0072
            }
        );
        let mut public = unhex(PUBLIC);
        public[5] &= !0x01; // restricted (0x00010000)
        assert!(matches!(
            parse_public(&public),
            Err(VerifyError::NotAnAttestationKey { .. })
        ));
        // A point that is not on the curve.
        let mut public = unhex(PUBLIC);
        let last = public.len() - 1;
        public[last] ^= 1;
        assert_eq!(
            parse_public(&public).unwrap_err(),
            VerifyError::UnsupportedKey("the ECC point is not on P-256")
        );
        let key = parse_public(&unhex(PUBLIC)).unwrap();
        assert_eq!(key.name_alg(), HashAlg::Sha256);
        assert_eq!(public_name(&unhex(PUBLIC)).unwrap()[..2], [0x00, 0x0b]);
    }
}
