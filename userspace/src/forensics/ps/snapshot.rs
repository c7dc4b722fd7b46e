//! Snapshots of live processes for `ps`: from the kernel's task iterator (one read of a pinned
//! iterator link returns every live tagged process with its tag, identity, session, uid,
//! cgroup, PID namespace and command line), or from /proc when the iterator is unavailable.
//! Either way only `exe` needs one more system call per process.

use std::{collections::HashMap, io::Read, sync::Arc};

use bpfkill_common::{
    programs, snapshot_flags,
    user::{c_str, read_record},
    Tag, TaskSnapshot,
};

use crate::{
    error::{Error, Result},
    sys::{
        clock, identity,
        procs::{self, read_small},
    },
    tracking::PinPaths,
};

/// Forces the /proc source (`proc`) or the kernel iterator (`kernel`); default: the iterator
/// when it is pinned.
pub const SOURCE_ENV: &str = "BPFKILL_PS_SOURCE";

/// What is known about one live process.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Parent tgid.
    pub ppid: u32,
    /// Session id.
    pub sid: u32,
    /// Process group id.
    pub pgid: u32,
    /// State letter, as in /proc/PID/stat.
    pub state: char,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_ticks: u64,
    /// comm.
    pub comm: String,
    /// A zombie whose threads have all exited.
    pub dead: bool,
    /// Effective uid.
    pub uid: Option<u32>,
    /// Arguments joined by spaces.
    pub cmdline: String,
    /// Resolved /proc/PID/exe (shared: thousands of workers run one binary).
    pub exe: Option<Arc<str>>,
    /// cgroup v2 path (from /proc).
    pub cgroup_path: Option<String>,
    /// cgroup v2 id (from the kernel).
    pub cgroup_id: Option<u64>,
    /// PID namespace inode.
    pub pidns: Option<u64>,
    /// The tag, when the kernel iterator reported it.
    pub tag: Option<Tag>,
    /// The kernel's key for its executable (0: none or unknown), to resolve `exe` once per
    /// binary.
    exe_key: u64,
}

impl Snapshot {
    /// True when this is the process that started at `start_ns` and it has not exited.
    pub fn is(&self, start_ns: u64) -> bool {
        identity::matches(start_ns, self.start_ticks) && !self.dead
    }
}

/// `work` over `items` split in one part per CPU (when there are at least `min` items),
/// results concatenated in order.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    min: usize,
    work: impl Fn(&[T]) -> Vec<R> + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    if items.len() < min || threads == 1 {
        return work(items);
    }
    let chunk = items.len().div_ceil(threads);
    let parts: Vec<Vec<R>> = std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend(part);
    }
    out
}

/// Runs `read` over `pids` on every CPU (one system call or ten per process), with one
/// scratch buffer per thread.
fn parallel<T: Send>(pids: &[u32], read: impl Fn(u32, &mut Vec<u8>) -> Option<T> + Sync) -> Vec<(u32, T)> {
    in_parallel(pids, 256, |part| {
        let mut buf = Vec::with_capacity(8192);
        part.iter()
            .filter_map(|&p| Some((p, read(p, &mut buf)?)))
            .collect()
    })
}

fn exe_of(pid: u32) -> Option<Arc<str>> {
    rustix::fs::readlink(format!("/proc/{pid}/exe"), Vec::new())
        .ok()
        .map(|l| Arc::from(l.to_string_lossy()))
}

fn join_args(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for arg in raw.split(|&b| b == 0).filter(|a| !a.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&String::from_utf8_lossy(arg));
    }
    out
}

