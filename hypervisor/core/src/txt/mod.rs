//! Intel TXT launch logic, built to Intel's *Measured Launched Environment Developer's Guide*.
//!
//! Everything here is pure logic over small traits, host-tested; the hypervisor binary provides
//! the hardware (GETSEC, MSRs, the TXT register spaces) and the QEMU harness a simulated SINIT
//! (`docs/measurement.md`, section "Intel TXT").
//!
//! - [`layout`]: every TXT structure, one definition each, layouts pinned at compile time;
//! - [`heap`]: the TXT heap: building the four tables pre-launch, re-reading them post-launch;
//! - [`acm`]: the SINIT ACM's checks against the platform;
//! - [`smx`]: GETSEC[CAPABILITIES]/[PARAMETERS] decoding and checks;
//! - [`mle_pt`]: the MLE page tables: the builder and the one rule checker (used by the
//!   hypervisor's self-check and by the simulated SINIT);
//! - [`pmr`], [`mtrr`]: the DMA-protected ranges and the MTRRs for SINIT;
//! - [`regs`]: the TXT configuration registers behind [`regs::TxtRegisters`];
//! - [`prelaunch`]: the MLE loader's sequence up to GETSEC[SENTER], over the one hardware seam
//!   [`prelaunch::TxtHardware`];
//! - [`post`]: the post-launch checks;
//! - [`simulated`]: the SIMULATED platform of `launch=txt-simulated` and its fault injection.

pub mod acm;
pub mod heap;
pub mod layout;
pub mod mle_pt;
pub mod mtrr;
pub mod pmr;
pub mod post;
pub mod prelaunch;
pub mod regs;
pub mod simulated;
pub mod smx;

#[cfg(test)]
mod tests;
