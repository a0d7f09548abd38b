//! Physical CPUs: the big hypervisor lock, application-processor start-up (INIT-SIPI-SIPI into
//! a real-mode trampoline that enters long mode on the hypervisor's own page tables), and the
//! per-pCPU scheduler loop.
//!
//! Every pCPU runs the same loop: under the lock it picks a vCPU (the scheduler never migrates
//! one), runs it without the lock, and handles its exit under the lock. The local APIC timer
//! forces an exit every tick, so a slice ends even for a guest that never exits on its own.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::cpu::MAX_CPUS;
use crate::vm::Hv;
use crate::{hvprintln, lapic, tsc};

/// Physical address of the AP trampoline (real mode: below 1 MiB, page aligned).
pub const TRAMPOLINE: u64 = 0x8000;
/// Scheduler tick.
pub const TICK_MS: u32 = 10;

static HV_LOCK: AtomicBool = AtomicBool::new(false);
static mut HV: Option<&'static mut Hv> = None;

/// Publishes the hypervisor state for every pCPU's loop.
pub fn install(hv: &'static mut Hv) {
    // SAFETY: called once by the boot CPU before any AP runs the loop.
    unsafe { *core::ptr::addr_of_mut!(HV) = Some(hv) };
}

/// Runs `f` with the hypervisor state, under the big lock.
pub fn with_hv<R>(f: impl FnOnce(&mut Hv) -> R) -> R {
    while HV_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    // SAFETY: the lock gives this CPU exclusive access to the state installed by `install`.
    let result = unsafe {
        let hv = (*core::ptr::addr_of_mut!(HV))
            .as_deref_mut()
            .expect("hypervisor state installed");
        f(hv)
    };
    HV_LOCK.store(false, Ordering::Release);
    result
}

// Boot parameters the trampoline reads (physical addresses, paging off until it loads CR3).
#[unsafe(no_mangle)]
static AP_BOOT_CR3: AtomicU32 = AtomicU32::new(0);
#[unsafe(no_mangle)]
static AP_BOOT_STACK: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static AP_BOOT_CPU: AtomicU32 = AtomicU32::new(0);
static AP_ALIVE: AtomicU32 = AtomicU32::new(0);

global_asm!(
    r#"
    .set TRAMP, {tramp}
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global AP_TRAMPOLINE_START
AP_TRAMPOLINE_START:
    .code16
    cli
    cld
    xor ax, ax
    mov ds, ax
    lgdt [AP_GDT_PTR_ABS]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* ljmp 0x08:ap_pm32 (16-bit far jump, encoded by hand) */
    .byte 0xea
    .short AP_PM32_ABS
    .short 0x08
    .code32
ap_pm32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, TRAMP + 0xff0
    mov eax, cr4
    or eax, (1 << 5)
    mov cr4, eax
    mov eax, dword ptr [AP_BOOT_CR3]
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    mov eax, cr0
    and eax, 0x9FFFFFFF
    or eax, 0x80010001
    mov cr0, eax
    /* ljmp 0x18:ap_lm64 (32-bit far jump, encoded by hand) */
    .byte 0xea
    .long AP_LM64_ABS
    .short 0x18
    .code64
ap_lm64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, qword ptr [AP_BOOT_STACK]
    xor ebp, ebp
    mov edi, dword ptr [AP_BOOT_CPU]
    movabs rax, offset ap_main
    call rax
    ud2
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF
    .quad 0x00CF93000000FFFF
    .quad 0x00AF9B000000FFFF
ap_gdt_ptr:
    .short ap_gdt_ptr - ap_gdt - 1
    .long TRAMP + (ap_gdt - AP_TRAMPOLINE_START)
    .global AP_TRAMPOLINE_END
AP_TRAMPOLINE_END:
    .set AP_GDT_PTR_ABS, TRAMP + (ap_gdt_ptr - AP_TRAMPOLINE_START)
    .set AP_PM32_ABS, TRAMP + (ap_pm32 - AP_TRAMPOLINE_START)
    .set AP_LM64_ABS, TRAMP + (ap_lm64 - AP_TRAMPOLINE_START)
    .code64
"#,
    tramp = const TRAMPOLINE,
);

unsafe extern "C" {
    static AP_TRAMPOLINE_START: u8;
    static AP_TRAMPOLINE_END: u8;
}

/// Copies the trampoline to [`TRAMPOLINE`]. Called while the early (RWX) identity map is still
/// active; the hypervisor's own tables map that page R+X only.
pub fn install_trampoline() {
    let start = core::ptr::addr_of!(AP_TRAMPOLINE_START);
    let len = core::ptr::addr_of!(AP_TRAMPOLINE_END) as usize - start as usize;
    assert!(len < 0xf00, "AP trampoline larger than its page");
    // SAFETY: the page at TRAMPOLINE is usable low RAM (checked by the caller against the
    // validated map), kept out of the frame allocator, identity-mapped writable by the early tables.
    unsafe { core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len) };
}

