//! Declares the `slipway_freestanding` cfg xtask sets for the host target used freestanding.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(slipway_freestanding)");
    println!("cargo:rerun-if-changed=build.rs");
}
