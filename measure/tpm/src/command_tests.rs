//! Command helpers against canned responses: pinned command bytes, response parsing, errors.

use std::{collections::VecDeque, format, string::String, vec, vec::Vec};

use tpm2_protocol::data::TpmCc;

use slipway_measure::Error as MeasureError;

use crate::{
    AkTemplate, AlgId, BankSet, CommandError, Digest, DigestList, HashAlg, Hierarchy, PcrMask,
    ResponseCode, StartupType, Tpm, TpmTransport,
};

fn list(digests: &[Digest]) -> DigestList {
    let mut list = DigestList::new();
    for digest in digests {
        list.push(*digest).unwrap();
    }
    list
}

fn filled(alg: HashAlg, byte: u8) -> Digest {
    Digest::filled(alg.into(), byte)
}

#[derive(Default)]
struct Mock {
    sent: Vec<Vec<u8>>,
    replies: VecDeque<Vec<u8>>,
}

#[derive(Debug, PartialEq)]
struct MockError;

impl core::fmt::Display for MockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("mock transport has no reply")
    }
}

impl TpmTransport for Mock {
    type Error = MockError;
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, MockError> {
        self.sent.push(command.to_vec());
        let reply = self.replies.pop_front().ok_or(MockError)?;
        response[..reply.len()].copy_from_slice(&reply);
        Ok(reply.len())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A success response with `parameters` (tag NO_SESSIONS).
fn ok(parameters: &[u8]) -> Vec<u8> {
    let mut r = vec![0x80, 0x01];
    r.extend(((10 + parameters.len()) as u32).to_be_bytes());
    r.extend([0, 0, 0, 0]);
    r.extend(parameters);
    r
}

/// A success response to a command with sessions: parameterSize, parameters, one empty
/// password-session response (nonce 0, attributes 1, hmac 0).
fn ok_sessions(handles: &[u8], parameters: &[u8]) -> Vec<u8> {
    let mut body = handles.to_vec();
    body.extend((parameters.len() as u32).to_be_bytes());
    body.extend(parameters);
    body.extend([0, 0, 1, 0, 0]);
    let mut r = vec![0x80, 0x02];
    r.extend(((10 + body.len()) as u32).to_be_bytes());
    r.extend([0, 0, 0, 0]);
    r.extend(body);
    r
}

fn error(code: u32) -> Vec<u8> {
    let mut r = vec![0x80, 0x01, 0, 0, 0, 10];
    r.extend(code.to_be_bytes());
    r
}

fn tpm(replies: Vec<Vec<u8>>) -> Tpm<Mock> {
    Tpm::new(Mock {
        sent: Vec::new(),
        replies: replies.into(),
    })
}

#[test]
fn startup_bytes_are_pinned() {
    let mut tpm = tpm(vec![ok(&[])]);
    tpm.startup(StartupType::Clear).unwrap();
    assert_eq!(hex(&tpm.transport().sent[0]), "80010000000c000001440000");
    assert_eq!(tpm.counts().get(TpmCc::Startup), 1);
}

#[test]
fn pcr_extend_bytes_are_pinned_and_carry_every_bank() {
    let banks = BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256]).unwrap();
    let sha256 = Digest::new(AlgId::SHA256, &[0xaa; 32]).unwrap();
    let sha1 = Digest::new(AlgId::SHA1, &[0xbb; 20]).unwrap();
    let mut tpm = tpm(vec![ok_sessions(&[], &[])]);
    // Given in another order than the banks: sent in bank order.
    tpm.pcr_extend(23, &list(&[sha256, sha1]), &banks).unwrap();
    let expected = unhex(&format!(
        "8002 00000057 00000182 00000017 00000009 40000009 0000 01 0000 00000002 0004 {} 000b {}",
        "bb".repeat(20),
        "aa".repeat(32)
    ));
    assert_eq!(hex(&tpm.transport().sent[0]), hex(&expected));
}

