//! The launch configuration: a device tree boot module, binding in `docs/launch-config.md`.
//!
//! Parsing is strict: an unknown node or property is an error, as is anything malformed, and every
//! error names the device-tree node and (where one is at fault) the property.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use fdt::Fdt;
use fdt::node::FdtNode;

use crate::dtb::{self, DtbError};
use crate::launch::{CONFIG_MODULE, DOMB_MODULE, POLICY_MODULE};
use crate::policy::{Action, Policy};

/// Path of the node that holds the launch configuration.
pub const CONFIG_NODE_PATH: &str = "/chosen/hypervisor";
/// `compatible` of the launch-configuration node.
pub const CONFIG_COMPATIBLE: &str = "slipway,launch-config";
/// `compatible` of a domain node.
pub const DOMAIN_COMPATIBLE: &str = "slipway,domain";
/// `compatible` of the policy node.
pub const POLICY_COMPATIBLE: &str = "slipway,launch-policy";
/// Name of the policy node under the launch-configuration node.
pub const POLICY_NODE_NAME: &str = "policy";

/// Guest pages are 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
/// Largest domain memory (the hypervisor's limit, defined once in the protocol crate): RAM past
/// 3 GiB continues at 4 GiB (`platform::DomainRam`), leaving the hole for the log windows and MMIO.
pub use slipway_protocol::platform::MAX_DOMAIN_MEMORY;
/// Most vCPUs per domain (the hypervisor's per-domain limit).
pub const MAX_VCPUS: u32 = 8;
/// Most domains in one configuration (the hypervisor's 16 domains, less domB).
pub const MAX_DOMAINS: usize = 15;
/// Longest command line, in bytes (without the terminating NUL).
pub const MAX_BOOTARGS_LEN: usize = 1024;
/// Longest domain name.
pub const MAX_NAME_LEN: usize = 31;
/// Domain names the hypervisor keeps for itself: refused here already, so the error names the
/// node.
pub use slipway_protocol::v1::RESERVED_DOMAIN_NAMES;
/// Modules that are not domain images: the boot domain, the configuration itself and the
/// policy program.
pub const RESERVED_MODULES: [&str; 3] = [DOMB_MODULE, CONFIG_MODULE, POLICY_MODULE];

/// A domain capability (`capabilities` property).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// May control other domains after hand-off (receives the console focus and the event log).
    pub control: bool,
    /// Owns the platform's hardware (recorded only until device assignment exists).
    pub hardware: bool,
    /// Started alone when the policy asks for recovery.
    pub recovery: bool,
    /// Gets the TPM (its locality-0 page) after hand-off; at most one domain.
    pub tpm: bool,
}

/// One domain as the configuration describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// Full path of the domain's node, for messages.
    pub node: String,
    /// Domain name, `[a-z0-9-]{1,31}`.
    pub name: String,
    /// Memory size in bytes (a page multiple).
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// Name of the boot module holding the kernel (a PVH ELF).
    pub kernel: String,
    /// Name of the boot module holding the ramdisk, if any.
    pub ramdisk: Option<String>,
    /// Kernel command line.
    pub bootargs: String,
    /// Start order: lower starts first; `None` starts after all ordered domains, in node order.
    pub boot_order: Option<u32>,
    /// SHA-256 digests the kernel and ramdisk images must each be among (empty: no allow-list).
    pub allowed_sha256: Vec<[u8; 32]>,
    /// How the vCPUs after the first start (`ap-start`).
    pub ap_start: ApStart,
}

/// How a domain's vCPUs after the first start (`ap-start` property).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApStart {
    /// `"entry"` (default): every vCPU starts at the kernel's entry point, as Slipway's own
    /// guests expect.
    #[default]
    Entry,
    /// `"startup-ipi"`: vCPU 0 starts at the entry point; the others wait, as application
    /// processors after reset, for INIT and a startup IPI from the kernel (a stock Linux).
    StartupIpi,
}

