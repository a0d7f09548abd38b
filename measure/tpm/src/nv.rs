//! TPM2 NV storage commands: `NV_ReadPublic`, `NV_DefineSpace` (owner hierarchy, empty owner
//! authorization), `NV_Read` (the index's own empty authValue, `TPMA_NV_AUTHREAD`) and
//! `NV_Write` authorized by a **locality policy**: a policy session (`StartAuthSession`, type
//! policy, unsalted, unbound) satisfied with `PolicyLocality`, so the write succeeds only when the
//! command arrives at one of the localities the index's `authPolicy` names.
//!
//! What the indexes mean (handles, attributes, contents) is their users' business; the boot
//! record is [`crate::boot_record`].

use tpm2_protocol::{
    basic::{TpmHandle, TpmUint16},
    data::{
        Tpm2bAuth, Tpm2bDigest, Tpm2bEncryptedSecret, Tpm2bMaxNvBuffer, Tpm2bNonce, Tpm2bNvPublic,
        TpmAlgId, TpmCc, TpmRcBase, TpmRh, TpmSe, TpmaLocality, TpmaNv, TpmaSession,
        TpmsAuthCommand, TpmsNvPublic, TpmtSymDefObject, TpmuSymKeyBits, TpmuSymMode,
    },
    frame::{
        TpmNvDefineSpaceCommand, TpmNvDefineSpaceResponse, TpmNvReadCommand,
        TpmNvReadPublicCommand, TpmNvReadPublicResponse, TpmNvReadResponse, TpmNvWriteCommand,
        TpmNvWriteResponse, TpmPolicyLocalityCommand, TpmPolicyLocalityResponse,
        TpmStartAuthSessionCommand, TpmStartAuthSessionResponse,
    },
};

use crate::HashAlg;
use crate::command::{CommandError, Result, Tpm, unexpected};
use crate::transport::TpmTransport;

/// `TPM_CC_PolicyLocality`, hashed into a locality policy's digest.
const TPM_CC_POLICY_LOCALITY: u32 = 0x0000_016F;

/// Longest NV access these helpers make in one command (well below `MAX_NV_BUFFER_SIZE`).
pub const NV_ACCESS_MAX: usize = 256;

/// The public area of an NV index as `TPM2_NV_DefineSpace` takes it (nameAlg SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvTemplate {
    /// The NV index handle (`0x01xx_xxxx`).
    pub index: u32,
    /// `TPMA_NV` attributes as defined (the TPM adds `TPMA_NV_WRITTEN` after the first write).
    pub attributes: u32,
    /// The index's `authPolicy` (a SHA-256 policy digest).
    pub auth_policy: [u8; 32],
    /// The data size in bytes.
    pub size: u16,
}

/// The public area of an NV index as `TPM2_NV_ReadPublic` returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvPublic {
    /// The NV index handle.
    pub index: u32,
    /// The name algorithm (TPM algorithm id).
    pub name_alg: u16,
    /// `TPMA_NV` attributes, `TPMA_NV_WRITTEN` included.
    pub attributes: u32,
    /// The `authPolicy` digest (up to 64 bytes; `auth_policy_len` of them are valid).
    pub auth_policy: [u8; 64],
    /// Valid bytes of `auth_policy`.
    pub auth_policy_len: usize,
    /// The data size in bytes.
    pub size: u16,
}

impl NvPublic {
    /// `TPMA_NV_WRITTEN`: the index has been written since it was defined.
    pub const WRITTEN: u32 = TpmaNv::WRITTEN.bits();

    /// Whether this public area is exactly `template`'s (attributes compared without
    /// `TPMA_NV_WRITTEN`, which the TPM sets itself).
    pub fn matches(&self, template: &NvTemplate) -> bool {
        self.index == template.index
            && self.name_alg == TpmAlgId::Sha256.value()
            && self.attributes & !Self::WRITTEN == template.attributes
            && self.auth_policy[..self.auth_policy_len] == template.auth_policy
            && self.size == template.size
    }

    /// Whether the index has been written.
    pub fn written(&self) -> bool {
        self.attributes & Self::WRITTEN != 0
    }
}

/// The SHA-256 policy digest of `TPM2_PolicyLocality(localities)` from an empty policy:
/// `SHA-256(0^32 || TPM_CC_PolicyLocality || localities)`, `localities` a `TPMA_LOCALITY` bit
/// mask (bit n = locality n for 0-4).
pub fn locality_policy_digest(localities: u8) -> [u8; 32] {
    let mut input = [0u8; 32 + 4 + 1];
    input[32..36].copy_from_slice(&TPM_CC_POLICY_LOCALITY.to_be_bytes());
    input[36] = localities;
    let digest = slipway_measure::hash::hash(HashAlg::Sha256, &input);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_bytes());
    out
}

fn password_session() -> TpmsAuthCommand {
    TpmsAuthCommand {
        session_handle: TpmHandle::new(TpmRh::Pw.value()),
        nonce: Tpm2bNonce::default(),
        session_attributes: TpmaSession::CONTINUE_SESSION,
        hmac: Tpm2bAuth::default(),
    }
}

