//! `cargo xtask build`: builds the freestanding binaries a bundle names and assembles the
//! bundle into one GRUB ISO that boots under SeaBIOS and OVMF.
//!
//! Output (`<target>/bundles/<bundle>/`): `root/` (the ISO tree: `boot/slipway-hypervisor`,
//! `boot/<module>.<ext>`, `boot/grub/grub.cfg`), a copy of `grub.cfg`, and `<bundle>.iso`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use crate::bundle::{Manifest, ManifestError, ModuleSource};
use crate::grub::{self, GrubModule};
use crate::procs::ManagedChild;
use crate::workspace::{Workspace, cargo, target_rustflags_config};

/// The hypervisor package and binary.
pub const HYPERVISOR_PACKAGE: &str = "slipway-hypervisor";

/// Longest a build of the freestanding binaries may take (a cold build takes about two minutes on
/// two cores).
const BUILD_TIME_LIMIT: Duration = Duration::from_secs(30 * 60);

/// GRUB modules put on the ISO (both platforms). The EFI core image looks for every `part_*`
/// module at start and complains about each missing one, so all are included; the rest is what
/// `grub.cfg` uses. Keeps the ISO at about 5 MiB instead of 20.
const GRUB_MODULES: &str = "multiboot2 normal serial terminal echo iorw test iso9660 \
    part_acorn part_amiga part_apple part_bsd part_dfly part_dvh part_gpt part_msdos part_plan \
    part_sun part_sunpc";

/// Why a bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The named bundle has no directory with a `bundle.toml`.
    #[error("bundle `{name}` does not exist: {dir}/bundle.toml is missing{available}")]
    NoSuchBundle {
        name: String,
        dir: PathBuf,
        available: String,
    },
    /// The bundle manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A `binary` module names something that is not a single-binary workspace package.
    #[error("{manifest}: module `{module}`: binary: {reason}")]
    BadBinary {
        manifest: PathBuf,
        module: String,
        reason: String,
    },
    /// A `file` or `dts` module's source file does not exist.
    #[error("{manifest}: module `{module}`: {path} does not exist")]
    MissingSource {
        manifest: PathBuf,
        module: String,
        path: PathBuf,
    },
    /// `cargo build` for a freestanding target failed (its errors are printed above).
    #[error("building {packages} for {target} failed ({status})")]
    Cargo {
        packages: String,
        target: String,
        status: String,
    },
    /// `dtc` rejected a device-tree source.
    #[error("dtc failed on {path} (module `{module}`):\n{stderr}")]
    Dtc {
        path: PathBuf,
        module: String,
        stderr: String,
    },
    /// `grub-mkrescue` failed.
    #[error("grub-mkrescue failed:\n{0}")]
    Mkrescue(String),
    /// A tool could not be started.
    #[error("cannot run {tool}: {source} (run `cargo xtask setup`, or see README.md)")]
    Tool {
        tool: &'static str,
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io { what, path, source }
}

/// A module as placed on the ISO.
#[derive(Debug, Clone)]
pub struct BuiltModule {
    pub name: String,
    /// The file on the host (inside the bundle's `root/`).
    pub path: PathBuf,
    /// Its absolute path inside the ISO.
    pub iso_path: String,
    /// Size in bytes: what the hypervisor must report in its banner.
    pub size: u64,
}

/// A built bundle.
#[derive(Debug, Clone)]
pub struct BuiltBundle {
    pub name: String,
    pub manifest: Manifest,
    pub output_dir: PathBuf,
    pub iso: PathBuf,
    pub grub_cfg: PathBuf,
    pub modules: Vec<BuiltModule>,
}

/// Builds freestanding binary packages, each for its own target (`Workspace::target_of`): one
/// release cargo invocation per target (one lock, parallel inside).
pub fn build_freestanding(ws: &Workspace, packages: &[&str]) -> Result<(), BuildError> {
    let mut by_target: Vec<(&str, Vec<&str>)> = Vec::new();
    for &p in packages {
        let target = ws.target_of(p).map_err(|reason| BuildError::BadBinary {
            manifest: ws.root.join("Cargo.toml"),
            module: p.to_owned(),
            reason,
        })?;
        match by_target.iter_mut().find(|(t, _)| *t == target) {
            Some((_, list)) => list.push(p),
            None => by_target.push((target, vec![p])),
        }
    }
    for (target, list) in by_target {
        build_for_target(ws, target, &list)?;
    }
    Ok(())
}