/// The whole launch configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchConfig {
    /// TEST ONLY: the fault domB provokes right after parsing this configuration
    /// ([`TEST_FAULT_PROPERTY`]); the configuration is measured before, so a verifier sees it.
    pub test_fault: Option<TestFault>,
    /// Domains in boot order (ties and unordered domains in node order).
    pub domains: Vec<DomainConfig>,
    /// The launch policy (defaults when the configuration has no policy node).
    pub policy: Policy,
    /// Path of the policy node, if the configuration has one.
    pub policy_node: Option<String>,
}

/// What is wrong with a node or property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// the configuration is not a valid flattened device tree
    Dtb(DtbError),
    /// the node is missing
    MissingNode,
    /// the property is missing
    MissingProperty,
    /// the property is not part of the binding
    UnknownProperty,
    /// the child node is not part of the binding
    UnknownNode,
    /// `compatible` does not contain the expected string
    NotCompatible(&'static str),
    /// the value is not a single NUL-terminated UTF-8 string
    NotAString,
    /// the value is not a list of NUL-terminated UTF-8 strings
    NotAStringList,
    /// the value is not one 32-bit cell
    NotACell,
    /// the value is not one or two 32-bit cells (a KiB count)
    NotASize,
    /// memory must not be zero
    ZeroMemory,
    /// memory must be a multiple of 4 KiB
    MemoryNotPageMultiple,
    /// memory exceeds the 16 GiB a domain may have
    MemoryTooBig,
    /// cpus must be between 1 and 8
    BadCpuCount,
    /// ap-start must be "entry" or "startup-ipi"
    BadApStart,
    /// the name is not 1 to 31 characters from `a-z`, `0-9` and `-`
    MalformedName,
    /// the name is reserved (`domb`, `slipway`, `hypervisor`)
    ReservedName,
    /// another domain already has this name (the other node is given)
    DuplicateName(String),
    /// the capability is not one of `control`, `hardware`, `recovery`, `tpm`
    UnknownCapability(String),
    /// a capability is listed twice
    DuplicateCapability(String),
    /// another domain already has the hardware capability (the other node is given)
    SecondHardwareDomain(String),
    /// another domain already has the TPM capability (the other node is given)
    SecondTpmDomain(String),
    /// no boot module has this name
    MissingModule(String),
    /// this module is not a domain image (it is the boot domain or the configuration)
    ReservedModule(String),
    /// the command line is longer than 1024 bytes
    BootargsTooLong,
    /// the allow-list is empty or not a whole number of 32-byte SHA-256 digests
    BadDigestList,
    /// the action is not one of `start-all`, `recovery-only`, `halt`
    UnknownAction(String),
    /// the configuration has no domain nodes
    NoDomains,
    /// the configuration has more than 15 domains
    TooManyDomains,
    /// the test fault is not one of `panic`, `crash`, `hang`
    UnknownTestFault(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dtb(error) => write!(f, "not a valid device tree: {error}"),
            Self::MissingNode => f.write_str("the node is missing"),
            Self::MissingProperty => f.write_str("the property is missing"),
            Self::UnknownProperty => f.write_str("the property is not part of the binding"),
            Self::UnknownNode => f.write_str("the node is not part of the binding"),
            Self::NotCompatible(expected) => {
                write!(f, "compatible does not contain \"{expected}\"")
            }
            Self::NotAString => {
                f.write_str("the value is not a single NUL-terminated UTF-8 string")
            }
            Self::NotAStringList => f.write_str("the value is not a list of UTF-8 strings"),
            Self::NotACell => f.write_str("the value is not one 32-bit cell"),
            Self::NotASize => f.write_str("the value is not one or two 32-bit cells (KiB)"),
            Self::ZeroMemory => f.write_str("memory must not be zero"),
            Self::MemoryNotPageMultiple => f.write_str("memory must be a multiple of 4 KiB"),
            Self::MemoryTooBig => f.write_str("memory exceeds the 16 GiB a domain may have"),
            Self::BadCpuCount => write!(f, "cpus must be between 1 and {MAX_VCPUS}"),
            Self::BadApStart => f.write_str("ap-start must be \"entry\" or \"startup-ipi\""),
            Self::MalformedName => {
                f.write_str("the name is not 1 to 31 characters from a-z, 0-9 and '-'")
            }
            Self::ReservedName => f.write_str("the name is reserved (domb, slipway, hypervisor)"),
            Self::DuplicateName(other) => write!(f, "the name is already used by {other}"),
            Self::UnknownCapability(name) => {
                write!(
                    f,
                    "unknown capability \"{name}\" (control, hardware, recovery, tpm)"
                )
            }
            Self::DuplicateCapability(name) => write!(f, "capability \"{name}\" is listed twice"),
            Self::SecondHardwareDomain(other) => {
                write!(
                    f,
                    "{other} already has the hardware capability (at most one domain)"
                )
            }
            Self::SecondTpmDomain(other) => write!(
                f,
                "{other} already has the tpm capability (at most one domain)"
            ),
            Self::MissingModule(name) => write!(f, "no boot module is named \"{name}\""),
            Self::UnknownTestFault(value) => write!(
                f,
                "test fault \"{value}\" is not one of \"panic\", \"crash\", \"hang\""
            ),
            Self::ReservedModule(name) => {
                write!(
                    f,
                    "module \"{name}\" is the boot domain or the configuration, not an image"
                )
            }
            Self::BootargsTooLong => {
                write!(
                    f,
                    "the command line is longer than {MAX_BOOTARGS_LEN} bytes"
                )
            }
            Self::BadDigestList => {
                f.write_str("the allow-list is empty or not a whole number of 32-byte digests")
            }
            Self::UnknownAction(action) => {
                write!(
                    f,
                    "unknown action \"{action}\" (start-all, recovery-only, halt)"
                )
            }
            Self::NoDomains => f.write_str("the configuration has no domain nodes"),
            Self::TooManyDomains => write!(f, "more than {MAX_DOMAINS} domains"),
        }
    }
}

