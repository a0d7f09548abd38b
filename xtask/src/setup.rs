//! Makes a fresh Debian machine ready for `run` and `test`: the rustup target for the
//! freestanding binaries and the Debian packages for QEMU, OVMF, swtpm, GRUB, dtc and bochs. Quick
//! when everything is there (one `rustup` and one `dpkg-query` call).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::workspace::{FREESTANDING_TARGET, POLICY_TARGET};

/// Debian packages the harness and the tests use.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "ovmf",
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "device-tree-compiler",
    // `iasl`: hv-core's host tests disassemble the domains' ACPI tables with it.
    "acpica-tools",
    // `xz`: `cargo xtask linux-kernel` decompresses the stock kernel's payload with it.
    "xz-utils",
    // The Keylime test environment (xtask/src/keylime.rs): a venv from Debian's Python, whose
    // GPGME binding Keylime's verifier imports.
    "python3-venv",
    "python3-gpg",
    "binutils",
    // `run --emulator bochs` and the VMX tests: Debian's bochs emulates VMX with EPT; its
    // BIOS, VGA BIOS and terminal display (it has no headless one) are separate packages.
    "bochs",
    "bochs-term",
    "bochsbios",
    "vgabios",
];

/// Programs and files that stand for the packages on a machine without dpkg.
const REQUIRED_PATHS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("swtpm", "swtpm"),
    ("swtpm_ioctl", "swtpm-tools"),
    ("tpm2_eventlog", "tpm2-tools"),
    ("grub-mkimage", "grub-common"),
    ("xorriso", "xorriso"),
    ("mformat", "mtools"),
    ("dtc", "device-tree-compiler"),
    ("iasl", "acpica-tools"),
    ("xz", "xz-utils"),
    ("objcopy", "binutils"),
    ("bochs", "bochs"),
    (
        "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so",
        "bochs-term",
    ),
    ("/usr/share/bochs/BIOS-bochs-latest", "bochsbios"),
    ("/usr/share/vgabios/vgabios.bin", "vgabios"),
    ("/usr/lib/grub/i386-pc/multiboot2.mod", "grub-pc-bin"),
    (
        "/usr/lib/grub/x86_64-efi/multiboot2.mod",
        "grub-efi-amd64-bin",
    ),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("python3", "python3-venv"),
];

/// Why the environment is not ready.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Packages are missing and we may not install them.
    #[error(
        "missing Debian packages: {missing}\n  install them with:\n    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {all}\n  (as root, `cargo xtask run` and `cargo xtask test` do this themselves)"
    )]
    NotRoot { missing: String, all: String },
    /// apt-get failed.
    #[error("`{command}` failed ({status})")]
    Apt { command: String, status: String },
    /// Tools are missing on a machine without dpkg.
    #[error("missing tools (no dpkg here to install them): {0}")]
    MissingTools(String),
    /// The rustup target is missing and cannot be added.
    #[error("a Rust target is missing: {0}")]
    RustTarget(String),
}

/// Packages among `wanted` that dpkg does not report as installed.
fn missing_packages(wanted: &[&str]) -> Option<Vec<String>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Status}\n"])
        .args(wanted)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    Some(missing_from_dpkg_output(wanted, &text))
}

/// Pure part of [`missing_packages`]: `dpkg-query -W -f '${Package} ${db:Status-Status}\n'`
/// prints one line per known package; unknown packages print nothing.
fn missing_from_dpkg_output(wanted: &[&str], dpkg_output: &str) -> Vec<String> {
    wanted
        .iter()
        .filter(|pkg| {
            !dpkg_output.lines().any(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(**pkg) && words.next() == Some("installed")
            })
        })
        .map(|p| p.to_string())
        .collect()
}

fn on_path(program: &str) -> bool {
    if program.starts_with('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn run_apt(args: &[&str]) -> Result<(), SetupError> {
    let command = format!("apt-get {}", args.join(" "));
    println!("xtask: {command}");
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| SetupError::Apt {
            command: command.clone(),
            status: e.to_string(),
        })?;
    if !status.success() {
        return Err(SetupError::Apt {
            command,
            status: status.to_string(),
        });
    }
    Ok(())
}

/// Checks the Debian packages and installs the missing ones when running as root.
pub fn ensure_packages() -> Result<(), SetupError> {
    let Some(missing) = missing_packages(DEBIAN_PACKAGES) else {
        // Not a dpkg system: check for the tools themselves.
        let absent: Vec<String> = REQUIRED_PATHS
            .iter()
            .filter(|(path, _)| !on_path(path))
            .map(|(path, pkg)| format!("{path} (Debian: {pkg})"))
            .collect();
        return if absent.is_empty() {
            Ok(())
        } else {
            Err(SetupError::MissingTools(absent.join(", ")))
        };
    };
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(SetupError::NotRoot {
            missing: missing.join(" "),
            all: DEBIAN_PACKAGES.join(" "),
        });
    }
    println!(
        "xtask: installing missing Debian packages: {}",
        missing.join(" ")
    );
    run_apt(&["update"])?;
    let mut args = vec!["install", "-y"];
    args.extend(missing.iter().map(String::as_str));
    run_apt(&args)?;
    let still = missing_packages(DEBIAN_PACKAGES).unwrap_or_default();
    if !still.is_empty() {
        return Err(SetupError::Apt {
            command: "apt-get install".into(),
            status: format!("still missing afterwards: {}", still.join(" ")),
        });
    }
    Ok(())
}

/// Makes sure the toolchain can build for the freestanding target and the policy programs'
/// target (`rustup target add` if not).
pub fn ensure_rust_target(workspace_root: &Path) -> Result<(), SetupError> {
    for target in [FREESTANDING_TARGET, POLICY_TARGET] {
        ensure_one_rust_target(workspace_root, target)?;
    }
    Ok(())
}

fn ensure_one_rust_target(workspace_root: &Path, target: &str) -> Result<(), SetupError> {
    // `rustc --print target-libdir` names the directory whether or not it is installed; a
    // missing target shows as a missing directory.
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .current_dir(workspace_root)
        .args(["--print", "target-libdir", "--target", target])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let has_core = |dir: &str| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
            })
            .unwrap_or(false)
    };
    if libdir.as_deref().is_some_and(has_core) {
        return Ok(());
    }
    println!("xtask: rustup target add {target}");
    let status = Command::new("rustup")
        .current_dir(workspace_root)
        .args(["target", "add", target])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            SetupError::RustTarget(format!(
                "cannot run rustup ({e}); install the target for your toolchain by hand"
            ))
        })?;
    if !status.success() {
        return Err(SetupError::RustTarget(format!(
            "`rustup target add {target}` failed ({status})"
        )));
    }
    Ok(())
}

/// Everything `run` and `test` need.
pub fn ensure_environment(workspace_root: &Path) -> Result<(), SetupError> {
    ensure_rust_target(workspace_root)?;
    ensure_packages()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_output_is_read_per_package() {
        let out = "qemu-system-x86 installed\novmf config-files\nswtpm installed\n";
        assert_eq!(
            missing_from_dpkg_output(&["qemu-system-x86", "ovmf", "swtpm", "dtc-x"], out),
            vec!["ovmf".to_owned(), "dtc-x".to_owned()]
        );
        assert!(missing_from_dpkg_output(&["swtpm"], out).is_empty());
    }

    #[test]
    fn the_brief_s_packages_are_all_listed() {
        for p in [
            "ovmf",
            "swtpm-tools",
            "grub-efi-amd64-bin",
            "device-tree-compiler",
        ] {
            assert!(DEBIAN_PACKAGES.contains(&p));
        }
    }
}
