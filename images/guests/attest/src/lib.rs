//! The pure parts of the attest control domain, host-tested: the nonce line, console line
//! input, and the transcript framing (`README.md` defines the format; `cargo xtask verify`
//! parses it). The log windows are read with `slipway_protocol::v1::LogWindowDescriptor`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use core::fmt::{self, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The prefix of every transcript line.
pub const PREFIX: &str = "attest: ";
/// The line the harness waits for before it types the nonce.
pub const NONCE_PROMPT: &str = "attest: nonce? (type 1-64 bytes of hex, then Enter)";
/// Bytes per `b64` line: 72 bytes are 96 base64 characters, so a line stays well below the
/// hypervisor's 160-character console line cap.
pub const B64_CHUNK: usize = 72;
/// Largest nonce (the TPM's TPM2B_DATA limit for qualifying data, SHA-512 size).
pub const MAX_NONCE: usize = 64;
/// Longest input line kept (longer input is refused as a whole).
pub const MAX_LINE: usize = 2 * MAX_NONCE + 8;

/// A nonce read from the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce {
    bytes: [u8; MAX_NONCE],
    len: usize,
}

impl Nonce {
    /// The nonce bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Why a nonce line is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceError {
    /// the line is empty
    Empty,
    /// the line has an odd number of hex digits
    OddLength,
    /// the nonce is longer than 64 bytes
    TooLong,
    /// the line has a character that is not a hex digit
    NotHex,
}

impl fmt::Display for NonceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NonceError::Empty => "the nonce line is empty",
            NonceError::OddLength => "the nonce has an odd number of hex digits",
            NonceError::TooLong => "the nonce is longer than 64 bytes",
            NonceError::NotHex => "the nonce line has a character that is not a hex digit",
        })
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Parses a nonce line: hex digits (optionally `0x`-prefixed, surrounding blanks ignored),
/// 1-64 bytes.
pub fn parse_nonce(line: &[u8]) -> Result<Nonce, NonceError> {
    let line = line.trim_ascii();
    let line = line.strip_prefix(b"0x").unwrap_or(line);
    if line.is_empty() {
        return Err(NonceError::Empty);
    }
    if !line.len().is_multiple_of(2) {
        return Err(NonceError::OddLength);
    }
    if line.len() > 2 * MAX_NONCE {
        return Err(NonceError::TooLong);
    }
    let mut nonce = Nonce {
        bytes: [0; MAX_NONCE],
        len: line.len() / 2,
    };
    for (slot, pair) in nonce.bytes.iter_mut().zip(line.chunks_exact(2)) {
        let (Some(high), Some(low)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return Err(NonceError::NotHex);
        };
        *slot = high << 4 | low;
    }
    Ok(nonce)
}

/// Collects console input bytes into lines (CR or LF ends a line; an empty line is skipped;
/// a line longer than [`MAX_LINE`] is reported as overlong and dropped whole).
#[derive(Clone, Debug)]
pub struct LineReader {
    buf: [u8; MAX_LINE],
    len: usize,
    overlong: bool,
}

/// What one input byte completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A whole line (without its end).
    Line(&'a [u8]),
    /// A line longer than [`MAX_LINE`] ended.
    Overlong,
}

impl Default for LineReader {
    fn default() -> Self {
        Self::new()
    }
}

impl LineReader {
    /// An empty reader.
    pub const fn new() -> Self {
        LineReader {
            buf: [0; MAX_LINE],
            len: 0,
            overlong: false,
        }
    }

    /// Feeds one byte.
    pub fn push(&mut self, byte: u8) -> Option<LineEvent<'_>> {
        match byte {
            b'\r' | b'\n' => {
                let len = core::mem::take(&mut self.len);
                if core::mem::take(&mut self.overlong) {
                    return Some(LineEvent::Overlong);
                }
                (len > 0).then_some(LineEvent::Line(&self.buf[..len]))
            }
            // Backspace and DEL edit the line, as a person typing expects.
            0x08 | 0x7f => {
                self.len = self.len.saturating_sub(1);
                None
            }
            _ if self.overlong => None,
            _ if self.len == MAX_LINE => {
                self.overlong = true;
                None
            }
            _ => {
                self.buf[self.len] = byte;
                self.len += 1;
                None
            }
        }
    }
}

/// Writes one blob: `attest: begin KIND LEN`, `attest: b64 CHUNK` lines, `attest: end KIND`.
pub fn write_blob<W: Write>(out: &mut W, kind: &str, bytes: &[u8]) -> fmt::Result {
    writeln!(out, "{PREFIX}begin {kind} {}", bytes.len())?;
    let mut text = [0u8; B64_CHUNK * 4 / 3];
    for chunk in bytes.chunks(B64_CHUNK) {
        let len = STANDARD
            .encode_slice(chunk, &mut text)
            .map_err(|_| fmt::Error)?;
        let text = core::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?;
        writeln!(out, "{PREFIX}b64 {text}")?;
    }
    writeln!(out, "{PREFIX}end {kind}")
}

/// Writes bytes as lowercase hex.
pub fn write_hex<W: Write>(out: &mut W, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(out, "{b:02x}"))
}

#[cfg(test)]
mod tests;
