//! The recovery environment's life in the core (`docs/architecture.md`, "Recovery
//! environment"), the same for every backend: the recovery image measured before domB runs, the
//! watchdog on domB, and, when domB stopped without handing off, the decision (measured), the
//! recovery domain built from [`crate::recovery`]'s fixed plan, the seal, its start with the
//! console focus, and the run's verdict (failure: a recovery run is never a good boot).

use slipway_measure::events::{DecisionAction, DecisionReason};
use slipway_protocol::v1::DomainId;

use super::{FrameAllocator, Host, Hypervisor, PhysMemory, StopReason, Vcpus, allocate_domain};
use crate::recovery::{self, BuilderEnd};

impl<M: PhysMemory, F: FrameAllocator, V: Vcpus, H: Host> Hypervisor<'_, M, F, V, H> {
    /// Measures the recovery module (if `recovery=` names one) into PCR19, bound to its name:
    /// called once, right after the hypervisor's own start events (domB's image) and before domB
    /// runs, so the image the hypervisor may start on its own is on record before anything else.
    pub fn measure_recovery_image(&mut self) {
        let (Some(module), Some(m)) = (self.recovery.module, self.measurement.as_mut()) else {
            return;
        };
        let Some(name) = self.modules.get(module.index).map(|m| m.name.clone()) else {
            return;
        };
        let before = m.failure();
        if m.measure_recovery_image(name.as_str(), module.image)
            .is_ok()
        {
            self.host.log(format_args!(
                "measurement: recovery module `{}` ({} bytes) in PCR19",
                name.as_str(),
                module.image.len()
            ));
        } else if let (None, Some(failure)) = (before, m.failure()) {
            self.host.measurement_failed(failure);
        }
    }

    /// Arms the watchdog: domB started at TSC `now`, the TSC runs at `tsc_hz`.
    pub fn start_watchdog(&mut self, now: u64, tsc_hz: u64) {
        self.recovery.deadline = Some(recovery::watchdog_deadline(
            now,
            self.recovery.watchdog_seconds,
            tsc_hz,
        ));
        let module = self
            .recovery
            .module
            .and_then(|m| self.modules.get(m.index))
            .map_or("none (no recovery= on the command line)", |m| {
                m.name.as_str()
            });
        self.host.log(format_args!(
            "recovery: watchdog: domB must hand off within {} s (domb_watchdog=); recovery module: {module}",
            self.recovery.watchdog_seconds
        ));
    }

    /// Between guest runs (the binary calls it on CPU 0 at TSC `now`): stops domB if it has not
    /// handed off by the deadline; recovery follows once it is gone.
    pub fn check_watchdog(&mut self, now: u64) {
        let Some(deadline) = self.recovery.deadline else {
            return;
        };
        if self.table.handed_off() || self.verdict.is_some() {
            self.recovery.deadline = None;
            return;
        }
        if !recovery::watchdog_expired(now, deadline) {
            return;
        }
        self.recovery.deadline = None;
        let Some(domb) = self.domb else {
            return;
        };
        let slot = usize::from(domb.0);
        let Some(domain) = self.domains[slot].as_mut().filter(|d| !d.dying) else {
            return;
        };
        self.host.log(format_args!(
            "watchdog: domB has not handed off {} s after it started (domb_watchdog={}): stopping it",
            self.recovery.watchdog_seconds, self.recovery.watchdog_seconds
        ));
        self.host.log(format_args!(
            "domain {} stopped: {}",
            domain.name,
            StopReason::WatchdogExpired
        ));
        // A vCPU on a pCPU now is never entered again; the domain goes once none runs.
        domain.dying = true;
        let _ = self.table.mark_crashed(domb, StopReason::WatchdogExpired);
        self.sched.remove_domain(domb);
        self.reap(slot);
    }

    /// The reason the recovery domain was started for, if it was.
    pub fn recovery_ran(&self) -> Option<DecisionReason> {
        self.recovery.ran
    }

    /// domB stopped without handing off and everything it built is gone: decide, measure and
    /// print why, then build, seal and start the recovery domain. Returns whether it runs
    /// (otherwise the run ends with failure: no recovery module, or it could not be built,
    /// sealed or started).
    pub(super) fn enter_recovery(&mut self) -> bool {
        if self.recovery.entered {
            return false;
        }
        self.recovery.entered = true;
        self.recovery.deadline = None;
        let Some(end) = self
            .domb
            .and_then(|id| self.table.get(id))
            .and_then(|d| BuilderEnd::from_state(d.state()))
        else {
            return false;
        };
        let module = self.recovery.module.and_then(|m| {
            self.modules
                .get(m.index)
                .map(|host| (m, host.name.clone(), host.cmdline.clone()))
        });
        let decision = recovery::decide(end, module.as_ref().map(|(_, name, _)| name.as_str()));
        self.host.log(format_args!(
            "RECOVERY: {end}: reason {} (PCR19 decision reason {}), action {}",
            decision.reason.name(),
            decision.reason as u8,
            decision.action.name()
        ));
        match self.measurement.as_mut() {
            Some(m) => {
                let before = m.failure();
                match m.record_recovery_decision(&decision) {
                    Ok(()) => self
                        .host
                        .log(format_args!("measurement: recovery decision in PCR19")),
                    Err(error) => self.host.log(format_args!(
                        "measurement: the recovery decision could not be measured: {error}"
                    )),
                }
                if let (None, Some(failure)) = (before, m.failure()) {
                    self.host.measurement_failed(failure);
                }
            }
            None => self.host.log(format_args!(
                "measurement: no TPM: the recovery decision is not measured"
            )),
        }
        let (reason, action) = (decision.reason, decision.action);
        let Some((module, name, cmdline)) =
            module.filter(|_| action == DecisionAction::StartRecoveryOnly)
        else {
            self.host.log(format_args!(
                "RECOVERY: no recovery module (the hypervisor command line has no `recovery=<module name>`): halting"
            ));
            self.seal_recovery(None);
            return false;
        };
        // The module's own arguments: the words after its name on its command line.
        let arguments = cmdline.split_once(' ').map_or("", |(_, rest)| rest);
        match self.build_recovery_domain(module, &name, arguments, reason) {
            Ok(id) => {
                if !self.seal_recovery(Some(id)) {
                    self.destroy(usize::from(id.0));
                    return false;
                }
                self.start_recovery_domain(id, reason)
            }
            Err(why) => {
                self.host.log(format_args!(
                    "RECOVERY: the recovery domain from module `{}` cannot be built: {why}; halting",
                    name.as_str()
                ));
                self.seal_recovery(None);
                false
            }
        }
    }

    /// Builds the recovery domain from the fixed plan (memory, segments, start info); it is
    /// planned in the table with the record of exactly these steps. Nothing of it is left when
    /// this fails.
    fn build_recovery_domain(
        &mut self,
        module: recovery::RecoveryModule<'_>,
        name: &slipway_protocol::v1::ModuleName,
        arguments: &str,
        reason: DecisionReason,
    ) -> Result<DomainId, &'static str> {
        let image = module.image;
        let plan = recovery::plan(image, reason, arguments).map_err(|e| {
            self.host.log(format_args!("RECOVERY: fixed plan: {e}"));
            "the fixed plan cannot hold the module"
        })?;
        let index = u16::try_from(module.index).map_err(|_| "module index out of range")?;
        let id = recovery::insert_plan(self.table, &plan, index, name, image)
            .map_err(|_| "the domain table refused the recovery domain")?;
        let mut hw = allocate_domain(
            &mut self.mem,
            &mut self.alloc,
            &mut self.tags,
            (self.table_kind, self.ept_large_pages),
            id,
            recovery::RECOVERY_MEMORY,
            1,
        )
        .map_err(|_| "out of memory for the recovery domain")?;
        let _ = hw.name.push_str(recovery::RECOVERY_DOMAIN_NAME);
        // The segments come from the very bytes the build record hashed.
        let mut loaded = Ok(());
        for segment in plan.image.segments.iter().filter(|s| s.file_len > 0) {
            let bytes = usize::try_from(segment.offset)
                .ok()
                .zip(usize::try_from(segment.offset + segment.file_len).ok())
                .and_then(|(start, end)| image.get(start..end));
            loaded = match bytes {
                Some(bytes) => hw
                    .memory
                    .write(&mut self.mem, segment.gpa, bytes)
                    .map_err(|_| "copying the recovery image failed"),
                None => Err("a segment lies outside the recovery module"),
            };
            if loaded.is_err() {
                break;
            }
        }
        if loaded.is_ok() {
            loaded = hw
                .memory
                .write(&mut self.mem, plan.start_info_gpa, &plan.start_info)
                .map_err(|_| "writing the recovery start info failed");
        }
        if let Err(why) = loaded {
            // Nothing of it may start: its memory goes back scrubbed.
            super::release_unstarted(&mut self.mem, &mut self.alloc, &mut self.tags, hw);
            return Err(why);
        }
        let slot = usize::from(id.0);
        self.host.console_open(slot);
        self.domains[slot] = Some(hw);
        self.host.log(format_args!(
            "recovery: domain `{}` from module `{}`: {} KiB RAM, 1 vCPU, entry {:#x}, command line \"{}\"",
            recovery::RECOVERY_DOMAIN_NAME,
            name.as_str(),
            recovery::RECOVERY_MEMORY >> 10,
            plan.image.entry,
            plan.cmdline.as_str()
        ));
        Ok(id)
    }

    /// Build record (if a domain was built) and separators, as at a hand-off: the PCRs are final
    /// and read back. Returns false when the seal was refused (the recovery domain must not start).
    fn seal_recovery(&mut self, built: Option<DomainId>) -> bool {
        let Some(m) = self.measurement.as_mut() else {
            return true;
        };
        let domain = built.and_then(|id| self.table.get(id));
        let planned: heapless::Vec<&crate::domain::Domain, 1> = domain.into_iter().collect();
        let before = m.failure();
        let result = m.seal(&planned);
        if let (None, Some(failure)) = (before, m.failure()) {
            self.host.measurement_failed(failure);
        }
        match result {
            // A measurement that failed earlier is reported by `measurement_sealed`; the
            // recovery domain still starts (as planned domains do), and the run fails.
            Ok(sealed) => {
                self.host.read_back_pcrs(m);
                self.host.measurement_sealed(m, sealed);
                true
            }
            Err(error) => {
                self.host.log(format_args!(
                    "RECOVERY: measurement could not be sealed: {error}; halting"
                ));
                false
            }
        }
    }

    /// Gives the recovery domain the console and starts it.
    fn start_recovery_domain(&mut self, id: DomainId, reason: DecisionReason) -> bool {
        self.announced[usize::from(id.0)] = true;
        self.host
            .milestone(format_args!("planned:{}", recovery::RECOVERY_DOMAIN_NAME));
        self.mux.set_focus(Some(id));
        self.host.log(format_args!(
            "console: input goes to {} (the recovery environment)",
            recovery::RECOVERY_DOMAIN_NAME
        ));
        match self.start_domain(id) {
            Ok(()) => {
                let _ = self.table.mark_started(id);
                self.host
                    .milestone(format_args!("started:{}", recovery::RECOVERY_DOMAIN_NAME));
                self.recovery.ran = Some(reason);
                true
            }
            Err(error) => {
                self.host.log(format_args!(
                    "RECOVERY: the recovery domain cannot start: {error}; halting"
                ));
                let _ = self.table.mark_started(id);
                let _ = self.table.mark_crashed(id, StopReason::InvalidState);
                self.destroy(usize::from(id.0));
                false
            }
        }
    }
}
