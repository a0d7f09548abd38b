//! The domain model: names, capabilities, states, vCPU entry states, start requests, and the
//! table of all domains with the hand-off rule.
//!
//! Before hand-off only domB runs; other domains are *planned*: the hypervisor records what domB
//! asks for and builds memory, but starts nothing. Hand-off checks that the plan is complete,
//! destroys domB, and yields the start order; from then on the table refuses every builder
//! request (the hypercall dispatcher asks [`DomainTable::handed_off`]).

use core::fmt;

use crate::build_record::{BuildRecord, BuildStep};
use slipway_protocol::platform::DomainRam;
use slipway_protocol::v1::{Capabilities, DomainId, DomainName, Error, VcpuEntry};

/// Most domains, domB included.
pub const MAX_DOMAINS: usize = 16;
/// Most vCPUs per domain.
pub const MAX_VCPUS: usize = 8;
/// Largest domain memory (16 GiB): bounds what a hostile plan can ask for in one request.
pub use slipway_protocol::platform::MAX_DOMAIN_MEMORY;
/// The boot domain's name.
pub use slipway_protocol::v1::BOOT_DOMAIN_NAME;
/// The boot domain's RAM unless the hypervisor command line says `domb_mem=<MiB>`. domB needs
/// its image as loaded (the demo's: 2.3 MiB + 4.3 MiB, most of it the guest runtime's 4 MiB heap,
/// which the policy program's interpreter needs, and 256 KiB of stacks, all in `.bss`) below
/// the five pages the hypervisor puts at the top
/// (hypercall buffer, boot information, PVH start info); boot modules are mapped above its RAM,
/// never copied into it. Every page of it is zeroed when domB is created and scrubbed at the
/// hand-off, so it is kept this small (64 MiB cost 268 ms of the demo's boot under QEMU's
/// emulator). An image that does not fit is refused at boot: `domb: image refused: program
/// header N (...) lies outside the domain's usable RAM`.
pub const BOOT_DOMAIN_DEFAULT_MEMORY: u64 = 8 << 20;
/// Names no planned domain may take: the boot domain's, and names that would make console lines
/// look like they come from the hypervisor.
pub use slipway_protocol::v1::RESERVED_DOMAIN_NAMES as RESERVED_NAMES;
/// Size of the PVH `hvm_start_info` structure (version 1): the start-info pointer must leave room
/// for it inside the domain's memory.
pub const HVM_START_INFO_SIZE: u64 = 56;

/// What a domain may do: the capabilities a builder can grant, plus the builder capability that
/// only the hypervisor grants (to domB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DomainCapabilities {
    /// control, hardware, recovery.
    pub granted: Capabilities,
    /// May build other domains (domB only, until hand-off).
    pub builder: bool,
}

/// Why the hypervisor stopped a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// triple fault (shutdown exit)
    TripleFault,
    /// executed an instruction no guest may execute
    ForbiddenInstruction(&'static str),
    /// accessed guest-physical memory outside its RAM or against its permissions
    MemoryViolation {
        /// The guest-physical address.
        gpa: u64,
        /// Whether it was a write.
        write: bool,
        /// Whether it was an instruction fetch.
        execute: bool,
    },
    /// caused an exit the hypervisor does not handle
    UnhandledExit {
        /// The raw exit code.
        code: u64,
    },
    /// the hardware refused the vCPU state (VMEXIT_INVALID)
    InvalidState,
    /// accessed an I/O port or MSR it is not given
    ForbiddenAccess {
        /// Port or MSR number.
        what: u32,
        /// Whether it was an MSR (else an I/O port).
        msr: bool,
    },
    /// The hypervisor's watchdog stopped the boot domain: it had not handed off by the
    /// deadline (`domb_watchdog=`, [`crate::recovery`]).
    WatchdogExpired,
    /// an access to an emulated device's MMIO page could not be emulated
    MmioNotEmulated(crate::mmio::MmioError),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::TripleFault => write!(f, "triple fault"),
            StopReason::ForbiddenInstruction(name) => write!(f, "forbidden instruction {name}"),
            StopReason::MemoryViolation {
                gpa,
                write,
                execute,
            } => {
                let kind = if *execute {
                    "execute"
                } else if *write {
                    "write"
                } else {
                    "read"
                };
                write!(
                    f,
                    "{kind} access at guest-physical {gpa:#x} outside its memory or rights"
                )
            }
            StopReason::UnhandledExit { code } => write!(f, "unhandled exit {code:#x}"),
            StopReason::InvalidState => write!(f, "invalid vCPU state"),
            StopReason::WatchdogExpired => {
                write!(f, "watchdog: no hand-off before the deadline")
            }
            StopReason::MmioNotEmulated(error) => write!(f, "{error}"),
            StopReason::ForbiddenAccess { what, msr: true } => write!(f, "access to MSR {what:#x}"),
            StopReason::ForbiddenAccess { what, msr: false } => {
                write!(f, "access to I/O port {what:#x}")
            }
        }
    }
}

