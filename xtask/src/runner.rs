//! Runs a built bundle under QEMU (TCG, q35, `-cpu max`) with a fresh swtpm, streams and
//! captures the serial console, and maps QEMU's exit to a [`Verdict`].
//!
//! Every run gets a private temporary directory (swtpm state and control socket, OVMF variable
//! store) that is removed afterwards. QEMU and swtpm run as [`ManagedChild`]ren under a hard
//! time limit, in their own process groups, and are killed and reaped on every exit path.
//!
//! With a TPM, the run uses [`crate::launch::EmulatedLaunch`]: swtpm behind the control-channel
//! proxy (QEMU's TPM chardev connects to the proxy's socket in the run directory), the
//! emulated-launch driver on the debugcon port 0xe9, and QMP
//! (`-qmp unix:<run dir>/qmp.sock,server=on,wait=off`). swtpm and the proxy are stopped after
//! QEMU on every path; the launch report is [`RunOutcome::launch`]. Typing a nonce on the
//! console is [`ConsoleInput`].

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use slipway_measure::{BankSet, HashAlg};

use crate::console::{self, LineSplitter, Milestone, SerialLine};
use crate::launch::{EmulatedLaunch, EmulatedLaunchReport, TpmError, TpmOptions};
use crate::procs::{HARD_LIMIT_GRACE, ManagedChild, TempDir, timed_command};
use crate::txt::guest_ram::GuestRamFile;
use crate::verdict::Verdict;

/// OVMF as installed by Debian's `ovmf` package (4 MiB flash layout, no Secure Boot keys).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The OVMF variable-store template; each run writes to its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The firmware QEMU boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF (UEFI) through two pflash drives.
    Uefi,
}

impl Firmware {
    pub fn label(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

/// The emulator a run boots under (`--emulator qemu|bochs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emulator {
    /// QEMU with TCG (AMD SVM): the measured launch with swtpm.
    Qemu,
    /// Debian's bochs (Intel VMX with EPT): no TPM, so always unmeasured (the bundle's launch
    /// policy decides), BIOS only, no console input (`crate::bochs`).
    Bochs,
}

impl Emulator {
    pub fn label(self) -> &'static str {
        match self {
            Emulator::Qemu => "qemu",
            Emulator::Bochs => "bochs",
        }
    }
}

/// The TPM attached to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tpm {
    /// A fresh swtpm (TPM 2.0, default banks) behind a `tpm-tis` device.
    Swtpm,
    /// No TPM.
    None,
}

/// Bytes typed on the serial console once a line containing `after_line_containing` appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleInput {
    pub after_line_containing: String,
    pub bytes: Vec<u8>,
}

/// A kernel QEMU loads itself (`-kernel`, `-initrd`, `-append`) instead of booting the ISO:
/// QEMU's own loader (PVH for an ELF with the PVH note), a reference boot to compare Slipway's
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The ISO booted (unused with [`RunConfig::direct_kernel`]).
    pub iso: PathBuf,
    /// Boot this kernel with QEMU's loader instead of the ISO (QEMU only).
    pub direct_kernel: Option<DirectKernel>,
    /// QEMU (SVM) or bochs (VMX).
    pub emulator: Emulator,
    pub firmware: Firmware,
    pub tpm: Tpm,
    /// Time until the run is stopped and reported as [`Verdict::Timeout`].
    pub timeout: Duration,
    pub smp: u32,
    pub memory_mib: u32,
    /// Where the raw serial bytes are written (created or truncated).
    pub serial_log: PathBuf,
    /// Print each console line on stdout as it arrives.
    pub echo: bool,
    /// Console input, each sent at most once, in order of their triggers.
    pub console_input: Vec<ConsoleInput>,
    /// Once every `console_input` went in, this terminal's standard input goes to the console
    /// (`cargo xtask run --interactive`).
    pub interactive: bool,
    /// Further QEMU arguments (debugging: `-d int -D file`, ...).
    pub extra_qemu_args: Vec<String>,
    /// With [`Tpm::Swtpm`]: the active PCR banks, provisioned with `swtpm_setup --pcr-banks`
    /// (comma-separated, e.g. `sha256`); `None`: a fresh swtpm (sha1, sha256, sha384, sha512).
    pub tpm_banks: Option<String>,
    /// With [`Tpm::Swtpm`]: keep the TPM's state in this directory across runs (consecutive
    /// boots of one machine: NV indexes such as the boot record persist); `None`: a fresh state
    /// per run.
    pub tpm_state_dir: Option<PathBuf>,
}

