//! TPM2 command helpers over any [`TpmTransport`]; commands are marshaled and responses parsed
//! by `tpm2-protocol`.
//!
//! Every command with an authorization area uses the empty-password session (TPM_RS_PW): the
//! PCRs, the hierarchies and the attestation key of a Slipway machine have empty authValues.

use core::fmt;

use tpm2_protocol::{
    TpmMarshal, TpmWriter,
    basic::{TpmHandle, TpmUint16, TpmUint32},
    constant::MAX_DATA_SIZE,
    data::{
        Tpm2bAuth, Tpm2bData, Tpm2bDigest, Tpm2bNonce, Tpm2bPublic, Tpm2bPublicKeyRsa,
        Tpm2bSensitiveCreate, TpmAlgId, TpmCap, TpmCc, TpmEccCurve, TpmRh, TpmSt, TpmSu,
        TpmaObject, TpmaSession, TpmlDigestValues, TpmlPcrSelection, TpmsAuthCommand, TpmsEccParms,
        TpmsEccPoint, TpmsPcrSelect, TpmsPcrSelection, TpmsRsaParms, TpmsSchemeHash, TpmtEccScheme,
        TpmtHa, TpmtKdfScheme, TpmtPublic, TpmtRsaScheme, TpmtSigScheme, TpmtSymDefObject,
        TpmuAsymScheme, TpmuAttest, TpmuCapabilities, TpmuHa, TpmuPublicId, TpmuPublicParms,
        TpmuSigScheme, TpmuSymKeyBits, TpmuSymMode,
    },
    frame::{
        TpmCreatePrimaryCommand, TpmCreatePrimaryResponse, TpmFlushContextCommand,
        TpmFlushContextResponse, TpmFrame, TpmGetCapabilityCommand, TpmGetCapabilityResponse,
        TpmPcrExtendCommand, TpmPcrExtendResponse, TpmPcrReadCommand, TpmPcrReadResponse,
        TpmQuoteCommand, TpmQuoteResponse, TpmResponse, TpmStartupCommand, TpmStartupResponse,
        TpmUnmarshalBody, tpm_marshal_command,
    },
};

use crate::{
    alg::{AlgId, Bank, BankSet, Digest, DigestList, PCR_COUNT, PcrMask, tpm_alg},
    rc::ResponseCode,
    transport::TpmTransport,
};

/// Command buffer size: every command these helpers build is far smaller.
pub const COMMAND_BUFFER_SIZE: usize = 1024;
/// Response buffer size (TPM_MAX_COMMAND_SIZE of the PC Client profile).
pub const RESPONSE_BUFFER_SIZE: usize = 4096;
/// Capacity for a marshaled TPMT_PUBLIC (an RSA-4096 key needs 534 bytes).
pub const MAX_PUBLIC_SIZE: usize = 640;
/// Capacity for a marshaled TPMS_ATTEST of a quote or a TPMT_SIGNATURE.
pub const MAX_ATTEST_SIZE: usize = 1024;
/// Longest quote nonce (qualifyingData is a TPM2B_DATA: sizeof(TPMT_HA)).
pub const MAX_NONCE_SIZE: usize = MAX_DATA_SIZE;

const HEADER_SIZE: usize = 10;

/// How often a command is sent again after TPM_RC_RETRY, _YIELDED, _TESTING or _NV_RATE
/// (swtpm answers the first ECDSA signature after start-up with TPM_RC_RETRY).
pub const MAX_RETRIES: u32 = 8;

/// Errors of a TPM command.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandError<E> {
    /// The transport failed.
    Transport {
        /// The command.
        command: TpmCc,
        /// The transport's error.
        error: E,
    },
    /// The command could not be marshaled.
    Marshal {
        /// The command.
        command: TpmCc,
        /// tpm2-protocol's error.
        error: tpm2_protocol::TpmError,
    },
    /// The response could not be parsed.
    MalformedResponse {
        /// The command.
        command: TpmCc,
        /// tpm2-protocol's error.
        error: tpm2_protocol::TpmError,
    },
    /// The TPM answered with an error code.
    Tpm {
        /// The command.
        command: TpmCc,
        /// The response code and its meaning.
        rc: ResponseCode,
    },
    /// The response parsed but does not answer the request.
    UnexpectedResponse {
        /// The command.
        command: TpmCc,
        /// What is wrong.
        reason: &'static str,
    },
    /// PCR {0} does not exist (0-23).
    InvalidPcr(u8),
    /// The digests do not fit the banks: an extend must carry every active bank exactly once
    /// (a bank left out could be forged later), each digest of its bank's size.
    Digests(slipway_measure::Error),
    /// tpm2-protocol does not know this algorithm id.
    UnknownAlgorithm(AlgId),
    /// The request names no bank or no PCR.
    EmptySelection,
    /// The quote nonce is longer than a TPM2B_DATA.
    NonceTooLong {
        /// Length given.
        len: usize,
    },
}

