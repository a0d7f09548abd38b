//! libFuzzer entry point of the `tpm_commands` target (`slipway_fuzz::tpm_commands::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::tpm_commands::run(data));
