//! The emulated launch against a real swtpm, without QEMU: the test plays QEMU on the proxy
//! (hands swtpm a data socket with CMD_SET_DATAFD, CMD_INIT, TPM2_Startup over the data
//! socket) and the harness measures a region through the same proxy.
//!
//! Needs `swtpm` (Debian package swtpm).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use slipway_measure::{BankSet, Digest, DigestList, pcr::emulated_launch_pcr17};
use slipway_tpm::{PcrMask, StartupType, Tpm, TpmTransport};
use xtask::launch::ctrl::{self, CtrlCommand, cap};
use xtask::launch::{
    CtrlClient, CtrlConnection, CtrlError, CtrlTransport, EmulatedTpm, Origin, TpmOptions,
};
use xtask::procs::TempDir;

/// The data channel QEMU would hold: raw TPM 2.0 commands over its end of the socket pair.
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

/// Plays QEMU: connects to the proxy, passes a data socket, initializes the TPM and sends
/// TPM2_Startup(CLEAR) over the data socket.
fn attach_fake_qemu(proxy_socket: &Path) -> (CtrlClient<CtrlConnection>, Tpm<DataChannel>) {
    let mut qemu = CtrlClient::new(CtrlConnection::connect(proxy_socket).unwrap());
    let caps = qemu.capabilities().unwrap();
    for needed in [cap::SET_DATAFD, cap::HASHING, cap::INIT, cap::SET_LOCALITY] {
        assert_ne!(caps & needed, 0, "swtpm lacks capability {needed:#x}");
    }
    let (ours, swtpms) = UnixStream::pair().unwrap();
    qemu.set_data_fd(swtpms.as_fd()).unwrap();
    // As QEMU does: swtpm has its own reference now.
    drop(swtpms);
    qemu.init(0).unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut data = Tpm::new(DataChannel(ours));
    data.startup(StartupType::Clear).unwrap();
    (qemu, data)
}

/// Deterministic, not-chunk-aligned test region.
fn region(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_pcr(tpm: &mut Tpm<DataChannel>, banks: &BankSet, pcr: u8) -> DigestList {
    let mut out = DigestList::new();
    for bank in banks.iter() {
        let values = tpm.pcr_read(bank.alg, PcrMask::range(pcr, pcr)).unwrap();
        out.push(*values.get(pcr).unwrap()).unwrap();
    }
    out
}

fn zero_digests(banks: &BankSet) -> DigestList {
    let mut out = DigestList::new();
    for alg in banks.supported() {
        out.push(Digest::zero(alg)).unwrap();
    }
    out
}

#[test]
fn launch_through_the_proxy_sets_pcr17_and_leaves_qemus_locality_alone() {
    let dir = TempDir::new("launch-swtpm").unwrap();
    let mut tpm = EmulatedTpm::start(dir.path(), &TpmOptions::default()).unwrap();
    let (mut qemu, mut data) = attach_fake_qemu(tpm.qemu_socket());
    let banks = data.active_banks().unwrap();
    assert_eq!(
        banks.len(),
        4,
        "a fresh swtpm has sha1, sha256, sha384, sha512"
    );

    // QEMU pads CMD_SET_LOCALITY to the union's 4 bytes; the proxy forwards it as sent.
    let mut padded = CtrlCommand::SetLocality.code().to_be_bytes().to_vec();
    padded.extend_from_slice(&[2, 0, 0, 0]);
    assert_eq!(qemu.transport().exchange(&padded, &[]).unwrap(), [0; 4]);

    for pcr in 17..=22 {
        for d in read_pcr(&mut data, &banks, pcr).iter() {
            assert!(
                d.as_bytes().iter().all(|&b| b == 0xff),
                "PCR{pcr} before launch"
            );
        }
    }

    let measured = region(100_000);
    tpm.client().dynamic_launch(&measured).unwrap();

    assert_eq!(
        read_pcr(&mut data, &banks, 17),
        emulated_launch_pcr17(&banks, &measured)
    );
    for pcr in 18..=22 {
        assert_eq!(
            read_pcr(&mut data, &banks, pcr),
            zero_digests(&banks),
            "PCR{pcr}"
        );
    }

    // The harness did not touch the locality QEMU set (2): PCR20 extends at 1-3 only.
    data.pcr_extend(20, &zero_digests(&banks), &banks).unwrap();
    qemu.set_locality(0).unwrap();
    let refused = data.pcr_extend(20, &zero_digests(&banks), &banks);
    assert!(refused.is_err(), "PCR20 extend at locality 0 must fail");

    let log = tpm.log();
    let datafd = log
        .iter()
        .find(|f| f.command == CtrlCommand::SetDataFd.code())
        .expect("CMD_SET_DATAFD forwarded");
    assert_eq!(
        (datafd.origin, datafd.fds, datafd.result),
        (Origin::Qemu, 1, Some(0))
    );
    let harness: Vec<_> = log.iter().filter(|f| f.origin == Origin::Harness).collect();
    assert_eq!(
        harness.len(),
        2 + measured.len().div_ceil(ctrl::HASH_DATA_CHUNK)
    );
    assert!(harness.iter().all(|f| f.result == Some(0)));
    assert_eq!(harness[0].command, CtrlCommand::HashStart.code());
    assert_eq!(harness.last().unwrap().command, CtrlCommand::HashEnd.code());

    // Stopping shuts swtpm down and removes both sockets.
    let pid = tpm.swtpm_pid().unwrap();
    let proxy_socket = tpm.qemu_socket().to_owned();
    let report = tpm.stop().unwrap();
    assert!(report.clean_exit, "swtpm should exit on CMD_SHUTDOWN");
    assert!(report.proxy_errors.is_empty(), "{:?}", report.proxy_errors);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "swtpm still runs"
    );
    assert!(!proxy_socket.exists());
    assert!(
        !dir.path()
            .join(xtask::launch::tpm::SWTPM_CTRL_SOCKET)
            .exists()
    );
    // QEMU's connection is gone with the proxy.
    assert!(matches!(qemu.capabilities(), Err(CtrlError::Io { .. })));
}

