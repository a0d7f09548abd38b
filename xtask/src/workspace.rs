//! The cargo workspace as `cargo metadata` reports it: root, target directory (honouring
//! `CARGO_TARGET_DIR` and cargo configuration) and the binary targets of each member.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The target triple of every freestanding binary (hypervisor, domB, guests).
pub const FREESTANDING_TARGET: &str = "x86_64-unknown-none";

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

    /// Path of the release build of a freestanding binary target.
    pub fn freestanding_binary(&self, bin: &str) -> PathBuf {
        self.target_dir
            .join(FREESTANDING_TARGET)
            .join("release")
            .join(bin)
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
