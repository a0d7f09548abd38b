//! The console multiplexer: one serial port shared by the hypervisor and every domain.
//!
//! Output: each domain's bytes collect in its own line buffer; a finished line is printed as
//! `[<name>] <text>`. So that no line can pass for another domain's or the hypervisor's
//! (`slipway: ...`), the text is escaped: printable ASCII passes, a backslash becomes `\\`, every
//! other byte (escape sequences, a lone carriage return that would move the cursor back over the
//! prefix, non-ASCII) becomes `\xNN`; a carriage return directly before a newline is part of the
//! line end. Lines are capped at [`MAX_LINE_TEXT`] characters: a longer line is split and each
//! piece but the last ends in a single `\`, which cannot otherwise end a line (a real backslash
//! is printed as `\\`).
//!
//! Input: serial input goes to one focused domain (by default the domain assigned the console,
//! else the first control domain). The key sequence **Ctrl-] then a digit** focuses the domain
//! with that id, **Ctrl-] then `n`** the next running domain, and **Ctrl-] Ctrl-]** sends one
//! Ctrl-] to the focused domain. Any other key after Ctrl-] is discarded.

use core::fmt;

use crate::domain::{DomainState, DomainTable, MAX_DOMAINS};
use slipway_protocol::v1::DomainId;

/// Longest escaped text of one printed line (without the `[name] ` prefix).
pub const MAX_LINE_TEXT: usize = 160;
/// The focus-switch escape key (Ctrl-]).
pub const FOCUS_ESCAPE: u8 = 0x1d;

/// One finished line of escaped text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Line {
    text: [u8; MAX_LINE_TEXT + 1],
    len: usize,
}

impl Line {
    /// The escaped text (printable ASCII only), including a trailing `\` if the line continues.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored, so this never fails.
        core::str::from_utf8(&self.text[..self.len]).unwrap_or("")
    }

    /// Formats the line with its domain prefix: `[<name>] <text>`.
    pub fn prefixed<'a>(&'a self, name: &'a str) -> PrefixedLine<'a> {
        PrefixedLine { name, line: self }
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line with its domain prefix, ready for the serial port (add the line end).
pub struct PrefixedLine<'a> {
    name: &'a str,
    line: &'a Line,
}

impl fmt::Display for PrefixedLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.name, self.line.as_str())
    }
}

/// Collects one domain's output bytes into escaped lines.
#[derive(Clone, Copy)]
pub struct LineBuffer {
    line: Line,
    pending_cr: bool,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineBuffer {
            line: Line {
                text: [0; MAX_LINE_TEXT + 1],
                len: 0,
            },
            pending_cr: false,
        }
    }

    /// Adds one byte; returns a line when one is finished (a newline, or the cap was reached).
    /// At most one line is finished per byte.
    pub fn push(&mut self, byte: u8) -> Option<Line> {
        if self.pending_cr {
            self.pending_cr = false;
            if byte == b'\n' {
                return Some(self.take());
            }
            // A lone carriage return is escaped like any control byte.
            if let Some(line) = self.append(b'\r') {
                // The cap was hit while escaping the CR: keep the current byte for the next line.
                self.absorb(byte);
                return Some(line);
            }
        }
        match byte {
            b'\n' => Some(self.take()),
            b'\r' => {
                self.pending_cr = true;
                None
            }
            other => self.append(other),
        }
    }

    fn absorb(&mut self, byte: u8) {
        // Only called right after a split, when the buffer is empty: never overflows.
        match byte {
            b'\n' => {}
            b'\r' => self.pending_cr = true,
            other => {
                let _ = self.append(other);
            }
        }
    }

    /// Appends the escaped form of `byte`; if it does not fit, finishes the current line with the
    /// continuation mark and starts the next one with it.
    fn append(&mut self, byte: u8) -> Option<Line> {
        let mut escaped = [0u8; 4];
        let token: &[u8] = match byte {
            b'\\' => b"\\\\",
            0x20..=0x7e => {
                escaped[0] = byte;
                &escaped[..1]
            }
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                escaped = [
                    b'\\',
                    b'x',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ];
                &escaped
            }
        };
        let mut finished = None;
        if self.line.len + token.len() > MAX_LINE_TEXT {
            self.line.text[self.line.len] = b'\\';
            self.line.len += 1;
            finished = Some(self.take());
        }
        self.line.text[self.line.len..self.line.len + token.len()].copy_from_slice(token);
        self.line.len += token.len();
        finished
    }

    fn take(&mut self) -> Line {
        let line = self.line;
        self.line.len = 0;
        line
    }

    /// Returns the unfinished line, if any (when the domain stops).
    pub fn flush(&mut self) -> Option<Line> {
        if self.pending_cr {
            self.pending_cr = false;
            let _ = self.append(b'\r');
        }
        (self.line.len > 0).then(|| self.take())
    }
}

