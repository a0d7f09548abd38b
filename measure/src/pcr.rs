//! The PCR model: values per bank, extend, initial values, and the PC Client locality rules.

use crate::alg::{AlgId, BankSet, HashAlg};
use crate::digest::{Digest, DigestList, MAX_DIGEST_SIZE};
use crate::hash::{MultiHasher, extend_value};
use crate::{Error, Result};

/// Number of PCRs of a PC Client TPM (0-23).
pub const PCR_COUNT: usize = 24;

/// The state PCRs start from when a log is replayed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InitialState {
    /// After TPM2_Startup with no dynamic launch: PCR0-16 and 23 are 0, PCR17-22 all 0xFF.
    NoDynamicLaunch,
    /// After a dynamic launch (SENTER, SKINIT, or swtpm's hash-start in the emulated launch):
    /// every PCR starts at 0 (PCR17-22 were reset to 0 by the launch).
    DynamicLaunch,
}

impl InitialState {
    /// The byte every position of `pcr`'s initial value holds.
    pub fn fill_byte(self, pcr: usize) -> u8 {
        match (self, pcr) {
            (InitialState::NoDynamicLaunch, 17..=22) => 0xFF,
            _ => 0x00,
        }
    }
}

/// Whether `pcr` is one of the dynamic-launch PCRs 17-22 (all 0xFF until a dynamic launch).
pub fn is_drtm_pcr(pcr: u32) -> bool {
    (17..=22).contains(&pcr)
}

/// The localities (bit n = locality n) from which TPM2_PCR_Extend of `pcr` succeeds on a PC Client
/// TPM (PC Client Platform TPM Profile, PCR attributes; observed on swtpm): PCR17-18 at 2-4,
/// PCR19 at 2-3, PCR20 at 1-3, PCR21-22 at 2 only, the others at any locality.
pub fn extend_localities(pcr: u32) -> Result<u8> {
    Ok(match pcr {
        0..=16 | 23 => 0b1_1111,
        17 | 18 => 0b1_1100,
        19 => 0b0_1100,
        20 => 0b0_1110,
        21 | 22 => 0b0_0100,
        _ => return Err(Error::PcrIndex(pcr)),
    })
}

/// Whether `locality` may extend `pcr`.
pub fn may_extend(pcr: u32, locality: u8) -> Result<bool> {
    Ok(locality < 5 && extend_localities(pcr)? & (1 << locality) != 0)
}

/// Expected PCR17 after the emulated dynamic launch (swtpm hash-start/data/end with `region` as
/// data): `H(0^n || H(region))` in each supported bank of `banks`. Unsupported banks are absent
/// (Slipway cannot compute them).
pub fn emulated_launch_pcr17(banks: &BankSet, region: &[u8]) -> DigestList {
    let mut hasher = MultiHasher::new(banks);
    hasher.update(region);
    let region_digests = hasher.finalize();
    let mut out = DigestList::new();
    for digest in region_digests.iter() {
        let alg = digest
            .hash_alg()
            .expect("finalize yields supported banks only");
        let zero = Digest::zero(alg);
        out.push(extend_value(alg, zero.as_bytes(), digest.as_bytes()))
            .expect("distinct banks");
    }
    out
}

/// PCR values for the banks Slipway can compute: 24 PCRs in up to four banks, no allocation
/// (6 KiB). Banks Slipway cannot hash are not tracked.
#[derive(Clone, PartialEq, Eq)]
pub struct PcrBanks {
    tracked: [bool; 4],
    values: [[[u8; MAX_DIGEST_SIZE]; PCR_COUNT]; 4],
}

impl PcrBanks {
    /// PCRs in `initial` state for the supported banks of `banks`.
    pub fn new(banks: &BankSet, initial: InitialState) -> PcrBanks {
        let mut pcrs = PcrBanks {
            tracked: [false; 4],
            values: [[[0; MAX_DIGEST_SIZE]; PCR_COUNT]; 4],
        };
        for alg in banks.supported() {
            pcrs.tracked[alg.index()] = true;
            for (pcr, value) in pcrs.values[alg.index()].iter_mut().enumerate() {
                value[..alg.digest_size()].fill(initial.fill_byte(pcr));
            }
        }
        pcrs
    }

