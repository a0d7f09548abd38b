use super::fixtures::*;
use crate::config;
use crate::elf_load::{self, ElfError};
use crate::planner::{
    self, ACPI_TABLES_GPA, BuildStep, ModuleData, PlanError, PlanProblem, START_INFO_GPA,
};
use slipway_protocol::platform::{DOMAIN_MMIO_START, DOMAIN_RAM_HOLE_START, DomainRam};
use slipway_protocol::v1::{self, DomainId, Request, VcpuEntry};

fn modules<'a>(kernel: &'a [u8], initrd: &'a [u8]) -> Vec<ModuleData<'a>> {
    vec![
        ModuleData {
            name: "domb",
            index: 0,
            bytes: b"",
        },
        ModuleData {
            name: "config",
            index: 1,
            bytes: b"",
        },
        ModuleData {
            name: "hello",
            index: 2,
            bytes: kernel,
        },
        ModuleData {
            name: "initrd",
            index: 3,
            bytes: initrd,
        },
    ]
}

fn start_all(config: &config::LaunchConfig) -> Vec<String> {
    config.domains.iter().map(|d| d.name.clone()).collect()
}

#[test]
fn plans_every_domain_with_exact_requests() {
    let config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let plans = planner::plan(&config, &start_all(&config), &modules(&kernel, b"")).unwrap();
    assert_eq!(plans.len(), 3);
    assert_eq!(
        plans[0].create,
        Request::CreateDomain {
            name: v1::DomainName::new("ctl").unwrap(),
            memory_bytes: 16 << 20,
            vcpus: 1,
            capabilities: v1::Capabilities {
                control: true,
                hardware: false,
                recovery: true,
                tpm: false,
            },
        }
    );
    let requests: Vec<_> = plans[0].requests(DomainId(5)).collect();
    let segment_offset = (64 + 56 * 3 + 20) as u64;
    assert_eq!(
        requests[..2],
        [
            Request::PopulateFromModule {
                domain: DomainId(5),
                module: 2,
                module_offset: segment_offset,
                length: 0x1800,
                gpa: 0x10_0000
            },
            Request::PopulateFromModule {
                domain: DomainId(5),
                module: 2,
                module_offset: segment_offset + 0x1800,
                length: 0x100,
                gpa: 0x10_2000
            },
        ]
    );
    let Request::WriteMemory { gpa, bytes, .. } = &requests[2] else {
        panic!("start info write expected")
    };
    assert_eq!(*gpa, START_INFO_GPA);
    assert_eq!(&bytes[..4], &0x336e_c578u32.to_le_bytes());
    // Then the ACPI tables, written at ACPI_TABLES_GPA.
    let acpi_writes = requests[3..]
        .iter()
        .take_while(|r| matches!(r, Request::WriteMemory { gpa, .. } if *gpa >= ACPI_TABLES_GPA))
        .count();
    assert!(acpi_writes >= 1);
    let Request::WriteMemory { gpa, bytes, .. } = &requests[3] else {
        unreachable!()
    };
    assert_eq!(*gpa, ACPI_TABLES_GPA);
    assert_eq!(&bytes[..8], b"RSD PTR ");
    assert_eq!(
        requests[3 + acpi_writes..],
        [
            Request::SetVcpuState {
                domain: DomainId(5),
                vcpu: 0,
                entry: VcpuEntry::Pvh32 {
                    entry_eip: 0x10_0000,
                    start_info_gpa: 0x1000
                }
            },
            Request::AssignConsole {
                domain: DomainId(5)
            },
            Request::RequestStart {
                domain: DomainId(5),
                boot_order: 0
            },
        ]
    );
    // Non-control domains get no console; boot orders are positions; every vCPU gets state.
    let hello_b: Vec<_> = plans[2]
        .steps
        .iter()
        .filter(|s| !matches!(s, BuildStep::Populate { .. } | BuildStep::Write { .. }))
        .cloned()
        .collect();
    let entry = VcpuEntry::Pvh32 {
        entry_eip: 0x10_0000,
        start_info_gpa: 0x1000,
    };
    assert_eq!(
        hello_b,
        [
            BuildStep::SetVcpu { vcpu: 0, entry },
            BuildStep::SetVcpu { vcpu: 1, entry },
            BuildStep::RequestStart { boot_order: 2 },
        ]
    );
    // Every request encodes within the hypercall buffer.
    let mut buffer = [0u8; slipway_protocol::HYPERCALL_BUFFER_SIZE];
    for plan in &plans {
        v1::encode_request(&plan.create, &mut buffer).unwrap();
        for request in plan.requests(DomainId(1)) {
            v1::encode_request(&request, &mut buffer).unwrap();
        }
    }
}

