use crate::txt::layout::*;

#[test]
fn every_structure_is_fields_end_to_end_without_gaps_or_overlaps() {
    for layout in ALL_LAYOUTS {
        let mut at = 0;
        for field in layout.fields {
            assert_eq!(
                field.offset, at,
                "{}.{} starts at {}, expected {}",
                layout.name, field.name, field.offset, at
            );
            at += field.size;
        }
        assert_eq!(at, layout.size, "{} fields end at {at}", layout.name);
    }
}

fn offset(layout: &StructLayout, name: &str) -> (usize, usize) {
    let f = layout
        .fields
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{} has no field {name}", layout.name));
    (f.offset, f.size)
}

#[test]
fn sizes_match_the_mle_guide() {
    assert_eq!(MleHeader::SIZE, 52);
    assert_eq!(BiosData::SIZE, 36);
    assert_eq!(OsSinitData::SIZE, 92);
    assert_eq!(SinitMleData::SIZE, 148);
    assert_eq!(SinitMdr::SIZE, 24);
    assert_eq!(EventLogPointer2_1::SIZE, 20);
    assert_eq!(EVENT_LOG_POINTER2_1_ELEMENT_SIZE, 28);
    assert_eq!(AcmHeader::SIZE, 128);
    assert_eq!(AcmChipsetId::SIZE, 16);
    assert_eq!(AcmProcessorId::SIZE, 24);
}

#[test]
fn key_offsets_match_the_mle_guide() {
    let os = &OsSinitData::LAYOUT;
    assert_eq!(offset(os, "vtd_pmr_lo_base"), (32, 8));
    assert_eq!(offset(os, "vtd_pmr_lo_size"), (40, 8));
    assert_eq!(offset(os, "vtd_pmr_hi_base"), (48, 8));
    assert_eq!(offset(os, "vtd_pmr_hi_size"), (56, 8));
    assert_eq!(offset(os, "lcp_po_base"), (64, 8));
    assert_eq!(offset(os, "lcp_po_size"), (72, 8));
    assert_eq!(offset(os, "capabilities"), (80, 4));
    assert_eq!(offset(os, "rsdp_ptr"), (84, 8));
    let s = &SinitMleData::LAYOUT;
    assert_eq!(offset(s, "sinit_hash"), (36, 20));
    assert_eq!(offset(s, "mle_hash"), (56, 20));
    assert_eq!(offset(s, "lcp_policy_control"), (116, 4));
    assert_eq!(offset(s, "rlp_wakeup_addr"), (120, 4));
    assert_eq!(offset(s, "num_mdrs"), (128, 4));
    assert_eq!(offset(s, "mdrs_off"), (132, 4));
    assert_eq!(offset(s, "dmar_size"), (136, 4));
    assert_eq!(offset(s, "dmar_off"), (140, 4));
    assert_eq!(offset(s, "processor_scrtm_status"), (144, 4));
    let m = &MleHeader::LAYOUT;
    for (name, at) in [
        ("length", 16),
        ("version", 20),
        ("entry_point", 24),
        ("first_valid_page", 28),
        ("mle_start", 32),
        ("mle_end", 36),
        ("capabilities", 40),
        ("cmdline_start", 44),
        ("cmdline_end", 48),
    ] {
        assert_eq!(offset(m, name), (at, 4), "MleHeader.{name}");
    }
}

