//! Hypercall ABI version 1.
//!
//! A request is `header(REQUEST_MAGIC, VERSION)` followed by a postcard-encoded [`Request`]; the
//! response is `header(RESPONSE_MAGIC, VERSION)` followed by a postcard-encoded [`Response`]
//! (`Result<ResponseOk, Error>`). The boot-information page given to domB is
//! `header(BOOT_INFO_MAGIC, VERSION)` followed by a postcard-encoded [`BootInfo`].
//!
//! Decoding is strict: a wrong magic or version, a truncated body, trailing bytes, an unknown
//! variant or error code, a bound exceeded, or an invalid name is a [`DecodeError`]. A server
//! answers a request that did not decode with `Err(Error::from(decode_error))`.
//!
//! Server contract: the hypervisor copies the request once from the guest page into its own
//! buffer, decodes and validates that copy, never reads the guest page again for that call, and
//! then writes the encoded response into the guest page.
//!
//! ```
//! use slipway_protocol::HYPERCALL_BUFFER_SIZE;
//! use slipway_protocol::v1::*;
//!
//! // Client: encode into the buffer page.
//! let mut page = [0u8; HYPERCALL_BUFFER_SIZE];
//! let len = encode_request(&Request::QueryModule { index: 2 }, &mut page).unwrap();
//! assert_eq!(&page[..len], b"SWRQ\x04\x00\x01\x02");
//!
//! // Server: decode its own copy, answer.
//! let copy = page;
//! let request = decode_request(&copy[..len]);
//! let response: Response = match request {
//!     Ok(Request::QueryModule { index: 2 }) => Err(Error::UnknownModule),
//!     Ok(_) => Err(Error::NotPermitted),
//!     Err(error) => Err(error.into()),
//! };
//! let len = encode_response(&response, &mut page).unwrap();
//! assert_eq!(decode_response(&page[..len]), Ok(Err(Error::UnknownModule)));
//! ```

mod client;
mod error;
mod log_window;
#[cfg(test)]
mod tests;
mod types;

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedVec, Bytes};
use crate::codec::{self, DecodeError, EncodeError, HEADER_LEN};
use crate::{BOOT_INFO_MAGIC, HYPERCALL_BUFFER_SIZE, REQUEST_MAGIC, RESPONSE_MAGIC};

pub use client::{CallError, Hypercall, call};
pub use error::Error;
pub use log_window::{
    FIRMWARE_LOG_GPA, FIRMWARE_LOG_MODULE, LOG_DESCRIPTOR_LEN, LOG_WINDOW_CAPACITY,
    LOG_WINDOW_MAGIC, LOG_WINDOW_SIZE, LogWindowDescriptor, LogWindowError, SLIPWAY_LOG_GPA,
    SLIPWAY_LOG_MODULE,
};
pub use types::{
    BOOT_DOMAIN_NAME, Capabilities, DOMAIN_NAME_MAX, Digest, DomainId, DomainName, LaunchKind,
    MAX_BANKS, MAX_DIGEST_LEN, MODULE_NAME_MAX, ModuleInfo, ModuleName, NameError,
    RESERVED_DOMAIN_NAMES, TpmAlgId, TpmBanks, VcpuEntry,
};

/// The ABI version of this module.
/// Version 2 added `Capabilities::tpm` (a changed `CreateDomain` encoding, so a new number:
/// a peer of version 1 gets `UnsupportedVersion`, never a misread). The module keeps the name
/// `v1`: no version-1 peer exists in a tree (domB and the hypervisor are built together).
/// Version 3 added [`BootInfo::boot_state`] and [`Request::ReportBootSuccess`].
/// Version 4 added [`VcpuEntry::WaitForStartupIpi`].
pub const VERSION: u16 = 4;

