//! The hardware glue under hv-core's arch-neutral `Hypervisor`: the vCPU cells of the backend
//! chosen at boot (AMD SVM or Intel VMX; reached without the lock while a vCPU runs) and the host
//! services (printing, the domain console queues, CPUID, the measurement reports). Everything else a domain goes through
//! (creation, domB, hand-off, scheduling, hypercalls, destruction) is
//! `slipway_hv_core::hypervisor`.

use core::cell::UnsafeCell;
use core::fmt;

use slipway_hv_core::addr::{Frame, PhysAddr, PhysRange};
use slipway_hv_core::console::Line;
use slipway_hv_core::domain::MAX_DOMAINS;
use slipway_hv_core::frame_alloc::BitmapFrameAllocator;
use slipway_hv_core::hypervisor::{
    Host, Hypervisor, MAX_VCPUS, NewVcpu, VcpuContext, VcpuSlot, Vcpus,
};
use slipway_hv_core::measurement::{Failure, Sealed};
use slipway_hv_core::vmexit::{VcpuBackend, VmExit};
use slipway_protocol::v1::Error;

use crate::physmem::DirectMap;
use crate::svm::{PermissionMaps, SvmCpu, SvmVcpu};
use crate::vmx::{VmxCpu, VmxShared, VmxVcpu};

/// Default domB RAM (hv-core's, which `cargo xtask predict` uses too).
pub use slipway_hv_core::domain::BOOT_DOMAIN_DEFAULT_MEMORY as DOMB_DEFAULT_MEMORY;
pub use slipway_hv_core::hypervisor::{DomainHw, HostModule as BootModule, MAX_MODULES};

const _: () = assert!(
    crate::launch::MAX_CMDLINE <= slipway_hv_core::hypervisor::MAX_MODULE_CMDLINE,
    "a module's hand-off command line must fit the core's"
);

/// The hypervisor: hv-core's core over this machine.
pub type Hv = Hypervisor<'static, DirectMap, BitmapFrameAllocator<'static>, HwVcpus, HostServices>;

/// A vCPU of either backend.
// Both variants carry the 1 KiB XSAVE area; the VMX one's extra register cache is a few hundred
// bytes more. A cell holds one or the other for the vCPU's life (no heap to box into).
#[allow(clippy::large_enum_variant)]
pub enum AnyVcpu {
    Svm(SvmVcpu),
    Vmx(VmxVcpu),
}

impl AnyVcpu {
    fn lazy(&mut self) -> &mut crate::lazy_state::LazyState {
        match self {
            AnyVcpu::Svm(v) => &mut v.lazy,
            AnyVcpu::Vmx(v) => &mut v.lazy,
        }
    }
}

/// One vCPU's state. A vCPU running on one CPU is reached through a raw pointer without the
/// lock, so its cell is never covered by a `&mut` another CPU creates under the lock.
struct VcpuCell(UnsafeCell<Option<AnyVcpu>>);

// SAFETY: a cell is touched only by the CPU holding the big lock while the vCPU is not marked
// running (hv-core's `DomainHw::running`), or by the one CPU that marked it running (until
// `after_exit` clears the mark).
unsafe impl Sync for VcpuCell {}

static VCPUS: [VcpuCell; MAX_DOMAINS * MAX_VCPUS] =
    [const { VcpuCell(UnsafeCell::new(None)) }; MAX_DOMAINS * MAX_VCPUS];

/// The cell of the vCPU at `at`.
fn vcpu_cell(at: VcpuSlot) -> *mut Option<AnyVcpu> {
    assert!(
        at.slot < MAX_DOMAINS && at.index < MAX_VCPUS,
        "vCPU cell out of range"
    );
    VCPUS[at.slot * MAX_VCPUS + at.index].0.get()
}

/// The backend chosen at boot, with its per-pCPU state.
pub enum Backend {
    /// AMD SVM with nested paging.
    Svm {
        /// The I/O and MSR permission maps every vCPU shares (intercept everything).
        maps: PermissionMaps,
        /// SVM state of each physical CPU (enabled by that CPU).
        cpus: [Option<SvmCpu>; crate::cpu::MAX_CPUS],
    },
    /// Intel VMX with EPT.
    Vmx {
        /// Controls, bitmaps and capabilities every vCPU shares.
        shared: VmxShared,
        /// VMX state of each physical CPU (VMXON done by that CPU).
        cpus: [Option<VmxCpu>; crate::cpu::MAX_CPUS],
    },
}

/// The backend's vCPUs.
pub struct HwVcpus {
    pub backend: Backend,
}

