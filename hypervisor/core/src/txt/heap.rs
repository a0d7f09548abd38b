//! The TXT heap (MLE guide, appendix "TXT Heap Memory"): four tables in order, BiosData,
//! OsMleData, OsSinitData, SinitMleData, each preceded by a u64 size that counts itself.
//!
//! Pre-launch, Slipway reads BiosData and writes OsMleData and OsSinitData (with the TPM 2.0
//! event-log pointer element); post-launch it re-reads every table and trusts none of them
//! without these checks. The functions work on the heap's bytes (`&[u8]`), so the hypervisor
//! (over the heap region), the simulated SINIT (over a copy) and host tests share them.

use slipway_measure::BankSet;
use slipway_measure::log::{LogHeader, LogWriter};

use super::layout::{
    BiosData, EVENT_LOG_POINTER2_1_ELEMENT_SIZE, EVENT_LOG_POINTER2_1_ELEMENT_SIZE_PADDED,
    EXT_TYPE_END, EXT_TYPE_EVENT_LOG_POINTER2_1, EventLogPointer2_1, ExtDataElementHeader,
    MIN_BIOS_DATA_VERSION, OS_MLE_DATA_MAGIC, OS_MLE_DATA_VERSION, OS_SINIT_DATA_VERSION,
    OsMleData, OsSinitData, SINIT_MLE_DATA_VERSION, SinitMdr, SinitMleData,
};

/// Size of the u64 that precedes every table.
pub const SIZE_FIELD: usize = 8;
/// Longest element list walked.
pub const MAX_ELEMENTS: usize = 32;
/// Most MDRs Slipway accepts.
pub const MAX_MDRS: u32 = 64;

/// One heap table: offset of its size field from the heap base, and its size (counting the
/// size field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub offset: usize,
    pub size: usize,
}

impl TableRef {
    /// The table's bytes after the size field.
    pub fn body<'h>(&self, heap: &'h [u8]) -> &'h [u8] {
        &heap[self.offset + SIZE_FIELD..self.offset + self.size]
    }
}

/// The four tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapTables {
    pub bios: TableRef,
    pub os_mle: TableRef,
    pub os_sinit: TableRef,
    pub sinit_mle: TableRef,
}

/// Why the heap is refused; each names the table, the field and the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// A table's size field is below its minimum or runs past the heap.
    TableSize {
        table: &'static str,
        size: u64,
        min: usize,
        room: usize,
    },
    Version {
        table: &'static str,
        version: u32,
        expected: &'static str,
    },
    OsMleMagic,
    /// An extended data element's header or size is malformed.
    Element {
        table: &'static str,
        offset: usize,
        rule: &'static str,
    },
    /// No TPM 2.0 event-log pointer element (type 8) in OsSinitData.
    NoEventLogPointer,
    /// The event-log pointer's offsets disagree (first <= next <= allocated).
    EventLogPointer {
        rule: &'static str,
    },
    /// MDR table or DMAR copy outside SinitMleData.
    SinitMleRange {
        field: &'static str,
        offset: u32,
        len: u64,
        table: usize,
    },
    TooManyMdrs(u32),
    /// The heap is too small for the tables Slipway writes.
    NoRoom {
        need: usize,
        heap: usize,
    },
    /// Writing the log container failed (buffer too small for the header).
    LogContainer,
}

impl core::fmt::Display for HeapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use HeapError::*;
        match self {
            TableSize {
                table,
                size,
                min,
                room,
            } => write!(
                f,
                "TXT heap: {table} size {size:#x} (counting its own u64) must be at least {min:#x} and fit the {room:#x} bytes left in the heap"
            ),
            Version {
                table,
                version,
                expected,
            } => {
                write!(f, "TXT heap: {table}.version {version}: {expected}")
            }
            OsMleMagic => write!(f, "TXT heap: OsMleData.magic is not Slipway's (SLWYOSML)"),
            Element {
                table,
                offset,
                rule,
            } => write!(
                f,
                "TXT heap: {table} extended data element at +{offset:#x}: {rule}"
            ),
            NoEventLogPointer => write!(
                f,
                "TXT heap: OsSinitData has no TPM 2.0 event-log pointer element (type 8)"
            ),
            EventLogPointer { rule } => write!(f, "TXT heap: event-log pointer 2.1: {rule}"),
            SinitMleRange {
                field,
                offset,
                len,
                table,
            } => write!(
                f,
                "TXT heap: SinitMleData.{field} {offset:#x} (+{len:#x} bytes) lies outside the table's {table:#x} bytes"
            ),
            TooManyMdrs(n) => write!(
                f,
                "TXT heap: SinitMleData.num_mdrs {n} (at most {MAX_MDRS})"
            ),
            NoRoom { need, heap } => write!(
                f,
                "TXT heap: Slipway's tables need {need:#x} bytes after BiosData, the heap has {heap:#x}"
            ),
            LogContainer => write!(
                f,
                "TXT heap: the event-log container cannot hold the log header"
            ),
        }
    }
}

