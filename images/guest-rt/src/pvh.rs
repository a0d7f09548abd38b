//! Reading the PVH `hvm_start_info` (version 0 or 1) a guest is entered with.
//!
//! The structures are read through [`PhysRead`], so the parsing is pure and host-tested; the
//! runtime implements it over the identity map.

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// Most bytes a command line may have (longer ones are reported as malformed).
pub const MAX_CMDLINE: usize = 4096;

/// Reads guest-physical memory.
pub trait PhysRead {
    /// `len` bytes at `gpa`, or `None` if the range is not readable.
    fn read(&self, gpa: u64, len: usize) -> Option<&[u8]>;
}

/// What is wrong with a start-info structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    /// the start info is not readable
    Unreadable,
    /// the magic is not 0x336ec578
    BadMagic,
    /// the module list or memory map is not readable
    TableUnreadable,
    /// the command line is not NUL-terminated UTF-8 within 4096 bytes
    BadCommandLine,
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Unreadable => "the start info is not readable",
            Self::BadMagic => "the start info magic is not 0x336ec578",
            Self::TableUnreadable => "the module list or memory map is not readable",
            Self::BadCommandLine => "a command line is not NUL-terminated UTF-8 within 4096 bytes",
        })
    }
}

/// One module entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// Guest-physical address.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Command line address (0: none).
    pub cmdline_paddr: u64,
}

/// One memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    /// Start.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// E820 type.
    pub kind: u32,
}

/// A parsed start info.
#[derive(Debug, Clone, Copy)]
pub struct StartInfo<'m, M: PhysRead> {
    memory: &'m M,
    /// Structure version.
    pub version: u32,
    /// Number of modules.
    pub module_count: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut value = [0u8; 4];
    value.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(value)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(value)
}

/// Reads a NUL-terminated UTF-8 string at `gpa` (at most [`MAX_CMDLINE`] bytes).
pub fn read_c_string<M: PhysRead>(memory: &M, gpa: u64) -> Result<&str, StartInfoError> {
    // Read page by page so that a string near the end of readable memory still works.
    let mut len = 0usize;
    loop {
        let chunk_start = gpa
            .checked_add(len as u64)
            .ok_or(StartInfoError::BadCommandLine)?;
        let chunk_len = 4096 - (chunk_start % 4096) as usize;
        let chunk = memory
            .read(chunk_start, chunk_len)
            .ok_or(StartInfoError::BadCommandLine)?;
        if let Some(end) = chunk.iter().position(|&b| b == 0) {
            len += end;
            break;
        }
        len += chunk_len;
        if len > MAX_CMDLINE {
            return Err(StartInfoError::BadCommandLine);
        }
    }
    if len > MAX_CMDLINE {
        return Err(StartInfoError::BadCommandLine);
    }
    let bytes = memory
        .read(gpa, len)
        .ok_or(StartInfoError::BadCommandLine)?;
    core::str::from_utf8(bytes).map_err(|_| StartInfoError::BadCommandLine)
}

