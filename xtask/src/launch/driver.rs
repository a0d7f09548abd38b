//! The emulated-launch driver: the harness playing the CPU's part of a dynamic launch.
//!
//! QEMU's debugcon device on port 0xe9 is connected to a socket the driver listens on (QEMU
//! connects at start). The driver splits the port's bytes into lines
//! ([`super::request`]) and serves **the first launch request of the boot, and only that
//! one**: it pauses the guest (QMP `stop`, checked with `query-status`), reads the declared
//! region with QMP `pmemsave`, sends those bytes through the control proxy as
//! `CMD_HASH_START` / `CMD_HASH_DATA`... / `CMD_HASH_END` (PCR17 = H(0..0 || H(region)),
//! PCR18-22 = 0), and resumes the guest (`cont`). The guest cannot run between the read and
//! the measurement, so the bytes measured are the bytes that run.
//!
//! Every later request line in the same boot, well-formed or not, is recorded in
//! [`LaunchReport::ignored_requests`] and never reaches the TPM. A malformed first request is
//! refused (no TPM command) and still uses up the boot's one request. Other debugcon text is
//! kept in [`LaunchReport::other_lines`] (capped).
//!
//! If pausing fails, nothing is read or measured and the guest is resumed; if reading or
//! hashing fails, the guest is resumed anyway and the failure recorded: the hypervisor's PCR17
//! check then finds no launch and the boot counts as unmeasured.
//!
//! The core ([`LaunchSession`]) is generic over the guest ([`GuestAccess`]) and the TPM
//! ([`LaunchTpm`]) so its rules are unit-tested with fakes; [`LaunchDriver`] runs it in a
//! thread over the debugcon socket, QMP ([`QmpGuest`]) and the proxy.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use slipway_measure::{BankSet, DigestList, pcr::emulated_launch_pcr17};

use super::ctrl::{CtrlClient, CtrlError, CtrlTransport};
use super::qmp::{Qmp, QmpError};
use super::request::{DebugconLine, LaunchRequest, LineSplitter, RequestError};

