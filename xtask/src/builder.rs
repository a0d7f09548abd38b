//! `cargo xtask build`: builds the freestanding binaries a bundle names and assembles the
//! bundle into one GRUB ISO that boots under SeaBIOS and OVMF.
//!
//! Output (`<target>/bundles/<bundle>/`): `root/` (the ISO tree: `boot/slipway-hypervisor`,
//! `boot/<module>.<ext>`, `boot/grub/grub.cfg`, GRUB's boot images), a copy of `grub.cfg`,
//! `<bundle>.iso`, and `debug/` (the debug file of every shipped binary, `xtask::ship`).
//!
//! Reproducible: the binaries are built with the machine's paths remapped
//! (`Workspace::path_remap_config`) and shipped stripped (`xtask::ship`), the ISO is made with
//! fixed dates (`xtask::iso`); the same commit gives the same bytes in any folder with any
//! cargo home (tests/tests/reproducible_bundles.rs). The build prints every shipped file's
//! size and SHA-256.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use crate::bundle::{Manifest, ManifestError, ModuleSource};
use crate::grub::{self, GrubModule};
use crate::iso::IsoError;
use crate::procs::ManagedChild;
use crate::ship::{self, ShipError};
use crate::workspace::{Workspace, WorkspaceError, cargo, target_rustflags_config};

/// The hypervisor package and binary.
pub const HYPERVISOR_PACKAGE: &str = "slipway-hypervisor";

/// Longest a build of the freestanding binaries may take (a cold build takes about two minutes on
/// two cores).
const BUILD_TIME_LIMIT: Duration = Duration::from_secs(30 * 60);

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
    /// A generated module (the fetched Linux kernel, the built initramfs) could not be made.
    #[error("module `{module}`: {reason}")]
    Generated { module: String, reason: String },
    /// The ISO could not be made.
    #[error(transparent)]
    Iso(#[from] IsoError),
    /// A binary could not be shipped (stripped, its debug file kept).
    #[error(transparent)]
    Ship(#[from] ShipError),
    /// The build's path remapping could not be worked out.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
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

/// A file as placed on the ISO (or the ISO itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedFile {
    /// The file on the host (inside the bundle's `root/`).
    pub path: PathBuf,
    /// Its absolute path inside the ISO (for the ISO: its file name).
    pub iso_path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// For a freestanding binary: its GNU build id and debug file (`xtask::ship`).
    pub debug: Option<ship::Shipped>,
}

impl ShippedFile {
    fn describe(
        path: &Path,
        iso_path: String,
        debug: Option<ship::Shipped>,
    ) -> Result<Self, BuildError> {
        let bytes = std::fs::read(path).map_err(io_err("cannot read", path))?;
        Ok(ShippedFile {
            path: path.to_owned(),
            iso_path,
            size: bytes.len() as u64,
            sha256: slipway_measure::hash::hash(slipway_measure::HashAlg::Sha256, &bytes)
                .to_string(),
            debug,
        })
    }
}

/// A module as placed on the ISO.
#[derive(Debug, Clone)]
pub struct BuiltModule {
    pub name: String,
    /// The shipped file (its size is what the hypervisor must report in its banner).
    pub file: ShippedFile,
}

/// A built bundle.
#[derive(Debug, Clone)]
pub struct BuiltBundle {
    pub name: String,
    pub manifest: Manifest,
    pub output_dir: PathBuf,
    pub iso: PathBuf,
    pub grub_cfg: PathBuf,
    /// The hypervisor image as shipped.
    pub hypervisor: ShippedFile,
    pub modules: Vec<BuiltModule>,
    /// The ISO: size and SHA-256.
    pub iso_file: ShippedFile,
    /// The debug files (`xtask::ship`).
    pub debug_dir: PathBuf,
}

impl BuiltBundle {
    /// The table `cargo xtask build` prints: every shipped file (hypervisor, modules in boot
    /// order, ISO) with its size, SHA-256 and, for binaries, build id.
    pub fn summary(&self) -> String {
        let mut rows: Vec<(String, &ShippedFile)> =
            vec![("hypervisor".to_owned(), &self.hypervisor)];
        rows.extend(self.modules.iter().map(|m| (m.name.clone(), &m.file)));
        rows.push(("ISO".to_owned(), &self.iso_file));
        let width = rows
            .iter()
            .map(|(name, f)| name.len() + f.iso_path.len() + 1)
            .max()
            .unwrap_or(0);
        let mut out = format!("xtask: bundle `{}`, as shipped:\n", self.name);
        for (name, file) in rows {
            let label = format!("{name} {}", file.iso_path);
            out.push_str(&format!(
                "  {label:<width$} {:>9} bytes  sha256 {}",
                file.size, file.sha256
            ));
            if let Some(debug) = &file.debug {
                out.push_str(&format!("  build-id {}", debug.build_id));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "  debug files (matched by build id): {}\n",
            self.debug_dir.display()
        ));
        out
    }
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
    // The workspace's own places, whatever the caller's environment says: the path remapping
    // below names exactly these.
    cmd.current_dir(&ws.root)
        .env("CARGO_HOME", &ws.cargo_home)
        .env("CARGO_TARGET_DIR", &ws.target_dir);
    if let Some(config) = target_rustflags_config(target) {
        cmd.args(["--config", &config]);
    }
    cmd.args(["--config", &ws.path_remap_config(target)?]);
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
        ModuleSource::SimulatedSinit => format!("{name}.acm"),
        ModuleSource::LinuxKernel => format!("{name}.elf"),
        ModuleSource::LinuxInitramfs => format!("{name}.cpio.gz"),
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
    build_bundle_as(ws, name, BundleVariant::AsWritten)
}

/// How `cargo xtask run --launch` changes a bundle before it is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleVariant {
    /// As `bundle.toml` says.
    AsWritten,
    /// `--launch txt-simulated`: the hypervisor command line asks for the SIMULATED TXT launch
    /// (`launch=txt-simulated`, replacing any `launch=` word) and the synthetic `sinit` module
    /// is added unless the bundle has a `sinit` module. Built under `<bundle output>/txt-simulated`.
    TxtSimulated,
}

