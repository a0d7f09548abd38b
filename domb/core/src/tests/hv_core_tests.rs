//! domB's whole launch against the hypervisor's own dispatcher (`slipway-hv-core`), with domain
//! memory in host vectors: checks the contract end to end, then reads each built domain the way
//! the guest will (`slipway-guest-rt`'s start-info parser).

use std::collections::HashMap;

use super::fixtures::*;
use crate::launch::{self, BootFacts, Hypervisor, LaunchError};
use crate::planner::{self, ModuleData};
use slipway_guest_rt::pvh::{PhysRead, StartInfo, read_c_string};
use slipway_hv_core::addr::PhysRange;
use slipway_hv_core::domain::{Domain, DomainTable};
use slipway_hv_core::hypercall::{self, BootModule, LaunchInfo, Outcome, Platform};
use slipway_measure::events;
use slipway_protocol::HYPERCALL_BUFFER_SIZE;
use slipway_protocol::v1::{
    self, Digest, DomainId, Error, LaunchKind, ModuleName, Request, ResponseOk, TpmAlgId, VcpuEntry,
};

struct Memory(Vec<u8>);

impl PhysRead for Memory {
    fn read(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(gpa).ok()?;
        self.0.get(start..start.checked_add(len)?)
    }
}

#[derive(Default)]
struct HostPlatform {
    module_bytes: HashMap<String, Vec<u8>>,
    memories: HashMap<u16, Memory>,
    log: Vec<(u8, u32, usize)>,
}

impl Platform for HostPlatform {
    fn create_domain(
        &mut self,
        id: DomainId,
        memory_bytes: u64,
        _vcpus: u16,
        _capabilities: v1::Capabilities,
    ) -> Result<(), Error> {
        self.memories
            .insert(id.0, Memory(vec![0; memory_bytes as usize]));
        Ok(())
    }
    fn populate_from_module(
        &mut self,
        id: DomainId,
        module: &BootModule,
        offset: u64,
        length: u64,
        gpa: u64,
    ) -> Result<(), Error> {
        let bytes =
            &self.module_bytes[module.name.as_str()][offset as usize..(offset + length) as usize];
        self.memories.get_mut(&id.0).unwrap().0[gpa as usize..(gpa + length) as usize]
            .copy_from_slice(bytes);
        Ok(())
    }
    fn write_memory(&mut self, id: DomainId, gpa: u64, bytes: &[u8]) -> Result<(), Error> {
        self.memories.get_mut(&id.0).unwrap().0[gpa as usize..gpa as usize + bytes.len()]
            .copy_from_slice(bytes);
        Ok(())
    }
    fn console_write(&mut self, _caller: DomainId, _bytes: &[u8]) {}
    fn measure(
        &mut self,
        _caller: DomainId,
        pcr: u8,
        event_type: u32,
        digests: &[Digest],
        _data: &[u8],
    ) -> Result<u32, Error> {
        self.log.push((pcr, event_type, digests.len()));
        Ok(self.log.len() as u32 - 1)
    }
    fn seal_measurements(&mut self, _planned: &[&Domain]) -> Result<(), Error> {
        Ok(())
    }
}

struct HvCore {
    table: DomainTable,
    modules: Vec<BootModule>,
    platform: HostPlatform,
    domb: DomainId,
    banks: Vec<TpmAlgId>,
    started: Option<Vec<DomainId>>,
}

const HANDED_OFF: &str = "handed off (test sentinel)";

impl Hypervisor for HvCore {
    type Error = String;
    fn call(&mut self, request: &Request) -> Result<ResponseOk, String> {
        let mut bytes = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = v1::encode_request(request, &mut bytes).map_err(|e| format!("{e:?}"))?;
        let launch = LaunchInfo {
            launch_kind: LaunchKind::Emulated,
            active_banks: &self.banks,
            modules: &self.modules,
        };
        let mut response = [0u8; HYPERCALL_BUFFER_SIZE];
        let reply = hypercall::dispatch(
            &mut self.table,
            &launch,
            &mut self.platform,
            self.domb,
            &bytes[..len],
            &mut response,
        )
        .map_err(|e| format!("{e:?}"))?;
        if let Outcome::HandedOff { order, count } = reply.outcome {
            self.started = Some(order[..count].to_vec());
            return Err(HANDED_OFF.into());
        }
        let answer =
            v1::decode_response(&response[..reply.response_len]).map_err(|e| format!("{e:?}"))?;
        answer.map_err(|e| e.message().to_string())
    }
}

