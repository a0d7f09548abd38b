//! Exit-handler tests over a fake backend.

extern crate std;

use super::*;
use crate::vmexit::ForbiddenInstruction;
use std::vec::Vec;

#[derive(Default)]
struct FakeVcpu {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rip: u64,
    efer: u64,
    long_mode: bool,
    cpl: u64,
    interrupted: Option<InterruptedEvent>,
    injected: Vec<Event>,
}

impl VcpuBackend for FakeVcpu {
    fn run(&mut self) -> VmExit {
        VmExit::Halt
    }
    fn reg(&self, reg: Reg) -> u64 {
        match reg {
            Reg::Rax => self.rax,
            Reg::Rbx => self.rbx,
            Reg::Rcx => self.rcx,
            Reg::Rdx => self.rdx,
            Reg::Rsi => self.rsi,
            Reg::Rdi => self.rdi,
            Reg::Rip => self.rip,
            Reg::Efer => self.efer,
            Reg::LongMode => u64::from(self.long_mode),
            Reg::Cpl => self.cpl,
            // The exit handler never reads the rest (the MMIO emulator's tests have their own).
            _ => 0,
        }
    }
    fn set_reg(&mut self, reg: Reg, value: u64) {
        match reg {
            Reg::Rax => self.rax = value,
            Reg::Rbx => self.rbx = value,
            Reg::Rcx => self.rcx = value,
            Reg::Rdx => self.rdx = value,
            Reg::Rsi => self.rsi = value,
            Reg::Rdi => self.rdi = value,
            Reg::Rip => self.rip = value,
            Reg::Efer => self.efer = value,
            _ => {}
        }
    }
    fn inject(&mut self, event: Event) {
        self.injected.push(event);
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
        self.interrupted
    }
}

struct Rig {
    vcpu: FakeVcpu,
    uart: Uart16550,
    lapic: LocalApic,
    pm_timer: u32,
    printed: Vec<u8>,
}

impl Rig {
    fn new() -> Self {
        Rig {
            vcpu: FakeVcpu {
                rip: 0x1000,
                efer: EFER_SVME,
                ..Default::default()
            },
            uart: Uart16550::new(),
            lapic: LocalApic::new(0, 1, true),
            pm_timer: 0,
            printed: Vec::new(),
        }
    }
    fn exit(&mut self, exit: VmExit) -> ExitAction {
        let printed = &mut self.printed;
        let mut host = |leaf: u32, _sub: u32| match leaf {
            0x1 => [0x00a2_0f12, 0x0008_0800, 0xffff_ffff, 0x178b_fbff],
            0x7 => [0, u32::MAX, u32::MAX, u32::MAX],
            0x8000_0001 => [0, 0, u32::MAX, 0],
            0x8000_000a => [1, 0x10, 0, 0xff],
            _ => [0x11, 0x22, 0x33, 0x44],
        };
        let mut devices = Devices {
            uart: &mut self.uart,
            lapic: &mut self.lapic,
            pm_timer: self.pm_timer,
        };
        handle_exit(
            exit,
            &mut self.vcpu,
            &mut devices,
            &mut |b| printed.push(b),
            &mut host,
        )
    }
}

#[test]
fn uart_output_reaches_the_console_and_rip_moves_to_next_rip() {
    let mut rig = Rig::new();
    let action = rig.exit(VmExit::IoOut {
        port: 0x3f8,
        size: 1,
        value: u32::from(b'h'),
        next_rip: 0x1002,
    });
    assert_eq!(action, ExitAction::Resume);
    assert_eq!(rig.vcpu.rip, 0x1002);
    // A 16-bit out to 0x3f8 writes THR then IER.
    rig.exit(VmExit::IoOut {
        port: 0x3f8,
        size: 2,
        value: 0x0369,
        next_rip: 0x1004,
    });
    assert_eq!(rig.printed, b"hi");
    assert_eq!(rig.uart.io_read(1), 0x03);
}

