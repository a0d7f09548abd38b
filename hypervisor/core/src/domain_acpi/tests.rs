extern crate std;

use super::*;
use crate::acpi::{madt_apic_ids, table_is_valid, tpm2_log_area};
use proptest::prelude::*;
use std::string::String;
use std::vec;
use std::vec::Vec;

const BASE: u64 = 0x000E_0000;
const LOG: TpmLog = TpmLog {
    address: 0x7F00_0000,
    length: 0x1_0000,
};

fn build_vec(config: &AcpiConfig) -> (Vec<u8>, AcpiLayout) {
    let mut buf = vec![0xAAu8; 4096];
    let layout = build(config, &mut buf).expect("tables build");
    buf.truncate(layout.len);
    (buf, layout)
}

fn config(apic_ids: &[u8], tpm: Option<TpmLog>) -> AcpiConfig<'_> {
    AcpiConfig {
        base: BASE,
        apic_ids,
        tpm,
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The table at guest-physical `address`, as a reader would take it: signature check and the
/// length field bounding the slice.
fn table_at<'a>(blob: &'a [u8], address: u64, signature: &[u8; 4]) -> &'a [u8] {
    let at = usize::try_from(address - BASE).unwrap();
    assert_eq!(&blob[at..at + 4], signature);
    let len = le_u32(blob, at + 4) as usize;
    let table = &blob[at..at + len];
    assert!(
        table_is_valid(table),
        "{} checksum/length",
        String::from_utf8_lossy(signature)
    );
    table
}

/// Follows the pointers as an OS does: RSDP -> XSDT -> FADT -> DSDT, MADT, TPM2.
struct Parsed<'a> {
    fadt: &'a [u8],
    dsdt: &'a [u8],
    madt: &'a [u8],
    tpm2: Option<&'a [u8]>,
}

fn parse(blob: &[u8]) -> Parsed<'_> {
    let rsdp = &blob[..36];
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp.iter().take(20).fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    assert_eq!(rsdp.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    assert_eq!(rsdp[15], 2, "revision 2");
    assert_eq!(le_u32(rsdp, 20), 36);
    let xsdt = table_at(blob, le_u64(rsdp, 24), b"XSDT");
    let mut parsed = Parsed {
        fadt: &[],
        dsdt: &[],
        madt: &[],
        tpm2: None,
    };
    for entry in xsdt[36..].chunks(8) {
        let address = le_u64(entry, 0);
        let at = usize::try_from(address - BASE).unwrap();
        match &blob[at..at + 4] {
            b"FACP" => parsed.fadt = table_at(blob, address, b"FACP"),
            b"APIC" => parsed.madt = table_at(blob, address, b"APIC"),
            b"TPM2" => parsed.tpm2 = Some(table_at(blob, address, b"TPM2")),
            other => panic!("unexpected table {other:?}"),
        }
    }
    let x_dsdt = le_u64(parsed.fadt, 140);
    assert_eq!(
        u64::from(le_u32(parsed.fadt, 40)),
        x_dsdt,
        "DSDT and X_DSDT agree"
    );
    parsed.dsdt = table_at(blob, x_dsdt, b"DSDT");
    parsed
}

/// A PkgLength decoder written from the specification, independent of the encoder: (total
/// length, bytes of the encoding).
fn decode_pkg_length(b: &[u8]) -> (usize, usize) {
    let lead = b[0];
    let follow = usize::from(lead >> 6);
    if follow == 0 {
        return (usize::from(lead & 0x3F), 1);
    }
    let mut len = usize::from(lead & 0x0F);
    for i in 0..follow {
        len |= usize::from(b[1 + i]) << (4 + 8 * i);
    }
    (len, 1 + follow)
}

