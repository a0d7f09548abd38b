//! The boot record's encoding and transitions over a fake NV store.

use slipway_measure::events::BootRecordStatus;

use crate::boot_record::*;
use crate::nv::{NvPublic, locality_policy_digest};

/// An NV index in memory: `public` (None: undefined), `data` (None: never written), and
/// failures to inject per step.
#[derive(Default)]
struct FakeStore {
    public: Option<NvPublic>,
    data: Option<[u8; BOOT_RECORD_SIZE]>,
    fail: Option<&'static str>,
    writes: u32,
}

impl FakeStore {
    fn fails(&self, step: &'static str) -> Result<(), &'static str> {
        if self.fail == Some(step) {
            Err(step)
        } else {
            Ok(())
        }
    }
}

fn public_of(template: &crate::nv::NvTemplate, written: bool) -> NvPublic {
    let mut auth_policy = [0u8; 64];
    auth_policy[..32].copy_from_slice(&template.auth_policy);
    NvPublic {
        index: template.index,
        name_alg: 0x000B,
        attributes: template.attributes | if written { NvPublic::WRITTEN } else { 0 },
        auth_policy,
        auth_policy_len: 32,
        size: template.size,
    }
}

impl BootRecordStore for FakeStore {
    type Error = &'static str;
    fn read_public(&mut self) -> Result<Option<NvPublic>, &'static str> {
        self.fails("read_public")?;
        Ok(self.public.map(|mut public| {
            if self.data.is_some() {
                public.attributes |= NvPublic::WRITTEN;
            }
            public
        }))
    }
    fn define(&mut self) -> Result<(), &'static str> {
        self.fails("define")?;
        assert!(self.public.is_none(), "defined twice");
        self.public = Some(public_of(&template(), false));
        Ok(())
    }
    fn read(&mut self, out: &mut [u8; BOOT_RECORD_SIZE]) -> Result<(), &'static str> {
        self.fails("read")?;
        *out = self.data.ok_or("NV_UNINITIALIZED")?;
        Ok(())
    }
    fn write(&mut self, record: &[u8; BOOT_RECORD_SIZE]) -> Result<(), &'static str> {
        self.fails("write")?;
        self.data = Some(*record);
        self.writes += 1;
        Ok(())
    }
}

const SLOTS: u8 = 4;

fn stored(store: &FakeStore) -> BootRecord {
    BootRecord::decode(&store.data.unwrap(), SLOTS).unwrap()
}

#[test]
fn the_record_encodes_to_pinned_bytes_and_back() {
    let record = BootRecord {
        current_slot: 1,
        attempts: 0x0102_0304,
        last_known_good: Some(0),
    };
    let bytes = record.encode();
    assert_eq!(
        bytes,
        [
            b'S', b'W', b'B', b'R', 1, 1, 0, 0, 0x04, 0x03, 0x02, 0x01, 0, 0, 0, 0
        ]
    );
    assert_eq!(BootRecord::decode(&bytes, SLOTS), Ok(record));
    let none = BootRecord::fresh(2).encode();
    assert_eq!(none[6], 0xFF, "no known-good slot is 0xFF");
    assert_eq!(BootRecord::decode(&none, SLOTS), Ok(BootRecord::fresh(2)));
}

#[test]
fn malformed_records_are_refused_with_their_reason() {
    let good = BootRecord::fresh(0).encode();
    // (offset, byte written there, the refusal)
    let cases = [
        (0, b'X', RecordError::Magic),
        (4, 2, RecordError::Version),
        (5, SLOTS, RecordError::Slot),
        (6, SLOTS, RecordError::Slot),
        (7, 1, RecordError::Reserved),
        (15, 1, RecordError::Reserved),
    ];
    for (at, byte, expected) in cases {
        let mut bytes = good;
        bytes[at] = byte;
        assert_eq!(BootRecord::decode(&bytes, SLOTS), Err(expected));
    }
    assert_eq!(
        BootRecord::decode(&good[..15], SLOTS),
        Err(RecordError::Length)
    );
    assert_eq!(
        BootRecord::decode(&[0; 17], SLOTS),
        Err(RecordError::Length)
    );
    // Every byte string of the right length either decodes or is refused: never a panic.
    for byte in 0..=255u8 {
        for at in 0..16 {
            let mut bytes = good;
            bytes[at] = byte;
            let _ = BootRecord::decode(&bytes, SLOTS);
        }
    }
}

#[test]
fn the_template_allows_writes_only_under_the_locality_2_policy() {
    let template = template();
    assert_eq!(template.index, 0x0100_5357);
    assert!(
        (0x0100_0000..=0x013F_FFFF).contains(&template.index),
        "owner range"
    );
    assert_eq!(template.attributes, 0x0204_0008);
    assert_eq!(template.size, 16);
    // SHA-256(0^32 || TPM_CC_PolicyLocality || TPMA_LOCALITY_TPM_LOC_TWO); the swtpm test
    // shows the TPM accepts writes under it at locality 2 and refuses them elsewhere.
    assert_eq!(template.auth_policy, locality_policy_digest(0x04));
    let hex: String = template
        .auth_policy
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        slipway_measure::hash::hash(
            slipway_measure::HashAlg::Sha256,
            &[&[0u8; 32][..], &[0, 0, 1, 0x6f, 0x04]].concat()
        )
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
    );
}

