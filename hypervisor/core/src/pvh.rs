//! The load plan of a PVH ELF image (domB's; the hypervisor loads no other image itself): the
//! 32-bit entry from the `XEN_ELFNOTE_PHYS32_ENTRY` note and the loadable segments, checked against
//! the image and the domain's memory. Parsing is the `elf` crate's; the image is hostile input
//! until this plan accepts it. Moved here from the hypervisor binary for host tests.

use elf::ElfBytes;
use elf::abi::{EM_386, EM_X86_64, PT_LOAD, PT_NOTE};
use elf::endian::LittleEndian;
use elf::note::Note;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH 32-bit entry point.
pub const PHYS32_ENTRY_NOTE: u64 = 18;
/// Most loadable segments accepted.
pub const MAX_SEGMENTS: usize = 16;

/// One segment to copy: `file_len` bytes from `offset` in the image to `gpa`; the rest of
/// `mem_len` stays zero (domain memory starts zeroed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Offset in the image.
    pub offset: u64,
    /// Guest-physical destination (`p_paddr`).
    pub gpa: u64,
    /// Bytes to copy.
    pub file_len: u64,
    /// Bytes the segment occupies in memory (the tail beyond `file_len` is zero).
    pub mem_len: u64,
}

/// The load plan of a PVH image.
#[derive(Debug, PartialEq, Eq)]
pub struct PvhImage {
    /// The 32-bit entry point.
    pub entry: u32,
    /// The loadable segments (non-empty ones), in program-header order.
    pub segments: heapless::Vec<Segment, MAX_SEGMENTS>,
}

/// Why an image was refused.
#[derive(Debug)]
pub enum PvhError {
    /// not a little-endian ELF the `elf` crate can parse
    NotElf(elf::ParseError),
    /// the ELF is not for x86 (EM_386 or EM_X86_64)
    NotX86 {
        /// The `e_machine` found.
        machine: u16,
    },
    /// the image has no program headers
    NoProgramHeaders,
    /// no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH image
    NoPvhEntryNote,
    /// the PVH entry note's value is not a 4- or 8-byte value below 4 GiB
    BadEntryNote,
    /// a segment's file range lies outside the image, or its file size exceeds its memory size
    SegmentOutsideImage {
        /// Program-header index.
        index: usize,
    },
    /// a segment's memory range lies outside the domain's RAM
    SegmentOutsideRam {
        /// Program-header index.
        index: usize,
        /// Its guest-physical address.
        gpa: u64,
        /// Its memory size.
        len: u64,
    },
    /// two segments overlap in memory (the later would silently overwrite the earlier)
    SegmentsOverlap {
        /// Program-header index of the earlier segment.
        first: usize,
        /// Program-header index of the later segment.
        second: usize,
    },
    /// the entry point is not inside a loaded segment
    EntryNotLoaded {
        /// The entry point.
        entry: u32,
    },
    /// more than MAX_SEGMENTS loadable segments
    TooManySegments,
}