impl BundleVariant {
    /// The variant `--launch NAME` of `run` and `verify` asks for: only `txt-simulated` changes a
    /// bundle (the value parser of both options).
    pub fn from_launch(name: &str) -> Result<BundleVariant, String> {
        let simulated = crate::predict::PredictedLaunch::TxtSimulated.name();
        if name == simulated {
            Ok(BundleVariant::TxtSimulated)
        } else {
            Err(format!(
                "`{name}` is not a launch a bundle can be changed to ({simulated})"
            ))
        }
    }
}

/// Applies [`BundleVariant::TxtSimulated`] to a manifest.
pub fn txt_simulated_manifest(manifest: &mut Manifest) {
    use slipway_protocol::boot_modules::SINIT_MODULE;
    manifest
        .hypervisor_cmdline
        .retain(|w| !w.starts_with("launch="));
    manifest
        .hypervisor_cmdline
        .push("launch=txt-simulated".to_owned());
    if !manifest.modules.iter().any(|m| m.name == SINIT_MODULE) {
        manifest.modules.push(crate::bundle::Module {
            name: SINIT_MODULE.to_owned(),
            source: ModuleSource::SimulatedSinit,
            args: Vec::new(),
        });
    }
}

/// Builds bundle `name` as `variant` says.
pub fn build_bundle_as(
    ws: &Workspace,
    name: &str,
    variant: BundleVariant,
) -> Result<BuiltBundle, BuildError> {
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
    let mut manifest = Manifest::load(&manifest_path)?;
    if variant == BundleVariant::TxtSimulated {
        txt_simulated_manifest(&mut manifest);
        if manifest.modules.len() > crate::bundle::MAX_MODULES {
            return Err(BuildError::from(crate::bundle::ManifestError::Field {
                path: manifest_path.clone(),
                field: "module".into(),
                reason: "no room for the simulated `sinit` module".into(),
            }));
        }
    }

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
            ModuleSource::SimulatedSinit
            | ModuleSource::LinuxKernel
            | ModuleSource::LinuxInitramfs => {}
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

    let out = match variant {
        BundleVariant::AsWritten => ws.bundle_output_dir(name),
        BundleVariant::TxtSimulated => ws.bundle_output_dir(name).join("txt-simulated"),
    };
    std::fs::create_dir_all(&out).map_err(io_err("cannot create", &out))?;
    // Serialise concurrent builds of the same bundle (tests, a parallel `cargo xtask run`).
    let lock_path = out.join(".lock");
    let lock = File::create(&lock_path).map_err(io_err("cannot create", &lock_path))?;
    lock.lock().map_err(io_err("cannot lock", &lock_path))?;

    let root = out.join("root");
    let debug_dir = out.join(ship::DEBUG_DIR);
    for dir in [&root, &debug_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io_err("cannot clear", dir))?;
        }
    }
    std::fs::create_dir_all(&debug_dir).map_err(io_err("cannot create", &debug_dir))?;
    let boot = root.join("boot");
    let grub_dir = boot.join("grub");
    std::fs::create_dir_all(&grub_dir).map_err(io_err("cannot create", &grub_dir))?;

    let hv_target = ws
        .target_of(HYPERVISOR_PACKAGE)
        .expect("resolved by build_freestanding");
    let hv_src = ws.freestanding_binary(hv_target, &hv_bin);
    let hv_iso_path = grub::HYPERVISOR_ISO_PATH;
    let hv_file_name = hv_iso_path.rsplit('/').next().expect("a path");
    let hv_dst = boot.join(hv_file_name);
    let hv_debug = ship::ship_elf(&hv_src, &hv_dst, &debug_dir, hv_file_name)?;
    let hypervisor = ShippedFile::describe(&hv_dst, hv_iso_path.to_owned(), Some(hv_debug))?;

    let mut built = Vec::with_capacity(manifest.modules.len());
    for m in &manifest.modules {
        let file_name = boot_file_name(&m.name, &m.source);
        let dst = boot.join(&file_name);
        let debug = match &m.source {
            ModuleSource::Binary(pkg) => {
                let bin = ws.binary_of(pkg).expect("resolved above");
                let target = ws.target_of(pkg).expect("resolved by build_freestanding");
                let src = ws.freestanding_binary(target, bin);
                if target == crate::workspace::POLICY_TARGET {
                    // A policy program is WebAssembly, not ELF: built without debug
                    // information or symbols (`workspace::target_rustflags`), shipped as built.
                    std::fs::copy(&src, &dst).map_err(io_err("cannot copy", &src))?;
                    None
                } else {
                    Some(ship::ship_elf(&src, &dst, &debug_dir, &file_name)?)
                }
            }
            ModuleSource::File(rel) => {
                let src = src_dir.join(rel);
                std::fs::copy(&src, &dst).map_err(io_err("cannot copy", &src))?;
                None
            }
            ModuleSource::Dts(rel) => {
                compile_dts(&src_dir.join(rel), &dst, &src_dir, &m.name)?;
                None
            }
            ModuleSource::SimulatedSinit => {
                std::fs::write(&dst, crate::bundle::simulated_sinit_bytes())
                    .map_err(io_err("cannot write", &dst))?;
                None
            }
            ModuleSource::LinuxKernel => {
                let kernel = crate::linux_kernel::fetch(&crate::linux_kernel::cache_dir(ws), None)
                    .map_err(|e| BuildError::Generated {
                        module: m.name.clone(),
                        reason: e.to_string(),
                    })?;
                println!(
                    "xtask: module `{}`: {} {} vmlinux, sha256 {}",
                    m.name, kernel.package.name, kernel.package.version, kernel.vmlinux_sha256
                );
                std::fs::copy(&kernel.vmlinux, &dst)
                    .map_err(io_err("cannot copy", &kernel.vmlinux))?;
                None
            }
            ModuleSource::LinuxInitramfs => {
                let initramfs =
                    crate::linux_initramfs::build(&crate::linux_initramfs::cache_dir(ws), None)
                        .map_err(|e| BuildError::Generated {
                            module: m.name.clone(),
                            reason: e.to_string(),
                        })?;
                println!(
                    "xtask: module `{}`:\n{}",
                    m.name,
                    crate::linux_initramfs::describe(&initramfs)
                );
                std::fs::copy(&initramfs.image, &dst)
                    .map_err(io_err("cannot copy", &initramfs.image))?;
                None
            }
        };
        built.push(BuiltModule {
            name: m.name.clone(),
            file: ShippedFile::describe(&dst, format!("/boot/{file_name}"), debug)?,
        });
    }

    let cfg = grub::render(
        &manifest.hypervisor_cmdline,
        &manifest
            .modules
            .iter()
            .zip(&built)
            .map(|(m, b)| GrubModule {
                iso_path: b.file.iso_path.clone(),
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
    let iso_file = ShippedFile::describe(
        &iso,
        iso.file_name()
            .expect("an ISO file name")
            .to_string_lossy()
            .into_owned(),
        None,
    )?;
    drop(lock);
    let bundle = BuiltBundle {
        name: name.to_owned(),
        manifest,
        output_dir: out,
        iso,
        grub_cfg,
        hypervisor,
        modules: built,
        iso_file,
        debug_dir,
    };
    print!("{}", bundle.summary());
    println!("xtask: bundle `{name}`: {}", bundle.iso.display());
    Ok(bundle)
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

/// Makes `iso` from the ISO tree `root` (`xtask::iso`: one ISO for SeaBIOS and UEFI, the same
/// bytes from the same tree), with its intermediate files in `iso-work/` beside it.
pub fn make_iso(root: &Path, iso: &Path) -> Result<(), BuildError> {
    let work = iso
        .parent()
        .map_or_else(|| PathBuf::from("iso-work"), |dir| dir.join("iso-work"));
    crate::iso::make_iso(root, &work, iso)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(iso_path: &str, size: u64, build_id: Option<&str>) -> ShippedFile {
        ShippedFile {
            path: PathBuf::from("/out/root").join(iso_path.trim_start_matches('/')),
            iso_path: iso_path.to_owned(),
            size,
            sha256: format!("{size:064x}"),
            debug: build_id.map(|id| ship::Shipped {
                build_id: id.to_owned(),
                debug_file: PathBuf::from(format!("/out/debug/{id}.debug")),
            }),
        }
    }

    #[test]
    fn the_summary_lists_every_shipped_file_with_size_digest_and_build_id() {
        let bundle = BuiltBundle {
            name: "demo".into(),
            manifest: Manifest::parse(
                Path::new("bundle.toml"),
                "[[module]]\nname = \"domb\"\nbinary = \"slipway-domb\"\n\
                 [[module]]\nname = \"config\"\ndts = \"config.dts\"\n",
            )
            .unwrap(),
            output_dir: "/out".into(),
            iso: "/out/demo.iso".into(),
            grub_cfg: "/out/grub.cfg".into(),
            hypervisor: shipped("/boot/slipway-hypervisor", 614_904, Some("eef4")),
            modules: vec![
                BuiltModule {
                    name: "domb".into(),
                    file: shipped("/boot/domb.elf", 234_104, Some("c89c")),
                },
                BuiltModule {
                    name: "config".into(),
                    file: shipped("/boot/config.dtb", 659, None),
                },
            ],
            iso_file: shipped("demo.iso", 4_653_056, None),
            debug_dir: "/out/debug".into(),
        };
        let text = bundle.summary();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(lines[0], "xtask: bundle `demo`, as shipped:");
        assert!(
            lines[1].starts_with("  hypervisor /boot/slipway-hypervisor")
                && lines[1].contains(" 614904 bytes  sha256 000000")
                && lines[1].ends_with("  build-id eef4"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("domb /boot/domb.elf") && lines[2].ends_with("build-id c89c"));
        assert!(
            lines[3].contains("config /boot/config.dtb") && !lines[3].contains("build-id"),
            "{}",
            lines[3]
        );
        assert!(lines[4].contains("ISO demo.iso") && lines[4].contains(" 4653056 bytes"));
        assert_eq!(lines[5], "  debug files (matched by build id): /out/debug");
    }

    #[test]
    fn the_txt_simulated_variant_asks_for_the_launch_and_adds_the_synthetic_sinit_once() {
        let mut m = Manifest::parse(
            Path::new("images/x/bundle.toml"),
            "hypervisor_cmdline = \"console=com1 launch=emulated\"\n[[module]]\nname = \"domb\"\nbinary = \"slipway-domb\"\n",
        )
        .unwrap();
        txt_simulated_manifest(&mut m);
        assert_eq!(
            m.hypervisor_cmdline,
            ["console=com1", "launch=txt-simulated"]
        );
        assert_eq!(m.modules.len(), 2);
        assert_eq!(m.modules[1].name, "sinit");
        assert_eq!(m.modules[1].source, ModuleSource::SimulatedSinit);
        txt_simulated_manifest(&mut m);
        assert_eq!(m.modules.len(), 2, "a bundle's own sinit module is kept");
        assert_eq!(
            m.hypervisor_cmdline,
            ["console=com1", "launch=txt-simulated"]
        );
        assert_eq!(
            boot_file_name("sinit", &ModuleSource::SimulatedSinit),
            "sinit.acm"
        );
    }

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
