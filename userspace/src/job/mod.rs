//! Job mode (`bpfkill run --kill-on-exit | --keep-running | --time-limit`): run a command
//! under tracking as a service of its own, stay its parent, and when it exits (or its time
//! runs out) take down everything it spawned, however it left: double forks, new sessions,
//! `env -i`, renames and reparenting do not shed a tag. The exit status is the command's
//! (128+N when signal N killed it; 124 when the time limit stopped it, as `timeout(1)`).
//!
//! The start: bpfkill registers the service with itself as its main process and tags itself,
//! so the kernel tags the command at fork, before it runs an instruction; then the command
//! becomes the main process and bpfkill's own tag is removed. The end: the service is killed
//! through the ordinary kill (identity-checked, doom mode for the SIGKILL) and forgotten, so
//! a runner doing thousands of jobs a day does not fill the registry; its history stays in
//! the journal.

pub mod owned;
pub mod protocol;
mod signals;

use std::{
    ffi::OsString,
    os::{
        fd::AsRawFd,
        unix::process::{CommandExt, ExitStatusExt},
    },
    process::{Child, Command, ExitStatus},
    time::Duration,
};

use bpfkill_common::{tag_flags, Tag};
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::io::{unix::AsyncFd, Interest};

use self::protocol::{Client, Request, Response};

use crate::{
    error::{Error, Result},
    forensics::ps::{self, render, PsEntry},
    kill::{
        self,
        candidates::Whom,
        report::KillReport,
        resolve::{Discovery, Target},
        schedule::Schedule,
        KillRequest,
    },
    lineage::registry,
    sys::{cgroup::JobCgroup, clock, procs, signal::Signal},
    tracking::{PinPaths, Tracking},
};

/// The exit status of a job stopped by its time limit (as `timeout(1)`).
pub const TIMED_OUT: u8 = 124;

/// How a job runs.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Its service name (a unique `job-PID-TICKS` when None).
    pub service: Option<String>,
    /// When the command exits, signal what it left behind (then SIGKILL after `grace`).
    pub kill_on_exit: bool,
    /// The signal that stops the tree (then SIGKILL after `grace`).
    pub signal: Signal,
    /// The wait between `signal` and SIGKILL.
    pub grace: Duration,
    /// Stop the whole tree after this long.
    pub time_limit: Option<Duration>,
    /// Refuse to run untracked (tracking not loaded, or not allowed).
    pub require_tracking: bool,
}

/// What the cleanup did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Processes signalled (by bpfkill, or killed by the kernel during a SIGKILL).
    pub signalled: usize,
    /// Processes alive after the SIGKILL.
    pub survivors: usize,
}

impl From<&KillReport> for Cleanup {
    fn from(r: &KillReport) -> Self {
        Self {
            signalled: r.signalled() + r.kernel_kills as usize,
            survivors: r.survivors(),
        }
    }
}

/// What became of a job.
#[derive(Debug)]
pub struct JobOutcome {
    /// Its service, when it ran tracked.
    pub service: Option<String>,
    /// Tracked through the daemon's socket (an ordinary user's job).
    pub through_daemon: bool,
    /// The command's own status.
    pub status: ExitStatus,
    /// The time limit stopped it.
    pub timed_out: bool,
    /// The stop of what it left (or of the whole tree, at the time limit).
    pub cleanup: Option<Cleanup>,
    /// Processes still running when bpfkill exits (`--keep-running`, or a failed cleanup):
    /// the service stays registered with them.
    pub leftovers: usize,
    /// Them, as a `ps` table.
    pub leftovers_table: String,
}

impl JobOutcome {
    /// bpfkill's exit status: 124 at the time limit, else the command's (128+N for a signal).
    pub fn exit_code(&self) -> u8 {
        if self.timed_out {
            return TIMED_OUT;
        }
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
            (None, None) => 1,
        }
    }
}

/// Where a job is tracked: in the pinned maps (root), through the daemon (an ordinary
/// user), or nowhere (nothing will be cleaned up).
enum Backend {
    /// The maps, and the job's cgroup once it has one.
    Local(Box<Tracking>, Option<JobCgroup>),
    Daemon(Client),
    Untracked,
}

/// What is left of a job at its end.
struct End {
    cleanup: Option<Cleanup>,
    leftovers: usize,
    table: String,
}

