//! The Intel TXT structures, one definition each, byte layouts pinned to Intel's *Measured
//! Launched Environment Developer's Guide* (the MLE guide).
//!
//! Every structure is a `#[repr(C, packed)]` struct whose field offsets are written next to the
//! fields and checked at compile time against `offset_of!` (and the total against `size_of`), so a
//! layout cannot drift from the guide without the build failing. Bytes are read and written
//! field by field, little-endian, through [`Le`] (no `unsafe`, no transmutes). `FIELDS` lists
//! every field as `(name, offset, size)`; `cargo xtask txt-layout` prints them all
//! ([`ALL_LAYOUTS`]) for review against the guide.

/// One field of a TXT structure: name, byte offset, size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// A structure's name, total size (before any variable part) and fields.
#[derive(Clone, Copy, Debug)]
pub struct StructLayout {
    pub name: &'static str,
    pub size: usize,
    pub fields: &'static [FieldLayout],
}

/// A structure was read from fewer bytes than it occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortBuffer {
    pub structure: &'static str,
    pub need: usize,
    pub got: usize,
}

impl core::fmt::Display for ShortBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} needs {} bytes, only {} available",
            self.structure, self.need, self.got
        )
    }
}

/// A little-endian field type.
pub trait Le: Copy {
    const SIZE: usize;
    const ZERO: Self;
    /// Reads from exactly `SIZE` bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// Writes exactly `SIZE` bytes.
    fn write_le(self, out: &mut [u8]);
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            const ZERO: Self = 0;
            fn read_le(bytes: &[u8]) -> Self {
                let mut b = [0u8; core::mem::size_of::<$t>()];
                b.copy_from_slice(&bytes[..Self::SIZE]);
                <$t>::from_le_bytes(b)
            }
            fn write_le(self, out: &mut [u8]) {
                out[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_int!(u8, u16, u32, u64);

impl<const N: usize> Le for [u8; N] {
    const SIZE: usize = N;
    const ZERO: Self = [0; N];
    fn read_le(bytes: &[u8]) -> Self {
        let mut b = [0u8; N];
        b.copy_from_slice(&bytes[..N]);
        b
    }
    fn write_le(self, out: &mut [u8]) {
        out[..N].copy_from_slice(&self);
    }
}

impl<const N: usize> Le for [u64; N] {
    const SIZE: usize = 8 * N;
    const ZERO: Self = [0; N];
    fn read_le(bytes: &[u8]) -> Self {
        let mut v = [0u64; N];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = u64::read_le(&bytes[8 * i..]);
        }
        v
    }
    fn write_le(self, out: &mut [u8]) {
        for (i, value) in self.iter().enumerate() {
            value.write_le(&mut out[8 * i..]);
        }
    }
}

macro_rules! txt_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident = $label:literal, $size:literal bytes {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $off:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(C, packed)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        // The guide's offsets, checked against the compiler's layout.
        const _: () = {
            assert!(core::mem::size_of::<$name>() == $size);
            $( assert!(core::mem::offset_of!($name, $field) == $off); )*
        };

        impl $name {
            /// Size in bytes (the fixed part, before any variable-length data).
            pub const SIZE: usize = $size;
            /// Every field: name, offset, size.
            pub const FIELDS: &'static [FieldLayout] = &[
                $( FieldLayout { name: stringify!($field), offset: $off, size: <$ty as Le>::SIZE }, )*
            ];
            /// The layout for `cargo xtask txt-layout`.
            pub const LAYOUT: StructLayout =
                StructLayout { name: $label, size: $size, fields: Self::FIELDS };
            /// Every field zero.
            pub const ZERO: Self = Self { $( $field: <$ty as Le>::ZERO, )* };

            /// Reads the structure from the start of `bytes`.
            pub fn read(bytes: &[u8]) -> Result<Self, ShortBuffer> {
                if bytes.len() < $size {
                    return Err(ShortBuffer { structure: $label, need: $size, got: bytes.len() });
                }
                Ok(Self { $( $field: <$ty as Le>::read_le(&bytes[$off..$off + <$ty as Le>::SIZE]), )* })
            }

            /// Writes the structure to the start of `out`.
            pub fn write(&self, out: &mut [u8]) -> Result<(), ShortBuffer> {
                if out.len() < $size {
                    return Err(ShortBuffer { structure: $label, need: $size, got: out.len() });
                }
                $( { let value = self.$field; value.write_le(&mut out[$off..$off + <$ty as Le>::SIZE]); } )*
                Ok(())
            }

            /// The structure's bytes.
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut out = [0u8; $size];
                // The buffer has exactly SIZE bytes.
                let _ = self.write(&mut out);
                out
            }
        }
    };
}

