//! Guest-kernel machinery for the behaviours that need guest user space or their own exception
//! handlers: a GDT with ring-3 segments and a 64-bit TSS, an IDT for #DB, #UD, #GP and #AC, and
//! an identity map of the first 1 GiB whose pages user space may touch (the guest runtime's map
//! is supervisor-only). Only vCPU 0 of a domain uses it.
//!
//! A ring-3 excursion ends with a #UD (the hypervisor refused a user-space hypercall) or a #GP
//! (user space executed HLT, its way of saying "done"); both handlers run the continuation the
//! excursion was started with, on the TSS's ring-0 stack. #DB and #AC are counted and the guest
//! resumes (TF and AC cleared in the interrupted frame, so neither repeats).

use core::sync::atomic::{AtomicU64, Ordering};

const KERNEL_CODE: u64 = 0x08;
const USER_DATA: u64 = 0x18 | 3;
const USER_CODE: u64 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

const RFLAGS_RESERVED: u64 = 1 << 1;
const RFLAGS_TF: u64 = 1 << 8;
/// EFLAGS.AC: alignment checking at CPL 3 (with CR0.AM).
pub const RFLAGS_AC: u64 = 1 << 18;
const CR0_AM: u64 = 1 << 18;
const DR6_BS: u64 = 1 << 14;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut PML4: Table = Table([0; 512]);
static mut PDPT: Table = Table([0; 512]);
static mut PD: Table = Table([0; 512]);
static mut IDT: Table = Table([0; 512]);
/// null, kernel code, kernel data, user data, user code, TSS (two slots).
static mut GDT: [u64; 7] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
    0,
    0,
];
/// The 104-byte 64-bit TSS (rsp0 at byte 4; the I/O map base at byte 102 points past the end).
static mut TSS: [u32; 26] = [0; 26];

#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);
static mut KERNEL_STACK: Stack = Stack([0; 16 * 1024]);
static mut USER_STACK: Stack = Stack([0; 16 * 1024]);

/// #DB taken, and the DR6 value of the last one.
pub static DEBUG_TRAPS: AtomicU64 = AtomicU64::new(0);
pub static LAST_DR6: AtomicU64 = AtomicU64::new(0);
/// #AC taken.
pub static ALIGNMENT_CHECKS: AtomicU64 = AtomicU64::new(0);
/// What ends a ring-3 excursion: fn(how, rip of the event, rax of user space).
static CONTINUATION: AtomicU64 = AtomicU64::new(0);

/// How a ring-3 excursion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// #UD at this rip (and CPL of the interrupted code).
    InvalidOpcode { rip: u64, cpl: u64 },
    /// #GP at this rip: user space ran HLT (its "done"), or something else was refused.
    GeneralProtection { rip: u64, cpl: u64 },
}

pub type Continuation = fn(Ended, u64) -> !;

core::arch::global_asm!(
    r#"
    .pushsection .text.hostile_ring3, "ax"
    .global hostile_db_stub
hostile_db_stub:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    lea rdi, [rsp + 72]
    call hostile_on_debug
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq

    .global hostile_ac_stub
hostile_ac_stub:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    lea rdi, [rsp + 80]
    sub rsp, 8
    call hostile_on_alignment_check
    add rsp, 8
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 8
    iretq

    .global hostile_ud_stub
hostile_ud_stub:
    mov rsi, rax
    mov rdi, rsp
    sub rsp, 8
    call hostile_on_invalid_opcode

    .global hostile_gp_stub
hostile_gp_stub:
    mov rsi, rax
    lea rdi, [rsp + 8]
    call hostile_on_general_protection

    /* Ring 3: a hypercall (rax, rdi, rsi set by the caller), then HLT to end the excursion. */
    .global hostile_user_hypercall
hostile_user_hypercall:
    vmmcall
    hlt

    /* Ring 3: a misaligned 8-byte load from rdi + 1 (raises #AC with CR0.AM and RFLAGS.AC),
       then HLT. */
    .global hostile_user_misaligned
hostile_user_misaligned:
    mov rax, [rdi + 1]
    hlt
    .popsection
"#
);

