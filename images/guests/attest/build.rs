//! Links the guest with slipway-guest-rt's linker script at physical 1 MiB, as a non-PIE static
//! executable (the runtime's 32-bit entry and static page tables hold absolute addresses).
fn main() {
    if std::env::var("TARGET").unwrap_or_default() == "x86_64-unknown-none" {
        let script = std::env::var("DEP_SLIPWAY_GUEST_RT_LINKER_SCRIPT")
            .expect("slipway-guest-rt exports its linker script");
        println!("cargo:rustc-link-arg-bins=-T{script}");
        // x86_64-unknown-none links static-pie by default; the last of -pie/--no-pie wins in lld.
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=0x1000");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
