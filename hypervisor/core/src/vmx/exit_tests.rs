//! Decoding of VMX exits onto the backend-neutral `VmExit`.

extern crate std;

use super::exits::*;
use crate::vmexit::{ForbiddenInstruction, InterruptedEvent, VmExit};
use std::string::ToString;

fn exit(reason: u16) -> ExitInfo {
    ExitInfo {
        reason: u32::from(reason),
        guest_rip: 0x1000,
        ..ExitInfo::default()
    }
}

#[test]
fn io_instructions_decode_port_size_direction_and_next_rip() {
    // out dx, al (1 byte) with al = 0x41 to 0x3f8.
    let info = ExitInfo {
        qualification: 0x03f8_0000,
        instruction_length: 1,
        rax: 0xdead_be41,
        ..exit(reason::IO_INSTRUCTION)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::IoOut {
            port: 0x3f8,
            size: 1,
            value: 0x41,
            next_rip: 0x1001
        }
    );
    // in ax, 0x71 (immediate operand, 2 bytes).
    let info = ExitInfo {
        qualification: 0x0071_0000 | 1 << 6 | 1 << 3 | 1,
        instruction_length: 2,
        ..exit(reason::IO_INSTRUCTION)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::IoIn {
            port: 0x71,
            size: 2,
            next_rip: 0x1002
        }
    );
    // out dx, eax.
    let info = ExitInfo {
        qualification: 0xcf8_0000 | 3,
        instruction_length: 1,
        rax: 0x1234_5678_8000_0000,
        ..exit(reason::IO_INSTRUCTION)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::IoOut {
            port: 0xcf8,
            size: 4,
            value: 0x8000_0000,
            next_rip: 0x1001
        }
    );
    // rep outsb.
    let info = ExitInfo {
        qualification: 0x03f8_0000 | 1 << 5 | 1 << 4,
        ..exit(reason::IO_INSTRUCTION)
    };
    assert_eq!(decode_exit(&info), VmExit::IoString { port: 0x3f8 });
    // A size encoding the SDM does not define is not guessed at.
    let info = ExitInfo {
        qualification: 2,
        ..exit(reason::IO_INSTRUCTION)
    };
    assert_eq!(decode_exit(&info), VmExit::Unknown { code: 30 });
}

#[test]
fn msr_cpuid_hypercall_and_halt() {
    let regs = |reason| ExitInfo {
        rax: 0xffff_ffff_8765_4321,
        rcx: 0x1_c000_0080,
        rdx: 0x1234,
        ..exit(reason)
    };
    assert_eq!(
        decode_exit(&regs(reason::RDMSR)),
        VmExit::MsrRead { msr: 0xc000_0080 }
    );
    assert_eq!(
        decode_exit(&regs(reason::WRMSR)),
        VmExit::MsrWrite {
            msr: 0xc000_0080,
            value: 0x1234_8765_4321
        }
    );
    assert_eq!(
        decode_exit(&regs(reason::CPUID)),
        VmExit::Cpuid {
            leaf: 0x8765_4321,
            subleaf: 0xc000_0080
        }
    );
    assert_eq!(decode_exit(&exit(reason::VMCALL)), VmExit::Hypercall);
    assert_eq!(decode_exit(&exit(reason::HLT)), VmExit::Halt);
}

#[test]
fn ept_violations_become_nested_page_faults() {
    let info = ExitInfo {
        qualification: 1 << 1 | 1 << 3 | 1 << 7,
        guest_physical_address: 0x1234_5678,
        ..exit(reason::EPT_VIOLATION)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::NestedPageFault {
            gpa: 0x1234_5678,
            write: true,
            execute: false,
            present: true
        }
    );
    let info = ExitInfo {
        qualification: 1 << 2,
        guest_physical_address: 0xfee0_0000,
        ..exit(reason::EPT_VIOLATION)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::NestedPageFault {
            gpa: 0xfee0_0000,
            write: false,
            execute: true,
            present: false
        }
    );
}

