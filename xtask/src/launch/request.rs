//! The launch request line on the debugcon port, and the line splitter (pure, unit-tested).
//!
//! The hypervisor's pre-launch stage writes one line to I/O port 0xe9:
//!
//! ```text
//! SLIPWAY-LAUNCH <region-start> <region-length>\n
//! ```
//!
//! Both numbers are hexadecimal, 1-16 digits, with or without a `0x` prefix: the
//! guest-physical start and the length in bytes of the measured region (what its MLE-style
//! header declares). A line is a request line if it starts with `SLIPWAY-LAUNCH`; anything
//! else on the port is the hypervisor's debug text. The region must be 1 byte to
//! [`MAX_REGION_LEN`] long and must not wrap around the address space.

use std::fmt;

/// The first word of a launch request line.
pub use slipway_protocol::platform::LAUNCH_REQUEST_PREFIX as REQUEST_PREFIX;
/// The largest region the harness measures (the hypervisor's image is a few MiB).
pub const MAX_REGION_LEN: u64 = 64 << 20;
/// Longest debugcon line kept; longer lines are cut and marked.
pub const MAX_LINE: usize = 256;

/// A well-formed launch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchRequest {
    pub region_start: u64,
    pub region_len: u64,
}

impl fmt::Display for LaunchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "region {:#x}..{:#x} ({} bytes)",
            self.region_start,
            self.region_start + self.region_len,
            self.region_len
        )
    }
}

/// Why a request line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The line is longer than [`MAX_LINE`].
    #[error("the request line is longer than {MAX_LINE} bytes")]
    TooLong,
    /// The line is not ASCII text.
    #[error("the request line is not ASCII text")]
    NotAscii,
    /// Not exactly the prefix and two numbers.
    #[error("expected `{REQUEST_PREFIX} <start-hex> <length-hex>`, got {0} fields")]
    FieldCount(usize),
    /// A number is not 1-16 hexadecimal digits.
    #[error("the region {field} `{text}` is not 1-16 hexadecimal digits")]
    Number { field: &'static str, text: String },
    /// The region is empty.
    #[error("the region is empty")]
    Empty,
    /// The region is longer than [`MAX_REGION_LEN`].
    #[error("the region is {0} bytes, more than the {MAX_REGION_LEN} accepted")]
    TooLarge(u64),
    /// start + length overflows.
    #[error("the region {start:#x} + {len:#x} wraps around the address space")]
    Wraps { start: u64, len: u64 },
}

/// One line from the debugcon port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugconLine {
    /// The bytes (at most [`MAX_LINE`]), without the line end.
    pub bytes: Vec<u8>,
    /// The line was longer and has been cut.
    pub cut: bool,
}

impl DebugconLine {
    /// The line for logs: printable ASCII kept, everything else escaped.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for &b in &self.bytes {
            if (0x20..0x7f).contains(&b) {
                s.push(b as char);
            } else {
                s.push_str(&format!("\\x{b:02x}"));
            }
        }
        if self.cut {
            s.push_str("...");
        }
        s
    }

    /// Whether the line claims to be a launch request.
    pub fn is_request(&self) -> bool {
        let prefix = REQUEST_PREFIX.as_bytes();
        self.bytes.starts_with(prefix)
            && matches!(
                self.bytes.get(prefix.len()),
                None | Some(b' ') | Some(b'\t')
            )
    }

    /// Parses a request line (see the module docs).
    pub fn parse_request(&self) -> Result<LaunchRequest, RequestError> {
        if self.cut {
            return Err(RequestError::TooLong);
        }
        let text = std::str::from_utf8(&self.bytes)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or(RequestError::NotAscii)?;
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        if fields.len() != 3 || fields[0] != REQUEST_PREFIX {
            return Err(RequestError::FieldCount(fields.len()));
        }
        let start = parse_hex("start", fields[1])?;
        let len = parse_hex("length", fields[2])?;
        if len == 0 {
            return Err(RequestError::Empty);
        }
        if len > MAX_REGION_LEN {
            return Err(RequestError::TooLarge(len));
        }
        if start.checked_add(len).is_none() {
            return Err(RequestError::Wraps { start, len });
        }
        Ok(LaunchRequest {
            region_start: start,
            region_len: len,
        })
    }
}

fn parse_hex(field: &'static str, text: &str) -> Result<u64, RequestError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RequestError::Number {
            field,
            text: text.chars().take(40).collect(),
        });
    }
    u64::from_str_radix(digits, 16).map_err(|_| RequestError::Number {
        field,
        text: text.to_string(),
    })
}

