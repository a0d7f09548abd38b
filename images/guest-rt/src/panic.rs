//! Panic: print the message and shut the domain down with failure.

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::console::force_unlock();
    crate::hypercall::force_unlock();
    crate::println!("panic: {info}");
    crate::hypercall::shutdown(1)
}