fn build_for_target(ws: &Workspace, target: &str, packages: &[&str]) -> Result<(), BuildError> {
    println!(
        "xtask: building {} (release, {target})",
        packages.join(", ")
    );
    let mut cmd = cargo();
    cmd.current_dir(&ws.root);
    if let Some(config) = target_rustflags_config(target) {
        cmd.args(["--config", &config]);
    }
    cmd.args(["build", "--release", "--target", target]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // A managed child, so Ctrl-C or SIGTERM to the harness stops the build too.
    let mut child = ManagedChild::spawn("cargo build", cmd).map_err(|source| BuildError::Tool {
        tool: "cargo",
        source,
    })?;
    let status = child
        .wait_until(Instant::now() + BUILD_TIME_LIMIT)
        .map_err(|source| BuildError::Tool {
            tool: "cargo",
            source,
        })?;
    let Some(status) = status else {
        return Err(BuildError::Cargo {
            packages: packages.join(", "),
            target: target.to_owned(),
            status: format!(
                "still running after {} s; stopped",
                BUILD_TIME_LIMIT.as_secs()
            ),
        });
    };
    if !status.success() {
        return Err(BuildError::Cargo {
            packages: packages.join(", "),
            target: target.to_owned(),
            status: status.to_string(),
        });
    }
    Ok(())
}

/// The file name a module gets under `/boot` on the ISO: its (unique) module name plus an
/// extension that tells its kind.
fn boot_file_name(name: &str, source: &ModuleSource) -> String {
    match source {
        ModuleSource::Binary(_) => format!("{name}.elf"),
        ModuleSource::Dts(_) => format!("{name}.dtb"),
        ModuleSource::File(f) => match f.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                format!("{name}.{ext}")
            }
            _ => format!("{name}.bin"),
        },
    }
}

/// Builds bundle `name` (binaries, device trees, grub.cfg, ISO).
pub fn build_bundle(ws: &Workspace, name: &str) -> Result<BuiltBundle, BuildError> {
    let src_dir = ws.bundle_source_dir(name);
    let manifest_path = src_dir.join("bundle.toml");
    if !manifest_path.is_file() {
        let available = ws.available_bundles();
        return Err(BuildError::NoSuchBundle {
            name: name.to_owned(),
            dir: src_dir,
            available: if available.is_empty() {
                " (no bundle exists under images/ yet)".to_owned()
            } else {
                format!(" (bundles present: {})", available.join(", "))
            },
        });
    }
    let manifest = Manifest::load(&manifest_path)?;

    // Check every module's source before building anything.
    let mut packages = vec![HYPERVISOR_PACKAGE];
    for m in &manifest.modules {
        match &m.source {
            ModuleSource::Binary(pkg) => {
                ws.binary_of(pkg).map_err(|reason| BuildError::BadBinary {
                    manifest: manifest_path.clone(),
                    module: m.name.clone(),
                    reason,
                })?;
            }
            ModuleSource::File(rel) | ModuleSource::Dts(rel) => {
                let src = src_dir.join(rel);
                if !src.is_file() {
                    return Err(BuildError::MissingSource {
                        manifest: manifest_path.clone(),
                        module: m.name.clone(),
                        path: src,
                    });
                }
            }
        }
    }
    for p in manifest.binary_packages() {
        if !packages.contains(&p) {
            packages.push(p);
        }
    }
    let hv_bin = ws
        .binary_of(HYPERVISOR_PACKAGE)
        .map_err(|reason| BuildError::BadBinary {
            manifest: manifest_path.clone(),
            module: "(hypervisor)".into(),
            reason,
        })?
        .to_owned();
    build_freestanding(ws, &packages)?;

    let out = ws.bundle_output_dir(name);
    std::fs::create_dir_all(&out).map_err(io_err("cannot create", &out))?;
    // Serialise concurrent builds of the same bundle (tests, a parallel `cargo xtask run`).
    let lock_path = out.join(".lock");
    let lock = File::create(&lock_path).map_err(io_err("cannot create", &lock_path))?;
    lock.lock().map_err(io_err("cannot lock", &lock_path))?;

    let root = out.join("root");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(io_err("cannot clear", &root))?;
    }
    let boot = root.join("boot");
    let grub_dir = boot.join("grub");
    std::fs::create_dir_all(&grub_dir).map_err(io_err("cannot create", &grub_dir))?;

    let hv_target = ws
        .target_of(HYPERVISOR_PACKAGE)
        .expect("resolved by build_freestanding");
    let hv_src = ws.freestanding_binary(hv_target, &hv_bin);
    let hv_dst = boot.join("slipway-hypervisor");
    std::fs::copy(&hv_src, &hv_dst).map_err(io_err("cannot copy", &hv_src))?;

    let mut built = Vec::with_capacity(manifest.modules.len());
    for m in &manifest.modules {
        let file_name = boot_file_name(&m.name, &m.source);
        let dst = boot.join(&file_name);
        match &m.source {
            ModuleSource::Binary(pkg) => {
                let bin = ws.binary_of(pkg).expect("resolved above");
                let target = ws.target_of(pkg).expect("resolved by build_freestanding");
                let src = ws.freestanding_binary(target, bin);
                std::fs::copy(&src, &dst).map_err(io_err("cannot copy", &src))?;
            }
            ModuleSource::File(rel) => {
                let src = src_dir.join(rel);
                std::fs::copy(&src, &dst).map_err(io_err("cannot copy", &src))?;
            }
            ModuleSource::Dts(rel) => {
                compile_dts(&src_dir.join(rel), &dst, &src_dir, &m.name)?;
            }
        }
        let size = std::fs::metadata(&dst)
            .map_err(io_err("cannot stat", &dst))?
            .len();
        built.push(BuiltModule {
            name: m.name.clone(),
            path: dst,
            iso_path: format!("/boot/{file_name}"),
            size,
        });
    }

    let cfg = grub::render(
        &manifest.hypervisor_cmdline,
        &manifest
            .modules
            .iter()
            .zip(&built)
            .map(|(m, b)| GrubModule {
                iso_path: b.iso_path.clone(),
                name: m.name.clone(),
                args: m.args.clone(),
            })
            .collect::<Vec<_>>(),
    );
    let cfg_in_root = grub_dir.join("grub.cfg");
    std::fs::write(&cfg_in_root, &cfg).map_err(io_err("cannot write", &cfg_in_root))?;
    let grub_cfg = out.join("grub.cfg");
    std::fs::write(&grub_cfg, &cfg).map_err(io_err("cannot write", &grub_cfg))?;

    let iso = out.join(format!("{name}.iso"));
    make_iso(&root, &iso)?;
    println!("xtask: bundle `{name}`: {}", iso.display());
    drop(lock);
    Ok(BuiltBundle {
        name: name.to_owned(),
        manifest,
        output_dir: out,
        iso,
        grub_cfg,
        modules: built,
    })
}

