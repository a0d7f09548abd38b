//! Child processes and temporary directories that are cleaned up on every exit path.
//!
//! - Normal return and errors: [`ManagedChild`] and [`TempDir`] kill/reap and delete on `Drop`.
//! - Unwinding panics (tests): the same `Drop`s run.
//! - Aborting panics (the `xtask` binary builds with `panic = "abort"`): [`install_panic_cleanup`].
//! - Ctrl-C, SIGTERM, SIGHUP: [`install_signal_handler`] kills every registered process group,
//!   reaps it, deletes the registered directories and exits with status 130.
//! - The harness itself killed with SIGKILL: every child runs under coreutils `timeout` with a
//!   hard limit ([`timed_command`]), so QEMU and swtpm still end.
//!
//! Each child starts in its own process group (so a terminal's Ctrl-C reaches only the harness,
//! which then stops the children itself) and is killed as a group (the `timeout` wrapper and
//! the program under it together). A program a child starts in a session of its own (bochs
//! under `script`) is registered as a [`ForeignGroup`] and stopped the same way; if the harness
//! itself is killed, `script`'s end hangs up bochs's terminal, which ends it.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

#[derive(Default)]
struct Registry {
    /// Process-group ids (= pids of the group leaders we spawned) still alive or unreaped.
    groups: Vec<i32>,
    /// Temporary directories to delete.
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    groups: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep using it.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every registered process group, reaps the leaders and deletes registered directories.
fn cleanup_everything(reg: &mut Registry) {
    for pgid in reg.groups.drain(..) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pgid), None);
    }
    for dir in reg.dirs.drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Installs the Ctrl-C/SIGTERM/SIGHUP handler (once per process; later calls do nothing). It
/// stops every child this process registered, deletes the temporary directories and exits 130.
pub fn install_signal_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let result = ctrlc::set_handler(|| {
            cleanup_everything(&mut registry());
            eprintln!("\nxtask: interrupted: stopped the emulator (QEMU or bochs) and swtpm, removed temporary files");
            std::process::exit(130);
        });
        if let Err(e) = result {
            eprintln!("xtask: warning: cannot install the Ctrl-C handler ({e}); children are still bounded by their timeouts");
        }
    });
}

/// Makes a panic stop every child before the process aborts. Only for the `xtask` binary: in a
/// test process a panicking test must not stop the other tests' children (there, unwinding runs
/// the `Drop` guards).
pub fn install_panic_cleanup() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // try_lock: the panicking thread may hold the lock itself.
        if let Ok(mut reg) = REGISTRY.try_lock() {
            cleanup_everything(&mut reg);
        }
        previous(info);
    }));
}

/// Extra time the `timeout` wrapper grants beyond the harness's own deadline, and the time it
/// waits after SIGTERM before SIGKILL.
pub const HARD_LIMIT_GRACE: Duration = Duration::from_secs(30);
const KILL_AFTER: Duration = Duration::from_secs(5);

/// `timeout --kill-after=5s <limit> <program>`: `program` cannot outlive `hard_limit` even if the
/// harness is killed outright. Add the program's arguments and stdio to the returned command.
pub fn timed_command(program: impl AsRef<std::ffi::OsStr>, hard_limit: Duration) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg(format!("--kill-after={}s", KILL_AFTER.as_secs()))
        .arg(format!("{}s", hard_limit.as_secs().max(1)))
        .arg(program);
    cmd
}

/// A child process (group) that is killed and reaped when dropped.
pub struct ManagedChild {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl ManagedChild {
    /// Spawns `cmd` in a new process group and registers it for cleanup.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> io::Result<Self> {
        let name = name.into();
        cmd.process_group(0);
        // Hold the lock across spawn and registration so a signal cannot fall in between.
        let mut reg = registry();
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {name} ({:?}): {e}", cmd.get_program()),
            )
        })?;
        reg.groups.push(child.id() as i32);
        drop(reg);
        Ok(ManagedChild {
            name,
            child,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Access to the piped stdio handles.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    fn reaped(&mut self, status: ExitStatus) -> ExitStatus {
        // Called with the registry locked, right after the reap: the pid cannot be reused
        // between reaping and deregistering, as far as this process is concerned.
        self.status = Some(status);
        status
    }

    /// The exit status if the child has exited (reaps it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut reg = registry();
        match self.child.try_wait()? {
            Some(status) => {
                let pgid = self.child.id() as i32;
                // The group may still hold stragglers (none expected): kill them with it.
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                reg.groups.retain(|g| *g != pgid);
                Ok(Some(self.reaped(status)))
            }
            None => Ok(None),
        }
    }

    /// Waits for the child until `deadline`; `None` if it is still running then.
    pub fn wait_until(&mut self, deadline: Instant) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// Kills the whole process group and reaps the child; returns its exit status.
    pub fn kill_and_reap(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut reg = registry();
        let pgid = self.child.id() as i32;
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let status = self.child.wait()?;
        reg.groups.retain(|g| *g != pgid);
        Ok(self.reaped(status))
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_reap() {
            eprintln!(
                "xtask: warning: cannot reap {} (pid {}): {e}",
                self.name,
                self.child.id()
            );
        }
    }
}

