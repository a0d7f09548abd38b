//! The ACPI tables a domain sees: RSDP (revision 2), XSDT, a hardware-reduced FADT, a DSDT, a
//! MADT with one local APIC per vCPU and, for the domain holding the TPM, a TPM2 table. Built
//! into a caller-given buffer (no allocation) as one blob the domain builder copies to the
//! blob's guest-physical address; the result says where the RSDP is (`hvm_start_info.rsdp_paddr`).
//!
//! The DSDT also names `\_S5` (soft off) and the FADT the sleep control and status registers
//! ([`ACPI_SLEEP_CONTROL_PORT`]), so a guest's ACPI power-off ends the domain.
//!
//! The platform these tables describe is the smallest a stock Linux boots on (docs: what a
//! domain sees): no PIC, IOAPIC, PIT, HPET, RTC, PCI or SCI, so the FADT is hardware-reduced
//! (flag bit 20) and names no fixed hardware but the PM timer (`PM_TMR_BLK`/`X_PM_TMR_BLK` at
//! [`PM_TIMER_PORT`], `crate::pm_timer`), the reference a guest calibrates its TSC against; the
//! DSDT declares
//! - `\_SB.COM1`: `PNP0501`, a 16550 at [`COM1_PORT`] with **no interrupt**, so Linux polls it
//!   (with IRQ 4 and no interrupt controller user-space output is lost);
//! - `\_SB.TPM`, only with [`TpmLog`]: `MSFT0101`, `Memory32Fixed` over the TIS window
//!   ([`TPM_TIS_BASE`], [`TPM_TIS_WINDOW_SIZE`]); Linux exposes the event log only for an ACPI
//!   TPM with a TPM2 table (revision 4, start method 6 = TIS, LAML/LASA = the log window).
//!
//! Every byte is a function of the [`AcpiConfig`] alone (fixed OEM fields, no dates, no host
//! state), so the blob is measured and predicted like any other input.
//!
//! Why not rust-vmm's `acpi_tables` (0.2.1), which the issue prefers: it is `no_std` but needs
//! `alloc` throughout: every AML node holds its children in a `Vec<&dyn Aml>`, names and
//! `create_pkg_length` return `Vec`s, the MADT keeps its structures in a `Vec<Box<dyn Aml>>` and
//! the XSDT its entries in a `Vec<u64>`.
//! hv-core and the hypervisor have no heap (no global allocator) by design, so it cannot be used
//! here; these builders write the few fixed layouts and the handful of AML terms the DSDT needs
//! straight into the caller's buffer. The reader side (`crate::acpi`) parses the result back in
//! the tests, and a host test disassembles the tables with ACPICA's `iasl -d`.

use slipway_protocol::platform::{
    ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, COM1_PORT, PM_TIMER_PORT,
    TPM_TIS_BASE, TPM_TIS_WINDOW_SIZE,
};

use crate::lapic::XAPIC_BASE;

/// OEM ID in every table header and the RSDP.
pub const OEM_ID: [u8; 6] = *b"SLIPWY";
/// OEM table ID in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"SLIPWAY ";
/// OEM revision in every table header.
pub const OEM_REVISION: u32 = 1;
/// Creator ID in every table header.
pub const CREATOR_ID: [u8; 4] = *b"SLPW";
/// Creator revision in every table header.
pub const CREATOR_REVISION: u32 = 1;

/// FADT flag: hardware-reduced ACPI (ACPI 6.5, table 5.10, bit 20).
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// FADT flags set: WBINVD works (bit 0), no fixed power (4) or sleep (5) button, hardware-reduced.
pub const FADT_FLAGS: u32 = 1 | (1 << 4) | (1 << 5) | FADT_HW_REDUCED_ACPI;
/// FADT IA-PC boot architecture flags: no VGA (bit 2), MSI not supported (3), no CMOS RTC (5);
/// bits 0 (legacy ISA devices) and 1 (8042) clear.
pub const FADT_IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 3) | (1 << 5);
/// TPM2 table: start method 6, memory-mapped TIS (TCG ACPI specification, table 8).
pub const TPM2_START_METHOD_TIS: u32 = 6;
/// TPM2 table revision with the log-area fields.
pub const TPM2_REVISION: u8 = 4;

