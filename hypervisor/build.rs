//! Links the hypervisor with its own linker script at physical address 2 MiB, as a non-PIE
//! static executable (the 32-bit entry stub uses absolute addresses, which a PIE cannot hold).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // x86_64-unknown-none links static-pie by default; the last of -pie/--no-pie wins in lld.
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=0x1000");
        // A GNU build id (a hash of the linked file) ties the shipped, stripped image to the
        // debug file xtask keeps beside the bundle.
        println!("cargo:rustc-link-arg-bins=--build-id=sha1");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
