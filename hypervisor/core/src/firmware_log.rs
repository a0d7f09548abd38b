//! The firmware's own TPM event log (the log area of the ACPI TPM2 table, which SeaBIOS fills):
//! checking where it claims to be, and finding how much of the area is log. The hypervisor copies
//! that part unchanged into control domains' firmware-log window. The area's address comes from
//! the pre-launch stage, so it is checked like the memory map: it must lie in firmware-owned
//! memory, away from RAM the hypervisor hands out, its own image and the modules.

use core::fmt;

use crate::addr::PhysRange;
use crate::memmap::{FirmwareRegion, RegionKind};
use slipway_measure::log::EventLog;

/// Largest firmware log area accepted.
pub const MAX_FIRMWARE_AREA: u64 = 16 << 20;
/// The area must end below this address (what the early identity map reaches).
pub const FIRMWARE_AREA_LIMIT: u64 = 1 << 32;

/// Why the firmware's log is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareLogError {
    /// the TPM2 table's log area wraps around the address space
    AreaWraps,
    /// the TPM2 table's log area is larger than 16 MiB or ends above 4 GiB
    AreaTooLarge,
    /// the TPM2 table's log area is not inside one reserved or ACPI region of the memory map
    NotReserved,
    /// the TPM2 table's log area overlaps usable RAM
    OverlapsRam,
    /// the TPM2 table's log area overlaps the hypervisor image
    OverlapsImage,
    /// the TPM2 table's log area overlaps a boot module
    OverlapsModule(usize),
    /// the log does not start with a crypto-agile Spec ID header
    NotCryptoAgile,
    /// an event of the log is malformed
    Malformed {
        /// Byte offset of the event.
        offset: usize,
    },
}

impl fmt::Display for FirmwareLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AreaWraps => f.write_str("the TPM2 table's log area wraps around"),
            Self::AreaTooLarge => f.write_str("the TPM2 table's log area is larger than 16 MiB or ends above 4 GiB"),
            Self::NotReserved => {
                f.write_str("the TPM2 table's log area is not inside one reserved or ACPI region of the memory map")
            }
            Self::OverlapsRam => f.write_str("the TPM2 table's log area overlaps usable RAM"),
            Self::OverlapsImage => f.write_str("the TPM2 table's log area overlaps the hypervisor image"),
            Self::OverlapsModule(index) => write!(f, "the TPM2 table's log area overlaps boot module {index}"),
            Self::NotCryptoAgile => f.write_str("the firmware log does not start with a crypto-agile Spec ID header"),
            Self::Malformed { offset } => write!(f, "the firmware log has a malformed event at offset {offset}"),
        }
    }
}

/// Checks the log area `[lasa, lasa + laml)` against the memory map, the hypervisor image and the
/// modules; returns it as a range.
pub fn checked_area(
    map: &[FirmwareRegion],
    image: PhysRange,
    modules: &[PhysRange],
    lasa: u64,
    laml: u32,
) -> Result<PhysRange, FirmwareLogError> {
    let area =
        PhysRange::from_start_len(lasa, u64::from(laml)).ok_or(FirmwareLogError::AreaWraps)?;
    if area.len() > MAX_FIRMWARE_AREA || area.end.0 > FIRMWARE_AREA_LIMIT {
        return Err(FirmwareLogError::AreaTooLarge);
    }
    let range = |r: &FirmwareRegion| PhysRange::from_start_len(r.base, r.len);
    let firmware_owned = |r: &&FirmwareRegion| {
        matches!(
            r.kind,
            RegionKind::Reserved | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
        )
    };
    if !map
        .iter()
        .filter(firmware_owned)
        .any(|r| range(r).is_some_and(|whole| whole.contains_range(&area)))
    {
        return Err(FirmwareLogError::NotReserved);
    }
    if map
        .iter()
        .filter(|r| r.kind == RegionKind::Usable)
        .any(|r| range(r).is_none_or(|ram| ram.overlaps(&area)))
    {
        return Err(FirmwareLogError::OverlapsRam);
    }
    if image.overlaps(&area) {
        return Err(FirmwareLogError::OverlapsImage);
    }
    if let Some(index) = modules.iter().position(|m| m.overlaps(&area)) {
        return Err(FirmwareLogError::OverlapsModule(index));
    }
    Ok(area)
}

