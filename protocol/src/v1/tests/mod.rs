//! Tests of the v1 wire format. They live inside the crate so that the variant-coverage
//! matches below are exhaustive: adding a variant without a pinned sample does not compile.

mod api;
mod client;
mod log_window;
mod props;
mod samples;
mod wire;

use std::string::String;
use std::vec::Vec;

use crate::v1::*;

fn parse_hex(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("pinned hex"))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| std::format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Index of each request variant; exhaustive on purpose (see the module doc).
fn request_variant(request: &Request) -> usize {
    match request {
        Request::QueryBootInfo => 0,
        Request::QueryModule { .. } => 1,
        Request::CreateDomain { .. } => 2,
        Request::PopulateFromModule { .. } => 3,
        Request::WriteMemory { .. } => 4,
        Request::SetVcpuState {
            entry: VcpuEntry::Pvh32 { .. },
            ..
        } => 5,
        Request::SetVcpuState {
            entry: VcpuEntry::Long64 { .. },
            ..
        } => 6,
        Request::SetVcpuState {
            entry: VcpuEntry::WaitForStartupIpi,
            ..
        } => 14,
        Request::AssignConsole { .. } => 7,
        Request::RequestStart { .. } => 8,
        Request::WriteConsole { .. } => 9,
        Request::Measure { .. } => 10,
        Request::HandOff => 11,
        Request::Shutdown { .. } => 12,
        Request::ReportBootSuccess => 13,
    }
}
const REQUEST_VARIANTS: usize = 15;

/// Index of each response variant (and launch kind inside); exhaustive on purpose.
fn response_variant(response: &Response) -> usize {
    match response {
        Ok(ResponseOk::Done) => 0,
        Ok(ResponseOk::BootInfo(summary)) => match summary.launch_kind {
            LaunchKind::None => 1,
            LaunchKind::Emulated => 2,
            LaunchKind::Txt => 3,
            LaunchKind::Skinit => 4,
            LaunchKind::TxtSimulated => 9,
        },
        Ok(ResponseOk::Module(_)) => 5,
        Ok(ResponseOk::DomainCreated(_)) => 6,
        Ok(ResponseOk::Measured { .. }) => 7,
        Err(_) => 8,
    }
}
/// Launch kinds None and Txt are pinned through the boot-information page samples.
const RESPONSE_VARIANTS_PINNED: &[usize] = &[0, 2, 4, 5, 6, 7, 8, 9];
