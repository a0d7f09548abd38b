//! The serial console as the harness sees it (pure): bytes into clean lines, boot milestones out
//! of lines, and the stage-time table `cargo xtask run` prints at the end.

use std::time::Duration;

/// Splits a byte stream into lines (at `\n`), keeping an unfinished line until more bytes or the
/// end of the stream arrive.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

/// Longest line kept whole; a longer run of bytes without a newline is cut into several lines,
/// so a guest cannot make the harness buffer without bound.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

impl LineSplitter {
    /// Adds bytes; returns every line they complete (raw bytes, without the `\n`).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(std::mem::take(&mut self.pending));
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE_BYTES {
                    lines.push(std::mem::take(&mut self.pending));
                }
            }
        }
        lines
    }

    /// The unfinished last line at the end of the stream, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Turns a raw console line into text: drops ANSI escape sequences (GRUB and OVMF clear the
/// screen and set colours on the serial line), carriage returns and other control characters
/// except tab, and decodes UTF-8 lossily. The raw bytes still go to the serial log file.
pub fn clean_line(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == 0x1b {
            i += 1;
            match raw.get(i) {
                // CSI: parameters 0x30-0x3f, intermediates 0x20-0x2f, one final byte 0x40-0x7e.
                Some(b'[') => {
                    i += 1;
                    while i < raw.len() && (0x20..=0x3f).contains(&raw[i]) {
                        i += 1;
                    }
                    if i < raw.len() && (0x40..=0x7e).contains(&raw[i]) {
                        i += 1;
                    }
                }
                // Character-set designation: ESC ( B and friends.
                Some(b'(' | b')' | b'*' | b'+') => i += 2,
                Some(_) => i += 1,
                None => {}
            }
            continue;
        }
        if b == b'\t' || !b.is_ascii_control() {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A console line with the host time it arrived at, counted from QEMU's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    pub at: Duration,
    pub text: String,
}

/// A boot milestone reported by the hypervisor:
/// `slipway: milestone <name> at <microseconds> us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestone {
    pub name: String,
    /// Hypervisor time since its entry (calibrated TSC).
    pub since_entry_us: u64,
    /// Host time the line arrived, since QEMU's start (includes firmware and GRUB).
    pub host_at: Duration,
}

/// Parses a milestone line; any other line gives `None`.
pub fn parse_milestone(line: &SerialLine) -> Option<Milestone> {
    let rest = line.text.strip_prefix("slipway: milestone ")?;
    let mut words = rest.split(' ');
    let name = words.next().filter(|n| !n.is_empty())?;
    if words.next()? != "at" {
        return None;
    }
    let since_entry_us = words.next()?.parse().ok()?;
    if words.next()? != "us" || words.next().is_some() {
        return None;
    }
    Some(Milestone {
        name: name.to_owned(),
        since_entry_us,
        host_at: line.at,
    })
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// Renders the stage-time table: each milestone, its time since hypervisor entry, the time of
/// the stage that ended with it, and when the harness saw it. `first_hypervisor_line` is the host
/// time of the first `slipway: ` line (firmware and boot-loader time before the hypervisor).
pub fn milestone_table(
    milestones: &[Milestone],
    first_hypervisor_line: Option<Duration>,
) -> String {
    let mut out = String::new();
    if let Some(first) = first_hypervisor_line {
        out.push_str(&format!(
            "firmware + GRUB: first hypervisor line {} ms after the emulator started\n",
            first.as_millis()
        ));
    }
    if milestones.is_empty() {
        out.push_str("boot milestones: none reported\n");
        return out;
    }
    let width = milestones
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0)
        .max("milestone".len());
    out.push_str(&format!(
        "{:<width$}  {:>14}  {:>14}  {:>10}\n",
        "milestone", "since entry", "stage", "host"
    ));
    let mut previous: Option<u64> = None;
    for m in milestones {
        let stage = match previous {
            Some(p) => ms(m.since_entry_us.saturating_sub(p)),
            None => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<width$}  {:>14}  {:>14}  {:>7} ms\n",
            m.name,
            ms(m.since_entry_us),
            stage,
            m.host_at.as_millis()
        ));
        previous = Some(m.since_entry_us);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> SerialLine {
        SerialLine {
            at: Duration::from_millis(700),
            text: text.into(),
        }
    }

    #[test]
    fn splitter_keeps_partial_lines_until_completed() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"abc").is_empty());
        assert_eq!(
            s.push(b"d\nef\n\ngh"),
            vec![b"abcd".to_vec(), b"ef".to_vec(), vec![]]
        );
        assert_eq!(s.finish(), Some(b"gh".to_vec()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn splitter_caps_line_length() {
        let mut s = LineSplitter::default();
        let lines = s.push(&vec![b'x'; MAX_LINE_BYTES + 5]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(s.finish().map(|l| l.len()), Some(5));
    }

    #[test]
    fn cleaning_removes_grub_and_ovmf_escapes() {
        // Bytes seen from GRUB (serial terminal) and OVMF before the hypervisor's first line.
        assert_eq!(
            clean_line(b"\x1b[H\x1b[J\x1b[1;1Hslipway: booted via multiboot2 from BIOS\r"),
            "slipway: booted via multiboot2 from BIOS"
        );
        assert_eq!(
            clean_line(b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[0m\x1b[30m\x1b[47mWelcome to GRUB!"),
            "Welcome to GRUB!"
        );
        assert_eq!(clean_line(b"\x1b(Bx\x07y\tz\x1b"), "xy\tz");
        assert_eq!(clean_line(b"caf\xc3\xa9 \xff"), "café \u{fffd}");
    }

    #[test]
    fn milestones_parse_exactly() {
        assert_eq!(
            parse_milestone(&line("slipway: milestone planned:hello at 1234 us")),
            Some(Milestone {
                name: "planned:hello".into(),
                since_entry_us: 1234,
                host_at: Duration::from_millis(700)
            })
        );
        for bad in [
            "slipway: milestone entry at x us",
            "slipway: milestone entry at 12",
            "slipway: milestone entry at 12 ms",
            "slipway: milestone entry at 12 us extra",
            "slipway: milestone  at 12 us",
            "[hello] slipway: milestone entry at 12 us",
            "slipway: module 0: config (12 bytes)",
        ] {
            assert_eq!(parse_milestone(&line(bad)), None, "{bad}");
        }
    }

    #[test]
    fn table_shows_stage_times() {
        let ms = |name: &str, us: u64, host: u64| Milestone {
            name: name.into(),
            since_entry_us: us,
            host_at: Duration::from_millis(host),
        };
        let table = milestone_table(
            &[
                ms("entry", 0, 600),
                ms("memory-ready", 1500, 601),
                ms("domb-started", 12_250, 612),
            ],
            Some(Duration::from_millis(598)),
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "firmware + GRUB: first hypervisor line 598 ms after the emulator started"
        );
        assert!(lines[1].starts_with("milestone "), "{table}");
        assert!(
            lines[2].starts_with("entry ") && lines[2].contains(" - "),
            "{table}"
        );
        assert!(
            lines[3].contains("1.500 ms") && lines[3].contains("601 ms"),
            "{table}"
        );
        // Stage: 12.250 - 1.500 = 10.750 ms.
        assert!(
            lines[4].contains("12.250 ms") && lines[4].contains("10.750 ms"),
            "{table}"
        );
        assert_eq!(lines.len(), 5);
        assert!(milestone_table(&[], None).contains("none reported"));
    }
}