/// A configuration error: the node, the property (if one is at fault) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Full path of the node at fault.
    pub node: String,
    /// The property at fault, if any.
    pub property: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.property {
            Some(property) => write!(
                f,
                "node {} property {}: {}",
                self.node, property, self.problem
            ),
            None => write!(f, "node {}: {}", self.node, self.problem),
        }
    }
}

fn node_error(node: &str, problem: Problem) -> ConfigError {
    ConfigError {
        node: node.to_owned(),
        property: None,
        problem,
    }
}

fn property_error(node: &str, property: &str, problem: Problem) -> ConfigError {
    ConfigError {
        node: node.to_owned(),
        property: Some(property.to_owned()),
        problem,
    }
}

/// TEST ONLY property of the `/chosen/hypervisor` node: `"panic"`, `"crash"` or `"hang"` makes
/// domB fail that way right after it measured and parsed the configuration, so that the QEMU
/// tests reach the hypervisor's recovery paths. It is part of the measured configuration (PCR19),
/// so no run with it can pass for a normal one.
pub const TEST_FAULT_PROPERTY: &str = "slipway,test-boot-domain-fault";

/// A fault domB provokes on purpose (tests only, [`TEST_FAULT_PROPERTY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFault {
    /// A Rust panic (the guest runtime reports it and shuts down with exit code 1).
    Panic,
    /// A CPU exception domB cannot handle (the hypervisor stops it: a crash).
    Crash,
    /// Spin forever without handing off (the hypervisor's watchdog stops it).
    Hang,
}

