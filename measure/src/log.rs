//! The TCG PC Client crypto-agile event log (TCG PC Client Platform Firmware Profile, section
//! 10): a `TCG_PCR_EVENT` header in SHA-1 format carrying the "Spec ID Event03" `EV_NO_ACTION`
//! event, then `TCG_PCR_EVENT2` records. All integers are little-endian.
//!
//! ```text
//! TCG_PCR_EVENT (header)         TCG_EfiSpecIDEvent (its event data)
//!   u32 pcrIndex = 0               u8  signature[16] = "Spec ID Event03\0"
//!   u32 eventType = EV_NO_ACTION   u32 platformClass
//!   u8  digest[20] = 0             u8  specVersionMinor, specVersionMajor, specErrata
//!   u32 eventSize                  u8  uintnSize (1 = 32-bit, 2 = 64-bit)
//!   u8  event[eventSize]           u32 numberOfAlgorithms
//!                                  { u16 algorithmId, u16 digestSize }[numberOfAlgorithms]
//!                                  u8  vendorInfoSize, u8 vendorInfo[vendorInfoSize]
//! TCG_PCR_EVENT2
//!   u32 pcrIndex, u32 eventType
//!   TPML_DIGEST_VALUES: u32 count, { u16 hashAlg, u8 digest[size of hashAlg] }[count]
//!   u32 eventSize, u8 event[eventSize]
//! ```

use crate::alg::{AlgId, Bank, BankSet, HashAlg, MAX_BANKS};
use crate::digest::{Digest, DigestList};
use crate::events::{DigestRule, EV_NO_ACTION, SEPARATOR_PCRS, SlipwayEvent};
use crate::hash::event_digests;
use crate::pcr::{InitialState, PCR_COUNT, PcrBanks};
use crate::{Error, Result};

/// The header event's signature, NUL included.
pub const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// The signature of the `EV_NO_ACTION` StartupLocality event (PFP 10.4.5.3).
pub const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// `platformClass` for client platforms.
pub const PLATFORM_CLASS_CLIENT: u32 = 0;
/// `platformClass` for server platforms.
pub const PLATFORM_CLASS_SERVER: u32 = 1;
/// `uintnSize` for 64-bit UINTN.
pub const UINTN_SIZE_64: u8 = 2;
/// The vendor info Slipway writes into headers it creates.
pub const SLIPWAY_VENDOR_INFO: &[u8] = b"slipway";

/// Bytes of the fixed part of the header before the Spec ID event data.
const HEADER_PREFIX: usize = 4 + 4 + 20 + 4;
/// Bytes of the Spec ID event data before the algorithm list.
const SPEC_ID_FIXED: usize = 16 + 4 + 4 + 4;

/// The Spec ID Event03 header: what a log says about itself, above all its banks, in the order
/// every event's digests follow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LogHeader<'a> {
    /// `platformClass` (0 client, 1 server).
    pub platform_class: u32,
    /// `specVersionMinor`.
    pub spec_version_minor: u8,
    /// `specVersionMajor`.
    pub spec_version_major: u8,
    /// `specErrata`.
    pub spec_errata: u8,
    /// `uintnSize` (1: 32-bit, 2: 64-bit).
    pub uintn_size: u8,
    /// The log's banks in header order.
    pub banks: BankSet,
    /// `vendorInfo` (at most 255 bytes).
    pub vendor_info: &'a [u8],
}

impl LogHeader<'static> {
    /// The header Slipway writes: client platform class (the value SeaBIOS and EDK2 use; the
    /// class does not change the format), spec version 2.0 errata 2, 64-bit UINTN, vendor info
    /// "slipway".
    pub fn slipway(banks: BankSet) -> LogHeader<'static> {
        LogHeader {
            platform_class: PLATFORM_CLASS_CLIENT,
            spec_version_minor: 0,
            spec_version_major: 2,
            spec_errata: 2,
            uintn_size: UINTN_SIZE_64,
            banks,
            vendor_info: SLIPWAY_VENDOR_INFO,
        }
    }
}

