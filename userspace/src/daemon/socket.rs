//! The daemon's unix socket: ordinary users run jobs and see and signal their own services
//! through it (the protocol and what each request does are in [`crate::job::protocol`] and
//! [`crate::job::owned`]). Each connection is checked once (`SO_PEERCRED`, then a pidfd of
//! the peer whose owner must match); each request runs on the blocking pool with maps of its
//! own, so a long kill never stalls the event loop. A job whose client goes away without
//! ending it is stopped (SIGTERM, SIGKILL after 10 s).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::{
    error::{Error, Result},
    job::{
        owned::{self, Caller, Owners, Served},
        protocol::{self, Request, Response},
    },
    kill::{report::Verdict, schedule::Schedule},
    sys::signal::Signal,
    tracking::PinPaths,
};

/// Where and for whom the socket listens.
#[derive(Debug, Clone, Default)]
pub struct SocketOptions {
    /// Its path (derived from the pin directory when None, see [`protocol::socket_path`]).
    pub path: Option<PathBuf>,
    /// Only this group may connect (mode 0660); everyone may otherwise (mode 0666: every
    /// request is checked against the caller's credentials).
    pub group: Option<String>,
    /// No socket.
    pub off: bool,
}

/// The stop of a job whose client vanished.
const ABANDONED_GRACE: Duration = Duration::from_secs(10);

/// What every connection shares.
struct Shared {
    paths: PinPaths,
    owners: Owners,
    exit_code: fn(Verdict) -> u8,
    journal: Option<PathBuf>,
}

/// The listening socket; its file is removed when this is dropped.
pub struct Listening {
    path: PathBuf,
}

impl Listening {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket and serves it on the current runtime. None when it is off.
pub fn listen(
    paths: &PinPaths,
    opts: &SocketOptions,
    exit_code: fn(Verdict) -> u8,
    journal: Option<&Path>,
) -> Result<Option<Listening>> {
    if opts.off {
        return Ok(None);
    }
    let path = opts.path.clone().unwrap_or_else(|| protocol::socket_path(paths));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    if path.exists() {
        // A socket nobody answers on is a leftover of a daemon that died.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(Error::AlreadyRunning(format!(
                "another bpfkill daemon listens on {}",
                path.display()
            )));
        }
        std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    let listening = Listening { path: path.clone() };
    let mode = match &opts.group {
        Some(group) => {
            let gid = group_id(group)?;
            rustix::fs::chown(&path, None, Some(rustix::fs::Gid::from_raw(gid)))
                .map_err(|e| Error::io(format!("chown {}", path.display()), e.into()))?;
            0o660
        }
        None => 0o666,
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    let shared = Arc::new(Shared {
        paths: paths.clone(),
        owners: Owners::default(),
        exit_code,
        journal: journal.map(Path::to_path_buf),
    });
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, Arc::clone(&shared)));
                }
                Err(e) => tracing::warn!("socket: accept: {e}"),
            }
        }
    });
    Ok(Some(listening))
}

/// The numeric id of group `name` (or a number).
fn group_id(name: &str) -> Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let c = std::ffi::CString::new(name).map_err(|_| Error::Usage(format!("bad group name {name:?}")))?;
    // SAFETY: getgrnam reads the group database; called once at start-up, before any other
    // thread could call it, and the pointer is read at once.
    let entry = unsafe { libc::getgrnam(c.as_ptr()) };
    if entry.is_null() {
        return Err(Error::Usage(format!("no such group: {name}")));
    }
    // SAFETY: a non-null entry from getgrnam.
    Ok(unsafe { (*entry).gr_gid })
}

