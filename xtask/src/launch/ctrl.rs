//! swtpm's control channel: command codes, message framing and a typed client.
//!
//! The protocol (swtpm's `tpm_ioctl.h`, "commands used by the non-CUSE TPMs"): a request is a
//! big-endian `u32` command code followed by the command's request structure; the response is
//! the command's response structure, whose first field is a big-endian `u32` result (0 =
//! success, otherwise a TPM 1.2-style result such as `TPM_BAD_PARAMETER`). There is no length
//! prefix: swtpm takes everything one `recvmsg` returns as the request (reading on only while a
//! known minimum is missing) and writes each response with one `write`. So this module
//! (a) knows each command's request and response sizes ([`request_len`], [`response_len`]),
//! (b) sends each request with exactly one `sendmsg` (carrying any file descriptors in the same
//! call, as `CMD_SET_DATAFD` needs), and (c) never pipelines two requests.
//!
//! Response sizes on success: 8 bytes for `CMD_GET_CAPABILITY` (a `u64` capability mask whose
//! high half doubles as the zero result), `CMD_GET_TPMESTABLISHED` and `CMD_GET_CONFIG`; 16 for
//! `CMD_SET_BUFFERSIZE`; 16 + length for `CMD_GET_STATEBLOB`; 12 + length for `CMD_GET_INFO`;
//! 4 (the result alone) for everything else. On failure swtpm sometimes sends only the 4-byte
//! result (e.g. "TPM not running") and sometimes the full structure; [`read_response`] takes
//! whatever of the full structure arrives with the result.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

/// The control commands (`CMD_*` in swtpm's `tpm_ioctl.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtrlCommand {
    GetCapability = 1,
    Init = 2,
    Shutdown = 3,
    GetTpmEstablished = 4,
    SetLocality = 5,
    HashStart = 6,
    HashData = 7,
    HashEnd = 8,
    CancelTpmCmd = 9,
    StoreVolatile = 10,
    ResetTpmEstablished = 11,
    GetStateBlob = 12,
    SetStateBlob = 13,
    Stop = 14,
    GetConfig = 15,
    SetDataFd = 16,
    SetBufferSize = 17,
    GetInfo = 18,
    LockStorage = 19,
}

