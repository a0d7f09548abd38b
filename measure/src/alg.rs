//! TPM algorithm identifiers, the hash algorithms Slipway computes, and bank sets.

use crate::{Error, Result};
use core::fmt;
use slipway_protocol::v1::TpmAlgId;

/// A TPM algorithm identifier (`TPM_ALG_ID`, TPM 2.0 Part 2, table 9), as found in PCR banks,
/// `TPML_DIGEST_VALUES` and event log headers. Any value is representable: logs and TPMs may
/// name algorithms Slipway does not know.
///
/// The ids and digest sizes are defined once, by the wire type [`TpmAlgId`] of
/// `slipway-protocol`, and this type converts to and from it losslessly (`From` both ways)
/// because re-exporting that type would move measurement's names, `Display` and log-facing
/// `Debug` into the ABI crate, and the ABI crate must not depend on the hashing crates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlgId(pub u16);

impl AlgId {
    /// `TPM_ALG_SHA1`.
    pub const SHA1: AlgId = AlgId(TpmAlgId::SHA1.0);
    /// `TPM_ALG_SHA256`.
    pub const SHA256: AlgId = AlgId(TpmAlgId::SHA256.0);
    /// `TPM_ALG_SHA384`.
    pub const SHA384: AlgId = AlgId(TpmAlgId::SHA384.0);
    /// `TPM_ALG_SHA512`.
    pub const SHA512: AlgId = AlgId(TpmAlgId::SHA512.0);
    /// `TPM_ALG_SM3_256` (Chinese national hash; a PCR bank on some TPMs; Slipway cannot hash it).
    pub const SM3_256: AlgId = AlgId(TpmAlgId::SM3_256.0);
    /// `TPM_ALG_SHA3_256` (Slipway cannot hash it).
    pub const SHA3_256: AlgId = AlgId(TpmAlgId::SHA3_256.0);
    /// `TPM_ALG_SHA3_384` (Slipway cannot hash it).
    pub const SHA3_384: AlgId = AlgId(TpmAlgId::SHA3_384.0);
    /// `TPM_ALG_SHA3_512` (Slipway cannot hash it).
    pub const SHA3_512: AlgId = AlgId(TpmAlgId::SHA3_512.0);

    /// The digest size of a TPM hash algorithm that may back a PCR bank, if known (the one
    /// table is [`TpmAlgId::digest_len`]).
    pub const fn digest_size(self) -> Option<usize> {
        TpmAlgId(self.0).digest_len()
    }

    /// The hash algorithm Slipway computes for this id, or `None` if Slipway cannot hash it.
    pub const fn hash_alg(self) -> Option<HashAlg> {
        match self {
            AlgId::SHA1 => Some(HashAlg::Sha1),
            AlgId::SHA256 => Some(HashAlg::Sha256),
            AlgId::SHA384 => Some(HashAlg::Sha384),
            AlgId::SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The name tpm2-tools uses (`sha256`, `sm3_256`, ...), or `None` for an unknown id.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            AlgId::SHA1 => Some("sha1"),
            AlgId::SHA256 => Some("sha256"),
            AlgId::SHA384 => Some("sha384"),
            AlgId::SHA512 => Some("sha512"),
            AlgId::SM3_256 => Some("sm3_256"),
            AlgId::SHA3_256 => Some("sha3_256"),
            AlgId::SHA3_384 => Some("sha3_384"),
            AlgId::SHA3_512 => Some("sha3_512"),
            _ => None,
        }
    }
}

impl fmt::Display for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "alg {:#06x}", self.0),
        }
    }
}

impl fmt::Debug for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlgId({:#06x} {})", self.0, self)
    }
}

impl From<TpmAlgId> for AlgId {
    fn from(alg: TpmAlgId) -> AlgId {
        AlgId(alg.0)
    }
}

impl From<AlgId> for TpmAlgId {
    fn from(alg: AlgId) -> TpmAlgId {
        TpmAlgId(alg.0)
    }
}

impl From<HashAlg> for AlgId {
    fn from(alg: HashAlg) -> AlgId {
        alg.id()
    }
}