/// What to do with one byte of serial input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputAction {
    /// Queue the byte in this domain's UART.
    Deliver(DomainId, u8),
    /// The byte started or completed a focus key sequence and is consumed.
    Consumed,
    /// Focus moved to this domain (print a hypervisor line saying so).
    FocusChanged(DomainId),
    /// No running domain has the focus: the byte is dropped.
    NoFocus,
}

/// Line buffers for every domain plus the input focus.
pub struct ConsoleMux {
    buffers: [LineBuffer; MAX_DOMAINS],
    focus: Option<DomainId>,
    escape_pending: bool,
}

impl Default for ConsoleMux {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleMux {
    /// Empty buffers, no focus yet.
    pub const fn new() -> Self {
        ConsoleMux {
            buffers: [LineBuffer::new(); MAX_DOMAINS],
            focus: None,
            escape_pending: false,
        }
    }

    /// One byte of output from `domain`.
    pub fn output(&mut self, domain: DomainId, byte: u8) -> Option<Line> {
        self.buffers.get_mut(usize::from(domain.0))?.push(byte)
    }

    /// The unfinished line of `domain` (call when it stops).
    pub fn flush(&mut self, domain: DomainId) -> Option<Line> {
        self.buffers.get_mut(usize::from(domain.0))?.flush()
    }

    /// The focused domain.
    pub fn focus(&self) -> Option<DomainId> {
        self.focus
    }

    /// Sets the focus (at hand-off: `table.console_focus_default()`).
    pub fn set_focus(&mut self, domain: Option<DomainId>) {
        self.focus = domain;
    }

    /// Routes one byte of serial input.
    pub fn input(&mut self, byte: u8, table: &DomainTable) -> InputAction {
        let running = |id: DomainId| {
            table
                .get(id)
                .is_some_and(|d| d.state() == DomainState::Running)
        };
        if self.escape_pending {
            self.escape_pending = false;
            let target = match byte {
                FOCUS_ESCAPE => return self.deliver(byte, &running),
                b'0'..=b'9' => Some(DomainId(u16::from(byte - b'0'))).filter(|id| running(*id)),
                b'n' => {
                    let start = self.focus.map_or(0, |id| usize::from(id.0) + 1);
                    (0..MAX_DOMAINS)
                        .map(|k| DomainId(((start + k) % MAX_DOMAINS) as u16))
                        .find(|id| running(*id))
                }
                _ => None,
            };
            return match target {
                Some(id) => {
                    self.focus = Some(id);
                    InputAction::FocusChanged(id)
                }
                None => InputAction::Consumed,
            };
        }
        if byte == FOCUS_ESCAPE {
            self.escape_pending = true;
            return InputAction::Consumed;
        }
        self.deliver(byte, &running)
    }