impl LogHeader<'_> {
    /// Encoded size of the whole header event.
    pub fn encoded_len(&self) -> usize {
        HEADER_PREFIX + self.spec_id_len()
    }

    fn spec_id_len(&self) -> usize {
        SPEC_ID_FIXED + 4 * self.banks.len() + 1 + self.vendor_info.len()
    }

    /// Writes the header into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize> {
        if self.banks.is_empty() {
            return Err(Error::NoBanks);
        }
        if self.vendor_info.len() > u8::MAX as usize {
            return Err(Error::FieldTooLong {
                what: "vendor info",
                len: self.vendor_info.len(),
                max: u8::MAX as usize,
            });
        }
        let len = self.encoded_len();
        let available = out.len();
        let out = out.get_mut(..len).ok_or(Error::LogFull {
            needed: len,
            available,
        })?;
        let mut w = Writer { out, pos: 0 };
        w.u32(0);
        w.u32(EV_NO_ACTION);
        w.bytes(&[0; 20]);
        w.u32(self.spec_id_len() as u32);
        w.bytes(SPEC_ID_SIGNATURE);
        w.u32(self.platform_class);
        w.bytes(&[
            self.spec_version_minor,
            self.spec_version_major,
            self.spec_errata,
            self.uintn_size,
        ]);
        w.u32(self.banks.len() as u32);
        for bank in self.banks.iter() {
            w.u16(bank.alg.0);
            w.u16(bank.digest_size as u16);
        }
        w.bytes(&[self.vendor_info.len() as u8]);
        w.bytes(self.vendor_info);
        debug_assert_eq!(w.pos, len);
        Ok(len)
    }
}

/// Encoded size of a `TCG_PCR_EVENT2` with one digest per bank of `banks` and `data_len` bytes
/// of event data.
pub fn event_len(banks: &BankSet, data_len: usize) -> usize {
    4 + 4 + 4 + banks.iter().map(|bank| 2 + bank.size()).sum::<usize>() + 4 + data_len
}

/// Writes a crypto-agile event log into a caller-supplied fixed buffer: a new log
/// ([`LogWriter::new`]) or the continuation of a log another party started
/// ([`LogWriter::resume`]: on Intel TXT the launch code writes the header and first events).
///
/// An event is written completely or not at all.
pub struct LogWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    banks: BankSet,
}

