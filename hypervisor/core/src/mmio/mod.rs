//! Emulation of a guest's memory-mapped I/O instruction (the local APIC page).
//!
//! The page of an emulated device is left out of the domain's second-level tables, so every
//! access to it exits as a nested page fault with the guest-physical address and the direction.
//! Without decode assists (QEMU TCG gives neither instruction bytes nor the next RIP), the
//! instruction is fetched from guest memory at CS:RIP through the guest's own page tables
//! ([`walk`]), decoded ([`decode`]: the moves compilers emit for MMIO) and performed against an
//! [`MmioDevice`]; the destination register is written with the processor's semantics and RIP
//! moves past the instruction. Anything that is not such a move is refused with an
//! [`MmioError`] naming the bytes: the caller stops the domain with that reason.
//!
//! The fetch races with the guest: another vCPU may rewrite the instruction or the page tables
//! between the fault and the fetch. The decoded instruction then differs from the one that
//! faulted, which the guest could have had by executing it; the direction check below catches
//! the cases where the difference matters to the device (a load performed as a store).

pub mod decode;
pub mod walk;

#[cfg(test)]
mod tests;

use crate::guest_memory::GuestPhysRead;
use crate::vmexit::{Reg, VcpuBackend};
use core::fmt;
use decode::{Access, CodeSize, DecodeError, RegOperand, Source};
use walk::{MAX_INSTRUCTION_LEN, PagingState, WalkError};

/// An emulated MMIO device. `size` is 1, 2, 4 or 8 bytes; which addresses and sizes the device
/// honours is its own business (the local APIC reads 0 and ignores writes it does not know).
pub trait MmioDevice {
    /// A read of `size` bytes at guest-physical `gpa` (the low `size` bytes of the result
    /// count).
    fn read(&mut self, gpa: u64, size: u8) -> u64;
    /// A write of the low `size` bytes of `value` at guest-physical `gpa`.
    fn write(&mut self, gpa: u64, size: u8, value: u64);
}

/// Why an MMIO access could not be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// the vCPU backend reported a code size other than 16, 32 or 64 bits
    UnknownCodeSize {
        /// What [`Reg::CodeBits`] read.
        bits: u64,
    },
    /// the instruction at rip could not be fetched from guest memory
    Fetch {
        /// The guest's rip.
        rip: u64,
        /// Why the walk or the read failed.
        error: WalkError,
    },
    /// the instruction at rip is not an MMIO move this hypervisor emulates
    UnsupportedInstruction {
        /// The guest's rip.
        rip: u64,
        /// The bytes fetched at rip (the first `len` are valid).
        bytes: [u8; MAX_INSTRUCTION_LEN],
        /// How many bytes were fetched.
        len: u8,
        /// What was refused.
        reason: &'static str,
    },
    /// the instruction at rip is longer than 15 bytes
    InstructionTooLong {
        /// The guest's rip.
        rip: u64,
    },
    /// the fault's direction (read or write) differs from what the instruction at rip does
    DirectionMismatch {
        /// The guest's rip.
        rip: u64,
        /// The faulting guest-physical address.
        gpa: u64,
        /// The fault was a write.
        fault_write: bool,
    },
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MmioError::UnknownCodeSize { bits } => write!(
                f,
                "the vCPU backend reported a code size of {bits} bits (16, 32 or 64 expected)"
            ),
            MmioError::Fetch { rip, error } => write!(
                f,
                "the MMIO instruction at rip {rip:#x} could not be fetched: {error}"
            ),
            MmioError::UnsupportedInstruction {
                rip,
                bytes,
                len,
                reason,
            } => {
                write!(f, "the instruction at rip {rip:#x} (")?;
                for (i, byte) in bytes[..usize::from(len).min(bytes.len())]
                    .iter()
                    .enumerate()
                {
                    write!(f, "{}{byte:02x}", if i == 0 { "" } else { " " })?;
                }
                write!(
                    f,
                    ") is not an MMIO move this hypervisor emulates: {reason}"
                )
            }
            MmioError::InstructionTooLong { rip } => {
                write!(f, "the instruction at rip {rip:#x} is longer than 15 bytes")
            }
            MmioError::DirectionMismatch {
                rip,
                gpa,
                fault_write,
            } => {
                let (fault, instruction) = if fault_write {
                    ("write", "reads")
                } else {
                    ("read", "writes")
                };
                write!(
                    f,
                    "the MMIO fault at {gpa:#x} was a {fault}, but the instruction at rip \
                     {rip:#x} {instruction} memory"
                )
            }
        }
    }
}

