//! Slipway hypervisor binary: boot, serial, IDT, SVM backend and platform glue. Everything
//! that does not touch hardware lives in `slipway-hv-core`.
#![no_std]
#![no_main]

mod boot;
mod console;
mod qemu_exit;
mod serial;

use multiboot2::{BootInformation, BootInformationHeader};
use qemu_exit::Verdict;

/// Pre-launch entry, called by the 32-bit stub in long mode on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn pre_launch_main(magic: u32, info_addr: u32) -> ! {
    console::init();
    if magic != multiboot2::MAGIC {
        panic!("not booted by multiboot2: magic {magic:#x}");
    }
    // SAFETY: the early page tables identity-map the low 4 GiB, which holds the boot
    // information GRUB placed at `info_addr`; nothing writes to it afterwards.
    let info = unsafe { BootInformation::load(info_addr as usize as *const BootInformationHeader) }
        .unwrap_or_else(|e| panic!("invalid multiboot2 information at {info_addr:#x}: {e:?}"));
    print_banner(&info);
    qemu_exit::exit(Verdict::Success)
}

fn print_banner(info: &BootInformation<'_>) {
    let uefi = info.efi_sdt64_tag().is_some()
        || info.efi_sdt32_tag().is_some()
        || info.efi_memory_map_tag().is_some();
    hvprintln!(
        "booted via multiboot2 from {}",
        if uefi { "UEFI" } else { "BIOS" }
    );
    if let Some(efi_map) = info.efi_memory_map_tag() {
        hvprintln!(
            "memory map: {} entries (efi)",
            efi_map.memory_areas().count()
        );
    } else if let Some(map) = info.memory_map_tag() {
        hvprintln!("memory map: {} entries (basic)", map.memory_areas().len());
    } else {
        panic!("multiboot2 information has no memory map");
    }
    for (index, module) in info.module_tags().enumerate() {
        let name = module
            .cmdline()
            .ok()
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or("");
        hvprintln!("module {index}: {name} ({} bytes)", module.module_size());
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hvprintln!("panic: {info}");
    qemu_exit::exit(Verdict::Failure)
}