impl<E: fmt::Display> fmt::Display for CommandError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Transport { command, error } => write!(f, "{command}: {error}"),
            CommandError::Marshal { command, error } => {
                write!(f, "{command}: cannot marshal the command: {error:?}")
            }
            CommandError::MalformedResponse { command, error } => {
                write!(f, "{command}: malformed response: {error:?}")
            }
            CommandError::Tpm { command, rc } => write!(f, "{command} failed: {rc}"),
            CommandError::UnexpectedResponse { command, reason } => {
                write!(f, "{command}: unexpected response: {reason}")
            }
            CommandError::InvalidPcr(pcr) => write!(f, "PCR {pcr} does not exist (0-23)"),
            CommandError::Digests(error) => write!(
                f,
                "digests do not match the active banks (every active bank exactly once): {error}"
            ),
            CommandError::UnknownAlgorithm(alg) => write!(f, "unknown TPM algorithm {alg}"),
            CommandError::EmptySelection => f.write_str("the request selects no bank or no PCR"),
            CommandError::NonceTooLong { len } => write!(
                f,
                "quote nonce of {len} bytes is longer than {MAX_NONCE_SIZE} bytes"
            ),
        }
    }
}

/// TPM2_Startup's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupType {
    /// TPM_SU_CLEAR: a TPM reset (PCRs to their initial values).
    Clear,
    /// TPM_SU_STATE: a TPM resume.
    State,
}

/// The hierarchy an attestation key is created under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// TPM_RH_ENDORSEMENT (the default for attestation keys).
    Endorsement,
    /// TPM_RH_OWNER (storage hierarchy).
    Owner,
}

impl Hierarchy {
    fn handle(self) -> u32 {
        match self {
            Hierarchy::Endorsement => TpmRh::Endorsement.value(),
            Hierarchy::Owner => TpmRh::Owner.value(),
        }
    }
}

/// The fixed templates of the attestation key (TPM2_CreatePrimary inPublic). Both: nameAlg
/// SHA-256; attributes fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted |
/// sign (0x00050072); empty authPolicy; no symmetric algorithm; empty unique field. Same template
/// under the same hierarchy seed gives the same key on every boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AkTemplate {
    /// ECC NIST P-256, scheme ECDSA with SHA-256, no KDF.
    EccP256,
    /// RSA 2048, exponent 65537 (0 in the template), scheme RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa2048,
}

/// The attributes of both attestation-key templates.
pub const AK_ATTRIBUTES: u32 = 0x0005_0072;

impl AkTemplate {
    /// The TPMT_PUBLIC template.
    pub fn public(self) -> TpmtPublic {
        let scheme_hash = TpmuAsymScheme::Hash(TpmsSchemeHash {
            hash_alg: TpmAlgId::Sha256,
        });
        let no_symmetric = TpmtSymDefObject {
            algorithm: TpmAlgId::Null,
            key_bits: TpmuSymKeyBits::Null,
            mode: TpmuSymMode::Null,
        };
        let (object_type, parameters, unique) = match self {
            AkTemplate::EccP256 => (
                TpmAlgId::Ecc,
                TpmuPublicParms::Ecc(TpmsEccParms {
                    symmetric: no_symmetric,
                    scheme: TpmtEccScheme {
                        scheme: TpmAlgId::Ecdsa,
                        details: scheme_hash,
                    },
                    curve_id: TpmEccCurve::NistP256,
                    kdf: TpmtKdfScheme::default(),
                }),
                TpmuPublicId::Ecc(TpmsEccPoint::default()),
            ),
            AkTemplate::Rsa2048 => (
                TpmAlgId::Rsa,
                TpmuPublicParms::Rsa(TpmsRsaParms {
                    symmetric: no_symmetric,
                    scheme: TpmtRsaScheme {
                        scheme: TpmAlgId::Rsassa,
                        details: scheme_hash,
                    },
                    key_bits: TpmUint16::new(2048),
                    exponent: TpmUint32::new(0),
                }),
                TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::default()),
            ),
        };
        TpmtPublic {
            object_type,
            name_alg: TpmAlgId::Sha256,
            object_attributes: TpmaObject::from_bits_truncate(AK_ATTRIBUTES),
            auth_policy: Tpm2bDigest::default(),
            parameters,
            unique,
        }
    }
}