/// Life cycle of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Being built by domB; does not run before hand-off.
    Planned,
    /// Running (domB from boot, the others after hand-off).
    Running,
    /// Shut itself down.
    ShutDown {
        /// The exit code it gave.
        exit_code: u32,
    },
    /// Stopped by the hypervisor.
    Crashed(StopReason),
    /// The boot domain after hand-off: memory scrubbed and reclaimed.
    Destroyed,
}

/// A state change that the life cycle does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateError {
    /// The domain.
    pub domain: DomainId,
    /// Its state when the change was asked.
    pub state: DomainState,
}

/// One domain.
#[derive(Clone, Debug)]
pub struct Domain {
    id: DomainId,
    capabilities: DomainCapabilities,
    state: DomainState,
    entries: [Option<VcpuEntry>; MAX_VCPUS],
    console: bool,
    boot_order: Option<u16>,
    record: BuildRecord,
}

impl Domain {
    /// The id.
    pub fn id(&self) -> DomainId {
        self.id
    }
    /// The name.
    pub fn name(&self) -> &DomainName {
        &self.record.name
    }
    /// Capabilities.
    pub fn capabilities(&self) -> DomainCapabilities {
        self.capabilities
    }
    /// Current state.
    pub fn state(&self) -> DomainState {
        self.state
    }
    /// Memory size in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.record.memory_bytes
    }
    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> u16 {
        self.record.vcpus
    }
    /// The initial state of vCPU `index`, if set.
    pub fn vcpu_entry(&self, index: u16) -> Option<VcpuEntry> {
        self.entries.get(usize::from(index)).copied().flatten()
    }
    /// Whether the console focus was assigned to this domain.
    pub fn has_console(&self) -> bool {
        self.console
    }
    /// Requested position in the start order.
    pub fn boot_order(&self) -> Option<u16> {
        self.boot_order
    }
    /// What the hypervisor did to build it.
    pub fn build_record(&self) -> &BuildRecord {
        &self.record
    }

    /// Checks that the build record can take one more step: the dispatcher asks before it
    /// performs a step, so nothing happens that is not recorded.
    pub fn can_record(&self) -> bool {
        self.record.has_room()
    }

    /// Records a performed step (the caller checked [`Domain::can_record`] first).
    pub fn record(&mut self, step: BuildStep) -> Result<(), Error> {
        // A full record is refused before any effect; reaching this is a dispatcher bug, reported
        // as the protocol error for a full record rather than a panic.
        self.record.push(step).map_err(|_| Error::BuildRecordFull)
    }

    /// Sets vCPU `vcpu`'s initial state after validating it against the domain's memory.
    pub fn set_vcpu_entry(&mut self, vcpu: u16, entry: VcpuEntry) -> Result<(), Error> {
        if vcpu >= self.record.vcpus {
            return Err(Error::InvalidVcpu);
        }
        validate_entry(&entry, self.record.memory_bytes)?;
        // Nothing would ever start a domain whose first vCPU waits for a startup IPI.
        if vcpu == 0 && entry == VcpuEntry::WaitForStartupIpi {
            return Err(Error::InvalidEntryState);
        }
        self.entries[usize::from(vcpu)] = Some(entry);
        Ok(())
    }

    fn is_plan_complete(&self) -> bool {
        self.boot_order.is_some() && (0..self.record.vcpus).all(|v| self.vcpu_entry(v).is_some())
    }

    fn transition(
        &mut self,
        allowed_from: &[DomainState],
        to: DomainState,
    ) -> Result<(), StateError> {
        if allowed_from.contains(&self.state) {
            self.state = to;
            Ok(())
        } else {
            Err(StateError {
                domain: self.id,
                state: self.state,
            })
        }
    }
}