impl<'a> LogWriter<'a> {
    /// Starts a new log in `buf` with `header` (use [`LogHeader::slipway`]).
    pub fn new(buf: &'a mut [u8], header: &LogHeader<'_>) -> Result<LogWriter<'a>> {
        let len = header.encode(buf)?;
        Ok(LogWriter {
            buf,
            len,
            banks: header.banks,
        })
    }

    /// Continues the log whose first `used` bytes are in `buf`: the header tells the banks, and
    /// every event in `buf[..used]` must parse, ending exactly at `used`.
    pub fn resume(buf: &'a mut [u8], used: usize) -> Result<LogWriter<'a>> {
        let existing = buf.get(..used).ok_or(Error::Truncated {
            offset: buf.len(),
            what: "existing log (longer than its buffer)",
        })?;
        let log = EventLog::parse(existing)?;
        let end = log.end()?;
        let banks = log.header().banks;
        debug_assert_eq!(end, used);
        Ok(LogWriter {
            buf,
            len: used,
            banks,
        })
    }

    /// Continues a log whose length is not known: parses events until the end of `buf` or the
    /// first unused space, taken to be 8 bytes (pcrIndex and eventType) that are all 0x00 or all
    /// 0xFF, the two fill patterns of unused log memory. Prefer [`LogWriter::resume`] when the
    /// length is known (the TXT heap's log container records it).
    pub fn resume_at_end(buf: &'a mut [u8]) -> Result<LogWriter<'a>> {
        let log = EventLog::parse(buf)?;
        let banks = log.header().banks;
        let mut events = log.events();
        let mut end = events.pos;
        loop {
            let rest = &buf[end..];
            let head = &rest[..rest.len().min(8)];
            if head.iter().all(|&b| b == 0) || head.iter().all(|&b| b == 0xFF) {
                break;
            }
            match events.next() {
                Some(Ok(_)) => end = events.pos,
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        Ok(LogWriter {
            buf,
            len: end,
            banks,
        })
    }

    /// The log's banks, in header order.
    pub fn banks(&self) -> &BankSet {
        &self.banks
    }

    /// The log written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is written (never true: a log has at least its header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes left in the buffer.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Whether an event with `data_len` bytes of event data fits; check before extending the
    /// TPM, so that a full log never leaves an unlogged extend.
    pub fn check_fits(&self, data_len: usize) -> Result<()> {
        let needed = event_len(&self.banks, data_len);
        if needed > self.remaining() {
            return Err(Error::LogFull {
                needed,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    /// Appends an event with the given digests: exactly one per bank of the log (any order; they
    /// are written in header order). Returns the event's offset in the log.
    pub fn append(
        &mut self,
        pcr: u32,
        event_type: u32,
        digests: &DigestList,
        data: &[u8],
    ) -> Result<usize> {
        if pcr as usize >= PCR_COUNT {
            return Err(Error::PcrIndex(pcr));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(Error::FieldTooLong {
                what: "event data",
                len: data.len(),
                max: u32::MAX as usize,
            });
        }
        let ordered = digests.ordered_for(&self.banks)?;
        self.check_fits(data.len())?;
        let offset = self.len;
        let data_start = offset + event_len(&self.banks, 0);
        self.buf[data_start..data_start + data.len()].copy_from_slice(data);
        self.write_head(pcr, event_type, &ordered, data.len());
        Ok(offset)
    }

    /// Appends an event whose digest is the hash of its exact event data, in every bank of the
    /// log (the cap in banks Slipway cannot hash), and returns those digests: extend the TPM with
    /// exactly these. This is how every event a verifier interprets is written.
    pub fn append_measured(
        &mut self,
        pcr: u32,
        event_type: u32,
        data: &[u8],
    ) -> Result<DigestList> {
        let digests = event_digests(&self.banks, data);
        self.append(pcr, event_type, &digests, data)?;
        Ok(digests)
    }
}

impl LogWriter<'_> {
    /// Appends a typed Slipway event at `pcr`, encoding its event data straight into the log
    /// buffer. The PCR must be the one the plan assigns ([`SlipwayEvent::pcr`]; a separator goes
    /// into any of [`SEPARATOR_PCRS`]). For events a verifier interprets
    /// ([`DigestRule::EventData`]) pass `digests: None`: the digests are computed from the
    /// encoded bytes. For a bound module or the launch region pass the digests. Returns the
    /// digests written: extend the TPM with exactly these.
    pub fn append_slipway(
        &mut self,
        pcr: u32,
        event: &SlipwayEvent<'_>,
        digests: Option<&DigestList>,
    ) -> Result<DigestList> {
        let event_type = event.event_type();
        let pcr_ok = match event {
            SlipwayEvent::Separator => SEPARATOR_PCRS.contains(&pcr),
            _ => pcr == event.pcr(),
        };
        if !pcr_ok {
            return Err(Error::WrongPcr { event_type, pcr });
        }
        let data_len = event.encoded_len();
        if u32::try_from(data_len).is_err() {
            return Err(Error::FieldTooLong {
                what: "event data",
                len: data_len,
                max: u32::MAX as usize,
            });
        }
        self.check_fits(data_len)?;
        // Encode the data in its final place, after the fixed-size record head, so that its
        // digests are computed from exactly the bytes in the log; the head is written last.
        let data_start = self.len + event_len(&self.banks, 0);
        let data = &mut self.buf[data_start..data_start + data_len];
        event.encode(data)?;
        let digests = match (event.digest_rule(), digests) {
            (DigestRule::EventData, None) => event_digests(&self.banks, data),
            (DigestRule::EventData, Some(_)) => {
                return Err(Error::DigestRule {
                    event_type,
                    what: "its digest is the hash of its event data: pass no digests",
                });
            }
            (_, Some(digests)) => *digests,
            (_, None) => {
                return Err(Error::DigestRule {
                    event_type,
                    what: "its digest is not the hash of its event data: pass the digests",
                });
            }
        };
        let ordered = digests.ordered_for(&self.banks)?;
        self.write_head(pcr, event_type, &ordered, data_len);
        Ok(digests)
    }

    /// Writes the record head (everything before the event data) at the end of the log and
    /// counts the record, whose data must already be in place. `ordered` is in header order
    /// and the record fits (checked by the caller).
    fn write_head(&mut self, pcr: u32, event_type: u32, ordered: &DigestList, data_len: usize) {
        let head_len = event_len(&self.banks, 0);
        let mut w = Writer {
            out: &mut self.buf[self.len..self.len + head_len],
            pos: 0,
        };
        w.u32(pcr);
        w.u32(event_type);
        w.u32(ordered.len() as u32);
        for digest in ordered.iter() {
            w.u16(digest.alg().0);
            w.bytes(digest.as_bytes());
        }
        w.u32(data_len as u32);
        debug_assert_eq!(w.pos, head_len);
        self.len += head_len + data_len;
    }
}

struct Writer<'b> {
    out: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
    fn u16(&mut self, value: u16) {
        self.bytes(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }
}

/// Reads little-endian fields, reporting the offset of anything cut off.
struct Reader<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'b [u8]> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(Error::Truncated {
            offset: self.pos,
            what,
        })?;
        let bytes = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// One `TCG_PCR_EVENT2` record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event<'a> {
    /// Byte offset of the record in the log.
    pub offset: usize,
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// The digests, in log order.
    pub digests: DigestList,
    /// The event data.
    pub data: &'a [u8],
}

impl Event<'_> {
    /// Whether the event extends nothing (`EV_NO_ACTION`).
    pub fn is_no_action(&self) -> bool {
        self.event_type == EV_NO_ACTION
    }

    /// The locality of a StartupLocality `EV_NO_ACTION` event, which sets PCR0's initial value.
    pub fn startup_locality(&self) -> Option<u8> {
        if self.is_no_action()
            && self.pcr == 0
            && self.data.len() == 17
            && self.data.starts_with(STARTUP_LOCALITY_SIGNATURE)
        {
            Some(self.data[16])
        } else {
            None
        }
    }
}

/// A parsed crypto-agile event log (borrowing its bytes).
#[derive(Clone, Copy, Debug)]
pub struct EventLog<'a> {
    bytes: &'a [u8],
    header: LogHeader<'a>,
    events_start: usize,
}

impl<'a> EventLog<'a> {
    /// Parses the header of a crypto-agile log. Events are parsed lazily by
    /// [`EventLog::events`]; [`EventLog::end`] checks them all.
    pub fn parse(bytes: &'a [u8]) -> Result<EventLog<'a>> {
        let mut r = Reader { bytes, pos: 0 };
        let pcr = r.u32("header pcrIndex")?;
        if pcr != 0 {
            return Err(Error::Malformed {
                offset: 0,
                what: "header event pcrIndex is not 0 (not a crypto-agile log?)",
            });
        }
        if r.u32("header eventType")? != EV_NO_ACTION {
            return Err(Error::Malformed {
                offset: 4,
                what: "header event is not EV_NO_ACTION (not a crypto-agile log?)",
            });
        }
        r.take(20, "header SHA-1 digest")?;
        let size_offset = r.pos;
        let event_size = r.u32("header eventSize")? as usize;
        let event_start = r.pos;
        let event = r.take(event_size, "Spec ID event data")?;
        let events_start = r.pos;

        let mut s = Reader {
            bytes: event,
            pos: 0,
        };
        let at = |s: &Reader<'_>| event_start + s.pos;
        // The Spec ID event was taken whole from the log: a field cut off inside it means its
        // eventSize is too small, so report it as malformed at the log offset.
        let truncated = |error: Error| match error {
            Error::Truncated { offset, what } => Error::Malformed {
                offset: event_start + offset,
                what,
            },
            other => other,
        };
        let signature = s.take(16, "Spec ID signature").map_err(truncated)?;
        if signature != SPEC_ID_SIGNATURE {
            return Err(Error::Malformed {
                offset: event_start,
                what: "header signature is not \"Spec ID Event03\" (not a crypto-agile log)",
            });
        }
        let platform_class = s.u32("Spec ID platformClass").map_err(truncated)?;
        let spec_version_minor = s.u8("Spec ID specVersionMinor").map_err(truncated)?;
        let spec_version_major = s.u8("Spec ID specVersionMajor").map_err(truncated)?;
        let spec_errata = s.u8("Spec ID specErrata").map_err(truncated)?;
        let uintn_size = s.u8("Spec ID uintnSize").map_err(truncated)?;
        let count_offset = at(&s);
        let count = s.u32("Spec ID numberOfAlgorithms").map_err(truncated)?;
        if count == 0 {
            return Err(Error::Malformed {
                offset: count_offset,
                what: "header lists no algorithms",
            });
        }
        if count as usize > MAX_BANKS {
            return Err(Error::Malformed {
                offset: count_offset,
                what: "header lists more than 8 algorithms",
            });
        }
        let mut banks = BankSet::empty();
        for _ in 0..count {
            let alg_offset = at(&s);
            let alg = AlgId(s.u16("Spec ID algorithmId").map_err(truncated)?);
            let size = s.u16("Spec ID digestSize").map_err(truncated)? as usize;
            let bank = Bank::with_size(alg, size).map_err(|_| Error::Malformed {
                offset: alg_offset,
                what: "header digest size is wrong for its algorithm, 0, or above 64",
            })?;
            banks.push(bank).map_err(|_| Error::Malformed {
                offset: alg_offset,
                what: "header lists an algorithm twice",
            })?;
        }
        let vendor_size = s.u8("Spec ID vendorInfoSize").map_err(truncated)? as usize;
        let vendor_info = s
            .take(vendor_size, "Spec ID vendorInfo")
            .map_err(truncated)?;
        if s.pos != event.len() {
            return Err(Error::Malformed {
                offset: size_offset,
                what: "header eventSize is larger than the Spec ID event",
            });
        }
        Ok(EventLog {
            bytes,
            header: LogHeader {
                platform_class,
                spec_version_minor,
                spec_version_major,
                spec_errata,
                uintn_size,
                banks,
                vendor_info,
            },
            events_start,
        })
    }

    /// The Spec ID header.
    pub fn header(&self) -> &LogHeader<'a> {
        &self.header
    }

    /// The log's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The `TCG_PCR_EVENT2` records, each parsed or an error; after an error the iterator ends.
    pub fn events(&self) -> Events<'a> {
        Events {
            bytes: self.bytes,
            pos: self.events_start,
            banks: self.header.banks,
            failed: false,
        }
    }

    /// Parses every event; returns the offset where the log ends (its length).
    pub fn end(&self) -> Result<usize> {
        let mut events = self.events();
        for event in &mut events {
            event?;
        }
        Ok(events.pos)
    }

    /// Replays the log into PCR values for the banks Slipway can hash, starting from `initial`.
    /// `EV_NO_ACTION` events extend nothing; a StartupLocality event sets PCR0's initial value.
    /// Banks Slipway cannot hash are not computed (see [`PcrBanks`]).
    pub fn replay(&self, initial: InitialState) -> Result<PcrBanks> {
        let mut pcrs = PcrBanks::new(&self.header.banks, initial);
        self.replay_into(&mut pcrs)?;
        Ok(pcrs)
    }

    /// Replays the log on top of existing PCR values (a firmware log's replay, or values
    /// predicted for the launch's own events).
    pub fn replay_into(&self, pcrs: &mut PcrBanks) -> Result<()> {
        for event in self.events() {
            let event = event?;
            if let Some(locality) = event.startup_locality() {
                for alg in HashAlg::ALL {
                    if pcrs.tracks(alg.id()) {
                        let mut value = [0u8; crate::MAX_DIGEST_SIZE];
                        value[alg.digest_size() - 1] = locality;
                        pcrs.set(0, &Digest::new(alg.id(), &value[..alg.digest_size()])?)?;
                    }
                }
                continue;
            }
            if event.is_no_action() {
                continue;
            }
            pcrs.extend_all(event.pcr, &event.digests)
                .map_err(|error| match error {
                    Error::PcrIndex(_) => Error::Malformed {
                        offset: event.offset,
                        what: "event extends a PCR index above 23",
                    },
                    other => other,
                })?;
        }
        Ok(())
    }
}

