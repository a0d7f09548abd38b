extern crate std;
use std::collections::BTreeMap;
use std::vec::Vec;

use super::heap_tests::{bios_heap, os_tables};
use crate::addr::PhysRange;
use crate::txt::heap::*;
use crate::txt::layout::*;
use crate::txt::post::*;
use crate::txt::regs::{self, TxtRegisters};

/// A fake TXT register space: plain values; OPEN.LOCALITY2 sets the STS bit unless `stuck`.
#[derive(Default)]
struct FakeRegs {
    values: BTreeMap<u32, u64>,
    commands: Vec<u32>,
    stuck: bool,
}

impl TxtRegisters for FakeRegs {
    fn read(&self, offset: u32) -> u64 {
        self.values.get(&offset).copied().unwrap_or(0)
    }
    fn command(&mut self, offset: u32) {
        self.commands.push(offset);
        if offset == regs::CMD_OPEN_LOCALITY2 && !self.stuck {
            *self.values.entry(regs::STS).or_default() |= regs::STS_LOCALITY2_OPEN;
        }
    }
    fn write(&mut self, offset: u32, value: u64) {
        self.values.insert(offset, value);
    }
}

fn launched() -> FakeRegs {
    let mut r = FakeRegs::default();
    r.values
        .insert(regs::STS, regs::STS_SENTER_DONE | regs::STS_PRIVATE_OPEN);
    r
}

#[test]
fn registers_after_a_good_senter_pass_and_each_bad_status_is_named() {
    assert_eq!(check_registers(&launched()), Ok(()));
    assert!(matches!(
        check_registers(&FakeRegs::default()),
        Err(PostLaunchError::SenterNotDone { .. })
    ));
    let mut r = launched();
    r.values.insert(regs::ESTS, regs::ESTS_TXT_RESET);
    assert!(matches!(
        check_registers(&r),
        Err(PostLaunchError::TxtReset { .. })
    ));
    let mut r = launched();
    r.values
        .insert(regs::ERRORCODE, regs::ERRORCODE_VALID | 0x42);
    assert_eq!(
        check_registers(&r),
        Err(PostLaunchError::ErrorCode(regs::ERRORCODE_VALID | 0x42))
    );
    // A code without the valid bit is not an error.
    let mut r = launched();
    r.values.insert(regs::ERRORCODE, 0x42);
    assert_eq!(check_registers(&r), Ok(()));
}

#[test]
fn locality_2_is_opened_by_command_and_checked_in_the_status() {
    let mut r = launched();
    assert_eq!(open_locality2(&mut r), Ok(()));
    assert_eq!(r.commands, [regs::CMD_OPEN_LOCALITY2]);
    let mut r = launched();
    r.stuck = true;
    assert!(matches!(
        open_locality2(&mut r),
        Err(PostLaunchError::Locality2NotOpen { .. })
    ));
    record_failure(&mut r, ERROR_LOCALITY);
    assert_eq!(
        r.read(regs::ERRORCODE),
        regs::ERRORCODE_VALID | regs::ERRORCODE_EXTERNAL | ERROR_LOCALITY
    );
}

/// A heap as SINIT leaves it: Slipway's tables and a SinitMleData with MDRs and a DMAR copy.
fn sinit_heap(mdrs: &[SinitMdr], dmar: &[u8]) -> Vec<u8> {
    let mut heap = bios_heap(0x2000);
    let (os_mle, os_sinit, log) = os_tables();
    let t = write_os_tables(&mut heap, &os_mle, &os_sinit, &log).unwrap();
    let at = t.sinit_mle.offset;
    let mdrs_off = SIZE_FIELD + SinitMleData::SIZE;
    let dmar_off = mdrs_off + mdrs.len() * SinitMdr::SIZE;
    let size = dmar_off + dmar.len();
    heap[at..at + 8].copy_from_slice(&(size as u64).to_le_bytes());
    let mut data = SinitMleData::ZERO;
    data.version = 9;
    data.num_mdrs = mdrs.len() as u32;
    data.mdrs_off = mdrs_off as u32;
    data.dmar_size = dmar.len() as u32;
    data.dmar_off = dmar_off as u32;
    data.write(&mut heap[at + 8..]).unwrap();
    for (i, m) in mdrs.iter().enumerate() {
        m.write(&mut heap[at + mdrs_off + i * SinitMdr::SIZE..])
            .unwrap();
    }
    heap[at + dmar_off..at + size].copy_from_slice(dmar);
    heap
}