/// Runs `argv` as a job. Returns when the command has exited and (in kill-on-exit mode,
/// or at the time limit) its tree is gone.
pub fn run(paths: &PinPaths, argv: &[OsString], opts: &JobOptions) -> Result<JobOutcome> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Usage("run needs a command after `--`".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    let mut backend = match Tracking::open(paths) {
        Ok(t) => Backend::Local(Box::new(t), None),
        Err(Error::Permission(_)) => match Client::connect(paths)? {
            Some(c) => Backend::Daemon(c),
            None => untracked(
                opts,
                Error::Forbidden("no bpfkill daemon serves ordinary users here".into()),
            )?,
        },
        Err(e) => untracked(opts, e)?,
    };
    // The handlers first: a signal that arrives once the command runs is passed on, never
    // the end of bpfkill.
    let supervisor = Supervisor::new()?;
    let (child, name) = backend.start(opts, &mut cmd, program)?;
    if let Some(n) = &name {
        tracing::info!("job {n}: main process {}", child.id());
    }
    let pid = child.id();
    let mut ended: Option<End> = None;
    let (status, timed_out) = supervisor.wait(child, opts, |why| {
        match (&mut backend, &name) {
            (Backend::Local(t, cg), Some(n)) => {
                let cleanup = stop_tree(t, n, cg.as_ref(), opts, why)?
                    .as_ref()
                    .map(Cleanup::from);
                ended = Some(End {
                    cleanup,
                    leftovers: 0,
                    table: String::new(),
                });
            }
            (Backend::Daemon(c), Some(n)) => ended = Some(c.end(n, Some((opts.signal, opts.grace)))?),
            // Untracked, the time limit can stop only the command itself.
            _ => signals::send(pid, opts.signal),
        }
        Ok(())
    })?;
    let end = match (&mut backend, &name) {
        (Backend::Local(t, cg), Some(n)) => {
            let stop = opts.kill_on_exit && !timed_out;
            let mut end = local_end(t, paths, n, cg.as_ref(), opts, stop)?;
            if let Some(e) = ended.take() {
                end.cleanup = e.cleanup;
            }
            Some(end)
        }
        (Backend::Daemon(c), Some(n)) => match ended.take() {
            Some(e) => Some(e),
            None => match c.end(n, opts.kill_on_exit.then_some((opts.signal, opts.grace))) {
                Ok(e) => Some(e),
                // The command's status still stands.
                Err(e) => {
                    eprintln!("bpfkill: warning: job {n}: {e}: what it left behind was not cleaned up");
                    None
                }
            },
        },
        _ => None,
    };
    let end = end.unwrap_or(End {
        cleanup: None,
        leftovers: 0,
        table: String::new(),
    });
    Ok(JobOutcome {
        through_daemon: matches!(backend, Backend::Daemon(_)),
        service: name,
        status,
        timed_out,
        cleanup: end.cleanup,
        leftovers: end.leftovers,
        leftovers_table: end.table,
    })
}

/// No tracking (`why`): that error with `--require-tracking`, else a warning.
fn untracked(opts: &JobOptions, why: Error) -> Result<Backend> {
    if opts.require_tracking {
        return Err(why);
    }
    eprintln!("bpfkill: warning: {why}: the job runs untracked, nothing it leaves behind will be cleaned up");
    Ok(Backend::Untracked)
}

impl Backend {
    /// Starts the command tagged (when tracked); returns it and its service.
    fn start(
        &mut self,
        opts: &JobOptions,
        cmd: &mut Command,
        program: &OsString,
    ) -> Result<(Child, Option<String>)> {
        match self {
            Backend::Local(t, cgroup) => {
                let name = match &opts.service {
                    Some(n) => n.clone(),
                    None => generated_name()?,
                };
                registry::validate_name(&name)?;
                *cgroup = JobCgroup::create(&name);
                if let Some(cg) = cgroup.as_ref() {
                    let procs = cg.procs().as_raw_fd();
                    // SAFETY: between fork and exec the child makes one write(2) (async-signal
                    // safe) to an fd opened before the fork; a failure leaves it where it was.
                    unsafe {
                        cmd.pre_exec(move || {
                            libc::write(procs, b"0".as_ptr().cast(), 1);
                            Ok(())
                        });
                    }
                }
                Ok((start(t, &name, cmd, program)?, Some(name)))
            }
            Backend::Daemon(c) => {
                let name = c
                    .call(&Request::StartJob {
                        service: opts.service.clone(),
                    })?
                    .into_result()?
                    .service
                    .ok_or_else(|| Error::Remote("no service in the answer to start-job".into()))?;
                let child = match spawn(cmd, program) {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = c.end(&name, None);
                        return Err(e);
                    }
                };
                if let Err(e) = c
                    .call(&Request::JobStarted { pid: child.id() })
                    .and_then(Response::into_result)
                {
                    tracing::warn!("job {name}: {e}: what the command spawns may escape the cleanup");
                }
                Ok((child, Some(name)))
            }
            Backend::Untracked => Ok((spawn(cmd, program)?, None)),
        }
    }
}

