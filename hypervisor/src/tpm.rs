//! The TPM on the hardware side: TIS registers over uncached MMIO at 0xFED40000 and a TSC clock
//! for `slipway-tpm`'s driver, and the emulated dynamic launch (the QEMU + swtpm harness plays
//! the CPU; `docs/measurement.md` section 3a).

use slipway_measure::pcr::emulated_launch_pcr17;
use slipway_tpm::{BankSet, Clock, PcrMask, Tis, TisRegisters, Tpm};

use slipway_measure::events::HYPERVISOR_LOCALITY;
/// Debugcon port of the launch harness, and what it reads back when the harness is attached.
use slipway_protocol::platform::{
    DEBUGCON_PORT as DEBUGCON, LAUNCH_HARNESS_READBACK as HARNESS_READBACK,
};
use slipway_tpm::tis::TIS_BASE;
/// How long the pre-launch stage waits for the emulated launch.
const LAUNCH_DEADLINE_US: u64 = 10_000_000;

/// TIS registers by volatile MMIO (mapped uncached by the hypervisor; identity-mapped by the
/// early tables in the pre-launch stage).
pub struct MmioTis;

fn reg(locality: u8, offset: u16) -> u64 {
    TIS_BASE + u64::from(locality.min(4)) * 0x1000 + u64::from(offset & 0xfff)
}

impl TisRegisters for MmioTis {
    fn read8(&mut self, locality: u8, offset: u16) -> u8 {
        // SAFETY: the address lies in the TPM's 5-page MMIO window (locality clamped, offset
        // masked to the page), which the hypervisor maps uncached and no domain reaches.
        unsafe { (reg(locality, offset) as *const u8).read_volatile() }
    }
    fn read32(&mut self, locality: u8, offset: u16) -> u32 {
        // SAFETY: as in `read8`; TIS 32-bit registers are 4-byte aligned.
        unsafe { (reg(locality, offset & !3) as *const u32).read_volatile() }
    }
    fn write8(&mut self, locality: u8, offset: u16, value: u8) {
        // SAFETY: as in `read8`.
        unsafe { (reg(locality, offset) as *mut u8).write_volatile(value) }
    }
    fn write32(&mut self, locality: u8, offset: u16, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { (reg(locality, offset & !3) as *mut u32).write_volatile(value) }
    }
}

/// Microseconds from the calibrated TSC.
pub struct TscClock;

impl Clock for TscClock {
    fn now_micros(&mut self) -> u64 {
        crate::tsc::since_entry_us()
    }
    fn delay_micros(&mut self, micros: u32) {
        let end = crate::tsc::since_entry_us() + u64::from(micros);
        while crate::tsc::since_entry_us() < end {
            core::hint::spin_loop();
        }
    }
}

/// The hypervisor's TPM handle.
pub type HvTpm = Tpm<Tis<MmioTis, TscClock>>;

/// Opens the TPM at locality 2, or says why not.
pub fn open() -> Result<HvTpm, &'static str> {
    // TPM_DID_VID: nothing behind the window reads 0 (QEMU) or all ones (hardware); do not wait
    // out the driver's locality timeout for a device that is not there.
    let did_vid = MmioTis.read32(0, 0xf00);
    if did_vid == 0 || did_vid == u32::MAX {
        return Err("no TPM at 0xFED40000 (TPM_DID_VID reads 0 or all ones)");
    }
    // Firmware (SeaBIOS) may leave locality 0 active; a request at locality 2 then stays
    // pending. The hypervisor owns the TPM: release locality 0 first (TPM_ACCESS.activeLocality).
    if MmioTis.read8(0, 0) & 0x20 != 0 {
        MmioTis.write8(0, 0, 0x20);
    }
    open_tis().map_err(|error| {
        crate::hvprintln!("tpm: locality {HYPERVISOR_LOCALITY}: {error}");
        "the TPM does not grant locality 2"
    })
}

fn open_tis() -> Result<HvTpm, slipway_tpm::TisError> {
    let mut tis = Tis::new(MmioTis, TscClock, HYPERVISOR_LOCALITY)?;
    tis.probe()?;
    tis.request_locality()?;
    Ok(Tpm::new(tis))
}

/// Whether locality 0 is the TPM's active locality (TPM_ACCESS.activeLocality of locality 0):
/// a domain with the TPM capability is using it.
pub fn locality_zero_active() -> bool {
    MmioTis.read8(0, 0) & 0x20 != 0
}

