//! Doom mode: a SIGKILL of a whole service that cannot be outrun by forking. The service is
//! doomed in the kernel (with an expiry, so a crashed kill never leaves it doomed) and the
//! `sys_exit` program is attached for the duration of the kill: a doomed process that forks
//! dies in the kernel, and its child dies on its first return to user space. Collection
//! repeats until no target is left.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use super::{
    candidates::Candidate,
    report::Outcome,
    wait::{wait_all, wait_while_exiting, Waitee},
    Kill,
};
use bpfkill_common::Reaped;

use crate::{
    error::Result,
    sys::{cgroup, clock, identity, procs, realtime, signal::Signal},
    tracking::{self, reap},
};

/// How long doom mode keeps collecting and killing before it reports what is left: long
/// enough for a fork bomb on a slow (emulated) machine, where 10 s was seen to leave ~100 of
/// 2000 processes alive.
const DOOM_LIMIT: Duration = Duration::from_secs(60);
/// How long doom mode waits for killed targets between collections.
const DOOM_SETTLE: Duration = Duration::from_millis(20);
/// When doom mode gives up: how long the last SIGKILLs get to take effect before whoever is
/// left counts as a survivor.
pub(super) const DOOM_LAST_WAIT: Duration = Duration::from_secs(1);
/// Of the processes killed in the kernel and still listed, how many a pass waits for through
/// pidfds: the last ones signalled (the highest PIDs: the iterator signals in task-list
/// order). A pidfd per process (open, epoll add, close) cost a 1000-process kill more CPU
/// than the kernel's own signalling, taken from the dying processes; the pass after the wait
/// reads the tags again and waits for whoever is left.
const KERNEL_KILL_WAIT_SAMPLE: usize = 32;