impl Client {
    /// Ends the job through the daemon.
    fn end(&mut self, _name: &str, stop: Option<(Signal, Duration)>) -> Result<End> {
        let resp = self
            .call(&Request::EndJob {
                signal: stop.map(|(s, _)| s.number()),
                grace_ms: stop.map_or(0, |(_, g)| g.as_millis() as u64),
            })?
            .into_result()?;
        Ok(End {
            cleanup: stop.map(|_| Cleanup {
                signalled: resp.signalled,
                survivors: resp.survivors,
            }),
            leftovers: resp.leftovers,
            table: resp.output,
        })
    }
}

/// The end of a root job: the stop (`opts.signal`, SIGKILL after `opts.grace`) when `stop`, what is left, the service forgotten when
/// nothing is.
fn local_end(
    tracking: &mut Tracking,
    paths: &PinPaths,
    name: &str,
    cgroup: Option<&JobCgroup>,
    opts: &JobOptions,
    stop: bool,
) -> Result<End> {
    let cleanup = if stop {
        stop_tree(tracking, name, cgroup, opts, "the command exited")?
            .as_ref()
            .map(Cleanup::from)
    } else {
        None
    };
    let left = leftovers(tracking, paths, name)?;
    let mut table = Vec::new();
    if left.is_empty() {
        // Nothing left: the service goes (its history is in the journal).
        let _ = registry::forget(tracking, name);
    } else {
        render::write_table(&left, false, &mut table).map_err(|e| Error::io("render the leftovers", e))?;
    }
    Ok(End {
        cleanup,
        leftovers: left.len(),
        table: String::from_utf8_lossy(&table).into_owned(),
    })
}

/// A unique service name for a job: `job-PID-TICKS` (bpfkill's PID and start time).
fn generated_name() -> Result<String> {
    let me = std::process::id();
    let ticks = procs::start_ticks(me)
        .ok_or_else(|| Error::io("read /proc/self/stat", std::io::ErrorKind::NotFound.into()))?;
    Ok(format!("job-{me}-{ticks}"))
}

/// Registers the job's service, starts the command tagged from its first instruction, and
/// makes it the service's main process.
fn start(tracking: &mut Tracking, name: &str, cmd: &mut Command, program: &OsString) -> Result<Child> {
    registry::validate_name(name)?;
    if let Ok(existing) = registry::resolve(tracking, name) {
        let live = registry::live_processes(tracking, existing.id);
        if live > 0 {
            return Err(Error::Usage(format!(
                "service {name} already has {live} live process(es): a job needs a service of its own (omit --service for a generated name)"
            )));
        }
    }
    let me = std::process::id();
    let my_start = clock::ticks_to_ns(
        procs::start_ticks(me)
            .ok_or_else(|| Error::io("read /proc/self/stat", std::io::ErrorKind::NotFound.into()))?,
    );
    let (svc, _) = registry::register(tracking, name, me, my_start)?;
    // bpfkill is the service for the instant of the fork (spared: never killed in the
    // kernel), so the kernel tags the command as it is created.
    let own = Tag {
        service_id: svc.id,
        flags: tag_flags::START_FROM_PROC | tag_flags::SPARED,
        start_ns: my_start,
        comm: procs::comm(me).unwrap_or_default(),
        ..Tag::default()
    };
    tracking.set_tag(me, &own)?;
    let spawned = spawn(cmd, program);
    tracking.remove_tag(me);
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = registry::forget(tracking, name);
            return Err(e);
        }
    };
    let pid = child.id();
    match (tracking.tag(pid), procs::start_ticks(pid)) {
        (Some(tag), Some(ticks)) => {
            registry::hand_main_to(tracking, name, pid, clock::ticks_to_ns(ticks), tag)?;
        }
        (None, _) => tracing::warn!(
            "job {name}: the kernel did not tag the command (is the tag map full?): what it spawns may escape the cleanup"
        ),
        // It is gone already: its exit status tells.
        (Some(_), None) => {}
    }
    Ok(child)
}