/// One process from /proc, in about ten system calls. Parsing is procfs's.
fn proc_snapshot(pid: u32, buf: &mut Vec<u8>) -> Option<Snapshot> {
    use procfs::FromRead;
    read_small(&format!("/proc/{pid}/stat"), buf)?;
    let stat = procfs::process::Stat::from_read(&buf[..]).ok()?;
    // The owner of /proc/PID is the process's effective uid (root when it is not dumpable).
    let uid = rustix::fs::stat(format!("/proc/{pid}")).ok().map(|st| st.st_uid);
    let cmdline = match read_small(&format!("/proc/{pid}/cmdline"), buf) {
        Some(()) => join_args(buf),
        None => String::new(),
    };
    let cgroup_path = read_small(&format!("/proc/{pid}/cgroup"), buf)
        .and_then(|()| procfs::ProcessCGroups::from_read(&buf[..]).ok())
        .and_then(|cgs| cgs.into_iter().find(|c| c.hierarchy == 0).map(|c| c.pathname));
    let pidns = rustix::fs::readlink(format!("/proc/{pid}/ns/pid"), Vec::new())
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy();
            s.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        });
    Some(Snapshot {
        ppid: stat.ppid as u32,
        sid: stat.session as u32,
        pgid: stat.pgrp as u32,
        state: stat.state,
        start_ticks: stat.starttime,
        dead: procs::is_dead(&stat),
        comm: stat.comm,
        uid,
        cmdline,
        exe: exe_of(pid),
        cgroup_path,
        cgroup_id: None,
        pidns,
        tag: None,
        exe_key: 0,
    })
}

/// Snapshots of `pids` from /proc, read in parallel; missing entries are gone.
pub fn from_proc(pids: &[u32]) -> HashMap<u32, Snapshot> {
    parallel(pids, proc_snapshot).into_iter().collect()
}

/// The state letter the kernel shows in /proc/PID/stat for `__state` and `exit_state`.
pub fn state_letter(state: u32, exit_state: u32) -> char {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_IDLE: u32 = 0x402;
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    let bits = match state {
        TASK_IDLE => 0x80,
        TASK_RTLOCK_WAIT => 0x2,
        _ => (state | exit_state) & TASK_REPORT,
    };
    let index = (u32::BITS - bits.leading_zeros()) as usize; // fls()
    b"RSDTtXZPI".get(index).map_or('?', |&c| c as char)
}

/// Parses what the task iterator wrote: records, each followed by its command line.
pub fn parse_records(data: &[u8]) -> Result<Vec<(TaskSnapshot, &[u8])>> {
    let size = std::mem::size_of::<TaskSnapshot>();
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let rec: TaskSnapshot = data
            .get(at..)
            .and_then(read_record)
            .ok_or_else(|| Error::Object(format!("task iterator: a record is cut at byte {at}")))?;
        at += size;
        let len = rec.cmdline_len as usize;
        let cmdline = data
            .get(at..at + len)
            .ok_or_else(|| Error::Object(format!("task iterator: a command line is cut at byte {at}")))?;
        at += len;
        out.push((rec, cmdline));
    }
    Ok(out)
}

/// Snapshots by PID, in the order an iterator reported them.
type Half = Vec<(u32, Snapshot)>;

/// Runs one pinned task iterator and decodes its records into snapshots, `exe` still
/// unresolved (None when it is not pinned).
fn read_half(pin: &std::path::Path) -> Result<Option<Half>> {
    let mut file = match std::fs::File::open(pin) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open {}", pin.display()), e)),
    };
    let mut data = Vec::with_capacity(2 << 20);
    file.read_to_end(&mut data)
        .map_err(|e| Error::io(format!("read {}", pin.display()), e))?;
    let snaps = parse_records(&data)?
        .into_iter()
        .map(|(r, raw)| {
            // Longer than the iterator copies, or a title rewritten past the end of the
            // argument area (as sshd's setproctitle does: the area then does not end in a
            // NUL, and the kernel's /proc reads on into the environment): /proc has all of it.
            let rewritten = raw.last().is_some_and(|&b| b != 0);
            let cmdline = if r.flags & snapshot_flags::CMDLINE_TRUNCATED != 0 || rewritten {
                let mut buf = Vec::new();
                read_small(&format!("/proc/{}/cmdline", r.pid), &mut buf)
                    .map_or_else(|| join_args(raw), |()| join_args(&buf))
            } else {
                join_args(raw)
            };
            let snap = Snapshot {
                ppid: r.ppid,
                sid: r.sid,
                pgid: r.pgid,
                state: state_letter(r.state, r.exit_state),
                start_ticks: clock::ns_to_ticks(r.start_ns),
                comm: c_str(&r.comm).into_owned(),
                dead: r.exit_state != 0 && r.live_threads == 0,
                uid: Some(r.euid),
                cmdline,
                exe: None,
                cgroup_path: None,
                cgroup_id: Some(r.cgroup_id),
                pidns: Some(u64::from(r.pidns)),
                tag: Some(r.tag),
                exe_key: r.exe_key,
            };
            (r.pid, snap)
        })
        .collect();
    Ok(Some(snaps))
}

