mod acm_tests;
pub(crate) mod heap_tests;
mod layout_tests;
mod mle_pt_tests;
mod pmr_mtrr_smx_tests;
mod post_tests;
