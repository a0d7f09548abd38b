//! MMIO emulation over a fake vCPU, fake guest RAM with real page tables, and a recording
//! device. Instruction bytes are what `gcc -O2` and GNU as emit (objdump listings quoted in each
//! test), including the forms of Linux 6.1's `native_apic_mem_write` / `native_apic_mem_read`.

extern crate std;

use super::decode::{self, CodeSize, DecodeError};
use super::walk::{self, PagingState, WalkError};
use super::*;
use crate::guest_memory::GuestMemoryError;
use crate::vmexit::{Event, InterruptedEvent, VmExit};
use proptest::prelude::*;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

const RAM_SIZE: u64 = 0x80_0000;
/// The xAPIC page as Linux maps it (fix_to_virt(FIX_APIC_BASE) with 4-level paging).
const APIC_GPA: u64 = 0xfee0_0000;
const CODE_LINEAR: u64 = 0xffff_ffff_8100_0ff0;
const CODE_GPA: u64 = 0x20_0ff0;

#[derive(Default, Clone)]
struct FakeVcpu {
    gprs: [u64; 16],
    rip: u64,
    efer: u64,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    cs_base: u64,
    code_bits: u64,
    cpl: u64,
}

impl VcpuBackend for FakeVcpu {
    fn run(&mut self) -> VmExit {
        unreachable!("MMIO emulation never runs the vCPU")
    }
    fn reg(&self, reg: Reg) -> u64 {
        if let Some(i) = Reg::GPRS.iter().position(|&r| r == reg) {
            return self.gprs[i];
        }
        match reg {
            Reg::Rip => self.rip,
            Reg::Efer => self.efer,
            Reg::LongMode => u64::from(self.code_bits == 64),
            Reg::Cpl => self.cpl,
            Reg::Cr0 => self.cr0,
            Reg::Cr3 => self.cr3,
            Reg::Cr4 => self.cr4,
            Reg::CsBase => self.cs_base,
            Reg::CodeBits => self.code_bits,
            _ => unreachable!("every GPR is in GPRS"),
        }
    }
    fn set_reg(&mut self, reg: Reg, value: u64) {
        if let Some(i) = Reg::GPRS.iter().position(|&r| r == reg) {
            self.gprs[i] = value;
        } else if reg == Reg::Rip {
            self.rip = value;
        } else {
            panic!("the emulator writes only GPRs and rip, not {reg:?}");
        }
    }
    fn inject(&mut self, _: Event) {
        panic!("the emulator injects nothing");
    }
    fn interrupt_ready(&self) -> bool {
        false
    }
    fn set_interrupt_window(&mut self, _wanted: bool) {}
    fn set_tsc_offset(&mut self, _offset: u64) {}
    fn set_rdtsc_exiting(&mut self, _exiting: bool) {}
    fn start_real_mode(&mut self, _start: crate::lapic::RealModeStart) -> Result<(), &'static str> {
        Err("not in this fake")
    }
    fn interrupted_event(&self) -> Option<InterruptedEvent> {
        None
    }
}

/// Guest RAM `[0, RAM_SIZE)` with a bump allocator for page tables from 1 MiB up.
struct FakeRam {
    bytes: Vec<u8>,
    next_table: u64,
}

impl FakeRam {
    fn new() -> Self {
        FakeRam {
            bytes: vec![0; RAM_SIZE as usize],
            next_table: 0x10_0000,
        }
    }
    fn write(&mut self, gpa: u64, data: &[u8]) {
        self.bytes[gpa as usize..gpa as usize + data.len()].copy_from_slice(data);
    }
    fn write_u64(&mut self, gpa: u64, value: u64) {
        self.write(gpa, &value.to_le_bytes());
    }
    fn read_u64(&self, gpa: u64) -> u64 {
        let mut b = [0; 8];
        self.read_guest(gpa, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
    fn table(&mut self) -> u64 {
        let at = self.next_table;
        self.next_table += 0x1000;
        at
    }
    /// A fresh root for long-mode paging.
    fn root(&mut self) -> u64 {
        self.table()
    }
    /// Maps `linear` to `gpa` with a leaf at `leaf_level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) in a
    /// `levels`-level long-mode hierarchy; `flags` on every entry.
    fn map(&mut self, root: u64, levels: u8, linear: u64, gpa: u64, leaf_level: u8, flags: u64) {
        let mut table = root;
        for level in (leaf_level..=levels).rev() {
            let shift = 12 + 9 * (u32::from(level) - 1);
            let slot = table + ((linear >> shift) & 0x1ff) * 8;
            if level == leaf_level {
                let ps = if level > 1 { 1 << 7 } else { 0 };
                self.write_u64(slot, gpa | flags | ps);
                return;
            }
            let entry = self.read_u64(slot);
            table = if entry & 1 != 0 {
                entry & 0x000f_ffff_ffff_f000
            } else {
                let next = self.table();
                self.write_u64(slot, next | flags);
                next
            };
        }
    }
}

impl GuestPhysRead for FakeRam {
    fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let len = buf.len() as u64;
        let out = GuestMemoryError::OutOfBounds { gpa, len };
        let end = gpa.checked_add(len).ok_or(out)?;
        if end > RAM_SIZE {
            return Err(out);
        }
        buf.copy_from_slice(&self.bytes[gpa as usize..end as usize]);
        Ok(())
    }
}

#[derive(Default)]
struct Device {
    read_value: u64,
    reads: Vec<(u64, u8)>,
    writes: Vec<(u64, u8, u64)>,
}

impl MmioDevice for Device {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        self.reads.push((gpa, size));
        self.read_value
    }
    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        self.writes.push((gpa, size, value));
    }
}

