//! /proc: a process's stat, and the one walk of the process tree by parent PID (descendants
//! of a root for `track` and the kill's `proc` evidence, ancestors for the guard).

use std::collections::HashMap;

use procfs::{
    process::{Process, Stat},
    FromRead,
};

/// `/proc/PID/stat` of a process, or None when it does not exist: open, one read, close (a
/// kill verifies every target with it, after opening its pidfd and before signalling).
pub fn stat(pid: u32) -> Option<Stat> {
    let mut buf = Vec::with_capacity(512);
    read_small(&format!("/proc/{pid}/stat"), &mut buf)?;
    Stat::from_read(buf.as_slice()).ok()
}

/// False only when the kernel has no process `pid`: kill(2) with signal 0 answers ESRCH. (A
/// /proc read that fails says less: /proc may be another namespace's, or out of descriptors.)
/// A zombie is still a process here.
pub fn exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Start time of `pid` in /proc ticks, or None when it does not exist.
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.starttime)
}

/// The raw `comm` of a process (its name, up to 15 bytes), NUL-padded as the kernel keeps it.
pub fn comm(pid: u32) -> Option<[u8; 16]> {
    let mut buf = Vec::with_capacity(32);
    read_small(&format!("/proc/{pid}/comm"), &mut buf)?;
    let name = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name[..n]);
    Some(out)
}

/// The real and saved user ids of a process (the ids kill(2) compares with the sender's), or
/// None when it does not exist.
pub fn uids(pid: u32) -> Option<(u32, u32)> {
    let status = Process::new(i32::try_from(pid).ok()?).ok()?.status().ok()?;
    Some((status.ruid, status.suid))
}

/// The kernel's identity (device, inode) of the file a process runs, as its exec recorded
/// it; None when it has exited or is a kernel thread.
pub fn exe_key(pid: u32) -> Option<(u64, u64)> {
    crate::sys::files::exe_key(std::path::Path::new(&format!("/proc/{pid}/exe")))
}

/// True when the process has exited, though it still has a /proc entry: a zombie with no
/// live thread. (A leader that exited before its other threads shows `Z` too, but its process
/// lives on in them.)
pub fn is_dead(stat: &Stat) -> bool {
    matches!(stat.state, 'Z' | 'X' | 'x') && stat.num_threads <= 1
}

/// The ancestors of `pid`, nearest first, up to (not including) PID 1. Bounded against a
/// pathological /proc.
pub fn ancestors(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = pid;
    for _ in 0..4096 {
        let Some(ppid) = stat(cur).and_then(|s| u32::try_from(s.ppid).ok()) else {
            break;
        };
        if ppid <= 1 || ppid == cur {
            break;
        }
        out.push(ppid);
        cur = ppid;
    }
    out
}

/// One scan of /proc: every live (not dead) process with its parent and start time.
#[derive(Debug, Clone, Default)]
pub struct ProcTable {
    procs: HashMap<u32, (u32, u64)>,
}

impl ProcTable {
    /// Reads every process once.
    pub fn scan() -> Self {
        let mut procs = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Self { procs };
        };
        let pids = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
        for pid in pids {
            if let Some(stat) = stat(pid).filter(|s| !is_dead(s)) {
                procs.insert(pid, (stat.ppid as u32, stat.starttime));
            }
        }
        Self { procs }
    }

    /// A table from (pid, ppid, start ticks) rows.
    pub fn from_rows(rows: impl IntoIterator<Item = (u32, u32, u64)>) -> Self {
        Self {
            procs: rows.into_iter().map(|(p, pp, t)| (p, (pp, t))).collect(),
        }
    }

    /// Every process: (pid, ppid, start ticks).
    pub fn rows(&self) -> impl Iterator<Item = (u32, u32, u64)> + '_ {
        self.procs.iter().map(|(&pid, &(ppid, ticks))| (pid, ppid, ticks))
    }

    /// Start time in ticks of a live `pid`.
    pub fn start_ticks(&self, pid: u32) -> Option<u64> {
        self.procs.get(&pid).map(|&(_, t)| t)
    }

    /// True when `pid` is alive and started at `ticks`.
    pub fn is_alive(&self, pid: u32, ticks: u64) -> bool {
        self.start_ticks(pid) == Some(ticks)
    }

    /// The descendants of `root` by parent PID (not including it), with their start ticks.
    pub fn descendants(&self, root: u32) -> Vec<(u32, u64)> {
        self.descendants_within(root, |_| true)
    }

    /// As [`Self::descendants`], without a process for which `within` is false, or anything
    /// below it.
    pub fn descendants_within(&self, root: u32, mut within: impl FnMut(u32) -> bool) -> Vec<(u32, u64)> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&pid, &(ppid, _)) in &self.procs {
            children.entry(ppid).or_default().push(pid);
        }
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(p) = stack.pop() {
            for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
                if c != root && out.len() < self.procs.len() && within(c) {
                    out.push((c, self.procs[&c].1));
                    stack.push(c);
                }
            }
        }
        out
    }
}

/// Reads a small /proc file into `buf` with as few system calls as possible (open, one read
/// per 4 KiB, close): a short read means the end of a /proc file.
pub fn read_small(path: &str, buf: &mut Vec<u8>) -> Option<()> {
    use rustix::fs::{open, Mode, OFlags};
    let fd = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    buf.clear();
    loop {
        let len = buf.len();
        buf.resize(len + 4096, 0);
        let n = rustix::io::read(&fd, &mut buf[len..]).ok()?;
        buf.truncate(len + n);
        if n < 4096 {
            return Some(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_by_parent() {
        let t = ProcTable::from_rows([(10, 1, 0), (11, 10, 0), (12, 11, 0), (13, 1, 0), (14, 13, 0)]);
        let mut d: Vec<u32> = t.descendants(10).into_iter().map(|(p, _)| p).collect();
        d.sort();
        assert_eq!(d, vec![11, 12]);
        assert!(t.descendants(14).is_empty());
    }

    #[test]
    fn descendants_within_leave_out_a_subtree() {
        let t = ProcTable::from_rows([(10, 1, 0), (11, 10, 0), (12, 11, 0), (13, 10, 0)]);
        let mut d: Vec<u32> = t
            .descendants_within(10, |p| p != 11)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        d.sort();
        assert_eq!(d, vec![13]);
    }

    #[test]
    fn own_comm_is_read_raw() {
        let me = comm(std::process::id()).expect("own comm");
        let stat_comm = stat(std::process::id()).unwrap().comm;
        assert_eq!(bpfkill_common::user::c_str(&me), stat_comm);
    }

    #[test]
    fn own_ancestors_include_the_parent() {
        let parent = std::os::unix::process::parent_id();
        let a = ancestors(std::process::id());
        if parent > 1 {
            assert_eq!(a.first(), Some(&parent));
        }
        assert!(!a.contains(&1));
    }
}
