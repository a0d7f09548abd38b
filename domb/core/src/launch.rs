//! domB's whole run, over two small traits so that it is host-tested end to end: measure the
//! configuration, parse it, measure the policy, measure every other module, evaluate the policy,
//! build the domains, hand off. The binary supplies the hypercall and the console.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Display, Write};

use slipway_measure::HashAlg;
use slipway_protocol::recovery::BuilderExit;
use slipway_protocol::v1::{self, LaunchKind, Request, ResponseOk, TpmAlgId};

use crate::config;
use crate::measurements::{self, MeasureError, Measurement};
use crate::planner::{self, ModuleData};
use crate::policy::{self, LaunchFacts, Outcome, ProgramSource};
use slipway_policy::{ALG_SHA256, BootState, Module, ModuleDigest};
use slipway_protocol::boot_modules::slots;

/// The boot module holding the launch configuration, and domB's own module (measured by the
/// hypervisor, not by domB).
pub use slipway_protocol::boot_modules::{CONFIG_MODULE, DOMB_MODULE, POLICY_MODULE};

/// The hypercall, as domB needs it: one request, the checked answer or a printable error.
pub trait Hypervisor {
    /// Why a call failed.
    type Error: Display;
    /// Sends `request`; returns the answer (already checked to match the request) or an error.
    fn call(&mut self, request: &Request) -> Result<ResponseOk, Self::Error>;

    /// The protocol error inside `error`, when the hypervisor refused the request (as opposed to
    /// a transport failure). Lets domB trace a refused creation back to a configuration property.
    /// The default says "cannot tell", for transports whose errors carry no protocol code.
    fn refusal(_error: &Self::Error) -> Option<v1::Error> {
        None
    }

    /// A cycle counter for progress lines (domB: the TSC), or None where there is none (the
    /// host runs: tests and `predict`, whose output then stays the same run to run).
    fn timestamp(&mut self) -> Option<u64> {
        None
    }
}

/// The configuration property behind a refused `CreateDomain`, so that the message names it as
/// every configuration error does.
fn property_behind_create_refusal(refusal: v1::Error) -> Option<&'static str> {
    match refusal {
        v1::Error::OutOfMemory => Some("memory"),
        v1::Error::TooManyVcpus => Some("cpus"),
        v1::Error::NameTaken | v1::Error::NameReserved => Some("domain-name"),
        _ => None,
    }
}

/// What domB knows from its boot information.
#[derive(Debug, Clone, Copy)]
pub struct BootFacts<'a> {
    /// Launch kind reported by the hypervisor.
    pub launch_kind: LaunchKind,
    /// Active TPM banks (empty without a TPM).
    pub active_banks: &'a [TpmAlgId],
    /// Boot modules in multiboot2 order.
    pub modules: &'a [ModuleData<'a>],
    /// The hypervisor's boot record: requested slot, attempts, last known-good slot.
    pub boot_state: v1::BootState,
}

/// Why domB stops without handing off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// the active banks are not usable: (reason)
    Banks(String),
    /// there is no configuration module for the slot: (slot)
    NoConfig(u8),
    /// an object cannot be measured, so it is not used: (object, reason)
    Unmeasurable {
        /// The object.
        what: String,
        /// Why.
        error: MeasureError,
    },
    /// the launch configuration is wrong: (node, property, problem)
    Config(config::ConfigError),
    /// the policy halts the launch: (reason)
    PolicyHalt(String),
    /// a domain cannot be planned: (node, property, problem)
    Plan(planner::PlanError),
    /// a build request failed: (domain, request, error)
    Build {
        /// The domain.
        domain: String,
        /// The request kind.
        request: &'static str,
        /// The hypervisor's error.
        error: String,
    },
    /// the hand-off hypercall returned: (error)
    HandOff(String),
    /// TEST ONLY: the measured configuration asks domB to fail this way
    /// (`config::TEST_FAULT_PROPERTY`); the caller provokes the fault.
    TestFault(config::TestFault),
}

