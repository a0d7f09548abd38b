use super::*;

#[test]
fn nonces() {
    assert_eq!(parse_nonce(b" 0a0B \r").unwrap().as_bytes(), [10, 11]);
    assert_eq!(parse_nonce(b"0xff").unwrap().as_bytes(), [255]);
    assert_eq!(parse_nonce(&[b'a'; 128]).unwrap().as_bytes(), [0xaa; 64]);
    assert_eq!(parse_nonce(b""), Err(NonceError::Empty));
    assert_eq!(parse_nonce(b"   "), Err(NonceError::Empty));
    assert_eq!(parse_nonce(b"abc"), Err(NonceError::OddLength));
    assert_eq!(parse_nonce(b"zz"), Err(NonceError::NotHex));
    assert_eq!(parse_nonce(b"0a 0b"), Err(NonceError::OddLength));
    assert_eq!(parse_nonce(b"0a0 b1"), Err(NonceError::NotHex));
    assert_eq!(parse_nonce(&[b'a'; 130]), Err(NonceError::TooLong));
}

#[test]
fn line_reader() {
    let mut reader = LineReader::new();
    let mut lines = Vec::new();
    for &byte in b"\r\nab\x7fc\r\n12\n" {
        match reader.push(byte) {
            Some(LineEvent::Line(line)) => lines.push(line.to_vec()),
            Some(LineEvent::Overlong) => lines.push(b"<overlong>".to_vec()),
            None => {}
        }
    }
    assert_eq!(lines, [b"ac".to_vec(), b"12".to_vec()]);
    let mut reader = LineReader::new();
    for _ in 0..MAX_LINE + 10 {
        assert_eq!(reader.push(b'1'), None);
    }
    assert_eq!(reader.push(b'\n'), Some(LineEvent::Overlong));
    reader.push(b'4');
    assert_eq!(reader.push(b'\n'), Some(LineEvent::Line(b"4")));
}

/// The windows are read with the protocol's descriptor; the attest transcript relies on
/// exactly these outcomes (a log, "none", or an unusable window).
#[test]
fn log_windows() {
    use slipway_protocol::v1::{LOG_WINDOW_MAGIC, LogWindowDescriptor, LogWindowError};
    let log_in_window = LogWindowDescriptor::log_in;
    let mut window = LOG_WINDOW_MAGIC.to_vec();
    window.extend(3u32.to_le_bytes());
    window.extend(0u32.to_le_bytes());
    window.extend([1, 2, 3, 0, 0]);
    assert_eq!(log_in_window(&window), Ok(Some(&[1u8, 2, 3][..])));
    window[8] = 0;
    assert_eq!(log_in_window(&window), Ok(None));
    window[8] = 6;
    assert_eq!(
        log_in_window(&window),
        Err(LogWindowError::LengthPastWindow)
    );
    window[0] = b'X';
    assert_eq!(log_in_window(&window), Err(LogWindowError::BadMagic));
    assert_eq!(log_in_window(&window[..15]), Err(LogWindowError::TooShort));
}

#[test]
fn blobs_are_framed_in_short_lines() {
    let bytes: Vec<u8> = (0..=255u8).collect();
    let mut out = String::new();
    write_blob(&mut out, "quote-attest", &bytes).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "attest: begin quote-attest 256");
    assert_eq!(*lines.last().unwrap(), "attest: end quote-attest");
    assert_eq!(lines.len(), 2 + 256usize.div_ceil(B64_CHUNK));
    let mut decoded = Vec::new();
    for line in &lines[1..lines.len() - 1] {
        assert!(line.len() < 160 - "[control] ".len());
        let text = line.strip_prefix("attest: b64 ").unwrap();
        let mut buf = [0u8; B64_CHUNK];
        let n = STANDARD.decode_slice(text, &mut buf).unwrap();
        decoded.extend_from_slice(&buf[..n]);
    }
    assert_eq!(decoded, bytes);
    let mut empty = String::new();
    write_blob(&mut empty, "firmware-log", &[]).unwrap();
    assert_eq!(
        empty,
        "attest: begin firmware-log 0\nattest: end firmware-log\n"
    );
    let mut hex = String::new();
    write_hex(&mut hex, &[0, 0xab]).unwrap();
    assert_eq!(hex, "00ab");
}
