//! The emulated local APIC of one vCPU, as a guest sees it through the xAPIC MMIO page at
//! [`XAPIC_BASE`] (Intel SDM vol. 3A, chapter 11; AMD APM vol. 2, chapter 16).
//!
//! The model is pure state: the backend decodes an MMIO access to the page and calls
//! [`LocalApic::read`] / [`LocalApic::write`] with the page offset and the 32-bit value; a write
//! to the ICR may return an [`IpiRequest`] that the caller delivers to the other vCPUs' models
//! ([`LocalApic::accepts`], [`LocalApic::accept_interrupt`], [`LocalApic::receive_init`],
//! [`LocalApic::receive_startup`]). Before entering the guest the caller polls the timer
//! ([`LocalApic::poll_timer`]), asks for the interrupt to inject ([`LocalApic::pending_vector`])
//! and, when it injects it, acknowledges it ([`LocalApic::acknowledge`]); an idle vCPU sleeps until
//! [`LocalApic::next_timer_deadline`].
//!
//! Time is the TSC: every call that depends on time takes a [`TscClock`]. The timer counts at
//! `TSC / tsc_ticks_per_timer_tick` before the divider (TDCR), so a verifier who knows the
//! domain's configuration knows the APIC timer rate the guest calibrates against.
//!
//! Guest input is hostile: every offset and value is accepted without panicking. What is
//! deliberately not modelled, and how it reads:
//! - offsets that are not 16-byte aligned, beyond the page, or of reserved and unmodelled
//!   registers (APR, RRD, CMCI) read 0 and ignore writes; writes to read-only registers (ID,
//!   version, PPR, ISR, TMR, IRR, TMCCT) are ignored. The APIC ID is read-only (it is the
//!   vCPU's identity in the MADT).
//! - TSC-deadline mode is not offered (the CPUID bit stays clear): the timer mode field keeps only
//!   bit 17 (periodic), bit 18 reads 0.
//! - EOI-broadcast suppression is not offered (version bit 24 clear), so SVR bit 12 reads 0.
//! - Delivery-status bits read 0: every interrupt is accepted into the IRR at once.
//! - While the APIC is software-disabled (SVR bit 8 clear) it accepts no fixed interrupts and
//!   presents none; INIT, startup IPIs and NMIs (the caller's business) still arrive, and IPIs
//!   can still be sent (as on hardware, which is how INIT-SIPI-SIPI reaches a fresh AP).
//! - A TDCR write re-bases the running count: the current count is kept and counts down at the
//!   new rate from the write on (hardware leaves the exact effect unspecified).

/// Guest-physical address of the xAPIC MMIO page (the reset value of `IA32_APIC_BASE`).
pub const XAPIC_BASE: u64 = 0xFEE0_0000;
/// Size of the MMIO page.
pub const XAPIC_PAGE_SIZE: u64 = 0x1000;

/// Register offsets in the page.
pub mod reg {
    /// Local APIC ID (bits 24-31).
    pub const ID: u64 = 0x020;
    /// Version, max LVT entry.
    pub const VERSION: u64 = 0x030;
    /// Task priority.
    pub const TPR: u64 = 0x080;
    /// Arbitration priority (not modelled: reads 0).
    pub const APR: u64 = 0x090;
    /// Processor priority (read-only, computed).
    pub const PPR: u64 = 0x0A0;
    /// End of interrupt (write-only).
    pub const EOI: u64 = 0x0B0;
    /// Logical destination.
    pub const LDR: u64 = 0x0D0;
    /// Destination format.
    pub const DFR: u64 = 0x0E0;
    /// Spurious-interrupt vector (software enable).
    pub const SVR: u64 = 0x0F0;
    /// In-service register, eight 32-bit words 0x100-0x170.
    pub const ISR: u64 = 0x100;
    /// Trigger-mode register, 0x180-0x1F0.
    pub const TMR: u64 = 0x180;
    /// Interrupt-request register, 0x200-0x270.
    pub const IRR: u64 = 0x200;
    /// Error status.
    pub const ESR: u64 = 0x280;
    /// Interrupt command, low half (writing it sends the IPI).
    pub const ICR_LOW: u64 = 0x300;
    /// Interrupt command, high half (destination in bits 24-31).
    pub const ICR_HIGH: u64 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u64 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u64 = 0x330;
    /// LVT performance-monitoring counters.
    pub const LVT_PERF: u64 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u64 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u64 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u64 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u64 = 0x380;
    /// Timer current count (read-only).
    pub const TIMER_CURRENT: u64 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u64 = 0x3E0;
}

