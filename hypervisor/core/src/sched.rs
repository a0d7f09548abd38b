//! Round-robin scheduling of vCPUs over physical CPUs, and per-pCPU run accounting.
//!
//! Each vCPU is placed on one pCPU's run queue when its domain starts (the queue with the fewest
//! vCPUs, so two single-vCPU domains on two pCPUs run side by side) and stays there: no migration,
//! so no vCPU state moves between CPUs. Each pCPU shares its time between **domains**, not vCPUs:
//! when a slice (counted in timer ticks; the local APIC timer drives [`Scheduler::tick`]) ends,
//! the next slice goes to the next domain (in domain-id order, cyclically) that has a vCPU queued
//! on this pCPU, and within a domain its vCPUs take turns. So a domain with eight vCPUs on a pCPU
//! gets one share of it, like a domain with one; every domain has the same weight (weights may
//! come later). The binary holds the scheduler behind a lock; every method is short and
//! allocation-free.

use core::fmt;

use crate::domain::{MAX_DOMAINS, MAX_VCPUS};
use slipway_protocol::v1::DomainId;

/// Most physical CPUs scheduled.
pub const MAX_PCPUS: usize = 8;
/// Most vCPUs in the system.
pub const MAX_QUEUED: usize = MAX_DOMAINS * MAX_VCPUS;

/// One vCPU of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuRef {
    /// The domain.
    pub domain: DomainId,
    /// The vCPU index.
    pub vcpu: u16,
}

/// Why a vCPU could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// the pCPU index is not below the number of pCPUs
    NoSuchPcpu(usize),
    /// the run queue is full
    QueueFull,
    /// the vCPU is queued already
    AlreadyQueued(VcpuRef),
}

#[derive(Clone, Copy)]
struct RunQueue {
    entries: [Option<VcpuRef>; MAX_QUEUED],
    head: usize,
    len: usize,
}

impl RunQueue {
    const EMPTY: RunQueue = RunQueue {
        entries: [None; MAX_QUEUED],
        head: 0,
        len: 0,
    };

    fn push(&mut self, vcpu: VcpuRef) -> Result<(), SchedError> {
        if self.len == MAX_QUEUED {
            return Err(SchedError::QueueFull);
        }
        self.entries[(self.head + self.len) % MAX_QUEUED] = Some(vcpu);
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<VcpuRef> {
        if self.len == 0 {
            return None;
        }
        let vcpu = self.entries[self.head].take();
        self.head = (self.head + 1) % MAX_QUEUED;
        self.len -= 1;
        vcpu
    }

    /// Takes out the first queued vCPU for which `wanted` holds; the others keep their order.
    fn take_first(&mut self, wanted: &dyn Fn(VcpuRef) -> bool) -> Option<VcpuRef> {
        let mut found = None;
        for _ in 0..self.len {
            if let Some(vcpu) = self.pop() {
                if found.is_none() && wanted(vcpu) {
                    found = Some(vcpu);
                } else {
                    // Cannot fail: the queue just shrank by one.
                    let _ = self.push(vcpu);
                }
            }
        }
        found
    }

    fn iter(&self) -> impl Iterator<Item = VcpuRef> + '_ {
        (0..self.len).filter_map(move |i| self.entries[(self.head + i) % MAX_QUEUED])
    }

