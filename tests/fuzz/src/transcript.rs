//! The attest domain's console transcript as `cargo xtask verify` reads it (a run's serial log:
//! everything in it came from guests and is hostile until the quote checks).
//!
//! Checked: `parse_transcript` never panics and is deterministic; what it accepts, printed again
//! with the attest domain's own printer, parses back to the same blobs; `verify` over an accepted
//! transcript never panics, and when it accepts, its report agrees with the log (event count,
//! PCR17-21 of the required bank). `parse_hex` (the nonce format) round-trips through
//! lowercase hex.

use slipway_measure::{EventLog, HashAlg, InitialState};
use xtask::verify::{Requirements, Transcript, parse_hex, parse_transcript, verify};

/// The nonce the checks require when the transcript echoes none (the demo's test nonce).
const DEFAULT_NONCE: [u8; 16] = *b"slipway-fuzzing!";

/// Runs one input.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines().take(4) {
        if let Ok(bytes) = parse_hex(line) {
            assert!((1..=64).contains(&bytes.len()));
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(parse_hex(&hex), Ok(bytes), "hex round trip");
        }
    }
    let parsed = parse_transcript(&text);
    assert_eq!(parsed, parse_transcript(&text), "parsing is deterministic");
    let Ok(transcript) = parsed else {
        return;
    };
    assert_eq!(
        parse_transcript(&reprint(&transcript)).map(blobs),
        Ok(blobs(transcript.clone())),
        "printed again by the attest domain's printer, the transcript parses to the same blobs"
    );
    let nonce = transcript.nonce.clone().unwrap_or(DEFAULT_NONCE.to_vec());
    for bank in [HashAlg::Sha256, HashAlg::Sha1] {
        let requirements = Requirements {
            nonce: nonce.clone(),
            bank,
            expected_log: transcript.slipway_log.clone(),
        };
        let Ok(accepted) = verify(&transcript, &requirements) else {
            continue;
        };
        assert_ne!(bank, HashAlg::Sha1, "SHA-1 alone never passes");
        let log = EventLog::parse(&transcript.slipway_log).expect("an accepted log parses");
        assert_eq!(accepted.events, log.events().count());
        let replayed = log
            .replay(InitialState::DynamicLaunch)
            .expect("an accepted log replays");
        assert_eq!(accepted.pcrs.len(), 5);
        for (pcr, hex) in &accepted.pcrs {
            let value = replayed.value(*pcr, bank).ok().flatten().expect("tracked");
            assert_eq!(&value.to_string(), hex, "reported PCR{pcr}");
        }
    }
}

/// The blobs of a transcript (what the attest domain prints as blobs).
fn blobs(t: Transcript) -> [Vec<u8>; 5] {
    [
        t.ak_public,
        t.quote_attest,
        t.quote_signature,
        t.slipway_log,
        t.firmware_log,
    ]
}

/// The transcript as the attest domain prints it (its blobs and the final `done`).
fn reprint(t: &Transcript) -> String {
    let mut out = String::new();
    for (kind, bytes) in [
        ("ak-public", &t.ak_public),
        ("quote-attest", &t.quote_attest),
        ("quote-signature", &t.quote_signature),
        ("slipway-log", &t.slipway_log),
        ("firmware-log", &t.firmware_log),
    ] {
        slipway_guest_attest::write_blob(&mut out, kind, bytes).expect("a String takes it all");
    }
    out.push_str(slipway_guest_attest::PREFIX);
    out.push_str("done\n");
    out
}
