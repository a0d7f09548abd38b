//! Hashing for every active bank in one pass, and the digests Slipway extends.
//!
//! Three kinds of digests go into Slipway's events (`docs/measurement.md`):
//! - the hash of the exact event data ([`event_digests`]), for every event a verifier interprets;
//! - a boot module bound to its name, `H(H(name) || H(image))` ([`BoundModuleHasher`]);
//! - the cap value ([`cap_digest`]) in every bank Slipway cannot hash.
//!
//! Functions that return a [`DigestList`] for a [`BankSet`] always return one digest per bank,
//! in the set's order, with unsupported banks capped: what the log writer and a TPM2_PCR_Extend
//! need.

use crate::alg::{Bank, BankSet, HashAlg};
use crate::digest::{Digest, DigestList};
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// The value extended into a bank Slipway cannot hash (SM3-256, SHA3-*): every byte 0xFF, at the
/// bank's digest size. Each Slipway event carries it in such a bank, so the bank is never left
/// open; see `docs/measurement.md`, "Banks Slipway cannot hash".
pub const CAP_BYTE: u8 = 0xFF;

/// The cap digest for `bank` (all [`CAP_BYTE`]).
pub fn cap_digest(bank: Bank) -> Digest {
    Digest::filled(bank, CAP_BYTE)
}

/// How many bytes [`MultiHasher::update`] feeds to every hasher before moving on: small enough
/// to stay in the L1 cache, so module data is read from memory once for all banks.
const CHUNK: usize = 16 * 1024;

/// Hashes data for several banks at once: each chunk of input is fed to every selected
/// algorithm while it is still in the cache, so a module is read from memory once.
///
/// Hashing is compute-bound, so this is as fast as separate passes per bank, not faster
/// (`examples/multihash_bench.rs`: ratio 0.99-1.01 on the development machine); what it saves is
/// reading the source more than once, and the caller's bookkeeping.
///
/// Only the banks Slipway can hash are computed; [`MultiHasher::finalize_for`] fills in the cap
/// for the others.
#[derive(Clone)]
pub struct MultiHasher {
    banks: BankSet,
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
    sha384: Option<Sha384>,
    sha512: Option<Sha512>,
}

impl MultiHasher {
    /// A hasher for the supported banks of `banks` (unsupported banks are remembered and capped
    /// by [`MultiHasher::finalize_for`]).
    pub fn new(banks: &BankSet) -> MultiHasher {
        let mut hasher = MultiHasher {
            banks: *banks,
            sha1: None,
            sha256: None,
            sha384: None,
            sha512: None,
        };
        for alg in banks.supported() {
            match alg {
                HashAlg::Sha1 => hasher.sha1 = Some(Sha1::new()),
                HashAlg::Sha256 => hasher.sha256 = Some(Sha256::new()),
                HashAlg::Sha384 => hasher.sha384 = Some(Sha384::new()),
                HashAlg::Sha512 => hasher.sha512 = Some(Sha512::new()),
            }
        }
        hasher
    }

    /// Feeds `data` to every selected bank, in cache-sized chunks.
    pub fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(CHUNK) {
            if let Some(h) = &mut self.sha1 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.sha256 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.sha384 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.sha512 {
                h.update(chunk);
            }
        }
    }

    /// The digest of one computed algorithm, or `None` if it was not selected.
    fn take(&mut self, alg: HashAlg) -> Option<Digest> {
        let digest = match alg {
            HashAlg::Sha1 => Digest::new(alg.id(), &self.sha1.take()?.finalize()),
            HashAlg::Sha256 => Digest::new(alg.id(), &self.sha256.take()?.finalize()),
            HashAlg::Sha384 => Digest::new(alg.id(), &self.sha384.take()?.finalize()),
            HashAlg::Sha512 => Digest::new(alg.id(), &self.sha512.take()?.finalize()),
        };
        Some(digest.expect("sha1/sha2 output sizes match the TPM digest sizes"))
    }

    /// The digests of the supported banks only, in the bank set's order.
    pub fn finalize(mut self) -> DigestList {
        let mut list = DigestList::new();
        let banks = self.banks;
        for alg in banks.supported() {
            let digest = self.take(alg).expect("every supported bank has a hasher");
            list.push(digest).expect("bank set has distinct banks");
        }
        list
    }

    /// One digest per bank of the set, in order: the hash for supported banks, the cap
    /// ([`cap_digest`]) for the others. This is what an event extends.
    pub fn finalize_for(mut self) -> DigestList {
        let mut list = DigestList::new();
        let banks = self.banks;
        for bank in banks.iter() {
            let digest = match bank.hash_alg() {
                Some(alg) => self.take(alg).expect("every supported bank has a hasher"),
                None => cap_digest(bank),
            };
            list.push(digest).expect("bank set has distinct banks");
        }
        list
    }
}