/// A hash algorithm Slipway computes itself (sha1/sha2 crates).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum HashAlg {
    /// SHA-1 (20 bytes). Computed because a TPM may have the bank active; never trusted alone.
    Sha1,
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl HashAlg {
    /// All four, in TPM algorithm-id order.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// The TPM algorithm id.
    pub const fn id(self) -> AlgId {
        match self {
            HashAlg::Sha1 => AlgId::SHA1,
            HashAlg::Sha256 => AlgId::SHA256,
            HashAlg::Sha384 => AlgId::SHA384,
            HashAlg::Sha512 => AlgId::SHA512,
        }
    }

    /// Digest size in bytes (from the one table, [`TpmAlgId::digest_len`]).
    pub const fn digest_size(self) -> usize {
        match self.id().digest_size() {
            Some(size) => size,
            None => panic!("every algorithm Slipway hashes has a known TPM digest size"),
        }
    }

    /// The name tpm2-tools uses (`sha1`, `sha256`, `sha384`, `sha512`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// Parses a tpm2-tools name (`sha256`, ...).
    pub fn from_name(name: &str) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Index 0..4, for arrays indexed by algorithm.
    pub(crate) const fn index(self) -> usize {
        match self {
            HashAlg::Sha1 => 0,
            HashAlg::Sha256 => 1,
            HashAlg::Sha384 => 2,
            HashAlg::Sha512 => 3,
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most banks a [`BankSet`] or [`crate::DigestList`] holds. TPM 2.0 defines eight hash
/// algorithms that can back a PCR bank; real TPMs activate at most four or five.
pub const MAX_BANKS: usize = 8;

/// One PCR bank: its algorithm and digest size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Bank {
    /// The bank's hash algorithm.
    pub alg: AlgId,
    /// Its digest size in bytes (1..=64).
    pub digest_size: u8,
}

impl Bank {
    /// The bank for a known algorithm.
    pub fn new(alg: AlgId) -> Result<Bank> {
        let size = alg.digest_size().ok_or(Error::UnknownDigestSize(alg))?;
        Bank::with_size(alg, size)
    }

    /// A bank with an explicit digest size (from a log header). The size must match the known
    /// size if the algorithm is known, and be 1..=64.
    pub fn with_size(alg: AlgId, size: usize) -> Result<Bank> {
        if let Some(expected) = alg.digest_size()
            && expected != size
        {
            return Err(Error::DigestLength {
                alg,
                len: size,
                expected,
            });
        }
        if size > crate::MAX_DIGEST_SIZE {
            return Err(Error::DigestTooLong { alg, len: size });
        }
        if size == 0 {
            return Err(Error::DigestLength {
                alg,
                len: 0,
                expected: 1,
            });
        }
        Ok(Bank {
            alg,
            digest_size: size as u8,
        })
    }

    /// The hash algorithm Slipway computes for this bank, or `None` if the bank must be capped.
    pub const fn hash_alg(&self) -> Option<HashAlg> {
        self.alg.hash_alg()
    }

    /// Digest size in bytes.
    pub const fn size(&self) -> usize {
        self.digest_size as usize
    }
}

impl From<HashAlg> for Bank {
    fn from(alg: HashAlg) -> Bank {
        Bank {
            alg: alg.id(),
            digest_size: alg.digest_size() as u8,
        }
    }
}

/// An ordered set of PCR banks: the banks a TPM has active, or the algorithms a log header lists
/// (in header order, which is the order of digests in every event Slipway writes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BankSet {
    len: u8,
    banks: [Bank; MAX_BANKS],
}

impl BankSet {
    const EMPTY_BANK: Bank = Bank {
        alg: AlgId(0),
        digest_size: 0,
    };

    /// An empty set.
    pub const fn empty() -> BankSet {
        BankSet {
            len: 0,
            banks: [Self::EMPTY_BANK; MAX_BANKS],
        }
    }

    /// All four banks Slipway can hash (swtpm's default allocation): sha1, sha256, sha384, sha512.
    pub fn all_supported() -> BankSet {
        let mut set = BankSet::empty();
        for alg in HashAlg::ALL {
            set.push(alg.into()).expect("four banks fit");
        }
        set
    }

    /// A set of one bank.
    pub fn single(alg: HashAlg) -> BankSet {
        let mut set = BankSet::empty();
        set.push(alg.into()).expect("one bank fits");
        set
    }

    /// A set from algorithm ids of known digest size, in the given order.
    pub fn from_algs(algs: &[AlgId]) -> Result<BankSet> {
        let mut set = BankSet::empty();
        for &alg in algs {
            set.push(Bank::new(alg)?)?;
        }
        Ok(set)
    }

    /// Adds a bank at the end.
    pub fn push(&mut self, bank: Bank) -> Result<()> {
        if self.contains(bank.alg) {
            return Err(Error::DuplicateBank(bank.alg));
        }
        let slot = self
            .banks
            .get_mut(self.len as usize)
            .ok_or(Error::TooManyBanks)?;
        *slot = bank;
        self.len += 1;
        Ok(())
    }

    /// The banks, in order.
    pub fn as_slice(&self) -> &[Bank] {
        &self.banks[..self.len as usize]
    }

    /// Iterates over the banks in order.
    pub fn iter(&self) -> impl Iterator<Item = Bank> + '_ {
        self.as_slice().iter().copied()
    }

    /// Number of banks.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the set has a bank for `alg`.
    pub fn contains(&self, alg: AlgId) -> bool {
        self.get(alg).is_some()
    }

    /// The bank for `alg`.
    pub fn get(&self, alg: AlgId) -> Option<Bank> {
        self.iter().find(|bank| bank.alg == alg)
    }

    /// The banks Slipway hashes, in order.
    pub fn supported(&self) -> impl Iterator<Item = HashAlg> + '_ {
        self.iter().filter_map(|bank| bank.hash_alg())
    }

    /// The banks Slipway cannot hash and therefore caps (`docs/measurement.md`), in order.
    pub fn unsupported(&self) -> impl Iterator<Item = Bank> + '_ {
        self.iter().filter(|bank| bank.hash_alg().is_none())
    }

    /// Whether some bank must be capped.
    pub fn has_unsupported(&self) -> bool {
        self.unsupported().next().is_some()
    }
}

impl Default for BankSet {
    fn default() -> BankSet {
        BankSet::empty()
    }
}

impl fmt::Debug for BankSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|bank| bank.alg))
            .finish()
    }
}

impl fmt::Display for BankSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, bank) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", bank.alg)?;
        }
        Ok(())
    }
}