    fn retain(&mut self, keep: &dyn Fn(VcpuRef) -> bool) -> usize {
        let mut removed = 0;
        for _ in 0..self.len {
            if let Some(vcpu) = self.pop() {
                if keep(vcpu) {
                    // Cannot fail: the queue just shrank by one.
                    let _ = self.push(vcpu);
                } else {
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[derive(Clone, Copy)]
struct Pcpu {
    queue: RunQueue,
    current: Option<VcpuRef>,
    ticks_left: u32,
    /// The domain that had the last slice (where the round over domains continues).
    last_domain: Option<DomainId>,
}

/// Run queues of every pCPU.
pub struct Scheduler {
    pcpus: [Pcpu; MAX_PCPUS],
    pcpu_count: usize,
    slice_ticks: u32,
}

impl Scheduler {
    /// A scheduler for `pcpu_count` pCPUs (clamped to 1..=MAX_PCPUS) with slices of
    /// `slice_ticks` timer ticks (at least 1).
    pub const fn new(pcpu_count: usize, slice_ticks: u32) -> Self {
        let count = if pcpu_count == 0 {
            1
        } else if pcpu_count > MAX_PCPUS {
            MAX_PCPUS
        } else {
            pcpu_count
        };
        Scheduler {
            pcpus: [Pcpu {
                queue: RunQueue::EMPTY,
                current: None,
                ticks_left: 0,
                last_domain: None,
            }; MAX_PCPUS],
            pcpu_count: count,
            slice_ticks: if slice_ticks == 0 { 1 } else { slice_ticks },
        }
    }

    /// Number of pCPUs scheduled.
    pub fn pcpu_count(&self) -> usize {
        self.pcpu_count
    }

    fn load(&self, pcpu: usize) -> usize {
        let p = &self.pcpus[pcpu];
        p.queue.len + usize::from(p.current.is_some())
    }

    fn contains(&self, vcpu: VcpuRef) -> bool {
        self.pcpus[..self.pcpu_count]
            .iter()
            .any(|p| p.current == Some(vcpu) || p.queue.iter().any(|q| q == vcpu))
    }

    /// Queues a vCPU on the least loaded pCPU (lowest index on ties); returns that pCPU.
    pub fn add(&mut self, vcpu: VcpuRef) -> Result<usize, SchedError> {
        let pcpu = (0..self.pcpu_count)
            .min_by_key(|p| self.load(*p))
            .unwrap_or(0);
        self.add_to(pcpu, vcpu)?;
        Ok(pcpu)
    }

    /// Queues a vCPU on a given pCPU.
    pub fn add_to(&mut self, pcpu: usize, vcpu: VcpuRef) -> Result<(), SchedError> {
        if pcpu >= self.pcpu_count {
            return Err(SchedError::NoSuchPcpu(pcpu));
        }
        if self.contains(vcpu) {
            return Err(SchedError::AlreadyQueued(vcpu));
        }
        self.pcpus[pcpu].queue.push(vcpu)
    }

    /// What `pcpu` should run now: the current vCPU while its slice lasts, else a vCPU of the
    /// next domain after the last one served (cyclically by domain id) among those queued here,
    /// the one of that domain waiting longest (the current one goes to the back). `None`: idle.
    pub fn pick(&mut self, pcpu: usize) -> Option<VcpuRef> {
        let slice = self.slice_ticks;
        let p = self
            .pcpus
            .get_mut(pcpu)
            .filter(|_| pcpu < self.pcpu_count)?;
        if p.current.is_some() && p.ticks_left > 0 {
            return p.current;
        }
        if let Some(previous) = p.current.take() {
            // Cannot fail: the vCPU came out of this queue.
            let _ = p.queue.push(previous);
        }
        // Distance of a domain from the last one served, going round the ids once.
        let after = p.last_domain.map_or(0, |d| usize::from(d.0) + 1);
        let distance =
            |d: DomainId| (usize::from(d.0) + MAX_DOMAINS - after % MAX_DOMAINS) % MAX_DOMAINS;
        let next_domain = p
            .queue
            .iter()
            .map(|v| v.domain)
            .min_by_key(|d| distance(*d))?;
        p.current = p.queue.take_first(&|v| v.domain == next_domain);
        p.last_domain = Some(next_domain);
        p.ticks_left = slice;
        p.current
    }

    /// A timer tick on `pcpu`. Returns `true` when the running vCPU's slice is used up and
    /// another vCPU is waiting (the caller then exits to [`Scheduler::pick`]).
    pub fn tick(&mut self, pcpu: usize) -> bool {
        let Some(p) = self.pcpus.get_mut(pcpu).filter(|_| pcpu < self.pcpu_count) else {
            return false;
        };
        if p.current.is_none() {
            return p.queue.len > 0;
        }
        p.ticks_left = p.ticks_left.saturating_sub(1);
        p.ticks_left == 0 && p.queue.len > 0
    }

    /// Gives up the rest of the current slice on `pcpu`.
    pub fn yield_now(&mut self, pcpu: usize) {
        if let Some(p) = self.pcpus.get_mut(pcpu) {
            p.ticks_left = 0;
        }
    }

    /// Removes one vCPU (halted for good, or its domain stopped) wherever it is.
    pub fn remove(&mut self, vcpu: VcpuRef) -> bool {
        self.remove_where(&|v| v == vcpu) > 0
    }

    /// Removes every vCPU of `domain`; returns how many.
    pub fn remove_domain(&mut self, domain: DomainId) -> usize {
        self.remove_where(&|v| v.domain == domain)
    }

    fn remove_where(&mut self, gone: &dyn Fn(VcpuRef) -> bool) -> usize {
        let mut removed = 0;
        for p in &mut self.pcpus[..self.pcpu_count] {
            removed += p.queue.retain(&|v| !gone(v));
            if p.current.is_some_and(gone) {
                p.current = None;
                p.ticks_left = 0;
                removed += 1;
            }
        }
        removed
    }

    /// Whether any vCPU is queued or running anywhere.
    pub fn is_empty(&self) -> bool {
        self.pcpus[..self.pcpu_count]
            .iter()
            .all(|p| p.current.is_none() && p.queue.len == 0)
    }
}

/// Guest time per domain per pCPU, and how often pCPUs ran guest code in the same tick.
pub struct RunAccounting {
    guest_tsc: [[u64; MAX_DOMAINS]; MAX_PCPUS],
    ticks: [[u64; MAX_DOMAINS]; MAX_PCPUS],
    idle_ticks: [u64; MAX_PCPUS],
    last_tick: [Option<(u64, DomainId)>; MAX_PCPUS],
    parallel_ticks: u64,
    pcpu_count: usize,
}

impl RunAccounting {
    /// Zeroed accounting for `pcpu_count` pCPUs (clamped to MAX_PCPUS).
    pub const fn new(pcpu_count: usize) -> Self {
        RunAccounting {
            guest_tsc: [[0; MAX_DOMAINS]; MAX_PCPUS],
            ticks: [[0; MAX_DOMAINS]; MAX_PCPUS],
            idle_ticks: [0; MAX_PCPUS],
            last_tick: [None; MAX_PCPUS],
            parallel_ticks: 0,
            pcpu_count: if pcpu_count > MAX_PCPUS {
                MAX_PCPUS
            } else {
                pcpu_count
            },
        }
    }

    /// Adds `tsc_ticks` of guest time (from VMRUN to #VMEXIT) of `domain` on `pcpu`.
    pub fn charge(&mut self, pcpu: usize, domain: DomainId, tsc_ticks: u64) {
        if let Some(slot) = self
            .guest_tsc
            .get_mut(pcpu)
            .and_then(|row| row.get_mut(usize::from(domain.0)))
        {
            *slot = slot.saturating_add(tsc_ticks);
        }
    }

    /// Records a timer tick on `pcpu` in period `period` (TSC / tick length, the same clock on every
    /// pCPU) while `running` was in guest mode (`None`: idle). A tick in which two pCPUs ran
    /// different domains counts as parallel.
    pub fn record_tick(&mut self, pcpu: usize, period: u64, running: Option<DomainId>) {
        if pcpu >= self.pcpu_count {
            return;
        }
        let Some(domain) = running else {
            self.idle_ticks[pcpu] += 1;
            self.last_tick[pcpu] = None;
            return;
        };
        if let Some(count) = self.ticks[pcpu].get_mut(usize::from(domain.0)) {
            *count += 1;
        }
        let parallel = (0..self.pcpu_count).filter(|other| *other != pcpu).any(
            |other| matches!(self.last_tick[other], Some((p, d)) if p == period && d != domain),
        );
        let already = matches!(self.last_tick[pcpu], Some((p, _)) if p == period);
        if parallel && !already {
            self.parallel_ticks += 1;
        }
        self.last_tick[pcpu] = Some((period, domain));
    }

    /// Guest TSC ticks of `domain` on `pcpu`.
    pub fn guest_time(&self, pcpu: usize, domain: DomainId) -> u64 {
        self.guest_tsc
            .get(pcpu)
            .and_then(|row| row.get(usize::from(domain.0)))
            .copied()
            .unwrap_or(0)
    }

    /// Timer ticks that found `domain` running on `pcpu`.
    pub fn ticks(&self, pcpu: usize, domain: DomainId) -> u64 {
        self.ticks
            .get(pcpu)
            .and_then(|row| row.get(usize::from(domain.0)))
            .copied()
            .unwrap_or(0)
    }

    /// Ticks in which at least two pCPUs ran different domains.
    pub fn parallel_ticks(&self) -> u64 {
        self.parallel_ticks
    }

    /// Printable summary, one `slipway: run accounting: ...` line per pCPU plus one for parallel
    /// ticks. `tsc_per_us` converts TSC ticks; `name` names a domain id.
    pub fn summary<'a>(
        &'a self,
        tsc_per_us: u64,
        name: &'a dyn Fn(DomainId) -> Option<&'a str>,
    ) -> Summary<'a> {
        Summary {
            accounting: self,
            tsc_per_us: tsc_per_us.max(1),
            name,
        }
    }
}

/// See [`RunAccounting::summary`].
pub struct Summary<'a> {
    accounting: &'a RunAccounting,
    tsc_per_us: u64,
    name: &'a dyn Fn(DomainId) -> Option<&'a str>,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.accounting;
        for pcpu in 0..a.pcpu_count {
            write!(f, "slipway: run accounting: pcpu {pcpu}:")?;
            for d in 0..MAX_DOMAINS {
                let id = DomainId(d as u16);
                let (time, ticks) = (a.guest_time(pcpu, id), a.ticks(pcpu, id));
                if time == 0 && ticks == 0 {
                    continue;
                }
                let name = (self.name)(id).unwrap_or("?");
                write!(
                    f,
                    " {name} {} us guest ({ticks} ticks);",
                    time / self.tsc_per_us
                )?;
            }
            writeln!(f, " idle {} ticks", a.idle_ticks[pcpu])?;
        }
        writeln!(
            f,
            "slipway: run accounting: parallel ticks {}",
            a.parallel_ticks
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;
    use std::vec::Vec;

    fn v(domain: u16, vcpu: u16) -> VcpuRef {
        VcpuRef {
            domain: DomainId(domain),
            vcpu,
        }
    }

    #[test]
    fn two_domains_on_two_pcpus_run_side_by_side() {
        let mut s = Scheduler::new(2, 3);
        assert_eq!(s.add(v(1, 0)), Ok(0));
        assert_eq!(s.add(v(2, 0)), Ok(1));
        assert_eq!(s.pick(0), Some(v(1, 0)));
        assert_eq!(s.pick(1), Some(v(2, 0)));
        // Alone on its pCPU, a vCPU is never preempted for nothing.
        for _ in 0..10 {
            assert!(!s.tick(0));
            assert_eq!(s.pick(0), Some(v(1, 0)));
        }
        assert_eq!(s.add(v(1, 0)), Err(SchedError::AlreadyQueued(v(1, 0))));
        assert_eq!(s.add_to(2, v(3, 0)), Err(SchedError::NoSuchPcpu(2)));
    }

    #[test]
    fn round_robin_with_slices() {
        let mut s = Scheduler::new(1, 2);
        for d in 1..=3 {
            s.add(v(d, 0)).unwrap();
        }
        let mut order = Vec::new();
        for _ in 0..6 {
            let running = s.pick(0).unwrap();
            order.push(running.domain.0);
            assert!(!s.tick(0));
            assert!(s.tick(0), "slice of 2 ticks used up");
        }
        assert_eq!(order, [1, 2, 3, 1, 2, 3]);
        s.pick(0);
        s.yield_now(0);
        assert_eq!(s.pick(0), Some(v(2, 0)));
    }

    #[test]
    fn a_pcpu_is_shared_per_domain_not_per_vcpu() {
        let mut s = Scheduler::new(1, 1);
        for vcpu in 0..8 {
            s.add(v(1, vcpu)).unwrap();
        }
        s.add(v(2, 0)).unwrap();
        let mut slices = [0u32; 3];
        let mut per_vcpu = [0u32; 8];
        for _ in 0..160 {
            let running = s.pick(0).unwrap();
            slices[usize::from(running.domain.0)] += 1;
            if running.domain.0 == 1 {
                per_vcpu[usize::from(running.vcpu)] += 1;
            }
            assert!(s.tick(0), "one-tick slices, another domain waiting");
        }
        assert_eq!(
            slices[1..],
            [80, 80],
            "eight vCPUs must not mean eight shares"
        );
        assert_eq!(
            per_vcpu, [10; 8],
            "a domain's vCPUs take turns in its share"
        );

        // Three domains with 3, 1 and 2 vCPUs: equal shares, in domain order.
        let mut s = Scheduler::new(1, 1);
        for (d, n) in [(3, 2), (1, 3), (2, 1)] {
            for vcpu in 0..n {
                s.add(v(d, vcpu)).unwrap();
            }
        }
        let order: Vec<(u16, u16)> = (0..9)
            .map(|_| {
                let r = s.pick(0).unwrap();
                s.tick(0);
                (r.domain.0, r.vcpu)
            })
            .collect();
        assert_eq!(
            order,
            [
                (1, 0),
                (2, 0),
                (3, 0),
                (1, 1),
                (2, 0),
                (3, 1),
                (1, 2),
                (2, 0),
                (3, 0)
            ]
        );
    }

    #[test]
    fn removing_a_domain_takes_all_its_vcpus() {
        let mut s = Scheduler::new(2, 1);
        for (d, n) in [(1, 3), (2, 1)] {
            for vcpu in 0..n {
                s.add(v(d, vcpu)).unwrap();
            }
        }
        assert_eq!(s.pick(0), Some(v(1, 0)));
        assert_eq!(s.remove_domain(DomainId(1)), 3);
        assert_eq!(s.pick(0), None);
        assert_eq!(s.pick(1), Some(v(2, 0)));
        assert!(s.remove(v(2, 0)));
        assert!(!s.remove(v(2, 0)));
        assert!(s.is_empty());
        assert!(!s.tick(0));
    }

    #[test]
    fn accounting_shows_parallel_guest_time() {
        let mut acct = RunAccounting::new(2);
        for period in 0..5 {
            acct.record_tick(0, period, Some(DomainId(1)));
            acct.record_tick(1, period, Some(DomainId(2)));
            acct.charge(0, DomainId(1), 2_000);
            acct.charge(1, DomainId(2), 3_000);
        }
        acct.record_tick(0, 5, Some(DomainId(1)));
        acct.record_tick(1, 5, None);
        acct.record_tick(0, 6, Some(DomainId(1)));
        acct.record_tick(1, 6, Some(DomainId(1)));
        assert_eq!(
            acct.parallel_ticks(),
            5,
            "same domain or idle is not parallel"
        );
        assert_eq!(acct.guest_time(1, DomainId(2)), 15_000);
        assert_eq!(acct.ticks(0, DomainId(1)), 7);
        let names = |id: DomainId| match id.0 {
            1 => Some("web"),
            2 => Some("db"),
            _ => None,
        };
        let text = acct.summary(1000, &names).to_string();
        assert_eq!(
            text,
            "slipway: run accounting: pcpu 0: web 10 us guest (7 ticks); idle 0 ticks\n\
             slipway: run accounting: pcpu 1: web 0 us guest (1 ticks); db 15 us guest (5 ticks); idle 1 ticks\n\
             slipway: run accounting: parallel ticks 5\n"
        );
    }
}
