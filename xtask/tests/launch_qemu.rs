//! The emulated launch with a real QEMU attached through the proxy, no hypervisor needed.
//!
//! The guest is a 24-byte boot sector that SeaBIOS loads: it reads port 0xe9 (the driver's
//! readback byte) and writes it back, then writes two launch requests to port 0xe9 and halts.
//! QEMU's `-device loader` puts a known 64 KiB region into guest RAM at 2 MiB. The test checks
//! that QEMU's data-socket hand-over went through the proxy (SeaBIOS's TPM2_Startup and PCR0
//! measurements reached swtpm), that the first request measured exactly the region and the
//! second was ignored without any TPM command, and that everything stops cleanly.
//!
//! Needs `qemu-system-x86_64` and `swtpm`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use slipway_measure::{BankSet, DigestList, pcr::emulated_launch_pcr17};
use slipway_tpm::{PcrMask, Tpm, TpmTransport};
use xtask::launch::ctrl::CtrlCommand;
use xtask::launch::driver::DEBUGCON_READBACK;
use xtask::launch::{
    CtrlClient, CtrlConnection, EmulatedLaunch, LaunchOutcome, Origin, Qmp, TpmOptions,
};
use xtask::procs::{ManagedChild, TempDir, timed_command};

const REGION_ADDR: u64 = 0x20_0000;
const REGION_LEN: usize = 0x1_0000;

/// A boot sector: `in al, 0xe9; out 0xe9, al`, then the NUL-terminated message to port 0xe9,
/// then `hlt` forever.
fn boot_sector(message: &[u8]) -> Vec<u8> {
    let mut code = vec![
        0xfa, // cli
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xba, 0xe9, 0x00, // mov dx, 0xe9
        0xec, // in al, dx
        0xee, // out dx, al
        0xbe, 0x18, 0x7c, // mov si, 0x7c18 (the message)
        0xac, // next: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done
        0xee, // out dx, al
        0xeb, 0xf8, // jmp next
        0xf4, // done: hlt
        0xeb, 0xfd, // jmp done
    ];
    assert_eq!(code.len(), 0x18);
    code.extend_from_slice(message);
    code.push(0);
    assert!(code.len() <= 510);
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xaa]);
    // SeaBIOS cannot read the boot sector of a tiny disk: give it 1 MiB.
    code.resize(1 << 20, 0);
    code
}

fn region() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..REGION_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct DataChannel(UnixStream);

impl TpmTransport for DataChannel {
    type Error = std::io::Error;

    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> std::io::Result<usize> {
        self.0.write_all(command)?;
        let mut header = [0u8; 10];
        self.0.read_exact(&mut header)?;
        let size = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
        if !(10..=response.len()).contains(&size) {
            return Err(std::io::Error::other(format!("response size {size}")));
        }
        response[..10].copy_from_slice(&header);
        self.0.read_exact(&mut response[10..size])?;
        Ok(size)
    }
}

fn read_pcr(tpm: &mut Tpm<DataChannel>, banks: &BankSet, pcr: u8) -> DigestList {
    let mut out = DigestList::new();
    for bank in banks.iter() {
        let values = tpm.pcr_read(bank.alg, PcrMask::range(pcr, pcr)).unwrap();
        out.push(*values.get(pcr).unwrap()).unwrap();
    }
    out
}