/// Snapshots of every live tagged process from the pinned task iterator, or None when it is
/// not pinned (or `BPFKILL_PS_SOURCE=proc`).
pub fn from_kernel(paths: &PinPaths) -> Result<Option<HashMap<u32, Snapshot>>> {
    match std::env::var(SOURCE_ENV).as_deref() {
        Ok("proc") => return Ok(None),
        Ok("kernel") | Err(_) => {}
        Ok(other) => {
            return Err(Error::Usage(format!(
                "invalid {SOURCE_ENV}={other:?}: use kernel or proc"
            )))
        }
    }
    // Both halves at once, one CPU each; each thread also decodes its records.
    let halves: Vec<Result<Option<Half>>> = std::thread::scope(|s| {
        let handles: Vec<_> = programs::SNAPSHOT
            .iter()
            .map(|(name, _)| {
                let pin = paths.link(name);
                s.spawn(move || read_half(&pin))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Object("task iterator reader panicked".into())))
            })
            .collect()
    });
    let mut parts = Vec::with_capacity(halves.len());
    for half in halves {
        match half? {
            Some(p) => parts.push(p),
            None => return Ok(None),
        }
    }
    // One readlink per distinct executable (10,000 workers of one daemon share one).
    let mut by_exe: HashMap<u64, u32> = HashMap::new();
    let mut unkeyed: Vec<u32> = Vec::new();
    for (pid, snap) in parts.iter().flatten() {
        match snap.exe_key {
            0 => unkeyed.push(*pid),
            key => {
                by_exe.entry(key).or_insert(*pid);
            }
        }
    }
    let mut to_read: Vec<u32> = by_exe.values().copied().chain(unkeyed).collect();
    to_read.sort_unstable();
    let exes: HashMap<u32, Arc<str>> = parallel(&to_read, |pid, _| exe_of(pid)).into_iter().collect();
    tracing::debug!("{} executables resolved", exes.len());
    let mut out = HashMap::with_capacity(parts.iter().map(Vec::len).sum());
    for (pid, mut snap) in parts.into_iter().flatten() {
        let reader = match snap.exe_key {
            0 => pid,
            key => by_exe.get(&key).copied().unwrap_or(pid),
        };
        snap.exe = exes.get(&reader).cloned();
        out.insert(pid, snap);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_letters_match_the_kernel() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(1, 0), 'S');
        assert_eq!(state_letter(0x2001, 0), 'S'); // interruptible + freezable
        assert_eq!(state_letter(2, 0), 'D');
        assert_eq!(state_letter(0x402, 0), 'I');
        assert_eq!(state_letter(4, 0), 'T');
        assert_eq!(state_letter(8, 0), 't');
        assert_eq!(state_letter(0x80, 0x20), 'Z');
    }

    #[test]
    fn records_round_trip_and_cut_records_are_errors() {
        let rec = TaskSnapshot {
            pid: 7,
            cmdline_len: 6,
            ..TaskSnapshot::default()
        };
        // SAFETY: TaskSnapshot is plain data.
        let mut bytes = unsafe {
            std::slice::from_raw_parts(
                (&rec as *const TaskSnapshot).cast::<u8>(),
                std::mem::size_of::<TaskSnapshot>(),
            )
        }
        .to_vec();
        bytes.extend_from_slice(b"sh\0-c\0");
        let parsed = parse_records(&bytes).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0.pid, 7);
        assert_eq!(join_args(parsed[0].1), "sh -c");
        assert!(parse_records(&bytes[..bytes.len() - 1]).is_err());
    }
}