#[test]
fn exceptions_nmis_and_icebp() {
    let info = ExitInfo {
        interruption_info: 1 << 31 | 1 << 11 | 3 << 8 | 13,
        interruption_error_code: 0x18,
        ..exit(reason::EXCEPTION_OR_NMI)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::Exception {
            vector: 13,
            error_code: Some(0x18)
        }
    );
    let info = ExitInfo {
        interruption_info: 1 << 31 | 3 << 8 | 1,
        ..exit(0)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::Exception {
            vector: 1,
            error_code: None
        }
    );
    let info = ExitInfo {
        interruption_info: 1 << 31 | 2 << 8 | 2,
        ..exit(0)
    };
    assert_eq!(decode_exit(&info), VmExit::Nmi);
    let info = ExitInfo {
        interruption_info: 1 << 31 | 5 << 8 | 1,
        ..exit(0)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::Forbidden(ForbiddenInstruction::Icebp)
    );
    let info = ExitInfo {
        interruption_info: 3 << 8 | 13,
        ..exit(0)
    };
    assert_eq!(
        decode_exit(&info),
        VmExit::Unknown { code: 0 },
        "invalid interruption info"
    );
}

#[test]
fn vmx_instructions_getsec_and_other_forbidden_instructions_are_refused() {
    for basic in [
        reason::GETSEC,
        reason::VMCLEAR,
        reason::VMLAUNCH,
        reason::VMPTRLD,
        reason::VMPTRST,
        reason::VMREAD,
        reason::VMRESUME,
        reason::VMWRITE,
        reason::VMXOFF,
        reason::VMXON,
        reason::INVEPT,
        reason::INVVPID,
        reason::VMFUNC,
        reason::RDPMC,
        reason::RSM,
    ] {
        assert_eq!(
            decode_exit(&exit(basic)),
            VmExit::Forbidden(ForbiddenInstruction::Other),
            "{}",
            exit_reason_name(basic)
        );
    }
    for (basic, instruction) in [
        (reason::INVD, ForbiddenInstruction::Invd),
        (reason::MONITOR, ForbiddenInstruction::Monitor),
        (reason::MWAIT, ForbiddenInstruction::Mwait),
        (reason::TASK_SWITCH, ForbiddenInstruction::TaskSwitch),
    ] {
        assert_eq!(decode_exit(&exit(basic)), VmExit::Forbidden(instruction));
    }
}

#[test]
fn xsetbv_goes_to_the_exit_handler() {
    assert_eq!(decode_exit(&exit(reason::XSETBV)), VmExit::Xsetbv);
}

#[test]
fn asynchronous_events_entry_failures_and_the_rest() {
    assert_eq!(
        decode_exit(&exit(reason::EXTERNAL_INTERRUPT)),
        VmExit::ExternalInterrupt
    );
    assert_eq!(decode_exit(&exit(reason::TRIPLE_FAULT)), VmExit::Shutdown);
    assert_eq!(decode_exit(&exit(reason::INIT)), VmExit::Init);
    assert_eq!(decode_exit(&exit(reason::IO_SMI)), VmExit::Smi);
    assert_eq!(decode_exit(&exit(reason::OTHER_SMI)), VmExit::Smi);
    // Bit 31: the entry failed, whatever the basic reason.
    let failed = ExitInfo {
        reason: 1 << 31 | 33,
        ..ExitInfo::default()
    };
    assert_eq!(decode_exit(&failed), VmExit::InvalidState);
    let failed = ExitInfo {
        reason: 1 << 31 | 34,
        qualification: 2,
        ..ExitInfo::default()
    };
    assert_eq!(decode_exit(&failed), VmExit::InvalidState);
    assert_eq!(
        decode_exit(&exit(reason::EPT_MISCONFIGURATION)),
        VmExit::Unknown { code: 49 }
    );
    assert_eq!(
        decode_exit(&exit(reason::CR_ACCESS)),
        VmExit::Unknown { code: 28 }
    );
    assert_eq!(
        exit_reason_name(reason::EPT_MISCONFIGURATION),
        "EPT misconfiguration"
    );
    assert_eq!(exit_reason_name(999), "unknown exit reason");
    assert_eq!(entry_failure_qualification(4), "invalid VMCS link pointer");
}