const RW: u64 = 0b011;
const RWU: u64 = 0b111;

/// A 64-bit vCPU (4-level paging) whose rip points at `code`, mapped 4 KiB at CODE_LINEAR.
fn long_mode(code: &[u8]) -> (FakeVcpu, FakeRam) {
    let mut ram = FakeRam::new();
    let root = ram.root();
    ram.map(root, 4, CODE_LINEAR & !0xfff, CODE_GPA & !0xfff, 1, RW);
    ram.map(root, 4, (CODE_LINEAR & !0xfff) + 0x1000, 0x30_0000, 1, RW);
    ram.write(CODE_GPA, &code[..code.len().min(0x10)]);
    if code.len() > 0x10 {
        ram.write(0x30_0000, &code[0x10..]);
    }
    let vcpu = FakeVcpu {
        rip: CODE_LINEAR,
        efer: walk::EFER_LMA | (1 << 8),
        cr0: walk::CR0_PG | 1,
        cr3: root,
        cr4: walk::CR4_PAE,
        code_bits: 64,
        gprs: core::array::from_fn(|i| initial(i as u64)),
        ..FakeVcpu::default()
    };
    (vcpu, ram)
}

/// Runs `code` in 64-bit mode as a write (`write`) or read fault; returns the vCPU and device.
fn run64(code: &[u8], write: bool, read_value: u64) -> (FakeVcpu, FakeVcpu, Device) {
    let (mut vcpu, ram) = long_mode(code);
    let before = vcpu.clone();
    let mut device = Device {
        read_value,
        ..Device::default()
    };
    emulate_mmio(&mut vcpu, &ram, APIC_GPA + 0xb0, write, &mut device)
        .unwrap_or_else(|e| panic!("{code:02x?}: {e}"));
    (before, vcpu, device)
}

fn gpr(vcpu: &FakeVcpu, reg: Reg) -> u64 {
    vcpu.reg(reg)
}

#[track_caller]
fn assert_store(code: &[u8], len: u64, size: u8, value: u64) {
    let (before, after, device) = run64(code, true, 0);
    assert_eq!(
        device.writes,
        [(APIC_GPA + 0xb0, size, value)],
        "{code:02x?}"
    );
    assert!(device.reads.is_empty());
    assert_eq!(after.rip, before.rip + len, "{code:02x?}: length");
    assert_eq!(after.gprs, before.gprs, "a store changes no register");
}

#[track_caller]
fn assert_load(code: &[u8], len: u64, size: u8, dest: Reg, read: u64, expect: u64) {
    let (before, after, device) = run64(code, false, read);
    assert_eq!(device.reads, [(APIC_GPA + 0xb0, size)], "{code:02x?}");
    assert!(device.writes.is_empty());
    assert_eq!(after.rip, before.rip + len, "{code:02x?}: length");
    assert_eq!(gpr(&after, dest), expect, "{code:02x?}: {dest:?}");
    for reg in Reg::GPRS.iter().filter(|&&r| r != dest) {
        assert_eq!(gpr(&after, *reg), gpr(&before, *reg), "{reg:?} untouched");
    }
}

/// The initial value of GPR `n` (encoding order): distinct in every byte and register.
const fn initial(n: u64) -> u64 {
    ((n + 1) << 56) | 0x0076_5432_10fe_dc00 | (n * 0x11)
}
const RAX: u64 = initial(0);
const RCX: u64 = initial(1);
const RBX: u64 = initial(3);
const RSP: u64 = initial(4);
const RSI: u64 = initial(6);
const RDI: u64 = initial(7);
const R9: u64 = initial(9);
const R11: u64 = initial(11);

