//! Guest page walks: guest-linear to guest-physical through the guest's own page tables, and
//! the instruction fetch built on them.
//!
//! Modes: paging off, 32-bit paging (4 MiB pages with CR4.PSE, PSE-36 high bits), PAE paging
//! (2 MiB pages), 4-level and 5-level (CR4.LA57) long-mode paging (2 MiB and 1 GiB pages).
//! Every entry is read through [`GuestPhysRead`], so a table outside the domain's RAM is an
//! error, never a host access. What is checked is what decides the translation: presence, the
//! PS bit where it is reserved (PML4/PML5 entries), the U/S bit for a fetch at CPL 3, canonical
//! addresses. Other reserved bits and NX are not checked: the processor fetched this very
//! instruction a moment ago through the same tables, so a walk that differs can only come from
//! the guest changing its tables in between, and the result then only decides which bytes of
//! the guest's own memory are decoded. PAE's PDPTEs are read from memory, not from the
//! processor's PDPTE registers loaded at the last CR3 write (the same caveat).

use crate::guest_memory::{GuestMemoryError, GuestPhysRead};
use core::fmt;

/// The longest x86 instruction, in bytes.
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// CR0.PG: paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: PAE paging (64-bit entries).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging in long mode.
pub const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

const PAGE_SIZE: u64 = 4096;
/// Physical address bits 51:12 of a 64-bit entry.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1 << 0;
const USER: u64 = 1 << 2;
const PAGE_SIZE_BIT: u64 = 1 << 7;

/// The control state a page walk depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingState {
    /// CR0 (PG).
    pub cr0: u64,
    /// CR3 (the table root).
    pub cr3: u64,
    /// CR4 (PSE, PAE, LA57).
    pub cr4: u64,
    /// EFER (LMA).
    pub efer: u64,
}

/// The paging mode a [`PagingState`] selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: linear = physical (32 bits).
    Off,
    /// 32-bit paging (two levels of 4-byte entries).
    Bits32,
    /// PAE paging (PDPT, PD, PT of 8-byte entries).
    Pae,
    /// 4-level long-mode paging.
    Level4,
    /// 5-level long-mode paging (CR4.LA57).
    Level5,
}

impl PagingState {
    /// The mode the processor walks in.
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 {
            PagingMode::Off
        } else if self.efer & EFER_LMA != 0 {
            if self.cr4 & CR4_LA57 != 0 {
                PagingMode::Level5
            } else {
                PagingMode::Level4
            }
        } else if self.cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }
}

/// Why a guest-linear address could not be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// the linear address is not canonical
    NonCanonical {
        /// The linear address.
        linear: u64,
    },
    /// the guest's page tables do not map the linear address (an entry is not present)
    NotPresent {
        /// The linear address.
        linear: u64,
        /// The level of the entry that is not present (1 = page table, 2 = page directory...).
        level: u8,
    },
    /// a guest page-table entry sets the page-size bit at a level where it is reserved
    ReservedPageSize {
        /// The linear address.
        linear: u64,
        /// The level of the entry.
        level: u8,
    },
    /// the linear address maps a supervisor page, but the vCPU fetches at CPL 3
    SupervisorPage {
        /// The linear address.
        linear: u64,
    },
    /// a guest page table or the instruction lies outside the domain's RAM
    Memory {
        /// The guest-physical address read.
        gpa: u64,
        /// What the guest-memory layer said.
        error: GuestMemoryError,
    },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalkError::NonCanonical { linear } => {
                write!(f, "the linear address {linear:#x} is not canonical")
            }
            WalkError::NotPresent { linear, level } => write!(
                f,
                "the guest's page tables do not map {linear:#x} (level-{level} entry not present)"
            ),
            WalkError::ReservedPageSize { linear, level } => write!(
                f,
                "the guest's level-{level} entry for {linear:#x} sets the reserved page-size bit"
            ),
            WalkError::SupervisorPage { linear } => write!(
                f,
                "{linear:#x} maps a supervisor page, but the vCPU runs at CPL 3"
            ),
            WalkError::Memory { gpa, error } => write!(
                f,
                "guest-physical {gpa:#x} lies outside the domain's RAM ({error:?})"
            ),
        }
    }
}

fn read_u32<G: GuestPhysRead + ?Sized>(mem: &G, gpa: u64) -> Result<u64, WalkError> {
    let mut bytes = [0u8; 4];
    mem.read_guest(gpa, &mut bytes)
        .map_err(|error| WalkError::Memory { gpa, error })?;
    Ok(u64::from(u32::from_le_bytes(bytes)))
}

