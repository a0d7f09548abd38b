//! SIMULATED Intel TXT (`launch=txt-simulated`): the fixed platform the simulation presents, and
//! its test-only fault injection. Defined once here for the hypervisor's simulated hardware seam
//! (`hypervisor/src/txt.rs`, `SimulatedTxt`) and the QEMU harness's simulated SINIT
//! (`xtask/src/txt/sinit.rs`), which must agree on every value.
//!
//! Nothing here is hardware: the chipset ID, processor signature, GETSEC answers and BiosData are
//! documented stand-ins that a synthetic SINIT ([`super::acm::write_synthetic_sinit`]) is built
//! for. A launch over them is measured as `txt-simulated` (PCR19), never as `txt`.

use crate::addr::PhysAddr;
use crate::memory::PhysMemory;

use super::acm::PlatformIds;
use super::heap::{HeapTables, SIZE_FIELD};
use super::layout::{BiosData, CAP_TCG2_EVENT_LOG, EXT_TYPE_END, OsMleData, OsSinitData};
use super::regs::DidVid;
use super::smx;

/// The platform the simulation presents (TXT.DIDVID, CPUID.1:EAX, IA32_PLATFORM_ID).
pub const SIMULATED_PLATFORM: PlatformIds = PlatformIds {
    didvid: DidVid {
        vendor_id: 0x8086,
        device_id: 0x5150,
        revision_id: 1,
        extended_id: 0,
    },
    fms: 0x0006_0fb1,
    platform_id: 0,
};

/// GETSEC[CAPABILITIES] of the simulated processor: every leaf Slipway uses.
pub const SIMULATED_GETSEC_CAPABILITIES: u32 = smx::CAP_CHIPSET_PRESENT
    | smx::CAP_ENTERACCS
    | smx::CAP_EXITAC
    | smx::CAP_SENTER
    | smx::CAP_SEXIT
    | smx::CAP_PARAMETERS
    | smx::CAP_SMCTRL
    | smx::CAP_WAKEUP;

/// GETSEC[PARAMETERS] of the simulated processor at `index`: maximum ACM size 64 KiB (the
/// simulated SINIT region), ACMs allowed in write-back memory, then the null entry.
pub fn simulated_getsec_parameters(index: u32) -> (u32, u32, u32) {
    match index {
        0 => (2 | 0x1_0000, 0, 0),
        1 => (3 | smx::ACM_MEMORY_TYPE_WB, 0, 0),
        _ => (0, 0, 0),
    }
}

/// The BiosData version the simulated BIOS writes.
pub const SIMULATED_BIOS_DATA_VERSION: u32 = 6;

/// Writes the heap as the simulated BIOS leaves it: BiosData (version 6, one processor, no
/// launch-control policy) with an END element; the rest zero. `None` if the heap is too small.
pub fn write_bios_heap(heap: &mut [u8]) -> Option<()> {
    let size = SIZE_FIELD + BiosData::SIZE + 8;
    let table = heap.get_mut(..size)?;
    table.fill(0);
    table[..8].copy_from_slice(&(size as u64).to_le_bytes());
    let mut bios = BiosData::ZERO;
    bios.version = SIMULATED_BIOS_DATA_VERSION;
    bios.num_logical_procs = 1;
    bios.write(&mut table[SIZE_FIELD..]).ok()?;
    let end = SIZE_FIELD + BiosData::SIZE;
    table[end..end + 4].copy_from_slice(&EXT_TYPE_END.to_le_bytes());
    table[end + 4..end + 8].copy_from_slice(&8u32.to_le_bytes());
    Some(())
}

/// One thing the test-only knob `txt_fault=<class>` corrupts after the pre-launch sequence, so
/// that the simulated SINIT refuses with that class (one QEMU test per refusal class), or the
/// hypervisor's post-launch check refuses the launch ([`SimulatedFault::PostLaunchHeap`]). The
/// hypervisor command line is measured, so a run that used it never passes for a normal one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulatedFault {
    /// OsSinitData's version is one the guide does not define.
    Heap,
    /// The SINIT copy's module type is not "chipset".
    Acm,
    /// The second MLE page-table entry maps the first page again (order rule).
    PageTables,
    /// OsSinitData.mle_hdr_base points past the MLE.
    MleHeader,
    /// The low PMR is empty (the MLE is not DMA-protected).
    Pmr,
    /// OsSinitData selects no TCG 2.0 event log.
    Capabilities,
    /// The event-log container's header is destroyed.
    EventLog,
    /// Not a SINIT refusal: OsMleData's hand-off pointer is changed, which SINIT never reads;
    /// the launch happens and the hypervisor's post-launch check of the re-read heap refuses it
    /// (the heap is never trusted).
    PostLaunchHeap,
}

