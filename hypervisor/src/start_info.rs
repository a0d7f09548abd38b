//! domB's PVH start info (`hvm_start_info` version 1, with module list and memory map) and its
//! boot-information page, written into domB's RAM before it runs.

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
const START_INFO_SIZE: usize = 56;
const MODLIST_ENTRY_SIZE: usize = 32;
const MEMMAP_ENTRY_SIZE: usize = 24;
/// E820 types in the PVH memory map.
pub const MEMMAP_RAM: u32 = 1;
pub const MEMMAP_RESERVED: u32 = 2;

/// One module entry: guest-physical address, size, name (its command line).
pub struct StartModule<'a> {
    pub gpa: u64,
    pub size: u64,
    pub cmdline: &'a str,
}

/// Why the start info does not fit.
#[derive(Debug)]
pub struct StartInfoTooLarge;

/// Builds the start-info area (placed at `base_gpa`) into `out`; returns its used length.
pub fn build(
    out: &mut [u8],
    base_gpa: u64,
    cmdline: &str,
    modules: &[StartModule<'_>],
    memmap: &[(u64, u64, u32)],
) -> Result<usize, StartInfoTooLarge> {
    let modlist_off = START_INFO_SIZE.next_multiple_of(8);
    let memmap_off = modlist_off + modules.len() * MODLIST_ENTRY_SIZE;
    let mut strings_off = memmap_off + memmap.len() * MEMMAP_ENTRY_SIZE;
    if strings_off > out.len() {
        return Err(StartInfoTooLarge);
    }
    out.fill(0);
    let mut put_str = |out: &mut [u8], text: &str| -> Result<u64, StartInfoTooLarge> {
        let end = strings_off + text.len() + 1;
        if end > out.len() {
            return Err(StartInfoTooLarge);
        }
        out[strings_off..strings_off + text.len()].copy_from_slice(text.as_bytes());
        let gpa = base_gpa + strings_off as u64;
        strings_off = end;
        Ok(gpa)
    };
    let cmdline_gpa = put_str(out, cmdline)?;
    for (i, module) in modules.iter().enumerate() {
        let name_gpa = put_str(out, module.cmdline)?;
        let at = modlist_off + i * MODLIST_ENTRY_SIZE;
        out[at..at + 8].copy_from_slice(&module.gpa.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&module.size.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&name_gpa.to_le_bytes());
    }
    for (i, (addr, size, kind)) in memmap.iter().enumerate() {
        let at = memmap_off + i * MEMMAP_ENTRY_SIZE;
        out[at..at + 8].copy_from_slice(&addr.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&size.to_le_bytes());
        out[at + 16..at + 20].copy_from_slice(&kind.to_le_bytes());
    }
    out[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&1u32.to_le_bytes());
    out[12..16].copy_from_slice(&(modules.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&(base_gpa + modlist_off as u64).to_le_bytes());
    out[24..32].copy_from_slice(&cmdline_gpa.to_le_bytes());
    out[40..48].copy_from_slice(&(base_gpa + memmap_off as u64).to_le_bytes());
    out[48..52].copy_from_slice(&(memmap.len() as u32).to_le_bytes());
    Ok(strings_off)
}
