//! Intel VMX pieces that need no hardware: VMCS field encodings, the capability MSRs and the
//! control values they allow, EPT pointers, a model of a VMCS and the software VM-entry checks
//! over it, and the decoding of exit information into [`crate::vmexit::VmExit`].
//!
//! The backend (`hypervisor/src/vmx/`) fills a [`vmcs::VmcsState`], runs
//! [`entry_checks::check_vm_entry`] over it, and only then writes it with VMWRITE and executes
//! VMLAUNCH, so a wrong field is a message naming the field and the rule.

pub mod caps;
pub mod entry_checks;
pub mod ept;
pub mod exits;
pub mod fields;
pub mod setup;
pub mod vmcs;

pub use caps::{AllowedBits, Control, ControlError, VmxCapabilities, VmxonError};
pub use entry_checks::{CheckArea, EntryCheckError, EntryContext, check_vm_entry};
pub use exits::{ExitInfo, decode_exit, decode_idt_vectoring};
pub use fields::{FieldType, FieldWidth, VmcsField};
pub use vmcs::{Segment, SegmentState, VmcsState};

#[cfg(test)]
mod entry_tests;
#[cfg(test)]
mod exit_tests;
#[cfg(test)]
mod setup_tests;
#[cfg(test)]
mod tests;
