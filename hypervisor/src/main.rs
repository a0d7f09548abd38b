//! Slipway hypervisor binary: boot, serial, IDT, SVM backend and platform glue. Everything
//! that does not touch hardware lives in `slipway-hv-core`.
#![no_std]
#![no_main]

mod acpi;
mod address_space;
mod boot;
mod boot_record;
mod console;
mod cpu;
mod domain_console;
mod idt;
mod interrupts;
mod lapic;
mod launch;
mod lazy_state;
mod log_windows;
mod measurement;
mod memmap;
mod percpu;
mod physmem;
mod qemu_exit;
mod serial;
mod smp;
mod svm;
mod tpm;
mod tsc;
mod txt;
mod vm;
mod vmx;

use multiboot2::{BootInformation, BootInformationHeader};
use slipway_hv_core::frame_alloc::{BitmapFrameAllocator, FrameAllocator};
use slipway_hv_core::paging::TableKind;
use slipway_hv_core::sched::{RunAccounting, Scheduler};

use launch::{LaunchBackend, LaunchHandoff};
use qemu_exit::Verdict;

/// The pre-launch stage's record for the post-launch stage, in the section the post-launch entry
/// keeps (everything else outside the measured image is zeroed there).
#[unsafe(link_section = ".handoff")]
static mut HANDOFF: LaunchHandoff = LaunchHandoff::empty();

/// The hypervisor's state once the post-launch stage has built it.
static mut HV: core::mem::MaybeUninit<vm::Hv> = core::mem::MaybeUninit::uninit();

/// Domain bookkeeping and hardware state: large (about 150 KiB), so statics rather than stack.
static mut DOMAIN_TABLE: slipway_hv_core::domain::DomainTable =
    slipway_hv_core::domain::DomainTable::new();
static mut DOMAINS: [Option<vm::DomainHw>; slipway_hv_core::domain::MAX_DOMAINS] =
    [const { None }; slipway_hv_core::domain::MAX_DOMAINS];

static mut SCHEDULER: Scheduler = Scheduler::new(1, 3);
static mut ACCOUNTING: RunAccounting = RunAccounting::new(1);

/// Set by the pre-launch stage, in .bss: the post-launch stage checks that it reads zero, i.e.
/// that nothing of the pre-launch stage's zero-initialised state survived into it.
static PRE_LAUNCH_CANARY: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
const CANARY: u64 = 0x5052_454c_4155_4e43;

/// Bitmap storage for the frame allocator: one bit per 4 KiB frame, 4 GiB of RAM; a machine
/// with more RAM gets its bitmap from free RAM below 4 GiB (`frame_alloc::carve_bitmap_storage`).
static mut FRAME_BITMAP: [u64; 16384] = [0; 16384];