/// Length of the log at the start of `area`: up to the first all-zero event header (a firmware
/// log area is zero past its last event) or the area's end. `Ok(0)` for an all-zero area (UEFI
/// firmware logs through EFI_TCG2_PROTOCOL and may leave the area empty).
pub fn used_len(area: &[u8]) -> Result<usize, FirmwareLogError> {
    let log = match EventLog::parse(area) {
        Ok(log) => log,
        Err(_) if area.iter().all(|&b| b == 0) => return Ok(0),
        Err(_) => return Err(FirmwareLogError::NotCryptoAgile),
    };
    let mut events = log.events();
    loop {
        let at = events.offset();
        match events.next() {
            None => return Ok(at),
            Some(Ok(event))
                if event.pcr == 0
                    && event.event_type == 0
                    && event.digests.is_empty()
                    && event.data.is_empty() =>
            {
                return Ok(at);
            }
            Some(Ok(_)) => {}
            // A truncated zero tail (shorter than an event header) ends the log too.
            Some(Err(_)) if area[at..].iter().all(|&b| b == 0) => return Ok(at),
            Some(Err(_)) => return Err(FirmwareLogError::Malformed { offset: at }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use slipway_measure::alg::{BankSet, HashAlg};
    use slipway_measure::log::{LogHeader, LogWriter};
    use std::vec;
    use std::vec::Vec;

    /// A SeaBIOS-like log: Spec ID header, then a few events into PCR0-7.
    fn log(events: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 8192];
        let banks = BankSet::single(HashAlg::Sha256);
        let mut writer = LogWriter::new(&mut buf, &LogHeader::slipway(banks)).unwrap();
        for i in 0..events {
            writer
                .append_measured(i as u32 % 8, 0x8000_0008, b"firmware event")
                .unwrap();
        }
        writer.as_bytes().to_vec()
    }

    #[test]
    fn the_used_part_ends_at_the_zero_tail_or_the_area_end() {
        let bytes = log(3);
        let mut area = bytes.clone();
        area.resize(0x1_0000, 0);
        assert_eq!(used_len(&area), Ok(bytes.len()));
        assert_eq!(
            used_len(&bytes),
            Ok(bytes.len()),
            "a log filling the area exactly"
        );
        let mut short_tail = bytes.clone();
        short_tail.extend_from_slice(&[0; 5]);
        assert_eq!(
            used_len(&short_tail),
            Ok(bytes.len()),
            "a zero tail shorter than a header"
        );
        assert_eq!(used_len(&[0u8; 4096]), Ok(0));
    }

    #[test]
    fn garbage_is_refused() {
        let bytes = log(2);
        let mut garbage = bytes.clone();
        garbage.extend_from_slice(&[0xff; 64]);
        assert_eq!(
            used_len(&garbage),
            Err(FirmwareLogError::Malformed {
                offset: bytes.len()
            })
        );
        assert_eq!(
            used_len(&[0x55; 256]),
            Err(FirmwareLogError::NotCryptoAgile)
        );
        for len in 0..bytes.len() {
            let _ = used_len(&bytes[..len]); // never panics
        }
    }

    fn map() -> [FirmwareRegion; 3] {
        [
            FirmwareRegion {
                base: 0x10_0000,
                len: 0x7fe0_0000,
                kind: RegionKind::Usable,
            },
            FirmwareRegion {
                base: 0x7ff0_0000,
                len: 0x10_0000,
                kind: RegionKind::Reserved,
            },
            FirmwareRegion {
                base: 0xfed4_0000,
                len: 0x5000,
                kind: RegionKind::Reserved,
            },
        ]
    }

    #[test]
    fn the_area_must_be_firmware_memory_away_from_everything_else() {
        let image = PhysRange::new(0x20_0000, 0x30_0000);
        let modules = [PhysRange::new(0x7ff8_0000, 0x7ff9_0000)];
        assert_eq!(
            checked_area(&map(), image, &[], 0x7ff0_0000, 0x1_0000),
            Ok(PhysRange::new(0x7ff0_0000, 0x7ff1_0000))
        );
        assert_eq!(
            checked_area(&map(), image, &[], u64::MAX - 10, 0x100),
            Err(FirmwareLogError::AreaWraps)
        );
        assert_eq!(
            checked_area(&map(), image, &[], 0xffff_ff00, 0x1000),
            Err(FirmwareLogError::AreaTooLarge)
        );
        assert_eq!(
            checked_area(&map(), image, &[], 0x7ff0_0000, u32::MAX),
            Err(FirmwareLogError::AreaTooLarge)
        );
        assert_eq!(
            checked_area(&map(), image, &[], 0x40_0000, 0x1000),
            Err(FirmwareLogError::NotReserved)
        );
        assert_eq!(
            checked_area(&map(), image, &[], 0x7ffc_0000, 0x8_0000),
            Err(FirmwareLogError::NotReserved)
        );
        let mut lying = map().to_vec();
        lying.push(FirmwareRegion {
            base: 0x7ff0_8000,
            len: 0x1000,
            kind: RegionKind::Usable,
        });
        assert_eq!(
            checked_area(&lying, image, &[], 0x7ff0_0000, 0x1_0000),
            Err(FirmwareLogError::OverlapsRam)
        );
        let in_image = PhysRange::new(0x7ff0_0000, 0x7ff0_1000);
        assert_eq!(
            checked_area(&map(), in_image, &[], 0x7ff0_0000, 0x1_0000),
            Err(FirmwareLogError::OverlapsImage)
        );
        assert_eq!(
            checked_area(&map(), image, &modules, 0x7ff7_0000, 0x2_0000),
            Err(FirmwareLogError::OverlapsModule(0))
        );
    }
}