/// Emulates the instruction that faulted on the MMIO address `gpa` (`write`: the fault's
/// direction): fetch at CS:RIP, decode, perform the access on `device`, write the destination
/// register, advance RIP. On error nothing was performed and the vCPU is unchanged.
pub fn emulate_mmio<V, G>(
    vcpu: &mut V,
    mem: &G,
    gpa: u64,
    write: bool,
    device: &mut dyn MmioDevice,
) -> Result<(), MmioError>
where
    V: VcpuBackend + ?Sized,
    G: GuestPhysRead + ?Sized,
{
    let bits = vcpu.reg(Reg::CodeBits);
    let code = CodeSize::from_bits(bits).ok_or(MmioError::UnknownCodeSize { bits })?;
    let rip = vcpu.reg(Reg::Rip);
    let paging = PagingState {
        cr0: vcpu.reg(Reg::Cr0),
        cr3: vcpu.reg(Reg::Cr3),
        cr4: vcpu.reg(Reg::Cr4),
        efer: vcpu.reg(Reg::Efer),
    };
    // 64-bit code ignores the CS base; elsewhere linear addresses wrap at 4 GiB.
    let (linear, wrap_mask) = if code == CodeSize::Bits64 {
        (rip, u64::MAX)
    } else {
        (
            vcpu.reg(Reg::CsBase).wrapping_add(rip) & 0xffff_ffff,
            0xffff_ffff,
        )
    };
    let user = vcpu.reg(Reg::Cpl) == 3;
    let fetched = walk::fetch(mem, &paging, linear, wrap_mask, user);
    let instruction = match decode::decode(&fetched.bytes[..fetched.len], code) {
        Ok(instruction) => instruction,
        Err(DecodeError::Truncated) => {
            // Fewer than 15 bytes came only if a page on the way failed.
            let error = fetched
                .stopped
                .unwrap_or(WalkError::NotPresent { linear, level: 0 });
            return Err(MmioError::Fetch { rip, error });
        }
        Err(DecodeError::TooLong) => return Err(MmioError::InstructionTooLong { rip }),
        Err(DecodeError::Unsupported { reason }) => {
            return Err(MmioError::UnsupportedInstruction {
                rip,
                bytes: fetched.bytes,
                len: fetched.len as u8,
                reason,
            });
        }
    };
    if instruction.writes() != write {
        return Err(MmioError::DirectionMismatch {
            rip,
            gpa,
            fault_write: write,
        });
    }
    let size = instruction.size;
    match instruction.access {
        Access::Store(source) => {
            let value = match source {
                Source::Register(operand) => read_operand(vcpu, operand),
                Source::Immediate(value) => value,
            };
            device.write(gpa, size, value & mask(size));
        }
        Access::Load { dest, dest_size } => {
            // MOVZX: the access is narrower than the destination and the rest is zero.
            let value = device.read(gpa, size) & mask(size);
            let old = vcpu.reg(dest.reg);
            vcpu.set_reg(dest.reg, merge(old, value, dest, dest_size));
        }
    }
    vcpu.advance_rip(instruction.len as u64);
    Ok(())
}

/// The low `size` bytes.
fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

fn read_operand<V: VcpuBackend + ?Sized>(vcpu: &V, operand: RegOperand) -> u64 {
    let value = vcpu.reg(operand.reg);
    if operand.high_byte { value >> 8 } else { value }
}

/// The register after writing `value` into `dest` of `dest_size` bytes: a 32-bit destination
/// zero-extends to 64 bits, 8- and 16-bit destinations (AH-BH included) keep the other bits.
fn merge(old: u64, value: u64, dest: RegOperand, dest_size: u8) -> u64 {
    if dest.high_byte {
        return (old & !0xff00) | ((value & 0xff) << 8);
    }
    match dest_size {
        1 | 2 => (old & !mask(dest_size)) | (value & mask(dest_size)),
        4 => value & 0xffff_ffff,
        _ => value,
    }
}
