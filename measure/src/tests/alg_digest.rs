use crate::*;

#[test]
fn algorithm_ids_sizes_and_names() {
    for (alg, id, size, name) in [
        (HashAlg::Sha1, 0x0004, 20, "sha1"),
        (HashAlg::Sha256, 0x000B, 32, "sha256"),
        (HashAlg::Sha384, 0x000C, 48, "sha384"),
        (HashAlg::Sha512, 0x000D, 64, "sha512"),
    ] {
        assert_eq!(alg.id(), AlgId(id));
        assert_eq!(alg.digest_size(), size);
        assert_eq!(AlgId(id).digest_size(), Some(size));
        assert_eq!(AlgId(id).hash_alg(), Some(alg));
        assert_eq!(alg.name(), name);
        assert_eq!(HashAlg::from_name(name), Some(alg));
    }
    for (id, size) in [(0x0012, 32), (0x0027, 32), (0x0028, 48), (0x0029, 64)] {
        assert_eq!(AlgId(id).digest_size(), Some(size));
        assert_eq!(AlgId(id).hash_alg(), None, "Slipway cannot hash {id:#x}");
    }
    assert_eq!(AlgId(0x0001).digest_size(), None);
    assert_eq!(AlgId::SM3_256.to_string(), "sm3_256");
    assert_eq!(AlgId(0x1234).to_string(), "alg 0x1234");
}

#[test]
fn bank_sets_keep_order_and_reject_duplicates_and_overflow() {
    let set = BankSet::from_algs(&[AlgId::SHA384, AlgId::SM3_256, AlgId::SHA1]).unwrap();
    let algs: Vec<AlgId> = set.iter().map(|bank| bank.alg).collect();
    assert_eq!(algs, [AlgId::SHA384, AlgId::SM3_256, AlgId::SHA1]);
    assert_eq!(
        set.supported().collect::<Vec<_>>(),
        [HashAlg::Sha384, HashAlg::Sha1]
    );
    assert_eq!(
        set.unsupported().map(|bank| bank.alg).collect::<Vec<_>>(),
        [AlgId::SM3_256]
    );
    assert!(set.has_unsupported());
    assert!(!BankSet::all_supported().has_unsupported());
    assert_eq!(set.to_string(), "sha384,sm3_256,sha1");

    assert_eq!(
        BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA1]),
        Err(Error::DuplicateBank(AlgId::SHA1))
    );
    assert_eq!(
        BankSet::from_algs(&[AlgId(0x0001)]),
        Err(Error::UnknownDigestSize(AlgId(0x0001)))
    );
    let mut full = BankSet::empty();
    for id in 0x100..0x108 {
        full.push(Bank::with_size(AlgId(id), 32).unwrap()).unwrap();
    }
    assert_eq!(
        full.push(Bank::with_size(AlgId(0x200), 32).unwrap()),
        Err(Error::TooManyBanks)
    );
}

#[test]
fn bank_sizes_are_checked() {
    assert!(Bank::with_size(AlgId::SHA256, 32).is_ok());
    assert_eq!(
        Bank::with_size(AlgId::SHA256, 20),
        Err(Error::DigestLength {
            alg: AlgId::SHA256,
            len: 20,
            expected: 32
        })
    );
    assert_eq!(
        Bank::with_size(AlgId(0x7777), 65),
        Err(Error::DigestTooLong {
            alg: AlgId(0x7777),
            len: 65
        })
    );
    assert!(Bank::with_size(AlgId(0x7777), 0).is_err());
    assert_eq!(Bank::with_size(AlgId(0x7777), 17).unwrap().size(), 17);
}