    fn deliver(&self, byte: u8, running: &dyn Fn(DomainId) -> bool) -> InputAction {
        match self.focus {
            Some(id) if running(id) => InputAction::Deliver(id, byte),
            _ => InputAction::NoFocus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use proptest::prelude::*;
    use slipway_protocol::v1::{Capabilities, DomainName};
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn lines(bytes: &[u8]) -> Vec<String> {
        let mut buffer = LineBuffer::new();
        let mut out: Vec<String> = bytes
            .iter()
            .filter_map(|b| buffer.push(*b))
            .map(|l| l.to_string())
            .collect();
        out.extend(buffer.flush().map(|l| l.to_string()));
        out
    }

    #[test]
    fn lines_are_escaped_and_prefixed() {
        assert_eq!(lines(b"hello\r\nworld\n"), ["hello", "world"]);
        assert_eq!(lines(b"a\x1b[2Jb\n"), ["a\\x1b[2Jb"]);
        assert_eq!(lines(b"back\\slash\n"), ["back\\\\slash"]);
        assert_eq!(lines(b"x\ry\n"), ["x\\x0dy"]);
        assert_eq!(lines("é\n".as_bytes()), ["\\xc3\\xa9"]);
        assert_eq!(lines(b"unfinished\r"), ["unfinished\\x0d"]);
        let mut buffer = LineBuffer::new();
        let line = b"[ctl] fake\n"
            .iter()
            .filter_map(|b| buffer.push(*b))
            .next()
            .unwrap();
        assert_eq!(line.prefixed("web").to_string(), "[web] [ctl] fake");
    }

    #[test]
    fn long_lines_are_split_with_a_continuation_mark() {
        let long = [b'a'; MAX_LINE_TEXT * 2 + 5];
        let out = lines(&long);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE_TEXT + 1);
        assert!(out[0].ends_with("a\\") && out[1].ends_with("a\\"));
        assert_eq!(out[2], "aaaaa");
        // An escape is never cut in half.
        let mut tricky = std::vec![b'a'; MAX_LINE_TEXT - 2];
        tricky.push(0x07);
        let out = lines(&tricky);
        assert_eq!(
            out,
            [
                std::format!("{}\\", "a".repeat(MAX_LINE_TEXT - 2)),
                "\\x07".to_string()
            ]
        );
    }

    proptest! {
        #[test]
        fn no_output_line_can_impersonate(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let mut buffer = LineBuffer::new();
            let mut produced: Vec<Line> = bytes.iter().filter_map(|b| buffer.push(*b)).collect();
            produced.extend(buffer.flush());
            for line in produced {
                let text = line.as_str();
                prop_assert!(text.len() <= MAX_LINE_TEXT + 1);
                prop_assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)));
                let printed = line.prefixed("web").to_string();
                prop_assert!(printed.starts_with("[web] "));
                prop_assert!(!printed.contains('\n') && !printed.contains('\r'));
            }
        }
    }

    fn table_with_two_running() -> (DomainTable, DomainId, DomainId) {
        let mut table = DomainTable::new();
        let domb = table.create_boot_domain(0x10_0000, 1).unwrap();
        let mut ids = Vec::new();
        for name in ["ctl", "web"] {
            let n = DomainName::new(name).unwrap();
            let id = table.check_create(&n, 4096, 1).unwrap();
            table.insert_planned(
                id,
                n,
                4096,
                1,
                Capabilities {
                    control: name == "ctl",
                    ..Default::default()
                },
            );
            ids.push(id);
        }
        let mut order = [DomainId(0); MAX_DOMAINS];
        for (i, id) in ids.iter().enumerate() {
            table
                .planned_mut(*id)
                .unwrap()
                .set_vcpu_entry(
                    0,
                    slipway_protocol::v1::VcpuEntry::Pvh32 {
                        entry_eip: 0,
                        start_info_gpa: 0,
                    },
                )
                .unwrap();
            table.request_start(*id, i as u16).unwrap();
        }
        let count = table.hand_off(domb, &mut order).unwrap();
        for id in &order[..count] {
            table.mark_started(*id).unwrap();
        }
        (table, ids[0], ids[1])
    }

    #[test]
    fn focus_follows_the_key_sequence() {
        let (mut table, ctl, web) = table_with_two_running();
        let mut mux = ConsoleMux::new();
        assert_eq!(mux.input(b'x', &table), InputAction::NoFocus);
        mux.set_focus(table.console_focus_default());
        assert_eq!(mux.focus(), Some(ctl));
        assert_eq!(mux.input(b'x', &table), InputAction::Deliver(ctl, b'x'));
        assert_eq!(mux.input(FOCUS_ESCAPE, &table), InputAction::Consumed);
        assert_eq!(mux.input(b'n', &table), InputAction::FocusChanged(web));
        assert_eq!(mux.input(b'y', &table), InputAction::Deliver(web, b'y'));
        mux.input(FOCUS_ESCAPE, &table);
        assert_eq!(
            mux.input(b'0' + ctl.0 as u8, &table),
            InputAction::FocusChanged(ctl)
        );
        mux.input(FOCUS_ESCAPE, &table);
        assert_eq!(
            mux.input(b'0', &table),
            InputAction::Consumed,
            "domB (id 0) is not running"
        );
        mux.input(FOCUS_ESCAPE, &table);
        assert_eq!(
            mux.input(FOCUS_ESCAPE, &table),
            InputAction::Deliver(ctl, FOCUS_ESCAPE)
        );
        mux.input(FOCUS_ESCAPE, &table);
        assert_eq!(mux.input(b'q', &table), InputAction::Consumed);
        assert_eq!(mux.focus(), Some(ctl));
        table.mark_shut_down(ctl, 0).unwrap();
        assert_eq!(mux.input(b'z', &table), InputAction::NoFocus);
        mux.input(FOCUS_ESCAPE, &table);
        assert_eq!(mux.input(b'n', &table), InputAction::FocusChanged(web));
    }

    #[test]
    fn domains_have_separate_buffers() {
        let mut mux = ConsoleMux::new();
        assert!(mux.output(DomainId(1), b'a').is_none());
        assert!(mux.output(DomainId(2), b'b').is_none());
        assert_eq!(mux.output(DomainId(1), b'\n').unwrap().as_str(), "a");
        assert_eq!(mux.flush(DomainId(2)).unwrap().as_str(), "b");
        assert!(mux.output(DomainId(99), b'x').is_none());
    }
}