fn read_size(heap: &[u8], offset: usize) -> u64 {
    heap.get(offset..offset + SIZE_FIELD)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .unwrap_or(0)
}

fn table(
    heap: &[u8],
    offset: usize,
    name: &'static str,
    min: usize,
) -> Result<TableRef, HeapError> {
    let room = heap.len().saturating_sub(offset);
    let size = read_size(heap, offset);
    if size < (SIZE_FIELD + min) as u64 || size > room as u64 {
        return Err(HeapError::TableSize {
            table: name,
            size,
            min: SIZE_FIELD + min,
            room,
        });
    }
    Ok(TableRef {
        offset,
        size: size as usize,
    })
}

/// Minimum sizes (after the size field).
pub const MIN_OS_SINIT_DATA: usize = OsSinitData::SIZE + ExtDataElementHeader::SIZE;

/// BiosData, checked: size and version.
pub fn read_bios_data(heap: &[u8]) -> Result<(BiosData, TableRef), HeapError> {
    let t = table(heap, 0, "BiosData", BiosData::SIZE)?;
    let bios = BiosData::read(t.body(heap)).map_err(|_| HeapError::TableSize {
        table: "BiosData",
        size: t.size as u64,
        min: SIZE_FIELD + BiosData::SIZE,
        room: heap.len(),
    })?;
    if bios.version < MIN_BIOS_DATA_VERSION {
        return Err(HeapError::Version {
            table: "BiosData",
            version: bios.version,
            expected: "at least 5",
        });
    }
    Ok((bios, t))
}

/// Finds all four tables (post-launch, and in the simulated SINIT before SinitMleData exists:
/// `sinit_mle_min` 0 then accepts an empty table).
pub fn locate_tables(heap: &[u8], sinit_mle_min: usize) -> Result<HeapTables, HeapError> {
    let (_, bios) = read_bios_data(heap)?;
    let os_mle = table(heap, bios.offset + bios.size, "OsMleData", OsMleData::SIZE)?;
    let os_sinit = table(
        heap,
        os_mle.offset + os_mle.size,
        "OsSinitData",
        MIN_OS_SINIT_DATA,
    )?;
    let sinit_mle = table(
        heap,
        os_sinit.offset + os_sinit.size,
        "SinitMleData",
        sinit_mle_min,
    )?;
    Ok(HeapTables {
        bios,
        os_mle,
        os_sinit,
        sinit_mle,
    })
}

/// An extended data element: type, payload, and the offset of its header in the element list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Element<'a> {
    pub element_type: u32,
    pub offset: usize,
    pub payload: &'a [u8],
}

/// Walks an element list up to its END element: every size at least 8 and inside the list,
/// END exactly 8 bytes, at most [`MAX_ELEMENTS`]. Calls `visit` for each element before END.
pub fn walk_elements<'a>(
    table_name: &'static str,
    bytes: &'a [u8],
    mut visit: impl FnMut(Element<'a>) -> Result<(), HeapError>,
) -> Result<(), HeapError> {
    let mut at = 0usize;
    for _ in 0..MAX_ELEMENTS {
        let err = |rule| HeapError::Element {
            table: table_name,
            offset: at,
            rule,
        };
        let header = ExtDataElementHeader::read(&bytes[at.min(bytes.len())..])
            .map_err(|_| err("header runs past the table (no END element)"))?;
        let size = header.size as usize;
        if size < ExtDataElementHeader::SIZE {
            return Err(err("size smaller than the element header"));
        }
        if size > bytes.len() - at {
            return Err(err("size runs past the table"));
        }
        if header.element_type == EXT_TYPE_END {
            if size != ExtDataElementHeader::SIZE {
                return Err(err("END element must be 8 bytes"));
            }
            return Ok(());
        }
        visit(Element {
            element_type: header.element_type,
            offset: at,
            payload: &bytes[at + ExtDataElementHeader::SIZE..at + size],
        })?;
        at += size;
    }
    Err(HeapError::Element {
        table: table_name,
        offset: at,
        rule: "more than 32 elements",
    })
}