/// Commands sent, per command code (every attempt counts, failed ones too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandCounts {
    entries: [(u32, u32); 16],
    len: usize,
    other: u32,
}

impl CommandCounts {
    /// No command sent.
    pub const fn new() -> CommandCounts {
        CommandCounts {
            entries: [(0, 0); 16],
            len: 0,
            other: 0,
        }
    }

    fn record(&mut self, code: u32) {
        if let Some(entry) = self.entries[..self.len].iter_mut().find(|e| e.0 == code) {
            entry.1 += 1;
        } else if self.len < self.entries.len() {
            self.entries[self.len] = (code, 1);
            self.len += 1;
        } else {
            self.other += 1;
        }
    }

    /// How many commands with code `code` were sent.
    pub fn get(&self, code: TpmCc) -> u32 {
        self.entries[..self.len]
            .iter()
            .find(|e| e.0 == code.value())
            .map_or(0, |e| e.1)
    }

    /// All commands sent.
    pub fn total(&self) -> u32 {
        self.entries[..self.len].iter().map(|e| e.1).sum::<u32>() + self.other
    }

    /// (command code, count) in first-sent order.
    pub fn iter(&self) -> impl Iterator<Item = (TpmCc, u32)> + '_ {
        self.entries[..self.len]
            .iter()
            .filter_map(|&(code, count)| TpmCc::try_from(code).ok().map(|cc| (cc, count)))
    }
}

impl fmt::Display for CommandCounts {
    /// `12 TPM commands (TPM_CC_GetCapability 1, TPM_CC_PCR_Extend 9, ...)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TPM commands (", self.total())?;
        for (index, (cc, count)) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{cc} {count}")?;
        }
        f.write_str(")")
    }
}

/// The PCR allocation reported by TPM2_GetCapability(TPM_CAP_PCRS): every implemented bank with
/// its selected PCRs. A bank is active when it has PCRs selected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcrAllocation {
    banks: [Option<(Bank, PcrMask)>; slipway_measure::MAX_BANKS],
    len: usize,
}

impl PcrAllocation {
    /// Every implemented bank with its allocated PCRs, in the TPM's order.
    pub fn iter(&self) -> impl Iterator<Item = (Bank, PcrMask)> + '_ {
        self.banks[..self.len].iter().flatten().copied()
    }

    /// The active banks (PCRs allocated), in the TPM's order.
    pub fn active_banks(&self) -> BankSet {
        let mut banks = BankSet::empty();
        for (bank, mask) in self.iter() {
            if !mask.is_empty() {
                // Distinct and at most MAX_BANKS: checked when the allocation was parsed.
                let _ = banks.push(bank);
            }
        }
        banks
    }

    /// The PCRs allocated in `alg`'s bank (empty when not implemented).
    pub fn allocated(&self, alg: AlgId) -> PcrMask {
        self.iter()
            .find(|(bank, _)| bank.alg == alg)
            .map_or(PcrMask::EMPTY, |(_, mask)| mask)
    }
}

/// PCR values of one bank, as read by TPM2_PCR_Read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcrValues {
    bank: Bank,
    values: [Option<Digest>; PCR_COUNT as usize],
    update_counter: u32,
}

impl PcrValues {
    /// The bank.
    pub fn alg(&self) -> AlgId {
        self.bank.alg
    }

    /// The value of PCR `pcr`, if it was read.
    pub fn get(&self, pcr: u8) -> Option<&Digest> {
        self.values.get(usize::from(pcr)).and_then(Option::as_ref)
    }

