//! The event-log windows of control domains (`docs/abi.md`, "Event-log windows"): the finished
//! Slipway log and the firmware's own log are copied with their 16-byte descriptor into frames
//! allocated and zeroed when the domain was created, mapped read-only (no write, no execute) at
//! `v1::SLIPWAY_LOG_GPA` and `v1::FIRMWARE_LOG_GPA` in the domain's second-level tables. The
//! frames belong to the domain and are freed with it.

use crate::addr::{Frame, PAGE_SIZE, PhysAddr};
use crate::frame_alloc::FrameAllocator;
use crate::memory::PhysMemory;
use crate::paging::{Access, PageSize, PageTable};
use slipway_protocol::v1::{LOG_DESCRIPTOR_LEN, LOG_WINDOW_SIZE, LogWindowDescriptor};

/// Frames of one window.
pub const WINDOW_FRAMES: usize = (LOG_WINDOW_SIZE / PAGE_SIZE) as usize;
/// Frames of both windows of a control domain.
pub const DOMAIN_LOG_FRAMES: usize = 2 * WINDOW_FRAMES;

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
/// read-only, no execute, at `gpa` in `tables`. Every frame allocated is pushed to `frames` (also
/// on failure: the caller frees them with the domain).
pub fn map_window<M: PhysMemory, A: FrameAllocator>(
    mem: &mut M,
    alloc: &mut A,
    tables: &mut PageTable,
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
        tables
            .map(
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