fn mdr(base: u64, length: u64, mem_type: u8) -> SinitMdr {
    SinitMdr {
        base,
        length,
        mem_type,
        reserved: [0; 7],
    }
}

fn dmar_table() -> Vec<u8> {
    let mut t = std::vec![0u8; 48];
    t[..4].copy_from_slice(b"DMAR");
    t[4..8].copy_from_slice(&48u32.to_le_bytes());
    t
}

#[test]
fn a_heap_as_sinit_leaves_it_validates_and_its_mdrs_are_checked_and_reserved() {
    let mdrs = [
        mdr(0, 0x9_f000, MDR_GOOD),
        mdr(0x10_0000, 0x7f00_0000, MDR_GOOD),
        mdr(0x7f10_0000, 0x10_0000, MDR_SMRAM_NON_OVERLAY),
    ];
    let heap = sinit_heap(&mdrs, &dmar_table());
    let v = validate_heap(&heap, LAUNCH_SIMULATED).unwrap();
    assert_eq!(v.sinit_mle.mdrs().count(), 3);
    assert_eq!(v.sinit_mle.dmar().len(), 48);
    let mut reserved = Vec::new();
    let used = [("hypervisor image", PhysRange::new(0x20_0000, 0x60_0000))];
    check_mdrs(&v.sinit_mle, &used, |r| reserved.push(r)).unwrap();
    assert_eq!(reserved, [PhysRange::new(0x7f10_0000, 0x7f20_0000)]);
    let outside = [("hypervisor image", PhysRange::new(0x9_e000, 0x10_1000))];
    assert_eq!(
        check_mdrs(&v.sinit_mle, &outside, |_| {}),
        Err(PostLaunchError::NotInGoodMemory {
            what: "hypervisor image",
            range: outside[0].1
        })
    );
}

#[test]
fn heap_fields_that_disagree_with_what_slipway_wrote_are_refused_by_name() {
    let heap = sinit_heap(&[], &[]);
    assert_eq!(
        validate_heap(&heap, LAUNCH_HARDWARE).unwrap_err(),
        PostLaunchError::Mismatch {
            field: "OsMleData.launch",
            found: 2,
            expected: 1
        }
    );
    let mut heap = sinit_heap(&[], &[]);
    // OsSinitData.mle_size (table at 300: +8 size field, +16 in the structure).
    heap[324..332].copy_from_slice(&1u64.to_le_bytes());
    assert!(matches!(
        validate_heap(&heap, LAUNCH_SIMULATED),
        Err(PostLaunchError::Mismatch {
            field: "OsSinitData.mle_size",
            ..
        })
    ));
}

#[test]
fn sinit_mle_data_offsets_outside_the_table_or_a_bad_dmar_are_refused() {
    let mut heap = sinit_heap(&[mdr(0, 0x1000, MDR_GOOD)], &[]);
    // num_mdrs (SinitMleData at 436 + 8 + 128) made larger than the table.
    heap[572..576].copy_from_slice(&5u32.to_le_bytes());
    assert!(matches!(
        validate_heap(&heap, LAUNCH_SIMULATED),
        Err(PostLaunchError::Heap(HeapError::SinitMleRange {
            field: "mdrs_off",
            ..
        }))
    ));
    let mut bad = dmar_table();
    bad[0] = b'X';
    let heap = sinit_heap(&[], &bad);
    assert!(
        matches!(validate_heap(&heap, LAUNCH_SIMULATED), Err(PostLaunchError::Dmar { rule }) if rule.contains("signature"))
    );
    let mut long = dmar_table();
    long[4..8].copy_from_slice(&4000u32.to_le_bytes());
    let heap = sinit_heap(&[], &long);
    assert!(matches!(
        validate_heap(&heap, LAUNCH_SIMULATED),
        Err(PostLaunchError::Dmar { .. })
    ));
    let mut heap = sinit_heap(&[], &[]);
    heap[444] = 8;
    assert!(matches!(
        validate_heap(&heap, LAUNCH_SIMULATED),
        Err(PostLaunchError::Heap(HeapError::Version {
            table: "SinitMleData",
            ..
        }))
    ));
}