#[test]
fn plans_only_the_started_domains_in_given_order() {
    let config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let plans = planner::plan(&config, &["hello-b".into()], &modules(&kernel, b"")).unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].name.as_str(), "hello-b");
    assert_eq!(
        plans[0].steps.last(),
        Some(&BuildStep::RequestStart { boot_order: 0 })
    );
}

#[test]
fn ramdisk_goes_to_top_of_memory_and_into_start_info() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-a"])
        .set("ramdisk", s("initrd"));
    let config = config::parse(&dtb(&tree), MODULES).unwrap();
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let initrd = vec![0x5a; 5000];
    let plans = planner::plan(&config, &["hello-a".into()], &modules(&kernel, &initrd)).unwrap();
    let gpa = (16u64 << 20) - 0x2000;
    assert!(plans[0].steps.contains(&BuildStep::Populate {
        module: 3,
        module_offset: 0,
        length: 5000,
        gpa
    }));
    let BuildStep::Write { bytes, .. } = plans[0]
        .steps
        .iter()
        .find(|s| matches!(s, BuildStep::Write { gpa, .. } if *gpa == START_INFO_GPA))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(&bytes[12..16], &1u32.to_le_bytes());
    assert_eq!(&bytes[56..64], &gpa.to_le_bytes());
    assert_eq!(&bytes[64..72], &5000u64.to_le_bytes());
}

#[test]
fn errors_name_the_domain_node_and_property() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-a"])
        .set("ramdisk", s("initrd"));
    let config = config::parse(&dtb(&tree), MODULES).unwrap();
    let start = vec!["hello-a".to_string()];
    let kernel = ElfSpec::pvh(0x10_0000).build();

    let error = planner::plan(&config, &start, &modules(b"garbage", b"")).unwrap_err();
    assert_eq!(
        error,
        PlanError {
            node: "/chosen/hypervisor/hello-a".into(),
            property: "kernel",
            problem: PlanProblem::Kernel(ElfError::Malformed)
        }
    );
    assert!(
        error
            .to_string()
            .starts_with("node /chosen/hypervisor/hello-a property kernel:"),
        "{error}"
    );

    let huge = vec![0; 15 << 20];
    let error = planner::plan(&config, &start, &modules(&kernel, &huge)).unwrap_err();
    assert_eq!(
        (error.property, error.problem),
        ("ramdisk", PlanProblem::RamdiskDoesNotFit)
    );

    let mut low = ElfSpec::pvh(0x1000);
    low.loads[0].paddr = 0x1000;
    let error = planner::plan(&config, &start, &modules(&low.build(), b"")).unwrap_err();
    assert_eq!(
        (error.property, error.problem),
        ("kernel", PlanProblem::KernelOverlapsStartInfo)
    );

    let no_modules: Vec<ModuleData<'_>> = Vec::new();
    let error = planner::plan(&config, &start, &no_modules).unwrap_err();
    assert_eq!(error.problem, PlanProblem::ModuleNotFound("hello".into()));
}

