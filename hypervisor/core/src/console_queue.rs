//! Each domain's console output queue and rate limit.
//!
//! A domain's finished lines (escaped by [`crate::console::LineBuffer`]) are not written to the
//! serial port where they are produced (under the hypervisor's global lock, while every other
//! exit on every pCPU waits): they go into the domain's [`OutputQueue`], and the platform drains
//! the queues to the port outside that lock. Each domain may emit [`OUTPUT_RATE`] bytes per second
//! on average, in bursts of up to [`OUTPUT_BURST`] (a token bucket on the TSC): what is over the
//! budget, or does not fit the queue, is dropped and counted, and the queue says so on the console
//! (`slipway: console: <name>: N lines (B bytes) of output dropped ...`) at most once a second and
//! when the domain ends. So one domain writing without pause can neither stall the others nor fill
//! the serial line.

use core::fmt::{self, Write};

use crate::console::Line;

/// Average output a domain may emit, bytes per second (prefix and line end included).
pub const OUTPUT_RATE: u64 = 16 * 1024;
/// The most a domain may emit at once (the bucket's size; a full bucket at start).
pub const OUTPUT_BURST: u64 = 64 * 1024;
/// Bytes a domain's queue holds before the platform drains it.
pub const OUTPUT_QUEUE_BYTES: usize = 4096;

/// What happened to a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Dropped: over the domain's rate.
    OverRate,
    /// Dropped: the queue is full (the platform has not drained it yet).
    QueueFull,
}

/// One domain's pending console output and its rate limit.
pub struct OutputQueue {
    buf: [u8; OUTPUT_QUEUE_BYTES],
    head: usize,
    len: usize,
    /// Bytes the domain may still emit (scaled by the TSC frequency to stay exact).
    tokens: u64,
    last_refill: u64,
    dropped_bytes: u64,
    last_report: u64,
}

impl Default for OutputQueue {
    fn default() -> Self {
        Self::new()
    }
}

struct Cursor<'a> {
    queue: &'a mut OutputQueue,
}

impl Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &byte in s.as_bytes() {
            self.queue.put(byte);
        }
        Ok(())
    }
}

impl OutputQueue {
    /// An empty queue with a full bucket.
    pub const fn new() -> Self {
        OutputQueue {
            buf: [0; OUTPUT_QUEUE_BYTES],
            head: 0,
            len: 0,
            tokens: u64::MAX,
            last_refill: 0,
            dropped_bytes: 0,
            last_report: 0,
        }
    }

    /// Empties the queue and fills the bucket, for a new domain starting at TSC `now`.
    pub fn reset(&mut self, now: u64) {
        *self = Self::new();
        self.last_refill = now;
        self.last_report = now;
    }

