use crate::hash::hash;
use crate::pcr::*;
use crate::*;
use sha2::Digest as _;

#[test]
fn initial_values_follow_the_launch_state() {
    let banks = BankSet::all_supported();
    let before = PcrBanks::new(&banks, InitialState::NoDynamicLaunch);
    let after = PcrBanks::new(&banks, InitialState::DynamicLaunch);
    for alg in HashAlg::ALL {
        for pcr in 0..24u32 {
            let expected = if (17..=22).contains(&pcr) { 0xFF } else { 0 };
            let value = before.value(pcr, alg).unwrap().unwrap();
            assert!(value.as_bytes().iter().all(|&b| b == expected), "PCR{pcr}");
            assert_eq!(value.len(), alg.digest_size());
            assert!(
                after
                    .value(pcr, alg)
                    .unwrap()
                    .unwrap()
                    .as_bytes()
                    .iter()
                    .all(|&b| b == 0)
            );
        }
    }
    assert_eq!(before.value(24, HashAlg::Sha1), Err(Error::PcrIndex(24)));
    assert!(is_drtm_pcr(17) && is_drtm_pcr(22) && !is_drtm_pcr(16) && !is_drtm_pcr(23));
}

#[test]
fn extend_matches_the_tpm_definition() {
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SHA1]).unwrap();
    let mut pcrs = PcrBanks::new(&banks, InitialState::NoDynamicLaunch);
    let event = hash(HashAlg::Sha256, b"event");
    pcrs.extend(19, &event).unwrap();
    let mut expected = vec![0xFF; 32];
    expected.extend_from_slice(event.as_bytes());
    let expected = sha2::Sha256::digest(&expected);
    assert_eq!(
        pcrs.value(19, HashAlg::Sha256).unwrap().unwrap().as_bytes(),
        expected.as_slice()
    );
    // The SHA-1 bank was not touched; untracked banks are reported.
    assert_eq!(
        pcrs.value(19, HashAlg::Sha1).unwrap().unwrap().as_bytes(),
        &[0xFF; 20]
    );
    assert_eq!(pcrs.value(19, HashAlg::Sha384).unwrap(), None);
    assert_eq!(
        pcrs.extend(19, &hash(HashAlg::Sha384, b"x")),
        Err(Error::UnexpectedBank(AlgId::SHA384))
    );
    assert_eq!(pcrs.extend(24, &event), Err(Error::PcrIndex(24)));
}

#[test]
fn extend_all_ignores_capped_banks_and_checks_before_changing() {
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SM3_256]).unwrap();
    let mut pcrs = PcrBanks::new(&banks, InitialState::DynamicLaunch);
    assert_eq!(pcrs.banks().collect::<Vec<_>>(), [HashAlg::Sha256]);
    let digests = crate::hash::event_digests(&banks, b"data");
    pcrs.extend_all(20, &digests).unwrap();
    let mut reference = PcrBanks::new(&banks, InitialState::DynamicLaunch);
    reference
        .extend(20, &hash(HashAlg::Sha256, b"data"))
        .unwrap();
    assert_eq!(pcrs, reference);
    assert_eq!(pcrs.extend_all(30, &digests), Err(Error::PcrIndex(30)));
    assert_eq!(pcrs, reference);
}

#[test]
fn locality_rules_of_the_pc_client_profile() {
    let allowed =
        |pcr: u32| -> Vec<u8> { (0..5).filter(|&l| may_extend(pcr, l).unwrap()).collect() };
    assert_eq!(allowed(0), [0, 1, 2, 3, 4]);
    assert_eq!(allowed(16), [0, 1, 2, 3, 4]);
    assert_eq!(allowed(23), [0, 1, 2, 3, 4]);
    assert_eq!(allowed(17), [2, 3, 4]);
    assert_eq!(allowed(18), [2, 3, 4]);
    assert_eq!(allowed(19), [2, 3]);
    assert_eq!(allowed(20), [1, 2, 3]);
    assert_eq!(allowed(21), [2]);
    assert_eq!(allowed(22), [2]);
    assert!(!may_extend(19, 7).unwrap());
    assert_eq!(may_extend(24, 2), Err(Error::PcrIndex(24)));
    // The hypervisor's locality reaches every PCR it extends.
    for pcr in [19, 20, 21] {
        assert!(may_extend(pcr, crate::events::HYPERVISOR_LOCALITY).unwrap());
    }
}

#[test]
fn emulated_launch_pcr17_is_hash_of_zero_and_region_hash() {
    let region = b"measured launch environment";
    let banks = BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA512, AlgId::SM3_256]).unwrap();
    let pcr17 = emulated_launch_pcr17(&banks, region);
    assert_eq!(pcr17.len(), 2, "SM3 cannot be predicted");
    let mut sha1_input = vec![0u8; 20];
    sha1_input.extend(sha1::Sha1::digest(region));
    assert_eq!(
        pcr17.get(HashAlg::Sha1).unwrap().as_bytes(),
        sha1::Sha1::digest(&sha1_input).as_slice()
    );
    let mut sha512_input = vec![0u8; 64];
    sha512_input.extend(sha2::Sha512::digest(region));
    assert_eq!(
        pcr17.get(HashAlg::Sha512).unwrap().as_bytes(),
        sha2::Sha512::digest(&sha512_input).as_slice()
    );
}

#[test]
fn quote_digest_hashes_selected_values_in_selection_order() {
    let banks = BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256]).unwrap();
    let mut pcrs = PcrBanks::new(&banks, InitialState::DynamicLaunch);
    pcrs.extend(17, &hash(HashAlg::Sha256, b"a")).unwrap();
    pcrs.extend(19, &hash(HashAlg::Sha256, b"b")).unwrap();
    pcrs.extend(18, &hash(HashAlg::Sha1, b"c")).unwrap();
    let value = |pcr, alg| pcrs.value(pcr, alg).unwrap().unwrap().as_bytes().to_vec();
    let mut concat = Vec::new();
    for pcr in 17..=21 {
        concat.extend(value(pcr, HashAlg::Sha256));
    }
    for pcr in [18, 20] {
        concat.extend(value(pcr, HashAlg::Sha1));
    }
    let selection = [
        (HashAlg::Sha256, 0b11111 << 17),
        (HashAlg::Sha1, (1 << 18) | (1 << 20)),
    ];
    assert_eq!(
        pcrs.quote_digest(HashAlg::Sha256, &selection)
            .unwrap()
            .as_bytes(),
        sha2::Sha256::digest(&concat).as_slice()
    );
    assert_eq!(
        pcrs.quote_digest(HashAlg::Sha256, &[(HashAlg::Sha512, 1)]),
        Err(Error::UnexpectedBank(AlgId::SHA512))
    );
    assert_eq!(
        pcrs.quote_digest(HashAlg::Sha256, &[(HashAlg::Sha1, 1 << 24)]),
        Err(Error::PcrIndex(24))
    );
}
