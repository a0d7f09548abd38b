//! The byte-level link to a TPM: one command out, one response back.

use core::fmt;

/// Sends TPM command bytes and receives the response. Implemented by the TIS driver
/// ([`crate::tis::Tis`]); the host tests implement it over swtpm's socket.
pub trait TpmTransport {
    /// Why a command could not be exchanged.
    type Error: fmt::Debug + fmt::Display;

    /// Sends the complete `command` and writes the complete response into `response`;
    /// returns the response length.
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error>;

    /// Called before a command is sent again because the TPM answered TPM_RC_RETRY, _YIELDED,
    /// _TESTING or _NV_RATE; `attempt` counts from 0. A transport with a clock waits here (the
    /// TIS driver backs off 20 ms, doubling); the default does not wait.
    fn before_retry(&mut self, attempt: u32) {
        let _ = attempt;
    }
}

impl<T: TpmTransport + ?Sized> TpmTransport for &mut T {
    type Error = T::Error;

    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        (**self).transmit(command, response)
    }

    fn before_retry(&mut self, attempt: u32) {
        (**self).before_retry(attempt)
    }
}
