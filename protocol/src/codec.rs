//! The message header and the encode/decode helpers every ABI version shares.

use core::fmt;

use serde::{Deserialize, Serialize};

/// Length of the fixed message header: magic (4 bytes) and version (2 bytes), little endian.
pub const HEADER_LEN: usize = 6;

/// The fixed header in front of every message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Names the message kind ([`crate::REQUEST_MAGIC`], ...).
    pub magic: u32,
    /// The ABI version of the body.
    pub version: u16,
}

impl Header {
    /// Reads the header of `bytes` without looking at the body: a server uses it to pick the
    /// ABI version module that decodes the rest.
    pub fn peek(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes {
            [m0, m1, m2, m3, v0, v1, ..] => Ok(Self {
                magic: u32::from_le_bytes([*m0, *m1, *m2, *m3]),
                version: u16::from_le_bytes([*v0, *v1]),
            }),
            _ => Err(DecodeError::Truncated),
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small for the encoded message.
    BufferTooSmall,
    /// The serializer failed for another reason (a bug: protocol types always serialize).
    Serializer,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BufferTooSmall => "the output buffer is too small for the encoded message",
            Self::Serializer => "the serializer failed",
        })
    }
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ends before its header or body is complete.
    Truncated,
    /// The magic is not the one of the expected message kind.
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// The ABI version is not the one this decoder implements.
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The body is invalid: an unknown variant or error code, a bound exceeded, a bad varint,
    /// bool or UTF-8, or a name that fails validation.
    Malformed,
    /// Bytes follow the complete message.
    TrailingBytes,
    /// The body is not in canonical form: a varint is longer than needed. Each message has
    /// exactly one accepted encoding.
    NotCanonical,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("the message is truncated"),
            Self::BadMagic { found } => write!(f, "bad magic {found:#010x}"),
            Self::UnsupportedVersion { found } => write!(f, "unsupported ABI version {found}"),
            Self::Malformed => f.write_str("the message body is malformed"),
            Self::TrailingBytes => f.write_str("bytes follow the complete message"),
            Self::NotCanonical => f.write_str("the message body is not in canonical form"),
        }
    }
}

/// Writes header and postcard body into `out`, returning the encoded length.
pub(crate) fn encode<T: Serialize>(
    magic: u32,
    version: u16,
    body: &T,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let (header, rest) = out
        .split_at_mut_checked(HEADER_LEN)
        .ok_or(EncodeError::BufferTooSmall)?;
    header[..4].copy_from_slice(&magic.to_le_bytes());
    header[4..].copy_from_slice(&version.to_le_bytes());
    let body_len = postcard::to_slice(body, rest)
        .map_err(|error| match error {
            postcard::Error::SerializeBufferFull => EncodeError::BufferTooSmall,
            _ => EncodeError::Serializer,
        })?
        .len();
    Ok(HEADER_LEN + body_len)
}

/// Checks the header, then decodes exactly one body filling the rest of `bytes`, in canonical
/// form.
pub(crate) fn decode<'de, T: Deserialize<'de> + Serialize>(
    magic: u32,
    version: u16,
    bytes: &'de [u8],
) -> Result<T, DecodeError> {
    let header = Header::peek(bytes)?;
    if header.magic != magic {
        return Err(DecodeError::BadMagic {
            found: header.magic,
        });
    }
    if header.version != version {
        return Err(DecodeError::UnsupportedVersion {
            found: header.version,
        });
    }
    let (body, rest) =
        postcard::take_from_bytes(&bytes[HEADER_LEN..]).map_err(|error| match error {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
            _ => DecodeError::Malformed,
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    // postcard accepts over-long varints (`80 00` for 0); re-encoding and comparing, without a
    // buffer, rejects them so that every message has exactly one encoding.
    let canonical = postcard::serialize_with_flavor(&body, SameBytes(&bytes[HEADER_LEN..]));
    if canonical.is_ok() {
        Ok(body)
    } else {
        Err(DecodeError::NotCanonical)
    }
}

/// A serializer output that only checks the bytes equal the expected ones.
struct SameBytes<'a>(&'a [u8]);

impl postcard::ser_flavors::Flavor for SameBytes<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        match self.0.split_first() {
            Some((&expected, rest)) if expected == byte => {
                self.0 = rest;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(postcard::Error::SerializeBufferFull)
        }
    }
}