/// Most bytes one [`Request::WriteMemory`] carries: a 4 KiB page takes two calls.
pub const WRITE_MEMORY_MAX: usize = 2048;
/// Most bytes one [`Request::WriteConsole`] carries.
pub const CONSOLE_WRITE_MAX: usize = 1024;
/// Most event-data bytes one [`Request::Measure`] carries (3 KiB): the request with all eight
/// possible digests of 64 bytes still fits the hypercall buffer.
pub const EVENT_DATA_MAX: usize = 3072;
/// Most boot modules the boot-information page lists (every module of a boot).
pub use crate::boot_modules::MAX_BOOT_MODULES;

/// A request from a domain to the hypervisor.
///
/// Every request but [`Request::WriteConsole`] and [`Request::Shutdown`] needs the builder
/// capability (held by domB alone) and is refused with [`Error::AfterHandOff`] after hand-off
/// (see [`Request::needs_builder`]). Module indexes count boot modules from 0 in multiboot2
/// order, as in [`BootInfo::modules`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[non_exhaustive]
#[allow(
    clippy::large_enum_variant,
    reason = "no allocator on either side; a request is handled one at a time, about 3.7 KiB"
)]
pub enum Request {
    /// Asks for the launch kind, active TPM banks and number of boot modules.
    /// Answer: [`ResponseOk::BootInfo`].
    QueryBootInfo,
    /// Asks for one boot module's name, size and address in domB. Answer: [`ResponseOk::Module`].
    QueryModule {
        /// The module's index.
        index: u16,
    },
    /// Creates an empty domain: zeroed memory `[0, memory_bytes)`, `vcpus` vCPUs without state.
    /// Answer: [`ResponseOk::DomainCreated`].
    CreateDomain {
        /// Unique name.
        name: DomainName,
        /// Memory size in bytes, a multiple of 4 KiB.
        memory_bytes: u64,
        /// Number of vCPUs, at least 1.
        vcpus: u16,
        /// What the domain may do.
        capabilities: Capabilities,
    },
    /// Copies `length` bytes of boot module `module` from `module_offset` to `gpa` in `domain`.
    /// Answer: [`ResponseOk::Done`].
    PopulateFromModule {
        /// Target domain.
        domain: DomainId,
        /// Source module index.
        module: u16,
        /// Byte offset in the module.
        module_offset: u64,
        /// Number of bytes.
        length: u64,
        /// Destination guest-physical address.
        gpa: u64,
    },
    /// Writes `bytes` at `gpa` in `domain` (start-info pages, command lines).
    /// Answer: [`ResponseOk::Done`].
    WriteMemory {
        /// Target domain.
        domain: DomainId,
        /// Destination guest-physical address.
        gpa: u64,
        /// The data.
        bytes: Bytes<WRITE_MEMORY_MAX>,
    },
    /// Sets the initial state of one vCPU. Answer: [`ResponseOk::Done`].
    SetVcpuState {
        /// Target domain.
        domain: DomainId,
        /// vCPU index, below the domain's vCPU count.
        vcpu: u16,
        /// Initial state.
        entry: VcpuEntry,
    },
    /// Gives `domain` the serial console's input focus after hand-off. Answer: [`ResponseOk::Done`].
    AssignConsole {
        /// The domain.
        domain: DomainId,
    },
    /// Records that `domain` starts after hand-off. Domains start in ascending `boot_order`;
    /// equal orders start in the order their starts were requested. Answer: [`ResponseOk::Done`].
    RequestStart {
        /// The domain.
        domain: DomainId,
        /// Position in the start order.
        boot_order: u16,
    },
    /// Writes bytes to the caller's console output. Answer: [`ResponseOk::Done`].
    WriteConsole {
        /// The bytes.
        bytes: Bytes<CONSOLE_WRITE_MAX>,
    },
    /// Extends `pcr` with one digest per active bank and appends the event to the log.
    /// Answer: [`ResponseOk::Measured`].
    Measure {
        /// PCR index.
        pcr: u8,
        /// TCG event type.
        event_type: u32,
        /// One digest per active bank, each bank once.
        digests: BoundedVec<Digest, MAX_BANKS>,
        /// The exact event data recorded in the log.
        event_data: Bytes<EVENT_DATA_MAX>,
    },
    /// Completes the plan, destroys the caller (domB) and starts the requested domains.
    /// Does not return on success; an error is answered as usual.
    HandOff,
    /// Shuts the calling domain down. Any domain may call it; it does not return.
    Shutdown {
        /// Exit code reported on the console (0 = success).
        exit_code: u32,
    },
    /// After hand-off, a control domain reports that this boot succeeded: the hypervisor
    /// records the configuration slot this boot used as the last known-good slot in the TPM NV
    /// boot record (and restarts that slot's boot-attempt count). Only a control domain may
    /// call it, only after hand-off ([`Error::NotPermitted`] otherwise), and once per boot
    /// ([`Error::BootAlreadyReported`]). Answer: [`ResponseOk::Done`].
    ReportBootSuccess,
}

