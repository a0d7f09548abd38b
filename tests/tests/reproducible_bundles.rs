//! Reproducible bundles: the same sources, checked out in two folders (of different lengths)
//! and built with two different cargo homes, give byte-identical boot modules, hypervisor
//! image, ISO and debug files, and the same `cargo xtask predict` output; and the workspace's
//! own build of the demo gives the same bytes again. No shipped or debug file names a folder
//! of the build machine.
//!
//! The two checkouts are copies of the files git tracks (plus untracked, not ignored ones) of
//! this working tree, so a clean tree is exactly its commit. Each build has its own target
//! directory and its own cargo home, offline, holding a copy of the machine's downloaded
//! crates (`registry/index` and `registry/cache`): registry sources are unpacked again under
//! the new home, so their paths differ too. The two builds share nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use slipway_integration_tests::{BuiltBundle, Workspace, bundle, workspace};
use xtask::predict::{self, PredictedLaunch};
use xtask::workspace::cargo;

const BUNDLE: &str = "demo";

/// A scratch directory under the system's temporary directory (not inside this checkout: cargo
/// would read this checkout's `.cargo/config.toml` as a parent's configuration), removed when
/// the test ends, passed or failed (the two builds take some hundred megabytes).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("slipway-reproducible-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files of the checkout at `root` as git sees them: tracked (and still present) plus
/// untracked files that are not ignored.
fn checkout_files(root: &Path) -> Vec<PathBuf> {
    let output = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .expect("git runs (the reproducibility test copies the checkout's files by git ls-files)");
    assert!(
        output.status.success(),
        "git ls-files in {}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8(p.to_vec()).expect("UTF-8 paths")))
        .filter(|p| root.join(p).is_file())
        .collect()
}

fn copy_files(from: &Path, files: &[PathBuf], to: &Path) {
    for file in files {
        let dst = to.join(file);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from.join(file), &dst)
            .unwrap_or_else(|e| panic!("copying {}: {e}", file.display()));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let dst = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&entry.path(), &dst);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

/// A fresh cargo home at `home`: offline, with the machine's downloaded crates and index, and
/// one compiler job at a time (`cargo xtask test` runs QEMU tests beside this one, with time
/// limits; the number of jobs does not change what rustc emits).
fn cargo_home(machine_home: &Path, home: &Path) {
    for part in ["index", "cache"] {
        let from = machine_home.join("registry").join(part);
        let to = home.join("registry").join(part);
        std::fs::create_dir_all(&to).unwrap();
        copy_tree(&from, &to);
    }
    std::fs::write(
        home.join("config.toml"),
        "[net]\noffline = true\n\n[build]\njobs = 1\n",
    )
    .unwrap();
}

/// Every regular file under `dir`, relative to it, sorted (symbolic links are skipped: they
/// are compared through the files they name).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(base, &entry.path(), out);
            } else if kind.is_file() {
                out.push(entry.path().strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What differs between two files: `None` when identical.
fn difference(a: &Path, b: &Path) -> Option<String> {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    if x == y {
        return None;
    }
    let at = x.iter().zip(&y).position(|(p, q)| p != q);
    Some(format!(
        "{} ({} bytes) and {} ({} bytes) differ{}",
        a.display(),
        x.len(),
        b.display(),
        y.len(),
        at.map_or_else(
            || " in length".to_owned(),
            |o| format!(" first at byte {o:#x}")
        )
    ))
}

/// The shipped files (ISO tree, ISO) and debug files of two builds of the bundle: the lists
/// of differences (empty when identical).
fn compare(a: &BuiltBundle, b: &BuiltBundle) -> Vec<String> {
    let mut differences = Vec::new();
    for dir in ["root", xtask::ship::DEBUG_DIR] {
        let (left, right) = (a.output_dir.join(dir), b.output_dir.join(dir));
        let (files_a, files_b) = (files_under(&left), files_under(&right));
        if files_a != files_b {
            differences.push(format!(
                "{dir}/ holds different files: {files_a:?} and {files_b:?}"
            ));
            continue;
        }
        differences.extend(
            files_a
                .iter()
                .filter_map(|f| difference(&left.join(f), &right.join(f))),
        );
    }
    differences.extend(difference(&a.iso, &b.iso));
    differences
}

/// Paths of the build machine that must not appear in any shipped or debug file.
fn assert_no_machine_paths(bundle: &BuiltBundle, paths: &[&Path]) {
    for dir in ["root", xtask::ship::DEBUG_DIR] {
        let base = bundle.output_dir.join(dir);
        for file in files_under(&base) {
            let bytes = std::fs::read(base.join(&file)).unwrap();
            for path in paths {
                let needle = path.to_string_lossy();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} names the build machine's folder {needle}",
                    base.join(&file).display()
                );
            }
        }
    }
}

