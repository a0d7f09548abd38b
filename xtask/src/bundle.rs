//! `images/<bundle>/bundle.toml`: the list of boot modules of a bundle (see
//! `docs/architecture.md`, "Bundle description"). Parsing is pure and validates everything a
//! later step relies on, so a bad manifest fails here with the file and the field named.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The bundle `build`, `run`, `predict`, `refstate` and `verify` use when none is named.
pub const DEFAULT_BUNDLE: &str = "demo";

/// A bundle manifest as written in `bundle.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    hypervisor_cmdline: Option<String>,
    #[serde(default)]
    run: RunDefaults,
    #[serde(default, rename = "module")]
    modules: Vec<RawModule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    name: String,
    binary: Option<String>,
    file: Option<String>,
    dts: Option<String>,
    generated: Option<String>,
    args: Option<String>,
}

/// Optional `[run]` table: defaults for `cargo xtask run` of this bundle (command-line flags win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDefaults {
    /// Seconds before the run is stopped and reported as timed out.
    pub timeout_seconds: Option<u64>,
    /// QEMU `-smp`.
    pub smp: Option<u32>,
    /// QEMU `-m`, in MiB.
    pub memory_mib: Option<u32>,
}

/// Where a module's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// A workspace binary crate (the package name), built for its target (`x86_64-unknown-none`
    /// unless its `[package.metadata.slipway] target` says otherwise).
    Binary(String),
    /// A file, relative to the bundle directory.
    File(PathBuf),
    /// A device-tree source, relative to the bundle directory, compiled with `dtc -O dtb`.
    Dts(PathBuf),
    /// `generated = "simulated-sinit"`: the SYNTHETIC, unsigned SINIT module of the simulated
    /// TXT launch (`slipway_hv_core::txt::acm::write_synthetic_sinit` for the simulated
    /// platform), made by the builder. Real hardware refuses it.
    SimulatedSinit,
    /// `generated = "linux-kernel"`: Debian's stock kernel as the `vmlinux` a PVH domain boots,
    /// fetched with apt and extracted reproducibly (`cargo xtask linux-kernel`,
    /// docs/linux-kernel.md), cached across builds.
    LinuxKernel,
    /// `generated = "linux-initramfs"`: the Linux domains' initramfs (busybox, tpm2-tools, the
    /// attest and info roles' `/init`), built reproducibly from Debian packages
    /// (`cargo xtask linux-initramfs`), the packages cached across builds.
    LinuxInitramfs,
}

/// The value of `generated` that names [`ModuleSource::SimulatedSinit`].
pub const GENERATED_SIMULATED_SINIT: &str = "simulated-sinit";
/// The value of `generated` that names [`ModuleSource::LinuxKernel`].
pub const GENERATED_LINUX_KERNEL: &str = "linux-kernel";
/// The value of `generated` that names [`ModuleSource::LinuxInitramfs`].
pub const GENERATED_LINUX_INITRAMFS: &str = "linux-initramfs";

/// Every generated module by its `generated` value.
pub const GENERATED_MODULES: [(&str, ModuleSource); 3] = [
    (GENERATED_SIMULATED_SINIT, ModuleSource::SimulatedSinit),
    (GENERATED_LINUX_KERNEL, ModuleSource::LinuxKernel),
    (GENERATED_LINUX_INITRAMFS, ModuleSource::LinuxInitramfs),
];

/// The bytes of [`ModuleSource::SimulatedSinit`] (key bytes 0x5a).
pub fn simulated_sinit_bytes() -> Vec<u8> {
    use slipway_hv_core::txt::acm::{SYNTHETIC_SIZE, write_synthetic_sinit};
    let mut acm = vec![0u8; SYNTHETIC_SIZE];
    write_synthetic_sinit(
        &mut acm,
        &slipway_hv_core::txt::simulated::SIMULATED_PLATFORM,
        0x5a,
    )
    .expect("the synthetic SINIT fits its size");
    acm
}

