//! The policy program's interpreter (`docs/launch-policy.md`): a WebAssembly module run by
//! wasmi with floating point refused at validation, no start function, only the host API's
//! three imports, a fuel budget and a memory limit, so every run ends and gives the same answer
//! for the same inputs. The same code runs in domB and in `cargo xtask predict`.
//!
//! A run gives an [`Output`] that [`check_answer`] accepted for the configuration, or a
//! [`ProgramError`] naming the cause: domB measures that as the decision "policy failed".

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use slipway_policy::{
    API_VERSION, DecodeError, ENTRY_EXPORT, IMPORT_INPUT_LEN, IMPORT_INPUT_READ, IMPORT_MODULE,
    IMPORT_OUTPUT, Input, MEMORY_EXPORT, Output, Verdict,
};
// The error type of `ResourceLimiter`'s methods: wasmi re-exports it only privately.
use wasmi::{
    Caller, CompilationMode, Config, Engine, Extern, Linker, Module, ResourceLimiter, Store,
    TrapCode,
};
use wasmi_core::LimiterError;

/// The limits every policy run gets: the one definition domB and `predict` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// wasmi fuel units (about one per executed instruction).
    pub fuel: u64,
    /// The most linear memory the program may have, in bytes.
    pub memory_bytes: usize,
    /// The most nested calls.
    pub call_depth: usize,
}

/// The limits of a policy run.
pub const LIMITS: Limits = Limits {
    fuel: 20_000_000,
    memory_bytes: 4 << 20,
    call_depth: 256,
};

/// Largest policy program accepted, in bytes.
pub const MAX_PROGRAM_SIZE: usize = 1 << 20;

/// Why a policy program gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramError {
    /// the module is larger than [`MAX_PROGRAM_SIZE`]
    TooLarge(usize),
    /// the module is not valid WebAssembly or uses a refused feature (floating point, SIMD,
    /// threads, ...): wasmi's message
    Invalid(String),
    /// the module cannot be instantiated (an import other than the host API's, a start
    /// function, a memory above the limit, ...): wasmi's message
    Instantiate(String),
    /// the module does not export the entry function `slipway_policy_v1: () -> i32` or its
    /// memory
    NoEntry(String),
    /// the program ran out of fuel
    OutOfFuel,
    /// the program asked for more memory than the limit
    MemoryLimit,
    /// the program trapped: the trap
    Trap(String),
    /// the entry returned this status instead of 0
    Status(i32),
    /// the program returned without calling `output`
    NoAnswer,
    /// the program called a host function wrongly (output twice, an address outside its memory)
    HostCall(String),
    /// the answer does not decode
    Malformed(DecodeError),
    /// the answer decodes but is not acceptable
    Refused(String),
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(size) => write!(
                f,
                "the program is {size} bytes, more than the {MAX_PROGRAM_SIZE} accepted"
            ),
            Self::Invalid(why) => write!(f, "the program is refused at validation: {why}"),
            Self::Instantiate(why) => write!(f, "the program cannot be instantiated: {why}"),
            Self::NoEntry(what) => write!(f, "the program does not export {what}"),
            Self::OutOfFuel => write!(f, "the program ran out of fuel ({} units)", LIMITS.fuel),
            Self::MemoryLimit => write!(
                f,
                "the program exceeded its memory limit ({} bytes)",
                LIMITS.memory_bytes
            ),
            Self::Trap(trap) => write!(f, "the program trapped: {trap}"),
            Self::Status(status) => write!(f, "the program returned status {status}, not 0"),
            Self::NoAnswer => f.write_str("the program returned without an answer"),
            Self::HostCall(why) => write!(f, "the program called the host wrongly: {why}"),
            Self::Malformed(why) => write!(f, "the answer is malformed: {why}"),
            Self::Refused(why) => write!(f, "the answer is refused: {why}"),
        }
    }
}

impl ProgramError {
    /// A short name of the failure, measured as the "policy failed" decision's subject.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too-large",
            Self::Invalid(_) => "invalid",
            Self::Instantiate(_) => "not-instantiable",
            Self::NoEntry(_) => "no-entry",
            Self::OutOfFuel => "out-of-fuel",
            Self::MemoryLimit => "memory-limit",
            Self::Trap(_) => "trap",
            Self::Status(_) => "failure-status",
            Self::NoAnswer => "no-answer",
            Self::HostCall(_) => "bad-host-call",
            Self::Malformed(_) => "malformed-answer",
            Self::Refused(_) => "refused-answer",
        }
    }
}