/// The MLE header's UUID (MLE guide, table "MLE Header structure").
pub const MLE_HEADER_UUID: [u8; 16] = [
    0x5a, 0xac, 0x82, 0x90, 0x6f, 0x47, 0xa7, 0x74, 0x0f, 0x5c, 0x55, 0xa2, 0xcb, 0x51, 0xb6, 0x42,
];
/// MLE header version 2.1 (the first with the command-line fields).
pub const MLE_HEADER_VERSION: u32 = 0x0002_0001;

txt_struct! {
    /// The MLE header: found by SINIT through `OsSinitData.mle_hdr_base` (a linear address in the
    /// MLE page tables). Entry point, first valid page, MLE start/end and the command line are
    /// offsets in the MLE's linear space (linear 0 = the MLE's first byte).
    pub struct MleHeader = "MleHeader", 52 bytes {
        pub uuid: [u8; 16] = 0,
        pub length: u32 = 16,
        pub version: u32 = 20,
        pub entry_point: u32 = 24,
        pub first_valid_page: u32 = 28,
        pub mle_start: u32 = 32,
        pub mle_end: u32 = 36,
        pub capabilities: u32 = 40,
        pub cmdline_start: u32 = 44,
        pub cmdline_end: u32 = 48,
    }
}

txt_struct! {
    /// BiosData, the first heap table (written by the BIOS, read by the MLE), version 5 and later.
    /// Extended data elements follow.
    pub struct BiosData = "BiosData", 36 bytes {
        pub version: u32 = 0,
        pub bios_sinit_size: u32 = 4,
        pub lcp_pd_base: u64 = 8,
        pub lcp_pd_size: u64 = 16,
        pub num_logical_procs: u32 = 24,
        pub sinit_flags: u32 = 28,
        pub mle_flags: u32 = 32,
    }
}

txt_struct! {
    /// OsSinitData version 7 (TPM 2.0), the third heap table, written by the MLE for SINIT.
    /// Extended data elements (the event-log pointer, then END) follow.
    pub struct OsSinitData = "OsSinitData", 92 bytes {
        pub version: u32 = 0,
        /// Bit 0: the TPM 2.0 PCR-extend policy ([`OS_SINIT_FLAG_MAX_PERFORMANCE`]).
        pub flags: u32 = 4,
        /// Physical address of the MLE page tables (the PAE page-directory-pointer table).
        pub mle_ptab: u64 = 8,
        /// Size of the MLE in bytes (what SINIT hashes, from the first valid page).
        pub mle_size: u64 = 16,
        /// Linear address of the MLE header in the MLE page tables.
        pub mle_hdr_base: u64 = 24,
        pub vtd_pmr_lo_base: u64 = 32,
        pub vtd_pmr_lo_size: u64 = 40,
        pub vtd_pmr_hi_base: u64 = 48,
        pub vtd_pmr_hi_size: u64 = 56,
        pub lcp_po_base: u64 = 64,
        pub lcp_po_size: u64 = 72,
        /// The capabilities the MLE selected (a subset of SINIT's and the MLE header's).
        pub capabilities: u32 = 80,
        /// Version 5: the EFI RSDT pointer; version 6 and later: the ACPI RSDP's physical address.
        pub rsdp_ptr: u64 = 84,
    }
}

