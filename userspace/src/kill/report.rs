//! Reports of a kill: what happened to each process, the verdict, and its renderings (one
//! line per process for people; one JSON object per process plus a summary for programs).

use std::io::{self, Write};

use serde::Serialize;

use super::candidates::Candidate;
use crate::{
    lineage::registry,
    sys::{guard::Protected, signal::Signal},
    text::Escaped,
};

/// What happened to one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `--dry-run`: it would have been signalled.
    WouldSignal,
    /// The signal was delivered.
    Signalled,
    /// The process had already exited.
    Gone,
    /// Killed by the kernel through the service cgroup's `cgroup.kill`, and gone before
    /// bpfkill signalled it itself.
    CgroupKilled,
    /// Its PID number belongs to another process now: not signalled.
    Recycled,
    /// A guard rail kept it from being signalled.
    Protected(Protected),
    /// Signalling failed.
    Failed(String),
}

impl Outcome {
    /// Stable machine name.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::WouldSignal => "would-signal",
            Outcome::Signalled => "signalled",
            Outcome::Gone => "gone",
            Outcome::CgroupKilled => "cgroup-killed",
            Outcome::Recycled => "pid-recycled",
            Outcome::Protected(_) => "protected",
            Outcome::Failed(_) => "failed",
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Outcome::Protected(p) => Some(p.reason().to_string()),
            Outcome::Failed(e) => Some(e.clone()),
            Outcome::Recycled => Some("PID number reused by another process; not signalled".into()),
            _ => None,
        }
    }

    /// True for outcomes that mean "could not be signalled".
    fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_) | Outcome::Protected(_))
    }
}

/// One process's line in the report.
#[derive(Debug, Clone)]
pub struct ProcessResult {
    /// The candidate, with its evidence and escape reasons.
    pub candidate: Candidate,
    /// Its comm, when it was seen alive.
    pub comm: Option<String>,
    /// Signals delivered, in order.
    pub signals: Vec<Signal>,
    /// Outcome of the last attempt.
    pub outcome: Outcome,
    /// After waiting: whether it exited (None when the kill did not wait).
    pub exited: Option<bool>,
    /// Signalled by the in-kernel kill (which checked its exact start time).
    pub in_kernel: bool,
}

impl ProcessResult {
    /// A result for a candidate, before any attempt.
    pub fn new(c: &Candidate) -> Self {
        Self {
            candidate: c.clone(),
            comm: None,
            signals: Vec::new(),
            outcome: Outcome::Gone,
            exited: None,
            in_kernel: false,
        }
    }
}

/// How a kill ended, from which the CLI picks its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every target was signalled (and is gone, when waiting was asked for).
    Done,
    /// Nothing matched: no live process of the selection.
    NothingMatched,
    /// Some targets could not be signalled (or were protected).
    Partial,
    /// Survivors remain after the wait.
    Survivors,
}

/// The whole kill.
#[derive(Debug, Clone)]
pub struct KillReport {
    /// Service name.
    pub service: String,
    /// The first signal of the schedule.
    pub signal: Signal,
    /// Per-process results, in the order processes were first seen.
    pub results: Vec<ProcessResult>,
    /// The kill waited for its targets (`--wait`, `--timeout`, `--retry`).
    pub waited: bool,
    /// Dry run: nothing was signalled.
    pub dry_run: bool,
    /// Processes of the service the kernel killed during the kill (children killed before
    /// they ran, creators killed as they forked), each counted once.
    pub kernel_kills: u64,
    /// The service was not registered: how it was found and adopted (said on stderr).
    pub found: Option<String>,
    /// Another kill of the same service held its doom: the kernel's kills are shared, not
    /// this kill's to claim.
    pub concurrent_kill: bool,
    /// Children of the service's processes the kernel could not tag (its tag map was full):
    /// processes of the service this kill may have missed.
    pub untagged: u64,
    /// Tagged processes of the service a PID subtree left out because their lineage is
    /// unknown (adopted by `track`): they may belong to the subtree.
    pub left_out: Vec<u32>,
    /// Doom mode was requested but could not be armed (why).
    pub doom_unavailable: Option<String>,
    /// Doom mode reached its time limit with targets left (they are the survivors).
    pub doom_gave_up: bool,
    /// The members of the service's cgroup when its `cgroup.kill` was written (empty when it
    /// was not used).
    pub cgroup_killed: std::collections::BTreeSet<u32>,
}

