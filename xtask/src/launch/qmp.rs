//! A small QMP (QEMU Machine Protocol) client over a Unix socket.
//!
//! QEMU runs with `-qmp unix:<path>,server=on,wait=off`; [`Qmp::connect`] retries until the
//! socket accepts, reads the greeting and negotiates capabilities (`qmp_capabilities`). Each
//! command carries an `id`; asynchronous events that arrive in between are kept in
//! [`Qmp::events`]. Errors name the command and carry QEMU's error class and description.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one command may take (pmemsave of a large region included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest line accepted from QEMU.
const MAX_LINE: usize = 1 << 20;

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket did not accept a connection in time.
    #[error("cannot connect to QMP at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// QEMU answered the command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// Reading or writing the socket failed.
    #[error("QMP command {command}: {source}")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
    /// QEMU sent something that is not QMP.
    #[error("QMP command {command}: unexpected message from QEMU: {detail}")]
    Protocol { command: String, detail: String },
}

/// A negotiated QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    /// Asynchronous events received so far (`STOP`, `RESUME`, `SHUTDOWN`, ...).
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connects to `path`, retrying until `timeout`, and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.to_owned(),
                        source: e,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let io = |source| QmpError::Io {
            command: "(greeting)".into(),
            source,
        };
        stream.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            events: Vec::new(),
        };
        let greeting = qmp.read_message("(greeting)")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                command: "(greeting)".into(),
                detail: greeting.to_string(),
            });
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self, command: &str) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|source| QmpError::Io {
                command: command.into(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Io {
                command: command.into(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "QEMU closed QMP"),
            });
        }
        serde_json::from_slice(&line).map_err(|e| QmpError::Protocol {
            command: command.into(),
            detail: format!("{e}: {}", String::from_utf8_lossy(&line).trim()),
        })
    }

    /// Runs `command` with `arguments`; returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut bytes = serde_json::to_vec(&request).expect("JSON values serialize");
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|source| QmpError::Io {
                command: command.into(),
                source,
            })?;
        loop {
            let message = self.read_message(command)?;
            if message.get("event").is_some() {
                self.events.push(message);
                continue;
            }
            if message.get("id") != Some(&json!(id)) {
                return Err(QmpError::Protocol {
                    command: command.into(),
                    detail: format!("answer for another request: {message}"),
                });
            }
            if let Some(ret) = message.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = message.get("error") {
                let field = |k: &str| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.into(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol {
                command: command.into(),
                detail: message.to_string(),
            });
        }
    }

    /// Pauses every vCPU (`stop`).
    pub fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", None).map(|_| ())
    }

    /// Resumes the vCPUs (`cont`).
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", None).map(|_| ())
    }

    /// Whether the vCPUs run, and QEMU's run-state name (`query-status`).
    pub fn status(&mut self) -> Result<(bool, String), QmpError> {
        let r = self.execute("query-status", None)?;
        let running = r.get("running").and_then(Value::as_bool);
        let status = r.get("status").and_then(Value::as_str);
        match (running, status) {
            (Some(running), Some(status)) => Ok((running, status.to_string())),
            _ => Err(QmpError::Protocol {
                command: "query-status".into(),
                detail: r.to_string(),
            }),
        }
    }

    /// Writes `size` bytes of guest-physical memory at `addr` to `file` (`pmemsave`; QEMU
    /// writes the file itself).
    pub fn pmemsave(&mut self, addr: u64, size: u64, file: &Path) -> Result<(), QmpError> {
        let filename = file.to_str().ok_or_else(|| QmpError::Protocol {
            command: "pmemsave".into(),
            detail: format!("file name {} is not UTF-8", file.display()),
        })?;
        self.execute(
            "pmemsave",
            Some(json!({ "val": addr, "size": size, "filename": filename })),
        )
        .map(|_| ())
    }

    /// Ends QEMU (`quit`). QEMU may close the socket before or right after its answer; both
    /// count as success.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(QmpError::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