fn compile_dts(src: &Path, dst: &Path, include_dir: &Path, module: &str) -> Result<(), BuildError> {
    let output = Command::new("dtc")
        .args(["-q", "-I", "dts", "-O", "dtb", "-i"])
        .arg(include_dir)
        .arg("-o")
        .arg(dst)
        .arg(src)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Tool {
            tool: "dtc (device-tree-compiler)",
            source,
        })?;
    if !output.status.success() {
        return Err(BuildError::Dtc {
            path: src.to_owned(),
            module: module.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Makes `iso` from the ISO tree `root`. One ISO for both firmwares: grub-mkrescue includes the i386-pc (El Torito BIOS) and
/// x86_64-efi (EFI system partition image) GRUB platforms that are installed. Written to a
/// temporary name and renamed, so a reader never sees half an ISO.
pub fn make_iso(root: &Path, iso: &Path) -> Result<(), BuildError> {
    let tmp = iso.with_extension("iso.tmp");
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&tmp)
        .arg(format!("--install-modules={GRUB_MODULES}"))
        .args(["--locales=", "--fonts=", "--themes=", "--compress=no"])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Tool {
            tool: "grub-mkrescue (grub-common, grub-pc-bin, grub-efi-amd64-bin, xorriso, mtools)",
            source,
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(BuildError::Mkrescue(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    std::fs::rename(&tmp, iso).map_err(io_err("cannot rename to", iso))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_file_names_are_unique_per_module_and_tell_the_kind() {
        assert_eq!(
            boot_file_name("domb", &ModuleSource::Binary("slipway-domb".into())),
            "domb.elf"
        );
        assert_eq!(
            boot_file_name("config", &ModuleSource::Dts("x/config.dts".into())),
            "config.dtb"
        );
        assert_eq!(
            boot_file_name("payload", &ModuleSource::File("data/blob.txt".into())),
            "payload.txt"
        );
        assert_eq!(
            boot_file_name("raw", &ModuleSource::File("blob".into())),
            "raw.bin"
        );
    }
}

#[cfg(test)]
mod default_policy_tests {
    use super::*;
    use crate::workspace::POLICY_TARGET;

    /// domB embeds the default policy program as a committed file
    /// (`policy/default/slipway-policy-default.wasm`, `slipway_domb_core::policy::DEFAULT_PROGRAM`);
    /// it must be exactly what `cargo xtask build` makes of its source, or domB would run (and
    /// predict replay) a program nobody can rebuild. After changing the source or the SDK:
    /// `cargo xtask build` and copy `<target>/wasm32-unknown-unknown/release/slipway-policy-default.wasm`.
    #[test]
    fn the_committed_default_policy_program_is_the_build_of_its_source() {
        let ws = Workspace::locate().expect("cargo metadata");
        build_freestanding(&ws, &["slipway-policy-default"]).expect("build the default program");
        let built = std::fs::read(ws.freestanding_binary(POLICY_TARGET, "slipway-policy-default"))
            .expect("the built program");
        let committed = std::fs::read(ws.root.join("policy/default/slipway-policy-default.wasm"))
            .expect("the committed program");
        assert!(
            built == committed,
            "policy/default/slipway-policy-default.wasm is stale: rebuild it (cargo xtask build) \
             and commit the new file ({} bytes built, {} committed)",
            built.len(),
            committed.len()
        );
        assert_eq!(committed, slipway_domb_core::policy::DEFAULT_PROGRAM);
    }
}