#[test]
fn digests_check_length_and_format() {
    let digest = Digest::new(AlgId::SHA1, &[0xab; 20]).unwrap();
    assert_eq!(digest.as_bytes(), &[0xab; 20]);
    assert_eq!(digest.hash_alg(), Some(HashAlg::Sha1));
    assert_eq!(digest.to_string(), "ab".repeat(20));
    assert_eq!(format!("{digest:?}"), format!("sha1:{}", "ab".repeat(20)));
    assert_eq!(
        Digest::new(AlgId::SHA1, &[0; 32]),
        Err(Error::DigestLength {
            alg: AlgId::SHA1,
            len: 32,
            expected: 20
        })
    );
    assert_eq!(Digest::zero(HashAlg::Sha512).as_bytes(), &[0; 64]);
    let sm3 = Digest::filled(Bank::new(AlgId::SM3_256).unwrap(), 0xFF);
    assert_eq!(sm3.as_bytes(), &[0xFF; 32]);
    assert_eq!(sm3.hash_alg(), None);
}

#[test]
fn digest_lists_reorder_to_a_bank_set_and_name_what_is_missing_or_extra() {
    let banks = BankSet::from_algs(&[AlgId::SHA256, AlgId::SHA1]).unwrap();
    let mut list = DigestList::new();
    list.push(Digest::zero(HashAlg::Sha1)).unwrap();
    assert_eq!(
        list.ordered_for(&banks),
        Err(Error::MissingBank(AlgId::SHA256))
    );
    list.push(Digest::zero(HashAlg::Sha256)).unwrap();
    let ordered = list.ordered_for(&banks).unwrap();
    let algs: Vec<AlgId> = ordered.iter().map(|d| d.alg()).collect();
    assert_eq!(algs, [AlgId::SHA256, AlgId::SHA1]);
    assert_eq!(ordered.banks(), banks);
    list.push(Digest::zero(HashAlg::Sha384)).unwrap();
    assert_eq!(
        list.ordered_for(&banks),
        Err(Error::UnexpectedBank(AlgId::SHA384))
    );
    assert_eq!(
        list.push(Digest::zero(HashAlg::Sha1)),
        Err(Error::DuplicateBank(AlgId::SHA1))
    );
    // A digest of the right algorithm but the wrong size for a header-declared bank.
    let odd = BankSet::from_algs(&[]).unwrap();
    assert!(odd.is_empty());
    let mut unknown_banks = BankSet::empty();
    unknown_banks
        .push(Bank::with_size(AlgId(0x4242), 16).unwrap())
        .unwrap();
    let mut wrong = DigestList::new();
    wrong
        .push(Digest::for_bank(Bank::with_size(AlgId(0x4242), 8).unwrap(), &[1; 8]).unwrap())
        .unwrap();
    assert_eq!(
        wrong.ordered_for(&unknown_banks),
        Err(Error::DigestLength {
            alg: AlgId(0x4242),
            len: 8,
            expected: 16
        })
    );
}

#[test]
fn errors_name_their_cause() {
    let message = Error::LogFull {
        needed: 100,
        available: 10,
    }
    .to_string();
    assert_eq!(
        message,
        "event log buffer full: the event needs 100 bytes, 10 are left"
    );
    assert_eq!(
        Error::MissingBank(AlgId::SHA384).to_string(),
        "no digest for active bank sha384"
    );
}

#[test]
fn alg_id_converts_losslessly_to_and_from_the_protocol_wire_type() {
    use slipway_protocol::v1::TpmAlgId;
    for raw in 0..=u16::MAX {
        let wire = TpmAlgId(raw);
        let alg = AlgId::from(wire);
        assert_eq!(alg, AlgId(raw));
        assert_eq!(TpmAlgId::from(alg), wire);
        assert_eq!(alg.digest_size(), wire.digest_len());
    }
    for (alg, wire) in [
        (AlgId::SHA1, TpmAlgId::SHA1),
        (AlgId::SHA256, TpmAlgId::SHA256),
        (AlgId::SHA384, TpmAlgId::SHA384),
        (AlgId::SHA512, TpmAlgId::SHA512),
        (AlgId::SM3_256, TpmAlgId::SM3_256),
        (AlgId::SHA3_256, TpmAlgId::SHA3_256),
        (AlgId::SHA3_384, TpmAlgId::SHA3_384),
        (AlgId::SHA3_512, TpmAlgId::SHA3_512),
    ] {
        assert_eq!(TpmAlgId::from(alg), wire);
    }
}