fn read_u64<G: GuestPhysRead + ?Sized>(mem: &G, gpa: u64) -> Result<u64, WalkError> {
    let mut bytes = [0u8; 8];
    mem.read_guest(gpa, &mut bytes)
        .map_err(|error| WalkError::Memory { gpa, error })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Translates `linear` for an access at CPL 3 (`user`) or below. Outside long mode only the
/// low 32 bits of `linear` count.
pub fn translate<G: GuestPhysRead + ?Sized>(
    mem: &G,
    state: &PagingState,
    linear: u64,
    user: bool,
) -> Result<u64, WalkError> {
    match state.mode() {
        PagingMode::Off => Ok(linear & 0xffff_ffff),
        PagingMode::Bits32 => walk_32bit(mem, state, linear & 0xffff_ffff, user),
        PagingMode::Pae => walk_pae(mem, state, linear & 0xffff_ffff, user),
        PagingMode::Level4 => walk_long(mem, state, linear, 4, user),
        PagingMode::Level5 => walk_long(mem, state, linear, 5, user),
    }
}

fn walk_32bit<G: GuestPhysRead + ?Sized>(
    mem: &G,
    state: &PagingState,
    linear: u64,
    user: bool,
) -> Result<u64, WalkError> {
    let pde_gpa = (state.cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4;
    let pde = read_u32(mem, pde_gpa)?;
    if pde & PRESENT == 0 {
        return Err(WalkError::NotPresent { linear, level: 2 });
    }
    if pde & PAGE_SIZE_BIT != 0 && state.cr4 & CR4_PSE != 0 {
        check_user(pde, linear, user)?;
        // 4 MiB page: bits 31:22 from PDE 31:22, bits 39:32 from PDE 20:13 (PSE-36).
        let base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
        return Ok(base | (linear & 0x3f_ffff));
    }
    let pte_gpa = (pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4;
    let pte = read_u32(mem, pte_gpa)?;
    if pte & PRESENT == 0 {
        return Err(WalkError::NotPresent { linear, level: 1 });
    }
    check_user(pde & pte, linear, user)?;
    Ok((pte & 0xffff_f000) | (linear & 0xfff))
}

fn walk_pae<G: GuestPhysRead + ?Sized>(
    mem: &G,
    state: &PagingState,
    linear: u64,
    user: bool,
) -> Result<u64, WalkError> {
    let pdpte = read_u64(mem, (state.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8)?;
    if pdpte & PRESENT == 0 {
        return Err(WalkError::NotPresent { linear, level: 3 });
    }
    // PDPTEs have no U/S bit: only the lower levels decide user access.
    let mut table = pdpte & ADDRESS_MASK;
    let mut rights = USER;
    for level in [2u8, 1] {
        let shift = 12 + 9 * (u32::from(level) - 1);
        let entry = read_u64(mem, table + ((linear >> shift) & 0x1ff) * 8)?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent { linear, level });
        }
        rights &= entry;
        if level == 2 && entry & PAGE_SIZE_BIT != 0 {
            check_user(rights, linear, user)?;
            return Ok((entry & ADDRESS_MASK & !0x1f_ffff) | (linear & 0x1f_ffff));
        }
        table = entry & ADDRESS_MASK;
    }
    check_user(rights, linear, user)?;
    Ok(table | (linear & 0xfff))
}

fn walk_long<G: GuestPhysRead + ?Sized>(
    mem: &G,
    state: &PagingState,
    linear: u64,
    levels: u8,
    user: bool,
) -> Result<u64, WalkError> {
    // Canonical: bits 63 down to the top translated bit are all equal.
    let top = 12 + 9 * u32::from(levels) - 1;
    let upper = (linear as i64) >> top;
    if upper != 0 && upper != -1 {
        return Err(WalkError::NonCanonical { linear });
    }
    let mut table = state.cr3 & ADDRESS_MASK;
    let mut rights = USER;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (u32::from(level) - 1);
        let entry = read_u64(mem, table + ((linear >> shift) & 0x1ff) * 8)?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent { linear, level });
        }
        rights &= entry;
        if level > 1 && entry & PAGE_SIZE_BIT != 0 {
            if level > 3 {
                return Err(WalkError::ReservedPageSize { linear, level });
            }
            check_user(rights, linear, user)?;
            let offset_mask = (1u64 << shift) - 1;
            return Ok((entry & ADDRESS_MASK & !offset_mask) | (linear & offset_mask));
        }
        table = entry & ADDRESS_MASK;
    }
    check_user(rights, linear, user)?;
    Ok(table | (linear & 0xfff))
}

fn check_user(rights: u64, linear: u64, user: bool) -> Result<(), WalkError> {
    if user && rights & USER == 0 {
        return Err(WalkError::SupervisorPage { linear });
    }
    Ok(())
}

/// The bytes fetched at an instruction pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes; only the first `len` are valid.
    pub bytes: [u8; MAX_INSTRUCTION_LEN],
    /// How many bytes could be fetched (15 unless a page on the way failed).
    pub len: usize,
    /// Why the fetch stopped short of 15 bytes, if it did: an instruction that fits into the
    /// bytes before it decodes anyway (the next page need not be mapped).
    pub stopped: Option<WalkError>,
}

/// Fetches up to 15 bytes at `linear`, translating each page on the way (an instruction may
/// cross a page boundary). `wrap_mask` is `u64::MAX` in 64-bit code, `0xffff_ffff` outside
/// (linear addresses wrap at 4 GiB there).
pub fn fetch<G: GuestPhysRead + ?Sized>(
    mem: &G,
    state: &PagingState,
    linear: u64,
    wrap_mask: u64,
    user: bool,
) -> Fetched {
    let mut fetched = Fetched {
        bytes: [0; MAX_INSTRUCTION_LEN],
        len: 0,
        stopped: None,
    };
    while fetched.len < MAX_INSTRUCTION_LEN {
        let at = linear.wrapping_add(fetched.len as u64) & wrap_mask;
        let in_page = (PAGE_SIZE - (at & (PAGE_SIZE - 1))) as usize;
        let n = in_page.min(MAX_INSTRUCTION_LEN - fetched.len);
        let chunk = &mut fetched.bytes[fetched.len..fetched.len + n];
        let read = translate(mem, state, at, user).and_then(|gpa| {
            mem.read_guest(gpa, chunk)
                .map_err(|error| WalkError::Memory { gpa, error })
        });
        if let Err(error) = read {
            fetched.stopped = Some(error);
            break;
        }
        fetched.len += n;
    }
    fetched
}
