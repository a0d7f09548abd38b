//! The post-launch checks (MLE guide, "MLE post-launch" steps): the TXT status registers, the
//! heap re-read and validated (never trusted), SINIT's memory descriptor records against the
//! memory Slipway uses, the DMAR copy, and opening locality 2. A failure records an error code
//! in TXT.ERRORCODE ([`record_failure`]) and the launch ends; nothing continues as measured.

use crate::addr::PhysRange;

use super::heap::{self, HeapError, HeapTables, SinitMleView};
use super::layout::{EventLogPointer2_1, OsMleData, OsSinitData, SinitMleData};
use super::regs::{self, TxtRegisters};

/// MDR memory types.
pub const MDR_GOOD: u8 = 0;
pub const MDR_SMRAM_OVERLAY: u8 = 1;
pub const MDR_SMRAM_NON_OVERLAY: u8 = 2;
pub const MDR_PCIE_CONFIG: u8 = 3;
pub const MDR_PROTECTED: u8 = 4;

/// Slipway's TXT.ERRORCODE values (software-reported: valid and external bits set), by class.
pub const ERROR_REGISTERS: u64 = 0x1;
pub const ERROR_HEAP: u64 = 0x2;
pub const ERROR_MDR: u64 = 0x3;
pub const ERROR_DMAR: u64 = 0x4;
pub const ERROR_LOCALITY: u64 = 0x5;
pub const ERROR_EVENT_LOG: u64 = 0x6;
pub const ERROR_MTRR: u64 = 0x7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostLaunchError {
    /// TXT.STS.SENTER.DONE is clear: no launch happened.
    SenterNotDone {
        sts: u64,
    },
    /// TXT.ESTS.TXT_RESET is set.
    TxtReset {
        ests: u64,
    },
    /// TXT.ERRORCODE holds a valid error.
    ErrorCode(u64),
    Heap(HeapError),
    /// A heap field disagrees with what Slipway wrote or with another table.
    Mismatch {
        field: &'static str,
        found: u64,
        expected: u64,
    },
    /// A range Slipway uses is not in SINIT's good memory (MDR type 0).
    NotInGoodMemory {
        what: &'static str,
        range: PhysRange,
    },
    /// SINIT's DMAR copy is malformed.
    Dmar {
        rule: &'static str,
    },
    /// TXT.STS.LOCALITY2.OPEN stays clear after TXT.CMD.OPEN.LOCALITY2.
    Locality2NotOpen {
        sts: u64,
    },
}

impl PostLaunchError {
    /// The class code recorded in TXT.ERRORCODE.
    pub fn code(&self) -> u64 {
        match self {
            Self::SenterNotDone { .. } | Self::TxtReset { .. } | Self::ErrorCode(_) => {
                ERROR_REGISTERS
            }
            Self::Heap(_) | Self::Mismatch { .. } => ERROR_HEAP,
            Self::NotInGoodMemory { .. } => ERROR_MDR,
            Self::Dmar { .. } => ERROR_DMAR,
            Self::Locality2NotOpen { .. } => ERROR_LOCALITY,
        }
    }
}

impl From<HeapError> for PostLaunchError {
    fn from(e: HeapError) -> Self {
        PostLaunchError::Heap(e)
    }
}

impl core::fmt::Display for PostLaunchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SenterNotDone { sts } => write!(
                f,
                "TXT.STS {sts:#x}: SENTER.DONE is clear, no measured launch happened"
            ),
            Self::TxtReset { ests } => write!(f, "TXT.ESTS {ests:#x}: TXT_RESET is set"),
            Self::ErrorCode(code) => write!(
                f,
                "TXT.ERRORCODE {code:#x} records an error (valid bit set)"
            ),
            Self::Heap(e) => e.fmt(f),
            Self::Mismatch {
                field,
                found,
                expected,
            } => write!(
                f,
                "TXT heap: {field} is {found:#x}, Slipway wrote {expected:#x}"
            ),
            Self::NotInGoodMemory { what, range } => write!(
                f,
                "SinitMleData MDRs: {what} {:#x}..{:#x} is not inside good memory (MDR type 0)",
                range.start.0, range.end.0
            ),
            Self::Dmar { rule } => write!(f, "SinitMleData DMAR copy: {rule}"),
            Self::Locality2NotOpen { sts } => write!(
                f,
                "TXT.STS {sts:#x}: locality 2 is not open after TXT.CMD.OPEN.LOCALITY2"
            ),
        }
    }
}

/// TXT.STS, ESTS and ERRORCODE after SENTER.
pub fn check_registers(r: &impl TxtRegisters) -> Result<(), PostLaunchError> {
    let sts = r.read(regs::STS);
    if sts & regs::STS_SENTER_DONE == 0 {
        return Err(PostLaunchError::SenterNotDone { sts });
    }
    let ests = r.read(regs::ESTS);
    if ests & regs::ESTS_TXT_RESET != 0 {
        return Err(PostLaunchError::TxtReset { ests });
    }
    let code = r.read(regs::ERRORCODE);
    if code & regs::ERRORCODE_VALID != 0 {
        return Err(PostLaunchError::ErrorCode(code));
    }
    Ok(())
}