/// Pre-launch entry, called by the 32-bit stub in long mode on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn pre_launch_main(magic: u32, info_addr: u32) -> ! {
    PRE_LAUNCH_CANARY.store(CANARY, core::sync::atomic::Ordering::SeqCst);
    console::init();
    // Exceptions are reported from the first Rust instruction on (the post-launch stage loads
    // these tables again, as after a dynamic launch nothing of this stage's CPU state survives).
    // SAFETY: boot CPU, interrupts disabled, before anything uses the GDT/TSS.
    unsafe { cpu::init(0) };
    idt::build();
    idt::load();
    if magic != multiboot2::MAGIC {
        panic!("not booted by multiboot2: magic {magic:#x}");
    }
    // SAFETY: the early page tables identity-map the low 4 GiB, which holds the boot
    // information GRUB placed at `info_addr`; nothing writes to it afterwards.
    let info = unsafe { BootInformation::load(info_addr as usize as *const BootInformationHeader) }
        .unwrap_or_else(|e| panic!("invalid multiboot2 information at {info_addr:#x}: {e:?}"));
    // The crate's typed accessors assert on some malformed tags: judge every tag first, so a bad
    // one refuses the boot by name instead of panicking inside the hypervisor.
    let tags = info
        .tags()
        .map(|tag| (tag.header().typ.get(), tag.header().size, tag.payload()));
    if let Err(malformed) = slipway_hv_core::multiboot_tags::check_tags(tags) {
        hvprintln!("pre-launch: boot refused: {malformed}; nothing starts");
        qemu_exit::exit(Verdict::Failure);
    }
    print_banner(&info);
    // SAFETY: single CPU, before the launch: nothing else references HANDOFF.
    let handoff = unsafe { &mut *core::ptr::addr_of_mut!(HANDOFF) };
    // Not in .bss (the post-launch entry keeps it): start from an empty record.
    *handoff = LaunchHandoff::empty();
    if let Err(error) = launch::describe_boot(&info, handoff) {
        // A boot refused by rule (not a hypervisor bug): say why and start nothing.
        hvprintln!("pre-launch: boot refused: {error}; nothing starts");
        qemu_exit::exit(Verdict::Failure);
    }
    hvprintln!(
        "pre-launch: {} processors in the ACPI MADT; application processors stay parked until the post-launch stage",
        handoff.apic_id_count
    );
    // The TIS driver's timeouts need the clock (post-launch calibrates again, fresh).
    tsc::calibrate();
    let cmdline = &handoff.cmdline[..handoff.cmdline_len as usize];
    launch::launch(LaunchBackend::choose(cmdline), handoff)
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
        // `describe_boot` refuses the boot for this, by name.
        hvprintln!("memory map: none");
    }
    for (index, module) in info.module_tags().enumerate() {
        // The first word as given (escaped): whether it is a valid, unique name is checked next.
        let word = slipway_protocol::boot_modules::first_word(
            module.cmdline().map_or(&b""[..], str::as_bytes),
        );
        hvprintln!(
            "module {index}: {} ({} bytes)",
            word.escape_ascii(),
            module.module_size()
        );
    }
}

