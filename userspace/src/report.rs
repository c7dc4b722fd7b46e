//! Reports of a kill: one line per process for people, one JSON object per process plus a
//! summary for programs, and the exit code.

use std::io::{self, Write};

use serde::Serialize;

use crate::{
    candidates::{Candidate, Evidence},
    error::exit,
    guard::Protected,
    signal::Signal,
};

/// What happened to one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not handled yet.
    Pending,
    /// The signal was delivered.
    Signalled,
    /// The process had already exited.
    Gone,
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
            Outcome::Pending => "pending",
            Outcome::Signalled => "signalled",
            Outcome::Gone => "gone",
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
}

/// One process's line in the report.
#[derive(Debug, Clone)]
pub struct ProcessResult {
    /// Its tgid.
    pub pid: u32,
    /// Start time in /proc ticks, as tagged.
    pub start_ticks: u64,
    /// Its comm, when it was alive.
    pub comm: Option<String>,
    /// Evidence that made it a candidate.
    pub evidence: Evidence,
    /// What happened.
    pub outcome: Outcome,
}

impl ProcessResult {
    /// A pending result for a candidate.
    pub fn new(c: &Candidate, start_ticks: u64) -> Self {
        Self {
            pid: c.pid,
            start_ticks,
            comm: None,
            evidence: c.evidence,
            outcome: Outcome::Pending,
        }
    }
}

/// The whole kill.
#[derive(Debug, Clone)]
pub struct KillReport {
    /// Service name.
    pub service: String,
    /// Signal sent.
    pub signal: Signal,
    /// Per-process results.
    pub results: Vec<ProcessResult>,
}

#[derive(Serialize)]
struct JsonProcess<'a> {
    pid: u32,
    start_time: u64,
    comm: Option<&'a str>,
    evidence: Vec<&'static str>,
    signal: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    summary: bool,
    service: &'a str,
    signal: String,
    signalled: usize,
    gone: usize,
    protected: usize,
    failed: usize,
    exit_code: u8,
}

impl KillReport {
    /// An empty report.
    pub fn new(service: &str, signal: Signal) -> Self {
        Self {
            service: service.to_string(),
            signal,
            results: Vec::new(),
        }
    }

    /// Adds a process result.
    pub fn push(&mut self, r: ProcessResult) {
        self.results.push(r);
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    /// Processes signalled.
    pub fn signalled(&self) -> usize {
        self.count(|o| *o == Outcome::Signalled)
    }

    /// Exit code: 0 all signalled, 1 nothing matched, 2 some could not be signalled.
    pub fn exit_code(&self) -> u8 {
        let failed = self.count(|o| matches!(o, Outcome::Failed(_) | Outcome::Protected(_)));
        if failed > 0 {
            exit::PARTIAL
        } else if self.signalled() == 0 {
            exit::NOTHING_MATCHED
        } else {
            exit::OK
        }
    }

    /// Writes one line per process and a summary line.
    pub fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        for r in &self.results {
            let comm = r.comm.as_deref().unwrap_or("-");
            let what = match &r.outcome {
                Outcome::Signalled => format!("sent {}", self.signal),
                other => match other.detail() {
                    Some(d) => format!("{}: {d}", other.name()),
                    None => other.name().to_string(),
                },
            };
            writeln!(
                out,
                "{:>7} {:<16} [{}] {what}",
                r.pid,
                comm,
                r.evidence.names().join(",")
            )?;
        }
        writeln!(
            out,
            "{}: {} of {} process(es) signalled with {}",
            self.service,
            self.signalled(),
            self.results.len(),
            self.signal
        )
    }

    /// Writes one JSON object per process, then a summary object, one per line.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        for r in &self.results {
            let obj = JsonProcess {
                pid: r.pid,
                start_time: r.start_ticks,
                comm: r.comm.as_deref(),
                evidence: r.evidence.names(),
                signal: self.signal.name(),
                outcome: r.outcome.name(),
                detail: r.outcome.detail(),
            };
            serde_json::to_writer(&mut *out, &obj)?;
            writeln!(out)?;
        }
        let summary = JsonSummary {
            summary: true,
            service: &self.service,
            signal: self.signal.name(),
            signalled: self.signalled(),
            gone: self.count(|o| matches!(o, Outcome::Gone | Outcome::Recycled)),
            protected: self.count(|o| matches!(o, Outcome::Protected(_))),
            failed: self.count(|o| matches!(o, Outcome::Failed(_))),
            exit_code: self.exit_code(),
        };
        serde_json::to_writer(&mut *out, &summary)?;
        writeln!(out)
    }
}
