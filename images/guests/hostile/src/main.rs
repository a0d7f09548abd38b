#![no_std]
#![no_main]
use slipway_guest_rt::{Boot, hypercall};
slipway_guest_rt::entry!(main);
fn main(_boot: Boot) -> ! {
    hypercall::shutdown(0)
}