/// The hash of `data` with one algorithm.
pub fn hash(alg: HashAlg, data: &[u8]) -> Digest {
    hash_parts(alg, &[data])
}

/// The hash of the concatenation of `parts` with one algorithm.
pub fn hash_parts(alg: HashAlg, parts: &[&[u8]]) -> Digest {
    let mut hasher = MultiHasher::new(&BankSet::single(alg));
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().as_slice()[0]
}

/// The digests an event whose digest is "the hash of the exact event data" extends: `H(data)` in
/// every supported bank, the cap in the others, in the set's order.
pub fn event_digests(banks: &BankSet, data: &[u8]) -> DigestList {
    let mut hasher = MultiHasher::new(banks);
    hasher.update(data);
    hasher.finalize_for()
}

/// TPM extend: `H(old || digest)` in `old`'s algorithm. `digest` must be of the same algorithm.
pub fn extend_value(alg: HashAlg, old: &[u8], digest: &[u8]) -> Digest {
    hash_parts(alg, &[old, digest])
}

/// Hashes a boot module bound to its name: `H(H(name) || H(image))` in every supported bank
/// (the cap in the others). Feed the image with [`BoundModuleHasher::update`] in any number of
/// pieces; the image is read once for all banks.
#[derive(Clone)]
pub struct BoundModuleHasher {
    name_digests: DigestList,
    image: MultiHasher,
    banks: BankSet,
}

impl BoundModuleHasher {
    /// Starts hashing the module called `name` for `banks`.
    pub fn new(banks: &BankSet, name: &[u8]) -> BoundModuleHasher {
        let mut name_hasher = MultiHasher::new(banks);
        name_hasher.update(name);
        BoundModuleHasher {
            name_digests: name_hasher.finalize(),
            image: MultiHasher::new(banks),
            banks: *banks,
        }
    }

    /// Feeds the next piece of the image.
    pub fn update(&mut self, image_part: &[u8]) {
        self.image.update(image_part);
    }

    /// The bound digests `H(H(name) || H(image))`, one per bank in order (capped where
    /// unsupported), and the plain image digests `H(image)` of the supported banks (which the
    /// domain build records list as module digests).
    pub fn finalize(self) -> (DigestList, DigestList) {
        let image_digests = self.image.finalize();
        let mut bound = DigestList::new();
        for bank in self.banks.iter() {
            let digest = match bank.hash_alg() {
                Some(alg) => {
                    let name = self.name_digests.get(alg).expect("hashed for every bank");
                    let image = image_digests.get(alg).expect("hashed for every bank");
                    hash_parts(alg, &[name.as_bytes(), image.as_bytes()])
                }
                None => cap_digest(bank),
            };
            bound.push(digest).expect("bank set has distinct banks");
        }
        (bound, image_digests)
    }
}

/// `H(H(name) || H(image))` for every bank (capped where unsupported); see [`BoundModuleHasher`].
pub fn bound_module_digests(banks: &BankSet, name: &[u8], image: &[u8]) -> DigestList {
    let mut hasher = BoundModuleHasher::new(banks, name);
    hasher.update(image);
    hasher.finalize().0
}