#[test]
fn uart_reads_and_the_empty_bus() {
    let mut rig = Rig::new();
    rig.vcpu.rax = 0xdead_beef_cafe_f00d;
    rig.exit(VmExit::IoIn {
        port: 0x3fd,
        size: 1,
        next_rip: 0x1001,
    });
    assert_eq!(rig.vcpu.rax, 0xdead_beef_cafe_f060, "LSR merged into al");
    rig.exit(VmExit::IoIn {
        port: 0x60,
        size: 2,
        next_rip: 0x1001,
    });
    assert_eq!(rig.vcpu.rax, 0xdead_beef_cafe_ffff);
    rig.exit(VmExit::IoIn {
        port: 0x70,
        size: 4,
        next_rip: 0x1001,
    });
    assert_eq!(rig.vcpu.rax, 0xffff_ffff, "32-bit in zero-extends");
    // Writes to unassigned ports go nowhere (the debug-exit port included).
    assert_eq!(
        rig.exit(VmExit::IoOut {
            port: 0xf4,
            size: 1,
            value: 0x10,
            next_rip: 0x1003
        }),
        ExitAction::Resume
    );
    assert!(rig.printed.is_empty());
    assert_eq!(
        rig.exit(VmExit::IoString { port: 0x3f8 }),
        ExitAction::Stop(StopReason::ForbiddenAccess {
            what: 0x3f8,
            msr: false
        })
    );
    assert!(matches!(
        rig.exit(VmExit::IoIn {
            port: 0x3f8,
            size: 3,
            next_rip: 0
        }),
        ExitAction::Stop(StopReason::ForbiddenAccess {
            what: 0x3f8,
            msr: false
        })
    ));
}

#[test]
fn cpuid_hides_virtualization_and_names_the_hypervisor() {
    let mut rig = Rig::new();
    rig.vcpu.rax = 0x8000_0001;
    rig.exit(VmExit::Cpuid {
        leaf: 0x8000_0001,
        subleaf: 0,
    });
    assert_eq!(
        rig.vcpu.rcx as u32 & ((1 << 2) | (1 << 12)),
        0,
        "SVM and SKINIT hidden"
    );
    assert_eq!(
        rig.vcpu.rcx as u32 | (1 << 2) | (1 << 12) | (1 << 22),
        u32::MAX,
        "nothing else hidden but TOPOEXT"
    );
    assert_eq!(rig.vcpu.rip, 0x1002);
    rig.exit(VmExit::Cpuid {
        leaf: 0x8000_000a,
        subleaf: 0,
    });
    assert_eq!(
        [rig.vcpu.rax, rig.vcpu.rbx, rig.vcpu.rcx, rig.vcpu.rdx],
        [0; 4]
    );
    rig.exit(VmExit::Cpuid {
        leaf: 1,
        subleaf: 0,
    });
    let ecx = rig.vcpu.rcx as u32;
    assert_ne!(ecx & (1 << 31), 0, "hypervisor present");
    for bit in [3, 5, 21, 24, 26, 27, 28] {
        assert_eq!(ecx & (1 << bit), 0, "leaf 1 ecx bit {bit}");
    }
    let edx = rig.vcpu.rdx as u32;
    for bit in [7, 12, 14] {
        assert_eq!(edx & (1 << bit), 0, "leaf 1 edx bit {bit} (MCE, MTRR, MCA)");
    }
    assert_ne!(edx & (1 << 9), 0, "the local APIC is offered");
    assert_eq!(rig.vcpu.rbx >> 24, 0, "the vCPU's APIC ID, not the host's");
    rig.exit(VmExit::Cpuid {
        leaf: HYPERVISOR_LEAF,
        subleaf: 0,
    });
    let mut signature = Vec::new();
    for reg in [rig.vcpu.rbx, rig.vcpu.rcx, rig.vcpu.rdx] {
        signature.extend_from_slice(&(reg as u32).to_le_bytes());
    }
    assert_eq!(&signature, HYPERVISOR_SIGNATURE);
    rig.exit(VmExit::Cpuid {
        leaf: 0x4000_0003,
        subleaf: 0,
    });
    assert_eq!(
        [rig.vcpu.rax, rig.vcpu.rbx, rig.vcpu.rcx, rig.vcpu.rdx],
        [0; 4]
    );
    rig.exit(VmExit::Cpuid {
        leaf: 0x5,
        subleaf: 0,
    });
    assert_eq!(
        [rig.vcpu.rax, rig.vcpu.rbx, rig.vcpu.rcx, rig.vcpu.rdx],
        [0x11, 0x22, 0x33, 0x44]
    );
}