#[test]
fn pcr_extend_refuses_an_incomplete_or_foreign_bank_set_before_sending() {
    let banks = BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256]).unwrap();
    let sha256 = Digest::new(AlgId::SHA256, &[0xaa; 32]).unwrap();
    let sha384 = filled(HashAlg::Sha384, 1);
    let mut tpm = tpm(vec![]);
    let sha1 = Digest::new(AlgId::SHA1, &[0xbb; 20]).unwrap();
    assert_eq!(
        tpm.pcr_extend(19, &list(&[sha256]), &banks),
        Err(CommandError::Digests(MeasureError::MissingBank(
            AlgId::SHA1
        )))
    );
    assert_eq!(
        tpm.pcr_extend(19, &list(&[sha256, sha1, sha384]), &banks),
        Err(CommandError::Digests(MeasureError::UnexpectedBank(
            AlgId::SHA384
        )))
    );
    assert_eq!(
        tpm.pcr_extend(24, &list(&[sha256, sha1]), &banks),
        Err(CommandError::InvalidPcr(24))
    );
    assert_eq!(
        tpm.pcr_extend(16, &list(&[sha256, sha1]), &BankSet::empty()),
        Err(CommandError::EmptySelection)
    );
    assert_eq!(tpm.counts().total(), 0);
}

#[test]
fn locality_error_is_decoded() {
    let banks = BankSet::single(HashAlg::Sha256);
    let mut tpm = tpm(vec![error(0x907)]);
    let result = tpm.pcr_extend(21, &list(&[filled(HashAlg::Sha256, 0)]), &banks);
    let Err(CommandError::Tpm { command, rc }) = &result else {
        panic!("{result:?}");
    };
    assert_eq!(*command, TpmCc::PcrExtend);
    assert!(rc.is_locality());
    assert_eq!(*rc, ResponseCode::LOCALITY);
    assert_eq!(
        format!("{}", result.unwrap_err()),
        "TPM_CC_PCR_Extend failed: 0x907 TPM_RC_LOCALITY: the command is not allowed at the current locality"
    );
}

#[test]
fn pcr_allocation_distinguishes_active_banks() {
    let mut params = unhex("00 00000005 00000004");
    params.extend(unhex(
        "0004 03 ffffff 000b 03 ffffff 000c 03 000000 000d 03 ffffff",
    ));
    let mut tpm = tpm(vec![ok(&params)]);
    let allocation = tpm.pcr_allocation().unwrap();
    assert_eq!(
        hex(&tpm.transport().sent[0]),
        "8001000000160000017a000000050000000000000001"
    );
    assert_eq!(
        allocation.active_banks(),
        BankSet::from_algs(&[AlgId::SHA1, AlgId::SHA256, AlgId::SHA512]).unwrap()
    );
    assert_eq!(allocation.allocated(AlgId::SHA384), PcrMask::EMPTY);
    assert_eq!(allocation.allocated(AlgId::SHA1), PcrMask::range(0, 23));
    assert_eq!(
        format!("{}", allocation.active_banks()),
        "sha1,sha256,sha512"
    );
}

#[test]
fn pcr_read_repeats_until_every_pcr_is_returned() {
    // First answer: PCRs 17-18 only; second: 19.
    let mut first = unhex("00000007 00000001 000b 03 000006 00000002");
    first.extend(unhex(&format!(
        "0020 {} 0020 {}",
        "11".repeat(32),
        "22".repeat(32)
    )));
    let mut second = unhex("00000008 00000001 000b 03 000008 00000001");
    second.extend(unhex(&format!("0020 {}", "33".repeat(32))));
    let mut tpm = tpm(vec![ok(&first), ok(&second)]);
    let values = tpm.pcr_read(AlgId::SHA256, PcrMask::range(17, 19)).unwrap();
    assert_eq!(values.get(17).unwrap().as_bytes(), &[0x11; 32]);
    assert_eq!(values.get(18).unwrap().as_bytes(), &[0x22; 32]);
    assert_eq!(values.get(19).unwrap().as_bytes(), &[0x33; 32]);
    assert_eq!(values.get(20), None);
    assert_eq!(values.update_counter(), 8);
    let sent = &tpm.transport().sent;
    assert_eq!(hex(&sent[0]), "8001000000140000017e00000001000b0300000e");
    assert_eq!(hex(&sent[1]), "8001000000140000017e00000001000b03000008");
    assert_eq!(tpm.counts().get(TpmCc::PcrRead), 2);
}