impl CtrlCommand {
    pub const ALL: [CtrlCommand; 19] = [
        CtrlCommand::GetCapability,
        CtrlCommand::Init,
        CtrlCommand::Shutdown,
        CtrlCommand::GetTpmEstablished,
        CtrlCommand::SetLocality,
        CtrlCommand::HashStart,
        CtrlCommand::HashData,
        CtrlCommand::HashEnd,
        CtrlCommand::CancelTpmCmd,
        CtrlCommand::StoreVolatile,
        CtrlCommand::ResetTpmEstablished,
        CtrlCommand::GetStateBlob,
        CtrlCommand::SetStateBlob,
        CtrlCommand::Stop,
        CtrlCommand::GetConfig,
        CtrlCommand::SetDataFd,
        CtrlCommand::SetBufferSize,
        CtrlCommand::GetInfo,
        CtrlCommand::LockStorage,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<CtrlCommand> {
        CtrlCommand::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The name in `tpm_ioctl.h`, used in every message about the command.
    pub fn name(self) -> &'static str {
        match self {
            CtrlCommand::GetCapability => "CMD_GET_CAPABILITY",
            CtrlCommand::Init => "CMD_INIT",
            CtrlCommand::Shutdown => "CMD_SHUTDOWN",
            CtrlCommand::GetTpmEstablished => "CMD_GET_TPMESTABLISHED",
            CtrlCommand::SetLocality => "CMD_SET_LOCALITY",
            CtrlCommand::HashStart => "CMD_HASH_START",
            CtrlCommand::HashData => "CMD_HASH_DATA",
            CtrlCommand::HashEnd => "CMD_HASH_END",
            CtrlCommand::CancelTpmCmd => "CMD_CANCEL_TPM_CMD",
            CtrlCommand::StoreVolatile => "CMD_STORE_VOLATILE",
            CtrlCommand::ResetTpmEstablished => "CMD_RESET_TPMESTABLISHED",
            CtrlCommand::GetStateBlob => "CMD_GET_STATEBLOB",
            CtrlCommand::SetStateBlob => "CMD_SET_STATEBLOB",
            CtrlCommand::Stop => "CMD_STOP",
            CtrlCommand::GetConfig => "CMD_GET_CONFIG",
            CtrlCommand::SetDataFd => "CMD_SET_DATAFD",
            CtrlCommand::SetBufferSize => "CMD_SET_BUFFERSIZE",
            CtrlCommand::GetInfo => "CMD_GET_INFO",
            CtrlCommand::LockStorage => "CMD_LOCK_STORAGE",
        }
    }
}

/// The name of a command code, also for codes this module does not know.
pub fn command_name(code: u32) -> String {
    match CtrlCommand::from_code(code) {
        Some(c) => c.name().to_string(),
        None => format!("unknown control command {code:#x}"),
    }
}

/// The largest chunk one `CMD_HASH_DATA` carries (`ptm_hdata`'s data buffer). swtpm accepts
/// longer requests by streaming, but one chunk per request keeps every request self-contained.
pub const HASH_DATA_CHUNK: usize = 4096;

/// The largest variable part (hash data, state blob, info string) the framing accepts in one
/// message; larger declared lengths are refused as malformed.
pub const MAX_VARIABLE_PART: usize = 64 << 20;

/// Capability bits of `CMD_GET_CAPABILITY` (`PTM_CAP_*`).
pub mod cap {
    pub const INIT: u64 = 1;
    pub const SHUTDOWN: u64 = 1 << 1;
    pub const GET_TPMESTABLISHED: u64 = 1 << 2;
    pub const SET_LOCALITY: u64 = 1 << 3;
    pub const HASHING: u64 = 1 << 4;
    pub const CANCEL_TPM_CMD: u64 = 1 << 5;
    pub const STORE_VOLATILE: u64 = 1 << 6;
    pub const RESET_TPMESTABLISHED: u64 = 1 << 7;
    pub const GET_STATEBLOB: u64 = 1 << 8;
    pub const SET_STATEBLOB: u64 = 1 << 9;
    pub const STOP: u64 = 1 << 10;
    pub const GET_CONFIG: u64 = 1 << 11;
    pub const SET_DATAFD: u64 = 1 << 12;
    pub const SET_BUFFERSIZE: u64 = 1 << 13;
    pub const GET_INFO: u64 = 1 << 14;
    pub const SEND_COMMAND_HEADER: u64 = 1 << 15;
    pub const LOCK_STORAGE: u64 = 1 << 16;
}

/// `PTM_INIT_FLAG_DELETE_VOLATILE`: delete the volatile state after reading it.
pub const INIT_FLAG_DELETE_VOLATILE: u32 = 1;

/// Why a byte sequence is not a well-formed control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A declared length is larger than [`MAX_VARIABLE_PART`].
    #[error("{command} declares {len} bytes of data, more than the {MAX_VARIABLE_PART} accepted")]
    TooLong { command: String, len: usize },
}

fn be32(bytes: &[u8], at: usize) -> Option<usize> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn with_variable(
    command: u32,
    bytes: &[u8],
    header: usize,
    len_at: usize,
) -> Result<usize, FramingError> {
    match be32(bytes, len_at) {
        None => Ok(header),
        Some(len) if len > MAX_VARIABLE_PART => Err(FramingError::TooLong {
            command: command_name(command),
            len,
        }),
        Some(len) => Ok(header + len),
    }
}

/// The request length (command code included) that must have arrived before the request is
/// complete, given the `bytes` received so far. Call again as bytes arrive: for commands with a
/// variable part the answer grows once the length field is in. Bytes beyond it that arrived in
/// the same read belong to the request too (swtpm's own rule; QEMU pads `CMD_SET_LOCALITY` to
/// 4 bytes, for example).
pub fn request_len(bytes: &[u8]) -> Result<usize, FramingError> {
    let Some(code) = be32(bytes, 0) else {
        return Ok(4);
    };
    let code = code as u32;
    let body = match CtrlCommand::from_code(code) {
        Some(CtrlCommand::Init)
        | Some(CtrlCommand::SetBufferSize)
        | Some(CtrlCommand::LockStorage) => 4,
        Some(CtrlCommand::SetLocality) | Some(CtrlCommand::ResetTpmEstablished) => 1,
        Some(CtrlCommand::GetStateBlob) => 12,
        Some(CtrlCommand::GetInfo) => 16,
        Some(CtrlCommand::HashData) => return with_variable(code, bytes, 8, 4),
        Some(CtrlCommand::SetStateBlob) => return with_variable(code, bytes, 16, 12),
        _ => 0,
    };
    Ok(4 + body)
}

