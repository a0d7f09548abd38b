use super::fixtures::*;
use crate::elf_load::{ElfError, LoadSegment, plan_load};

const MEM: u64 = 16 << 20;

#[test]
fn plans_valid_pvh_image() {
    let image = ElfSpec::pvh(0x10_0000).build();
    let plan = plan_load(&image, MEM).unwrap();
    assert_eq!(plan.entry, 0x10_0000);
    let first_offset = 64 + 56 * 3 + 20;
    assert_eq!(
        plan.segments,
        vec![
            LoadSegment {
                file_offset: first_offset as u64,
                file_len: 0x1800,
                gpa: 0x10_0000,
                mem_len: 0x1800
            },
            LoadSegment {
                file_offset: first_offset as u64 + 0x1800,
                file_len: 0x100,
                gpa: 0x10_2000,
                mem_len: 0x3000
            },
        ]
    );
}

#[test]
fn accepts_eight_byte_entry_note() {
    let mut spec = ElfSpec::pvh(0);
    spec.entry_note = Some(0x10_0010u64.to_le_bytes().to_vec());
    assert_eq!(plan_load(&spec.build(), MEM).unwrap().entry, 0x10_0010);
}

fn refused(edit: impl FnOnce(&mut ElfSpec), expected: ElfError) {
    let mut spec = ElfSpec::pvh(0x10_0000);
    edit(&mut spec);
    assert_eq!(plan_load(&spec.build(), MEM), Err(expected));
}

#[test]
fn refuses_wrong_headers() {
    refused(|s| s.class = 1, ElfError::Malformed);
    refused(|s| s.data_encoding = 2, ElfError::NotLittleEndian);
    refused(|s| s.machine = 3, ElfError::NotX86_64);
    refused(|s| s.etype = 3, ElfError::NotExecutable);
    assert_eq!(plan_load(b"not an elf", MEM), Err(ElfError::Malformed));
    assert_eq!(plan_load(&[], MEM), Err(ElfError::Malformed));
}

#[test]
fn refuses_bad_segments() {
    refused(|s| s.loads.clear(), ElfError::NoLoadableSegment);
    refused(
        |s| s.loads[1].memsz = 0x10,
        ElfError::FileSizeAboveMemorySize,
    );
    refused(|s| s.loads[1].paddr = 0x10_1000, ElfError::SegmentsOverlap);
    refused(
        |s| s.loads[1].paddr = MEM - 0x1000,
        ElfError::SegmentOutsideMemory,
    );
    refused(
        |s| s.loads[1].paddr = u64::MAX - 0x10,
        ElfError::AddressOverflow,
    );
    refused(
        |s| {
            for i in 0..17 {
                s.loads.push(Load {
                    paddr: 0x20_0000 + i * 0x1000,
                    data: vec![],
                    memsz: 0x10,
                    flags: 4,
                });
            }
        },
        ElfError::TooManySegments,
    );
}

#[test]
fn refuses_segment_outside_file() {
    let mut image = ElfSpec::pvh(0x10_0000).build();
    // Second program header (the data segment): p_filesz at offset 64 + 56 + 32.
    let at = 64 + 56 + 32;
    image[at..at + 8].copy_from_slice(&0x10_0000u64.to_le_bytes());
    image[at + 8..at + 16].copy_from_slice(&0x10_0000u64.to_le_bytes());
    assert_eq!(plan_load(&image, MEM), Err(ElfError::SegmentOutsideFile));
}

#[test]
fn refuses_bad_entry_notes() {
    refused(|s| s.entry_note = None, ElfError::NoPvhEntryNote);
    refused(|s| s.note_name = b"Xem\0", ElfError::NoPvhEntryNote);
    refused(
        |s| s.entry_note = Some(vec![1, 2, 3]),
        ElfError::BadPvhEntryNote,
    );
    refused(
        |s| s.entry_note = Some((1u64 << 33).to_le_bytes().to_vec()),
        ElfError::BadPvhEntryNote,
    );
    // Entry inside the non-executable data segment.
    refused(
        |s| s.entry_note = Some(0x10_2000u32.to_le_bytes().to_vec()),
        ElfError::EntryOutsideImage,
    );
    refused(
        |s| s.entry_note = Some(0x50_0000u32.to_le_bytes().to_vec()),
        ElfError::EntryOutsideImage,
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn mutated_images_give_errors_not_panics(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut image = ElfSpec::pvh(0x10_0000).build();
            // Mutate mostly the headers, where the structure is.
            for (index, value) in flips {
                let i = index.index(64 + 56 * 3 + 20);
                image[i] = value;
            }
            if truncate {
                let len = cut.index(image.len());
                image.truncate(len);
            }
            if let Ok(plan) = plan_load(&image, MEM) {
                for segment in &plan.segments {
                    prop_assert!(segment.file_offset + segment.file_len <= image.len() as u64);
                    prop_assert!(segment.gpa + segment.mem_len <= MEM);
                }
            }
        }
    }
}
