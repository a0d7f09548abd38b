//! The harness's half of a SIMULATED GETSEC[SENTER] (`launch=txt-simulated`): what it does when
//! the hypervisor's simulated hardware seam asks on debugcon
//! (`SLIPWAY-TXT-SENTER <register page>`, `slipway_protocol::platform`), over guest memory.
//!
//! Playing CPU and SINIT, in order:
//! 1. read the simulated TXT registers (heap and SINIT region) and the heap from guest memory;
//! 2. run the simulated SINIT ([`super::sinit::simulate_senter`]): every rule of the MLE guide it
//!    applies, refusals naming the rule;
//! 3. the dynamic launch on the TPM: hash start/data/end over the ACM through swtpm's control
//!    channel (PCR17 = H(0^n || H(ACM)), PCR18-22 = 0: the locality-4 sequence);
//! 4. SINIT's results into guest memory: SinitMleData, the event-log pointer's new
//!    next_record_offset, SINIT's events in the container;
//! 5. the registers: TXT.STS.SENTER.DONE and the MLE entry point ([`SIMULATED_TXT_ENTRY`]) on
//!    success; on a refusal TXT.ERRORCODE (valid bit, the class's code) and no SENTER.DONE.
//!
//! SINIT's remaining extends (PCR17 details after the hash start, PCR18 authorities) are TPM
//! commands SINIT sends at locality 3/4; QEMU gives the harness no TPM command path and the
//! guest no locality 4, so the hypervisor's simulated seam sends them at locality 2 from the
//! events written here (documented in `docs/measurement.md`).

use slipway_hv_core::addr::PhysAddr;
use slipway_hv_core::memory::PhysMemory;
use slipway_hv_core::txt::heap::{self, SIZE_FIELD};
use slipway_hv_core::txt::layout::{ExtDataElementHeader, OsSinitData, SinitMdr};
use slipway_hv_core::txt::regs;
use slipway_measure::BankSet;
use slipway_protocol::platform::SIMULATED_TXT_ENTRY;

use super::sinit::{Refusal, SenterInputs, SenterOutcome, simulate_senter};

/// The simulated SINIT's TXT.ERRORCODE per refusal class (valid bit 31 set; bit 30 clear: SINIT
/// reported it, not software). Slipway's own values, not Intel's.
pub fn refusal_code(refusal: &Refusal) -> u64 {
    let class = match refusal.class() {
        "heap" => 0x10,
        "acm" => 0x11,
        "page-tables" => 0x12,
        "mle-header" => 0x13,
        "pmr" => 0x14,
        "capabilities" => 0x15,
        _ => 0x16, // event-log
    };
    regs::ERRORCODE_VALID | class
}

/// SINIT's memory descriptor records for a simulated machine with `ram` bytes of RAM at 0
/// (QEMU q35): good memory below the VGA hole and from 1 MiB to the end of RAM, and the PCIe
/// configuration space (q35's MMCONFIG at 0xB0000000, 256 MiB) as type 3.
pub fn simulated_mdrs(ram: u64) -> Vec<SinitMdr> {
    let mdr = |base: u64, length: u64, mem_type: u8| SinitMdr {
        base,
        length,
        mem_type,
        reserved: [0; 7],
    };
    vec![
        mdr(0, 0xA_0000, slipway_hv_core::txt::post::MDR_GOOD),
        mdr(
            0x10_0000,
            ram.saturating_sub(0x10_0000),
            slipway_hv_core::txt::post::MDR_GOOD,
        ),
        mdr(
            0xB000_0000,
            0x1000_0000,
            slipway_hv_core::txt::post::MDR_PCIE_CONFIG,
        ),
    ]
}

/// What the simulated SENTER did.
#[derive(Debug)]
pub enum SenterResult {
    /// SINIT ran: the guest resumes at `entry` with PCR17/18 as the outcome says.
    Launched(Box<SenterOutcome>),
    /// The simulated SINIT refused (TXT.ERRORCODE set): nothing was measured.
    Refused(Refusal),
    /// The harness could not do its part (guest memory, TPM): TXT.ERRORCODE set.
    Failed(String),
}

