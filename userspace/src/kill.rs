//! The kill, stage by stage: resolve the target → collect candidates (tags ∪ cgroup ∪ /proc,
//! with evidence) → verify each one's identity (pidfd + start time) → signal → wait/escalate
//! along the schedule → report.
//!
//! A SIGKILL of a whole service runs in doom mode: every verified target is marked doomed in
//! its tag and the `sys_exit` doom program is attached, so a target that forks dies in the
//! kernel and its new child dies before running any user code; collection repeats until no
//! target is left. Other signals get one pass plus re-scans for children forked during it.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bpfkill_common::stat;

use crate::{
    candidates::{self, Candidate, Selection, Whom},
    cgroup::{self, Dedicated},
    error::{Error, Result},
    guard::Guard,
    identity::{self, Identity},
    report::{KillReport, Outcome, ProcessResult},
    schedule::{Schedule, Step},
    service::{self, Resolved, Target},
    signal::Signal,
    tracking::Tracking,
    wait::{wait_all, Waitee},
};

/// What to kill and how.
#[derive(Debug, Clone)]
pub struct KillRequest {
    /// The service or process.
    pub target: Target,
    /// Which of its processes.
    pub whom: Whom,
    /// A cgroup dedicated to the service (checked: never a shared or root cgroup).
    pub cgroup: Option<PathBuf>,
    /// Signals and waits.
    pub schedule: Schedule,
    /// Report what would be signalled, signal nothing.
    pub dry_run: bool,
}

/// Passes of a non-doom send before giving up on a service that forks faster than it is
/// signalled (each pass handles only processes not seen before).
const MAX_PASSES: usize = 64;
/// How long doom mode keeps collecting and killing before it reports what is left.
const DOOM_LIMIT: Duration = Duration::from_secs(10);
/// How long doom mode waits for killed targets between collections.
const DOOM_SETTLE: Duration = Duration::from_millis(20);

/// Picks the dedicated cgroup: the one given (checked), else the main process's systemd unit
/// cgroup when it has one and it passes the same checks. Never for a PID subtree.
fn dedicated_cgroup(target: &Resolved, explicit: Option<&Path>, guard: &Guard) -> Result<Option<Dedicated>> {
    let protected = guard.protected_pids();
    if let Some(dir) = explicit {
        if target.subtree {
            return Err(Error::Usage(
                "--cgroup goes with --service, not with --pid".into(),
            ));
        }
        cgroup::check_dedicated(dir, &protected)?;
        let dir =
            std::fs::canonicalize(dir).map_err(|e| Error::io(format!("cgroup {}", dir.display()), e))?;
        return Ok(Some(Dedicated {
            dir,
            source: "--cgroup",
        }));
    }
    if target.subtree {
        return Ok(None);
    }
    let Some((main, _)) = target.root else {
        return Ok(None);
    };
    Ok(cgroup::systemd_unit_cgroup(main)
        .filter(|dir| cgroup::check_dedicated(dir, &protected).is_ok())
        .map(|dir| Dedicated {
            dir,
            source: "systemd unit",
        }))
}

struct Kill<'a> {
    tracking: &'a mut Tracking,
    sel: Selection,
    guard: Guard,
    report: KillReport,
    index: HashMap<(u32, u64), usize>,
    live: Vec<Waitee>,
}

/// Runs a kill.
pub fn kill(tracking: &mut Tracking, req: &KillRequest) -> Result<KillReport> {
    // A fork bomb leaves a normal-priority process almost no CPU: a kill that may SIGKILL runs
    // at real-time priority (it blocks in poll whenever it waits).
    let _rt = req
        .schedule
        .steps
        .contains(&Step::Send(Signal::KILL))
        .then(RealTime::enter);
    let target = service::resolve_target(tracking, &req.target)?;
    let guard = Guard::new();
    let cgroup = dedicated_cgroup(&target, req.cgroup.as_deref(), &guard)?;
    if let Some(c) = &cgroup {
        tracing::info!("using {} cgroup {}", c.source, c.dir.display());
    }
    let first = req
        .schedule
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Send(sig) => Some(*sig),
            Step::Wait(_) => None,
        })
        .ok_or_else(|| Error::Usage("the schedule sends no signal".into()))?;
    let mut report = KillReport::new(&target.service.name, first);
    report.dry_run = req.dry_run;
    report.waited = req.schedule.waits() && !req.dry_run;
    let sel = Selection {
        target,
        whom: req.whom,
        cgroup,
    };
    let mut k = Kill {
        tracking,
        sel,
        guard,
        report,
        index: HashMap::new(),
        live: Vec::new(),
    };

    if req.dry_run {
        k.dry_run()?;
        return Ok(k.report);
    }
    let kernel_kills_before = k.tracking.stats()[stat::DOOM_KILLS as usize];
    for step in &req.schedule.steps {
        match *step {
            Step::Send(sig) if sig == Signal::KILL && k.sel.whom == Whom::All => k.doom_pass()?,
            Step::Send(sig) => k.send_pass(sig)?,
            Step::Wait(timeout) => {
                k.live = wait_all(std::mem::take(&mut k.live), timeout);
                if k.live.is_empty() && k.fresh_candidates()?.is_empty() {
                    break;
                }
            }
        }
    }
    if k.report.waited {
        k.finish_wait()?;
    }
    k.report.kernel_kills = k.tracking.stats()[stat::DOOM_KILLS as usize].saturating_sub(kernel_kills_before);
    Ok(k.report)
}