/// Parses the launch configuration blob. `module_names` are the names of all boot modules, so
/// that kernel and ramdisk references can be checked.
pub fn parse(blob: &[u8], module_names: &[&str]) -> Result<LaunchConfig, ConfigError> {
    dtb::validate(blob).map_err(|error| node_error("/", Problem::Dtb(error)))?;
    let tree = Fdt::new(blob).map_err(|_| node_error("/", Problem::Dtb(DtbError::BadMagic)))?;
    let root = tree
        .find_node(CONFIG_NODE_PATH)
        .ok_or_else(|| node_error(CONFIG_NODE_PATH, Problem::MissingNode))?;
    let mut compatible_seen = false;
    let mut test_fault = None;
    for property in root.properties() {
        match property.name {
            "compatible" => {
                require_compatible(CONFIG_NODE_PATH, property.value, CONFIG_COMPATIBLE)?;
                compatible_seen = true;
            }
            // Harmless dtc bookkeeping that a user may copy from Xen examples.
            "#address-cells" | "#size-cells" => {}
            TEST_FAULT_PROPERTY => {
                let value = single_string(CONFIG_NODE_PATH, property.name, property.value)?;
                test_fault = Some(match value {
                    "panic" => TestFault::Panic,
                    "crash" => TestFault::Crash,
                    "hang" => TestFault::Hang,
                    other => {
                        return Err(property_error(
                            CONFIG_NODE_PATH,
                            TEST_FAULT_PROPERTY,
                            Problem::UnknownTestFault(other.to_owned()),
                        ));
                    }
                });
            }
            other => {
                return Err(property_error(
                    CONFIG_NODE_PATH,
                    other,
                    Problem::UnknownProperty,
                ));
            }
        }
    }
    if !compatible_seen {
        return Err(property_error(
            CONFIG_NODE_PATH,
            "compatible",
            Problem::MissingProperty,
        ));
    }

    let mut domains: Vec<DomainConfig> = Vec::new();
    let mut policy = None;
    let mut policy_node = None;
    for child in root.children() {
        let path = child_path(child.name);
        let compatible = child.property("compatible").map(|p| p.value);
        if child.name == POLICY_NODE_NAME
            || compatible.is_some_and(|c| {
                string_list(c).is_some_and(|mut l| l.any(|s| s == POLICY_COMPATIBLE))
            })
        {
            policy = Some(parse_policy(&path, child)?);
            policy_node = Some(path);
            continue;
        }
        match compatible {
            None => {
                return Err(property_error(
                    &path,
                    "compatible",
                    Problem::MissingProperty,
                ));
            }
            Some(value) => require_compatible(&path, value, DOMAIN_COMPATIBLE)?,
        }
        if domains.len() == MAX_DOMAINS {
            return Err(node_error(&path, Problem::TooManyDomains));
        }
        let (domain, name_property) = parse_domain(&path, child, module_names)?;
        check_against_others(&domain, name_property, &domains)?;
        domains.push(domain);
    }
    if domains.is_empty() {
        return Err(node_error(CONFIG_NODE_PATH, Problem::NoDomains));
    }
    // Stable: equal orders keep node order; unordered domains go last.
    domains.sort_by_key(|d| d.boot_order.map_or((1, 0), |order| (0, order)));
    Ok(LaunchConfig {
        test_fault,
        domains,
        policy: policy.unwrap_or_default(),
        policy_node,
    })
}

fn child_path(name: &str) -> String {
    let mut path = String::from(CONFIG_NODE_PATH);
    path.push('/');
    path.push_str(name);
    path
}

fn check_against_others(
    domain: &DomainConfig,
    name_property: &str,
    others: &[DomainConfig],
) -> Result<(), ConfigError> {
    for other in others {
        if other.name == domain.name {
            return Err(property_error(
                &domain.node,
                name_property,
                Problem::DuplicateName(other.node.clone()),
            ));
        }
        if domain.capabilities.hardware && other.capabilities.hardware {
            return Err(property_error(
                &domain.node,
                "capabilities",
                Problem::SecondHardwareDomain(other.node.clone()),
            ));
        }
        if domain.capabilities.tpm && other.capabilities.tpm {
            return Err(property_error(
                &domain.node,
                "capabilities",
                Problem::SecondTpmDomain(other.node.clone()),
            ));
        }
    }
    Ok(())
}

fn string_list(value: &[u8]) -> Option<impl Iterator<Item = &str>> {
    let body = value.strip_suffix(&[0])?;
    let text = core::str::from_utf8(body).ok()?;
    Some(text.split('\0'))
}