/// The debugcon I/O port carrying launch requests.
pub use slipway_protocol::platform::DEBUGCON_PORT;
/// What the guest reads from [`DEBUGCON_PORT`] when this driver is attached (QEMU's
/// `readback` property; plain debugcon reads 0xe9, no device reads 0xff). ASCII `L`.
pub use slipway_protocol::platform::LAUNCH_HARNESS_READBACK as DEBUGCON_READBACK;
/// Most non-request debugcon lines kept in a report.
const MAX_OTHER_LINES: usize = 1000;
/// How long the driver waits for QMP to accept a connection.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a launch could not be performed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The guest could not be paused (nothing was measured).
    #[error("cannot pause the guest: {0}")]
    Pause(#[source] QmpError),
    /// QEMU reports the guest still running after `stop`.
    #[error("the guest still runs after QMP stop (status {0})")]
    NotPaused(String),
    /// The region could not be read from guest memory.
    #[error("cannot read the region from guest memory: {0}")]
    Read(#[source] QmpError),
    /// pmemsave's file is missing or has the wrong size.
    #[error("pmemsave file {path}: {detail}")]
    ReadFile { path: PathBuf, detail: String },
    /// The TPM refused the measurement.
    #[error("the emulated launch failed in the TPM: {0}")]
    Tpm(#[source] CtrlError),
    /// The guest could not be resumed.
    #[error("cannot resume the guest: {0}")]
    Resume(#[source] QmpError),
}

/// Access to the guest for one launch.
pub trait GuestAccess {
    /// Stops every vCPU and returns once they are stopped.
    fn pause(&mut self) -> Result<(), LaunchError>;
    /// Reads guest-physical memory.
    fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, LaunchError>;
    /// Resumes the vCPUs.
    fn resume(&mut self) -> Result<(), LaunchError>;
}

/// The TPM side of one launch.
pub trait LaunchTpm {
    /// Hash start, `region` as hash data, hash end.
    fn dynamic_launch(&mut self, region: &[u8]) -> Result<(), LaunchError>;
}

impl<T: CtrlTransport> LaunchTpm for CtrlClient<T> {
    fn dynamic_launch(&mut self, region: &[u8]) -> Result<(), LaunchError> {
        CtrlClient::dynamic_launch(self, region).map_err(LaunchError::Tpm)
    }
}

/// What became of the boot's launch request.
#[derive(Debug, Clone)]
pub enum LaunchOutcome {
    /// The region was measured: the TPM's PCR17 is `expected_pcr17` in each listed bank.
    Measured {
        request: LaunchRequest,
        /// Boxed: a digest list is large beside the other outcomes.
        expected_pcr17: Box<DigestList>,
        /// From pausing the guest to resuming it.
        paused_for: Duration,
    },
    /// The request line was malformed; the TPM was not touched.
    Refused(RequestError),
    /// The launch failed (see the error); the guest was resumed unless the error says so.
    Failed {
        request: LaunchRequest,
        error: String,
    },
}

/// The first request line of the boot and what became of it.
#[derive(Debug, Clone)]
pub struct LaunchAttempt {
    pub line: String,
    pub outcome: LaunchOutcome,
}

/// What became of the boot's SIMULATED GETSEC[SENTER] (`launch=txt-simulated`).
#[derive(Debug, Clone)]
pub enum TxtSenterOutcome {
    /// The simulated SINIT launched: the TPM got the hash start over the ACM, the guest
    /// resumes at `entry`; `pcr17`/`pcr18` are what SINIT's events give (the hypervisor's
    /// simulated seam sends the extends after the hash start).
    Launched {
        entry: u64,
        pcr17: Box<DigestList>,
        pcr18: Box<DigestList>,
    },
    /// The simulated SINIT refused (TXT.ERRORCODE set, nothing sent to the TPM).
    Refused { class: &'static str, reason: String },
    /// The harness could not play its part.
    Failed(String),
}

/// The boot's simulated SENTER request and what became of it.
#[derive(Debug, Clone)]
pub struct TxtSenterAttempt {
    pub line: String,
    pub outcome: TxtSenterOutcome,
    /// From pausing the guest to resuming it.
    pub paused_for: Duration,
}

/// Everything the driver saw in one boot.
#[derive(Debug, Clone, Default)]
pub struct LaunchReport {
    /// The boot's one launch request, if any arrived.
    pub launch: Option<LaunchAttempt>,
    /// The boot's one simulated SENTER request (`SLIPWAY-TXT-SENTER`), if any arrived.
    pub txt: Option<TxtSenterAttempt>,
    /// Later request lines: logged, never served.
    pub ignored_requests: Vec<String>,
    /// Other debugcon text (at most 1000 lines).
    pub other_lines: Vec<String>,
    /// Problems with the debugcon channel itself.
    pub errors: Vec<String>,
}

impl LaunchReport {
    /// Whether the boot's launch request was measured.
    pub fn measured(&self) -> Option<&DigestList> {
        match &self.launch {
            Some(LaunchAttempt {
                outcome: LaunchOutcome::Measured { expected_pcr17, .. },
                ..
            }) => Some(expected_pcr17),
            _ => None,
        }
    }

    /// A few lines for the run's summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        match &self.launch {
            None => out.push_str("emulated launch: no request on the debugcon port\n"),
            Some(attempt) => match &attempt.outcome {
                LaunchOutcome::Measured {
                    request,
                    expected_pcr17,
                    paused_for,
                } => {
                    out.push_str(&format!(
                        "emulated launch: measured {request} (guest paused {} ms)\n",
                        paused_for.as_millis()
                    ));
                    for d in expected_pcr17.iter() {
                        out.push_str(&format!("emulated launch: PCR17 {} {d}\n", d.alg()));
                    }
                }
                LaunchOutcome::Refused(e) => out.push_str(&format!(
                    "emulated launch: REFUSED `{}`: {e}\n",
                    attempt.line
                )),
                LaunchOutcome::Failed { request, error } => {
                    out.push_str(&format!("emulated launch: FAILED for {request}: {error}\n"))
                }
            },
        }
        if let Some(txt) = &self.txt {
            match &txt.outcome {
                TxtSenterOutcome::Launched {
                    entry,
                    pcr17,
                    pcr18,
                } => {
                    out.push_str(&format!(
                        "SIMULATED txt launch: SINIT accepted, hash start over the ACM on the TPM, MLE entered at {entry:#x} (guest paused {} ms)\n",
                        txt.paused_for.as_millis()
                    ));
                    for d in pcr17.iter() {
                        out.push_str(&format!("SIMULATED txt launch: PCR17 {} {d}\n", d.alg()));
                    }
                    for d in pcr18.iter() {
                        out.push_str(&format!("SIMULATED txt launch: PCR18 {} {d}\n", d.alg()));
                    }
                }
                TxtSenterOutcome::Refused { class, reason } => out.push_str(&format!(
                    "SIMULATED txt launch: REFUSED ({class}): {reason}\n"
                )),
                TxtSenterOutcome::Failed(why) => {
                    out.push_str(&format!("SIMULATED txt launch: FAILED: {why}\n"))
                }
            }
        }
        for line in &self.ignored_requests {
            out.push_str(&format!(
                "emulated launch: ignored a further request in the same boot: `{line}`\n"
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("emulated launch: debugcon: {e}\n"));
        }
        out
    }
}

/// The per-boot rules over any guest and TPM.
pub struct LaunchSession<G, T> {
    guest: G,
    tpm: T,
    banks: BankSet,
    report: LaunchReport,
    /// The shared guest-RAM file (`-machine memory-backend=`): the simulated SENTER's access.
    ram: Option<PathBuf>,
}

impl<G: GuestAccess, T: LaunchTpm> LaunchSession<G, T> {
    /// `banks`: the banks for which the report states the expected PCR17.
    pub fn new(guest: G, tpm: T, banks: BankSet) -> Self {
        LaunchSession {
            guest,
            tpm,
            banks,
            report: LaunchReport::default(),
            ram: None,
        }
    }

    /// Gives the session the guest-RAM file (for `SLIPWAY-TXT-SENTER`).
    pub fn with_ram(mut self, ram: Option<PathBuf>) -> Self {
        self.ram = ram;
        self
    }

    /// Handles one debugcon line.
    pub fn handle_line(&mut self, line: &DebugconLine) {
        if is_txt_senter(line) {
            if self.report.txt.is_some() || self.report.launch.is_some() {
                self.report.ignored_requests.push(line.text());
            } else {
                let started = Instant::now();
                let outcome = self.simulated_senter(line);
                self.report.txt = Some(TxtSenterAttempt {
                    line: line.text(),
                    outcome,
                    paused_for: started.elapsed(),
                });
            }
            return;
        }
        if !line.is_request() {
            if self.report.other_lines.len() < MAX_OTHER_LINES {
                self.report.other_lines.push(line.text());
            }
            return;
        }
        if self.report.launch.is_some() || self.report.txt.is_some() {
            self.report.ignored_requests.push(line.text());
            return;
        }
        let outcome = match line.parse_request() {
            Err(e) => LaunchOutcome::Refused(e),
            Ok(request) => self.perform(request),
        };
        self.report.launch = Some(LaunchAttempt {
            line: line.text(),
            outcome,
        });
    }

    fn perform(&mut self, request: LaunchRequest) -> LaunchOutcome {
        let failed = |error: LaunchError| LaunchOutcome::Failed {
            request,
            error: error.to_string(),
        };
        if let Err(e) = self.guest.pause() {
            // `stop` may have worked before the check failed: never leave the guest paused.
            return match self.guest.resume() {
                Ok(()) => failed(e),
                Err(r) => LaunchOutcome::Failed {
                    request,
                    error: format!("{e}; and then: {r}"),
                },
            };
        }
        let paused = Instant::now();
        let measured = self
            .guest
            .read(request.region_start, request.region_len)
            .and_then(|region| {
                self.tpm.dynamic_launch(&region)?;
                Ok(region)
            });
        let resumed = self.guest.resume();
        let paused_for = paused.elapsed();
        match (measured, resumed) {
            (Ok(region), Ok(())) => LaunchOutcome::Measured {
                request,
                expected_pcr17: Box::new(emulated_launch_pcr17(&self.banks, &region)),
                paused_for,
            },
            (Err(e), Ok(())) => failed(e),
            (Ok(_), Err(r)) => failed(r),
            (Err(e), Err(r)) => LaunchOutcome::Failed {
                request,
                error: format!("{e}; and then: {r}"),
            },
        }
    }

    /// Serves a simulated GETSEC[SENTER]: the guest paused, the harness plays CPU and SINIT
    /// over guest RAM (`crate::txt::senter::serve`), the guest resumed.
    fn simulated_senter(&mut self, line: &DebugconLine) -> TxtSenterOutcome {
        use crate::txt::senter::{SenterResult, serve, simulated_mdrs};
        use slipway_protocol::platform::{SIMULATED_TXT_REGS, TXT_SENTER_REQUEST_PREFIX};
        let text = line.text();
        let words: Vec<&str> = text.split_whitespace().collect();
        let regs = match words.as_slice() {
            [_, page] => page
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok()),
            _ => None,
        };
        if regs != Some(SIMULATED_TXT_REGS) {
            return TxtSenterOutcome::Failed(format!(
                "`{text}` is not `{TXT_SENTER_REQUEST_PREFIX} {SIMULATED_TXT_REGS:#x}`"
            ));
        }
        let Some(path) = self.ram.clone() else {
            return TxtSenterOutcome::Failed(
                "no guest-RAM access (QEMU runs without the shared memory backend)".into(),
            );
        };
        if let Err(e) = self.guest.pause() {
            let _ = self.guest.resume();
            return TxtSenterOutcome::Failed(e.to_string());
        }
        let banks = self.banks;
        let tpm = &mut self.tpm;
        let outcome = match super::super::txt::guest_ram::GuestRam::open(&path) {
            Err(e) => TxtSenterOutcome::Failed(format!("{}: {e}", path.display())),
            Ok(mut ram) => {
                let mdrs = simulated_mdrs(ram.size());
                let mut launch_tpm =
                    |acm: &[u8]| tpm.dynamic_launch(acm).map_err(|e| e.to_string());
                match serve(&mut ram, SIMULATED_TXT_REGS, banks, &mdrs, &mut launch_tpm) {
                    SenterResult::Launched(out) => TxtSenterOutcome::Launched {
                        entry: out.entry,
                        pcr17: Box::new(pcr_values(&out.measurement.pcrs, 17, &banks)),
                        pcr18: Box::new(pcr_values(&out.measurement.pcrs, 18, &banks)),
                    },
                    SenterResult::Refused(r) => TxtSenterOutcome::Refused {
                        class: r.class(),
                        reason: r.to_string(),
                    },
                    SenterResult::Failed(why) => TxtSenterOutcome::Failed(why),
                }
            }
        };
        match self.guest.resume() {
            Ok(()) => outcome,
            Err(e) => TxtSenterOutcome::Failed(format!("{outcome:?}; and then: {e}")),
        }
    }

    pub fn report(&self) -> &LaunchReport {
        &self.report
    }

    pub fn into_report(self) -> LaunchReport {
        self.report
    }

    pub fn guest(&mut self) -> &mut G {
        &mut self.guest
    }
}

/// Whether `line` is a simulated SENTER request (`SLIPWAY-TXT-SENTER ...`).
fn is_txt_senter(line: &DebugconLine) -> bool {
    let prefix = slipway_protocol::platform::TXT_SENTER_REQUEST_PREFIX.as_bytes();
    line.bytes.starts_with(prefix)
        && matches!(
            line.bytes.get(prefix.len()),
            None | Some(b' ') | Some(b'\t')
        )
}

fn pcr_values(pcrs: &slipway_measure::pcr::PcrBanks, pcr: u32, banks: &BankSet) -> DigestList {
    let mut list = DigestList::new();
    for alg in banks.supported() {
        if let Ok(Some(d)) = pcrs.value(pcr, alg) {
            let _ = list.push(d);
        }
    }
    list
}

/// [`GuestAccess`] through QMP; connects on first use.
pub struct QmpGuest {
    socket: PathBuf,
    scratch: PathBuf,
    qmp: Option<Qmp>,
}

impl QmpGuest {
    /// `socket`: QEMU's QMP socket; `scratch`: the file pmemsave writes (removed after use).
    pub fn new(socket: PathBuf, scratch: PathBuf) -> Self {
        QmpGuest {
            socket,
            scratch,
            qmp: None,
        }
    }

    fn qmp(&mut self) -> Result<&mut Qmp, QmpError> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.socket, QMP_CONNECT_TIMEOUT)?);
        }
        Ok(self.qmp.as_mut().expect("just connected"))
    }
}

