//! The decoder for the memory moves compilers emit for MMIO.
//!
//! Accepted: `MOV r/m, r` (88, 89), `MOV r, r/m` (8A, 8B), `MOV r/m, imm` (C6 /0, C7 /0),
//! `MOVZX r, r/m8` and `r/m16` (0F B6, 0F B7) and the accumulator forms with an absolute
//! address (A0-A3), in 16-, 32- and 64-bit code, with operand-size (66), address-size (67),
//! segment-override and REX prefixes, every ModRM/SIB/displacement form and RIP-relative
//! addressing. Only what the emulation needs comes out: the register operand, the sizes, the
//! direction, the immediate and the length. The address is never computed: it is the faulting
//! guest-physical address, so segment overrides (FS/GS included) change nothing here.
//!
//! Everything else is refused by name, never guessed: LOCK and REP prefixes, register-only
//! forms (they cannot fault on MMIO), string moves, XCHG, VEX/EVEX encodings, any other opcode.
//! Input is hostile: every byte is read through a bounds-checked cursor, nothing panics.

use super::walk::MAX_INSTRUCTION_LEN;
use crate::vmexit::Reg;
use core::fmt;

/// The default operand and address size of the code being decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    /// Real mode, virtual-8086 mode, 16-bit protected mode.
    Bits16,
    /// 32-bit protected or compatibility mode.
    Bits32,
    /// 64-bit mode.
    Bits64,
}

impl CodeSize {
    /// From [`Reg::CodeBits`] (16, 32 or 64).
    pub fn from_bits(bits: u64) -> Option<CodeSize> {
        match bits {
            16 => Some(CodeSize::Bits16),
            32 => Some(CodeSize::Bits32),
            64 => Some(CodeSize::Bits64),
            _ => None,
        }
    }
}

/// A general-purpose register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegOperand {
    /// The 64-bit register it lives in.
    pub reg: Reg,
    /// AH, CH, DH or BH: bits 15:8 of rax, rcx, rdx or rbx (8-bit operand, no REX prefix).
    pub high_byte: bool,
}

/// What a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A register (its low `size` bytes, or the high byte).
    Register(RegOperand),
    /// An immediate, already sign-extended to the access size.
    Immediate(u64),
}

/// The memory access an instruction makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Memory is written.
    Store(Source),
    /// Memory is read into a register.
    Load {
        /// The destination.
        dest: RegOperand,
        /// The destination's size in bytes (1, 2, 4 or 8); larger than the access for MOVZX.
        dest_size: u8,
    },
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Length in bytes (1-15).
    pub len: usize,
    /// Size of the memory access in bytes (1, 2, 4 or 8).
    pub size: u8,
    /// Direction and register/immediate operand.
    pub access: Access,
}

impl Instruction {
    /// Whether the instruction writes memory.
    pub fn writes(&self) -> bool {
        matches!(self.access, Access::Store(_))
    }
}

/// Why bytes did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// the instruction is not one of the MMIO moves this emulator handles
    Unsupported {
        /// What was refused.
        reason: &'static str,
    },
    /// the instruction runs past the bytes available
    Truncated,
    /// the instruction is longer than 15 bytes
    TooLong,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unsupported { reason } => write!(f, "unsupported instruction: {reason}"),
            DecodeError::Truncated => f.write_str("the instruction runs past the bytes available"),
            DecodeError::TooLong => f.write_str("the instruction is longer than 15 bytes"),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSTRUCTION_LEN {
            return Err(DecodeError::TooLong);
        }
        let byte = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// A little-endian value of `len` bytes (at most 8).
    fn value(&mut self, len: usize) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..len.min(8) {
            value |= u64::from(self.next()?) << (8 * i);
        }
        Ok(value)
    }

    fn skip(&mut self, len: usize) -> Result<(), DecodeError> {
        for _ in 0..len {
            self.next()?;
        }
        Ok(())
    }
}

const REX_W: u8 = 1 << 3;
const REX_R: u8 = 1 << 2;

fn unsupported(reason: &'static str) -> DecodeError {
    DecodeError::Unsupported { reason }
}

/// The register an operand names: `number` 0-15; for 8-bit operands without a REX prefix 4-7
/// are AH, CH, DH, BH.
fn register(number: u8, byte_operand: bool, rex: Option<u8>) -> RegOperand {
    if byte_operand && rex.is_none() && (4..8).contains(&number) {
        RegOperand {
            reg: Reg::GPRS[usize::from(number - 4)],
            high_byte: true,
        }
    } else {
        RegOperand {
            reg: Reg::GPRS[usize::from(number & 15)],
            high_byte: false,
        }
    }
}