#[test]
fn the_first_boot_defines_the_index_and_counts_one_attempt() {
    let mut store = FakeStore::default();
    let (counted, error) = count_boot(&mut store, 1, SLOTS);
    assert_eq!(error, None);
    assert_eq!(counted.state.status, BootRecordStatus::Created);
    assert_eq!(counted.state.requested_slot, 1);
    assert_eq!(counted.state.attempts, 1);
    assert_eq!(counted.state.last_known_good, None);
    assert_eq!(stored(&store), counted.record.unwrap());
    assert_eq!(store.public.unwrap().attributes, BOOT_RECORD_ATTRIBUTES);
}

#[test]
fn boots_of_one_slot_count_up_and_a_success_resets_them() {
    let mut store = FakeStore::default();
    for n in 1..=3 {
        let (counted, _) = count_boot(&mut store, 1, SLOTS);
        assert_eq!(counted.state.attempts, n);
    }
    let (counted, _) = count_boot(&mut store, 1, SLOTS);
    assert_eq!(counted.state.status, BootRecordStatus::Counted);
    assert_eq!(counted.state.attempts, 4);
    // A fallback boot of slot 0 succeeds: 0 is known good, slot 1 keeps its failures.
    let after = counted.record.unwrap().after_success(0);
    assert_eq!(after.attempts, 4);
    assert_eq!(after.last_known_good, Some(0));
    assert_eq!(after.current_slot, 1);
    store.data = Some(after.encode());
    let (counted, _) = count_boot(&mut store, 1, SLOTS);
    assert_eq!(counted.state.attempts, 5);
    assert_eq!(counted.state.last_known_good, Some(0));
    // Slot 1 itself succeeds: its count restarts, it is the known-good slot.
    let after = counted.record.unwrap().after_success(1);
    assert_eq!((after.attempts, after.last_known_good), (0, Some(1)));
}

#[test]
fn requesting_another_slot_starts_its_own_count_and_keeps_the_known_good_slot() {
    let record = BootRecord {
        current_slot: 0,
        attempts: 7,
        last_known_good: Some(0),
    };
    let counted = record.counted(2);
    assert_eq!(
        counted,
        BootRecord {
            current_slot: 2,
            attempts: 1,
            last_known_good: Some(0)
        }
    );
    let saturated = BootRecord {
        current_slot: 0,
        attempts: u32::MAX,
        last_known_good: None,
    };
    assert_eq!(saturated.counted(0).attempts, u32::MAX);
}

#[test]
fn a_corrupt_record_is_reported_and_replaced_by_a_fresh_count() {
    let mut store = FakeStore {
        public: Some(public_of(&template(), true)),
        data: Some(*b"garbage garbage!"),
        ..FakeStore::default()
    };
    let (counted, error) = count_boot(&mut store, 1, SLOTS);
    assert_eq!(error, None);
    assert_eq!(counted.state.status, BootRecordStatus::ReplacedCorrupt);
    assert_eq!(counted.note, Note::Corrupt(RecordError::Magic));
    assert_eq!(counted.state.attempts, 1);
    assert_eq!(counted.state.last_known_good, None);
    assert_eq!(stored(&store), BootRecord::fresh(1).counted(1));
}

#[test]
fn a_defined_but_never_written_index_starts_fresh() {
    let mut store = FakeStore {
        public: Some(public_of(&template(), false)),
        ..FakeStore::default()
    };
    let (counted, _) = count_boot(&mut store, 0, SLOTS);
    assert_eq!(counted.state.status, BootRecordStatus::Created);
    assert_eq!(counted.state.attempts, 1);
}

#[test]
fn an_index_with_other_attributes_or_policy_is_neither_trusted_nor_written() {
    let owner_writable = {
        let mut template = template();
        template.attributes |= 0x2; // OWNERWRITE: anyone with owner auth could forge it
        template
    };
    let other_policy = {
        let mut template = template();
        template.auth_policy = locality_policy_digest(0x01); // locality 0 could write
        template
    };
    let other_size = {
        let mut template = template();
        template.size = 32;
        template
    };
    for template in [owner_writable, other_policy, other_size] {
        let mut store = FakeStore {
            public: Some(public_of(&template, true)),
            data: Some(
                BootRecord {
                    current_slot: 0,
                    attempts: 0,
                    last_known_good: Some(0),
                }
                .encode(),
            ),
            ..FakeStore::default()
        };
        let (counted, error) = count_boot(&mut store, 1, SLOTS);
        assert_eq!(error, None);
        assert_eq!(counted.state.status, BootRecordStatus::Unavailable);
        assert_eq!(counted.note, Note::ForeignIndex);
        assert_eq!(counted.record, None);
        assert_eq!(counted.state.attempts, 0);
        assert_eq!(counted.state.last_known_good, None);
        assert_eq!(store.writes, 0, "a foreign index is never written");
    }
}

#[test]
fn a_failing_tpm_makes_the_state_unavailable_and_counts_nothing() {
    for step in ["read_public", "define", "write"] {
        let mut store = FakeStore {
            fail: Some(step),
            ..FakeStore::default()
        };
        let (counted, error) = count_boot(&mut store, 1, SLOTS);
        assert_eq!(error, Some(step));
        assert_eq!(
            counted.state.status,
            BootRecordStatus::Unavailable,
            "{step}"
        );
        assert_eq!(counted.record, None);
        assert!(matches!(counted.note, Note::TpmFailed(_)));
    }
    let mut store = FakeStore {
        public: Some(public_of(&template(), true)),
        data: Some(BootRecord::fresh(0).encode()),
        fail: Some("read"),
        ..FakeStore::default()
    };
    let (counted, _) = count_boot(&mut store, 0, SLOTS);
    assert_eq!(counted.state.status, BootRecordStatus::Unavailable);
    assert_eq!(counted.note, Note::TpmFailed("NV_Read"));
}
