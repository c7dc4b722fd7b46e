//! Upgrades across a layout change. A bpfkill whose kernel-side layout differs pins under
//! another `v{ABI}` directory; when it loads and finds an older version's tracking still
//! attached beside it, it carries the live state over before the old programs go, so no
//! running service loses its lineage:
//!
//! 1. the new programs are attached already (by [`super::load`]): from now on both
//!    generations tag forks of the processes they know;
//! 2. the registry, every live tag (identity checked against /proc), the ghosts and the
//!    per-service counters are copied, service ids remapped by name;
//! 3. the old pins are removed, which detaches the old programs (this process keeps their
//!    maps open);
//! 4. the tags the old programs wrote meanwhile are copied again;
//! 5. /proc is walked for children born during the hand-over whose parent is tagged but who
//!    are not (forked by a parent the new programs did not know yet), until a walk finds none.
//!
//! An older tree this version cannot read, or one whose daemon still runs, is left alone and
//! said so.

use std::{collections::HashMap as StdHashMap, fmt, fs};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuHashMap};
use bpfkill_common::{
    maps, tag_flags, user::c_str, DaemonState, Ghost, ServiceRecord, ServiceStats, Tag, ABI_VERSION,
};

use super::{
    pins::{self, PinLock, PinPaths},
    Tracking,
};
use crate::{
    error::{Error, Result},
    sys::{
        clock, identity,
        procs::{self, ProcTable},
    },
};

/// Older layouts this version reads: their tags, registry, ghosts and per-service counters
/// have this version's record types (v4 → v5 changed only `KernelLayout`; v5 → v6 added a
/// map, programs, counters and a tag flag). A version that changes one of those records keeps
/// the old one here as a decoder of its own.
const READABLE: &[u32] = &[4, 5];

/// Bound on the /proc walks of step 5 (each walk only finds processes born during the
/// hand-over; it ends at the first walk that finds none).
const MAX_WALKS: usize = 16;

/// What one migration carried over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    /// The ABI version migrated from.
    pub from_version: u32,
    /// Its pin directory (removed).
    pub from: String,
    /// Services carried over.
    pub services: usize,
    /// Live processes whose tags were carried over (both passes).
    pub tags: usize,
    /// Tags of processes that had exited (not carried).
    pub stale: usize,
    /// Ghosts (exited processes kept for lineage) carried over.
    pub ghosts: usize,
    /// Children born during the hand-over, found in /proc and tagged.
    pub swept: usize,
}

impl fmt::Display for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migrated the live tracking of ABI v{} ({}): {} service(s), {} process(es), {} ghost(s), {} born during the hand-over; {} exited tag(s) dropped; its programs are detached",
            self.from_version, self.from, self.services, self.tags, self.ghosts, self.swept, self.stale
        )
    }
}

/// Migrates every older tracking tree beside `new`'s (a sibling `v{N}` directory with
/// N < this ABI) into it. Returns what was migrated; what could not be is logged and left
/// in place. Nothing happens unless `new`'s pin directory is itself named `v{ABI}`.
pub fn from_older(new: &mut Tracking) -> Result<Vec<Migration>> {
    let mut done = Vec::new();
    for (version, old) in older_trees(new.paths()) {
        if !READABLE.contains(&version) {
            tracing::warn!(
                "the tracking of an older bpfkill (ABI v{version}) is still attached under {}; \
                 this version cannot read its maps: unload it with that version, or remove the pins",
                old.root().display()
            );
            continue;
        }
        if !old.is_live()? {
            // A tree left half-removed: nothing attached to carry over.
            continue;
        }
        let _old_lock = PinLock::take(&old)?;
        let source = Source::open(&old)?;
        if let Some(pid) = source.running_daemon() {
            tracing::warn!(
                "the tracking of ABI v{version} under {} is still served by its daemon (PID {pid}): \
                 stop it, then load again to migrate",
                old.root().display()
            );
            continue;
        }
        done.push(migrate(new, &old, &source, version)?);
    }
    Ok(done)
}

/// Sibling pin trees of an older ABI, newest first.
fn older_trees(paths: &PinPaths) -> Vec<(u32, PinPaths)> {
    let root = paths.root();
    if root.file_name().and_then(|n| n.to_str()) != Some(&format!("v{ABI_VERSION}")) {
        return Vec::new();
    }
    let Some(parent) = root.parent() else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PinPaths)> = fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let version: u32 = name.to_str()?.strip_prefix('v')?.parse().ok()?;
            (version < ABI_VERSION).then(|| (version, PinPaths::at(e.path())))
        })
        .collect();
    found.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    found
}

