//! libFuzzer entry point of the `transcript` target (`slipway_fuzz::transcript::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::transcript::run(data));