/// The response length that must have arrived for `command`, given the `bytes` received so
/// far. A non-zero result needs only the result itself (see [`response_full_len`]).
pub fn response_len(command: u32, bytes: &[u8]) -> Result<usize, FramingError> {
    match be32(bytes, 0) {
        None => Ok(4),
        Some(0) => match CtrlCommand::from_code(command) {
            Some(CtrlCommand::GetStateBlob) => with_variable(command, bytes, 16, 12),
            Some(CtrlCommand::GetInfo) => with_variable(command, bytes, 12, 8),
            _ => Ok(response_full_len(command)),
        },
        Some(_) => Ok(4),
    }
}

/// The fixed size of `command`'s response structure (without variable data): the most an
/// error response can be.
pub fn response_full_len(command: u32) -> usize {
    match CtrlCommand::from_code(command) {
        Some(CtrlCommand::GetCapability)
        | Some(CtrlCommand::GetTpmEstablished)
        | Some(CtrlCommand::GetConfig) => 8,
        Some(CtrlCommand::SetBufferSize) | Some(CtrlCommand::GetStateBlob) => 16,
        Some(CtrlCommand::GetInfo) => 12,
        _ => 4,
    }
}

/// The result field of a response (0 = success).
pub fn response_result(response: &[u8]) -> Option<u32> {
    be32(response, 0).map(|r| r as u32)
}

/// A short description of the TPM result codes swtpm's control channel answers with.
pub fn describe_result(code: u32) -> &'static str {
    match code {
        0x0 => "success",
        0x3 => "TPM_BAD_PARAMETER",
        0x9 => "TPM_FAIL",
        0xa => "TPM_BAD_ORDINAL (unknown command, or the TPM is not running / already running)",
        0x17 => "TPM_SIZE",
        0x1f => "TPM_IOERROR",
        0x3d => "TPM_BAD_LOCALITY",
        0x101 => "TPM_RC_FAILURE",
        0x907 => "TPM_RC_LOCALITY",
        _ => "unrecognised result",
    }
}

/// What the reads of one message received.
#[derive(Debug, Default)]
pub struct Received {
    pub bytes: Vec<u8>,
    /// File descriptors that came with the bytes (SCM_RIGHTS).
    pub fds: Vec<OwnedFd>,
}

/// How long [`read_response`] waits for the rest of an error response that arrived short.
const ERROR_TAIL_GRACE: Duration = Duration::from_millis(20);

/// Waits until `fd` is readable, at most `timeout`; `false` on timeout.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec::try_from(left).map_err(|_| io::Error::other("timeout too long"))?;
        let mut fds = [PollFd::from_borrowed_fd(
            fd,
            PollFlags::IN | PollFlags::HUP | PollFlags::ERR,
        )];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One `recvmsg` into `out`, collecting passed descriptors. Returns the byte count (0 = end of
/// stream).
fn recv_some(stream: &UnixStream, out: &mut Received, buf: &mut [u8]) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match recvmsg(
            stream,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            out.fds.extend(fds);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more file descriptors than a control message may carry (ancillary data truncated)",
        ));
    }
    out.bytes.extend_from_slice(&buf[..msg.bytes]);
    Ok(msg.bytes)
}

/// Reads one message from `stream`: reads until `needed(bytes)` bytes are in, each read within
/// `timeout`. `Ok(None)`: the peer closed the stream before sending anything.
pub fn read_message(
    stream: &UnixStream,
    timeout: Duration,
    needed: impl Fn(&[u8]) -> Result<usize, FramingError>,
) -> io::Result<Option<Received>> {
    let mut out = Received::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !wait_readable(stream.as_fd(), timeout)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no data for {} ms ({} bytes of the message received)",
                    timeout.as_millis(),
                    out.bytes.len()
                ),
            ));
        }
        if recv_some(stream, &mut out, &mut buf)? == 0 {
            if out.bytes.is_empty() && out.fds.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream closed after {} bytes of a message", out.bytes.len()),
            ));
        }
        let need = needed(&out.bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if out.bytes.len() >= need {
            return Ok(Some(out));
        }
    }
}