#[test]
fn linux_apic_register_accesses() {
    // gcc -O2 -mcmodel=kernel of Linux 6.1's native_apic_mem_write / _read (APIC_BASE =
    // 0xffffffffff5fd000): `89 b7 00 d0 5f ff  mov %esi,-0xa03000(%rdi)`.
    assert_store(
        &[0x89, 0xb7, 0x00, 0xd0, 0x5f, 0xff],
        6,
        4,
        RSI & 0xffff_ffff,
    );
    // `8b 87 00 d0 5f ff  mov -0xa03000(%rdi),%eax`: the 32-bit load zero-extends into rax.
    assert_load(
        &[0x8b, 0x87, 0x00, 0xd0, 0x5f, 0xff],
        6,
        4,
        Reg::Rax,
        0xdead_beef_0001_0014,
        0x0001_0014,
    );
    // EOI: `c7 04 25 b0 d0 5f ff 00 00 00 00  movl $0x0,0xffffffffff5fd0b0` (SIB, no base).
    assert_store(
        &[0xc7, 0x04, 0x25, 0xb0, 0xd0, 0x5f, 0xff, 0, 0, 0, 0],
        11,
        4,
        0,
    );
    // ICR: `89 3c 25 00 d3 5f ff  mov %edi,0xffffffffff5fd300`.
    assert_store(
        &[0x89, 0x3c, 0x25, 0x00, 0xd3, 0x5f, 0xff],
        7,
        4,
        RDI & 0xffff_ffff,
    );
    // ID: `8b 04 25 20 d0 5f ff  mov 0xffffffffff5fd020,%eax`.
    assert_load(
        &[0x8b, 0x04, 0x25, 0x20, 0xd0, 0x5f, 0xff],
        7,
        4,
        Reg::Rax,
        0x0100_0000,
        0x0100_0000,
    );
}

#[test]
fn stores_of_every_size_and_immediates() {
    assert_store(&[0x40, 0x88, 0x37], 3, 1, RSI & 0xff); // mov %sil,(%rdi)
    assert_store(&[0x66, 0x89, 0x37], 3, 2, RSI & 0xffff); // mov %si,(%rdi)
    assert_store(&[0x48, 0x89, 0x37], 3, 8, RSI); // mov %rsi,(%rdi)
    assert_store(&[0xc6, 0x07, 0x5a], 3, 1, 0x5a); // movb $0x5a,(%rdi)
    assert_store(&[0x66, 0xc7, 0x42, 0x10, 0xef, 0xbe], 6, 2, 0xbeef); // movw $0xbeef,0x10(%rdx)
    assert_store(&[0xc7, 0x07, 0xef, 0xbe, 0xad, 0xde], 6, 4, 0xdead_beef); // movl
    // movq $-2,(%rdi): imm32 sign-extended to 64 bits.
    assert_store(
        &[0x48, 0xc7, 0x07, 0xfe, 0xff, 0xff, 0xff],
        7,
        8,
        0xffff_ffff_ffff_fffe,
    );
}

#[test]
fn loads_write_the_destination_with_x86_semantics() {
    let read = 0x8877_6655_4433_2211;
    // mov (%rdi),%rax: all 64 bits.
    assert_load(&[0x48, 0x8b, 0x07], 3, 8, Reg::Rax, read, read);
    // movzbl (%rdi),%eax / movzwl: zero-extended to 64 bits.
    assert_load(&[0x0f, 0xb6, 0x07], 3, 1, Reg::Rax, read, 0x11);
    assert_load(&[0x0f, 0xb7, 0x07], 3, 2, Reg::Rax, read, 0x2211);
    // movzbw (%rax),%cx: a 16-bit destination keeps rcx's upper 48 bits.
    assert_load(
        &[0x66, 0x0f, 0xb6, 0x08],
        4,
        1,
        Reg::Rcx,
        read,
        (RCX & !0xffff) | 0x11,
    );
    // mov (%rsi),%dil (REX: dil, not bh): keeps rdi's upper 56 bits.
    assert_load(
        &[0x40, 0x8a, 0x3e],
        3,
        1,
        Reg::Rdi,
        read,
        (RDI & !0xff) | 0x11,
    );
}

#[test]
fn legacy_high_byte_registers_without_rex() {
    // mov %ah,(%rdi): bits 15:8 of rax.
    assert_store(&[0x88, 0x27], 2, 1, (RAX >> 8) & 0xff);
    // mov %spl,(%rdi): with REX the same encoding is spl.
    assert_store(&[0x40, 0x88, 0x27], 3, 1, RSP & 0xff);
    // mov (%rsi),%bh: only bits 15:8 of rbx change.
    assert_load(
        &[0x8a, 0x3e],
        2,
        1,
        Reg::Rbx,
        0xab,
        (RBX & !0xff00) | 0xab00,
    );
}