/// Spawns the command with bpfkill's standard streams and terminal.
fn spawn(cmd: &mut Command, program: &OsString) -> Result<Child> {
    cmd.spawn().map_err(|source| Error::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}

/// The runtime a job waits in, with bpfkill's signal handlers installed.
struct Supervisor {
    runtime: tokio::runtime::Runtime,
    forward: signals::Forwarder,
}

impl Supervisor {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the async runtime", e))?;
        let forward = {
            let _entered = runtime.enter();
            signals::Forwarder::install()?
        };
        Ok(Self { runtime, forward })
    }

    /// Waits for the command, passing on the signals bpfkill receives; at the time limit
    /// calls `stop` (which takes the tree down) and keeps waiting. Returns its status and
    /// whether the time limit hit.
    fn wait(
        mut self,
        mut child: Child,
        opts: &JobOptions,
        mut stop: impl FnMut(&str) -> Result<()>,
    ) -> Result<(ExitStatus, bool)> {
        let pid = Pid::from_raw(child.id() as i32).ok_or(Error::NoSuchProcess(child.id()))?;
        let pidfd = pidfd_open(pid, PidfdFlags::empty())
            .map_err(|e| Error::io(format!("pidfd_open({pid})"), e.into()))?;
        let forward = &mut self.forward;
        let timed_out = self.runtime.block_on(async {
            // SAFETY: the pidfd is owned here and outlives the registration.
            let exited = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
                .map_err(|e| Error::io("watch the command", e.into()))?;
            let limit = async {
                match opts.time_limit {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(limit);
            let mut timed_out = false;
            loop {
                tokio::select! {
                    r = exited.readable() => {
                        // The command has exited: readiness stays (it is reaped next).
                        let _exited = r.map_err(|e| Error::io("wait for the command", e))?;
                        return Ok::<bool, Error>(timed_out);
                    }
                    () = &mut limit, if !timed_out => {
                        timed_out = true;
                        eprintln!(
                            "bpfkill: time limit of {} reached: stopping the job",
                            humantime::format_duration(opts.time_limit.unwrap_or_default())
                        );
                        stop("the time limit was reached")?;
                    }
                    sig = forward.next() => forward.forward(sig, exited.get_ref()),
                }
            }
        })?;
        let status = child.wait().map_err(|e| Error::io("reap the command", e))?;
        Ok((status, timed_out))
    }
}

/// Signals every live process of the service (`opts.signal`, SIGKILL after the grace).
/// None when nothing was left.
fn stop_tree(
    tracking: &mut Tracking,
    name: &str,
    cgroup: Option<&JobCgroup>,
    opts: &JobOptions,
    why: &str,
) -> Result<Option<KillReport>> {
    let Ok(svc) = registry::resolve(tracking, name) else {
        return Ok(None);
    };
    let live = registry::live_processes(tracking, svc.id);
    if live == 0 {
        return Ok(None);
    }
    tracing::info!("job {name}: {why}; {live} process(es) to stop");
    let request = KillRequest {
        target: Target::Service(name.to_string()),
        whom: Whom::All,
        // Evidence beside the tags: the job's own cgroup, which only it joined.
        cgroup: cgroup.map(|c| c.dir().to_path_buf()),
        schedule: Schedule::timeout(opts.signal, opts.grace),
        dry_run: false,
        discovery: Discovery::default(),
        for_user: None,
        evidence_first: false,
    };
    kill::kill(tracking, &request).map(Some)
}

/// The processes of the service still running.
fn leftovers(tracking: &Tracking, paths: &PinPaths, name: &str) -> Result<Vec<PsEntry>> {
    ps::list(
        tracking,
        paths,
        &ps::Query {
            service: Some(name),
            escaped_only: false,
        },
    )
}
