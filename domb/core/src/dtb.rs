//! Structural validation of a flattened device tree before the `fdt` crate sees it.
//!
//! Why not trust `fdt` alone: fdt 0.1.5 reads well-formed blobs fine, but it `unwrap`s and `assert`s
//! on malformed structure blocks (bad tokens, unterminated names, string offsets outside the strings
//! block, nesting deeper than 64). The launch configuration is untrusted input, so this module walks
//! the whole structure block once with checked arithmetic and accepts only the canonical form that
//! `dtc` writes (no `FDT_NOP` tokens, one root node, `FDT_END` last). A blob that passes cannot
//! reach any of those panics.

use core::fmt;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const HEADER_LEN: usize = 40;

/// Deepest node nesting accepted (the launch configuration needs 4 levels).
pub const MAX_DEPTH: usize = 16;

/// Why a blob is not an acceptable flattened device tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtbError {
    /// the blob is shorter than the 40-byte FDT header
    TooShortForHeader,
    /// the header magic is not 0xd00dfeed
    BadMagic,
    /// the header's totalsize is larger than the blob
    TotalSizeBeyondBlob,
    /// the FDT version is not compatible with version 17
    UnsupportedVersion,
    /// the structure block lies outside the blob
    StructBlockOutOfBounds,
    /// the strings block lies outside the blob
    StringsBlockOutOfBounds,
    /// the memory reservation block lies outside the blob or is not terminated
    ReservationBlockOutOfBounds,
    /// the structure block ends in the middle of a token
    TruncatedStructBlock,
    /// a node name is not NUL-terminated UTF-8
    BadNodeName,
    /// a property value runs past the end of the structure block
    PropertyOutOfBounds,
    /// a property name offset does not point at a NUL-terminated UTF-8 string in the strings block
    BadPropertyName,
    /// a property appears after a child node
    PropertyAfterChild,
    /// an unexpected token appears in the structure block (NOP tokens are not accepted either)
    UnexpectedToken,
    /// nodes are nested deeper than the supported limit
    TooDeep,
    /// the root node is missing, has a name, or has a sibling
    BadRoot,
    /// the structure block does not end with FDT_END after the root node
    MissingEnd,
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::TooShortForHeader => "the blob is shorter than the 40-byte FDT header",
            Self::BadMagic => "the header magic is not 0xd00dfeed",
            Self::TotalSizeBeyondBlob => "the header's totalsize is larger than the blob",
            Self::UnsupportedVersion => "the FDT version is not compatible with version 17",
            Self::StructBlockOutOfBounds => "the structure block lies outside the blob",
            Self::StringsBlockOutOfBounds => "the strings block lies outside the blob",
            Self::ReservationBlockOutOfBounds => {
                "the memory reservation block lies outside the blob or is not terminated"
            }
            Self::TruncatedStructBlock => "the structure block ends in the middle of a token",
            Self::BadNodeName => "a node name is not NUL-terminated UTF-8",
            Self::PropertyOutOfBounds => {
                "a property value runs past the end of the structure block"
            }
            Self::BadPropertyName => {
                "a property name offset does not point at a NUL-terminated UTF-8 string"
            }
            Self::PropertyAfterChild => "a property appears after a child node",
            Self::UnexpectedToken => "an unexpected token appears in the structure block",
            Self::TooDeep => "nodes are nested deeper than the supported limit",
            Self::BadRoot => "the root node is missing, has a name, or has a sibling",
            Self::MissingEnd => "the structure block does not end with FDT_END",
        };
        f.write_str(text)
    }
}

fn be32(blob: &[u8], at: usize) -> Option<u32> {
    let bytes = blob.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn block(blob: &[u8], offset: u32, size: u32) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    blob.get(start..end)
}

fn align4(value: usize) -> Option<usize> {
    value.checked_add(3).map(|v| v & !3)
}

/// A NUL-terminated UTF-8 string at the start of `bytes`; returns its length without the NUL.
fn c_string(bytes: &[u8]) -> Option<usize> {
    let end = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(&bytes[..end]).ok()?;
    Some(end)
}

