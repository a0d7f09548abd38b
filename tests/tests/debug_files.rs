//! Bundles ship stripped binaries and keep their debug files beside them: a fault in the
//! hypervisor prints a backtrace of addresses and the image's GNU build id, and the bundle's
//! debug file with that id, where gdb looks for it (`debug/.build-id/<xx>/<rest>.debug`), maps
//! the faulting address to the function and the source line (under the remapped checkout
//! path `/slipway`) with `addr2line`.

use std::process::Command;

use slipway_integration_tests::{Firmware, Verdict, boot, bundle, config, workspace};
use xtask::grub::{self, GrubModule};

#[test]
fn a_hypervisor_fault_maps_to_its_source_line_through_the_kept_debug_file() {
    let ws = workspace();
    let minimal = bundle("minimal");
    // The minimal bundle's files, booted with `selftest=page-fault` added to the hypervisor's
    // command line.
    let out = ws.bundle_output_dir("selftest-backtrace");
    let root = out.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::copy(
        &minimal.hypervisor.path,
        root.join("boot/slipway-hypervisor"),
    )
    .unwrap();
    for module in &minimal.modules {
        std::fs::copy(
            &module.file.path,
            root.join(module.file.iso_path.trim_start_matches('/')),
        )
        .unwrap();
    }
    let mut cmdline = minimal.manifest.hypervisor_cmdline.clone();
    cmdline.push("selftest=page-fault".into());
    let modules: Vec<GrubModule> = minimal
        .manifest
        .modules
        .iter()
        .zip(&minimal.modules)
        .map(|(m, built)| GrubModule {
            iso_path: built.file.iso_path.clone(),
            name: m.name.clone(),
            args: m.args.clone(),
        })
        .collect();
    std::fs::write(
        root.join("boot/grub/grub.cfg"),
        grub::render(&cmdline, &modules),
    )
    .unwrap();
    let iso = out.join("selftest-backtrace.iso");
    xtask::builder::make_iso(&root, &iso).unwrap();

    let mut cfg = config(&minimal, Firmware::Bios, "selftest-backtrace");
    cfg.iso = iso;
    cfg.serial_log = out.join("serial.log");
    let outcome = boot(&cfg);
    assert_eq!(outcome.verdict, Verdict::Failure, "{}", outcome.verdict);

    let line = |prefix: &str| {
        outcome
            .hypervisor_lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line"))
            .to_owned()
    };
    let backtrace = line("slipway:   backtrace: ");
    let rip = backtrace.split_whitespace().next().expect("an address");
    let build_id = line("slipway:   build id: ");
    let shipped = minimal
        .hypervisor
        .debug
        .as_ref()
        .expect("the hypervisor has a debug file");
    assert_eq!(
        build_id, shipped.build_id,
        "the running image is the shipped one"
    );

    let debug_file = minimal
        .debug_dir
        .join(xtask::ship::build_id_path(&build_id));
    assert_eq!(
        std::fs::read(&debug_file).unwrap(),
        std::fs::read(&shipped.debug_file).unwrap(),
        "{} is the hypervisor's debug file",
        debug_file.display()
    );
    let output = Command::new("addr2line")
        .args(["-f", "-C", "-i", "-e"])
        .arg(&debug_file)
        .arg(rip)
        .output()
        .expect("addr2line (binutils) runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("run_self_test"),
        "{rip}: {text}"
    );
    let source = format!(
        "{}/hypervisor/src/main.rs:",
        xtask::workspace::REMAPPED_WORKSPACE
    );
    assert!(text.contains(&source), "{rip} is not in {source}: {text}");
}
