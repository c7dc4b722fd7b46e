//! Escape reasons: how a tagged process slipped out of its service's ordinary control.

use std::{borrow::Cow, path::Path};

use bpfkill_common::{tag_flags, Tag};
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
    /// It called setsid: its session differs from the main process's.
    NewSession,
    /// It lives in another PID namespace.
    NewPidns,
    /// Its comm differs from the basename of its exe.
    Renamed,
    /// It runs a different binary than its creator did.
    Exec,
}

impl Reason {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Reparented => "reparented",
            Reason::LeftCgroup => "left-cgroup",
            Reason::NewSession => "new-session",
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
    /// Parent PID.
    pub ppid: u32,
    /// Session id.
    pub sid: u32,
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
            ppid: stat.ppid as u32,
            sid: stat.session as u32,
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
/// creator's facts when the creator is alive.
pub fn reasons(tag: &Tag, facts: &Facts<'_>, creator: Option<&Facts<'_>>, ctx: &Context<'_>) -> Vec<Reason> {
    let mut out = Vec::new();
    let forked = tag.flags & tag_flags::FORKED != 0;
    if forked && tag.creator_pid != facts.ppid {
        out.push(Reason::Reparented);
    }
    if forked && tag.cgroup_id != 0 && facts.cgroup_id.is_some_and(|id| id != tag.cgroup_id) {
        out.push(Reason::LeftCgroup);
    }
    if let Some(main) = ctx.main {
        if facts.sid != main.sid {
            out.push(Reason::NewSession);
        }
        if facts.pidns.is_some() && main.pidns.is_some() && facts.pidns != main.pidns {
            out.push(Reason::NewPidns);
        }
    }
    if let Some(exe) = &facts.exe {
        let base = exe.rsplit('/').next().unwrap_or(exe);
        let base = base.strip_suffix(" (deleted)").unwrap_or(base);
        // comm is the first 15 bytes of the basename unless the process renamed itself (a
        // cut through a multi-byte character shows as U+FFFD at its end).
        let comm = facts.comm.trim_end_matches('\u{FFFD}');
        if !base.starts_with(comm) {
            out.push(Reason::Renamed);
        }
    }
    if forked && tag.flags & tag_flags::EXECED != 0 {
        let same_as_creator = match (creator.and_then(|c| c.exe.as_ref()), &facts.exe) {
            (Some(c), Some(me)) => c == me,
            _ => false,
        };
        if !same_as_creator {
            out.push(Reason::Exec);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(ppid: u32, sid: u32, comm: &'static str, exe: &'static str) -> Facts<'static> {
        Facts {
            ppid,
            sid,
            pidns: Some(1),
            cgroup_id: Some(10),
            comm: comm.into(),
            exe: Some(exe.into()),
        }
    }

    #[test]
    fn each_reason() {
        let tag = Tag {
            flags: tag_flags::FORKED,
            creator_pid: 5,
            cgroup_id: 10,
            ..Tag::default()
        };
        let main = facts(1, 100, "svc", "/usr/bin/svc");
        let ctx = Context { main: Some(&main) };
        assert!(reasons(&tag, &facts(5, 100, "svc", "/usr/bin/svc"), None, &ctx).is_empty());
        let r = reasons(&tag, &facts(1, 200, "kworker", "/usr/bin/svc"), None, &ctx);
        assert_eq!(r, vec![Reason::Reparented, Reason::NewSession, Reason::Renamed]);
        let mut moved = facts(5, 100, "svc", "/usr/bin/svc");
        moved.cgroup_id = Some(11);
        moved.pidns = Some(2);
        assert_eq!(
            reasons(&tag, &moved, None, &ctx),
            vec![Reason::LeftCgroup, Reason::NewPidns]
        );
        let execed = Tag {
            flags: tag_flags::FORKED | tag_flags::EXECED,
            ..tag
        };
        let main_execed = Tag {
            flags: tag_flags::MAIN | tag_flags::EXECED,
            ..Tag::default()
        };
        assert!(reasons(&main_execed, &facts(1, 100, "sh", "/bin/sh"), None, &ctx).is_empty());
        let creator = facts(1, 100, "svc", "/usr/bin/svc");
        assert!(reasons(
            &execed,
            &facts(5, 100, "svc", "/usr/bin/svc"),
            Some(&creator),
            &ctx
        )
        .is_empty());
        assert_eq!(
            reasons(&execed, &facts(5, 100, "sh", "/bin/sh"), Some(&creator), &ctx),
            vec![Reason::Exec]
        );
    }

    #[test]
    fn long_names_are_not_renames() {
        let tag = Tag::default();
        let f = facts(1, 1, "a-very-long-pro", "/opt/a-very-long-program-name");
        assert!(reasons(&tag, &f, None, &Context { main: None }).is_empty());
        // 15 bytes cut "é" (2 bytes) in half.
        let f = facts(1, 1, "abcdefghijklmn\u{FFFD}", "/usr/bin/abcdefghijklmnéx");
        assert!(reasons(&tag, &f, None, &Context { main: None }).is_empty());
    }
}