impl LaunchError {
    /// The exit code domB shuts down with, which tells the hypervisor which recovery reason to
    /// measure (`slipway_protocol::recovery::BuilderExit`). A test fault is provoked, not
    /// exited with: it gets the generic code should the caller exit anyway.
    pub fn exit(&self) -> BuilderExit {
        match self {
            Self::NoConfig(_) => BuilderExit::ConfigMalformed,
            Self::Config(error) => match error.problem {
                config::Problem::MissingModule(_) => BuilderExit::ModuleMissing,
                _ => BuilderExit::ConfigMalformed,
            },
            Self::PolicyHalt(_) => BuilderExit::PolicyHalted,
            Self::Plan(_) | Self::Build { .. } | Self::HandOff(_) => BuilderExit::PlanRefused,
            Self::Banks(_) | Self::Unmeasurable { .. } | Self::TestFault(_) => BuilderExit::Failed,
        }
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Banks(reason) => write!(f, "active banks: {reason}"),
            Self::NoConfig(slot) => write!(
                f,
                "launch configuration: slot {}: no boot module is named \"{}\"",
                slots::name(*slot).unwrap_or("?"),
                slots::config_module(*slot).unwrap_or("?")
            ),
            Self::Unmeasurable { what, error } => {
                write!(f, "measure: {what}: cannot measure: {error}")
            }
            Self::Config(error) => write!(f, "launch configuration: {error}"),
            Self::PolicyHalt(reason) => write!(f, "policy: launch halted: {reason}"),
            Self::Plan(error) => write!(f, "plan: {error}"),
            Self::Build {
                domain,
                request,
                error,
            } => write!(f, "build {domain}: {request}: {error}"),
            Self::HandOff(error) => write!(f, "hand-off: {error}"),
            Self::TestFault(fault) => write!(
                f,
                "TEST FAULT requested by the measured configuration: {fault:?}"
            ),
        }
    }
}

struct Measurer<'h, H: Hypervisor, W: Write> {
    hypervisor: &'h mut H,
    out: &'h mut W,
    tpm_ok: bool,
}

impl<H: Hypervisor, W: Write> Measurer<'_, H, W> {
    /// Sends one measure request. An object that cannot be expressed as a measurement stops the
    /// launch (it must not be used unmeasured); a refusal by the hypervisor is printed and counts
    /// as a failing TPM for the policy.
    fn send(
        &mut self,
        what: &str,
        measurement: Result<Measurement, MeasureError>,
    ) -> Result<(), LaunchError> {
        let prepared = measurement.and_then(|m| m.to_request().map(|request| (m.pcr, request)));
        let (pcr, request) = prepared.map_err(|error| LaunchError::Unmeasurable {
            what: String::from(what),
            error,
        })?;
        match self.hypervisor.call(&request) {
            Ok(ResponseOk::Measured { event_index }) => {
                let _ = writeln!(self.out, "measure: {what} -> PCR{pcr}, event {event_index}");
            }
            Ok(other) => {
                let _ = writeln!(self.out, "measure: {what}: unexpected answer {other:?}");
                self.tpm_ok = false;
            }
            Err(error) => {
                let _ = writeln!(self.out, "measure: {what}: {error}");
                self.tpm_ok = false;
            }
        }
        Ok(())
    }
}

/// The boot state as domB prints it.
fn describe_boot_state(state: &v1::BootState) -> String {
    let slot = |s: Option<u8>| s.and_then(slots::name).unwrap_or("none");
    match state.attempts {
        Some(attempts) => format!(
            "boot state: slot {} requested, attempt {attempts}, last known-good slot {}",
            slot(Some(state.requested_slot)),
            slot(state.last_known_good)
        ),
        None => format!(
            "boot state: slot {} requested, attempts unknown (no boot record)",
            slot(Some(state.requested_slot))
        ),
    }
}

/// The configuration module of `slot`.
fn config_of<'b>(boot: &'b BootFacts<'_>, slot: u8) -> Result<&'b ModuleData<'b>, LaunchError> {
    let name = slots::config_module(slot).ok_or(LaunchError::NoConfig(slot))?;
    boot.modules
        .iter()
        .find(|m| m.name == name)
        .ok_or(LaunchError::NoConfig(slot))
}

/// Measures a slot's configuration (PCR19), then parses it.
fn measure_and_parse<H: Hypervisor, W: Write>(
    measurer: &mut Measurer<'_, H, W>,
    banks: &slipway_measure::BankSet,
    slot: u8,
    module: &ModuleData<'_>,
    names: &[&str],
) -> Result<config::LaunchConfig, LaunchError> {
    measurer.send(module.name, measurements::config(banks, module.bytes))?;
    let config = config::parse(module.bytes, names).map_err(LaunchError::Config)?;
    let _ = writeln!(
        measurer.out,
        "config: slot {} ({}): {} domains",
        slots::name(slot).unwrap_or("?"),
        module.name,
        config.domains.len()
    );
    if let Some(fault) = config.test_fault {
        return Err(LaunchError::TestFault(fault));
    }
    Ok(config)
}

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::CreateDomain { .. } => "create",
        Request::PopulateFromModule { .. } => "populate",
        Request::WriteMemory { .. } => "write start info",
        Request::SetVcpuState { .. } => "set vCPU state",
        Request::AssignConsole { .. } => "assign console",
        Request::RequestStart { .. } => "request start",
        _ => "request",
    }
}

