extern crate std;
use std::vec;

use crate::txt::acm::*;
use crate::txt::layout::{AcmHeader, AcmInfoTable};
use crate::txt::regs::DidVid;

const PLATFORM: PlatformIds = PlatformIds {
    didvid: DidVid {
        vendor_id: 0x8086,
        device_id: 0xb002,
        revision_id: 1,
        extended_id: 0,
    },
    fms: 0x000906ea,
    platform_id: 1 << 50,
};

fn sinit() -> std::vec::Vec<u8> {
    let mut m = vec![0u8; SYNTHETIC_SIZE];
    write_synthetic_sinit(&mut m, &PLATFORM, 0x5a).unwrap();
    m
}

fn info_at(m: &[u8]) -> usize {
    let h = AcmHeader::read(m).unwrap();
    ((h.header_len + h.scratch_size) * 4) as usize
}

fn patch_header(m: &mut [u8], f: impl FnOnce(&mut AcmHeader)) {
    let mut h = AcmHeader::read(m).unwrap();
    f(&mut h);
    h.write(m).unwrap();
}

fn patch_info(m: &mut [u8], f: impl FnOnce(&mut AcmInfoTable)) {
    let at = info_at(m);
    let mut i = AcmInfoTable::read(&m[at..]).unwrap();
    f(&mut i);
    i.write(&mut m[at..]).unwrap();
}

#[test]
fn a_well_formed_sinit_for_this_platform_passes_and_reports_its_size_and_key() {
    let m = sinit();
    let info = check_sinit(&m, &PLATFORM).unwrap();
    assert_eq!(info.size as usize, SYNTHETIC_SIZE);
    assert_eq!(
        &m[info.key_offset..info.key_offset + info.key_len],
        &[0x5a; 256][..]
    );
    assert!(is_simulated(&m));
    assert!(check_fits_region(&info, 0x8000).is_ok());
    assert_eq!(
        check_fits_region(&info, 0x800),
        Err(AcmError::LargerThanSinitRegion {
            size: 4096,
            region: 0x800
        })
    );
}

#[test]
fn header_fields_are_checked_each_with_its_rule() {
    type Patch = fn(&mut AcmHeader);
    let cases: [(Patch, AcmError); 5] = [
        (|h| h.module_type = 1, AcmError::ModuleType(1)),
        (|h| h.module_vendor = 0x1022, AcmError::ModuleVendor(0x1022)),
        (
            |h| h.header_version = 0x20000,
            AcmError::HeaderVersion(0x20000),
        ),
        (
            |h| h.size = 2048,
            AcmError::Size {
                declared: 8192,
                module: SYNTHETIC_SIZE,
            },
        ),
        (
            |h| h.size = 1023,
            AcmError::Size {
                declared: 4092,
                module: SYNTHETIC_SIZE,
            },
        ),
    ];
    for (patch, expected) in cases {
        let mut m = sinit();
        patch_header(&mut m, patch);
        assert_eq!(check_sinit(&m, &PLATFORM).unwrap_err(), expected);
    }
    assert_eq!(
        check_sinit(&[0u8; 64], &PLATFORM).unwrap_err(),
        AcmError::TooShort { len: 64 }
    );
    let mut m = sinit();
    patch_header(&mut m, |h| h.scratch_size = 900);
    assert!(matches!(
        check_sinit(&m, &PLATFORM),
        Err(AcmError::InfoTableOutside { .. })
    ));
}

#[test]
fn info_table_fields_are_checked_each_with_its_rule() {
    let mut m = sinit();
    patch_info(&mut m, |i| i.uuid[0] ^= 1);
    assert_eq!(check_sinit(&m, &PLATFORM).unwrap_err(), AcmError::InfoUuid);
    let mut m = sinit();
    patch_info(&mut m, |i| i.chipset_acm_type = 0);
    assert_eq!(
        check_sinit(&m, &PLATFORM).unwrap_err(),
        AcmError::ChipsetAcmType(0)
    );
    let mut m = sinit();
    patch_info(&mut m, |i| i.version = 3);
    assert_eq!(
        check_sinit(&m, &PLATFORM).unwrap_err(),
        AcmError::InfoVersion(3)
    );
    let mut m = sinit();
    patch_info(&mut m, |i| i.os_sinit_data_ver = 6);
    assert_eq!(
        check_sinit(&m, &PLATFORM).unwrap_err(),
        AcmError::OsSinitDataVersion {
            supported: 6,
            needed: 7
        }
    );
    let mut m = sinit();
    patch_info(&mut m, |i| i.min_mle_header_ver = 0x0002_0002);
    assert!(matches!(
        check_sinit(&m, &PLATFORM),
        Err(AcmError::MleHeaderVersion { .. })
    ));
    let mut m = sinit();
    patch_info(&mut m, |i| i.capabilities &= !(1 << 9));
    assert!(
        matches!(check_sinit(&m, &PLATFORM), Err(AcmError::Capability(w)) if w.contains("TCG 2.0"))
    );
    let mut m = sinit();
    patch_info(&mut m, |i| i.chipset_id_list = 0xfffe);
    assert!(matches!(
        check_sinit(&m, &PLATFORM),
        Err(AcmError::ListOutside {
            list: "chipset ID list",
            ..
        })
    ));
}

#[test]
fn another_chipset_or_processor_is_refused_by_the_id_lists() {
    let m = sinit();
    let mut other = PLATFORM;
    other.didvid.device_id = 0xb003;
    assert_eq!(
        check_sinit(&m, &other).unwrap_err(),
        AcmError::NoChipsetMatch(other.didvid)
    );
    let mut other = PLATFORM;
    other.didvid.revision_id = 2;
    assert!(matches!(
        check_sinit(&m, &other),
        Err(AcmError::NoChipsetMatch(_))
    ));
    let mut other = PLATFORM;
    other.fms = 0x000806ec;
    assert!(matches!(
        check_sinit(&m, &other),
        Err(AcmError::NoProcessorMatch { .. })
    ));
}