#[test]
fn mle_header_bytes_are_little_endian_at_the_guide_offsets() {
    let header = MleHeader {
        uuid: MLE_HEADER_UUID,
        length: 52,
        version: MLE_HEADER_VERSION,
        entry_point: 0x1234,
        first_valid_page: 0,
        mle_start: 0,
        mle_end: 0x0010_2000,
        capabilities: CAP_RLP_WAKE_GETSEC | CAP_TCG2_EVENT_LOG,
        cmdline_start: 0xaabb_ccdd,
        cmdline_end: 0x1122_3344,
    };
    let bytes = header.to_bytes();
    assert_eq!(
        &bytes[..16],
        &[
            0x5a, 0xac, 0x82, 0x90, 0x6f, 0x47, 0xa7, 0x74, 0x0f, 0x5c, 0x55, 0xa2, 0xcb, 0x51,
            0xb6, 0x42
        ]
    );
    assert_eq!(&bytes[16..20], &[52, 0, 0, 0]);
    assert_eq!(&bytes[20..24], &[1, 0, 2, 0]);
    assert_eq!(&bytes[24..28], &[0x34, 0x12, 0, 0]);
    assert_eq!(&bytes[36..40], &[0, 0x20, 0x10, 0]);
    assert_eq!(&bytes[40..44], &[0x01, 0x02, 0, 0]);
    assert_eq!(&bytes[44..48], &[0xdd, 0xcc, 0xbb, 0xaa]);
    assert_eq!(&bytes[48..52], &[0x44, 0x33, 0x22, 0x11]);
    assert_eq!(MleHeader::read(&bytes), Ok(header));
}

#[test]
fn os_sinit_data_pmr_and_rsdp_bytes_land_at_their_offsets() {
    let mut data = OsSinitData::ZERO;
    data.version = OS_SINIT_DATA_VERSION;
    data.vtd_pmr_lo_base = 0x0020_0000;
    data.vtd_pmr_lo_size = 0x0040_0000;
    data.vtd_pmr_hi_base = 0x1_0000_0000;
    data.rsdp_ptr = 0x000f_5a40;
    let bytes = data.to_bytes();
    assert_eq!(&bytes[0..4], &[7, 0, 0, 0]);
    assert_eq!(&bytes[32..40], &0x0020_0000u64.to_le_bytes());
    assert_eq!(&bytes[40..48], &0x0040_0000u64.to_le_bytes());
    assert_eq!(&bytes[48..56], &0x1_0000_0000u64.to_le_bytes());
    assert_eq!(&bytes[84..92], &0x000f_5a40u64.to_le_bytes());
    assert_eq!(OsSinitData::read(&bytes), Ok(data));
}

#[test]
fn sinit_mle_data_round_trips_and_places_mdr_fields() {
    let mut data = SinitMleData::ZERO;
    data.version = 9;
    data.mle_hash = [0xab; 20];
    data.num_mdrs = 3;
    data.mdrs_off = 0x9c;
    data.rlp_wakeup_addr = 0x7bf0_1000;
    let bytes = data.to_bytes();
    assert_eq!(&bytes[56..76], &[0xab; 20]);
    assert_eq!(&bytes[120..124], &0x7bf0_1000u32.to_le_bytes());
    assert_eq!(&bytes[128..132], &3u32.to_le_bytes());
    assert_eq!(&bytes[132..136], &0x9cu32.to_le_bytes());
    assert_eq!(SinitMleData::read(&bytes), Ok(data));
}

#[test]
fn reading_from_a_short_buffer_names_the_structure() {
    let err = SinitMleData::read(&[0u8; 100]).unwrap_err();
    assert_eq!(
        (err.structure, err.need, err.got),
        ("SinitMleData", 148, 100)
    );
    let mut small = [0u8; 10];
    assert!(MleHeader::ZERO.write(&mut small).is_err());
}

#[test]
fn os_mle_data_saved_mtrrs_round_trip() {
    let mut data = OsMleData::ZERO;
    data.magic = OS_MLE_DATA_MAGIC;
    data.saved_var_mtrrs[3] = 0x1234_5678_9abc_def0;
    let bytes = data.to_bytes();
    assert_eq!(&bytes[0..8], b"SLWYOSML");
    assert_eq!(&bytes[64..72], &0x1234_5678_9abc_def0u64.to_le_bytes());
    assert_eq!(OsMleData::read(&bytes), Ok(data));
}
