//! The hypercall instruction: `VMMCALL` on AMD (and Hygon), `VMCALL` on Intel, chosen by the
//! CPUID vendor string. Register convention (docs/abi.md): `rax` = `CALL_MESSAGE`, `rdi` = buffer
//! gpa, `rsi` = request length; on return `rax` = transport status, `rsi` = response length.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use slipway_protocol::v1::{self, Request, ResponseOk};
use slipway_protocol::{CALL_MESSAGE, HYPERCALL_BUFFER_SIZE};

pub use slipway_protocol::v1::CallError;

/// Which hypercall instruction this CPU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// AMD SVM.
    Vmmcall,
    /// Intel VMX.
    Vmcall,
}

const UNKNOWN: u8 = 0;
const VMMCALL: u8 = 1;
const VMCALL: u8 = 2;
static INSTRUCTION: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The instruction for this CPU (from CPUID leaf 0's vendor string; anything not Intel is
/// treated as AMD, whose SVM is what Slipway runs on without VMX).
pub fn instruction() -> Instruction {
    match INSTRUCTION.load(Ordering::Relaxed) {
        VMMCALL => return Instruction::Vmmcall,
        VMCALL => return Instruction::Vmcall,
        _ => {}
    }
    // CPUID leaf 0 is always available in long mode.
    let vendor = core::arch::x86_64::__cpuid(0);
    let intel = vendor.ebx == u32::from_le_bytes(*b"Genu")
        && vendor.edx == u32::from_le_bytes(*b"ineI")
        && vendor.ecx == u32::from_le_bytes(*b"ntel");
    let (code, choice) = if intel {
        (VMCALL, Instruction::Vmcall)
    } else {
        (VMMCALL, Instruction::Vmmcall)
    };
    INSTRUCTION.store(code, Ordering::Relaxed);
    choice
}

/// Executes one hypercall on a buffer page at `buffer_gpa` holding a `request_len`-byte request.
/// Returns (`rax` status, `rsi` response length).
///
/// # Safety
/// `buffer_gpa` must be a 4 KiB-aligned page of this domain's RAM that nothing else uses during
/// the call: the hypervisor writes the response into it.
pub unsafe fn raw_call(buffer_gpa: u64, request_len: u64) -> (u64, u64) {
    let status: u64;
    let response_len: u64;
    match instruction() {
        // SAFETY: the caller guarantees the buffer page; VMMCALL only exits to the hypervisor,
        // which reads and writes that page and sets rax/rsi (declared as outputs).
        Instruction::Vmmcall => unsafe {
            core::arch::asm!("vmmcall", inout("rax") CALL_MESSAGE => status, in("rdi") buffer_gpa,
                inout("rsi") request_len => response_len, options(nostack));
        },
        // SAFETY: as above, with VMCALL on Intel.
        Instruction::Vmcall => unsafe {
            core::arch::asm!("vmcall", inout("rax") CALL_MESSAGE => status, in("rdi") buffer_gpa,
                inout("rsi") request_len => response_len, options(nostack));
        },
    }
    (status, response_len)
}

#[repr(C, align(4096))]
struct Buffer(UnsafeCell<[u8; HYPERCALL_BUFFER_SIZE]>);

// SAFETY: access to the buffer is serialised by `BUFFER_LOCK`.
unsafe impl Sync for Buffer {}

static BUFFER: Buffer = Buffer(UnsafeCell::new([0; HYPERCALL_BUFFER_SIZE]));
static BUFFER_LOCK: AtomicBool = AtomicBool::new(false);

/// Sends `request` and returns the hypervisor's answer. Calls from several vCPUs are serialised
/// on the runtime's one buffer page.
pub fn call(request: &Request) -> Result<ResponseOk, CallError> {
    while BUFFER_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    // SAFETY: BUFFER_LOCK is held, so this is the only reference to the buffer.
    let buffer = unsafe { &mut *BUFFER.0.get() };
    let mut instruction = |buffer: &mut [u8; HYPERCALL_BUFFER_SIZE], len: usize| {
        let gpa = buffer.as_ptr() as u64;
        // SAFETY: the buffer is a page-aligned static in this domain's RAM (identity-mapped),
        // and the lock keeps every other user away until the call returns.
        unsafe { raw_call(gpa, len as u64) }
    };
    let result = v1::call(&mut instruction, buffer, request);
    BUFFER_LOCK.store(false, Ordering::Release);
    result
}

/// Forgets a holder of the buffer lock (the panic handler uses it before shutting down).
pub(crate) fn force_unlock() {
    BUFFER_LOCK.store(false, Ordering::Release);
}

/// Shuts this domain down with `exit_code` (0 = success). If the hypervisor refuses, halts.
pub fn shutdown(exit_code: u32) -> ! {
    let result = call(&Request::Shutdown { exit_code });
    crate::println!("shutdown hypercall returned: {result:?}");
    loop {
        // SAFETY: HLT only waits for an interrupt (or exits to the hypervisor).
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}