/// Iterator over the events of an [`EventLog`].
#[derive(Clone)]
pub struct Events<'a> {
    bytes: &'a [u8],
    pos: usize,
    banks: BankSet,
    failed: bool,
}

impl Events<'_> {
    /// The offset of the next event (the end of the log once the iterator is done).
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<Event<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        match parse_event(self.bytes, self.pos, &self.banks) {
            Ok((event, next)) => {
                self.pos = next;
                Some(Ok(event))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

fn parse_event<'a>(bytes: &'a [u8], offset: usize, banks: &BankSet) -> Result<(Event<'a>, usize)> {
    let mut r = Reader { bytes, pos: offset };
    let pcr = r.u32("event pcrIndex")?;
    let event_type = r.u32("event eventType")?;
    let count_offset = r.pos;
    let count = r.u32("event digest count")? as usize;
    if count > banks.len() {
        return Err(Error::Malformed {
            offset: count_offset,
            what: "event has more digests than the header has algorithms",
        });
    }
    let mut digests = DigestList::new();
    for _ in 0..count {
        let alg_offset = r.pos;
        let alg = AlgId(r.u16("event digest algorithm")?);
        let bank = banks.get(alg).ok_or(Error::Malformed {
            offset: alg_offset,
            what: "event digest algorithm is not in the log header",
        })?;
        let bytes = r.take(bank.size(), "event digest")?;
        let digest = Digest::for_bank(bank, bytes)?;
        digests.push(digest).map_err(|_| Error::Malformed {
            offset: alg_offset,
            what: "event has two digests of one algorithm",
        })?;
    }
    let size = r.u32("event eventSize")? as usize;
    let data = r.take(size, "event data")?;
    Ok((
        Event {
            offset,
            pcr,
            event_type,
            digests,
            data,
        },
        r.pos,
    ))
}

/// The first place where two logs differ, counting only events in selected PCRs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EventDifference<'a, 'b> {
    /// Index of the differing event among the selected events (0 = the first selected event).
    pub index: usize,
    /// The expected event there, or `None` if the expected log ends first.
    pub expected: Option<Event<'a>>,
    /// The actual event there, or `None` if the actual log ends first.
    pub actual: Option<Event<'b>>,
}