impl HwVcpus {
    /// Enables the backend on physical CPU `cpu` (run on that CPU).
    pub fn enable_on_this_cpu(
        &mut self,
        cpu: usize,
        alloc: &mut impl slipway_hv_core::frame_alloc::FrameAllocator,
    ) -> Result<(), &'static str> {
        match &mut self.backend {
            Backend::Svm { cpus, .. } => {
                let svm = SvmCpu::enable(alloc).map_err(|e| {
                    crate::hvprintln!("svm: cpu {cpu}: {e}");
                    "SVM could not be enabled"
                })?;
                cpus[cpu] = Some(svm);
            }
            Backend::Vmx { shared, cpus } => {
                let vmx = VmxCpu::enable(alloc, shared).map_err(|e| {
                    crate::hvprintln!("vmx: cpu {cpu}: {e}");
                    "VMX could not be enabled"
                })?;
                cpus[cpu] = Some(vmx);
            }
        }
        Ok(())
    }

    /// What a pCPU needs to run a vCPU outside the lock, if the backend is enabled there.
    pub fn runner(&self, cpu: usize) -> Option<Runner> {
        match &self.backend {
            Backend::Svm { cpus, .. } => cpus[cpu].map(Runner::Svm),
            Backend::Vmx { shared, cpus } => cpus[cpu].map(|_| Runner::Vmx(*shared)),
        }
    }
}

/// A copy of what running a vCPU needs, taken under the lock.
#[derive(Clone, Copy)]
pub enum Runner {
    Svm(SvmCpu),
    Vmx(VmxShared),
}

impl Vcpus for HwVcpus {
    fn create(&mut self, at: VcpuSlot, new: NewVcpu) -> Result<(), Error> {
        let frame = new.context.frame.start().0;
        let vcpu = match &self.backend {
            // SAFETY: the frame was allocated and zeroed for this vCPU alone when its domain
            // was created; it is identity-mapped RW.
            Backend::Svm { maps, .. } => AnyVcpu::Svm(unsafe {
                SvmVcpu::new(frame, *maps, new.table_root, new.context.tag, new.entry)
            }),
            // SAFETY: as above.
            Backend::Vmx { shared, .. } => AnyVcpu::Vmx(
                unsafe { VmxVcpu::new(frame, shared, new.table_root, new.context.tag, new.entry) }
                    .map_err(|e| {
                        crate::hvprintln!("vmx: vCPU refused: {e}");
                        Error::InvalidEntryState
                    })?,
            ),
        };
        // SAFETY: the lock is held and the vCPU does not exist yet, so no CPU runs it.
        unsafe { *vcpu_cell(at) = Some(vcpu) };
        Ok(())
    }

    fn destroy(&mut self, at: VcpuSlot) -> Option<VcpuContext> {
        // SAFETY: hv-core destroys a vCPU only under the lock and when it is not running.
        let vcpu = unsafe { (*vcpu_cell(at)).take() }?;
        let (tag, pa) = match &vcpu {
            AnyVcpu::Svm(v) => (v.asid(), v.vmcb_pa()),
            AnyVcpu::Vmx(v) => (v.vpid(), v.vmcs_pa()),
        };
        Some(VcpuContext {
            tag,
            frame: Frame::containing(PhysAddr(pa)),
        })
    }

    fn with<R>(
        &mut self,
        cpu: usize,
        at: VcpuSlot,
        f: impl FnOnce(&mut dyn VcpuBackend) -> R,
    ) -> Option<R> {
        // SAFETY: hv-core calls this under the lock for a vCPU it does not mark running: only
        // this CPU touches the cell.
        let vcpu = unsafe { (*vcpu_cell(at)).as_mut() }?;
        match (vcpu, &self.backend) {
            (AnyVcpu::Svm(vcpu), Backend::Svm { cpus, .. }) => {
                let cpu = cpus.get(cpu)?.as_ref()?;
                Some(f(&mut crate::svm::BoundVcpu { vcpu, cpu }))
            }
            (AnyVcpu::Vmx(vcpu), Backend::Vmx { shared, .. }) => {
                Some(f(&mut crate::vmx::BoundVcpu { vcpu, cpu, shared }))
            }
            _ => None,
        }
    }

