//! The recovery environment's guest: what the hypervisor starts from the `recovery=` module when
//! domB could not make a valid plan. Prints a banner and the reason the hypervisor put on its
//! command line (`slipway.recovery=<reason>`, `slipway_protocol::recovery::REASON_WORD`), then
//! keeps the console: it reads command lines (`reason`, `help`, `exit`) until the operator types
//! `exit`, or shuts down at once with the command-line word `exit` (non-interactive tests).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use slipway_guest_rt::cmdline::word_value;
use slipway_guest_rt::{Boot, hypercall, memory, println};
use slipway_protocol::recovery::REASON_WORD;

slipway_guest_rt::entry!(main);

fn main(boot: Boot) -> ! {
    if boot.cpu != 0 {
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
    println!("==== SLIPWAY RECOVERY ENVIRONMENT ====");
    match word_value(cmdline, REASON_WORD) {
        Some(reason) => println!("recovery reason: {reason}"),
        None => println!("recovery reason: unknown (no {REASON_WORD}= on the command line)"),
    }
    println!(
        "memory: {} KiB; the launch configuration's domains did not start",
        info.ram_size() / 1024
    );
    if cmdline.split_ascii_whitespace().any(|word| word == "exit") {
        println!("recovery environment done (command line says exit)");
        hypercall::shutdown(0)
    }
    let reason = word_value(cmdline, REASON_WORD).unwrap_or("unknown");
    println!("the console is yours; commands: reason, help, exit");
    let mut line = [0u8; 64];
    let mut len = 0;
    loop {
        let Some(byte) = slipway_guest_rt::console::try_read_byte() else {
            core::hint::spin_loop();
            continue;
        };
        match byte {
            b'\r' | b'\n' => {
                let command = core::str::from_utf8(&line[..len]).unwrap_or("").trim();
                len = 0;
                match command {
                    "" => {}
                    "reason" => println!("recovery reason: {reason}"),
                    "help" => println!("commands: reason, help, exit"),
                    "exit" => {
                        println!("recovery environment done (operator typed exit)");
                        hypercall::shutdown(0)
                    }
                    other => println!("unknown command `{}`", other.escape_debug()),
                }
            }
            _ if len < line.len() => {
                line[len] = byte;
                len += 1;
            }
            _ => {}
        }
    }
}