/// A process group this process did not spawn directly but must stop on every path: a program
/// that a child runs in a session of its own (bochs under `script`). Registered for the signal
/// handler; on drop the group is killed and the leader awaited (it is not our child: its end is
/// observed through `/proc`, at most [`FOREIGN_EXIT_WAIT`]).
pub struct ForeignGroup {
    pgid: i32,
}

/// How long dropping a [`ForeignGroup`] waits for its leader to disappear after SIGKILL.
pub const FOREIGN_EXIT_WAIT: Duration = Duration::from_secs(5);

impl ForeignGroup {
    /// Registers the group led by `pgid`.
    pub fn register(pgid: i32) -> Self {
        registry().groups.push(pgid);
        ForeignGroup { pgid }
    }

    /// The group's id.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }
}

impl Drop for ForeignGroup {
    fn drop(&mut self) {
        let mut reg = registry();
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        reg.groups.retain(|g| *g != self.pgid);
        drop(reg);
        let proc_dir = PathBuf::from(format!("/proc/{}", self.pgid));
        let deadline = Instant::now() + FOREIGN_EXIT_WAIT;
        // A zombie (its parent not yet reaping) counts as gone: it holds no resources.
        let alive = || {
            std::fs::read_to_string(proc_dir.join("stat"))
                .map(|stat| {
                    !stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        };
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive() {
            eprintln!(
                "xtask: warning: process group {} did not end within {} s of SIGKILL",
                self.pgid,
                FOREIGN_EXIT_WAIT.as_secs()
            );
        }
    }
}

/// A fresh temporary directory, deleted on drop (and by the signal handler).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/slipway-<label>-<pid>-<n>`. Paths stay short: Unix socket paths live here.
    pub fn new(label: &str) -> io::Result<Self> {
        Self::new_in(&std::env::temp_dir(), label)
    }

    /// Creates `<base>/slipway-<label>-<pid>-<n>` (e.g. under /dev/shm for guest RAM).
    pub fn new_in(base: &Path, label: &str) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("slipway-{label}-{}-{n}", std::process::id()));
        let mut reg = registry();
        std::fs::create_dir(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
        })?;
        reg.dirs.push(path.clone());
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let mut reg = registry();
        let _ = std::fs::remove_dir_all(&self.path);
        reg.dirs.retain(|d| *d != self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(pid: u32) -> bool {
        registry().groups.contains(&(pid as i32))
    }

    #[test]
    fn dropping_a_child_kills_its_whole_group() {
        // `sh` starts a grandchild in the same group; both must be gone after the drop.
        let mut cmd = timed_command("sh", Duration::from_secs(60));
        cmd.args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(std::process::Stdio::piped());
        let mut child = ManagedChild::spawn("sleeper", cmd).unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.child_mut().stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        let pid = child.id();
        assert!(registered(pid));
        drop(child);
        assert!(!registered(pid));
        // The grandchild was reparented to init (or a subreaper) and killed; give it a moment.
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        });
        assert!(gone, "grandchild {grandchild} survived");
    }

    #[test]
    fn hard_limit_ends_a_child_without_the_harness() {
        let mut cmd = timed_command("sleep", Duration::from_secs(1));
        cmd.arg("30");
        let mut child = ManagedChild::spawn("sleeper", cmd).unwrap();
        let status = child
            .wait_until(Instant::now() + Duration::from_secs(10))
            .unwrap()
            .expect("timeout(1) must end the child");
        assert_eq!(status.code(), Some(124));
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::new("unit").unwrap();
        let path = dir.path().to_owned();
        std::fs::write(path.join("f"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
        assert!(!registry().dirs.contains(&path));
    }
}
