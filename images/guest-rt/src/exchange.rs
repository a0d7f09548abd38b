//! One hypercall exchange, independent of the instruction: encode the request into the buffer,
//! let the transport run the call, check the transport status, decode and check the response.

use slipway_protocol::v1::{self, Request, ResponseOk};
use slipway_protocol::{DecodeError, EncodeError, HYPERCALL_BUFFER_SIZE, TransportStatus};

/// Why a hypercall did not give the expected answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// the request could not be encoded
    Encode(EncodeError),
    /// the hypervisor refused the call at the transport level
    Transport(TransportStatus),
    /// the hypervisor returned an unknown transport status
    UnknownStatus(u64),
    /// the response length is larger than the buffer
    ResponseTooLong(usize),
    /// the response could not be decoded
    Decode(DecodeError),
    /// the hypervisor answered with an error
    Refused(v1::Error),
    /// the answer is not the kind the request expects
    UnexpectedAnswer,
}

impl core::fmt::Display for CallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Encode(error) => write!(f, "request encoding failed: {error:?}"),
            Self::Transport(status) => write!(f, "transport refused: {status:?}"),
            Self::UnknownStatus(code) => write!(f, "unknown transport status {code:#x}"),
            Self::ResponseTooLong(len) => write!(f, "response length {len} exceeds the buffer"),
            Self::Decode(error) => write!(f, "response decoding failed: {error:?}"),
            Self::Refused(error) => {
                write!(f, "refused: {} ({:#06x})", error.message(), *error as u16)
            }
            Self::UnexpectedAnswer => f.write_str("the answer does not match the request"),
        }
    }
}

/// Runs `request` through `transport`, which receives the buffer and the request length and
/// returns the `rax` status and the `rsi` response length.
pub fn call(
    buffer: &mut [u8; HYPERCALL_BUFFER_SIZE],
    request: &Request,
    transport: impl FnOnce(&mut [u8; HYPERCALL_BUFFER_SIZE], usize) -> (u64, u64),
) -> Result<ResponseOk, CallError> {
    let len = v1::encode_request(request, buffer).map_err(CallError::Encode)?;
    let (status, response_len) = transport(buffer, len);
    match TransportStatus::from_code(status) {
        Some(TransportStatus::Ok) => {}
        Some(other) => return Err(CallError::Transport(other)),
        None => return Err(CallError::UnknownStatus(status)),
    }
    let response_len = usize::try_from(response_len).unwrap_or(usize::MAX);
    let bytes = buffer
        .get(..response_len)
        .ok_or(CallError::ResponseTooLong(response_len))?;
    let answer = v1::decode_response(bytes)
        .map_err(CallError::Decode)?
        .map_err(CallError::Refused)?;
    if answer.answers(request) {
        Ok(answer)
    } else {
        Err(CallError::UnexpectedAnswer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_protocol::v1::{DomainId, Response};

    fn answer_with(
        response: Response,
    ) -> impl FnOnce(&mut [u8; HYPERCALL_BUFFER_SIZE], usize) -> (u64, u64) {
        move |buffer, len| {
            assert!(v1::decode_request(&buffer[..len]).is_ok());
            let n = v1::encode_response(&response, buffer).unwrap();
            (0, n as u64)
        }
    }

    #[test]
    fn round_trip_and_errors() {
        let mut buffer = [0u8; HYPERCALL_BUFFER_SIZE];
        let request = Request::AssignConsole {
            domain: DomainId(3),
        };
        assert_eq!(
            call(&mut buffer, &request, answer_with(Ok(ResponseOk::Done))),
            Ok(ResponseOk::Done)
        );
        assert_eq!(
            call(
                &mut buffer,
                &request,
                answer_with(Err(v1::Error::AfterHandOff))
            ),
            Err(CallError::Refused(v1::Error::AfterHandOff))
        );
        assert_eq!(
            call(
                &mut buffer,
                &request,
                answer_with(Ok(ResponseOk::DomainCreated(DomainId(1))))
            ),
            Err(CallError::UnexpectedAnswer)
        );
        assert_eq!(
            call(&mut buffer, &request, |_, _| (
                TransportStatus::BadLength.code(),
                0
            )),
            Err(CallError::Transport(TransportStatus::BadLength))
        );
        assert_eq!(
            call(&mut buffer, &request, |_, _| (7, 0)),
            Err(CallError::UnknownStatus(7))
        );
        assert_eq!(
            call(&mut buffer, &request, |_, _| (0, 5000)),
            Err(CallError::ResponseTooLong(5000))
        );
        assert!(matches!(
            call(&mut buffer, &request, |_, _| (0, 3)),
            Err(CallError::Decode(_))
        ));
    }
}