#[test]
fn efer_is_emulated_and_other_msrs_fault() {
    let mut rig = Rig::new();
    rig.exit(VmExit::MsrWrite {
        msr: MSR_EFER,
        value: EFER_LME | EFER_NXE,
    });
    assert_eq!(
        rig.vcpu.efer,
        EFER_LME | EFER_NXE | EFER_SVME,
        "SVME stays set"
    );
    assert_eq!(rig.vcpu.rip, 0x1002);
    rig.vcpu.efer |= EFER_LMA;
    rig.exit(VmExit::MsrRead { msr: MSR_EFER });
    assert_eq!(rig.vcpu.rax, EFER_LME | EFER_NXE | EFER_LMA, "SVME hidden");
    rig.exit(VmExit::MsrWrite {
        msr: MSR_EFER,
        value: EFER_SVME | EFER_LME,
    });
    assert_eq!(
        rig.vcpu.injected,
        [Event::GENERAL_PROTECTION],
        "the guest may not set SVME"
    );
    rig.exit(VmExit::MsrRead { msr: 0xc001_0114 }); // VM_CR
    rig.exit(VmExit::MsrWrite {
        msr: 0xc001_0117,
        value: 0x1000,
    }); // VM_HSAVE_PA
    assert_eq!(rig.vcpu.injected.len(), 3);
    assert_eq!(
        rig.vcpu.rip, 0x1004,
        "faulting MSR accesses do not advance rip"
    );
}

#[test]
fn faults_stop_the_domain_with_a_reason() {
    let mut rig = Rig::new();
    for (kind, name) in [
        (ForbiddenInstruction::Vmsave, "VMSAVE"),
        (ForbiddenInstruction::Clgi, "CLGI"),
        (ForbiddenInstruction::Skinit, "SKINIT"),
    ] {
        assert_eq!(
            rig.exit(VmExit::Forbidden(kind)),
            ExitAction::Stop(StopReason::ForbiddenInstruction(name))
        );
    }
    assert_eq!(
        rig.exit(VmExit::NestedPageFault {
            gpa: 0x1_0000_0000,
            write: true,
            execute: false,
            present: false
        }),
        ExitAction::Stop(StopReason::MemoryViolation {
            gpa: 0x1_0000_0000,
            write: true,
            execute: false
        })
    );
    assert_eq!(
        rig.exit(VmExit::Shutdown),
        ExitAction::Stop(StopReason::TripleFault)
    );
    assert_eq!(
        rig.exit(VmExit::InvalidState),
        ExitAction::Stop(StopReason::InvalidState)
    );
    assert_eq!(
        rig.exit(VmExit::Unknown { code: 0x99 }),
        ExitAction::Stop(StopReason::UnhandledExit { code: 0x99 })
    );
    assert_eq!(rig.exit(VmExit::ExternalInterrupt), ExitAction::Preempt);
    assert_eq!(rig.exit(VmExit::Halt), ExitAction::Halt);
    assert_eq!(rig.vcpu.rip, 0x1001);
    assert_eq!(rig.exit(VmExit::Hypercall), ExitAction::Hypercall);
    assert_eq!(rig.vcpu.rip, 0x1001, "the dispatcher's caller advances rip");
}

