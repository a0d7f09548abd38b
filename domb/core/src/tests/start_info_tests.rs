use crate::start_info::{
    self, MemoryMapEntry, MemoryType, StartInfoError, StartInfoSpec, StartModule,
};

#[test]
fn exact_bytes_with_module_memory_map_and_cmdline() {
    let modules = [StartModule {
        paddr: 0x80_0000,
        size: 0x1234,
        cmdline: "rd",
    }];
    let map = [
        MemoryMapEntry {
            addr: 0,
            size: 0x1000,
            kind: MemoryType::Ram,
        },
        MemoryMapEntry {
            addr: 0x1000,
            size: 0x1000,
            kind: MemoryType::Reserved,
        },
    ];
    let bytes = start_info::build(&StartInfoSpec {
        page_gpa: 0x1000,
        cmdline: "console=hvc0",
        modules: &modules,
        memory_map: &map,
        rsdp_paddr: 0,
    })
    .unwrap();
    let mut expected = Vec::new();
    let le32 = |v: u32, out: &mut Vec<u8>| out.extend_from_slice(&v.to_le_bytes());
    let le64 = |v: u64, out: &mut Vec<u8>| out.extend_from_slice(&v.to_le_bytes());
    // hvm_start_info
    le32(0x336e_c578, &mut expected);
    le32(1, &mut expected); // version
    le32(0, &mut expected); // flags
    le32(1, &mut expected); // nr_modules
    le64(0x1038, &mut expected); // modlist_paddr
    le64(0x1000 + 56 + 32 + 48 + 3, &mut expected); // cmdline after "rd\0"
    le64(0, &mut expected); // rsdp
    le64(0x1058, &mut expected); // memmap_paddr
    le32(2, &mut expected);
    le32(0, &mut expected);
    // modlist entry
    le64(0x80_0000, &mut expected);
    le64(0x1234, &mut expected);
    le64(0x1000 + 56 + 32 + 48, &mut expected);
    le64(0, &mut expected);
    // memory map
    le64(0, &mut expected);
    le64(0x1000, &mut expected);
    le32(1, &mut expected);
    le32(0, &mut expected);
    le64(0x1000, &mut expected);
    le64(0x1000, &mut expected);
    le32(2, &mut expected);
    le32(0, &mut expected);
    expected.extend_from_slice(b"rd\0console=hvc0\0");
    assert_eq!(bytes, expected);
}

#[test]
fn empty_cmdline_and_no_modules_give_zero_addresses() {
    let bytes = start_info::build(&StartInfoSpec {
        page_gpa: 0x2000,
        cmdline: "",
        modules: &[],
        memory_map: &[],
        rsdp_paddr: 0,
    })
    .unwrap();
    assert_eq!(bytes.len(), 56);
    assert_eq!(&bytes[12..32], &[0; 20]);
    assert_eq!(&bytes[40..56], &[0; 16]);
}

#[test]
fn refuses_what_does_not_fit_or_is_malformed() {
    let long = "x".repeat(4096);
    let spec = StartInfoSpec {
        page_gpa: 0x1000,
        cmdline: &long,
        modules: &[],
        memory_map: &[],
        rsdp_paddr: 0,
    };
    assert_eq!(start_info::build(&spec), Err(StartInfoError::DoesNotFit));
    let spec = StartInfoSpec {
        page_gpa: 0x1000,
        cmdline: "a\0b",
        modules: &[],
        memory_map: &[],
        rsdp_paddr: 0,
    };
    assert_eq!(
        start_info::build(&spec),
        Err(StartInfoError::NulInCommandLine)
    );
    let spec = StartInfoSpec {
        page_gpa: 0x1001,
        cmdline: "",
        modules: &[],
        memory_map: &[],
        rsdp_paddr: 0,
    };
    assert_eq!(start_info::build(&spec), Err(StartInfoError::Misaligned));
    let just_fits = "y".repeat(4096 - 56 - 1);
    let spec = StartInfoSpec {
        page_gpa: 0x1000,
        cmdline: &just_fits,
        modules: &[],
        memory_map: &[],
        rsdp_paddr: 0,
    };
    assert_eq!(start_info::build(&spec).unwrap().len(), 4096);
}