#[test]
fn qemu_hands_its_data_socket_through_the_proxy_and_one_launch_is_measured() {
    let dir = TempDir::new("launch-qemu").unwrap();
    let disk = dir.path().join("boot.img");
    std::fs::write(
        &disk,
        boot_sector(b"\nSLIPWAY-LAUNCH 0x200000 0x10000\nSLIPWAY-LAUNCH 0x0 0x1000\n"),
    )
    .unwrap();
    let blob = dir.path().join("region.bin");
    let measured = region();
    std::fs::write(&blob, &measured).unwrap();

    let banks = BankSet::all_supported();
    let launch = EmulatedLaunch::start(dir.path(), &TpmOptions::default(), banks, None).unwrap();
    let mut cmd = timed_command("qemu-system-x86_64", Duration::from_secs(120));
    cmd.args([
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-nic",
        "none",
        "-m",
        "128M",
    ])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=ide", disk.display()))
    .arg("-device")
    .arg(format!(
        "loader,file={},addr={REGION_ADDR:#x},force-raw=on",
        blob.display()
    ))
    .args(launch.qemu_args())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut qemu = ManagedChild::spawn("qemu-system-x86_64", cmd).unwrap();

    let harness_hash_end = |launch: &EmulatedLaunch| {
        launch
            .tpm()
            .log()
            .iter()
            .any(|f| f.origin == Origin::Harness && f.command == CtrlCommand::HashEnd.code())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !harness_hash_end(&launch) {
        if let Some(status) = qemu.try_wait().unwrap() {
            let mut stderr = String::new();
            let _ = qemu
                .child_mut()
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr);
            panic!("QEMU exited ({status}) before the launch: {stderr}");
        }
        assert!(Instant::now() < deadline, "no launch within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give the driver a moment for the second request line, then end QEMU without a clean
    // shutdown, so that swtpm keeps its state for the checks below.
    std::thread::sleep(Duration::from_millis(500));
    qemu.kill_and_reap().unwrap();

    let log = launch.tpm().log();
    let qemu_commands: Vec<String> = log
        .iter()
        .filter(|f| f.origin == Origin::Qemu)
        .map(|f| format!("{}={:?}", f.name(), f.result))
        .collect();
    eprintln!("QEMU's control commands through the proxy: {qemu_commands:?}");
    let datafd = log
        .iter()
        .find(|f| f.command == CtrlCommand::SetDataFd.code())
        .expect("QEMU sent CMD_SET_DATAFD");
    assert_eq!(
        (datafd.origin, datafd.fds, datafd.result),
        (Origin::Qemu, 1, Some(0))
    );
    assert!(
        log.iter()
            .any(|f| f.origin == Origin::Qemu && f.command == CtrlCommand::Init.code()),
        "QEMU initialized the TPM through the proxy"
    );
    let harness_starts = log
        .iter()
        .filter(|f| f.origin == Origin::Harness && f.command == CtrlCommand::HashStart.code())
        .count();
    assert_eq!(harness_starts, 1, "exactly one launch reached the TPM");

    // Read the PCRs the way a second QEMU would: hand swtpm a new data socket (no CMD_INIT,
    // which would reset the TPM).
    std::thread::sleep(Duration::from_millis(200));
    let mut ctrl = CtrlClient::new(CtrlConnection::connect(launch.tpm().qemu_socket()).unwrap());
    let (ours, swtpms) = UnixStream::pair().unwrap();
    ctrl.set_data_fd(swtpms.as_fd()).unwrap();
    drop(swtpms);
    ours.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tpm = Tpm::new(DataChannel(ours));
    let active = tpm.active_banks().unwrap();
    assert_eq!(
        read_pcr(&mut tpm, &active, 17),
        emulated_launch_pcr17(&active, &measured),
        "PCR17 holds the region's launch measurement"
    );
    for d in read_pcr(&mut tpm, &active, 18).iter() {
        assert!(d.as_bytes().iter().all(|&b| b == 0), "PCR18 is 0");
    }
    for d in read_pcr(&mut tpm, &active, 0).iter() {
        assert!(
            d.as_bytes().iter().any(|&b| b != 0),
            "SeaBIOS measured into PCR0 over QEMU's data socket"
        );
    }
    drop(tpm);
    drop(ctrl);

    let mut launch = Some(launch);
    let report = launch.take().unwrap().finish().unwrap();
    eprint!("{}", report.launch.summary());
    let attempt = report.launch.launch.as_ref().expect("a launch request");
    match &attempt.outcome {
        LaunchOutcome::Measured {
            request,
            expected_pcr17,
            ..
        } => {
            assert_eq!(request.region_start, REGION_ADDR);
            assert_eq!(request.region_len, REGION_LEN as u64);
            assert_eq!(**expected_pcr17, emulated_launch_pcr17(&banks, &measured));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        report.launch.ignored_requests,
        ["SLIPWAY-LAUNCH 0x0 0x1000"]
    );
    assert_eq!(
        report.launch.other_lines,
        [(DEBUGCON_READBACK as char).to_string()],
        "the guest read the driver's readback byte"
    );
    assert!(report.tpm.clean_exit, "swtpm exits on CMD_SHUTDOWN");
    for socket in [
        "tpm-proxy.sock",
        "swtpm-ctrl.sock",
        "debugcon.sock",
        "qmp.sock",
    ] {
        assert!(!dir.path().join(socket).exists(), "{socket} left behind");
    }
    assert!(Path::new(dir.path()).exists());
}

#[test]
fn a_clean_qemu_quit_shuts_swtpm_down_through_the_proxy() {
    let dir = TempDir::new("launch-qemu").unwrap();
    let launch = EmulatedLaunch::start(
        dir.path(),
        &TpmOptions::default(),
        BankSet::all_supported(),
        None,
    )
    .unwrap();
    let mut cmd = timed_command("qemu-system-x86_64", Duration::from_secs(60));
    cmd.args([
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-nic",
        "none",
        "-m",
        "128M",
    ])
    .args(launch.qemu_args())
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let mut qemu = ManagedChild::spawn("qemu-system-x86_64", cmd).unwrap();
    let mut qmp = Qmp::connect(launch.driver().qmp_socket(), Duration::from_secs(10)).unwrap();
    // QMP works before the launch driver ever needs it: pause, check, resume.
    qmp.stop().unwrap();
    assert!(!qmp.status().unwrap().0);
    qmp.cont().unwrap();
    assert!(qmp.status().unwrap().0);
    let err = qmp.execute("no-such-command", None).unwrap_err();
    assert!(err.to_string().contains("no-such-command"), "{err}");
    qmp.quit().unwrap();
    let status = qemu
        .wait_until(Instant::now() + Duration::from_secs(10))
        .unwrap()
        .expect("QEMU quits");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(200));
    let last = launch.tpm().log().last().cloned().unwrap();
    assert_eq!(
        (last.origin, last.command, last.result),
        (Origin::Qemu, CtrlCommand::Shutdown.code(), Some(0)),
        "QEMU's clean exit sends CMD_SHUTDOWN"
    );
    let report = launch.finish().unwrap();
    assert!(report.tpm.clean_exit);
    assert!(
        report.tpm.proxy_errors.is_empty(),
        "{:?}",
        report.tpm.proxy_errors
    );
    assert!(report.launch.launch.is_none());
}