#[test]
fn launch_against_hv_core_dispatcher_builds_bootable_domains() {
    let config_blob = dtb(&config_tree());
    let kernel = ElfSpec::pvh(0x10_0000).build();
    let named: Vec<(&str, Vec<u8>)> = vec![
        ("domb", b"domb".to_vec()),
        ("config", config_blob),
        ("hello", kernel.clone()),
    ];
    let mut platform = HostPlatform::default();
    let mut modules = Vec::new();
    for (index, (name, bytes)) in named.iter().enumerate() {
        platform
            .module_bytes
            .insert(name.to_string(), bytes.clone());
        let start = 0x100_0000 * (index as u64 + 1);
        modules.push(BootModule {
            name: ModuleName::new(name).unwrap(),
            phys: PhysRange::new(start, start + bytes.len() as u64),
            domb_gpa: 0x400_0000 + start,
        });
    }
    let mut table = DomainTable::new();
    let domb = table.create_boot_domain(64 << 20, 1).unwrap();
    let banks = vec![
        TpmAlgId::SHA1,
        TpmAlgId::SHA256,
        TpmAlgId::SHA384,
        TpmAlgId::SHA512,
    ];
    let mut hv = HvCore {
        table,
        modules,
        platform,
        domb,
        banks: banks.clone(),
        started: None,
    };

    let module_data: Vec<ModuleData<'_>> = named
        .iter()
        .enumerate()
        .map(|(index, (name, bytes))| ModuleData {
            name,
            index: index as u16,
            bytes,
        })
        .collect();
    let mut out = String::new();
    let boot = BootFacts {
        launch_kind: LaunchKind::Emulated,
        active_banks: &banks,
        modules: &module_data,
        boot_state: slipway_protocol::v1::BootState {
            requested_slot: 0,
            attempts: None,
            last_known_good: None,
        },
    };
    let error = launch::run(&boot, &mut hv, &mut out);
    assert_eq!(error, LaunchError::HandOff(HANDED_OFF.into()), "{out}");

    // Measurements: config, policy, the hello module, the decision; all four banks each.
    assert_eq!(
        hv.platform.log,
        [
            (19, events::EV_SLIPWAY_LAUNCH_CONFIG, 4),
            (19, events::EV_SLIPWAY_POLICY, 4),
            (20, events::EV_SLIPWAY_BOOT_MODULE, 4),
            (19, events::EV_SLIPWAY_POLICY_DECISION, 4),
        ]
    );
    // Started in boot order; the control domain has the console.
    let started = hv.started.clone().expect("hand-off happened");
    let names: Vec<_> = started
        .iter()
        .map(|id| hv.table.get(*id).unwrap().name().as_str().to_string())
        .collect();
    assert_eq!(names, ["ctl", "hello-a", "hello-b"]);
    let console: Vec<_> = started
        .iter()
        .filter(|id| hv.table.get(**id).unwrap().has_console())
        .collect();
    assert_eq!(console, [&started[0]]);
    // domB is gone; a started domain's builder request is refused as after hand-off.
    assert_eq!(
        hv.call(&Request::QueryBootInfo),
        Err(Error::NotPermitted.message().to_string())
    );
    hv.table.mark_started(started[1]).unwrap();
    hv.domb = started[1];
    assert_eq!(
        hv.call(&Request::QueryBootInfo),
        Err(Error::AfterHandOff.message().to_string())
    );

    let plan = crate::elf_load::plan_load(&kernel, 16 << 20).unwrap();
    for (id, expected_cmdline, vcpus) in [
        (started[0], "", 1),
        (started[1], "name=hello-a", 1),
        (started[2], "", 2),
    ] {
        let domain = hv.table.get(id).unwrap();
        assert_eq!(domain.vcpu_count(), vcpus);
        for vcpu in 0..vcpus {
            assert_eq!(
                domain.vcpu_entry(vcpu),
                Some(VcpuEntry::Pvh32 {
                    entry_eip: 0x10_0000,
                    start_info_gpa: 0x1000
                })
            );
        }
        let memory = &hv.platform.memories[&id.0];
        let info = StartInfo::parse(memory, 0x1000).expect("the guest can parse its start info");
        assert_eq!(info.cmdline().unwrap(), expected_cmdline);
        assert_eq!(info.ram_end(), 16 << 20);
        // Less the start-info page and the ACPI tables' reserve.
        assert_eq!(
            info.ram_size(),
            (16 << 20) - 0x1000 - planner::ACPI_TABLES_SIZE
        );
        // The control domain (started[0]) also gets the two event-log windows, reserved.
        let windows = if id == started[0] { 2 } else { 0 };
        let mmio = (4 << 30) - slipway_protocol::platform::DOMAIN_MMIO_START;
        assert_eq!(
            info.described_size(),
            (16 << 20) + windows * v1::LOG_WINDOW_SIZE + mmio
        );
        assert_eq!(info.module_count, windows as u32);
        for (index, (gpa, name)) in [
            (v1::SLIPWAY_LOG_GPA, v1::SLIPWAY_LOG_MODULE),
            (v1::FIRMWARE_LOG_GPA, v1::FIRMWARE_LOG_MODULE),
        ]
        .into_iter()
        .take(windows as usize)
        .enumerate()
        {
            let module = info.module(index as u32).unwrap();
            assert_eq!((module.paddr, module.size), (gpa, v1::LOG_WINDOW_SIZE));
            assert_eq!(read_c_string(memory, module.cmdline_paddr).unwrap(), name);
        }
        for segment in &plan.segments {
            let loaded = memory.read(segment.gpa, segment.mem_len as usize).unwrap();
            let file = &kernel
                [segment.file_offset as usize..(segment.file_offset + segment.file_len) as usize];
            assert_eq!(&loaded[..file.len()], file);
            assert!(loaded[file.len()..].iter().all(|&b| b == 0));
        }
    }
}
