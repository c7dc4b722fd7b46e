//! Decoding of the kernel's fork/exec/exit records.

use bpfkill_common::{
    event_kind,
    user::{c_str, read_record},
    Event,
};

use crate::sys::signal::Signal;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tracked process created a child process.
    Fork,
    /// A tracked process exec'd.
    Exec,
    /// A tracked process's last thread exited.
    Exit,
    /// A rule put a process at the root of its service at exec.
    Match,
    /// A process left its service at exec (a boundary rule).
    Leave,
}

impl Kind {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fork => "fork",
            Kind::Exec => "exec",
            Kind::Exit => "exit",
            Kind::Match => "match",
            Kind::Leave => "leave",
        }
    }
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedEvent {
    /// What happened.
    pub kind: Kind,
    /// The process.
    pub pid: u32,
    /// Its parent at the time.
    pub ppid: u32,
    /// Its creator (0 when unknown).
    pub creator_pid: u32,
    /// Service id.
    pub service_id: u32,
    /// For matches: the service the process belonged to before (0: none).
    pub prev_service_id: u32,
    /// Boot-time ns of the event.
    pub time_ns: u64,
    /// The process's start time, ns since boot.
    pub start_ns: u64,
    /// cgroup v2 id of the current task at the event.
    pub cgroup_id: u64,
    /// comm at the event.
    pub comm: String,
    /// exec filename (exec events).
    pub filename: Option<String>,
    /// Exit code for a normal exit (exit events).
    pub exit_code: Option<i32>,
    /// Killing signal (exit events).
    pub signal: Option<i32>,
}

/// Decodes one ring-buffer record; None for a short or unknown record.
pub fn decode(bytes: &[u8]) -> Option<TrackedEvent> {
    let ev: Event = read_record(bytes)?;
    let kind = match ev.kind {
        event_kind::FORK => Kind::Fork,
        event_kind::EXEC => Kind::Exec,
        event_kind::EXIT => Kind::Exit,
        event_kind::MATCH => Kind::Match,
        event_kind::LEAVE => Kind::Leave,
        _ => return None,
    };
    let (exit_code, signal) = if kind == Kind::Exit {
        let status = ev.exit_status as i32;
        let sig = status & 0x7f;
        if sig == 0 {
            (Some((status >> 8) & 0xff), None)
        } else {
            (None, Some(sig))
        }
    } else {
        (None, None)
    };
    let filename = matches!(kind, Kind::Exec | Kind::Match | Kind::Leave)
        .then(|| c_str(&ev.filename).into_owned())
        .filter(|f| !f.is_empty());
    Some(TrackedEvent {
        kind,
        pid: ev.pid,
        ppid: ev.ppid,
        creator_pid: ev.creator_pid,
        service_id: ev.service_id,
        prev_service_id: ev.prev_service_id,
        time_ns: ev.time_ns,
        start_ns: ev.start_ns,
        cgroup_id: ev.cgroup_id,
        comm: c_str(&ev.comm).into_owned(),
        filename,
        exit_code,
        signal,
    })
}

impl TrackedEvent {
    /// One-line description for logs.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Fork => format!(
                "fork pid={} creator={} ppid={} comm={}",
                self.pid, self.creator_pid, self.ppid, self.comm
            ),
            Kind::Exec => format!(
                "exec pid={} file={} comm={}",
                self.pid,
                self.filename.as_deref().unwrap_or("?"),
                self.comm
            ),
            Kind::Match => format!(
                "match pid={} file={} from=#{}",
                self.pid,
                self.filename.as_deref().unwrap_or("?"),
                self.prev_service_id
            ),
            Kind::Leave => format!(
                "leave pid={} file={}",
                self.pid,
                self.filename.as_deref().unwrap_or("?")
            ),
            Kind::Exit => match (self.exit_code, self.signal) {
                (_, Some(sig)) => format!(
                    "exit pid={} killed by {} comm={}",
                    self.pid,
                    Signal::name_of(sig),
                    self.comm
                ),
                (code, None) => format!(
                    "exit pid={} code={} comm={}",
                    self.pid,
                    code.unwrap_or(0),
                    self.comm
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkill_common::{COMM_LEN, FILENAME_LEN};

    fn raw(kind: u32, status: u32) -> Vec<u8> {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"sh\0\0");
        let mut filename = [0u8; FILENAME_LEN];
        filename[..7].copy_from_slice(b"/bin/sh");
        let ev = Event {
            kind,
            pid: 10,
            ppid: 1,
            creator_pid: 9,
            service_id: 3,
            exit_status: status,
            prev_service_id: 0,
            reserved: 0,
            time_ns: 5,
            start_ns: 6,
            cgroup_id: 7,
            clone_flags: 0,
            comm,
            filename,
        };
        // SAFETY: Event is plain data.
        unsafe {
            std::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), std::mem::size_of::<Event>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_exit_code_and_signal() {
        let e = decode(&raw(event_kind::EXIT, 3 << 8)).unwrap();
        assert_eq!((e.exit_code, e.signal), (Some(3), None));
        let e = decode(&raw(event_kind::EXIT, 9)).unwrap();
        assert_eq!((e.exit_code, e.signal), (None, Some(9)));
        assert!(e.describe().contains("SIGKILL"));
    }

    #[test]
    fn decodes_exec_filename_and_rejects_garbage() {
        let e = decode(&raw(event_kind::EXEC, 0)).unwrap();
        assert_eq!(e.filename.as_deref(), Some("/bin/sh"));
        assert_eq!(e.comm, "sh");
        assert!(decode(&raw(99, 0)).is_none());
        assert!(decode(&[0u8; 8]).is_none());
    }
}
