//! The log-window descriptor: pinned bytes, decoding checks, and the window placement.

use super::*;

#[test]
fn descriptor_encodes_to_pinned_bytes() {
    let descriptor = LogWindowDescriptor::for_log(0x1234).unwrap();
    assert_eq!(
        to_hex(&descriptor.encode()),
        "53 4c 57 59 4c 4f 47 00 34 12 00 00 00 00 00 00"
    );
    assert_eq!(
        to_hex(&LogWindowDescriptor::NONE.encode()),
        "53 4c 57 59 4c 4f 47 00 00 00 00 00 00 00 00 00"
    );
}

#[test]
fn descriptor_round_trips_and_yields_the_log() {
    let mut window = LogWindowDescriptor::for_log(3).unwrap().encode().to_vec();
    window.extend([1, 2, 3, 0, 0]);
    assert_eq!(
        LogWindowDescriptor::decode(&window),
        Ok(LogWindowDescriptor { length: 3 })
    );
    assert_eq!(
        LogWindowDescriptor::log_in(&window),
        Ok(Some(&[1u8, 2, 3][..]))
    );
    let none = LogWindowDescriptor::NONE.encode();
    assert_eq!(LogWindowDescriptor::log_in(&none), Ok(None));
}

#[test]
fn bad_descriptors_are_refused() {
    let mut window = LogWindowDescriptor::for_log(3).unwrap().encode().to_vec();
    window.extend([1, 2, 3]);
    assert_eq!(
        LogWindowDescriptor::decode(&window[..15]),
        Err(LogWindowError::TooShort)
    );
    assert_eq!(
        LogWindowDescriptor::decode(&window[..18]),
        Err(LogWindowError::LengthPastWindow)
    );
    let mut reserved = window.clone();
    reserved[15] = 1;
    assert_eq!(
        LogWindowDescriptor::decode(&reserved),
        Err(LogWindowError::ReservedNotZero)
    );
    let mut magic = window.clone();
    magic[7] = b'X';
    assert_eq!(
        LogWindowDescriptor::decode(&magic),
        Err(LogWindowError::BadMagic)
    );
    assert_eq!(
        LogWindowDescriptor::for_log(LOG_WINDOW_CAPACITY + 1),
        Err(LogWindowError::LengthPastWindow)
    );
    assert!(LogWindowDescriptor::for_log(LOG_WINDOW_CAPACITY).is_ok());
}

#[test]
fn windows_are_pinned_and_disjoint() {
    assert_eq!(SLIPWAY_LOG_GPA, 0xf000_0000);
    assert_eq!(FIRMWARE_LOG_GPA, 0xf004_0000);
    assert_eq!(LOG_WINDOW_SIZE, 0x4_0000);
    assert_eq!(LOG_DESCRIPTOR_LEN, 16);
    const { assert!(SLIPWAY_LOG_GPA + LOG_WINDOW_SIZE <= FIRMWARE_LOG_GPA) };
    assert_eq!(SLIPWAY_LOG_MODULE, "slipway-event-log");
    assert_eq!(FIRMWARE_LOG_MODULE, "firmware-event-log");
}