    /// (PCR, value) in ascending PCR order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &Digest)> + '_ {
        (0..PCR_COUNT).filter_map(|pcr| self.get(pcr).map(|d| (pcr, d)))
    }

    /// The pcrUpdateCounter of the last TPM2_PCR_Read.
    pub fn update_counter(&self) -> u32 {
        self.update_counter
    }
}

/// An attestation key loaded in the TPM (a transient object: flush it when done).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttestationKey {
    /// The transient handle.
    pub handle: u32,
    /// The template it was created from.
    pub template: AkTemplate,
    public: [u8; MAX_PUBLIC_SIZE],
    public_len: usize,
    name: [u8; MAX_NONCE_SIZE],
    name_len: usize,
}

impl AttestationKey {
    /// The key's public area: the marshaled TPMT_PUBLIC (what a verifier parses).
    pub fn public_area(&self) -> &[u8] {
        &self.public[..self.public_len]
    }

    /// The key's TPM name: nameAlg (2 bytes) || H(TPMT_PUBLIC).
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }
}

/// A quote: the TPMS_ATTEST bytes exactly as signed and the TPMT_SIGNATURE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    attest: [u8; MAX_ATTEST_SIZE],
    attest_len: usize,
    signature: [u8; MAX_ATTEST_SIZE],
    signature_len: usize,
}

impl Quote {
    /// The marshaled TPMS_ATTEST (the signed message).
    pub fn attest(&self) -> &[u8] {
        &self.attest[..self.attest_len]
    }

    /// The marshaled TPMT_SIGNATURE.
    pub fn signature(&self) -> &[u8] {
        &self.signature[..self.signature_len]
    }
}

/// TPM2 command helpers over a transport, with per-command counters.
pub struct Tpm<T> {
    transport: T,
    counts: CommandCounts,
    command: [u8; COMMAND_BUFFER_SIZE],
    response: [u8; RESPONSE_BUFFER_SIZE],
}

pub(crate) type Result<T, E> = core::result::Result<T, CommandError<E>>;

impl<T: TpmTransport> Tpm<T> {
    /// Helpers over `transport`. Sends nothing. `const`, so the hypervisor can keep its TPM in
    /// a static.
    pub const fn new(transport: T) -> Self {
        Tpm {
            transport,
            counts: CommandCounts::new(),
            command: [0; COMMAND_BUFFER_SIZE],
            response: [0; RESPONSE_BUFFER_SIZE],
        }
    }

    /// The transport (for locality changes and the like).
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives back the transport.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// The commands sent so far.
    pub fn counts(&self) -> &CommandCounts {
        &self.counts
    }

    /// TPM2_Startup. Only when asked: firmware normally sends it.
    pub fn startup(&mut self, startup_type: StartupType) -> Result<(), T::Error> {
        let command = TpmStartupCommand {
            handles: [],
            startup_type: match startup_type {
                StartupType::Clear => TpmSu::Clear,
                StartupType::State => TpmSu::State,
            },
        };
        let _: TpmStartupResponse = self.execute(&command, false)?;
        Ok(())
    }

    /// TPM2_GetCapability(TPM_CAP_PCRS): the implemented banks and their allocated PCRs.
    pub fn pcr_allocation(&mut self) -> Result<PcrAllocation, T::Error> {
        let command = TpmGetCapabilityCommand {
            handles: [],
            cap: TpmCap::Pcrs,
            property: TpmUint32::new(0),
            property_count: TpmUint32::new(1),
        };
        let cc = TpmCc::GetCapability;
        let response: TpmGetCapabilityResponse = self.execute(&command, false)?;
        let TpmuCapabilities::Pcrs(list) = response.capability_data.data else {
            return Err(unexpected(cc, "capability data is not TPM_CAP_PCRS"));
        };
        let mut allocation = PcrAllocation::default();
        for selection in list.iter() {
            let bank = Bank::new(AlgId(selection.hash.value()))
                .map_err(|_| unexpected(cc, "a PCR bank is not a hash algorithm"))?;
            let mask = PcrMask::from_select_bytes(&selection.pcr_select)
                .ok_or(unexpected(cc, "a bank allocates PCRs above 23"))?;
            if allocation.iter().any(|(b, _)| b.alg == bank.alg)
                || allocation.len == allocation.banks.len()
            {
                return Err(unexpected(cc, "a PCR bank is listed twice"));
            }
            allocation.banks[allocation.len] = Some((bank, mask));
            allocation.len += 1;
        }
        Ok(allocation)
    }

