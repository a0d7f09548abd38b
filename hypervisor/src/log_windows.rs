//! The event-log windows of control domains (`docs/abi.md`, "Event-log windows"): at hand-off,
//! after the separators, the finished Slipway log and the firmware's own log (copied here, before
//! the hypervisor's own page tables go live, from the area the ACPI TPM2 table names) are copied
//! with their 16-byte descriptor into freshly allocated, zeroed frames, mapped read-only (no
//! write, no execute) at `v1::SLIPWAY_LOG_GPA` and `v1::FIRMWARE_LOG_GPA` in the domain's nested
//! tables. The frames belong to the domain and are freed with it.

use core::fmt;

use slipway_hv_core::addr::{Frame, PAGE_SIZE, PhysAddr, PhysRange};
use slipway_hv_core::frame_alloc::FrameAllocator;
use slipway_hv_core::memory::PhysMemory;
use slipway_hv_core::paging::{Access, PageSize, PageTable};
use slipway_measure::log::EventLog;
use slipway_protocol::v1::{
    LOG_DESCRIPTOR_LEN, LOG_WINDOW_CAPACITY, LOG_WINDOW_SIZE, LogWindowDescriptor,
};

use crate::launch::{LaunchHandoff, RegionKind};

/// Frames of one window.
pub const WINDOW_FRAMES: usize = (LOG_WINDOW_SIZE / PAGE_SIZE) as usize;
/// Frames of both windows of a control domain.
pub const DOMAIN_LOG_FRAMES: usize = 2 * WINDOW_FRAMES;
/// Largest firmware log area read (its used part must still fit a window).
const MAX_FIRMWARE_AREA: u64 = 16 << 20;
/// The early identity map's reach (the copy is made before the hypervisor's own tables).
const EARLY_MAP_END: u64 = 1 << 32;

/// The firmware's log, copied post-launch while the early identity map is still active.
static mut FIRMWARE_LOG: [u8; LOG_WINDOW_CAPACITY] = [0; LOG_WINDOW_CAPACITY];

/// Why the firmware's event log is not passed on (its window then says "no log").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    Malformed { offset: usize },
    /// the log is larger than its window carries
    TooLarge { len: usize },
    /// the TPM2 table's log area holds no event (UEFI firmware logs through EFI_TCG2_PROTOCOL)
    Empty,
}

impl fmt::Display for FirmwareLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AreaWraps => f.write_str("the TPM2 table's log area wraps around"),
            Self::AreaTooLarge => {
                f.write_str("the TPM2 table's log area is larger than 16 MiB or ends above 4 GiB")
            }
            Self::NotReserved => f.write_str(
                "the TPM2 table's log area is not inside one reserved or ACPI region of the memory map",
            ),
            Self::OverlapsRam => f.write_str("the TPM2 table's log area overlaps usable RAM"),
            Self::OverlapsImage => {
                f.write_str("the TPM2 table's log area overlaps the hypervisor image")
            }
            Self::OverlapsModule(index) => {
                write!(f, "the TPM2 table's log area overlaps boot module {index}")
            }
            Self::NotCryptoAgile => {
                f.write_str("the log does not start with a crypto-agile Spec ID header")
            }
            Self::Malformed { offset } => write!(f, "the log is malformed at offset {offset}"),
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

/// Checks the log area the pre-launch stage found in the TPM2 table against the validated boot
/// (reserved or ACPI memory only, never RAM, the image or a module) and returns it.
fn checked_area(
    handoff: &LaunchHandoff,
    image: PhysRange,
    modules: &[PhysRange],
) -> Result<Option<PhysRange>, FirmwareLogError> {
    if handoff.firmware_log_len == 0 {
        return Ok(None);
    }
    let area = PhysRange::from_start_len(handoff.firmware_log_start, handoff.firmware_log_len)
        .ok_or(FirmwareLogError::AreaWraps)?;
    if area.len() > MAX_FIRMWARE_AREA || area.end.0 > EARLY_MAP_END {
        return Err(FirmwareLogError::AreaTooLarge);
    }
    let regions = &handoff.regions[..(handoff.region_count as usize).min(handoff.regions.len())];
    let region_range = |r: &crate::launch::RawRegion| PhysRange::from_start_len(r.base, r.len);
    let firmware_owned = |kind: u32| {
        kind == RegionKind::Reserved as u32
            || kind == RegionKind::AcpiReclaimable as u32
            || kind == RegionKind::AcpiNvs as u32
    };
    if !regions.iter().any(|r| {
        firmware_owned(r.kind) && region_range(r).is_some_and(|range| range.contains_range(&area))
    }) {
        return Err(FirmwareLogError::NotReserved);
    }
    if regions.iter().any(|r| {
        r.kind == RegionKind::Usable as u32
            && region_range(r).is_none_or(|range| range.overlaps(&area))
    }) {
        return Err(FirmwareLogError::OverlapsRam);
    }
    if image.overlaps(&area) {
        return Err(FirmwareLogError::OverlapsImage);
    }
    if let Some(index) = modules.iter().position(|m| m.overlaps(&area)) {
        return Err(FirmwareLogError::OverlapsModule(index));
    }
    Ok(Some(area))
}

