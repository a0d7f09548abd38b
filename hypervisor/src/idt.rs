//! The hypervisor's IDT. Every exception (the NMI aside, see `interrupts`) taken in the
//! hypervisor is reported on the serial console (vector, error code, registers, backtrace of
//! return addresses through the frame-pointer chain, the image's GNU build id, which names the
//! debug file that maps the addresses to source lines) and ends the run with failure: never a
//! silent triple fault.
//!
//! Gates are written raw (16-byte descriptors) instead of through `x86_64`'s typed IDT: the
//! typed table hides the reserved vectors and its handler types need the unstable
//! `x86-interrupt` ABI, while here every vector points at a uniform assembly stub.

use core::arch::global_asm;
use core::fmt::Write;
use core::ptr::addr_of;

use crate::cpu::{self, IST_DOUBLE_FAULT, IST_NMI};
use crate::qemu_exit::{self, Verdict};

/// Vector of the local APIC timer (scheduler tick).
pub const TIMER_VECTOR: u8 = 0xf0;
/// Vector of the local APIC's spurious interrupt.
pub const SPURIOUS_VECTOR: u8 = 0xff;

// Exception stubs push (error code or 0, vector), save every general-purpose register and call
// `exception_report` with a pointer to the frame. Interrupt stubs for vectors >= 32 save the
// caller-saved registers and call `interrupt_dispatch(vector)`. The NMI (vector 2) is not an
// error: its stub is an interrupt stub (on its own IST stack), handled and returned from.
global_asm!(
    r#"
    .macro EXC_NOERR vec
    .balign 16
exc_stub_\vec:
    push 0
    push \vec
    jmp exc_common
    .endm
    .macro EXC_ERR vec
    .balign 16
exc_stub_\vec:
    push \vec
    jmp exc_common
    .endm

    .section .text.idt_stubs, "ax"
    .balign 16
    .global IDT_STUBS_START
IDT_STUBS_START:
    EXC_NOERR 0
    EXC_NOERR 1
    .balign 16
exc_stub_2:
    push 2
    jmp irq_common
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31
    .set irq_vector, 32
    .rept 224
    .balign 16
    push irq_vector
    jmp irq_common
    .set irq_vector, irq_vector + 1
    .endr
    .balign 16
    .global IDT_STUBS_END
IDT_STUBS_END:

exc_common:
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rbp
    push rdi
    push rsi
    push rdx
    push rcx
    push rbx
    push rax
    mov rdi, rsp
    and rsp, -16
    call exception_report
    ud2

irq_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push rbx
    mov rdi, [rsp + 80]
    mov rbx, rsp
    and rsp, -16
    call interrupt_dispatch
    mov rsp, rbx
    pop rbx
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

"#
);

/// The register frame built by the exception stubs (lowest address first).
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

unsafe extern "C" {
    static IDT_STUBS_START: u8;
    static IDT_STUBS_END: u8;
}

/// Every stub is aligned to 16 bytes and shorter than that, so vector `v`'s stub starts at
/// `IDT_STUBS_START + 16 * v` (checked against the end label in `build`).
const STUB_SPACING: u64 = 16;

/// Fills the IDT (once, on the boot CPU).
pub fn build() {
    let start = core::ptr::addr_of!(IDT_STUBS_START) as u64;
    let end = core::ptr::addr_of!(IDT_STUBS_END) as u64;
    assert_eq!(
        end - start,
        256 * STUB_SPACING,
        "IDT stubs are not 16 bytes apart"
    );
    for vector in 0..256usize {
        let handler = start + vector as u64 * STUB_SPACING;
        let ist = match vector {
            2 => IST_NMI,
            8 | 18 => IST_DOUBLE_FAULT,
            _ => 0,
        };
        // Present, DPL 0, 64-bit interrupt gate (IF cleared on entry), code selector 0x08.
        let low = (handler & 0xffff)
            | (0x08 << 16)
            | ((ist as u64) << 32)
            | (0x8e << 40)
            | ((handler >> 16) & 0xffff) << 48;
        let high = handler >> 32;
        // SAFETY: the IDT is written only here, by the boot CPU, before any CPU loads it.
        unsafe {
            let idt = &mut *core::ptr::addr_of_mut!(IDT);
            idt.0[vector * 2] = low;
            idt.0[vector * 2 + 1] = high;
        }
    }
}