    /// The active banks (GetCapability(TPM_CAP_PCRS), banks with PCRs allocated).
    pub fn active_banks(&mut self) -> Result<BankSet, T::Error> {
        Ok(self.pcr_allocation()?.active_banks())
    }

    /// TPM2_PCR_Read of `pcrs` in `alg`'s bank (repeated until the TPM returned every PCR: one
    /// response carries at most 8 digests).
    pub fn pcr_read(&mut self, alg: AlgId, pcrs: PcrMask) -> Result<PcrValues, T::Error> {
        if pcrs.is_empty() {
            return Err(CommandError::EmptySelection);
        }
        let cc = TpmCc::PcrRead;
        let bank = Bank::new(alg).map_err(CommandError::Digests)?;
        let tpm = tpm_alg(alg).ok_or(CommandError::UnknownAlgorithm(alg))?;
        let mut values = PcrValues {
            bank,
            values: [None; PCR_COUNT as usize],
            update_counter: 0,
        };
        let mut remaining = pcrs;
        while !remaining.is_empty() {
            let mut selection = TpmlPcrSelection::default();
            push(&mut selection, pcr_selection(tpm, remaining), cc)?;
            let command = TpmPcrReadCommand {
                handles: [],
                pcr_selection_in: selection,
            };
            let response: TpmPcrReadResponse = self.execute(&command, false)?;
            let mut returned = PcrMask::EMPTY;
            for out in response.pcr_selection_out.iter() {
                let mask = PcrMask::from_select_bytes(&out.pcr_select)
                    .ok_or(unexpected(cc, "selection names PCRs above 23"))?;
                if mask.is_empty() {
                    continue;
                }
                if out.hash != tpm {
                    return Err(unexpected(cc, "returned a bank that was not asked for"));
                }
                returned = returned.union(mask);
            }
            if returned.is_empty() {
                return Err(unexpected(cc, "returned no PCR (bank not active?)"));
            }
            if !returned.without(remaining).is_empty() {
                return Err(unexpected(cc, "returned PCRs that were not asked for"));
            }
            if response.pcr_values.len() != returned.count() as usize {
                return Err(unexpected(cc, "digest count differs from the selection"));
            }
            for (pcr, digest) in returned.iter().zip(response.pcr_values.iter()) {
                let digest = Digest::for_bank(bank, digest).map_err(CommandError::Digests)?;
                values.values[usize::from(pcr)] = Some(digest);
            }
            values.update_counter = response.pcr_update_counter.value();
            remaining = remaining.without(returned);
        }
        Ok(values)
    }

    /// TPM2_PCR_Extend of PCR `pcr` with one digest per bank. `digests` must carry every bank in
    /// `active` exactly once and nothing else (a bank left out could be forged later); they are
    /// sent in `active`'s order.
    pub fn pcr_extend(
        &mut self,
        pcr: u8,
        digests: &DigestList,
        active: &BankSet,
    ) -> Result<(), T::Error> {
        if pcr >= PCR_COUNT {
            return Err(CommandError::InvalidPcr(pcr));
        }
        if active.is_empty() {
            return Err(CommandError::EmptySelection);
        }
        let ordered = digests.ordered_for(active).map_err(CommandError::Digests)?;
        let cc = TpmCc::PcrExtend;
        let mut values = TpmlDigestValues::default();
        for digest in ordered.iter() {
            let hash_alg =
                tpm_alg(digest.alg()).ok_or(CommandError::UnknownAlgorithm(digest.alg()))?;
            let buffer = digest
                .as_bytes()
                .try_into()
                .map_err(|error| CommandError::Marshal { command: cc, error })?;
            push(
                &mut values,
                TpmtHa {
                    hash_alg,
                    digest: TpmuHa::Digest(buffer),
                },
                cc,
            )?;
        }
        let command = TpmPcrExtendCommand {
            handles: [TpmHandle::new(u32::from(pcr))],
            digests: values,
        };
        let _: TpmPcrExtendResponse = self.execute(&command, true)?;
        Ok(())
    }