#[derive(Serialize)]
struct JsonProcess<'a> {
    pid: u32,
    start_time: u64,
    comm: Option<&'a str>,
    evidence: Vec<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    left_cgroup: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    escape_reasons: Vec<&'static str>,
    signal: Option<String>,
    signals: Vec<String>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exited: Option<bool>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    in_kernel: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    summary: bool,
    service: &'a str,
    signal: String,
    dry_run: bool,
    processes: usize,
    signalled: usize,
    gone_before: usize,
    cgroup_killed_gone: usize,
    protected: usize,
    failed: usize,
    survivors: usize,
    kernel_kills: u64,
    signalled_in_kernel: usize,
    cgroup_killed: usize,
    concurrent_kill: bool,
    untagged: u64,
    left_out: &'a [u32],
    #[serde(skip_serializing_if = "Option::is_none")]
    doom_unavailable: Option<&'a str>,
    doom_gave_up: bool,
    exit_code: u8,
}

impl KillReport {
    /// An empty report.
    pub fn new(service: &str, signal: Signal) -> Self {
        Self {
            service: service.to_string(),
            signal,
            results: Vec::new(),
            waited: false,
            dry_run: false,
            kernel_kills: 0,
            found: None,
            concurrent_kill: false,
            untagged: 0,
            left_out: Vec::new(),
            doom_unavailable: None,
            doom_gave_up: false,
            cgroup_killed: Default::default(),
        }
    }

    fn count(&self, f: impl Fn(&ProcessResult) -> bool) -> usize {
        self.results.iter().filter(|r| f(r)).count()
    }

    /// Processes that received at least one signal.
    pub fn signalled(&self) -> usize {
        self.count(|r| !r.signals.is_empty())
    }

    /// Processes still alive after the wait.
    pub fn survivors(&self) -> usize {
        self.count(|r| r.exited == Some(false))
    }

    /// The verdict: survivors after waiting, else some could not be signalled (or processes
    /// of unknown lineage were left out of a PID subtree), else nothing
    /// matched, else done. Kills by the kernel during a SIGKILL of the service count as
    /// signals: on a slow machine a fork bomb can be gone, killed at its next system call,
    /// before bpfkill signals any process of it itself.
    pub fn verdict(&self) -> Verdict {
        if self.waited && self.survivors() > 0 {
            Verdict::Survivors
        } else if self.count(|r| r.outcome.is_failure()) > 0 || !self.left_out.is_empty() || self.untagged > 0
        {
            Verdict::Partial
        } else if self.dry_run {
            if self.count(|r| r.outcome == Outcome::WouldSignal) > 0 {
                Verdict::Done
            } else {
                Verdict::NothingMatched
            }
        } else if self.signalled() == 0
            && self.cgroup_killed.is_empty()
            && (self.kernel_kills == 0 || self.concurrent_kill)
        {
            Verdict::NothingMatched
        } else {
            Verdict::Done
        }
    }

