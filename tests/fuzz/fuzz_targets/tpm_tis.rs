//! libFuzzer entry point of the `tpm_tis` target (`slipway_fuzz::tpm_tis::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::tpm_tis::run(data));
