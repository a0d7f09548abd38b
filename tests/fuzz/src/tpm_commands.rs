//! TPM responses as `slipway-tpm`'s command layer parses them: a malicious TPM (or anything
//! between it and the CPU) must not crash the hypervisor or the attest domain.
//!
//! The input is the TPM's side of [`session`], the command sequence the hypervisor and the attest
//! domain send: a list of responses, each a little-endian `u16` length and that many bytes, handed
//! out one per transmission (an exhausted input is a transport error). Checked: every answer the
//! layer accepts is consistent with its request ([`check_outcome`]), and its command counters
//! count exactly the transmissions made.

use slipway_tpm::{
    AkTemplate, AlgId, BankSet, CommandError, Digest, DigestList, HashAlg, Hierarchy, PcrMask,
    StartupType, Tpm, TpmTransport,
};

/// What [`session`] got back, for [`check_outcome`].
#[derive(Debug, Default)]
pub struct Outcome {
    /// The banks the TPM reported active (when it answered).
    pub banks: Option<BankSet>,
}

/// The nonce the session quotes with.
pub const NONCE: [u8; 16] = *b"slipway-fuzz-tpm";

/// The command sequence of a measured launch and an attestation: start-up, the active banks,
/// PCR17-21 read back, an extend of PCR19 in every active bank, an attestation key, a quote over
/// PCR17-21 and the key flushed. Each step runs even when an earlier one failed. Panics when an
/// accepted answer contradicts its request.
pub fn session<T: TpmTransport>(tpm: &mut Tpm<T>) -> Outcome {
    let mut outcome = Outcome::default();
    let _ = tpm.startup(StartupType::Clear);
    let banks = match tpm.pcr_allocation() {
        Ok(allocation) => {
            let banks = allocation.active_banks();
            for (bank, mask) in allocation.iter() {
                assert_eq!(allocation.allocated(bank.alg), mask);
                assert_eq!(banks.contains(bank.alg), !mask.is_empty());
            }
            outcome.banks = Some(banks);
            banks
        }
        Err(_) => BankSet::single(HashAlg::Sha256),
    };
    for bank in banks.iter() {
        if let Ok(values) = tpm.pcr_read(bank.alg, PcrMask::QUOTE) {
            assert_eq!(values.alg(), bank.alg);
            for pcr in 0..24u8 {
                match values.get(pcr) {
                    Some(digest) => {
                        assert!(PcrMask::QUOTE.contains(pcr), "PCR{pcr} was not asked for");
                        assert_eq!((digest.alg(), digest.len()), (bank.alg, bank.size()));
                    }
                    None => assert!(!PcrMask::QUOTE.contains(pcr), "PCR{pcr} missing"),
                }
            }
        }
    }
    let mut digests = DigestList::new();
    for bank in banks.iter() {
        digests
            .push(Digest::filled(bank, 0x5a))
            .expect("one digest per bank");
    }
    let extended = tpm.pcr_extend(19, &digests, &banks);
    if banks.is_empty() {
        assert!(matches!(extended, Err(CommandError::EmptySelection)));
    }
    if let Ok(key) = tpm.create_primary(Hierarchy::Endorsement, AkTemplate::EccP256) {
        assert!(key.name().len() <= 64 && !key.public_area().is_empty());
        if let Ok(quote) = tpm.quote(&key, &NONCE, &banks, PcrMask::QUOTE) {
            assert!(!quote.attest().is_empty());
        }
        let _ = tpm.flush_context(key.handle);
    }
    let _ = tpm.pcr_read(AlgId(0x0012), PcrMask::QUOTE);
    outcome
}

/// A TPM that answers with the input's responses, in order.
pub struct ScriptedTpm<'a> {
    data: &'a [u8],
    /// Transmissions so far.
    pub transmissions: u32,
}

impl<'a> ScriptedTpm<'a> {
    /// A TPM answering with `data`'s responses.
    pub fn new(data: &'a [u8]) -> Self {
        ScriptedTpm {
            data,
            transmissions: 0,
        }
    }
}

impl TpmTransport for ScriptedTpm<'_> {
    type Error = &'static str;

    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        assert!(command.len() >= 10, "a command has a header");
        self.transmissions += 1;
        let [a, b, rest @ ..] = self.data else {
            self.data = &[];
            return Err("no more responses");
        };
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
        let (answer, rest) = rest.split_at(len);
        self.data = rest;
        let len = len.min(response.len());
        response[..len].copy_from_slice(&answer[..len]);
        Ok(len)
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut tpm = Tpm::new(ScriptedTpm::new(data));
    session(&mut tpm);
    let counted = tpm.counts().total();
    assert_eq!(
        counted,
        tpm.transport().transmissions,
        "every transmission is counted once"
    );
}

/// The seed format: each response as a little-endian `u16` length and its bytes.
pub fn encode_responses(responses: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for response in responses {
        let len = u16::try_from(response.len()).expect("a response fits 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(response);
    }
    out
}