/// A run's answer with what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The checked answer.
    pub output: Output,
    /// Fuel the run consumed.
    pub fuel_used: u64,
}

struct HostState {
    input: Vec<u8>,
    output: Option<Vec<u8>>,
    host_error: Option<String>,
    memory_limit_hit: bool,
    limits: Limits,
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        // A denied growth returns -1 to the program; having asked for more than the limit
        // fails the run however the program goes on.
        if desired > self.limits.memory_bytes {
            self.memory_limit_hit = true;
            return Ok(false);
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(desired <= 4096 && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

fn engine(limits: &Limits) -> Engine {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        // Validate and translate every function before anything runs, so a refused feature is
        // refused at load time, not when (or whether) its function is called.
        .compilation_mode(CompilationMode::Eager)
        .floats(false)
        .wasm_multi_memory(false)
        .wasm_custom_page_sizes(false)
        .wasm_tail_call(false)
        .wasm_wide_arithmetic(false)
        .allow_start_fn(false)
        .set_max_recursion_depth(limits.call_depth);
    Engine::new(&config)
}

fn host_error(caller: &mut Caller<'_, HostState>, why: String) -> wasmi::Error {
    caller.data_mut().host_error = Some(why.clone());
    wasmi::Error::new(why)
}

fn memory_of(caller: &mut Caller<'_, HostState>) -> Result<wasmi::Memory, wasmi::Error> {
    match caller
        .get_export(MEMORY_EXPORT)
        .and_then(Extern::into_memory)
    {
        Some(memory) => Ok(memory),
        None => Err(host_error(
            caller,
            format!("it exports no memory `{MEMORY_EXPORT}`"),
        )),
    }
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, wasmi::Error> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        IMPORT_MODULE,
        IMPORT_INPUT_LEN,
        |caller: Caller<'_, HostState>| -> i32 {
            // The input is far below 2 GiB (it is built from at most 32 modules and 15 domains).
            i32::try_from(caller.data().input.len()).unwrap_or(i32::MAX)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        IMPORT_INPUT_READ,
        |mut caller: Caller<'_, HostState>, dst: i32| -> Result<(), wasmi::Error> {
            let memory = memory_of(&mut caller)?;
            let input = core::mem::take(&mut caller.data_mut().input);
            let written = memory.write(&mut caller, dst as u32 as usize, &input);
            caller.data_mut().input = input;
            written.map_err(|_| {
                host_error(
                    &mut caller,
                    format!("input_read({dst:#x}): the input does not fit in its memory there"),
                )
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        IMPORT_OUTPUT,
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> Result<(), wasmi::Error> {
            if caller.data().output.is_some() {
                return Err(host_error(&mut caller, "output called twice".to_string()));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= 64 << 10)
                .ok_or_else(|| {
                    host_error(
                        &mut caller,
                        format!("output length {len} is not 0 to 64 KiB"),
                    )
                })?;
            let memory = memory_of(&mut caller)?;
            let mut answer = vec![0u8; len];
            memory
                .read(&caller, ptr as u32 as usize, &mut answer)
                .map_err(|_| {
                    host_error(
                        &mut caller,
                        format!("output({ptr:#x}, {len}) is outside its memory"),
                    )
                })?;
            caller.data_mut().output = Some(answer);
            Ok(())
        },
    )?;
    Ok(linker)
}

/// Loads `program` and validates it (the refusals of a run that happen before anything runs).
pub fn validate(program: &[u8]) -> Result<(), ProgramError> {
    if program.len() > MAX_PROGRAM_SIZE {
        return Err(ProgramError::TooLarge(program.len()));
    }
    Module::new(&engine(&LIMITS), program)
        .map(|_| ())
        .map_err(|e| ProgramError::Invalid(e.to_string()))
}

/// Runs `program` on `input` under [`LIMITS`] and checks its answer against the input's
/// configuration ([`check_answer`]).
pub fn run(program: &[u8], input: &Input) -> Result<Run, ProgramError> {
    run_with(program, input, &LIMITS)
}

/// [`run`] under other limits (tests).
pub fn run_with(program: &[u8], input: &Input, limits: &Limits) -> Result<Run, ProgramError> {
    if program.len() > MAX_PROGRAM_SIZE {
        return Err(ProgramError::TooLarge(program.len()));
    }
    let engine = engine(limits);
    let module = Module::new(&engine, program).map_err(|e| ProgramError::Invalid(e.to_string()))?;
    let encoded = input
        .encode()
        .map_err(|e| ProgramError::HostCall(format!("the input cannot be encoded: {e}")))?;
    let mut store = Store::new(
        &engine,
        HostState {
            input: encoded,
            output: None,
            host_error: None,
            memory_limit_hit: false,
            limits: *limits,
        },
    );
    store.limiter(|state| state as &mut dyn ResourceLimiter);
    store
        .set_fuel(limits.fuel)
        .map_err(|e| ProgramError::Instantiate(e.to_string()))?;
    let linker = linker(&engine).map_err(|e| ProgramError::Instantiate(e.to_string()))?;
    let instance = linker
        .instantiate_and_start(&mut store, &module)
        .map_err(|e| {
            if store.data().memory_limit_hit {
                ProgramError::MemoryLimit
            } else {
                ProgramError::Instantiate(e.to_string())
            }
        })?;
    if instance.get_memory(&store, MEMORY_EXPORT).is_none() {
        return Err(ProgramError::NoEntry(format!(
            "its memory `{MEMORY_EXPORT}`"
        )));
    }
    let entry = instance
        .get_typed_func::<(), i32>(&store, ENTRY_EXPORT)
        .map_err(|_| ProgramError::NoEntry(format!("`{ENTRY_EXPORT}: () -> i32`")))?;
    let result = entry.call(&mut store, ());
    let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
    let state = store.data();
    let status = match result {
        Ok(status) => status,
        Err(error) => {
            return Err(if let Some(why) = &state.host_error {
                ProgramError::HostCall(why.clone())
            } else if state.memory_limit_hit {
                ProgramError::MemoryLimit
            } else if error.as_trap_code() == Some(TrapCode::OutOfFuel) {
                ProgramError::OutOfFuel
            } else {
                ProgramError::Trap(error.to_string())
            });
        }
    };
    if state.memory_limit_hit {
        return Err(ProgramError::MemoryLimit);
    }
    if status != 0 {
        return Err(ProgramError::Status(status));
    }
    let answer = state.output.as_deref().ok_or(ProgramError::NoAnswer)?;
    let output = Output::decode(answer).map_err(ProgramError::Malformed)?;
    check_answer(&output, input).map_err(ProgramError::Refused)?;
    Ok(Run { output, fuel_used })
}

/// The checks of an answer that need the input: the slot is one the boot carries, and in the
/// run after a fallback it is the slot the input describes (no second switch); a `start-listed` verdict
/// names 1 or more distinct configured domains; the verdict is at least as restrictive as
/// every decision (a program cannot measure "halt" and start everything).
pub fn check_answer(output: &Output, input: &Input) -> Result<(), String> {
    let boot = &input.boot_state;
    if !boot.has_slot(output.slot) {
        return Err(format!(
            "configuration slot {} does not exist in this boot",
            output.slot
        ));
    }
    if boot.is_fallback_run() && output.slot != boot.config_slot {
        return Err(format!(
            "after falling back to slot {} the answer chose slot {} (one switch per boot)",
            boot.config_slot, output.slot
        ));
    }
    if let Verdict::StartListed(names) = &output.verdict {
        if names.is_empty() {
            return Err("start-listed names no domain (use halt)".into());
        }
        for (i, name) in names.iter().enumerate() {
            if !input.config.domains.iter().any(|d| d.name == *name) {
                return Err(format!(
                    "start-listed names \"{name}\", which is not a domain"
                ));
            }
            if names[..i].contains(name) {
                return Err(format!("start-listed names \"{name}\" twice"));
            }
        }
    }
    let verdict = output.verdict.action();
    if let Some(decision) = output
        .decisions
        .iter()
        .find(|d| d.action.rank() > verdict.rank())
    {
        return Err(format!(
            "the verdict {} is less restrictive than the decision {:?}: {:?}",
            crate::policy::action_name(verdict),
            decision.reason,
            crate::policy::action_name(decision.action)
        ));
    }
    Ok(())
}

/// The version of the host API domB speaks.
pub const HOST_API_VERSION: u32 = API_VERSION;
