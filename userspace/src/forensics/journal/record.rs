//! One journal record: the on-disk format (a JSON object per line) and its human rendering.

use std::{io, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    sys::{clock::epoch_ns, signal::Signal},
    text::{escape, Escaped},
    tracking::events::{Kind, TrackedEvent},
};

/// One journal entry: the on-disk format and the `--json` output of `bpfkill log`.
///
/// Every key is always emitted (null when absent), in declaration order, so the field set is stable.
/// Missing keys are tolerated when reading (`#[serde(default)]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// RFC 3339 UTC, microseconds (`2026-11-24T00:12:03.123456Z`).
    pub time: String,
    /// Unix epoch ns, for filtering and sorting.
    pub time_ns: u64,
    /// `fork`, `exec`, `exit`, `match`, `leave`, `adopt`, `forget`, `reload`,
    /// `reload-failed`, `lost` (the kernel's ring buffer was full) or `journal-lost` (the
    /// journal could not be written).
    pub event: String,
    /// Service name.
    pub service: String,
    /// Service id.
    pub service_id: u32,
    /// The process.
    pub pid: u32,
    /// Its parent at the time.
    pub ppid: u32,
    /// Its creator; null when unknown.
    pub creator_pid: Option<u32>,
    /// comm at the event.
    pub comm: String,
    /// Executable (exec events).
    pub exe: Option<String>,
    /// Arguments (exec events), when known.
    pub argv: Option<Vec<String>>,
    /// Exit code of a normal exit.
    pub exit_code: Option<i32>,
    /// Killing signal's name (`SIGKILL`).
    pub signal: Option<String>,
    /// The service a process belonged to before a rule matched it (`match` records; null
    /// when it belonged to none), or the service a reload concerned.
    pub from_service: Option<String>,
    /// Why a reload failed (`reload-failed` records).
    pub error: Option<String>,
    /// Number of events lost (`lost` and `journal-lost` records only).
    pub lost: Option<u64>,
    /// When the journal stopped being written (`journal-lost` records only).
    pub since: Option<String>,
}

/// `event` of a record saying events were lost.
pub const EVENT_LOST: &str = "lost";
/// `event` of a record saying records were not written (a full disk).
pub const EVENT_JOURNAL_LOST: &str = "journal-lost";

impl Record {
    /// An empty record of `event` at `time`.
    pub fn new(event: &str, time: SystemTime) -> Record {
        Record {
            time: humantime::format_rfc3339_micros(time).to_string(),
            time_ns: epoch_ns(time),
            event: event.to_string(),
            ..Record::default()
        }
    }

    /// The record of a kernel event of service `service`, at wall-clock `time`
    /// (see [`crate::sys::clock::boot_to_wall`]). `exe` is the exec'd file name; `argv` is left for the
    /// caller to fill in when it can read it.
    pub fn from_event(ev: &TrackedEvent, service: &str, time: SystemTime) -> Record {
        Record {
            service: service.to_string(),
            service_id: ev.service_id,
            pid: ev.pid,
            ppid: ev.ppid,
            creator_pid: (ev.creator_pid != 0).then_some(ev.creator_pid),
            comm: ev.comm.clone(),
            exe: ev.filename.clone(),
            exit_code: ev.exit_code,
            signal: ev.signal.map(Signal::name_of),
            ..Record::new(ev.kind.name(), time)
        }
    }

    /// A record saying `count` events were lost because the ring buffer was full.
    pub fn lost(count: u64, time: SystemTime) -> Record {
        Record {
            lost: Some(count),
            ..Record::new(EVENT_LOST, time)
        }
    }

    /// A `journal-lost` record: `count` records were not written between `since` and `time`
    /// (the journal could not be written: its `error` says why).
    pub fn journal_lost(count: u64, since: SystemTime, time: SystemTime) -> Record {
        Record {
            lost: Some(count),
            since: Some(humantime::format_rfc3339_micros(since).to_string()),
            ..Record::new(EVENT_JOURNAL_LOST, time)
        }
    }

    /// Whether this is a `lost` or `journal-lost` record: a gap in the history.
    pub fn is_lost(&self) -> bool {
        self.event == EVENT_LOST || self.event == EVENT_JOURNAL_LOST
    }

    /// One JSON line, newline included.
    pub fn to_json_line(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self)
            .map_err(|e| Error::io("serializing a journal record", io::Error::from(e)))?;
        line.push(b'\n');
        Ok(line)
    }

    /// One readable line (no trailing newline).
    pub fn human(&self) -> String {
        if self.event == EVENT_JOURNAL_LOST {
            return format!(
                "{} journal-lost {} records not written since {} ({})",
                Escaped(&self.time),
                self.lost.unwrap_or(0),
                Escaped(self.since.as_deref().unwrap_or("?")),
                Escaped(self.error.as_deref().unwrap_or("write error"))
            );
        }
        if self.is_lost() {
            return format!(
                "{} lost {} events (ring buffer full)",
                Escaped(&self.time),
                self.lost.unwrap_or(0)
            );
        }
        let service = if self.service.is_empty() {
            format!("#{}", self.service_id)
        } else {
            escape(&self.service).into_owned()
        };
        let mut s = format!(
            "{} {} {} pid={}",
            Escaped(&self.time),
            service,
            Escaped(&self.event),
            self.pid
        );
        if self.event == Kind::Fork.name() {
            s.push_str(&format!(" ppid={}", self.ppid));
            match self.creator_pid {
                Some(c) => s.push_str(&format!(" creator={c}")),
                None => s.push_str(" creator=?"),
            }
            s.push_str(&format!(" comm={}", Escaped(&self.comm)));
        } else if self.event == Kind::Match.name() || self.event == Kind::Leave.name() {
            s.push_str(&format!(" exe={}", Escaped(self.exe.as_deref().unwrap_or("?"))));
            if let Some(from) = &self.from_service {
                s.push_str(&format!(" from={}", Escaped(from)));
            }
        } else if let Some(error) = &self.error {
            s.push_str(&format!(" error={}", Escaped(error)));
        } else if self.event == Kind::Exec.name() {
            s.push_str(&format!(" exe={}", Escaped(self.exe.as_deref().unwrap_or("?"))));
            if let Some(argv) = &self.argv {
                s.push_str(&format!(" argv=\"{}\"", quote_argv(argv)));
            }
        } else if self.event == Kind::Exit.name() {
            match (&self.signal, self.exit_code) {
                (Some(sig), _) => s.push_str(&format!(" killed by {}", Escaped(sig))),
                (None, Some(code)) => s.push_str(&format!(" code={code}")),
                (None, None) => s.push_str(" code=?"),
            }
            s.push_str(&format!(" comm={}", Escaped(&self.comm)));
        } else if !self.comm.is_empty() {
            s.push_str(&format!(" comm={}", Escaped(&self.comm)));
        }
        s
    }
}

/// argv joined by spaces, escaped for a terminal (see [`escape`]) and with `"` escaped, for
/// inside double quotes.
fn quote_argv(argv: &[String]) -> String {
    escape(&argv.join(" ")).replace('"', "\\\"")
}