/// The maps of an older tree, open (they outlive its pins while this lives).
struct Source {
    tags: HashMap<MapData, u32, Tag>,
    services: HashMap<MapData, u32, ServiceRecord>,
    ghosts: HashMap<MapData, u32, Ghost>,
    service_stats: PerCpuHashMap<MapData, u32, ServiceStats>,
    daemon: Array<MapData, DaemonState>,
    max_tags: u32,
}

impl Source {
    fn open(paths: &PinPaths) -> Result<Self> {
        let open = |name: &str| {
            MapData::from_pin(paths.map(name))
                .map_err(|e| Error::map(format!("open the older map {name}"), e))
        };
        fn typed<T>(data: MapData, name: &str, kind: fn(MapData) -> Map) -> Result<T>
        where
            T: TryFrom<Map, Error = aya::maps::MapError>,
        {
            T::try_from(kind(data)).map_err(|e| Error::map(format!("the older map {name}"), e))
        }
        let tags = open(maps::TAGS)?;
        let max_tags = tags
            .info()
            .map(|i| i.max_entries())
            .map_err(|e| Error::map("read the older tag map's info", e))?;
        Ok(Self {
            tags: typed(tags, maps::TAGS, Map::HashMap)?,
            services: typed(open(maps::SERVICES)?, maps::SERVICES, Map::HashMap)?,
            ghosts: typed(open(maps::GHOSTS)?, maps::GHOSTS, Map::LruHashMap)?,
            service_stats: typed(
                open(maps::SERVICE_STATS)?,
                maps::SERVICE_STATS,
                Map::PerCpuHashMap,
            )?,
            daemon: typed(open(maps::DAEMON)?, maps::DAEMON, Map::Array)?,
            max_tags,
        })
    }

    /// The PID of the older tree's daemon, when it still runs.
    fn running_daemon(&self) -> Option<u32> {
        let state = self.daemon.get(&0, 0).ok()?;
        let ticks = procs::start_ticks(state.pid)?;
        (state.pid != 0 && identity::matches(state.start_ns, ticks)).then_some(state.pid)
    }

    /// Every tag, each pid once (bounded, as the kernel may restart a walk).
    fn tags(&self) -> Vec<(u32, Tag)> {
        let mut seen = std::collections::HashSet::new();
        let limit = self.max_tags as usize * 2 + 16;
        self.tags
            .iter()
            .take(limit)
            .flatten()
            .filter(|(pid, _)| seen.insert(*pid))
            .collect()
    }
}

fn migrate(new: &mut Tracking, old: &PinPaths, source: &Source, version: u32) -> Result<Migration> {
    let began_ticks = clock::ns_to_ticks(clock::boot_now_ns());
    let mut report = Migration {
        from_version: version,
        from: old.root().display().to_string(),
        ..Migration::default()
    };
    let ids = carry_services(new, source, &mut report)?;
    let mut carried = std::collections::HashSet::new();
    copy_tags(new, source, &ids, &mut carried, &mut report)?;
    for (pid, ghost) in source
        .ghosts
        .iter()
        .take(bpfkill_common::MAX_GHOSTS as usize * 2)
        .flatten()
    {
        let Some(&id) = ids.get(&ghost.service_id) else {
            continue;
        };
        if new.ghost(pid).is_none() {
            new.set_ghost(
                pid,
                &Ghost {
                    service_id: id,
                    ..ghost
                },
            )?;
            report.ghosts += 1;
        }
    }
    for (old_id, &id) in &ids {
        if let Ok(values) = source.service_stats.get(old_id, 0) {
            let sum = values.iter().fold(ServiceStats::default(), |a, v| ServiceStats {
                untagged: a.untagged + v.untagged,
                kernel_kills: a.kernel_kills + v.kernel_kills,
            });
            new.add_service_stats(id, sum)?;
        }
    }
    // The lock on the old tree is held by the caller: remove its pins under it.
    pins::remove_tree(old)?;
    copy_tags(new, source, &ids, &mut carried, &mut report)?;
    report.swept = sweep(new, began_ticks)?;
    Ok(report)
}