/// One boot module, in multiboot2 order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// First word of the module's command line: the name the launch configuration refers to.
    pub name: String,
    pub source: ModuleSource,
    /// Words appended to the module command line after the name.
    pub args: Vec<String>,
}

/// A validated bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Words passed to the hypervisor after its path in `grub.cfg`.
    pub hypervisor_cmdline: Vec<String>,
    pub run: RunDefaults,
    pub modules: Vec<Module>,
}

/// Why a bundle manifest was refused. Every message starts with the manifest's path.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("{path}: cannot read the bundle manifest: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (the TOML error names the field
    /// and the line).
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A field holds a value the bundle format does not allow.
    #[error("{path}: {field}: {reason}")]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// Most boot modules a boot may carry: the hypervisor refuses more.
pub use slipway_protocol::boot_modules::MAX_BOOT_MODULES as MAX_MODULES;

/// Module names follow the hypervisor's rule (`slipway_protocol::boot_modules`): the launch
/// configuration refers to them and they survive `grub.cfg` and the command line unquoted.
fn check_module_name(name: &str) -> Result<(), String> {
    slipway_protocol::v1::ModuleName::new(name)
        .map(drop)
        .map_err(|error| format!("`{name}` is not a module name [A-Za-z0-9._-]{{1,63}}: {error}"))
}

/// Splits a command line into words, refusing what GRUB's script parser would not pass through
/// literally even inside single quotes (a `'` or a control character).
fn split_cmdline(line: &str) -> Result<Vec<String>, String> {
    if let Some(bad) = line.chars().find(|c| c.is_control() || *c == '\'') {
        return Err(format!(
            "{bad:?} is not allowed in a command line (GRUB cannot pass it literally)"
        ));
    }
    Ok(line.split_whitespace().map(str::to_owned).collect())
}

