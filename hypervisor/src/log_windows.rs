//! The firmware's event log, copied here post-launch (before the hypervisor's own page tables go
//! live) from the area the ACPI TPM2 table names, for the control domain's firmware-log window
//! (the windows themselves are hv-core's `log_window`).

use core::fmt;

use slipway_hv_core::addr::PhysRange;
use slipway_hv_core::firmware_log::{self, FirmwareLogError};
use slipway_protocol::v1::LOG_WINDOW_CAPACITY;

use crate::launch::LaunchHandoff;
use crate::memmap::ValidatedBoot;

/// The firmware's log, copied post-launch while the early identity map is still active.
static mut FIRMWARE_LOG: [u8; LOG_WINDOW_CAPACITY] = [0; LOG_WINDOW_CAPACITY];

/// Why the firmware's event log is not passed on (its window then says "no log").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureError {
    /// the area or the log in it is refused (hv-core's `firmware_log` checks)
    Log(FirmwareLogError),
    /// the log is larger than its window carries
    TooLarge { len: usize },
    /// the TPM2 table's log area holds no event (UEFI firmware logs through EFI_TCG2_PROTOCOL)
    Empty,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Log(why) => why.fmt(f),
            Self::TooLarge { len } => write!(
                f,
                "the log ({len} bytes) is larger than its window carries ({LOG_WINDOW_CAPACITY})"
            ),
            Self::Empty => f.write_str(
                "the TPM2 table's log area holds no event (UEFI firmware logs through EFI_TCG2_PROTOCOL)",
            ),
        }
    }
}

/// Copies the firmware's log (the used part of the TPM2 table's log area, unchanged) into the
/// hypervisor. Runs post-launch after the hand-off was validated and BEFORE the hypervisor's own
/// page tables replace the early identity map. `Ok(None)`: the firmware published no log.
/// The area's placement and the log's length are hv-core's (`firmware_log::{checked_area,
/// used_len}`); only the read of the area and the copy are here.
pub fn capture_firmware_log(
    handoff: &LaunchHandoff,
    boot: &ValidatedBoot,
    image: PhysRange,
) -> Result<Option<&'static [u8]>, CaptureError> {
    let (start, len) = (handoff.firmware_log_start, handoff.firmware_log_len);
    if len == 0 {
        return Ok(None);
    }
    // The TPM2 table's LAML is a u32; a wider length in the record is refused like hv-core would.
    let laml = u32::try_from(len).map_err(|_| match start.checked_add(len) {
        None => CaptureError::Log(FirmwareLogError::AreaWraps),
        Some(_) => CaptureError::Log(FirmwareLogError::AreaTooLarge),
    })?;
    let area = firmware_log::checked_area(
        &boot.map[..boot.region_count],
        image,
        &boot.modules[..boot.module_count],
        start,
        laml,
    )
    .map_err(CaptureError::Log)?;
    // SAFETY: the early page tables identity-map the low 4 GiB and `checked_area` guarantees the
    // area ends at or below 4 GiB (FIRMWARE_AREA_LIMIT), is at most 16 MiB, and lies inside one
    // firmware-reserved region of the validated map that is neither RAM the hypervisor hands
    // out, nor its image, nor a module; nothing writes it while this one CPU reads it.
    let bytes =
        unsafe { core::slice::from_raw_parts(area.start.0 as *const u8, area.len() as usize) };
    let len = firmware_log::used_len(bytes).map_err(CaptureError::Log)?;
    if len > LOG_WINDOW_CAPACITY {
        return Err(CaptureError::TooLarge { len });
    }
    if len == 0 {
        return Err(CaptureError::Empty);
    }
    // SAFETY: the buffer is written once, here, on the boot CPU before any other CPU or domain
    // runs; afterwards it is only read.
    let copy = unsafe { &mut *core::ptr::addr_of_mut!(FIRMWARE_LOG) };
    copy[..len].copy_from_slice(&bytes[..len]);
    Ok(Some(&copy[..len]))
}