/// OsSinitData, checked: version 7, its elements, exactly one event-log pointer 2.1 (the
/// guide's 28-byte element; the 32-byte variant some loaders write is accepted when reading).
pub fn read_os_sinit_data(body: &[u8]) -> Result<(OsSinitData, EventLogPointer2_1), HeapError> {
    let data = OsSinitData::read(body).map_err(|_| HeapError::TableSize {
        table: "OsSinitData",
        size: (body.len() + SIZE_FIELD) as u64,
        min: SIZE_FIELD + MIN_OS_SINIT_DATA,
        room: body.len(),
    })?;
    if data.version != OS_SINIT_DATA_VERSION {
        return Err(HeapError::Version {
            table: "OsSinitData",
            version: data.version,
            expected: "7 (TPM 2.0)",
        });
    }
    let mut pointer = None;
    walk_elements("OsSinitData", &body[OsSinitData::SIZE..], |e| {
        if e.element_type == EXT_TYPE_EVENT_LOG_POINTER2_1 {
            let size = e.payload.len() + ExtDataElementHeader::SIZE;
            let rule = |rule| HeapError::Element {
                table: "OsSinitData",
                offset: e.offset,
                rule,
            };
            if size != EVENT_LOG_POINTER2_1_ELEMENT_SIZE
                && size != EVENT_LOG_POINTER2_1_ELEMENT_SIZE_PADDED
            {
                return Err(rule(
                    "event-log pointer 2.1 element must be 28 (or 32) bytes",
                ));
            }
            if pointer.is_some() {
                return Err(rule("a second event-log pointer 2.1 element"));
            }
            pointer = Some(EventLogPointer2_1::read(e.payload).map_err(|_| rule("short payload"))?);
        }
        Ok(())
    })?;
    let pointer = pointer.ok_or(HeapError::NoEventLogPointer)?;
    check_log_pointer(&pointer)?;
    Ok((data, pointer))
}

/// first_record_offset <= next_record_offset <= allocated_size, and a nonempty container.
pub fn check_log_pointer(p: &EventLogPointer2_1) -> Result<(), HeapError> {
    if p.phys_addr == 0 || p.allocated_size == 0 {
        return Err(HeapError::EventLogPointer {
            rule: "no container (address or size 0)",
        });
    }
    if p.first_record_offset > p.next_record_offset {
        return Err(HeapError::EventLogPointer {
            rule: "next_record_offset is below first_record_offset",
        });
    }
    if p.next_record_offset > p.allocated_size {
        return Err(HeapError::EventLogPointer {
            rule: "next_record_offset is past allocated_size",
        });
    }
    Ok(())
}

/// OsMleData, checked: Slipway's magic and version.
pub fn read_os_mle_data(body: &[u8]) -> Result<OsMleData, HeapError> {
    let data = OsMleData::read(body).map_err(|_| HeapError::TableSize {
        table: "OsMleData",
        size: (body.len() + SIZE_FIELD) as u64,
        min: SIZE_FIELD + OsMleData::SIZE,
        room: body.len(),
    })?;
    if data.magic != OS_MLE_DATA_MAGIC {
        return Err(HeapError::OsMleMagic);
    }
    if data.version != OS_MLE_DATA_VERSION {
        return Err(HeapError::Version {
            table: "OsMleData",
            version: data.version,
            expected: "1",
        });
    }
    Ok(data)
}

/// The size Slipway's OsSinitData table takes (size field, structure, log pointer, END).
pub const OS_SINIT_TABLE_SIZE: usize =
    SIZE_FIELD + OsSinitData::SIZE + EVENT_LOG_POINTER2_1_ELEMENT_SIZE + ExtDataElementHeader::SIZE;
pub const OS_MLE_TABLE_SIZE: usize = SIZE_FIELD + OsMleData::SIZE;

/// Writes OsMleData and OsSinitData (with the event-log pointer 2.1 element and END) after
/// BiosData, and an empty SinitMleData size field (8) for SINIT to replace. Returns the tables.
pub fn write_os_tables(
    heap: &mut [u8],
    os_mle: &OsMleData,
    os_sinit: &OsSinitData,
    log: &EventLogPointer2_1,
) -> Result<HeapTables, HeapError> {
    let (_, bios) = read_bios_data(heap)?;
    let start = bios.offset + bios.size;
    let need = OS_MLE_TABLE_SIZE + OS_SINIT_TABLE_SIZE + SIZE_FIELD;
    if heap.len() < start + need {
        return Err(HeapError::NoRoom {
            need,
            heap: heap.len(),
        });
    }
    let mut at = start;
    heap[at..at + 8].copy_from_slice(&(OS_MLE_TABLE_SIZE as u64).to_le_bytes());
    let _ = os_mle.write(&mut heap[at + 8..]);
    let os_mle_ref = TableRef {
        offset: at,
        size: OS_MLE_TABLE_SIZE,
    };
    at += OS_MLE_TABLE_SIZE;
    let os_sinit_ref = TableRef {
        offset: at,
        size: OS_SINIT_TABLE_SIZE,
    };
    heap[at..at + 8].copy_from_slice(&(OS_SINIT_TABLE_SIZE as u64).to_le_bytes());
    at += 8;
    let _ = os_sinit.write(&mut heap[at..]);
    at += OsSinitData::SIZE;
    let _ = ExtDataElementHeader {
        element_type: EXT_TYPE_EVENT_LOG_POINTER2_1,
        size: EVENT_LOG_POINTER2_1_ELEMENT_SIZE as u32,
    }
    .write(&mut heap[at..]);
    let _ = log.write(&mut heap[at + ExtDataElementHeader::SIZE..]);
    at += EVENT_LOG_POINTER2_1_ELEMENT_SIZE;
    let _ = ExtDataElementHeader {
        element_type: EXT_TYPE_END,
        size: 8,
    }
    .write(&mut heap[at..]);
    at += ExtDataElementHeader::SIZE;
    heap[at..at + 8].copy_from_slice(&(SIZE_FIELD as u64).to_le_bytes());
    Ok(HeapTables {
        bios,
        os_mle: os_mle_ref,
        os_sinit: os_sinit_ref,
        sinit_mle: TableRef {
            offset: at,
            size: SIZE_FIELD,
        },
    })
}