#[test]
fn hypercall_registers_are_checked_and_completed() {
    let mut rig = Rig::new();
    rig.vcpu.long_mode = true;
    rig.vcpu.rax = CALL_MESSAGE;
    rig.vcpu.rdi = 0x5000;
    rig.vcpu.rsi = 100;
    assert_eq!(hypercall_registers(&rig.vcpu, 0x10_0000), Ok((0x5000, 100)));
    assert_eq!(
        hypercall_registers(&rig.vcpu, 0x5800),
        Err(TransportStatus::BadBufferAddress)
    );
    rig.vcpu.rdi = 0x5008;
    assert_eq!(
        hypercall_registers(&rig.vcpu, 0x10_0000),
        Err(TransportStatus::BadBufferAlignment)
    );
    rig.vcpu.rdi = 0x5000;
    rig.vcpu.rsi = 4097;
    assert_eq!(
        hypercall_registers(&rig.vcpu, 0x10_0000),
        Err(TransportStatus::BadLength)
    );
    rig.vcpu.rax = 1;
    assert_eq!(
        hypercall_registers(&rig.vcpu, 0x10_0000),
        Err(TransportStatus::UnknownCall)
    );
    // 32-bit caller: upper halves are ignored.
    rig.vcpu.long_mode = false;
    rig.vcpu.rax = CALL_MESSAGE & 0xffff_ffff | 0xdead_0000_0000_0000;
    rig.vcpu.rdi = 0xffff_0000_0000_5000;
    rig.vcpu.rsi = 0x1_0000_0010;
    assert_eq!(
        hypercall_registers(&rig.vcpu, 0x10_0000),
        Ok((0x5000, 0x10))
    );
    finish_hypercall(&mut rig.vcpu, TransportStatus::Ok, 42);
    assert_eq!((rig.vcpu.rax, rig.vcpu.rsi, rig.vcpu.rip), (0, 42, 0x1003));
    finish_hypercall(&mut rig.vcpu, TransportStatus::BadLength, 42);
    assert_eq!(
        (rig.vcpu.rax, rig.vcpu.rsi),
        (TransportStatus::BadLength.code(), 0)
    );
}

#[test]
fn hypercalls_from_guest_user_space_raise_invalid_opcode_and_nothing_else() {
    for cpl in 1..=3 {
        let mut rig = Rig::new();
        rig.vcpu.long_mode = true;
        rig.vcpu.cpl = cpl;
        rig.vcpu.rax = CALL_MESSAGE;
        rig.vcpu.rdi = 0x5000;
        rig.vcpu.rsi = 16;
        assert_eq!(rig.exit(VmExit::Hypercall), ExitAction::Resume, "CPL {cpl}");
        assert_eq!(rig.vcpu.injected, [Event::INVALID_OPCODE], "CPL {cpl}");
        // #UD is a fault: rip stays on the instruction; the registers are untouched.
        assert_eq!(
            (rig.vcpu.rip, rig.vcpu.rax, rig.vcpu.rsi),
            (0x1000, CALL_MESSAGE, 16)
        );
    }
    let mut rig = Rig::new();
    assert_eq!(rig.exit(VmExit::Hypercall), ExitAction::Hypercall);
    assert!(rig.vcpu.injected.is_empty());
}

#[test]
fn debug_and_alignment_check_exceptions_are_intercepted_and_reflected() {
    assert_eq!(INTERCEPTED_EXCEPTIONS, (1 << 1) | (1 << 17) | (1 << 18));
    let mut rig = Rig::new();
    // #DB has no error code, whatever the backend reports.
    assert_eq!(
        rig.exit(VmExit::Exception {
            vector: 1,
            error_code: Some(0x1234)
        }),
        ExitAction::Reflected { vector: 1 }
    );
    assert_eq!(
        rig.exit(VmExit::Exception {
            vector: 17,
            error_code: Some(0)
        }),
        ExitAction::Reflected { vector: 17 }
    );
    assert_eq!(
        rig.vcpu.injected,
        [
            Event::Exception {
                vector: 1,
                error_code: None
            },
            Event::Exception {
                vector: 17,
                error_code: Some(0)
            }
        ]
    );
    assert_eq!(
        rig.vcpu.rip, 0x1000,
        "reflection leaves rip to the exception"
    );
    // #MC stays with the host.
    assert_eq!(
        rig.exit(VmExit::Exception {
            vector: 18,
            error_code: None
        }),
        ExitAction::Stop(StopReason::UnhandledExit { code: 0x52 })
    );
    assert_eq!(rig.vcpu.injected.len(), 2);
}

