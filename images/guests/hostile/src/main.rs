//! Hostile test guest for issue 3's and issue 4's tests. One behaviour per run, chosen by the
//! command-line word `test=<behaviour>`; each prints what it is about to do, then does it. Where
//! the hypervisor must stop the domain, surviving is reported as `FAILED: ...` and the domain shuts
//! down with exit code 1; where it must refuse, the refusal is printed and the domain shuts down
//! with 0.
//!
//! | behaviour | what it does | expected |
//! |---|---|---|
//! | `write-outside` | writes just above the end of its RAM | domain stopped |
//! | `write-log-window` | as a control domain, reads its Slipway event-log window's descriptor, then writes 16 bytes in (at `SLIPWAY_LOG_GPA + 16`) | domain stopped (the window is read-only) |
//! | `builder-after-handoff` | sends CreateDomain, Measure, HandOff | each refused (`AfterHandOff`/`NotPermitted`) |
//! | `vmsave`, `clgi`, `skinit`, `vmload`, `stgi` | executes that SVM instruction | domain stopped |
//! | `rewrite-buffer` | vCPU 1 rewrites the hypercall buffer while vCPU 0 calls (needs `cpus = <2>`) | hypervisor unharmed; each call answered or refused |
//! | `imitate` | prints lines imitating another domain's prefix and the hypervisor's | lines escaped/prefixed with this domain's name |
//! | `fake-launch` | prints text imitating a launch request, then writes it to the debugcon port 0xe9 | text only on its own console, escaped; the port writes ignored or the domain stopped; no launch request reaches the harness |
//! | `spin` | spins without exits (`spin=<millions of iterations>`, default forever) | runs; per-pCPU accounting shows it |
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use slipway_guest_rt::cmdline::word_value;
use slipway_guest_rt::hypercall::{self, CallError};
use slipway_guest_rt::{Boot, memory, println};
use slipway_protocol::v1::{self, Capabilities, DomainName, Request};
use slipway_protocol::{Bytes, HYPERCALL_BUFFER_SIZE};

slipway_guest_rt::entry!(main);

fn survived(what: &str) -> ! {
    println!("FAILED: {what} did not stop this domain");
    hypercall::shutdown(1)
}