impl Request {
    /// Whether this request needs the builder capability (and is refused after hand-off).
    pub const fn needs_builder(&self) -> bool {
        !matches!(
            self,
            Self::WriteConsole { .. } | Self::Shutdown { .. } | Self::ReportBootSuccess
        )
    }
}

/// Answer to [`Request::QueryBootInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct BootSummary {
    /// How the hypervisor was launched.
    pub launch_kind: LaunchKind,
    /// Active TPM banks; empty without a TPM.
    pub active_banks: TpmBanks,
    /// Number of boot modules.
    pub module_count: u16,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[non_exhaustive]
pub enum ResponseOk {
    /// The request was carried out and has nothing to return.
    Done,
    /// Answer to [`Request::QueryBootInfo`].
    BootInfo(BootSummary),
    /// Answer to [`Request::QueryModule`].
    Module(ModuleInfo),
    /// Answer to [`Request::CreateDomain`]: the new domain's id.
    DomainCreated(DomainId),
    /// Answer to [`Request::Measure`]: the event's index in the hypervisor's event log.
    Measured {
        /// Index of the appended event (0 = the log's first event).
        event_index: u32,
    },
}

impl ResponseOk {
    /// Whether this is the answer kind `request` expects. A client treats a mismatch as a
    /// protocol error.
    pub const fn answers(&self, request: &Request) -> bool {
        match request {
            Request::QueryBootInfo => matches!(self, Self::BootInfo(_)),
            Request::QueryModule { .. } => matches!(self, Self::Module(_)),
            Request::CreateDomain { .. } => matches!(self, Self::DomainCreated(_)),
            Request::Measure { .. } => matches!(self, Self::Measured { .. }),
            Request::PopulateFromModule { .. }
            | Request::WriteMemory { .. }
            | Request::SetVcpuState { .. }
            | Request::AssignConsole { .. }
            | Request::RequestStart { .. }
            | Request::WriteConsole { .. }
            | Request::ReportBootSuccess => matches!(self, Self::Done),
            Request::HandOff | Request::Shutdown { .. } => false,
        }
    }
}

/// A response: the typed result of one request.
pub type Response = Result<ResponseOk, Error>;

/// The boot-information page given to domB (PVH start-info module entry 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct BootInfo {
    /// How the hypervisor was launched.
    pub launch_kind: LaunchKind,
    /// Active TPM banks; empty without a TPM.
    pub active_banks: TpmBanks,
    /// Boot modules in multiboot2 order (index = module index in requests).
    pub modules: BoundedVec<ModuleInfo, MAX_BOOT_MODULES>,
    /// Guest-physical address of the page in domB's RAM reserved as its hypercall buffer.
    pub hypercall_buffer_gpa: u64,
    /// What the hypervisor's TPM NV boot record says about earlier boots, this one counted.
    pub boot_state: BootState,
}