/// Where each table lies in the blob and its length.
const HEADER_LEN: usize = 36;
const RSDP_LEN: usize = 36;
const FADT_LEN: usize = 276;
const MADT_LOCAL_APIC_LEN: usize = 8;

/// The TPM's event-log window a TPM2 table points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpmLog {
    /// Guest-physical address of the log (LASA).
    pub address: u64,
    /// Its length (LAML), non-zero.
    pub length: u32,
}

/// What a domain's tables describe.
#[derive(Clone, Copy, Debug)]
pub struct AcpiConfig<'a> {
    /// Guest-physical address where the caller places the blob (16-byte aligned: the RSDP is
    /// at its start).
    pub base: u64,
    /// The vCPUs' APIC IDs, in processor order (at least one, distinct, none 0xFF).
    pub apic_ids: &'a [u8],
    /// The TPM log window, for the domain holding the TPM: adds the `MSFT0101` device and the
    /// TPM2 table.
    pub tpm: Option<TpmLog>,
}

/// Where the tables were written: offsets in the blob (add [`AcpiConfig::base`] for addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiLayout {
    /// Guest-physical address of the RSDP (= the base).
    pub rsdp_address: u64,
    /// Bytes of the blob used.
    pub len: usize,
    /// Offset and length of the XSDT.
    pub xsdt: (usize, usize),
    /// Offset and length of the FADT.
    pub fadt: (usize, usize),
    /// Offset and length of the DSDT.
    pub dsdt: (usize, usize),
    /// Offset and length of the MADT.
    pub madt: (usize, usize),
    /// Offset and length of the TPM2 table, if any.
    pub tpm2: Option<(usize, usize)>,
}

/// Why the tables were not built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiBuildError {
    /// the caller's buffer is too small for the tables
    BufferTooSmall,
    /// the base address is not 16-byte aligned
    MisalignedBase,
    /// the blob would reach past the end of the 64-bit address space
    AddressOverflow,
    /// a domain needs at least one vCPU
    NoVcpus,
    /// APIC ID 0xFF is the broadcast destination and names no vCPU
    BroadcastApicId,
    /// two vCPUs share an APIC ID
    DuplicateApicId(u8),
    /// a TPM log window of length 0 or at address 0
    EmptyTpmLog,
}

impl core::fmt::Display for AcpiBuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("the buffer is too small for the ACPI tables"),
            Self::MisalignedBase => f.write_str("the ACPI tables' base is not 16-byte aligned"),
            Self::AddressOverflow => {
                f.write_str("the ACPI tables would reach past the end of the address space")
            }
            Self::NoVcpus => f.write_str("a domain needs at least one vCPU"),
            Self::BroadcastApicId => f.write_str("APIC ID 0xFF is the broadcast destination"),
            Self::DuplicateApicId(id) => write!(f, "two vCPUs have APIC ID {id}"),
            Self::EmptyTpmLog => f.write_str("the TPM log window is empty or at address 0"),
        }
    }
}

/// A cursor over the caller's buffer; every write is bounds-checked.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

type Result<T> = core::result::Result<T, AcpiBuildError>;

