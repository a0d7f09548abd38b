//! Intel TXT on the host: the layout report (`cargo xtask txt-layout`) and the simulated SINIT
//! ([`sinit`]).

use std::fmt::Write;

use slipway_hv_core::txt::layout::ALL_LAYOUTS;

pub mod guest_ram;
pub mod senter;
pub mod sinit;
#[cfg(test)]
mod sinit_tests;

/// Every TXT structure's fields, one line each: `STRUCT.FIELD OFFSET SIZE` (decimal), after a
/// `STRUCT SIZE` line per structure, for review against Intel's MLE Developer's Guide.
pub fn layout_report() -> String {
    let mut out = String::new();
    for layout in ALL_LAYOUTS {
        let _ = writeln!(out, "{} {}", layout.name, layout.size);
        for field in layout.fields {
            let _ = writeln!(
                out,
                "{}.{} {} {}",
                layout.name, field.name, field.offset, field.size
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_report_lists_every_field_with_offset_and_size() {
        let report = layout_report();
        assert!(report.contains("MleHeader 52\n"));
        assert!(report.contains("MleHeader.cmdline_end 48 4\n"));
        assert!(report.contains("OsSinitData.vtd_pmr_lo_base 32 8\n"));
        assert!(report.contains("OsSinitData.rsdp_ptr 84 8\n"));
        assert!(report.contains("SinitMleData.processor_scrtm_status 144 4\n"));
        assert!(report.contains("EventLogPointer2_1.next_record_offset 16 4\n"));
        let field_lines = report.lines().filter(|l| l.contains('.')).count();
        let fields: usize = ALL_LAYOUTS.iter().map(|l| l.fields.len()).sum();
        assert_eq!(field_lines, fields);
    }
}
