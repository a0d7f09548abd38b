//! Hash algorithms of PCR banks, digests, PCR masks and bank sets.
//!
//! This is a deliberately small duplicate of what `slipway-measure` owns (algorithm ids and digest
//! sizes): the TPM driver must not depend on the measurement core, and the two only meet at the
//! raw TCG algorithm id (`HashAlg::id`).

use core::fmt;

use tpm2_protocol::data::TpmAlgId;

/// Largest digest any PCR bank can hold (SHA-512, SHA3-512).
pub const MAX_DIGEST_SIZE: usize = 64;

/// Most PCR banks a TPM can report (`TPML_PCR_SELECTION` capacity in `tpm2-protocol`).
pub const MAX_BANKS: usize = 8;

/// PCRs a PC Client TPM implements (0-23).
pub const PCR_COUNT: u8 = 24;

/// The hash algorithm of a PCR bank (TCG algorithm registry ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlg {
    /// TPM_ALG_SHA1 (0x0004).
    Sha1,
    /// TPM_ALG_SHA256 (0x000B).
    Sha256,
    /// TPM_ALG_SHA384 (0x000C).
    Sha384,
    /// TPM_ALG_SHA512 (0x000D).
    Sha512,
    /// TPM_ALG_SM3_256 (0x0012).
    Sm3_256,
    /// TPM_ALG_SHA3_256 (0x0027).
    Sha3_256,
    /// TPM_ALG_SHA3_384 (0x0028).
    Sha3_384,
    /// TPM_ALG_SHA3_512 (0x0029).
    Sha3_512,
}

impl HashAlg {
    /// Every bank algorithm this crate knows, in TCG id order.
    pub const ALL: [HashAlg; 8] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sm3_256,
        HashAlg::Sha3_256,
        HashAlg::Sha3_384,
        HashAlg::Sha3_512,
    ];

    /// The TCG algorithm id (`TPM_ALG_ID`).
    pub const fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
            HashAlg::Sm3_256 => 0x0012,
            HashAlg::Sha3_256 => 0x0027,
            HashAlg::Sha3_384 => 0x0028,
            HashAlg::Sha3_512 => 0x0029,
        }
    }

    /// The algorithm with TCG id `id`, if it is a PCR bank hash this crate knows.
    pub fn from_id(id: u16) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|alg| alg.id() == id)
    }

    /// Digest size in bytes.
    pub const fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 | HashAlg::Sm3_256 | HashAlg::Sha3_256 => 32,
            HashAlg::Sha384 | HashAlg::Sha3_384 => 48,
            HashAlg::Sha512 | HashAlg::Sha3_512 => 64,
        }
    }

    /// Lower-case name as used by tpm2-tools and swtpm (`sha256`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Sm3_256 => "sm3_256",
            HashAlg::Sha3_256 => "sha3_256",
            HashAlg::Sha3_384 => "sha3_384",
            HashAlg::Sha3_512 => "sha3_512",
        }
    }

    pub(crate) const fn to_tpm(self) -> TpmAlgId {
        match self {
            HashAlg::Sha1 => TpmAlgId::Sha1,
            HashAlg::Sha256 => TpmAlgId::Sha256,
            HashAlg::Sha384 => TpmAlgId::Sha384,
            HashAlg::Sha512 => TpmAlgId::Sha512,
            HashAlg::Sm3_256 => TpmAlgId::Sm3_256,
            HashAlg::Sha3_256 => TpmAlgId::Sha3_256,
            HashAlg::Sha3_384 => TpmAlgId::Sha3_384,
            HashAlg::Sha3_512 => TpmAlgId::Sha3_512,
        }
    }

    pub(crate) fn from_tpm(alg: TpmAlgId) -> Option<HashAlg> {
        HashAlg::from_id(alg.value())
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest of one bank's algorithm (the value of a PCR, or what is extended into it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: HashAlg,
    bytes: [u8; MAX_DIGEST_SIZE],
}

/// A digest whose length does not match its algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestLengthError {
    /// The algorithm.
    pub alg: HashAlg,
    /// The length given.
    pub len: usize,
}

impl fmt::Display for DigestLengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} digest is {} bytes, not {}",
            self.alg,
            self.alg.digest_size(),
            self.len
        )
    }
}

impl Digest {
    /// A digest of `alg` with exactly `alg.digest_size()` bytes.
    pub fn new(alg: HashAlg, bytes: &[u8]) -> Result<Digest, DigestLengthError> {
        if bytes.len() != alg.digest_size() {
            return Err(DigestLengthError {
                alg,
                len: bytes.len(),
            });
        }
        let mut digest = Digest {
            alg,
            bytes: [0; MAX_DIGEST_SIZE],
        };
        digest.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(digest)
    }