/// Whether the launch harness is attached (debugcon reads back `L`).
pub fn harness_attached() -> bool {
    // SAFETY: reading port 0xe9 (debugcon, or nothing) has no side effect; the port is the
    // hypervisor's (never passed to a domain).
    let value = unsafe { x86_64::instructions::port::Port::<u8>::new(DEBUGCON).read() };
    value == HARNESS_READBACK
}

unsafe extern "C" {
    /// The MLE-style header (`boot.rs`): magic, version, size, region start, region end.
    static MLE_HEADER: [u8; 32];
}

/// Calls `f` with the measured region the MLE header declares (start address and bytes): code,
/// read-only data and the initialised data. The initialised data is written only once the
/// post-launch stage has checked the launch and logged its event; call this before that (every
/// caller runs before any initialised static is written, on the boot CPU alone).
pub fn with_measured_region<R>(f: impl FnOnce(u64, &[u8]) -> R) -> R {
    // SAFETY: the header is in .text's first page (read-only, loaded from the file).
    let header = unsafe { &*core::ptr::addr_of!(MLE_HEADER) };
    let field = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let (start, end) = (field(16), field(24));
    let image = crate::address_space::image_range();
    assert!(
        image.start.0 <= start && start <= end && end <= image.end.0,
        "the MLE header's region {start:#x}..{end:#x} is not inside the image"
    );
    // SAFETY: the range lies inside the loaded image (checked above); nothing writes it while
    // the slice lives (single CPU, before any initialised static is written; see above).
    let region = unsafe { core::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
    f(start, region)
}

/// Pre-launch: asks the harness for the emulated launch and waits until PCR17 shows it in the
/// polled bank (only equality counts: intermediate values are possible). Returns whether it saw
/// the launch; the post-launch stage checks every bank again and decides.
pub fn request_emulated_launch() -> bool {
    let mut tpm = match open() {
        Ok(tpm) => tpm,
        Err(error) => {
            crate::hvprintln!("emulated launch: no usable TPM at locality 2: {error}");
            return false;
        }
    };
    let banks = match tpm.active_banks() {
        Ok(banks) => banks,
        Err(error) => {
            crate::hvprintln!("emulated launch: cannot read the active PCR banks: {error}");
            return false;
        }
    };
    let (start, region_len, expected) = with_measured_region(|start, region| {
        (start, region.len(), emulated_launch_pcr17(&banks, region))
    });
    let Some(poll) = expected.iter().next().map(|d| d.alg()) else {
        crate::hvprintln!("emulated launch: no PCR bank this hypervisor can hash");
        return false;
    };
    crate::console::print_debugcon(format_args!(
        "{} {start:#x} {region_len:#x}\n",
        slipway_protocol::platform::LAUNCH_REQUEST_PREFIX
    ));
    let deadline = crate::tsc::since_entry_us() + LAUNCH_DEADLINE_US;
    let mut seen = false;
    while crate::tsc::since_entry_us() < deadline {
        if let Ok(values) = tpm.pcr_read(poll, PcrMask::range(17, 17))
            && values.get(17) == expected.get(poll)
        {
            seen = true;
            break;
        }
        TscClock.delay_micros(1000);
    }
    let _ = tpm.into_transport().relinquish_locality();
    seen
}

/// Post-launch: whether PCR17 holds H(0..0 || H(region)) and PCR18-22 are zero in every active
/// bank this hypervisor can hash, as a fresh dynamic launch leaves them (so nothing before the
/// launch extended the PCRs Slipway's log describes). Returns the active banks on success.
pub fn verify_emulated_launch(tpm: &mut HvTpm) -> Result<BankSet, &'static str> {
    let banks = tpm
        .active_banks()
        .map_err(|_| "cannot read the active PCR banks")?;
    let expected = with_measured_region(|_, region| emulated_launch_pcr17(&banks, region));
    for digest in expected.iter() {
        let alg = digest.alg();
        let values = tpm
            .pcr_read(alg, PcrMask::range(17, 22))
            .map_err(|_| "PCR_Read failed")?;
        if values.get(17) != Some(digest) {
            return Err("PCR17 does not hold this image's launch measurement");
        }
        for (pcr, why) in [
            (18, "PCR18 is not zero"),
            (
                19,
                "PCR19 is not zero after the launch (extended before the first measurement)",
            ),
            (
                20,
                "PCR20 is not zero after the launch (extended before the first measurement)",
            ),
            (
                21,
                "PCR21 is not zero after the launch (extended before the first measurement)",
            ),
            (
                22,
                "PCR22 is not zero after the launch (extended before the first measurement)",
            ),
        ] {
            if values
                .get(pcr)
                .is_none_or(|d| d.as_bytes().iter().any(|&b| b != 0))
            {
                return Err(why);
            }
        }
    }
    Ok(banks)
}
