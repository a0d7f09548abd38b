//! Loading plan for a PVH kernel: an x86-64 ELF executable with a `XEN_ELFNOTE_PHYS32_ENTRY` note.
//!
//! Parsed with the `elf` crate (no_std, no alloc); every field is then checked here with checked
//! arithmetic, because the module is untrusted input.

use alloc::vec::Vec;
use core::fmt;

use elf::ElfBytes;
use elf::abi::{EM_X86_64, ET_EXEC, PF_X, PT_LOAD, PT_NOTE};
use elf::endian::LittleEndian;
use elf::file::Class;

/// Note type of the 32-bit PVH entry point (Xen's `XEN_ELFNOTE_PHYS32_ENTRY`).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u64 = 18;
/// Note owner name of Xen notes.
pub const XEN_NOTE_NAME: &str = "Xen";
/// Most loadable segments accepted.
pub const MAX_SEGMENTS: usize = 16;

/// One piece of the image to copy: `file_len` bytes of the module at `file_offset` go to `gpa`;
/// the rest up to `mem_len` stays zero (domain memory starts zeroed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// Offset in the module.
    pub file_offset: u64,
    /// Bytes to copy from the module.
    pub file_len: u64,
    /// Guest-physical destination.
    pub gpa: u64,
    /// Bytes the segment occupies in memory (at least `file_len`).
    pub mem_len: u64,
}

/// How to load a PVH kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Loadable segments in file order.
    pub segments: Vec<LoadSegment>,
    /// The 32-bit PVH entry point (guest-physical).
    pub entry: u32,
}

impl LoadPlan {
    /// Guest-physical ranges `[start, end)` the image occupies.
    pub fn occupied(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.segments.iter().map(|s| (s.gpa, s.gpa + s.mem_len))
    }
}

/// Why a kernel image cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// the image is not a parsable ELF file
    Malformed,
    /// the image is not a 64-bit ELF file
    Not64Bit,
    /// the image is not little-endian
    NotLittleEndian,
    /// the image is not for x86-64
    NotX86_64,
    /// the image is not an executable (ET_EXEC)
    NotExecutable,
    /// the image has no program headers
    NoProgramHeaders,
    /// the image has no loadable segment
    NoLoadableSegment,
    /// the image has more than 16 loadable segments
    TooManySegments,
    /// a segment's file range lies outside the image
    SegmentOutsideFile,
    /// a segment's file size is larger than its memory size
    FileSizeAboveMemorySize,
    /// a segment's addresses overflow
    AddressOverflow,
    /// a segment does not fit in the domain's memory
    SegmentOutsideMemory,
    /// two segments overlap in memory
    SegmentsOverlap,
    /// the image has no XEN_ELFNOTE_PHYS32_ENTRY note (not a PVH kernel)
    NoPvhEntryNote,
    /// the PVH entry note is not 4 or 8 bytes, or its value is above 4 GiB
    BadPvhEntryNote,
    /// the PVH entry point is not inside an executable segment
    EntryOutsideImage,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the image is not a parsable ELF file",
            Self::Not64Bit => "the image is not a 64-bit ELF file",
            Self::NotLittleEndian => "the image is not little-endian",
            Self::NotX86_64 => "the image is not for x86-64",
            Self::NotExecutable => "the image is not an executable (ET_EXEC)",
            Self::NoProgramHeaders => "the image has no program headers",
            Self::NoLoadableSegment => "the image has no loadable segment",
            Self::TooManySegments => "the image has more than 16 loadable segments",
            Self::SegmentOutsideFile => "a segment's file range lies outside the image",
            Self::FileSizeAboveMemorySize => "a segment's file size is larger than its memory size",
            Self::AddressOverflow => "a segment's addresses overflow",
            Self::SegmentOutsideMemory => "a segment does not fit in the domain's memory",
            Self::SegmentsOverlap => "two segments overlap in memory",
            Self::NoPvhEntryNote => {
                "the image has no XEN_ELFNOTE_PHYS32_ENTRY note (not a PVH kernel)"
            }
            Self::BadPvhEntryNote => "the PVH entry note is not 4 or 8 bytes, or is above 4 GiB",
            Self::EntryOutsideImage => "the PVH entry point is not inside an executable segment",
        })
    }
}

