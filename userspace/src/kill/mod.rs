//! The kill, stage by stage: resolve the target → collect candidates (tags ∪ cgroup ∪ /proc,
//! with evidence) → verify each one's identity (pidfd + start time) → signal → wait/escalate
//! along the schedule → report.
//!
//! A SIGKILL of a whole service runs in doom mode: every verified target is marked doomed in
//! its tag and the `sys_exit` doom program is attached, so a target that forks dies in the
//! kernel and its new child dies before running any user code; collection repeats until no
//! target is left. Other signals get one pass plus re-scans for children forked during it.

pub mod candidates;
mod doom;
pub mod report;
pub mod resolve;
pub mod schedule;
mod verify;
pub mod wait;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use self::{
    candidates::{Candidate, Selection, Whom},
    report::{KillReport, Outcome, ProcessResult},
    resolve::Target,
    schedule::{Schedule, Step},
    wait::{wait_all, Waitee},
};
use crate::{
    error::{Error, Result},
    sys::{guard::Guard, procs, realtime::RealTime, signal::Signal},
    tracking::Tracking,
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
    /// Where to look for a service that is not registered.
    pub discovery: resolve::Discovery,
    /// Made for an unprivileged user: only processes of that user are signalled (others
    /// are reported protected), and a SIGKILL runs without doom mode (the kernel does not
    /// check users).
    pub for_user: Option<OnBehalf>,
    /// Gather every candidate's evidence (tags, cgroup, /proc) before the first signal, as
    /// `--json` and `-v` want. Otherwise a whole-service kill signals the tagged processes
    /// first, from one read of the tag map, and collects the rest afterwards.
    pub evidence_first: bool,
}

/// Who a kill made by the daemon for an unprivileged user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnBehalf {
    /// The user.
    pub uid: u32,
    /// The process that asked (the user's bpfkill): never signalled, nor its ancestors.
    pub caller: u32,
}

/// Passes of a non-doom send before giving up on a service that forks faster than it is
/// signalled (each pass handles only processes not seen before).
const MAX_PASSES: usize = 64;

