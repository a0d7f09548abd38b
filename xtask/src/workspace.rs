//! The cargo workspace as `cargo metadata` reports it: root, target directory (honouring
//! `CARGO_TARGET_DIR` and cargo configuration) and the binary targets of each member.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The default target triple of freestanding binaries (hypervisor, guests).
pub const FREESTANDING_TARGET: &str = "x86_64-unknown-none";
/// The host target used freestanding (domB): SSE and run-time CPU feature detection.
pub const HOST_FREESTANDING_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The target of launch-policy programs (`docs/launch-policy.md`): WebAssembly, run by domB's
/// interpreter.
pub const POLICY_TARGET: &str = "wasm32-unknown-unknown";
/// The package of the host tool (this crate): its binary runs on the build machine.
pub const HOST_TOOL_PACKAGE: &str = "xtask";

/// Targets a freestanding binary may name in `[package.metadata.slipway] target`.
pub const SUPPORTED_TARGETS: [&str; 3] =
    [FREESTANDING_TARGET, HOST_FREESTANDING_TARGET, POLICY_TARGET];

/// Code-generation flags xtask adds for `target` (`--config target.<triple>.rustflags=...`), on
/// top of `.cargo/config.toml`: the host target used freestanding gets a static, non-PIC
/// codegen (the guest runtime's 32-bit entry and page tables hold absolute addresses), a static
/// link, and the `slipway_freestanding` cfg that compiles the guest runtime's platform glue.
/// The link arguments (no C runtime, linker script) are the binary's `build.rs`'s. Nothing for
/// `x86_64-unknown-none`: `.cargo/config.toml` has its flags. The same list builds `cargo xtask
/// bench`'s program, so the benchmark runs domB's exact code generation.
pub fn target_rustflags(target: &str) -> &'static [&'static str] {
    match target {
        HOST_FREESTANDING_TARGET => &[
            "-C",
            "relocation-model=static",
            "-C",
            "target-feature=+crt-static",
            "--cfg",
            "slipway_freestanding",
        ],
        // Policy programs: no debug information or symbols (the module is measured and
        // carried as a boot module: it stays small), a 64 KiB stack instead of 1 MiB (the
        // program's memory counts against its limit).
        POLICY_TARGET => &[
            "-C",
            "debuginfo=0",
            "-C",
            "strip=symbols",
            "-C",
            "link-arg=-zstack-size=65536",
        ],
        _ => &[],
    }
}

/// The `--config` argument that gives cargo [`target_rustflags`] for `target` (None: none needed).
pub fn target_rustflags_config(target: &str) -> Option<String> {
    let flags = target_rustflags(target);
    (!flags.is_empty()).then(|| {
        let list: Vec<String> = flags.iter().map(|f| format!("{f:?}")).collect();
        format!("target.{target}.rustflags=[{}]", list.join(", "))
    })
}

/// Errors finding the workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// `cargo metadata` could not run or failed.
    #[error("`cargo metadata` failed: {0}")]
    Metadata(String),
    /// `cargo metadata` printed something that is not its documented JSON.
    #[error("cannot parse `cargo metadata` output: {0}")]
    Parse(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Metadata {
    workspace_root: PathBuf,
    target_directory: PathBuf,
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    targets: Vec<Target>,
    #[serde(default)]
    metadata: Option<PackageMetadata>,
}

/// `[package.metadata]`: only the `slipway` table matters here.
#[derive(Deserialize)]
struct PackageMetadata {
    slipway: Option<SlipwayMetadata>,
}

/// `[package.metadata.slipway]` of a freestanding binary.
#[derive(Deserialize)]
struct SlipwayMetadata {
    /// The target triple to build the binary for (default [`FREESTANDING_TARGET`]).
    target: Option<String>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

/// A workspace member and its binary targets.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub bins: Vec<String>,
    /// `[package.metadata.slipway] target`, if given.
    pub target: Option<String>,
}

/// The Slipway workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub members: Vec<Member>,
}

/// The cargo that runs us (`CARGO` is set by `cargo run` and `cargo test`), else `cargo`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

