//! Guard rails: processes bpfkill never signals, whatever their tags say.

use std::collections::HashMap;

use procfs::process::Stat;

use crate::sys::procs;

/// `PF_KTHREAD` in `/proc/PID/stat` flags.
const PF_KTHREAD: u32 = 0x0020_0000;

/// Why a process is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// PID 1.
    Init,
    /// A kernel thread.
    KernelThread,
    /// The bpfkill process itself.
    Myself,
    /// An ancestor of bpfkill (its shell, its supervisor, ...).
    Ancestor,
    /// Another user's process, in a kill made for an unprivileged user.
    OtherUser,
}

impl Protected {
    /// A short reason for reports.
    pub fn reason(self) -> &'static str {
        match self {
            Protected::Init => "PID 1 is never signalled",
            Protected::KernelThread => "kernel threads are never signalled",
            Protected::Myself => "bpfkill never signals itself",
            Protected::Ancestor => "bpfkill never signals its own ancestors",
            Protected::OtherUser => "another user's process: never signalled for this user",
        }
    }
}

/// The set of protected PIDs, computed once per run.
#[derive(Debug, Clone)]
pub struct Guard {
    fixed: HashMap<u32, Protected>,
    /// Signal only processes of this user (real or saved uid, as kill(2) checks).
    owner: Option<u32>,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Guard {
    /// Protects PID 1, this process and every ancestor of it.
    pub fn new() -> Self {
        let mut fixed = HashMap::new();
        fixed.insert(1, Protected::Init);
        let me = std::process::id();
        fixed.insert(me, Protected::Myself);
        for pid in procs::ancestors(me) {
            fixed.entry(pid).or_insert(Protected::Ancestor);
        }
        Self { fixed, owner: None }
    }

    /// The same rails, and only processes of user `uid` (as kill(2) would allow that user):
    /// a kill made on an unprivileged user's behalf, at the request of process `caller` (that
    /// user's bpfkill). The caller and its ancestors are protected as this process and its
    /// own are: a job whose command could not be handed over still has the caller as its main
    /// process, and its end must not kill the bpfkill that asked for it.
    pub fn for_user(uid: u32, caller: u32) -> Self {
        let mut g = Self {
            owner: Some(uid),
            ..Self::new()
        };
        g.fixed.entry(caller).or_insert(Protected::Myself);
        for pid in procs::ancestors(caller) {
            g.fixed.entry(pid).or_insert(Protected::Ancestor);
        }
        g
    }

    /// PID 1, bpfkill and its ancestors.
    pub fn protected_pids(&self) -> Vec<u32> {
        self.fixed.keys().copied().collect()
    }

    /// Why `pid` must not be signalled, if it must not.
    pub fn check(&self, pid: u32, stat: Option<&Stat>) -> Option<Protected> {
        if let Some(p) = self.fixed.get(&pid) {
            return Some(*p);
        }
        let is_kthread = match stat {
            Some(s) => s.flags & PF_KTHREAD != 0 || s.ppid == 2 || pid == 2,
            None => pid == 2,
        };
        if is_kthread {
            return Some(Protected::KernelThread);
        }
        match self.owner {
            Some(uid) => match procs::uids(pid) {
                Some((ruid, suid)) if ruid == uid || suid == uid => None,
                _ => Some(Protected::OtherUser),
            },
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protects_init_self_and_parent() {
        let g = Guard::new();
        assert_eq!(g.check(1, None), Some(Protected::Init));
        assert_eq!(g.check(std::process::id(), None), Some(Protected::Myself));
        let parent = std::os::unix::process::parent_id();
        if parent > 1 {
            assert_eq!(g.check(parent, None), Some(Protected::Ancestor));
        }
        assert_eq!(g.check(2, None), Some(Protected::KernelThread));
    }
}
