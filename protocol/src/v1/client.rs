//! The client side of a call, over the platform's hypercall instruction.

use core::fmt;

use super::{Error, Request, ResponseOk, decode_response, encode_request};
use crate::{DecodeError, EncodeError, HYPERCALL_BUFFER_SIZE, TransportStatus};

/// The hypercall instruction as a client sees it; the guest's platform glue implements it with
/// `VMMCALL` or `VMCALL` (see the crate docs for the registers).
pub trait Hypercall {
    /// Issues [`crate::CALL_MESSAGE`] with the request in `buffer[..request_len]` (`rdi` = the
    /// buffer's guest-physical address, `rsi` = `request_len`) and returns `(rax, rsi)`.
    fn message(
        &mut self,
        buffer: &mut [u8; HYPERCALL_BUFFER_SIZE],
        request_len: usize,
    ) -> (u64, u64);
}

/// A closure `(buffer, request_len) -> (rax, rsi)` is a hypercall too.
impl<F: FnMut(&mut [u8; HYPERCALL_BUFFER_SIZE], usize) -> (u64, u64)> Hypercall for F {
    fn message(
        &mut self,
        buffer: &mut [u8; HYPERCALL_BUFFER_SIZE],
        request_len: usize,
    ) -> (u64, u64) {
        self(buffer, request_len)
    }
}

/// Why a call did not produce the expected answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be encoded.
    Encode(EncodeError),
    /// The hypervisor refused the buffer or call before reading the request.
    Transport(TransportStatus),
    /// The hypervisor returned a status code this client does not know.
    UnknownStatus(u64),
    /// The response length in `rsi` is larger than the buffer.
    ResponseTooLong(u64),
    /// The response did not decode.
    Decode(DecodeError),
    /// The hypervisor refused the request.
    Refused(Error),
    /// The hypervisor answered with a success of the wrong kind for the request.
    WrongAnswer,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Encode(error) => write!(f, "cannot encode the request: {error}"),
            Self::Transport(status) => write!(f, "the hypervisor refused the call: {status:?}"),
            Self::UnknownStatus(code) => write!(f, "unknown transport status {code:#x}"),
            Self::ResponseTooLong(len) => write!(f, "response length {len} exceeds the buffer"),
            Self::Decode(error) => write!(f, "cannot decode the response: {error}"),
            Self::Refused(error) => write!(f, "refused: {error} ({:#06x})", *error as u16),
            Self::WrongAnswer => f.write_str("the response does not answer the request"),
        }
    }
}

impl core::error::Error for CallError {}

/// Sends `request` through `hypercall` using `buffer` and returns the checked answer: an
/// error response becomes [`CallError::Refused`], an answer of the wrong kind
/// [`CallError::WrongAnswer`]. For [`Request::HandOff`] and [`Request::Shutdown`], which do not
/// return on success, any return is an error.
pub fn call(
    hypercall: &mut impl Hypercall,
    buffer: &mut [u8; HYPERCALL_BUFFER_SIZE],
    request: &Request,
) -> Result<ResponseOk, CallError> {
    let request_len = encode_request(request, buffer).map_err(CallError::Encode)?;
    let (status, response_len) = hypercall.message(buffer, request_len);
    match TransportStatus::from_code(status) {
        Some(TransportStatus::Ok) => {}
        Some(status) => return Err(CallError::Transport(status)),
        None => return Err(CallError::UnknownStatus(status)),
    }
    let response = usize::try_from(response_len)
        .ok()
        .and_then(|len| buffer.get(..len))
        .ok_or(CallError::ResponseTooLong(response_len))?;
    let answer = decode_response(response)
        .map_err(CallError::Decode)?
        .map_err(CallError::Refused)?;
    if answer.answers(request) {
        Ok(answer)
    } else {
        Err(CallError::WrongAnswer)
    }
}
