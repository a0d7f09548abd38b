//! The PVH entry: ELF note, 32-bit protected-mode entry, switch to long mode, per-vCPU stacks.
//!
//! PVH enters every vCPU the builder set up at `slipway_pvh_entry32` in 32-bit flat protected
//! mode with paging off and `ebx` = guest-physical address of `hvm_start_info`. The page tables
//! are static data (an identity map of the first 4 GiB with 2 MiB pages, linked into the image),
//! so vCPUs can arrive in any order and at the same time: each takes a vCPU index with
//! `lock xadd` and gets its own stack.
//!
//! The entry enables x87/SSE for the guest (CR0.MP/NE set, EM/TS clear, CR4.OSFXSR and
//! OSXMMEXCPT) and sets the System V initial FCW and MXCSR: images built for a target with SSE
//! (domB, see `docs/architecture.md`) use it everywhere. Where CPUID offers XSAVE it also sets
//! CR4.OSXSAVE and XCR0 = x87|SSE, plus AVX where offered (the hypervisor emulates XSETBV), so
//! run-time feature checks such as sha2's find AVX/AVX2. The hypervisor keeps each vCPU's
//! x87/SSE/AVX state apart.

/// Most vCPUs a guest image supports; later arrivals halt in the 32-bit entry.
pub const MAX_CPUS: u32 = 4;
/// Stack size per vCPU.
pub const STACK_SIZE: usize = 64 * 1024;

/// What the entry hands to the guest's main function.
#[derive(Debug, Clone, Copy)]
pub struct Boot {
    /// Index of this vCPU in arrival order (0 = the first, the boot vCPU).
    pub cpu: u32,
    /// Guest-physical address of the PVH `hvm_start_info`.
    pub start_info_gpa: u64,
}

/// Defines the guest's main function, called on every vCPU: `fn main(boot: Boot) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        // SAFETY: the runtime's entry stub calls exactly this symbol, once per vCPU, with the
        // System V arguments (start-info address, vCPU index) and a valid 64 KiB stack.
        #[unsafe(export_name = "slipway_guest_main")]
        extern "C" fn __slipway_guest_main(start_info_gpa: u64, cpu: u64) -> ! {
            let main: fn($crate::Boot) -> ! = $main;
            main($crate::Boot {
                cpu: cpu as u32,
                start_info_gpa,
            })
        }
    };
}

#[repr(C, align(4096))]
struct Stacks([u8; STACK_SIZE * MAX_CPUS as usize]);

// The stacks: only the entry stub touches this symbol (by address).
#[unsafe(no_mangle)]
static mut slipway_stacks: Stacks = Stacks([0; STACK_SIZE * MAX_CPUS as usize]);

core::arch::global_asm!(
    r#"
    /* XEN_ELFNOTE_PHYS32_ENTRY (type 18), owner "Xen": the 32-bit PVH entry point. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long slipway_pvh_entry32
    .balign 4
    .popsection

    .pushsection .data.slipway_boot, "aw", @progbits
    .balign 4096
slipway_pml4:
    .quad slipway_pdpt + 0x3
    .fill 511, 8, 0
slipway_pdpt:
    .quad slipway_pd + 0x0003
    .quad slipway_pd + 0x1003
    .quad slipway_pd + 0x2003
    .quad slipway_pd + 0x3003
    .fill 508, 8, 0
slipway_pd:
    .set slipway_large_page, 0
    .rept 2048
    .quad (slipway_large_page << 21) | 0x83
    .set slipway_large_page, slipway_large_page + 1
    .endr
    .balign 16
slipway_gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
slipway_gdt_pointer:
    .word 23
    .long slipway_gdt
    .balign 4
slipway_cpu_counter:
    .long 0
    .popsection

    .pushsection .text.slipway_entry32, "ax", @progbits
    .code32
    .global slipway_pvh_entry32
slipway_pvh_entry32:
    cli
    cld
    movl %ebx, %esi
    movl $1, %edi
    lock xaddl %edi, slipway_cpu_counter
    cmpl ${max_cpus}, %edi
    jae 2f
    lgdt slipway_gdt_pointer
    /* CR4: PAE, OSFXSR and OSXMMEXCPT (SSE usable: code built for a target with SSE uses it
       from the first instruction of Rust on). */
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    /* XSAVE where CPUID offers it: CR4.OSXSAVE, then XCR0 = x87|SSE, plus AVX where offered.
       Compiled code does not use AVX by itself; run-time feature checks (sha2 in domB) may. */
    movl $1, %eax
    cpuid
    btl $26, %ecx
    jnc 3f
    movl $3, %ebx
    btl $28, %ecx
    jnc 4f
    movl $7, %ebx
4:
    movl %cr4, %eax
    orl $0x40000, %eax
    movl %eax, %cr4
    xorl %ecx, %ecx
    xorl %edx, %edx
    movl %ebx, %eax
    xsetbv
3:
    movl $slipway_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    /* CR0: PG, PE, MP and NE set; EM and TS clear (x87/SSE instructions execute, no #NM). */
    movl %cr0, %eax
    andl $0xfffffff3, %eax
    orl $0x80000023, %eax
    movl %eax, %cr0
    ljmp $0x08, $slipway_entry64
2:
    hlt
    jmp 2b

    .code64
slipway_entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movl %edi, %eax
    incq %rax
    imulq ${stack_size}, %rax
    leaq slipway_stacks(%rip), %rsp
    addq %rax, %rsp
    xorl %ebp, %ebp
    /* The System V x87/SSE state (FCW 0x037F, MXCSR 0x1F80), whatever the loader left. */
    fninit
    pushq $0x1f80
    ldmxcsr (%rsp)
    popq %rax
    movl %edi, %ecx
    movl %esi, %edi
    movl %ecx, %esi
    call slipway_guest_main
    ud2
    .popsection
"#,
    max_cpus = const MAX_CPUS,
    stack_size = const STACK_SIZE,
    options(att_syntax)
);
