use super::*;

fn sample() -> Value {
    log_json(&rendering_sample_log()).unwrap()
}

fn event_data(log: &Value, index: usize) -> &Value {
    &log["events"][index]["data"]
}

#[test]
fn every_slipway_event_renders_decoded_and_other_events_as_hex() {
    let log = sample();
    assert_eq!(log["format"], LOG_JSON_FORMAT);
    assert_eq!(log["header"]["vendor_info"], "slipway");
    assert_eq!(log["header"]["banks"][4]["alg"], "sm3_256");
    let events = log["events"].as_array().unwrap();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["type_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "EV_S_CRTM_VERSION",
            "EV_SEPARATOR",
            "EV_SLIPWAY_EMULATED_LAUNCH",
            "EV_SLIPWAY_LAUNCH_KIND",
            "EV_SLIPWAY_BANKS_CAPPED",
            "EV_SLIPWAY_HYPERVISOR_CMDLINE",
            "EV_SLIPWAY_DOMB_IMAGE",
            "EV_SLIPWAY_RECOVERY_IMAGE",
            "EV_SLIPWAY_LAUNCH_CONFIG",
            "EV_SLIPWAY_POLICY",
            "EV_SLIPWAY_BOOT_MODULE",
            "EV_SLIPWAY_BOOT_MODULE",
            "EV_SLIPWAY_POLICY_DECISION",
            "EV_SLIPWAY_POLICY_DECISION",
            "EV_SLIPWAY_DOMAIN_BUILD",
            "EV_SLIPWAY_LAUNCH_KIND",
            "EV_SLIPWAY_BOOT_MODULE",
            "0x6ff",
            "EV_SEPARATOR",
            "EV_SEPARATOR",
            "EV_SEPARATOR",
            "EV_EVENT_TAG",
            "0x12345678",
            "EV_SLIPWAY_BOOT_STATE",
            "EV_SLIPWAY_SLOT_CHOICE",
        ]
    );
    assert_eq!(events[10]["type"], 0x606);
    assert_eq!(events[10]["pcr"], 20);
    // Firmware events and the firmware's separator (PCR0, 0xffffffff) are hex.
    assert_eq!(event_data(&log, 1), &json!({ "hex": ["ffffffff"] }));
    assert_eq!(
        event_data(&log, 2),
        &json!({ "region_start": 0x20_0000, "region_size": 0x5_7000 })
    );
    assert_eq!(event_data(&log, 3), &json!({ "launch_kind": "emulated" }));
    assert_eq!(
        event_data(&log, 4),
        &json!({ "banks": [{ "alg": "sm3_256", "digest_size": 32 }] })
    );
    assert_eq!(
        event_data(&log, 5),
        &json!({ "cmdline": "console=com1 \"quoted\" \t tab" })
    );
    assert_eq!(
        event_data(&log, 6),
        &json!({ "name": "domb", "size": 123_456 })
    );
    assert_eq!(
        event_data(&log, 7),
        &json!({ "name": "rescue", "size": 4_321 })
    );
    assert_eq!(
        event_data(&log, 13),
        &json!({ "reason": "boot-domain-hung", "action": "start-recovery-only", "subject": "rescue" })
    );
    let config = event_data(&log, 8)["device_tree"].as_array().unwrap();
    assert_eq!(config.len(), 4, "100 bytes in lines of 32");
    assert_eq!(config[3], "60616263");
    assert_eq!(event_data(&log, 9), &json!({ "policy": [] }));
    assert_eq!(
        event_data(&log, 11),
        &json!({ "name": { "hex": "6e6f742d757466382dfffe" }, "size": 1 })
    );
    assert_eq!(
        event_data(&log, 12),
        &json!({ "reason": "module-not-allowed", "action": "start-recovery-only", "subject": "hello" })
    );
    assert_eq!(event_data(&log, 14)["name"], "control");
    assert_eq!(event_data(&log, 14)["payload"].as_array().unwrap().len(), 3);
    for undecodable in [15, 16] {
        let data = event_data(&log, undecodable);
        assert!(data["undecodable"].is_string(), "{data}");
        assert!(data["hex"].is_array(), "{data}");
    }
    assert_eq!(event_data(&log, 17), &json!({ "hex": ["667574757265"] }));
    assert_eq!(event_data(&log, 18), &json!({ "separator": "00000000" }));
    assert_eq!(event_data(&log, 21), &json!({ "hex": [] }));
    assert_eq!(
        event_data(&log, 23),
        &json!({ "status": "counted", "requested_slot": "b", "attempts": 3, "last_known_good_slot": "a" })
    );
    assert_eq!(
        event_data(&log, 24),
        &json!({ "from_slot": "b", "to_slot": "a" })
    );
    // The capped bank carries the cap; its PCRs are not replayed (Slipway cannot hash SM3).
    assert_eq!(events[10]["digests"]["sm3_256"], "ff".repeat(32));
    assert!(log["pcrs"].get("sm3_256").is_none());
    let pcrs: Vec<&String> = log["pcrs"]["sha256"].as_object().unwrap().keys().collect();
    assert_eq!(pcrs, ["0", "16", "17", "19", "20", "21", "23"]);
}

#[test]
fn json_is_pretty_with_sorted_keys_and_one_event_per_object() {
    let text = to_pretty(&sample());
    assert!(text.ends_with("}\n"));
    let first_event = text.find("\"events\": [").unwrap();
    let keys: Vec<&str> = text[first_event..]
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with("    }"))
        .filter(|l| l.starts_with("      \"") && !l.starts_with("       "))
        .map(|l| l.trim().split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        ["data", "digests", "pcr", "size", "type", "type_name"]
    );
    // The same input renders byte for byte the same.
    assert_eq!(text, to_pretty(&sample()));
}

#[test]
fn a_malformed_log_is_an_error_naming_the_offset() {
    let mut log = rendering_sample_log();
    log.truncate(log.len() - 3);
    let error = log_json(&log).unwrap_err().to_string();
    assert!(error.contains("offset") || error.contains("cut"), "{error}");
}

#[test]
fn launch_lists() {
    assert_eq!(
        parse_launches("txt, emulated,txt"),
        Ok(vec![PredictedLaunch::Txt, PredictedLaunch::Emulated])
    );
    assert!(parse_launches("sev").unwrap_err().contains("`sev`"));
    // txt-simulated is predict's, not a reference state's: a fleet never accepts it.
    assert!(parse_launches("txt-simulated").is_err());
    assert!(parse_launches(",").unwrap_err().contains("no launch"));
}
