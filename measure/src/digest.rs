//! Digest values and per-bank digest lists (`TPMT_HA`, `TPML_DIGEST_VALUES`).

use crate::alg::{AlgId, Bank, BankSet, HashAlg, MAX_BANKS};
use crate::{Error, Result};
use core::fmt;

/// The largest digest Slipway handles (SHA-512, SHA3-512).
pub const MAX_DIGEST_SIZE: usize = 64;

/// A digest value: algorithm plus up to 64 bytes, without allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: AlgId,
    len: u8,
    bytes: [u8; MAX_DIGEST_SIZE],
}

impl Digest {
    pub(crate) const PLACEHOLDER: Digest = Digest {
        alg: AlgId(0),
        len: 0,
        bytes: [0; MAX_DIGEST_SIZE],
    };

    /// A digest of a known algorithm; `bytes` must have the algorithm's digest size.
    pub fn new(alg: AlgId, bytes: &[u8]) -> Result<Digest> {
        Digest::for_bank(Bank::new(alg)?, bytes)
    }

    /// A digest for a bank (whose size may come from a log header).
    pub fn for_bank(bank: Bank, bytes: &[u8]) -> Result<Digest> {
        if bytes.len() != bank.size() {
            return Err(Error::DigestLength {
                alg: bank.alg,
                len: bytes.len(),
                expected: bank.size(),
            });
        }
        let mut digest = Digest {
            alg: bank.alg,
            len: bank.digest_size,
            bytes: [0; MAX_DIGEST_SIZE],
        };
        digest.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(digest)
    }

    /// A digest of `bank`'s size with every byte `byte` (0x00: a reset PCR; 0xFF: a PCR17-22
    /// before a dynamic launch, and Slipway's cap value).
    pub fn filled(bank: Bank, byte: u8) -> Digest {
        let mut digest = Digest {
            alg: bank.alg,
            len: bank.digest_size,
            bytes: [0; MAX_DIGEST_SIZE],
        };
        digest.bytes[..bank.size()].fill(byte);
        digest
    }

    /// The all-zero digest of `alg`.
    pub fn zero(alg: HashAlg) -> Digest {
        Digest::filled(alg.into(), 0)
    }

    /// The digest's algorithm.
    pub fn alg(&self) -> AlgId {
        self.alg
    }

    /// The hash algorithm, if Slipway computes it.
    pub fn hash_alg(&self) -> Option<HashAlg> {
        self.alg.hash_alg()
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Digest size in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the digest has no bytes (never true for a constructed digest).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bank this digest belongs to.
    pub fn bank(&self) -> Bank {
        Bank {
            alg: self.alg,
            digest_size: self.len,
        }
    }

    /// Writes the bytes as lower-case hex.
    pub fn write_hex(&self, f: &mut impl fmt::Write) -> fmt::Result {
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// `alg:hex`, e.g. `sha256:e3b0...`.
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.alg)?;
        self.write_hex(f)
    }
}

/// Lower-case hex of the bytes.
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_hex(f)
    }
}

/// One digest per bank, at most one per algorithm (`TPML_DIGEST_VALUES`), in insertion order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DigestList {
    len: u8,
    digests: [Digest; MAX_BANKS],
}

impl DigestList {
    /// An empty list.
    pub const fn new() -> DigestList {
        DigestList {
            len: 0,
            digests: [Digest::PLACEHOLDER; MAX_BANKS],
        }
    }

    /// Adds a digest; its algorithm must not be in the list yet.
    pub fn push(&mut self, digest: Digest) -> Result<()> {
        if self.get(digest.alg).is_some() {
            return Err(Error::DuplicateBank(digest.alg));
        }
        let slot = self
            .digests
            .get_mut(self.len as usize)
            .ok_or(Error::TooManyBanks)?;
        *slot = digest;
        self.len += 1;
        Ok(())
    }

    /// The digest for `alg`.
    pub fn get(&self, alg: impl Into<AlgId>) -> Option<&Digest> {
        let alg = alg.into();
        self.as_slice().iter().find(|digest| digest.alg == alg)
    }

    /// The digests in order.
    pub fn as_slice(&self) -> &[Digest] {
        &self.digests[..self.len as usize]
    }

    /// Iterates over the digests in order.
    pub fn iter(&self) -> core::slice::Iter<'_, Digest> {
        self.as_slice().iter()
    }

    /// Number of digests.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The banks of this list, in order.
    pub fn banks(&self) -> BankSet {
        let mut set = BankSet::empty();
        for digest in self.iter() {
            set.push(digest.bank())
                .expect("a digest list has at most MAX_BANKS distinct banks");
        }
        set
    }

    /// This list reordered to `banks`' order; it must have exactly one digest per bank, of the
    /// bank's size. This is the check the log writer makes before it writes an event.
    pub fn ordered_for(&self, banks: &BankSet) -> Result<DigestList> {
        let mut ordered = DigestList::new();
        for bank in banks.iter() {
            let digest = self.get(bank.alg).ok_or(Error::MissingBank(bank.alg))?;
            if digest.len() != bank.size() {
                return Err(Error::DigestLength {
                    alg: bank.alg,
                    len: digest.len(),
                    expected: bank.size(),
                });
            }
            ordered.push(*digest)?;
        }
        if let Some(extra) = self.iter().find(|digest| !banks.contains(digest.alg)) {
            return Err(Error::UnexpectedBank(extra.alg));
        }
        Ok(ordered)
    }
}

impl Default for DigestList {
    fn default() -> DigestList {
        DigestList::new()
    }
}

impl fmt::Debug for DigestList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a DigestList {
    type Item = &'a Digest;
    type IntoIter = core::slice::Iter<'a, Digest>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
