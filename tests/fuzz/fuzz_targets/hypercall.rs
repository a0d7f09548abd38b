//! libFuzzer entry point of the `hypercall` target (`slipway_fuzz::hypercall::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::hypercall::run(data));
