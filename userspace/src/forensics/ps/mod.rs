//! `bpfkill ps`: the forensic live listing of tagged processes, as a table, a lineage tree
//! (from the recorded creators, not from ppid) or JSON.
//!
//! Process facts come in one read from the kernel's task iterator (or from /proc, once per
//! process, in parallel), so a listing of 10,000 processes stays fast (see `cargo xtask
//! bench`).

use std::{borrow::Cow, collections::HashMap, os::unix::fs::MetadataExt, path::Path, sync::Arc};

use bpfkill_common::{tag_flags, Tag};
use serde::Serialize;

pub mod render;
pub mod snapshot;

use self::snapshot::{in_parallel, Snapshot};
use crate::{
    error::Result,
    lineage::{
        escape::{self, Reason},
        registry::{self, Service},
    },
    sys::{cgroup, clock},
    tracking::{PinPaths, Tracking},
};

/// One live tagged process. Field names are part of the JSON interface (see README).
#[derive(Debug, Clone, Serialize)]
pub struct PsEntry {
    /// Its tgid.
    pub pid: u32,
    /// Its parent now.
    pub ppid: u32,
    /// The process that forked it (null when unknown: adopted by `track`, or the main process).
    pub creator_pid: Option<u32>,
    /// Whether that creator (the same process, not a reused number) is still alive.
    pub creator_alive: Option<bool>,
    /// Service name.
    pub service: Arc<str>,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
    /// Start time, RFC 3339 UTC.
    pub started: String,
    /// Real user id.
    pub uid: Option<u32>,
    /// comm.
    pub comm: String,
    /// Resolved /proc/PID/exe (null when unreadable).
    pub exe: Option<Arc<str>>,
    /// The command line, arguments joined by spaces.
    pub cmdline: String,
    /// State letter (R, S, D, T, Z, ...), a one-letter string in JSON.
    pub state: char,
    /// Its cgroup v2 path now (null without cgroup v2).
    pub cgroup: Option<Arc<str>>,
    /// The cgroup v2 path it was forked in (null when unknown or since removed).
    pub cgroup_at_fork: Option<Arc<str>>,
    /// Session id.
    pub sid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Inode of its PID namespace.
    pub pidns: Option<u64>,
    /// True when any escape reason applies.
    pub escaped: bool,
    /// How it escaped.
    pub escape_reasons: Vec<Reason>,
    /// `forked` (tagged at fork), `recovered` (forked, tagged late from the fork backstop's
    /// record), `main` (registered by run/track), `adopted` or `unknown`.
    pub lineage: &'static str,
    /// The kernel's tag (the creator's start time, for the lineage tree).
    #[serde(skip)]
    pub tag: Tag,
}

/// A tagged process and its service.
type Tagged<'a> = (u32, Tag, &'a Service);

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    /// One service (all when None).
    pub service: Option<&'a str>,
    /// Only escaped processes.
    pub escaped_only: bool,
}

/// cgroup v2 ids (directory inodes) to paths, for `cgroup_at_fork`.
fn cgroup_paths(mount: &Path) -> HashMap<u64, Arc<str>> {
    fn walk(dir: &Path, rel: &str, out: &mut HashMap<u64, Arc<str>>, depth: usize) {
        if let Ok(m) = std::fs::metadata(dir) {
            out.insert(m.ino(), if rel.is_empty() { "/".into() } else { rel.into() });
        }
        if depth > 32 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                walk(&e.path(), &format!("{rel}/{name}"), out, depth + 1);
            }
        }
    }
    let mut out = HashMap::new();
    walk(mount, "", &mut out, 0);
    out
}

fn rfc3339(unix_ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
    humantime::format_rfc3339_millis(t).to_string()
}

fn facts(pid: u32, s: &Snapshot, cgroup_id: Option<u64>) -> escape::Facts<'_> {
    escape::Facts {
        pid,
        ppid: s.ppid,
        sid: s.sid,
        pgid: s.pgid,
        pidns: s.pidns,
        cgroup_id,
        comm: Cow::Borrowed(&s.comm),
        exe: s.exe.as_deref().map(Cow::Borrowed),
    }
}