/// Checks an entry state against the domain's RAM (`platform::DomainRam` of `memory_bytes`:
/// an address in the hole below 4 GiB is outside).
pub fn validate_entry(entry: &VcpuEntry, memory_bytes: u64) -> Result<(), Error> {
    let ram = DomainRam::new(memory_bytes).ok_or(Error::InvalidEntryState)?;
    let inside = |gpa: u64, len: u64| ram.contains(gpa, len);
    let canonical = |addr: u64| ((addr as i64) << 16 >> 16) as u64 == addr;
    let ok = match *entry {
        VcpuEntry::Pvh32 {
            entry_eip,
            start_info_gpa,
        } => {
            inside(u64::from(entry_eip), 1)
                && inside(u64::from(start_info_gpa), HVM_START_INFO_SIZE)
        }
        // rip and rsp are guest-virtual (the guest's own tables translate them): only canonical.
        VcpuEntry::Long64 {
            rip,
            rsp,
            cr3,
            rsi: _,
        } => canonical(rip) && canonical(rsp) && cr3 % 4096 == 0 && inside(cr3, 4096),
        VcpuEntry::WaitForStartupIpi => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEntryState)
    }
}

/// All domains.
#[derive(Debug)]
pub struct DomainTable {
    slots: [Option<Domain>; MAX_DOMAINS],
    handed_off: bool,
}

impl Default for DomainTable {
    fn default() -> Self {
        Self::new()
    }
}

impl DomainTable {
    /// An empty table.
    pub const fn new() -> Self {
        DomainTable {
            slots: [const { None }; MAX_DOMAINS],
            handed_off: false,
        }
    }

