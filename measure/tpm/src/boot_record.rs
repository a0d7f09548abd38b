//! The boot record: a TPM NV index holding the boot-attempt counter, the configuration slot
//! being tried and the last known-good slot, **writable only at locality 2** (the hypervisor's;
//! no domain ever gets a locality above 0). One definition of the index (handle, attributes,
//! policy, size), the record's encoding, and the two transitions: counting a boot before domB
//! runs ([`count_boot`]) and recording a success ([`BootRecord::after_success`]).
//!
//! The transitions run over [`BootRecordStore`], implemented for [`Tpm`] (and by fakes in the
//! host tests), so every rule is host-tested; the swtpm tests check the real index.

use slipway_measure::events::{BootRecordStatus, BootStateRecord};

use crate::command::{CommandError, Tpm};
use crate::nv::{NvPublic, NvTemplate, locality_policy_digest};
use crate::transport::TpmTransport;

/// The index handle: in the owner's range of NV indexes (`0x0100_0000`-`0x013F_FFFF`, TCG
/// handle registry); the low bytes spell "SW".
pub const BOOT_RECORD_INDEX: u32 = 0x0100_5357;
/// `TPMA_LOCALITY` mask of the localities that may write: locality 2 only.
pub const BOOT_RECORD_WRITE_LOCALITIES: u8 = 1 << 2;
/// The size of the record in bytes.
pub const BOOT_RECORD_SIZE: usize = 16;
/// `TPMA_NV` attributes of the index: `POLICYWRITE` (writes need the locality policy) |
/// `AUTHREAD` (reads with the index's empty authValue: the record is no secret) | `NO_DA` (a
/// wrong read authorization does not count towards dictionary-attack lockout). Ordinary index
/// (`TPM_NT_ORDINARY`); no `OWNERWRITE`/`AUTHWRITE`/`PPWRITE`, so neither the owner nor the
/// platform nor anyone knowing the (empty) authValue can write it.
pub const BOOT_RECORD_ATTRIBUTES: u32 = 0x0000_0008 | 0x0004_0000 | 0x0200_0000;
/// The record's magic: "SWBR".
pub const RECORD_MAGIC: [u8; 4] = *b"SWBR";
/// The record's format version.
pub const RECORD_VERSION: u8 = 1;
/// The byte for "no known-good slot".
pub const NO_SLOT: u8 = slipway_measure::events::NO_SLOT;

/// The index's public area, as defined on first boot and checked on every boot.
pub fn template() -> NvTemplate {
    NvTemplate {
        index: BOOT_RECORD_INDEX,
        attributes: BOOT_RECORD_ATTRIBUTES,
        auth_policy: locality_policy_digest(BOOT_RECORD_WRITE_LOCALITIES),
        size: BOOT_RECORD_SIZE as u16,
    }
}

/// The record: `"SWBR", version 1, current slot, last known-good slot (0xFF none), 0, u32 LE
/// attempts, 4 zero bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootRecord {
    /// The slot whose boots are counted (the last requested slot).
    pub current_slot: u8,
    /// Boots of `current_slot` since it last reported success.
    pub attempts: u32,
    /// The slot of the last boot that reported success.
    pub last_known_good: Option<u8>,
}

/// Why a record does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// the record is not 16 bytes
    Length,
    /// the magic is not "SWBR"
    Magic,
    /// the format version is not 1
    Version,
    /// a slot is not below the number of slots
    Slot,
    /// a reserved byte is not zero
    Reserved,
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RecordError::Length => "the record is not 16 bytes",
            RecordError::Magic => "the magic is not \"SWBR\"",
            RecordError::Version => "the format version is not 1",
            RecordError::Slot => "a slot number is out of range",
            RecordError::Reserved => "a reserved byte is not zero",
        })
    }
}

impl BootRecord {
    /// A fresh record for `slot`: no boot counted, no known-good slot.
    pub const fn fresh(slot: u8) -> Self {
        BootRecord {
            current_slot: slot,
            attempts: 0,
            last_known_good: None,
        }
    }