impl GuestAccess for QmpGuest {
    fn pause(&mut self) -> Result<(), LaunchError> {
        let qmp = self.qmp().map_err(LaunchError::Pause)?;
        qmp.stop().map_err(LaunchError::Pause)?;
        let (running, status) = qmp.status().map_err(LaunchError::Pause)?;
        if running {
            return Err(LaunchError::NotPaused(status));
        }
        Ok(())
    }

    fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, LaunchError> {
        let scratch = self.scratch.clone();
        let _ = std::fs::remove_file(&scratch);
        self.qmp()
            .and_then(|q| q.pmemsave(addr, len, &scratch))
            .map_err(LaunchError::Read)?;
        let bytes = std::fs::read(&scratch).map_err(|e| LaunchError::ReadFile {
            path: scratch.clone(),
            detail: e.to_string(),
        });
        let _ = std::fs::remove_file(&scratch);
        let bytes = bytes?;
        if bytes.len() as u64 != len {
            return Err(LaunchError::ReadFile {
                path: scratch,
                detail: format!("{} bytes, expected {len}", bytes.len()),
            });
        }
        Ok(bytes)
    }

    fn resume(&mut self) -> Result<(), LaunchError> {
        self.qmp()
            .and_then(|q| q.cont())
            .map_err(LaunchError::Resume)
    }
}

