//! Demo guest: prints its name, memory size and command line, does a little work, and shuts
//! down through the shutdown hypercall, or keeps running if the command line contains `stay`.
//!
//! Command line words: `name=<text>` (what to call itself; default "hello"), `stay`,
//! `work=<n>` (how many Collatz sequences to run; default 10000), `report-boot` (after its
//! work, report a successful boot with the `ReportBootSuccess` hypercall: only a control
//! domain may; the answer is printed).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use slipway_guest_rt::cmdline::word_value;
use slipway_guest_rt::{Boot, hypercall, memory, println};

slipway_guest_rt::entry!(main);

/// The starting value below `limit` with the longest Collatz sequence, and its length.
fn longest_collatz(limit: u64) -> (u64, u32) {
    let mut best = (1, 1);
    for start in 1..limit {
        let (mut value, mut steps) = (start, 1u32);
        while value != 1 {
            value = if value % 2 == 0 {
                value / 2
            } else {
                3 * value + 1
            };
            steps += 1;
        }
        if steps > best.1 {
            best = (start, steps);
        }
    }
    best
}

fn main(boot: Boot) -> ! {
    if boot.cpu != 0 {
        // Extra vCPUs have nothing to do in this demo.
        loop {
            core::hint::spin_loop();
        }
    }
    let info = match memory::start_info(boot.start_info_gpa) {
        Ok(info) => info,
        Err(error) => panic!("start info: {error}"),
    };
    let cmdline = info
        .cmdline()
        .unwrap_or_else(|error| panic!("command line: {error}"));
    let name = word_value(cmdline, "name").unwrap_or("hello");
    println!("hello from {name}");
    println!(
        "memory: {} KiB ({} KiB usable RAM)",
        info.ram_end() / 1024,
        info.ram_size() / 1024
    );
    println!("command line: \"{cmdline}\"");
    let work = word_value(cmdline, "work")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let (start, steps) = longest_collatz(work);
    println!("work: below {work}, {start} has the longest Collatz sequence ({steps} steps)");
    if cmdline
        .split_ascii_whitespace()
        .any(|word| word == "report-boot")
    {
        match hypercall::call(&slipway_protocol::v1::Request::ReportBootSuccess) {
            Ok(_) => println!("boot reported successful"),
            Err(error) => println!("boot report refused: {error}"),
        }
    }
    if cmdline.split_ascii_whitespace().any(|word| word == "stay") {
        println!("staying up (command line says stay)");
        loop {
            core::hint::spin_loop();
        }
    }
    println!("done, shutting down");
    hypercall::shutdown(0)
}