/// Defaults used by `cargo xtask run` and the tests.
pub const DEFAULT_SMP: u32 = 2;
pub const DEFAULT_MEMORY_MIB: u32 = 512;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl RunConfig {
    /// A run of `iso` with the defaults: SeaBIOS, swtpm, 2 CPUs, 512 MiB, 60 s, echo on.
    pub fn new(iso: impl Into<PathBuf>, serial_log: impl Into<PathBuf>) -> Self {
        RunConfig {
            iso: iso.into(),
            direct_kernel: None,
            emulator: Emulator::Qemu,
            firmware: Firmware::Bios,
            tpm: Tpm::Swtpm,
            timeout: DEFAULT_TIMEOUT,
            smp: DEFAULT_SMP,
            memory_mib: DEFAULT_MEMORY_MIB,
            serial_log: serial_log.into(),
            echo: true,
            console_input: Vec::new(),
            interactive: false,
            extra_qemu_args: Vec::new(),
            tpm_banks: None,
            tpm_state_dir: None,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The emulator the run used.
    pub emulator: Emulator,
    pub verdict: Verdict,
    /// Every console line, cleaned of escape sequences, with its arrival time.
    pub lines: Vec<SerialLine>,
    /// Boot milestones in the order reported.
    pub milestones: Vec<Milestone>,
    pub serial_log: PathBuf,
    /// The run's private directory (swtpm state and sockets, OVMF variables); already removed
    /// when the outcome is returned.
    pub run_dir: PathBuf,
    /// QEMU's own error output (warnings, device errors).
    pub qemu_stderr: String,
    /// From QEMU's start to its end.
    pub elapsed: Duration,
    /// The emulated launch (request, measurement, ignored requests) and every swtpm control
    /// command of the run; `None` without a TPM.
    pub launch: Option<EmulatedLaunchReport>,
}

impl RunOutcome {
    /// Whether a console line equals `text` exactly.
    pub fn has_line(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.text == text)
    }

    /// Lines from the hypervisor (`slipway: ...`), in order.
    pub fn hypervisor_lines(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .filter(|t| t.starts_with("slipway: "))
    }

    /// Host time of the first hypervisor line since QEMU's start.
    pub fn first_hypervisor_line_at(&self) -> Option<Duration> {
        self.lines
            .iter()
            .find(|l| l.text.starts_with("slipway: "))
            .map(|l| l.at)
    }

    /// Verdict, timing and the milestone table, as printed at the end of `cargo xtask run`.
    pub fn report(&self) -> String {
        format!(
            "{}{}run: {} ({} ms wall time, serial log {})\n",
            console::milestone_table(&self.milestones, self.first_hypervisor_line_at()),
            self.launch
                .as_ref()
                .map(|l| l.launch.summary())
                .unwrap_or_default(),
            match self.emulator {
                Emulator::Qemu => self.verdict.to_string(),
                Emulator::Bochs => crate::bochs::describe(&self.verdict),
            },
            self.elapsed.as_millis(),
            self.serial_log.display()
        )
    }
}

/// Why a run could not take place (as opposed to a guest verdict).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The ISO to boot does not exist.
    #[error("{0} does not exist (build the bundle first)")]
    MissingIso(PathBuf),
    /// A kernel or initrd of [`RunConfig::direct_kernel`] does not exist.
    #[error("{0} does not exist (the kernel or initrd QEMU was to load)")]
    MissingKernel(PathBuf),
    /// An OVMF file is missing.
    #[error("{0} is missing: install the `ovmf` package")]
    MissingFirmware(&'static str),
    /// swtpm, its control proxy or the launch driver did not come up, or did not stop.
    #[error("{0}")]
    Tpm(#[from] TpmError),
    /// A `tpm_banks` name is not a bank Slipway knows.
    #[error("unknown PCR bank `{0}` (expected sha1, sha256, sha384 or sha512)")]
    UnknownBank(String),
    /// The configuration asks for something the emulator cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// A file a Debian package provides is missing.
    #[error("{file} is missing: install the `{package}` package")]
    MissingPackage {
        file: &'static str,
        package: &'static str,
    },
    /// A process or file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// QEMU's arguments for `config` (without the `timeout` wrapper). `tpm_ctrl` is the TPM's
/// control socket (the proxy's), `ovmf_vars` the run's writable copy of the variable store.
/// The launch driver's debugcon and QMP arguments come from [`EmulatedLaunch::qemu_args`].
pub fn qemu_args(
    config: &RunConfig,
    tpm_ctrl: Option<&Path>,
    ovmf_vars: Option<&Path>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-nic",
        "none",
        // The serial console on QEMU's stdio: output streams to the harness, input is typed by it.
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]
    .map(String::from)
    .to_vec();
    // With a TPM, guest RAM is a shared file the launch harness can read and write (the
    // simulated TXT launch plays CPU and SINIT in it): `GuestRamFile::qemu_args` adds the backend.
    let machine = if tpm_ctrl.is_some() {
        format!("q35,memory-backend={}", crate::txt::guest_ram::BACKEND_ID)
    } else {
        "q35".to_owned()
    };
    args.splice(0..0, ["-machine".to_owned(), machine]);
    args.extend(["-smp".into(), config.smp.to_string()]);
    args.extend(["-m".into(), format!("{}M", config.memory_mib)]);
    if let Some(ctrl) = tpm_ctrl {
        args.extend([
            "-chardev".into(),
            format!("socket,id=chrtpm,path={}", ctrl.display()),
            "-tpmdev".into(),
            "emulator,id=tpm0,chardev=chrtpm".into(),
            "-device".into(),
            "tpm-tis,tpmdev=tpm0".into(),
        ]);
    }
    if let Some(vars) = ovmf_vars {
        args.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
        ]);
    }
    match &config.direct_kernel {
        None => args.extend(["-cdrom".into(), config.iso.display().to_string()]),
        Some(direct) => {
            args.extend(["-kernel".into(), direct.kernel.display().to_string()]);
            if let Some(initrd) = &direct.initrd {
                args.extend(["-initrd".into(), initrd.display().to_string()]);
            }
            args.extend(["-append".into(), direct.cmdline.clone()]);
        }
    }
    args.extend(config.extra_qemu_args.iter().cloned());
    args
}

