extern crate std;
use std::vec;
use std::vec::Vec;

use slipway_measure::{AlgId, BankSet};

use crate::txt::heap::*;
use crate::txt::layout::*;

pub(crate) fn bios_heap(len: usize) -> Vec<u8> {
    let mut heap = vec![0u8; len];
    let size = (SIZE_FIELD + BiosData::SIZE + 8) as u64;
    heap[..8].copy_from_slice(&size.to_le_bytes());
    let mut bios = BiosData::ZERO;
    bios.version = 6;
    bios.num_logical_procs = 2;
    bios.write(&mut heap[8..]).unwrap();
    // END element.
    heap[8 + BiosData::SIZE..8 + BiosData::SIZE + 8].copy_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
    heap
}

pub(crate) fn os_tables() -> (OsMleData, OsSinitData, EventLogPointer2_1) {
    let mut os_mle = OsMleData::ZERO;
    os_mle.magic = OS_MLE_DATA_MAGIC;
    os_mle.version = OS_MLE_DATA_VERSION;
    os_mle.launch = LAUNCH_SIMULATED;
    os_mle.mle_ptab = 0x1f_c000;
    os_mle.mle_size = 0x12_3456;
    os_mle.event_log_base = 0x30_0000;
    os_mle.event_log_size = 0x1_0000;
    let mut os_sinit = OsSinitData::ZERO;
    os_sinit.version = OS_SINIT_DATA_VERSION;
    os_sinit.mle_ptab = os_mle.mle_ptab;
    os_sinit.mle_size = os_mle.mle_size;
    let log = EventLogPointer2_1 {
        phys_addr: 0x30_0000,
        allocated_size: 0x1_0000,
        first_record_offset: 0x4b,
        next_record_offset: 0x4b,
    };
    (os_mle, os_sinit, log)
}

#[test]
fn slipway_tables_follow_bios_data_each_after_a_size_that_counts_itself() {
    let mut heap = bios_heap(0x1000);
    let (os_mle, os_sinit, log) = os_tables();
    let t = write_os_tables(&mut heap, &os_mle, &os_sinit, &log).unwrap();
    assert_eq!(t.os_mle.offset, 52);
    assert_eq!(&heap[52..60], &248u64.to_le_bytes());
    assert_eq!(t.os_sinit.offset, 300);
    assert_eq!(&heap[300..308], &(8u64 + 92 + 28 + 8).to_le_bytes());
    // The event-log pointer 2.1 element: type 8, 28 bytes, right after the 92-byte structure.
    assert_eq!(&heap[400..408], &[8, 0, 0, 0, 28, 0, 0, 0]);
    assert_eq!(&heap[408..416], &0x30_0000u64.to_le_bytes());
    assert_eq!(&heap[428..436], &[0, 0, 0, 0, 8, 0, 0, 0]);
    assert_eq!(t.sinit_mle.offset, 436);
    let found = locate_tables(&heap, 0).unwrap();
    assert_eq!(found, t);
    assert_eq!(read_os_mle_data(t.os_mle.body(&heap)).unwrap(), os_mle);
    assert_eq!(
        read_os_sinit_data(t.os_sinit.body(&heap)).unwrap(),
        (os_sinit, log)
    );
}

#[test]
fn a_table_size_past_the_heap_or_below_its_structure_is_refused_by_name() {
    let mut heap = bios_heap(0x1000);
    heap[..8].copy_from_slice(&0x2000u64.to_le_bytes());
    assert!(matches!(
        read_bios_data(&heap),
        Err(HeapError::TableSize {
            table: "BiosData",
            ..
        })
    ));
    let mut heap = bios_heap(0x1000);
    heap[..8].copy_from_slice(&20u64.to_le_bytes());
    assert!(matches!(
        read_bios_data(&heap),
        Err(HeapError::TableSize {
            table: "BiosData",
            ..
        })
    ));
    let mut heap = bios_heap(0x1000);
    heap[8] = 4;
    assert!(matches!(
        read_bios_data(&heap),
        Err(HeapError::Version {
            table: "BiosData",
            version: 4,
            ..
        })
    ));
    let mut heap = bios_heap(0x1000);
    let (os_mle, os_sinit, log) = os_tables();
    write_os_tables(&mut heap, &os_mle, &os_sinit, &log).unwrap();
    heap[300..308].copy_from_slice(&50u64.to_le_bytes());
    assert!(matches!(
        locate_tables(&heap, 0),
        Err(HeapError::TableSize {
            table: "OsSinitData",
            ..
        })
    ));
    let mut small = bios_heap(200);
    assert!(matches!(
        write_os_tables(&mut small, &os_mle, &os_sinit, &log),
        Err(HeapError::NoRoom { .. })
    ));
}