/// Reads the response to `command` (see the module docs for the framing rules).
pub fn read_response(stream: &UnixStream, command: u32, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut received =
        read_message(stream, timeout, |b| response_len(command, b))?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "swtpm closed the control connection (it has shut down)",
            )
        })?;
    let full = response_full_len(command);
    if response_result(&received.bytes) != Some(0) {
        // Some error responses carry the whole structure; take its tail if it follows at once.
        let mut buf = vec![0u8; full];
        while received.bytes.len() < full && wait_readable(stream.as_fd(), ERROR_TAIL_GRACE)? {
            let want = full - received.bytes.len();
            if recv_some(stream, &mut received, &mut buf[..want])? == 0 {
                break;
            }
        }
    }
    let limit = if response_result(&received.bytes) == Some(0) {
        response_len(command, &received.bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
    } else {
        full
    };
    if received.bytes.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} bytes arrived, more than the {limit}-byte response to {}",
                received.bytes.len(),
                command_name(command)
            ),
        ));
    }
    if !received.fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file descriptors arrived with a response",
        ));
    }
    Ok(received.bytes)
}

/// Sends `message` with one `sendmsg` carrying `fds` (SCM_RIGHTS), and the rest of the bytes,
/// should the socket take only part, with plain writes.
pub fn send_message(
    mut stream: &UnixStream,
    message: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} file descriptors do not fit one message", fds.len()),
        ));
    }
    let sent = loop {
        match sendmsg(
            stream,
            &[IoSlice::new(message)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    stream.write_all(&message[sent..])
}

/// Something that carries one control request to swtpm and returns its whole response: a
/// direct [`CtrlConnection`], or the proxy's shared connection.
pub trait CtrlTransport {
    fn exchange(&mut self, request: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<Vec<u8>>;
}

impl<T: CtrlTransport + ?Sized> CtrlTransport for &mut T {
    fn exchange(&mut self, request: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<Vec<u8>> {
        (**self).exchange(request, fds)
    }
}

/// How long a response may take. Hash data and state blobs are the slow ones; swtpm answers in
/// milliseconds.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to a control socket (swtpm's, or the proxy's when acting as QEMU in tests).
#[derive(Debug)]
pub struct CtrlConnection {
    stream: UnixStream,
    path: PathBuf,
}

impl CtrlConnection {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<CtrlConnection, CtrlError> {
        let stream = UnixStream::connect(path).map_err(|source| CtrlError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Ok(CtrlConnection {
            stream,
            path: path.to_owned(),
        })
    }

    /// Like [`CtrlConnection::connect`], but retries until `deadline`: swtpm creates its socket
    /// file before it listens on it, so a connect right after the file appears can be refused.
    pub fn connect_until(path: &Path, deadline: Instant) -> Result<CtrlConnection, CtrlError> {
        loop {
            match CtrlConnection::connect(path) {
                Ok(connection) => return Ok(connection),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

impl CtrlTransport for CtrlConnection {
    fn exchange(&mut self, request: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<Vec<u8>> {
        let code = be32(request, 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "request too short"))?
            as u32;
        send_message(&self.stream, request, fds)?;
        read_response(&self.stream, code, RESPONSE_TIMEOUT)
    }
}

/// Why a control command failed. Every variant names the command.
#[derive(Debug, thiserror::Error)]
pub enum CtrlError {
    /// swtpm answered with a non-zero result.
    #[error("swtpm control command {command} failed with TPM result {code:#x} ({})", describe_result(*code))]
    Tpm { command: &'static str, code: u32 },
    /// The request or its response could not be exchanged.
    #[error("swtpm control command {command}: {source}")]
    Io {
        command: &'static str,
        #[source]
        source: io::Error,
    },
    /// The response is shorter than the command's response structure.
    #[error("swtpm control command {command}: {len}-byte response, expected {expected}")]
    ShortResponse {
        command: &'static str,
        len: usize,
        expected: usize,
    },
    /// The control socket cannot be reached.
    #[error("cannot connect to the swtpm control socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The buffer sizes `CMD_SET_BUFFERSIZE` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSize {
    pub current: u32,
    pub min: u32,
    pub max: u32,
}

/// A typed client for the control channel over any [`CtrlTransport`].
pub struct CtrlClient<T> {
    transport: T,
}

impl<T: CtrlTransport> CtrlClient<T> {
    pub fn new(transport: T) -> Self {
        CtrlClient { transport }
    }

    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Sends `command` with `body` and `fds`; returns the response after checking its result
    /// and that it holds at least `min_response` bytes.
    fn call(
        &mut self,
        command: CtrlCommand,
        body: &[u8],
        fds: &[BorrowedFd<'_>],
        min_response: usize,
    ) -> Result<Vec<u8>, CtrlError> {
        let mut request = Vec::with_capacity(4 + body.len());
        request.extend_from_slice(&command.code().to_be_bytes());
        request.extend_from_slice(body);
        let response = self
            .transport
            .exchange(&request, fds)
            .map_err(|source| CtrlError::Io {
                command: command.name(),
                source,
            })?;
        match response_result(&response) {
            None => Err(CtrlError::ShortResponse {
                command: command.name(),
                len: response.len(),
                expected: min_response.max(4),
            }),
            Some(0) if response.len() < min_response => Err(CtrlError::ShortResponse {
                command: command.name(),
                len: response.len(),
                expected: min_response,
            }),
            Some(0) => Ok(response),
            Some(code) => Err(CtrlError::Tpm {
                command: command.name(),
                code,
            }),
        }
    }

    fn simple(&mut self, command: CtrlCommand, body: &[u8]) -> Result<(), CtrlError> {
        self.call(command, body, &[], 4).map(|_| ())
    }

    /// `CMD_GET_CAPABILITY`: the `PTM_CAP_*` bits ([`cap`]).
    pub fn capabilities(&mut self) -> Result<u64, CtrlError> {
        let r = self.call(CtrlCommand::GetCapability, &[], &[], 8)?;
        Ok(u64::from_be_bytes(r[..8].try_into().expect("8 bytes")))
    }

    /// `CMD_INIT`: (re)starts the TPM; `flags` as [`INIT_FLAG_DELETE_VOLATILE`].
    pub fn init(&mut self, flags: u32) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::Init, &flags.to_be_bytes())
    }

    /// `CMD_STOP`: stops the TPM (swtpm keeps running).
    pub fn stop(&mut self) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::Stop, &[])
    }

    /// `CMD_SHUTDOWN`: stops the TPM and makes swtpm exit.
    pub fn shutdown(&mut self) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::Shutdown, &[])
    }

    /// `CMD_SET_LOCALITY`: the locality of the following TPM commands. The harness never calls
    /// this while QEMU is attached: QEMU caches the locality it last set.
    pub fn set_locality(&mut self, locality: u8) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::SetLocality, &[locality])
    }

    /// `CMD_GET_TPMESTABLISHED`: the TPM-established bit.
    pub fn tpm_established(&mut self) -> Result<bool, CtrlError> {
        let r = self.call(CtrlCommand::GetTpmEstablished, &[], &[], 5)?;
        Ok(r[4] != 0)
    }

    /// `CMD_RESET_TPMESTABLISHED` at `locality` (the TPM allows it at locality 3 or 4).
    pub fn reset_tpm_established(&mut self, locality: u8) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::ResetTpmEstablished, &[locality])
    }

    /// `CMD_HASH_START`: `_TPM_Hash_Start`, the start of a dynamic-launch measurement.
    pub fn hash_start(&mut self) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::HashStart, &[])
    }

    /// `CMD_HASH_DATA`, once per [`HASH_DATA_CHUNK`] bytes of `data`.
    pub fn hash_data(&mut self, data: &[u8]) -> Result<(), CtrlError> {
        for chunk in data.chunks(HASH_DATA_CHUNK) {
            let mut body = Vec::with_capacity(4 + chunk.len());
            body.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            body.extend_from_slice(chunk);
            self.simple(CtrlCommand::HashData, &body)?;
        }
        Ok(())
    }

    /// `CMD_HASH_END`: `_TPM_Hash_End`; PCR17 = H(0..0 || H(data)), PCR18-22 = 0.
    pub fn hash_end(&mut self) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::HashEnd, &[])
    }

    /// The emulated dynamic launch: hash start, `data` in chunks, hash end. Needs a TPM that
    /// has seen TPM2_Startup (before it, swtpm takes the H-CRTM path and changes PCR0).
    pub fn dynamic_launch(&mut self, data: &[u8]) -> Result<(), CtrlError> {
        self.hash_start()?;
        self.hash_data(data)?;
        self.hash_end()
    }

    /// `CMD_CANCEL_TPM_CMD`.
    pub fn cancel_tpm_command(&mut self) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::CancelTpmCmd, &[])
    }

    /// `CMD_STORE_VOLATILE`: writes the volatile state to the state directory.
    pub fn store_volatile(&mut self) -> Result<(), CtrlError> {
        self.simple(CtrlCommand::StoreVolatile, &[])
    }

    /// `CMD_GET_CONFIG`: `PTM_CONFIG_FLAG_*` (file key, migration key).
    pub fn config(&mut self) -> Result<u32, CtrlError> {
        let r = self.call(CtrlCommand::GetConfig, &[], &[], 8)?;
        Ok(u32::from_be_bytes(r[4..8].try_into().expect("4 bytes")))
    }

    /// `CMD_SET_DATAFD`: hands swtpm `fd` (one end of a socket pair) as its data channel, the
    /// way QEMU does. swtpm refuses (TPM_IOERROR) while it still has a data channel.
    pub fn set_data_fd(&mut self, fd: BorrowedFd<'_>) -> Result<(), CtrlError> {
        self.call(CtrlCommand::SetDataFd, &[], &[fd], 4).map(|_| ())
    }

    /// `CMD_SET_BUFFERSIZE`: 0 queries; other sizes need a stopped TPM.
    pub fn set_buffer_size(&mut self, size: u32) -> Result<BufferSize, CtrlError> {
        let r = self.call(CtrlCommand::SetBufferSize, &size.to_be_bytes(), &[], 16)?;
        let word = |i: usize| u32::from_be_bytes(r[i..i + 4].try_into().expect("4 bytes"));
        Ok(BufferSize {
            current: word(4),
            min: word(8),
            max: word(12),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: CtrlCommand, body: &[u8]) -> Vec<u8> {
        let mut v = cmd.code().to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn command_codes_match_tpm_ioctl_h() {
        assert_eq!(CtrlCommand::GetCapability.code(), 0x01);
        assert_eq!(CtrlCommand::HashStart.code(), 0x06);
        assert_eq!(CtrlCommand::HashData.code(), 0x07);
        assert_eq!(CtrlCommand::HashEnd.code(), 0x08);
        assert_eq!(CtrlCommand::SetDataFd.code(), 0x10);
        assert_eq!(CtrlCommand::LockStorage.code(), 0x13);
        for (i, c) in CtrlCommand::ALL.iter().enumerate() {
            assert_eq!(c.code(), i as u32 + 1);
            assert_eq!(CtrlCommand::from_code(c.code()), Some(*c));
        }
        assert_eq!(CtrlCommand::from_code(0), None);
        assert_eq!(command_name(0x99), "unknown control command 0x99");
    }

    #[test]
    fn request_framing_follows_the_request_structures() {
        assert_eq!(request_len(&[]), Ok(4));
        assert_eq!(request_len(&[0, 0]), Ok(4));
        assert_eq!(request_len(&req(CtrlCommand::HashStart, &[])), Ok(4));
        assert_eq!(request_len(&req(CtrlCommand::SetDataFd, &[])), Ok(4));
        assert_eq!(request_len(&req(CtrlCommand::Init, &[])), Ok(8));
        assert_eq!(request_len(&req(CtrlCommand::SetLocality, &[])), Ok(5));
        assert_eq!(request_len(&req(CtrlCommand::GetStateBlob, &[])), Ok(16));
        // Variable part: known once the length field is in.
        assert_eq!(request_len(&req(CtrlCommand::HashData, &[0, 0])), Ok(8));
        assert_eq!(
            request_len(&req(CtrlCommand::HashData, &[0, 0, 0x10, 0])),
            Ok(8 + 4096)
        );
        assert_eq!(
            request_len(&req(
                CtrlCommand::SetStateBlob,
                &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 1, 0]
            )),
            Ok(16 + 256)
        );
        assert!(matches!(
            request_len(&req(CtrlCommand::HashData, &[0xff, 0xff, 0xff, 0xff])),
            Err(FramingError::TooLong { .. })
        ));
        // Unknown commands: swtpm answers TPM_BAD_ORDINAL to the code alone.
        assert_eq!(request_len(&0x77u32.to_be_bytes()), Ok(4));
    }

    #[test]
    fn response_framing_follows_the_response_structures() {
        let cap = CtrlCommand::GetCapability.code();
        assert_eq!(response_len(cap, &[]), Ok(4));
        assert_eq!(response_len(cap, &[0, 0, 0, 0]), Ok(8));
        // A failure needs only the result.
        assert_eq!(
            response_len(CtrlCommand::GetTpmEstablished.code(), &[0, 0, 0, 0xa]),
            Ok(4)
        );
        assert_eq!(response_full_len(CtrlCommand::GetTpmEstablished.code()), 8);
        let sbs = CtrlCommand::SetBufferSize.code();
        assert_eq!(response_len(sbs, &[0; 4]), Ok(16));
        let gsb = CtrlCommand::GetStateBlob.code();
        assert_eq!(response_len(gsb, &[0; 4]), Ok(16));
        let mut header = vec![0u8; 16];
        header[12..16].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(response_len(gsb, &header), Ok(116));
        let info = CtrlCommand::GetInfo.code();
        let mut header = vec![0u8; 12];
        header[8..12].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(response_len(info, &header), Ok(19));
        assert_eq!(response_len(CtrlCommand::HashEnd.code(), &[0; 4]), Ok(4));
    }

    /// A transport that records requests and answers from a script.
    struct Scripted {
        requests: Vec<Vec<u8>>,
        answers: Vec<Vec<u8>>,
    }

    impl CtrlTransport for Scripted {
        fn exchange(&mut self, request: &[u8], _fds: &[BorrowedFd<'_>]) -> io::Result<Vec<u8>> {
            self.requests.push(request.to_vec());
            Ok(self.answers.remove(0))
        }
    }

    #[test]
    fn hash_data_goes_in_chunks_and_errors_name_the_command() {
        let data = vec![0x5a; HASH_DATA_CHUNK * 2 + 10];
        let mut client = CtrlClient::new(Scripted {
            requests: Vec::new(),
            answers: vec![vec![0; 4]; 5],
        });
        client.dynamic_launch(&data).unwrap();
        let requests = &client.transport().requests;
        assert_eq!(requests.len(), 5);
        assert_eq!(requests[0], req(CtrlCommand::HashStart, &[]));
        for (i, len) in [(1, HASH_DATA_CHUNK), (2, HASH_DATA_CHUNK), (3, 10)] {
            assert_eq!(requests[i][..4], CtrlCommand::HashData.code().to_be_bytes());
            assert_eq!(requests[i][4..8], (len as u32).to_be_bytes());
            assert_eq!(requests[i].len(), 8 + len);
        }
        assert_eq!(requests[4], req(CtrlCommand::HashEnd, &[]));

        let mut failing = CtrlClient::new(Scripted {
            requests: Vec::new(),
            answers: vec![vec![0, 0, 0, 0xa]],
        });
        let err = failing.hash_start().unwrap_err();
        assert!(matches!(
            err,
            CtrlError::Tpm {
                command: "CMD_HASH_START",
                code: 0xa
            }
        ));
        assert!(err.to_string().contains("CMD_HASH_START"), "{err}");
        assert!(err.to_string().contains("0xa"), "{err}");

        let mut short = CtrlClient::new(Scripted {
            requests: Vec::new(),
            answers: vec![vec![0, 0, 0, 0]],
        });
        assert!(matches!(
            short.capabilities(),
            Err(CtrlError::ShortResponse {
                command: "CMD_GET_CAPABILITY",
                ..
            })
        ));
    }

    #[test]
    fn fds_travel_with_the_message_over_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let (passed, _keep) = UnixStream::pair().unwrap();
        send_message(&a, &req(CtrlCommand::SetDataFd, &[]), &[passed.as_fd()]).unwrap();
        let got = read_message(&b, Duration::from_secs(5), request_len)
            .unwrap()
            .unwrap();
        assert_eq!(got.bytes, req(CtrlCommand::SetDataFd, &[]));
        assert_eq!(got.fds.len(), 1);
        // The received descriptor is the same socket: bytes written to it reach `_keep`.
        let mut received = UnixStream::from(got.fds.into_iter().next().unwrap());
        received.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        use std::io::Read;
        (&_keep).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        drop(a);
        assert!(
            read_message(&b, Duration::from_secs(5), request_len)
                .unwrap()
                .is_none()
        );
    }
}
