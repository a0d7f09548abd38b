//! The emulated dynamic launch under QEMU + swtpm .
//!
//! QEMU emulates neither SENTER nor SKINIT, and its `tpm-tis` refuses locality 4 to the guest.
//! swtpm's control channel has the commands a dynamic launch performs on a TPM (hash start,
//! data, end: PCR17 = H(0..0 || H(data)), PCR18-22 = 0, in every bank). Here the harness plays
//! the CPU: the hypervisor asks for the launch on the debugcon port, and the harness measures
//! the region it declared. The pieces:
//!
//! - [`ctrl`]: swtpm's control protocol (`tpm_ioctl.h`): command codes, framing, a typed
//!   [`CtrlClient`]; errors name the command and the TPM result.
//! - [`proxy`]: the [`CtrlProxy`] between QEMU and swtpm's single control connection; forwards
//!   QEMU's requests, including `CMD_SET_DATAFD` with its data socket passed by SCM_RIGHTS, and
//!   serializes the harness's own requests with them.
//! - [`tpm`]: [`EmulatedTpm`], swtpm plus the proxy, stopped (`CMD_SHUTDOWN`, then kill) on
//!   every exit path.
//! - [`qmp`]: a QMP client (`stop`, `cont`, `pmemsave`, `query-status`, `quit`).
//! - [`request`] and [`driver`]: the request line and the [`LaunchDriver`] that serves the one
//!   launch request of a boot.
//! - [`EmulatedLaunch`]: all of it for one QEMU run, with the QEMU arguments.
//!
//! # The handshake (hypervisor side)
//!
//! 1. The pre-launch stage reads port 0xe9. [`driver::DEBUGCON_READBACK`] (0x4c, `L`) means
//!    this harness is attached; 0xe9 is a plain debugcon, 0xff no device: then there is no
//!    emulated launch, and the boot is unmeasured (say so, let the policy decide).
//! 2. It writes `SLIPWAY-LAUNCH <start-hex> <length-hex>\n` to port 0xe9 (the region its
//!    MLE-style header declares), once.
//! 3. It polls PCR17 through its TIS driver (locality 2) until it equals its own
//!    `H(0..0 || H(region))` in the bank it polls, or a deadline passes. The harness pauses
//!    the guest from its `stop` until after `CMD_HASH_END`, so the guest never sees the middle
//!    of the sequence from its own instructions; but a TPM command the guest issued just
//!    before the pause may still execute inside the sequence, so an intermediate value (0 or
//!    all-FF) must never be taken as the end: only equality counts.
//! 4. It then checks every active bank; only then is the launch done. Deadline passed or a
//!    bank differs: unmeasured.
//!
//! The guest cannot tell "refused" from "no answer" except by the deadline; the harness's
//! report ([`LaunchReport`]) says which.

pub mod ctrl;
pub mod driver;
pub mod proxy;
pub mod qmp;
pub mod request;
pub mod tpm;

use std::path::Path;

use slipway_measure::BankSet;

pub use ctrl::{CtrlClient, CtrlCommand, CtrlConnection, CtrlError, CtrlTransport};
pub use driver::{LaunchDriver, LaunchOutcome, LaunchReport, TxtSenterAttempt, TxtSenterOutcome};
pub use proxy::{CtrlProxy, Forwarded, Origin, ProxyTransport};
pub use qmp::{Qmp, QmpError};
pub use request::LaunchRequest;
pub use tpm::{EmulatedTpm, TpmError, TpmOptions, TpmStopReport};

/// What one run's emulated launch produced.
#[derive(Debug, Clone)]
pub struct EmulatedLaunchReport {
    pub launch: LaunchReport,
    pub tpm: TpmStopReport,
}

/// swtpm, the proxy and the launch driver for one QEMU run, in `dir`.
///
/// Start it before QEMU (QEMU connects to its sockets at start), add
/// [`EmulatedLaunch::qemu_args`] to QEMU's command line, and call [`EmulatedLaunch::finish`]
/// after QEMU has exited. Dropping it without `finish` stops everything too.
pub struct EmulatedLaunch {
    // Field order is drop order: the driver stops before the TPM.
    driver: LaunchDriver,
    tpm: EmulatedTpm,
}

impl EmulatedLaunch {
    /// Starts swtpm, the proxy and the driver. `banks`: the banks the report computes the
    /// expected PCR17 for (the TPM's active banks; the default swtpm has all four).
    /// `ram`: the shared guest-RAM file, for the simulated TXT launch (`None`: a
    /// `SLIPWAY-TXT-SENTER` request fails).
    pub fn start(
        dir: &Path,
        options: &TpmOptions,
        banks: BankSet,
        ram: Option<std::path::PathBuf>,
    ) -> Result<EmulatedLaunch, TpmError> {
        let tpm = EmulatedTpm::start(dir, options)?;
        let driver = LaunchDriver::start(dir, tpm.client(), banks, ram)?;
        Ok(EmulatedLaunch { driver, tpm })
    }

    /// QEMU's arguments: the `tpm-tis` device through the proxy, debugcon on port 0xe9 to the
    /// driver, and QMP.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = self.tpm.qemu_args();
        args.extend(self.driver.qemu_args());
        args
    }

    pub fn tpm(&self) -> &EmulatedTpm {
        &self.tpm
    }

    pub fn driver(&self) -> &LaunchDriver {
        &self.driver
    }

    /// Stops the driver, then swtpm and the proxy; returns what they saw.
    pub fn finish(mut self) -> Result<EmulatedLaunchReport, TpmError> {
        let launch = self.driver.finish();
        let tpm = self.tpm.stop()?;
        Ok(EmulatedLaunchReport { launch, tpm })
    }
}