/// SinitMleData, checked: version, MDR table and DMAR copy inside the table (their offsets
/// count from the table's size field, as the guide defines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinitMleView<'h> {
    pub data: SinitMleData,
    /// The table from its size field on.
    table: &'h [u8],
}

impl<'h> SinitMleView<'h> {
    pub fn mdrs(&self) -> impl Iterator<Item = SinitMdr> + 'h {
        let start = self.data.mdrs_off as usize;
        let n = self.data.num_mdrs as usize;
        self.table[start..start + n * SinitMdr::SIZE]
            .chunks_exact(SinitMdr::SIZE)
            .filter_map(|b| SinitMdr::read(b).ok())
    }
    /// SINIT's copy of the ACPI DMAR table.
    pub fn dmar(&self) -> &'h [u8] {
        let start = self.data.dmar_off as usize;
        &self.table[start..start + self.data.dmar_size as usize]
    }
}

pub fn read_sinit_mle_data<'h>(
    heap: &'h [u8],
    t: &TableRef,
) -> Result<SinitMleView<'h>, HeapError> {
    let table_bytes = &heap[t.offset..t.offset + t.size];
    let data =
        SinitMleData::read(&table_bytes[SIZE_FIELD..]).map_err(|_| HeapError::TableSize {
            table: "SinitMleData",
            size: t.size as u64,
            min: SIZE_FIELD + SinitMleData::SIZE,
            room: t.size,
        })?;
    if data.version < SINIT_MLE_DATA_VERSION {
        return Err(HeapError::Version {
            table: "SinitMleData",
            version: data.version,
            expected: "at least 9",
        });
    }
    if data.num_mdrs > MAX_MDRS {
        return Err(HeapError::TooManyMdrs(data.num_mdrs));
    }
    let fixed_end = SIZE_FIELD + SinitMleData::SIZE;
    let inside = |field, offset: u32, len: u64| {
        let end = u64::from(offset) + len;
        if (offset as usize) < fixed_end || end > t.size as u64 {
            Err(HeapError::SinitMleRange {
                field,
                offset,
                len,
                table: t.size,
            })
        } else {
            Ok(())
        }
    };
    inside(
        "mdrs_off",
        data.mdrs_off,
        u64::from(data.num_mdrs) * SinitMdr::SIZE as u64,
    )?;
    inside("dmar_off", data.dmar_off, u64::from(data.dmar_size))?;
    Ok(SinitMleView {
        data,
        table: table_bytes,
    })
}

/// Starts SINIT's event-log container in `buf` (a crypto-agile log: the header only) and
/// returns the pointer element's payload for a container at `phys_addr`.
pub fn init_log_container(
    buf: &mut [u8],
    phys_addr: u64,
    banks: BankSet,
) -> Result<EventLogPointer2_1, HeapError> {
    let writer =
        LogWriter::new(buf, &LogHeader::slipway(banks)).map_err(|_| HeapError::LogContainer)?;
    let used = writer.len() as u32;
    Ok(EventLogPointer2_1 {
        phys_addr,
        allocated_size: buf.len() as u32,
        first_record_offset: used,
        next_record_offset: used,
    })
}

/// Resumes the log SINIT extended (post-launch): the container is `buf` (exactly the
/// allocated size), the pointer is re-read from the heap and checked.
pub fn resume_sinit_log<'b>(
    buf: &'b mut [u8],
    pointer: &EventLogPointer2_1,
) -> Result<LogWriter<'b>, HeapError> {
    check_log_pointer(pointer)?;
    if buf.len() != pointer.allocated_size as usize {
        return Err(HeapError::EventLogPointer {
            rule: "allocated_size differs from the container Slipway allocated",
        });
    }
    LogWriter::resume(buf, pointer.next_record_offset as usize).map_err(|_| {
        HeapError::EventLogPointer {
            rule: "the log up to next_record_offset does not parse as crypto-agile",
        }
    })
}