impl<'m, M: PhysRead> StartInfo<'m, M> {
    /// Parses the start info at `gpa`.
    pub fn parse(memory: &'m M, gpa: u64) -> Result<Self, StartInfoError> {
        let header = memory.read(gpa, 40).ok_or(StartInfoError::Unreadable)?;
        if u32_at(header, 0) != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic);
        }
        let version = u32_at(header, 4);
        let (memmap_paddr, memmap_entries) = if version >= 1 {
            let v1 = memory.read(gpa, 56).ok_or(StartInfoError::Unreadable)?;
            (u64_at(v1, 40), u32_at(v1, 48))
        } else {
            (0, 0)
        };
        let info = Self {
            memory,
            version,
            module_count: u32_at(header, 12),
            modlist_paddr: u64_at(header, 16),
            cmdline_paddr: u64_at(header, 24),
            memmap_paddr,
            memmap_entries,
        };
        // Check the tables are readable once, so the iterators below cannot come up short.
        if info.module_count > 0 {
            memory
                .read(info.modlist_paddr, info.module_count as usize * 32)
                .ok_or(StartInfoError::TableUnreadable)?;
        }
        if info.memmap_entries > 0 {
            memory
                .read(info.memmap_paddr, info.memmap_entries as usize * 24)
                .ok_or(StartInfoError::TableUnreadable)?;
        }
        Ok(info)
    }

    /// The kernel command line ("" when there is none).
    pub fn cmdline(&self) -> Result<&'m str, StartInfoError> {
        if self.cmdline_paddr == 0 {
            return Ok("");
        }
        read_c_string(self.memory, self.cmdline_paddr)
    }

    /// Module `index`.
    pub fn module(&self, index: u32) -> Option<Module> {
        if index >= self.module_count {
            return None;
        }
        let at = self.modlist_paddr.checked_add(u64::from(index) * 32)?;
        let entry = self.memory.read(at, 32)?;
        Some(Module {
            paddr: u64_at(entry, 0),
            size: u64_at(entry, 8),
            cmdline_paddr: u64_at(entry, 16),
        })
    }

    /// The memory map entries.
    pub fn memory_map(&self) -> impl Iterator<Item = MemoryRange> + '_ {
        (0..self.memmap_entries).filter_map(move |index| {
            let at = self.memmap_paddr.checked_add(u64::from(index) * 24)?;
            let entry = self.memory.read(at, 24)?;
            Some(MemoryRange {
                addr: u64_at(entry, 0),
                size: u64_at(entry, 8),
                kind: u32_at(entry, 16),
            })
        })
    }

    /// Total bytes the memory map describes, every type together: RAM, the reserved start-info
    /// page and, for a control domain, the reserved event-log windows above RAM. Not the
    /// domain's memory size: that is [`Self::ram_end`] (usable RAM: [`Self::ram_size`]).
    pub fn described_size(&self) -> u64 {
        self.memory_map()
            .map(|range| range.size)
            .fold(0u64, u64::saturating_add)
    }

    /// End of the highest RAM range: the domain's memory size for a Slipway domain, whose RAM
    /// is `[0, size)` with only the start-info page reserved inside it.
    pub fn ram_end(&self) -> u64 {
        self.memory_map()
            .filter(|range| range.kind == E820_RAM)
            .map(|range| range.addr.saturating_add(range.size))
            .max()
            .unwrap_or(0)
    }

    /// Bytes of usable RAM in the memory map.
    pub fn ram_size(&self) -> u64 {
        self.memory_map()
            .filter(|range| range.kind == E820_RAM)
            .map(|range| range.size)
            .fold(0u64, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flat {
        base: u64,
        bytes: [u8; 8192],
    }

    impl PhysRead for Flat {
        fn read(&self, gpa: u64, len: usize) -> Option<&[u8]> {
            let start = usize::try_from(gpa.checked_sub(self.base)?).ok()?;
            self.bytes.get(start..start.checked_add(len)?)
        }
    }

    fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
        bytes[at..at + value.len()].copy_from_slice(value);
    }

    fn sample() -> Flat {
        let mut memory = Flat {
            base: 0x1000,
            bytes: [0; 8192],
        };
        let b = &mut memory.bytes;
        put(b, 0, &START_INFO_MAGIC.to_le_bytes());
        put(b, 4, &1u32.to_le_bytes());
        put(b, 12, &1u32.to_le_bytes());
        put(b, 16, &0x1038u64.to_le_bytes());
        put(b, 24, &0x1100u64.to_le_bytes());
        put(b, 40, &0x1058u64.to_le_bytes());
        put(b, 48, &2u32.to_le_bytes());
        // module
        put(b, 0x38, &0x20_0000u64.to_le_bytes());
        put(b, 0x40, &77u64.to_le_bytes());
        // memory map
        put(b, 0x58, &0u64.to_le_bytes());
        put(b, 0x60, &0x1000u64.to_le_bytes());
        put(b, 0x68, &2u32.to_le_bytes());
        put(b, 0x70, &0x1000u64.to_le_bytes());
        put(b, 0x78, &0xf000u64.to_le_bytes());
        put(b, 0x80, &1u32.to_le_bytes());
        put(b, 0x100, b"name=x stay\0");
        memory
    }

    #[test]
    fn parses_start_info() {
        let memory = sample();
        let info = StartInfo::parse(&memory, 0x1000).unwrap();
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline().unwrap(), "name=x stay");
        assert_eq!(
            info.module(0),
            Some(Module {
                paddr: 0x20_0000,
                size: 77,
                cmdline_paddr: 0
            })
        );
        assert_eq!(info.module(1), None);
        assert_eq!(info.memory_map().count(), 2);
        assert_eq!(info.described_size(), 0x10000);
        assert_eq!(info.ram_size(), 0xf000);
        assert_eq!(info.ram_end(), 0x10000);
    }

    #[test]
    fn rejects_bad_magic_and_unreadable_tables() {
        let mut memory = sample();
        memory.bytes[0] ^= 1;
        assert_eq!(
            StartInfo::parse(&memory, 0x1000).err(),
            Some(StartInfoError::BadMagic)
        );
        let mut memory = sample();
        put(&mut memory.bytes, 40, &0xffff_0000u64.to_le_bytes());
        assert_eq!(
            StartInfo::parse(&memory, 0x1000).err(),
            Some(StartInfoError::TableUnreadable)
        );
        assert_eq!(
            StartInfo::parse(&memory, 0x10).err(),
            Some(StartInfoError::Unreadable)
        );
    }

    #[test]
    fn rejects_unterminated_command_line() {
        let mut memory = sample();
        for byte in &mut memory.bytes[0x100..] {
            *byte = b'a';
        }
        let info = StartInfo::parse(&memory, 0x1000).unwrap();
        assert_eq!(info.cmdline(), Err(StartInfoError::BadCommandLine));
    }
}
