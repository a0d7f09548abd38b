use super::*;
use slipway_measure::AlgId;

/// A minimal ELF64 with the given PT_LOAD segments: (paddr, file bytes, memsz).
fn elf_with(segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
    let phoff = 64u64;
    let data_start = phoff + 56 * segments.len() as u64;
    let mut out = vec![0u8; data_start as usize];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // 64-bit
    out[5] = 1; // little endian
    out[6] = 1; // version
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    let mut offset = data_start;
    for (i, (paddr, bytes, memsz)) in segments.iter().enumerate() {
        let ph = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
        ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&5u32.to_le_bytes());
        ph[8..16].copy_from_slice(&offset.to_le_bytes());
        ph[16..24].copy_from_slice(&paddr.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        offset += bytes.len() as u64;
    }
    for (_, bytes, _) in segments {
        out.extend_from_slice(bytes);
    }
    out
}

fn mle_header(start: u64, end: u64) -> Vec<u8> {
    let mut h = MLE_MAGIC.to_vec();
    h.extend(1u32.to_le_bytes());
    h.extend(32u32.to_le_bytes());
    h.extend(start.to_le_bytes());
    h.extend(end.to_le_bytes());
    h
}

#[test]
fn measured_region_is_the_loaded_bytes_with_gaps_zero_filled() {
    let mut text = vec![0x90u8; 0x40];
    text.extend(mle_header(0x20_0000, 0x20_3010));
    text.extend([0xC3; 0x10]);
    let rodata = [0xAAu8; 0x10];
    // .text at 2 MiB (file 0x60, memory 0x100: the tail is zero), .rodata at 2 MiB + 0x3000.
    let elf = elf_with(&[(0x20_0000, &text, 0x100), (0x20_3000, &rodata, 0x10)]);
    let region = measured_region(&elf).unwrap();
    assert_eq!(region.start, 0x20_0000);
    assert_eq!(region.bytes.len(), 0x3010);
    assert_eq!(&region.bytes[..text.len()], &text[..]);
    assert!(region.bytes[text.len()..0x3000].iter().all(|&b| b == 0));
    assert_eq!(&region.bytes[0x3000..], &rodata);
}

#[test]
fn a_hypervisor_without_mle_header_is_named() {
    let elf = elf_with(&[(0x20_0000, &[0x90; 0x100], 0x100)]);
    assert!(matches!(
        measured_region(&elf),
        Err(PredictError::NoMleHeader)
    ));
    let mut bad = mle_header(0x20_0000, 0x20_0000);
    bad.resize(0x40, 0);
    let elf = elf_with(&[(0x20_0000, &bad, 0x40)]);
    assert!(matches!(
        measured_region(&elf),
        Err(PredictError::BadMleHeader(_))
    ));
    assert!(matches!(
        measured_region(b"not an elf"),
        Err(PredictError::Elf(_))
    ));
}

#[test]
fn banks_and_arguments() {
    let banks = parse_banks("sha256,sha1").unwrap();
    assert_eq!(
        banks.iter().map(|b| b.alg).collect::<Vec<_>>(),
        [AlgId::SHA256, AlgId::SHA1]
    );
    assert!(parse_banks("md5").is_err());
    assert!(parse_banks("").is_err());
    assert!(parse_banks("sha1,sha1").is_err());
    let args = parse_args(
        [
            "minimal", "--banks", "sha256", "--out", "x.log", "--launch", "txt",
        ]
        .map(String::from),
    )
    .unwrap();
    assert_eq!(args.bundle, "minimal");
    assert_eq!(args.banks.as_deref(), Some("sha256"));
    assert_eq!(args.launch, PredictedLaunch::Txt);
    assert!(parse_args(["--launch".to_string(), "sev".into()]).is_err());
    assert!(parse_args(["a".to_string(), "b".into()]).is_err());
}