/// A path inside the bundle directory: relative, no `..`.
fn check_relative_path(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "`{path}` must be a relative path inside the bundle directory (no `..`)"
        ));
    }
    Ok(p.to_path_buf())
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates manifest text; `path` is used in error messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let field_error = |field: String, reason: String| ManifestError::Field {
            path: path.to_owned(),
            field,
            reason,
        };

        let hypervisor_cmdline = split_cmdline(raw.hypervisor_cmdline.as_deref().unwrap_or(""))
            .map_err(|r| field_error("hypervisor_cmdline".into(), r))?;
        if raw.modules.is_empty() {
            return Err(field_error(
                "module".into(),
                "a bundle needs at least one [[module]]".into(),
            ));
        }
        if raw.modules.len() > MAX_MODULES {
            return Err(field_error(
                "module".into(),
                format!(
                    "{} modules given, at most {MAX_MODULES} allowed",
                    raw.modules.len()
                ),
            ));
        }
        if raw.run.smp == Some(0) {
            return Err(field_error("run.smp".into(), "must be at least 1".into()));
        }
        if raw.run.timeout_seconds == Some(0) {
            return Err(field_error(
                "run.timeout_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if matches!(raw.run.memory_mib, Some(m) if m < 32) {
            return Err(field_error(
                "run.memory_mib".into(),
                "must be at least 32".into(),
            ));
        }

        let mut modules = Vec::with_capacity(raw.modules.len());
        for (index, m) in raw.modules.into_iter().enumerate() {
            let at = |field: &str| format!("module[{index}] ({:?}).{field}", m.name);
            check_module_name(&m.name).map_err(|r| field_error(at("name"), r))?;
            if modules.iter().any(|other: &Module| other.name == m.name) {
                return Err(field_error(
                    at("name"),
                    format!("`{}` is used by an earlier module", m.name),
                ));
            }
            let given: Vec<&str> = [
                ("binary", m.binary.is_some()),
                ("file", m.file.is_some()),
                ("dts", m.dts.is_some()),
                ("generated", m.generated.is_some()),
            ]
            .into_iter()
            .filter_map(|(n, set)| set.then_some(n))
            .collect();
            let source = match (m.binary, m.file, m.dts, m.generated) {
                (None, None, None, Some(g)) => {
                    let Some((_, source)) = GENERATED_MODULES.iter().find(|(name, _)| *name == g)
                    else {
                        let known: Vec<String> = GENERATED_MODULES
                            .iter()
                            .map(|(name, _)| format!("`{name}`"))
                            .collect();
                        return Err(field_error(
                            at("generated"),
                            format!(
                                "`{g}` is not a generated module (expected one of {})",
                                known.join(", ")
                            ),
                        ));
                    };
                    source.clone()
                }
                (Some(b), None, None, None) => {
                    if b.is_empty() || b.contains(char::is_whitespace) {
                        return Err(field_error(
                            at("binary"),
                            format!("`{b}` is not a package name"),
                        ));
                    }
                    ModuleSource::Binary(b)
                }
                (None, Some(f), None, None) => ModuleSource::File(
                    check_relative_path(&f).map_err(|r| field_error(at("file"), r))?,
                ),
                (None, None, Some(d), None) => ModuleSource::Dts(
                    check_relative_path(&d).map_err(|r| field_error(at("dts"), r))?,
                ),
                _ => {
                    return Err(field_error(
                        format!("module[{index}] ({:?})", m.name),
                        format!(
                            "give exactly one of `binary`, `file`, `dts`, `generated` (found: {})",
                            if given.is_empty() {
                                "none".to_owned()
                            } else {
                                given.join(", ")
                            }
                        ),
                    ));
                }
            };
            let args = split_cmdline(m.args.as_deref().unwrap_or(""))
                .map_err(|r| field_error(at("args"), r))?;
            modules.push(Module {
                name: m.name,
                source,
                args,
            });
        }
        Ok(Manifest {
            hypervisor_cmdline,
            run: raw.run,
            modules,
        })
    }

    /// Package names of every `binary` module, in order, without duplicates.
    pub fn binary_packages(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.modules {
            if let ModuleSource::Binary(b) = &m.source
                && !out.contains(&b.as_str())
            {
                out.push(b);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("images/x/bundle.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text)
            .expect_err("manifest must be refused")
            .to_string()
    }

    #[test]
    fn parses_the_documented_example() {
        let m = parse(
            r#"
hypervisor_cmdline = "console=com1"
[[module]]
name = "domb"
binary = "slipway-domb"
[[module]]
name = "config"
dts = "config.dts"
[[module]]
name = "hello"
binary = "slipway-guest-hello"
args = "extra words"
"#,
        )
        .unwrap();
        assert_eq!(m.hypervisor_cmdline, vec!["console=com1"]);
        assert_eq!(m.run, RunDefaults::default());
        assert_eq!(
            m.modules,
            vec![
                Module {
                    name: "domb".into(),
                    source: ModuleSource::Binary("slipway-domb".into()),
                    args: vec![]
                },
                Module {
                    name: "config".into(),
                    source: ModuleSource::Dts("config.dts".into()),
                    args: vec![]
                },
                Module {
                    name: "hello".into(),
                    source: ModuleSource::Binary("slipway-guest-hello".into()),
                    args: vec!["extra".into(), "words".into()]
                },
            ]
        );
        assert_eq!(
            m.binary_packages(),
            vec!["slipway-domb", "slipway-guest-hello"]
        );
    }

    #[test]
    fn run_defaults_are_read() {
        let m = parse(
            "[run]\ntimeout_seconds = 90\nsmp = 2\nmemory_mib = 1024\n[[module]]\nname = \"a\"\nfile = \"a.bin\"\n",
        )
        .unwrap();
        assert_eq!(
            m.run,
            RunDefaults {
                timeout_seconds: Some(90),
                smp: Some(2),
                memory_mib: Some(1024)
            }
        );
    }

    #[test]
    fn unknown_field_is_named_with_the_file() {
        let e = err("[[module]]\nname = \"a\"\nbianry = \"x\"\n");
        assert!(e.starts_with("images/x/bundle.toml: "), "{e}");
        assert!(e.contains("bianry"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = err("[[module]]\nname = 3\nfile = \"a\"\n");
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn exactly_one_source_is_required() {
        let e = err("[[module]]\nname = \"a\"\nbinary = \"x\"\nfile = \"y\"\n");
        assert!(
            e.contains("module[0] (\"a\")") && e.contains("found: binary, file"),
            "{e}"
        );
        let e = err("[[module]]\nname = \"a\"\n");
        assert!(e.contains("found: none"), "{e}");
    }

    #[test]
    fn bad_names_and_duplicates_are_refused() {
        let e = err("[[module]]\nname = \"a b\"\nfile = \"y\"\n");
        assert!(e.contains("module[0] (\"a b\").name"), "{e}");
        let e = err("[[module]]\nname = \"\"\nfile = \"y\"\n");
        assert!(e.contains(".name"), "{e}");
        let e =
            err("[[module]]\nname = \"a\"\nfile = \"y\"\n[[module]]\nname = \"a\"\nfile = \"z\"\n");
        assert!(
            e.contains("module[1] (\"a\").name") && e.contains("earlier module"),
            "{e}"
        );
    }

    #[test]
    fn the_simulated_sinit_is_a_generated_module() {
        let m = parse("[[module]]\nname = \"sinit\"\ngenerated = \"simulated-sinit\"\n").unwrap();
        assert_eq!(m.modules[0].source, ModuleSource::SimulatedSinit);
        let e = err("[[module]]\nname = \"sinit\"\ngenerated = \"intel-sinit\"\n");
        assert!(e.contains("module[0] (\"sinit\").generated"), "{e}");
        let m = parse(
            "[[module]]\nname = \"vmlinux\"\ngenerated = \"linux-kernel\"\n\
             [[module]]\nname = \"initramfs\"\ngenerated = \"linux-initramfs\"\n",
        )
        .unwrap();
        assert_eq!(m.modules[0].source, ModuleSource::LinuxKernel);
        assert_eq!(m.modules[1].source, ModuleSource::LinuxInitramfs);
        let e = err("[[module]]\nname = \"k\"\ngenerated = \"linux\"\n");
        assert!(
            e.contains("`linux-kernel`") && e.contains("`linux-initramfs`"),
            "{e}"
        );
        let e = err("[[module]]\nname = \"a\"\nfile = \"y\"\ngenerated = \"simulated-sinit\"\n");
        assert!(e.contains("found: file, generated"), "{e}");
        let acm = simulated_sinit_bytes();
        assert!(slipway_hv_core::txt::acm::is_simulated(&acm));
        slipway_hv_core::txt::acm::check_sinit(
            &acm,
            &slipway_hv_core::txt::simulated::SIMULATED_PLATFORM,
        )
        .unwrap();
    }

    #[test]
    fn paths_must_stay_inside_the_bundle() {
        let e = err("[[module]]\nname = \"a\"\nfile = \"../secret\"\n");
        assert!(e.contains("module[0] (\"a\").file"), "{e}");
        let e = err("[[module]]\nname = \"a\"\ndts = \"/etc/x.dts\"\n");
        assert!(e.contains(".dts"), "{e}");
    }

    #[test]
    fn quotes_and_control_characters_are_refused_in_command_lines() {
        let e = err("[[module]]\nname = \"a\"\nfile = \"y\"\nargs = \"it's\"\n");
        assert!(e.contains("module[0] (\"a\").args"), "{e}");
        let e = err("hypervisor_cmdline = \"a\\nb\"\n[[module]]\nname = \"a\"\nfile = \"y\"\n");
        assert!(e.contains("hypervisor_cmdline"), "{e}");
    }

    #[test]
    fn empty_bundle_and_bad_run_values_are_refused() {
        assert!(err("").contains("at least one [[module]]"));
        let e = err("[run]\nsmp = 0\n[[module]]\nname = \"a\"\nfile = \"y\"\n");
        assert!(e.contains("run.smp"), "{e}");
    }
}