fn entry_from_note(desc: &[u8]) -> Result<u32, PvhError> {
    match *desc {
        [a, b, c, d] => Ok(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u32::try_from(u64::from_le_bytes([a, b, c, d, e, f, g, h]))
            .map_err(|_| PvhError::BadEntryNote),
        _ => Err(PvhError::BadEntryNote),
    }
}

/// Plans loading `image` into guest-physical `[0, ram_limit)`.
pub fn plan(image: &[u8], ram_limit: u64) -> Result<PvhImage, PvhError> {
    let file = ElfBytes::<LittleEndian>::minimal_parse(image).map_err(PvhError::NotElf)?;
    if !matches!(file.ehdr.e_machine, EM_386 | EM_X86_64) {
        return Err(PvhError::NotX86 {
            machine: file.ehdr.e_machine,
        });
    }
    let headers = file.segments().ok_or(PvhError::NoProgramHeaders)?;
    let mut entry = None;
    let mut loads: heapless::Vec<(usize, Segment), MAX_SEGMENTS> = heapless::Vec::new();
    for (index, phdr) in headers.iter().enumerate() {
        match phdr.p_type {
            PT_NOTE => {
                for note in file
                    .segment_data_as_notes(&phdr)
                    .map_err(PvhError::NotElf)?
                {
                    if let Note::Unknown(any) = note
                        && any.n_type == PHYS32_ENTRY_NOTE
                        && any.name.strip_suffix(b"\0").unwrap_or(any.name) == b"Xen"
                    {
                        entry = Some(entry_from_note(any.desc)?);
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
                let (gpa, len) = (phdr.p_paddr, phdr.p_memsz);
                if gpa.checked_add(len).is_none_or(|end| end > ram_limit) {
                    return Err(PvhError::SegmentOutsideRam { index, gpa, len });
                }
                if let Some((first, _)) = loads
                    .iter()
                    .find(|(_, s)| gpa < s.gpa + s.mem_len && s.gpa < gpa + len)
                {
                    return Err(PvhError::SegmentsOverlap {
                        first: *first,
                        second: index,
                    });
                }
                let segment = Segment {
                    offset: phdr.p_offset,
                    gpa,
                    file_len: phdr.p_filesz,
                    mem_len: len,
                };
                loads
                    .push((index, segment))
                    .map_err(|_| PvhError::TooManySegments)?;
            }
            _ => {}
        }
    }
    let entry = entry.ok_or(PvhError::NoPvhEntryNote)?;
    if !loads
        .iter()
        .any(|(_, s)| (s.gpa..s.gpa + s.mem_len).contains(&u64::from(entry)))
    {
        return Err(PvhError::EntryNotLoaded { entry });
    }
    let mut segments = heapless::Vec::new();
    for (_, segment) in loads {
        // Same capacity as `loads`: cannot fail.
        let _ = segments.push(segment);
    }
    Ok(PvhImage { entry, segments })
}

impl core::fmt::Display for PvhError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotElf(e) => write!(f, "not a little-endian ELF: {e}"),
            Self::NotX86 { machine } => write!(f, "not an x86 ELF (e_machine {machine})"),
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
            Self::SegmentsOverlap { first, second } => {
                write!(f, "program headers {first} and {second} overlap in memory")
            }
            Self::EntryNotLoaded { entry } => write!(
                f,
                "the entry point {entry:#x} is not inside a loaded segment"
            ),
            Self::TooManySegments => write!(f, "more than {MAX_SEGMENTS} loadable segments"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// (p_type, offset, paddr, filesz, memsz)
    type Phdr = (u32, u64, u64, u64, u64);

    /// A minimal ELF64: header, program headers, then `payload` at offset 0x1000.
    fn elf(machine: u16, phdrs: &[Phdr], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&machine.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // e_entry: PVH uses the note
        out.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes());
        for half in [64u16, 56, phdrs.len() as u16, 64, 0, 0] {
            out.extend_from_slice(&half.to_le_bytes());
        }
        for &(p_type, offset, paddr, filesz, memsz) in phdrs {
            out.extend_from_slice(&p_type.to_le_bytes());
            out.extend_from_slice(&5u32.to_le_bytes());
            for value in [
                offset,
                paddr,
                paddr,
                filesz,
                memsz,
                if p_type == PT_NOTE { 4 } else { 0x1000 },
            ] {
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        out.resize(0x1000, 0);
        out.extend_from_slice(payload);
        out
    }

    fn note(desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for value in [4u32, desc.len() as u32, PHYS32_ENTRY_NOTE as u32] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(b"Xen\0");
        out.extend_from_slice(desc);
        out
    }

    fn image(desc: &[u8], loads: &[Phdr]) -> Vec<u8> {
        let n = note(desc);
        let mut phdrs = std::vec![(PT_NOTE, 0x1000, 0, n.len() as u64, n.len() as u64)];
        phdrs.extend_from_slice(loads);
        let mut payload = n;
        payload.resize(0x3000, 0xcc);
        elf(EM_X86_64, &phdrs, &payload)
    }

    const LOAD: u32 = PT_LOAD;

    /// `ParseError` has no `PartialEq`: compare the debug forms.
    fn refused(result: Result<PvhImage, PvhError>, expected: Result<PvhImage, PvhError>) {
        assert!(expected.is_err());
        assert_eq!(std::format!("{result:?}"), std::format!("{expected:?}"));
    }

    #[test]
    fn a_pvh_image_gives_its_entry_and_segments() {
        let img = image(
            &0x10_0040u32.to_le_bytes(),
            &[
                (LOAD, 0x1000, 0x10_0000, 0x800, 0x800),
                (LOAD, 0x2000, 0x20_0000, 0x100, 0x5000),
            ],
        );
        let planned = plan(&img, 0x40_0000).unwrap();
        assert_eq!(planned.entry, 0x10_0040);
        assert_eq!(
            &planned.segments[..],
            &[
                Segment {
                    offset: 0x1000,
                    gpa: 0x10_0000,
                    file_len: 0x800,
                    mem_len: 0x800
                },
                Segment {
                    offset: 0x2000,
                    gpa: 0x20_0000,
                    file_len: 0x100,
                    mem_len: 0x5000
                },
            ]
        );
        let img = image(
            &0x10_0040u64.to_le_bytes(),
            &[(LOAD, 0x1000, 0x10_0000, 0x800, 0x800)],
        );
        assert_eq!(
            plan(&img, 0x40_0000).unwrap().entry,
            0x10_0040,
            "8-byte note value"
        );
    }

    #[test]
    fn hostile_images_are_refused() {
        let seg = (LOAD, 0x1000, 0x10_0000, 0x800, 0x800);
        let entry = 0x10_0040u32.to_le_bytes();
        assert!(matches!(
            plan(b"MZ not an elf", 1 << 30),
            Err(PvhError::NotElf(_))
        ));
        refused(
            plan(&image(&[1, 2, 3], &[seg]), 1 << 30),
            Err(PvhError::BadEntryNote),
        );
        refused(
            plan(&image(&(1u64 << 32).to_le_bytes(), &[seg]), 1 << 30),
            Err(PvhError::BadEntryNote),
        );
        refused(
            plan(&image(&0x9000_0000u32.to_le_bytes(), &[seg]), 1 << 30),
            Err(PvhError::EntryNotLoaded { entry: 0x9000_0000 }),
        );
        refused(
            plan(&elf(EM_X86_64, &[seg], &[0; 0x3000]), 1 << 30),
            Err(PvhError::NoPvhEntryNote),
        );
        refused(
            plan(&elf(40, &[seg], &[0; 0x3000]), 1 << 30),
            Err(PvhError::NotX86 { machine: 40 }),
        );
        refused(
            plan(
                &image(&entry, &[(LOAD, 0x3800, 0x10_0000, 0x1000, 0x1000)]),
                1 << 30,
            ),
            Err(PvhError::SegmentOutsideImage { index: 1 }),
        );
        refused(
            plan(
                &image(&entry, &[(LOAD, u64::MAX, 0x10_0000, 2, 2)]),
                1 << 30,
            ),
            Err(PvhError::SegmentOutsideImage { index: 1 }),
        );
        refused(
            plan(
                &image(&entry, &[(LOAD, 0x1000, 0x10_0000, 0x900, 0x800)]),
                1 << 30,
            ),
            Err(PvhError::SegmentOutsideImage { index: 1 }),
        );
        refused(
            plan(&image(&entry, &[seg]), 0x10_0400),
            Err(PvhError::SegmentOutsideRam {
                index: 1,
                gpa: 0x10_0000,
                len: 0x800,
            }),
        );
        refused(
            plan(
                &image(&entry, &[(LOAD, 0x1000, u64::MAX - 1, 1, 4)]),
                u64::MAX,
            ),
            Err(PvhError::SegmentOutsideRam {
                index: 1,
                gpa: u64::MAX - 1,
                len: 4,
            }),
        );
        refused(
            plan(
                &image(&entry, &[seg, (LOAD, 0x1000, 0x10_07ff, 1, 1)]),
                1 << 30,
            ),
            Err(PvhError::SegmentsOverlap {
                first: 1,
                second: 2,
            }),
        );
        let many: Vec<Phdr> = (0..=MAX_SEGMENTS as u64)
            .map(|i| (LOAD, 0x1000, 0x10_0000 + i * 0x1000, 0x10, 0x10))
            .collect();
        refused(
            plan(&image(&entry, &many), 1 << 30),
            Err(PvhError::TooManySegments),
        );
    }

    #[test]
    fn truncated_images_never_panic() {
        let img = image(
            &0x10_0040u32.to_le_bytes(),
            &[(LOAD, 0x1000, 0x10_0000, 0x800, 0x800)],
        );
        for len in 0..img.len() {
            let _ = plan(&img[..len], 1 << 30);
        }
        let mut flipped = img.clone();
        for at in 0..0x1100 {
            flipped[at] ^= 0xff;
            let _ = plan(&flipped, 1 << 30);
            flipped[at] ^= 0xff;
        }
    }
}
