//! The launch configuration (a device-tree boot module) through domB: `config::parse`, the
//! policy and the build plans, then the whole of `launch::run` (measure, parse, evaluate, plan,
//! build, hand off) against hv-core's real dispatcher.
//!
//! Checked: parsing is deterministic; an accepted configuration obeys the binding (1-15 domains
//! with unique valid names, memory a non-zero page multiple up to 3 GiB, 1-8 vCPUs, at most one
//! hardware domain, boot order sorted); every plan's copies and writes lie inside its domain's
//! memory and its copies inside their modules; a configuration domB accepts and plans is
//! accepted by the hypervisor request for request (the launch ends in a hand-off or in a
//! configuration, policy or planning error, never in a refused build request), and the domains
//! the hypervisor then starts are exactly the planned ones, each with every vCPU set.

use std::collections::HashMap;

use slipway_domb_core::config::{self, MAX_DOMAIN_MEMORY, MAX_DOMAINS, MAX_VCPUS, PAGE_SIZE};
use slipway_domb_core::launch::{self, BootFacts, Hypervisor, LaunchError};
use slipway_domb_core::planner::{self, BuildStep, ModuleData};
use slipway_hv_core::addr::PhysRange;
use slipway_hv_core::domain::{Domain, DomainState, DomainTable};
use slipway_hv_core::hypercall::{self, BootModule, LaunchInfo, Outcome, Platform};
use slipway_protocol::HYPERCALL_BUFFER_SIZE;
use slipway_protocol::v1::{
    self, Capabilities, Digest, DomainId, Error, LaunchKind, ModuleName, Request, ResponseOk,
    TpmAlgId,
};

/// A minimal PVH kernel (212 bytes: one executable segment at 1 MiB and the entry note; made
/// as the README says): the image every kernel reference loads. Small, because domB hashes every
/// module in every bank on every input.
pub const KERNEL: &[u8] = include_bytes!("../images/tiny-pvh.elf");

const BANKS: [TpmAlgId; 4] = [
    TpmAlgId::SHA1,
    TpmAlgId::SHA256,
    TpmAlgId::SHA384,
    TpmAlgId::SHA512,
];

/// Runs one input (the configuration blob).
pub fn run(data: &[u8]) {
    let ramdisk = [0x5au8; 700];
    let modules: [(&str, &[u8]); 6] = [
        ("domb", b"domb"),
        ("config", data),
        ("hello", KERNEL),
        ("attest", KERNEL),
        ("hostile", KERNEL),
        ("initrd", &ramdisk),
    ];
    let names: Vec<&str> = modules.iter().map(|(name, _)| *name).collect();
    let parsed = config::parse(data, &names);
    assert_eq!(
        parsed,
        config::parse(data, &names),
        "parsing is deterministic"
    );
    let module_data: Vec<ModuleData<'_>> = modules
        .iter()
        .enumerate()
        .map(|(index, (name, bytes))| ModuleData {
            name,
            index: index as u16,
            bytes,
        })
        .collect();
    if let Ok(config) = &parsed {
        check_config(config);
        let all: Vec<String> = config.domains.iter().map(|d| d.name.clone()).collect();
        if let Ok(plans) = planner::plan(config, &all, &module_data) {
            for (plan, domain) in plans.iter().zip(&config.domains) {
                check_plan(plan, domain.memory_bytes, &module_data);
            }
        }
    }
    launch_against_dispatcher(&module_data, parsed.is_ok());
}

fn check_config(config: &config::LaunchConfig) {
    let domains = &config.domains;
    assert!((1..=MAX_DOMAINS).contains(&domains.len()));
    for (i, d) in domains.iter().enumerate() {
        assert!(config::is_valid_domain_name(&d.name), "{:?}", d.name);
        assert!(
            domains[..i].iter().all(|o| o.name != d.name),
            "duplicate name"
        );
        assert!(d.memory_bytes > 0 && d.memory_bytes % PAGE_SIZE == 0);
        assert!(d.memory_bytes <= MAX_DOMAIN_MEMORY);
        assert!((1..=MAX_VCPUS).contains(&d.vcpus));
        let key = |d: &config::DomainConfig| d.boot_order.map_or((1, 0), |o| (0, o));
        if i > 0 {
            assert!(key(&domains[i - 1]) <= key(d), "boot order not sorted");
        }
    }
    assert!(domains.iter().filter(|d| d.capabilities.hardware).count() <= 1);
}

