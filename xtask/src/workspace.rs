//! The cargo workspace as `cargo metadata` reports it: root, target directory (honouring
//! `CARGO_TARGET_DIR` and cargo configuration) and the binary targets of each member; the
//! cargo home its registry sources come from; and the path remapping that keeps all three
//! (and the Rust sysroot) out of the freestanding binaries.

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
/// The fuzz targets' package: its binaries are libFuzzer programs for the host (`cargo xtask
/// fuzz` builds them), not freestanding images.
pub const FUZZ_PACKAGE: &str = "slipway-fuzz";

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

/// What the machine's paths become inside the freestanding binaries (`--remap-path-prefix`):
/// panic messages and debug information name `/slipway/...` for the checkout,
/// `/slipway-target/...` for generated sources in the target directory, `/cargo-home/...` for
/// registry sources, and `/rustc/<commit>/...` for the standard library (the name its prebuilt
/// code already carries), whatever the folders on the build machine. README "Reproducible
/// bundles" tells a debugger how to map them back.
pub const REMAPPED_WORKSPACE: &str = "/slipway";
/// See [`REMAPPED_WORKSPACE`].
pub const REMAPPED_TARGET_DIR: &str = "/slipway-target";
/// See [`REMAPPED_WORKSPACE`].
pub const REMAPPED_CARGO_HOME: &str = "/cargo-home";

/// Errors finding the workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// `cargo metadata` could not run or failed.
    #[error("`cargo metadata` failed: {0}")]
    Metadata(String),
    /// `cargo metadata` printed something that is not its documented JSON.
    #[error("cannot parse `cargo metadata` output: {0}")]
    Parse(#[from] serde_json::Error),
    /// Neither `CARGO_HOME` nor `HOME` is set, so the registry sources cannot be located.
    #[error("cannot tell where cargo keeps its registry: neither CARGO_HOME nor HOME is set")]
    NoCargoHome,
    /// `rustc` could not tell its sysroot or its commit.
    #[error("`{command}` failed: {reason}")]
    Rustc { command: String, reason: String },
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
    /// Where builds go; xtask's cargo runs get it as `CARGO_TARGET_DIR`.
    pub target_dir: PathBuf,
    /// The cargo home (registry sources); xtask's cargo runs get it as `CARGO_HOME`.
    pub cargo_home: PathBuf,
    pub members: Vec<Member>,
}

/// The cargo that runs us (`CARGO` is set by `cargo run` and `cargo test`), else `cargo`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The cargo home cargo itself uses: `CARGO_HOME`, else `$HOME/.cargo`.
pub fn default_cargo_home() -> Result<PathBuf, WorkspaceError> {
    match std::env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home)),
        _ => std::env::home_dir()
            .filter(|home| !home.as_os_str().is_empty())
            .map(|home| home.join(".cargo"))
            .ok_or(WorkspaceError::NoCargoHome),
    }
}