#[test]
fn rex_high_registers_sib_and_displacements() {
    // GNU as: `45 89 8c 24 00 03 00 00  mov %r9d,0x300(%r12)` (REX.R+B, SIB for r12, disp32).
    assert_store(
        &[0x45, 0x89, 0x8c, 0x24, 0x00, 0x03, 0x00, 0x00],
        8,
        4,
        R9 & 0xffff_ffff,
    );
    // `45 8b 55 20  mov 0x20(%r13),%r10d` (disp8).
    assert_load(
        &[0x45, 0x8b, 0x55, 0x20],
        4,
        4,
        Reg::R10,
        u64::MAX,
        0xffff_ffff,
    );
    // `4e 89 1c f0  mov %r11,(%rax,%r14,8)` (REX.W+R+X).
    assert_store(&[0x4e, 0x89, 0x1c, 0xf0], 4, 8, R11);
    // `4c 8b bc 8b 78 56 34 12  mov 0x12345678(%rbx,%rcx,4),%r15` (SIB + disp32).
    assert_load(
        &[0x4c, 0x8b, 0xbc, 0x8b, 0x78, 0x56, 0x34, 0x12],
        8,
        8,
        Reg::R15,
        7,
        7,
    );
    // `45 0f b6 48 30  movzbl 0x30(%r8),%r9d`.
    assert_load(&[0x45, 0x0f, 0xb6, 0x48, 0x30], 5, 1, Reg::R9, 0x1ff, 0xff);
    // `4c 0f b7 b7 b0 00 00 00  movzwq 0xb0(%rdi),%r14`.
    assert_load(
        &[0x4c, 0x0f, 0xb7, 0xb7, 0xb0, 0x00, 0x00, 0x00],
        8,
        2,
        Reg::R14,
        0x1_2345,
        0x2345,
    );
    // `0f b7 6c 24 fc  movzwl -0x4(%rsp),%ebp`.
    assert_load(
        &[0x0f, 0xb7, 0x6c, 0x24, 0xfc],
        5,
        2,
        Reg::Rbp,
        0xbeef,
        0xbeef,
    );
    // `c7 84 58 88 77 66 55 44 33 22 11  movl $0x11223344,0x55667788(%rax,%rbx,2)`.
    assert_store(
        &[
            0xc7, 0x84, 0x58, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        ],
        11,
        4,
        0x1122_3344,
    );
    // A REX prefix followed by a legacy prefix is void: `48 66 89 37` stores si, not rsi.
    assert_store(&[0x48, 0x66, 0x89, 0x37], 4, 2, RSI & 0xffff);
}

#[test]
fn rip_relative_prefixes_and_absolute_forms() {
    // gcc: `89 3d 00 00 00 00  mov %edi,0x0(%rip)`; GNU as: `89 3d 7f 00 00 00`.
    assert_store(&[0x89, 0x3d, 0x7f, 0, 0, 0], 6, 4, RDI & 0xffff_ffff);
    // `8b 05 00 00 00 00  mov 0x0(%rip),%eax`.
    assert_load(&[0x8b, 0x05, 0, 0, 0, 0], 6, 4, Reg::Rax, 9, 9);
    // `48 c7 05 ff ff ff 7f ff ff ff ff  movq $-1,0x7fffffff(%rip)`.
    assert_store(
        &[
            0x48, 0xc7, 0x05, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff,
        ],
        11,
        8,
        u64::MAX,
    );
    // `67 89 03  mov %eax,(%ebx)`; `64 8b 08  mov %fs:(%rax),%ecx`;
    // `65 89 83 80 00 00 00  mov %eax,%gs:0x80(%rbx)`.
    assert_store(&[0x67, 0x89, 0x03], 3, 4, RAX & 0xffff_ffff);
    assert_load(&[0x64, 0x8b, 0x08], 3, 4, Reg::Rcx, 5, 5);
    assert_store(&[0x65, 0x89, 0x83, 0x80, 0, 0, 0], 7, 4, RAX & 0xffff_ffff);
    // `a3 b0 00 e0 fe 00 00 00 00  movabs %eax,0xfee000b0` (moffs64);
    // `a1 20 00 e0 fe 00 00 00 00  movabs 0xfee00020,%eax`; `67 a0 20 00 e0 fe` (moffs32).
    assert_store(
        &[0xa3, 0xb0, 0x00, 0xe0, 0xfe, 0, 0, 0, 0],
        9,
        4,
        RAX & 0xffff_ffff,
    );
    assert_load(
        &[0xa1, 0x20, 0x00, 0xe0, 0xfe, 0, 0, 0, 0],
        9,
        4,
        Reg::Rax,
        3,
        3,
    );
    assert_load(
        &[0x67, 0xa0, 0x20, 0x00, 0xe0, 0xfe],
        6,
        1,
        Reg::Rax,
        0x7f,
        (RAX & !0xff) | 0x7f,
    );
}

fn decoded(bytes: &[u8], code: CodeSize) -> (usize, u8, bool) {
    let i = decode::decode(bytes, code).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
    (i.len, i.size, i.writes())
}