/// Post-launch entry (from `post_launch_entry`, or from the TXT MLE entry with `entered_by` =
/// 1; fresh stack). `handoff_addr` is untrusted (after TXT: taken from the validated heap).
#[unsafe(no_mangle)]
extern "C" fn post_launch_main(handoff_addr: u64, entered_by: u64) -> ! {
    // The entry stub zeroed .bss: every piece of state is set up again here, from nothing the
    // pre-launch stage left (its console, GDT/TSS, IDT, clock are gone).
    console::init();
    // SAFETY: boot CPU, interrupts disabled, first thing in this stage.
    unsafe { cpu::init(0) };
    idt::build();
    idt::load();
    percpu::register(0, percpu::apic_id());
    tsc::calibrate();
    // The zero of the boot timeline: the first instruction of the entry stub.
    hvprintln!("milestone entry at 0 us");
    if PRE_LAUNCH_CANARY.load(core::sync::atomic::Ordering::SeqCst) != 0 {
        panic!("post-launch: the pre-launch stage's .bss survived the launch");
    }
    hvprintln!(
        "post-launch: clean state: .bss zeroed (the pre-launch canary is gone), initialised data as measured"
    );
    hvprintln!("post-launch: TSC {} kHz", tsc::hz() / 1000);
    // An Intel TXT launch (hardware or SIMULATED): every post-launch check of the MLE guide
    // before anything else; a failure ends the launch here.
    let txt_launch = (entered_by == 1).then(|| {
        // SAFETY: the image's own record, read only; nothing else writes it.
        txt::post_launch_entered(
            unsafe { &*core::ptr::addr_of!(HANDOFF) },
            core::ptr::addr_of!(HANDOFF) as u64,
        )
    });
    let handoff_addr = txt_launch.as_ref().map_or(handoff_addr, |t| t.handoff);

    // The only hand-off this image accepts is its own record; its contents are re-validated.
    let expected = core::ptr::addr_of!(HANDOFF) as u64;
    if handoff_addr != expected {
        panic!(
            "post-launch: hand-off at {handoff_addr:#x}, expected the image's record at {expected:#x}"
        );
    }
    // SAFETY: the address is the image's own static; the pre-launch stage is gone, nothing
    // else writes it.
    let handoff = unsafe { &*core::ptr::addr_of!(HANDOFF) };
    let image = address_space::image_range();
    let mut boot = memmap::validate(handoff, image).unwrap_or_else(|e| {
        hvprintln!("post-launch: hand-off refused: {e}; nothing starts");
        qemu_exit::exit(Verdict::Failure)
    });
    for range in txt_launch.iter().flat_map(|t| t.reserved.iter()) {
        if let Err(e) = memmap::reserve(&mut boot, *range) {
            hvprintln!("post-launch: cannot reserve SINIT's MDR {range:?}: {e}; nothing starts");
            qemu_exit::exit(Verdict::Failure)
        }
    }
    // SAFETY: the bitmap is used only by this allocator, which lives for the rest of the run.
    let static_bitmap = unsafe { &mut *core::ptr::addr_of_mut!(FRAME_BITMAP) };
    let carved_bitmap = slipway_hv_core::frame_alloc::carve_bitmap_storage(
        &mut boot.free,
        &mut boot.free_count,
        static_bitmap.len(),
        memmap::EARLY_MAP_LIMIT,
    )
    .unwrap_or_else(|e| {
        hvprintln!("post-launch: no room for the frame bitmap below 4 GiB: {e:?}; nothing starts");
        qemu_exit::exit(Verdict::Failure)
    });
    let free = &boot.free[..boot.free_count];
    let (below_4g, above_4g) = memmap::split_at_4_gib(free);
    hvprintln!(
        "post-launch: validated {} memory regions, {} modules; {} MiB free RAM in {} ranges: {} MiB below 4 GiB, {} MiB above",
        handoff.region_count,
        boot.module_count,
        (below_4g + above_4g) >> 20,
        free.len(),
        below_4g >> 20,
        above_4g >> 20
    );
    if boot.unused_ranges > 0 {
        hvprintln!(
            "post-launch: {} small RAM ranges ({} KiB) left unused: the allocator tracks {} ranges",
            boot.unused_ranges,
            boot.unused_bytes >> 10,
            memmap::MAX_RANGES
        );
    }

    // The firmware's event log (ACPI TPM2 log area) is copied now, while the early identity map
    // still reaches firmware-reserved memory; control domains get it unchanged at hand-off.
    let firmware_log = match log_windows::capture_firmware_log(handoff, &boot, image) {
        Ok(Some(log)) => {
            hvprintln!(
                "post-launch: firmware event log: {} bytes (ACPI TPM2 log area at {:#x})",
                log.len(),
                handoff.firmware_log_start
            );
            Some(log)
        }
        Ok(None) => {
            hvprintln!("post-launch: the firmware publishes no event log (ACPI TPM2)");
            None
        }
        Err(why) => {
            hvprintln!("post-launch: firmware event log not passed on: {why}");
            None
        }
    };

    let bitmap: &'static mut [u64] = match carved_bitmap {
        Some(range) => {
            hvprintln!(
                "post-launch: frame bitmap ({} KiB) in RAM at {:#x}",
                range.len() >> 10,
                range.start.0
            );
            // SAFETY: `range` is free RAM below 4 GiB (identity-mapped by the early tables now,
            // mapped RW by the hypervisor's own tables below), page-aligned, taken out of the
            // allocator's and the DirectMap's ranges, so nothing else ever references it.
            unsafe {
                core::slice::from_raw_parts_mut(
                    range.start.0 as *mut u64,
                    (range.len() / 8) as usize,
                )
            }
        }
        None => static_bitmap,
    };
    let mut alloc = BitmapFrameAllocator::new(free, bitmap)
        .unwrap_or_else(|e| panic!("frame allocator: {e:?}"));
    let mut mem = physmem::DirectMap::new();
    for range in free {
        mem.allow_write(*range);
    }
    for range in &boot.modules[..boot.module_count] {
        mem.allow_read(*range);
    }
    // The AP trampoline page must be usable low RAM (outside the allocator, which starts at 1 MiB).
    let trampoline = smp::TRAMPOLINE;
    let trampoline_ok = boot.low[..boot.low_count]
        .iter()
        .any(|r| r.start.0 <= trampoline && trampoline + 4096 <= r.end.0);
    if trampoline_ok {
        smp::install_trampoline();
    } else {
        hvprintln!(
            "smp: page {trampoline:#x} is not usable RAM: application processors stay parked"
        );
    }
    // The hypervisor's own RAM: what the allocator manages and the carved frame bitmap.
    let mut own_ram = heapless::Vec::<_, { memmap::MAX_RANGES + 1 }>::new();
    own_ram.extend(free.iter().copied().chain(carved_bitmap));
    let table = address_space::build(
        &mut mem,
        &mut alloc,
        &own_ram,
        &boot.modules[..boot.module_count],
        trampoline_ok.then_some(trampoline),
    )
    .unwrap_or_else(|e| panic!("hypervisor page tables: {e:?}"));
    // Boot-time assertion of the builder's invariants (no W+X leaf, NX on data, no U bit).
    if let Err((entry, why)) =
        slipway_hv_core::paging::check_tables(&mem, table.root(), TableKind::Host)
    {
        panic!("hypervisor page tables: entry at {entry:#x}: {why}");
    }
    // SAFETY: the new tables identity-map the image (text RX, data RW), stacks (minus guards),
    // free RAM and modules: everything this CPU uses next.
    unsafe { address_space::activate(table.root().start().0) };
    hvprintln!(
        "post-launch: own page tables active (checked: no W+X page, NX on data, stack guard pages unmapped); {} frames free",
        alloc.free_frames()
    );
    tsc::milestone(format_args!("memory-ready"));
    lapic::mask_legacy_pics();
    lapic::init_this_cpu();
    let cmdline =
        core::str::from_utf8(&handoff.cmdline[..handoff.cmdline_len as usize]).unwrap_or("");
    run_self_test(cmdline);

    let root = table.root().start().0;
    // SAFETY: HV is written once here; from now on it is reached only through smp::with_hv.
    let hv = unsafe { &mut *core::ptr::addr_of_mut!(HV) };
    let hv = hv.write(start_hypervisor(
        mem,
        alloc,
        handoff,
        &boot,
        cmdline,
        firmware_log,
        txt_launch,
    ));
    smp::install(hv);
    let wanted = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cpus="))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(cpu::MAX_CPUS);
    let pcpus = if trampoline_ok {
        {
            let count = (handoff.apic_id_count as usize).min(handoff.apic_ids.len());
            LaunchBackend::None.start_application_processors(
                root,
                &handoff.apic_ids[..count],
                wanted,
            )
        }
    } else {
        1
    };
    hvprintln!(
        "smp: {pcpus} physical CPUs schedule vCPUs (tick {} ms)",
        smp::TICK_MS
    );
    let domb_memory = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("domb_mem="))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(vm::DOMB_DEFAULT_MEMORY, |mib| mib << 20);
    if let Some(n) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("nmi_test="))
        .and_then(|v| v.parse::<u32>().ok())
    {
        hvprintln!("nmi test: {n} NMIs will be sent to cpu 0 while a guest runs");
        smp::NMI_TEST_LEFT.store(n, core::sync::atomic::Ordering::SeqCst);
    }
    if let Err(error) = slipway_protocol::boot_modules::slots::requested(cmdline) {
        hvprintln!("no boot domain: hypervisor command line: {error}; nothing to run");
        qemu_exit::exit(Verdict::Failure)
    }
    let created = smp::with_hv(|hv| {
        hv.set_pcpus(pcpus, 3, tsc::hz() / 1000 * u64::from(smp::TICK_MS));
        hv.tsc_hz = tsc::hz();
        let has_domb = hv.domb_module.is_some();
        let image = hv
            .domb_module
            .map_or(&[][..], |index| vm::module_bytes(hv.modules[index].range));
        hv.create_domb(image, domb_memory, cmdline)
            .map_err(|reason| (reason, has_domb))
    });
    match created {
        Ok(_) => {
            tsc::milestone(format_args!("domb-started"));
            smp::with_hv(|hv| hv.start_watchdog(tsc::now(), tsc::hz()));
        }
        Err((reason, has_domb)) => {
            hvprintln!("no boot domain: {reason}; nothing to run");
            qemu_exit::exit(if has_domb {
                Verdict::Failure
            } else {
                Verdict::Success
            })
        }
    }
    smp::release_aps();
    smp::scheduler_loop(0)
}