unsafe extern "C" {
    fn hostile_db_stub();
    fn hostile_ac_stub();
    fn hostile_ud_stub();
    fn hostile_gp_stub();
    pub fn hostile_user_hypercall();
    pub fn hostile_user_misaligned();
}

/// Installs the GDT/TSS, the IDT and the user-accessible identity map on this vCPU.
pub fn install() {
    let rsp0 = (&raw const KERNEL_STACK) as u64 + core::mem::size_of::<Stack>() as u64;
    let tss = (&raw const TSS) as u64;
    let limit = (core::mem::size_of::<[u32; 26]>() - 1) as u64;
    // SAFETY: single-threaded setup on vCPU 0 of this guest: the statics are written before
    // the CPU is told about them (lgdt/ltr/lidt/cr3) and never moved. The page tables map the
    // first 1 GiB identically, as the runtime's tables do, so every address in use stays valid
    // across the CR3 switch; the TSS descriptor describes the static TSS.
    unsafe {
        let t = &raw mut TSS;
        (*t)[1] = rsp0 as u32;
        (*t)[2] = (rsp0 >> 32) as u32;
        (*t)[25] = (core::mem::size_of::<[u32; 26]>() as u32) << 16;
        let gdt = &raw mut GDT;
        (*gdt)[5] = (limit & 0xffff)
            | ((tss & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((tss >> 24) & 0xff) << 56);
        (*gdt)[6] = tss >> 32;

        let idt = &raw mut IDT;
        for (vector, stub) in [
            (1usize, hostile_db_stub as *const () as u64),
            (6, hostile_ud_stub as *const () as u64),
            (13, hostile_gp_stub as *const () as u64),
            (17, hostile_ac_stub as *const () as u64),
        ] {
            (*idt).0[vector * 2] = (stub & 0xffff)
                | (KERNEL_CODE << 16)
                | (0x8e << 40)
                | (((stub >> 16) & 0xffff) << 48);
            (*idt).0[vector * 2 + 1] = stub >> 32;
        }

        let (pml4, pdpt, pd) = (&raw mut PML4, &raw mut PDPT, &raw mut PD);
        for (i, entry) in (*pd).0.iter_mut().enumerate() {
            *entry = ((i as u64) << 21) | 0x87; // present, writable, user, 2 MiB
        }
        (*pdpt).0[0] = pd as u64 | 0x7;
        (*pml4).0[0] = pdpt as u64 | 0x7;

        let gdt_pointer: [u16; 5] = {
            let base = (&raw const GDT) as u64;
            [
                (core::mem::size_of::<[u64; 7]>() - 1) as u16,
                base as u16,
                (base >> 16) as u16,
                (base >> 32) as u16,
                (base >> 48) as u16,
            ]
        };
        let idt_pointer: [u16; 5] = {
            let base = idt as u64;
            [
                4095,
                base as u16,
                (base >> 16) as u16,
                (base >> 32) as u16,
                (base >> 48) as u16,
            ]
        };
        core::arch::asm!(
            "lgdt [{gdt}]",
            "ltr {tss:x}",
            "lidt [{idt}]",
            "mov cr3, {cr3}",
            gdt = in(reg) &gdt_pointer,
            tss = in(reg) TSS_SELECTOR,
            idt = in(reg) &idt_pointer,
            cr3 = in(reg) pml4 as u64,
            options(nostack),
        );
    }
}

/// Sets or clears CR0.AM.
pub fn set_alignment_mask(on: bool) {
    // SAFETY: CR0.AM only enables alignment checks at CPL 3 (with RFLAGS.AC); no other bit is
    // changed.
    unsafe {
        let mut cr0: u64;
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        cr0 = if on { cr0 | CR0_AM } else { cr0 & !CR0_AM };
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nomem, nostack));
    }
}

