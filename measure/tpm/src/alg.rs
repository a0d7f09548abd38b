//! PCR index sets, and the bridge from `slipway-measure`'s algorithm ids to `tpm2-protocol`'s.
//!
//! Banks, digests and digest lists are `slipway-measure`'s types ([`AlgId`], [`Bank`],
//! [`BankSet`], [`Digest`], [`DigestList`]): what the hypervisor hashes or logs is exactly what
//! it extends, with no conversion in between.

use tpm2_protocol::data::TpmAlgId;

pub use slipway_measure::{AlgId, Bank, BankSet, Digest, DigestList, HashAlg};

/// PCRs a PC Client TPM implements (0-23).
pub const PCR_COUNT: u8 = 24;

/// `tpm2-protocol`'s id for `alg`, if it names the algorithm.
pub(crate) fn tpm_alg(alg: AlgId) -> Option<TpmAlgId> {
    TpmAlgId::try_from(alg.0).ok()
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
    /// Every PCR, 0-23.
    pub const ALL: PcrMask = PcrMask::range(0, 23);

    /// PCRs `first..=last` (those above 23 are dropped).
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

    /// The PCRs in either set.
    pub const fn union(self, other: PcrMask) -> PcrMask {
        PcrMask(self.0 | other.0)
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

    /// From a `pcrSelect` bitmap of any length; `None` if it selects PCRs above 23.
    pub fn from_select_bytes(bytes: &[u8]) -> Option<PcrMask> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_alg_ids_are_tpm2_protocol_ids() {
        for alg in HashAlg::ALL {
            assert_eq!(tpm_alg(alg.id()).unwrap().value(), alg.id().0);
        }
        for alg in [
            AlgId::SM3_256,
            AlgId::SHA3_256,
            AlgId::SHA3_384,
            AlgId::SHA3_512,
        ] {
            assert_eq!(tpm_alg(alg).unwrap().value(), alg.0);
        }
        assert_eq!(tpm_alg(AlgId(0x7777)), None);
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
        assert_eq!(PcrMask::ALL.count(), 24);
        assert_eq!(
            PcrMask::range(1, 2).union(PcrMask::range(5, 5)).bits(),
            0b100110
        );
    }
}