impl Workspace {
    /// Locates the workspace this xtask was built from.
    pub fn locate() -> Result<Self, WorkspaceError> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let output = cargo()
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(&manifest)
            .output()
            .map_err(|e| WorkspaceError::Metadata(format!("cannot run cargo: {e}")))?;
        if !output.status.success() {
            return Err(WorkspaceError::Metadata(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        let meta: Metadata = serde_json::from_slice(&output.stdout)?;
        Ok(Workspace {
            root: meta.workspace_root,
            target_dir: meta.target_directory,
            members: meta
                .packages
                .into_iter()
                .map(|p| Member {
                    target: p.metadata.and_then(|m| m.slipway).and_then(|s| s.target),
                    bins: p
                        .targets
                        .into_iter()
                        .filter(|t| t.kind.iter().any(|k| k == "bin"))
                        .map(|t| t.name)
                        .collect(),
                    name: p.name,
                })
                .collect(),
        })
    }

    /// `images/<bundle>/` in the source tree.
    pub fn bundle_source_dir(&self, bundle: &str) -> PathBuf {
        self.root.join("images").join(bundle)
    }

    /// `<target>/bundles/<bundle>/`: the built bundle.
    pub fn bundle_output_dir(&self, bundle: &str) -> PathBuf {
        self.target_dir.join("bundles").join(bundle)
    }

    /// Bundles present in the tree: directories under `images/` with a `bundle.toml`.
    pub fn available_bundles(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("images"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("bundle.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Path of the release build of a freestanding binary target built for `target`.
    pub fn freestanding_binary(&self, target: &str, bin: &str) -> PathBuf {
        let dir = self.target_dir.join(target).join("release");
        if target == POLICY_TARGET {
            dir.join(format!("{bin}.wasm"))
        } else {
            dir.join(bin)
        }
    }

    /// The target workspace package `package` is built for: its `[package.metadata.slipway]
    /// target`, else [`FREESTANDING_TARGET`]; one of [`SUPPORTED_TARGETS`].
    pub fn target_of(&self, package: &str) -> Result<&str, String> {
        let member = self
            .members
            .iter()
            .find(|m| m.name == package)
            .ok_or_else(|| format!("`{package}` is not a package of this workspace"))?;
        let target = member.target.as_deref().unwrap_or(FREESTANDING_TARGET);
        if SUPPORTED_TARGETS.contains(&target) {
            Ok(target)
        } else {
            Err(format!(
                "package `{package}`: [package.metadata.slipway] target `{target}` is not one of {}",
                SUPPORTED_TARGETS.join(", ")
            ))
        }
    }

    /// The freestanding binary crates grouped by the target they are built for: every member
    /// with a binary target except the host tool itself (`xtask`).
    pub fn freestanding_packages(&self) -> Result<Vec<(&str, Vec<&str>)>, String> {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for member in self.members.iter().filter(|m| !m.bins.is_empty()) {
            if member.name == HOST_TOOL_PACKAGE {
                continue;
            }
            let target = self.target_of(&member.name)?;
            match groups.iter_mut().find(|(t, _)| *t == target) {
                Some((_, packages)) => packages.push(&member.name),
                None => groups.push((target, vec![&member.name])),
            }
        }
        Ok(groups)
    }

    /// The single binary target of workspace package `package`.
    pub fn binary_of(&self, package: &str) -> Result<&str, String> {
        let member = self
            .members
            .iter()
            .find(|m| m.name == package)
            .ok_or_else(|| format!("`{package}` is not a package of this workspace"))?;
        match member.bins.as_slice() {
            [bin] => Ok(bin),
            [] => Err(format!("package `{package}` has no binary target")),
            many => Err(format!(
                "package `{package}` has several binary targets ({}); a module needs exactly one",
                many.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_binary_has_its_declared_target_and_flags() {
        let ws = Workspace::locate().expect("cargo metadata");
        assert_eq!(ws.target_of("slipway-domb"), Ok(HOST_FREESTANDING_TARGET));
        assert_eq!(ws.target_of("slipway-hypervisor"), Ok(FREESTANDING_TARGET));
        assert_eq!(ws.target_of("slipway-guest-hello"), Ok(FREESTANDING_TARGET));
        assert!(ws.target_of("no-such-package").is_err());
        assert_eq!(target_rustflags_config(FREESTANDING_TARGET), None);
        assert_eq!(
            target_rustflags_config(HOST_FREESTANDING_TARGET).as_deref(),
            Some(
                "target.x86_64-unknown-linux-gnu.rustflags=[\"-C\", \"relocation-model=static\", \
                 \"-C\", \"target-feature=+crt-static\", \"--cfg\", \"slipway_freestanding\"]"
            )
        );
    }
}
