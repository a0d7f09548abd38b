//! libFuzzer entry point of the `event_log` target (`slipway_fuzz::event_log::run`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway_fuzz::event_log::run(data));