txt_struct! {
    /// SinitMleData version 9, the fourth heap table, written by SINIT for the MLE (never
    /// trusted: re-read and validated post-launch). Offsets of MDRs and the DMAR copy are from
    /// the start of this table's size field (the guide's convention).
    pub struct SinitMleData = "SinitMleData", 148 bytes {
        pub version: u32 = 0,
        pub bios_acm_id: [u8; 20] = 4,
        pub edx_senter_flags: u32 = 24,
        pub mseg_valid: u64 = 28,
        pub sinit_hash: [u8; 20] = 36,
        pub mle_hash: [u8; 20] = 56,
        pub stm_hash: [u8; 20] = 76,
        pub lcp_policy_hash: [u8; 20] = 96,
        pub lcp_policy_control: u32 = 116,
        pub rlp_wakeup_addr: u32 = 120,
        pub reserved: u32 = 124,
        pub num_mdrs: u32 = 128,
        pub mdrs_off: u32 = 132,
        pub dmar_size: u32 = 136,
        pub dmar_off: u32 = 140,
        pub processor_scrtm_status: u32 = 144,
    }
}

txt_struct! {
    /// One SINIT memory descriptor record.
    pub struct SinitMdr = "SinitMdr", 24 bytes {
        pub base: u64 = 0,
        pub length: u64 = 8,
        pub mem_type: u8 = 16,
        pub reserved: [u8; 7] = 17,
    }
}

txt_struct! {
    /// The header of an extended data element; `size` counts the header.
    pub struct ExtDataElementHeader = "ExtDataElement", 8 bytes {
        pub element_type: u32 = 0,
        pub size: u32 = 4,
    }
}

txt_struct! {
    /// HEAP_EVENT_LOG_POINTER_ELEMENT2_1 payload (type [`EXT_TYPE_EVENT_LOG_POINTER2_1`]): where
    /// SINIT writes its TPM 2.0 events in the TCG crypto-agile format. The guide's element is 28
    /// bytes with its header (some implementations write 32, with 4 bytes of padding).
    pub struct EventLogPointer2_1 = "EventLogPointer2_1", 20 bytes {
        pub phys_addr: u64 = 0,
        pub allocated_size: u32 = 8,
        pub first_record_offset: u32 = 12,
        pub next_record_offset: u32 = 16,
    }
}

txt_struct! {
    /// Slipway's OsMleData (the second heap table; its content is the MLE's own): what the
    /// post-launch stage needs from the pre-launch stage, in memory SINIT protects.
    pub struct OsMleData = "OsMleData", 240 bytes {
        pub magic: [u8; 8] = 0,
        pub version: u32 = 8,
        /// [`LAUNCH_HARDWARE`] or [`LAUNCH_SIMULATED`].
        pub launch: u32 = 12,
        pub saved_mtrr_def_type: u64 = 16,
        pub saved_misc_enable: u64 = 24,
        pub saved_var_mtrr_count: u32 = 32,
        pub reserved0: u32 = 36,
        /// Base/mask pairs of the first [`MAX_SAVED_VAR_MTRRS`] variable MTRRs.
        pub saved_var_mtrrs: [u64; 16] = 40,
        pub mle_base: u64 = 168,
        pub mle_size: u64 = 176,
        pub mle_ptab: u64 = 184,
        pub event_log_base: u64 = 192,
        pub event_log_size: u32 = 200,
        pub reserved1: u32 = 204,
        /// The pre-launch stage's hand-off record (validated post-launch as before).
        pub handoff: u64 = 208,
        pub sinit_base: u64 = 216,
        pub sinit_size: u64 = 224,
        pub reserved2: u64 = 232,
    }
}