/// Lists the live tagged processes the query selects, sorted by PID. Process facts come from
/// the kernel's task iterator when it is pinned, else from /proc (see [`snapshot`]).
pub fn list(tracking: &Tracking, paths: &PinPaths, query: &Query<'_>) -> Result<Vec<PsEntry>> {
    let started = std::time::Instant::now();
    let services: Vec<Service> = match query.service {
        Some(name) => vec![registry::resolve(tracking, name)?],
        None => registry::list(tracking),
    };
    let of_service = |tag: &Tag| services.iter().find(|s| s.id == tag.service_id);
    let (mut snaps, mut tags): (HashMap<u32, Snapshot>, Vec<Tagged<'_>>) = match snapshot::from_kernel(paths)?
    {
        Some(snaps) => {
            let tags = snaps
                .iter()
                .filter_map(|(&pid, s)| {
                    let tag = s.tag?;
                    Some((pid, tag, of_service(&tag)?))
                })
                .collect();
            tracing::debug!(
                "ps: {} tagged processes from the task iterator in {:?}",
                snaps.len(),
                started.elapsed()
            );
            (snaps, tags)
        }
        None => {
            let tags: Vec<Tagged<'_>> = tracking
                .tags()
                .into_iter()
                .filter_map(|(pid, tag)| Some((pid, tag, of_service(&tag)?)))
                .collect();
            let pids: Vec<u32> = tags.iter().map(|(p, _, _)| *p).collect();
            let snaps = snapshot::from_proc(&pids);
            tracing::debug!(
                "ps: {} processes read from /proc in {:?}",
                snaps.len(),
                started.elapsed()
            );
            (snaps, tags)
        }
    };
    // The main processes and live creators the escape reasons need, when not listed already.
    let mut extra: Vec<u32> = services.iter().map(|s| s.record.main_pid).collect();
    extra.extend(tags.iter().map(|(_, t, _)| t.creator_pid).filter(|&c| c != 0));
    extra.retain(|p| *p != 0 && !snaps.contains_key(p));
    extra.sort_unstable();
    extra.dedup();
    snaps.extend(snapshot::from_proc(&extra));

    let v2 = cgroup::v2_mount();
    let cgroups: HashMap<u64, Arc<str>> = match (&v2, tags.is_empty()) {
        (Some(m), false) => cgroup_paths(m),
        _ => HashMap::new(),
    };
    let ids: HashMap<&str, u64> = cgroups.iter().map(|(id, p)| (&**p, *id)).collect();
    let cg_id = |s: &Snapshot| {
        s.cgroup_id
            .or_else(|| s.cgroup_path.as_deref().and_then(|p| ids.get(p).copied()))
    };
    let cg_path = |s: &Snapshot| {
        s.cgroup_path
            .as_deref()
            .map(Arc::from)
            .or_else(|| s.cgroup_id.and_then(|id| cgroups.get(&id).cloned()))
    };
    let alive = |pid: u32, start_ns: u64| snaps.get(&pid).filter(|s| s.is(start_ns));
    let mains: HashMap<u32, escape::Facts> = services
        .iter()
        .filter_map(|svc| {
            let s = alive(svc.record.main_pid, svc.record.main_start_ns)?;
            Some((svc.id, facts(svc.record.main_pid, s, cg_id(s))))
        })
        .collect();
    let names: HashMap<u32, Arc<str>> = services
        .iter()
        .map(|s| (s.id, Arc::from(s.name.as_str())))
        .collect();
    let ns_per_tick = clock::ns_per_tick();
    // The kernel's recorded boot time: the same in every run, so listings agree.
    let boot_epoch = clock::boot_time_ns();
    // Built in PID order (sorting the small tuples, not the entries).
    tags.sort_unstable_by_key(|(pid, _, _)| *pid);
    let entry = |&(pid, tag, svc): &(u32, Tag, &Service)| -> Option<PsEntry> {
        // None: exited, a zombie, or the number was recycled.
        let snap = alive(pid, tag.start_ns)?;
        let forked = tag.flags & tag_flags::FORKED != 0;
        let creator = forked
            .then(|| alive(tag.creator_pid, tag.creator_start_ns))
            .flatten();
        let my_facts = facts(pid, snap, cg_id(snap));
        let creator_facts = creator.map(|c| facts(tag.creator_pid, c, cg_id(c)));
        let ctx = escape::Context {
            main: mains.get(&svc.id),
        };
        let reasons = escape::reasons(&tag, &my_facts, creator_facts.as_ref(), &ctx);
        if query.escaped_only && reasons.is_empty() {
            return None;
        }
        Some(PsEntry {
            pid,
            ppid: snap.ppid,
            creator_pid: forked.then_some(tag.creator_pid),
            creator_alive: forked.then_some(creator.is_some()),
            service: names
                .get(&svc.id)
                .cloned()
                .unwrap_or_else(|| Arc::from(svc.name.as_str())),
            start_time: snap.start_ticks,
            started: rfc3339(boot_epoch + snap.start_ticks * ns_per_tick),
            uid: snap.uid,
            comm: snap.comm.clone(),
            exe: snap.exe.clone(),
            cmdline: snap.cmdline.clone(),
            state: snap.state,
            cgroup: cg_path(snap),
            cgroup_at_fork: (forked && tag.cgroup_id != 0)
                .then(|| cgroups.get(&tag.cgroup_id).cloned())
                .flatten(),
            sid: snap.sid,
            pgid: snap.pgid,
            pidns: snap.pidns,
            escaped: !reasons.is_empty(),
            escape_reasons: reasons,
            lineage: if forked && tag.flags & tag_flags::RECOVERED != 0 {
                // Forked, but tagged late: the kernel skipped the fork program's run.
                "recovered"
            } else if forked {
                "forked"
            } else if tag.flags & tag_flags::MAIN != 0 && tag.flags & tag_flags::ADOPTED != 0 {
                // A root taken over while running: what came before is unknown.
                "adopted"
            } else if tag.flags & tag_flags::MAIN != 0 {
                "main"
            } else {
                "unknown"
            },
            tag,
        })
    };
    let out = in_parallel(&tags, 1024, |part| {
        let mut built = Vec::with_capacity(part.len());
        built.extend(part.iter().filter_map(entry));
        built
    });
    tracing::debug!("ps: {} entries built by {:?}", out.len(), started.elapsed());
    Ok(out)
}
