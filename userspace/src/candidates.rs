//! Candidate collection: which processes belong to the selection, each with the evidence
//! that says so. Evidence comes from the kernel's tags, from the service's cgroup when it has
//! a dedicated one, and from /proc descendants of the root process. A process with no
//! evidence is never a candidate.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use bpfkill_common::Tag;
use serde::Serialize;

use crate::{
    cgroup::{self, Dedicated},
    error::Result,
    escape::{self, Reason},
    identity,
    service::Resolved,
    tracking::Tracking,
};

/// Which processes of the selection to signal (as systemctl's `--kill-whom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Whom {
    /// Only the main process (or the named PID).
    Main,
    /// Every process.
    #[default]
    All,
    /// Only processes that escaped (see `bpfkill ps --escaped`).
    Escaped,
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

/// Maps a tag's creator link to the creator's own creator link, through live tags and the
/// ghosts of exited processes, checking start times at every step.
fn creator_of(tracking: &Tracking, tags: &HashMap<u32, Tag>, pid: u32, start_ns: u64) -> Option<(u32, u64)> {
    let ticks = identity::ns_to_ticks(start_ns);
    if let Some(t) = tags
        .get(&pid)
        .filter(|t| identity::ns_to_ticks(t.start_ns) == ticks)
    {
        return (t.creator_pid != 0).then_some((t.creator_pid, t.creator_start_ns));
    }
    let g = tracking
        .ghost(pid)
        .filter(|g| identity::ns_to_ticks(g.start_ns) == ticks)?;
    (g.creator_pid != 0).then_some((g.creator_pid, g.creator_start_ns))
}

/// True when the tagged process (pid, start) descends from `root` by recorded creators.
fn descends_by_lineage(
    tracking: &Tracking,
    tags: &HashMap<u32, Tag>,
    pid: u32,
    start_ns: u64,
    root: (u32, u64),
) -> bool {
    let mut cur = (pid, start_ns);
    for _ in 0..4096 {
        if cur.0 == root.0 && identity::ns_to_ticks(cur.1) == root.1 {
            return true;
        }
        match creator_of(tracking, tags, cur.0, cur.1) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    false
}

/// Every live (not zombie) process, with its parent and start time.
pub fn parent_map() -> HashMap<u32, (u32, u64)> {
    let mut map = HashMap::new();
    if let Ok(procs) = procfs::process::all_processes() {
        for p in procs.flatten() {
            if let Ok(stat) = p.stat() {
                if !identity::is_dead(&stat) {
                    map.insert(stat.pid as u32, (stat.ppid as u32, stat.starttime));
                }
            }
        }
    }
    map
}

/// /proc descendants of `root` (not including it).
fn proc_descendants(root: u32, parents: &HashMap<u32, (u32, u64)>) -> Vec<(u32, u64)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &(ppid, _)) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if c != root && out.len() < parents.len() {
                out.push((c, parents[&c].1));
                stack.push(c);
            }
        }
    }
    out
}

/// Collects the candidates of the selection, ordered by PID.
pub fn collect(tracking: &Tracking, sel: &Selection) -> Result<Vec<Candidate>> {
    let service_id = sel.target.service.id;
    let tags: HashMap<u32, Tag> = tracking.service_tags(service_id).into_iter().collect();
    let parents = parent_map();
    let root = sel.target.root;
    let root_alive = root.is_some_and(|(pid, ticks)| parents.get(&pid).is_some_and(|p| p.1 == ticks));
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
            let Some(root) = root else { continue };
            if !descends_by_lineage(tracking, &tags, pid, tag.start_ns, root) {
                continue;
            }
        }
        add(pid, identity::ns_to_ticks(tag.start_ns), Some(*tag), &|e| {
            e.tag = true
        });
    }
    if let (Some((root_pid, root_ticks)), true) = (root, root_alive) {
        add(root_pid, root_ticks, None, &|e| e.proc = true);
        for (pid, ticks) in proc_descendants(root_pid, &parents) {
            add(pid, ticks, None, &|e| e.proc = true);
        }
    }
    if let (Some(dedicated), false) = (&sel.cgroup, sel.target.subtree) {
        let members = cgroup::members(&dedicated.dir)?;
        for &pid in &members {
            if let Some(&(_, ticks)) = parents.get(&pid) {
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
        let creator = (tag.creator_pid != 0)
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
    fn descendants_from_parent_map() {
        let parents: HashMap<u32, (u32, u64)> = [
            (10, (1, 0)),
            (11, (10, 0)),
            (12, (11, 0)),
            (13, (1, 0)),
            (14, (13, 0)),
        ]
        .into_iter()
        .collect();
        let mut d: Vec<u32> = proc_descendants(10, &parents)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        d.sort();
        assert_eq!(d, vec![11, 12]);
        assert!(proc_descendants(14, &parents).is_empty());
    }

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
