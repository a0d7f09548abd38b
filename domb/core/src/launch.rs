//! domB's whole run, over two small traits so that it is host-tested end to end: measure the
//! configuration, parse it, measure the policy, measure every other module, evaluate the policy,
//! build the domains, hand off. The binary supplies the hypercall and the console.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Display, Write};

use slipway_measure::HashAlg;
use slipway_protocol::v1::{self, LaunchKind, Request, ResponseOk, TpmAlgId};

use crate::config;
use crate::measurements::{self, MeasureError, Measurement};
use crate::planner::{self, ModuleData};
use crate::policy::{self, LaunchFacts, Outcome};

/// The boot module holding the launch configuration, and domB's own module (measured by the
/// hypervisor, not by domB).
pub use slipway_protocol::boot_modules::{CONFIG_MODULE, DOMB_MODULE};

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
}

/// Why domB stops without handing off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    /// the active banks are not usable: (reason)
    Banks(String),
    /// there is no boot module named "config"
    NoConfig,
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
    PolicyHalt(policy::HaltReason),
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
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Banks(reason) => write!(f, "active banks: {reason}"),
            Self::NoConfig => {
                f.write_str("launch configuration: no boot module is named \"config\"")
            }
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

    // 1. The configuration, measured before it is parsed.
    let config_module = boot
        .modules
        .iter()
        .find(|m| m.name == CONFIG_MODULE)
        .ok_or(LaunchError::NoConfig)?;
    measurer.send("config", measurements::config(&banks, config_module.bytes))?;
    let names: Vec<&str> = boot.modules.iter().map(|m| m.name).collect();
    let config = config::parse(config_module.bytes, &names).map_err(LaunchError::Config)?;
    let _ = writeln!(measurer.out, "config: {} domains", config.domains.len());

    // 2. The policy, measured before it is evaluated.
    measurer.send("policy", measurements::policy(&banks, &config))?;

    // 3. Every other boot module, bound to its name, before anything is loaded from it.
    let allow_listed: Vec<&str> = config
        .domains
        .iter()
        .filter(|d| !d.allowed_sha256.is_empty())
        .flat_map(|d| core::iter::once(d.kernel.as_str()).chain(d.ramdisk.as_deref()))
        .collect();
    let mut module_sha256 = Vec::new();
    for module in boot
        .modules
        .iter()
        .filter(|m| m.name != CONFIG_MODULE && m.name != DOMB_MODULE)
    {
        let what = format!("module {} ({} bytes)", module.name, module.bytes.len());
        let measured = measurements::module(&banks, module.name, module.bytes);
        let image_sha256 = measured
            .as_ref()
            .ok()
            .and_then(|(_, image)| image.get(HashAlg::Sha256.id()).copied());
        measurer.send(&what, measured.map(|(m, _)| m))?;
        if allow_listed.contains(&module.name) {
            let digest = image_sha256
                .unwrap_or_else(|| slipway_measure::hash::hash(HashAlg::Sha256, module.bytes));
            let mut bytes = [0u8; 32];
            bytes.copy_from_slice(digest.as_bytes());
            module_sha256.push((String::from(module.name), bytes));
        }
    }

    // 4. The policy decisions, printed and measured. A TPM that fails while a decision is
    // measured makes the TPM unavailable after all: evaluate again, so the tpm-unavailable rule
    // decides (and is measured where the TPM still answers).
    let mut facts = LaunchFacts {
        measured_launch: !matches!(boot.launch_kind, LaunchKind::None),
        tpm_available: measurer.tpm_ok,
        module_sha256,
    };
    let evaluation = loop {
        let evaluation = policy::evaluate(&config, &facts);
        if evaluation.decisions.is_empty() {
            let _ = writeln!(measurer.out, "policy: all checks passed: start-all");
            measurer.send("decision", measurements::decision(&banks, None))?;
        }
        for decision in &evaluation.decisions {
            let _ = writeln!(
                measurer.out,
                "policy: {}: {}",
                decision.trigger, decision.action
            );
            measurer.send("decision", measurements::decision(&banks, Some(decision)))?;
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