/// The devices in the DSDT's `\_SB` scope: (name, body), walked by package lengths that must
/// tile the table exactly, after the leading `Name(_S5_, Package() {5, 5})`.
fn dsdt_devices(dsdt: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let aml = &dsdt[36..];
    // NameOp "_S5_" PackageOp PkgLength(6) NumElements(2) BytePrefix 5 BytePrefix 5.
    assert_eq!(
        &aml[..11],
        &[
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x0A, 0x05, 0x0A, 0x05
        ][..11]
    );
    assert_eq!(aml[11], 0x05);
    let aml = &aml[12..];
    assert_eq!(aml[0], 0x10, "ScopeOp");
    let (scope_len, n) = decode_pkg_length(&aml[1..]);
    assert_eq!(1 + scope_len, aml.len(), "the scope spans the whole table");
    assert_eq!(&aml[1 + n..1 + n + 4], b"_SB_");
    let mut at = 1 + n + 4;
    let mut devices = Vec::new();
    while at < aml.len() {
        assert_eq!(&aml[at..at + 2], &[0x5B, 0x82], "DeviceOp");
        let (len, n) = decode_pkg_length(&aml[at + 2..]);
        let body = &aml[at + 2 + n..at + 2 + len];
        devices.push((body[..4].try_into().unwrap(), body[4..].to_vec()));
        at += 2 + len;
    }
    assert_eq!(at, aml.len());
    devices
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn tables_parse_back_as_an_os_walks_them() {
    let (blob, layout) = build_vec(&config(&[0, 1, 2, 3], Some(LOG)));
    assert_eq!(layout.rsdp_address, BASE);
    let parsed = parse(&blob);
    // FADT: hardware-reduced, no FACS, the boot-architecture flags.
    assert_eq!(parsed.fadt.len(), 276);
    assert_eq!(parsed.fadt[8], 6);
    assert_ne!(le_u32(parsed.fadt, 112) & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_eq!(le_u32(parsed.fadt, 112), FADT_FLAGS);
    assert_eq!(
        u16::from_le_bytes([parsed.fadt[109], parsed.fadt[110]]),
        0x2C
    );
    assert_eq!(le_u32(parsed.fadt, 36), 0);
    assert_eq!(le_u64(parsed.fadt, 132), 0);
    // The PM timer (PM_TMR_BLK, PM_TMR_LEN, X_PM_TMR_BLK) and the sleep registers.
    assert_eq!(le_u32(parsed.fadt, 76), 0x608);
    assert_eq!(parsed.fadt[91], 4);
    assert_eq!(&parsed.fadt[208..212], &[1, 32, 0, 3]);
    assert_eq!(le_u64(parsed.fadt, 212), 0x608);
    assert_eq!(&parsed.fadt[244..248], &[1, 8, 0, 1]);
    assert_eq!(le_u64(parsed.fadt, 248), 0x604);
    assert_eq!(&parsed.fadt[256..260], &[1, 8, 0, 1]);
    assert_eq!(le_u64(parsed.fadt, 260), 0x605);
    // MADT: through hv-core's own MADT reader.
    let mut ids = [0u32; 8];
    let found = madt_apic_ids(parsed.madt, &mut ids).expect("MADT walks");
    assert_eq!(found.recorded, 4);
    assert_eq!(&ids[..4], &[0, 1, 2, 3]);
    assert_eq!(le_u32(parsed.madt, 36), 0xFEE0_0000);
    assert_eq!(le_u32(parsed.madt, 40), 0, "no 8259 pair");
    // TPM2: through hv-core's own TPM2 reader, plus the start method.
    let tpm2 = parsed.tpm2.expect("TPM2 listed");
    assert_eq!(tpm2_log_area(tpm2), Some((LOG.address, LOG.length)));
    assert_eq!(tpm2[8], 4);
    assert_eq!(le_u32(tpm2, 48), 6);
    assert_eq!(le_u64(tpm2, 40), 0);
    // DSDT: two devices, the UART with an IO descriptor and no IRQ, the TPM's window.
    let devices = dsdt_devices(parsed.dsdt);
    assert_eq!(devices.len(), 2);
    let (name, com1) = &devices[0];
    assert_eq!(name, b"COM1");
    assert!(contains(
        com1,
        &[0x08, b'_', b'H', b'I', b'D', 0x0C, 0x41, 0xD0, 0x05, 0x01]
    ));
    assert!(contains(
        com1,
        &[0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x00, 0x08, 0x79, 0x00]
    ));
    assert!(
        !contains(com1, &[0x22]) && !contains(com1, &[0x23]),
        "no IRQ descriptor"
    );
    let (name, tpm) = &devices[1];
    assert_eq!(name, b"TPM_");
    assert!(contains(tpm, b"\x0dMSFT0101\0"));
    assert!(contains(
        tpm,
        &[
            0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xD4, 0xFE, 0x00, 0x50, 0x00, 0x00
        ]
    ));
    // Layout agrees with what was parsed.
    assert_eq!(layout.tpm2.map(|t| t.1), Some(76));
    assert_eq!(layout.madt.1, 44 + 4 * 8);
}

#[test]
fn a_domain_without_the_tpm_has_no_tpm_device_or_table() {
    let (blob, layout) = build_vec(&config(&[0], None));
    let parsed = parse(&blob);
    assert!(parsed.tpm2.is_none() && layout.tpm2.is_none());
    let devices = dsdt_devices(parsed.dsdt);
    assert_eq!(devices.len(), 1);
    assert_eq!(&devices[0].0, b"COM1");
    assert!(!contains(&blob, b"MSFT0101"));
}

#[test]
fn the_same_config_gives_the_same_bytes_whatever_the_buffer_held() {
    let config = config(&[0, 1], Some(LOG));
    let mut a = vec![0u8; 2048];
    let mut b = vec![0xFFu8; 2048];
    let la = build(&config, &mut a).unwrap();
    let lb = build(&config, &mut b).unwrap();
    assert_eq!(la, lb);
    assert_eq!(a, b, "the tail beyond the tables is zeroed too");
}

#[test]
fn tables_at_a_high_base_drop_only_the_32_bit_dsdt_pointer() {
    let high = AcpiConfig {
        base: 0x1_0000_0000,
        apic_ids: &[0],
        tpm: None,
    };
    let mut buf = vec![0u8; 1024];
    let layout = build(&high, &mut buf).unwrap();
    let fadt = &buf[layout.fadt.0..layout.fadt.0 + layout.fadt.1];
    assert_eq!(le_u32(fadt, 40), 0);
    assert_eq!(le_u64(fadt, 140), 0x1_0000_0000 + layout.dsdt.0 as u64);
    assert!(table_is_valid(fadt));
}

#[test]
fn bad_configs_are_refused_by_name() {
    let mut buf = vec![0u8; 4096];
    let mut try_build = |c: AcpiConfig| build(&c, &mut buf).map(|_| ());
    assert_eq!(
        try_build(AcpiConfig {
            base: BASE + 8,
            ..config(&[0], None)
        }),
        Err(AcpiBuildError::MisalignedBase)
    );
    assert_eq!(try_build(config(&[], None)), Err(AcpiBuildError::NoVcpus));
    assert_eq!(
        try_build(config(&[0, 0xFF], None)),
        Err(AcpiBuildError::BroadcastApicId)
    );
    assert_eq!(
        try_build(config(&[3, 1, 3], None)),
        Err(AcpiBuildError::DuplicateApicId(3))
    );
    let empty = TpmLog {
        address: LOG.address,
        length: 0,
    };
    assert_eq!(
        try_build(config(&[0], Some(empty))),
        Err(AcpiBuildError::EmptyTpmLog)
    );
    assert_eq!(
        try_build(AcpiConfig {
            base: u64::MAX - 15,
            ..config(&[0], None)
        }),
        Err(AcpiBuildError::AddressOverflow)
    );
    assert_eq!(
        std::format!("{}", AcpiBuildError::DuplicateApicId(3)),
        "two vCPUs have APIC ID 3"
    );
}

#[test]
fn every_too_small_buffer_is_an_error_never_a_panic() {
    let config = config(&[0, 1, 2], Some(LOG));
    let (_, layout) = build_vec(&config);
    for size in 0..layout.len {
        let mut buf = vec![0u8; size];
        assert_eq!(
            build(&config, &mut buf),
            Err(AcpiBuildError::BufferTooSmall),
            "size {size}"
        );
    }
    let mut exact = vec![0u8; layout.len];
    assert_eq!(build(&config, &mut exact), Ok(layout));
}

#[test]
fn package_lengths_encode_per_the_specification() {
    assert_eq!(pkg_length(0), Some(([1, 0, 0, 0], 1)));
    assert_eq!(pkg_length(62), Some(([63, 0, 0, 0], 1)));
    // 63 + 2 = 65 = 0x41: lead 0x40 | 0x1, then 0x41 >> 4.
    assert_eq!(pkg_length(63), Some(([0x41, 0x04, 0, 0], 2)));
    assert_eq!(pkg_length(0xFFD), Some(([0x4F, 0xFF, 0, 0], 2)));
    assert_eq!(pkg_length(0xFFE).map(|p| p.1), Some(3));
    assert_eq!(pkg_length((1 << 28) - 5).map(|p| p.1), Some(4));
    assert_eq!(pkg_length(1 << 28), None);
    for body in (0..70_000).step_by(7) {
        let (enc, n) = pkg_length(body).unwrap();
        assert_eq!(decode_pkg_length(&enc), (body + n, n), "body {body}");
    }
}

#[test]
fn eisa_ids_compress_as_acpica_does() {
    assert_eq!(eisa_id(b"PNP0501"), 0x0105_D041);
    assert_eq!(eisa_id(b"PNP0A03"), 0x030A_D041);
}

proptest! {
    /// Any vCPU set and TPM choice: the build succeeds or refuses by name, and what it builds
    /// parses back with the vCPUs in order.
    #[test]
    fn random_configs_build_valid_tables_or_are_refused(
        ids in proptest::collection::vec(any::<u8>(), 0..40),
        tpm in proptest::option::of((1u64..u64::MAX, 1u32..u32::MAX)),
    ) {
        let tpm = tpm.map(|(address, length)| TpmLog { address, length });
        let mut buf = vec![0u8; 4096];
        match build(&config(&ids, tpm), &mut buf) {
            Ok(layout) => {
                let parsed = parse(&buf[..layout.len]);
                let mut out = [0u32; 64];
                let found = madt_apic_ids(parsed.madt, &mut out).unwrap();
                prop_assert_eq!(found.recorded, ids.len());
                prop_assert!(ids.iter().zip(out).all(|(a, b)| u32::from(*a) == b));
                prop_assert_eq!(parsed.tpm2.and_then(tpm2_log_area), tpm.map(|t| (t.address, t.length)));
                prop_assert_eq!(dsdt_devices(parsed.dsdt).len(), if tpm.is_some() { 2 } else { 1 });
            }
            Err(e) => prop_assert!(
                ids.is_empty() || ids.contains(&0xFF)
                    || matches!(e, AcpiBuildError::DuplicateApicId(_))
            ),
        }
    }
}

mod iasl;
