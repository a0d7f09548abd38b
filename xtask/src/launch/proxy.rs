//! The control-channel proxy between QEMU and swtpm.
//!
//! swtpm serves one control client at a time and QEMU keeps its connection for its whole life,
//! so the harness cannot reach swtpm's control channel beside QEMU. The proxy holds the one
//! connection to swtpm and multiplexes two clients onto it, one request/response pair at a
//! time (a mutex around the exchange):
//!
//! - QEMU (`-chardev socket,id=chrtpm,path=<proxy socket>`) connects to the proxy's listening
//!   socket. A thread reads each of its requests with `recvmsg`, keeping any passed file
//!   descriptors, and sends the request to swtpm with one `sendmsg` carrying the same
//!   descriptors: QEMU's `CMD_SET_DATAFD` hands swtpm its data socket this way. The proxy
//!   closes its own copies once swtpm has them; the data channel itself runs between QEMU and
//!   swtpm directly. When QEMU disconnects, the proxy accepts the next client.
//! - The harness uses [`CtrlProxy::client`]: a [`CtrlClient`] whose requests go over the same
//!   swtpm connection, never in the middle of one of QEMU's exchanges.
//!
//! Every forwarded command is logged ([`CtrlProxy::log`]): who sent it, how many descriptors
//! went along, and swtpm's result. The proxy never changes a request or a response; it refuses
//! only malformed messages (unknown lengths beyond [`super::ctrl::MAX_VARIABLE_PART`]), by
//! closing that client's connection.
//!
//! [`CtrlProxy::stop`] (and `Drop`) wakes the thread through a socket pair, joins it and removes
//! the listening socket's file.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};

use super::ctrl::{
    self, CtrlClient, CtrlCommand, CtrlConnection, CtrlError, CtrlTransport, command_name,
    read_message, request_len,
};

/// Who sent a forwarded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client connected to the proxy's socket (QEMU).
    Qemu,
    /// The harness, through [`CtrlProxy::client`].
    Harness,
}

/// One command that went through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub origin: Origin,
    pub command: u32,
    /// Request length including the command code.
    pub request_len: usize,
    /// File descriptors passed along with the request.
    pub fds: usize,
    /// swtpm's result, or `None` if no response arrived.
    pub result: Option<u32>,
}

impl Forwarded {
    pub fn name(&self) -> String {
        command_name(self.command)
    }
}

/// Keeps the log bounded: a runaway client cannot grow it without limit.
const MAX_LOG: usize = 100_000;
/// Time for the rest of a request once its first bytes arrived (swtpm allows 500 ms).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the proxy could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be created.
    #[error("cannot listen on the proxy socket {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// swtpm's control socket cannot be reached.
    #[error(transparent)]
    Swtpm(#[from] CtrlError),
    /// The proxy's thread could not be started.
    #[error("cannot start the control proxy thread: {0}")]
    Thread(#[source] io::Error),
    /// The proxy's thread panicked.
    #[error("the control proxy thread panicked")]
    Panicked,
}

#[derive(Debug, Default)]
struct State {
    /// The one connection to swtpm; `None` once it broke.
    swtpm: Option<CtrlConnection>,
    log: Vec<Forwarded>,
    /// Problems with clients or swtpm (the proxy keeps serving where it can).
    errors: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_error(&self, message: String) {
        let mut state = self.lock();
        if state.errors.len() < MAX_LOG {
            state.errors.push(message);
        }
    }

    /// One exchange with swtpm under the lock, logged.
    fn exchange(
        &self,
        origin: Origin,
        request: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        let command = u32::from_be_bytes(
            request
                .get(..4)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "request too short"))?
                .try_into()
                .expect("4 bytes"),
        );
        let result = match state.swtpm.as_mut() {
            Some(conn) => conn.exchange(request, fds),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the proxy's connection to swtpm is closed (swtpm shut down or failed earlier)",
            )),
        };
        if let Err(e) = &result
            && state.swtpm.is_some()
        {
            // A broken exchange leaves the stream out of step: never reuse it.
            state.swtpm = None;
            let message = format!("{} from {origin:?}: {e}", command_name(command));
            state.errors.push(message);
        }
        if result.is_ok() && command == CtrlCommand::Shutdown.code() {
            // swtpm exits after answering CMD_SHUTDOWN (QEMU sends it when it quits cleanly).
            state.swtpm = None;
        }
        if state.log.len() < MAX_LOG {
            state.log.push(Forwarded {
                origin,
                command,
                request_len: request.len(),
                fds: fds.len(),
                result: result.as_ref().ok().and_then(|r| ctrl::response_result(r)),
            });
        }
        result
    }
}

/// The harness's side of the proxy: a [`CtrlTransport`] over the shared swtpm connection.
#[derive(Debug, Clone)]
pub struct ProxyTransport {
    shared: Arc<Shared>,
}

