//! Hostile test guest for the hostile-guest and measured-launch tests. One behaviour per run, chosen by the
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
//! | `vmxon`, `vmclear`, `vmptrld`, `vmlaunch`, `vmread`, `invept` | executes that Intel VMX instruction | refused with #UD (this guest has no IDT: triple fault, domain stopped) |
//! | `rewrite-buffer` | vCPU 1 rewrites the hypercall buffer while vCPU 0 calls (needs `cpus = <2>`) | hypervisor unharmed; each call answered or refused |
//! | `imitate` | prints lines imitating another domain's prefix and the hypervisor's | lines escaped/prefixed with this domain's name |
//! | `fake-launch` | prints text imitating a launch request, then writes it to the debugcon port 0xe9 | text only on its own console, escaped; the port writes ignored or the domain stopped; no launch request reaches the harness |
//! | `spin` | spins without exits (`spin=<millions of iterations>`, default forever) | runs; per-pCPU accounting shows it |
//! | `user-hypercall` | drops to ring 3 (its own GDT/TSS/IDT and user-accessible page tables) and calls the hypervisor from there with a `WriteConsole` request | the call raises #UD in the guest at the VMMCALL (reported by the guest's #UD handler); nothing is written |
//! | `debug-exceptions` | single-steps one instruction (#DB) at CPL 0, then with CR0.AM and RFLAGS.AC makes a misaligned load at CPL 3 (#AC) | the guest's own handlers get both (the hypervisor intercepts and reflects them); an emulator that does not check alignment raises no #AC, which is reported |
//! | `flood` | for `duration=<TSC megaticks>`, in every odd half-period of `period=<megaticks>` of the TSC, writes the non-printable byte 0x01 (escaped to 4 characters) in console writes of 1024 bytes; makes empty console writes in the even ones (the same calls without output) | its output is rate-limited and the drops reported; no other domain slows down |
//! | `victim` | for `duration`, counts the exits it can make (UART status reads) per 10^9 TSC ticks in the even (quiet) and odd (loud) half-periods of `period`, and prints both rates and their ratio | the ratio stays near 1 |
//! | `xsetbv-beyond-offer` | executes XSETBV with XCR0 = x87\|SSE\|AVX\|PKRU (PKRU is never offered), then writes to its console | domain stopped: the exit handler's #GP (no IDT: triple fault), or, where the CPU let the XSETBV through without an exit (QEMU 7.2's SVM), the backend's check of XCR0 after the next exit |
//! | `ram-top` | for each RAM range of its memory map (above 4 GiB too, mapped through its own page-directory page), writes a word at the range's first and last 8 bytes and reads it back; then writes into the memory hole at `DOMAIN_RAM_HOLE_START` | `ram-top: ... read back ...` per range; then the domain stopped (the hole is not RAM) |
//! | `fpu` | checks its x87/SSE state and DR0-DR3 start clean (XMM0-15 and DR0-DR3 zero), and where CPUID offers AVX (guest-rt's entry enabled it with XSETBV) that XCR0 reads x87\|SSE\|AVX and the upper halves of YMM0-15 start zero; writes its own (`marker=<1..=3>`: XMM0-15, YMM0-15 upper halves, x87 and SSE rounding control, DR0-DR3), then spins `spin=<millions>` iterations checking it still reads back, counting the pauses (TSC gaps) where other vCPUs ran | `fpu: clean start`, `avx: xcr0 0x7, clean start` (or `avx: not offered`), `debug registers: clean start`, `debug registers: kept marker ...`, `avx: kept marker ...` and `fpu: kept marker ...`; another domain's state is never seen |
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use slipway_guest_rt::cmdline::word_value;
use slipway_guest_rt::hypercall::{self, CallError};
use slipway_guest_rt::{Boot, memory, println};
use slipway_protocol::v1::{self, Capabilities, DomainName, Request};
use slipway_protocol::{Bytes, CALL_MESSAGE, HYPERCALL_BUFFER_SIZE};

