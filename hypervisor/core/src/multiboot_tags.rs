//! Content rules for the multiboot2 tags the pre-launch stage reads, checked before any of the
//! `multiboot2` crate's typed accessors is called.
//!
//! The crate (0.28) walks the tag list safely, but several of its typed accessors assert instead
//! of returning an error when a tag's content is malformed (a memory map with an unexpected entry
//! size, a fixed-size tag of another size, a module ending before it starts, ...). A boot loader
//! or firmware that hands over such a tag must get a refused boot naming the tag, never a panic
//! inside the hypervisor. The tag list itself is still walked by the crate (one parser of the
//! format); this module only judges each tag's type, size and payload as the crate yields them.
//! `tests/fuzz`'s `multiboot` target calls every accessor on whatever passes these rules.

use core::fmt;

/// Tag types (multiboot2 specification, section 3.6) whose content is checked here.
pub mod tag_type {
    pub const MODULE: u32 = 3;
    pub const BASIC_MEMORY_MAP: u32 = 6;
    pub const EFI32_SYSTEM_TABLE: u32 = 11;
    pub const EFI64_SYSTEM_TABLE: u32 = 12;
    pub const RSDP_V1: u32 = 14;
    pub const RSDP_V2: u32 = 15;
    pub const EFI_MEMORY_MAP: u32 = 17;
    pub const EFI_BOOT_SERVICES_NOT_EXITED: u32 = 18;
}

/// Size of one basic memory-map entry (base u64, length u64, type u32, reserved u32).
pub const MEMORY_MAP_ENTRY_SIZE: u32 = 24;
/// The smallest EFI memory descriptor (type, pad, physical start, virtual start, pages,
/// attributes); firmware may use larger ones, in multiples of 8.
pub const EFI_DESCRIPTOR_MIN_SIZE: u32 = 40;
/// The only EFI memory descriptor version the crate reads.
pub const EFI_DESCRIPTOR_VERSION: u32 = 1;
/// Tag header (type u32, size u32) plus the fixed part before a memory map's entries.
const MEMORY_MAP_FIXED: usize = 16;

/// A tag the pre-launch stage refuses to read, with the rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedTag {
    /// The tag's type.
    pub tag_type: u32,
    /// Its position in the tag list (0 = first tag after the fixed header).
    pub index: usize,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl fmt::Display for MalformedTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "multiboot2 tag {} (type {}) is malformed: {}",
            self.index, self.tag_type, self.rule
        )
    }
}

