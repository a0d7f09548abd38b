//! Debian's stock kernel as Slipway domains: `images/linux` under QEMU (SeaBIOS, swtpm), one run
//! shared by every test below.
//!
//! - The Linux control domain (initramfs attest role, tpm2-tools) quotes PCR17-21 with the
//!   nonce the harness types; `verify` accepts the transcript against the bundle's prediction
//!   (quote, nonce, log replay, prediction), and `tpm2_checkquote` accepts the same quote with
//!   the PCR values the log replays to, from `cargo xtask export`'s files.
//! - The 2-vCPU Linux domain (info role) reports 2 CPUs and about its 256 MiB.
//! - The initramfs builds to the same bytes twice (the packages cached).
//!
//! These need the Linux domain platform in the hypervisor (local APIC, ACPI tables with the
//! TPM2 log area, PVH start info); until it is there the boot tests fail, by design.

use std::process::Command;
use std::sync::OnceLock;

use slipway_integration_tests::{Firmware, Tpm, bundle, config, workspace};
use xtask::RunOutcome;
use xtask::verify::{self, Alg, Transcript, fresh_nonce, nonce_input};

const BUNDLE: &str = "linux";

struct Run {
    nonce: Vec<u8>,
    outcome: RunOutcome,
    transcript: Result<Transcript, String>,
    built: std::sync::Arc<xtask::BuiltBundle>,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let built = bundle(BUNDLE);
        let nonce = fresh_nonce().unwrap_or_else(|e| panic!("{e}"));
        let mut run = config(&built, Firmware::Bios, "linux-domains");
        run.tpm = Tpm::Swtpm;
        run.console_input = vec![nonce_input(&nonce)];
        run.timeout =
            std::time::Duration::from_secs(built.manifest.run.timeout_seconds.unwrap_or(300));
        let outcome = slipway_integration_tests::boot(&run);
        let transcript =
            verify::parse_transcript(&verify::transcript_of(&outcome)).map_err(|e| e.to_string());
        Run {
            nonce,
            outcome,
            transcript,
            built,
        }
    })
}

/// The lines a domain printed, without the hypervisor's `[<domain>] ` prefix.
fn domain_lines<'o>(outcome: &'o RunOutcome, domain: &str) -> Vec<&'o str> {
    let prefix = format!("[{domain}] ");
    outcome
        .lines
        .iter()
        .filter_map(|l| l.text.split_once(&prefix).map(|(_, rest)| rest))
        .collect()
}

#[test]
fn the_linux_control_domain_attests_and_verify_accepts_it() {
    let run = run();
    let transcript = run
        .transcript
        .as_ref()
        .unwrap_or_else(|e| panic!("the Linux control domain's transcript: {e}"));
    let accepted =
        verify::verify_against_bundle(&run.built, transcript, run.nonce.clone(), Alg::Sha256)
            .unwrap_or_else(|e| panic!("verify rejects the Linux control domain's run: {e}"));
    assert!(accepted.quoted_banks.contains(&Alg::Sha256));
    assert_eq!(accepted.pcrs.len(), 5, "PCR17-21");
}

#[test]
fn tpm2_checkquote_accepts_the_linux_control_domains_quote() {
    let run = run();
    let transcript = run
        .transcript
        .as_ref()
        .unwrap_or_else(|e| panic!("the Linux control domain's transcript: {e}"));
    let dir = run.built.output_dir.join("linux-domains-evidence");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in xtask::fleet::export_files(transcript).unwrap() {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let nonce = verify::hex(&run.nonce);
    let check = |nonce: &str| {
        Command::new("tpm2_checkquote")
            .arg("-u")
            .arg(dir.join("ak.pem"))
            .arg("-m")
            .arg(dir.join("quote.msg"))
            .arg("-s")
            .arg(dir.join("quote.sig"))
            .arg("-f")
            .arg(dir.join("quote.pcrs"))
            .args(["-q", nonce, "-g", "sha256"])
            .output()
            .expect("tpm2_checkquote (tpm2-tools; cargo xtask setup installs it)")
    };
    let output = check(&nonce);
    assert!(
        output.status.success(),
        "tpm2_checkquote refused the quote: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !check("00").status.success(),
        "tpm2_checkquote must refuse another nonce"
    );
}

#[test]
fn the_two_vcpu_linux_domain_reports_two_cpus_and_its_memory() {
    let run = run();
    let lines = domain_lines(&run.outcome, "linux-info");
    assert!(
        lines.contains(&"info: nproc 2"),
        "linux-info printed no `info: nproc 2`: {lines:?}"
    );
    let kib: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("info: memtotal-kib "))
        .unwrap_or_else(|| panic!("linux-info printed no memtotal: {lines:?}"))
        .parse()
        .unwrap();
    // MemTotal is the RAM the kernel manages: the domain's 256 MiB less what the kernel keeps
    // (its image spans physical 16-74 MiB; under plain QEMU with OVMF, 256 MiB gave 204048 KiB
    // and 512 MiB gave 461712 KiB). Below 256 MiB, above 160 MiB.
    assert!(
        (160 * 1024..256 * 1024).contains(&kib),
        "MemTotal {kib} KiB for a 256 MiB domain"
    );
}

#[test]
fn the_initramfs_builds_to_the_same_bytes_twice() {
    let ws = workspace();
    let cache = xtask::linux_initramfs::cache_dir(ws);
    let outs = [
        ws.target_dir.join("linux-initramfs-repro/a"),
        ws.target_dir.join("linux-initramfs-repro/b"),
    ];
    let mut images = Vec::new();
    for out in &outs {
        let built = xtask::linux_initramfs::build(&cache, Some(out))
            .unwrap_or_else(|e| panic!("linux-initramfs: {e}"));
        images.push((built.sha256, std::fs::read(&built.image).unwrap()));
    }
    assert_eq!(images[0].0, images[1].0);
    assert!(images[0].1 == images[1].1, "two builds differ");
}