/// Plans the loading of `image` into a domain with `memory_bytes` of memory (laid out as
/// `platform::DomainRam` says: a segment in the hole below 4 GiB is outside). Segments are placed
/// at their physical addresses (`p_paddr`), as the PVH boot protocol does.
pub fn plan_load(image: &[u8], memory_bytes: u64) -> Result<LoadPlan, ElfError> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|error| match error {
        elf::ParseError::UnsupportedElfEndianness(_) => ElfError::NotLittleEndian,
        _ => ElfError::Malformed,
    })?;
    let header = &file.ehdr;
    if header.class != Class::ELF64 {
        return Err(ElfError::Not64Bit);
    }
    if header.e_machine != EM_X86_64 {
        return Err(ElfError::NotX86_64);
    }
    if header.e_type != ET_EXEC {
        return Err(ElfError::NotExecutable);
    }
    let program_headers = file.segments().ok_or(ElfError::NoProgramHeaders)?;
    let file_len = image.len() as u64;
    let mut segments = Vec::new();
    let mut executable: Vec<(u64, u64)> = Vec::new();
    let mut entry = None;
    for header in program_headers.iter() {
        match header.p_type {
            PT_LOAD => {
                if header.p_memsz == 0 {
                    continue;
                }
                if segments.len() == MAX_SEGMENTS {
                    return Err(ElfError::TooManySegments);
                }
                let file_end = header
                    .p_offset
                    .checked_add(header.p_filesz)
                    .ok_or(ElfError::SegmentOutsideFile)?;
                if file_end > file_len {
                    return Err(ElfError::SegmentOutsideFile);
                }
                if header.p_filesz > header.p_memsz {
                    return Err(ElfError::FileSizeAboveMemorySize);
                }
                let end = header
                    .p_paddr
                    .checked_add(header.p_memsz)
                    .ok_or(ElfError::AddressOverflow)?;
                // Inside one RAM range of the domain's layout: never in the hole below 4 GiB.
                let inside = slipway_protocol::platform::DomainRam::new(memory_bytes)
                    .is_some_and(|ram| ram.contains(header.p_paddr, header.p_memsz));
                if !inside {
                    return Err(ElfError::SegmentOutsideMemory);
                }
                let segment = LoadSegment {
                    file_offset: header.p_offset,
                    file_len: header.p_filesz,
                    gpa: header.p_paddr,
                    mem_len: header.p_memsz,
                };
                if segments.iter().any(|other: &LoadSegment| {
                    segment.gpa < other.gpa + other.mem_len && other.gpa < end
                }) {
                    return Err(ElfError::SegmentsOverlap);
                }
                if header.p_flags & PF_X != 0 {
                    executable.push((segment.gpa, end));
                }
                segments.push(segment);
            }
            PT_NOTE if entry.is_none() => {
                entry = find_pvh_entry(&file, &header)?;
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegment);
    }
    let entry = entry.ok_or(ElfError::NoPvhEntryNote)?;
    if !executable
        .iter()
        .any(|&(start, end)| (start..end).contains(&u64::from(entry)))
    {
        return Err(ElfError::EntryOutsideImage);
    }
    Ok(LoadPlan { segments, entry })
}

fn find_pvh_entry(
    file: &ElfBytes<'_, LittleEndian>,
    header: &elf::segment::ProgramHeader,
) -> Result<Option<u32>, ElfError> {
    let notes = file
        .segment_data_as_notes(header)
        .map_err(|_| ElfError::Malformed)?;
    for note in notes {
        let elf::note::Note::Unknown(note) = note else {
            continue;
        };
        if note.n_type != XEN_ELFNOTE_PHYS32_ENTRY
            || note.name.strip_suffix(&[0]).unwrap_or(note.name) != XEN_NOTE_NAME.as_bytes()
        {
            continue;
        }
        let value = match note.desc.len() {
            4 => u64::from(u32::from_le_bytes(
                note.desc
                    .try_into()
                    .map_err(|_| ElfError::BadPvhEntryNote)?,
            )),
            8 => u64::from_le_bytes(
                note.desc
                    .try_into()
                    .map_err(|_| ElfError::BadPvhEntryNote)?,
            ),
            _ => return Err(ElfError::BadPvhEntryNote),
        };
        return u32::try_from(value)
            .map(Some)
            .map_err(|_| ElfError::BadPvhEntryNote);
    }
    Ok(None)
}