mod ring3;

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
        "vmxon" | "vmclear" | "vmptrld" | "vmlaunch" | "vmread" | "invept" => vmx_instruction(test),
        "rewrite-buffer" => rewrite_buffer_caller(),
        "imitate" => imitate(),
        "fake-launch" => fake_launch(),
        "user-hypercall" => user_hypercall(),
        "debug-exceptions" => debug_exceptions(),
        "flood" => flood(
            mega(cmdline, "period").unwrap_or(200),
            mega(cmdline, "duration").unwrap_or(6000),
        ),
        "victim" => victim(
            mega(cmdline, "period").unwrap_or(200),
            mega(cmdline, "duration").unwrap_or(6000),
        ),
        "ram-top" => ram_top(&info),
        "spin" => spin(word_value(cmdline, "spin").and_then(|n| n.parse().ok())),
        "xsetbv-beyond-offer" => xsetbv_beyond_offer(),
        "fpu" => fpu(
            word_value(cmdline, "marker").and_then(|n| n.parse().ok()),
            word_value(cmdline, "spin")
                .and_then(|n| n.parse().ok())
                .unwrap_or(20),
        ),
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

/// A page directory for this guest's own mapping of RAM above the runtime's 4 GiB identity map.
#[repr(C, align(4096))]
struct PageDirectory([u64; 512]);

static mut HIGH_PAGE_DIRECTORY: PageDirectory = PageDirectory([0; 512]);

/// Makes `gpa` (above 4 GiB, below 512 GiB) addressable at the same virtual address: the
/// runtime's PDPT (reached from CR3) gets an entry for `gpa`'s GiB pointing at this guest's page
/// directory, which maps `gpa`'s 2 MiB page. Returns `false` outside that range.
fn map_high(gpa: u64) -> bool {
    if !(memory::IDENTITY_MAP_END..512 << 30).contains(&gpa) {
        return false;
    }
    const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects (this guest runs at CPL 0).
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    let directory = core::ptr::addr_of_mut!(HIGH_PAGE_DIRECTORY);
    // SAFETY: the runtime's PML4 and PDPT are static tables of this image, identity-mapped
    // (virtual == guest-physical below 4 GiB) and written by nobody else after the entry; this
    // guest's other vCPUs are parked. The page directory is this image's own static, 4 KiB
    // aligned, used only here. Entry 0 of the PML4 covers the first 512 GiB; the PDPT's entries
    // for GiB 4 and above are unused by the runtime (its map ends at 4 GiB). Writing CR3 again
    // flushes the TLB.
    unsafe {
        let pml4 = (cr3 & ADDRESS) as *const u64;
        let pdpt = (pml4.read_volatile() & ADDRESS) as *mut u64;
        let table = &mut (*directory).0;
        table[((gpa >> 21) & 511) as usize] = (gpa & !0x1f_ffff) | 0x83;
        pdpt.add((gpa >> 30) as usize)
            .write_volatile(directory as u64 | 0x3);
        core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack));
    }
    true
}

/// Writes a marker word at `gpa` and reads it back.
fn write_and_read_back(gpa: u64) -> (u64, u64) {
    let marker = 0x5a11_0000_0000_0000 ^ gpa;
    // SAFETY: `gpa` is 8-byte aligned RAM of this domain (from its memory map, checked by the
    // caller), mapped at the same virtual address; nothing of this guest's image or stacks lies
    // at the first or last word of a RAM range it does not use (the start-info page is reserved,
    // not RAM; the image is loaded at 1 MiB).
    unsafe {
        core::ptr::write_volatile(gpa as *mut u64, marker);
        (marker, core::ptr::read_volatile(gpa as *const u64))
    }
}