#[test]
fn thirty_two_and_sixteen_bit_code_lengths() {
    use CodeSize::{Bits16, Bits32};
    // GNU as --32, objdump -M i386.
    for (bytes, expect) in [
        (&[0xa3, 0xb0, 0x00, 0xe0, 0xfe][..], (5, 4, true)), // mov %eax,0xfee000b0
        (&[0xa1, 0x30, 0x00, 0xe0, 0xfe], (5, 4, false)),    // mov 0xfee00030,%eax
        (&[0x8b, 0x0d, 0x20, 0x00, 0xe0, 0xfe], (6, 4, false)), // mov 0xfee00020,%ecx
        (&[0xc7, 0x86, 0xb0, 0, 0, 0, 0, 0, 0, 0], (10, 4, true)), // movl $0,0xb0(%esi)
        (&[0x89, 0x14, 0x88], (3, 4, true)),                 // mov %edx,(%eax,%ecx,4)
        (&[0x66, 0x89, 0x1f], (3, 2, true)),                 // mov %bx,(%edi)
        (&[0x88, 0x10], (2, 1, true)),                       // mov %dl,(%eax)
        (&[0x8a, 0x30], (2, 1, false)),                      // mov (%eax),%dh
        (&[0x67, 0x89, 0x00], (3, 4, true)),                 // mov %eax,(%bx,%si)
        (&[0x89, 0x83, 0x00, 0x03, 0x00, 0x00], (6, 4, true)), // mov %eax,0x300(%ebx)
    ] {
        assert_eq!(decoded(bytes, Bits32), expect, "{bytes:02x?}");
    }
    // GNU as .code16, objdump -M i8086.
    for (bytes, expect) in [
        (&[0x89, 0x07][..], (2, 2, true)),          // mov %ax,(%bx)
        (&[0x66, 0x89, 0x04], (3, 4, true)),        // mov %eax,(%si)
        (&[0x8b, 0x0e, 0x34, 0x12], (4, 2, false)), // mov 0x1234,%cx
        (&[0x88, 0x43, 0x10], (3, 1, true)),        // mov %al,0x10(%bp,%di)
        (&[0xc7, 0x87, 0x34, 0x12, 0xaa, 0x55], (6, 2, true)), // movw $0x55aa,0x1234(%bx)
        (&[0xa3, 0x34, 0x12], (3, 2, true)),        // mov %ax,0x1234
    ] {
        assert_eq!(decoded(bytes, Bits16), expect, "{bytes:02x?}");
    }
    // 40 is INC outside 64-bit code.
    assert!(matches!(
        decode::decode(&[0x40, 0x89, 0x07], Bits32),
        Err(DecodeError::Unsupported { .. })
    ));
}

#[test]
fn refused_instructions_name_their_bytes_and_change_nothing() {
    for code in [
        &[0xf0, 0xff, 0x00][..],         // lock incl (%rax)
        &[0x87, 0x07],                   // xchg %eax,(%rdi)
        &[0xa4],                         // movsb
        &[0xf3, 0xa5],                   // rep movsl
        &[0xc5, 0xfe, 0x6f, 0x00],       // vmovdqu (%rax),%ymm0
        &[0x89, 0xc3],                   // mov %eax,%ebx
        &[0x0f, 0xc3, 0x07],             // movnti %eax,(%rdi)
        &[0xc7, 0x4f, 0x08, 0, 0, 0, 0], // C7 /1
        &[0x01, 0x07],                   // add %eax,(%rdi)
        &[0x62, 0xf1, 0x7c, 0x48, 0x10], // EVEX
    ] {
        let (mut vcpu, ram) = long_mode(code);
        let before = vcpu.clone();
        let mut device = Device::default();
        let error = emulate_mmio(&mut vcpu, &ram, APIC_GPA, true, &mut device).unwrap_err();
        let MmioError::UnsupportedInstruction {
            rip, bytes, len, ..
        } = error
        else {
            panic!("{code:02x?}: {error:?}");
        };
        assert_eq!((rip, len), (CODE_LINEAR, 15));
        assert_eq!(&bytes[..code.len()], code);
        assert!(device.reads.is_empty() && device.writes.is_empty());
        assert_eq!((vcpu.rip, vcpu.gprs), (before.rip, before.gprs));
    }
    let (mut vcpu, ram) = long_mode(&[0xf0, 0xff, 0x00]);
    let message = emulate_mmio(&mut vcpu, &ram, APIC_GPA, true, &mut Device::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("the instruction at rip 0xffffffff81000ff0 (f0 ff 00 00 ")
            && message.ends_with("is not an MMIO move this hypervisor emulates: LOCK prefix"),
        "{message}"
    );
}

#[test]
fn more_than_fifteen_bytes_is_refused() {
    // 13 operand-size prefixes + `89 07` = 15 bytes: fine; 14 + 2 = 16: too long.
    let mut ok = vec![0x66; 13];
    ok.extend([0x89, 0x07]);
    assert_eq!(decoded(&ok, CodeSize::Bits64), (15, 2, true));
    let mut long = vec![0x66; 14];
    long.extend([0x89, 0x07]);
    assert_eq!(
        decode::decode(&long, CodeSize::Bits64),
        Err(DecodeError::TooLong)
    );
    let (mut vcpu, ram) = long_mode(&long);
    assert_eq!(
        emulate_mmio(&mut vcpu, &ram, APIC_GPA, true, &mut Device::default()),
        Err(MmioError::InstructionTooLong { rip: CODE_LINEAR })
    );
}

