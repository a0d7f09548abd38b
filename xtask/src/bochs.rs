//! Runs a built bundle under Debian's bochs (Intel VMX with EPT: the hypervisor's VMX backend)
//! and maps its serial console to the same [`RunOutcome`] as a QEMU run.
//!
//! bochs differs from QEMU in ways the harness absorbs:
//! - it has no TPM: every bochs run is unmeasured (the harness says so, the bundle's launch
//!   policy decides what starts);
//! - it has no exit device: the verdict is the hypervisor's own `slipway: exiting: success` /
//!   `failure` line (or GRUB's failure marker), after which the harness stops bochs;
//! - its serial port writes a file, which the harness follows; console input is not supported;
//! - the Debian build has no headless display and starts in its debugger: it runs with the
//!   terminal display under `script` (a pseudo-terminal), with a debugger command file that says
//!   `c` (continue). Killing `script` (its process group is the [`ManagedChild`]) hangs up the
//!   terminal, which ends bochs; a Ctrl-C does the same through the harness's signal handler.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::console::{self, LineSplitter, SerialLine};
use crate::grub::GRUB_FAILURE_MARKER;
use crate::procs::{ForeignGroup, HARD_LIMIT_GRACE, ManagedChild, TempDir, timed_command};
use crate::runner::{Firmware, RunConfig, RunError, RunOutcome, Tpm};
use crate::verdict::Verdict;

/// bochs's BIOS (package `bochsbios`).
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// The VGA BIOS (package `vgabios`).
pub const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";
/// The CPU bochs emulates: VMX with EPT, VPID, unrestricted guest.
pub const BOCHS_CPU_MODEL: &str = "corei7_skylake_x";
/// The hypervisor's verdict lines (`hypervisor/src/qemu_exit.rs`).
pub const SUCCESS_LINE: &str = "slipway: exiting: success";
/// See [`SUCCESS_LINE`].
pub const FAILURE_LINE: &str = "slipway: exiting: failure";

/// Why a configuration cannot run under bochs.
pub fn check_config(config: &RunConfig) -> Result<(), String> {
    if config.firmware != Firmware::Bios {
        return Err("bochs boots the BIOS way only (no UEFI firmware for bochs here)".into());
    }
    if config.tpm != Tpm::None {
        return Err("bochs has no TPM: a bochs run is always unmeasured".into());
    }
    if !config.extra_qemu_args.is_empty() {
        return Err("extra QEMU arguments do not apply to bochs".into());
    }
    if config.direct_kernel.is_some() {
        return Err("bochs boots the ISO only (loading a kernel directly is QEMU's)".into());
    }
    Ok(())
}

/// The bochsrc of a run: `serial` receives COM1, `log` bochs's own log (it names the exact
/// failed VM-entry check, if any).
pub fn bochsrc(config: &RunConfig, serial: &Path, log: &Path) -> String {
    format!(
        "megs: {megs}\n\
         cpu: model={BOCHS_CPU_MODEL}, count={count}, ips=200000000, reset_on_triple_fault=0, ignore_bad_msrs=0\n\
         clock: sync=none, time0=local\n\
         romimage: file={BOCHS_BIOS}, options=fastboot\n\
         vgaromimage: file={VGA_BIOS}\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev={serial}\n\
         log: {log}\n\
         panic: action=fatal\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n\
         display_library: term\n",
        megs = config.memory_mib,
        count = config.smp,
        iso = config.iso.display(),
        serial = serial.display(),
        log = log.display(),
    )
}

/// The verdict a console line gives, if any.
pub fn verdict_of_line(line: &str) -> Option<Verdict> {
    if line == SUCCESS_LINE {
        Some(Verdict::Success)
    } else if line == FAILURE_LINE {
        Some(Verdict::Failure)
    } else if line == GRUB_FAILURE_MARKER {
        Some(Verdict::BootLoaderFailed)
    } else {
        None
    }
}

/// A bochs run's verdict in words (QEMU's exit statuses do not apply).
pub fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Success => "success (the hypervisor's `exiting: success` line)".into(),
        Verdict::Failure => "failure reported by the hypervisor (`exiting: failure`)".into(),
        Verdict::NoVerdict => "bochs ended without a verdict: a triple fault or an emulator panic (the end of bochs.log is printed below)".into(),
        Verdict::HardTimeout => "bochs hit the hard time limit of its timeout wrapper".into(),
        Verdict::Timeout(d) => format!("timeout: no verdict after {} s; bochs was stopped", d.as_secs()),
        other => other.to_string(),
    }
}

