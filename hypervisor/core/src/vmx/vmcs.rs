//! A model of one VMCS: the value of every field the backend writes, validated by
//! [`super::entry_checks`] before it is written with VMWRITE and launched.

use super::fields::VmcsField;

/// Field values in memory, indexed by [`VmcsField::index`]. Fields never set read as 0 and are
/// not written to the hardware VMCS (which VMCLEAR left in its initial state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmcsState {
    values: [u64; VmcsField::COUNT],
    written: [bool; VmcsField::COUNT],
}

impl Default for VmcsState {
    fn default() -> Self {
        VmcsState::new()
    }
}

impl VmcsState {
    /// Nothing written.
    pub const fn new() -> VmcsState {
        VmcsState {
            values: [0; VmcsField::COUNT],
            written: [false; VmcsField::COUNT],
        }
    }

    /// Sets a field. The value is kept as given: a value wider than the field is reported by the
    /// entry checks rather than truncated silently.
    pub fn set(&mut self, field: VmcsField, value: u64) {
        let index = field.index();
        self.values[index] = value;
        self.written[index] = true;
    }

    /// The value of a field (0 if never set).
    pub fn get(&self, field: VmcsField) -> u64 {
        self.values[field.index()]
    }

    /// Whether the field was set.
    pub fn is_written(&self, field: VmcsField) -> bool {
        self.written[field.index()]
    }

    /// Every set field with its value, in encoding order: what the backend writes with VMWRITE.
    pub fn written(&self) -> impl Iterator<Item = (VmcsField, u64)> + '_ {
        VmcsField::ALL
            .iter()
            .enumerate()
            .filter(|(index, _)| self.written[*index])
            .map(|(index, field)| (*field, self.values[index]))
    }

    /// Sets the four fields of a guest segment register.
    pub fn set_guest_segment(&mut self, segment: Segment, state: SegmentState) {
        let fields = segment.fields();
        self.set(fields.selector, u64::from(state.selector));
        self.set(fields.base, state.base);
        self.set(fields.limit, u64::from(state.limit));
        self.set(fields.access_rights, u64::from(state.access_rights));
    }

    /// The four fields of a guest segment register.
    pub fn guest_segment(&self, segment: Segment) -> SegmentState {
        let fields = segment.fields();
        SegmentState {
            selector: self.get(fields.selector) as u16,
            base: self.get(fields.base),
            limit: self.get(fields.limit) as u32,
            access_rights: self.get(fields.access_rights) as u32,
        }
    }
}

/// A guest segment register (or LDTR / TR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// LDTR.
    Ldtr,
    /// TR.
    Tr,
}

/// The VMCS fields of one guest segment register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFields {
    /// Selector (16-bit).
    pub selector: VmcsField,
    /// Base (natural width).
    pub base: VmcsField,
    /// Limit (32-bit).
    pub limit: VmcsField,
    /// Access rights (32-bit, the descriptor's bits 47:40 and 55:52 plus "unusable" at bit 16).
    pub access_rights: VmcsField,
}

impl Segment {
    /// All eight, in the VMCS's order.
    pub const ALL: [Segment; 8] = [
        Segment::Es,
        Segment::Cs,
        Segment::Ss,
        Segment::Ds,
        Segment::Fs,
        Segment::Gs,
        Segment::Ldtr,
        Segment::Tr,
    ];

    /// Its fields.
    pub const fn fields(self) -> SegmentFields {
        use VmcsField::*;
        let (selector, base, limit, access_rights) = match self {
            Segment::Es => (
                GuestEsSelector,
                GuestEsBase,
                GuestEsLimit,
                GuestEsAccessRights,
            ),
            Segment::Cs => (
                GuestCsSelector,
                GuestCsBase,
                GuestCsLimit,
                GuestCsAccessRights,
            ),
            Segment::Ss => (
                GuestSsSelector,
                GuestSsBase,
                GuestSsLimit,
                GuestSsAccessRights,
            ),
            Segment::Ds => (
                GuestDsSelector,
                GuestDsBase,
                GuestDsLimit,
                GuestDsAccessRights,
            ),
            Segment::Fs => (
                GuestFsSelector,
                GuestFsBase,
                GuestFsLimit,
                GuestFsAccessRights,
            ),
            Segment::Gs => (
                GuestGsSelector,
                GuestGsBase,
                GuestGsLimit,
                GuestGsAccessRights,
            ),
            Segment::Ldtr => (
                GuestLdtrSelector,
                GuestLdtrBase,
                GuestLdtrLimit,
                GuestLdtrAccessRights,
            ),
            Segment::Tr => (
                GuestTrSelector,
                GuestTrBase,
                GuestTrLimit,
                GuestTrAccessRights,
            ),
        };
        SegmentFields {
            selector,
            base,
            limit,
            access_rights,
        }
    }
}

/// One segment register's VMCS state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SegmentState {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by G).
    pub limit: u32,
    /// Access rights ([`access_rights`] bits).
    pub access_rights: u32,
}

/// Bits of the VMCS access-rights format (SDM table "Format of Access Rights").
pub mod access_rights {
    /// Segment type (bits 3:0).
    pub const TYPE_MASK: u32 = 0xf;
    /// Accessed (type bit 0).
    pub const TYPE_ACCESSED: u32 = 1 << 0;
    /// Readable code / writable data (type bit 1).
    pub const TYPE_READ_WRITE: u32 = 1 << 1;
    /// Code segment (type bit 3).
    pub const TYPE_CODE: u32 = 1 << 3;
    /// Descriptor type: 1 code or data, 0 system (bit 4).
    pub const S: u32 = 1 << 4;
    /// Descriptor privilege level shift (bits 6:5).
    pub const DPL_SHIFT: u32 = 5;
    /// Present (bit 7).
    pub const P: u32 = 1 << 7;
    /// Reserved bits 11:8.
    pub const RESERVED_11_8: u32 = 0xf << 8;
    /// Available for software (bit 12).
    pub const AVL: u32 = 1 << 12;
    /// 64-bit code segment (bit 13).
    pub const L: u32 = 1 << 13;
    /// Default operation size (bit 14).
    pub const DB: u32 = 1 << 14;
    /// Granularity (bit 15).
    pub const G: u32 = 1 << 15;
    /// Segment unusable (bit 16).
    pub const UNUSABLE: u32 = 1 << 16;
    /// Reserved bits 31:17.
    pub const RESERVED_31_17: u32 = 0xfffe_0000;
    /// Flat 64-bit code: execute/read accessed, S, P, L, G (0xa09b).
    pub const CODE64: u32 = 0xb | S | P | L | G;
    /// Flat read/write accessed data: S, P, D/B, G (0xc093).
    pub const DATA: u32 = 0x3 | S | P | DB | G;
    /// 64-bit busy TSS: type 11, P.
    pub const TSS64_BUSY: u32 = 0xb | P;
    /// An unusable segment.
    pub const UNUSABLE_SEGMENT: u32 = UNUSABLE;
}
