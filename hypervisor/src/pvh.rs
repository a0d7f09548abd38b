//! Reading a PVH ELF image (domB's): the 32-bit entry from the `XEN_ELFNOTE_PHYS32_ENTRY` note
//! and the loadable segments, all checked against the image and the domain's memory. Parsing is
//! the `elf` crate's; the module bytes are hostile input.

use elf::ElfBytes;
use elf::abi::{PT_LOAD, PT_NOTE};
use elf::endian::LittleEndian;
use elf::note::Note;

/// `XEN_ELFNOTE_PHYS32_ENTRY`.
const PHYS32_ENTRY: u64 = 18;
/// Most loadable segments accepted.
pub const MAX_SEGMENTS: usize = 16;

/// One segment to copy: `file_len` bytes from `offset` in the image to `gpa`; the rest of
/// `mem_len` stays zero (domain memory starts zeroed).
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment {
    pub offset: u64,
    pub gpa: u64,
    pub file_len: u64,
    pub mem_len: u64,
}

/// The load plan of a PVH image.
#[derive(Debug)]
pub struct PvhImage {
    pub entry: u32,
    pub segments: heapless::Vec<Segment, MAX_SEGMENTS>,
}

/// Why an image was refused.
#[derive(Debug)]
pub enum PvhError {
    /// not a little-endian ELF64 the `elf` crate can parse
    NotElf(elf::ParseError),
    /// the image has no program headers
    NoProgramHeaders,
    /// no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH image
    NoPvhEntryNote,
    /// the PVH entry note's value is not 4 or 8 bytes
    BadEntryNote,
    /// a segment's file range lies outside the image
    SegmentOutsideImage { index: usize },
    /// a segment's memory range lies outside the domain's RAM
    SegmentOutsideRam { index: usize, gpa: u64, len: u64 },
    /// the entry point is not inside a loaded segment
    EntryNotLoaded { entry: u32 },
    /// more than MAX_SEGMENTS loadable segments
    TooManySegments,
}

/// Plans loading `image` into a domain with `ram_bytes` of RAM, avoiding `[reserved_gpa, ram)`.
pub fn plan(image: &[u8], ram_limit: u64) -> Result<PvhImage, PvhError> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(PvhError::NotElf)?;
    let segments = file.segments().ok_or(PvhError::NoProgramHeaders)?;
    let mut entry = None;
    let mut loads = heapless::Vec::new();
    for (index, phdr) in segments.iter().enumerate() {
        match phdr.p_type {
            PT_NOTE => {
                let notes = file
                    .segment_data_as_notes(&phdr)
                    .map_err(PvhError::NotElf)?;
                for note in notes {
                    if let Note::Unknown(any) = note
                        && any.n_type == PHYS32_ENTRY
                        && any.name.strip_suffix(b"\0").unwrap_or(any.name) == b"Xen"
                    {
                        entry = Some(match any.desc.len() {
                            4 => u32::from_le_bytes(
                                any.desc.try_into().map_err(|_| PvhError::BadEntryNote)?,
                            ),
                            8 => {
                                let value = u64::from_le_bytes(
                                    any.desc.try_into().map_err(|_| PvhError::BadEntryNote)?,
                                );
                                u32::try_from(value).map_err(|_| PvhError::BadEntryNote)?
                            }
                            _ => return Err(PvhError::BadEntryNote),
                        });
                    }
                }
            }
            PT_LOAD if phdr.p_memsz > 0 => {
                let file_end = phdr.p_offset.checked_add(phdr.p_filesz);
                if phdr.p_filesz > phdr.p_memsz
                    || file_end.is_none_or(|end| end > image.len() as u64)
                {
                    return Err(PvhError::SegmentOutsideImage { index });
                }
                let mem_end = phdr.p_paddr.checked_add(phdr.p_memsz);
                if mem_end.is_none_or(|end| end > ram_limit) {
                    return Err(PvhError::SegmentOutsideRam {
                        index,
                        gpa: phdr.p_paddr,
                        len: phdr.p_memsz,
                    });
                }
                loads
                    .push(Segment {
                        offset: phdr.p_offset,
                        gpa: phdr.p_paddr,
                        file_len: phdr.p_filesz,
                        mem_len: phdr.p_memsz,
                    })
                    .map_err(|_| PvhError::TooManySegments)?;
            }
            _ => {}
        }
    }
    let entry = entry.ok_or(PvhError::NoPvhEntryNote)?;
    if !loads
        .iter()
        .any(|s: &Segment| (s.gpa..s.gpa + s.mem_len).contains(&u64::from(entry)))
    {
        return Err(PvhError::EntryNotLoaded { entry });
    }
    Ok(PvhImage {
        entry,
        segments: loads,
    })
}

impl core::fmt::Display for PvhError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotElf(e) => write!(f, "not a little-endian ELF64: {e}"),
            Self::NoProgramHeaders => write!(f, "the image has no program headers"),
            Self::NoPvhEntryNote => write!(f, "no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH image"),
            Self::BadEntryNote => write!(f, "the PVH entry note's value is not a 32-bit address"),
            Self::SegmentOutsideImage { index } => {
                write!(f, "program header {index} points outside the image")
            }
            Self::SegmentOutsideRam { index, gpa, len } => {
                write!(
                    f,
                    "program header {index} ({len:#x} bytes at {gpa:#x}) lies outside the domain's usable RAM"
                )
            }
            Self::EntryNotLoaded { entry } => write!(
                f,
                "the entry point {entry:#x} is not inside a loaded segment"
            ),
            Self::TooManySegments => write!(f, "more than {MAX_SEGMENTS} loadable segments"),
        }
    }
}