#[test]
fn idt_vectoring_information_gives_the_interrupted_event() {
    assert_eq!(decode_idt_vectoring(0x20, 0), None, "not valid");
    assert_eq!(
        decode_idt_vectoring(1 << 31 | 0x30, 0),
        Some(InterruptedEvent::ExternalInterrupt { vector: 0x30 })
    );
    assert_eq!(
        decode_idt_vectoring(1 << 31 | 2 << 8 | 2, 0),
        Some(InterruptedEvent::Nmi)
    );
    assert_eq!(
        decode_idt_vectoring(1 << 31 | 1 << 11 | 3 << 8 | 14, 2),
        Some(InterruptedEvent::Exception {
            vector: 14,
            error_code: Some(2)
        })
    );
    assert_eq!(
        decode_idt_vectoring(1 << 31 | 3 << 8 | 6, 99),
        Some(InterruptedEvent::Exception {
            vector: 6,
            error_code: None
        })
    );
    assert_eq!(
        decode_idt_vectoring(1 << 31 | 4 << 8 | 0x80, 0),
        Some(InterruptedEvent::SoftwareInterrupt { vector: 0x80 })
    );
    assert_eq!(
        decode_idt_vectoring(1 << 31 | 6 << 8 | 3, 0),
        Some(InterruptedEvent::SoftwareException { vector: 3 })
    );
    assert_eq!(
        decode_idt_vectoring(1 << 31 | 1 << 8, 0),
        None,
        "reserved type"
    );
}

#[test]
fn control_register_accesses() {
    assert_eq!(
        decode_cr_access(0x0304),
        CrAccess::MovToCr { cr: 4, gpr: 3 }
    );
    assert_eq!(
        decode_cr_access(0x0f10),
        CrAccess::MovFromCr { cr: 0, gpr: 15 }
    );
    assert_eq!(decode_cr_access(0x0020), CrAccess::Clts);
    assert_eq!(
        decode_cr_access(0x0031_0070),
        CrAccess::Lmsw {
            source: 0x31,
            memory_operand: true
        }
    );
}

#[test]
fn vm_instruction_errors_have_the_sdm_names() {
    assert_eq!(
        VmInstructionError(7).to_string(),
        "VM-instruction error 7: VM entry with invalid control field(s)"
    );
    assert_eq!(
        VmInstructionError::INVALID_HOST_STATE_FIELDS.description(),
        "VM entry with invalid host-state field(s)"
    );
    assert_eq!(
        VmInstructionError(26).description(),
        "VM entry with events blocked by MOV SS"
    );
    assert_eq!(
        VmInstructionError(14).description(),
        "unknown VM-instruction error"
    );
}

proptest::proptest! {
    /// Exit information is partly guest-controlled (registers, qualification bits): decoding
    /// never panics, and only the documented reasons become hypercalls.
    #[test]
    fn decoding_takes_any_exit_information(
        reason in proptest::prelude::any::<u32>(),
        small_reason in 0u32..80,
        qualification in proptest::prelude::any::<u64>(),
        interruption_info in proptest::prelude::any::<u32>(),
        instruction_length in proptest::prelude::any::<u32>(),
        rip in proptest::prelude::any::<u64>(),
        rax in proptest::prelude::any::<u64>(),
    ) {
        for reason in [reason, small_reason] {
            let info = ExitInfo {
                reason,
                qualification,
                interruption_info,
                instruction_length,
                guest_rip: rip,
                rax,
                ..ExitInfo::default()
            };
            let decoded = decode_exit(&info);
            if decoded == VmExit::Hypercall {
                proptest::prop_assert_eq!(reason, u32::from(reason::VMCALL));
            }
            let _ = decode_idt_vectoring(interruption_info, 0);
            let _ = decode_cr_access(qualification);
        }
    }
}