/// Carries the registry over; returns old id → new id. A name registered in both is one
/// service (the new record stays, the configured mark and main process are merged in).
fn carry_services(
    new: &mut Tracking,
    source: &Source,
    report: &mut Migration,
) -> Result<StdHashMap<u32, u32>> {
    let existing: StdHashMap<String, (u32, ServiceRecord)> = new
        .services()
        .into_iter()
        .map(|(id, rec)| (c_str(&rec.name).into_owned(), (id, rec)))
        .collect();
    let mut ids = StdHashMap::new();
    for (old_id, rec) in source
        .services
        .iter()
        .take(bpfkill_common::MAX_SERVICES as usize * 2)
        .flatten()
    {
        if ids.contains_key(&old_id) {
            continue;
        }
        let name = c_str(&rec.name).into_owned();
        let id = match existing.get(&name) {
            Some(&(id, mut current)) => {
                current.flags |= rec.flags;
                if current.main_pid == 0 {
                    current.main_pid = rec.main_pid;
                    current.main_start_ns = rec.main_start_ns;
                }
                new.put_service(id, &current)?;
                id
            }
            None => new.claim_free_service(&rec)?.ok_or_else(|| {
                Error::Usage(format!(
                    "the service registry is full: {name} cannot be carried over from {}",
                    report.from
                ))
            })?,
        };
        ids.insert(old_id, id);
        report.services += 1;
    }
    Ok(ids)
}

/// Copies the old tree's tags of live processes the new maps do not have yet.
fn copy_tags(
    new: &mut Tracking,
    source: &Source,
    ids: &StdHashMap<u32, u32>,
    carried: &mut std::collections::HashSet<u32>,
    report: &mut Migration,
) -> Result<()> {
    let table = ProcTable::scan();
    for (pid, tag) in source.tags() {
        if carried.contains(&pid) || new.tag(pid).is_some() {
            continue;
        }
        let Some(&id) = ids.get(&tag.service_id) else {
            continue;
        };
        if !table.is_alive(pid, clock::ns_to_ticks(tag.start_ns)) {
            report.stale += 1;
            carried.insert(pid);
            continue;
        }
        // An old kill's doom does not carry over.
        let tag = Tag {
            service_id: id,
            flags: tag.flags & !tag_flags::DOOMED,
            ..tag
        };
        new.set_tag(pid, &tag)?;
        carried.insert(pid);
        report.tags += 1;
    }
    Ok(())
}

/// Tags the children born since `began_ticks` whose parent is tagged and who are not, until
/// a walk finds none; returns how many. (Older untagged children of tagged parents are left
/// alone: they left their service through a boundary rule.)
fn sweep(new: &mut Tracking, began_ticks: u64) -> Result<usize> {
    let mut swept = 0;
    for _ in 0..MAX_WALKS {
        let table = ProcTable::scan();
        let tags: StdHashMap<u32, Tag> = new.tags().into_iter().collect();
        let mut added = 0;
        for (pid, ppid, ticks) in table.rows() {
            if ticks < began_ticks || tags.contains_key(&pid) {
                continue;
            }
            let Some(parent) = tags.get(&ppid) else { continue };
            if !table.is_alive(ppid, clock::ns_to_ticks(parent.start_ns)) {
                continue;
            }
            let tag = Tag {
                service_id: parent.service_id,
                flags: tag_flags::FORKED | tag_flags::START_FROM_PROC,
                start_ns: clock::ticks_to_ns(ticks),
                creator_pid: ppid,
                creator_start_ns: parent.start_ns,
                tagged_ns: clock::boot_now_ns(),
                comm: procs::comm(pid).unwrap_or_default(),
                ..Tag::default()
            };
            new.set_tag(pid, &tag)?;
            added += 1;
        }
        swept += added;
        if added == 0 {
            break;
        }
    }
    Ok(swept)
}

/// Older versions' trees still attached beside `paths` (`status` reports them: their
/// programs still run, and nothing of this version reads their maps).
pub fn older_attached(paths: &PinPaths) -> Vec<String> {
    older_trees(paths)
        .into_iter()
        .filter(|(_, p)| p.is_live().unwrap_or(false))
        .map(|(v, p)| format!("v{v} at {}", p.root().display()))
        .collect()
}