/// Runs domB's launch: returns only on failure (a successful hand-off does not return; if the
/// hypervisor answers it, that is an error too). Progress lines go to `out`.
pub fn run<H: Hypervisor, W: Write>(
    boot: &BootFacts<'_>,
    hypervisor: &mut H,
    out: &mut W,
) -> LaunchError {
    match run_inner(boot, hypervisor, out) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

enum Never {}

fn run_inner<H: Hypervisor, W: Write>(
    boot: &BootFacts<'_>,
    hypervisor: &mut H,
    out: &mut W,
) -> Result<Never, LaunchError> {
    let banks = measurements::bank_set(boot.active_banks)
        .map_err(|e| LaunchError::Banks(format!("{e:?}")))?;
    if banks.is_empty() {
        let _ = writeln!(
            out,
            "active TPM banks: none (no TPM): measure events carry no digests"
        );
    } else {
        let names: Vec<&str> = banks
            .iter()
            .map(|b| b.hash_alg().map_or("capped", HashAlg::name))
            .collect();
        let _ = writeln!(out, "active TPM banks: {}", names.join(", "));
    }
    let mut measurer = Measurer {
        hypervisor,
        out,
        tpm_ok: !banks.is_empty(),
    };

    // 1. The configuration of the requested slot, measured before it is parsed.
    let requested = boot.boot_state.requested_slot;
    let names: Vec<&str> = boot.modules.iter().map(|m| m.name).collect();
    let present_slots = (0..slots::MAX_SLOTS)
        .filter(|&slot| slots::config_module(slot).is_some_and(|m| names.contains(&m)))
        .fold(0u8, |bits, slot| bits | 1 << slot);
    let _ = writeln!(measurer.out, "{}", describe_boot_state(&boot.boot_state));
    let config_module = config_of(boot, requested)?;
    let mut config = measure_and_parse(&mut measurer, &banks, requested, config_module, &names)?;

    // 2. The policy: the policy node and the program (the `policy` module, else the built-in
    // default program), measured before the program is loaded.
    let program = match boot.modules.iter().find(|m| m.name == POLICY_MODULE) {
        Some(module) => ProgramSource::Module(module.bytes),
        None => ProgramSource::Default,
    };
    let _ = writeln!(
        measurer.out,
        "policy program: {} ({} bytes)",
        program.name(),
        program.bytes().len()
    );
    measurer.send("policy", measurements::policy(&banks, &config, program))?;

    // 3. Every other boot module, bound to its name, before anything is loaded from it. The
    // program's input lists every module domB measured, with its image digests (SHA-256
    // always, computed here when it is not an active bank).
    let mut modules = Vec::new();
    let plain = |module: &ModuleData<'_>| Module {
        name: String::from(module.name),
        size: module.bytes.len() as u64,
        digests: alloc::vec![ModuleDigest {
            alg: ALG_SHA256,
            digest: slipway_measure::hash::hash(HashAlg::Sha256, module.bytes)
                .as_bytes()
                .into(),
        }],
    };
    modules.push(plain(config_module));
    for module in boot.modules.iter().filter(|m| {
        m.name != config_module.name && m.name != DOMB_MODULE && m.name != POLICY_MODULE
    }) {
        let what = format!("module {} ({} bytes)", module.name, module.bytes.len());
        let measured = measurements::module(&banks, module.name, module.bytes);
        let mut entry = Module {
            name: String::from(module.name),
            size: module.bytes.len() as u64,
            digests: Vec::new(),
        };
        if let Ok((_, image)) = &measured {
            for digest in image.iter() {
                entry.digests.push(ModuleDigest {
                    alg: digest.alg().0,
                    digest: digest.as_bytes().into(),
                });
            }
        }
        if entry.sha256().is_none() {
            let digest = slipway_measure::hash::hash(HashAlg::Sha256, module.bytes);
            entry.digests.insert(
                0,
                ModuleDigest {
                    alg: ALG_SHA256,
                    digest: digest.as_bytes().into(),
                },
            );
        } else if let Some(at) = entry.digests.iter().position(|d| d.alg == ALG_SHA256) {
            let sha256 = entry.digests.remove(at);
            entry.digests.insert(0, sha256);
        }
        measurer.send(&what, measured.map(|(m, _)| m))?;
        modules.push(entry);
    }
    if let ProgramSource::Module(_) = program
        && let Some(module) = boot.modules.iter().find(|m| m.name == POLICY_MODULE)
    {
        modules.push(plain(module));
    }

    // 4. The policy program runs; its decisions are printed and measured. A TPM that fails
    // while a decision is measured makes the TPM unavailable after all: run again, so the
    // program decides knowing it (and the hypervisor still measures one tpm-unavailable
    // decision where the TPM answers).
    let mut facts = LaunchFacts {
        launch_kind: boot.launch_kind,
        tpm_available: measurer.tpm_ok,
        banks: boot.active_banks.iter().map(|alg| alg.0).collect(),
        modules,
        boot_state: BootState {
            boot_attempts: boot.boot_state.attempts,
            last_known_good_slot: boot.boot_state.last_known_good,
            requested_slot: requested,
            config_slot: requested,
            slots: present_slots,
        },
    };
    let evaluation = loop {
        let started = measurer.hypervisor.timestamp();
        let evaluation = policy::evaluate(program.bytes(), &config, &facts);
        if let (Some(start), Some(end)) = (started, measurer.hypervisor.timestamp()) {
            let _ = writeln!(
                measurer.out,
                "policy: program run (load, validate, run, check) took {} TSC cycles",
                end.saturating_sub(start)
            );
        }
        // The program chose another slot: its decisions for this configuration do not count.
        // The choice is measured, then that slot's configuration (before it is parsed), and the
        // program runs again on it; that answer must keep the slot (checked with the answer).
        if evaluation.slot != facts.boot_state.config_slot {
            let to = evaluation.slot;
            let _ = writeln!(
                measurer.out,
                "policy: slot {} chosen over the requested slot {}: {}",
                slots::name(to).unwrap_or("?"),
                slots::name(requested).unwrap_or("?"),
                evaluation.reason
            );
            measurer.send(
                "slot choice",
                measurements::slot_choice(&banks, requested, to),
            )?;
            let module = config_of(boot, to)?;
            config = measure_and_parse(&mut measurer, &banks, to, module, &names)?;
            facts.boot_state.config_slot = to;
            continue;
        }
        for decision in &evaluation.decisions {
            let _ = writeln!(measurer.out, "policy: {}", decision.describe(&config));
            measurer.send("decision", measurements::decision(&banks, decision))?;
        }
        if let Some(fuel) = evaluation.fuel_used {
            let _ = writeln!(
                measurer.out,
                "policy: program answered with {fuel} fuel: {}",
                evaluation.reason
            );
        }
        if facts.tpm_available && !measurer.tpm_ok {
            let _ = writeln!(
                measurer.out,
                "policy: the TPM failed while the decisions were measured: evaluating again"
            );
            facts.tpm_available = false;
            continue;
        }
        break evaluation;
    };
    let Measurer {
        hypervisor, out, ..
    } = measurer;
    let start = match evaluation.outcome {
        Outcome::Start(names) => names,
        Outcome::Halt(reason) => return Err(LaunchError::PolicyHalt(reason)),
    };
    let _ = writeln!(out, "policy: starting {}", start.join(", "));

    // 5. Build every domain, then hand off.
    let plans = planner::plan(&config, &start, boot.modules).map_err(LaunchError::Plan)?;
    for plan in &plans {
        let build_error = |request: &Request, error: &dyn Display| LaunchError::Build {
            domain: String::from(plan.name.as_str()),
            request: request_name(request),
            error: format!("{error}"),
        };
        let domain = match hypervisor.call(&plan.create) {
            Ok(ResponseOk::DomainCreated(id)) => id,
            Ok(other) => {
                return Err(build_error(
                    &plan.create,
                    &format_args!("unexpected answer {other:?}"),
                ));
            }
            Err(error) => {
                let node = config.domains.iter().find(|d| d.name == plan.name.as_str());
                let property = H::refusal(&error).and_then(property_behind_create_refusal);
                if let (Some(node), Some(property)) = (node, property) {
                    return Err(build_error(
                        &plan.create,
                        &format_args!("node {} property {property}: {error}", node.node),
                    ));
                }
                return Err(build_error(&plan.create, &error));
            }
        };
        for request in plan.requests(domain) {
            if let Err(error) = hypervisor.call(&request) {
                return Err(build_error(&request, &error));
            }
        }
        let _ = writeln!(
            out,
            "planned {} (id {}): entry {:#x}, {} segments, {} requests",
            plan.name,
            domain.0,
            plan.kernel.entry,
            plan.kernel.segments.len(),
            plan.steps.len() + 1
        );
    }
    let _ = writeln!(out, "handing off");
    match hypervisor.call(&Request::HandOff) {
        Ok(answer) => Err(LaunchError::HandOff(format!(
            "the hypervisor answered {answer:?}"
        ))),
        Err(error) => Err(LaunchError::HandOff(format!("{error}"))),
    }
}
