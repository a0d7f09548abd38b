//! The build script of every guest image (domB and the guests in `images/guests/*`, each
//! naming this file with `build = ".../guest-rt/link.rs"`): links the binaries with
//! slipway-guest-rt's linker script at physical 1 MiB, as non-PIE static executables (the
//! runtime's 32-bit entry and static page tables hold absolute addresses). One file, so that
//! every image links the same way, whichever of the two targets it names in
//! `[package.metadata.slipway] target` (docs/architecture.md, "Targets of freestanding
//! binaries"); xtask adds the host target's code-generation flags. Every image carries a GNU
//! build id (a hash of the linked file; `guest.ld` keeps its note), which ties the shipped,
//! stripped image to the debug file xtask keeps beside the bundle.
fn main() {
    let script = || {
        std::env::var("DEP_SLIPWAY_GUEST_RT_LINKER_SCRIPT")
            .expect("slipway-guest-rt exports its linker script")
    };
    match std::env::var("TARGET").unwrap_or_default().as_str() {
        "x86_64-unknown-none" => {
            println!("cargo:rustc-link-arg-bins=-T{}", script());
            // x86_64-unknown-none links static-pie by default; the last of -pie/--no-pie wins in lld.
            println!("cargo:rustc-link-arg-bins=--no-pie");
            println!("cargo:rustc-link-arg-bins=-zmax-page-size=0x1000");
            println!("cargo:rustc-link-arg-bins=--build-id=sha1");
        }
        "x86_64-unknown-linux-gnu" => {
            // The host target used freestanding, through the C compiler driver: no C runtime,
            // no libraries, guest-rt's entry and layout.
            for arg in [
                "-nostartfiles",
                "-nostdlib",
                "-static",
                "-no-pie",
                "-Wl,-z,max-page-size=0x1000",
                "-Wl,--build-id=sha1",
            ] {
                println!("cargo:rustc-link-arg-bins={arg}");
            }
            println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script());
        }
        _ => {}
    }
    // Only the environment matters (a change to this file rebuilds and reruns the script
    // anyway); without a rerun-if line any change in the package would rerun it.
    println!("cargo:rerun-if-env-changed=DEP_SLIPWAY_GUEST_RT_LINKER_SCRIPT");
}
