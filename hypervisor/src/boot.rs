//! Multiboot2 header and the 32-bit entry stub: GRUB enters `_start32` in 32-bit flat protected
//! mode with paging off, `eax` = multiboot2 magic, `ebx` = physical address of the boot
//! information. The stub zeroes .bss and the early page tables, saves both registers, identity-maps the low 4 GiB with
//! 2 MiB pages (early tables only: the post-launch stage replaces them with its own, page-granular
//! W^X tables), enables long mode with NX, and calls `pre_launch_main(magic, info)` on the boot
//! stack.

use core::arch::global_asm;

/// Size of the boot CPU's stack. A guard page (unmapped by the post-launch page tables) sits
/// directly below it.
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

global_asm!(
    r#"
    .set MB2_MAGIC, 0xE85250D6
    .set MB2_ARCH_I386, 0

    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header_start
    .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header_start))

    /* Module alignment tag: page-aligned modules, so they can be mapped into domB read-only. */
    .balign 8
    .short 6
    .short 0
    .long 8

    /* End tag. */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    /* MLE-style header (docs/architecture.md, "Measured region"): what a dynamic launch
     * measures. The region is all code, read-only data and the initial image of the initialised
     * data, from the image start to the end of .data: loaded verbatim from the ELF file and never
     * written before the launch, so the post-launch stage starts from measured statics. */
    .balign 8
    .global MLE_HEADER
MLE_HEADER:
    .quad {mle_magic}
    .long {mle_version}
    .long {mle_size}
    .quad __image_start
    .quad __data_init_end

    /* The Intel MLE header (MLE Developer's Guide; `slipway_hv_core::txt::layout::MleHeader`,
     * 52 bytes): SINIT finds it through OsSinitData.mle_hdr_base. The MLE is the measured
     * region above (linear 0 = __image_start); offsets come from the linker script. */
    .balign 16
    .global INTEL_MLE_HEADER
INTEL_MLE_HEADER:
    .byte 0x5a, 0xac, 0x82, 0x90, 0x6f, 0x47, 0xa7, 0x74
    .byte 0x0f, 0x5c, 0x55, 0xa2, 0xcb, 0x51, 0xb6, 0x42
    .long 52                       /* length */
    .long {intel_mle_version}      /* version */
    .long __mle_entry_offset       /* entry point (linear) */
    .long 0                        /* first valid page */
    .long 0                        /* MLE start */
    .long __mle_size               /* MLE end */
    .long {intel_mle_caps}         /* capabilities */
    .long 0                        /* command line start */
    .long 0                        /* command line end */

    .section .boot.text, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov esi, eax
    mov ebp, ebx
    rdtsc                  /* entry time: the zero of every boot milestone */
    mov dword ptr [BOOT_ENTRY_TSC], eax
    mov dword ptr [BOOT_ENTRY_TSC + 4], edx

    /* Zero .bss (stack, statics); early_paging zeroes the early page tables. */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd

    mov dword ptr [BOOT_MULTIBOOT_MAGIC], esi
    mov dword ptr [BOOT_MULTIBOOT_INFO], ebp
    mov esp, offset BOOT_STACK_TOP

    /* Long mode present? (CPUID 0x80000001 EDX.LM) */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 90f
    mov eax, 0x80000001
    cpuid
    test edx, (1 << 29)
    jz 90f

    call early_paging

    lgdt [EARLY_GDT_PTR]
    push 0x08
    mov eax, offset long_mode_entry
    push eax
    retf

    /* The early identity map of the low 4 GiB (2 MiB pages), PAE, long mode with NX, paging on:
     * called in 32-bit protected mode with paging off, on the boot stack, by both 32-bit
     * entries (GRUB's and the Intel TXT MLE entry). Returns in compatibility mode; the caller
     * loads the GDT and jumps to its 64-bit code. */
early_paging:
    mov edi, offset __boot_tables_start
    mov ecx, offset __boot_tables_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd
    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; each PD maps 1 GiB with 2 MiB pages. */
    mov eax, offset EARLY_PDPT
    or eax, 0x3
    mov dword ptr [EARLY_PML4], eax
    mov edi, offset EARLY_PDPT
    mov eax, offset EARLY_PDS
    or eax, 0x3
    mov ecx, 4
2:
    mov dword ptr [edi], eax
    add edi, 8
    add eax, 0x1000
    loop 2b

    mov edi, offset EARLY_PDS
    mov eax, 0x83          /* present, writable, 2 MiB */
    xor edx, edx           /* high half of the physical address */
    mov ecx, 2048
3:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], edx
    add edi, 8
    add eax, 0x200000
    adc edx, 0
    loop 3b

    mov eax, cr4
    or eax, (1 << 5)       /* PAE */
    mov cr4, eax
    mov eax, offset EARLY_PML4
    mov cr3, eax
    mov ecx, 0xC0000080    /* EFER */
    rdmsr
    or eax, (1 << 8) | (1 << 11)   /* LME, NXE */
    wrmsr
    mov eax, cr0
    and eax, 0x9FFFFFFF    /* clear CD and NW: firmware may leave caching off */
    or eax, 0x80010001     /* PG, WP, PE */
    mov cr0, eax

    ret

    /* No long mode: say so on COM1 and fail the run. */
90:
    mov esi, offset NO_LONG_MODE_MSG
91:
    mov al, byte ptr [esi]
    test al, al
    jz 92f
    mov dx, {com1}
    out dx, al
    inc esi
    jmp 91b
92:
    mov dx, 0xf4
    mov eax, 0x11
    out dx, eax
