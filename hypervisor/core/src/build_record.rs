//! Build records: what the hypervisor actually did to build a domain.
//!
//! At hand-off the hypervisor extends one PCR21 event per domain from these records, not from
//! domB's description of its plan, so a verifier learns what was really loaded where. Every step
//! that changed a domain's initial state is appended here as it is performed; writes are recorded
//! by SHA-256 of their bytes (the verifier predicts the bytes, e.g. the start-info page, and hashes
//! them), module copies by module index and name (the module's content is bound to its name in
//! PCR20). The record is serialized with postcard: that encoding is the event payload
//! (`slipway_measure::events::BUILD_PAYLOAD_POSTCARD_V2`).

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
        /// SHA-256 of the bytes as they landed in the domain, when the platform computes it
        /// ([`crate::hypercall::Platform::populated_sha256`]): PCR21 then says what was loaded
        /// independently of domB's own PCR20 measurement of the module.
        sha256: Option<[u8; 32]>,
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

/// Most bytes one encoded step takes (postcard varints: u16 <= 3 bytes, u64 <= 10 bytes; the
/// largest step is a module copy with a 63-byte module name).
pub const MAX_STEP_LEN: usize = 1 + 3 + (1 + 63) + 3 * 10 + (1 + 32);
/// Most bytes an encoded [`BuildRecord`] takes: size the PCR21 event buffer with this.
pub const MAX_ENCODED_LEN: usize = 3 + (1 + 31) + 10 + 3 + 3 + 1 + MAX_BUILD_STEPS * MAX_STEP_LEN;

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

    /// Encodes the record (postcard): the PCR21 event payload, at most [`MAX_ENCODED_LEN`] bytes.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        postcard::to_slice(self, out)
            .map(|used| used.len())
            .map_err(|_| RecordError::BufferTooSmall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    #[test]
    fn the_worst_case_record_fits_max_encoded_len() {
        let name = DomainName::new(&"z".repeat(31)).unwrap();
        let capabilities = Capabilities {
            control: true,
            hardware: true,
            recovery: true,
            tpm: true,
        };
        let mut record = BuildRecord::new(name, u64::MAX, u16::MAX, capabilities);
        let module_name = ModuleName::new(&"m".repeat(63)).unwrap();
        while record.has_room() {
            let step = BuildStep::PopulateFromModule {
                module: u16::MAX,
                module_name: module_name.clone(),
                module_offset: u64::MAX,
                length: u64::MAX,
                gpa: u64::MAX,
                sha256: Some([0xff; 32]),
            };
            record.push(step).unwrap();
        }
        assert_eq!(
            record.push(BuildStep::AssignConsole),
            Err(RecordError::Full)
        );
        let mut out = [0u8; MAX_ENCODED_LEN];
        let len = record.encode(&mut out).unwrap();
        assert!(
            len <= MAX_ENCODED_LEN && MAX_ENCODED_LEN - len <= 2,
            "bound {MAX_ENCODED_LEN}, worst case {len}"
        );
        let long_entry = BuildStep::SetVcpuEntry {
            vcpu: u16::MAX,
            entry: VcpuEntry::Long64 {
                rip: u64::MAX,
                rsp: u64::MAX,
                cr3: u64::MAX,
                rsi: u64::MAX,
            },
        };
        let mut step_bytes = [0u8; 128];
        assert!(
            postcard::to_slice(&long_entry, &mut step_bytes)
                .unwrap()
                .len()
                <= MAX_STEP_LEN
        );
        let write = BuildRecord::write_step(u64::MAX, b"x");
        assert!(postcard::to_slice(&write, &mut step_bytes).unwrap().len() <= MAX_STEP_LEN);
    }

    #[test]
    fn writes_are_recorded_by_digest() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let BuildStep::WriteMemory {
            gpa,
            length,
            sha256,
        } = BuildRecord::write_step(0x1000, b"abc")
        else {
            panic!("not a write step")
        };
        assert_eq!((gpa, length), (0x1000, 3));
        assert_eq!(&sha256[..4], &[0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(&sha256[28..], &[0xf2, 0x00, 0x15, 0xad]);
    }

    /// The encoding is the PCR21 payload that verifiers predict: changing it must be deliberate.
    #[test]
    fn the_encoding_is_pinned() {
        let name = DomainName::new("web").unwrap();
        let capabilities = Capabilities {
            control: true,
            hardware: false,
            recovery: true,
            tpm: true,
        };
        let mut record = BuildRecord::new(name, 0x20_0000, 2, capabilities);
        let steps = [
            BuildStep::PopulateFromModule {
                module: 2,
                module_name: ModuleName::new("k").unwrap(),
                module_offset: 0x40,
                length: 0x100,
                gpa: 0x10_0000,
                sha256: Some([0x11; 32]),
            },
            BuildRecord::write_step(0x1000, b"abc"),
            BuildStep::SetVcpuEntry {
                vcpu: 1,
                entry: VcpuEntry::Pvh32 {
                    entry_eip: 0x10_0000,
                    start_info_gpa: 0x1000,
                },
            },
            BuildStep::AssignConsole,
            BuildStep::RequestStart { boot_order: 3 },
        ];
        for step in steps {
            record.push(step).unwrap();
        }
        let mut out = [0u8; 256];
        let len = record.encode(&mut out).unwrap();
        let mut expected = std::vec::Vec::new();
        expected.extend_from_slice(&[
            1, 3, b'w', b'e', b'b', 0x80, 0x80, 0x80, 0x01, 2, 1, 0, 1, 1, 5,
        ]);
        expected.extend_from_slice(&[0, 2, 1, b'k', 0x40, 0x80, 0x02, 0x80, 0x80, 0x40, 1]);
        expected.extend_from_slice(&[0x11; 32]);
        expected.extend_from_slice(&[1, 0x80, 0x20, 3]);
        expected.extend_from_slice(&BuildRecord::write_step(0, b"abc").sha256_for_test());
        expected.extend_from_slice(&[2, 1, 0, 0x80, 0x80, 0x40, 0x80, 0x20]);
        expected.extend_from_slice(&[3, 4, 3]);
        assert_eq!(&out[..len], &expected[..]);
    }

    impl BuildStep {
        fn sha256_for_test(&self) -> [u8; 32] {
            match self {
                BuildStep::WriteMemory { sha256, .. } => *sha256,
                _ => panic!("not a write"),
            }
        }
    }
}