#[test]
fn direction_disagreeing_with_the_fault_is_refused() {
    let store = [0x89, 0xb7, 0x00, 0xd0, 0x5f, 0xff];
    let (mut vcpu, ram) = long_mode(&store);
    let mut device = Device::default();
    let error = emulate_mmio(&mut vcpu, &ram, APIC_GPA + 0x80, false, &mut device).unwrap_err();
    assert_eq!(
        error,
        MmioError::DirectionMismatch {
            rip: CODE_LINEAR,
            gpa: APIC_GPA + 0x80,
            fault_write: false
        }
    );
    assert_eq!(
        error.to_string(),
        "the MMIO fault at 0xfee00080 was a read, but the instruction at rip \
         0xffffffff81000ff0 writes memory"
    );
    assert!(device.writes.is_empty() && device.reads.is_empty());
    assert_eq!(vcpu.rip, CODE_LINEAR);
    let (mut vcpu, ram) = long_mode(&[0x8b, 0x07]);
    assert!(matches!(
        emulate_mmio(&mut vcpu, &ram, APIC_GPA, true, &mut device),
        Err(MmioError::DirectionMismatch {
            fault_write: true,
            ..
        })
    ));
}

#[test]
fn fetch_crosses_a_page_boundary_into_a_different_frame() {
    // CODE_LINEAR is 16 bytes before a page end; the next page maps to an unrelated frame.
    let mut code = vec![0x90; 6];
    code.extend([
        0xc7, 0x04, 0x25, 0xb0, 0xd0, 0x5f, 0xff, 0x44, 0x33, 0x22, 0x11,
    ]);
    let (mut vcpu, ram) = long_mode(&code);
    vcpu.rip += 6; // the store starts 10 bytes before the page end and ends 1 byte into the next
    let mut device = Device::default();
    emulate_mmio(&mut vcpu, &ram, APIC_GPA + 0xb0, true, &mut device).unwrap();
    assert_eq!(device.writes, [(APIC_GPA + 0xb0, 4, 0x1122_3344)]);
    assert_eq!(vcpu.rip, CODE_LINEAR + 6 + 11);
}

#[test]
fn an_unmapped_next_page_matters_only_if_the_instruction_reaches_it() {
    let (mut vcpu, mut ram) = long_mode(&[]);
    // Unmap the page after the code page: its PTE is the code PTE's neighbour.
    let next = (CODE_LINEAR & !0xfff) + 0x1000;
    ram.map(vcpu.cr3, 4, next, 0, 1, 0);
    // `89 37` two bytes before the page end: fits.
    ram.write(CODE_GPA + 14, &[0x89, 0x37]);
    vcpu.rip = CODE_LINEAR + 14;
    let mut device = Device::default();
    emulate_mmio(&mut vcpu, &ram, APIC_GPA, true, &mut device).unwrap();
    assert_eq!(device.writes.len(), 1);
    // `c7 07 ef be ad de` four bytes before the end: needs the unmapped page.
    ram.write(CODE_GPA + 12, &[0xc7, 0x07, 0xef, 0xbe]);
    vcpu.rip = CODE_LINEAR + 12;
    let error = emulate_mmio(&mut vcpu, &ram, APIC_GPA, true, &mut device).unwrap_err();
    assert_eq!(
        error,
        MmioError::Fetch {
            rip: CODE_LINEAR + 12,
            error: WalkError::NotPresent {
                linear: next,
                level: 1
            }
        }
    );
    assert_eq!(device.writes.len(), 1, "nothing performed");
    assert!(error.to_string().contains("level-1 entry not present"));
}

/// Translates `linear` and checks it lands on `gpa`.
#[track_caller]
fn assert_walk(ram: &FakeRam, state: PagingState, linear: u64, gpa: u64) {
    assert_eq!(walk::translate(ram, &state, linear, false), Ok(gpa));
}

fn long_state(root: u64, la57: bool) -> PagingState {
    PagingState {
        cr0: walk::CR0_PG | 1,
        cr3: root,
        cr4: walk::CR4_PAE | if la57 { walk::CR4_LA57 } else { 0 },
        efer: walk::EFER_LMA,
    }
}