/// Length of the log at the start of `area`: up to the first all-zero event header (a firmware
/// log area is zero past its last event) or the area's end. `Ok(0)` for an all-zero area.
pub fn used_log_len(area: &[u8]) -> Result<usize, FirmwareLogError> {
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
            Some(Err(_)) if area[at..].iter().all(|&b| b == 0) => return Ok(at),
            Some(Err(_)) => return Err(FirmwareLogError::Malformed { offset: at }),
        }
    }
}

/// Copies the firmware's log (the used part of the TPM2 table's log area, unchanged) into the
/// hypervisor. Runs post-launch after the hand-off was validated and BEFORE the hypervisor's own
/// page tables replace the early identity map. `Ok(None)`: the firmware published no log.
pub fn capture_firmware_log(
    handoff: &LaunchHandoff,
    image: PhysRange,
    modules: &[PhysRange],
) -> Result<Option<&'static [u8]>, FirmwareLogError> {
    let Some(area) = checked_area(handoff, image, modules)? else {
        return Ok(None);
    };
    // SAFETY: the early page tables identity-map the low 4 GiB and the area lies below 4 GiB
    // (checked), inside firmware-reserved memory that is neither RAM the hypervisor hands out,
    // nor its image, nor a module (checked); nothing writes it while this one CPU reads it.
    let bytes =
        unsafe { core::slice::from_raw_parts(area.start.0 as *const u8, area.len() as usize) };
    let len = used_log_len(bytes)?;
    if len > LOG_WINDOW_CAPACITY {
        return Err(FirmwareLogError::TooLarge { len });
    }
    if len == 0 {
        return Err(FirmwareLogError::Empty);
    }
    // SAFETY: the buffer is written once, here, on the boot CPU before any other CPU or domain
    // runs; afterwards it is only read.
    let copy = unsafe { &mut *core::ptr::addr_of_mut!(FIRMWARE_LOG) };
    copy[..len].copy_from_slice(&bytes[..len]);
    Ok(Some(&copy[..len]))
}

/// Why a window could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError {
    /// the log is larger than its window carries
    LogTooLarge,
    /// no free frame for the window
    OutOfMemory,
    /// the window's guest-physical range is already mapped in the domain
    MapFailed,
}

/// Fills fresh zeroed frames with `log`'s descriptor and bytes (none: length 0) and maps them
/// read-only, no execute, at `gpa` in `npt`. Every frame allocated is pushed to `frames` (also
/// on failure: the caller frees them with the domain).
pub fn map_window<M: PhysMemory, A: FrameAllocator>(
    mem: &mut M,
    alloc: &mut A,
    npt: &mut PageTable,
    gpa: u64,
    log: Option<&[u8]>,
    frames: &mut heapless::Vec<Frame, DOMAIN_LOG_FRAMES>,
) -> Result<(), WindowError> {
    let log = log.unwrap_or(&[]);
    let descriptor = LogWindowDescriptor::for_log(log.len())
        .map_err(|_| WindowError::LogTooLarge)?
        .encode();
    for page in 0..WINDOW_FRAMES {
        let frame = alloc.allocate().map_err(|_| WindowError::OutOfMemory)?;
        if frames.push(frame).is_err() {
            let _ = alloc.free(frame);
            return Err(WindowError::OutOfMemory);
        }
        mem.zero_frame(frame)
            .map_err(|_| WindowError::OutOfMemory)?;
        // The window's bytes: descriptor, then the log; this page holds [from, from + 4096).
        let from = page * PAGE_SIZE as usize;
        let to = from + PAGE_SIZE as usize;
        if from < LOG_DESCRIPTOR_LEN {
            mem.write(frame.start(), &descriptor)
                .map_err(|_| WindowError::OutOfMemory)?;
        }
        let log_from = from.saturating_sub(LOG_DESCRIPTOR_LEN);
        let log_to = (to - LOG_DESCRIPTOR_LEN).min(log.len());
        if log_from < log_to {
            let at = (LOG_DESCRIPTOR_LEN + log_from - from) as u64;
            mem.write(PhysAddr(frame.start().0 + at), &log[log_from..log_to])
                .map_err(|_| WindowError::OutOfMemory)?;
        }
        npt.map(
            mem,
            alloc,
            gpa + (page * PAGE_SIZE as usize) as u64,
            frame.start(),
            PageSize::Small,
            Access::R,
        )
        .map_err(|_| WindowError::MapFailed)?;
    }
    Ok(())
}
