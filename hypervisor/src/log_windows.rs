//! The event-log windows of control domains (`docs/abi.md`, "Event-log windows"): at hand-off,
//! after the separators, the finished Slipway log and the firmware's own log (copied here, before
//! the hypervisor's own page tables go live, from the area the ACPI TPM2 table names) are copied
//! with their 16-byte descriptor into freshly allocated, zeroed frames, mapped read-only (no
//! write, no execute) at `v1::SLIPWAY_LOG_GPA` and `v1::FIRMWARE_LOG_GPA` in the domain's nested
//! tables. The frames belong to the domain and are freed with it.

use core::fmt;

use slipway_hv_core::addr::{Frame, PAGE_SIZE, PhysAddr, PhysRange};
use slipway_hv_core::firmware_log::{self, FirmwareLogError};
use slipway_hv_core::frame_alloc::FrameAllocator;
use slipway_hv_core::memory::PhysMemory;
use slipway_hv_core::paging::{Access, PageSize, PageTable};
use slipway_protocol::v1::{
    LOG_DESCRIPTOR_LEN, LOG_WINDOW_CAPACITY, LOG_WINDOW_SIZE, LogWindowDescriptor,
};

use crate::launch::LaunchHandoff;
use crate::memmap::ValidatedBoot;

/// Frames of one window.
pub const WINDOW_FRAMES: usize = (LOG_WINDOW_SIZE / PAGE_SIZE) as usize;
/// Frames of both windows of a control domain.
pub const DOMAIN_LOG_FRAMES: usize = 2 * WINDOW_FRAMES;

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

/// Writes `log`'s descriptor and bytes (none: length 0) into a window's frames, which
/// [`map_window`] allocated and mapped when the domain was created; allocates nothing, so it
/// cannot run out of memory after hand-off.
pub fn fill_window<M: PhysMemory>(
    mem: &mut M,
    frames: &[Frame],
    log: Option<&[u8]>,
) -> Result<(), WindowError> {
    let log = log.unwrap_or(&[]);
    let descriptor = LogWindowDescriptor::for_log(log.len())
        .map_err(|_| WindowError::LogTooLarge)?
        .encode();
    if frames.len() != WINDOW_FRAMES {
        return Err(WindowError::MapFailed);
    }
    for (page, &frame) in frames.iter().enumerate() {
        mem.zero_frame(frame)
            .map_err(|_| WindowError::OutOfMemory)?;
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
    }
    Ok(())
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
    let first = frames.len();
    for page in 0..WINDOW_FRAMES {
        let frame = alloc.allocate().map_err(|_| WindowError::OutOfMemory)?;
        if frames.push(frame).is_err() {
            let _ = alloc.free(frame);
            return Err(WindowError::OutOfMemory);
        }
        mem.zero_frame(frame)
            .map_err(|_| WindowError::OutOfMemory)?;
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
    fill_window(mem, &frames[first..], log)
}