    fn check_new(
        &self,
        name: &DomainName,
        memory_bytes: u64,
        vcpus: u16,
    ) -> Result<DomainId, Error> {
        if self.iter().any(|d| d.name() == name) {
            return Err(Error::NameTaken);
        }
        if memory_bytes == 0
            || !memory_bytes.is_multiple_of(4096)
            || memory_bytes > MAX_DOMAIN_MEMORY
        {
            return Err(Error::InvalidMemorySize);
        }
        if vcpus == 0 {
            return Err(Error::NoVcpus);
        }
        if usize::from(vcpus) > MAX_VCPUS {
            return Err(Error::TooManyVcpus);
        }
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Error::TooManyDomains)?;
        Ok(DomainId(free as u16))
    }

    fn insert(
        &mut self,
        id: DomainId,
        record: BuildRecord,
        capabilities: DomainCapabilities,
        state: DomainState,
    ) {
        let domain = Domain {
            id,
            capabilities,
            state,
            entries: [None; MAX_VCPUS],
            console: false,
            boot_order: None,
            record,
        };
        self.slots[usize::from(id.0)] = Some(domain);
    }

    /// Creates the boot domain (running, with the builder capability). Its vCPU entry is the
    /// hypervisor's business, so it is not validated here.
    pub fn create_boot_domain(&mut self, memory_bytes: u64, vcpus: u16) -> Result<DomainId, Error> {
        let name = DomainName::new(BOOT_DOMAIN_NAME).map_err(|_| Error::NameReserved)?;
        let id = self.check_new(&name, memory_bytes, vcpus)?;
        let capabilities = DomainCapabilities {
            granted: Capabilities::default(),
            builder: true,
        };
        self.insert(
            id,
            BuildRecord::new(name, memory_bytes, vcpus, capabilities.granted),
            capabilities,
            DomainState::Running,
        );
        Ok(id)
    }

    /// Reserves a slot for a planned domain after all checks, without inserting it: the
    /// dispatcher asks the platform to allocate memory first and inserts only on success.
    pub fn check_create(
        &self,
        name: &DomainName,
        memory_bytes: u64,
        vcpus: u16,
    ) -> Result<DomainId, Error> {
        if self.handed_off {
            return Err(Error::AfterHandOff);
        }
        if RESERVED_NAMES.contains(&name.as_str()) {
            return Err(Error::NameReserved);
        }
        self.check_new(name, memory_bytes, vcpus)
    }

    /// Inserts a planned domain at the id [`DomainTable::check_create`] returned.
    pub fn insert_planned(
        &mut self,
        id: DomainId,
        name: DomainName,
        memory_bytes: u64,
        vcpus: u16,
        granted: Capabilities,
    ) {
        let capabilities = DomainCapabilities {
            granted,
            builder: false,
        };
        self.insert(
            id,
            BuildRecord::new(name, memory_bytes, vcpus, granted),
            capabilities,
            DomainState::Planned,
        );
    }

    /// The domain with this id.
    pub fn get(&self, id: DomainId) -> Option<&Domain> {
        self.slots.get(usize::from(id.0))?.as_ref()
    }

    /// The domain with this id, mutable.
    pub fn get_mut(&mut self, id: DomainId) -> Option<&mut Domain> {
        self.slots.get_mut(usize::from(id.0))?.as_mut()
    }

    /// A domain a builder may still change: exists and is planned.
    pub fn planned_mut(&mut self, id: DomainId) -> Result<&mut Domain, Error> {
        match self.get_mut(id) {
            Some(domain) if domain.state == DomainState::Planned => Ok(domain),
            _ => Err(Error::UnknownDomain),
        }
    }

    /// Every domain, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Domain> {
        self.slots.iter().flatten()
    }

    /// Whether hand-off happened.
    pub fn handed_off(&self) -> bool {
        self.handed_off
    }

    /// Gives `id` the console focus after hand-off (at most one domain).
    pub fn assign_console(&mut self, id: DomainId) -> Result<(), Error> {
        self.planned_mut(id)?;
        if self.iter().any(|d| d.console && d.id != id) {
            return Err(Error::ConsoleAlreadyAssigned);
        }
        self.planned_mut(id)?.console = true;
        Ok(())
    }

    /// Records that `id` starts after hand-off at position `boot_order`.
    pub fn request_start(&mut self, id: DomainId, boot_order: u16) -> Result<(), Error> {
        let domain = self.planned_mut(id)?;
        if domain.boot_order.is_some() {
            return Err(Error::DuplicateStartRequest);
        }
        if self.iter().any(|d| d.boot_order == Some(boot_order)) {
            return Err(Error::DuplicateStartRequest);
        }
        self.planned_mut(id)?.boot_order = Some(boot_order);
        Ok(())
    }

    /// Checks the plan: every planned domain has every vCPU's entry state and a start request.
    pub fn check_plan(&self) -> Result<(), Error> {
        if self.handed_off {
            return Err(Error::AfterHandOff);
        }
        match self
            .iter()
            .filter(|d| d.state == DomainState::Planned)
            .all(Domain::is_plan_complete)
        {
            true => Ok(()),
            false => Err(Error::PlanIncomplete),
        }
    }

    /// Hand-off: checks the plan, marks the table handed off and the builder destroyed, and writes
    /// the planned domains into `order` in ascending boot order. Returns how many.
    pub fn hand_off(
        &mut self,
        builder: DomainId,
        order: &mut [DomainId; MAX_DOMAINS],
    ) -> Result<usize, Error> {
        self.check_plan()?;
        let mut count = 0;
        for domain in self.iter().filter(|d| d.state == DomainState::Planned) {
            order[count] = domain.id;
            count += 1;
        }
        let key = |table: &Self, id: DomainId| table.get(id).and_then(|d| d.boot_order);
        for i in 1..count {
            let mut j = i;
            while j > 0 && key(self, order[j - 1]) > key(self, order[j]) {
                order.swap(j - 1, j);
                j -= 1;
            }
        }
        self.handed_off = true;
        if let Some(domb) = self.get_mut(builder) {
            domb.state = DomainState::Destroyed;
            domb.capabilities.builder = false;
        }
        Ok(count)
    }

    /// Planned to running (after hand-off, in start order).
    pub fn mark_started(&mut self, id: DomainId) -> Result<(), StateError> {
        self.transition(id, &[DomainState::Planned], DomainState::Running)
    }

    /// Running to shut down.
    pub fn mark_shut_down(&mut self, id: DomainId, exit_code: u32) -> Result<(), StateError> {
        self.transition(
            id,
            &[DomainState::Running],
            DomainState::ShutDown { exit_code },
        )
    }

    /// Running to crashed.
    pub fn mark_crashed(&mut self, id: DomainId, reason: StopReason) -> Result<(), StateError> {
        self.transition(id, &[DomainState::Running], DomainState::Crashed(reason))
    }

    fn transition(
        &mut self,
        id: DomainId,
        from: &[DomainState],
        to: DomainState,
    ) -> Result<(), StateError> {
        let state = DomainState::Destroyed;
        self.get_mut(id)
            .ok_or(StateError { domain: id, state })?
            .transition(from, to)
    }

    /// The domain that gets serial input: the one assigned the console, else the first control
    /// domain, else none.
    pub fn console_focus_default(&self) -> Option<DomainId> {
        let live = |d: &&Domain| matches!(d.state, DomainState::Planned | DomainState::Running);
        self.iter()
            .filter(live)
            .find(|d| d.console)
            .or_else(|| {
                self.iter()
                    .filter(live)
                    .find(|d| d.capabilities.granted.control)
            })
            .map(|d| d.id)
    }

    /// The builder stopped (shut down or crashed) before hand-off: no planned domain will ever
    /// start, so the launch failed and the hypervisor should end the run with failure.
    pub fn builder_lost(&self) -> bool {
        !self.handed_off
            && self
                .iter()
                .any(|d| d.capabilities.builder && !matches!(d.state, DomainState::Running))
    }

    /// Recovery (the builder is lost, [`DomainTable::builder_lost`]): drops every domain the
    /// builder planned (nothing of its unfinished plan may start), takes the builder's
    /// capability away, inserts the hypervisor's recovery domain, planned, with `record` (what
    /// the hypervisor does to build it) and vCPU 0's `entry`, the console and the first start
    /// position, and counts as handed off: from here the table is as after a hand-off with this
    /// one domain, and builder requests stay refused.
    pub fn take_over_for_recovery(
        &mut self,
        record: BuildRecord,
        entry: VcpuEntry,
    ) -> Result<DomainId, Error> {
        if !self.builder_lost() {
            return Err(Error::AfterHandOff);
        }
        if record.vcpus != 1 {
            return Err(Error::InvalidVcpu);
        }
        validate_entry(&entry, record.memory_bytes)?;
        for slot in self.slots.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|d| d.state == DomainState::Planned)
            {
                *slot = None;
            }
        }
        for domain in self.slots.iter_mut().flatten() {
            domain.capabilities.builder = false;
        }
        let id = self.check_new(&record.name, record.memory_bytes, record.vcpus)?;
        let capabilities = DomainCapabilities {
            granted: record.capabilities,
            builder: false,
        };
        self.insert(id, record, capabilities, DomainState::Planned);
        let domain = self.planned_mut(id)?;
        domain.entries[0] = Some(entry);
        domain.console = true;
        domain.boot_order = Some(0);
        self.handed_off = true;
        Ok(id)
    }

    /// After hand-off: no domain runs or waits any more (the hypervisor may end the run).
    pub fn all_finished(&self) -> bool {
        self.handed_off
            && self
                .iter()
                .all(|d| !matches!(d.state, DomainState::Running | DomainState::Planned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DomainName {
        DomainName::new(s).unwrap()
    }

    fn pvh() -> VcpuEntry {
        VcpuEntry::Pvh32 {
            entry_eip: 0x10_0000,
            start_info_gpa: 0x1000,
        }
    }

    #[test]
    fn creation_checks_names_sizes_and_vcpus() {
        let mut table = DomainTable::new();
        let domb = table.create_boot_domain(0x100_0000, 1).unwrap();
        assert!(table.get(domb).unwrap().capabilities().builder);
        assert_eq!(
            table.check_create(&name("domb"), 4096, 1),
            Err(Error::NameReserved)
        );
        assert_eq!(
            table.check_create(&name("slipway"), 4096, 1),
            Err(Error::NameReserved)
        );
        assert_eq!(
            table.check_create(&name("a"), 0, 1),
            Err(Error::InvalidMemorySize)
        );
        assert_eq!(
            table.check_create(&name("a"), 4097, 1),
            Err(Error::InvalidMemorySize)
        );
        assert_eq!(
            table.check_create(&name("a"), MAX_DOMAIN_MEMORY + 4096, 1),
            Err(Error::InvalidMemorySize)
        );
        assert_eq!(table.check_create(&name("a"), 4096, 0), Err(Error::NoVcpus));
        assert_eq!(
            table.check_create(&name("a"), 4096, MAX_VCPUS as u16 + 1),
            Err(Error::TooManyVcpus)
        );
        let id = table.check_create(&name("a"), 4096, 1).unwrap();
        table.insert_planned(id, name("a"), 4096, 1, Capabilities::default());
        assert_eq!(
            table.check_create(&name("a"), 4096, 1),
            Err(Error::NameTaken)
        );
        for i in 2..MAX_DOMAINS {
            let n = name(&std::format!("d{i}"));
            let id = table.check_create(&n, 4096, 1).unwrap();
            table.insert_planned(id, n, 4096, 1, Capabilities::default());
        }
        assert_eq!(
            table.check_create(&name("full"), 4096, 1),
            Err(Error::TooManyDomains)
        );
    }

    extern crate std;

    #[test]
    fn entries_must_fit_the_domain() {
        let mem = 0x20_0000;
        assert_eq!(validate_entry(&pvh(), mem), Ok(()));
        let bad = [
            VcpuEntry::Pvh32 {
                entry_eip: 0x20_0000,
                start_info_gpa: 0,
            },
            VcpuEntry::Pvh32 {
                entry_eip: 0,
                start_info_gpa: 0x20_0000 - 8,
            },
            VcpuEntry::Long64 {
                rip: 0x8000_0000_0000,
                rsp: 0,
                cr3: 0,
                rsi: 0,
            },
            VcpuEntry::Long64 {
                rip: 0,
                rsp: 0,
                cr3: 0x20_0000,
                rsi: 0,
            },
            VcpuEntry::Long64 {
                rip: 0,
                rsp: 0,
                cr3: 0x1234,
                rsi: 0,
            },
            VcpuEntry::Long64 {
                rip: 0,
                rsp: u64::MAX - 0x8000_0000_0000,
                cr3: 0,
                rsi: 0,
            },
        ];
        for entry in bad {
            assert_eq!(
                validate_entry(&entry, mem),
                Err(Error::InvalidEntryState),
                "{entry:?}"
            );
        }
        let ok = VcpuEntry::Long64 {
            rip: 0xffff_ffff_8000_0000,
            rsp: 0x1000,
            cr3: 0x1f_f000,
            rsi: 7,
        };
        assert_eq!(validate_entry(&ok, mem), Ok(()));
    }

    #[test]
    fn a_full_build_record_refuses_the_next_step() {
        let mut table = DomainTable::new();
        table.create_boot_domain(0x100_0000, 1).unwrap();
        let id = table.check_create(&name("web"), 0x20_0000, 1).unwrap();
        table.insert_planned(id, name("web"), 0x20_0000, 1, Capabilities::default());
        let web = table.planned_mut(id).unwrap();
        for _ in 0..crate::build_record::MAX_BUILD_STEPS {
            assert!(web.can_record());
            assert_eq!(web.record(BuildStep::AssignConsole), Ok(()));
        }
        assert!(!web.can_record());
        assert_eq!(
            web.record(BuildStep::AssignConsole),
            Err(Error::BuildRecordFull)
        );
        assert_eq!(
            web.build_record().steps().len(),
            crate::build_record::MAX_BUILD_STEPS
        );
    }

    #[test]
    fn hand_off_needs_a_complete_plan_and_orders_starts() {
        let mut table = DomainTable::new();
        let domb = table.create_boot_domain(0x100_0000, 1).unwrap();
        let mut ids = std::vec::Vec::new();
        for (n, vcpus) in [("web", 2u16), ("ctl", 1)] {
            let id = table.check_create(&name(n), 0x20_0000, vcpus).unwrap();
            table.insert_planned(
                id,
                name(n),
                0x20_0000,
                vcpus,
                Capabilities {
                    control: n == "ctl",
                    ..Default::default()
                },
            );
            ids.push(id);
        }
        let (web, ctl) = (ids[0], ids[1]);
        let mut order = [DomainId(0); MAX_DOMAINS];
        assert_eq!(table.hand_off(domb, &mut order), Err(Error::PlanIncomplete));
        assert!(!table.builder_lost());
        table
            .planned_mut(web)
            .unwrap()
            .set_vcpu_entry(0, pvh())
            .unwrap();
        assert_eq!(
            table.planned_mut(web).unwrap().set_vcpu_entry(2, pvh()),
            Err(Error::InvalidVcpu)
        );
        table
            .planned_mut(ctl)
            .unwrap()
            .set_vcpu_entry(0, pvh())
            .unwrap();
        table.request_start(web, 5).unwrap();
        assert_eq!(
            table.request_start(web, 6),
            Err(Error::DuplicateStartRequest)
        );
        assert_eq!(
            table.request_start(ctl, 5),
            Err(Error::DuplicateStartRequest)
        );
        table.request_start(ctl, 1).unwrap();
        assert_eq!(
            table.hand_off(domb, &mut order),
            Err(Error::PlanIncomplete),
            "web's vCPU 1 has no entry"
        );
        table
            .planned_mut(web)
            .unwrap()
            .set_vcpu_entry(1, pvh())
            .unwrap();
        assert_eq!(table.console_focus_default(), Some(ctl));
        assert_eq!(table.hand_off(domb, &mut order), Ok(2));
        assert_eq!(&order[..2], &[ctl, web]);
        assert!(table.handed_off());
        assert_eq!(table.get(domb).unwrap().state(), DomainState::Destroyed);
        assert!(!table.get(domb).unwrap().capabilities().builder);
        assert_eq!(table.hand_off(domb, &mut order), Err(Error::AfterHandOff));
        assert_eq!(
            table.check_create(&name("late"), 4096, 1),
            Err(Error::AfterHandOff)
        );
        assert!(!table.all_finished());
        table.mark_started(ctl).unwrap();
        table.mark_started(web).unwrap();
        assert!(table.mark_started(web).is_err());
        table.mark_shut_down(ctl, 0).unwrap();
        table.mark_crashed(web, StopReason::TripleFault).unwrap();
        assert!(table.mark_shut_down(web, 0).is_err());
        assert!(table.all_finished());
    }

    #[test]
    fn a_builder_stopping_before_hand_off_fails_the_launch() {
        let mut table = DomainTable::new();
        let domb = table.create_boot_domain(0x10_0000, 1).unwrap();
        assert!(!table.builder_lost());
        table.mark_crashed(domb, StopReason::TripleFault).unwrap();
        assert!(table.builder_lost());
        assert!(!table.all_finished());
    }

    #[test]
    fn console_is_assigned_once() {
        let mut table = DomainTable::new();
        table.create_boot_domain(0x10_0000, 1).unwrap();
        let a = table.check_create(&name("a"), 4096, 1).unwrap();
        table.insert_planned(a, name("a"), 4096, 1, Capabilities::default());
        let b = table.check_create(&name("b"), 4096, 1).unwrap();
        table.insert_planned(
            b,
            name("b"),
            4096,
            1,
            Capabilities {
                control: true,
                ..Default::default()
            },
        );
        assert_eq!(table.console_focus_default(), Some(b));
        table.assign_console(a).unwrap();
        table.assign_console(a).unwrap();
        assert_eq!(table.assign_console(b), Err(Error::ConsoleAlreadyAssigned));
        assert_eq!(table.console_focus_default(), Some(a));
        assert_eq!(table.assign_console(DomainId(9)), Err(Error::UnknownDomain));
    }
}
