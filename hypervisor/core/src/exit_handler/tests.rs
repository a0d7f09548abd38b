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
    cr4: u64,
    xcr0: u64,
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
            Reg::Cr4 => self.cr4,
            Reg::Xcr0 => self.xcr0,
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
            Reg::Xcr0 => self.xcr0 = value,
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
    host: Host,
}

/// The extended state the fake host CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    /// XSAVE with x87, SSE, AVX and AVX-512 state (AVX at offset 576, 256 bytes).
    Avx,
    /// XSAVE with x87 and SSE state only.
    SseOnly,
    /// No XSAVE at all.
    NoXsave,
}

impl Host {
    fn cpuid(self, leaf: u32, subleaf: u32) -> [u32; 4] {
        const XSAVE_AVX: u32 = (1 << 26) | (1 << 28);
        let mut r = match (leaf, subleaf) {
            (0x1, _) => [0x00a2_0f12, 0x0008_0800, 0xffff_ffff, 0x178b_fbff],
            (0x7, _) => [u32::MAX, u32::MAX, u32::MAX, u32::MAX],
            (0xd, 0) => [0xe7, 2696, 2696, 0],
            (0xd, 1) => [0xf, 0, 0, 0],
            (0xd, 2) => [256, 576, 0, 0],
            (0xd, 5) => [64, 832, 0, 0],
            (0x8000_0001, _) => [0, 0, u32::MAX, 0],
            (0x8000_000a, _) => [1, 0x10, 0, 0xff],
            _ => [0x11, 0x22, 0x33, 0x44],
        };
        match (self, leaf) {
            (Host::SseOnly, 0x1) => r[2] &= !(1 << 28),
            (Host::SseOnly, 0xd) if subleaf == 0 => r[0] = 0b11,
            (Host::NoXsave, 0x1) => r[2] &= !XSAVE_AVX,
            _ => {}
        }
        r
    }
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
            host: Host::Avx,
        }
    }
    fn exit(&mut self, exit: VmExit) -> ExitAction {
        let printed = &mut self.printed;
        let cpu = self.host;
        let mut host = |leaf: u32, subleaf: u32| cpu.cpuid(leaf, subleaf);
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
    for bit in [3, 5, 21, 24] {
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

/// Leaf `leaf`.`subleaf` as the rig's vCPU sees it.
fn cpuid(rig: &mut Rig, leaf: u32, subleaf: u32) -> [u32; 4] {
    rig.exit(VmExit::Cpuid { leaf, subleaf });
    [rig.vcpu.rax, rig.vcpu.rbx, rig.vcpu.rcx, rig.vcpu.rdx].map(|r| r as u32)
}

#[test]
fn cpuid_offers_xsave_and_avx_and_osxsave_follows_the_guest_cr4() {
    let mut rig = Rig::new();
    rig.vcpu.xcr0 = crate::xsave::XCR0_RESET;
    let [_, _, ecx, _] = cpuid(&mut rig, 1, 0);
    assert_ne!(ecx & (1 << 26), 0, "XSAVE");
    assert_eq!(
        ecx & (1 << 27),
        0,
        "OSXSAVE: the guest's CR4.OSXSAVE is clear"
    );
    assert_ne!(ecx & (1 << 28), 0, "AVX");
    assert_ne!(ecx & ((1 << 12) | (1 << 29)), 0, "FMA, F16C with AVX");
    rig.vcpu.cr4 = CR4_OSXSAVE;
    let [_, _, ecx, _] = cpuid(&mut rig, 1, 0);
    assert_ne!(ecx & (1 << 27), 0, "OSXSAVE follows the guest's CR4");

    let [_, ebx, ecx, edx] = cpuid(&mut rig, 7, 0);
    assert_ne!(ebx & (1 << 5), 0, "AVX2 with AVX");
    for bit in [1, 14, 16, 17, 21, 26, 27, 28, 30, 31] {
        assert_eq!(ebx & (1 << bit), 0, "leaf 7 ebx bit {bit}");
    }
    for bit in [1, 3, 4, 6, 7, 11, 12, 14, 22] {
        assert_eq!(ecx & (1 << bit), 0, "leaf 7 ecx bit {bit}");
    }
    assert_ne!(ecx & (1 << 9), 0, "VAES with AVX");
    for bit in [2, 3, 8, 20, 22, 23, 24, 25] {
        assert_eq!(edx & (1 << bit), 0, "leaf 7 edx bit {bit}");
    }
    let [eax, ..] = cpuid(&mut rig, 7, 1);
    assert_eq!(eax & ((1 << 5) | (1 << 21)), 0, "AVX512_BF16, AMX-FP16");

    // Leaf 0xD: x87 | SSE | AVX, sized for the guest's current XCR0.
    assert_eq!(cpuid(&mut rig, 0xd, 0), [0b111, 576, 832, 0]);
    rig.vcpu.xcr0 = 0b111;
    assert_eq!(cpuid(&mut rig, 0xd, 0), [0b111, 832, 832, 0]);
    assert_eq!(cpuid(&mut rig, 0xd, 1), [0; 4], "no XSAVEOPT/XSAVEC/XSAVES");
    assert_eq!(cpuid(&mut rig, 0xd, 2), [256, 576, 0, 0]);
    assert_eq!(
        cpuid(&mut rig, 0xd, 5),
        [0; 4],
        "AVX-512 state not described"
    );
}

#[test]
fn cpuid_without_host_avx_offers_sse_state_only_and_hides_avx_instructions() {
    let mut rig = Rig::new();
    rig.host = Host::SseOnly;
    rig.vcpu.cr4 = CR4_OSXSAVE;
    let [_, _, ecx, _] = cpuid(&mut rig, 1, 0);
    assert_eq!(ecx & ((1 << 26) | (1 << 27)), (1 << 26) | (1 << 27));
    for bit in [12, 28, 29] {
        assert_eq!(ecx & (1 << bit), 0, "leaf 1 ecx bit {bit} without AVX");
    }
    let [_, ebx, ecx, _] = cpuid(&mut rig, 7, 0);
    assert_eq!(ebx & (1 << 5), 0, "AVX2");
    assert_eq!(ecx & ((1 << 9) | (1 << 10)), 0, "VAES, VPCLMULQDQ");
    let [eax, ..] = cpuid(&mut rig, 7, 1);
    assert_eq!(eax & ((1 << 4) | (1 << 23)), 0, "AVX-VNNI, AVX-IFMA");
    let [_, _, ecx, _] = cpuid(&mut rig, 0x8000_0001, 0);
    assert_eq!(ecx & ((1 << 11) | (1 << 16)), 0, "XOP, FMA4");
    assert_eq!(cpuid(&mut rig, 0xd, 0), [0b11, 576, 576, 0]);
    assert_eq!(cpuid(&mut rig, 0xd, 2), [0; 4]);
}

#[test]
fn cpuid_without_host_xsave_offers_none_of_it() {
    let mut rig = Rig::new();
    rig.host = Host::NoXsave;
    rig.vcpu.cr4 = CR4_OSXSAVE;
    let [_, _, ecx, _] = cpuid(&mut rig, 1, 0);
    assert_eq!(ecx & ((1 << 26) | (1 << 27) | (1 << 28)), 0);
    for subleaf in 0..4 {
        assert_eq!(cpuid(&mut rig, 0xd, subleaf), [0; 4]);
    }
}

/// Runs an XSETBV of edx:eax into XCR[ecx] and returns what was injected.
fn xsetbv(rig: &mut Rig, rcx: u64, rdx: u64, rax: u64) -> Vec<Event> {
    rig.vcpu.injected.clear();
    rig.vcpu.rip = 0x1000;
    (rig.vcpu.rcx, rig.vcpu.rdx, rig.vcpu.rax) = (rcx, rdx, rax);
    assert_eq!(rig.exit(VmExit::Xsetbv), ExitAction::Resume);
    core::mem::take(&mut rig.vcpu.injected)
}

#[test]
fn xsetbv_sets_the_vcpu_xcr0_and_moves_past_the_instruction() {
    let mut rig = Rig::new();
    rig.vcpu.cr4 = CR4_OSXSAVE;
    rig.vcpu.xcr0 = 1;
    assert_eq!(xsetbv(&mut rig, 0, 0, 0b111), []);
    assert_eq!((rig.vcpu.xcr0, rig.vcpu.rip), (0b111, 0x1003));
    // ECX and EAX are 32-bit operands: upper halves of rcx and rax do not count.
    assert_eq!(xsetbv(&mut rig, 1 << 32, 0, (0xdead << 32) | 0b011), []);
    assert_eq!((rig.vcpu.xcr0, rig.vcpu.rip), (0b011, 0x1003));
    // Real mode and 32-bit code run at CPL 0 too.
    assert_eq!(xsetbv(&mut rig, 0, 0, 0b001), []);
    assert_eq!(rig.vcpu.xcr0, 0b001);
}

#[test]
fn a_refused_xsetbv_faults_like_hardware_and_changes_nothing() {
    let mut rig = Rig::new();
    rig.vcpu.cr4 = CR4_OSXSAVE;
    rig.vcpu.xcr0 = 0b011;
    let gp = [Event::GENERAL_PROTECTION];
    for (rcx, rdx, rax, why) in [
        (0, 0, 0b000, "x87 cleared"),
        (0, 0, 0b101, "AVX without SSE"),
        (0, 0, 0b1110_0111, "AVX-512"),
        (0, 0, 0b111 | (1 << 9), "PKRU"),
        (0, 1, 0b111, "a bit above 31"),
        (1, 0, 0b011, "XCR1"),
        (0xffff_ffff, 0, 0b011, "no such XCR"),
    ] {
        assert_eq!(xsetbv(&mut rig, rcx, rdx, rax), gp, "{why}");
        assert_eq!((rig.vcpu.xcr0, rig.vcpu.rip), (0b011, 0x1000), "{why}");
    }
    rig.vcpu.cpl = 3;
    assert_eq!(xsetbv(&mut rig, 0, 0, 0b111), gp, "user space");
    assert_eq!(rig.vcpu.xcr0, 0b011);
    rig.vcpu.cpl = 0;
    rig.vcpu.cr4 = 0;
    assert_eq!(
        xsetbv(&mut rig, 0, 0, 0b111),
        [Event::INVALID_OPCODE],
        "CR4.OSXSAVE clear"
    );
    rig.vcpu.cr4 = CR4_OSXSAVE;
    rig.host = Host::NoXsave;
    assert_eq!(
        xsetbv(&mut rig, 0, 0, 0b011),
        [Event::INVALID_OPCODE],
        "no XSAVE"
    );
    rig.host = Host::SseOnly;
    assert_eq!(xsetbv(&mut rig, 0, 0, 0b111), gp, "AVX not offered");
    assert_eq!(rig.vcpu.xcr0, 0b011);
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