/// The validated heap.
#[derive(Clone, Copy, Debug)]
pub struct ValidatedHeap<'h> {
    pub tables: HeapTables,
    pub os_mle: OsMleData,
    pub os_sinit: OsSinitData,
    pub log: EventLogPointer2_1,
    pub sinit_mle: SinitMleView<'h>,
}

/// Re-reads every table and checks it against the others and against what Slipway wrote
/// (OsMleData records the MLE, its page tables and the log container), and the DMAR copy.
pub fn validate_heap(heap: &[u8], launch: u32) -> Result<ValidatedHeap<'_>, PostLaunchError> {
    let tables = heap::locate_tables(heap, SinitMleData::SIZE)?;
    let os_mle = heap::read_os_mle_data(tables.os_mle.body(heap))?;
    let (os_sinit, log) = heap::read_os_sinit_data(tables.os_sinit.body(heap))?;
    let sinit_mle = heap::read_sinit_mle_data(heap, &tables.sinit_mle)?;
    let same = |field, found: u64, expected: u64| {
        if found == expected {
            Ok(())
        } else {
            Err(PostLaunchError::Mismatch {
                field,
                found,
                expected,
            })
        }
    };
    same(
        "OsMleData.launch",
        u64::from(os_mle.launch),
        u64::from(launch),
    )?;
    same("OsSinitData.mle_ptab", os_sinit.mle_ptab, os_mle.mle_ptab)?;
    same("OsSinitData.mle_size", os_sinit.mle_size, os_mle.mle_size)?;
    same(
        "event-log pointer phys_addr",
        log.phys_addr,
        os_mle.event_log_base,
    )?;
    same(
        "event-log pointer allocated_size",
        u64::from(log.allocated_size),
        u64::from(os_mle.event_log_size),
    )?;
    check_dmar(sinit_mle.dmar())?;
    Ok(ValidatedHeap {
        tables,
        os_mle,
        os_sinit,
        log,
        sinit_mle,
    })
}

/// SINIT's DMAR copy: empty, or an ACPI table with signature DMAR whose length fits the copy.
pub fn check_dmar(dmar: &[u8]) -> Result<(), PostLaunchError> {
    if dmar.is_empty() {
        return Ok(());
    }
    if dmar.len() < 36 {
        return Err(PostLaunchError::Dmar {
            rule: "shorter than an ACPI table header",
        });
    }
    if &dmar[..4] != b"DMAR" {
        return Err(PostLaunchError::Dmar {
            rule: "signature is not DMAR",
        });
    }
    let len = u32::from_le_bytes([dmar[4], dmar[5], dmar[6], dmar[7]]) as usize;
    if len < 36 || len > dmar.len() {
        return Err(PostLaunchError::Dmar {
            rule: "length field below the header or past the copy",
        });
    }
    Ok(())
}

/// Every range in `used` must lie inside good memory (the union of MDRs of type 0); every MDR of
/// another type is passed to `reserve` (the memory map then never hands it out).
pub fn check_mdrs(
    view: &SinitMleView<'_>,
    used: &[(&'static str, PhysRange)],
    mut reserve: impl FnMut(PhysRange),
) -> Result<(), PostLaunchError> {
    for mdr in view.mdrs().filter(|m| m.mem_type != MDR_GOOD) {
        reserve(PhysRange::new(
            mdr.base,
            mdr.base.saturating_add(mdr.length),
        ));
    }
    for &(what, range) in used {
        // Advance through the range, each step inside some good MDR.
        let mut at = range.start.0;
        while at < range.end.0 {
            let next = view
                .mdrs()
                .filter(|m| {
                    m.mem_type == MDR_GOOD && m.base <= at && at < m.base.saturating_add(m.length)
                })
                .map(|m| m.base.saturating_add(m.length))
                .max();
            match next {
                Some(end) => at = end,
                None => return Err(PostLaunchError::NotInGoodMemory { what, range }),
            }
        }
    }
    Ok(())
}

/// Opens locality 2 (TXT.CMD.OPEN.LOCALITY2) and checks TXT.STS says so.
pub fn open_locality2(r: &mut impl TxtRegisters) -> Result<(), PostLaunchError> {
    r.command(regs::CMD_OPEN_LOCALITY2);
    let sts = r.read(regs::STS);
    if sts & regs::STS_LOCALITY2_OPEN == 0 {
        return Err(PostLaunchError::Locality2NotOpen { sts });
    }
    Ok(())
}

/// Records a failed launch in TXT.ERRORCODE (valid, software-reported, the class code).
pub fn record_failure(r: &mut impl TxtRegisters, code: u64) {
    r.write(
        regs::ERRORCODE,
        regs::ERRORCODE_VALID | regs::ERRORCODE_EXTERNAL | code,
    );
}