/// Splits the debugcon byte stream into lines (`\n`, with a `\r` before it dropped).
#[derive(Debug, Default)]
pub struct LineSplitter {
    current: Vec<u8>,
    cut: bool,
}

impl LineSplitter {
    /// Feeds bytes; returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<DebugconLine> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.current.last() == Some(&b'\r') {
                    self.current.pop();
                }
                lines.push(DebugconLine {
                    bytes: std::mem::take(&mut self.current),
                    cut: std::mem::take(&mut self.cut),
                });
            } else if self.current.len() < MAX_LINE {
                self.current.push(b);
            } else {
                self.cut = true;
            }
        }
        lines
    }

    /// The unterminated rest, if any (at end of stream).
    pub fn finish(&mut self) -> Option<DebugconLine> {
        if self.current.is_empty() && !self.cut {
            return None;
        }
        Some(DebugconLine {
            bytes: std::mem::take(&mut self.current),
            cut: std::mem::take(&mut self.cut),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> DebugconLine {
        DebugconLine {
            bytes: text.as_bytes().to_vec(),
            cut: false,
        }
    }

    #[test]
    fn well_formed_requests_parse() {
        let r = line("SLIPWAY-LAUNCH 0x200000 0x10000")
            .parse_request()
            .unwrap();
        assert_eq!(
            r,
            LaunchRequest {
                region_start: 0x200000,
                region_len: 0x10000
            }
        );
        let r = line("SLIPWAY-LAUNCH 200000 1A0").parse_request().unwrap();
        assert_eq!((r.region_start, r.region_len), (0x200000, 0x1a0));
        assert!(line("SLIPWAY-LAUNCH 1 2").is_request());
        assert_eq!(r.to_string(), "region 0x200000..0x2001a0 (416 bytes)");
    }

    #[test]
    fn malformed_requests_are_refused_with_the_reason() {
        let cases: &[(&str, RequestError)] = &[
            ("SLIPWAY-LAUNCH", RequestError::FieldCount(1)),
            ("SLIPWAY-LAUNCH 1 2 3", RequestError::FieldCount(4)),
            (
                "SLIPWAY-LAUNCH 0x 10",
                RequestError::Number {
                    field: "start",
                    text: "0x".into(),
                },
            ),
            (
                "SLIPWAY-LAUNCH 10 -5",
                RequestError::Number {
                    field: "length",
                    text: "-5".into(),
                },
            ),
            (
                "SLIPWAY-LAUNCH 11112222333344445 1",
                RequestError::Number {
                    field: "start",
                    text: "11112222333344445".into(),
                },
            ),
            ("SLIPWAY-LAUNCH 1000 0", RequestError::Empty),
            (
                "SLIPWAY-LAUNCH 1000 4000001",
                RequestError::TooLarge(0x400_0001),
            ),
            (
                "SLIPWAY-LAUNCH ffffffffffffffff 2",
                RequestError::Wraps {
                    start: u64::MAX,
                    len: 2,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(line(text).parse_request().as_ref(), Err(expected), "{text}");
        }
        let not_ascii = DebugconLine {
            bytes: b"SLIPWAY-LAUNCH \xff 1".to_vec(),
            cut: false,
        };
        assert_eq!(not_ascii.parse_request(), Err(RequestError::NotAscii));
        // Other text is not a request at all.
        assert!(!line("SLIPWAY-LAUNCHER 1 2").is_request());
        assert!(!line("slipway: pre-launch").is_request());
        assert!(!line("slipway-launch-request region=0x200000").is_request());
    }

    #[test]
    fn lines_split_on_newline_and_long_lines_are_cut() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"SLIPWAY-LAU").is_empty());
        let lines = s.push(b"NCH 1 2\r\nnext\npart");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text(), "SLIPWAY-LAUNCH 1 2");
        assert_eq!(lines[1].text(), "next");
        assert_eq!(s.finish().unwrap().text(), "part");
        assert!(s.finish().is_none());

        let mut long = b"SLIPWAY-LAUNCH 1 ".to_vec();
        long.extend(std::iter::repeat_n(b'0', 400));
        long.push(b'\n');
        let lines = s.push(&long);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].cut);
        assert_eq!(lines[0].bytes.len(), MAX_LINE);
        assert_eq!(lines[0].parse_request(), Err(RequestError::TooLong));
        assert_eq!(line("a\u{1}b").text(), "a\\x01b");
    }
}
