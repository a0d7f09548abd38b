//! Records the seeds of the `tpm_commands` and `tpm_tis` targets from a real swtpm:
//! `cargo run -p slipway-fuzz --example record_tpm_seeds` (needs `swtpm` on the PATH).
//!
//! `tpm_commands`: swtpm's responses to `tpm_commands::session`, in the target's input format.
//! `tpm_tis`: the register values a PTP FIFO TPM returns to the TIS driver running the same
//! session (a well-behaved register model in front of swtpm, burst count 32), in the target's
//! input format (each read's bytes, in order).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slipway_fuzz::tpm_commands::{encode_responses, session};
use slipway_fuzz::tpm_tis::{SteppingClock, TIMEOUTS};
use slipway_tpm::tis::{access, reg, sts};
use slipway_tpm::{Tis, TisRegisters, Tpm, TpmTransport};

struct Swtpm {
    child: Child,
    stream: UnixStream,
}

impl Swtpm {
    fn start(dir: &Path) -> Swtpm {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("state directory");
        let sock = dir.join("data.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init"])
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--ctrl")
            .arg(format!(
                "type=unixio,path={}",
                dir.join("ctrl.sock").display()
            ))
            .stdout(Stdio::null())
            .spawn()
            .expect("swtpm runs");
        let started = Instant::now();
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("swtpm's socket: {e}"),
            }
        };
        Swtpm { child, stream }
    }

    fn exchange(&mut self, command: &[u8]) -> Vec<u8> {
        self.stream.write_all(command).expect("write");
        let mut header = [0u8; 10];
        self.stream.read_exact(&mut header).expect("header");
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        let mut out = header.to_vec();
        out.resize(size, 0);
        self.stream.read_exact(&mut out[10..]).expect("body");
        out
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Recording<'a> {
    tpm: &'a mut Swtpm,
    responses: Vec<Vec<u8>>,
}

impl TpmTransport for Recording<'_> {
    type Error = &'static str;
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        let answer = self.tpm.exchange(command);
        response[..answer.len()].copy_from_slice(&answer);
        self.responses.push(answer);
        Ok(self.responses.last().map_or(0, Vec::len))
    }
}

/// A PTP FIFO TPM at the register level in front of swtpm, recording every value read.
struct Fifo<'a> {
    tpm: &'a mut Swtpm,
    active: bool,
    state: u8, // 0 idle, 1 ready, 2 reception, 3 completion
    command: Vec<u8>,
    response: Vec<u8>,
    read: usize,
    trace: Vec<u8>,
}

const BURST: u32 = 32;

impl Fifo<'_> {
    fn expected_len(&self) -> usize {
        if self.command.len() < 6 {
            usize::MAX
        } else {
            u32::from_be_bytes([
                self.command[2],
                self.command[3],
                self.command[4],
                self.command[5],
            ]) as usize
        }
    }
    fn sts(&self) -> u32 {
        let burst = BURST << sts::BURST_SHIFT;
        match self.state {
            0 => sts::VALID,
            1 => sts::VALID | sts::COMMAND_READY | burst,
            2 if self.command.len() < self.expected_len() => sts::VALID | sts::EXPECT | burst,
            2 => sts::VALID | burst,
            _ if self.read < self.response.len() => sts::VALID | sts::DATA_AVAIL | burst,
            _ => sts::VALID,
        }
    }
}

impl TisRegisters for Fifo<'_> {
    fn read8(&mut self, _locality: u8, offset: u16) -> u8 {
        let value = match offset {
            reg::ACCESS => {
                access::VALID
                    | if self.active {
                        access::ACTIVE_LOCALITY
                    } else {
                        0
                    }
            }
            reg::DATA_FIFO => {
                self.read += 1;
                self.response.get(self.read - 1).copied().unwrap_or(0xff)
            }
            reg::RID => 1,
            _ => 0,
        };
        self.trace.push(value);
        value
    }
    fn read32(&mut self, _locality: u8, offset: u16) -> u32 {
        let value = match offset {
            reg::STS => self.sts(),
            reg::DID_VID => 0x0001_1014,
            reg::INTF_CAPABILITY => 0x3000_0000,
            _ => 0,
        };
        self.trace.extend_from_slice(&value.to_le_bytes());
        value
    }
    fn write8(&mut self, _locality: u8, offset: u16, value: u8) {
        match offset {
            reg::ACCESS if value & access::REQUEST_USE != 0 => self.active = true,
            reg::ACCESS if value & access::ACTIVE_LOCALITY != 0 => self.active = false,
            reg::DATA_FIFO => {
                self.state = 2;
                self.command.push(value);
            }
            _ => {}
        }
    }
    fn write32(&mut self, _locality: u8, offset: u16, value: u32) {
        if offset != reg::STS {
            return;
        }
        if value & sts::COMMAND_READY != 0 {
            self.state = 1;
            self.command.clear();
        }
        if value & sts::GO != 0 && self.state == 2 {
            self.response = self.tpm.exchange(&self.command);
            self.read = 0;
            self.state = 3;
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dir = std::env::temp_dir().join(format!("slipway-fuzz-seeds-{}", std::process::id()));

    let mut swtpm = Swtpm::start(&dir);
    let mut tpm = Tpm::new(Recording {
        tpm: &mut swtpm,
        responses: Vec::new(),
    });
    let outcome = session(&mut tpm);
    let responses = tpm.into_transport().responses;
    println!(
        "tpm_commands: {} responses, banks {:?}",
        responses.len(),
        outcome.banks
    );
    let path = root.join("tpm_commands/swtpm-session");
    std::fs::write(&path, encode_responses(&responses)).expect("write the seed");
    drop(swtpm);

    let mut swtpm = Swtpm::start(&dir);
    let mut fifo = Fifo {
        tpm: &mut swtpm,
        active: false,
        state: 0,
        command: Vec::new(),
        response: Vec::new(),
        read: 0,
        trace: Vec::new(),
    };
    {
        let mut tis = Tis::with_timeouts(&mut fifo, SteppingClock::default(), 2, TIMEOUTS)
            .expect("locality 2");
        tis.probe().expect("probe");
        tis.request_locality().expect("locality");
        let mut response = [0u8; 64];
        let startup = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
        tis.transmit(&startup, &mut response).expect("startup");
        let mut tpm = Tpm::new(tis);
        let outcome = session(&mut tpm);
        println!("tpm_tis: banks {:?}", outcome.banks);
        let _ = tpm.into_transport().relinquish_locality();
    }
    println!("tpm_tis: {} bytes of register reads", fifo.trace.len());
    std::fs::write(root.join("tpm_tis/swtpm-fifo-session"), &fifo.trace).expect("write the seed");
    drop(swtpm);
    let _ = std::fs::remove_dir_all(&dir);
}