/// Enables SVM and gathers the modules: everything the domains need from the platform.
fn start_hypervisor(
    mem: physmem::DirectMap,
    mut alloc: BitmapFrameAllocator<'static>,
    handoff: &LaunchHandoff,
    boot: &memmap::ValidatedBoot,
    cmdline_text: &str,
    firmware_log: Option<&'static [u8]>,
    txt_launch: Option<txt::TxtLaunched>,
) -> vm::Hv {
    // The boot modules, named once (`slipway_protocol::boot_modules`, checked by `memmap::validate`).
    let mut modules = heapless::Vec::<vm::BootModule, { vm::MAX_MODULES }>::new();
    for (index, name) in boot.module_names.iter().enumerate() {
        let raw = &handoff.modules[index];
        let line = core::str::from_utf8(&raw.cmdline[..raw.cmdline_len as usize]).unwrap_or("");
        let mut cmdline = heapless::String::new();
        // Cannot fail: a hand-off command line is at most MAX_CMDLINE bytes, the string's size.
        let _ = cmdline.push_str(line);
        // Cannot fail: `module_names` holds at most MAX_MODULES entries.
        let _ = modules.push(vm::BootModule {
            range: boot.module_bytes[index],
            name: name.clone(),
            cmdline,
        });
    }
    let domb_module = slipway_protocol::boot_modules::find_module(
        &boot.module_names,
        slipway_protocol::boot_modules::DOMB_MODULE,
    );
    // Refused before anything is measured: a malformed recovery option names its cause.
    let recovery = slipway_hv_core::recovery::RecoveryState::new(
        &handoff.cmdline[..handoff.cmdline_len as usize],
        &boot.module_names,
        |index| vm::module_bytes(modules[index].range),
    )
    .unwrap_or_else(|why| {
        hvprintln!("post-launch: boot refused: {why}; nothing starts");
        qemu_exit::exit(Verdict::Failure)
    });
    let (mut launch_kind, active_banks, mut tpm, banks, sinit_log) = match txt_launch {
        Some(t) => {
            let mut active = heapless::Vec::new();
            for bank in t.banks.iter() {
                let _ = active.push(bank.alg.into());
            }
            (t.kind, active, Some(t.tpm), t.banks, Some(t.log))
        }
        None => {
            let (kind, active, tpm, banks) = check_launch();
            (kind, active, tpm, banks, None)
        }
    };
    // The boot record counts this boot before domB runs (an invalid `slot=` counts nothing:
    // `post_launch_main` refuses to start domB).
    let requested = slipway_protocol::boot_modules::slots::requested(cmdline_text);
    let requested_slot = requested.unwrap_or(slipway_protocol::boot_modules::slots::DEFAULT_SLOT);
    let (boot_state, boot_record) = match (tpm.as_mut(), requested) {
        (Some(tpm), Ok(slot)) => {
            let (state, record) = boot_record::count(tpm, slot);
            (Some(state), record)
        }
        _ => (
            None,
            slipway_hv_core::boot_report::BootRecordState::unknown(requested_slot),
        ),
    };
    let measurement = tpm.and_then(|tpm| {
        let kind = match launch_kind {
            slipway_protocol::v1::LaunchKind::Emulated => {
                slipway_measure::events::LaunchKind::Emulated
            }
            slipway_protocol::v1::LaunchKind::TxtSimulated => {
                slipway_measure::events::LaunchKind::TxtSimulated
            }
            _ => slipway_measure::events::LaunchKind::Unmeasured,
        };
        let cmdline = &handoff.cmdline[..handoff.cmdline_len as usize];
        // The one lookup: the image measured here is the image `create_domb` starts.
        let domb_image =
            domb_module.map_or(&[][..], |index| vm::module_bytes(modules[index].range));
        let region = (kind == slipway_measure::events::LaunchKind::Emulated).then(|| {
            tpm::with_measured_region(|start, region| {
                let mut hasher = slipway_measure::hash::MultiHasher::new(&banks);
                hasher.update(region);
                slipway_hv_core::measurement::LaunchRegion {
                    start,
                    size: region.len() as u64,
                    digests: hasher.finalize_for(),
                }
            })
        });
        let inputs = slipway_hv_core::measurement::LaunchInputs {
            kind,
            region,
            cmdline,
            domb_image,
            boot_state,
        };
        let fail_at = core::str::from_utf8(cmdline)
            .unwrap_or("")
            .split(' ')
            .find_map(|w| w.strip_prefix("tpm_fault="))
            .and_then(|n| n.parse::<u32>().ok());
        let started = match sinit_log {
            Some(log) => measurement::resume(tpm, banks, fail_at, log, &inputs),
            None => measurement::start(tpm, banks, fail_at, &inputs),
        };
        match started {
            Ok(m) => {
                if m.failure().is_none() {
                    hvprintln!("measurement: launch kind, command line and domB image in PCR19");
                }
                Some(m)
            }
            Err(why) => {
                hvprintln!("UNMEASURED LAUNCH: measurement failed before domB: {why}");
                launch_kind = slipway_protocol::v1::LaunchKind::None;
                None
            }
        }
    });
    let (vcpus, table_kind, ept_large_pages, tag_count) = choose_backend(&mut alloc);
    let mut hv = vm::Hv::new(slipway_hv_core::hypervisor::Parts {
        mem,
        alloc,
        vcpus,
        host: vm::HostServices,
        table_kind,
        ept_large_pages,
        tag_count,
        // SAFETY: the statics are handed out once, here, to the one `Hv`.
        sched: unsafe { &mut *core::ptr::addr_of_mut!(SCHEDULER) },
        // SAFETY: as above.
        accounting: unsafe { &mut *core::ptr::addr_of_mut!(ACCOUNTING) },
        // SAFETY: as above.
        table: unsafe { &mut *core::ptr::addr_of_mut!(DOMAIN_TABLE) },
        // SAFETY: as above.
        domains: unsafe { &mut *core::ptr::addr_of_mut!(DOMAINS) },
        launch_kind,
        active_banks,
        measurement,
        firmware_log,
        modules,
        domb_module,
        recovery,
        boot_record,
    });
    // The recovery image, right after domB's and before domB runs.
    hv.measure_recovery_image();
    hv
}

