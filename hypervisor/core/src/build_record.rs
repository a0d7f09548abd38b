//! Build records: what the hypervisor actually did to build a domain.
//!
//! At hand-off the hypervisor extends one PCR21 event per domain from these records, not from
//! domB's description of its plan, so a verifier learns what was really loaded where. Every step
//! that changed a domain's initial state is appended here as it is performed; writes are recorded
//! by SHA-256 of their bytes (the verifier predicts the bytes, e.g. the start-info page, and hashes
//! them), module copies by module index and name (the module's content is bound to its name in
//! PCR20). The record is serialized with postcard: that encoding is the event payload
//! (`slipway_measure::events::BUILD_PAYLOAD_POSTCARD_V1`).

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use slipway_protocol::v1::{Capabilities, DomainName, ModuleName, VcpuEntry};

/// Most steps one domain's build may take (a PVH kernel needs a handful: its segments, a ramdisk,
/// the start-info page, the command line, one entry per vCPU).
pub const MAX_BUILD_STEPS: usize = 48;

/// One thing the hypervisor did to a domain under construction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum BuildStep {
    /// Copied `length` bytes of boot module `module` (named `module_name`) from `module_offset`
    /// to guest-physical `gpa`.
    PopulateFromModule {
        /// Module index (multiboot2 order).
        module: u16,
        /// Module name: binds the copy to the module's PCR20 event.
        module_name: ModuleName,
        /// Offset in the module.
        module_offset: u64,
        /// Bytes copied.
        length: u64,
        /// Destination.
        gpa: u64,
    },
    /// Wrote `length` bytes with SHA-256 `sha256` at `gpa`.
    WriteMemory {
        /// Destination.
        gpa: u64,
        /// Bytes written.
        length: u64,
        /// SHA-256 of the bytes.
        sha256: [u8; 32],
    },
    /// Set vCPU `vcpu`'s initial state.
    SetVcpuEntry {
        /// vCPU index.
        vcpu: u16,
        /// The state.
        entry: VcpuEntry,
    },
    /// Gave the domain the console input focus after hand-off.
    AssignConsole,
    /// Recorded the start request.
    RequestStart {
        /// Position in the start order.
        boot_order: u16,
    },
}

/// Why a step could not be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// the domain's build already has MAX_BUILD_STEPS steps
    Full,
    /// the output buffer is too small for the encoded record
    BufferTooSmall,
}

/// Everything the hypervisor did to build one domain, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildRecord {
    /// Format version of this structure (1).
    pub version: u16,
    /// The domain's name.
    pub name: DomainName,
    /// Memory size in bytes (guest-physical `[0, memory_bytes)`, zeroed at creation).
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u16,
    /// Capabilities granted.
    pub capabilities: Capabilities,
    /// The steps, in the order they were performed.
    steps: heapless::Vec<BuildStep, MAX_BUILD_STEPS>,
}

impl BuildRecord {
    /// The record of a freshly created domain.
    pub fn new(
        name: DomainName,
        memory_bytes: u64,
        vcpus: u16,
        capabilities: Capabilities,
    ) -> Self {
        BuildRecord {
            version: 1,
            name,
            memory_bytes,
            vcpus,
            capabilities,
            steps: heapless::Vec::new(),
        }
    }

    /// Appends a step.
    pub fn push(&mut self, step: BuildStep) -> Result<(), RecordError> {
        self.steps.push(step).map_err(|_| RecordError::Full)
    }

    /// Whether another step fits (checked before performing a step, so that nothing is done
    /// that cannot be recorded).
    pub fn has_room(&self) -> bool {
        !self.steps.is_full()
    }

    /// The steps so far.
    pub fn steps(&self) -> &[BuildStep] {
        &self.steps
    }

    /// The step recording a write of `bytes` at `gpa`.
    pub fn write_step(gpa: u64, bytes: &[u8]) -> BuildStep {
        BuildStep::WriteMemory {
            gpa,
            length: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    /// Encodes the record (postcard): the PCR21 event payload.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        postcard::to_slice(self, out)
            .map(|used| used.len())
            .map_err(|_| RecordError::BufferTooSmall)
    }
}