/// Single-steps one instruction at CPL 0 (TF set by POPFQ traps after the next instruction).
pub fn single_step_once() {
    // SAFETY: sets TF, executes a NOP, and the #DB handler clears TF in the interrupted frame;
    // the IDT with that handler is installed (`install`).
    unsafe {
        core::arch::asm!(
            "pushfq",
            "or qword ptr [rsp], {tf}",
            "popfq",
            "nop",
            "nop",
            tf = const RFLAGS_TF,
        );
    }
}

/// Enters ring 3 at `entry` with `rax`, `rdi`, `rsi` and `rflags` (IF stays clear) on the user
/// stack; `then` runs on the ring-0 stack when the excursion ends.
pub fn enter(
    entry: unsafe extern "C" fn(),
    rax: u64,
    rdi: u64,
    rsi: u64,
    rflags: u64,
    then: Continuation,
) -> ! {
    CONTINUATION.store(then as *const () as u64, Ordering::SeqCst);
    let user_rsp = (&raw const USER_STACK) as u64 + core::mem::size_of::<Stack>() as u64;
    // SAFETY: builds an IRETQ frame to the ring-3 code segment and user data segment of the GDT
    // `install` loaded; the target code and stack lie in the user-accessible identity map. Ring
    // 3 never returns here: its excursion ends in an exception whose handler runs `then`.
    unsafe {
        core::arch::asm!(
            "push {ss}",
            "push {rsp}",
            "push {flags}",
            "push {cs}",
            "push {rip}",
            "iretq",
            ss = in(reg) USER_DATA,
            rsp = in(reg) user_rsp,
            flags = in(reg) (rflags | RFLAGS_RESERVED) & !(1 << 9),
            cs = in(reg) USER_CODE,
            rip = in(reg) entry as *const () as u64,
            in("rax") rax,
            in("rdi") rdi,
            in("rsi") rsi,
            options(noreturn),
        );
    }
}

fn continue_with(ended: Ended, rax: u64) -> ! {
    let then = CONTINUATION.load(Ordering::SeqCst);
    assert!(then != 0, "exception {ended:?} outside a ring-3 excursion");
    // SAFETY: the only value ever stored is a `Continuation` (in `enter`).
    let then: Continuation = unsafe { core::mem::transmute::<usize, Continuation>(then as usize) };
    then(ended, rax)
}

/// Frame: rip, cs, rflags, rsp, ss.
#[unsafe(no_mangle)]
extern "C" fn hostile_on_invalid_opcode(frame: &[u64; 5], rax: u64) -> ! {
    continue_with(
        Ended::InvalidOpcode {
            rip: frame[0],
            cpl: frame[1] & 3,
        },
        rax,
    )
}

/// Frame (after the error code): rip, cs, rflags, rsp, ss.
#[unsafe(no_mangle)]
extern "C" fn hostile_on_general_protection(frame: &[u64; 5], rax: u64) -> ! {
    continue_with(
        Ended::GeneralProtection {
            rip: frame[0],
            cpl: frame[1] & 3,
        },
        rax,
    )
}

#[unsafe(no_mangle)]
extern "C" fn hostile_on_debug(frame: &mut [u64; 5]) {
    let dr6: u64;
    // SAFETY: reading DR6 at CPL 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack)) };
    LAST_DR6.store(dr6, Ordering::SeqCst);
    DEBUG_TRAPS.fetch_add(1, Ordering::SeqCst);
    frame[2] &= !RFLAGS_TF;
}

#[unsafe(no_mangle)]
extern "C" fn hostile_on_alignment_check(frame: &mut [u64; 5]) {
    ALIGNMENT_CHECKS.fetch_add(1, Ordering::SeqCst);
    frame[2] &= !RFLAGS_AC;
}

/// Whether the last #DB was a single-step trap.
pub fn last_debug_was_single_step() -> bool {
    LAST_DR6.load(Ordering::SeqCst) & DR6_BS != 0
}