/// Picks the virtualization backend from CPUID (AMD SVM or Intel VMX), enables it on this CPU
/// and says which.
fn choose_backend(
    alloc: &mut BitmapFrameAllocator<'static>,
) -> (vm::HwVcpus, slipway_hv_core::paging::TableKind, bool, u32) {
    use slipway_hv_core::paging::TableKind;
    let mut vcpus;
    let choice = if svm::check_support().is_ok() {
        let maps = svm::permission_maps(alloc).unwrap_or_else(|e| panic!("SVM: {e}"));
        vcpus = vm::HwVcpus {
            backend: vm::Backend::Svm {
                maps,
                cpus: [const { None }; cpu::MAX_CPUS],
            },
        };
        (TableKind::Nested, false, svm::asid_count())
    } else if vmx::supported() {
        let shared = vmx::VmxShared::new(alloc).unwrap_or_else(|e| panic!("VMX: {e}"));
        let large = shared.ept_large_pages();
        let vpids = shared.vpid_count();
        vcpus = vm::HwVcpus {
            backend: vm::Backend::Vmx {
                shared,
                cpus: [const { None }; cpu::MAX_CPUS],
            },
        };
        (TableKind::Ept, large, vpids)
    } else {
        panic!("no virtualization backend: the CPU offers neither AMD SVM nor Intel VMX");
    };
    vcpus
        .enable_on_this_cpu(0, alloc)
        .unwrap_or_else(|e| panic!("{e}"));
    match choice.0 {
        TableKind::Ept => hvprintln!(
            "backend: Intel VMX with EPT{}, VPID and unrestricted guest; every I/O port and MSR intercepted",
            if choice.1 {
                " (2 MiB pages)"
            } else {
                " (4 KiB pages)"
            }
        ),
        _ => hvprintln!("backend: AMD SVM with nested paging; every I/O port and MSR intercepted"),
    }
    (vcpus, choice.0, choice.1, choice.2)
}