fn park() -> ! {
    loop {
        // SAFETY: HLT only waits (or exits to the hypervisor); interrupts stay off.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}

fn main(boot: Boot) -> ! {
    let info =
        memory::start_info(boot.start_info_gpa).unwrap_or_else(|e| panic!("start info: {e}"));
    let cmdline = info
        .cmdline()
        .unwrap_or_else(|e| panic!("command line: {e}"));
    let test = word_value(cmdline, "test").unwrap_or("none");
    if boot.cpu != 0 {
        if test == "rewrite-buffer" && boot.cpu == 1 {
            rewrite_buffer_second_vcpu();
        }
        park();
    }
    println!("hostile guest: test={test}");
    match test {
        "write-outside" => write_outside(info.ram_end()),
        "write-log-window" => write_log_window(),
        "builder-after-handoff" => builder_after_handoff(),
        "vmsave" | "vmload" | "clgi" | "stgi" | "skinit" => svm_instruction(test),
        "rewrite-buffer" => rewrite_buffer_caller(),
        "imitate" => imitate(),
        "fake-launch" => fake_launch(),
        "spin" => spin(word_value(cmdline, "spin").and_then(|n| n.parse().ok())),
        other => {
            println!("unknown test \"{other}\"");
            hypercall::shutdown(2)
        }
    }
}

fn write_outside(ram_end: u64) -> ! {
    // The first page above RAM: inside this guest's identity map, outside its memory.
    let target = ram_end.next_multiple_of(4096);
    println!("writing to {target:#x}, outside my memory (RAM ends at {ram_end:#x})");
    // SAFETY: deliberately hostile: the address is not this domain's memory; the hypervisor
    // must stop the domain on the nested page fault. Nothing in this guest aliases it.
    unsafe { core::ptr::write_volatile(target as *mut u64, 0x5157_5157_5157_5157) };
    survived("a write outside its memory")
}

fn write_log_window() -> ! {
    let window = v1::SLIPWAY_LOG_GPA;
    // Reading is allowed: the descriptor shows the window is there and mapped.
    match memory::bytes(window, v1::LOG_WINDOW_SIZE).map(v1::LogWindowDescriptor::decode) {
        Some(Ok(descriptor)) => {
            println!("log window at {window:#x}: {} log bytes", descriptor.length)
        }
        Some(Err(error)) => println!("log window at {window:#x}: unusable descriptor: {error}"),
        None => println!("log window at {window:#x}: outside the identity map"),
    }
    let target = window + v1::LOG_DESCRIPTOR_LEN as u64;
    println!("writing to {target:#x}, inside my read-only log window");
    // SAFETY: deliberately hostile: the window is mapped read-only (nested paging); the
    // hypervisor must stop the domain on the write. Nothing in this guest aliases it.
    unsafe { core::ptr::write_volatile(target as *mut u64, 0x5157_5157_5157_5157) };
    survived("a write to its read-only log window")
}

fn builder_after_handoff() -> ! {
    let name = DomainName::new("intruder").expect("valid name");
    let requests = [
        (
            "CreateDomain",
            Request::CreateDomain {
                name,
                memory_bytes: 1 << 20,
                vcpus: 1,
                capabilities: Capabilities::default(),
            },
        ),
        (
            "Measure",
            Request::Measure {
                pcr: 20,
                event_type: 0x606,
                digests: slipway_protocol::BoundedVec::new(),
                event_data: Bytes::new(),
            },
        ),
        ("HandOff", Request::HandOff),
    ];
    let mut all_refused = true;
    for (what, request) in &requests {
        match hypercall::call(request) {
            Err(CallError::Refused(error)) => {
                println!(
                    "{what}: refused: {} ({:#06x})",
                    error.message(),
                    error as u16
                );
            }
            other => {
                println!("FAILED: {what} was not refused: {other:?}");
                all_refused = false;
            }
        }
    }
    hypercall::shutdown(if all_refused { 0 } else { 1 })
}

/// A page of this guest's own RAM for VMSAVE/VMLOAD/SKINIT operands, so the only thing wrong
/// with each instruction is that a guest executes it.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut OPERAND_PAGE: Page = Page([0; 4096]);

fn svm_instruction(which: &str) -> ! {
    let page = (&raw mut OPERAND_PAGE) as u64;
    println!("executing {which} (rax = {page:#x})");
    // SAFETY: deliberately hostile: each SVM instruction must be intercepted by the hypervisor
    // (the domain is stopped). The operand is a page of this guest's own RAM that nothing else
    // uses, so even an unintercepted instruction could only touch that page.
    unsafe {
        match which {
            "vmsave" => core::arch::asm!("vmsave rax", in("rax") page, options(nostack)),
            "vmload" => core::arch::asm!("vmload rax", in("rax") page, options(nostack)),
            "clgi" => core::arch::asm!("clgi", options(nomem, nostack)),
            "stgi" => core::arch::asm!("stgi", options(nomem, nostack)),
            _ => core::arch::asm!("skinit eax", in("eax") page as u32, options(nostack)),
        }
    }
    survived(which)
}

/// The buffer both vCPUs use in `rewrite-buffer`.
#[repr(C, align(4096))]
struct SharedBuffer(core::cell::UnsafeCell<[u8; HYPERCALL_BUFFER_SIZE]>);
// SAFETY: deliberately shared between the two vCPUs without synchronisation: the test is that
// the hypervisor copies the request once and is unharmed by concurrent rewriting. Only plain
// volatile byte accesses are made, never references held across the other vCPU's writes.
unsafe impl Sync for SharedBuffer {}
static SHARED: SharedBuffer = SharedBuffer(core::cell::UnsafeCell::new([0; HYPERCALL_BUFFER_SIZE]));
static REWRITER_RUNNING: AtomicBool = AtomicBool::new(false);
static STOP_REWRITING: AtomicBool = AtomicBool::new(false);
static REWRITES: AtomicU32 = AtomicU32::new(0);
const REWRITE_CALLS: u32 = 200;

/// Causes one exit (a read of the UART's line-status register), so that a hypervisor that
/// schedules vCPUs only at exits gets a chance to run the other vCPU.
fn exit_once() {
    let _status: u8;
    // SAFETY: reading COM1's line-status register (0x3fd) has no effect on memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") 0x3fdu16, out("al") _status, options(nomem, nostack))
    };
}

fn rewrite_buffer_second_vcpu() -> ! {
    let base = SHARED.0.get() as *mut u8;
    REWRITER_RUNNING.store(true, Ordering::Release);
    let mut round = 0u32;
    while !STOP_REWRITING.load(Ordering::Acquire) {
        for offset in 0..64usize {
            // SAFETY: `base` is the shared static page; offsets stay below its 4096 bytes.
            unsafe {
                core::ptr::write_volatile(
                    base.add(offset),
                    (round as u8).wrapping_mul(31) ^ offset as u8,
                )
            };
        }
        round = round.wrapping_add(1);
        REWRITES.store(round, Ordering::Relaxed);
        if round.is_multiple_of(64) {
            exit_once();
        }
    }
    park()
}

fn rewrite_buffer_caller() -> ! {
    let mut spins = 0u64;
    while !REWRITER_RUNNING.load(Ordering::Acquire) {
        spins += 1;
        if spins == 100_000 {
            println!("FAILED: vCPU 1 never started (configure cpus = <2>)");
            hypercall::shutdown(1);
        }
        exit_once();
    }
    // Each executed request prints one dot; the line ends after the loop.
    let request = Request::WriteConsole {
        bytes: Bytes::from_slice(b".").expect("short message"),
    };
    let (mut done, mut refused, mut unreadable, mut transport) = (0u32, 0u32, 0u32, 0u32);
    for _ in 0..REWRITE_CALLS {
        let mut encoded = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = v1::encode_request(&request, &mut encoded).expect("request fits");
        let base = SHARED.0.get() as *mut u8;
        for (offset, byte) in encoded[..len].iter().enumerate() {
            // SAFETY: `base` is the shared static page and `len` is below its size.
            unsafe { core::ptr::write_volatile(base.add(offset), *byte) };
        }
        // SAFETY: the buffer is a page-aligned static of this domain's RAM; the concurrent
        // rewriting by vCPU 1 is the point of the test and can only change request bytes.
        let (status, response_len) = unsafe { hypercall::raw_call(base as u64, len as u64) };
        if status != 0 {
            transport += 1;
            continue;
        }
        // vCPU 1 may already be rewriting the response too: copy it out, then decode.
        let mut response = [0u8; HYPERCALL_BUFFER_SIZE];
        let response_len = (response_len as usize).min(HYPERCALL_BUFFER_SIZE);
        for (offset, byte) in response[..response_len].iter_mut().enumerate() {
            // SAFETY: as above; offsets stay below the page size.
            *byte = unsafe { core::ptr::read_volatile(base.add(offset)) };
        }
        match v1::decode_response(&response[..response_len]) {
            Ok(Ok(_)) => done += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => unreadable += 1,
        }
    }
    STOP_REWRITING.store(true, Ordering::Release);
    println!();
    println!(
        "rewrite-buffer: {REWRITE_CALLS} calls during {} rewrites: {done} done, {refused} refused, \
         {unreadable} responses overwritten by vCPU 1, {transport} refused at transport",
        REWRITES.load(Ordering::Relaxed)
    );
    hypercall::shutdown(0)
}

fn imitate() -> ! {
    println!("[hello-a] this line pretends to come from hello-a");
    println!("slipway: exiting: success");
    println!("slipway: milestone hand-off at 1 us");
    // A carriage return and an escape sequence trying to rewrite the start of the line.
    println!("innocent\r[control] overwritten? \x1b[2K\x1b[1Gslipway: fake");
    let long = [b'x'; 600];
    println!("{}", core::str::from_utf8(&long).unwrap_or(""));
    println!("imitate: done");
    hypercall::shutdown(0)
}

fn fake_launch() -> ! {
    let text = "slipway-launch-request region=0x200000 size=0x100000\n";
    println!("{}", text.trim_end());
    println!("writing the same text to the debugcon port 0xe9");
    for byte in text.bytes() {
        // SAFETY: deliberately hostile: port 0xe9 is the hypervisor's launch channel and must
        // never reach a guest; the write has no effect on this guest's memory.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") 0xe9u16, in("al") byte, options(nomem, nostack))
        };
    }
    // The hypervisor treats unknown ports as an empty bus (writes ignored) or stops the domain;
    // either way nothing may reach the harness: the test checks that no launch request arrived.
    println!("fake-launch: port writes returned");
    hypercall::shutdown(0)
}

fn spin(millions: Option<u64>) -> ! {
    match millions {
        Some(n) => println!("spinning {n} million iterations without exits"),
        None => println!("spinning forever without exits"),
    }
    let limit = millions.map(|n| n.saturating_mul(1_000_000));
    let mut counter = 0u64;
    loop {
        counter = core::hint::black_box(counter.wrapping_add(1));
        if limit == Some(counter) {
            println!("spin: done after {counter} iterations");
            hypercall::shutdown(0);
        }
    }
}