mod never_panics {
    use super::*;
    use crate::config::{Capabilities, DomainConfig};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn any_sizes_give_a_plan_or_an_error(
            pages in 1u64..=786_432,
            ramdisk_len in 0usize..=64 * 1024,
            use_ramdisk in any::<bool>(),
            vcpus in 1u32..=8,
            bootargs_len in 0usize..=1024,
            kernel_at in 0u64..=0x40_0000,
        ) {
            let mut spec = ElfSpec::pvh(0);
            spec.loads[0].paddr = kernel_at & !0xfff;
            spec.loads[1].paddr = (kernel_at & !0xfff) + 0x2000;
            spec.entry_note = Some(((kernel_at & !0xfff) as u32).to_le_bytes().to_vec());
            let kernel = spec.build();
            let initrd = vec![1u8; ramdisk_len];
            let domain = DomainConfig {
                node: "/chosen/hypervisor/p".into(),
                name: "p".into(),
                memory_bytes: pages * 4096,
                vcpus,
                capabilities: Capabilities::default(),
                kernel: "hello".into(),
                ramdisk: use_ramdisk.then(|| "initrd".to_string()),
                bootargs: "a".repeat(bootargs_len),
                boot_order: None,
                allowed_sha256: Vec::new(),
                ap_start: config::ApStart::Entry,
            };
            let modules = modules(&kernel, &initrd);
            if let Ok(plan) = planner::plan_domain(&domain, 0, false, &modules) {
                let mut buffer = [0u8; slipway_protocol::HYPERCALL_BUFFER_SIZE];
                v1::encode_request(&plan.create, &mut buffer).unwrap();
                for request in plan.requests(DomainId(1)) {
                    v1::encode_request(&request, &mut buffer).unwrap();
                    match request {
                        Request::PopulateFromModule { gpa, length, .. } => prop_assert!(gpa + length <= pages * 4096),
                        Request::WriteMemory { gpa, bytes, .. } => prop_assert!(gpa + bytes.len() as u64 <= pages * 4096),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The start-info bytes a plan writes (all `Write` steps, in order, from `START_INFO_GPA`).
fn start_info_of(plan: &planner::DomainPlan) -> Vec<u8> {
    let mut page = Vec::new();
    for step in &plan.steps {
        if let BuildStep::Write { gpa, bytes } = step
            && *gpa < ACPI_TABLES_GPA
        {
            assert_eq!(*gpa, START_INFO_GPA + page.len() as u64);
            page.extend_from_slice(bytes);
        }
    }
    page
}

fn u32_at(page: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(page[at..at + 4].try_into().unwrap())
}

fn u64_at(page: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(page[at..at + 8].try_into().unwrap())
}

/// (paddr, size, command line) of every start-info module.
fn start_modules(page: &[u8]) -> Vec<(u64, u64, String)> {
    let count = u32_at(page, 12) as usize;
    if count == 0 {
        return Vec::new();
    }
    let list = (u64_at(page, 16) - START_INFO_GPA) as usize;
    (0..count)
        .map(|index| {
            let at = list + index * 32;
            let cmdline = u64_at(page, at + 16);
            let text = if cmdline == 0 {
                String::new()
            } else {
                let from = (cmdline - START_INFO_GPA) as usize;
                let len = page[from..].iter().position(|b| *b == 0).unwrap();
                String::from_utf8(page[from..from + len].to_vec()).unwrap()
            };
            (u64_at(page, at), u64_at(page, at + 8), text)
        })
        .collect()
}

/// (addr, size, type) of every memory-map entry.
fn memory_map(page: &[u8]) -> Vec<(u64, u64, u32)> {
    let count = u32_at(page, 48) as usize;
    let map = (u64_at(page, 40) - START_INFO_GPA) as usize;
    (0..count)
        .map(|index| {
            let at = map + index * 24;
            (
                u64_at(page, at),
                u64_at(page, at + 8),
                u32_at(page, at + 16),
            )
        })
        .collect()
}

#[test]
fn control_domains_get_both_log_windows_reserved_and_listed() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "ctl"])
        .set("ramdisk", s("initrd"));
    let config = config::parse(&dtb(&tree), MODULES).unwrap();
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let initrd = vec![0x5a; 5000];
    let plans = planner::plan(&config, &start_all(&config), &modules(&kernel, &initrd)).unwrap();
    assert_eq!(plans[0].name.as_str(), "ctl");
    let page = start_info_of(&plans[0]);
    let ramdisk_gpa = (16u64 << 20) - 0x2000;
    assert_eq!(
        start_modules(&page),
        [
            (ramdisk_gpa, 5000, String::new()),
            (
                v1::SLIPWAY_LOG_GPA,
                v1::LOG_WINDOW_SIZE,
                "slipway-event-log".into()
            ),
            (
                v1::FIRMWARE_LOG_GPA,
                v1::LOG_WINDOW_SIZE,
                "firmware-event-log".into()
            ),
        ]
    );
    assert_eq!(
        memory_map(&page),
        [
            (0, 0x1000, 1),
            (0x1000, 0x1000, 2),
            (0x2000, ACPI_TABLES_GPA - 0x2000, 1),
            (ACPI_TABLES_GPA, planner::ACPI_TABLES_SIZE, 2),
            (0x10_0000, (16 << 20) - 0x10_0000, 1),
            (v1::SLIPWAY_LOG_GPA, v1::LOG_WINDOW_SIZE, 2),
            (v1::FIRMWARE_LOG_GPA, v1::LOG_WINDOW_SIZE, 2),
            (DOMAIN_MMIO_START, (4 << 30) - DOMAIN_MMIO_START, 2),
        ]
    );
    // The windows lie in the hole of every domain's layout, whatever its size.
    const { assert!(v1::SLIPWAY_LOG_GPA >= DOMAIN_RAM_HOLE_START) };
}

#[test]
fn domains_larger_than_3_gib_get_ram_above_4_gib_and_the_ramdisk_below_the_hole() {
    const GIB: u64 = 1 << 30;
    let mut tree = config_tree();
    let ctl = tree.find(&["chosen", "hypervisor", "ctl"]);
    ctl.set("ramdisk", s("initrd"));
    // 3.5 GiB in KiB, two cells.
    ctl.set("memory", u64v((3 * GIB + GIB / 2) / 1024));
    let config = config::parse(&dtb(&tree), MODULES).unwrap();
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let initrd = vec![0x5a; 5000];
    let plans = planner::plan(&config, &start_all(&config), &modules(&kernel, &initrd)).unwrap();
    let page = start_info_of(&plans[0]);
    // The ramdisk at the top of the RAM below the hole (not at 3.5 GiB, in the hole).
    let ramdisk_gpa = 3 * GIB - 0x2000;
    assert_eq!(start_modules(&page)[0], (ramdisk_gpa, 5000, String::new()));
    assert!(plans[0].steps.contains(&BuildStep::Populate {
        module: 3,
        module_offset: 0,
        length: 5000,
        gpa: ramdisk_gpa
    }));
    assert_eq!(
        memory_map(&page),
        [
            (0, 0x1000, 1),
            (0x1000, 0x1000, 2),
            (0x2000, ACPI_TABLES_GPA - 0x2000, 1),
            (ACPI_TABLES_GPA, planner::ACPI_TABLES_SIZE, 2),
            (0x10_0000, 3 * GIB - 0x10_0000, 1),
            (v1::SLIPWAY_LOG_GPA, v1::LOG_WINDOW_SIZE, 2),
            (v1::FIRMWARE_LOG_GPA, v1::LOG_WINDOW_SIZE, 2),
            (DOMAIN_MMIO_START, 4 * GIB - DOMAIN_MMIO_START, 2),
            (4 * GIB, GIB / 2, 1),
        ]
    );
    // RAM in the map adds up to the configured size less the start-info page; no RAM entry
    // touches a reserved one.
    let map = memory_map(&page);
    let ram: u64 = map.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
    assert_eq!(ram, 3 * GIB + GIB / 2 - 0x1000 - planner::ACPI_TABLES_SIZE);
    for a in map.iter().filter(|e| e.2 == 1) {
        for b in map.iter().filter(|e| e.2 == 2) {
            assert!(
                a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0,
                "{a:x?} overlaps {b:x?}"
            );
        }
    }
}

#[test]
fn memory_maps_keep_the_mmio_reserved_and_kernels_out_of_the_hole() {
    const GIB: u64 = 1 << 30;
    let small = planner::memory_map(DomainRam::new(16 << 20).unwrap(), &[]);
    let entries: Vec<(u64, u64, u32)> = small
        .iter()
        .map(|e| (e.addr, e.size, e.kind as u32))
        .collect();
    assert_eq!(
        entries,
        [
            (0, 0x1000, 1),
            (0x1000, 0x1000, 2),
            (0x2000, ACPI_TABLES_GPA - 0x2000, 1),
            (ACPI_TABLES_GPA, planner::ACPI_TABLES_SIZE, 2),
            (0x10_0000, (16 << 20) - 0x10_0000, 1),
            (DOMAIN_MMIO_START, 4 * GIB - DOMAIN_MMIO_START, 2),
        ]
    );
    // A kernel segment in the hole is outside the domain's memory, even one larger than 4 GiB.
    let with_data_at = |paddr: u64| {
        let mut spec = ElfSpec::pvh(0x10_0000);
        spec.loads[1].paddr = paddr;
        spec.build()
    };
    for paddr in [
        3 * GIB - 0x1000,
        3 * GIB,
        v1::SLIPWAY_LOG_GPA,
        4 * GIB - 0x1000,
    ] {
        assert_eq!(
            elf_load::plan_load(&with_data_at(paddr), 5 * GIB).unwrap_err(),
            ElfError::SegmentOutsideMemory,
            "a segment at {paddr:#x} reaches into the hole"
        );
    }
    assert!(elf_load::plan_load(&with_data_at(4 * GIB), 5 * GIB).is_ok());
    assert_eq!(
        elf_load::plan_load(&with_data_at(4 * GIB), 3 * GIB).unwrap_err(),
        ElfError::SegmentOutsideMemory
    );
}

#[test]
fn other_domains_get_no_log_windows() {
    let config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let plans = planner::plan(&config, &start_all(&config), &modules(&kernel, b"")).unwrap();
    for plan in &plans[1..] {
        let page = start_info_of(plan);
        assert!(start_modules(&page).is_empty(), "{}", plan.name.as_str());
        // RAM, start info, RAM, ACPI tables, RAM, and the platform MMIO (reserved).
        assert_eq!(memory_map(&page).len(), 6);
        assert!(
            memory_map(&page)[..5]
                .iter()
                .all(|entry| entry.0 < 16 << 20)
        );
        assert_eq!(memory_map(&page)[5].0, DOMAIN_MMIO_START);
    }
    // The control domain without a ramdisk lists the two windows only.
    let page = start_info_of(&plans[0]);
    let names: Vec<_> = start_modules(&page).into_iter().map(|m| m.2).collect();
    assert_eq!(names, ["slipway-event-log", "firmware-event-log"]);
}

/// The ACPI blob a plan writes (all `Write` steps from `ACPI_TABLES_GPA`, in order).
fn acpi_of(plan: &planner::DomainPlan) -> Vec<u8> {
    let mut blob = Vec::new();
    for step in &plan.steps {
        if let BuildStep::Write { gpa, bytes } = step
            && *gpa >= ACPI_TABLES_GPA
        {
            assert_eq!(*gpa, ACPI_TABLES_GPA + blob.len() as u64);
            blob.extend_from_slice(bytes);
        }
    }
    blob
}

/// The table with `signature` in an ACPI blob placed at `ACPI_TABLES_GPA`, found through the
/// RSDP's XSDT as a guest finds it.
fn acpi_table<'a>(blob: &'a [u8], signature: &[u8; 4]) -> Option<&'a [u8]> {
    let at = |gpa: u64| (gpa - ACPI_TABLES_GPA) as usize;
    assert_eq!(&blob[..8], b"RSD PTR ");
    let xsdt = at(u64_at(blob, 24));
    let xsdt_len = u32_at(blob, xsdt + 4) as usize;
    (xsdt + 36..xsdt + xsdt_len).step_by(8).find_map(|entry| {
        let table = at(u64_at(blob, entry));
        let len = u32_at(blob, table + 4) as usize;
        (&blob[table..table + 4] == signature).then(|| &blob[table..table + len])
    })
}