txt_struct! {
    /// The authenticated code module header (chipset ACM), header versions 0.0 and 3.0; the
    /// public key, exponent (version 0) and signature follow, then the scratch area.
    /// `header_len`, `size` and `scratch_size` count 4-byte units.
    pub struct AcmHeader = "AcmHeader", 128 bytes {
        pub module_type: u16 = 0,
        pub module_sub_type: u16 = 2,
        pub header_len: u32 = 4,
        pub header_version: u32 = 8,
        pub chipset_id: u16 = 12,
        pub flags: u16 = 14,
        pub module_vendor: u32 = 16,
        pub date: u32 = 20,
        pub size: u32 = 24,
        pub txt_svn: u16 = 28,
        pub se_svn: u16 = 30,
        pub code_control: u32 = 32,
        pub error_entry_point: u32 = 36,
        pub gdt_limit: u32 = 40,
        pub gdt_base: u32 = 44,
        pub seg_sel: u32 = 48,
        pub entry_point: u32 = 52,
        pub reserved: [u8; 64] = 56,
        pub key_size: u32 = 120,
        pub scratch_size: u32 = 124,
    }
}

txt_struct! {
    /// The ACM information table (after header and scratch area). List fields are offsets from
    /// the ACM's first byte.
    pub struct AcmInfoTable = "AcmInfoTable", 48 bytes {
        pub uuid: [u8; 16] = 0,
        pub chipset_acm_type: u8 = 16,
        pub version: u8 = 17,
        pub length: u16 = 18,
        pub chipset_id_list: u32 = 20,
        pub os_sinit_data_ver: u32 = 24,
        pub min_mle_header_ver: u32 = 28,
        pub capabilities: u32 = 32,
        pub acm_version_revision: [u8; 4] = 36,
        pub processor_id_list: u32 = 40,
        pub tpm_info_list: u32 = 44,
    }
}

txt_struct! {
    /// One entry of the ACM's chipset ID list (after a u32 count).
    pub struct AcmChipsetId = "AcmChipsetId", 16 bytes {
        /// Bit 0: `revision_id` is a mask, not a value.
        pub flags: u32 = 0,
        pub vendor_id: u16 = 4,
        pub device_id: u16 = 6,
        pub revision_id: u16 = 8,
        pub reserved: u16 = 10,
        pub extended_id: u32 = 12,
    }
}

txt_struct! {
    /// One entry of the ACM's processor ID list (after a u32 count).
    pub struct AcmProcessorId = "AcmProcessorId", 24 bytes {
        pub fms: u32 = 0,
        pub fms_mask: u32 = 4,
        pub platform_id: u64 = 8,
        pub platform_mask: u64 = 16,
    }
}

/// Heap table versions Slipway writes and accepts.
/// TXT event types SINIT writes into the log (the 0x400 block of the TCG registry).
pub const EVTYPE_HASH_START: u32 = 0x402;
pub const EVTYPE_MLE_HASH: u32 = 0x404;
pub const EVTYPE_BIOSAC_REG_DATA: u32 = 0x40a;
pub const EVTYPE_CPU_SCRTM_STAT: u32 = 0x40b;
pub const EVTYPE_LCP_CONTROL_HASH: u32 = 0x40c;
pub const EVTYPE_STM_HASH: u32 = 0x40e;
pub const EVTYPE_OSSINITDATA_CAP_HASH: u32 = 0x40f;
pub const EVTYPE_SINIT_PUBKEY_HASH: u32 = 0x410;
pub const EVTYPE_LCP_DETAILS_HASH: u32 = 0x412;
pub const EVTYPE_LCP_AUTHORITIES_HASH: u32 = 0x413;
pub const EVTYPE_NV_INFO_HASH: u32 = 0x414;

pub const OS_SINIT_DATA_VERSION: u32 = 7;
pub const OS_MLE_DATA_VERSION: u32 = 1;
pub const OS_MLE_DATA_MAGIC: [u8; 8] = *b"SLWYOSML";
/// Oldest BiosData Slipway reads (version 5: sinit_flags and mle_flags present).
pub const MIN_BIOS_DATA_VERSION: u32 = 5;
/// SinitMleData version with every field above (processor S-CRTM status and elements).
pub const SINIT_MLE_DATA_VERSION: u32 = 9;
/// OsSinitData flags bit 0: 0 = maximum agility (every bank extended with its own algorithm's
/// digest), 1 = maximum performance. Slipway asks for maximum agility.
pub const OS_SINIT_FLAG_MAX_PERFORMANCE: u32 = 1 << 0;
/// `OsMleData.launch` values.
pub const LAUNCH_HARDWARE: u32 = 1;
pub const LAUNCH_SIMULATED: u32 = 2;
/// Variable MTRRs OsMleData can save.
pub const MAX_SAVED_VAR_MTRRS: usize = 8;