#[test]
fn an_event_interrupted_by_an_exit_is_injected_again() {
    let cases = [
        (
            InterruptedEvent::Exception {
                vector: 14,
                error_code: Some(2),
            },
            Some(Event::Exception {
                vector: 14,
                error_code: Some(2),
            }),
        ),
        (
            InterruptedEvent::Exception {
                vector: 6,
                error_code: Some(7),
            },
            Some(Event::INVALID_OPCODE),
        ),
        (InterruptedEvent::Nmi, Some(Event::Nmi)),
        (
            InterruptedEvent::ExternalInterrupt { vector: 0x30 },
            Some(Event::Interrupt { vector: 0x30 }),
        ),
        // Raised again by the instruction rip still points at.
        (InterruptedEvent::SoftwareInterrupt { vector: 0x80 }, None),
        (InterruptedEvent::SoftwareException { vector: 3 }, None),
    ];
    for (interrupted, expected) in cases {
        let mut rig = Rig::new();
        rig.vcpu.interrupted = Some(interrupted);
        // The exit that cut the delivery short (here: a physical interrupt) is handled as usual.
        assert_eq!(rig.exit(VmExit::ExternalInterrupt), ExitAction::Preempt);
        assert_eq!(
            rig.vcpu.injected,
            expected.into_iter().collect::<Vec<_>>(),
            "{interrupted:?}"
        );
    }
    // A reflected #DB raised while delivering an interrupt is queued after it (it wins the slot).
    let mut rig = Rig::new();
    rig.vcpu.interrupted = Some(InterruptedEvent::ExternalInterrupt { vector: 0x40 });
    rig.exit(VmExit::Exception {
        vector: 1,
        error_code: None,
    });
    assert_eq!(
        rig.vcpu.injected,
        [
            Event::Interrupt { vector: 0x40 },
            Event::Exception {
                vector: 1,
                error_code: None
            }
        ]
    );
}

#[test]
fn cpuid_reports_the_vcpus_own_apic_id_and_hides_host_topology() {
    let mut rig = Rig::new();
    rig.lapic = LocalApic::new(3, 1, false);
    rig.exit(VmExit::Cpuid {
        leaf: 1,
        subleaf: 0,
    });
    assert_eq!(rig.vcpu.rbx as u32 >> 24, 3);
    assert_eq!(rig.vcpu.rbx as u32 & 0x00ff_ffff, 0x0008_0800 & 0x00ff_ffff);
    for leaf in [0xb, 0x1f, 0x8000_001e] {
        rig.exit(VmExit::Cpuid { leaf, subleaf: 0 });
        assert_eq!(
            [rig.vcpu.rax, rig.vcpu.rbx, rig.vcpu.rcx, rig.vcpu.rdx],
            [0; 4],
            "{leaf:#x}"
        );
    }
}

#[test]
fn the_pm_timer_reads_its_count_low_byte_first_and_neighbours_read_all_ones() {
    let mut rig = Rig::new();
    rig.pm_timer = 0x00ab_cdef;
    rig.exit(VmExit::IoIn {
        port: PM_TIMER_PORT,
        size: 4,
        next_rip: 0x1001,
    });
    assert_eq!(rig.vcpu.rax, 0x00ab_cdef);
    assert_eq!(rig.vcpu.rip, 0x1001);
    rig.exit(VmExit::IoIn {
        port: PM_TIMER_PORT + 1,
        size: 1,
        next_rip: 0x1002,
    });
    assert_eq!(rig.vcpu.rax & 0xff, 0xcd);
    rig.exit(VmExit::IoIn {
        port: PM_TIMER_PORT + 2,
        size: 4,
        next_rip: 0x1003,
    });
    assert_eq!(
        rig.vcpu.rax, 0xffff_00ab,
        "ports past the timer read as an empty bus"
    );
}