/// `rustc` as cargo runs it (`RUSTC`, else the one on `PATH`, which rustup resolves through
/// `rust-toolchain.toml` from `dir`).
fn rustc_output(dir: &Path, args: &[&str]) -> Result<String, WorkspaceError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let command = format!("{} {}", rustc.to_string_lossy(), args.join(" "));
    let output = Command::new(&rustc)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| WorkspaceError::Rustc {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(WorkspaceError::Rustc {
            command,
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    String::from_utf8(output.stdout).map_err(|e| WorkspaceError::Rustc {
        command,
        reason: format!("output is not UTF-8: {e}"),
    })
}

/// `--remap-path-prefix` flags, general first (rustc applies the last matching one): the
/// sysroot's source directory to `/rustc/<commit>` (where a locally installed `rust-src`
/// would otherwise show through), the cargo home, the workspace, the target directory. Each
/// directory is given as named and, when that differs, canonicalised.
pub fn path_remap_flags(
    sysroot: &Path,
    rustc_commit: &str,
    cargo_home: &Path,
    root: &Path,
    target_dir: &Path,
) -> Vec<String> {
    let mut flags = Vec::new();
    let mut remap = |from: &Path, to: &str| {
        let mut forms = vec![from.to_path_buf()];
        if let Ok(real) = from.canonicalize()
            && real != from
        {
            forms.push(real);
        }
        for form in forms {
            flags.push("--remap-path-prefix".to_owned());
            flags.push(format!("{}={to}", form.display()));
        }
    };
    remap(
        &sysroot.join("lib/rustlib/src/rust"),
        &format!("/rustc/{rustc_commit}"),
    );
    remap(cargo_home, REMAPPED_CARGO_HOME);
    remap(root, REMAPPED_WORKSPACE);
    remap(target_dir, REMAPPED_TARGET_DIR);
    flags
}

/// The `commit-hash:` line of `rustc -vV`.
fn commit_hash(version_verbose: &str) -> Option<&str> {
    version_verbose
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .map(str::trim)
        .filter(|h| !h.is_empty() && *h != "unknown")
}

impl Workspace {
    /// Locates the workspace this xtask was built from.
    pub fn locate() -> Result<Self, WorkspaceError> {
        Self::at(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
    }

    /// The workspace whose root is `root` (another checkout of Slipway), with the cargo home
    /// and target directory cargo would use there.
    pub fn at(root: &Path) -> Result<Self, WorkspaceError> {
        let manifest = root.join("Cargo.toml");
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
            cargo_home: default_cargo_home()?,
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

    /// The `--config` argument that adds [`path_remap_flags`] for this workspace to `target`'s
    /// rustflags (cargo joins it with `.cargo/config.toml`'s and [`target_rustflags_config`]'s).
    pub fn path_remap_config(&self, target: &str) -> Result<String, WorkspaceError> {
        let sysroot = rustc_output(&self.root, &["--print", "sysroot"])?;
        let version = rustc_output(&self.root, &["-vV"])?;
        let commit = commit_hash(&version).ok_or_else(|| WorkspaceError::Rustc {
            command: "rustc -vV".into(),
            reason: format!("no commit-hash line in:\n{}", version.trim()),
        })?;
        let flags = path_remap_flags(
            Path::new(sysroot.trim()),
            commit,
            &self.cargo_home,
            &self.root,
            &self.target_dir,
        );
        let list: Vec<String> = flags.iter().map(|f| format!("{f:?}")).collect();
        Ok(format!("target.{target}.rustflags=[{}]", list.join(", ")))
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
    /// with a binary target except the host tool itself (`xtask`) and the fuzz targets.
    pub fn freestanding_packages(&self) -> Result<Vec<(&str, Vec<&str>)>, String> {
        let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
        for member in self.members.iter().filter(|m| !m.bins.is_empty()) {
            if member.name == HOST_TOOL_PACKAGE || member.name == FUZZ_PACKAGE {
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
    fn remaps_go_from_general_to_specific_and_name_fixed_places() {
        let flags = path_remap_flags(
            Path::new("/nonexistent/sysroot"),
            "abc123",
            Path::new("/nonexistent/home/.cargo"),
            Path::new("/nonexistent/checkout"),
            Path::new("/nonexistent/checkout/target"),
        );
        assert_eq!(
            flags,
            [
                "--remap-path-prefix",
                "/nonexistent/sysroot/lib/rustlib/src/rust=/rustc/abc123",
                "--remap-path-prefix",
                "/nonexistent/home/.cargo=/cargo-home",
                "--remap-path-prefix",
                "/nonexistent/checkout=/slipway",
                "--remap-path-prefix",
                "/nonexistent/checkout/target=/slipway-target",
            ]
        );
    }

    #[test]
    fn a_symlinked_directory_is_remapped_under_both_names() {
        let dir = std::env::temp_dir().join(format!("xtask-remap-{}", std::process::id()));
        let real = dir.join("real");
        let link = dir.join("link");
        std::fs::create_dir_all(&real).unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let flags = path_remap_flags(
            Path::new("/s"),
            "c",
            &link,
            Path::new("/w"),
            Path::new("/t"),
        );
        let real = real.canonicalize().unwrap();
        assert!(
            flags.contains(&format!("{}=/cargo-home", link.display())),
            "{flags:?}"
        );
        assert!(
            flags.contains(&format!("{}=/cargo-home", real.display())),
            "{flags:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_commit_comes_from_rustc_version_output() {
        let text = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: \
                    59807616e1fa2540724bfbac14d7976d7e4a3860\nhost: x86_64-unknown-linux-gnu\n";
        assert_eq!(
            commit_hash(text),
            Some("59807616e1fa2540724bfbac14d7976d7e4a3860")
        );
        assert_eq!(commit_hash("commit-hash: unknown\n"), None);
        let ws = Workspace::locate().expect("cargo metadata");
        let config = ws
            .path_remap_config(FREESTANDING_TARGET)
            .expect("rustc answers");
        assert!(
            config.starts_with("target.x86_64-unknown-none.rustflags=[\"--remap-path-prefix\""),
            "{config}"
        );
        assert!(
            config.contains(&format!("{}=/slipway\"", ws.root.display())),
            "{config}"
        );
    }

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
