//! libFuzzer entry point of the `launch_config` target (`slipway_fuzz::launch_config::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::launch_config::run(data));