    /// The encoded record.
    pub fn encode(&self) -> [u8; BOOT_RECORD_SIZE] {
        let mut out = [0u8; BOOT_RECORD_SIZE];
        out[..4].copy_from_slice(&RECORD_MAGIC);
        out[4] = RECORD_VERSION;
        out[5] = self.current_slot;
        out[6] = self.last_known_good.unwrap_or(NO_SLOT);
        out[8..12].copy_from_slice(&self.attempts.to_le_bytes());
        out
    }

    /// Decodes a record whose slots must be below `slots`.
    pub fn decode(bytes: &[u8], slots: u8) -> Result<Self, RecordError> {
        let bytes: &[u8; BOOT_RECORD_SIZE] = bytes.try_into().map_err(|_| RecordError::Length)?;
        if bytes[..4] != RECORD_MAGIC {
            return Err(RecordError::Magic);
        }
        if bytes[4] != RECORD_VERSION {
            return Err(RecordError::Version);
        }
        if bytes[7] != 0 || bytes[12..].iter().any(|&b| b != 0) {
            return Err(RecordError::Reserved);
        }
        let current_slot = bytes[5];
        let last_known_good = match bytes[6] {
            NO_SLOT => None,
            slot => Some(slot),
        };
        if current_slot >= slots || last_known_good.is_some_and(|s| s >= slots) {
            return Err(RecordError::Slot);
        }
        Ok(BootRecord {
            current_slot,
            attempts: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            last_known_good,
        })
    }

    /// The record after one more boot of `requested`: a slot other than the current one
    /// starts its own count (a new roll-out), the known-good slot is kept. Saturates.
    pub fn counted(&self, requested: u8) -> Self {
        let attempts = if requested == self.current_slot {
            self.attempts
        } else {
            0
        };
        BootRecord {
            current_slot: requested,
            attempts: attempts.saturating_add(1),
            last_known_good: self.last_known_good,
        }
    }

    /// The record after the boot that used `slot` reported success: `slot` is known good;
    /// the count restarts only if `slot` is the one being counted (a successful fallback boot
    /// leaves the failing slot's count, so the policy keeps falling back).
    pub fn after_success(&self, slot: u8) -> Self {
        BootRecord {
            current_slot: self.current_slot,
            attempts: if slot == self.current_slot {
                0
            } else {
                self.attempts
            },
            last_known_good: Some(slot),
        }
    }
}

/// Where the record lives: the TPM NV index, or a fake in tests.
pub trait BootRecordStore {
    /// A failure of the store.
    type Error: core::fmt::Display;
    /// The index's public area, `None` when it is not defined.
    fn read_public(&mut self) -> Result<Option<NvPublic>, Self::Error>;
    /// Defines the index from [`template`].
    fn define(&mut self) -> Result<(), Self::Error>;
    /// Reads the whole record.
    fn read(&mut self, out: &mut [u8; BOOT_RECORD_SIZE]) -> Result<(), Self::Error>;
    /// Writes the whole record (at locality 2, under the index's policy).
    fn write(&mut self, record: &[u8; BOOT_RECORD_SIZE]) -> Result<(), Self::Error>;
}

impl<T: TpmTransport> BootRecordStore for Tpm<T>
where
    T::Error: core::fmt::Display,
{
    type Error = CommandError<T::Error>;
    fn read_public(&mut self) -> Result<Option<NvPublic>, Self::Error> {
        self.nv_read_public(BOOT_RECORD_INDEX)
    }
    fn define(&mut self) -> Result<(), Self::Error> {
        self.nv_define_space(&template())
    }
    fn read(&mut self, out: &mut [u8; BOOT_RECORD_SIZE]) -> Result<(), Self::Error> {
        self.nv_read(BOOT_RECORD_INDEX, out)
    }
    fn write(&mut self, record: &[u8; BOOT_RECORD_SIZE]) -> Result<(), Self::Error> {
        self.nv_write_with_locality_policy(BOOT_RECORD_INDEX, BOOT_RECORD_WRITE_LOCALITIES, record)
    }
}