impl<T: TpmTransport> Tpm<T> {
    /// TPM2_NV_ReadPublic of `index`; `None` when no index has that handle (TPM_RC_HANDLE).
    pub fn nv_read_public(&mut self, index: u32) -> Result<Option<NvPublic>, T::Error> {
        let cc = TpmCc::NvReadPublic;
        let command = TpmNvReadPublicCommand {
            handles: [TpmHandle::new(index)],
        };
        let response: TpmNvReadPublicResponse = match self.execute_with(&command, None) {
            Ok(response) => response,
            Err(CommandError::Tpm { rc, .. }) if rc.base() == Some(TpmRcBase::Handle) => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let public = &response.nv_public.inner;
        if public.nv_index.value() != index {
            return Err(unexpected(cc, "the public area names another index"));
        }
        let policy: &[u8] = &public.auth_policy;
        let mut out = NvPublic {
            index,
            name_alg: public.name_alg.value(),
            attributes: public.attributes.bits(),
            auth_policy: [0; 64],
            auth_policy_len: policy.len(),
            size: public.data_size.value(),
        };
        if policy.len() > out.auth_policy.len() {
            return Err(unexpected(cc, "authPolicy longer than any digest"));
        }
        out.auth_policy[..policy.len()].copy_from_slice(policy);
        Ok(Some(out))
    }

    /// TPM2_NV_DefineSpace of `template` under the owner hierarchy (empty owner authorization)
    /// with an empty authValue.
    pub fn nv_define_space(&mut self, template: &NvTemplate) -> Result<(), T::Error> {
        let cc = TpmCc::NvDefineSpace;
        let command = TpmNvDefineSpaceCommand {
            handles: [TpmHandle::new(TpmRh::Owner.value())],
            auth: Tpm2bAuth::default(),
            public_info: Tpm2bNvPublic::from(TpmsNvPublic {
                nv_index: TpmHandle::new(template.index),
                name_alg: TpmAlgId::Sha256,
                attributes: TpmaNv::from_bits_truncate(template.attributes),
                auth_policy: Tpm2bDigest::try_from(&template.auth_policy[..])
                    .map_err(|error| CommandError::Marshal { command: cc, error })?,
                data_size: TpmUint16::new(template.size),
            }),
        };
        let _: TpmNvDefineSpaceResponse = self.execute_with(&command, Some(password_session()))?;
        Ok(())
    }

    /// TPM2_NV_Read of `out.len()` bytes at offset 0, authorized by the index's own (empty)
    /// authValue.
    pub fn nv_read(&mut self, index: u32, out: &mut [u8]) -> Result<(), T::Error> {
        let cc = TpmCc::NvRead;
        if out.len() > NV_ACCESS_MAX {
            return Err(unexpected(cc, "read larger than NV_ACCESS_MAX"));
        }
        let command = TpmNvReadCommand {
            handles: [TpmHandle::new(index), TpmHandle::new(index)],
            size: TpmUint16::new(out.len() as u16),
            offset: TpmUint16::new(0),
        };
        let response: TpmNvReadResponse = self.execute_with(&command, Some(password_session()))?;
        let data: &[u8] = &response.data;
        if data.len() != out.len() {
            return Err(unexpected(cc, "returned another number of bytes"));
        }
        out.copy_from_slice(data);
        Ok(())
    }

    /// TPM2_NV_Write of `data` at offset 0 under the index's locality policy: starts a policy
    /// session, runs `TPM2_PolicyLocality(localities)` in it and writes with it (the session
    /// ends with the write: `continueSession` clear). Succeeds only if the command arrives at
    /// one of `localities` and the index's `authPolicy` is that policy. A session left by a
    /// failed step is flushed.
    pub fn nv_write_with_locality_policy(
        &mut self,
        index: u32,
        localities: u8,
        data: &[u8],
    ) -> Result<(), T::Error> {
        let cc = TpmCc::NvWrite;
        if data.len() > NV_ACCESS_MAX {
            return Err(unexpected(cc, "write larger than NV_ACCESS_MAX"));
        }
        let start = TpmStartAuthSessionCommand {
            handles: [
                TpmHandle::new(TpmRh::Null.value()),
                TpmHandle::new(TpmRh::Null.value()),
            ],
            // The TPM requires a caller nonce of at least 16 bytes. Nothing here is secret and
            // no HMAC is computed (a locality policy has no authValue), so it need not be random.
            nonce_caller: Tpm2bNonce::try_from(&[0x5a; 32][..])
                .map_err(|error| CommandError::Marshal { command: cc, error })?,
            encrypted_salt: Tpm2bEncryptedSecret::default(),
            session_type: TpmSe::Policy,
            symmetric: TpmtSymDefObject {
                algorithm: TpmAlgId::Null,
                key_bits: TpmuSymKeyBits::Null,
                mode: TpmuSymMode::Null,
            },
            auth_hash: TpmAlgId::Sha256,
        };
        let started: TpmStartAuthSessionResponse = self.execute_with(&start, None)?;
        let session = started.handles[0].value();
        let result = self.write_in_policy_session(session, index, localities, data);
        if result.is_err() {
            // The write consumes the session only when it ran; flush what is left (an error
            // here changes nothing: the session ends at the next TPM reset at the latest).
            let _ = self.flush_context(session);
        }
        result
    }

    fn write_in_policy_session(
        &mut self,
        session: u32,
        index: u32,
        localities: u8,
        data: &[u8],
    ) -> Result<(), T::Error> {
        let cc = TpmCc::NvWrite;
        let policy = TpmPolicyLocalityCommand {
            handles: [TpmHandle::new(session)],
            locality: TpmaLocality::from_bits_truncate(localities),
        };
        let _: TpmPolicyLocalityResponse = self.execute_with(&policy, None)?;
        let write = TpmNvWriteCommand {
            handles: [TpmHandle::new(index), TpmHandle::new(index)],
            data: Tpm2bMaxNvBuffer::try_from(data)
                .map_err(|error| CommandError::Marshal { command: cc, error })?,
            offset: TpmUint16::new(0),
        };
        let session = TpmsAuthCommand {
            session_handle: TpmHandle::new(session),
            nonce: Tpm2bNonce::default(),
            session_attributes: TpmaSession::empty(),
            hmac: Tpm2bAuth::default(),
        };
        let _: TpmNvWriteResponse = self.execute_with(&write, Some(session))?;
        Ok(())
    }
}