#[test]
fn every_domain_gets_acpi_tables_and_only_the_tpm_holder_a_tpm2_table_over_its_log() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "ctl"])
        .set("capabilities", strs(&["control", "recovery", "tpm"]));
    let config = config::parse(&dtb(&tree), MODULES).unwrap();
    assert!(config.domains.iter().any(|d| d.capabilities.tpm));
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let plans = planner::plan(&config, &start_all(&config), &modules(&kernel, b"")).unwrap();
    for (index, plan) in plans.iter().enumerate() {
        let page = start_info_of(plan);
        assert_eq!(u64_at(&page, 32), ACPI_TABLES_GPA, "rsdp_paddr");
        let blob = acpi_of(plan);
        assert!(blob.len() as u64 <= planner::ACPI_TABLES_SIZE);
        for signature in [b"FACP", b"APIC", b"DSDT"] {
            let table = acpi_table(&blob, signature)
                .or_else(|| {
                    // The DSDT is reached through the FADT, not the XSDT.
                    let fadt = acpi_table(&blob, b"FACP")?;
                    let dsdt = (u64_at(fadt, 140) - ACPI_TABLES_GPA) as usize;
                    Some(&blob[dsdt..dsdt + u32_at(&blob, dsdt + 4) as usize])
                })
                .unwrap();
            assert!(
                slipway_hv_core::acpi::table_is_valid(table),
                "{signature:?}"
            );
        }
        let mut ids = [0u32; 8];
        let madt = acpi_table(&blob, b"APIC").unwrap();
        let found = slipway_hv_core::acpi::madt_apic_ids(madt, &mut ids).unwrap();
        let vcpus = config.domains[index].vcpus as usize;
        assert_eq!(found.recorded, vcpus, "one local APIC per vCPU");
        assert_eq!(&ids[..vcpus], &(0..vcpus as u32).collect::<Vec<_>>()[..]);
        let tpm2 = acpi_table(&blob, b"TPM2");
        let holds_tpm = config.domains[index].capabilities.tpm;
        assert_eq!(tpm2.is_some(), holds_tpm, "{}", plan.name.as_str());
        if let Some(tpm2) = tpm2 {
            // The log area is the Slipway log window's log, after its descriptor.
            assert_eq!(
                slipway_hv_core::acpi::tpm2_log_area(tpm2),
                Some((
                    v1::SLIPWAY_LOG_GPA + v1::LOG_DESCRIPTOR_LEN as u64,
                    v1::LOG_WINDOW_CAPACITY as u32
                ))
            );
        }
    }
}

