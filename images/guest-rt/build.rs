//! Tells guest binaries where the shared guest linker script is (`DEP_SLIPWAY_GUEST_RT_LINKER_SCRIPT`).
fn main() {
    // Set by xtask when a guest is built freestanding for the host target (docs/architecture.md).
    println!("cargo::rustc-check-cfg=cfg(slipway_freestanding)");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:linker-script={dir}/guest.ld");
    println!("cargo:rerun-if-changed=guest.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
