//! Finding the other CPUs (the local APIC IDs listed in the ACPI MADT) and the firmware's TPM
//! event log (the log area of the ACPI TPM2 table), read by the pre-launch stage (the early
//! identity map reaches the firmware's tables) and passed on in the hand-off.
//! Firmware tables are input like any other: lengths are bounded here (the raw reads), tables
//! are checked, the TPM2 log fields read and the MADT walked by hv-core's `acpi` (host-tested).
//! A missing or unreadable table means "no other CPUs" or "no firmware log"; a MADT with a
//! malformed entry is said as an error and means "no other CPUs".

/// Most CPUs recorded.
pub const MAX_APIC_IDS: usize = 8;
/// Highest physical address read (the early identity map's reach).
const LIMIT: u64 = 0x1_0000_0000;

fn bytes(addr: u64, len: u64) -> Option<&'static [u8]> {
    if addr == 0 || addr.checked_add(len)? > LIMIT || len > 1 << 20 {
        return None;
    }
    // SAFETY: in the pre-launch stage the early page tables identity-map the low 4 GiB (checked
    // above) and firmware tables are not written by anyone while we read them.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

/// A whole ACPI table at `addr` that hv-core finds valid (length field, checksum).
fn table(addr: u64) -> Option<&'static [u8]> {
    let header = bytes(addr, 36)?;
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as u64;
    bytes(addr, len).filter(|t| slipway_hv_core::acpi::table_is_valid(t))
}

/// The first table with `signature` listed in the RSDT (`entry_size` 4) or XSDT (`entry_size`
/// 8) at `root`, whole and with a valid checksum.
fn find_table(root: u64, entry_size: usize, signature: &[u8; 4]) -> Option<&'static [u8]> {
    let root = table(root)?;
    root[36..].chunks_exact(entry_size).find_map(|entry| {
        let addr = match entry_size {
            4 => u64::from(u32::from_le_bytes(entry.try_into().ok()?)),
            _ => u64::from_le_bytes(entry.try_into().ok()?),
        };
        table(addr).filter(|t| &t[0..4] == signature)
    })
}

/// The firmware's TPM event-log area (LASA, LAML) from the ACPI TPM2 table, as hv-core's
/// `acpi::tpm2_log_area` reads it. The area itself is checked post-launch.
pub fn tpm2_log_area(root: u64, entry_size: usize) -> Option<(u64, u32)> {
    find_table(root, entry_size, b"TPM2").and_then(slipway_hv_core::acpi::tpm2_log_area)
}

/// The APIC IDs of usable processors (enabled or online-capable) in the MADT, found through the
/// RSDT (`entry_size` 4) or XSDT (`entry_size` 8) at `root`; the entry walk is hv-core's
/// `acpi::madt_apic_ids`. No MADT means no other CPUs; a malformed one is said and its IDs are
/// not used (only the boot processor runs).
pub fn apic_ids(root: u64, entry_size: usize, out: &mut [u32; MAX_APIC_IDS]) -> usize {
    let Some(madt) = find_table(root, entry_size, b"APIC") else {
        return 0;
    };
    match slipway_hv_core::acpi::madt_apic_ids(madt, out) {
        Ok(found) => {
            if found.not_recorded != 0 {
                crate::hvprintln!(
                    "pre-launch: {} more processors in the ACPI MADT are not used (at most {MAX_APIC_IDS})",
                    found.not_recorded
                );
            }
            if found.x2apic_not_used != 0 {
                crate::hvprintln!(
                    "pre-launch: {} x2APIC processors in the ACPI MADT are not used (xAPIC only)",
                    found.x2apic_not_used
                );
            }
            found.recorded
        }
        Err(error) => {
            crate::hvprintln!(
                "pre-launch: error: the ACPI MADT is not used ({error}); only the boot processor runs"
            );
            0
        }
    }
}
