//! Platform contracts the hypervisor, the guests and `xtask` share: fixed I/O ports and MMIO
//! addresses, and the measured-region header the launch harness and `predict` read. Defined once
//! here so that no component can disagree with another about them.

/// The 16550 UART every console line goes through (COM1): the hypervisor's own port, and the
/// port of the UART model each domain sees.
pub const COM1_PORT: u16 = 0x3f8;

/// The ACPI power-management timer's I/O port (the FADT's `X_PM_TMR_BLK`): four ports holding a
/// 24-bit count at [`PM_TIMER_HZ`], the time reference a guest calibrates its TSC against.
pub const PM_TIMER_PORT: u16 = 0x608;
/// The ACPI PM timer's rate (ACPI 6.5, 4.8.3.3): 3.579545 MHz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// The ACPI sleep control register of a domain (the hardware-reduced FADT's
/// `SLEEP_CONTROL_REG`, one byte): writing SLP_EN (bit 5) with SLP_TYP (bits 4:2) =
/// [`ACPI_S5_SLEEP_TYPE`] powers the domain off, which the hypervisor takes as its shutdown
/// with exit code 0 (Linux `poweroff`).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x604;
/// The ACPI sleep status register (`SLEEP_STATUS_REG`, one byte; reads 0).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x605;
/// The sleep type of S5 (soft off), as the DSDT's `\_S5` package gives it.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;

/// Physical base of the TPM's TIS register window (locality 0's page).
pub const TPM_TIS_BASE: u64 = 0xFED4_0000;
/// Size of one locality's TIS register page.
pub const TPM_LOCALITY_PAGE_SIZE: u64 = 0x1000;
/// Localities 0-4: the TIS window is this many pages.
pub const TPM_LOCALITIES: u64 = 5;
/// Size of the whole TIS window (localities 0-4).
pub const TPM_TIS_WINDOW_SIZE: u64 = TPM_LOCALITIES * TPM_LOCALITY_PAGE_SIZE;

/// The launch-request channel (`docs/measurement.md`): QEMU's debugcon port, never passed to a
/// guest. The hypervisor writes `SLIPWAY-LAUNCH <start> <size>` lines to it.
pub const DEBUGCON_PORT: u16 = 0xe9;
/// What the hypervisor reads from [`DEBUGCON_PORT`] when the launch harness is attached.
pub const LAUNCH_HARNESS_READBACK: u8 = b'L';
/// The first word of a launch request line on [`DEBUGCON_PORT`]:
/// `SLIPWAY-LAUNCH <region start, hex> <region size, hex>`.
pub const LAUNCH_REQUEST_PREFIX: &str = "SLIPWAY-LAUNCH";

/// Magic of the hypervisor's MLE-style header (`docs/architecture.md`, "Measured region").
pub const MLE_HEADER_MAGIC: [u8; 8] = *b"SLWYMLE\0";
/// [`MLE_HEADER_MAGIC`] as the little-endian `u64` the header's first quad holds.
pub const MLE_HEADER_MAGIC_U64: u64 = u64::from_le_bytes(MLE_HEADER_MAGIC);
/// The header's size in bytes: magic, u32 version, u32 size, u64 region start, u64 region end.
pub const MLE_HEADER_SIZE: usize = 32;
/// The header's version.
pub const MLE_HEADER_VERSION: u32 = 1;
/// Offset of the region start (physical) in the header.
pub const MLE_HEADER_REGION_START: usize = 16;
/// Offset of the region end (physical, exclusive) in the header.
pub const MLE_HEADER_REGION_END: usize = 24;
/// The header lies in the first 32 KiB of the image (beside the multiboot2 header).
pub const MLE_HEADER_SEARCH_LIMIT: usize = 32 * 1024;

/// `launch=txt-simulated` (SIMULATED Intel TXT, `docs/measurement.md`): the simulated TXT
/// public register space, a page of guest RAM at this address holding the registers at their
/// TXT offsets (TXT.STS, TXT.ERRORCODE, TXT.HEAP.BASE/SIZE, TXT.SINIT.BASE/SIZE, TXT.DIDVID).
/// The hypervisor's simulated hardware seam fills it as BIOS and chipset would; the harness,
/// playing CPU and SINIT, answers in it. Never present on hardware.
pub const SIMULATED_TXT_REGS: u64 = 0x0010_0000;
/// The simulated TXT heap (BiosData written by the simulated seam) and its size.
pub const SIMULATED_TXT_HEAP: u64 = 0x0011_0000;
pub const SIMULATED_TXT_HEAP_SIZE: u64 = 0x3_0000;
/// The simulated SINIT region and its size.
pub const SIMULATED_TXT_SINIT: u64 = 0x0014_0000;
pub const SIMULATED_TXT_SINIT_SIZE: u64 = 0x1_0000;
/// Offset in the simulated register page where the harness leaves the MLE entry point (physical)
/// it resumes the hypervisor at: the simulation's stand-in for the CPU's jump, not a TXT register.
pub const SIMULATED_TXT_ENTRY: u32 = 0xF00;
/// The request line of a simulated GETSEC[SENTER] on [`DEBUGCON_PORT`]:
/// `SLIPWAY-TXT-SENTER <register page, hex>`.
pub const TXT_SENTER_REQUEST_PREFIX: &str = "SLIPWAY-TXT-SENTER";

// The simulated TXT areas: page aligned, in this order, below the hypervisor's 2 MiB.
const _: () = assert!(SIMULATED_TXT_REGS.is_multiple_of(0x1000));
const _: () = assert!(SIMULATED_TXT_REGS + 0x1000 <= SIMULATED_TXT_HEAP);
const _: () = assert!(SIMULATED_TXT_HEAP + SIMULATED_TXT_HEAP_SIZE == SIMULATED_TXT_SINIT);
const _: () = assert!(SIMULATED_TXT_SINIT + SIMULATED_TXT_SINIT_SIZE <= 0x20_0000);
const _: () = assert!(SIMULATED_TXT_ENTRY < 0x1000);

#[cfg(test)]
mod tests {
    use super::*;

    /// These values are fixed by hardware (COM1, the TIS window) or by deployed tooling (the
    /// launch channel, the measured-region header that verifiers parse): a change must be
    /// deliberate.
    #[test]
    fn platform_contracts_are_pinned() {
        assert_eq!(COM1_PORT, 0x3f8);
        assert_eq!(TPM_TIS_BASE, 0xFED4_0000);
        assert_eq!(TPM_TIS_WINDOW_SIZE, 0x5000);
        assert_eq!(DEBUGCON_PORT, 0xe9);
        assert_eq!(LAUNCH_HARNESS_READBACK, 0x4c);
        assert_eq!(LAUNCH_REQUEST_PREFIX, "SLIPWAY-LAUNCH");
        assert_eq!(MLE_HEADER_MAGIC_U64.to_le_bytes(), *b"SLWYMLE\0");
        assert_eq!((MLE_HEADER_REGION_START, MLE_HEADER_REGION_END), (16, 24));
        assert_eq!(MLE_HEADER_REGION_END + 8, MLE_HEADER_SIZE);
        assert_eq!(TXT_SENTER_REQUEST_PREFIX, "SLIPWAY-TXT-SENTER");
        assert_eq!(
            (SIMULATED_TXT_REGS, SIMULATED_TXT_HEAP, SIMULATED_TXT_SINIT),
            (0x10_0000, 0x11_0000, 0x14_0000)
        );
        assert_eq!(SIMULATED_TXT_ENTRY, 0xF00);
    }
}
