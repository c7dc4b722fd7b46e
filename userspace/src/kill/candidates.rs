//! Candidate collection: which processes belong to the selection, each with the evidence
//! that says so. Evidence comes from the kernel's tags, from the service's cgroup when it has
//! a dedicated one, and from /proc descendants of the root process. A process with no
//! evidence is never a candidate.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use bpfkill_common::{tag_flags, Tag};
use serde::Serialize;

use super::resolve::Resolved;
use crate::{
    error::{Error, Result},
    lineage::{
        escape::{self, Reason},
        tree::Creators,
    },
    sys::{
        cgroup::{self, Dedicated},
        clock,
        procs::{self, ProcTable},
    },
    tracking::Tracking,
};

/// Which processes of the selection to signal (as systemctl's `--kill-whom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Whom {
    /// Only the main process (or the named PID).
    Main,
    /// Every process.
    #[default]
    All,
    /// Only processes that escaped (see `bpfkill ps --escaped`).
    Escaped,
}

impl Whom {
    /// The names `--kill-whom` accepts.
    pub const NAMES: [&'static str; 3] = ["main", "all", "escaped"];
}

impl std::str::FromStr for Whom {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "main" => Ok(Whom::Main),
            "all" => Ok(Whom::All),
            "escaped" => Ok(Whom::Escaped),
            other => Err(Error::Usage(format!(
                "invalid --kill-whom {other:?}: use main, all or escaped"
            ))),
        }
    }
}

/// Why a process is believed to belong to the selection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Tagged in the kernel (forked by a tracked process, or registered by run/track).
    pub tag: bool,
    /// A member of the service's dedicated cgroup.
    pub cgroup: bool,
    /// A /proc descendant of the root process.
    pub proc: bool,
}

impl Evidence {
    /// Adds what `other` knows.
    pub fn merge(&mut self, other: Evidence) {
        self.tag |= other.tag;
        self.cgroup |= other.cgroup;
        self.proc |= other.proc;
    }

    /// The evidence as a list of names, for reports.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.tag {
            v.push("tag");
        }
        if self.cgroup {
            v.push("cgroup");
        }
        if self.proc {
            v.push("proc");
        }
        v
    }
}

/// A process that may be signalled.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its tgid.
    pub pid: u32,
    /// Its start time in /proc ticks: the tag's, else what /proc said when it was collected.
    pub start_ticks: u64,
    /// Its tag, when tagged.
    pub tag: Option<Tag>,
    /// The evidence.
    pub evidence: Evidence,
    /// True when a dedicated cgroup is in use and this tagged process is not in it.
    pub left_cgroup: bool,
    /// Escape reasons (computed for `--kill-whom escaped`).
    pub escape: Vec<Reason>,
}

impl Candidate {
    /// A process known by its tag alone.
    pub fn tagged(pid: u32, tag: Tag) -> Self {
        Self {
            pid,
            start_ticks: clock::ns_to_ticks(tag.start_ns),
            tag: Some(tag),
            evidence: Evidence {
                tag: true,
                ..Evidence::default()
            },
            left_cgroup: false,
            escape: Vec::new(),
        }
    }
}

/// What to collect.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The resolved target.
    pub target: Resolved,
    /// Which processes.
    pub whom: Whom,
    /// The dedicated cgroup, when there is one.
    pub cgroup: Option<Dedicated>,
}

