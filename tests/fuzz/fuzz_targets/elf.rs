//! libFuzzer entry point of the `elf` target (`slipway_fuzz::elf::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::elf::run(data));
