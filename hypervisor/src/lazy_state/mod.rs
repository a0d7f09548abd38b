//! Guest state the entry instructions (VMRUN, VMLAUNCH/VMRESUME) do not switch, switched lazily
//! by the hypervisor on every backend: x87/SSE (FXSAVE area) and DR0-DR3. Which vCPU owns a pCPU's
//! registers is hv-core's bookkeeping (`hypervisor::Vcpus::switch_lazy_state`); this is the
//! register access.

pub mod debug_regs;
pub mod fpu;

/// A vCPU's lazily switched registers.
pub struct LazyState {
    /// x87/SSE state (FXSAVE image).
    pub fpu: fpu::FpuState,
    /// DR0-DR3.
    pub debug: debug_regs::DebugRegs,
}

impl LazyState {
    /// The state of a freshly reset CPU.
    pub fn initial() -> Self {
        Self {
            fpu: fpu::FpuState::initial(),
            debug: debug_regs::DebugRegs::default(),
        }
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