/// Starts the processors with the given APIC IDs (from the MADT), up to `wanted` CPUs in all.
/// Returns how many CPUs (the boot CPU included) run.
pub fn start_aps(cr3: u64, apic_ids: &[u32], wanted: usize) -> usize {
    AP_BOOT_CR3.store(
        u32::try_from(cr3).expect("page tables below 4 GiB"),
        Ordering::SeqCst,
    );
    let mut started = 1;
    let my_id = crate::percpu::apic_id();
    for &apic_id in apic_ids {
        if started >= wanted.min(MAX_CPUS) {
            break;
        }
        if apic_id == my_id {
            continue;
        }
        let cpu = started;
        AP_BOOT_STACK.store(crate::cpu::main_stack(cpu).top, Ordering::SeqCst);
        AP_BOOT_CPU.store(cpu as u32, Ordering::SeqCst);
        let before = AP_ALIVE.load(Ordering::SeqCst);
        lapic::send_init_sipi_sipi(apic_id, (TRAMPOLINE >> 12) as u8);
        let deadline = tsc::now() + tsc::hz() / 5; // 200 ms
        while AP_ALIVE.load(Ordering::SeqCst) == before && tsc::now() < deadline {
            core::hint::spin_loop();
        }
        if AP_ALIVE.load(Ordering::SeqCst) != before {
            hvprintln!("smp: cpu {cpu} (APIC ID {apic_id}) started");
            started += 1;
        } else {
            hvprintln!("smp: the CPU with APIC ID {apic_id} did not answer: left parked");
        }
    }
    started
}

/// Long-mode entry of an application processor (from the trampoline), on its own stack.
#[unsafe(no_mangle)]
extern "C" fn ap_main(cpu: u32) -> ! {
    let cpu = cpu as usize;
    // SAFETY: first thing on this CPU, interrupts disabled, its own GDT/TSS slot.
    unsafe { crate::cpu::init(cpu) };
    crate::idt::load();
    crate::percpu::register(cpu, crate::percpu::apic_id());
    lapic::init_this_cpu();
    with_hv(|hv| {
        hv.vcpus
            .enable_on_this_cpu(cpu, &mut hv.alloc)
            .unwrap_or_else(|e| panic!("cpu {cpu}: {e}"));
    });
    AP_ALIVE.fetch_add(1, Ordering::SeqCst);
    // Wait until the boot CPU has set up the scheduler for every started pCPU.
    while !LOOP_GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    scheduler_loop(cpu)
}

static LOOP_GO: AtomicBool = AtomicBool::new(false);

/// Self-NMIs still to send on cpu 0 (`nmi_test=N` on the hypervisor command line): each is sent
/// with GIF clear right before a VMRUN, so it arrives while the guest runs (NMI #VMEXIT, then
/// taken by the host's handler at the STGI after the exit) and the run must simply go on.
pub static NMI_TEST_LEFT: AtomicU32 = AtomicU32::new(0);

/// Lets the APs enter their scheduler loops.
pub fn release_aps() {
    LOOP_GO.store(true, Ordering::Release);
}

/// The per-pCPU loop: pick, run, handle; idle with interrupts on until the next tick.
pub fn scheduler_loop(cpu: usize) -> ! {
    let ticks_per_ms = lapic::calibrate_timer();
    lapic::start_periodic_timer(ticks_per_ms, TICK_MS);
    loop {
        let work = with_hv(|hv| {
            if let Some(verdict) = hv.verdict {
                return Err(crate::qemu_exit::Verdict::from(verdict));
            }
            hv.account_ticks(cpu, None, ticks_total(cpu), tsc::now());
            if cpu == 0 {
                hv.check_watchdog(tsc::now());
                // Serial input, a few bytes per round: to the focused domain or the focus keys.
                for _ in 0..16 {
                    match crate::console::with_serial(|serial| serial.try_read_byte()).flatten() {
                        Some(byte) => hv.console_input(byte),
                        None => break,
                    }
                }
            }
            let Some(runner) = hv.vcpus.runner(cpu) else {
                return Ok(None);
            };
            let picked = hv.pick(cpu);
            if let Some(v) = picked {
                hv.prepare_entry(cpu, v, tsc::now());
            }
            Ok(picked.map(|v| (v, runner)))
        });
        match work {
            Err(verdict) => finish(cpu, verdict),
            Ok(Some((v, runner))) => {
                if let crate::vm::Runner::Svm(_) = runner
                    && cpu == 0
                    && NMI_TEST_LEFT
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    crate::svm::clear_gif();
                    lapic::send_nmi(crate::percpu::apic_id());
                }
                let start = tsc::now();
                // SAFETY: `pick` gave `v` to this CPU and marked it running; its exit goes to
                // `after_exit` right below. The runner is this CPU's.
                let exit = unsafe { crate::vm::run_vcpu(cpu, &runner, v) };
                let now = tsc::now();
                with_hv(|hv| hv.after_exit(cpu, v, exit, now - start, ticks_total(cpu), now));
                // The domain's console output, written outside the global lock on its own pCPU.
                crate::domain_console::drain(usize::from(v.domain.0));
            }
            Ok(None) => {
                crate::domain_console::drain_all();
                // Nothing to run here: wait for the next tick.
                x86_64::instructions::interrupts::enable_and_hlt();
                x86_64::instructions::interrupts::disable();
            }
        }
    }
}

/// Timer ticks `cpu` has taken so far.
fn ticks_total(cpu: usize) -> u64 {
    crate::interrupts::TICKS[cpu].load(Ordering::Relaxed)
}

fn finish(cpu: usize, verdict: crate::qemu_exit::Verdict) -> ! {
    lapic::stop_timer();
    if cpu == 0 {
        // Let the other CPUs notice the verdict and stop their timers.
        let until = tsc::now() + tsc::hz() / 50;
        while tsc::now() < until {
            core::hint::spin_loop();
        }
        let nmis = crate::interrupts::nmi_total();
        if nmis > 0 {
            hvprintln!("host NMIs handled: {nmis}; the run went on");
        }
        with_hv(|hv| crate::vm::print_accounting(hv));
        crate::qemu_exit::exit(verdict)
    }
    crate::qemu_exit::halt_forever()
}
