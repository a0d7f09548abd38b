//! Reading ACPI tables the firmware left behind. Firmware tables are input like any other:
//! lengths are bounded by the slice, checksums are verified, and a table that does not check out
//! is treated as absent; a MADT whose entry walk goes wrong is an error.

use core::fmt;

/// Length of a TPM2 table that carries the log-area fields (TCG ACPI specification, table
/// revision 4 and later: LAML at offset 64, LASA at offset 68).
pub const TPM2_WITH_LOG_AREA: usize = 76;

/// Whether `table` is one whole ACPI table: its length field equals the slice length (at least
/// the 36-byte header) and its bytes sum to zero.
pub fn table_is_valid(table: &[u8]) -> bool {
    let Some(length) = table
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
    else {
        return false;
    };
    table.len() >= 36
        && length as usize == table.len()
        && table.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

/// The firmware's TPM event-log area from a whole ACPI TPM2 table: (start address LASA, minimum
/// length LAML). `None` unless the signature is `TPM2`, the table is valid
/// ([`table_is_valid`]), its revision is 4 or later, it is long enough for the log fields, and
/// both fields are non-zero. The area itself is checked by [`crate::firmware_log::checked_area`].
pub fn tpm2_log_area(tpm2_table: &[u8]) -> Option<(u64, u32)> {
    if tpm2_table.get(0..4) != Some(b"TPM2")
        || !table_is_valid(tpm2_table)
        || tpm2_table[8] < 4
        || tpm2_table.len() < TPM2_WITH_LOG_AREA
    {
        return None;
    }
    let laml = u32::from_le_bytes(tpm2_table[64..68].try_into().ok()?);
    let lasa = u64::from_le_bytes(tpm2_table[68..76].try_into().ok()?);
    (laml != 0 && lasa != 0).then_some((lasa, laml))
}

/// Offset of the MADT's first interrupt controller structure (after the 36-byte header, the local
/// APIC address and the flags).
pub const MADT_ENTRIES_START: usize = 44;
/// MADT structure type of a processor local APIC (ACPI 6.5, 5.2.12.2).
const LOCAL_APIC: u8 = 0;
/// Length of a processor local APIC structure.
const LOCAL_APIC_LEN: usize = 8;
/// MADT structure type of a processor local x2APIC (ACPI 6.5, 5.2.12.12).
const LOCAL_X2APIC: u8 = 9;
/// Length of a processor local x2APIC structure.
const LOCAL_X2APIC_LEN: usize = 16;
/// Local APIC flags: the processor is usable now.
const FLAG_ENABLED: u32 = 1 << 0;
/// Local APIC flags: the processor can be brought online (ACPI 6.3 and later).
const FLAG_ONLINE_CAPABLE: u32 = 1 << 1;

/// The processors a MADT lists, as [`madt_apic_ids`] counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MadtProcessors {
    /// APIC IDs written to the front of the output slice, in table order.
    pub recorded: usize,
    /// Enabled or online-capable local APIC entries that did not fit in the output slice.
    pub not_recorded: usize,
    /// Enabled or online-capable local x2APIC entries, which are not used: the AP start speaks
    /// xAPIC, which reaches only 8-bit APIC IDs (firmware lists IDs below 255 as local APIC
    /// entries).
    pub x2apic_not_used: usize,
}

/// Why a MADT is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadtError {
    /// the table's signature is not `APIC`
    NotMadt,
    /// the MADT's length field disagrees with the table or its checksum is wrong
    InvalidTable,
    /// the MADT is shorter than its fixed 44-byte part
    TooShort,
    /// the MADT ends inside an entry's two-byte header
    EntryHeaderTruncated {
        /// Byte offset of the entry.
        offset: usize,
    },
    /// a MADT entry's length is below its two-byte header (the walk would not advance)
    EntryTooShort {
        /// Byte offset of the entry.
        offset: usize,
        /// Its length field.
        length: u8,
    },
    /// a MADT entry reaches past the end of the table
    EntryOverrunsTable {
        /// Byte offset of the entry.
        offset: usize,
        /// Its length field.
        length: u8,
    },
    /// a MADT processor entry is shorter than its type's fixed length
    ProcessorEntryTooShort {
        /// Byte offset of the entry.
        offset: usize,
        /// Its type (0 local APIC, 9 local x2APIC).
        kind: u8,
        /// Its length field.
        length: u8,
    },
}