/// Reads QEMU's stdout: writes the raw bytes to the serial log, sends clean lines.
fn pump_serial(
    mut stdout: impl Read,
    mut log: File,
    started: Instant,
    lines: mpsc::Sender<SerialLine>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = [0u8; 4096];
    let send = |raw: Vec<u8>| {
        let _ = lines.send(SerialLine {
            at: started.elapsed(),
            text: console::clean_line(&raw),
        });
    };
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = log.write_all(&buf[..n]);
                splitter.push(&buf[..n]).into_iter().for_each(send);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if let Some(rest) = splitter.finish() {
        send(rest);
    }
    let _ = log.flush();
}

/// Keeps at most this much of QEMU's stderr.
const MAX_STDERR: usize = 64 * 1024;

fn collect_stderr(mut stderr: impl Read) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        if out.len() < MAX_STDERR {
            out.extend_from_slice(&buf[..n.min(MAX_STDERR - out.len())]);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Console input is typed in pieces of at most this many bytes, [`TYPING_PAUSE`] apart: the
/// hypervisor moves serial input into the focused domain's 64-byte queue (hv-core's
/// `uart::INPUT_QUEUE`) and drops what does not fit, so a long line typed at once (a 64-byte
/// nonce is 129 bytes with its Enter) could lose its end while the domain is not draining.
const TYPING_CHUNK: usize = 16;
/// The pause between two typed pieces (the hypervisor polls the UART at least every 10 ms tick).
const TYPING_PAUSE: Duration = Duration::from_millis(30);

/// Sends the console input whose trigger `line` satisfies.
fn feed_console(
    line: &str,
    pending: &mut std::collections::VecDeque<ConsoleInput>,
    stdin: &mut Option<ChildStdin>,
) {
    while let Some(next) = pending.front() {
        if !line.contains(&next.after_line_containing) {
            break;
        }
        for (index, piece) in next.bytes.chunks(TYPING_CHUNK).enumerate() {
            let Some(input) = stdin.as_mut() else { break };
            if index > 0 {
                std::thread::sleep(TYPING_PAUSE);
            }
            if input.write_all(piece).and_then(|()| input.flush()).is_err() {
                *stdin = None;
            }
        }
        pending.pop_front();
    }
}

/// Runs one boot as configured (QEMU here, bochs in [`crate::bochs`]). Guest outcomes (success, failure, timeout, crash) are the
/// [`RunOutcome::verdict`]; `Err` means the run could not take place.
pub fn run(config: &RunConfig) -> Result<RunOutcome, RunError> {
    if config.emulator == Emulator::Bochs {
        return crate::bochs::run(config);
    }
    match &config.direct_kernel {
        None if !config.iso.is_file() => return Err(RunError::MissingIso(config.iso.clone())),
        None => {}
        Some(direct) => {
            for file in std::iter::once(&direct.kernel).chain(&direct.initrd) {
                if !file.is_file() {
                    return Err(RunError::MissingKernel(file.clone()));
                }
            }
        }
    }
    let hard_limit = config.timeout + HARD_LIMIT_GRACE;
    let dir = TempDir::new("run")?;

    let ovmf_vars = match config.firmware {
        Firmware::Bios => None,
        Firmware::Uefi => {
            if !Path::new(OVMF_CODE).is_file() {
                return Err(RunError::MissingFirmware(OVMF_CODE));
            }
            if !Path::new(OVMF_VARS).is_file() {
                return Err(RunError::MissingFirmware(OVMF_VARS));
            }
            let vars = dir.path().join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars)?;
            Some(vars)
        }
    };

    // Declared before QEMU so it is dropped (swtpm shut down, proxy and driver stopped) after
    // QEMU on every path.
    let ram = match config.tpm {
        Tpm::Swtpm => Some(GuestRamFile::new(config.memory_mib)?),
        Tpm::None => None,
    };
    let launch = match config.tpm {
        Tpm::Swtpm => {
            let options = TpmOptions {
                pcr_banks: config.tpm_banks.clone(),
                hard_limit,
                state_dir: config.tpm_state_dir.clone(),
            };
            let banks = report_banks(config.tpm_banks.as_deref())?;
            let ram_path = ram.as_ref().map(|r| r.path().to_owned());
            Some(EmulatedLaunch::start(
                dir.path(),
                &options,
                banks,
                ram_path,
            )?)
        }
        Tpm::None => None,
    };
    let tpm_ctrl = launch.as_ref().map(|l| l.tpm().qemu_socket().to_owned());

    if let Some(parent) = config.serial_log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = File::create(&config.serial_log).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot create {}: {e}", config.serial_log.display()),
        )
    })?;

    let mut cmd = timed_command("qemu-system-x86_64", hard_limit);
    cmd.args(qemu_args(config, tpm_ctrl.as_deref(), ovmf_vars.as_deref()));
    if let Some(launch) = &launch {
        cmd.args(launch.driver().qemu_args());
    }
    if let Some(ram) = &ram {
        cmd.args(ram.qemu_args());
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut qemu = ManagedChild::spawn("qemu-system-x86_64", cmd)?;
    let deadline = started + config.timeout;

    let stdout = qemu.child_mut().stdout.take().expect("stdout is piped");
    let stderr = qemu.child_mut().stderr.take().expect("stderr is piped");
    let mut stdin = qemu.child_mut().stdin.take();
    let (tx, rx) = mpsc::channel();
    let serial_thread = std::thread::spawn(move || pump_serial(stdout, log, started, tx));
    let stderr_thread = std::thread::spawn(move || collect_stderr(stderr));

    let mut pending_input: std::collections::VecDeque<ConsoleInput> =
        config.console_input.iter().cloned().collect();
    let mut lines = Vec::new();
    let mut milestones = Vec::new();
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                if config.echo {
                    println!("{}", line.text);
                }
                if let Some(m) = console::parse_milestone(&line) {
                    milestones.push(m);
                }
                feed_console(&line.text, &mut pending_input, &mut stdin);
                if config.interactive
                    && pending_input.is_empty()
                    && let Some(mut console) = stdin.take()
                {
                    // Lines typed here go to the guest's console until QEMU exits (the thread
                    // ends with the process, or when QEMU closes its input).
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut console);
                    });
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            // QEMU closed its stdout: it is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    let verdict = if timed_out {
        qemu.kill_and_reap()?;
        Verdict::Timeout(config.timeout)
    } else {
        // Stdout closes as QEMU exits; allow a moment for the exit itself.
        match qemu.wait_until(Instant::now().max(deadline) + Duration::from_secs(5))? {
            Some(status) => {
                use std::os::unix::process::ExitStatusExt;
                Verdict::from_exit(status.code(), status.signal())
            }
            None => {
                qemu.kill_and_reap()?;
                Verdict::Timeout(config.timeout)
            }
        }
    };
    let elapsed = started.elapsed();
    drop(stdin);
    // QEMU is gone, so both pipes are at end of stream.
    let _ = serial_thread.join();
    // Lines that arrived between the loop's end and QEMU's exit.
    for line in rx.try_iter() {
        if config.echo {
            println!("{}", line.text);
        }
        if let Some(m) = console::parse_milestone(&line) {
            milestones.push(m);
        }
        lines.push(line);
    }
    let qemu_stderr = stderr_thread.join().unwrap_or_default();
    // QEMU is gone: stop the driver, shut swtpm down, stop the proxy.
    let launch = launch.map(EmulatedLaunch::finish).transpose()?;
    let run_dir = dir.path().to_owned();
    drop(dir);
    drop(ram);

    Ok(RunOutcome {
        emulator: Emulator::Qemu,
        verdict,
        lines,
        milestones,
        serial_log: config.serial_log.clone(),
        run_dir,
        qemu_stderr,
        elapsed,
        launch,
    })
}