#[test]
fn errors_name_the_command_and_result() {
    let dir = TempDir::new("launch-swtpm").unwrap();
    let mut tpm = EmulatedTpm::start(dir.path(), &TpmOptions::default()).unwrap();
    let mut qemu = CtrlClient::new(CtrlConnection::connect(tpm.qemu_socket()).unwrap());
    // Not initialized yet: swtpm answers TPM_BAD_ORDINAL ("not running") with 4 bytes, and
    // the framing stays in step for the next command.
    let err = tpm.client().hash_start().unwrap_err();
    assert!(
        matches!(
            err,
            CtrlError::Tpm {
                command: "CMD_HASH_START",
                code: 0xa
            }
        ),
        "{err}"
    );
    let err = qemu.tpm_established().unwrap_err();
    assert!(err.to_string().contains("CMD_GET_TPMESTABLISHED"), "{err}");
    assert!(qemu.capabilities().is_ok());
    // Locality 5 does not exist.
    let err = qemu.set_locality(5).unwrap_err();
    assert!(
        matches!(
            err,
            CtrlError::Tpm {
                command: "CMD_SET_LOCALITY",
                code: 0x3d
            }
        ),
        "{err}"
    );
    tpm.stop().unwrap();
}

#[test]
fn the_proxy_serves_a_second_qemu_after_the_first_disconnects() {
    let dir = TempDir::new("launch-swtpm").unwrap();
    let tpm = EmulatedTpm::start(dir.path(), &TpmOptions::default()).unwrap();
    let (qemu, data) = attach_fake_qemu(tpm.qemu_socket());
    drop(data);
    drop(qemu);
    // swtpm notices the closed data socket; a new client can hand over a new one.
    std::thread::sleep(Duration::from_millis(100));
    let (_qemu, mut data) = attach_fake_qemu(tpm.qemu_socket());
    assert_eq!(data.active_banks().unwrap().len(), 4);
    // Dropped without stop(): Drop shuts everything down.
    let pid = tpm.swtpm_pid().unwrap();
    drop(tpm);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_one_bank_tpm_gets_the_launch_in_that_bank() {
    let dir = TempDir::new("launch-swtpm").unwrap();
    let options = TpmOptions {
        pcr_banks: Some("sha256".into()),
        ..TpmOptions::default()
    };
    let tpm = EmulatedTpm::start(dir.path(), &options).unwrap();
    let (_qemu, mut data) = attach_fake_qemu(tpm.qemu_socket());
    let banks = data.active_banks().unwrap();
    assert_eq!(banks.len(), 1);
    let measured = region(4096 * 3);
    tpm.client().dynamic_launch(&measured).unwrap();
    assert_eq!(
        read_pcr(&mut data, &banks, 17),
        emulated_launch_pcr17(&banks, &measured)
    );
}
