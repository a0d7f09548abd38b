//! Host tests of domb-core, with small builders for device trees and ELF images (so malformed
//! inputs can be made byte by byte).

mod config_tests;
mod elf_tests;
mod fixtures;
mod hv_core_tests;
mod launch_tests;
mod measurement_tests;
mod planner_tests;
mod policy_tests;
mod program_tests;
mod start_info_tests;