/// File names inside the directory given to [`LaunchDriver::start`].
pub const DEBUGCON_SOCKET: &str = "debugcon.sock";
pub const QMP_SOCKET: &str = "qmp.sock";
const SCRATCH_FILE: &str = "launch-region.bin";

/// The driver thread for one QEMU boot.
pub struct LaunchDriver {
    debugcon_socket: PathBuf,
    qmp_socket: PathBuf,
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<LaunchReport>>,
}

impl LaunchDriver {
    /// Listens on `<dir>/debugcon.sock` (before QEMU starts, so no byte is lost) and serves
    /// launch requests with QMP at `<dir>/qmp.sock` and `tpm` (the proxy's client).
    pub fn start<T>(
        dir: &Path,
        tpm: CtrlClient<T>,
        banks: BankSet,
        ram: Option<PathBuf>,
    ) -> io::Result<LaunchDriver>
    where
        T: CtrlTransport + Send + 'static,
    {
        let debugcon_socket = dir.join(DEBUGCON_SOCKET);
        let qmp_socket = dir.join(QMP_SOCKET);
        let listener = UnixListener::bind(&debugcon_socket).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", debugcon_socket.display()),
            )
        })?;
        let (wake, wake_rx) = UnixStream::pair()?;
        let guest = QmpGuest::new(qmp_socket.clone(), dir.join(SCRATCH_FILE));
        let session = LaunchSession::new(guest, tpm, banks).with_ram(ram);
        let thread = std::thread::Builder::new()
            .name("launch-driver".into())
            .spawn(move || run(listener, wake_rx, session));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(&debugcon_socket);
                return Err(e);
            }
        };
        Ok(LaunchDriver {
            debugcon_socket,
            qmp_socket,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    pub fn debugcon_socket(&self) -> &Path {
        &self.debugcon_socket
    }

    pub fn qmp_socket(&self) -> &Path {
        &self.qmp_socket
    }

    /// QEMU's arguments: the debugcon device on port 0xe9 (reading back
    /// [`DEBUGCON_READBACK`]) connected to the driver, and the QMP socket.
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-chardev".into(),
            format!(
                "socket,id=slipway-launch,path={}",
                self.debugcon_socket.display()
            ),
            "-device".into(),
            format!(
                "isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=slipway-launch,readback={DEBUGCON_READBACK:#x}"
            ),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", self.qmp_socket.display()),
        ]
    }

    /// Stops the driver (lines not yet read are dropped) and returns its report; the thread
    /// also ends by itself when QEMU closes the debugcon connection.
    pub fn finish(&mut self) -> LaunchReport {
        if let Some(mut wake) = self.wake.take() {
            // An error means the thread has already ended.
            let _ = wake.write_all(&[1]);
        }
        let report = match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| LaunchReport {
                errors: vec!["the launch driver thread panicked".into()],
                ..LaunchReport::default()
            }),
            None => LaunchReport::default(),
        };
        let _ = std::fs::remove_file(&self.debugcon_socket);
        let _ = std::fs::remove_file(&self.qmp_socket);
        report
    }
}