impl Kill<'_> {
    /// SIGKILL with doom mode, until no target is left (or [`DOOM_LIMIT`]).
    pub(super) fn doom_pass(&mut self, evidence_first: bool) -> Result<()> {
        let owner = !self.sel.target.subtree && self.doom_whole_service()?;
        if !self.sel.target.subtree && !owner {
            // Another kill of this service dooms it in the kernel: the kills the kernel makes
            // now are not this kill's alone.
            self.report.concurrent_kill = true;
        }
        // The kernel's kills of the service are counted while this kill owns its doom (or,
        // for a kill sharing another's doom, during the pass, flagged as shared), so two
        // kills one after the other never both claim the same kills.
        let id = self.sel.target.service.id;
        let before = self.tracking.service_stats(id).kernel_kills;
        if !self.sel.target.subtree {
            self.cgroup_kill();
        }
        let result = self.doom_loop(owner, evidence_first);
        let after = self.tracking.service_stats(id).kernel_kills;
        if owner {
            self.tracking.undoom_service(id);
        }
        self.report.kernel_kills += after.saturating_sub(before);
        result
    }

    /// Dooms every tagged process of the service at once, in the kernel, after sparing the
    /// protected ones (bpfkill and its ancestors, if they belong to it). False when another
    /// kill holds the service's doom.
    fn doom_whole_service(&mut self) -> Result<bool> {
        let id = self.sel.target.service.id;
        for pid in self.guard.protected_pids() {
            if let Some(tag) = self.tracking.tag(pid).filter(|t| t.service_id == id) {
                if procs::start_ticks(pid).is_some_and(|t| identity::matches(tag.start_ns, t)) {
                    self.tracking.spare(pid, &tag)?;
                }
            }
        }
        let now = clock::boot_now_ns();
        let expiry = now + (DOOM_LIMIT + Duration::from_secs(5)).as_nanos() as u64;
        self.tracking.doom_service(id, expiry, now)
    }

    /// The service's own cgroup v2 directory, when it has one, is killed whole by the kernel
    /// (`cgroup.kill`, Linux 5.14): one write for every member, identified by membership of a
    /// cgroup checked to be the service's alone. Skipped when a protected process (bpfkill,
    /// its ancestors, PID 1) has moved in since that check. The tags then catch what left it.
    fn cgroup_kill(&mut self) {
        let Some(dedicated) = &self.sel.cgroup else { return };
        let file = dedicated.dir.join("cgroup.kill");
        if !file.is_file() {
            return;
        }
        let members = match cgroup::members(&dedicated.dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("cgroup.kill skipped: {e}");
                return;
            }
        };
        if let Some(p) = self
            .guard
            .protected_pids()
            .into_iter()
            .find(|p| members.contains(p))
        {
            tracing::warn!(
                "cgroup.kill skipped: protected process {p} is in {}",
                dedicated.dir.display()
            );
            return;
        }
        match std::fs::write(&file, "1") {
            Ok(()) => {
                tracing::info!("killed {} through {}", members.len(), file.display());
                self.report.cgroup_killed = members;
            }
            Err(e) => tracing::warn!("cgroup.kill of {} failed: {e}", dedicated.dir.display()),
        }
    }

    fn doom_loop(&mut self, owner: bool, evidence_first: bool) -> Result<()> {
        // Doom mode is armed first, before any collection and the kernel kill: the kernel
        // kill's iterator meets a child forked while it runs only if the child's PID comes
        // later, and a fork bomb's PIDs wrap (a bomb left to fork while doom mode was armed
        // after the kernel kill outran a normal-priority kill for 30 s).
        let _doom = match tracking::arm_doom(self.tracking) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("doom mode unavailable: {e}");
                self.report.doom_unavailable = Some(e.to_string());
                None
            }
        };
        let deadline = Instant::now() + DOOM_LIMIT;
        let mut handled = HashSet::new();
        let mut first = true;
        // Processes seen to exit (their pidfd said so, or none could be opened, or they were
        // gone when checked): a tag of one that is still there is one the exit program
        // missed, as is a tag whose PID number another process holds now.
        let mut exited: HashSet<u32> = HashSet::new();
        // --json and -v: every candidate's evidence is recorded before anything is signalled.
        let mut gathered = None;
        if evidence_first {
            let cands = self.first_candidates(true)?;
            for c in &cands {
                self.result_mut(c);
            }
            gathered = Some(cands);
        }
        // The kernel kills first where it can: this kill owns the service's doom, so every
        // doomed process is this service's (or another kill's, left to it). No tag map read
        // comes before it, and the rest (the bookkeeping, the passes after it) runs at
        // normal priority, behind the dying processes.
        let reaped = if owner && reap::available(self.tracking.paths()) {
            self.reap_in_kernel()
        } else {
            Vec::new()
        };
        let _calm = (!reaped.is_empty()).then(realtime::Normal::enter);
        self.record_reaped(&reaped, &mut handled);
        drop(reaped);
        loop {
            let cands = match (std::mem::take(&mut first), gathered.take()) {
                (true, Some(cands)) => cands,
                (true, None) => self.first_candidates(false)?,
                _ => self.collect()?,
            };
            // Done when no target is left but those that cannot be signalled: the tags of
            // the dead are removed at exit, and zombies are not candidates. A tag the exit
            // program missed (the kernel skipped its run) outlives its signalled process:
            // it is forgotten here rather than waited for.
            let cands: Vec<Candidate> = cands
                .into_iter()
                .filter(|c| {
                    let tag_only = c.evidence.tag && !c.evidence.proc && !c.evidence.cgroup;
                    !((exited.contains(&c.pid) || self.recycled(c) || self.seen_gone(c))
                        && tag_only
                        && handled.contains(&(c.pid, c.start_ticks))
                        && c.tag.is_some_and(|t| self.tracking.forget_if_exited(c.pid, &t)))
                })
                .collect();
            let left = cands.iter().filter(|c| !self.unsignallable(c)).count();
            if left == 0 {
                // Every process killed in the kernel has had its exit run (which removed its
                // tag) or was found gone: none can run again, and the report need not ask
                // /proc about each one.
                self.cleared = true;
                break;
            }
            // The processes killed in the kernel that are still listed: the pass waits for
            // the last signalled of them.
            let mut dying: Vec<u32> = cands
                .iter()
                .filter(|c| self.killed_in_kernel(c) && !self.live.iter().any(|w| w.pid == c.pid))
                .map(|c| c.pid)
                .collect();
            dying.sort_unstable_by_key(|&p| std::cmp::Reverse(p));
            dying.truncate(KERNEL_KILL_WAIT_SAMPLE);
            let fresh: Vec<Candidate> = cands
                .into_iter()
                .filter(|c| handled.insert((c.pid, c.start_ticks)))
                .collect();
            // Verify and doom every target first, so the kernel starts killing forkers at
            // once; then signal them. (A service doomed whole by this kill needs no doom per
            // process.)
            let mut verified = Vec::with_capacity(fresh.len());
            for c in &fresh {
                if let Some(fd) = self.verify(c) {
                    if owner && c.tag.is_some_and(|t| t.service_id == self.sel.target.service.id) {
                        verified.push((c, fd));
                        continue;
                    }
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
            for pid in dying {
                match Waitee::open(pid) {
                    Some(w) => self.live.push(w),
                    None => {
                        exited.insert(pid);
                    }
                }
            }
            if self.live.is_empty() {
                // Only processes already gone from /proc are left: their tags go at their
                // exit.
                std::thread::sleep(DOOM_SETTLE);
            }
            // Collect again once the signalled are gone, or stop dying for DOOM_SETTLE (a
            // forker's children are killed by the kernel meanwhile): a tree of 10,000 is
            // not re-read every few milliseconds while it dies.
            let waited: Vec<u32> = self.live.iter().map(|w| w.pid).collect();
            self.live = wait_while_exiting(std::mem::take(&mut self.live), DOOM_SETTLE, deadline);
            let survivors: HashSet<u32> = self.live.iter().map(|w| w.pid).collect();
            exited.extend(waited.into_iter().filter(|p| !survivors.contains(p)));
            if Instant::now() >= deadline {
                tracing::warn!("doom mode gave up after {DOOM_LIMIT:?}; reporting what is left");
                // Whoever outlives the last wait is a survivor: the report counts them and
                // the kill does not exit 0, waited for or not.
                self.live = wait_all(std::mem::take(&mut self.live), Some(DOOM_LAST_WAIT));
                self.report.doom_gave_up = true;
                self.report.waited = true;
                break;
            }
        }
        Ok(())
    }

    /// Runs the in-kernel kill once: what it signalled (the kernel checked each one's exact
    /// start time against its tag). Empty when it failed (the passes signal from userspace).
    fn reap_in_kernel(&self) -> Vec<Reaped> {
        reap::reap(self.tracking.paths()).unwrap_or_else(|e| {
            tracing::warn!("the kernel kill failed, signalling from userspace: {e}");
            Vec::new()
        })
    }

    /// Records what the kernel kill signalled of this service as handled.
    fn record_reaped(&mut self, reaped: &[Reaped], handled: &mut HashSet<(u32, u64)>) {
        let id = self.sel.target.service.id;
        // Another kill's doomed processes are that kill's to report.
        for r in reaped.iter().filter(|r| r.tag.service_id == id) {
            let c = Candidate::tagged(r.pid, r.tag);
            if handled.insert((c.pid, c.start_ticks)) {
                self.record_kernel_kill(&c);
            }
        }
    }

    fn record_kernel_kill(&mut self, c: &Candidate) {
        let comm = c.tag.map(|t| bpfkill_common::user::c_str(&t.comm).into_owned());
        let r = self.result_mut(c);
        r.outcome = Outcome::Signalled;
        r.signals.push(Signal::KILL);
        r.in_kernel = true;
        r.comm = comm;
    }

    /// True when the candidate's PID number was found held by another process.
    fn recycled(&self, c: &Candidate) -> bool {
        self.index
            .get(&(c.pid, c.start_ticks))
            .is_some_and(|&i| self.report.results[i].outcome == Outcome::Recycled)
    }

    /// True when the candidate's process was found gone when this kill checked it (before
    /// any signal from this kill): its tag outlives it only if the kernel skipped its exit run.
    fn seen_gone(&self, c: &Candidate) -> bool {
        self.index
            .get(&(c.pid, c.start_ticks))
            .is_some_and(|&i| self.report.results[i].outcome == Outcome::Gone)
    }

    /// True when the candidate is a process this kill signalled in the kernel (the doom loop
    /// waits for some of them, see [`KERNEL_KILL_WAIT_SAMPLE`]).
    fn killed_in_kernel(&self, c: &Candidate) -> bool {
        self.index
            .get(&(c.pid, c.start_ticks))
            .is_some_and(|&i| self.report.results[i].in_kernel)
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
}