    /// A digest of `alg` with every byte equal to `byte` (all-zero or all-FF PCR values).
    pub fn filled(alg: HashAlg, byte: u8) -> Digest {
        let mut bytes = [0; MAX_DIGEST_SIZE];
        bytes[..alg.digest_size()].fill(byte);
        Digest { alg, bytes }
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The digest bytes (`alg().digest_size()` of them).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.alg.digest_size()]
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.alg)?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A set of PCR indices 0-23 (bit n = PCR n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PcrMask(u32);

impl PcrMask {
    /// No PCR.
    pub const EMPTY: PcrMask = PcrMask(0);
    /// The dynamic-launch PCRs a Slipway quote covers: 17-21.
    pub const QUOTE: PcrMask = PcrMask::range(17, 21);
    /// The dynamic-launch and debug PCRs read back after a launch: 17-23.
    pub const DRTM: PcrMask = PcrMask::range(17, 23);

    /// PCRs `first..=last` (both below 24).
    pub const fn range(first: u8, last: u8) -> PcrMask {
        let mut mask = 0u32;
        let mut pcr = first;
        while pcr <= last && pcr < PCR_COUNT {
            mask |= 1 << pcr;
            pcr += 1;
        }
        PcrMask(mask)
    }

    /// From raw bits; bits above PCR 23 are dropped.
    pub const fn from_bits(bits: u32) -> PcrMask {
        PcrMask(bits & ((1 << PCR_COUNT) - 1))
    }

    /// Raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether PCR `pcr` is in the set.
    pub const fn contains(self, pcr: u8) -> bool {
        pcr < PCR_COUNT && self.0 & (1 << pcr) != 0
    }

    /// This set plus PCR `pcr` (ignored above 23).
    pub const fn with(self, pcr: u8) -> PcrMask {
        if pcr < PCR_COUNT {
            PcrMask(self.0 | (1 << pcr))
        } else {
            self
        }
    }

    /// This set without the PCRs in `other`.
    pub const fn without(self, other: PcrMask) -> PcrMask {
        PcrMask(self.0 & !other.0)
    }

    /// Number of PCRs in the set.
    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The PCR indices in ascending order (the order a TPM concatenates them in).
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..PCR_COUNT).filter(move |pcr| self.contains(*pcr))
    }

    /// The 3-byte `pcrSelect` bitmap of a `TPMS_PCR_SELECTION`.
    pub(crate) fn select_bytes(self) -> [u8; 3] {
        let b = self.0.to_le_bytes();
        [b[0], b[1], b[2]]
    }

    /// From a `pcrSelect` bitmap of any length (bits past PCR 23 must be clear).
    pub(crate) fn from_select_bytes(bytes: &[u8]) -> Option<PcrMask> {
        let mut bits = 0u32;
        for (index, byte) in bytes.iter().enumerate() {
            if *byte == 0 {
                continue;
            }
            if index >= 3 {
                return None;
            }
            bits |= u32::from(*byte) << (8 * index);
        }
        Some(PcrMask(bits))
    }
}

/// An ordered set of PCR banks (no duplicates), in the order the TPM reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcrBanks {
    algs: [Option<HashAlg>; MAX_BANKS],
    len: usize,
}

impl PcrBanks {
    /// No bank.
    pub const fn new() -> PcrBanks {
        PcrBanks {
            algs: [None; MAX_BANKS],
            len: 0,
        }
    }

    /// The banks in `algs`, in that order. Fails on a duplicate or more than [`MAX_BANKS`].
    pub fn from_algs(algs: &[HashAlg]) -> Option<PcrBanks> {
        let mut banks = PcrBanks::new();
        for alg in algs {
            if !banks.push(*alg) {
                return None;
            }
        }
        Some(banks)
    }

    /// Appends `alg`; false when it is already present or the set is full.
    pub fn push(&mut self, alg: HashAlg) -> bool {
        if self.contains(alg) || self.len == MAX_BANKS {
            return false;
        }
        self.algs[self.len] = Some(alg);
        self.len += 1;
        true
    }

    /// Whether `alg` is in the set.
    pub fn contains(&self, alg: HashAlg) -> bool {
        self.iter().any(|a| a == alg)
    }

    /// The banks in order.
    pub fn iter(&self) -> impl Iterator<Item = HashAlg> + '_ {
        self.algs[..self.len].iter().flatten().copied()
    }

    /// Number of banks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no bank.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for PcrBanks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, alg) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{alg}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_ids_round_trip_and_sizes_match_tpm2_protocol() {
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::from_id(alg.id()), Some(alg));
            assert_eq!(alg.to_tpm().value(), alg.id());
            assert_eq!(HashAlg::from_tpm(alg.to_tpm()), Some(alg));
        }
        assert_eq!(HashAlg::from_id(0x0010), None);
    }

    #[test]
    fn digest_rejects_wrong_length() {
        assert!(Digest::new(HashAlg::Sha256, &[0; 32]).is_ok());
        assert_eq!(
            Digest::new(HashAlg::Sha256, &[0; 20]),
            Err(DigestLengthError {
                alg: HashAlg::Sha256,
                len: 20
            })
        );
        assert_eq!(Digest::filled(HashAlg::Sha1, 0xff).as_bytes(), &[0xff; 20]);
    }

    #[test]
    fn pcr_mask_bitmaps() {
        assert_eq!(PcrMask::QUOTE.bits(), 0b11111 << 17);
        assert_eq!(PcrMask::QUOTE.select_bytes(), [0, 0, 0x3e]);
        assert_eq!(
            PcrMask::DRTM.iter().collect::<Vec<_>>(),
            (17..=23).collect::<Vec<_>>()
        );
        assert_eq!(
            PcrMask::from_select_bytes(&[0, 0, 0x3e]),
            Some(PcrMask::QUOTE)
        );
        assert_eq!(
            PcrMask::from_select_bytes(&[1, 0, 0, 0]),
            Some(PcrMask::range(0, 0))
        );
        assert_eq!(PcrMask::from_select_bytes(&[0, 0, 0, 1]), None);
        assert_eq!(PcrMask::range(20, 30).count(), 4);
    }

    #[test]
    fn banks_reject_duplicates() {
        let mut banks = PcrBanks::new();
        assert!(banks.push(HashAlg::Sha256));
        assert!(!banks.push(HashAlg::Sha256));
        assert!(banks.push(HashAlg::Sha1));
        assert_eq!(
            banks.iter().collect::<Vec<_>>(),
            [HashAlg::Sha256, HashAlg::Sha1]
        );
        assert!(PcrBanks::from_algs(&[HashAlg::Sha1, HashAlg::Sha1]).is_none());
    }
}