#[test]
fn extended_elements_are_walked_to_end_and_malformed_ones_named() {
    let end = [0u8, 0, 0, 0, 8, 0, 0, 0];
    assert!(walk_elements("T", &end, |_| Ok(())).is_ok());
    let rule = |bytes: &[u8]| match walk_elements("T", bytes, |_| Ok(())) {
        Err(HeapError::Element { rule, .. }) => rule,
        other => panic!("{other:?}"),
    };
    assert!(rule(&[5, 0, 0, 0, 4, 0, 0, 0]).contains("smaller"));
    assert!(rule(&[5, 0, 0, 0, 64, 0, 0, 0]).contains("past the table"));
    assert!(rule(&[0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0]).contains("END"));
    assert!(rule(&[5, 0, 0, 0, 8, 0, 0, 0]).contains("no END"));
}

#[test]
fn the_padded_32_byte_log_pointer_is_read_and_a_missing_one_refused() {
    let (_, os_sinit, log) = os_tables();
    let mut body = os_sinit.to_bytes().to_vec();
    body.extend_from_slice(&[8, 0, 0, 0, 32, 0, 0, 0]);
    body.extend_from_slice(&log.to_bytes());
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
    assert_eq!(read_os_sinit_data(&body).unwrap().1, log);
    let mut body = os_sinit.to_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
    assert_eq!(
        read_os_sinit_data(&body).unwrap_err(),
        HeapError::NoEventLogPointer
    );
    let mut bad = log;
    bad.next_record_offset = 0x2_0000;
    assert!(
        matches!(check_log_pointer(&bad), Err(HeapError::EventLogPointer { rule }) if rule.contains("allocated"))
    );
    bad.next_record_offset = 1;
    assert!(
        matches!(check_log_pointer(&bad), Err(HeapError::EventLogPointer { rule }) if rule.contains("below"))
    );
}

#[test]
fn sinit_events_in_the_container_are_resumed_and_slipway_appends_after_them() {
    let banks = BankSet::from_algs(&[AlgId::SHA256]).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut ptr = init_log_container(&mut buf, 0x30_0000, banks).unwrap();
    assert_eq!({ ptr.first_record_offset }, { ptr.next_record_offset });
    // SINIT-style events: 0x402 (PCR17) and 0x410 (PCR18).
    let used = {
        let mut w =
            slipway_measure::log::LogWriter::resume(&mut buf, ptr.next_record_offset as usize)
                .unwrap();
        w.append_measured(17, 0x402, b"sinit").unwrap();
        w.append_measured(18, 0x410, b"key").unwrap();
        w.len()
    };
    ptr.next_record_offset = used as u32;
    let mut w = resume_sinit_log(&mut buf, &ptr).unwrap();
    assert_eq!(w.len(), used);
    w.append_measured(19, 0x601, &[1, 2]).unwrap();
    let log = slipway_measure::log::EventLog::parse(w.as_bytes()).unwrap();
    let types: Vec<u32> = log.events().map(|e| e.unwrap().event_type).collect();
    assert_eq!(types, [0x402, 0x410, 0x601]);
    // A pointer into the middle of an event is refused.
    ptr.next_record_offset = used as u32 - 3;
    assert!(resume_sinit_log(&mut buf, &ptr).is_err());
    let mut other = vec![0u8; 100];
    ptr.next_record_offset = used as u32;
    assert!(resume_sinit_log(&mut other, &ptr).is_err());
}