    /// Bytes waiting to be drained.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn free(&self) -> usize {
        OUTPUT_QUEUE_BYTES - self.len
    }

    fn put(&mut self, byte: u8) {
        if self.len < OUTPUT_QUEUE_BYTES {
            self.buf[(self.head + self.len) % OUTPUT_QUEUE_BYTES] = byte;
            self.len += 1;
        }
    }

    /// Tokens are bytes times `tsc_hz`: a tick adds exactly OUTPUT_RATE tokens.
    fn refill(&mut self, now: u64, tsc_hz: u64) {
        let cap = OUTPUT_BURST.saturating_mul(tsc_hz);
        let elapsed = now.saturating_sub(self.last_refill);
        self.last_refill = self.last_refill.max(now);
        self.tokens = self
            .tokens
            .min(cap)
            .saturating_add(elapsed.saturating_mul(OUTPUT_RATE))
            .min(cap);
    }

    /// Whether the domain may emit output now (its bucket holds a longest line: text, a 31-byte
    /// name and the 4 framing bytes). A caller holding raw
    /// bytes checks this first and, when it is `false`, drops them with [`OutputQueue::drop_raw`]
    /// without escaping them: a domain over its rate then costs the hypervisor almost nothing.
    pub fn admits(&mut self, now: u64, tsc_hz: u64) -> bool {
        let tsc_hz = tsc_hz.max(1);
        self.refill(now, tsc_hz);
        let longest_line = (crate::console::MAX_LINE_TEXT + 1 + 31 + 4) as u64;
        self.tokens >= longest_line.saturating_mul(tsc_hz)
    }

    /// Counts `bytes` raw output bytes dropped unseen (see [`OutputQueue::admits`]); the next
    /// report includes them.
    pub fn drop_raw(&mut self, name: &str, bytes: u64, now: u64, tsc_hz: u64) {
        self.dropped_bytes = self.dropped_bytes.saturating_add(bytes);
        if now.saturating_sub(self.last_report) >= tsc_hz.max(1) {
            self.report_drops(name, now);
        }
    }

    /// Queues `[name] text\n` if the domain's rate and the queue allow, else counts it dropped.
    /// A pending drop report goes first when it is due (once per second).
    pub fn push_line(&mut self, name: &str, line: &Line, now: u64, tsc_hz: u64) -> Pushed {
        let tsc_hz = tsc_hz.max(1);
        self.refill(now, tsc_hz);
        if self.dropped_bytes > 0 && now.saturating_sub(self.last_report) >= tsc_hz {
            self.report_drops(name, now);
        }
        let bytes = (name.len() + line.as_str().len() + 4) as u64; // "[", "] ", "\n"
        let cost = bytes.saturating_mul(tsc_hz);
        let result = if self.tokens < cost {
            Pushed::OverRate
        } else if self.free() < bytes as usize {
            Pushed::QueueFull
        } else {
            self.tokens -= cost;
            let _ = writeln!(Cursor { queue: self }, "[{name}] {line}");
            return Pushed::Queued;
        };
        self.dropped_bytes += bytes;
        result
    }

    /// Queues the drop report now if anything was dropped (the domain ends, or a report is
    /// due). The report is the hypervisor's line and costs the domain nothing; if even it does
    /// not fit the queue, the counts stay for the next report.
    pub fn report_drops(&mut self, name: &str, now: u64) {
        if self.dropped_bytes == 0 {
            return;
        }
        let mut text = heapless::String::<256>::new();
        let _ = writeln!(
            text,
            "slipway: console: {name}: {} bytes of output dropped (limit {OUTPUT_RATE} bytes/s, bursts of {OUTPUT_BURST})",
            self.dropped_bytes
        );
        if self.free() >= text.len() {
            let _ = Cursor { queue: self }.write_str(&text);
            self.dropped_bytes = 0;
            self.last_report = now;
        }
    }

    /// Moves up to `out.len()` queued bytes into `out`; returns how many.
    pub fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for slot in out.iter_mut().take(n) {
            *slot = self.buf[self.head];
            self.head = (self.head + 1) % OUTPUT_QUEUE_BYTES;
        }
        self.len -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::LineBuffer;
    extern crate std;
    use std::string::String;

    const HZ: u64 = 1_000_000;

    fn line(text: &str) -> Line {
        let mut buffer = LineBuffer::new();
        for &b in text.as_bytes() {
            assert!(buffer.push(b).is_none());
        }
        buffer.push(b'\n').unwrap()
    }

    fn drain(queue: &mut OutputQueue) -> String {
        let mut out = std::vec::Vec::new();
        let mut chunk = [0u8; 100];
        loop {
            let n = queue.pop(&mut chunk);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_queue_in_order_with_their_prefix_and_drain_in_chunks() {
        let mut q = OutputQueue::new();
        q.reset(0);
        assert_eq!(q.push_line("web", &line("one"), 10, HZ), Pushed::Queued);
        assert_eq!(q.push_line("web", &line("two"), 20, HZ), Pushed::Queued);
        assert_eq!(q.len(), 2 * "[web] one\n".len());
        assert_eq!(drain(&mut q), "[web] one\n[web] two\n");
        assert!(q.is_empty());
    }

    #[test]
    fn a_flooding_domain_is_held_to_its_rate_and_told_what_was_dropped() {
        let mut q = OutputQueue::new();
        q.reset(0);
        let text = "x".repeat(150);
        let l = line(&text);
        let per_line = (3 + 4 + 150) as u64;
        let mut emitted = 0u64;
        let mut out = String::new();
        // Ten seconds of writing as fast as possible (a line every microsecond), draining as
        // the platform would.
        let mut now = 0;
        while now < 10 * HZ {
            if q.push_line("fld", &l, now, HZ) == Pushed::Queued {
                emitted += per_line;
            }
            if now % 1000 == 0 {
                out.push_str(&drain(&mut q));
            }
            now += 1;
        }
        q.report_drops("fld", now);
        out.push_str(&drain(&mut q));
        // The burst plus ten seconds at the rate, never more.
        assert!(emitted <= OUTPUT_BURST + 10 * OUTPUT_RATE, "{emitted}");
        assert!(emitted >= 10 * OUTPUT_RATE, "{emitted}");
        let reports: std::vec::Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("slipway: console: fld: "))
            .collect();
        let per_line_bytes = per_line;
        assert!(
            (9..=12).contains(&reports.len()),
            "about one report a second: {}",
            reports.len()
        );
        // Every line offered is either printed or counted in a report.
        let printed = out.lines().filter(|l| l.starts_with("[fld] ")).count() as u64;
        let dropped_bytes: u64 = reports
            .iter()
            .map(|r| {
                r.trim_start_matches("slipway: console: fld: ")
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(printed + dropped_bytes / per_line_bytes, 10 * HZ);
        assert!(
            reports[0].ends_with("bytes of output dropped (limit 16384 bytes/s, bursts of 65536)")
        );
    }

    #[test]
    fn raw_output_over_the_rate_is_dropped_unseen_and_reported() {
        let mut q = OutputQueue::new();
        q.reset(0);
        assert!(q.admits(0, HZ));
        let l = line(&"z".repeat(150));
        let now = 0;
        while q.push_line("r", &l, now, HZ) != Pushed::OverRate {
            let _ = drain(&mut q);
        }
        assert!(!q.admits(now, HZ), "the burst is spent");
        q.drop_raw("r", 1024, now, HZ);
        // A second later the bucket has refilled and the report is due.
        assert!(q.admits(now + HZ, HZ));
        q.drop_raw("r", 1024, now + HZ, HZ);
        let report = drain(&mut q);
        assert!(report.starts_with("slipway: console: r: "), "{report}");
        let bytes: u64 = report["slipway: console: r: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(bytes >= 2048, "{report}");
    }

    #[test]
    fn a_full_queue_drops_and_the_counts_wait_for_room() {
        let mut q = OutputQueue::new();
        q.reset(0);
        let l = line(&"y".repeat(150));
        let mut queued = 0;
        while q.push_line("d", &l, 0, HZ) == Pushed::Queued {
            queued += 1;
        }
        assert_eq!(queued, OUTPUT_QUEUE_BYTES / (150 + 5));
        assert_eq!(q.push_line("d", &l, 0, HZ), Pushed::QueueFull);
        q.report_drops("d", 0);
        assert!(
            !drain(&mut q).contains("dropped"),
            "no room for the report yet"
        );
        q.report_drops("d", 0);
        assert_eq!(
            drain(&mut q),
            "slipway: console: d: 310 bytes of output dropped (limit 16384 bytes/s, bursts of 65536)\n"
        );
    }
}
