//! domB's PVH start info: `hvm_start_info` version 1 with its module list, memory map and
//! NUL-terminated strings, laid out in one buffer the hypervisor writes into domB's RAM before it
//! runs. The layout is the PVH boot ABI (Xen's `arch-x86/hvm/start_info.h`), so domB and stock
//! PVH kernels read it the same way. Moved here from the hypervisor binary for host tests.

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Size of `hvm_start_info` version 1.
pub const START_INFO_SIZE: usize = 56;
/// Size of one `hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE: usize = 32;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// E820 type of RAM in the PVH memory map.
pub const MEMMAP_RAM: u32 = 1;
/// E820 type of reserved memory in the PVH memory map.
pub const MEMMAP_RESERVED: u32 = 2;

/// One module entry: guest-physical address, size, and its command line (the module name).
#[derive(Clone, Copy, Debug)]
pub struct StartModule<'a> {
    /// Guest-physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Command line (without NUL; a NUL inside would cut it short for the reader).
    pub cmdline: &'a str,
}

/// The start info does not fit the buffer, a string contains a NUL byte, or an address would
/// overflow.
#[derive(Debug, PartialEq, Eq)]
pub struct StartInfoTooLarge;

/// Builds the start-info area (to be placed at guest-physical `base_gpa`) into `out`: the
/// structure, then the module list, the memory map and the strings. Returns the used length.
pub fn build(
    out: &mut [u8],
    base_gpa: u64,
    cmdline: &str,
    modules: &[StartModule<'_>],
    memmap: &[(u64, u64, u32)],
) -> Result<usize, StartInfoTooLarge> {
    let modlist_off = START_INFO_SIZE.next_multiple_of(8);
    let memmap_off = modules
        .len()
        .checked_mul(MODLIST_ENTRY_SIZE)
        .and_then(|n| n.checked_add(modlist_off));
    let strings_start = memmap_off.and_then(|off| {
        memmap
            .len()
            .checked_mul(MEMMAP_ENTRY_SIZE)?
            .checked_add(off)
    });
    let (Some(memmap_off), Some(mut strings_off)) = (memmap_off, strings_start) else {
        return Err(StartInfoTooLarge);
    };
    if strings_off > out.len() {
        return Err(StartInfoTooLarge);
    }
    let gpa_of = |offset: usize| base_gpa.checked_add(offset as u64).ok_or(StartInfoTooLarge);
    out.fill(0);
    let mut put_str = |out: &mut [u8], text: &str| -> Result<u64, StartInfoTooLarge> {
        let end = strings_off + text.len() + 1;
        if end > out.len() || text.as_bytes().contains(&0) {
            return Err(StartInfoTooLarge);
        }
        out[strings_off..strings_off + text.len()].copy_from_slice(text.as_bytes());
        let gpa = gpa_of(strings_off)?;
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
    out[16..24].copy_from_slice(&gpa_of(modlist_off)?.to_le_bytes());
    out[24..32].copy_from_slice(&cmdline_gpa.to_le_bytes());
    out[40..48].copy_from_slice(&gpa_of(memmap_off)?.to_le_bytes());
    out[48..52].copy_from_slice(&(memmap.len() as u32).to_le_bytes());
    Ok(strings_off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn str_at(b: &[u8], base: u64, gpa: u64) -> &str {
        let start = (gpa - base) as usize;
        let len = b[start..].iter().position(|&c| c == 0).unwrap();
        core::str::from_utf8(&b[start..start + len]).unwrap()
    }

    #[test]
    fn the_layout_reads_back_as_the_pvh_abi() {
        let base = 0x7000;
        let mut out = [0xaau8; 512];
        let modules = [
            StartModule {
                gpa: 0x400_0000,
                size: 300,
                cmdline: "bootinfo",
            },
            StartModule {
                gpa: 0x400_1000,
                size: 5,
                cmdline: "config",
            },
        ];
        let memmap = [
            (0, 0x400_0000, MEMMAP_RAM),
            (0x400_0000, 0x2000, MEMMAP_RESERVED),
        ];
        let len = build(&mut out, base, "console=com1", &modules, &memmap).unwrap();
        assert_eq!(u32_at(&out, 0), START_INFO_MAGIC);
        assert_eq!(u32_at(&out, 4), 1);
        assert_eq!(u32_at(&out, 8), 0, "flags");
        assert_eq!(u32_at(&out, 12), 2);
        assert_eq!(u64_at(&out, 32), 0, "no RSDP");
        assert_eq!(str_at(&out, base, u64_at(&out, 24)), "console=com1");
        let modlist = (u64_at(&out, 16) - base) as usize;
        assert_eq!(modlist % 8, 0);
        for (i, module) in modules.iter().enumerate() {
            let at = modlist + i * MODLIST_ENTRY_SIZE;
            assert_eq!(
                (u64_at(&out, at), u64_at(&out, at + 8)),
                (module.gpa, module.size)
            );
            assert_eq!(str_at(&out, base, u64_at(&out, at + 16)), module.cmdline);
            assert_eq!(u64_at(&out, at + 24), 0);
        }
        let map = (u64_at(&out, 40) - base) as usize;
        assert_eq!(u32_at(&out, 48), 2);
        for (i, (addr, size, kind)) in memmap.iter().enumerate() {
            let at = map + i * MEMMAP_ENTRY_SIZE;
            assert_eq!(
                (
                    u64_at(&out, at),
                    u64_at(&out, at + 8),
                    u32_at(&out, at + 16)
                ),
                (*addr, *size, *kind)
            );
        }
        assert_eq!(
            len,
            map + 2 * MEMMAP_ENTRY_SIZE + "console=com1\0bootinfo\0config\0".len()
        );
        assert!(out[len..].iter().all(|&b| b == 0), "the rest is zeroed");
    }

    #[test]
    fn too_small_or_bad_input_is_refused() {
        let modules = [StartModule {
            gpa: 0,
            size: 1,
            cmdline: "m",
        }];
        let mut small = [0u8; 100];
        assert_eq!(
            build(&mut small, 0, "", &modules, &[(0, 1, 1)]),
            Err(StartInfoTooLarge)
        );
        let mut exact =
            [0u8; START_INFO_SIZE + MODLIST_ENTRY_SIZE + MEMMAP_ENTRY_SIZE + "x\0m\0".len()];
        assert_eq!(
            build(&mut exact, 0, "x", &modules, &[(0, 1, 1)]),
            Ok(exact.len())
        );
        let mut out = [0u8; 512];
        assert_eq!(build(&mut out, 0, "a\0b", &[], &[]), Err(StartInfoTooLarge));
        assert_eq!(
            build(&mut out, u64::MAX - 8, "", &[], &[]),
            Err(StartInfoTooLarge)
        );
    }
}