impl CtrlTransport for ProxyTransport {
    fn exchange(&mut self, request: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<Vec<u8>> {
        self.shared.exchange(Origin::Harness, request, fds)
    }
}

/// A running proxy: a listening socket for QEMU, a thread serving it, the swtpm connection.
pub struct CtrlProxy {
    shared: Arc<Shared>,
    socket_path: PathBuf,
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl CtrlProxy {
    /// Connects to swtpm's control socket `swtpm_ctrl` and listens on `listen` (which must not
    /// exist). Returns once QEMU can connect; waits up to 10 s for swtpm to accept.
    pub fn start(listen: &Path, swtpm_ctrl: &Path) -> Result<CtrlProxy, ProxyError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let swtpm = CtrlConnection::connect_until(swtpm_ctrl, deadline)?;
        let listener = UnixListener::bind(listen).map_err(|source| ProxyError::Listen {
            path: listen.to_owned(),
            source,
        })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                swtpm: Some(swtpm),
                ..State::default()
            }),
        });
        let (wake, wake_rx) = UnixStream::pair().map_err(ProxyError::Thread)?;
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("swtpm-ctrl-proxy".into())
            .spawn(move || serve(listener, wake_rx, thread_shared));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(listen);
                return Err(ProxyError::Thread(e));
            }
        };
        Ok(CtrlProxy {
            shared,
            socket_path: listen.to_owned(),
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// The socket QEMU connects to (`-chardev socket,id=chrtpm,path=...`).
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// A control client for the harness, serialized with QEMU's requests.
    pub fn client(&self) -> CtrlClient<ProxyTransport> {
        CtrlClient::new(ProxyTransport {
            shared: Arc::clone(&self.shared),
        })
    }

    /// Every command forwarded so far, in order.
    pub fn log(&self) -> Vec<Forwarded> {
        self.shared.lock().log.clone()
    }

    /// Problems seen so far (client protocol errors, a broken swtpm connection).
    pub fn errors(&self) -> Vec<String> {
        self.shared.lock().errors.clone()
    }

    /// Whether the connection to swtpm is still usable.
    pub fn swtpm_connected(&self) -> bool {
        self.shared.lock().swtpm.is_some()
    }

    /// Stops the thread, closes QEMU's connection and removes the socket file. Idempotent.
    pub fn stop(&mut self) -> Result<(), ProxyError> {
        if let Some(mut wake) = self.wake.take() {
            // The thread may already be gone; then the write fails and there is nothing to do.
            let _ = wake.write_all(&[1]);
        }
        let joined = match self.thread.take() {
            Some(t) => t.join().map_err(|_| ProxyError::Panicked),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.socket_path);
        joined
    }

    /// Closes the connection to swtpm (after [`CtrlProxy::stop`], or to let swtpm see its
    /// control client go).
    pub fn disconnect_swtpm(&self) {
        self.shared.lock().swtpm = None;
    }
}

impl Drop for CtrlProxy {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: warning: swtpm control proxy: {e}");
        }
    }
}

/// What woke the thread.
enum Ready {
    Client,
    Stop,
}

/// Waits until `fd` is readable or the stop signal arrives.
fn wait(fd: BorrowedFd<'_>, wake: &UnixStream) -> io::Result<Ready> {
    loop {
        let mut fds = [
            PollFd::from_borrowed_fd(fd, PollFlags::IN | PollFlags::HUP | PollFlags::ERR),
            PollFd::from_borrowed_fd(wake.as_fd(), PollFlags::IN | PollFlags::HUP),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {
                if !fds[1].revents().is_empty() {
                    return Ok(Ready::Stop);
                }
                if !fds[0].revents().is_empty() {
                    return Ok(Ready::Client);
                }
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn serve(listener: UnixListener, wake: UnixStream, shared: Arc<Shared>) {
    loop {
        match wait(listener.as_fd(), &wake) {
            Ok(Ready::Stop) => return,
            Ok(Ready::Client) => {}
            Err(e) => {
                shared.note_error(format!("proxy: poll on the listening socket: {e}"));
                return;
            }
        }
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) => {
                shared.note_error(format!("proxy: accept: {e}"));
                continue;
            }
        };
        if let Ready::Stop = serve_client(&client, &wake, &shared) {
            return;
        }
    }
}

/// Forwards one client's requests until it disconnects (or misbehaves), or the proxy stops.
fn serve_client(mut client: &UnixStream, wake: &UnixStream, shared: &Shared) -> Ready {
    loop {
        match wait(client.as_fd(), wake) {
            Ok(Ready::Stop) => return Ready::Stop,
            Ok(Ready::Client) => {}
            Err(e) => {
                shared.note_error(format!("proxy: poll on the client: {e}"));
                return Ready::Client;
            }
        }
        let request = match read_message(client, REQUEST_TIMEOUT, request_len) {
            Ok(Some(r)) => r,
            // The client closed its connection.
            Ok(None) => return Ready::Client,
            Err(e) => {
                shared.note_error(format!("proxy: bad request from the client: {e}"));
                return Ready::Client;
            }
        };
        let fds: Vec<BorrowedFd<'_>> = request.fds.iter().map(|fd| fd.as_fd()).collect();
        let response = shared.exchange(Origin::Qemu, &request.bytes, &fds);
        drop(fds);
        // swtpm holds its own references now; the proxy's copies go.
        drop(request.fds);
        match response {
            Ok(bytes) => {
                if let Err(e) = client.write_all(&bytes) {
                    shared.note_error(format!("proxy: cannot answer the client: {e}"));
                    return Ready::Client;
                }
            }
            // No response to pass on: closing the connection tells the client (QEMU reports
            // an error for its command).
            Err(_) => return Ready::Client,
        }
    }
}
