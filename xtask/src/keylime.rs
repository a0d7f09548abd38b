//! A Python virtual environment with the pinned Keylime from PyPI and Slipway's Keylime policy
//! package (`xtask/keylime/`), created on demand under the target directory
//! (`<target>/keylime-venv`) and reused while its inputs are unchanged. The QEMU tests check
//! Slipway's evidence with Keylime's own code through it; `cargo xtask keylime ARGS` runs the
//! package's command line in it (`python -m slipway_keylime ARGS`).
//!
//! Why Debian's `/usr/bin/python3` with `--system-site-packages`: Keylime's verifier imports
//! `gpg` (GPGME's binding), which PyPI ships only as source that needs the GPGME headers to
//! build; Debian's `python3-gpg` provides it (the setup's apt list has it and `python3-venv`).
//! Everything else, Keylime included, is installed into the venv from PyPI at the exact versions
//! in `xtask/keylime/requirements.txt` (`--ignore-installed`, so Debian's copies of the same
//! packages are never used).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The Keylime release the tests and the documentation are written against.
pub const KEYLIME_VERSION: &str = "7.14.3";
/// The interpreter the venv is made from.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// The package's directory in the repository.
pub const PACKAGE_DIR: &str = "xtask/keylime";
/// The Keylime measured-boot import of the policy (`measured_boot_imports`).
pub const POLICY_MODULE: &str = "slipway_keylime.keylime_policy";
/// The name the policy registers under (`measured_boot_policy_name`).
pub const POLICY_NAME: &str = "slipway";

/// Why the environment cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum KeylimeEnvError {
    /// No usable interpreter.
    #[error(
        "{SYSTEM_PYTHON} cannot create a virtual environment with GPGME's binding ({0}); install \
         the Debian packages: apt-get install python3 python3-venv python3-gpg (cargo xtask setup \
         does, as root)"
    )]
    Python(String),
    /// A step failed.
    #[error("creating the Keylime environment in {dir}: `{step}` failed: {detail}")]
    Step {
        /// The venv directory.
        dir: PathBuf,
        /// The command.
        step: String,
        /// Its status and output.
        detail: String,
    },
    /// File system.
    #[error("creating the Keylime environment in {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// A ready environment.
#[derive(Clone, Debug)]
pub struct KeylimeEnv {
    /// The venv directory.
    pub dir: PathBuf,
    /// Its interpreter.
    pub python: PathBuf,
    /// Seconds spent creating it in this call (0 when it was reused).
    pub created_in: f64,
}

impl KeylimeEnv {
    /// `python -m slipway_keylime ARGS` in the environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.python);
        command.arg("-m").arg("slipway_keylime");
        // Keylime reads /etc/keylime unless told otherwise; the package's commands pass their
        // own configuration. Never let a user's PYTHONPATH shadow the pinned packages.
        command.env_remove("PYTHONPATH");
        command
    }
}