fn build(checkout: &Path, home: &Path) -> BuiltBundle {
    let mut ws = Workspace::at(checkout).unwrap_or_else(|e| panic!("{e}"));
    ws.cargo_home = home.to_owned();
    ws.target_dir = checkout.join("target");
    let started = Instant::now();
    let built = xtask::build_bundle(&ws, BUNDLE)
        .unwrap_or_else(|e| panic!("building `{BUNDLE}` in {}: {e}", checkout.display()));
    println!(
        "built {} in {:.1} s",
        checkout.display(),
        started.elapsed().as_secs_f64()
    );
    built
}

fn prediction(bundle: &BuiltBundle) -> (String, Vec<u8>) {
    let inputs = predict::bundle_inputs(bundle).unwrap();
    let p = predict::predict(
        &inputs,
        &slipway_measure::BankSet::all_supported(),
        PredictedLaunch::Emulated,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (p.pcr_lines(), p.log)
}

#[test]
fn the_demo_built_in_two_checkouts_with_two_cargo_homes_is_byte_identical() {
    let ws = workspace();
    let started = Instant::now();
    // Every crate the lock file names is in the machine's cargo home before it is copied.
    let fetched = cargo()
        .arg("fetch")
        .current_dir(&ws.root)
        .env("CARGO_HOME", &ws.cargo_home)
        .status()
        .expect("cargo runs");
    assert!(fetched.success(), "cargo fetch failed: {fetched}");

    let scratch = Scratch::new();
    let files = checkout_files(&ws.root);
    let checkouts = [
        (scratch.0.join("a/slipway"), scratch.0.join("home-a")),
        (
            scratch.0.join("a-longer-folder/second-checkout"),
            scratch.0.join("another-cargo-home"),
        ),
    ];
    for (checkout, home) in &checkouts {
        copy_files(&ws.root, &files, checkout);
        cargo_home(&ws.cargo_home, home);
    }
    let built: Vec<BuiltBundle> = checkouts.iter().map(|(c, h)| build(c, h)).collect();
    let (first, second) = (&built[0], &built[1]);

    let differences = compare(first, second);
    assert!(
        differences.is_empty(),
        "the two checkouts' bundles differ:\n{}",
        differences.join("\n")
    );
    let mut machine_paths: Vec<&Path> = vec![&ws.root, &ws.cargo_home];
    for (checkout, home) in &checkouts {
        machine_paths.extend([checkout.as_path(), home.as_path()]);
    }
    assert_no_machine_paths(first, &machine_paths);

    let (pcrs_first, log_first) = prediction(first);
    let (pcrs_second, log_second) = prediction(second);
    assert_eq!(pcrs_first, pcrs_second, "predicted PCRs differ");
    assert_eq!(log_first, log_second, "predicted event logs differ");

    // This checkout's own build (its folder, the machine's cargo home) gives the same bytes.
    let own = bundle(BUNDLE);
    let differences = compare(first, &own);
    assert!(
        differences.is_empty(),
        "this checkout's bundle differs from the copies':\n{}",
        differences.join("\n")
    );
    assert_eq!(prediction(&own).0, pcrs_first);

    println!("{}", first.summary());
    println!(
        "reproducibility check took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