/// One connection: requests in order until the client closes it.
async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let caller = match stream.peer_cred() {
        Ok(cred) => match (cred.uid(), cred.pid()) {
            (0, _) => Err(Error::Forbidden(
                "root runs bpfkill directly, not through the socket".into(),
            )),
            (uid, Some(pid)) if pid > 0 => {
                tokio::task::spawn_blocking(move || Caller::verify(uid, pid as u32))
                    .await
                    .unwrap_or_else(|e| Err(Error::Remote(format!("checking the caller failed: {e}"))))
            }
            _ => Err(Error::Forbidden("the caller's PID is unknown".into())),
        },
        Err(e) => Err(Error::io("read the caller's credentials", e)),
    };
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    // The job this connection started and has not ended.
    let mut job: Option<String> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let resp = match (&caller, serde_json::from_str::<Request>(&line)) {
            (Err(e), _) => owned::refusal(e),
            (_, Err(e)) => owned::refusal(&Error::Usage(format!("bad request: {e}"))),
            (Ok(c), Ok(req)) => {
                let (c, shared2, current) = (*c, Arc::clone(&shared), job.clone());
                match tokio::task::spawn_blocking(move || handle(&shared2, &c, current, req)).await {
                    Ok((resp, next)) => {
                        job = next;
                        resp
                    }
                    Err(e) => owned::refusal(&Error::Remote(format!("the request failed: {e}"))),
                }
            }
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
        out.push('\n');
        if writer.write_all(out.as_bytes()).await.is_err() {
            break;
        }
    }
    if let (Ok(c), Some(name)) = (caller, job) {
        tracing::warn!(
            "socket: the client of job {name} (PID {}) went away: stopping the job",
            c.pid
        );
        let _ = tokio::task::spawn_blocking(move || {
            let served = served(&shared);
            if let Err(e) = served.end_job(&c, &name, Some((Signal::TERM, ABANDONED_GRACE))) {
                tracing::warn!("socket: stopping job {name}: {e}");
            }
        })
        .await;
    }
}

fn served(shared: &Shared) -> Served<'_> {
    Served {
        paths: &shared.paths,
        owners: &shared.owners,
        exit_code: shared.exit_code,
        journal: shared.journal.as_deref(),
    }
}

/// One request; returns the answer and the connection's job after it.
fn handle(shared: &Shared, caller: &Caller, job: Option<String>, req: Request) -> (Response, Option<String>) {
    let served = served(shared);
    let signal =
        |n: i32| Signal::from_number(n).ok_or_else(|| Error::Usage(format!("bad signal number {n}")));
    let no_job = || Error::Usage("no job started on this connection".into());
    let result = match (req, &job) {
        (Request::StartJob { .. }, Some(_)) => Err(Error::Usage("one job per connection".into())),
        (Request::StartJob { service }, None) => served.start_job(caller, service).map(|r| {
            let started = r.service.clone();
            return_with(r, started)
        }),
        (Request::JobStarted { pid }, Some(name)) => served
            .job_started(caller, name, pid)
            .map(|r| return_with(r, job.clone())),
        (
            Request::EndJob {
                signal: sig,
                grace_ms,
            },
            Some(name),
        ) => sig
            .map(signal)
            .transpose()
            .and_then(|s| served.end_job(caller, name, s.map(|s| (s, Duration::from_millis(grace_ms)))))
            .map(|r| return_with(r, None)),
        (Request::JobStarted { .. } | Request::EndJob { .. }, None) => Err(no_job()),
        (Request::Log { service, since, json }, _) => served
            .log(caller, service.as_deref(), since.as_deref(), json)
            .map(|r| return_with(r, job.clone())),
        (Request::Ps { service, json }, _) => served
            .ps(caller, service.as_deref(), json)
            .map(|r| return_with(r, job.clone())),
        (
            Request::Kill {
                service,
                signal: sig,
                timeout_ms,
                json,
            },
            _,
        ) => signal(sig)
            .and_then(|s| {
                let schedule = match timeout_ms {
                    Some(t) => Schedule::timeout(s, Duration::from_millis(t)),
                    None => Schedule::once(s),
                };
                served.signal(caller, &service, schedule, json)
            })
            .map(|r| return_with(r, job.clone())),
    };
    match result {
        Ok(pair) => pair,
        Err(e) => (owned::refusal(&e), job),
    }
}

fn return_with(r: Response, job: Option<String>) -> (Response, Option<String>) {
    (r, job)
}