impl fmt::Display for MadtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotMadt => f.write_str("the table's signature is not APIC"),
            Self::InvalidTable => f.write_str(
                "the MADT's length field disagrees with the table or its checksum is wrong",
            ),
            Self::TooShort => f.write_str("the MADT is shorter than its fixed 44-byte part"),
            Self::EntryHeaderTruncated { offset } => {
                write!(
                    f,
                    "the MADT ends inside the header of the entry at offset {offset}"
                )
            }
            Self::EntryTooShort { offset, length } => write!(
                f,
                "the MADT entry at offset {offset} has length {length}, below its two-byte header"
            ),
            Self::EntryOverrunsTable { offset, length } => write!(
                f,
                "the MADT entry at offset {offset} (length {length}) reaches past the end of the table"
            ),
            Self::ProcessorEntryTooShort {
                offset,
                kind,
                length,
            } => write!(
                f,
                "the MADT processor entry of type {kind} at offset {offset} has length {length}, shorter than its type's"
            ),
        }
    }
}

/// Reads a little-endian u32 at `at`; the caller has checked the bounds.
fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// The APIC IDs of the usable processors (flags enabled or online-capable) in a whole ACPI MADT,
/// written to the front of `out` in table order. The table must be valid ([`table_is_valid`])
/// and every entry well formed: an entry shorter than its header (a zero length would loop), one
/// that reaches past the table, or a processor entry shorter than its type ends the walk with an
/// error and no IDs count. Other entry types are skipped by their length.
pub fn madt_apic_ids(madt: &[u8], out: &mut [u32]) -> Result<MadtProcessors, MadtError> {
    if madt.get(0..4) != Some(b"APIC") {
        return Err(MadtError::NotMadt);
    }
    if !table_is_valid(madt) {
        return Err(MadtError::InvalidTable);
    }
    if madt.len() < MADT_ENTRIES_START {
        return Err(MadtError::TooShort);
    }
    let mut found = MadtProcessors::default();
    let mut offset = MADT_ENTRIES_START;
    while offset < madt.len() {
        let (Some(&kind), Some(&length)) = (madt.get(offset), madt.get(offset + 1)) else {
            return Err(MadtError::EntryHeaderTruncated { offset });
        };
        let len = usize::from(length);
        if len < 2 {
            return Err(MadtError::EntryTooShort { offset, length });
        }
        let Some(entry) = madt.get(offset..offset + len) else {
            return Err(MadtError::EntryOverrunsTable { offset, length });
        };
        let too_short = MadtError::ProcessorEntryTooShort {
            offset,
            kind,
            length,
        };
        let usable = |flags: u32| flags & (FLAG_ENABLED | FLAG_ONLINE_CAPABLE) != 0;
        match kind {
            // Processor UID (1), APIC ID (1), flags (4).
            LOCAL_APIC if len < LOCAL_APIC_LEN => return Err(too_short),
            LOCAL_APIC if usable(le_u32(entry, 4)) => match out.get_mut(found.recorded) {
                Some(slot) => {
                    *slot = u32::from(entry[3]);
                    found.recorded += 1;
                }
                None => found.not_recorded += 1,
            },
            // Reserved (2), x2APIC ID (4), flags (4), processor UID (4).
            LOCAL_X2APIC if len < LOCAL_X2APIC_LEN => return Err(too_short),
            LOCAL_X2APIC if usable(le_u32(entry, 8)) => found.x2apic_not_used += 1,
            _ => {}
        }
        offset += len;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    /// A TPM2 table as SeaBIOS builds it (revision 4, 76 bytes), with a fixed checksum.
    fn tpm2(revision: u8, laml: u32, lasa: u64) -> [u8; 76] {
        let mut t = [0u8; 76];
        t[0..4].copy_from_slice(b"TPM2");
        t[4..8].copy_from_slice(&76u32.to_le_bytes());
        t[8] = revision;
        t[64..68].copy_from_slice(&laml.to_le_bytes());
        t[68..76].copy_from_slice(&lasa.to_le_bytes());
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    #[test]
    fn the_log_area_is_read_from_a_valid_table() {
        assert_eq!(
            tpm2_log_area(&tpm2(4, 0x1_0000, 0x7ffd_0000)),
            Some((0x7ffd_0000, 0x1_0000))
        );
    }

    #[test]
    fn anything_doubtful_means_no_log_area() {
        assert_eq!(
            tpm2_log_area(&tpm2(3, 0x1_0000, 0x7ffd_0000)),
            None,
            "revision 3 has no log fields"
        );
        assert_eq!(tpm2_log_area(&tpm2(4, 0, 0x7ffd_0000)), None);
        assert_eq!(tpm2_log_area(&tpm2(4, 0x1_0000, 0)), None);
        let mut bad_sum = tpm2(4, 0x1_0000, 0x7ffd_0000);
        bad_sum[70] ^= 1;
        assert_eq!(tpm2_log_area(&bad_sum), None);
        let mut other = tpm2(4, 0x1_0000, 0x7ffd_0000);
        other[0..4].copy_from_slice(b"APIC");
        assert_eq!(tpm2_log_area(&other), None);
        let good = tpm2(4, 0x1_0000, 0x7ffd_0000);
        assert_eq!(
            tpm2_log_area(&good[..52]),
            None,
            "length field disagrees with the slice"
        );
        assert_eq!(tpm2_log_area(&good[..3]), None);
        assert!(!table_is_valid(&[]));
    }

    /// A MADT with the given entries after the fixed part, length and checksum fixed.
    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut t = vec![0u8; MADT_ENTRIES_START];
        t[0..4].copy_from_slice(b"APIC");
        t[8] = 5;
        t[36..40].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
        t[40..44].copy_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
        for entry in entries {
            t.extend_from_slice(entry);
        }
        fix(&mut t);
        t
    }

    /// Sets the length field and the checksum of `t`.
    fn fix(t: &mut [u8]) {
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[9] = 0;
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
    }

    fn local_apic(uid: u8, apic_id: u8, flags: u32) -> [u8; 8] {
        let f = flags.to_le_bytes();
        [0, 8, uid, apic_id, f[0], f[1], f[2], f[3]]
    }

    fn x2apic(x2apic_id: u32, flags: u32) -> [u8; 16] {
        let mut e = [0u8; 16];
        e[0] = 9;
        e[1] = 16;
        e[4..8].copy_from_slice(&x2apic_id.to_le_bytes());
        e[8..12].copy_from_slice(&flags.to_le_bytes());
        e
    }

    /// An I/O APIC entry (type 1) and an interrupt source override (type 2), as QEMU lists them.
    const IO_APIC: [u8; 12] = [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];
    const OVERRIDE: [u8; 10] = [2, 10, 0, 0, 2, 0, 0, 0, 0, 0];

    fn walk(table: &[u8]) -> (Result<MadtProcessors, MadtError>, [u32; 4]) {
        let mut ids = [u32::MAX; 4];
        (madt_apic_ids(table, &mut ids), ids)
    }

    #[test]
    fn a_qemu_like_madt_lists_its_processors_in_order() {
        let table = madt(&[
            &local_apic(0, 0, 1),
            &local_apic(1, 1, 1),
            &IO_APIC,
            &OVERRIDE,
        ]);
        assert!(table_is_valid(&table));
        let (found, ids) = walk(&table);
        assert_eq!(
            found,
            Ok(MadtProcessors {
                recorded: 2,
                ..Default::default()
            })
        );
        assert_eq!(&ids[..2], &[0, 1]);
        assert_eq!(ids[2], u32::MAX, "nothing written past the recorded IDs");
    }

    #[test]
    fn disabled_processors_are_left_out_and_online_capable_ones_kept() {
        let table = madt(&[
            &local_apic(0, 0, 1),
            &local_apic(1, 5, 0),
            &local_apic(2, 7, 0b10),
            &local_apic(3, 9, 0xffff_fffc),
        ]);
        let (found, ids) = walk(&table);
        assert_eq!(found.map(|f| f.recorded), Ok(2));
        assert_eq!(&ids[..2], &[0, 7]);
    }

    #[test]
    fn processors_beyond_the_output_are_counted_not_written() {
        let entries: Vec<[u8; 8]> = (0..6).map(|i| local_apic(i, i * 2, 1)).collect();
        let refs: Vec<&[u8]> = entries.iter().map(|e| e.as_slice()).collect();
        let (found, ids) = walk(&madt(&refs));
        assert_eq!(
            found,
            Ok(MadtProcessors {
                recorded: 4,
                not_recorded: 2,
                x2apic_not_used: 0
            })
        );
        assert_eq!(ids, [0, 2, 4, 6]);
        let mut none: [u32; 0] = [];
        assert_eq!(
            madt_apic_ids(&madt(&refs), &mut none).map(|f| f.not_recorded),
            Ok(6)
        );
    }

    #[test]
    fn x2apic_entries_are_counted_but_not_used() {
        let table = madt(&[&local_apic(0, 0, 1), &x2apic(300, 1), &x2apic(301, 0)]);
        let (found, ids) = walk(&table);
        assert_eq!(
            found,
            Ok(MadtProcessors {
                recorded: 1,
                not_recorded: 0,
                x2apic_not_used: 1
            })
        );
        assert_eq!(ids[0], 0);
    }

    #[test]
    fn a_madt_without_entries_lists_no_processors() {
        assert_eq!(walk(&madt(&[])).0, Ok(MadtProcessors::default()));
    }

    #[test]
    fn a_zero_or_one_byte_entry_ends_the_walk_with_an_error() {
        for length in [0u8, 1] {
            let table = madt(&[
                &local_apic(0, 0, 1),
                &[3, length, 0, 0],
                &local_apic(1, 1, 1),
            ]);
            assert_eq!(
                walk(&table).0,
                Err(MadtError::EntryTooShort { offset: 52, length })
            );
        }
    }

    #[test]
    fn an_entry_past_the_end_of_the_table_is_an_error() {
        // The last entry claims 8 bytes, 6 are left.
        let table = madt(&[&local_apic(0, 0, 1), &local_apic(1, 1, 1)[..6]]);
        assert_eq!(
            walk(&table).0,
            Err(MadtError::EntryOverrunsTable {
                offset: 52,
                length: 8
            })
        );
        let table = madt(&[&[2, 255, 0, 0]]);
        assert_eq!(
            walk(&table).0,
            Err(MadtError::EntryOverrunsTable {
                offset: 44,
                length: 255
            })
        );
    }

    #[test]
    fn a_table_ending_inside_an_entry_header_is_an_error() {
        let table = madt(&[&local_apic(0, 0, 1), &[0]]);
        assert_eq!(
            walk(&table).0,
            Err(MadtError::EntryHeaderTruncated { offset: 52 })
        );
    }

    #[test]
    fn truncated_processor_entries_are_errors() {
        let table = madt(&[&[0, 6, 0, 1, 1, 0]]);
        assert_eq!(
            walk(&table).0,
            Err(MadtError::ProcessorEntryTooShort {
                offset: 44,
                kind: 0,
                length: 6
            })
        );
        let table = madt(&[&x2apic(300, 1)[..12]]);
        let mut short = table.clone();
        short[45] = 12;
        fix(&mut short);
        assert_eq!(
            walk(&short).0,
            Err(MadtError::ProcessorEntryTooShort {
                offset: 44,
                kind: 9,
                length: 12
            })
        );
    }

    #[test]
    fn a_bad_checksum_a_wrong_length_or_signature_is_refused() {
        let good = madt(&[&local_apic(0, 0, 1), &local_apic(1, 1, 1)]);
        let mut bad_sum = good.clone();
        bad_sum[47] ^= 1;
        assert!(!table_is_valid(&bad_sum));
        assert_eq!(walk(&bad_sum).0, Err(MadtError::InvalidTable));
        assert_eq!(
            walk(&good[..good.len() - 8]).0,
            Err(MadtError::InvalidTable)
        );
        let mut tpm2 = good.clone();
        tpm2[0..4].copy_from_slice(b"TPM2");
        fix(&mut tpm2);
        assert_eq!(walk(&tpm2).0, Err(MadtError::NotMadt));
        let mut header_only = good[..36].to_vec();
        fix(&mut header_only);
        assert_eq!(walk(&header_only).0, Err(MadtError::TooShort));
        assert_eq!(walk(&[]).0, Err(MadtError::NotMadt));
    }

    #[test]
    fn every_error_says_its_cause() {
        let text = MadtError::EntryOverrunsTable {
            offset: 52,
            length: 8,
        }
        .to_string();
        assert!(
            text.contains("offset 52") && text.contains("past the end"),
            "{text}"
        );
    }

    proptest::proptest! {
        /// Any bytes after a valid fixed part: the walk ends, never panics, and records at most
        /// what fits.
        #[test]
        fn arbitrary_entries_never_panic(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let table = madt(&[&tail]);
            let mut ids = [0u32; 3];
            if let Ok(found) = madt_apic_ids(&table, &mut ids) {
                proptest::prop_assert!(found.recorded <= 3);
            }
        }
    }
}