#[test]
fn long_mode_large_pages_and_five_levels() {
    let mut ram = FakeRam::new();
    let root = ram.root();
    // 2 MiB page and 1 GiB page (the 1 GiB page's frame is outside RAM: translation only).
    ram.map(root, 4, 0xffff_8000_0020_0000, 0x40_0000, 2, RW);
    ram.map(root, 4, 0xffff_8880_4000_0000, 0x1_c000_0000, 3, RW);
    let state = long_state(root, false);
    assert_walk(&ram, state, 0xffff_8000_0021_2345, 0x41_2345);
    assert_walk(&ram, state, 0xffff_8880_7fff_fff8, 0x1_ffff_fff8);
    assert_eq!(
        walk::translate(&ram, &state, 0x0000_8000_0000_0000, false),
        Err(WalkError::NonCanonical {
            linear: 0x0000_8000_0000_0000
        })
    );
    assert_eq!(
        walk::translate(&ram, &state, 0x1000, false),
        Err(WalkError::NotPresent {
            linear: 0x1000,
            level: 4
        })
    );
    // PS in a PML4 entry is reserved.
    ram.write_u64(root + 8, 0x20_0000 | RW | (1 << 7));
    assert_eq!(
        walk::translate(&ram, &state, 0x80_0000_0000, false),
        Err(WalkError::ReservedPageSize {
            linear: 0x80_0000_0000,
            level: 4
        })
    );
    // 5-level: 57-bit canonical addresses, one more table.
    let root5 = ram.root();
    ram.map(root5, 5, 0xff12_3456_7800_0000, 0x60_0000, 2, RW);
    let state5 = long_state(root5, true);
    assert_walk(&ram, state5, 0xff12_3456_7801_0abc, 0x61_0abc);
    assert!(matches!(
        walk::translate(&ram, &state5, 0xfe00_0000_0000_0000, false),
        Err(WalkError::NonCanonical { .. })
    ));
}

#[test]
fn thirty_two_bit_and_pae_paging() {
    let mut ram = FakeRam::new();
    // 32-bit paging: PD at 0x10_0000, a 4 MiB PSE page (with PSE-36 bits 39:32 = 0x12) for
    // 0xc000_0000, a 4 KiB page for 0x0804_8000 through a PT at 0x10_1000.
    let pd = 0x10_0000;
    ram.write(
        pd + (0xc00 >> 2) * 4,
        &(0x0080_0000u32 | (0x12 << 13) | 0x83).to_le_bytes(),
    );
    ram.write(pd + 0x20 * 4, &(0x10_1000u32 | 0x7).to_le_bytes());
    ram.write(0x10_1000 + 0x48 * 4, &(0x33_3000u32 | 0x7).to_le_bytes());
    let mut state = PagingState {
        cr0: walk::CR0_PG | 1,
        cr3: pd,
        cr4: walk::CR4_PSE,
        efer: 0,
    };
    assert_walk(&ram, state, 0xc012_3456, 0x12_0092_3456);
    assert_walk(&ram, state, 0x0804_8abc, 0x33_3abc);
    // Without CR4.PSE the PS bit is ignored: the PDE points at a page table.
    state.cr4 = 0;
    assert_ne!(
        walk::translate(&ram, &state, 0xc012_3456, false),
        Ok(0x12_0092_3456)
    );
    // PAE: PDPT of 4 entries at a 32-byte aligned CR3, a 2 MiB page and a 4 KiB page.
    let pdpt = 0x10_2020;
    ram.write_u64(pdpt + 3 * 8, 0x10_3000 | 1);
    ram.write_u64(0x10_3000, 0x40_0000 | RW | (1 << 7)); // 0xc000_0000: 2 MiB
    ram.write_u64(0x10_3000 + 8, 0x10_4000 | RW); // 0xc020_0000: table
    ram.write_u64(0x10_4000 + 5 * 8, 0x55_5000 | RW);
    let pae = PagingState {
        cr0: walk::CR0_PG | 1,
        cr3: pdpt,
        cr4: walk::CR4_PAE,
        efer: 0,
    };
    assert_walk(&ram, pae, 0xc01f_fffc, 0x5f_fffc);
    assert_walk(&ram, pae, 0xc020_5123, 0x55_5123);
    assert_eq!(
        walk::translate(&ram, &pae, 0x4000_0000, false),
        Err(WalkError::NotPresent {
            linear: 0x4000_0000,
            level: 3
        })
    );
    // Paging off: linear = physical, 32 bits.
    let off = PagingState {
        cr0: 1,
        cr3: 0,
        cr4: 0,
        efer: 0,
    };
    assert_walk(&ram, off, 0x1_0000_1234, 0x1234);
}

#[test]
fn user_fetches_need_user_pages_and_tables_must_be_in_ram() {
    let mut ram = FakeRam::new();
    let root = ram.root();
    // The user page first: the tables it creates carry U, the supervisor leaf does not.
    ram.map(root, 4, 0x80_0000, 0x40_0000, 1, RWU);
    ram.map(root, 4, 0x40_0000, 0x40_0000, 1, RW);
    let state = long_state(root, false);
    assert_eq!(
        walk::translate(&ram, &state, 0x40_0000, true),
        Err(WalkError::SupervisorPage { linear: 0x40_0000 })
    );
    assert_eq!(
        walk::translate(&ram, &state, 0x80_0010, true),
        Ok(0x40_0010)
    );
    // A table pointer outside the domain's RAM is an error, not a read elsewhere.
    let outside = PagingState {
        cr3: RAM_SIZE,
        ..state
    };
    assert!(matches!(
        walk::translate(&ram, &outside, 0x1000, false),
        Err(WalkError::Memory { gpa, .. }) if gpa == RAM_SIZE
    ));
}