/// Post-launch: decides from the TPM alone (never from the pre-launch stage's word) whether this
/// boot was launched: PCR17 must hold this image's measurement and PCR18 zero in every bank.
fn check_launch() -> (
    slipway_protocol::v1::LaunchKind,
    heapless::Vec<slipway_protocol::v1::TpmAlgId, 8>,
    Option<tpm::HvTpm>,
    slipway_measure::BankSet,
) {
    use slipway_protocol::v1::LaunchKind;
    let mut tpm = match tpm::open() {
        Ok(tpm) => tpm,
        Err(error) => {
            hvprintln!("UNMEASURED LAUNCH: no usable TPM ({error})");
            return (
                LaunchKind::None,
                heapless::Vec::new(),
                None,
                slipway_measure::BankSet::empty(),
            );
        }
    };
    let mut active = heapless::Vec::new();
    match tpm::verify_emulated_launch(&mut tpm) {
        Ok(banks) => {
            for bank in banks.iter() {
                let _ = active.push(bank.alg.into());
            }
            hvprintln!(
                "launch: emulated dynamic launch verified: PCR17 = H(0..0 || H(region)) and PCR18 = 0 in {} banks",
                active.len()
            );
            (LaunchKind::Emulated, active, Some(tpm), banks)
        }
        Err(why) => {
            hvprintln!("UNMEASURED LAUNCH: {why}");
            match tpm.active_banks() {
                Ok(banks) => {
                    for bank in banks.iter() {
                        let _ = active.push(bank.alg.into());
                    }
                    (LaunchKind::None, active, Some(tpm), banks)
                }
                Err(_) => (
                    LaunchKind::None,
                    active,
                    None,
                    slipway_measure::BankSet::empty(),
                ),
            }
        }
    }
}

