//! The daemon's socket, through which ordinary users run jobs and see and signal their own
//! services. One JSON object per line each way: a [`Request`], then its [`Response`]. The
//! caller is who the kernel says it is (`SO_PEERCRED`, then a pidfd of that PID whose owner
//! must match), never what the request claims.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    kill::report::Verdict,
    tracking::PinPaths,
};

/// Environment variable that names the socket (overrides the one derived from the pins).
pub const SOCKET_ENV: &str = "BPFKILL_SOCKET";

/// The directory of the daemons' sockets.
pub const SOCKET_DIR: &str = "/run/bpfkill";

/// The socket of the daemon serving `paths`: `/run/bpfkill/bpfkill.sock` for the default pin
/// directory, one named after the pin directory otherwise; `$BPFKILL_SOCKET` overrides.
pub fn socket_path(paths: &PinPaths) -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV) {
        return PathBuf::from(p);
    }
    let root = paths.root();
    if root.starts_with("/sys/fs/bpf/bpfkill") {
        return Path::new(SOCKET_DIR).join("bpfkill.sock");
    }
    let name: String = root
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// What a caller asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Start a job owned by the caller: a new service whose starter is the calling process
    /// (tagged, so the command it spawns next is tagged by the kernel).
    StartJob {
        /// Its name (a generated one when None); a name another user owns, or a service
        /// nobody owns, is refused.
        service: Option<String>,
    },
    /// The job's command runs as `pid`, a child of the caller.
    JobStarted {
        /// The command's PID.
        pid: u32,
    },
    /// The command exited (or its time is up): stop what is left of the job (`signal`, then
    /// SIGKILL after `grace_ms`), or with `signal` None only report it; the job ends.
    EndJob {
        /// The signal that stops the tree; None leaves it running (`--keep-running`).
        signal: Option<i32>,
        /// The wait before SIGKILL.
        grace_ms: u64,
    },
    /// `ps` of the caller's services (or one of them), only the caller's processes.
    Ps {
        /// One service (all the caller owns when None).
        service: Option<String>,
        /// JSON instead of a table.
        json: bool,
    },
    /// The journal's history of the caller's services (or one of them), each since the
    /// caller owns it.
    Log {
        /// One service (all the caller owns when None).
        service: Option<String>,
        /// A duration back from now or an RFC 3339 time.
        since: Option<String>,
        /// JSON lines instead of text.
        json: bool,
    },
    /// Signal the caller's processes of one of its services.
    Kill {
        /// The service.
        service: String,
        /// The signal.
        signal: i32,
        /// Wait this long, then SIGKILL the survivors (None: signal once).
        timeout_ms: Option<u64>,
        /// JSON report instead of text.
        json: bool,
    },
}

/// Why a call was refused or failed (the caller maps it to its exit code).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// Not the caller's to see or signal, or root-only.
    Forbidden,
    /// A bad request.
    Usage,
    /// No such service, or nothing of it alive.
    NothingMatched,
    /// Tracking is not loaded.
    NotLoaded,
    /// The daemon failed.
    Failed,
}

/// The answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    /// Set when the call was refused or failed; `error` says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// Why not, when refused or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How a kill ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The job's service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Text to print on stdout (a listing, a kill report).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// Processes the job left running (after the stop, if any).
    #[serde(default)]
    pub leftovers: usize,
    /// Processes the stop signalled, and those the kernel killed.
    #[serde(default)]
    pub signalled: usize,
    /// Processes that survived the stop.
    #[serde(default)]
    pub survivors: usize,
}

impl Response {
    /// The answer, or the refusal as the library's error of that kind.
    pub fn into_result(self) -> Result<Self> {
        let why = self.error.clone().unwrap_or_default();
        match self.refusal {
            None => Ok(self),
            Some(Refusal::Forbidden) => Err(Error::Forbidden(why)),
            Some(Refusal::Usage) => Err(Error::Usage(why)),
            Some(Refusal::NothingMatched) => Err(Error::NothingMatched(why)),
            Some(Refusal::NotLoaded) | Some(Refusal::Failed) => Err(Error::Remote(why)),
        }
    }
}

/// A connection to the daemon.
pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the daemon serving `paths`; None when no daemon listens there.
    pub fn connect(paths: &PinPaths) -> Result<Option<Self>> {
        let path = socket_path(paths);
        match UnixStream::connect(&path) {
            Ok(s) => Ok(Some(Self {
                stream: BufReader::new(s),
            })),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io(format!("connect to {}", path.display()), e)),
        }
    }

    /// Sends `req` and waits for the answer.
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        let mut line = serde_json::to_string(req).map_err(|e| Error::io("encode a request", e.into()))?;
        line.push('\n');
        let stream = self.stream.get_mut();
        stream
            .write_all(line.as_bytes())
            .map_err(|e| Error::io("write to the daemon", e))?;
        let mut answer = String::new();
        let n = self
            .stream
            .read_line(&mut answer)
            .map_err(|e| Error::io("read the daemon's answer", e))?;
        if n == 0 {
            return Err(Error::io(
                "read the daemon's answer",
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                ),
            ));
        }
        serde_json::from_str(&answer).map_err(|e| Error::io("decode the daemon's answer", e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_line() {
        let req = Request::EndJob {
            signal: Some(15),
            grace_ms: 10_000,
        };
        let line = serde_json::to_string(&req).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""op":"end-job""#), "{line}");
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
    }

    #[test]
    fn sockets_are_named_after_their_pins() {
        std::env::remove_var(SOCKET_ENV);
        assert_eq!(
            socket_path(&PinPaths::at("/sys/fs/bpf/bpfkill/v5")),
            Path::new("/run/bpfkill/bpfkill.sock")
        );
        assert_eq!(
            socket_path(&PinPaths::at("/sys/fs/bpf/test-1/v5")),
            Path::new("/run/bpfkill/sys_fs_bpf_test-1_v5.sock")
        );
    }
}
