//! What the daemon does for an ordinary user over its socket ([`super::protocol`]): start a
//! job owned by that user, end it, list and signal that user's services, and within them only
//! that user's processes. Each call opens the pinned maps itself, so a long kill never holds
//! up the daemon's event loop.

use std::{collections::HashMap, path::Path, sync::Mutex, time::Duration};

use bpfkill_common::{tag_flags, Tag};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::protocol::{Refusal, Response};
use crate::{
    error::{Error, Result},
    forensics::{
        journal, log,
        ps::{self, render},
    },
    kill::{
        self,
        candidates::Whom,
        report::{KillReport, Verdict},
        resolve::{Discovery, Target},
        schedule::Schedule,
        KillRequest, OnBehalf,
    },
    lineage::registry,
    sys::{clock, identity, procs, signal::Signal},
    tracking::{PinPaths, Tracking},
};

/// The process at the other end of a connection, as the kernel reported it (`SO_PEERCRED`)
/// and checked through a pidfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Its user.
    pub uid: u32,
    /// Its PID.
    pub pid: u32,
    /// Its start time in /proc ticks (with `pid`, its identity).
    pub start_ticks: u64,
}

impl Caller {
    /// Checks the credentials the socket reported: a pidfd of `pid` is opened (it pins the
    /// process), and the process it names must belong to `uid`, so a PID that was reused
    /// since the connection names nobody else's process.
    pub fn verify(uid: u32, pid: u32) -> Result<Self> {
        let p = Pid::from_raw(pid as i32).ok_or(Error::NoSuchProcess(pid))?;
        let _pinned = pidfd_open(p, PidfdFlags::empty())
            .map_err(|e| Error::io(format!("pidfd_open({pid})"), e.into()))?;
        let start_ticks = procs::start_ticks(pid).ok_or(Error::NoSuchProcess(pid))?;
        match procs::uids(pid) {
            Some((ruid, _)) if ruid == uid => Ok(Self {
                uid,
                pid,
                start_ticks,
            }),
            _ => Err(Error::Forbidden(format!(
                "PID {pid} is not the process that connected"
            ))),
        }
    }
}

/// How long the daemon waits for a job's untagged command to finish its exit.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// True when `pid` (a child of the caller, which has not reaped it) has exited, or finishes
/// its exit within [`EXIT_WAIT`]: a command whose tag is gone because it began its exit.
/// False for one still running after that (its tag went when it left the service through a
/// boundary).
fn exited_child(pid: u32) -> bool {
    // A PID no pidfd opens for is not the caller's unreaped child: refused.
    kill::wait::Waitee::open(pid).is_some_and(|w| kill::wait::wait_all(vec![w], Some(EXIT_WAIT)).is_empty())
}

/// Which user owns which service (the services jobs created through the socket) since when
/// (wall-clock ns: the user sees no history of an earlier service of the same name), in the
/// daemon's memory.
#[derive(Debug, Default)]
pub struct Owners(Mutex<HashMap<String, (u32, u64)>>);

impl Owners {
    fn owner(&self, service: &str) -> Option<u32> {
        self.0.lock().ok()?.get(service).map(|(uid, _)| *uid)
    }

    fn since(&self, service: &str) -> u64 {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(service).map(|(_, since)| *since))
            .unwrap_or(u64::MAX)
    }

    fn set(&self, service: &str, uid: u32) {
        if let Ok(mut m) = self.0.lock() {
            // A job its owner restarts under the same name keeps its history; a name that
            // passes to another user starts afresh.
            let now = clock::epoch_ns(std::time::SystemTime::now());
            let entry = m.entry(service.to_string()).or_insert((uid, now));
            if entry.0 != uid {
                *entry = (uid, now);
            }
        }
    }

    fn remove(&self, service: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(service);
        }
    }

    fn owned_by(&self, uid: u32) -> Vec<String> {
        self.0
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, (u, _))| *u == uid)
                    .map(|(s, _)| s.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks that `uid` owns `service`: [`Error::Forbidden`] otherwise (whether another user
    /// owns it or nobody does, say a root service).
    fn check(&self, service: &str, uid: u32) -> Result<()> {
        match self.owner(service) {
            Some(u) if u == uid => Ok(()),
            _ => Err(Error::Forbidden(format!(
                "service {service} is not yours: you can list and signal only the jobs you started"
            ))),
        }
    }
}

/// How the daemon serves a user: its pins, the owners, and the CLI's exit code of a kill
/// verdict (for JSON reports).
pub struct Served<'a> {
    /// The pin tree.
    pub paths: &'a PinPaths,
    /// Who owns which service.
    pub owners: &'a Owners,
    /// The exit code a kill verdict gives.
    pub exit_code: fn(Verdict) -> u8,
    /// The daemon's journal directory (None: it writes none).
    pub journal: Option<&'a Path>,
}

