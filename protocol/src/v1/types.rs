//! Value types shared by v1 requests, responses and the boot-information page.

use core::fmt;

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::bounded::{BoundedVec, Bytes, CapacityError, varint_len};

/// Longest domain name in bytes.
pub const DOMAIN_NAME_MAX: usize = 31;
/// The boot domain's name (as a domain; its module is [`crate::boot_modules::DOMB_MODULE`]).
pub const BOOT_DOMAIN_NAME: &str = "domb";
/// Domain names the hypervisor keeps for itself: a builder cannot create a domain with one.
pub const RESERVED_DOMAIN_NAMES: [&str; 3] = [BOOT_DOMAIN_NAME, "slipway", "hypervisor"];
/// Longest boot-module name in bytes.
pub const MODULE_NAME_MAX: usize = 63;
/// Most TPM banks a platform can report (the TPM 2.0 algorithm registry has eight hash
/// algorithms usable for PCR banks).
pub const MAX_BANKS: usize = 8;
/// Longest digest in bytes (SHA-512, SHA3-512).
pub const MAX_DIGEST_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than allowed.
    TooLong {
        /// The longest allowed length in bytes.
        max: usize,
    },
    /// The name contains a character outside the allowed set.
    InvalidCharacter {
        /// Byte offset of the first offending character.
        position: usize,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the name is empty"),
            Self::TooLong { max } => write!(f, "the name is longer than {max} bytes"),
            Self::InvalidCharacter { position } => {
                write!(f, "the name has a character not allowed at byte {position}")
            }
        }
    }
}

impl core::error::Error for NameError {}

fn check_name(name: &str, max: usize, allowed: fn(u8) -> bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong { max });
    }
    match name.bytes().position(|byte| !allowed(byte)) {
        Some(position) => Err(NameError::InvalidCharacter { position }),
        None => Ok(()),
    }
}

/// Defines a validated name type: checked on construction and on decode, so every value of
/// the type is valid. An invalid name on the wire is a [`crate::DecodeError::Malformed`].
macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $max:expr, $allowed:expr, $expecting:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(heapless::String<$max>);

        impl $name {
            /// Longest name in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `name`.
            pub fn new(name: &str) -> Result<Self, NameError> {
                check_name(name, $max, $allowed)?;
                let mut string = heapless::String::new();
                // Cannot fail: the length was checked above.
                string.push_str(name).map_err(|()| NameError::TooLong { max: $max })?;
                Ok(Self(string))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl core::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(name: &str) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct NameVisitor;
                impl de::Visitor<'_> for NameVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, name: &str) -> Result<$name, E> {
                        $name::new(name).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(NameVisitor)
            }
        }

        impl MaxSize for $name {
            const POSTCARD_MAX_SIZE: usize = $max + varint_len($max as u64);
        }
    };
}

validated_name!(
    /// A domain name: `[a-z0-9-]{1,31}`. Console lines of a domain are prefixed with it.
    DomainName,
    DOMAIN_NAME_MAX,
    |byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-',
    "a domain name [a-z0-9-]{1,31}"
);

validated_name!(
    /// A boot-module name: the first word of its multiboot2 command line
    /// (`[A-Za-z0-9._-]{1,63}`; the rule that finds it is [`crate::boot_modules`]).
    ModuleName,
    MODULE_NAME_MAX,
    |byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'),
    "a module name [A-Za-z0-9._-]{1,63}"
);

/// A domain, as returned by [`super::Request::CreateDomain`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, MaxSize,
)]
pub struct DomainId(pub u16);

/// Capabilities a builder may grant to a domain it creates. The builder capability itself
/// (held by domB alone) cannot be requested: it has no field here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, MaxSize)]
pub struct Capabilities {
    /// May manage the system after hand-off (and receives the event log).
    pub control: bool,
    /// May own physical devices (recorded and measured only until IOMMU support lands).
    pub hardware: bool,
    /// Is the domain started when the launch policy allows only recovery.
    pub recovery: bool,
    /// Gets the TPM's locality-0 register page after hand-off (at most one domain: two could
    /// interleave commands and read each other's responses in the one FIFO).
    pub tpm: bool,
}

