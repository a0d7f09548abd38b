//! Reading guest-physical memory through the runtime's identity map of the first 4 GiB.

use crate::pvh::{PhysRead, StartInfo, StartInfoError};

/// The end of the identity map: addresses at or above it are not readable.
pub const IDENTITY_MAP_END: u64 = 4 << 30;

/// Guest-physical memory as the identity map shows it. Reading memory outside the domain's RAM
/// (or a module mapping) faults the domain itself, never anyone else.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityMapped;

impl PhysRead for IdentityMapped {
    fn read(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let end = gpa.checked_add(len as u64)?;
        if gpa == 0 || end > IDENTITY_MAP_END {
            return None;
        }
        // SAFETY: [gpa, end) lies inside the identity map set up by the entry stub (virtual ==
        // physical below 4 GiB), is non-null, and is only read. The start info, its tables and
        // the boot modules are written by the builder before this domain runs and are not
        // written concurrently by this guest.
        Some(unsafe { core::slice::from_raw_parts(gpa as *const u8, len) })
    }
}

/// Parses the start info the vCPU was entered with.
pub fn start_info(gpa: u64) -> Result<StartInfo<'static, IdentityMapped>, StartInfoError> {
    static MEMORY: IdentityMapped = IdentityMapped;
    StartInfo::parse(&MEMORY, gpa)
}

/// The bytes at `[gpa, gpa + len)` (a boot module), or `None` outside the identity map.
pub fn bytes(gpa: u64, len: u64) -> Option<&'static [u8]> {
    IdentityMapped.read(gpa, usize::try_from(len).ok()?)
}