fn require_compatible(node: &str, value: &[u8], expected: &'static str) -> Result<(), ConfigError> {
    let mut list = string_list(value)
        .ok_or_else(|| property_error(node, "compatible", Problem::NotAStringList))?;
    if list.any(|s| s == expected) {
        Ok(())
    } else {
        Err(property_error(
            node,
            "compatible",
            Problem::NotCompatible(expected),
        ))
    }
}

fn single_string<'a>(node: &str, name: &str, value: &'a [u8]) -> Result<&'a str, ConfigError> {
    value
        .strip_suffix(&[0])
        .filter(|body| !body.contains(&0))
        .and_then(|body| core::str::from_utf8(body).ok())
        .ok_or_else(|| property_error(node, name, Problem::NotAString))
}

fn cell(node: &str, name: &str, value: &[u8]) -> Result<u32, ConfigError> {
    let bytes: [u8; 4] = value
        .try_into()
        .map_err(|_| property_error(node, name, Problem::NotACell))?;
    Ok(u32::from_be_bytes(bytes))
}

/// `[a-z0-9-]{1,31}`: the domain name rule.
pub fn is_valid_domain_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn module_reference(
    node: &str,
    name: &str,
    value: &[u8],
    module_names: &[&str],
) -> Result<String, ConfigError> {
    let module = single_string(node, name, value)?;
    if RESERVED_MODULES.contains(&module) {
        return Err(property_error(
            node,
            name,
            Problem::ReservedModule(module.to_owned()),
        ));
    }
    if !module_names.contains(&module) {
        return Err(property_error(
            node,
            name,
            Problem::MissingModule(module.to_owned()),
        ));
    }
    Ok(module.to_owned())
}

/// Parses one domain node; also returns where the name came from (`domain-name` or the node name).
fn parse_domain(
    path: &str,
    node: FdtNode<'_, '_>,
    module_names: &[&str],
) -> Result<(DomainConfig, &'static str), ConfigError> {
    if let Some(child) = node.children().next() {
        let mut child_path = String::from(path);
        child_path.push('/');
        child_path.push_str(child.name);
        return Err(node_error(&child_path, Problem::UnknownNode));
    }
    let node_name = node.name.split('@').next().unwrap_or(node.name);
    let mut name = None;
    let mut memory_bytes = None;
    let mut vcpus = 1;
    let mut capabilities = Capabilities::default();
    let mut kernel = None;
    let mut ramdisk = None;
    let mut bootargs = String::new();
    let mut boot_order = None;
    let mut allowed_sha256 = Vec::new();
    let mut ap_start = ApStart::default();
    for property in node.properties() {
        let value = property.value;
        let key = property.name;
        match key {
            "compatible" => {}
            "domain-name" => name = Some(single_string(path, key, value)?),
            "memory" => memory_bytes = Some(parse_memory(path, value)?),
            "cpus" => {
                vcpus = cell(path, key, value)?;
                if !(1..=MAX_VCPUS).contains(&vcpus) {
                    return Err(property_error(path, key, Problem::BadCpuCount));
                }
            }
            "capabilities" => capabilities = parse_capabilities(path, value)?,
            "kernel" => kernel = Some(module_reference(path, key, value, module_names)?),
            "ramdisk" => ramdisk = Some(module_reference(path, key, value, module_names)?),
            "bootargs" => {
                let text = single_string(path, key, value)?;
                if text.len() > MAX_BOOTARGS_LEN {
                    return Err(property_error(path, key, Problem::BootargsTooLong));
                }
                bootargs = text.to_owned();
            }
            "boot-order" => boot_order = Some(cell(path, key, value)?),
            "ap-start" => {
                ap_start = match single_string(path, key, value)? {
                    "entry" => ApStart::Entry,
                    "startup-ipi" => ApStart::StartupIpi,
                    _ => return Err(property_error(path, key, Problem::BadApStart)),
                }
            }
            "allowed-sha256" => {
                if value.is_empty() || value.len() % 32 != 0 {
                    return Err(property_error(path, key, Problem::BadDigestList));
                }
                allowed_sha256 = value
                    .chunks_exact(32)
                    .map(|chunk| {
                        let mut digest = [0u8; 32];
                        digest.copy_from_slice(chunk);
                        digest
                    })
                    .collect();
            }
            other => return Err(property_error(path, other, Problem::UnknownProperty)),
        }
    }
    let (name, name_property) = match name {
        Some(name) => (name, "domain-name"),
        None => (node_name, "node name"),
    };
    if !is_valid_domain_name(name) {
        return Err(property_error(path, name_property, Problem::MalformedName));
    }
    if RESERVED_DOMAIN_NAMES.contains(&name) {
        return Err(property_error(path, name_property, Problem::ReservedName));
    }
    let domain = DomainConfig {
        node: path.to_owned(),
        name: name.to_owned(),
        memory_bytes: memory_bytes
            .ok_or_else(|| property_error(path, "memory", Problem::MissingProperty))?,
        vcpus,
        capabilities,
        kernel: kernel.ok_or_else(|| property_error(path, "kernel", Problem::MissingProperty))?,
        ramdisk,
        bootargs,
        boot_order,
        allowed_sha256,
        ap_start,
    };
    Ok((domain, name_property))
}

