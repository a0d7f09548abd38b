//! TPM response codes with their decoded meaning.

use core::fmt;

use tpm2_protocol::data::{TpmRc, TpmRcBase, TpmRcIndex};

/// A TPM 2.0 response code other than success, as the TPM sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    /// TPM_RC_LOCALITY: the command is not allowed at the current locality.
    pub const LOCALITY: ResponseCode = ResponseCode(0x907);
    /// TPM_RC_INITIALIZE: TPM2_Startup has not run.
    pub const INITIALIZE: ResponseCode = ResponseCode(0x100);

    /// The raw value.
    pub fn value(self) -> u32 {
        self.0
    }

    /// Decoded by `tpm2-protocol`; `None` for vendor or unknown codes.
    pub fn decode(self) -> Option<TpmRc> {
        TpmRc::try_from(self.0).ok()
    }

    /// The base code (format-1 handle/parameter/session numbers removed).
    pub fn base(self) -> Option<TpmRcBase> {
        self.decode().map(|rc| rc.base())
    }

    /// Whether this is TPM_RC_LOCALITY (0x907).
    pub fn is_locality(self) -> bool {
        self.base() == Some(TpmRcBase::Locality)
    }

    /// Whether the TPM asks to retry the same command later (TPM_RC_RETRY, _YIELDED, _TESTING,
    /// _NV_RATE).
    pub fn is_retry(self) -> bool {
        matches!(
            self.base(),
            Some(TpmRcBase::Retry | TpmRcBase::Yielded | TpmRcBase::Testing | TpmRcBase::NvRate)
        )
    }

    /// A one-line explanation of the common codes this project meets.
    pub fn meaning(self) -> &'static str {
        match self.base() {
            Some(TpmRcBase::Locality) => "the command is not allowed at the current locality",
            Some(TpmRcBase::Initialize) => "TPM2_Startup has not been run",
            Some(TpmRcBase::Failure) => "the TPM is in failure mode",
            Some(TpmRcBase::Pcr) => "invalid PCR selection or PCR not allowed for this command",
            Some(TpmRcBase::Value) => "a value is out of range or not correct for the context",
            Some(TpmRcBase::Hash) => "hash algorithm not supported or not appropriate",
            Some(TpmRcBase::Handle) => "the handle is not correct for its use",
            Some(TpmRcBase::Hierarchy) => "the hierarchy is disabled or not valid",
            Some(TpmRcBase::AuthFail) => "the authorization HMAC or password is wrong",
            Some(TpmRcBase::BadAuth) => "authorization failure without dictionary-attack effect",
            Some(TpmRcBase::Lockout) => "dictionary-attack lockout is active",
            Some(TpmRcBase::Scheme) => "unsupported or mismatched signing scheme",
            Some(TpmRcBase::Attributes) => "object or session attributes are inconsistent",
            Some(TpmRcBase::Key) => "key fields are not compatible with the selected use",
            Some(TpmRcBase::Curve) => "ECC curve not supported",
            Some(TpmRcBase::KeySize) => "key size not supported",
            Some(TpmRcBase::Size) => "a structure has the wrong size",
            Some(TpmRcBase::Selector) => "a union selector is not valid",
            Some(TpmRcBase::CommandCode) => "the command code is not supported",
            Some(TpmRcBase::CommandSize) => "the command size does not match the bytes sent",
            Some(TpmRcBase::BadTag) => "the command tag is not valid",
            Some(TpmRcBase::AuthMissing) => "the command needs an authorization session",
            Some(TpmRcBase::ObjectMemory | TpmRcBase::ObjectHandles) => {
                "no room for another loaded object: flush transient objects"
            }
            Some(TpmRcBase::Retry) => "the TPM was busy: retry the command",
            Some(TpmRcBase::Yielded) => "the TPM yielded: retry the command",
            Some(TpmRcBase::Testing) => "the TPM is self-testing: retry the command",
            Some(TpmRcBase::NvRate) => "NV is rate-limited: retry the command later",
            Some(TpmRcBase::Canceled) => "the command was canceled",
            Some(_) => "see TPM 2.0 Part 2, TPM_RC",
            None => "unknown or vendor-specific response code",
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:03x}", self.0)?;
        if let Some(rc) = self.decode() {
            match rc {
                TpmRc::Fmt0(base) | TpmRc::Warn(base) => write!(f, " {base}")?,
                TpmRc::Fmt1(fmt1) => {
                    write!(f, " {}", fmt1.base)?;
                    match fmt1.index {
                        Some(TpmRcIndex::Parameter(n)) => write!(f, " (parameter {n})")?,
                        Some(TpmRcIndex::Handle(n)) => write!(f, " (handle {n})")?,
                        Some(TpmRcIndex::Session(n)) => write!(f, " (session {n})")?,
                        None => {}
                    }
                }
            }
        }
        write!(f, ": {}", self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality_code_is_decoded() {
        let rc = ResponseCode(0x907);
        assert!(rc.is_locality());
        assert!(!rc.is_retry());
        assert_eq!(
            std::format!("{rc}"),
            "0x907 TPM_RC_LOCALITY: the command is not allowed at the current locality"
        );
    }

    #[test]
    fn format1_codes_name_their_parameter_or_handle() {
        // TPM_RC_VALUE on parameter 1: 0x084 | P bit | (1 << 8).
        let rc = ResponseCode(0x1c4);
        assert_eq!(rc.base(), Some(TpmRcBase::Value));
        assert!(std::format!("{rc}").starts_with("0x1c4 TPM_RC_VALUE (parameter 1):"));
        let rc = ResponseCode(0x18b);
        assert!(std::format!("{rc}").starts_with("0x18b TPM_RC_HANDLE (handle 1):"));
    }

    #[test]
    fn unknown_codes_are_still_printed() {
        let rc = ResponseCode(0x0badc0de);
        assert_eq!(rc.decode(), None);
        assert_eq!(
            std::format!("{rc}"),
            "0xbadc0de: unknown or vendor-specific response code"
        );
        assert!(ResponseCode(0x922).is_retry());
    }
}