fn u32_at(payload: &[u8], at: usize) -> Option<u32> {
    let bytes = payload.get(at..at + 4)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn u64_at(payload: &[u8], at: usize) -> Option<u64> {
    let bytes = payload.get(at..at + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Some(u64::from_le_bytes(word))
}

/// Checks one tag: `size` is the tag's declared size (header included), `payload` the bytes
/// after its 8-byte header, as the crate yields them. Returns the broken rule.
pub fn check_tag(tag_type: u32, size: u32, payload: &[u8]) -> Result<(), &'static str> {
    let size = size as usize;
    match tag_type {
        tag_type::BASIC_MEMORY_MAP => {
            if size < MEMORY_MAP_FIXED || !size.is_multiple_of(8) {
                return Err("memory map tag size is not 16 plus whole entries");
            }
            if u32_at(payload, 0) != Some(MEMORY_MAP_ENTRY_SIZE) {
                return Err("memory map entry size is not 24");
            }
            let areas = size - MEMORY_MAP_FIXED;
            if !areas.is_multiple_of(MEMORY_MAP_ENTRY_SIZE as usize) {
                return Err("memory map areas are not whole entries");
            }
            for entry in 0..areas / MEMORY_MAP_ENTRY_SIZE as usize {
                let at = 8 + entry * MEMORY_MAP_ENTRY_SIZE as usize;
                let (Some(base), Some(length)) = (u64_at(payload, at), u64_at(payload, at + 8))
                else {
                    return Err("memory map area lies outside the tag");
                };
                if base.checked_add(length).is_none() {
                    return Err("memory map area ends past 2^64");
                }
            }
            Ok(())
        }
        tag_type::EFI_MEMORY_MAP => {
            if size < MEMORY_MAP_FIXED || !size.is_multiple_of(8) {
                return Err("EFI memory map tag size is not 16 plus whole descriptors");
            }
            let (Some(descriptor), Some(version)) = (u32_at(payload, 0), u32_at(payload, 4)) else {
                return Err("EFI memory map tag shorter than its fixed part");
            };
            if version != EFI_DESCRIPTOR_VERSION {
                return Err("EFI memory descriptor version is not 1");
            }
            if descriptor < EFI_DESCRIPTOR_MIN_SIZE || !descriptor.is_multiple_of(8) {
                return Err("EFI memory descriptor size is below 40 or not a multiple of 8");
            }
            if !(size - MEMORY_MAP_FIXED).is_multiple_of(descriptor as usize) {
                return Err("EFI memory map is not whole descriptors");
            }
            Ok(())
        }
        tag_type::MODULE => {
            let (Some(start), Some(end)) = (u32_at(payload, 0), u32_at(payload, 4)) else {
                return Err("module tag shorter than its start and end");
            };
            if size < 16 {
                return Err("module tag shorter than its start and end");
            }
            if end < start {
                return Err("module ends before it starts");
            }
            Ok(())
        }
        tag_type::EFI32_SYSTEM_TABLE
        | tag_type::EFI64_SYSTEM_TABLE
        | tag_type::RSDP_V1
        | tag_type::RSDP_V2
        | tag_type::EFI_BOOT_SERVICES_NOT_EXITED => {
            // Header plus the structure, padded to 8 as the specification aligns tags.
            let expected = match tag_type {
                tag_type::EFI_BOOT_SERVICES_NOT_EXITED => 8,
                tag_type::EFI32_SYSTEM_TABLE | tag_type::EFI64_SYSTEM_TABLE => 16,
                tag_type::RSDP_V1 => 32,
                _ => 48,
            };
            if size.div_ceil(8) * 8 != expected {
                return Err("fixed-size tag has another size");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks every tag, given as `(type, size, payload)` in list order; the first malformed one
/// is the error.
pub fn check_tags<'a>(
    tags: impl IntoIterator<Item = (u32, u32, &'a [u8])>,
) -> Result<(), MalformedTag> {
    for (index, (tag_type, size, payload)) in tags.into_iter().enumerate() {
        check_tag(tag_type, size, payload).map_err(|rule| MalformedTag {
            tag_type,
            index,
            rule,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn memory_map(entry_size: u32, areas: &[(u64, u64)]) -> (u32, Vec<u8>) {
        let mut payload = Vec::new();
        payload.extend_from_slice(&entry_size.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        for &(base, length) in areas {
            payload.extend_from_slice(&base.to_le_bytes());
            payload.extend_from_slice(&length.to_le_bytes());
            payload.extend_from_slice(&1u32.to_le_bytes());
            payload.extend_from_slice(&0u32.to_le_bytes());
        }
        ((payload.len() + 8) as u32, payload)
    }

    #[test]
    fn a_well_formed_memory_map_passes() {
        let (size, payload) = memory_map(24, &[(0, 0x9_f000), (0x10_0000, 0x1000_0000)]);
        assert_eq!(
            check_tag(tag_type::BASIC_MEMORY_MAP, size, &payload),
            Ok(())
        );
    }

    #[test]
    fn memory_map_with_another_entry_size_is_refused() {
        let (size, payload) = memory_map(20, &[]);
        assert_eq!(
            check_tag(tag_type::BASIC_MEMORY_MAP, size, &payload),
            Err("memory map entry size is not 24")
        );
    }

    #[test]
    fn memory_map_cut_inside_an_entry_is_refused() {
        let (size, payload) = memory_map(24, &[(0, 0x1000)]);
        assert_eq!(
            check_tag(
                tag_type::BASIC_MEMORY_MAP,
                size - 8,
                &payload[..payload.len() - 8]
            ),
            Err("memory map areas are not whole entries")
        );
        assert_eq!(
            check_tag(tag_type::BASIC_MEMORY_MAP, 12, &payload[..4]),
            Err("memory map tag size is not 16 plus whole entries")
        );
    }

    #[test]
    fn memory_area_ending_past_the_address_space_is_refused() {
        let (size, payload) = memory_map(24, &[(u64::MAX - 0xfff, 0x1000)]);
        assert_eq!(
            check_tag(tag_type::BASIC_MEMORY_MAP, size, &payload),
            Err("memory map area ends past 2^64")
        );
        let (size, payload) = memory_map(24, &[(u64::MAX - 0xfff, 0xfff)]);
        assert_eq!(
            check_tag(tag_type::BASIC_MEMORY_MAP, size, &payload),
            Ok(())
        );
    }

    fn efi_map(descriptor: u32, version: u32, descriptors: usize) -> (u32, Vec<u8>) {
        let mut payload = Vec::new();
        payload.extend_from_slice(&descriptor.to_le_bytes());
        payload.extend_from_slice(&version.to_le_bytes());
        payload.resize(8 + descriptors * descriptor as usize, 0);
        ((payload.len() + 8) as u32, payload)
    }

    #[test]
    fn efi_memory_map_rules() {
        let (size, payload) = efi_map(48, 1, 3);
        assert_eq!(check_tag(tag_type::EFI_MEMORY_MAP, size, &payload), Ok(()));
        let (size, payload) = efi_map(48, 2, 3);
        assert_eq!(
            check_tag(tag_type::EFI_MEMORY_MAP, size, &payload),
            Err("EFI memory descriptor version is not 1")
        );
        let (size, payload) = efi_map(32, 1, 3);
        assert_eq!(
            check_tag(tag_type::EFI_MEMORY_MAP, size, &payload),
            Err("EFI memory descriptor size is below 40 or not a multiple of 8")
        );
        let (size, payload) = efi_map(44, 1, 2);
        assert_eq!(
            check_tag(tag_type::EFI_MEMORY_MAP, size, &payload),
            Err("EFI memory descriptor size is below 40 or not a multiple of 8")
        );
        let (_, payload) = efi_map(48, 1, 3);
        assert_eq!(
            check_tag(tag_type::EFI_MEMORY_MAP, 8 + 8 + 48 * 2 + 40, &payload),
            Err("EFI memory map is not whole descriptors")
        );
    }

    fn module(start: u32, end: u32) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&start.to_le_bytes());
        payload.extend_from_slice(&end.to_le_bytes());
        payload.extend_from_slice(b"domb\0");
        payload
    }

    #[test]
    fn module_rules() {
        let payload = module(0x10_0000, 0x10_1000);
        assert_eq!(check_tag(tag_type::MODULE, 21, &payload), Ok(()));
        // An empty module is a module.
        let payload = module(0x10_0000, 0x10_0000);
        assert_eq!(check_tag(tag_type::MODULE, 21, &payload), Ok(()));
        let payload = module(0x10_1000, 0x10_0000);
        assert_eq!(
            check_tag(tag_type::MODULE, 21, &payload),
            Err("module ends before it starts")
        );
        assert_eq!(
            check_tag(tag_type::MODULE, 12, &payload[..4]),
            Err("module tag shorter than its start and end")
        );
    }

    #[test]
    fn fixed_size_tags_must_have_their_size() {
        for (typ, good) in [(11, 12), (12, 16), (14, 28), (15, 44), (18, 8)] {
            let payload = [0u8; 64];
            assert_eq!(
                check_tag(typ, good, &payload[..good as usize - 8]),
                Ok(()),
                "{typ}"
            );
            assert_eq!(
                check_tag(typ, good + 8, &payload[..good as usize]),
                Err("fixed-size tag has another size"),
                "{typ}"
            );
        }
    }

    #[test]
    fn the_first_malformed_tag_is_named_with_its_position() {
        let (size, map) = memory_map(24, &[(0, 0x1000)]);
        let bad = module(2, 1);
        let tags = [
            (1, 13, &b"hello"[..]),
            (tag_type::BASIC_MEMORY_MAP, size, &map[..]),
            (tag_type::MODULE, 21, &bad[..]),
        ];
        let error = check_tags(tags).unwrap_err();
        assert_eq!(error.index, 2);
        assert_eq!(error.tag_type, tag_type::MODULE);
        assert_eq!(
            std::format!("{error}"),
            "multiboot2 tag 2 (type 3) is malformed: module ends before it starts"
        );
    }
}