    /// The tracked banks, in algorithm-id order.
    pub fn banks(&self) -> impl Iterator<Item = HashAlg> + '_ {
        HashAlg::ALL
            .into_iter()
            .filter(|alg| self.tracked[alg.index()])
    }

    /// Whether `alg` is tracked.
    pub fn tracks(&self, alg: AlgId) -> bool {
        alg.hash_alg().is_some_and(|alg| self.tracked[alg.index()])
    }

    fn slot(&mut self, pcr: u32, alg: HashAlg) -> Result<&mut [u8]> {
        let index = pcr_index(pcr)?;
        if !self.tracked[alg.index()] {
            return Err(Error::UnexpectedBank(alg.id()));
        }
        Ok(&mut self.values[alg.index()][index][..alg.digest_size()])
    }

    /// The value of `pcr` in bank `alg`, or `None` if the bank is not tracked.
    pub fn value(&self, pcr: u32, alg: HashAlg) -> Result<Option<Digest>> {
        let index = pcr_index(pcr)?;
        if !self.tracked[alg.index()] {
            return Ok(None);
        }
        let bytes = &self.values[alg.index()][index][..alg.digest_size()];
        Ok(Some(Digest::new(alg.id(), bytes)?))
    }

    /// Sets `pcr` in `digest`'s bank (a StartupLocality event, or a value read from a TPM).
    pub fn set(&mut self, pcr: u32, digest: &Digest) -> Result<()> {
        let alg = digest
            .hash_alg()
            .ok_or(Error::UnsupportedAlgorithm(digest.alg()))?;
        check_len(alg, digest)?;
        self.slot(pcr, alg)?.copy_from_slice(digest.as_bytes());
        Ok(())
    }

    /// TPM extend of one bank: `PCR = H(PCR || digest)`. The bank must be tracked.
    pub fn extend(&mut self, pcr: u32, digest: &Digest) -> Result<()> {
        let alg = digest
            .hash_alg()
            .ok_or(Error::UnsupportedAlgorithm(digest.alg()))?;
        check_len(alg, digest)?;
        let slot = self.slot(pcr, alg)?;
        let new = extend_value(alg, slot, digest.as_bytes());
        slot.copy_from_slice(new.as_bytes());
        Ok(())
    }

    /// A TPM2_PCR_Extend with a digest list: extends every tracked bank the list has a digest
    /// for; digests for untracked banks (those Slipway cannot hash) are ignored. Checks the
    /// whole list before changing anything.
    pub fn extend_all(&mut self, pcr: u32, digests: &DigestList) -> Result<()> {
        pcr_index(pcr)?;
        for digest in digests.iter() {
            if let Some(alg) = digest.hash_alg() {
                check_len(alg, digest)?;
            }
        }
        for digest in digests.iter() {
            if self.tracks(digest.alg()) {
                self.extend(pcr, digest)?;
            }
        }
        Ok(())
    }
}

impl PcrBanks {
    /// The PCR digest a TPM2_Quote attests (`TPMS_QUOTE_INFO.pcrDigest`): the hash, with the
    /// quote's hash algorithm `digest_alg`, of the selected PCR values concatenated in selection
    /// order: selections in the order given, PCRs in ascending index within each (TPM 2.0 Part 1,
    /// "PCR digest"). `selection` pairs a bank with a PCR mask (bit n = PCR n).
    pub fn quote_digest(
        &self,
        digest_alg: HashAlg,
        selection: &[(HashAlg, u32)],
    ) -> Result<Digest> {
        let mut hasher = MultiHasher::new(&BankSet::single(digest_alg));
        for &(alg, mask) in selection {
            if !self.tracked[alg.index()] {
                return Err(Error::UnexpectedBank(alg.id()));
            }
            if mask >> PCR_COUNT != 0 {
                return Err(Error::PcrIndex(31 - mask.leading_zeros()));
            }
            for pcr in 0..PCR_COUNT {
                if mask & (1 << pcr) != 0 {
                    hasher.update(&self.values[alg.index()][pcr][..alg.digest_size()]);
                }
            }
        }
        Ok(hasher.finalize().as_slice()[0])
    }
}

impl core::fmt::Debug for PcrBanks {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut list = f.debug_map();
        for alg in self.banks() {
            for pcr in 0..PCR_COUNT as u32 {
                let value = self.value(pcr, alg).ok().flatten();
                list.entry(&(alg, pcr), &value);
            }
        }
        list.finish()
    }
}

fn pcr_index(pcr: u32) -> Result<usize> {
    if (pcr as usize) < PCR_COUNT {
        Ok(pcr as usize)
    } else {
        Err(Error::PcrIndex(pcr))
    }
}

fn check_len(alg: HashAlg, digest: &Digest) -> Result<()> {
    if digest.len() != alg.digest_size() {
        return Err(Error::DigestLength {
            alg: alg.id(),
            len: digest.len(),
            expected: alg.digest_size(),
        });
    }
    Ok(())
}
