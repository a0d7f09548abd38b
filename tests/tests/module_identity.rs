//! One boot-module identity: the hypervisor refuses a boot whose module names are invalid or not
//! unique, naming the modules, and starts nothing. Each case boots the demo bundle with one extra
//! `module2` line in front of the genuine domB: the hello guest's image under a decoy command line
//! (a name that a looser word split would read as `domb`, or a second `domb`). Such a bundle
//! cannot be written as a `bundle.toml` (xtask applies the same rule), so the test edits the
//! built `grub.cfg` and makes its own ISO. Under the old rules the first case booted the decoy as
//! domB while PCR19 held the genuine domB.

use slipway_integration_tests::{Firmware, RunConfig, Verdict, boot, bundle, iso_variant};

/// Boots the demo with a decoy module (command line `decoy_cmdline`, GRUB-quoted as given) in
/// front of domB, and checks that the boot is refused naming `expected` and nothing started.
fn decoy_is_refused(case: &str, decoy_cmdline: &str, expected: &str) {
    let built = bundle("demo");
    let genuine = "if module2 /boot/domb.elf domb\nthen\n";
    let iso = iso_variant(&built, &format!("decoy-{case}"), |cfg| {
        assert!(
            cfg.contains(genuine),
            "the demo's grub.cfg loads domB as expected:\n{cfg}"
        );
        let decoy = format!("if module2 /boot/hello.elf {decoy_cmdline}\nthen\n{genuine}");
        cfg.replacen(genuine, &decoy, 1)
            .replacen("boot\n", "boot\nfi\n", 1)
    });
    let dir = iso.parent().unwrap().to_owned();

    let mut run = RunConfig::new(&iso, dir.join("serial.log"));
    run.firmware = Firmware::Bios;
    run.smp = 2;
    let outcome = boot(&run);
    assert_eq!(
        outcome.verdict,
        Verdict::Failure,
        "a refused boot ends with the failure verdict"
    );
    let refusal = outcome
        .hypervisor_lines()
        .find(|l| l.contains("boot refused"))
        .unwrap_or_else(|| panic!("{case}: the hypervisor says the boot is refused"))
        .to_owned();
    assert!(
        refusal.contains(expected),
        "{case}: the refusal names the modules: `{refusal}` lacks `{expected}`"
    );
    assert!(
        refusal.ends_with("nothing starts"),
        "{case}: the refusal says nothing starts: `{refusal}`"
    );
    assert!(
        outcome.milestones.iter().all(|m| m.name != "domb-started"),
        "{case}: no domB was started"
    );
    assert!(
        !outcome.lines.iter().any(|l| l.text.starts_with('[')),
        "{case}: no domain printed anything"
    );
    assert!(
        outcome
            .launch
            .as_ref()
            .is_none_or(|l| l.launch.launch.is_none()),
        "{case}: no dynamic launch was requested for a refused boot"
    );
}

#[test]
fn a_decoy_named_domb_with_a_non_breaking_space_is_refused() {
    decoy_is_refused(
        "nbsp",
        "'domb\u{a0}x'",
        r#"module 0: name "domb\xc2\xa0x" is invalid"#,
    );
}

#[test]
fn a_decoy_named_domb_with_a_tab_is_refused() {
    decoy_is_refused("tab", "'domb\tx'", r#"module 0: name "domb\tx" is invalid"#);
}

#[test]
fn a_decoy_with_a_leading_space_is_refused() {
    // GRUB puts a word containing a space in double quotes on the module command line, so the
    // hypervisor sees `" domb"`: the first word is `"`, not a name (the host tests cover a bare
    // leading space).
    decoy_is_refused(
        "leading-space",
        "' domb'",
        r#"module 0: name "\"" is invalid"#,
    );
}

#[test]
fn a_second_module_named_domb_is_refused() {
    decoy_is_refused(
        "duplicate",
        "domb",
        r#"modules 0 and 1 are both named "domb""#,
    );
}
