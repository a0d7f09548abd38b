//! The recovery environment on the hardware: the watchdog on domB, and the recovery domain the
//! hypervisor builds itself when domB stopped without handing off. The decisions, the fixed plan
//! and the build record are `slipway_hv_core::recovery`'s; this performs them.

use slipway_hv_core::addr::PhysAddr;
use slipway_hv_core::domain::StopReason;
use slipway_hv_core::recovery::{self, BuilderEnd, RecoveryOptions};
use slipway_measure::events::{DecisionAction, DecisionReason};
use slipway_protocol::v1::DomainId;

use super::{Hv, allocate_domain_hw, module_bytes};
use crate::hvprintln;

/// The recovery options of this boot and what became of them.
pub struct RecoveryState {
    /// The boot module `recovery=` names (its index), if any.
    pub module: Option<usize>,
    /// domB's hand-off deadline in seconds (`domb_watchdog=`).
    pub watchdog_seconds: u64,
    /// The TSC deadline, once domB started.
    deadline: Option<u64>,
    /// Recovery was entered (it happens at most once).
    entered: bool,
    /// The recovery domain was started for this reason.
    pub ran: Option<DecisionReason>,
}

impl RecoveryState {
    /// The state for the command line's options; an error (which refuses the boot) when an
    /// option is malformed or `recovery=` names no module of this boot.
    pub fn new<'a>(
        cmdline: &'a [u8],
        names: &[slipway_protocol::v1::ModuleName],
    ) -> Result<Self, recovery::OptionError<'a>> {
        let options: RecoveryOptions<'a> = recovery::parse_options(cmdline)?;
        let module = options.find_module(names)?;
        Ok(RecoveryState {
            module,
            watchdog_seconds: options.watchdog_seconds,
            deadline: None,
            entered: false,
            ran: None,
        })
    }

    /// Starts the watchdog: domB started at TSC `now`.
    pub fn arm(&mut self, now: u64) {
        self.deadline = Some(recovery::watchdog_deadline(
            now,
            self.watchdog_seconds,
            crate::tsc::hz(),
        ));
    }
}

impl Hv {
    /// On CPU 0 between guest runs: stops domB if it has not handed off by the deadline.
    pub fn check_watchdog(&mut self) {
        let Some(deadline) = self.recovery.deadline else {
            return;
        };
        if self.table.handed_off() {
            self.recovery.deadline = None;
            return;
        }
        if !recovery::watchdog_expired(crate::tsc::now(), deadline) {
            return;
        }
        self.recovery.deadline = None;
        let Some(domb) = self.domb else {
            return;
        };
        let slot = usize::from(domb.0);
        if self.domains[slot].as_ref().is_some_and(|d| !d.dying) {
            hvprintln!(
                "watchdog: domB has not handed off {} s after it started (domb_watchdog={}): stopping it",
                self.recovery.watchdog_seconds,
                self.recovery.watchdog_seconds
            );
            self.stop(slot, StopReason::WatchdogExpired);
        }
    }

    /// domB stopped without handing off and everything it built is gone: decide, measure and
    /// print why, then start the recovery domain. Returns whether it runs (otherwise the run
    /// ends with failure: no recovery module, or it could not be built).
    pub(super) fn enter_recovery(&mut self) -> bool {
        if self.recovery.entered {
            return false;
        }
        self.recovery.entered = true;
        let Some(end) = self
            .domb
            .and_then(|id| self.table.get(id))
            .and_then(|d| BuilderEnd::from_state(d.state()))
        else {
            return false;
        };
        let module = self
            .recovery
            .module
            .map(|index| self.modules[index].clone());
        let decision = recovery::decide(end, module.as_ref().map(|m| m.name.as_str()));
        hvprintln!(
            "RECOVERY: {end}: reason {} (PCR19 decision reason {}), action {}",
            decision.reason.name(),
            decision.reason as u8,
            decision.action.name()
        );
        match self.measurement.as_mut() {
            Some(m) => {
                let before = m.failure();
                match m.record_recovery_decision(&decision) {
                    Ok(()) => hvprintln!("measurement: recovery decision in PCR19"),
                    Err(error) => hvprintln!(
                        "measurement: the recovery decision could not be measured: {error}"
                    ),
                }
                if let (None, Some(failure)) = (before, m.failure()) {
                    crate::measurement::report_failure(failure);
                }
            }
            None => hvprintln!("measurement: no TPM: the recovery decision is not measured"),
        }
        let (reason, action) = (decision.reason, decision.action);
        let Some(module) = module
            .as_ref()
            .filter(|_| action == DecisionAction::StartRecoveryOnly)
        else {
            hvprintln!(
                "RECOVERY: no recovery module (the hypervisor command line has no `recovery=<module name>`): halting"
            );
            self.seal_recovery(None);
            return false;
        };
        match self.build_recovery_domain(module, reason) {
            Ok(id) => {
                if !self.seal_recovery(Some(id)) {
                    self.destroy(usize::from(id.0));
                    return false;
                }
                self.start_recovery_domain(id, reason)
            }
            Err(why) => {
                hvprintln!(
                    "RECOVERY: the recovery domain from module `{}` cannot be built: {why}; halting",
                    module.name.as_str()
                );
                self.seal_recovery(None);
                false
            }
        }
    }

