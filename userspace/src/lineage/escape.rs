//! Escape reasons: how a tagged process left where its service's process tree would have put
//! it. Each reason compares the process with what the kernel recorded when it was created
//! (its creator, cgroup and name) or with its creator now, never with a guess, so that plain
//! `sh -c 'sleep 1 & exec sleep 2'` shows no escape at all.

use std::{borrow::Cow, path::Path};

use bpfkill_common::{tag_flags, user::c_str, Tag};
use procfs::process::Process;
use serde::Serialize;

/// One way a process escaped. The names are part of the JSON interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Its parent is no longer its creator (adopted by init or a subreaper).
    Reparented,
    /// Its cgroup differs from the one it was forked in.
    LeftCgroup,
    /// It called setsid: it leads a session of its own, or its session differs from its
    /// creator's (the main process's when the creator has exited).
    NewSession,
    /// It moved to a process group of its own (setpgid) within its session: `kill -- -PGID`
    /// of its creator's group misses it. Not reported on top of a new session (setsid makes
    /// a new group too).
    NewPgrp,
    /// It lives in another PID namespace than its creator (or the main process).
    NewPidns,
    /// Its name differs from the one the kernel gave it at its fork or last exec.
    Renamed,
    /// It exec'd a binary that neither its creator nor the service's main process runs.
    Exec,
}

impl Reason {
    /// A short form for narrow columns (`ps` without `--wide`).
    pub fn abbrev(self) -> &'static str {
        match self {
            Reason::Reparented => "rep",
            Reason::LeftCgroup => "cg",
            Reason::NewSession => "sid",
            Reason::NewPgrp => "pg",
            Reason::NewPidns => "ns",
            Reason::Renamed => "ren",
            Reason::Exec => "exe",
        }
    }

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Reparented => "reparented",
            Reason::LeftCgroup => "left-cgroup",
            Reason::NewSession => "new-session",
            Reason::NewPgrp => "new-pgrp",
            Reason::NewPidns => "new-pidns",
            Reason::Renamed => "renamed",
            Reason::Exec => "exec",
        }
    }
}

/// What /proc says about a process, as far as escapes are concerned. Borrows its strings
/// when built from a snapshot that outlives it (a listing of 10,000 processes copies none).
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// Its PID.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// Session id.
    pub sid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Inode of its PID namespace.
    pub pidns: Option<u64>,
    /// Its cgroup v2 id now.
    pub cgroup_id: Option<u64>,
    /// comm.
    pub comm: Cow<'a, str>,
    /// Resolved exe.
    pub exe: Option<Cow<'a, str>>,
}

impl Facts<'static> {
    /// Reads the facts of `pid`; None when it is gone.
    pub fn read(pid: u32, cgroup_v2: Option<&Path>) -> Option<Self> {
        let p = Process::new(pid as i32).ok()?;
        let stat = p.stat().ok()?;
        Some(Self {
            pid,
            ppid: stat.ppid as u32,
            sid: stat.session as u32,
            pgid: stat.pgrp as u32,
            pidns: p
                .namespaces()
                .ok()
                .and_then(|ns| ns.0.get(std::ffi::OsStr::new("pid")).map(|n| n.identifier)),
            cgroup_id: cgroup_v2.and_then(|m| crate::sys::cgroup::v2_id(pid, m)),
            comm: Cow::Owned(stat.comm),
            exe: p.exe().ok().map(|e| Cow::Owned(e.to_string_lossy().into_owned())),
        })
    }
}

/// Context shared by every process of a service: the main process's facts, and the exe of
/// each live creator (looked up by the caller).
pub struct Context<'a> {
    /// Facts of the service's main process, when it is alive.
    pub main: Option<&'a Facts<'a>>,
}

