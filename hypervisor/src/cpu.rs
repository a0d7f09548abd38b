//! Per-CPU descriptor tables and stacks: a GDT with a TSS whose interrupt stack table gives
//! double faults and NMIs their own stacks, so a stack overflow into a guard page is reported
//! instead of escalating to a triple fault.

use core::mem::MaybeUninit;
use core::ptr::addr_of;

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// Physical CPUs the hypervisor supports.
pub const MAX_CPUS: usize = 4;
/// Main stack of an application processor.
pub const AP_STACK_SIZE: usize = 128 * 1024;
/// Stack for double faults and NMIs.
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// IST slot (1-based in the IDT gate) for double faults and machine checks.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u16 = 2;

const PAGE: usize = 4096;

/// One CPU's stacks, each preceded by a guard page that the post-launch page tables leave
/// unmapped.
#[repr(C, align(4096))]
pub struct CpuStacks {
    guard_main: [u8; PAGE],
    main: [u8; AP_STACK_SIZE],
    guard_double_fault: [u8; PAGE],
    double_fault: [u8; IST_STACK_SIZE],
    guard_nmi: [u8; PAGE],
    nmi: [u8; IST_STACK_SIZE],
}

impl CpuStacks {
    const fn new() -> Self {
        Self {
            guard_main: [0; PAGE],
            main: [0; AP_STACK_SIZE],
            guard_double_fault: [0; PAGE],
            double_fault: [0; IST_STACK_SIZE],
            guard_nmi: [0; PAGE],
            nmi: [0; IST_STACK_SIZE],
        }
    }
}

#[unsafe(link_section = ".bss.cpu_stacks")]
static mut CPU_STACKS: [CpuStacks; MAX_CPUS] = [const { CpuStacks::new() }; MAX_CPUS];
// Zero-initialised (in .bss) and built by `init`: the pre-launch stage uses them too, and it must
// not write the initialised data the dynamic launch measures (docs/architecture.md).
static mut TSS: [MaybeUninit<TaskStateSegment>; MAX_CPUS] =
    [const { MaybeUninit::zeroed() }; MAX_CPUS];
static mut GDT: [MaybeUninit<GlobalDescriptorTable>; MAX_CPUS] =
    [const { MaybeUninit::zeroed() }; MAX_CPUS];

unsafe extern "C" {
    static BOOT_STACK_GUARD: u8;
    static BOOT_STACK_BOTTOM: u8;
    static BOOT_STACK_TOP: u8;
}

/// A stack's usable range `[bottom, top)`.
#[derive(Clone, Copy, Debug)]
pub struct StackRange {
    pub bottom: u64,
    pub top: u64,
}

impl StackRange {
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.bottom && addr.saturating_add(len) <= self.top
    }
}

fn stacks_of(cpu: usize) -> *const CpuStacks {
    // SAFETY: only the address is taken; `cpu` indexes within the array (checked by callers).
    unsafe { addr_of!(CPU_STACKS[cpu]) }
}

/// Addresses of every stack guard page (4 KiB each), for the page-table builder to leave out.
pub fn guard_pages() -> impl Iterator<Item = u64> {
    let boot_guard = addr_of!(BOOT_STACK_GUARD) as u64;
    core::iter::once(boot_guard).chain((0..MAX_CPUS).flat_map(|cpu| {
        let base = stacks_of(cpu) as u64;
        [
            base + core::mem::offset_of!(CpuStacks, guard_main) as u64,
            base + core::mem::offset_of!(CpuStacks, guard_double_fault) as u64,
            base + core::mem::offset_of!(CpuStacks, guard_nmi) as u64,
        ]
    }))
}

/// The main stack of `cpu` (the boot stack for CPU 0).
pub fn main_stack(cpu: usize) -> StackRange {
    if cpu == 0 {
        let (bottom, top) = (
            addr_of!(BOOT_STACK_BOTTOM) as u64,
            addr_of!(BOOT_STACK_TOP) as u64,
        );
        StackRange { bottom, top }
    } else {
        let base = stacks_of(cpu) as u64 + core::mem::offset_of!(CpuStacks, main) as u64;
        StackRange {
            bottom: base,
            top: base + AP_STACK_SIZE as u64,
        }
    }
}

/// Every stack `cpu` may run on (main, double fault, NMI): a backtrace only follows frame
/// pointers that stay inside one of them.
pub fn stacks(cpu: usize) -> [StackRange; 3] {
    let base = stacks_of(cpu) as u64;
    let df = base + core::mem::offset_of!(CpuStacks, double_fault) as u64;
    let nmi = base + core::mem::offset_of!(CpuStacks, nmi) as u64;
    [
        main_stack(cpu),
        StackRange {
            bottom: df,
            top: df + IST_STACK_SIZE as u64,
        },
        StackRange {
            bottom: nmi,
            top: nmi + IST_STACK_SIZE as u64,
        },
    ]
}

/// Loads this CPU's GDT and TSS and reloads the segment registers.
///
/// Rebuilding the tables from scratch makes a second call (the post-launch stage after the
/// pre-launch stage) load the same descriptors again, with a TSS descriptor that is not busy.
///
/// # Safety
/// Called by CPU `cpu` itself, with interrupts disabled, never concurrently for one `cpu`.
pub unsafe fn init(cpu: usize) {
    assert!(cpu < MAX_CPUS, "CPU index {cpu} beyond MAX_CPUS");
    let [_, df, nmi] = stacks(cpu);
    // SAFETY: each CPU only touches its own TSS and GDT slot, once, before using them; the
    // statics live for the whole run, as the loaded tables must.
    unsafe {
        let tss = (*core::ptr::addr_of_mut!(TSS[cpu])).write(TaskStateSegment::new());
        tss.interrupt_stack_table[(IST_DOUBLE_FAULT - 1) as usize] = VirtAddr::new(df.top);
        tss.interrupt_stack_table[(IST_NMI - 1) as usize] = VirtAddr::new(nmi.top);
        let gdt = (*core::ptr::addr_of_mut!(GDT[cpu])).write(GlobalDescriptorTable::empty());
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(
            (*core::ptr::addr_of!(TSS[cpu])).assume_init_ref(),
        ));
        gdt.load_unsafe();
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss_sel);
    }
}