impl SimulatedFault {
    /// The faults the simulated SINIT refuses, one per refusal class.
    pub const SINIT_REFUSALS: [SimulatedFault; 7] = [
        SimulatedFault::Heap,
        SimulatedFault::Acm,
        SimulatedFault::PageTables,
        SimulatedFault::MleHeader,
        SimulatedFault::Pmr,
        SimulatedFault::Capabilities,
        SimulatedFault::EventLog,
    ];

    /// The refusal class the simulated SINIT names for this fault.
    pub fn class(self) -> &'static str {
        match self {
            SimulatedFault::Heap => "heap",
            SimulatedFault::Acm => "acm",
            SimulatedFault::PageTables => "page-tables",
            SimulatedFault::MleHeader => "mle-header",
            SimulatedFault::Pmr => "pmr",
            SimulatedFault::Capabilities => "capabilities",
            SimulatedFault::EventLog => "event-log",
            SimulatedFault::PostLaunchHeap => "post-launch-heap",
        }
    }

    /// The fault named `class` (as [`SimulatedFault::class`] spells it).
    pub fn parse(class: &str) -> Option<SimulatedFault> {
        Self::SINIT_REFUSALS
            .into_iter()
            .chain([SimulatedFault::PostLaunchHeap])
            .find(|f| f.class() == class)
    }
}

/// What a fault may touch: the prepared launch's locations.
#[derive(Clone, Copy, Debug)]
pub struct FaultTargets {
    pub tables: HeapTables,
    pub sinit_base: u64,
    pub mle_ptab: u64,
    pub log_base: u64,
}

/// Why a fault could not be injected (the prepared state is not what the pre-launch stage left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultError(pub &'static str);

/// Applies `fault` to what the pre-launch sequence prepared (heap bytes and memory).
pub fn inject_fault(
    fault: SimulatedFault,
    heap: &mut [u8],
    mem: &mut impl PhysMemory,
    at: &FaultTargets,
) -> Result<(), FaultError> {
    let os_sinit_at = at.tables.os_sinit.offset + SIZE_FIELD;
    let mut edit_os_sinit = |f: &dyn Fn(&mut OsSinitData)| -> Result<(), FaultError> {
        let body = heap
            .get_mut(os_sinit_at..)
            .ok_or(FaultError("OsSinitData lies outside the heap"))?;
        let mut data =
            OsSinitData::read(body).map_err(|_| FaultError("OsSinitData is unreadable"))?;
        f(&mut data);
        data.write(body)
            .map_err(|_| FaultError("OsSinitData is unwritable"))
    };
    match fault {
        SimulatedFault::Heap => edit_os_sinit(&|d| d.version = 99),
        SimulatedFault::MleHeader => edit_os_sinit(&|d| d.mle_hdr_base = d.mle_size + 0x1000),
        SimulatedFault::Pmr => edit_os_sinit(&|d| {
            d.vtd_pmr_lo_base = 0;
            d.vtd_pmr_lo_size = 0;
        }),
        SimulatedFault::Capabilities => edit_os_sinit(&|d| d.capabilities &= !CAP_TCG2_EVENT_LOG),
        SimulatedFault::Acm => {
            // AcmHeader.module_type (offset 0): 0 is not "chipset" (2).
            mem.write(PhysAddr(at.sinit_base), &0u16.to_le_bytes())
                .map_err(|_| FaultError("the SINIT region is unwritable"))
        }
        SimulatedFault::PageTables => {
            // PDPTE 0 -> page directory; PDE 0 -> page table; PTE 1 := PTE 0.
            let pd = mem
                .read_u64(PhysAddr(at.mle_ptab))
                .map_err(|_| FaultError("the PDPT is unreadable"))?
                & super::mle_pt::ADDR_MASK;
            let pt = mem
                .read_u64(PhysAddr(pd))
                .map_err(|_| FaultError("the page directory is unreadable"))?
                & super::mle_pt::ADDR_MASK;
            let first = mem
                .read_u64(PhysAddr(pt))
                .map_err(|_| FaultError("the page table is unreadable"))?;
            mem.write_u64(PhysAddr(pt + 8), first)
                .map_err(|_| FaultError("the page table is unwritable"))
        }
        SimulatedFault::PostLaunchHeap => {
            let at = at.tables.os_mle.offset + SIZE_FIELD;
            let body = heap
                .get_mut(at..)
                .ok_or(FaultError("OsMleData lies outside the heap"))?;
            let mut data =
                OsMleData::read(body).map_err(|_| FaultError("OsMleData is unreadable"))?;
            data.handoff ^= 0x1000;
            data.write(body)
                .map_err(|_| FaultError("OsMleData is unwritable"))
        }
        SimulatedFault::EventLog => mem
            .zero(PhysAddr(at.log_base), 64)
            .map_err(|_| FaultError("the event-log container is unwritable")),
    }
}