impl Out<'_> {
    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self.len.checked_add(bytes.len());
        let dst = end
            .and_then(|end| self.buf.get_mut(self.len..end))
            .ok_or(AcpiBuildError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<()> {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn zeros(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.u8(0)?;
        }
        Ok(())
    }
    fn align(&mut self, to: usize) -> Result<()> {
        while !self.len.is_multiple_of(to) {
            self.u8(0)?;
        }
        Ok(())
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        // `at` is inside what was written: the header's fixed fields.
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A table header with length and checksum left for [`Self::finish_table`].
    fn header(&mut self, signature: &[u8; 4], revision: u8) -> Result<usize> {
        let start = self.len;
        self.bytes(signature)?;
        self.u32(0)?; // length
        self.u8(revision)?;
        self.u8(0)?; // checksum
        self.bytes(&OEM_ID)?;
        self.bytes(&OEM_TABLE_ID)?;
        self.u32(OEM_REVISION)?;
        self.bytes(&CREATOR_ID)?;
        self.u32(CREATOR_REVISION).map(|()| start)
    }

    /// Sets the length and checksum of the table that starts at `start`; returns (offset, len).
    fn finish_table(&mut self, start: usize) -> (usize, usize) {
        let len = self.len - start;
        // Tables are far below 4 GiB (the buffer is a slice).
        self.put_u32(start + 4, len as u32);
        let table = &mut self.buf[start..self.len];
        table[9] = checksum(table);
        (start, len)
    }

    /// Opens an AML package: its body follows; [`Self::end_package`] inserts the PkgLength.
    fn begin_package(&self) -> usize {
        self.len
    }

    /// Inserts the PkgLength (ACPI 6.5, 20.2.4) before the body written since `start`, shifting
    /// the body up by the encoding's size.
    fn end_package(&mut self, start: usize) -> Result<()> {
        let body = self.len - start;
        let (encoded, n) = pkg_length(body).ok_or(AcpiBuildError::BufferTooSmall)?;
        self.zeros(n)?;
        self.buf.copy_within(start..start + body, start + n);
        self.buf[start..start + n].copy_from_slice(&encoded[..n]);
        Ok(())
    }
}

/// The byte that makes `bytes` (with this byte as 0) sum to zero, as a table's checksum field.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The PkgLength encoding for a package whose body is `body` bytes: the total counts the
/// encoding itself; one byte up to 63, else a lead byte (count of following bytes in bits 6-7,
/// low nibble in bits 0-3) and up to three more bytes. `None` past 2^28.
fn pkg_length(body: usize) -> Option<([u8; 4], usize)> {
    let mut out = [0u8; 4];
    if body < 63 {
        out[0] = (body + 1) as u8;
        return Some((out, 1));
    }
    for n in 2..=4usize {
        let total = body.checked_add(n)?;
        if total < 1 << (4 + 8 * (n - 1)) {
            out[0] = (((n - 1) as u8) << 6) | (total & 0x0F) as u8;
            for (i, byte) in out.iter_mut().enumerate().take(n).skip(1) {
                *byte = (total >> (4 + 8 * (i - 1))) as u8;
            }
            return Some((out, n));
        }
    }
    None
}

/// AML opcodes and prefixes used here (ACPI 6.5, chapter 20).
mod aml {
    pub const ZERO: u8 = 0x00;
    pub const NAME: u8 = 0x08;
    pub const BYTE_PREFIX: u8 = 0x0A;
    pub const DWORD_PREFIX: u8 = 0x0C;
    pub const STRING_PREFIX: u8 = 0x0D;
    pub const SCOPE: u8 = 0x10;
    pub const BUFFER: u8 = 0x11;
    pub const PACKAGE: u8 = 0x12;
    pub const EXT_PREFIX: u8 = 0x5B;
    pub const DEVICE: u8 = 0x82;
    /// Small resource: I/O port descriptor, 7 bytes of data.
    pub const IO_PORT: u8 = 0x47;
    /// Large resource: 32-bit fixed memory range.
    pub const MEMORY32_FIXED: u8 = 0x86;
    /// Small resource: end tag (checksum 0 = not checked).
    pub const END_TAG: [u8; 2] = [0x79, 0x00];
}

/// A compressed EISA ID (`EISAID("PNP0501")`): three upper-case letters of 5 bits, four hex
/// digits (other characters give meaningless bits, never a panic).
pub fn eisa_id(id: &[u8; 7]) -> u32 {
    let letter = |c: u8| u32::from(c.wrapping_sub(b'@') & 0x1F);
    let hex = |c: u8| match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        _ => u32::from(c.wrapping_sub(b'A').wrapping_add(10) & 0xF),
    };
    let vendor = (letter(id[0]) << 10) | (letter(id[1]) << 5) | letter(id[2]);
    let product = (hex(id[3]) << 12) | (hex(id[4]) << 8) | (hex(id[5]) << 4) | hex(id[6]);
    // Stored big-endian in the DWord: vendor bytes first, then product bytes.
    (vendor >> 8) | ((vendor & 0xFF) << 8) | ((product >> 8) << 16) | ((product & 0xFF) << 24)
}