#[test]
fn protected_mode_without_paging_adds_the_cs_base() {
    // A PVH kernel's first instructions: 32-bit flat code, paging off. A CS base of 0x1000
    // moves the fetch.
    let mut ram = FakeRam::new();
    ram.write(0x2_1000 + 0x40, &[0xa3, 0xb0, 0x00, 0xe0, 0xfe]); // mov %eax,0xfee000b0
    let mut vcpu = FakeVcpu {
        rip: 0x2_0040,
        cs_base: 0x1000,
        cr0: 1,
        code_bits: 32,
        ..FakeVcpu::default()
    };
    vcpu.gprs[0] = 0xffff_ffff_0000_0abc;
    let mut device = Device::default();
    emulate_mmio(&mut vcpu, &ram, APIC_GPA + 0xb0, true, &mut device).unwrap();
    assert_eq!(device.writes, [(APIC_GPA + 0xb0, 4, 0xabc)]);
    assert_eq!(vcpu.rip, 0x2_0045);
    vcpu.code_bits = 48;
    assert_eq!(
        emulate_mmio(&mut vcpu, &ram, APIC_GPA, true, &mut device),
        Err(MmioError::UnknownCodeSize { bits: 48 })
    );
}

#[test]
fn guest_ram_reads_through_the_domains_runs() {
    use crate::addr::PhysRange;
    use crate::frame_alloc::BitmapFrameAllocator;
    use crate::guest_memory::{GuestMemory, GuestRam};
    use crate::testing::FakePhysMemory;
    const BASE: u64 = 0x20_0000;
    let regions = [PhysRange::new(BASE, BASE + 0x10_0000)];
    let mut storage = vec![0; BitmapFrameAllocator::storage_words(&regions)];
    let mut alloc = BitmapFrameAllocator::new(&regions, &mut storage).unwrap();
    let mut mem = FakePhysMemory::new(BASE, 0x10_0000);
    let memory = GuestMemory::allocate(&mut alloc, 0x4000).unwrap();
    memory.zero(&mut mem).unwrap();
    memory.write(&mut mem, 0x3000, &[0x8b, 0x07]).unwrap();
    memory.write(&mut mem, 0x3fff, &[0x8b]).unwrap();
    let ram = GuestRam {
        ram: &memory,
        mem: &mem,
    };
    let mut vcpu = FakeVcpu {
        rip: 0x3000,
        cr0: 1,
        code_bits: 32,
        ..FakeVcpu::default()
    };
    let mut device = Device {
        read_value: 0x50014,
        ..Device::default()
    };
    // The fetch stops at the end of RAM (0x4000): 15 bytes fit, the decode needs 2.
    emulate_mmio(&mut vcpu, &ram, APIC_GPA + 0x30, false, &mut device).unwrap();
    assert_eq!(vcpu.gprs[0], 0x50014);
    // An instruction in the last bytes of RAM that needs more: the fetch error names RAM's end.
    vcpu.rip = 0x3fff;
    assert!(matches!(
        emulate_mmio(&mut vcpu, &ram, APIC_GPA, false, &mut device),
        Err(MmioError::Fetch {
            error: WalkError::Memory { gpa: 0x4000, .. },
            ..
        })
    ));
}

proptest! {
    #[test]
    fn the_decoder_never_panics_and_stays_within_fifteen_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..20),
        mode in 0usize..3,
    ) {
        let code = [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64][mode];
        if let Ok(instruction) = decode::decode(&bytes, code) {
            prop_assert!(instruction.len >= 1 && instruction.len <= 15);
            prop_assert!(instruction.len <= bytes.len());
            prop_assert!(matches!(instruction.size, 1 | 2 | 4 | 8));
        }
    }

    #[test]
    fn emulation_of_arbitrary_bytes_never_panics_and_changes_nothing_on_error(
        bytes in proptest::collection::vec(any::<u8>(), 15),
        write in any::<bool>(),
        mode in 0usize..3,
    ) {
        let mut ram = FakeRam::new();
        ram.write(0x1000, &bytes);
        let mut vcpu = FakeVcpu {
            rip: 0x1000,
            cr0: 1,
            code_bits: [16, 32, 64][mode],
            efer: if mode == 2 { walk::EFER_LMA } else { 0 },
            gprs: core::array::from_fn(|i| i as u64 * 0x0101_0101_0101_0101),
            ..FakeVcpu::default()
        };
        let before = vcpu.clone();
        let mut device = Device::default();
        match emulate_mmio(&mut vcpu, &ram, APIC_GPA, write, &mut device) {
            Ok(()) => {
                let len = vcpu.rip - before.rip;
                prop_assert!((1..=15).contains(&len));
                prop_assert_eq!(device.reads.len() + device.writes.len(), 1);
            }
            Err(_) => {
                prop_assert_eq!((vcpu.rip, vcpu.gprs), (before.rip, before.gprs));
                prop_assert!(device.reads.is_empty() && device.writes.is_empty());
            }
        }
    }
}