fn check_plan(plan: &planner::DomainPlan, memory: u64, modules: &[ModuleData<'_>]) {
    for step in &plan.steps {
        match step {
            BuildStep::Populate {
                module,
                module_offset,
                length,
                gpa,
            } => {
                let source = &modules[usize::from(*module)];
                let end = module_offset
                    .checked_add(*length)
                    .expect("module range overflows");
                assert!(end <= source.bytes.len() as u64, "copy outside its module");
                let end = gpa.checked_add(*length).expect("domain range overflows");
                assert!(end <= memory, "copy outside the domain's memory");
            }
            BuildStep::Write { gpa, bytes } => {
                assert!(bytes.len() <= v1::WRITE_MEMORY_MAX);
                assert!(
                    gpa + bytes.len() as u64 <= memory,
                    "write outside the domain's memory"
                );
            }
            _ => {}
        }
    }
}

/// Platform without domain memory (nothing checked here depends on it).
#[derive(Default)]
struct Memoryless {
    events: u32,
}

impl Platform for Memoryless {
    fn create_domain(&mut self, _: DomainId, _: u64, _: u16, _: Capabilities) -> Result<(), Error> {
        Ok(())
    }
    fn populate_from_module(
        &mut self,
        _: DomainId,
        _: &BootModule,
        _: u64,
        _: u64,
        _: u64,
    ) -> Result<(), Error> {
        Ok(())
    }
    fn write_memory(&mut self, _: DomainId, _: u64, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    fn console_write(&mut self, _: DomainId, _: &[u8]) {}
    fn measure(
        &mut self,
        _: DomainId,
        _: u8,
        _: u32,
        _: &[Digest],
        _: &[u8],
    ) -> Result<u32, Error> {
        self.events += 1;
        Ok(self.events - 1)
    }
    fn seal_measurements(&mut self, planned: &[&Domain]) -> Result<(), Error> {
        for domain in planned {
            let mut out = vec![0u8; slipway_hv_core::build_record::MAX_ENCODED_LEN];
            domain
                .build_record()
                .encode(&mut out)
                .expect("a build record encodes");
        }
        Ok(())
    }
}

struct Dispatcher {
    table: DomainTable,
    modules: Vec<BootModule>,
    platform: Memoryless,
    domb: DomainId,
    started: Option<Vec<DomainId>>,
}

const HANDED_OFF: &str = "handed off";

impl Hypervisor for Dispatcher {
    type Error = String;
    fn call(&mut self, request: &Request) -> Result<ResponseOk, String> {
        let mut bytes = [0u8; HYPERCALL_BUFFER_SIZE];
        let len = v1::encode_request(request, &mut bytes).expect("domB's requests encode");
        assert_eq!(v1::decode_request(&bytes[..len]).as_ref(), Ok(request));
        let launch = LaunchInfo {
            launch_kind: LaunchKind::Emulated,
            active_banks: &BANKS,
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
        .expect("responses encode");
        if let Outcome::HandedOff { order, count } = reply.outcome {
            self.started = Some(order[..count].to_vec());
            return Err(HANDED_OFF.into());
        }
        let answer =
            v1::decode_response(&response[..reply.response_len]).expect("responses decode");
        match answer {
            Ok(ok) => {
                assert!(ok.answers(request));
                Ok(ok)
            }
            Err(error) => Err(format!("refused: {}", error.message())),
        }
    }
}

fn launch_against_dispatcher(modules: &[ModuleData<'_>], config_parses: bool) {
    let mut boot_modules = Vec::new();
    let mut gpas = HashMap::new();
    for (index, module) in modules.iter().enumerate() {
        let start = 0x1000_0000 * (index as u64 + 1);
        gpas.insert(module.name, start);
        boot_modules.push(BootModule {
            name: ModuleName::new(module.name).expect("valid module names"),
            phys: PhysRange::new(start, start + module.bytes.len() as u64),
            domb_gpa: 0x4000_0000 + start,
        });
    }
    let mut table = DomainTable::new();
    let domb = table
        .create_boot_domain(64 << 20, 1)
        .expect("domB is created");
    let mut hv = Dispatcher {
        table,
        modules: boot_modules,
        platform: Memoryless::default(),
        domb,
        started: None,
    };
    let boot = BootFacts {
        launch_kind: LaunchKind::Emulated,
        active_banks: &BANKS,
        modules,
        boot_state: slipway_protocol::v1::BootState {
            requested_slot: 0,
            attempts: None,
            last_known_good: None,
        },
    };
    let mut out = String::new();
    let error = launch::run(&boot, &mut hv, &mut out);
    match &error {
        LaunchError::HandOff(message) if message == HANDED_OFF => {}
        LaunchError::Config(_) | LaunchError::Unmeasurable { .. } => {}
        LaunchError::PolicyHalt(_) | LaunchError::Plan(_) => assert!(config_parses),
        other => panic!("domB's accepted plan was refused: {other}\n{out}"),
    }
    let Some(started) = hv.started else {
        return;
    };
    assert!(config_parses);
    let mut previous = None;
    for id in &started {
        let domain = hv.table.get(*id).expect("started domains exist");
        assert_eq!(domain.state(), DomainState::Planned);
        for vcpu in 0..domain.vcpu_count() {
            assert!(
                domain.vcpu_entry(vcpu).is_some(),
                "vCPU {vcpu} without state"
            );
        }
        let order = domain.boot_order().expect("started domains were requested");
        assert!(
            previous.is_none_or(|p| p < order),
            "start order not ascending"
        );
        previous = Some(order);
    }
    assert_eq!(
        hv.table.get(domb).map(|d| d.state()),
        Some(DomainState::Destroyed)
    );
}