fn ram_top(info: &slipway_guest_rt::pvh::StartInfo<'static, memory::IdentityMapped>) -> ! {
    let mut failed = false;
    for range in info
        .memory_map()
        .filter(|r| r.kind == slipway_guest_rt::pvh::E820_RAM)
    {
        let end = range.addr + range.size;
        // The first RAM range starts at 0 (a null pointer): its first word is left alone.
        let first = if range.addr == 0 { 8 } else { range.addr };
        for gpa in [first, end - 8] {
            if gpa >= memory::IDENTITY_MAP_END && !map_high(gpa) {
                println!("FAILED: ram-top: cannot map {gpa:#x}");
                failed = true;
                continue;
            }
            let (wrote, read) = write_and_read_back(gpa);
            println!(
                "ram-top: RAM [{:#x}, {end:#x}): wrote {wrote:#x} at {gpa:#x}, read back {read:#x}",
                range.addr
            );
            failed |= wrote != read;
        }
    }
    if failed {
        println!("FAILED: ram-top: a word did not read back");
        hypercall::shutdown(1);
    }
    let hole = slipway_protocol::platform::DOMAIN_RAM_HOLE_START;
    println!("writing to {hole:#x}, in the memory hole");
    // SAFETY: deliberately hostile: the hole is not this domain's memory (nothing is mapped
    // there in its nested tables); the hypervisor must stop the domain. Nothing in this guest
    // aliases it.
    unsafe { core::ptr::write_volatile(hole as *mut u64, 0x5157_5157_5157_5157) };
    survived("a write into the memory hole")
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

/// Executes one Intel VMX instruction (operands in this guest's own RAM). The hypervisor must
/// refuse it: VMX is hidden from guests, so the guest gets the #UD a CPU without VMX raises
/// (this guest has no IDT: it ends in a triple fault and is stopped) or is stopped outright.
fn vmx_instruction(which: &str) -> ! {
    let page = (&raw mut OPERAND_PAGE) as u64;
    println!("executing {which} (operand {page:#x})");
    let pointer = page;
    // SAFETY: deliberately hostile: every VMX instruction exits from a guest; the operands are
    // this guest's own page, so even a VMX instruction that ran could only touch that page.
    unsafe {
        match which {
            "vmxon" => core::arch::asm!("vmxon [{}]", in(reg) &pointer, options(nostack)),
            "vmclear" => core::arch::asm!("vmclear [{}]", in(reg) &pointer, options(nostack)),
            "vmptrld" => core::arch::asm!("vmptrld [{}]", in(reg) &pointer, options(nostack)),
            "vmlaunch" => core::arch::asm!("vmlaunch", options(nomem, nostack)),
            "vmread" => core::arch::asm!(
                "vmread {}, {}",
                out(reg) _,
                in(reg) 0x6c16u64,
                options(nomem, nostack)
            ),
            _ => core::arch::asm!(
                "invept {}, [{}]",
                in(reg) 1u64,
                in(reg) &[0u64; 2],
                options(nostack)
            ),
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
            core::arch::asm!("out dx, al", in("dx") slipway_protocol::platform::DEBUGCON_PORT, in("al") byte, options(nomem, nostack))
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

/// XOR of each of XMM0-15's low quadword with `expected`, ORed together: 0 when all hold it.
fn xmm_difference(expected: u64) -> u64 {
    let mut difference = 0u64;
    // SAFETY: reads the XMM registers (SSE is enabled by guest-rt's entry) into scratch GPRs;
    // touches no memory.
    unsafe {
        core::arch::asm!(
            "movq {t}, xmm0", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm1", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm2", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm3", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm4", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm5", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm6", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm7", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm8", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm9", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm10", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm11", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm12", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm13", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm14", "xor {t}, {e}", "or {d}, {t}",
            "movq {t}, xmm15", "xor {t}, {e}", "or {d}, {t}",
            t = out(reg) _,
            e = in(reg) expected,
            d = inout(reg) difference,
            options(nomem, nostack),
        );
    }
    difference
}

/// Writes `value` to XMM0-15 (low quadword; the high one becomes zero).
fn set_xmm(value: u64) {
    // SAFETY: writes only the XMM registers, which this image's (soft-float) code never uses.
    unsafe {
        core::arch::asm!(
            "movq xmm0, {v}", "movq xmm1, {v}", "movq xmm2, {v}", "movq xmm3, {v}",
            "movq xmm4, {v}", "movq xmm5, {v}", "movq xmm6, {v}", "movq xmm7, {v}",
            "movq xmm8, {v}", "movq xmm9, {v}", "movq xmm10, {v}", "movq xmm11, {v}",
            "movq xmm12, {v}", "movq xmm13, {v}", "movq xmm14, {v}", "movq xmm15, {v}",
            v = in(reg) value,
            options(nomem, nostack),
        );
    }
}

/// XCR0 if AVX is usable: CPUID reports XSAVE, OSXSAVE (the entry set CR4.OSXSAVE) and AVX, and
/// XGETBV shows x87, SSE and AVX enabled (the hypervisor accepted the entry's XSETBV).
fn avx_enabled() -> Result<u64, &'static str> {
    const XSAVE: u32 = 1 << 26;
    const OSXSAVE: u32 = 1 << 27;
    const AVX: u32 = 1 << 28;
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    if ecx & XSAVE == 0 {
        return Err("CPUID has no XSAVE");
    }
    if ecx & OSXSAVE == 0 {
        return Err("CPUID has no OSXSAVE although CR4.OSXSAVE is set");
    }
    if ecx & AVX == 0 {
        return Err("CPUID has no AVX");
    }
    let (eax, edx): (u32, u32);
    // SAFETY: XGETBV of XCR0 with CR4.OSXSAVE set (CPUID's OSXSAVE says so) only reads it.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") eax, out("edx") edx,
            options(nomem, nostack, preserves_flags));
    }
    let xcr0 = (u64::from(edx) << 32) | u64::from(eax);
    if xcr0 & 0b111 != 0b111 {
        return Err("XCR0 lacks AVX although CPUID offers it");
    }
    Ok(xcr0)
}

/// Writes YMM0-15: low quadword `low`, bits 127:64 zero (as `set_xmm` leaves them), upper half
/// `upper`.
fn set_ymm(low: u64, upper: [u64; 2]) {
    let image: [u64; 4] = [low, 0, upper[0], upper[1]];
    // SAFETY: loads the YMM registers from a local (AVX is enabled: `avx_enabled`); this image's
    // (soft-float) code never uses them.
    unsafe {
        core::arch::asm!(
            "vmovdqu ymm0, [{p}]", "vmovdqu ymm1, [{p}]", "vmovdqu ymm2, [{p}]",
            "vmovdqu ymm3, [{p}]", "vmovdqu ymm4, [{p}]", "vmovdqu ymm5, [{p}]",
            "vmovdqu ymm6, [{p}]", "vmovdqu ymm7, [{p}]", "vmovdqu ymm8, [{p}]",
            "vmovdqu ymm9, [{p}]", "vmovdqu ymm10, [{p}]", "vmovdqu ymm11, [{p}]",
            "vmovdqu ymm12, [{p}]", "vmovdqu ymm13, [{p}]", "vmovdqu ymm14, [{p}]",
            "vmovdqu ymm15, [{p}]",
            p = in(reg) image.as_ptr(),
            options(nostack, readonly, preserves_flags),
        );
    }
}

/// The upper halves (bits 255:128) of YMM0-15, as two quadwords each.
fn ymm_upper_halves() -> [[u64; 2]; 16] {
    let mut out = [[0u64; 2]; 16];
    // SAFETY: stores the upper half of each YMM register into a local of 256 bytes (16 bytes
    // each); AVX is enabled (`avx_enabled`).
    unsafe {
        core::arch::asm!(
            "vextractf128 [{p}], ymm0, 1", "vextractf128 [{p} + 16], ymm1, 1",
            "vextractf128 [{p} + 32], ymm2, 1", "vextractf128 [{p} + 48], ymm3, 1",
            "vextractf128 [{p} + 64], ymm4, 1", "vextractf128 [{p} + 80], ymm5, 1",
            "vextractf128 [{p} + 96], ymm6, 1", "vextractf128 [{p} + 112], ymm7, 1",
            "vextractf128 [{p} + 128], ymm8, 1", "vextractf128 [{p} + 144], ymm9, 1",
            "vextractf128 [{p} + 160], ymm10, 1", "vextractf128 [{p} + 176], ymm11, 1",
            "vextractf128 [{p} + 192], ymm12, 1", "vextractf128 [{p} + 208], ymm13, 1",
            "vextractf128 [{p} + 224], ymm14, 1", "vextractf128 [{p} + 240], ymm15, 1",
            p = in(reg) out.as_mut_ptr(),
            options(nostack, preserves_flags),
        );
    }
    out
}

/// The x87 control word and MXCSR.
fn fpu_controls() -> (u16, u32) {
    let mut fcw = 0u16;
    let mut mxcsr = 0u32;
    // SAFETY: stores the two control registers into locals this function owns.
    unsafe {
        core::arch::asm!(
            "fnstcw [{fcw}]",
            "stmxcsr [{mxcsr}]",
            fcw = in(reg) &mut fcw,
            mxcsr = in(reg) &mut mxcsr,
            options(nostack),
        );
    }
    (fcw, mxcsr)
}

fn set_fpu_controls(fcw: u16, mxcsr: u32) {
    // SAFETY: loads the two control registers from locals; the values only change rounding
    // control (no exception unmasked, no reserved MXCSR bit), and this image uses no x87/SSE
    // arithmetic.
    unsafe {
        core::arch::asm!(
            "fldcw [{fcw}]",
            "ldmxcsr [{mxcsr}]",
            fcw = in(reg) &fcw,
            mxcsr = in(reg) &mxcsr,
            options(nostack, readonly),
        );
    }
}

/// DR0-DR3.
fn debug_registers() -> [u64; 4] {
    let (mut d0, mut d1, mut d2, mut d3): (u64, u64, u64, u64);
    // SAFETY: reading debug registers at CPL 0 has no side effects (DR accesses are not
    // intercepted: the values are the hardware's).
    unsafe {
        core::arch::asm!(
            "mov {0}, dr0", "mov {1}, dr1", "mov {2}, dr2", "mov {3}, dr3",
            out(reg) d0, out(reg) d1, out(reg) d2, out(reg) d3,
            options(nomem, nostack, preserves_flags),
        );
    }
    [d0, d1, d2, d3]
}

/// Writes DR0-DR3 (addresses only: DR7 stays 0x400, so no breakpoint is armed).
fn set_debug_registers(values: [u64; 4]) {
    let [d0, d1, d2, d3] = values;
    // SAFETY: DR0-DR3 only hold addresses; with DR7 disabling every breakpoint they have no
    // effect on execution.
    unsafe {
        core::arch::asm!(
            "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}",
            in(reg) d0, in(reg) d1, in(reg) d2, in(reg) d3,
            options(nomem, nostack, preserves_flags),
        );
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads the time-stamp counter (not intercepted).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The x87/SSE isolation check (see the table at the top).
fn fpu(marker: Option<u64>, millions: u64) -> ! {
    let Some(marker) = marker.filter(|m| (1..=3).contains(m)) else {
        println!("fpu: needs marker=1, 2 or 3");
        hypercall::shutdown(2)
    };
    // The state guest-rt's entry leaves: FNINIT's FCW, the default MXCSR, and XMM registers as
    // the hypervisor created them (zero) since this image never uses them.
    let (fcw, mxcsr) = fpu_controls();
    let dirty = xmm_difference(0);
    if dirty != 0 || (fcw, mxcsr) != (0x037f, 0x1f80) {
        println!(
            "FAILED: fpu: start state not clean: xmm bits {dirty:#x}, fcw {fcw:#x}, mxcsr {mxcsr:#x}"
        );
        hypercall::shutdown(1)
    }
    println!("fpu: clean start");
    let avx = avx_enabled();
    match avx {
        Ok(xcr0) => {
            let upper = ymm_upper_halves();
            if upper != [[0; 2]; 16] {
                println!("FAILED: avx: start state not clean: YMM upper halves {upper:#x?}");
                hypercall::shutdown(1)
            }
            println!("avx: xcr0 {xcr0:#x}, clean start");
        }
        Err(why) => println!("avx: not offered ({why})"),
    }
    let debug = debug_registers();
    if debug != [0; 4] {
        println!("FAILED: debug registers: start state not clean: DR0-DR3 {debug:#x?}");
        hypercall::shutdown(1)
    }
    println!("debug registers: clean start");
    let my_debug = [0x1000, 0x2000, 0x3000, 0x4000].map(|base| base | marker << 8);
    set_debug_registers(my_debug);
    let value = 0x5eed_0000_0000_0000 | (marker * 0x0101_0101);
    // Rounding control: x87 bits 10-11, SSE bits 13-14.
    let (my_fcw, my_mxcsr) = (
        0x037f | (marker as u16) << 10,
        0x1f80 | (marker as u32) << 13,
    );
    // The upper halves of YMM0-15 get a value of their own, distinct from the lower halves'.
    let upper = [
        0xa5c0_0000_0000_0000 | (marker * 0x1111),
        0x7e57_0000_0000_0000 | marker,
    ];
    if avx.is_ok() {
        set_ymm(value, upper);
    } else {
        set_xmm(value);
    }
    set_fpu_controls(my_fcw, my_mxcsr);
    let limit = millions.saturating_mul(1_000_000);
    let mut pauses = 0u64;
    let mut last = rdtsc();
    let mut counter = 0u64;
    while counter < limit {
        counter = core::hint::black_box(counter + 1);
        if counter.is_multiple_of(1024) {
            let now = rdtsc();
            // Well over a check's own time: another vCPU ran in between.
            if now.wrapping_sub(last) > 5_000_000 {
                pauses += 1;
            }
            last = now;
            let debug = debug_registers();
            if debug != my_debug {
                println!("FAILED: debug registers: marker {marker} lost: DR0-DR3 {debug:#x?}");
                hypercall::shutdown(1)
            }
            let dirty = xmm_difference(value);
            let controls = fpu_controls();
            if dirty != 0 || controls != (my_fcw, my_mxcsr) {
                println!(
                    "FAILED: fpu: marker {marker} lost: xmm bits {dirty:#x}, fcw {:#x}, mxcsr {:#x}",
                    controls.0, controls.1
                );
                hypercall::shutdown(1)
            }
            if avx.is_ok() {
                let seen = ymm_upper_halves();
                if seen != [upper; 16] {
                    println!("FAILED: avx: marker {marker} lost: YMM upper halves {seen:#x?}");
                    hypercall::shutdown(1)
                }
            }
        }
    }
    println!("debug registers: kept marker {marker}");
    if avx.is_ok() {
        println!("avx: kept marker {marker}");
    }
    println!("fpu: kept marker {marker} for {counter} iterations, {pauses} pauses");
    hypercall::shutdown(0)
}

/// XCR0 with PKRU (bit 9) on top of x87|SSE|AVX: a component no guest is offered.
fn xsetbv_beyond_offer() -> ! {
    const XCR0_WITH_PKRU: u64 = 0b111 | (1 << 9);
    println!("executing xsetbv with XCR0 = {XCR0_WITH_PKRU:#x} (PKRU is not offered)");
    // SAFETY: deliberately hostile: the hypervisor must refuse the value (#GP) or stop the
    // domain; if it were accepted, only this guest's own extended state would change.
    unsafe {
        core::arch::asm!(
            "xsetbv",
            in("ecx") 0u32,
            in("eax") XCR0_WITH_PKRU as u32,
            in("edx") (XCR0_WITH_PKRU >> 32) as u32,
            options(nomem, nostack, preserves_flags),
        );
    }
    // The console write exits: a hypervisor that missed the XSETBV sees XCR0 here.
    println!("xsetbv with PKRU executed; writing to the console");
    survived("XSETBV of a state component not offered")
}

/// The page ring 3 passes to the hypervisor in `user-hypercall`.
static mut USER_BUFFER: Page = Page([0; 4096]);

fn user_hypercall() -> ! {
    ring3::install();
    let request = Request::WriteConsole {
        bytes: Bytes::from_slice(b"FAILED: this WriteConsole came from ring 3\n").expect("short"),
    };
    let buffer = (&raw mut USER_BUFFER) as u64;
    // SAFETY: the page is a static of this guest that nothing else uses.
    let page = unsafe { &mut *(&raw mut USER_BUFFER).cast::<[u8; 4096]>() };
    let len = v1::encode_request(&request, page).expect("request fits");
    println!("calling the hypervisor from ring 3 (buffer {buffer:#x}, {len} bytes)");
    fn ended(how: ring3::Ended, rax: u64) -> ! {
        let vmmcall = ring3::hostile_user_hypercall as *const () as u64;
        match how {
            ring3::Ended::InvalidOpcode { rip, cpl: 3 } if rip == vmmcall => {
                println!("user-hypercall: #UD at the ring-3 VMMCALL (rip {rip:#x}): refused");
                hypercall::shutdown(0)
            }
            ring3::Ended::GeneralProtection { rip, cpl: 3 } if rip == vmmcall + 3 => {
                println!("FAILED: the ring-3 hypercall returned to user space (rax {rax:#x})");
                hypercall::shutdown(1)
            }
            other => {
                println!("FAILED: user-hypercall: unexpected {other:?}");
                hypercall::shutdown(1)
            }
        }
    }
    ring3::enter(
        ring3::hostile_user_hypercall,
        CALL_MESSAGE,
        buffer,
        len as u64,
        0,
        ended,
    )
}

/// The operand of the misaligned load in `debug-exceptions`.
static mut MISALIGNED: [u64; 4] = [0; 4];

fn debug_exceptions() -> ! {
    ring3::install();
    println!("single-stepping one instruction (#DB)");
    ring3::single_step_once();
    let traps = ring3::DEBUG_TRAPS.load(Ordering::SeqCst);
    let single_step = ring3::last_debug_was_single_step();
    println!(
        "debug-exceptions: #DB taken {traps} time(s), single-step bit {}",
        if single_step { "set" } else { "clear" }
    );
    ring3::set_alignment_mask(true);
    println!("misaligned load at CPL 3 with CR0.AM and RFLAGS.AC (#AC)");
    fn ended(how: ring3::Ended, _rax: u64) -> ! {
        ring3::set_alignment_mask(false);
        let misaligned = ring3::hostile_user_misaligned as *const () as u64;
        if !matches!(how, ring3::Ended::GeneralProtection { cpl: 3, rip } if rip > misaligned) {
            println!("FAILED: debug-exceptions: ring 3 ended with {how:?}");
            hypercall::shutdown(1)
        }
        match ring3::ALIGNMENT_CHECKS.load(Ordering::SeqCst) {
            0 => println!("debug-exceptions: no #AC: this CPU does not check alignment"),
            n => println!("debug-exceptions: #AC taken {n} time(s)"),
        }
        let traps = ring3::DEBUG_TRAPS.load(Ordering::SeqCst);
        let ok = traps == 1 && ring3::last_debug_was_single_step();
        hypercall::shutdown(if ok { 0 } else { 1 })
    }
    ring3::enter(
        ring3::hostile_user_misaligned,
        0,
        (&raw const MISALIGNED) as u64,
        0,
        ring3::RFLAGS_AC,
        ended,
    )
}

/// `key=<n>` in TSC megaticks, as ticks.
fn mega(cmdline: &str, key: &str) -> Option<u64> {
    word_value(cmdline, key)?
        .parse::<u64>()
        .ok()
        .map(|m| m * 1_000_000)
}

/// Whether the TSC is in a "loud" half-period (the flood runs) of `period` ticks. Both the
/// flooder and the victim use the one TSC of the machine, so they agree without talking.
fn loud(tsc: u64, period: u64) -> bool {
    (tsc / period.max(1)) % 2 == 1
}

fn flood(period: u64, duration: u64) -> ! {
    println!("flood: writing 0x01 in every other {period} TSC ticks for {duration}");
    println!();
    // Console writes of 1024 non-printable bytes each: 4 KiB of escaped text per call.
    // In the quiet half-periods the same calls carry nothing, so the two differ only in the
    // output they make (not in how often this domain exits).
    let request = Request::WriteConsole {
        bytes: Bytes::from_slice(&[0x01; v1::CONSOLE_WRITE_MAX]).expect("fits"),
    };
    let empty = Request::WriteConsole {
        bytes: Bytes::new(),
    };
    let start = rdtsc();
    let mut bytes = 0u64;
    loop {
        let now = rdtsc();
        if now.wrapping_sub(start) >= duration {
            break;
        }
        if !loud(now, period) {
            let _ = hypercall::call(&empty);
        } else if hypercall::call(&request).is_ok() {
            bytes += v1::CONSOLE_WRITE_MAX as u64;
        }
    }
    println!();
    println!("flood: wrote {bytes} bytes");
    hypercall::shutdown(0)
}

fn victim(period: u64, duration: u64) -> ! {
    println!("victim: counting exits per 10^9 TSC ticks, quiet and loud half-periods of {period}");
    let start = rdtsc();
    // [quiet, loud]: exits and ticks.
    let (mut exits, mut ticks) = ([0u64; 2], [0u64; 2]);
    let mut last = start;
    loop {
        exit_once();
        let now = rdtsc();
        if now.wrapping_sub(start) >= duration {
            break;
        }
        // Attribute the exit to the half-period it ended in; a step across a boundary is
        // dropped (it belongs to neither).
        if loud(now, period) == loud(last, period) {
            let phase = usize::from(loud(now, period));
            exits[phase] += 1;
            ticks[phase] += now.wrapping_sub(last);
        }
        last = now;
    }
    let rate = |p: usize| exits[p] * 1_000_000_000 / ticks[p].max(1);
    let (quiet, loud) = (rate(0), rate(1));
    let ratio_permille = loud * 1000 / quiet.max(1);
    println!(
        "victim: alone {quiet}, beside the flood {loud} exits per 10^9 TSC ticks: ratio {}.{:03}",
        ratio_permille / 1000,
        ratio_permille % 1000
    );
    hypercall::shutdown(0)
}
