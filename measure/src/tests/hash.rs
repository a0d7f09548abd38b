use super::hex;
use crate::hash::*;
use crate::*;
use proptest::prelude::*;
use sha2::Digest as _;

/// FIPS 180 "abc" test vectors.
const ABC: [(HashAlg, &str); 4] = [
    (HashAlg::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
    (
        HashAlg::Sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ),
    (
        HashAlg::Sha384,
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
    ),
    (
        HashAlg::Sha512,
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ),
];

fn reference(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    match alg {
        HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
        HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
        HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
        HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
    }
}

#[test]
fn known_answers_for_abc() {
    for (alg, expected) in ABC {
        assert_eq!(hash(alg, b"abc").as_bytes(), hex(expected), "{alg}");
        assert_eq!(hash(alg, b"abc").alg(), alg.id());
    }
    assert_eq!(
        hash(HashAlg::Sha256, b"").as_bytes(),
        hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

#[test]
fn multi_hasher_yields_every_bank_in_set_order_in_one_pass() {
    let banks = BankSet::from_algs(&[AlgId::SHA512, AlgId::SHA1, AlgId::SHA256]).unwrap();
    let mut hasher = MultiHasher::new(&banks);
    hasher.update(b"a");
    hasher.update(b"");
    hasher.update(b"bc");
    let digests = hasher.finalize();
    let algs: Vec<AlgId> = digests.iter().map(|d| d.alg()).collect();
    assert_eq!(algs, [AlgId::SHA512, AlgId::SHA1, AlgId::SHA256]);
    for (alg, expected) in ABC {
        if let Some(digest) = digests.get(alg) {
            assert_eq!(digest.as_bytes(), hex(expected));
        }
    }
}

#[test]
fn unsupported_banks_are_capped_with_all_ff() {
    let banks = BankSet::from_algs(&[AlgId::SM3_256, AlgId::SHA256, AlgId::SHA3_512]).unwrap();
    let digests = event_digests(&banks, b"abc");
    assert_eq!(digests.len(), 3);
    assert_eq!(digests.as_slice()[0].alg(), AlgId::SM3_256);
    assert_eq!(digests.as_slice()[0].as_bytes(), &[0xFF; 32]);
    assert_eq!(digests.as_slice()[1].as_bytes(), hex(ABC[1].1));
    assert_eq!(digests.as_slice()[2].as_bytes(), &[0xFF; 64]);
    // finalize() (hashes only) leaves the unsupported banks out.
    let mut hasher = MultiHasher::new(&banks);
    hasher.update(b"abc");
    assert_eq!(hasher.finalize().len(), 1);
    assert_eq!(
        bound_module_digests(&banks, b"n", b"i").as_slice()[0].as_bytes(),
        &[0xFF; 32]
    );
}

#[test]
fn bound_module_digest_is_hash_of_name_hash_and_image_hash() {
    let banks = BankSet::all_supported();
    let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digests = bound_module_digests(&banks, b"hello", &image);
    for alg in HashAlg::ALL {
        let mut inner = reference(alg, b"hello");
        inner.extend(reference(alg, &image));
        assert_eq!(
            digests.get(alg).unwrap().as_bytes(),
            reference(alg, &inner),
            "{alg}"
        );
    }
    let mut streaming = BoundModuleHasher::new(&banks, b"hello");
    for piece in image.chunks(999) {
        streaming.update(piece);
    }
    let (bound, plain) = streaming.finalize();
    assert_eq!(bound, digests);
    for alg in HashAlg::ALL {
        assert_eq!(plain.get(alg).unwrap().as_bytes(), reference(alg, &image));
    }
    // The name is bound: another name, same image, other digest.
    assert_ne!(bound_module_digests(&banks, b"hellp", &image), digests);
}

#[test]
fn extend_value_is_hash_of_old_and_digest() {
    let old = [0u8; 32];
    let digest = hash(HashAlg::Sha256, b"abc");
    let mut concat = old.to_vec();
    concat.extend_from_slice(digest.as_bytes());
    assert_eq!(
        extend_value(HashAlg::Sha256, &old, digest.as_bytes()).as_bytes(),
        reference(HashAlg::Sha256, &concat)
    );
}

proptest! {
    #[test]
    fn multi_hasher_equals_reference_for_any_split(
        data in proptest::collection::vec(any::<u8>(), 0..40_000),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let banks = BankSet::all_supported();
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(data.len() + 1)).collect();
        points.sort();
        let mut hasher = MultiHasher::new(&banks);
        let mut start = 0;
        for point in points {
            hasher.update(&data[start..point]);
            start = point;
        }
        hasher.update(&data[start..]);
        let digests = hasher.finalize_for();
        for alg in HashAlg::ALL {
            let expected = reference(alg, &data);
            prop_assert_eq!(digests.get(alg).unwrap().as_bytes(), expected.as_slice());
        }
    }
}