/// A kill under way: the selection, what happened to each process so far, and the pidfds
/// of the signalled processes still to wait for.
struct Kill<'a> {
    tracking: &'a mut Tracking,
    sel: Selection,
    guard: Guard,
    report: KillReport,
    index: HashMap<(u32, u64), usize>,
    live: Vec<Waitee>,
    /// Doom mode ended with no target left: the processes killed in the kernel all began
    /// their exit (their exit programs removed their tags) or were found gone.
    cleared: bool,
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
    // A pidfd is held per live target: a tree larger than the usual soft limit of 1024 files
    // would make the rest fail with EMFILE (seen with a 2000-process fork bomb).
    crate::sys::limits::raise_nofile();
    let (registered_before, found, target) = match &req.target {
        Target::Service(name) => {
            let known = resolve::ensure_known(tracking, name, &req.discovery)?;
            let target = match known.service {
                Some(service) => resolve::service_target(service)?,
                None => resolve::resolve_target(tracking, &req.target)?,
            };
            (known.registered_before, known.found, target)
        }
        Target::Process(_) => (true, None, resolve::resolve_target(tracking, &req.target)?),
    };
    let guard = match req.for_user {
        Some(u) => Guard::for_user(u.uid, u.caller),
        None => Guard::new(),
    };
    let cgroup = resolve::dedicated_cgroup(&target, req.cgroup.as_deref(), &guard)?;
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
    report.found = found;
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
        cleared: false,
    };

    k.report.untagged = k.tracking.service_stats(k.sel.target.service.id).untagged;
    if k.sel.target.subtree {
        let selected = k.collect()?;
        k.report.left_out = candidates::unknown_lineage(k.tracking, &k.sel, &selected);
    }
    if req.dry_run {
        k.dry_run()?;
        // A dry run leaves no trace: what discovery adopted for it is released again.
        if let Some(found) = k.report.found.take() {
            let id = k.sel.target.service.id;
            crate::lineage::registry::release_adopted(k.tracking, id, !registered_before)?;
            k.report.found = Some(format!("{found} (dry run: released again)"));
        }
        return Ok(k.report);
    }
    for step in &req.schedule.steps {
        match *step {
            Step::Send(sig) if sig == Signal::KILL && k.sel.whom == Whom::All && req.for_user.is_none() => {
                k.doom_pass(req.evidence_first)?
            }
            Step::Send(sig) => k.send_pass(sig, req.evidence_first)?,
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
    // A job's cgroup that the kill emptied goes, as it would at the job's own end. A kill
    // that waited gives its last exits (which end after the exit programs that doom mode
    // waits for) at most DOOM_LAST_WAIT to leave the cgroup.
    if let Some(c) = k
        .sel
        .cgroup
        .as_ref()
        .filter(|c| c.source == crate::sys::cgroup::JOB)
    {
        if k.report.waited {
            crate::sys::cgroup::wait_unpopulated(&c.dir, doom::DOOM_LAST_WAIT);
        }
        crate::sys::cgroup::remove_job_cgroup(&c.dir);
    }
    for r in &mut k.report.results {
        if r.outcome == Outcome::Gone
            && r.signals.is_empty()
            && k.report.cgroup_killed.contains(&r.candidate.pid)
        {
            r.outcome = Outcome::CgroupKilled;
        }
    }
    Ok(k.report)
}

impl Kill<'_> {
    fn collect(&self) -> Result<Vec<Candidate>> {
        candidates::collect(self.tracking, &self.sel)
    }

    /// The first pass's candidates: for a whole-service kill that may signal before
    /// gathering evidence, the tagged processes alone (no /proc walk, no cgroup read), so the
    /// signals go out at once; the passes after it collect everything.
    fn first_candidates(&self, evidence_first: bool) -> Result<Vec<Candidate>> {
        if evidence_first || self.sel.whom != Whom::All || self.sel.target.subtree {
            return self.collect();
        }
        Ok(candidates::tagged(self.tracking, self.sel.target.service.id))
    }

    /// Candidates never seen before that are alive now.
    fn fresh_candidates(&self) -> Result<Vec<Candidate>> {
        let mut c = self.collect()?;
        c.retain(|c| {
            !self.index.contains_key(&(c.pid, c.start_ticks))
                && procs::start_ticks(c.pid) == Some(c.start_ticks)
        });
        Ok(c)
    }

    fn result_mut(&mut self, c: &Candidate) -> &mut ProcessResult {
        let key = (c.pid, c.start_ticks);
        let idx = match self.index.get(&key) {
            Some(&i) => {
                // A later, fuller collection adds the evidence the first pass did not read.
                let known = &mut self.report.results[i].candidate;
                known.evidence.merge(c.evidence);
                if c.evidence.cgroup {
                    known.left_cgroup = false;
                } else if c.left_cgroup {
                    known.left_cgroup = true;
                }
                known.tag = known.tag.or(c.tag);
                i
            }
            None => {
                self.report.results.push(ProcessResult::new(c));
                self.index.insert(key, self.report.results.len() - 1);
                self.report.results.len() - 1
            }
        };
        &mut self.report.results[idx]
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
    fn send_pass(&mut self, sig: Signal, evidence_first: bool) -> Result<()> {
        let mut handled = HashSet::new();
        for pass in 0..MAX_PASSES {
            let cands = if pass == 0 && self.report.results.is_empty() {
                self.first_candidates(evidence_first)?
            } else {
                self.collect()?
            };
            let fresh: Vec<Candidate> = cands
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

    /// After the last wait: mark who exited, and report live targets that appeared after the
    /// last signal as survivors.
    fn finish_wait(&mut self) -> Result<()> {
        let alive: HashSet<u32> = self.live.iter().map(|w| w.pid).collect();
        // A process killed in the kernel has exited once its exit program has run: the
        // kernel removes its tag at the start of its exit, which nothing can stop after a
        // SIGKILL. When doom mode ended with no tag left, that holds for every one of them,
        // and /proc is not read for each (1000 reads in the last milliseconds of a tree's
        // teardown slowed it). Otherwise (doom mode gave up) each is judged by /proc
        // (alive: its tagged start time still there, not a zombie); those /proc still shows
        // are waited for first, through pidfds opened now, for waiting only, for at most
        // DOOM_LAST_WAIT.
        let living = |c: &Candidate| {
            procs::stat(c.pid).is_some_and(|st| !procs::is_dead(&st) && st.starttime == c.start_ticks)
        };
        // Only those still shown are read again after the wait: /proc once per process.
        let shown: HashSet<(u32, u64)> = self
            .report
            .results
            .iter()
            .filter(|r| r.in_kernel && !self.cleared && living(&r.candidate))
            .map(|r| (r.candidate.pid, r.candidate.start_ticks))
            .collect();
        let exiting: Vec<Waitee> = shown.iter().filter_map(|&(pid, _)| Waitee::open(pid)).collect();
        if !exiting.is_empty() {
            wait_all(exiting, Some(doom::DOOM_LAST_WAIT));
        }
        for r in &mut self.report.results {
            if r.in_kernel {
                let c = &r.candidate;
                r.exited = Some(!(shown.contains(&(c.pid, c.start_ticks)) && living(c)));
            } else if !r.signals.is_empty() {
                r.exited = Some(!alive.contains(&r.candidate.pid));
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
