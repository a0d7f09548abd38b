//! swtpm behind the control proxy, owned by the harness.
//!
//! [`EmulatedTpm::start`] provisions a state directory (optionally with `swtpm_setup
//! --pcr-banks`), starts `swtpm socket --tpm2` with only a control socket (QEMU hands it the
//! data socket through the proxy), and starts the [`CtrlProxy`] in front of it. With the proxy
//! holding swtpm's control connection, swtpm no longer goes away with QEMU: [`EmulatedTpm::stop`]
//! (and `Drop`, on every exit path) sends `CMD_SHUTDOWN` through the proxy, waits briefly,
//! kills swtpm if it is still there, stops the proxy and removes both sockets. The process
//! itself is a [`ManagedChild`], so Ctrl-C and the harness's hard limit end it too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{ManagedChild, timed_command};

use super::ctrl::CtrlClient;
use super::proxy::{CtrlProxy, Forwarded, ProxyError, ProxyTransport};

/// File names inside the directory given to [`EmulatedTpm::start`].
pub const STATE_DIR: &str = "tpm-state";
pub const SWTPM_CTRL_SOCKET: &str = "swtpm-ctrl.sock";
pub const PROXY_SOCKET: &str = "tpm-proxy.sock";
pub const SWTPM_LOG: &str = "swtpm.log";

/// How swtpm is set up.
#[derive(Debug, Clone)]
pub struct TpmOptions {
    /// `swtpm_setup --pcr-banks` value (e.g. `sha256`); `None`: a fresh state, whose active
    /// banks are sha1, sha256, sha384 and sha512.
    pub pcr_banks: Option<String>,
    /// Hard limit for the swtpm process (the `timeout` wrapper), should the harness die.
    pub hard_limit: Duration,
    /// A state directory that outlives the run (its NV indexes, e.g. the boot record, carry
    /// over to the next run with the same directory, as a machine's TPM does across reboots);
    /// `None`: a fresh state in the run's directory. `pcr_banks` provisions it only while it is
    /// empty.
    pub state_dir: Option<PathBuf>,
}

impl Default for TpmOptions {
    fn default() -> Self {
        TpmOptions {
            pcr_banks: None,
            hard_limit: Duration::from_secs(600),
            state_dir: None,
        }
    }
}

/// Why the emulated TPM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// `swtpm_setup` failed.
    #[error("swtpm_setup --pcr-banks {banks} failed: {detail}")]
    Setup { banks: String, detail: String },
    /// swtpm did not come up.
    #[error("swtpm did not start: {0}")]
    Start(String),
    /// The proxy could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A file or process operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What [`EmulatedTpm::stop`] found.
#[derive(Debug, Clone)]
pub struct TpmStopReport {
    /// swtpm exited by itself after `CMD_SHUTDOWN` (or before: QEMU may send it on exit).
    pub clean_exit: bool,
    /// Every command the proxy forwarded.
    pub log: Vec<Forwarded>,
    /// Problems the proxy saw.
    pub proxy_errors: Vec<String>,
}

/// swtpm plus its control proxy.
pub struct EmulatedTpm {
    swtpm: Option<ManagedChild>,
    proxy: Option<CtrlProxy>,
    swtpm_ctrl: PathBuf,
    proxy_socket: PathBuf,
    log_file: PathBuf,
}