    /// Builds the recovery domain from the fixed plan (memory, segments, start info); it is
    /// planned in the table with the record of these steps.
    fn build_recovery_domain(
        &mut self,
        module: &super::BootModule,
        reason: DecisionReason,
    ) -> Result<DomainId, &'static str> {
        let index = self.recovery.module.ok_or("no recovery module")?;
        let image = module_bytes(module.range);
        let arguments = module.cmdline.split_once(' ').map_or("", |(_, rest)| rest);
        let plan = recovery::plan(image, reason, arguments).map_err(|e| {
            hvprintln!("RECOVERY: fixed plan: {e}");
            "the fixed plan cannot hold the module"
        })?;
        let id = recovery::insert_plan(self.table, &plan, index as u16, &module.name, image)
            .map_err(|_| "the domain table refused the recovery domain")?;
        let mut hw = allocate_domain_hw(
            &mut self.mem,
            &mut self.alloc,
            &mut self.asids,
            id,
            recovery::RECOVERY_MEMORY,
            1,
        )
        .map_err(|_| "out of memory for the recovery domain")?;
        let _ = hw.name.push_str(recovery::RECOVERY_DOMAIN_NAME);
        let slot = usize::from(id.0);
        self.domains[slot] = Some(hw);
        let loaded = self.domains[slot]
            .as_mut()
            .ok_or("recovery domain vanished")
            .and_then(|domain| {
                for segment in plan.image.segments.iter().filter(|s| s.file_len > 0) {
                    let src = PhysAddr(module.range.start.0 + segment.offset);
                    domain
                        .memory
                        .copy_from_host(&mut self.mem, src, segment.gpa, segment.file_len)
                        .map_err(|_| "copying the recovery image failed")?;
                }
                domain
                    .memory
                    .write(&mut self.mem, plan.start_info_gpa, &plan.start_info)
                    .map_err(|_| "writing the recovery start info failed")
            });
        if let Err(why) = loaded {
            // Nothing of it may start: its memory goes back scrubbed.
            self.destroy(slot);
            return Err(why);
        }
        hvprintln!(
            "recovery: domain `{}` from module `{}`: {} KiB RAM, 1 vCPU, entry {:#x}, command line \"{}\"",
            recovery::RECOVERY_DOMAIN_NAME,
            module.name.as_str(),
            recovery::RECOVERY_MEMORY >> 10,
            plan.image.entry,
            plan.cmdline.as_str()
        );
        Ok(id)
    }

    /// Build record (if a domain was built) and separators, as at a hand-off: the PCRs are final.
    /// Returns false when the seal was refused (the recovery domain must not start).
    fn seal_recovery(&mut self, built: Option<DomainId>) -> bool {
        let Some(m) = self.measurement.as_mut() else {
            return true;
        };
        let domain = built.and_then(|id| self.table.get(id));
        let planned: heapless::Vec<&slipway_hv_core::domain::Domain, 1> =
            domain.into_iter().collect();
        let before = m.failure();
        let result = m.seal(&planned);
        if let (None, Some(failure)) = (before, m.failure()) {
            crate::measurement::report_failure(failure);
        }
        match result {
            // A measurement that failed earlier is reported by `after_hand_off`; the recovery
            // domain still starts (as planned domains do), and the run fails.
            Ok(sealed) => {
                crate::measurement::print_tpm_pcrs(m);
                crate::measurement::after_hand_off(m, sealed);
                true
            }
            Err(error) => {
                hvprintln!("RECOVERY: measurement could not be sealed: {error}; halting");
                false
            }
        }
    }

    /// Gives the recovery domain the console and starts it.
    fn start_recovery_domain(&mut self, id: DomainId, reason: DecisionReason) -> bool {
        self.announced[usize::from(id.0)] = true;
        crate::tsc::milestone(format_args!("planned:{}", recovery::RECOVERY_DOMAIN_NAME));
        self.mux.set_focus(Some(id));
        hvprintln!(
            "console: input goes to {} (the recovery environment)",
            recovery::RECOVERY_DOMAIN_NAME
        );
        match self.start_domain(id) {
            Ok(()) => {
                let _ = self.table.mark_started(id);
                crate::tsc::milestone(format_args!("started:{}", recovery::RECOVERY_DOMAIN_NAME));
                self.recovery.ran = Some(reason);
                true
            }
            Err(error) => {
                hvprintln!("RECOVERY: the recovery domain cannot start: {error}; halting");
                let _ = self.table.mark_started(id);
                let _ = self.table.mark_crashed(id, StopReason::InvalidState);
                self.destroy(usize::from(id.0));
                false
            }
        }
    }
}
