//! The PVH `hvm_start_info` page (Xen `public/arch-x86/hvm/start_info.h`, version 1), built as the
//! exact bytes domB writes into a domain. All structures are little-endian and live in one page:
//!
//! | offset | content |
//! |---|---|
//! | 0 | `hvm_start_info` (56 bytes) |
//! | 56 | `hvm_modlist_entry` × modules (32 bytes each) |
//! | then | `hvm_memmap_table_entry` × entries (24 bytes each) |
//! | then | module command lines, then the kernel command line (NUL-terminated) |

use alloc::vec::Vec;
use core::fmt;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The structure version written (1 adds the memory map).
pub const START_INFO_VERSION: u32 = 1;
/// Size of `hvm_start_info` version 1.
pub const START_INFO_LEN: usize = 56;
/// Size of one `hvm_modlist_entry`.
pub const MODLIST_ENTRY_LEN: usize = 32;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_LEN: usize = 24;
/// The start-info page is one 4 KiB page.
pub const START_INFO_PAGE_LEN: usize = 4096;

/// E820 memory types used in the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MemoryType {
    /// Usable RAM (E820 type 1).
    Ram = 1,
    /// Reserved (E820 type 2): the start-info page and, in control domains, the event-log windows.
    Reserved = 2,
}

/// One memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type.
    pub kind: MemoryType,
}

/// One module (the ramdisk) as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartModule<'a> {
    /// Guest-physical address of the module's bytes.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// The module's command line (written only if not empty).
    pub cmdline: &'a str,
}

/// What goes into a start-info page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInfoSpec<'a> {
    /// Guest-physical address the page is written to.
    pub page_gpa: u64,
    /// Kernel command line (written NUL-terminated; `cmdline_paddr` is 0 when it is empty).
    pub cmdline: &'a str,
    /// Modules (the ramdisk, if any).
    pub modules: &'a [StartModule<'a>],
    /// The memory map.
    pub memory_map: &'a [MemoryMapEntry],
    /// Guest-physical address of the ACPI RSDP (0: no ACPI tables).
    pub rsdp_paddr: u64,
}

/// Why a start-info page cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    /// the start info, module list, memory map and command lines do not fit in one page
    DoesNotFit,
    /// a command line contains a NUL byte
    NulInCommandLine,
    /// the start-info page address is not page aligned
    Misaligned,
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DoesNotFit => {
                "the start info, module list, memory map and command lines do not fit in one page"
            }
            Self::NulInCommandLine => "a command line contains a NUL byte",
            Self::Misaligned => "the start-info page address is not page aligned",
        })
    }
}

fn put_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Builds the page's bytes (only as long as needed: the rest of the page stays zero).
pub fn build(spec: &StartInfoSpec<'_>) -> Result<Vec<u8>, StartInfoError> {
    if !spec.page_gpa.is_multiple_of(START_INFO_PAGE_LEN as u64) {
        return Err(StartInfoError::Misaligned);
    }
    let strings = spec
        .modules
        .iter()
        .map(|m| m.cmdline)
        .chain(core::iter::once(spec.cmdline));
    let mut strings_len = 0usize;
    for string in strings {
        if string.as_bytes().contains(&0) {
            return Err(StartInfoError::NulInCommandLine);
        }
        if !string.is_empty() {
            strings_len = strings_len.saturating_add(string.len() + 1);
        }
    }
    let modlist_at = START_INFO_LEN;
    let memmap_at = modlist_at.saturating_add(spec.modules.len().saturating_mul(MODLIST_ENTRY_LEN));
    let strings_at =
        memmap_at.saturating_add(spec.memory_map.len().saturating_mul(MEMMAP_ENTRY_LEN));
    let total = strings_at.saturating_add(strings_len);
    if total > START_INFO_PAGE_LEN {
        return Err(StartInfoError::DoesNotFit);
    }
    let gpa = |offset: usize| spec.page_gpa + offset as u64;
    let mut out = alloc::vec![0u8; total];
    let mut next_string = strings_at;
    let mut write_string = |out: &mut [u8], text: &str| -> u64 {
        if text.is_empty() {
            return 0;
        }
        out[next_string..next_string + text.len()].copy_from_slice(text.as_bytes());
        let at = next_string;
        next_string += text.len() + 1;
        gpa(at)
    };
    for (index, module) in spec.modules.iter().enumerate() {
        let at = modlist_at + index * MODLIST_ENTRY_LEN;
        put_u64(&mut out, at, module.paddr);
        put_u64(&mut out, at + 8, module.size);
        let cmdline = write_string(&mut out, module.cmdline);
        put_u64(&mut out, at + 16, cmdline);
    }
    for (index, entry) in spec.memory_map.iter().enumerate() {
        let at = memmap_at + index * MEMMAP_ENTRY_LEN;
        put_u64(&mut out, at, entry.addr);
        put_u64(&mut out, at + 8, entry.size);
        put_u32(&mut out, at + 16, entry.kind as u32);
    }
    let cmdline = write_string(&mut out, spec.cmdline);
    put_u32(&mut out, 0, START_INFO_MAGIC);
    put_u32(&mut out, 4, START_INFO_VERSION);
    put_u32(&mut out, 8, 0);
    put_u32(&mut out, 12, spec.modules.len() as u32);
    put_u64(
        &mut out,
        16,
        if spec.modules.is_empty() {
            0
        } else {
            gpa(modlist_at)
        },
    );
    put_u64(&mut out, 24, cmdline);
    put_u64(&mut out, 32, spec.rsdp_paddr);
    put_u64(
        &mut out,
        40,
        if spec.memory_map.is_empty() {
            0
        } else {
            gpa(memmap_at)
        },
    );
    put_u32(&mut out, 48, spec.memory_map.len() as u32);
    Ok(out)
}