#[test]
fn a_kernel_over_the_acpi_tables_is_refused() {
    let config = config::parse(&dtb(&config_tree()), MODULES).unwrap();
    let mut spec = ElfSpec::pvh(0xF_0000);
    spec.loads[0].paddr = 0xF_0000;
    let kernel = spec.build();
    let error = planner::plan(&config, &start_all(&config), &modules(&kernel, b"")).unwrap_err();
    assert_eq!(error.problem, PlanProblem::OverlapsAcpiTables);
    assert_eq!(error.property, "kernel");
}

#[test]
fn ap_start_startup_ipi_leaves_every_vcpu_but_the_first_waiting() {
    let mut tree = config_tree();
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("ap-start", s("startup-ipi"));
    let config = config::parse(&dtb(&tree), MODULES).unwrap();
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let plans = planner::plan(&config, &["hello-b".into()], &modules(&kernel, b"")).unwrap();
    let entries: Vec<_> = plans[0]
        .steps
        .iter()
        .filter_map(|s| match s {
            BuildStep::SetVcpu { vcpu, entry } => Some((*vcpu, *entry)),
            _ => None,
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                0,
                VcpuEntry::Pvh32 {
                    entry_eip: 0x10_0000,
                    start_info_gpa: START_INFO_GPA as u32
                }
            ),
            (1, VcpuEntry::WaitForStartupIpi),
        ]
    );
    // Any other value is refused, naming the property.
    tree.find(&["chosen", "hypervisor", "hello-b"])
        .set("ap-start", s("sipi"));
    let error = config::parse(&dtb(&tree), MODULES).unwrap_err();
    assert_eq!(error.property.as_deref(), Some("ap-start"));
    assert!(
        error.to_string().contains("\"entry\" or \"startup-ipi\""),
        "{error}"
    );
}
