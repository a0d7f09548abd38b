//! Placeholder: filled in by its issue.
#![no_std]
#![forbid(unsafe_code)]