/// A vCPU's initial state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, MaxSize)]
pub enum VcpuEntry {
    /// PVH entry: 32-bit flat protected mode, paging off, `ebx` = start-info address.
    Pvh32 {
        /// Entry point (`eip`).
        entry_eip: u32,
        /// Guest-physical address of the `hvm_start_info`, passed in `ebx`.
        start_info_gpa: u32,
    },
    /// 64-bit long mode with the given page tables.
    Long64 {
        /// Entry point.
        rip: u64,
        /// Initial stack pointer.
        rsp: u64,
        /// Guest-physical address of the top-level page table.
        cr3: u64,
        /// Argument register (for example a start-info or boot-params address).
        rsi: u64,
    },
    /// An application processor as after reset: it waits for INIT and a startup IPI from
    /// another vCPU of its domain (Linux's INIT-SIPI-SIPI) and then runs in real mode at the
    /// SIPI vector's page. Never vCPU 0, which nothing would start.
    WaitForStartupIpi,
}

/// A TPM 2.0 hash algorithm identifier (`TPM_ALG_ID`, TCG algorithm registry).
///
/// This is the one definition of the ids and digest lengths: `slipway_measure::AlgId` (which
/// depends on this crate, never the reverse, so the ABI crate stays free of hashing code)
/// converts to and from it losslessly and takes its digest sizes from [`Self::digest_len`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, MaxSize,
)]
pub struct TpmAlgId(pub u16);

impl TpmAlgId {
    /// `TPM_ALG_SHA1`.
    pub const SHA1: Self = Self(0x0004);
    /// `TPM_ALG_SHA256`.
    pub const SHA256: Self = Self(0x000b);
    /// `TPM_ALG_SHA384`.
    pub const SHA384: Self = Self(0x000c);
    /// `TPM_ALG_SHA512`.
    pub const SHA512: Self = Self(0x000d);
    /// `TPM_ALG_SM3_256`.
    pub const SM3_256: Self = Self(0x0012);
    /// `TPM_ALG_SHA3_256`.
    pub const SHA3_256: Self = Self(0x0027);
    /// `TPM_ALG_SHA3_384`.
    pub const SHA3_384: Self = Self(0x0028);
    /// `TPM_ALG_SHA3_512`.
    pub const SHA3_512: Self = Self(0x0029);

    /// Digest length of this algorithm, `None` if it is not a known hash algorithm.
    pub const fn digest_len(self) -> Option<usize> {
        match self {
            Self::SHA1 => Some(20),
            Self::SHA256 | Self::SM3_256 | Self::SHA3_256 => Some(32),
            Self::SHA384 | Self::SHA3_384 => Some(48),
            Self::SHA512 | Self::SHA3_512 => Some(64),
            _ => None,
        }
    }
}

/// The active PCR banks of the TPM (empty without a TPM).
pub type TpmBanks = BoundedVec<TpmAlgId, MAX_BANKS>;

/// One digest of a measured object, for one bank.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, MaxSize)]
pub struct Digest {
    /// The bank's algorithm.
    pub alg: TpmAlgId,
    /// The digest bytes.
    pub bytes: Bytes<MAX_DIGEST_LEN>,
}

impl Digest {
    /// A digest of `bytes` for `alg`; fails only above [`MAX_DIGEST_LEN`] bytes (the length
    /// matching the algorithm is the hypervisor's check).
    pub fn new(alg: TpmAlgId, bytes: &[u8]) -> Result<Self, CapacityError> {
        Ok(Self {
            alg,
            bytes: Bytes::from_slice(bytes)?,
        })
    }
}

/// How the hypervisor was launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, MaxSize)]
#[non_exhaustive]
pub enum LaunchKind {
    /// No dynamic launch: nothing is measured by a root of trust.
    None,
    /// The emulated dynamic launch of the QEMU + swtpm harness.
    Emulated,
    /// Intel TXT (`GETSEC[SENTER]`).
    Txt,
    /// AMD `SKINIT`.
    Skinit,
    /// SIMULATED Intel TXT (QEMU + swtpm: the harness plays `GETSEC[SENTER]` and SINIT).
    TxtSimulated,
}

/// A boot module as domB sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, MaxSize)]
pub struct ModuleInfo {
    /// The module's name.
    pub name: ModuleName,
    /// Its size in bytes.
    pub size: u64,
    /// Guest-physical address in domB where it is mapped read-only (page aligned).
    pub gpa: u64,
}