/// Checks that `blob` is a well-formed flattened device tree in the form `dtc` produces.
pub fn validate(blob: &[u8]) -> Result<(), DtbError> {
    if blob.len() < HEADER_LEN {
        return Err(DtbError::TooShortForHeader);
    }
    let field = |index: usize| be32(blob, index * 4).ok_or(DtbError::TooShortForHeader);
    if field(0)? != FDT_MAGIC {
        return Err(DtbError::BadMagic);
    }
    let total_size = field(1)?;
    let blob = usize::try_from(total_size)
        .ok()
        .and_then(|total| blob.get(..total))
        .ok_or(DtbError::TotalSizeBeyondBlob)?;
    let (off_struct, off_strings, off_rsvmap) = (field(2)?, field(3)?, field(4)?);
    let (version, last_compatible) = (field(5)?, field(6)?);
    if version < 16 || last_compatible > 17 {
        return Err(DtbError::UnsupportedVersion);
    }
    let (size_strings, size_struct) = (field(8)?, field(9)?);
    let structure = block(blob, off_struct, size_struct).ok_or(DtbError::StructBlockOutOfBounds)?;
    let strings =
        block(blob, off_strings, size_strings).ok_or(DtbError::StringsBlockOutOfBounds)?;
    validate_reservations(blob, off_rsvmap)?;
    validate_structure(structure, strings)
}

fn validate_reservations(blob: &[u8], offset: u32) -> Result<(), DtbError> {
    let mut at = usize::try_from(offset).map_err(|_| DtbError::ReservationBlockOutOfBounds)?;
    loop {
        let entry = at
            .checked_add(16)
            .and_then(|end| blob.get(at..end))
            .ok_or(DtbError::ReservationBlockOutOfBounds)?;
        if entry.iter().all(|&b| b == 0) {
            return Ok(());
        }
        at += 16;
    }
}

fn validate_structure(structure: &[u8], strings: &[u8]) -> Result<(), DtbError> {
    let token = |at: usize| be32(structure, at).ok_or(DtbError::TruncatedStructBlock);
    let mut at = 0usize;
    let mut depth = 0usize;
    // Whether the current node has had a child yet (properties must come first).
    let mut seen_child = [false; MAX_DEPTH + 1];
    let mut root_done = false;
    loop {
        match token(at)? {
            FDT_BEGIN_NODE => {
                if root_done {
                    return Err(DtbError::BadRoot);
                }
                let name_start = at + 4;
                let name_len = structure
                    .get(name_start..)
                    .and_then(c_string)
                    .ok_or(DtbError::BadNodeName)?;
                if depth == 0 && name_len != 0 {
                    return Err(DtbError::BadRoot);
                }
                if depth > 0 {
                    seen_child[depth] = true;
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DtbError::TooDeep);
                }
                seen_child[depth] = false;
                at = align4(name_start + name_len + 1).ok_or(DtbError::TruncatedStructBlock)?;
            }
            FDT_PROP => {
                if depth == 0 {
                    return Err(DtbError::UnexpectedToken);
                }
                if seen_child[depth] {
                    return Err(DtbError::PropertyAfterChild);
                }
                let len =
                    usize::try_from(token(at + 4)?).map_err(|_| DtbError::PropertyOutOfBounds)?;
                let name_offset =
                    usize::try_from(token(at + 8)?).map_err(|_| DtbError::BadPropertyName)?;
                strings
                    .get(name_offset..)
                    .and_then(c_string)
                    .ok_or(DtbError::BadPropertyName)?;
                let value_start = at + 12;
                let value_end = value_start
                    .checked_add(len)
                    .ok_or(DtbError::PropertyOutOfBounds)?;
                if value_end > structure.len() {
                    return Err(DtbError::PropertyOutOfBounds);
                }
                at = align4(value_end).ok_or(DtbError::PropertyOutOfBounds)?;
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(DtbError::UnexpectedToken);
                }
                depth -= 1;
                if depth == 0 {
                    root_done = true;
                }
                at += 4;
            }
            FDT_END => {
                return if root_done && depth == 0 {
                    Ok(())
                } else {
                    Err(DtbError::MissingEnd)
                };
            }
            FDT_NOP => return Err(DtbError::UnexpectedToken),
            _ => return Err(DtbError::UnexpectedToken),
        }
        if at > structure.len() {
            return Err(DtbError::TruncatedStructBlock);
        }
    }
}
