//! Domain console output on the hardware: one hv-core `OutputQueue` (rate limit included) per
//! domain slot, behind a small lock of its own. Lines are queued where they are finished, under
//! the global lock (a copy, no I/O); the serial port is written outside it: after each exit by
//! the pCPU that ran the domain (its own time pays for its output), when a pCPU is idle, and
//! before every hypervisor line (so a domain's lines keep their place before the hypervisor's
//! lines about it).

use core::sync::atomic::{AtomicBool, Ordering};

use slipway_hv_core::console::Line;
use slipway_hv_core::console_queue::{OutputQueue, Pushed};
use slipway_hv_core::domain::MAX_DOMAINS;

static LOCKED: AtomicBool = AtomicBool::new(false);
static mut QUEUES: [OutputQueue; MAX_DOMAINS] = [const { OutputQueue::new() }; MAX_DOMAINS];

/// Bytes moved from a queue to the port per lock hold.
const CHUNK: usize = 256;

fn with_queues<R>(f: impl FnOnce(&mut [OutputQueue; MAX_DOMAINS]) -> R) -> R {
    // Bounded, like the console lock: a CPU that died holding it must not silence the others.
    let mut acquired = false;
    for _ in 0..50_000_000u64 {
        if LOCKED
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            acquired = true;
            break;
        }
        core::hint::spin_loop();
    }
    if !acquired {
        LOCKED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the queue lock is held until `f` returns; nothing else touches QUEUES.
    let result = f(unsafe { &mut *core::ptr::addr_of_mut!(QUEUES) });
    LOCKED.store(false, Ordering::Release);
    result
}

/// A new domain in `slot`: empty queue, full budget.
pub fn start(slot: usize) {
    let now = crate::tsc::now();
    with_queues(|queues| queues[slot].reset(now));
}

/// Whether domain `name` (slot `slot`) may emit `bytes` raw bytes now; if not, they are
/// counted as dropped (reported later) and the caller discards them without escaping them.
pub fn admit(slot: usize, name: &str, bytes: usize) -> bool {
    let (now, hz) = (crate::tsc::now(), crate::tsc::hz());
    with_queues(|queues| {
        let queue = &mut queues[slot];
        if queue.admits(now, hz) {
            return true;
        }
        queue.drop_raw(name, bytes as u64, now, hz);
        false
    })
}

/// Queues one finished line of domain `name` (slot `slot`), within its rate.
pub fn push_line(slot: usize, name: &str, line: &Line) -> Pushed {
    let (now, hz) = (crate::tsc::now(), crate::tsc::hz());
    with_queues(|queues| queues[slot].push_line(name, line, now, hz))
}

/// The domain in `slot` ended: what it had dropped is reported (its queue drains as usual).
pub fn finish(slot: usize, name: &str) {
    let now = crate::tsc::now();
    with_queues(|queues| queues[slot].report_drops(name, now));
}

/// Writes what slot `slot` has queued to the serial port (outside the global lock).
pub fn drain(slot: usize) {
    loop {
        let mut chunk = [0u8; CHUNK];
        let n = with_queues(|queues| queues[slot].pop(&mut chunk));
        if n == 0 {
            return;
        }
        crate::console::with_serial(|serial| {
            for &byte in &chunk[..n] {
                serial.write_byte(byte);
            }
        });
    }
}

/// Drains every queue.
pub fn drain_all() {
    for slot in 0..MAX_DOMAINS {
        drain(slot);
    }
}