/// `Name(seg, <integer as DWordConst>)`.
fn name_dword(out: &mut Out, seg: &[u8; 4], value: u32) -> Result<()> {
    out.u8(aml::NAME)?;
    out.bytes(seg)?;
    out.u8(aml::DWORD_PREFIX)?;
    out.u32(value)
}

/// `Name(seg, "text")`.
fn name_string(out: &mut Out, seg: &[u8; 4], text: &[u8]) -> Result<()> {
    out.u8(aml::NAME)?;
    out.bytes(seg)?;
    out.u8(aml::STRING_PREFIX)?;
    out.bytes(text)?;
    out.u8(0)
}

/// `Name(_CRS, ResourceTemplate() { <descriptors> })`: a Buffer whose size is a ByteConst.
fn name_crs(out: &mut Out, descriptors: &[u8]) -> Result<()> {
    out.u8(aml::NAME)?;
    out.bytes(b"_CRS")?;
    out.u8(aml::BUFFER)?;
    let package = out.begin_package();
    let size = descriptors.len() + aml::END_TAG.len();
    out.u8(aml::BYTE_PREFIX)?;
    out.u8(u8::try_from(size).map_err(|_| AcpiBuildError::BufferTooSmall)?)?;
    out.bytes(descriptors)?;
    out.bytes(&aml::END_TAG)?;
    out.end_package(package)
}

/// `Device(seg) { ... }` around what `body` writes.
fn device(out: &mut Out, seg: &[u8; 4], body: impl FnOnce(&mut Out) -> Result<()>) -> Result<()> {
    out.u8(aml::EXT_PREFIX)?;
    out.u8(aml::DEVICE)?;
    let package = out.begin_package();
    out.bytes(seg)?;
    body(out)?;
    out.end_package(package)
}

/// The DSDT's AML: `Name(\_S5, Package() { 5, 5 })`, then
/// `Scope(\_SB) { Device(COM1) {...} [Device(TPM_) {...}] }`.
fn dsdt_body(out: &mut Out, tpm: bool) -> Result<()> {
    // Soft-off: the sleep type written to the sleep control register (SLP_TYPa, SLP_TYPb).
    out.u8(aml::NAME)?;
    out.bytes(b"_S5_")?;
    out.u8(aml::PACKAGE)?;
    let package = out.begin_package();
    out.u8(2)?; // NumElements
    for _ in 0..2 {
        out.u8(aml::BYTE_PREFIX)?;
        out.u8(ACPI_S5_SLEEP_TYPE)?;
    }
    out.end_package(package)?;
    out.u8(aml::SCOPE)?;
    let scope = out.begin_package();
    // `_SB_` without the root prefix: the DSDT's names resolve from the root, and this is
    // the encoding iasl itself emits for `Scope (\_SB)`.
    out.bytes(b"_SB_")?;
    device(out, b"COM1", |out| {
        name_dword(out, b"_HID", eisa_id(b"PNP0501"))?;
        out.u8(aml::NAME)?;
        out.bytes(b"_UID")?;
        out.u8(aml::ZERO)?;
        // IO(Decode16, COM1, COM1, 0, 8), and no IRQ descriptor.
        let [lo, hi] = COM1_PORT.to_le_bytes();
        name_crs(out, &[aml::IO_PORT, 0x01, lo, hi, lo, hi, 0x00, 0x08])
    })?;
    if tpm {
        device(out, b"TPM_", |out| {
            name_string(out, b"_HID", b"MSFT0101")?;
            // Memory32Fixed(ReadWrite, TIS base, window size).
            let mut descriptor = [0u8; 12];
            descriptor[0] = aml::MEMORY32_FIXED;
            descriptor[1..3].copy_from_slice(&9u16.to_le_bytes());
            descriptor[3] = 0x01; // read-write
            // The TIS window is a fixed platform constant below 4 GiB.
            descriptor[4..8].copy_from_slice(&(TPM_TIS_BASE as u32).to_le_bytes());
            descriptor[8..12].copy_from_slice(&(TPM_TIS_WINDOW_SIZE as u32).to_le_bytes());
            name_crs(out, &descriptor)
        })?;
    }
    out.end_package(scope)
}