/// Extended data element types (MLE guide, appendix "TXT Heap Memory").
pub const EXT_TYPE_END: u32 = 0;
pub const EXT_TYPE_BIOS_SPEC_VER: u32 = 1;
pub const EXT_TYPE_ACM: u32 = 2;
pub const EXT_TYPE_CUSTOM: u32 = 4;
pub const EXT_TYPE_EVENT_LOG_POINTER: u32 = 5;
pub const EXT_TYPE_EVENT_LOG_POINTER2: u32 = 7;
pub const EXT_TYPE_EVENT_LOG_POINTER2_1: u32 = 8;
/// The event-log pointer 2.1 element as the guide defines it (header + 20-byte payload).
pub const EVENT_LOG_POINTER2_1_ELEMENT_SIZE: usize =
    ExtDataElementHeader::SIZE + EventLogPointer2_1::SIZE;
/// The size some implementations write for the same element (an unpacked C struct).
pub const EVENT_LOG_POINTER2_1_ELEMENT_SIZE_PADDED: usize = 32;

/// MLE/SINIT capability bits (MLE header, ACM info table, OsSinitData).
pub const CAP_RLP_WAKE_GETSEC: u32 = 1 << 0;
pub const CAP_RLP_WAKE_MONITOR: u32 = 1 << 1;
pub const CAP_ECX_PGTBL: u32 = 1 << 2;
pub const CAP_STM: u32 = 1 << 3;
pub const CAP_PCR_MAP_NO_LEGACY: u32 = 1 << 4;
pub const CAP_PCR_MAP_DA: u32 = 1 << 5;
pub const CAP_PLATFORM_TYPE_MASK: u32 = 3 << 6;
pub const CAP_MAXPHYADDR: u32 = 1 << 8;
pub const CAP_TCG2_EVENT_LOG: u32 = 1 << 9;
/// The capabilities Slipway's MLE header offers: GETSEC[WAKEUP] for the APs, ECX holding the
/// MLE page tables at entry, the TCG 2.0 crypto-agile event log.
pub const SLIPWAY_MLE_CAPABILITIES: u32 = CAP_RLP_WAKE_GETSEC | CAP_ECX_PGTBL | CAP_TCG2_EVENT_LOG;
/// The capabilities Slipway selects in OsSinitData (SINIT measures them: event 0x40f).
pub const SLIPWAY_OS_SINIT_CAPABILITIES: u32 = CAP_RLP_WAKE_GETSEC | CAP_TCG2_EVENT_LOG;

/// Every structure, for `cargo xtask txt-layout`.
pub const ALL_LAYOUTS: &[StructLayout] = &[
    MleHeader::LAYOUT,
    BiosData::LAYOUT,
    OsMleData::LAYOUT,
    OsSinitData::LAYOUT,
    SinitMleData::LAYOUT,
    SinitMdr::LAYOUT,
    ExtDataElementHeader::LAYOUT,
    EventLogPointer2_1::LAYOUT,
    AcmHeader::LAYOUT,
    AcmInfoTable::LAYOUT,
    AcmChipsetId::LAYOUT,
    AcmProcessorId::LAYOUT,
    MleJoin::LAYOUT,
];

txt_struct! {
    /// The MLE join structure (TXT.MLE.JOIN points to it): how GETSEC[WAKEUP] starts the
    /// responding logical processors: a GDT, a code selector and a 32-bit entry point.
    pub struct MleJoin = "MleJoin", 16 bytes {
        pub gdt_limit: u32 = 0,
        pub gdt_base: u32 = 4,
        pub seg_sel: u32 = 8,
        pub entry_point: u32 = 12,
    }
}
