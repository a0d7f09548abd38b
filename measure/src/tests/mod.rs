//! Unit tests of every piece, against known answers computed independently (sha1/sha2 called
//! directly, bytes written out by hand).

mod alg_digest;
mod events;
mod hash;
mod log;
mod pcr;

/// Decodes lower-case hex.
pub(crate) fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2));
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