/// Skips the ModRM's SIB and displacement bytes (the address is not needed, only the length).
/// Returns ModRM.reg (the register operand, or an opcode extension).
fn skip_memory_operand(cursor: &mut Cursor<'_>, address_bits: u8) -> Result<u8, DecodeError> {
    let modrm = cursor.next()?;
    let mode = modrm >> 6;
    let reg = (modrm >> 3) & 7;
    let rm = modrm & 7;
    if mode == 3 {
        return Err(unsupported(
            "register operand (ModRM mod 3): not a memory access",
        ));
    }
    let displacement = if address_bits == 16 {
        match mode {
            0 if rm == 6 => 2,
            0 => 0,
            1 => 1,
            _ => 2,
        }
    } else {
        let mut displacement = match mode {
            0 if rm == 5 => 4, // disp32, or RIP-relative in 64-bit code
            0 => 0,
            1 => 1,
            _ => 4,
        };
        if rm == 4 {
            let sib = cursor.next()?;
            if mode == 0 && sib & 7 == 5 {
                displacement = 4; // no base: disp32
            }
        }
        displacement
    };
    cursor.skip(displacement)?;
    Ok(reg)
}

/// Decodes the instruction at the start of `bytes` (at most 15 are looked at).
pub fn decode(bytes: &[u8], code: CodeSize) -> Result<Instruction, DecodeError> {
    let mut cursor = Cursor { bytes, pos: 0 };
    let mut operand_override = false;
    let mut address_override = false;
    // A REX prefix counts only directly before the opcode: a legacy prefix after it voids it.
    let mut rex: Option<u8> = None;
    let opcode = loop {
        let byte = cursor.next()?;
        match byte {
            0x66 => operand_override = true,
            0x67 => address_override = true,
            // ES, CS, SS, DS, FS, GS: the address comes from the fault.
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0xf0 => return Err(unsupported("LOCK prefix")),
            0xf2 | 0xf3 => return Err(unsupported("REP/REPNE prefix")),
            0x40..=0x4f if code == CodeSize::Bits64 => {
                rex = Some(byte);
                continue;
            }
            _ => break byte,
        }
        rex = None;
    };
    let rex_bits = rex.unwrap_or(0);
    let operand_size: u8 = if rex_bits & REX_W != 0 {
        8
    } else if (code == CodeSize::Bits16) != operand_override {
        2
    } else {
        4
    };
    let address_bits: u8 = match (code, address_override) {
        (CodeSize::Bits64, false) => 64,
        (CodeSize::Bits64, true) | (CodeSize::Bits32, false) | (CodeSize::Bits16, true) => 32,
        (CodeSize::Bits32, true) | (CodeSize::Bits16, false) => 16,
    };
    let reg_number = |reg: u8| reg | if rex_bits & REX_R != 0 { 8 } else { 0 };

    let (size, access) = match opcode {
        0x88..=0x8b => {
            let byte = opcode & 1 == 0;
            let reg = skip_memory_operand(&mut cursor, address_bits)?;
            let operand = register(reg_number(reg), byte, rex);
            let size = if byte { 1 } else { operand_size };
            let access = if opcode <= 0x89 {
                Access::Store(Source::Register(operand))
            } else {
                Access::Load {
                    dest: operand,
                    dest_size: size,
                }
            };
            (size, access)
        }
        0xc6 | 0xc7 => {
            let byte = opcode == 0xc6;
            let reg = skip_memory_operand(&mut cursor, address_bits)?;
            if reg != 0 {
                return Err(unsupported("opcode C6/C7 with ModRM.reg other than 0"));
            }
            let size = if byte { 1 } else { operand_size };
            let immediate = match size {
                1 => cursor.value(1)?,
                2 => cursor.value(2)?,
                4 => cursor.value(4)?,
                // imm32 sign-extended to 64 bits.
                _ => cursor.value(4)? as u32 as i32 as i64 as u64,
            };
            (size, Access::Store(Source::Immediate(immediate)))
        }
        0xa0..=0xa3 => {
            // The accumulator with an absolute address (moffs) of the address size.
            cursor.skip(usize::from(address_bits / 8))?;
            let byte = opcode & 1 == 0;
            let size = if byte { 1 } else { operand_size };
            let operand = register(0, byte, rex);
            let access = if opcode >= 0xa2 {
                Access::Store(Source::Register(operand))
            } else {
                Access::Load {
                    dest: operand,
                    dest_size: size,
                }
            };
            (size, access)
        }
        0x0f => match cursor.next()? {
            second @ (0xb6 | 0xb7) => {
                let reg = skip_memory_operand(&mut cursor, address_bits)?;
                let size = if second == 0xb6 { 1 } else { 2 };
                let access = Access::Load {
                    dest: register(reg_number(reg), false, rex),
                    dest_size: operand_size,
                };
                (size, access)
            }
            _ => return Err(unsupported("two-byte opcode other than MOVZX (0F B6/B7)")),
        },
        0x40..=0x4f => return Err(unsupported("INC/DEC (opcode 40-4F outside 64-bit code)")),
        0xc4 | 0xc5 | 0x62 | 0x8f => {
            return Err(unsupported("VEX/EVEX/XOP encoding or POP r/m"));
        }
        0x86 | 0x87 => return Err(unsupported("XCHG (an implicitly locked access)")),
        0xa4..=0xa7 | 0xaa..=0xaf | 0x6c..=0x6f => {
            return Err(unsupported("string instruction"));
        }
        _ => return Err(unsupported("opcode other than MOV/MOVZX")),
    };
    Ok(Instruction {
        len: cursor.pos,
        size,
        access,
    })
}
