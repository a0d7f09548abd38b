//! The client helper against a model server that follows the copy-once contract.

use super::*;
use crate::{HYPERCALL_BUFFER_SIZE, TransportStatus};

/// A model hypervisor: copies the request out of the guest buffer, then lets `reply` decide.
struct ModelServer<F: FnMut(Result<Request, Error>) -> (u64, Option<Response>)> {
    reply: F,
    calls: usize,
}

impl<F: FnMut(Result<Request, Error>) -> (u64, Option<Response>)> Hypercall for ModelServer<F> {
    fn message(
        &mut self,
        buffer: &mut [u8; HYPERCALL_BUFFER_SIZE],
        request_len: usize,
    ) -> (u64, u64) {
        self.calls += 1;
        let mut copy = [0u8; HYPERCALL_BUFFER_SIZE];
        copy[..request_len].copy_from_slice(&buffer[..request_len]);
        // From here on the guest page is not read again: scribbling over it changes nothing.
        buffer.fill(0xa5);
        let request = decode_request(&copy[..request_len]).map_err(Error::from);
        match (self.reply)(request) {
            (0, Some(response)) => {
                let len = encode_response(&response, buffer).unwrap();
                (0, len as u64)
            }
            (status, _) => (status, 0),
        }
    }
}

fn server<F: FnMut(Result<Request, Error>) -> (u64, Option<Response>)>(reply: F) -> ModelServer<F> {
    ModelServer { reply, calls: 0 }
}

#[test]
fn a_call_returns_the_decoded_answer() {
    let mut hv = server(|request| match request {
        Ok(Request::CreateDomain { name, .. }) if name.as_str() == "web" => {
            (0, Some(Ok(ResponseOk::DomainCreated(DomainId(4)))))
        }
        _ => (0, Some(Err(Error::NameTaken))),
    });
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    let create = |name| Request::CreateDomain {
        name: DomainName::new(name).unwrap(),
        memory_bytes: 1 << 20,
        vcpus: 1,
        capabilities: Capabilities::default(),
    };
    assert_eq!(
        call(&mut hv, &mut buffer, &create("web")),
        Ok(ResponseOk::DomainCreated(DomainId(4)))
    );
    assert_eq!(
        call(&mut hv, &mut buffer, &create("db")),
        Err(CallError::Refused(Error::NameTaken))
    );
    assert_eq!(hv.calls, 2);
}

#[test]
fn wrong_answers_statuses_and_lengths_are_errors() {
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    let mut hv = server(|_| (0, Some(Ok(ResponseOk::Done))));
    assert_eq!(
        call(&mut hv, &mut buffer, &Request::QueryBootInfo),
        Err(CallError::WrongAnswer)
    );
    assert_eq!(
        call(&mut hv, &mut buffer, &Request::HandOff),
        Err(CallError::WrongAnswer)
    );
    assert_eq!(
        call(
            &mut hv,
            &mut buffer,
            &Request::AssignConsole {
                domain: DomainId(1)
            }
        ),
        Ok(ResponseOk::Done)
    );
    let code = TransportStatus::BadBufferAddress.code();
    let mut hv = server(|_| (code, None));
    assert_eq!(
        call(&mut hv, &mut buffer, &Request::HandOff),
        Err(CallError::Transport(TransportStatus::BadBufferAddress))
    );
    let mut hv = server(|_| (7, None));
    assert_eq!(
        call(&mut hv, &mut buffer, &Request::HandOff),
        Err(CallError::UnknownStatus(7))
    );

    struct Liar(u64);
    impl Hypercall for Liar {
        fn message(&mut self, buffer: &mut [u8; HYPERCALL_BUFFER_SIZE], _: usize) -> (u64, u64) {
            buffer.fill(0);
            (0, self.0)
        }
    }
    let too_long = HYPERCALL_BUFFER_SIZE as u64 + 1;
    assert_eq!(
        call(&mut Liar(too_long), &mut buffer, &Request::HandOff),
        Err(CallError::ResponseTooLong(too_long))
    );
    assert_eq!(
        call(&mut Liar(u64::MAX), &mut buffer, &Request::HandOff),
        Err(CallError::ResponseTooLong(u64::MAX))
    );
    assert_eq!(
        call(&mut Liar(8), &mut buffer, &Request::HandOff),
        Err(CallError::Decode(crate::DecodeError::BadMagic { found: 0 }))
    );
}

#[test]
fn a_server_answers_undecodable_requests_with_the_matching_error() {
    let mut seen = None;
    let mut hv = server(|request| {
        seen = Some(request.clone());
        (0, Some(request.map(|_| ResponseOk::Done)))
    });
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    // A hand-made request with version 5.
    buffer[..7].copy_from_slice(&[0x53, 0x57, 0x52, 0x51, 0x05, 0x00, 0x0a]);
    let (status, len) = hv.message(&mut buffer, 7);
    assert_eq!(status, 0);
    assert_eq!(
        decode_response(&buffer[..len as usize]),
        Ok(Err(Error::UnsupportedVersion))
    );
    assert_eq!(seen, Some(Err(Error::UnsupportedVersion)));
}

#[test]
fn a_closure_is_a_hypercall() {
    let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
    let mut seen_len = 0;
    let mut hypercall = |page: &mut [u8; HYPERCALL_BUFFER_SIZE], len: usize| {
        seen_len = len;
        assert_eq!(decode_request(&page[..len]), Ok(Request::HandOff));
        let len = encode_response(&Err(Error::PlanIncomplete), page).unwrap();
        (0, len as u64)
    };
    assert_eq!(
        call(&mut hypercall, &mut buffer, &Request::HandOff),
        Err(CallError::Refused(Error::PlanIncomplete))
    );
    assert_eq!(seen_len, 7);
}