/// `selftest=<kind>` on the hypervisor command line provokes a fault on purpose, so tests can
/// check that it is reported (and never escalates to a silent triple fault).
fn run_self_test(cmdline: &str) {
    let Some(kind) = cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix("selftest="))
    else {
        return;
    };
    hvprintln!("self-test: provoking `{kind}`");
    match kind {
        "page-fault" => {
            // SAFETY: deliberately faulting read of an unmapped address (a self-test).
            let value = unsafe { (0x40_0000_0000u64 as *const u64).read_volatile() };
            hvprintln!("self-test: read {value:#x} from an unmapped address?!");
        }
        "stack-overflow" => {
            fn recurse(depth: u64) -> u64 {
                if depth == u64::MAX {
                    return 0;
                }
                let buf = [depth; 64];
                core::hint::black_box(&buf);
                recurse(depth + 1) + core::hint::black_box(buf[3])
            }
            hvprintln!("self-test: {}", recurse(0));
        }
        "write-text" => {
            let target = run_self_test as *const () as *mut u8;
            // SAFETY: deliberately writing to the hypervisor's own code (a self-test of W^X).
            unsafe { target.write_volatile(0xcc) };
            hvprintln!("self-test: wrote to the hypervisor's text?!");
        }
        "panic" => panic!("self-test panic"),
        other => hvprintln!("self-test: unknown kind `{other}` ignored"),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hvprintln!("panic: {info}");
    let rbp: u64;
    // SAFETY: reading rbp has no side effects.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    idt::print_backtrace(percpu::current_cpu_index(), 0, rbp);
    qemu_exit::exit(Verdict::Failure)
}
