//! Writes a small demo event log (all four banks) to the path given as the first argument, for
//! looking at with `tpm2_eventlog`.
use slipway_measure::events::*;
use slipway_measure::hash::bound_module_digests;
use slipway_measure::{BankSet, LogHeader, LogWriter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: write_demo_log FILE")?;
    let banks = BankSet::all_supported();
    let mut buf = vec![0u8; 64 * 1024];
    let mut log = LogWriter::new(&mut buf, &LogHeader::slipway(banks))?;
    let mut data = [0u8; 64];
    let len = SlipwayEvent::LaunchKind(LaunchKind::Emulated).encode(&mut data)?;
    log.append_measured(PCR_BUILD_INPUTS, EV_SLIPWAY_LAUNCH_KIND, &data[..len])?;
    log.append_measured(
        PCR_BUILD_INPUTS,
        EV_SLIPWAY_HYPERVISOR_CMDLINE,
        b"console=com1",
    )?;
    let module = SlipwayEvent::BootModule(ModuleRecord {
        name: b"hello",
        size: 5,
    });
    let len = module.encode(&mut data)?;
    let digests = bound_module_digests(&banks, b"hello", b"image");
    log.append(
        PCR_BOOT_MODULES,
        EV_SLIPWAY_BOOT_MODULE,
        &digests,
        &data[..len],
    )?;
    for pcr in SEPARATOR_PCRS {
        log.append_measured(pcr, EV_SEPARATOR, &SEPARATOR_DATA)?;
    }
    std::fs::write(path, log.as_bytes())?;
    Ok(())
}