/// The banks the launch report predicts PCR17 for: those of `tpm_banks`, or all four.
fn report_banks(tpm_banks: Option<&str>) -> Result<BankSet, RunError> {
    let Some(names) = tpm_banks else {
        return Ok(BankSet::all_supported());
    };
    let mut algs = Vec::new();
    for name in names.split(',').map(str::trim) {
        let alg = HashAlg::from_name(name).ok_or_else(|| RunError::UnknownBank(name.into()))?;
        algs.push(alg.id());
    }
    BankSet::from_algs(&algs).map_err(|_| RunError::UnknownBank(names.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_input_waits_for_its_trigger_and_goes_once() {
        let mut pending: std::collections::VecDeque<ConsoleInput> = [
            ConsoleInput {
                after_line_containing: "nonce?".into(),
                bytes: b"1234\n".to_vec(),
            },
            ConsoleInput {
                after_line_containing: "more?".into(),
                bytes: b"y\n".to_vec(),
            },
        ]
        .into();
        let mut no_stdin = None;
        feed_console("[ctl] hello", &mut pending, &mut no_stdin);
        assert_eq!(pending.len(), 2);
        feed_console("[ctl] more? nonce?", &mut pending, &mut no_stdin);
        // Both triggers are in the line: sent in order.
        assert!(pending.is_empty());
    }

    #[test]
    fn tpm_banks_name_the_banks_the_launch_report_predicts() {
        assert_eq!(report_banks(None).unwrap().len(), 4);
        let one = report_banks(Some("sha256")).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one.contains(HashAlg::Sha256.id()));
        assert_eq!(report_banks(Some("sha1, sha384")).unwrap().len(), 2);
        assert!(matches!(
            report_banks(Some("sha256,sm3_256")),
            Err(RunError::UnknownBank(b)) if b == "sm3_256"
        ));
    }

    #[test]
    fn qemu_arguments_follow_the_contract() {
        let mut config = RunConfig::new("/x/demo.iso", "/x/serial.log");
        let bios = qemu_args(&config, Some(Path::new("/t/ctrl.sock")), None).join(" ");
        for part in [
            "-machine q35,memory-backend=slipway-ram -accel tcg -cpu max -no-reboot",
            "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-chardev socket,id=chrtpm,path=/t/ctrl.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0",
            "-smp 2 -m 512M",
            "-cdrom /x/demo.iso",
        ] {
            assert!(bios.contains(part), "{part} missing in {bios}");
        }
        assert!(!bios.contains("pflash"));
        config.extra_qemu_args = vec!["-d".into(), "int".into()];
        let uefi = qemu_args(&config, None, Some(Path::new("/t/vars.fd"))).join(" ");
        assert!(
            uefi.contains(&format!("readonly=on,file={OVMF_CODE}")),
            "{uefi}"
        );
        assert!(uefi.contains("unit=1,file=/t/vars.fd"), "{uefi}");
        assert!(!uefi.contains("tpm"), "{uefi}");
        assert!(uefi.ends_with("-d int"), "{uefi}");
    }

    #[test]
    fn a_direct_kernel_replaces_the_iso() {
        let mut config = RunConfig::new("/x/demo.iso", "/x/serial.log");
        config.direct_kernel = Some(DirectKernel {
            kernel: "/k/vmlinux".into(),
            initrd: Some("/k/initrd.gz".into()),
            cmdline: "console=ttyS0 quiet".into(),
        });
        let args = qemu_args(&config, None, None);
        let joined = args.join(" ");
        assert!(
            joined.contains("-kernel /k/vmlinux -initrd /k/initrd.gz -append"),
            "{joined}"
        );
        // The command line is one argument, spaces and all.
        assert!(args.iter().any(|a| a == "console=ttyS0 quiet"), "{args:?}");
        assert!(!joined.contains("-cdrom"), "{joined}");
        // Nothing to load: the run does not take place.
        config.direct_kernel.as_mut().unwrap().kernel = "/nonexistent/vmlinux".into();
        assert!(
            matches!(run(&config), Err(RunError::MissingKernel(p)) if p == Path::new("/nonexistent/vmlinux"))
        );
    }
}