    /// TPM2_CreatePrimary of an attestation key from `template` under `hierarchy` (empty
    /// hierarchy auth). The key stays loaded until [`Tpm::flush_context`].
    pub fn create_primary(
        &mut self,
        hierarchy: Hierarchy,
        template: AkTemplate,
    ) -> Result<AttestationKey, T::Error> {
        let cc = TpmCc::CreatePrimary;
        let command = TpmCreatePrimaryCommand {
            handles: [TpmHandle::new(hierarchy.handle())],
            in_sensitive: Tpm2bSensitiveCreate::default(),
            in_public: Tpm2bPublic::from(template.public()),
            outside_info: Tpm2bData::default(),
            creation_pcr: TpmlPcrSelection::default(),
        };
        let response: TpmCreatePrimaryResponse = self.execute(&command, true)?;
        let public = &response.out_public.inner;
        let wanted = template.public();
        if public.object_type != wanted.object_type
            || public.name_alg != wanted.name_alg
            || public.object_attributes != wanted.object_attributes
            || public.parameters != wanted.parameters
        {
            return Err(unexpected(cc, "the key does not match its template"));
        }
        let mut key = AttestationKey {
            handle: response.handles[0].value(),
            template,
            public: [0; MAX_PUBLIC_SIZE],
            public_len: 0,
            name: [0; MAX_NONCE_SIZE],
            name_len: 0,
        };
        key.public_len = marshal_into(public, &mut key.public, cc)?;
        let name: &[u8] = &response.name;
        key.name[..name.len()].copy_from_slice(name);
        key.name_len = name.len();
        Ok(key)
    }

    /// TPM2_Quote with `key` over `pcrs` in every bank of `banks` (in that order), qualifying
    /// data `nonce`, the key's own signing scheme.
    pub fn quote(
        &mut self,
        key: &AttestationKey,
        nonce: &[u8],
        banks: &BankSet,
        pcrs: PcrMask,
    ) -> Result<Quote, T::Error> {
        let cc = TpmCc::Quote;
        if nonce.len() > MAX_NONCE_SIZE {
            return Err(CommandError::NonceTooLong { len: nonce.len() });
        }
        if banks.is_empty() || pcrs.is_empty() {
            return Err(CommandError::EmptySelection);
        }
        let mut selection = TpmlPcrSelection::default();
        for bank in banks.iter() {
            let alg = tpm_alg(bank.alg).ok_or(CommandError::UnknownAlgorithm(bank.alg))?;
            push(&mut selection, pcr_selection(alg, pcrs), cc)?;
        }
        let command = TpmQuoteCommand {
            handles: [TpmHandle::new(key.handle)],
            qualifying_data: nonce
                .try_into()
                .map_err(|error| CommandError::Marshal { command: cc, error })?,
            in_scheme: TpmtSigScheme {
                scheme: TpmAlgId::Null,
                details: TpmuSigScheme::Null,
            },
            pcr_select: selection,
        };
        let response: TpmQuoteResponse = self.execute(&command, true)?;
        let attest = &response.quoted.inner;
        if attest.attest_type != TpmSt::AttestQuote
            || !matches!(attest.attested, TpmuAttest::Quote(_))
        {
            return Err(unexpected(cc, "the attestation is not a quote"));
        }
        if &attest.extra_data[..] != nonce {
            return Err(unexpected(cc, "extraData differs from the nonce"));
        }
        let mut quote = Quote {
            attest: [0; MAX_ATTEST_SIZE],
            attest_len: 0,
            signature: [0; MAX_ATTEST_SIZE],
            signature_len: 0,
        };
        quote.attest_len = marshal_into(attest, &mut quote.attest, cc)?;
        quote.signature_len = marshal_into(&response.signature, &mut quote.signature, cc)?;
        Ok(quote)
    }

    /// TPM2_FlushContext of a transient object or session.
    pub fn flush_context(&mut self, handle: u32) -> Result<(), T::Error> {
        let command = TpmFlushContextCommand {
            handles: [],
            flush_handle: TpmHandle::new(handle),
        };
        let _: TpmFlushContextResponse = self.execute(&command, false)?;
        Ok(())
    }