#[test]
fn pcr_read_rejects_answers_that_do_not_match_the_request() {
    // Returns PCR 16, which was not asked for.
    let mut params = unhex("00000001 00000001 000b 03 000001 00000001");
    params.extend(unhex(&format!("0020 {}", "11".repeat(32))));
    let mut tpm = tpm(vec![ok(&params)]);
    assert!(matches!(
        tpm.pcr_read(AlgId::SHA256, PcrMask::range(17, 17)),
        Err(CommandError::UnexpectedResponse {
            command: TpmCc::PcrRead,
            ..
        })
    ));
    // A 20-byte value for a SHA-256 PCR.
    let mut params = unhex("00000001 00000001 000b 03 000002 00000001");
    params.extend(unhex(&format!("0014 {}", "11".repeat(20))));
    let mut tpm = crate::command_tests::tpm(vec![ok(&params)]);
    assert!(matches!(
        tpm.pcr_read(AlgId::SHA256, PcrMask::range(17, 17)),
        Err(CommandError::Digests(_))
    ));
}

#[test]
fn truncated_or_garbage_responses_are_errors() {
    for reply in [
        vec![0x80],
        unhex("8001 0000000a 00000000"), // GetCapability without parameters
        unhex("8001 0000000e 00000000 01020304"),
        unhex("1234 0000000a 00000000"),
    ] {
        let mut tpm = tpm(vec![reply.clone()]);
        assert!(
            matches!(
                tpm.pcr_allocation(),
                Err(CommandError::MalformedResponse { .. })
            ),
            "{}",
            hex(&reply)
        );
    }
    let mut tpm = tpm(vec![]);
    assert!(matches!(
        tpm.startup(StartupType::Clear),
        Err(CommandError::Transport {
            command: TpmCc::Startup,
            error: MockError
        })
    ));
}

#[test]
fn create_primary_sends_the_documented_template() {
    let mut tpm = tpm(vec![error(0x902)]);
    let result = tpm.create_primary(Hierarchy::Endorsement, AkTemplate::EccP256);
    assert!(matches!(result, Err(CommandError::Tpm { .. })));
    let expected = unhex(
        "8002 00000041 00000131 4000000b 00000009 40000009 0000 01 0000
         0004 0000 0000
         0018 0023 000b 00050072 0000 0010 0018 000b 0003 0010 0000 0000
         0000 00000000",
    );
    assert_eq!(hex(&tpm.transport().sent[0]), hex(&expected));
}

#[test]
fn quote_refuses_long_nonce_and_empty_selection() {
    let key = crate::command::tests_support::key(0x8000_0000);
    let banks = BankSet::single(HashAlg::Sha256);
    let mut tpm = tpm(vec![]);
    assert_eq!(
        tpm.quote(&key, &[0; 67], &banks, PcrMask::QUOTE),
        Err(CommandError::NonceTooLong { len: 67 })
    );
    assert_eq!(
        tpm.quote(&key, &[0; 16], &BankSet::empty(), PcrMask::QUOTE),
        Err(CommandError::EmptySelection)
    );
    assert_eq!(tpm.counts().total(), 0);
}

#[test]
fn counts_print_per_command() {
    let banks = BankSet::single(HashAlg::Sha256);
    let mut tpm = tpm(vec![ok(&[]), ok_sessions(&[], &[]), ok_sessions(&[], &[])]);
    tpm.startup(StartupType::Clear).unwrap();
    for _ in 0..2 {
        tpm.pcr_extend(16, &list(&[filled(HashAlg::Sha256, 1)]), &banks)
            .unwrap();
    }
    assert_eq!(
        format!("{}", tpm.counts()),
        "3 TPM commands (TPM_CC_Startup 1, TPM_CC_PCR_Extend 2)"
    );
}

#[test]
fn retry_codes_resend_the_command_a_bounded_number_of_times() {
    let mut tpm = tpm(vec![error(0x922), error(0x90a), ok(&[])]);
    tpm.startup(StartupType::Clear).unwrap();
    assert_eq!(tpm.counts().get(TpmCc::Startup), 3);
    let sent = &tpm.transport().sent;
    assert!(sent.iter().all(|command| command == &sent[0]));

    let replies = vec![error(0x922); crate::command::MAX_RETRIES as usize + 1];
    let mut tpm = crate::command_tests::tpm(replies);
    assert_eq!(
        tpm.startup(StartupType::Clear),
        Err(CommandError::Tpm {
            command: TpmCc::Startup,
            rc: ResponseCode(0x922)
        })
    );
    assert_eq!(tpm.counts().total(), crate::command::MAX_RETRIES + 1);
}