/// The escape reasons of a process with tag `tag` and facts `facts`; `creator` are the
/// creator's facts when the creator (the same process, not a reused PID) is alive.
pub fn reasons(tag: &Tag, facts: &Facts<'_>, creator: Option<&Facts<'_>>, ctx: &Context<'_>) -> Vec<Reason> {
    let mut out = Vec::new();
    let forked = tag.flags & tag_flags::FORKED != 0;
    if forked && tag.creator_pid != facts.ppid {
        out.push(Reason::Reparented);
    }
    if forked && tag.cgroup_id != 0 && facts.cgroup_id.is_some_and(|id| id != tag.cgroup_id) {
        out.push(Reason::LeftCgroup);
    }
    // Compared with the creator, or, when it has exited, with the service's main process.
    let reference = creator.or(ctx.main);
    // A forked child starts in its creator's session and process group, never as a leader
    // of either: leading one is setsid's or setpgid's doing. Another session or group counts
    // only when it is neither the creator's (which may have moved on after the fork) nor the
    // main process's; a creator that has exited leaves the main's as the reference, since
    // the kernel does not record the session a process was forked in.
    let elsewhere = |id: fn(&Facts<'_>) -> u32| {
        let refs = [creator, ctx.main];
        refs.iter().any(Option::is_some) && refs.iter().flatten().all(|r| id(r) != id(facts))
    };
    if forked && (facts.sid == facts.pid || elsewhere(|f| f.sid)) {
        out.push(Reason::NewSession);
    } else if forked && (facts.pgid == facts.pid || elsewhere(|f| f.pgid)) {
        out.push(Reason::NewPgrp);
    }
    if forked {
        let ns = reference.and_then(|f| f.pidns);
        if facts.pidns.is_some() && ns.is_some() && facts.pidns != ns {
            out.push(Reason::NewPidns);
        }
    }
    let given = c_str(&tag.comm);
    if !given.is_empty() && facts.comm != given {
        out.push(Reason::Renamed);
    }
    if forked && tag.flags & tag_flags::EXECED != 0 {
        let known = |f: Option<&Facts<'_>>| {
            f.and_then(|f| f.exe.as_ref())
                .is_some_and(|exe| facts.exe.as_ref() == Some(exe))
        };
        if facts.exe.is_some() && !known(creator) && !known(ctx.main) {
            out.push(Reason::Exec);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pid: u32, ppid: u32, sid: u32, comm: &'static str, exe: &'static str) -> Facts<'static> {
        Facts {
            pid,
            ppid,
            sid,
            pgid: sid,
            pidns: Some(1),
            cgroup_id: Some(10),
            comm: comm.into(),
            exe: Some(exe.into()),
        }
    }

    fn comm(name: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..name.len()].copy_from_slice(name.as_bytes());
        c
    }

    fn forked(creator: u32, name: &str) -> Tag {
        Tag {
            flags: tag_flags::FORKED,
            creator_pid: creator,
            cgroup_id: 10,
            comm: comm(name),
            ..Tag::default()
        }
    }

    #[test]
    fn a_plain_shell_pipeline_has_no_escape() {
        // sh -c 'sleep 1 & exec sleep 2': the main process exec'd sleep, its child exec'd
        // sleep too, both in the main's session, both named by exec.
        let main = facts(100, 1, 100, "sleep", "/usr/bin/sleep");
        let ctx = Context { main: Some(&main) };
        let child = Tag {
            flags: tag_flags::FORKED | tag_flags::EXECED,
            ..forked(100, "sleep")
        };
        let f = facts(101, 100, 100, "sleep", "/usr/bin/sleep");
        assert!(reasons(&child, &f, Some(&main), &ctx).is_empty());
        // `sh` is named sh by exec even though /bin/sh is dash: not a rename.
        let sh = facts(102, 100, 100, "sh", "/usr/bin/dash");
        let sh_tag = Tag {
            flags: tag_flags::FORKED | tag_flags::EXECED,
            ..forked(100, "sh")
        };
        assert_eq!(reasons(&sh_tag, &sh, Some(&main), &ctx), vec![Reason::Exec]);
    }

    #[test]
    fn each_reason() {
        let main = facts(5, 1, 5, "svc", "/usr/bin/svc");
        let ctx = Context { main: Some(&main) };
        let tag = forked(5, "svc");
        let r = reasons(&tag, &facts(6, 1, 6, "kworker", "/usr/bin/svc"), None, &ctx);
        assert_eq!(r, vec![Reason::Reparented, Reason::NewSession, Reason::Renamed]);
        let mut moved = facts(6, 5, 5, "svc", "/usr/bin/svc");
        moved.cgroup_id = Some(11);
        moved.pidns = Some(2);
        assert_eq!(
            reasons(&tag, &moved, Some(&main), &ctx),
            vec![Reason::LeftCgroup, Reason::NewPidns]
        );
        // The creator called setsid after forking: the child still shares the main's
        // session, and went nowhere.
        let creator = facts(7, 5, 7, "svc", "/usr/bin/svc");
        let under = facts(8, 7, 5, "svc", "/usr/bin/svc");
        assert!(reasons(&forked(7, "svc"), &under, Some(&creator), &ctx).is_empty());
        // A child that stayed in its live creator's new session and group went nowhere
        // either: the escape was the creator's.
        let inherited = facts(10, 7, 7, "svc", "/usr/bin/svc");
        assert!(reasons(&forked(7, "svc"), &inherited, Some(&creator), &ctx).is_empty());
        // A session that is neither the live creator's nor the main's, without leading it.
        let elsewhere = facts(11, 7, 3, "svc", "/usr/bin/svc");
        assert_eq!(
            reasons(&forked(7, "svc"), &elsewhere, Some(&creator), &ctx),
            vec![Reason::NewSession]
        );
        // setpgid(0, 0) in the creator's session: a group of its own.
        let leader = Facts {
            pgid: 8,
            ..facts(8, 7, 7, "svc", "/usr/bin/svc")
        };
        assert_eq!(
            reasons(&forked(7, "svc"), &leader, Some(&creator), &ctx),
            vec![Reason::NewPgrp]
        );
        // Joined another group of the session without leading it.
        let joined = Facts {
            pgid: 3,
            ..facts(9, 7, 7, "svc", "/usr/bin/svc")
        };
        assert_eq!(
            reasons(&forked(7, "svc"), &joined, Some(&creator), &ctx),
            vec![Reason::NewPgrp]
        );
        let execed = Tag {
            flags: tag_flags::FORKED | tag_flags::EXECED,
            ..forked(5, "nc")
        };
        assert_eq!(
            reasons(&execed, &facts(9, 5, 5, "nc", "/usr/bin/nc"), Some(&main), &ctx),
            vec![Reason::Exec]
        );
    }

    #[test]
    fn main_and_adopted_processes_only_show_renames() {
        let ctx = Context { main: None };
        let main = Tag {
            flags: tag_flags::MAIN | tag_flags::EXECED,
            comm: comm("svc"),
            ..Tag::default()
        };
        assert!(reasons(&main, &facts(5, 1, 5, "svc", "/usr/bin/svc"), None, &ctx).is_empty());
        assert_eq!(
            reasons(&main, &facts(5, 1, 5, "other", "/usr/bin/svc"), None, &ctx),
            vec![Reason::Renamed]
        );
        // Tags without a recorded name never claim a rename.
        let unnamed = Tag::default();
        assert!(reasons(&unnamed, &facts(5, 1, 5, "x", "/usr/bin/y"), None, &ctx).is_empty());
    }
}