    /// Marshals `command`, sends it, checks the response code and parses the response.
    fn execute<C: TpmFrame, R: TpmUnmarshalBody>(
        &mut self,
        command: &C,
        password_auth: bool,
    ) -> Result<R, T::Error> {
        let session = password_auth.then(|| TpmsAuthCommand {
            session_handle: TpmHandle::new(TpmRh::Pw.value()),
            nonce: Tpm2bNonce::default(),
            session_attributes: TpmaSession::CONTINUE_SESSION,
            hmac: Tpm2bAuth::default(),
        });
        self.execute_with(command, session)
    }

    /// Marshals `command` with one authorization `session` (or none), sends it, checks the
    /// response code and parses the response.
    pub(crate) fn execute_with<C: TpmFrame, R: TpmUnmarshalBody>(
        &mut self,
        command: &C,
        session: Option<TpmsAuthCommand>,
    ) -> Result<R, T::Error> {
        let cc = command.cc();
        let (tag, sessions): (TpmSt, &[TpmsAuthCommand]) = match &session {
            Some(session) => (TpmSt::Sessions, core::slice::from_ref(session)),
            None => (TpmSt::NoSessions, &[]),
        };
        let len = {
            let mut writer = TpmWriter::new(&mut self.command);
            tpm_marshal_command(command, tag, sessions, &mut writer)
                .map_err(|error| CommandError::Marshal { command: cc, error })?;
            writer.len()
        };
        let mut attempt = 0;
        let received = loop {
            self.counts.record(cc.value());
            let received = self
                .transport
                .transmit(&self.command[..len], &mut self.response)
                .map_err(|error| CommandError::Transport { command: cc, error })?;
            let rc = raw_response_code(&self.response[..received.min(RESPONSE_BUFFER_SIZE)]);
            if attempt < MAX_RETRIES && rc.is_some_and(|rc| ResponseCode(rc).is_retry()) {
                self.transport.before_retry(attempt);
                attempt += 1;
                continue;
            }
            break received;
        };
        let bytes = &self.response[..received.min(RESPONSE_BUFFER_SIZE)];
        let malformed = |error| CommandError::MalformedResponse { command: cc, error };
        let Some(rc) = raw_response_code(bytes) else {
            return Err(malformed(tpm2_protocol::TpmError::UnexpectedEnd {
                offset: 0,
                needed: HEADER_SIZE,
                available: bytes.len(),
            }));
        };
        // The raw code first: vendor codes are errors too, even where tpm2-protocol has no name.
        if rc != 0 {
            return Err(CommandError::Tpm {
                command: cc,
                rc: ResponseCode(rc),
            });
        }
        TpmResponse::cast(bytes)
            .and_then(|response| response.unmarshal::<R>())
            .map_err(malformed)
    }
}

/// The response code of a response with a complete header.
fn raw_response_code(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= HEADER_SIZE)
        .then(|| u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]))
}

pub(crate) fn unexpected<E>(command: TpmCc, reason: &'static str) -> CommandError<E> {
    CommandError::UnexpectedResponse { command, reason }
}

fn pcr_selection(alg: TpmAlgId, pcrs: PcrMask) -> TpmsPcrSelection {
    TpmsPcrSelection {
        hash: alg,
        // Three bytes always fit TPMS_PCR_SELECT (capacity 4).
        pcr_select: TpmsPcrSelect::try_from(&pcrs.select_bytes()[..]).unwrap_or_default(),
    }
}

fn push<T: Copy, const N: usize, E>(
    list: &mut tpm2_protocol::basic::TpmList<T, N>,
    item: T,
    command: TpmCc,
) -> Result<(), E> {
    list.try_push(item)
        .map_err(|error| CommandError::Marshal { command, error })
}

fn marshal_into<M: TpmMarshal, E>(value: &M, out: &mut [u8], command: TpmCc) -> Result<usize, E> {
    let mut writer = TpmWriter::new(out);
    value
        .marshal(&mut writer)
        .map_err(|_| unexpected(command, "a returned structure exceeds this crate's buffers"))?;
    Ok(writer.len())
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A key as `create_primary` would return it, without a TPM.
    pub fn key(handle: u32) -> AttestationKey {
        AttestationKey {
            handle,
            template: AkTemplate::EccP256,
            public: [0; MAX_PUBLIC_SIZE],
            public_len: 0,
            name: [0; MAX_NONCE_SIZE],
            name_len: 0,
        }
    }
}