/// Version register: integrated APIC (0x14), max LVT entry 5 (timer, thermal, perf, LINT0,
/// LINT1, error), no EOI-broadcast suppression.
pub const VERSION_VALUE: u32 = 0x0005_0014;

/// SVR: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT: interrupt masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer: periodic mode (else one-shot).
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;

/// ESR: a fixed IPI with a vector below 16 was sent.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR: an interrupt with a vector below 16 was received.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// Writable bits per register.
const SVR_WRITABLE: u32 = 0x3FF; // vector, enable, focus-processor checking
const LVT_TIMER_WRITABLE: u32 = 0xFF | LVT_MASKED | LVT_TIMER_PERIODIC;
const LVT_DELIVERY_WRITABLE: u32 = 0x7FF | LVT_MASKED; // thermal, perf: vector, delivery mode
const LVT_LINT_WRITABLE: u32 = 0x7FF | (1 << 13) | (1 << 15) | LVT_MASKED; // + polarity, trigger
const LVT_ERROR_WRITABLE: u32 = 0xFF | LVT_MASKED;
const ICR_LOW_WRITABLE: u32 = 0x000C_CFFF; // vector, mode, dest mode, level, trigger, shorthand
const DFR_WRITABLE: u32 = 0xF000_0000;
const DFR_RESERVED_ONES: u32 = 0x0FFF_FFFF;
const TDCR_WRITABLE: u32 = 0b1011;

/// The TSC as seen by the vCPU: monotonic ticks.
pub trait TscClock {
    /// The current TSC value.
    fn now(&self) -> u64;
}

/// A clock that reads a fixed value (tests, and callers that already hold the time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixedClock(pub u64);

impl TscClock for FixedClock {
    fn now(&self) -> u64 {
        self.0
    }
}

/// 256 one-bit flags indexed by vector (ISR, TMR, IRR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorSet([u32; 8]);

impl VectorSet {
    /// Sets `vector`.
    pub fn set(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] |= 1 << (vector & 31);
    }
    /// Clears `vector`.
    pub fn clear(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] &= !(1 << (vector & 31));
    }
    /// Whether `vector` is set.
    pub fn contains(&self, vector: u8) -> bool {
        self.0[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
    }
    /// The highest vector set.
    pub fn highest(&self) -> Option<u8> {
        (0..8usize).rev().find_map(|word| {
            let bits = self.0[word];
            // `word` < 8 and the bit index < 32, so the vector fits a u8.
            (bits != 0).then(|| (word as u8) * 32 + (31 - bits.leading_zeros() as u8))
        })
    }
    /// The 32-bit word `index` (0-7) as the register page shows it.
    pub fn word(&self, index: usize) -> u32 {
        self.0.get(index).copied().unwrap_or(0)
    }
    /// Whether no vector is set.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 8]
    }
}

/// Where an IPI goes (ICR destination shorthand and mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiDestination {
    /// Physical mode, one APIC ID (0xFF: broadcast).
    Physical(u8),
    /// Logical mode, a destination matched against each APIC's LDR/DFR.
    Logical(u8),
    /// Every APIC, the sender included.
    AllIncludingSelf,
    /// Every APIC but the sender.
    AllExcludingSelf,
}

/// What an IPI asks the destination to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiKind {
    /// A fixed interrupt: accept `vector` into the IRR (edge-triggered).
    Fixed {
        /// The vector (16-255).
        vector: u8,
    },
    /// Lowest-priority delivery: the caller picks one destination (any matching one will do).
    LowestPriority {
        /// The vector (16-255).
        vector: u8,
    },
    /// A non-maskable interrupt.
    Nmi,
    /// INIT (level assert): the destination resets and waits for a startup IPI.
    Init,
    /// Startup IPI: a vCPU waiting for SIPI starts in real mode at `vector << 12`.
    Startup {
        /// The SIPI vector.
        vector: u8,
    },
}

/// An IPI a write to the ICR asks the caller to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpiRequest {
    /// Who receives it.
    pub destination: IpiDestination,
    /// What it does.
    pub kind: IpiKind,
}