impl Drop for LaunchDriver {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Waits for `fd` or the stop signal; `true` if `fd` is ready.
fn wait(fd: std::os::fd::BorrowedFd<'_>, wake: &UnixStream) -> io::Result<bool> {
    loop {
        let mut fds = [
            PollFd::from_borrowed_fd(fd, PollFlags::IN | PollFlags::HUP | PollFlags::ERR),
            PollFd::from_borrowed_fd(wake.as_fd(), PollFlags::IN | PollFlags::HUP),
        ];
        match poll(&mut fds, None) {
            Ok(_) if !fds[1].revents().is_empty() => return Ok(false),
            Ok(_) if !fds[0].revents().is_empty() => return Ok(true),
            Ok(_) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn run<G: GuestAccess, T: LaunchTpm>(
    listener: UnixListener,
    wake: UnixStream,
    mut session: LaunchSession<G, T>,
) -> LaunchReport {
    let mut errors = Vec::new();
    let conn = match wait(listener.as_fd(), &wake) {
        Ok(true) => match listener.accept() {
            Ok((conn, _)) => Some(conn),
            Err(e) => {
                errors.push(format!("accept: {e}"));
                None
            }
        },
        Ok(false) => None,
        Err(e) => {
            errors.push(format!("poll: {e}"));
            None
        }
    };
    // One boot, one connection: later connections are never accepted.
    drop(listener);
    if let Some(mut conn) = conn {
        let mut splitter = LineSplitter::default();
        let mut buf = [0u8; 4096];
        loop {
            match wait(conn.as_fd(), &wake) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    errors.push(format!("poll: {e}"));
                    break;
                }
            }
            match conn.read(&mut buf) {
                Ok(0) => {
                    if let Some(rest) = splitter.finish() {
                        session.handle_line(&rest);
                    }
                    break;
                }
                Ok(n) => {
                    for line in splitter.push(&buf[..n]) {
                        session.handle_line(&line);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    errors.push(format!("read: {e}"));
                    break;
                }
            }
        }
    }
    let mut report = session.into_report();
    report.errors.extend(errors);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_measure::HashAlg;

    #[derive(Default)]
    struct FakeGuest {
        memory: Vec<u8>,
        paused: bool,
        calls: Vec<String>,
        fail_read: bool,
        fail_pause: bool,
    }

    impl GuestAccess for &mut FakeGuest {
        fn pause(&mut self) -> Result<(), LaunchError> {
            self.calls.push("pause".into());
            if self.fail_pause {
                return Err(LaunchError::NotPaused("running".into()));
            }
            self.paused = true;
            Ok(())
        }
        fn read(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, LaunchError> {
            assert!(self.paused, "memory is read only while the guest is paused");
            self.calls.push(format!("read {addr:#x} {len:#x}"));
            if self.fail_read {
                return Err(LaunchError::ReadFile {
                    path: "x".into(),
                    detail: "fake failure".into(),
                });
            }
            Ok(self.memory[addr as usize..(addr + len) as usize].to_vec())
        }
        fn resume(&mut self) -> Result<(), LaunchError> {
            self.calls.push("resume".into());
            self.paused = false;
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeTpm {
        launches: Vec<Vec<u8>>,
    }

    impl LaunchTpm for &mut FakeTpm {
        fn dynamic_launch(&mut self, region: &[u8]) -> Result<(), LaunchError> {
            self.launches.push(region.to_vec());
            Ok(())
        }
    }

    fn lines(text: &str) -> Vec<DebugconLine> {
        LineSplitter::default().push(text.as_bytes())
    }

    #[test]
    fn one_request_per_boot_and_the_second_never_reaches_the_tpm() {
        let mut guest = FakeGuest {
            memory: (0..=255u8).cycle().take(0x3000).collect(),
            ..FakeGuest::default()
        };
        let mut tpm = FakeTpm::default();
        let banks = BankSet::single(HashAlg::Sha256);
        let mut session = LaunchSession::new(&mut guest, &mut tpm, banks);
        for line in lines(
            "slipway: pre-launch text\nSLIPWAY-LAUNCH 0x1000 0x100\nSLIPWAY-LAUNCH 0x0 0x10\nSLIPWAY-LAUNCH nonsense\n",
        ) {
            session.handle_line(&line);
        }
        let report = session.into_report();
        assert_eq!(tpm.launches.len(), 1);
        assert_eq!(tpm.launches[0], guest.memory[0x1000..0x1100]);
        assert_eq!(guest.calls, ["pause", "read 0x1000 0x100", "resume"]);
        assert_eq!(
            report.measured().unwrap(),
            &emulated_launch_pcr17(&banks, &guest.memory[0x1000..0x1100])
        );
        assert_eq!(
            report.ignored_requests,
            ["SLIPWAY-LAUNCH 0x0 0x10", "SLIPWAY-LAUNCH nonsense"]
        );
        assert_eq!(report.other_lines, ["slipway: pre-launch text"]);
        assert!(report.summary().contains("ignored a further request"));
    }

    #[test]
    fn a_simulated_senter_needs_the_simulated_register_page_and_guest_ram_and_comes_once() {
        let mut guest = FakeGuest::default();
        let mut tpm = FakeTpm::default();
        let mut session =
            LaunchSession::new(&mut guest, &mut tpm, BankSet::single(HashAlg::Sha256));
        for line in lines(
            "SLIPWAY-TXT-SENTER 0x200000\nSLIPWAY-TXT-SENTER 0x100000\nSLIPWAY-LAUNCH 0x0 0x10\n",
        ) {
            session.handle_line(&line);
        }
        let report = session.into_report();
        // Another register page: refused before the guest is touched; later requests ignored.
        match &report.txt.as_ref().unwrap().outcome {
            TxtSenterOutcome::Failed(why) => assert!(why.contains("0x100000"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(report.ignored_requests.len(), 2);
        assert!(tpm.launches.is_empty());
        assert!(guest.calls.is_empty());
        // Without guest RAM: fails, the TPM untouched, the guest never paused.
        let mut guest = FakeGuest::default();
        let mut tpm = FakeTpm::default();
        let mut session =
            LaunchSession::new(&mut guest, &mut tpm, BankSet::single(HashAlg::Sha256));
        session.handle_line(&lines("SLIPWAY-TXT-SENTER 0x100000\n")[0]);
        let report = session.into_report();
        match &report.txt.as_ref().unwrap().outcome {
            TxtSenterOutcome::Failed(why) => assert!(why.contains("guest-RAM"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(report.summary().contains("SIMULATED txt launch: FAILED"));
        assert!(tpm.launches.is_empty() && guest.calls.is_empty());
    }

    #[test]
    fn a_malformed_first_request_is_refused_and_uses_up_the_boot() {
        let mut guest = FakeGuest::default();
        let mut tpm = FakeTpm::default();
        let mut session =
            LaunchSession::new(&mut guest, &mut tpm, BankSet::single(HashAlg::Sha256));
        for line in lines("SLIPWAY-LAUNCH 0x1000 0\nSLIPWAY-LAUNCH 0x1000 0x10\n") {
            session.handle_line(&line);
        }
        let report = session.into_report();
        assert!(tpm.launches.is_empty());
        assert!(guest.calls.is_empty());
        assert!(matches!(
            report.launch.as_ref().unwrap().outcome,
            LaunchOutcome::Refused(RequestError::Empty)
        ));
        assert_eq!(report.ignored_requests.len(), 1);
        assert!(report.summary().contains("REFUSED"), "{}", report.summary());
    }

    #[test]
    fn a_failed_pause_measures_nothing_and_resumes() {
        let mut guest = FakeGuest {
            fail_pause: true,
            ..FakeGuest::default()
        };
        let mut tpm = FakeTpm::default();
        let mut session =
            LaunchSession::new(&mut guest, &mut tpm, BankSet::single(HashAlg::Sha256));
        session.handle_line(&lines("SLIPWAY-LAUNCH 0 0x10\n")[0]);
        let report = session.into_report();
        assert!(tpm.launches.is_empty());
        assert_eq!(guest.calls, ["pause", "resume"]);
        assert!(report.measured().is_none());
        assert!(
            report.summary().contains("still runs"),
            "{}",
            report.summary()
        );
    }

    #[test]
    fn a_failed_read_resumes_the_guest_and_touches_no_tpm() {
        let mut guest = FakeGuest {
            fail_read: true,
            ..FakeGuest::default()
        };
        let mut tpm = FakeTpm::default();
        let mut session =
            LaunchSession::new(&mut guest, &mut tpm, BankSet::single(HashAlg::Sha256));
        session.handle_line(&lines("SLIPWAY-LAUNCH 0 0x10\n")[0]);
        let report = session.into_report();
        assert!(tpm.launches.is_empty());
        assert_eq!(guest.calls, ["pause", "read 0x0 0x10", "resume"]);
        assert!(!guest.paused);
        match &report.launch.as_ref().unwrap().outcome {
            LaunchOutcome::Failed { error, .. } => assert!(error.contains("fake failure")),
            other => panic!("{other:?}"),
        }
    }
}