impl Served<'_> {
    /// Starts a job for `caller`: a new service it owns, the caller tagged as its starter so
    /// the kernel tags the command it spawns next.
    pub fn start_job(&self, caller: &Caller, service: Option<String>) -> Result<Response> {
        let name = match service {
            Some(n) => n,
            None => format!("job-{}-{}-{}", caller.uid, caller.pid, caller.start_ticks),
        };
        registry::validate_name(&name)?;
        let mut tracking = Tracking::open(self.paths)?;
        if let Ok(existing) = registry::resolve(&tracking, &name) {
            self.owners.check(&name, caller.uid)?;
            let live = registry::live_processes(&tracking, existing.id);
            if live > 0 {
                return Err(Error::Usage(format!(
                    "service {name} already has {live} live process(es): a job needs a service of its own"
                )));
            }
        }
        let start_ns = clock::ticks_to_ns(caller.start_ticks);
        let (svc, _) = registry::register(&mut tracking, &name, caller.pid, start_ns)?;
        self.owners.set(&name, caller.uid);
        let tag = Tag {
            service_id: svc.id,
            flags: tag_flags::START_FROM_PROC,
            start_ns,
            comm: procs::comm(caller.pid).unwrap_or_default(),
            ..Tag::default()
        };
        // The caller still is who connected (its start time unchanged) when it is tagged.
        if procs::start_ticks(caller.pid) != Some(caller.start_ticks) {
            return Err(Error::NoSuchProcess(caller.pid));
        }
        tracking.set_tag(caller.pid, &tag)?;
        Ok(Response {
            service: Some(name),
            ..Response::default()
        })
    }

    /// The job's command runs as `pid`: it must be the caller's child, the caller's user's,
    /// and tagged in the job's service; it becomes the main process, and the caller's own
    /// tag goes.
    pub fn job_started(&self, caller: &Caller, service: &str, pid: u32) -> Result<Response> {
        self.owners.check(service, caller.uid)?;
        let mut tracking = Tracking::open(self.paths)?;
        let svc = registry::resolve(&tracking, service)?;
        let stat = procs::stat(pid).ok_or(Error::NoSuchProcess(pid))?;
        let tag = tracking.tag(pid).filter(|t| {
            t.service_id == svc.id
                && t.creator_pid == caller.pid
                && identity::matches(t.start_ns, stat.starttime)
        });
        let owned = procs::uids(pid).is_some_and(|(ruid, _)| ruid == caller.uid);
        let child = stat.ppid as u32 == caller.pid && owned;
        let start_ns = clock::ticks_to_ns(stat.starttime);
        match tag {
            Some(tag) if child => registry::hand_main_to(&mut tracking, service, pid, start_ns, tag)?,
            // A command that exits at once (one that only starts a daemon) can be gone from
            // the tag map before this request comes: the kernel removes a tag at the start of
            // the exit. The caller's own child, untagged and exited, is made the main process
            // (a dead one, never signalled): the job then ends as it should, and the caller,
            // which would stay the main process, is never the target of its end.
            None if child && exited_child(pid) => {
                registry::register(&mut tracking, service, pid, start_ns).map(|_| ())?
            }
            _ => {
                return Err(Error::Forbidden(format!(
                    "PID {pid} is not the command your job just started"
                )))
            }
        }
        if tracking.tag(caller.pid).is_some_and(|t| t.service_id == svc.id) {
            tracking.remove_tag(caller.pid);
        }
        Ok(Response::default())
    }

    /// Ends a job: stops what is left of it (`stop`: the signal and the wait before SIGKILL),
    /// or with `stop` None leaves it running; reports what is left. A job with nothing left is
    /// forgotten.
    pub fn end_job(
        &self,
        caller: &Caller,
        service: &str,
        stop: Option<(Signal, Duration)>,
    ) -> Result<Response> {
        self.owners.check(service, caller.uid)?;
        let mut tracking = Tracking::open(self.paths)?;
        // The caller's own tag, if the command never started.
        if let Ok(svc) = registry::resolve(&tracking, service) {
            if tracking.tag(caller.pid).is_some_and(|t| t.service_id == svc.id) {
                tracking.remove_tag(caller.pid);
            }
        }
        let mut resp = Response::default();
        if let Some((signal, grace)) = stop {
            if let Some(report) =
                self.kill(&mut tracking, service, caller, Schedule::timeout(signal, grace))?
            {
                resp.signalled = report.signalled() + report.kernel_kills as usize;
                resp.survivors = report.survivors();
            }
        }
        let left = ps::list(
            &tracking,
            self.paths,
            &ps::Query {
                service: Some(service),
                escaped_only: false,
            },
        )?;
        resp.leftovers = left.len();
        if left.is_empty() {
            let _ = registry::forget(&mut tracking, service);
            self.owners.remove(service);
        } else {
            let mut table = Vec::new();
            render::write_table(&left, false, &mut table)
                .map_err(|e| Error::io("render the leftovers", e))?;
            resp.output = String::from_utf8_lossy(&table).into_owned();
        }
        Ok(resp)
    }

    /// `ps` of the caller's services (or one of them): only the caller's processes.
    pub fn ps(&self, caller: &Caller, service: Option<&str>, json: bool) -> Result<Response> {
        let services = match service {
            Some(s) => {
                self.owners.check(s, caller.uid)?;
                vec![s.to_string()]
            }
            None => self.owners.owned_by(caller.uid),
        };
        let tracking = Tracking::open(self.paths)?;
        let mut entries = Vec::new();
        for s in &services {
            let query = ps::Query {
                service: Some(s),
                escaped_only: false,
            };
            entries.extend(
                ps::list(&tracking, self.paths, &query)?
                    .into_iter()
                    .filter(|e| e.uid == Some(caller.uid)),
            );
        }
        let mut out = Vec::new();
        if json {
            render::write_json(&entries, false, &mut out)
        } else {
            render::write_table(&entries, false, &mut out)
        }
        .map_err(|e| Error::io("render the listing", e))?;
        Ok(Response {
            output: String::from_utf8_lossy(&out).into_owned(),
            ..Response::default()
        })
    }

    /// The journal's history of the caller's services (or one of them), each since the caller
    /// owns it.
    pub fn log(
        &self,
        caller: &Caller,
        service: Option<&str>,
        since: Option<&str>,
        json: bool,
    ) -> Result<Response> {
        let Some(dir) = self.journal else {
            return Err(Error::NoInput("the daemon writes no journal".into()));
        };
        let services = match service {
            Some(s) => {
                self.owners.check(s, caller.uid)?;
                vec![s.to_string()]
            }
            None => self.owners.owned_by(caller.uid),
        };
        let asked = since.map(log::parse_since).transpose()?.unwrap_or(0);
        let format = if json {
            log::Format::Json
        } else {
            log::Format::Human
        };
        let mut out = Vec::new();
        for s in services {
            let filter = journal::Filter {
                since_ns: Some(asked.max(self.owners.since(&s))),
                service: Some(s),
                pid: None,
            };
            log::show(dir, &filter, format, &mut out)?;
        }
        Ok(Response {
            output: String::from_utf8_lossy(&out).into_owned(),
            ..Response::default()
        })
    }

    /// Signals the caller's processes of one of its services.
    pub fn kill(
        &self,
        tracking: &mut Tracking,
        service: &str,
        caller: &Caller,
        schedule: Schedule,
    ) -> Result<Option<KillReport>> {
        let Ok(svc) = registry::resolve(tracking, service) else {
            return Ok(None);
        };
        if registry::live_processes(tracking, svc.id) == 0 {
            return Ok(None);
        }
        let request = KillRequest {
            target: Target::Service(service.to_string()),
            whom: Whom::All,
            cgroup: None,
            schedule,
            dry_run: false,
            discovery: Discovery::default(),
            for_user: Some(OnBehalf {
                uid: caller.uid,
                caller: caller.pid,
            }),
            evidence_first: false,
        };
        kill::kill(tracking, &request).map(Some)
    }

    /// `bpfkill -s SIGNAL --service NAME` for the caller.
    pub fn signal(&self, caller: &Caller, service: &str, schedule: Schedule, json: bool) -> Result<Response> {
        self.owners.check(service, caller.uid)?;
        let mut tracking = Tracking::open(self.paths)?;
        let Some(report) = self.kill(&mut tracking, service, caller, schedule)? else {
            return Ok(Response {
                refusal: Some(Refusal::NothingMatched),
                error: Some(format!("service {service} has no live process")),
                ..Response::default()
            });
        };
        let verdict = report.verdict();
        let mut out = Vec::new();
        if json {
            report.write_json((self.exit_code)(verdict), &mut out)
        } else {
            report.write_human(&mut out)
        }
        .map_err(|e| Error::io("render the report", e))?;
        Ok(Response {
            output: String::from_utf8_lossy(&out).into_owned(),
            verdict: Some(verdict),
            signalled: report.signalled(),
            survivors: report.survivors(),
            ..Response::default()
        })
    }
}

/// The answer to a failed call.
pub fn refusal(e: &Error) -> Response {
    let kind = match e {
        Error::Forbidden(_) | Error::Permission(_) => Refusal::Forbidden,
        Error::Usage(_) | Error::Refused(_) => Refusal::Usage,
        Error::UnknownService(_)
        | Error::ServiceNotFound { .. }
        | Error::NoSuchProcess(_)
        | Error::NotTracked(_) => Refusal::NothingMatched,
        Error::NotLoaded(_) => Refusal::NotLoaded,
        _ => Refusal::Failed,
    };
    Response {
        refusal: Some(kind),
        error: Some(e.to_string()),
        ..Response::default()
    }
}