/// Where a vCPU starts after a startup IPI: real mode, `CS:IP = (vector << 8):0000`, CS base
/// `vector << 12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealModeStart {
    /// The CS selector.
    pub cs_selector: u16,
    /// The CS base (the physical start address).
    pub cs_base: u32,
    /// IP (always 0).
    pub ip: u16,
}

impl RealModeStart {
    /// The start a SIPI with `vector` asks for.
    pub fn from_sipi_vector(vector: u8) -> Self {
        Self {
            cs_selector: u16::from(vector) << 8,
            cs_base: u32::from(vector) << 12,
            ip: 0,
        }
    }
}

/// Whether the vCPU of this APIC runs or waits for a startup IPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Running (the BSP from reset, an AP after its SIPI).
    Running,
    /// Reset by INIT, waiting for a startup IPI (an AP before it is started).
    WaitForSipi,
}

/// The local APIC of one vCPU.
#[derive(Clone, Debug)]
pub struct LocalApic {
    apic_id: u8,
    tsc_per_tick: u64,
    run_state: RunState,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    /// Errors collected since the last ESR write.
    esr_pending: u32,
    /// What the last ESR write latched (what reads return).
    esr_latched: u32,
    icr_low: u32,
    icr_high: u32,
    lvt_timer: u32,
    lvt_thermal: u32,
    lvt_perf: u32,
    lvt_lint0: u32,
    lvt_lint1: u32,
    lvt_error: u32,
    tdcr: u32,
    timer: Timer,
}

/// The running timer: `count_at_start` at TSC `start`, counting down one per `period` TSC ticks,
/// reloading `initial` in periodic mode.
#[derive(Clone, Copy, Debug, Default)]
struct Timer {
    initial: u32,
    count_at_start: u32,
    start: u64,
    /// TSC of the next expiry not yet delivered.
    next_fire: Option<u64>,
}

impl LocalApic {
    /// The APIC of a vCPU with `apic_id` in its power-up state (software-disabled, every LVT
    /// masked), whose timer counts once per `tsc_ticks_per_timer_tick` TSC ticks before the
    /// divider (0 is taken as 1). The BSP starts [`RunState::Running`]; an AP starts waiting for
    /// INIT-SIPI (`bsp = false`).
    pub fn new(apic_id: u8, tsc_ticks_per_timer_tick: u64, bsp: bool) -> Self {
        Self {
            apic_id,
            tsc_per_tick: tsc_ticks_per_timer_tick.max(1),
            run_state: if bsp {
                RunState::Running
            } else {
                RunState::WaitForSipi
            },
            tpr: 0,
            ldr: 0,
            dfr: 0xFFFF_FFFF,
            svr: 0xFF,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr_pending: 0,
            esr_latched: 0,
            icr_low: 0,
            icr_high: 0,
            lvt_timer: LVT_MASKED,
            lvt_thermal: LVT_MASKED,
            lvt_perf: LVT_MASKED,
            lvt_lint0: LVT_MASKED,
            lvt_lint1: LVT_MASKED,
            lvt_error: LVT_MASKED,
            tdcr: 0,
            timer: Timer::default(),
        }
    }

    /// The APIC ID.
    pub fn apic_id(&self) -> u8 {
        self.apic_id
    }

    /// Whether the vCPU runs or waits for a startup IPI.
    pub fn run_state(&self) -> RunState {
        self.run_state
    }

    /// Whether SVR's software-enable bit is set.
    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// The in-service, trigger-mode and request registers.
    pub fn isr(&self) -> &VectorSet {
        &self.isr
    }
    /// The trigger-mode register.
    pub fn tmr(&self) -> &VectorSet {
        &self.tmr
    }
    /// The interrupt-request register.
    pub fn irr(&self) -> &VectorSet {
        &self.irr
    }

