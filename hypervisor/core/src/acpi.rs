//! Reading ACPI tables the firmware left behind. Firmware tables are input like any other:
//! lengths are bounded by the slice, checksums are verified, and a table that does not check out
//! is treated as absent.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