/// Collects the candidates of the selection, ordered by PID.
pub fn collect(tracking: &Tracking, sel: &Selection) -> Result<Vec<Candidate>> {
    let service_id = sel.target.service.id;
    let tags: HashMap<u32, Tag> = tracking.service_tags(service_id).into_iter().collect();
    let root = sel.target.root;
    // The whole /proc is walked only for the descendants of a live root: once the root is
    // gone (as in every pass of a kill after the first), that evidence is gone too.
    let root_alive = root.is_some_and(|(pid, ticks)| {
        procs::stat(pid).is_some_and(|st| !procs::is_dead(&st) && st.starttime == ticks)
    });
    let procs = if root_alive {
        ProcTable::scan()
    } else {
        ProcTable::default()
    };
    let creators = Creators::new(tracking, &tags);
    let mut by_key: BTreeMap<(u32, u64), Candidate> = BTreeMap::new();
    let mut add = |pid: u32, ticks: u64, tag: Option<Tag>, f: &dyn Fn(&mut Evidence)| {
        let c = by_key.entry((pid, ticks)).or_insert_with(|| Candidate {
            pid,
            start_ticks: ticks,
            tag: None,
            evidence: Evidence::default(),
            left_cgroup: false,
            escape: Vec::new(),
        });
        if tag.is_some() {
            c.tag = tag;
        }
        f(&mut c.evidence);
    };

    for (&pid, tag) in &tags {
        if sel.target.subtree {
            let Some((root_pid, root_ticks)) = root else {
                continue;
            };
            if !creators.descends_from((pid, tag.start_ns), (root_pid, clock::ticks_to_ns(root_ticks))) {
                continue;
            }
        }
        add(pid, clock::ns_to_ticks(tag.start_ns), Some(*tag), &|e| {
            e.tag = true
        });
    }
    if let (Some((root_pid, root_ticks)), true) = (root, root_alive) {
        add(root_pid, root_ticks, None, &|e| e.proc = true);
        // A process that left the service through one of its boundaries (it exec'd a
        // `leave_exe` binary, and the kernel removed its tag) takes its subtree with it.
        let left = |pid: u32| {
            !tags.contains_key(&pid)
                && procs::exe_key(pid).is_some_and(|exe| tracking.is_boundary(exe, service_id))
        };
        for (pid, ticks) in procs.descendants_within(root_pid, |p| !left(p)) {
            add(pid, ticks, None, &|e| e.proc = true);
        }
    }
    if let (Some(dedicated), false) = (&sel.cgroup, sel.target.subtree) {
        let members = cgroup::members(&dedicated.dir)?;
        for &pid in &members {
            let ticks = procs.start_ticks(pid).or_else(|| {
                procs::stat(pid)
                    .filter(|st| !procs::is_dead(st))
                    .map(|st| st.starttime)
            });
            if let Some(ticks) = ticks {
                add(pid, ticks, None, &|e| e.cgroup = true);
            }
        }
        for c in by_key.values_mut() {
            c.left_cgroup = c.evidence.tag && !c.evidence.cgroup;
        }
    }

    let mut out: Vec<Candidate> = by_key.into_values().collect();
    match sel.whom {
        Whom::All => {}
        Whom::Main => out.retain(|c| root.is_some_and(|(p, t)| c.pid == p && c.start_ticks == t)),
        Whom::Escaped => {
            annotate_escapes(&mut out, root);
            out.retain(|c| !c.escape.is_empty());
        }
    }
    Ok(out)
}

/// The tagged processes of a service, from one read of the tag map: the evidence a kill has
/// at hand before it looks at /proc or cgroups.
pub fn tagged(tracking: &Tracking, service_id: u32) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = tracking
        .service_tags(service_id)
        .into_iter()
        .map(|(pid, tag)| Candidate::tagged(pid, tag))
        .collect();
    out.sort_unstable_by_key(|c| c.pid);
    out
}

/// For a PID subtree: the tagged processes of the service that the subtree leaves out
/// because their lineage is unknown (they, or the ancestor their recorded lineage stops at,
/// were adopted by `track`), so they may descend from the root without bpfkill knowing.
pub fn unknown_lineage(tracking: &Tracking, sel: &Selection, selected: &[Candidate]) -> Vec<u32> {
    let Some((root_pid, root_ticks)) = sel.target.root.filter(|_| sel.target.subtree) else {
        return Vec::new();
    };
    let tags: HashMap<u32, Tag> = tracking.service_tags(sel.target.service.id).into_iter().collect();
    let creators = Creators::new(tracking, &tags);
    let root = (root_pid, clock::ticks_to_ns(root_ticks));
    let mut out: Vec<u32> = tags
        .iter()
        .filter(|(pid, _)| !selected.iter().any(|c| c.pid == **pid))
        .filter(|(&pid, tag)| {
            let (top, _) = creators.topmost((pid, tag.start_ns));
            top != root.0
                && tags
                    .get(&top)
                    .is_some_and(|t| t.flags & tag_flags::ADOPTED != 0 && t.flags & tag_flags::MAIN == 0)
        })
        .map(|(&pid, _)| pid)
        .collect();
    out.sort_unstable();
    out
}

/// Fills in the escape reasons of tagged candidates.
pub fn annotate_escapes(cands: &mut [Candidate], root: Option<(u32, u64)>) {
    let v2: Option<PathBuf> = cgroup::v2_mount();
    let main = root.and_then(|(p, _)| escape::Facts::read(p, v2.as_deref()));
    let ctx = escape::Context { main: main.as_ref() };
    for c in cands.iter_mut() {
        let Some(tag) = c.tag else { continue };
        let Some(facts) = escape::Facts::read(c.pid, v2.as_deref()) else {
            continue;
        };
        // The creator, if the process holding its PID number is still it.
        let creator = (tag.creator_pid != 0
            && procs::start_ticks(tag.creator_pid) == Some(clock::ns_to_ticks(tag.creator_start_ns)))
        .then(|| escape::Facts::read(tag.creator_pid, v2.as_deref()))
        .flatten();
        c.escape = escape::reasons(&tag, &facts, creator.as_ref(), &ctx);
        if c.left_cgroup && !c.escape.contains(&Reason::LeftCgroup) {
            c.escape.push(Reason::LeftCgroup);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_names() {
        let e = Evidence {
            tag: true,
            cgroup: false,
            proc: true,
        };
        assert_eq!(e.names(), vec!["tag", "proc"]);
    }
}
