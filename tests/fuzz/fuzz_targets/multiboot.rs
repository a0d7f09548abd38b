//! libFuzzer entry point of the `multiboot` target (`slipway_fuzz::multiboot::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::multiboot::run(data));