/// The files whose content decides the environment (a change rebuilds it).
fn stamp_inputs(root: &Path) -> Result<String, std::io::Error> {
    let package = root.join(PACKAGE_DIR);
    let mut files = vec![
        package.join("requirements.txt"),
        package.join("pyproject.toml"),
    ];
    let mut sources: Vec<PathBuf> = std::fs::read_dir(package.join("src/slipway_keylime"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    sources.sort();
    files.extend(sources);
    let mut stamp = format!("python {SYSTEM_PYTHON}\n");
    for file in files {
        let bytes = std::fs::read(&file)?;
        let digest = slipway_measure::hash::hash(slipway_measure::HashAlg::Sha256, &bytes);
        stamp.push_str(&format!("{digest} {}\n", file.display()));
    }
    Ok(stamp)
}

fn run_step(dir: &Path, command: &mut Command) -> Result<(), KeylimeEnvError> {
    let step = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| KeylimeEnvError::Step {
            dir: dir.to_owned(),
            step: step.clone(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(KeylimeEnvError::Step {
            dir: dir.to_owned(),
            step,
            detail: format!(
                "{}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(())
}

/// Makes sure `<target>/keylime-venv` holds the pinned Keylime and the current policy package;
/// creates or rebuilds it when missing or when its inputs changed. Concurrent callers (several
/// test processes) serialize on a lock file.
pub fn ensure(ws: &crate::Workspace) -> Result<KeylimeEnv, KeylimeEnvError> {
    let dir = ws.target_dir.join("keylime-venv");
    let io = |e: std::io::Error| KeylimeEnvError::Io(dir.clone(), e);
    std::fs::create_dir_all(&ws.target_dir).map_err(io)?;
    let lock_file = std::fs::File::create(ws.target_dir.join("keylime-venv.lock")).map_err(io)?;
    rustix::fs::flock(&lock_file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(e.into()))?;
    let stamp = stamp_inputs(&ws.root).map_err(io)?;
    let stamp_file = dir.join("slipway-stamp");
    let python = dir.join("bin/python");
    if std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) && python.exists() {
        return Ok(KeylimeEnv {
            dir,
            python,
            created_in: 0.0,
        });
    }
    let started = Instant::now();
    let probe = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import venv, ensurepip, gpg"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            return Err(KeylimeEnvError::Python(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        Err(e) => return Err(KeylimeEnvError::Python(e.to_string())),
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    eprintln!(
        "xtask: creating the Keylime environment {} (Keylime {KEYLIME_VERSION} from PyPI)",
        dir.display()
    );
    run_step(
        &dir,
        Command::new(SYSTEM_PYTHON)
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&dir),
    )?;
    let package = ws.root.join(PACKAGE_DIR);
    let pip = |args: &[&str]| {
        let mut command = Command::new(&python);
        command
            .args([
                "-m",
                "pip",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
            ])
            .args(args)
            .env_remove("PYTHONPATH");
        command
    };
    let requirements = package.join("requirements.txt");
    run_step(
        &dir,
        pip(&["install", "--ignore-installed", "--no-deps", "-r"]).arg(&requirements),
    )?;
    // The package itself, built from its pyproject with the pinned setuptools, as Keylime's
    // host would install it: from a copy inside the environment, so the build's by-products
    // (build/, *.egg-info) never land in the checkout.
    let package_copy = dir.join("package-src");
    copy_package(&package, &package_copy).map_err(io)?;
    run_step(
        &dir,
        pip(&[
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
        ])
        .arg(&package_copy),
    )?;
    // Everything imports: Keylime's verifier modules the policy plugs into, and the policy.
    run_step(
        &dir,
        Command::new(&python)
            .args([
                "-c",
                "import keylime.tpm.tpm_main, keylime.mba.mba, slipway_keylime.keylime_policy",
            ])
            .env("KEYLIME_LOGGING_CONFIG", "/dev/null")
            .env_remove("PYTHONPATH"),
    )?;
    let mut file = std::fs::File::create(&stamp_file).map_err(io)?;
    file.write_all(stamp.as_bytes()).map_err(io)?;
    let created_in = started.elapsed().as_secs_f64();
    eprintln!("xtask: Keylime environment ready in {created_in:.1} s");
    Ok(KeylimeEnv {
        dir,
        python,
        created_in,
    })
}

/// `cargo xtask keylime ARGS`: `python -m slipway_keylime ARGS` in the environment.
pub fn keylime_command(ws: &crate::Workspace, args: &[String]) -> ExitCode {
    let env = match ensure(ws) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("xtask keylime: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match env.command().args(args).status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)),
        Err(e) => {
            eprintln!(
                "xtask keylime: error: cannot run {}: {e}",
                env.python.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Copies the package's sources (`pyproject.toml`, `README.md`, `src/`), leaving out build
/// by-products a developer's own `pip install` may have left behind.
fn copy_package(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str == "build" || name_str.ends_with(".egg-info") || name_str == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_package(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