impl Kill<'_> {
    fn collect(&self) -> Result<Vec<Candidate>> {
        candidates::collect(self.tracking, &self.sel)
    }

    /// Candidates never seen before that are alive now.
    fn fresh_candidates(&self) -> Result<Vec<Candidate>> {
        let mut c = self.collect()?;
        c.retain(|c| {
            !self.index.contains_key(&(c.pid, c.start_ticks))
                && identity::start_ticks(c.pid) == Some(c.start_ticks)
        });
        Ok(c)
    }

    fn result_mut(&mut self, c: &Candidate) -> &mut ProcessResult {
        let key = (c.pid, c.start_ticks);
        let idx = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.report.results.push(ProcessResult::new(c));
                self.index.insert(key, self.report.results.len() - 1);
                self.report.results.len() - 1
            }
        };
        &mut self.report.results[idx]
    }

    /// Opens and checks a candidate. Returns its pidfd when it may be signalled; otherwise
    /// records why not.
    fn verify(&mut self, c: &Candidate) -> Option<std::os::fd::OwnedFd> {
        let verdict = identity::open_verified(c.pid, identity::ticks_to_ns(c.start_ticks));
        let guard_says = match &verdict {
            Ok(Identity::Alive { stat, .. }) => self.guard.check(c.pid, Some(stat)),
            _ => None,
        };
        let r = self.result_mut(c);
        match verdict {
            Ok(Identity::Gone) => {
                if r.signals.is_empty() {
                    r.outcome = Outcome::Gone;
                }
                None
            }
            Ok(Identity::Recycled { .. }) => {
                r.outcome = Outcome::Recycled;
                None
            }
            Ok(Identity::Alive { pidfd, stat }) => {
                r.comm = Some(stat.comm.clone());
                if let Some(p) = guard_says {
                    r.outcome = Outcome::Protected(p);
                    return None;
                }
                Some(pidfd)
            }
            Err(e) => {
                r.outcome = Outcome::Failed(e.to_string());
                None
            }
        }
    }

    fn send(&mut self, c: &Candidate, pidfd: std::os::fd::OwnedFd, sig: Signal) {
        let sent = sig.send(&pidfd);
        let r = self.result_mut(c);
        match sent {
            Ok(()) => {
                r.outcome = Outcome::Signalled;
                r.signals.push(sig);
                self.live.retain(|w| w.pid != c.pid);
                self.live.push(Waitee { pid: c.pid, pidfd });
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                if r.signals.is_empty() {
                    r.outcome = Outcome::Gone;
                }
            }
            Err(e) => r.outcome = Outcome::Failed(e.to_string()),
        }
    }

    fn dry_run(&mut self) -> Result<()> {
        for c in self.collect()? {
            if self.verify(&c).is_some() {
                self.result_mut(&c).outcome = Outcome::WouldSignal;
            }
        }
        Ok(())
    }

    /// One pass over the candidates, then re-scans for processes created during it.
    fn send_pass(&mut self, sig: Signal) -> Result<()> {
        let mut handled = HashSet::new();
        for _ in 0..MAX_PASSES {
            let fresh: Vec<Candidate> = self
                .collect()?
                .into_iter()
                .filter(|c| handled.insert((c.pid, c.start_ticks)))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for c in &fresh {
                if let Some(fd) = self.verify(c) {
                    self.send(c, fd, sig);
                }
            }
        }
        Ok(())
    }

    /// SIGKILL with doom mode, until no target is left (or [`DOOM_LIMIT`]).
    fn doom_pass(&mut self) -> Result<()> {
        let whole_service = !self.sel.target.subtree;
        if whole_service {
            self.doom_whole_service()?;
        }
        let result = self.doom_loop();
        if whole_service {
            self.tracking.undoom_service(self.sel.target.service.id);
        }
        result
    }

    /// Dooms every tagged process of the service at once, in the kernel, after sparing the
    /// protected ones (bpfkill and its ancestors, if they belong to it).
    fn doom_whole_service(&mut self) -> Result<()> {
        let id = self.sel.target.service.id;
        for pid in self.guard.protected_pids() {
            if let Some(tag) = self.tracking.tag(pid).filter(|t| t.service_id == id) {
                if identity::start_ticks(pid) == Some(identity::ns_to_ticks(tag.start_ns)) {
                    self.tracking.spare(pid, &tag)?;
                }
            }
        }
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let now_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        let expiry = now_ns + (DOOM_LIMIT + Duration::from_secs(5)).as_nanos() as u64;
        self.tracking.doom_service(id, expiry)
    }

    fn doom_loop(&mut self) -> Result<()> {
        let _doom = match self.tracking.arm_doom() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("doom mode unavailable: {e}");
                self.report.doom_unavailable = Some(e.to_string());
                None
            }
        };
        let deadline = Instant::now() + DOOM_LIMIT;
        let mut handled = HashSet::new();
        loop {
            let cands = self.collect()?;
            // Done when no target is left but those that cannot be signalled: the tags of
            // the dead are removed at exit, and zombies are not candidates.
            let left = cands.iter().filter(|c| !self.unsignallable(c)).count();
            if left == 0 {
                break;
            }
            let fresh: Vec<Candidate> = cands
                .into_iter()
                .filter(|c| handled.insert((c.pid, c.start_ticks)))
                .collect();
            // Verify and doom every target first, so the kernel starts killing forkers at
            // once; then signal them.
            let mut verified = Vec::with_capacity(fresh.len());
            for c in &fresh {
                if let Some(fd) = self.verify(c) {
                    if let Some(tag) = self.tracking.tag(c.pid) {
                        if identity::matches(tag.start_ns, c.start_ticks) {
                            if let Err(e) = self.tracking.doom(c.pid, &tag) {
                                tracing::warn!("cannot doom {}: {e}", c.pid);
                            }
                        }
                    }
                    verified.push((c, fd));
                }
            }
            for (c, fd) in verified {
                self.send(c, fd, Signal::KILL);
            }
            self.live = wait_all(std::mem::take(&mut self.live), Some(DOOM_SETTLE));
            if Instant::now() >= deadline {
                tracing::warn!("doom mode gave up after {DOOM_LIMIT:?}; reporting what is left");
                break;
            }
        }
        Ok(())
    }

    /// True when a candidate was handled and can never be signalled (protected, recycled,
    /// failed).
    fn unsignallable(&self, c: &Candidate) -> bool {
        self.index.get(&(c.pid, c.start_ticks)).is_some_and(|&i| {
            matches!(
                self.report.results[i].outcome,
                Outcome::Protected(_) | Outcome::Recycled | Outcome::Failed(_)
            )
        })
    }

    /// After the last wait: mark who exited, and report live targets that appeared after the
    /// last signal as survivors.
    fn finish_wait(&mut self) -> Result<()> {
        let alive: HashSet<u32> = self.live.iter().map(|w| w.pid).collect();
        for r in &mut self.report.results {
            if !r.signals.is_empty() {
                r.exited = Some(!alive.contains(&r.pid));
            }
        }
        for c in self.fresh_candidates()? {
            if self.verify(&c).is_some() {
                let r = self.result_mut(&c);
                r.outcome = Outcome::Failed("appeared after the last signal".into());
                r.exited = Some(false);
            }
        }
        Ok(())
    }
}

/// Real-time scheduling for the duration of a kill; restores normal scheduling on drop.
struct RealTime(bool);

impl RealTime {
    fn enter() -> Self {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: sets this thread's policy; param is a valid sched_param.
        let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
        if !ok {
            tracing::debug!("no real-time priority: {}", std::io::Error::last_os_error());
        }
        Self(ok)
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        if self.0 {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as above.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}