#[test]
fn apic_base_reads_the_enabled_xapic_and_only_restating_it_is_allowed() {
    let mut rig = Rig::new();
    rig.exit(VmExit::MsrRead { msr: MSR_APIC_BASE });
    assert_eq!(rig.vcpu.rax, 0xfee0_0900, "base, enabled, BSP");
    assert_eq!(rig.vcpu.rdx, 0);
    assert_eq!(rig.vcpu.rip, 0x1002);
    rig.exit(VmExit::MsrWrite {
        msr: MSR_APIC_BASE,
        value: 0xfee0_0800,
    });
    assert_eq!(
        rig.vcpu.rip, 0x1004,
        "the BSP bit is read-only, the rest restated"
    );
    assert!(rig.vcpu.injected.is_empty());
    // Enabling x2APIC (bit 10), disabling, or moving the page: #GP, rip stays.
    for value in [0xfee0_0c00u64, 0xfee0_0100, 0xfed0_0900] {
        rig.exit(VmExit::MsrWrite {
            msr: MSR_APIC_BASE,
            value,
        });
        assert_eq!(rig.vcpu.rip, 0x1004);
        assert_eq!(rig.vcpu.injected.pop(), Some(Event::GENERAL_PROTECTION));
    }
    rig.lapic = LocalApic::new(1, 1, false);
    rig.exit(VmExit::MsrRead { msr: MSR_APIC_BASE });
    assert_eq!(rig.vcpu.rax, 0xfee0_0800, "an AP is no BSP");
}

#[test]
fn apic_page_faults_go_to_the_caller_and_other_faults_stop_the_domain() {
    let mut rig = Rig::new();
    let apic = |gpa, write| VmExit::NestedPageFault {
        gpa,
        write,
        execute: false,
        present: false,
    };
    assert_eq!(
        rig.exit(apic(0xfee0_00b0, true)),
        ExitAction::ApicAccess {
            gpa: 0xfee0_00b0,
            write: true
        }
    );
    assert_eq!(
        rig.exit(apic(0xfee0_0ff0, false)),
        ExitAction::ApicAccess {
            gpa: 0xfee0_0ff0,
            write: false
        }
    );
    // Executing from the APIC page, or a fault next to it, is a memory violation.
    assert!(matches!(
        rig.exit(VmExit::NestedPageFault {
            gpa: 0xfee0_0000,
            write: false,
            execute: true,
            present: false
        }),
        ExitAction::Stop(StopReason::MemoryViolation { .. })
    ));
    assert!(matches!(
        rig.exit(apic(0xfee0_1000, false)),
        ExitAction::Stop(StopReason::MemoryViolation { .. })
    ));
    assert_eq!(rig.exit(VmExit::InterruptWindow), ExitAction::Resume);
}

#[test]
fn acpi_soft_off_powers_the_domain_off_and_other_sleep_writes_are_ignored() {
    use slipway_protocol::platform::{ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT};
    let mut rig = Rig::new();
    let out = |value: u32| VmExit::IoOut {
        port: ACPI_SLEEP_CONTROL_PORT,
        size: 1,
        value,
        next_rip: 0x1001,
    };
    // SLP_TYP 5 without SLP_EN, and SLP_EN with another sleep type: nothing happens.
    assert_eq!(rig.exit(out(5 << 2)), ExitAction::Resume);
    assert_eq!(rig.exit(out((1 << 5) | (3 << 2))), ExitAction::Resume);
    assert_eq!(rig.exit(out((1 << 5) | (5 << 2))), ExitAction::PowerOff);
    rig.exit(VmExit::IoIn {
        port: ACPI_SLEEP_STATUS_PORT,
        size: 1,
        next_rip: 0x1002,
    });
    assert_eq!(rig.vcpu.rax & 0xff, 0, "no wake status");
}

#[test]
fn wbinvd_is_skipped_without_flushing() {
    let mut rig = Rig::new();
    assert_eq!(rig.exit(VmExit::Wbinvd { len: 2 }), ExitAction::Resume);
    assert_eq!(rig.vcpu.rip, 0x1002);
    assert_eq!(rig.exit(VmExit::Wbinvd { len: 3 }), ExitAction::Resume);
    assert_eq!(rig.vcpu.rip, 0x1005);
}