/// The lines of bochs's log worth showing after a failed run: every panic, error and failed
/// VM entry, then its last lines.
pub fn log_excerpt(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines().filter(|l| {
        l.contains(">>PANIC<<")
            || l.contains("e[")
            || l.contains("VMFAIL")
            || l.contains("VMENTER")
            || l.contains("with no resolution")
    }) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("bochs.log (last lines):\n");
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    for line in tail.into_iter().rev() {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Follows `path` (the serial file bochs writes) until `stop`, sending clean lines.
fn follow_serial(
    path: &Path,
    started: Instant,
    stop: Arc<AtomicBool>,
    lines: mpsc::Sender<SerialLine>,
) {
    let mut splitter = LineSplitter::default();
    let mut offset = 0u64;
    let mut buf = [0u8; 4096];
    let send = |raw: Vec<u8>| {
        let _ = lines.send(SerialLine {
            at: started.elapsed(),
            text: console::clean_line(&raw),
        });
    };
    loop {
        // The last read after `stop` picks up what was written before bochs ended.
        let last = stop.load(Ordering::Acquire);
        if let Ok(mut file) = File::open(path)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                offset += n as u64;
                splitter.push(&buf[..n]).into_iter().for_each(send);
            }
        }
        if last {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(rest) = splitter.finish() {
        send(rest);
    }
}

/// The pid bochs's shell wrote (it becomes bochs): waited for while `script` runs, at most 10 s.
fn wait_for_pid(path: &Path, script: &mut ManagedChild) -> Result<Option<i32>, RunError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            return Ok(Some(pid));
        }
        if script.try_wait()?.is_some() {
            // `script` ended before bochs started: the run ends without a verdict below.
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

/// Runs one bochs boot as configured (see the module documentation).
pub fn run(config: &RunConfig) -> Result<RunOutcome, RunError> {
    check_config(config).map_err(RunError::Unsupported)?;
    if !config.iso.is_file() {
        return Err(RunError::MissingIso(config.iso.clone()));
    }
    for (file, package) in [(BOCHS_BIOS, "bochsbios"), (VGA_BIOS, "vgabios")] {
        if !Path::new(file).is_file() {
            return Err(RunError::MissingPackage { file, package });
        }
    }
    let hard_limit = config.timeout + HARD_LIMIT_GRACE;
    let dir = TempDir::new("bochs")?;
    if let Some(parent) = config.serial_log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // bochs writes the serial log itself; an old one must not be read as this run's.
    File::create(&config.serial_log)?;
    let rc = dir.path().join("bochsrc");
    let bochs_log = dir.path().join("bochs.log");
    std::fs::write(&rc, bochsrc(config, &config.serial_log, &bochs_log))?;
    let commands = dir.path().join("debugger.rc");
    std::fs::write(&commands, "c\n")?;

    let pid_file = dir.path().join("bochs.pid");
    let mut cmd = timed_command("script", hard_limit);
    // A terminal of a fixed size for the term display (0x0 crashes it); `exec` leaves bochs as
    // the one process under `script`, leading the session `script` made for it: its pid, written
    // first, names the group the harness kills.
    cmd.arg("-qfec")
        .arg(format!(
            "stty rows 25 cols 80; echo $$ > '{}'; exec bochs -q -f '{}' -rc '{}'",
            pid_file.display(),
            rc.display(),
            commands.display()
        ))
        .arg("/dev/null")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut bochs = ManagedChild::spawn("bochs", cmd)?;
    let deadline = started + config.timeout;
    let bochs_group = wait_for_pid(&pid_file, &mut bochs)?.map(ForeignGroup::register);
    // Held open (and dropped at the end): `script` forwards its end of file to the terminal.
    let stdin = bochs.child_mut().stdin.take();
    let mut stderr = bochs.child_mut().stderr.take().expect("stderr is piped");
    let stderr_thread = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let serial_thread = {
        let (path, stop) = (config.serial_log.clone(), stop.clone());
        std::thread::spawn(move || follow_serial(&path, started, stop, tx))
    };

    let mut lines = Vec::new();
    let mut milestones = Vec::new();
    let mut verdict = None;
    let mut take = |line: SerialLine, verdict: &mut Option<Verdict>| {
        if config.echo {
            println!("{}", line.text);
        }
        if let Some(m) = console::parse_milestone(&line) {
            milestones.push(m);
        }
        if verdict.is_none() {
            *verdict = verdict_of_line(&line.text);
        }
        lines.push(line);
    };
    while verdict.is_none() {
        let now = Instant::now();
        if now >= deadline {
            verdict = Some(Verdict::Timeout(config.timeout));
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(100))) {
            Ok(line) => take(line, &mut verdict),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = bochs.try_wait()? {
                    // bochs ended by itself (a panic, a triple fault): no verdict line.
                    verdict = Some(match status.code() {
                        Some(124) => Verdict::HardTimeout,
                        _ => Verdict::NoVerdict,
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The hypervisor halts after its verdict; bochs has no exit device: stop it (its own group
    // first, then `script` and the `timeout` wrapper).
    drop(bochs_group);
    bochs.kill_and_reap()?;
    let elapsed = started.elapsed();
    drop(stdin);
    stop.store(true, Ordering::Release);
    let _ = serial_thread.join();
    for line in rx.try_iter() {
        take(line, &mut verdict);
    }
    let mut emulator_stderr = stderr_thread.join().unwrap_or_default();
    let verdict = verdict.unwrap_or(Verdict::NoVerdict);
    if !verdict.is_success() {
        // bochs's own log names a failed VM-entry check or a panic: keep its end.
        if let Ok(log) = std::fs::read(&bochs_log) {
            emulator_stderr.push_str(&log_excerpt(&String::from_utf8_lossy(&log)));
        }
    }
    let run_dir = dir.path().to_owned();
    drop(dir);
    Ok(RunOutcome {
        emulator: crate::runner::Emulator::Bochs,
        verdict,
        lines,
        milestones,
        serial_log: config.serial_log.clone(),
        run_dir,
        qemu_stderr: emulator_stderr,
        elapsed,
        launch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Emulator;

    fn bochs_config() -> RunConfig {
        let mut config = RunConfig::new("/x/demo.iso", "/x/serial.log");
        config.emulator = Emulator::Bochs;
        config.tpm = Tpm::None;
        config
    }

    #[test]
    fn the_bochsrc_asks_for_vmx_with_ept_and_strict_msrs() {
        let mut config = bochs_config();
        config.smp = 2;
        config.memory_mib = 256;
        let rc = bochsrc(&config, Path::new("/r/serial"), Path::new("/r/bochs.log"));
        for part in [
            "megs: 256\n",
            "cpu: model=corei7_skylake_x, count=2,",
            "reset_on_triple_fault=0, ignore_bad_msrs=0",
            "ata0-master: type=cdrom, path=/x/demo.iso, status=inserted\n",
            "com1: enabled=1, mode=file, dev=/r/serial\n",
            "log: /r/bochs.log\n",
            "display_library: term\n",
        ] {
            assert!(rc.contains(part), "{part} missing in {rc}");
        }
    }

    #[test]
    fn what_bochs_cannot_do_is_refused() {
        assert!(check_config(&bochs_config()).is_ok());
        let mut uefi = bochs_config();
        uefi.firmware = Firmware::Uefi;
        assert!(check_config(&uefi).unwrap_err().contains("BIOS"));
        let mut tpm = bochs_config();
        tpm.tpm = Tpm::Swtpm;
        assert!(check_config(&tpm).unwrap_err().contains("no TPM"));
        let mut extra = bochs_config();
        extra.extra_qemu_args = vec!["-s".into()];
        assert!(check_config(&extra).is_err());
        let mut direct = bochs_config();
        direct.direct_kernel = Some(crate::runner::DirectKernel {
            kernel: "/k/vmlinux".into(),
            initrd: None,
            cmdline: String::new(),
        });
        assert!(check_config(&direct).unwrap_err().contains("ISO only"));
    }

    #[test]
    fn the_log_excerpt_shows_panics_and_failed_entries_first() {
        let log = "00001i[CPU0 ] fine\n00002p[CPU1 ] >>PANIC<< boom\n00003e[CPU0 ] VMFAIL: VMCS host state invalid\n00004i[SIM ] quit\n";
        let excerpt = log_excerpt(log);
        assert!(excerpt.starts_with("00002p[CPU1 ] >>PANIC<< boom\n00003e[CPU0 ] VMFAIL"));
        assert!(excerpt.ends_with("00004i[SIM ] quit\n"));
        assert!(describe(&Verdict::NoVerdict).contains("bochs"));
    }

    #[test]
    fn verdicts_come_from_the_hypervisors_own_lines() {
        assert_eq!(verdict_of_line(SUCCESS_LINE), Some(Verdict::Success));
        assert_eq!(verdict_of_line(FAILURE_LINE), Some(Verdict::Failure));
        assert_eq!(
            verdict_of_line(GRUB_FAILURE_MARKER),
            Some(Verdict::BootLoaderFailed)
        );
        assert_eq!(
            verdict_of_line(&format!("[guest] {GRUB_FAILURE_MARKER}")),
            None
        );
        // A domain cannot fake the verdict: its lines carry its prefix.
        assert_eq!(verdict_of_line("[guest] slipway: exiting: success"), None);
        assert_eq!(verdict_of_line("slipway: exiting: successful"), None);
    }
}