/// Loads the IDT on the calling CPU.
pub fn load() {
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (256 * 16 - 1) as u16,
        base: x86_64::VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    };
    // SAFETY: the IDT is a static that lives for the whole run and was filled by `build`.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error (#DE)",
    "debug (#DB)",
    "non-maskable interrupt (NMI)",
    "breakpoint (#BP)",
    "overflow (#OF)",
    "bound range exceeded (#BR)",
    "invalid opcode (#UD)",
    "device not available (#NM)",
    "double fault (#DF)",
    "coprocessor segment overrun",
    "invalid TSS (#TS)",
    "segment not present (#NP)",
    "stack-segment fault (#SS)",
    "general protection (#GP)",
    "page fault (#PF)",
    "reserved vector 15",
    "x87 floating point (#MF)",
    "alignment check (#AC)",
    "machine check (#MC)",
    "SIMD floating point (#XM)",
    "virtualization (#VE)",
    "control protection (#CP)",
    "reserved vector 22",
    "reserved vector 23",
    "reserved vector 24",
    "reserved vector 25",
    "reserved vector 26",
    "reserved vector 27",
    "hypervisor injection (#HV)",
    "VMM communication (#VC)",
    "security exception (#SX)",
    "reserved vector 31",
];

/// Called by the exception stubs: prints the report and fails the run.
#[unsafe(no_mangle)]
extern "C" fn exception_report(frame: &ExceptionFrame) -> ! {
    let cpu = crate::percpu::current_cpu_index();
    let name = EXCEPTION_NAMES
        .get(frame.vector as usize)
        .copied()
        .unwrap_or("unknown");
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let cr3 = x86_64::registers::control::Cr3::read_raw()
        .0
        .start_address()
        .as_u64();
    crate::console::print_raw(format_args!(
        "slipway: EXCEPTION in hypervisor on cpu {cpu}: vector {} {name}, error code {:#x}\n\
         slipway:   rip {:#018x} cs {:#x} rflags {:#x} rsp {:#018x} ss {:#x} cr2 {cr2:#x} cr3 {cr3:#x}\n\
         slipway:   rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}\n\
         slipway:   rsi {:#018x} rdi {:#018x} rbp {:#018x} r8  {:#018x}\n\
         slipway:   r9  {:#018x} r10 {:#018x} r11 {:#018x} r12 {:#018x}\n\
         slipway:   r13 {:#018x} r14 {:#018x} r15 {:#018x}\n",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15,
    ));
    print_backtrace(cpu, frame.rip, frame.rbp);
    qemu_exit::exit(Verdict::Failure)
}

unsafe extern "C" {
    static __build_id_start: u8;
    static __build_id_end: u8;
}

/// The descriptor of the GNU build-id note the linker script places between `__build_id_start`
/// and `__build_id_end` (name size, descriptor size, type 3, name `GNU\0`, descriptor), or
/// `None` if the bytes there are not such a note.
fn build_id() -> Option<&'static [u8]> {
    let (start, end) = (
        addr_of!(__build_id_start) as usize,
        addr_of!(__build_id_end) as usize,
    );
    // SAFETY: the linker script puts the note's bytes between the two symbols, at the start of
    // the image's read-only data, which stays mapped and unchanged for the hypervisor's life.
    let note =
        unsafe { core::slice::from_raw_parts(start as *const u8, end.saturating_sub(start)) };
    let word = |at: usize| {
        note.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (Some(name_size), Some(desc_size), Some(3)) = (word(0), word(4), word(8)) else {
        return None;
    };
    if note.get(12..12 + name_size) != Some(b"GNU\0") {
        return None;
    }
    let desc = 12 + name_size.next_multiple_of(4);
    note.get(desc..desc + desc_size).filter(|id| !id.is_empty())
}

/// Prints return addresses by following saved frame pointers, as long as each frame lies on
/// one of this CPU's stacks (a corrupt chain ends the walk instead of faulting again), then
/// the image's build id (README, "Debugging": the bundle's debug file with that id maps the
/// addresses to functions and source lines).
pub fn print_backtrace(cpu: usize, rip: u64, mut rbp: u64) {
    let stacks = cpu::stacks(cpu.min(cpu::MAX_CPUS - 1));
    crate::console::with_serial(|serial| {
        let _ = serial.write_str("slipway:   backtrace:");
        if rip != 0 {
            let _ = write!(serial, " {rip:#x}");
        }
        for _ in 0..32 {
            if !rbp.is_multiple_of(8) || !stacks.iter().any(|s| s.contains(rbp, 16)) {
                break;
            }
            // SAFETY: `rbp` is 8-aligned and the 16 bytes at it lie inside one of this CPU's
            // mapped stacks (checked above); reading them cannot fault.
            let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
            if ret == 0 {
                break;
            }
            let _ = write!(serial, " {ret:#x}");
            if next <= rbp {
                break;
            }
            rbp = next;
        }
        let _ = serial.write_str("\nslipway:   build id: ");
        match build_id() {
            Some(id) => {
                for byte in id {
                    let _ = write!(serial, "{byte:02x}");
                }
            }
            None => {
                let _ = serial.write_str("unknown (no GNU build-id note in the image)");
            }
        }
        let _ = serial.write_str("\n");
    });
}

/// Called by the interrupt stubs (the NMI and vectors 32-255) with interrupts disabled.
#[unsafe(no_mangle)]
extern "C" fn interrupt_dispatch(vector: u64) {
    crate::interrupts::handle(vector as u8);
}