/// Compares two logs event by event, looking only at events whose PCR is set in `pcr_mask`
/// (bit n = PCR n): PCR index, event type, event data, and the digests of every bank both logs
/// have. Returns the first difference, or `None` if the selected events agree. This is how a
/// verifier names the first event that differs from the prediction.
pub fn first_difference<'a, 'b>(
    expected: &EventLog<'a>,
    actual: &EventLog<'b>,
    pcr_mask: u32,
) -> Result<Option<EventDifference<'a, 'b>>> {
    let selected = |event: &Result<Event<'_>>| match event {
        Ok(event) => event.pcr < 32 && pcr_mask & (1 << event.pcr) != 0,
        Err(_) => true,
    };
    let mut expected_events = expected.events().filter(selected);
    let mut actual_events = actual.events().filter(selected);
    let mut index = 0;
    loop {
        let want = expected_events.next().transpose()?;
        let have = actual_events.next().transpose()?;
        let same = match (&want, &have) {
            (None, None) => return Ok(None),
            (Some(want), Some(have)) => {
                want.pcr == have.pcr
                    && want.event_type == have.event_type
                    && want.data == have.data
                    && want.digests.iter().all(|digest| {
                        have.digests
                            .get(digest.alg())
                            .is_none_or(|other| other == digest)
                    })
            }
            _ => false,
        };
        if !same {
            return Ok(Some(EventDifference {
                index,
                expected: want,
                actual: have,
            }));
        }
        index += 1;
    }
}