/// Builds the domain's tables into `buf` (zeroed first up to the used length). On error the
/// buffer's contents are unspecified and must not be used.
pub fn build(config: &AcpiConfig, buf: &mut [u8]) -> Result<AcpiLayout> {
    if !config.base.is_multiple_of(16) {
        return Err(AcpiBuildError::MisalignedBase);
    }
    if config.apic_ids.is_empty() {
        return Err(AcpiBuildError::NoVcpus);
    }
    for (i, &id) in config.apic_ids.iter().enumerate() {
        if id == 0xFF {
            return Err(AcpiBuildError::BroadcastApicId);
        }
        if config.apic_ids[..i].contains(&id) {
            return Err(AcpiBuildError::DuplicateApicId(id));
        }
    }
    if let Some(log) = config.tpm
        && (log.address == 0 || log.length == 0)
    {
        return Err(AcpiBuildError::EmptyTpmLog);
    }
    buf.fill(0);
    // Every table's address is base + offset: check the whole buffer's range once.
    let address = |offset: usize| config.base + offset as u64;
    config
        .base
        .checked_add(buf.len() as u64)
        .ok_or(AcpiBuildError::AddressOverflow)?;

    let mut out = Out { buf, len: 0 };
    // Fixed order: RSDP, XSDT, FADT, DSDT, MADT, TPM2; each table 8-byte aligned. The XSDT's
    // size is known up front, so its pointers are written once the tables are placed.
    out.zeros(RSDP_LEN)?;
    out.align(8)?;
    let xsdt_entries = if config.tpm.is_some() { 3 } else { 2 };
    let xsdt_start = out.len;
    out.zeros(HEADER_LEN + 8 * xsdt_entries)?;
    out.align(8)?;
    let fadt_start = out.len;
    out.zeros(FADT_LEN)?;
    out.align(8)?;

    let dsdt_start = out.header(b"DSDT", 2)?;
    dsdt_body(&mut out, config.tpm.is_some())?;
    let dsdt = out.finish_table(dsdt_start);
    out.align(8)?;

    let madt_start = out.header(b"APIC", 5)?;
    out.u32(XAPIC_BASE as u32)?;
    out.u32(0)?; // flags: no PC-AT 8259 pair
    for (uid, &apic_id) in config.apic_ids.iter().enumerate() {
        out.u8(0)?; // processor local APIC
        out.u8(MADT_LOCAL_APIC_LEN as u8)?;
        out.u8(uid as u8)?; // at most 255 distinct IDs below 0xFF, so the UID fits
        out.u8(apic_id)?;
        out.u32(1)?; // enabled
    }
    let madt = out.finish_table(madt_start);
    out.align(8)?;

    let tpm2 = match config.tpm {
        Some(log) => {
            let start = out.header(b"TPM2", TPM2_REVISION)?;
            out.u16(0)?; // platform class: client
            out.u16(0)?; // reserved
            out.u64(0)?; // control area: none for TIS
            out.u32(TPM2_START_METHOD_TIS)?;
            out.zeros(12)?; // start-method-specific parameters
            out.u32(log.length)?;
            out.u64(log.address)?;
            let table = out.finish_table(start);
            out.align(8)?;
            Some(table)
        }
        None => None,
    };
    let len = out.len;

    // FADT (revision 6, ACPI 6.5): hardware-reduced, pointing at the DSDT.
    let dsdt_address = address(dsdt.0);
    let mut fadt = Out {
        buf: &mut out.buf[..fadt_start + FADT_LEN],
        len: fadt_start,
    };
    let start = fadt.header(b"FACP", 6)?;
    fadt.u32(0)?; // FIRMWARE_CTRL: no FACS on a hardware-reduced platform
    fadt.u32(u32::try_from(dsdt_address).unwrap_or(0))?; // DSDT, if below 4 GiB
    fadt.zeros(76 - 44)?; // INT_MODEL .. PM2_CNT_BLK: no fixed hardware, no SCI
    fadt.u32(u32::from(PM_TIMER_PORT))?; // PM_TMR_BLK
    fadt.zeros(91 - 80)?; // GPE0_BLK .. PM2_CNT_LEN
    fadt.u8(4)?; // PM_TMR_LEN
    fadt.zeros(109 - 92)?; // GPE0_BLK_LEN .. CENTURY
    fadt.u16(FADT_IAPC_BOOT_ARCH)?;
    fadt.u8(0)?;
    fadt.u32(FADT_FLAGS)?;
    fadt.zeros(12 + 1 + 2)?; // RESET_REG, RESET_VALUE, ARM_BOOT_ARCH
    fadt.u8(5)?; // FADT minor version (ACPI 6.5)
    fadt.u64(0)?; // X_FIRMWARE_CTRL
    fadt.u64(dsdt_address)?; // X_DSDT
    fadt.zeros(208 - 148)?; // X_PM1a_EVT_BLK .. X_PM2_CNT_BLK
    // X_PM_TMR_BLK: system I/O, 32 bits wide, dword access.
    fadt.u8(1)?;
    fadt.u8(32)?;
    fadt.u8(0)?;
    fadt.u8(3)?;
    fadt.u64(u64::from(PM_TIMER_PORT))?;
    fadt.zeros(244 - 220)?; // X_GPE0_BLK, X_GPE1_BLK
    // SLEEP_CONTROL_REG and SLEEP_STATUS_REG: system I/O, 8 bits, byte access.
    for port in [ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT] {
        fadt.u8(1)?;
        fadt.u8(8)?;
        fadt.u8(0)?;
        fadt.u8(1)?;
        fadt.u64(u64::from(port))?;
    }
    fadt.zeros(FADT_LEN - 268)?; // hypervisor vendor identity
    let fadt = fadt.finish_table(start);

    let mut xsdt = Out {
        buf: &mut out.buf[..xsdt_start + HEADER_LEN + 8 * xsdt_entries],
        len: xsdt_start,
    };
    let start = xsdt.header(b"XSDT", 1)?;
    xsdt.u64(address(fadt.0))?;
    xsdt.u64(address(madt.0))?;
    if let Some((tpm2_offset, _)) = tpm2 {
        xsdt.u64(address(tpm2_offset))?;
    }
    let xsdt = xsdt.finish_table(start);

    let mut rsdp = Out {
        buf: &mut out.buf[..RSDP_LEN],
        len: 0,
    };
    rsdp.bytes(b"RSD PTR ")?;
    rsdp.u8(0)?; // checksum of the first 20 bytes
    rsdp.bytes(&OEM_ID)?;
    rsdp.u8(2)?; // revision: ACPI 2.0+ (XSDT)
    rsdp.u32(0)?; // no RSDT
    rsdp.u32(RSDP_LEN as u32)?;
    rsdp.u64(address(xsdt.0))?;
    rsdp.u8(0)?; // extended checksum
    rsdp.zeros(3)?;
    out.buf[8] = checksum(&out.buf[..20]);
    out.buf[32] = checksum(&out.buf[..RSDP_LEN]);

    Ok(AcpiLayout {
        rsdp_address: config.base,
        len,
        xsdt,
        fadt,
        dsdt,
        madt,
        tpm2,
    })
}

#[cfg(test)]
mod tests;
