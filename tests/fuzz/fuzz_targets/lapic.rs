//! libFuzzer entry point of the `lapic` target (`slipway_fuzz::lapic::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::lapic::run(data));
