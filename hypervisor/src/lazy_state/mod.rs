//! Guest state the entry instructions (VMRUN, VMLAUNCH/VMRESUME) do not switch, kept by the
//! hypervisor on every backend: x87/SSE/AVX (an XSAVE area; FXSAVE without XSAVE) and DR0-DR3,
//! switched lazily, and XCR0, loaded around every entry. Which vCPU owns a pCPU's registers is
//! hv-core's bookkeeping (`hypervisor::Vcpus::switch_lazy_state`); this is the register access.

pub mod debug_regs;
pub mod fpu;

/// A vCPU's registers that no entry instruction switches.
pub struct LazyState {
    /// x87/SSE/AVX state (XSAVE area).
    pub fpu: fpu::FpuState,
    /// DR0-DR3.
    pub debug: debug_regs::DebugRegs,
    /// XCR0 as the guest set it (hv-core's `Reg::Xcr0`): only values the exit handler accepted
    /// and [`fpu::is_loadable_guest_xcr0`] confirms; in the hardware only around the entry
    /// instruction ([`fpu::with_guest_xcr0`]).
    pub xcr0: u64,
}

impl LazyState {
    /// The state of a freshly reset CPU.
    pub fn initial() -> Self {
        Self {
            fpu: fpu::FpuState::initial(),
            debug: debug_regs::DebugRegs::default(),
            xcr0: slipway_hv_core::xsave::XCR0_RESET,
        }
    }

    /// Stores a guest XCR0 the exit handler accepted, or one the guest set without an exit
    /// ([`fpu::with_guest_xcr0`]); false (nothing stored) for a value this machine may not load
    /// for a guest (the exit handler never passes one).
    pub fn set_xcr0(&mut self, value: u64) -> bool {
        let loadable = fpu::is_loadable_guest_xcr0(value);
        if loadable {
            self.xcr0 = value;
        }
        loadable
    }
}

/// Makes `incoming`'s registers live on this CPU, saving the live ones into `outgoing` first
/// (`None`: they belong to no live vCPU and are overwritten).
pub fn switch(outgoing: Option<&mut LazyState>, incoming: &LazyState) {
    match outgoing {
        Some(previous) => {
            fpu::switch(Some(&mut previous.fpu), &incoming.fpu);
            previous.debug = debug_regs::save();
        }
        None => fpu::switch(None, &incoming.fpu),
    }
    debug_regs::load(&incoming.debug);
}