93:
    hlt
    jmp 93b

    /* The Intel TXT MLE entry point (the Intel MLE header's entry_point): GETSEC[SENTER] and
     * SINIT enter here in 32-bit protected mode with paging off, interrupts off, EBX = this
     * entry's physical address, ECX = the MLE page tables; nothing else of the CPU state
     * (GDT, segments, stack) may be trusted. Under `launch=txt-simulated` the simulated seam
     * (`txt.rs`) makes the same transition. Loads the image's own GDT and stack, builds the
     * early identity map, enters long mode and the post-launch stage with the TXT flag. */
    .global txt_mle_entry
txt_mle_entry:
    cli
    cld
    mov esp, offset BOOT_STACK_TOP
    lgdt [EARLY_GDT_PTR]
    push 0x18
    mov eax, offset txt_mle_entry_flat
    push eax
    retf
txt_mle_entry_flat:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    call early_paging
    lgdt [EARLY_GDT_PTR]
    push 0x08
    mov eax, offset txt_long_mode_entry
    push eax
    retf

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset BOOT_STACK_TOP
    xor ebp, ebp           /* ends the frame-pointer chain for backtraces */
    mov edi, dword ptr [BOOT_MULTIBOOT_MAGIC]
    mov esi, dword ptr [BOOT_MULTIBOOT_INFO]
    call pre_launch_main
    ud2

    /* Post-launch entry: what a dynamic launch (SENTER/SKINIT) re-enters. Nothing the
     * pre-launch stage left in .bss survives (stack, IDT, GDT/TSS, statics): it is zeroed here,
     * and .data is still the measured image. Only the preserved sections (the hand-off record
     * and the early page tables still in use) are kept, and the hand-off is validated as hostile
     * input. rdi = physical address of the launch hand-off. */
    .section .text.post_launch_entry, "ax"
    .global post_launch_entry
post_launch_entry:
    cli
    cld
    mov r12, rdi
    mov rdi, offset __bss_start
    mov rcx, offset __bss_end
    sub rcx, rdi
    shr rcx, 3
    xor eax, eax
    rep stosq
    mov rdi, r12
    xor esi, esi           /* not entered by a TXT launch */
    mov rsp, offset BOOT_STACK_TOP
    xor ebp, ebp
    call post_launch_main
    ud2

    /* 64-bit half of the Intel TXT MLE entry: as `post_launch_entry` (.bss zeroed, fresh
     * stack), with no hand-off pointer (the post-launch stage takes it from the validated TXT
     * heap) and rsi = 1: entered by a TXT launch. */
txt_long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rdi, offset __bss_start
    mov rcx, offset __bss_end
    sub rcx, rdi
    shr rcx, 3
    rep stosq
    xor edi, edi
    mov esi, 1
    mov rsp, offset BOOT_STACK_TOP
    xor ebp, ebp
    call post_launch_main
    ud2

    .section .rodata.boot, "a"
    .balign 8
EARLY_GDT:
    .quad 0
    /* Accessed bits preset: the CPU would otherwise set them in memory when loading the
     * selectors, writing into the measured region (this table is in .rodata). */
    .quad 0x00AF9B000000FFFF   /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF93000000FFFF   /* 0x10: data */
    .quad 0x00CF9B000000FFFF   /* 0x18: 32-bit code (the TXT MLE entry) */
EARLY_GDT_END:
    .balign 8
    .global EARLY_GDT_PTR
EARLY_GDT_PTR:
    .short EARLY_GDT_END - EARLY_GDT - 1
    .quad EARLY_GDT
NO_LONG_MODE_MSG:
    .asciz "slipway: panic: CPU has no long mode\r\nslipway: exiting: failure\r\n"

    /* Written by the 32-bit stub after it zeroed .bss. */
    .section .bss.boot, "aw", @nobits
    .balign 4
    .global BOOT_MULTIBOOT_MAGIC
BOOT_MULTIBOOT_MAGIC:
    .long 0
    .global BOOT_MULTIBOOT_INFO
BOOT_MULTIBOOT_INFO:
    .long 0

    /* Preserved across the launch (not zeroed by the post-launch entry): the boot's entry time
     * (only milestone times depend on it) and the early page tables the post-launch stage runs
     * on until it has its own. */
    .section .handoff, "aw", @nobits
    .balign 8
    .global BOOT_ENTRY_TSC
BOOT_ENTRY_TSC:
    .quad 0

    .section .boot_tables, "aw", @nobits
    .balign 4096
EARLY_PML4:
    .skip 4096
EARLY_PDPT:
    .skip 4096
EARLY_PDS:
    .skip 4096 * 4

    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
    .global BOOT_STACK_GUARD
BOOT_STACK_GUARD:
    .skip 4096
    .global BOOT_STACK_BOTTOM
BOOT_STACK_BOTTOM:
    .skip {stack_size}
    .global BOOT_STACK_TOP
BOOT_STACK_TOP:
"#,
    stack_size = const BOOT_STACK_SIZE,
    mle_magic = const slipway_protocol::platform::MLE_HEADER_MAGIC_U64,
    mle_version = const slipway_protocol::platform::MLE_HEADER_VERSION,
    mle_size = const slipway_protocol::platform::MLE_HEADER_SIZE,
    com1 = const slipway_protocol::platform::COM1_PORT,
    intel_mle_version = const slipway_hv_core::txt::layout::MLE_HEADER_VERSION,
    intel_mle_caps = const slipway_hv_core::txt::layout::SLIPWAY_MLE_CAPABILITIES,
);