impl EmulatedTpm {
    /// Starts swtpm with its state in `dir` and the proxy; QEMU connects to
    /// [`EmulatedTpm::qemu_socket`].
    pub fn start(dir: &Path, options: &TpmOptions) -> Result<EmulatedTpm, TpmError> {
        let state = options
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.join(STATE_DIR));
        std::fs::create_dir_all(&state)?;
        let provisioned = std::fs::read_dir(&state)?.next().is_some();
        if let Some(banks) = options.pcr_banks.as_ref().filter(|_| !provisioned) {
            let output = Command::new("swtpm_setup")
                .args(["--tpm2", "--overwrite", "--pcr-banks", banks, "--tpmstate"])
                .arg(&state)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| TpmError::Setup {
                    banks: banks.clone(),
                    detail: format!("cannot run swtpm_setup (package swtpm-tools): {e}"),
                })?;
            if !output.status.success() {
                return Err(TpmError::Setup {
                    banks: banks.clone(),
                    detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
                });
            }
        }
        let swtpm_ctrl = dir.join(SWTPM_CTRL_SOCKET);
        let log_file = dir.join(SWTPM_LOG);
        let mut cmd = timed_command("swtpm", options.hard_limit);
        cmd.args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", swtpm_ctrl.display()))
            .arg("--log")
            .arg(format!("file={},level=1", log_file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut swtpm = ManagedChild::spawn("swtpm", cmd)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !swtpm_ctrl.exists() {
            if let Some(status) = swtpm.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut e) = swtpm.child_mut().stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                let log = std::fs::read_to_string(&log_file).unwrap_or_default();
                return Err(TpmError::Start(format!(
                    "it exited ({status}): {} {}",
                    stderr.trim(),
                    log.trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(TpmError::Start(format!(
                    "no control socket {} after 10 s",
                    swtpm_ctrl.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let proxy_socket = dir.join(PROXY_SOCKET);
        // On failure `swtpm` drops here: killed and reaped.
        let proxy = CtrlProxy::start(&proxy_socket, &swtpm_ctrl)?;
        Ok(EmulatedTpm {
            swtpm: Some(swtpm),
            proxy: Some(proxy),
            swtpm_ctrl,
            proxy_socket,
            log_file,
        })
    }

    /// The socket QEMU's TPM chardev connects to.
    pub fn qemu_socket(&self) -> &Path {
        &self.proxy_socket
    }

    /// swtpm's own log file.
    pub fn swtpm_log(&self) -> &Path {
        &self.log_file
    }

    /// swtpm's pid (for tests that check it is gone).
    pub fn swtpm_pid(&self) -> Option<u32> {
        self.swtpm.as_ref().map(|c| c.id())
    }

    /// QEMU's arguments for a `tpm-tis` device on this TPM (locality 0-3 for the guest).
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-chardev".into(),
            format!("socket,id=chrtpm,path={}", self.proxy_socket.display()),
            "-tpmdev".into(),
            "emulator,id=tpm0,chardev=chrtpm".into(),
            "-device".into(),
            "tpm-tis,tpmdev=tpm0".into(),
        ]
    }

    /// A control client for the harness, serialized with QEMU's requests.
    pub fn client(&self) -> CtrlClient<ProxyTransport> {
        self.proxy
            .as_ref()
            .expect("the proxy runs until stop")
            .client()
    }

    /// Commands forwarded so far.
    pub fn log(&self) -> Vec<Forwarded> {
        self.proxy.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    /// Shuts swtpm down (`CMD_SHUTDOWN`, then kill if needed), stops the proxy and removes the
    /// sockets. Idempotent; also run by `Drop`.
    pub fn stop(&mut self) -> Result<TpmStopReport, TpmError> {
        let mut clean_exit = false;
        if let Some(mut swtpm) = self.swtpm.take() {
            if let Some(proxy) = &self.proxy {
                // QEMU sends CMD_SHUTDOWN itself when it quits cleanly; then swtpm is gone or
                // going, and the proxy has closed its connection (the call fails harmlessly).
                if swtpm.try_wait()?.is_none() && proxy.swtpm_connected() {
                    let _ = proxy.client().shutdown();
                }
                proxy.disconnect_swtpm();
            }
            clean_exit = match swtpm.wait_until(Instant::now() + Duration::from_secs(2))? {
                Some(status) => status.success(),
                None => {
                    swtpm.kill_and_reap()?;
                    false
                }
            };
        }
        let mut report = TpmStopReport {
            clean_exit,
            log: Vec::new(),
            proxy_errors: Vec::new(),
        };
        if let Some(mut proxy) = self.proxy.take() {
            let stopped = proxy.stop();
            report.log = proxy.log();
            report.proxy_errors = proxy.errors();
            stopped?;
        }
        // swtpm removes its socket on a clean exit, not when killed.
        let _ = std::fs::remove_file(&self.swtpm_ctrl);
        let _ = std::fs::remove_file(&self.proxy_socket);
        Ok(report)
    }
}

impl Drop for EmulatedTpm {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: warning: stopping swtpm: {e}");
        }
    }
}
