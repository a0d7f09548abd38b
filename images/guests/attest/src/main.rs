//! The demo control domain: attestation. Creates the attestation key (the fixed ECC P-256
//! template of `slipway-tpm`, endorsement hierarchy), asks for a nonce on its console, quotes
//! PCR17-21 in every active bank, and prints the quote, the key, the PCR values (diagnostics)
//! and the event logs from its log windows, in the transcript format of `README.md`.
//!
//! The thin glue here: volatile MMIO on the locality-0 TIS page (0xFED40000, the only TPM page
//! the hypervisor maps into a control domain), a TSC clock, and polling input from the
//! emulated 16550. Everything else is `slipway-tpm` and this crate's library.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest;

/// Built for the host (e.g. by `cargo clippy --all-targets`), the image has nothing to run on.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("slipway-guest-attest runs only as a Slipway control domain (x86_64-unknown-none)");
    std::process::exit(2);
}