fn read_u64(mem: &impl PhysMemory, addr: u64) -> Result<u64, String> {
    let mut b = [0u8; 8];
    mem.read(PhysAddr(addr), &mut b)
        .map_err(|_| format!("cannot read guest memory at {addr:#x}"))?;
    Ok(u64::from_le_bytes(b))
}

fn write_u64(mem: &mut impl PhysMemory, addr: u64, value: u64) -> Result<(), String> {
    mem.write(PhysAddr(addr), &value.to_le_bytes())
        .map_err(|_| format!("cannot write guest memory at {addr:#x}"))
}

/// Serves one simulated SENTER. `launch_tpm` performs the dynamic launch over the ACM's bytes
/// (hash start, data, end).
pub fn serve(
    mem: &mut impl PhysMemory,
    regs_base: u64,
    banks: BankSet,
    mdrs: &[SinitMdr],
    launch_tpm: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> SenterResult {
    let reg = |offset: u32| regs_base + u64::from(offset);
    let result = (|| {
        let heap_base = read_u64(mem, reg(regs::HEAP_BASE))?;
        let heap_size = read_u64(mem, reg(regs::HEAP_SIZE))?;
        let sinit_base = read_u64(mem, reg(regs::SINIT_BASE))?;
        let sinit_size = read_u64(mem, reg(regs::SINIT_SIZE))?;
        if heap_size > 16 << 20 || sinit_size > 16 << 20 {
            return Err("TXT.HEAP.SIZE or TXT.SINIT.SIZE above 16 MiB".to_owned());
        }
        let mut heap = vec![0u8; heap_size as usize];
        mem.read(PhysAddr(heap_base), &mut heap)
            .map_err(|_| format!("cannot read the TXT heap at {heap_base:#x}"))?;
        let mut acm = vec![0u8; sinit_size as usize];
        mem.read(PhysAddr(sinit_base), &mut acm)
            .map_err(|_| format!("cannot read the SINIT region at {sinit_base:#x}"))?;
        let inputs = SenterInputs {
            heap_base,
            sinit_region: slipway_hv_core::addr::PhysRange::new(
                sinit_base,
                sinit_base + sinit_size,
            ),
            acm: &acm,
            banks,
            mdrs,
        };
        let out = match simulate_senter(mem, &heap, &inputs) {
            Ok(out) => out,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let acm_size = slipway_hv_core::txt::acm::parse_sinit(&acm)
            .map_err(|e| e.to_string())?
            .size as usize;
        launch_tpm(&acm[..acm_size])?;
        // SinitMleData, the pointer's next_record_offset, the container.
        let at = out.sinit_mle_offset;
        heap.get_mut(at..at + out.sinit_mle_table.len())
            .ok_or("SinitMleData does not fit the TXT heap")?
            .copy_from_slice(&out.sinit_mle_table);
        let tables = heap::locate_tables(&heap, 0).map_err(|e| e.to_string())?;
        let element =
            tables.os_sinit.offset + SIZE_FIELD + OsSinitData::SIZE + ExtDataElementHeader::SIZE;
        out.log
            .write(&mut heap[element..])
            .map_err(|_| "the event-log pointer element is short".to_owned())?;
        mem.write(PhysAddr(heap_base), &heap)
            .map_err(|_| "cannot write the TXT heap".to_owned())?;
        mem.write(PhysAddr(out.log.phys_addr), &out.log_container)
            .map_err(|_| "cannot write the event-log container".to_owned())?;
        Ok(Ok(out))
    })();
    let (sts, code, entry, result) = match result {
        Ok(Ok(out)) => (
            regs::STS_SENTER_DONE | regs::STS_PRIVATE_OPEN,
            0,
            out.entry,
            SenterResult::Launched(Box::new(out)),
        ),
        Ok(Err(refusal)) => (0, refusal_code(&refusal), 0, SenterResult::Refused(refusal)),
        Err(why) => (
            0,
            regs::ERRORCODE_VALID | 0x1f,
            0,
            SenterResult::Failed(why),
        ),
    };
    for (offset, value) in [
        (regs::ERRORCODE, code),
        (SIMULATED_TXT_ENTRY, entry),
        (regs::STS, sts),
    ] {
        if let Err(why) = write_u64(mem, reg(offset), value) {
            return SenterResult::Failed(why);
        }
    }
    result
}
