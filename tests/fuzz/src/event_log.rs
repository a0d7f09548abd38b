//! The TCG crypto-agile event log as `slipway-measure` parses it (a verifier's input; the
//! firmware's log also reaches the hypervisor and control domains).
//!
//! Checked: parsing is deterministic; a log whose events all parse and carry one digest per
//! header bank in header order is re-encoded byte for byte by `LogWriter`, and the copy parses
//! and replays to the same PCR values; a log never differs from itself; every Slipway event that
//! decodes encodes back to exactly its bytes.

use slipway_measure::events::SlipwayEvent;
use slipway_measure::log::{LogWriter, first_difference};
use slipway_measure::{EventLog, InitialState};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    let again = EventLog::parse(data).expect("a log that parsed once parses again");
    assert_eq!(log.header(), again.header());
    assert_eq!(
        first_difference(&log, &again, u32::MAX).ok().flatten(),
        None
    );

    let replay = |log: &EventLog<'_>| {
        (
            log.replay(InitialState::DynamicLaunch),
            log.replay(InitialState::NoDynamicLaunch),
        )
    };
    let (launched, unlaunched) = replay(&log);
    let end = log.end();
    assert_eq!(
        end.is_ok(),
        log.events().all(|e| e.is_ok()),
        "end() agrees with the event iterator"
    );
    for event in log.events().flatten() {
        assert!(event.offset < data.len());
        if let Ok(Some(decoded)) = SlipwayEvent::decode(event.event_type, event.data) {
            assert_eq!(decoded.event_type(), event.event_type);
            let mut out = vec![0u8; decoded.encoded_len()];
            let len = decoded.encode(&mut out).expect("a decoded event encodes");
            assert_eq!(&out[..len], event.data, "Slipway event codec round trip");
        }
    }
    let Ok(end) = end else {
        // A log that does not parse to its end must not replay either.
        assert!(launched.is_err() && unlaunched.is_err());
        return;
    };
    assert!(end <= data.len());
    let canonical = log.events().flatten().all(|e| {
        e.pcr < 24
            && e.digests.len() == log.header().banks.len()
            && e.digests
                .iter()
                .zip(log.header().banks.iter())
                .all(|(d, b)| d.alg() == b.alg)
    });
    if !canonical {
        return;
    }
    let mut buf = vec![0u8; end];
    let mut writer = LogWriter::new(&mut buf, log.header()).expect("the header re-encodes");
    for event in log.events().flatten() {
        writer
            .append(event.pcr, event.event_type, &event.digests, event.data)
            .expect("a parsed event re-encodes");
    }
    assert_eq!(writer.len(), end);
    // The header event's SHA-1 field is ignored by the parser and written as zero.
    let mut expected = data[..end].to_vec();
    expected[8..28].fill(0);
    assert_eq!(writer.as_bytes(), expected.as_slice(), "log round trip");
    let copy = EventLog::parse(&buf).expect("the re-encoded log parses");
    let (launched_copy, unlaunched_copy) = replay(&copy);
    assert_eq!(launched.ok(), launched_copy.ok());
    assert_eq!(unlaunched.ok(), unlaunched_copy.ok());
}