    /// Writes one line per process and a summary line.
    pub fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        if let Some(why) = &self.doom_unavailable {
            writeln!(
                out,
                "warning: doom mode unavailable ({why}); fell back to repeated passes"
            )?;
        }
        if self.doom_gave_up {
            writeln!(
                out,
                "warning: processes of {} were still being created or killed when doom mode reached its time limit; the survivors are marked STILL ALIVE",
                Escaped(&self.service)
            )?;
        }
        for r in &self.results {
            let comm = r.comm.as_deref().unwrap_or("-");
            let mut what = match &r.outcome {
                Outcome::Signalled => {
                    let sigs: Vec<String> = r.signals.iter().map(|s| s.name()).collect();
                    let how = if r.in_kernel { " in the kernel" } else { "" };
                    format!("sent {}{how}", sigs.join(", "))
                }
                Outcome::WouldSignal => format!("would send {}", self.signal),
                other => match other.detail() {
                    Some(d) => format!("{}: {d}", other.name()),
                    None => other.name().to_string(),
                },
            };
            match r.exited {
                Some(true) => what.push_str(", exited"),
                Some(false) => what.push_str(", STILL ALIVE"),
                None => {}
            }
            let c = &r.candidate;
            if c.left_cgroup {
                what.push_str(" (left the service cgroup)");
            }
            if !c.escape.is_empty() {
                let names: Vec<&str> = c.escape.iter().map(|e| e.name()).collect();
                what.push_str(&format!(" (escaped: {})", names.join(",")));
            }
            writeln!(
                out,
                "{:>7} {:<16} [{}] {what}",
                c.pid,
                Escaped(comm),
                c.evidence.names().join(",")
            )?;
        }
        let verb = if self.dry_run {
            "would be signalled"
        } else {
            "signalled"
        };
        let n = if self.dry_run {
            self.count(|r| r.outcome == Outcome::WouldSignal)
        } else {
            self.signalled()
        };
        write!(
            out,
            "{}: {n} of {} process(es) {verb} with {}",
            self.service,
            self.results.len(),
            self.signal
        )?;
        if self.kernel_kills > 0 {
            write!(out, "; {} process(es) killed in the kernel", self.kernel_kills)?;
            if self.concurrent_kill {
                write!(
                    out,
                    " (another kill of this service was under way: not all are this kill's)"
                )?;
            }
        }
        if !self.cgroup_killed.is_empty() {
            write!(out, "; {} killed through cgroup.kill", self.cgroup_killed.len())?;
        }
        if self.waited {
            write!(out, "; {} survivor(s)", self.survivors())?;
        }
        writeln!(out)?;
        if self.untagged > 0 {
            writeln!(
                out,
                "{}",
                registry::untagged_warning(&self.service, self.untagged)
            )?;
        }
        if !self.left_out.is_empty() {
            let pids: Vec<String> = self.left_out.iter().map(u32::to_string).collect();
            writeln!(
                out,
                "left out: {} process(es) of {} whose lineage is unknown (adopted by `track`), which may descend from it: {}; `--service {}` signals them",
                self.left_out.len(),
                Escaped(&self.service),
                pids.join(" "),
                Escaped(&self.service)
            )?;
        }
        Ok(())
    }

    /// Writes one JSON object per process, then a summary object (with the exit code the
    /// caller chose for the verdict), one per line.
    pub fn write_json(&self, exit_code: u8, out: &mut impl Write) -> io::Result<()> {
        for r in &self.results {
            let c = &r.candidate;
            let obj = JsonProcess {
                pid: c.pid,
                start_time: c.start_ticks,
                comm: r.comm.as_deref(),
                evidence: c.evidence.names(),
                left_cgroup: c.left_cgroup,
                escape_reasons: c.escape.iter().map(|e| e.name()).collect(),
                signal: r.signals.last().map(|s| s.name()),
                signals: r.signals.iter().map(|s| s.name()).collect(),
                outcome: r.outcome.name(),
                exited: r.exited,
                in_kernel: r.in_kernel,
                detail: r.outcome.detail(),
            };
            serde_json::to_writer(&mut *out, &obj)?;
            writeln!(out)?;
        }
        let summary = JsonSummary {
            summary: true,
            service: &self.service,
            signal: self.signal.name(),
            dry_run: self.dry_run,
            processes: self.results.len(),
            signalled: self.signalled(),
            gone_before: self.count(|r| matches!(r.outcome, Outcome::Gone | Outcome::Recycled)),
            cgroup_killed_gone: self.count(|r| r.outcome == Outcome::CgroupKilled),
            protected: self.count(|r| matches!(r.outcome, Outcome::Protected(_))),
            failed: self.count(|r| matches!(r.outcome, Outcome::Failed(_))),
            survivors: self.survivors(),
            kernel_kills: self.kernel_kills,
            signalled_in_kernel: self.count(|r| r.in_kernel),
            cgroup_killed: self.cgroup_killed.len(),
            concurrent_kill: self.concurrent_kill,
            untagged: self.untagged,
            left_out: &self.left_out,
            doom_unavailable: self.doom_unavailable.as_deref(),
            doom_gave_up: self.doom_gave_up,
            exit_code,
        };
        serde_json::to_writer(&mut *out, &summary)?;
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kill::candidates::Evidence;

    fn gone(pid: u32) -> ProcessResult {
        ProcessResult::new(&Candidate {
            pid,
            start_ticks: 1,
            tag: None,
            evidence: Evidence {
                tag: true,
                ..Evidence::default()
            },
            left_cgroup: false,
            escape: Vec::new(),
        })
    }

    #[test]
    fn kills_by_the_kernel_count_as_signals() {
        let mut r = KillReport::new("svc", Signal::KILL);
        r.results = vec![gone(10), gone(11)];
        assert_eq!(r.verdict(), Verdict::NothingMatched, "all gone before any signal");
        r.kernel_kills = 2;
        assert_eq!(
            r.verdict(),
            Verdict::Done,
            "the kernel killed them during the kill"
        );
    }
}
