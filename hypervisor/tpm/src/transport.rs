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
}

impl<T: TpmTransport + ?Sized> TpmTransport for &mut T {
    type Error = T::Error;

    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        (**self).transmit(command, response)
    }
}