/// The boot state domB receives (`docs/measurement.md`, "Boot record"): the slot this boot was
/// asked to use, how often it was tried, and the last known-good slot. Measured by the
/// hypervisor (`EV_SLIPWAY_BOOT_STATE`) before domB runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, MaxSize)]
pub struct BootState {
    /// The configuration slot requested on the hypervisor command line (`slot=`; 0 = `a`).
    pub requested_slot: u8,
    /// Boots of the requested slot since it last reported success, this one included; `None`
    /// when there is no usable boot record (no TPM, a foreign index, a TPM error).
    pub attempts: Option<u32>,
    /// The slot of the last boot that reported success, if any.
    pub last_known_good: Option<u8>,
}

/// Most bytes an encoded request takes.
pub const MAX_REQUEST_LEN: usize = HEADER_LEN + Request::POSTCARD_MAX_SIZE;
/// Most bytes an encoded response takes.
pub const MAX_RESPONSE_LEN: usize = HEADER_LEN + <Response as MaxSize>::POSTCARD_MAX_SIZE;
/// Most bytes an encoded boot-information page takes.
pub const MAX_BOOT_INFO_LEN: usize = HEADER_LEN + BootInfo::POSTCARD_MAX_SIZE;

const _: () = assert!(MAX_REQUEST_LEN <= HYPERCALL_BUFFER_SIZE);
const _: () = assert!(MAX_RESPONSE_LEN <= HYPERCALL_BUFFER_SIZE);
const _: () = assert!(MAX_BOOT_INFO_LEN <= 4096);
const _: () = assert!(MAX_BOOT_MODULES >= 32);
const _: () = assert!(2 * WRITE_MEMORY_MAX >= 4096);

/// Encodes a request into `out`, returning its length.
pub fn encode_request(request: &Request, out: &mut [u8]) -> Result<usize, EncodeError> {
    codec::encode(REQUEST_MAGIC, VERSION, request, out)
}

/// Decodes a request that fills `bytes` exactly.
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    codec::decode(REQUEST_MAGIC, VERSION, bytes)
}

/// Encodes a response into `out`, returning its length.
pub fn encode_response(response: &Response, out: &mut [u8]) -> Result<usize, EncodeError> {
    codec::encode(RESPONSE_MAGIC, VERSION, response, out)
}

/// Decodes a response that fills `bytes` exactly.
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    codec::decode(RESPONSE_MAGIC, VERSION, bytes)
}

/// Encodes a boot-information page into `out`, returning its length.
pub fn encode_boot_info(boot_info: &BootInfo, out: &mut [u8]) -> Result<usize, EncodeError> {
    codec::encode(BOOT_INFO_MAGIC, VERSION, boot_info, out)
}

/// Decodes a boot-information message that fills `bytes` exactly: the PVH start-info module
/// entry 0 gives its exact length.
pub fn decode_boot_info(bytes: &[u8]) -> Result<BootInfo, DecodeError> {
    codec::decode(BOOT_INFO_MAGIC, VERSION, bytes)
}

/// Checks a measure request's digests against the active banks: every active bank exactly
/// once, each with its algorithm's length. The hypervisor's check; domB may use it too.
pub fn check_digests(digests: &[Digest], active_banks: &[TpmAlgId]) -> Result<(), Error> {
    for (position, digest) in digests.iter().enumerate() {
        if !active_banks.contains(&digest.alg) {
            return Err(Error::UnknownAlgorithm);
        }
        if digests[..position]
            .iter()
            .any(|earlier| earlier.alg == digest.alg)
        {
            return Err(Error::DuplicateBank);
        }
        if digest.alg.digest_len() != Some(digest.bytes.len()) {
            return Err(Error::DigestLengthWrong);
        }
    }
    if active_banks
        .iter()
        .any(|bank| !digests.iter().any(|digest| digest.alg == *bank))
    {
        return Err(Error::BankMissing);
    }
    Ok(())
}