/// What one boot found and did, for the console: why a record was unavailable or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// Nothing to add.
    None,
    /// The record did not decode (the stated rule: replaced by a fresh one).
    Corrupt(RecordError),
    /// An index with other attributes, policy or size holds the handle: it is not Slipway's
    /// (or was redefined by someone with owner authorization), so it is neither trusted nor
    /// touched.
    ForeignIndex,
    /// A TPM command failed (which step).
    TpmFailed(&'static str),
}

/// The outcome of counting one boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountedBoot {
    /// What is measured and given to domB.
    pub state: BootStateRecord,
    /// The record now in the index (`None` when unavailable): what a success report updates.
    pub record: Option<BootRecord>,
    /// Detail for the console.
    pub note: Note,
}

impl CountedBoot {
    /// The outcome when no record can be used.
    pub const fn unavailable(requested: u8, note: Note) -> Self {
        CountedBoot {
            state: BootStateRecord {
                status: BootRecordStatus::Unavailable,
                requested_slot: requested,
                attempts: 0,
                last_known_good: None,
            },
            record: None,
            note,
        }
    }
}

/// Counts this boot of slot `requested` (below `slots`) in the record, creating the index on
/// first boot, before domB runs. Rules (`docs/measurement.md`, "Boot record"):
/// - no index: define it, start a fresh record (`Created`);
/// - an index at the handle whose public area is not exactly [`template`]'s: untrusted and
///   untouched (`Unavailable`, [`Note::ForeignIndex`]);
/// - defined but never written (a first boot that stopped between define and write): fresh
///   (`Created`);
/// - a record that does not decode: reported, replaced by a fresh one (`ReplacedCorrupt`);
/// - otherwise counted (`Counted`).
///
/// The counted record is written back before this returns; if that write fails nothing was
/// counted and the state is `Unavailable` (a boot state that is not stored is never reported).
pub fn count_boot<S: BootRecordStore>(
    store: &mut S,
    requested: u8,
    slots: u8,
) -> (CountedBoot, Option<S::Error>) {
    let unavailable = |note| CountedBoot::unavailable(requested, note);
    let public = match store.read_public() {
        Ok(public) => public,
        Err(error) => return (unavailable(Note::TpmFailed("NV_ReadPublic")), Some(error)),
    };
    let (status, previous, note) = match public {
        None => {
            if let Err(error) = store.define() {
                return (unavailable(Note::TpmFailed("NV_DefineSpace")), Some(error));
            }
            (
                BootRecordStatus::Created,
                BootRecord::fresh(requested),
                Note::None,
            )
        }
        Some(public) if !public.matches(&template()) => {
            return (unavailable(Note::ForeignIndex), None);
        }
        Some(public) if !public.written() => (
            BootRecordStatus::Created,
            BootRecord::fresh(requested),
            Note::None,
        ),
        Some(_) => {
            let mut bytes = [0u8; BOOT_RECORD_SIZE];
            if let Err(error) = store.read(&mut bytes) {
                return (unavailable(Note::TpmFailed("NV_Read")), Some(error));
            }
            match BootRecord::decode(&bytes, slots) {
                Ok(record) => (BootRecordStatus::Counted, record, Note::None),
                Err(why) => (
                    BootRecordStatus::ReplacedCorrupt,
                    BootRecord::fresh(requested),
                    Note::Corrupt(why),
                ),
            }
        }
    };
    let record = previous.counted(requested);
    if let Err(error) = store.write(&record.encode()) {
        return (unavailable(Note::TpmFailed("NV_Write")), Some(error));
    }
    let counted = CountedBoot {
        state: BootStateRecord {
            status,
            requested_slot: requested,
            attempts: record.attempts,
            last_known_good: record.last_known_good,
        },
        record: Some(record),
        note,
    };
    (counted, None)
}
