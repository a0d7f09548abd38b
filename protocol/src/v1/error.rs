//! The v1 error codes: what was wrong with a request.

use core::fmt;

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::DecodeError;

/// One definition per error: the code on the wire, and the message that is both the variant's
/// doc comment and the text of [`Error::message`].
macro_rules! error_codes {
    ($($variant:ident = $code:literal => $message:literal,)*) => {
        /// Why the hypervisor refused a request. Encoded as its `u16` code (the `repr`), which
        /// never changes once published; unknown codes do not decode.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[non_exhaustive]
        pub enum Error {
            $(#[doc = $message] $variant = $code,)*
        }

        impl Error {
            /// Every error, in code order (for tests and documentation).
            pub const ALL: &[Error] = &[$(Error::$variant,)*];

            /// The human-readable message (the variant's doc comment).
            pub const fn message(self) -> &'static str {
                match self {
                    $(Error::$variant => $message,)*
                }
            }

            /// The error for a wire code, `None` for an unknown one.
            pub const fn from_code(code: u16) -> Option<Self> {
                match code {
                    $($code => Some(Error::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    // 0x01xx: the message itself.
    MalformedRequest = 0x0101 => "the request could not be decoded: truncated, trailing bytes, not canonical, or an invalid field (an unknown variant, a bound exceeded, an invalid name)",
    BadMagic = 0x0102 => "the request does not start with the request magic",
    UnsupportedVersion = 0x0103 => "the request's ABI version is not supported by this hypervisor",
    // 0x02xx: who may call what, and when.
    NotPermitted = 0x0201 => "the calling domain lacks the capability this request needs",
    AfterHandOff = 0x0202 => "builder requests are refused after hand-off",
    PlanIncomplete = 0x0203 => "hand-off refused: a planned domain has a vCPU without initial state or no start request",
    // 0x03xx: domains.
    UnknownDomain = 0x0301 => "no domain with this id is being built by the caller",
    NameTaken = 0x0302 => "a domain with this name already exists",
    NameReserved = 0x0303 => "the domain name is reserved by the hypervisor",
    InvalidMemorySize = 0x0304 => "the memory size is zero, not a multiple of 4 KiB, or above the hypervisor's limit",
    OutOfMemory = 0x0305 => "the hypervisor has not enough free memory for the domain",
    TooManyDomains = 0x0306 => "the hypervisor cannot create more domains",
    DuplicateStartRequest = 0x0307 => "the domain's start was already requested",
    ConsoleAlreadyAssigned = 0x0308 => "the console is already assigned to another domain",
    BuildRecordFull = 0x0309 => "the domain's build record is full: the build needs more steps than the hypervisor records per domain",
    TpmAlreadyGranted = 0x030A => "another domain already has the TPM capability (at most one domain may use the TPM)",
    // 0x04xx: modules and memory ranges.
    UnknownModule = 0x0401 => "no boot module has this index",
    RangeOutsideModule = 0x0402 => "the range (offset, length) is not inside the boot module",
    RangeOutsideDomain = 0x0403 => "the guest-physical range is not inside the domain's memory",
    // 0x05xx: vCPUs.
    NoVcpus = 0x0501 => "a domain needs at least one vCPU",
    TooManyVcpus = 0x0502 => "the vCPU count is above the hypervisor's per-domain limit",
    InvalidVcpu = 0x0503 => "the vCPU index is not below the domain's vCPU count",
    InvalidEntryState = 0x0504 => "the vCPU entry state is invalid: entry, stack, page tables or start info outside the domain's memory, or a non-canonical address",
    NoVcpuContext = 0x0505 => "the hypervisor has no hardware vCPU context left for the domain: its address-space ids (ASIDs) are all in use",
    // 0x06xx: measurement.
    PcrNotAllowed = 0x0601 => "the caller may not extend this PCR",
    BankMissing = 0x0602 => "no digest was given for an active TPM bank",
    UnknownAlgorithm = 0x0603 => "a digest names an algorithm that is not an active TPM bank",
    DuplicateBank = 0x0604 => "two digests name the same bank",
    DigestLengthWrong = 0x0605 => "a digest's length does not match its algorithm",
    EventDataTooLarge = 0x0606 => "the event data is larger than the hypervisor's event-log record limit",
    EventLogFull = 0x0607 => "the event log has no room for the event",
    TpmFailed = 0x0608 => "the TPM failed the extend",
    EventTypeNotAllowed = 0x0609 => "the caller may not log this event type into this PCR",
    DigestMismatch = 0x060A => "a digest is not the hash of the event data: the hypervisor recomputed it and the two differ",
    EventDataMalformed = 0x060B => "the event data does not decode as its event type's format",
    ModuleRecordMismatch = 0x060C => "the boot-module event names no boot module, or a size other than the module's",
    MeasurementFailed = 0x060D => "measurement failed earlier in this boot (a TPM error): no further measurement is accepted and the launch counts as failed",
    // 0x07xx: the boot record (TPM NV boot-attempt counter and last known-good slot).
    BootAlreadyReported = 0x0701 => "this boot's success was already reported",
    BootRecordUnavailable = 0x0702 => "this boot has no boot record (no TPM, or the record could not be used): there is nothing to mark known good",
    BootRecordWriteFailed = 0x0703 => "the TPM did not take the boot record's update (locality 2 not granted while another locality is active, or the write failed); the report may be sent again",
}

impl Error {
    /// The wire code.
    pub const fn code(self) -> u16 {
        self as u16
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for Error {}

/// The error a server answers for a request that did not decode.
impl From<DecodeError> for Error {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::BadMagic { .. } => Self::BadMagic,
            DecodeError::UnsupportedVersion { .. } => Self::UnsupportedVersion,
            DecodeError::Truncated
            | DecodeError::Malformed
            | DecodeError::TrailingBytes
            | DecodeError::NotCanonical => Self::MalformedRequest,
        }
    }
}

impl Serialize for Error {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.code())
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(deserializer)?;
        Self::from_code(code).ok_or_else(|| {
            de::Error::invalid_value(de::Unexpected::Unsigned(code.into()), &"a v1 error code")
        })
    }
}

impl MaxSize for Error {
    const POSTCARD_MAX_SIZE: usize = u16::POSTCARD_MAX_SIZE;
}
