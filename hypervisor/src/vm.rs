//! The hardware glue under hv-core's arch-neutral `Hypervisor`: the vCPU cells of the SVM
//! backend (reached without the lock while a vCPU runs) and the host services (printing, the
//! domain console queues, CPUID, the measurement reports). Everything else a domain goes through
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
use crate::svm::{BoundVcpu, PermissionMaps, SvmCpu, SvmVcpu};

/// Default domB RAM (hv-core's, which `cargo xtask predict` uses too).
pub use slipway_hv_core::domain::BOOT_DOMAIN_DEFAULT_MEMORY as DOMB_DEFAULT_MEMORY;
pub use slipway_hv_core::hypervisor::{DomainHw, HostModule as BootModule, MAX_MODULES};

const _: () = assert!(
    crate::launch::MAX_CMDLINE <= slipway_hv_core::hypervisor::MAX_MODULE_CMDLINE,
    "a module's hand-off command line must fit the core's"
);

/// The hypervisor: hv-core's core over this machine.
pub type Hv = Hypervisor<'static, DirectMap, BitmapFrameAllocator<'static>, HwVcpus, HostServices>;

/// One vCPU's state. A vCPU running on one CPU is reached through a raw pointer without the
/// lock, so its cell is never covered by a `&mut` another CPU creates under the lock.
struct VcpuCell(UnsafeCell<Option<SvmVcpu>>);

// SAFETY: a cell is touched only by the CPU holding the big lock while the vCPU is not marked
// running (hv-core's `DomainHw::running`), or by the one CPU that marked it running (until
// `after_exit` clears the mark).
unsafe impl Sync for VcpuCell {}

static VCPUS: [VcpuCell; MAX_DOMAINS * MAX_VCPUS] =
    [const { VcpuCell(UnsafeCell::new(None)) }; MAX_DOMAINS * MAX_VCPUS];

/// The cell of the vCPU at `at`.
fn vcpu_cell(at: VcpuSlot) -> *mut Option<SvmVcpu> {
    assert!(
        at.slot < MAX_DOMAINS && at.index < MAX_VCPUS,
        "vCPU cell out of range"
    );
    VCPUS[at.slot * MAX_VCPUS + at.index].0.get()
}

/// The SVM backend's vCPUs.
pub struct HwVcpus {
    /// The I/O and MSR permission maps every vCPU shares (intercept everything).
    pub maps: PermissionMaps,
    /// SVM state of each physical CPU (enabled by that CPU).
    pub svm: [Option<SvmCpu>; crate::cpu::MAX_CPUS],
}

impl Vcpus for HwVcpus {
    fn create(&mut self, at: VcpuSlot, new: NewVcpu) -> Result<(), Error> {
        // SAFETY: the frame was allocated and zeroed for this vCPU alone when its domain was
        // created; it is identity-mapped RW.
        let vcpu = unsafe {
            SvmVcpu::new(
                new.context.frame.start().0,
                self.maps,
                new.table_root,
                new.context.tag,
                new.entry,
            )
        };
        // SAFETY: the lock is held and the vCPU does not exist yet, so no CPU runs it.
        unsafe { *vcpu_cell(at) = Some(vcpu) };
        Ok(())
    }

    fn destroy(&mut self, at: VcpuSlot) -> Option<VcpuContext> {
        // SAFETY: hv-core destroys a vCPU only under the lock and when it is not running.
        let vcpu = unsafe { (*vcpu_cell(at)).take() }?;
        Some(VcpuContext {
            tag: vcpu.asid(),
            frame: Frame::containing(PhysAddr(vcpu.vmcb_pa())),
        })
    }

    fn with<R>(
        &mut self,
        cpu: usize,
        at: VcpuSlot,
        f: impl FnOnce(&mut dyn VcpuBackend) -> R,
    ) -> Option<R> {
        let svm = self.svm.get(cpu)?.as_ref()?;
        // SAFETY: hv-core calls this under the lock for a vCPU it does not mark running: only
        // this CPU touches the cell.
        let vcpu = unsafe { (*vcpu_cell(at)).as_mut() }?;
        let mut bound = BoundVcpu { vcpu, cpu: svm };
        Some(f(&mut bound))
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
        crate::lazy_state::switch(previous.map(|v| &mut v.lazy), &incoming.lazy);
    }
}

/// Runs the vCPU that [`Hv::pick`] gave this CPU until its next exit.
///
/// # Safety
/// `v` was returned by `pick(cpu)` on this CPU and its exit has not been handed to `after_exit`
/// yet: it is marked running, so its cell stays alive and no other CPU touches it.
pub unsafe fn run_vcpu(svm: &SvmCpu, v: slipway_hv_core::sched::VcpuRef) -> VmExit {
    let at = VcpuSlot {
        slot: usize::from(v.domain.0),
        index: usize::from(v.vcpu),
    };
    // SAFETY: see the function's contract.
    let vcpu = unsafe { (*vcpu_cell(at)).as_mut() }.expect("a picked vCPU exists");
    vcpu.run(svm)
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
}