    /// The processor priority: the TPR, or the class of the highest in-service vector if that
    /// is higher (SDM 11.8.3.1).
    pub fn ppr(&self) -> u32 {
        let tpr = self.tpr & 0xFF;
        let isrv = u32::from(self.isr.highest().unwrap_or(0));
        if (tpr >> 4) >= (isrv >> 4) {
            tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The 32-bit register at page `offset`, as a guest read sees it. Never panics.
    pub fn read(&mut self, offset: u64, clock: &impl TscClock) -> u32 {
        if !offset.is_multiple_of(16) || offset >= XAPIC_PAGE_SIZE {
            return 0;
        }
        let word = ((offset & 0x70) >> 4) as usize;
        match offset {
            reg::ID => u32::from(self.apic_id) << 24,
            reg::VERSION => VERSION_VALUE,
            reg::TPR => self.tpr,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 => self.isr.word(word),
            0x180..=0x1F0 => self.tmr.word(word),
            0x200..=0x270 => self.irr.word(word),
            reg::ESR => self.esr_latched,
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH => self.icr_high,
            reg::LVT_TIMER => self.lvt_timer,
            reg::LVT_THERMAL => self.lvt_thermal,
            reg::LVT_PERF => self.lvt_perf,
            reg::LVT_LINT0 => self.lvt_lint0,
            reg::LVT_LINT1 => self.lvt_lint1,
            reg::LVT_ERROR => self.lvt_error,
            reg::TIMER_INITIAL => self.timer.initial,
            reg::TIMER_CURRENT => self.current_count(clock.now()),
            reg::TIMER_DIVIDE => self.tdcr,
            // EOI is write-only; APR, RRD, CMCI and the reserved offsets are not modelled.
            _ => 0,
        }
    }

    /// A guest write of `value` to the register at page `offset`. A write to the ICR's low half
    /// may return an IPI for the caller to deliver (a fixed self-IPI is accepted here and returns
    /// nothing). Never panics.
    pub fn write(&mut self, offset: u64, value: u32, clock: &impl TscClock) -> Option<IpiRequest> {
        if !offset.is_multiple_of(16) || offset >= XAPIC_PAGE_SIZE {
            return None;
        }
        let now = clock.now();
        match offset {
            reg::TPR => self.tpr = value & 0xFF,
            reg::EOI => {
                self.end_of_interrupt();
            }
            reg::LDR => self.ldr = value & 0xFF00_0000,
            reg::DFR => self.dfr = (value & DFR_WRITABLE) | DFR_RESERVED_ONES,
            reg::SVR => {
                // An expiry already due is delivered under the old setting.
                self.poll_timer_at(now);
                self.svr = value & SVR_WRITABLE;
                if !self.software_enabled() {
                    // SDM 11.4.7.2: clearing the software-enable bit masks every LVT entry.
                    for lvt in self.lvts_mut() {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => {
                // A write latches the errors collected so far for reading and clears them.
                self.esr_latched = self.esr_pending;
                self.esr_pending = 0;
            }
            reg::ICR_HIGH => self.icr_high = value & 0xFF00_0000,
            reg::ICR_LOW => {
                self.icr_low = value & ICR_LOW_WRITABLE;
                return self.send_ipi();
            }
            reg::LVT_TIMER => {
                // Deliver an expiry that is due under the old mode before the mode changes.
                self.poll_timer_at(now);
                self.lvt_timer = self.lvt_value(value, LVT_TIMER_WRITABLE);
                self.timer.next_fire = self.next_expiry_after(now);
            }
            reg::LVT_THERMAL => self.lvt_thermal = self.lvt_value(value, LVT_DELIVERY_WRITABLE),
            reg::LVT_PERF => self.lvt_perf = self.lvt_value(value, LVT_DELIVERY_WRITABLE),
            reg::LVT_LINT0 => self.lvt_lint0 = self.lvt_value(value, LVT_LINT_WRITABLE),
            reg::LVT_LINT1 => self.lvt_lint1 = self.lvt_value(value, LVT_LINT_WRITABLE),
            reg::LVT_ERROR => self.lvt_error = self.lvt_value(value, LVT_ERROR_WRITABLE),
            reg::TIMER_INITIAL => {
                self.timer = Timer {
                    initial: value,
                    count_at_start: value,
                    start: now,
                    next_fire: None,
                };
                self.timer.next_fire = self.next_expiry_after(now);
            }
            reg::TIMER_DIVIDE => {
                self.poll_timer_at(now);
                let current = self.current_count(now);
                self.tdcr = value & TDCR_WRITABLE;
                if self.timer.initial != 0 {
                    self.timer.count_at_start = current;
                    self.timer.start = now;
                    self.timer.next_fire = self.next_expiry_after(now);
                }
            }
            // Read-only, write-only-by-hardware or unmodelled registers: ignored.
            _ => {}
        }
        None
    }

    fn lvts_mut(&mut self) -> [&mut u32; 6] {
        [
            &mut self.lvt_timer,
            &mut self.lvt_thermal,
            &mut self.lvt_perf,
            &mut self.lvt_lint0,
            &mut self.lvt_lint1,
            &mut self.lvt_error,
        ]
    }

    /// An LVT value as stored: only writable bits, and masked while software-disabled.
    fn lvt_value(&self, value: u32, writable: u32) -> u32 {
        let masked = if self.software_enabled() {
            0
        } else {
            LVT_MASKED
        };
        (value & writable) | masked
    }

    /// Records an error; the error LVT raises its vector if unmasked.
    fn error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let vector = (self.lvt_error & 0xFF) as u8;
        if self.lvt_error & LVT_MASKED == 0 && self.software_enabled() && vector >= 16 {
            self.irr.set(vector);
            self.tmr.clear(vector);
        }
    }

    fn send_ipi(&mut self) -> Option<IpiRequest> {
        let low = self.icr_low;
        let vector = (low & 0xFF) as u8;
        let delivery_mode = (low >> 8) & 0b111;
        let logical = low & (1 << 11) != 0;
        let level_assert = low & (1 << 14) != 0;
        let level_triggered = low & (1 << 15) != 0;
        let destination = match (low >> 18) & 0b11 {
            0 => {
                let dest = (self.icr_high >> 24) as u8;
                if logical {
                    IpiDestination::Logical(dest)
                } else {
                    IpiDestination::Physical(dest)
                }
            }
            1 => {
                // Self: only fixed interrupts are valid with this shorthand (SDM table 11-3).
                if delivery_mode == 0 {
                    if vector < 16 {
                        self.error(ESR_SEND_ILLEGAL_VECTOR);
                    } else {
                        self.accept_interrupt(vector, false);
                    }
                }
                return None;
            }
            2 => IpiDestination::AllIncludingSelf,
            _ => IpiDestination::AllExcludingSelf,
        };
        let kind = match delivery_mode {
            0 | 1 if vector < 16 => {
                self.error(ESR_SEND_ILLEGAL_VECTOR);
                return None;
            }
            0 => IpiKind::Fixed { vector },
            1 => IpiKind::LowestPriority { vector },
            4 => IpiKind::Nmi,
            // INIT level de-assert (level 0, level-triggered) does nothing on integrated APICs.
            5 if !level_assert && level_triggered => return None,
            5 => IpiKind::Init,
            6 => IpiKind::Startup { vector },
            // SMI (2) is not offered to guests; 3 and 7 are reserved.
            _ => return None,
        };
        Some(IpiRequest { destination, kind })
    }

    /// Whether this APIC is a destination of `destination` sent by the APIC `sender_id`
    /// (physical ID match or broadcast 0xFF, logical flat or cluster match against LDR/DFR,
    /// shorthands).
    pub fn accepts(&self, destination: IpiDestination, sender_id: u8) -> bool {
        match destination {
            IpiDestination::Physical(id) => id == 0xFF || id == self.apic_id,
            IpiDestination::Logical(dest) => {
                let ldr = (self.ldr >> 24) as u8;
                if self.dfr >> 28 == 0xF {
                    // Flat model: any common bit.
                    dest & ldr != 0
                } else {
                    // Cluster model: same cluster (or broadcast cluster 0xF), a common member bit.
                    let cluster_matches = dest >> 4 == 0xF || dest >> 4 == ldr >> 4;
                    cluster_matches && dest & ldr & 0x0F != 0
                }
            }
            IpiDestination::AllIncludingSelf => true,
            IpiDestination::AllExcludingSelf => sender_id != self.apic_id,
        }
    }

    /// A fixed interrupt arrives (from an IPI, the timer, an LVT): its vector enters the IRR
    /// (and the TMR if `level_triggered`). Vectors below 16 are refused with the receive
    /// illegal-vector error; a software-disabled APIC drops it. Returns whether it was accepted.
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) -> bool {
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        if !self.software_enabled() {
            return false;
        }
        self.irr.set(vector);
        if level_triggered {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
        true
    }

    /// The vector the vCPU should take next: the highest requested one whose priority class is
    /// above the processor priority's class. `None` while software-disabled.
    pub fn pending_vector(&self) -> Option<u8> {
        let vector = self.irr.highest()?;
        (self.software_enabled() && u32::from(vector >> 4) > (self.ppr() >> 4)).then_some(vector)
    }

    /// The caller injects [`Self::pending_vector`]: it moves from the IRR to the ISR. Returns the
    /// vector, or `None` if nothing is deliverable (nothing changes then).
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = self.pending_vector()?;
        self.irr.clear(vector);
        self.isr.set(vector);
        Some(vector)
    }

    /// EOI: the highest in-service vector leaves the ISR. Returns it (none if the ISR is empty).
    pub fn end_of_interrupt(&mut self) -> Option<u8> {
        let vector = self.isr.highest()?;
        self.isr.clear(vector);
        Some(vector)
    }

    /// INIT arrives: the APIC returns to its power-up state (its ID kept) and the vCPU waits for
    /// a startup IPI.
    pub fn receive_init(&mut self) {
        *self = Self::new(self.apic_id, self.tsc_per_tick, false);
    }

    /// A startup IPI arrives: a vCPU waiting for one starts running in real mode at
    /// `vector << 12`, which is returned; otherwise it is ignored (the second SIPI of the usual
    /// INIT-SIPI-SIPI sequence finds the vCPU running).
    pub fn receive_startup(&mut self, vector: u8) -> Option<RealModeStart> {
        (self.run_state == RunState::WaitForSipi).then(|| {
            self.run_state = RunState::Running;
            RealModeStart::from_sipi_vector(vector)
        })
    }

    /// TSC ticks per timer count under the current divider.
    fn ticks_per_count(&self) -> u128 {
        // TDCR bits 3,1,0 -> 0b000 = /2 ... 0b110 = /128, 0b111 = /1.
        let code = ((self.tdcr & 0b1000) >> 1) | (self.tdcr & 0b11);
        let shift = (code + 1) & 0b111;
        u128::from(self.tsc_per_tick) << shift
    }

    fn periodic(&self) -> bool {
        self.lvt_timer & LVT_TIMER_PERIODIC != 0
    }

    /// The timer's current count at TSC `now`.
    fn current_count(&self, now: u64) -> u32 {
        let t = &self.timer;
        if t.initial == 0 {
            return 0;
        }
        let counts = u128::from(now.saturating_sub(t.start)) / self.ticks_per_count();
        let first = u128::from(t.count_at_start);
        if counts < first {
            return (first - counts) as u32;
        }
        if !self.periodic() {
            return 0;
        }
        let since_reload = (counts - first) % u128::from(t.initial);
        // Fits: initial - since_reload is in 1..=initial.
        (u128::from(t.initial) - since_reload) as u32
    }

    /// The first expiry strictly after TSC `after`, if the timer runs.
    fn next_expiry_after(&self, after: u64) -> Option<u64> {
        let t = &self.timer;
        if t.initial == 0 {
            return None;
        }
        let per = self.ticks_per_count();
        let first = u128::from(t.start) + u128::from(t.count_at_start) * per;
        let after = u128::from(after);
        let at = if first > after {
            first
        } else if self.periodic() {
            let period = u128::from(t.initial) * per;
            first + ((after - first) / period + 1) * period
        } else {
            return None;
        };
        // An expiry past the end of the TSC's range never comes.
        u64::try_from(at).ok()
    }

    /// Delivers a timer expiry that is due by `clock`'s time: the timer vector enters the IRR unless
    /// the LVT is masked (the count runs on either way). Expiries missed between two polls
    /// coalesce into one interrupt, as the IRR holds one bit per vector. Returns whether an
    /// expiry was due.
    pub fn poll_timer(&mut self, clock: &impl TscClock) -> bool {
        self.poll_timer_at(clock.now())
    }

    fn poll_timer_at(&mut self, now: u64) -> bool {
        match self.timer.next_fire {
            Some(at) if at <= now => {
                self.timer.next_fire = self.next_expiry_after(now);
                let vector = (self.lvt_timer & 0xFF) as u8;
                if self.lvt_timer & LVT_MASKED == 0 {
                    self.accept_interrupt(vector, false);
                }
                true
            }
            _ => false,
        }
    }

    /// The TSC at which the timer next expires (whether or not its LVT is masked), for the
    /// scheduler to wake an idle vCPU; `None` if the timer is stopped or a one-shot count has
    /// run out.
    pub fn next_timer_deadline(&self) -> Option<u64> {
        self.timer.next_fire
    }
}

#[cfg(test)]
mod tests;