    fn switch_lazy_state(&mut self, _cpu: usize, outgoing: Option<VcpuSlot>, incoming: VcpuSlot) {
        // SAFETY: under the lock; `incoming` was just marked running on this CPU by `pick` and
        // `outgoing` (checked by hv-core: not running, a different vCPU) is not running: this
        // CPU is the only one touching either cell.
        let Some(incoming) = (unsafe { (*vcpu_cell(incoming)).as_mut() }) else {
            return;
        };
        // SAFETY: as above.
        let previous = outgoing.and_then(|at| unsafe { (*vcpu_cell(at)).as_mut() });
        crate::lazy_state::switch(previous.map(AnyVcpu::lazy), incoming.lazy());
    }
}

/// Runs the vCPU that [`Hv::pick`] gave this CPU until its next exit.
///
/// # Safety
/// `v` was returned by `pick(cpu)` on this CPU and its exit has not been handed to `after_exit`
/// yet: it is marked running, so its cell stays alive and no other CPU touches it; `runner` is
/// this CPU's.
pub unsafe fn run_vcpu(cpu: usize, runner: &Runner, v: slipway_hv_core::sched::VcpuRef) -> VmExit {
    let at = VcpuSlot {
        slot: usize::from(v.domain.0),
        index: usize::from(v.vcpu),
    };
    // SAFETY: see the function's contract.
    let vcpu = unsafe { (*vcpu_cell(at)).as_mut() }.expect("a picked vCPU exists");
    match (vcpu, runner) {
        (AnyVcpu::Svm(vcpu), Runner::Svm(svm)) => vcpu.run(svm),
        (AnyVcpu::Vmx(vcpu), Runner::Vmx(shared)) => vcpu.run(cpu, shared),
        _ => panic!("a vCPU of the other backend"),
    }
}

/// The host services the core uses.
pub struct HostServices;

impl Host for HostServices {
    type Pcrs = crate::measurement::HvPcrs;

    fn log(&mut self, message: fmt::Arguments<'_>) {
        crate::hvprintln!("{message}");
    }

    fn milestone(&mut self, name: fmt::Arguments<'_>) {
        crate::tsc::milestone(name);
    }

    fn console_open(&mut self, slot: usize) {
        crate::domain_console::start(slot);
    }

    fn console_admit(&mut self, slot: usize, name: &str, bytes: usize) -> bool {
        crate::domain_console::admit(slot, name, bytes)
    }

    fn console_line(&mut self, slot: usize, name: &str, line: &Line) {
        crate::domain_console::push_line(slot, name, line);
    }

    fn console_close(&mut self, slot: usize, name: &str) {
        crate::domain_console::finish(slot, name);
    }

    fn host_cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn measurement_failed(&mut self, failure: Failure) {
        crate::measurement::report_failure(failure);
    }

    fn measurement_sealed(
        &mut self,
        m: &mut slipway_hv_core::measurement::Measurement<'_, Self::Pcrs>,
        sealed: Sealed,
    ) {
        crate::measurement::after_hand_off(m, sealed);
    }

    fn read_back_pcrs(
        &mut self,
        m: &mut slipway_hv_core::measurement::Measurement<'_, Self::Pcrs>,
    ) {
        crate::measurement::print_tpm_pcrs(m);
    }

    fn write_boot_record(
        &mut self,
        m: &mut slipway_hv_core::measurement::Measurement<'_, Self::Pcrs>,
        caller: slipway_protocol::v1::DomainId,
        record: &slipway_tpm::boot_record::BootRecord,
    ) -> Result<(), Error> {
        crate::boot_record::write(crate::measurement::tpm(m), caller, record)
    }
}

/// A boot module's bytes.
pub fn module_bytes(range: PhysRange) -> &'static [u8] {
    // SAFETY: module ranges were validated post-launch (inside RAM, disjoint from the image and
    // every other module), are mapped read-only in the hypervisor's tables and nothing writes them.
    unsafe { core::slice::from_raw_parts(range.start.0 as *const u8, range.len() as usize) }
}

/// Prints per-pCPU guest time per domain and the ticks both pCPUs ran guests.
pub fn print_accounting(hv: &Hv) {
    struct Out;
    impl fmt::Write for Out {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            crate::console::print_raw(format_args!("{s}"));
            Ok(())
        }
    }
    let _ = hv.write_accounting(&mut Out, crate::tsc::hz() / 1_000_000);
    crate::hvprintln!("exits handled: {}", hv.exits());
    let mut line: heapless::String<512> = heapless::String::new();
    for (kind, count) in hv.exit_counts.iter().filter(|&(_, count)| count > 0) {
        let _ = fmt::Write::write_fmt(&mut line, format_args!(" {kind}={count};"));
    }
    crate::hvprintln!("exits by reason:{}", line.trim_end_matches(';'));
}
