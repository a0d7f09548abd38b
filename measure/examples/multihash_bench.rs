//! Benchmark: hashing a buffer for all four banks with one `MultiHasher` pass, against the
//! reference of four separate single-bank passes (what hashing bank by bank would cost), in the
//! same run (alternating, best of five each). Prints throughput and the ratio. Run with `--release`:
//! `cargo run --release -p slipway-measure --example multihash_bench [MiB]`.
use slipway_measure::{BankSet, HashAlg, MultiHasher};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("size in MiB"))
        .unwrap_or(256);
    let data: Vec<u8> = (0..mib << 20).map(|i| (i * 31 + i / 4093) as u8).collect();

    // Alternate the two, five rounds, and keep each one's best time: the machine is shared.
    let mut one_pass_time = f64::MAX;
    let mut separate_time = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut hasher = MultiHasher::new(&BankSet::all_supported());
        hasher.update(&data);
        let one_pass = black_box(hasher.finalize());
        one_pass_time = one_pass_time.min(start.elapsed().as_secs_f64());

        let start = Instant::now();
        for alg in HashAlg::ALL {
            let mut single = MultiHasher::new(&BankSet::single(alg));
            single.update(&data);
            let digest = black_box(single.finalize());
            assert_eq!(digest.get(alg), one_pass.get(alg));
        }
        separate_time = separate_time.min(start.elapsed().as_secs_f64());
    }

    let rate = |secs: f64| mib as f64 / 1024.0 / secs;
    println!(
        "{mib} MiB, four banks: one pass {:.3} s ({:.2} GiB/s of input), four passes {:.3} s \
         ({:.2} GiB/s); ratio separate/one-pass = {:.2}",
        one_pass_time,
        rate(one_pass_time),
        separate_time,
        rate(separate_time),
        separate_time / one_pass_time
    );
}
