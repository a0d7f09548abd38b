//! Every seed of every target's corpus goes through its target (a regression check that runs in
//! `cargo test`, without libFuzzer), and every target has seeds.

use std::path::PathBuf;

use crate::TARGETS;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("a readable seed");
            (path, bytes)
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_target_has_seeds_and_every_seed_passes() {
    for (name, target) in TARGETS {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "target {name} has no seeds");
        for (path, bytes) in seeds {
            eprintln!("{name}: {}", path.display());
            target(&bytes);
        }
    }
}