/// `memory` is in KiB like dom0less: one cell, or two cells (high, low) for a 64-bit count.
fn parse_memory(path: &str, value: &[u8]) -> Result<u64, ConfigError> {
    let error = |problem| property_error(path, "memory", problem);
    let kib = match value.len() {
        4 => u64::from(cell(path, "memory", value)?),
        8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(value);
            u64::from_be_bytes(bytes)
        }
        _ => return Err(error(Problem::NotASize)),
    };
    if kib == 0 {
        return Err(error(Problem::ZeroMemory));
    }
    let bytes = kib
        .checked_mul(1024)
        .ok_or_else(|| error(Problem::MemoryTooBig))?;
    if bytes > MAX_DOMAIN_MEMORY {
        return Err(error(Problem::MemoryTooBig));
    }
    if bytes % PAGE_SIZE != 0 {
        return Err(error(Problem::MemoryNotPageMultiple));
    }
    Ok(bytes)
}

fn parse_capabilities(path: &str, value: &[u8]) -> Result<Capabilities, ConfigError> {
    let key = "capabilities";
    let list =
        string_list(value).ok_or_else(|| property_error(path, key, Problem::NotAStringList))?;
    let mut capabilities = Capabilities::default();
    for entry in list {
        let flag = match entry {
            "control" => &mut capabilities.control,
            "hardware" => &mut capabilities.hardware,
            "recovery" => &mut capabilities.recovery,
            "tpm" => &mut capabilities.tpm,
            other => {
                return Err(property_error(
                    path,
                    key,
                    Problem::UnknownCapability(other.to_owned()),
                ));
            }
        };
        if *flag {
            return Err(property_error(
                path,
                key,
                Problem::DuplicateCapability(entry.to_owned()),
            ));
        }
        *flag = true;
    }
    Ok(capabilities)
}

fn parse_policy(path: &str, node: FdtNode<'_, '_>) -> Result<Policy, ConfigError> {
    if let Some(child) = node.children().next() {
        let mut child_path = String::from(path);
        child_path.push('/');
        child_path.push_str(child.name);
        return Err(node_error(&child_path, Problem::UnknownNode));
    }
    let mut policy = Policy::default();
    let mut compatible_seen = false;
    for property in node.properties() {
        let key = property.name;
        let slot = match key {
            "compatible" => {
                require_compatible(path, property.value, POLICY_COMPATIBLE)?;
                compatible_seen = true;
                continue;
            }
            "unmeasured-launch" => &mut policy.unmeasured_launch,
            "tpm-unavailable" => &mut policy.tpm_unavailable,
            "digest-not-allowed" => &mut policy.digest_not_allowed,
            other => return Err(property_error(path, other, Problem::UnknownProperty)),
        };
        let text = single_string(path, key, property.value)?;
        *slot = Action::from_name(text)
            .ok_or_else(|| property_error(path, key, Problem::UnknownAction(text.to_owned())))?;
    }
    if !compatible_seen {
        return Err(property_error(path, "compatible", Problem::MissingProperty));
    }
    Ok(policy)
}
