//! Typed access to the pinned maps of a live tracking instance: tags, the service registry,
//! ghosts of exited processes, doomed services, the layout in use and the counters. aya's map
//! errors become the library's [`Error`] here.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aya::maps::{Array, HashMap, IterableMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use bpfkill_common::{
    maps, stat, tag_flags, DaemonState, ExeKey, Ghost, KernelLayout, LeaveKey, ServiceRecord, ServiceStats,
    Tag, COMM_LEN,
};

use super::pins::PinPaths;
use crate::{
    error::{Error, Result},
    sys::{identity, procs},
};

/// Every entry of a hash map of `capacity` entries (the `what` map): in bulk where the kernel
/// can (5.6+, `chunk` entries per call), else key by key. Entries removed while reading are
/// skipped; an entry is listed once even if the kernel restarts the walk, which is bounded.
fn read_all<V: aya::Pod + Default>(
    map: &HashMap<MapData, u32, V>,
    chunk: usize,
    capacity: usize,
    what: &str,
) -> Vec<(u32, V)> {
    use std::os::fd::AsFd;
    match super::batch::lookup_all::<V>(map.map().fd().as_fd(), chunk) {
        Ok(all) => return all,
        Err(e) => tracing::debug!("batched read of the {what} map refused ({e}); reading it key by key"),
    }
    let mut seen = HashSet::new();
    map.iter()
        .take(capacity * 2 + 16)
        .flatten()
        .filter(|(key, _)| seen.insert(*key))
        .collect()
}

fn open_map(paths: &PinPaths, name: &str) -> Result<MapData> {
    MapData::from_pin(paths.map(name)).map_err(|e| Error::map(format!("open pinned map {name}"), e))
}

/// Opens pinned map `name` as the typed map `T`; `kind` is its `Map` variant.
fn typed<T>(paths: &PinPaths, name: &str, kind: fn(MapData) -> Map) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(kind(open_map(paths, name)?)).map_err(|e| Error::map(format!("pinned map {name}"), e))
}

/// Opens one of the pinned maps, for consumers that need only it (the daemon's ring buffer).
pub fn open_pinned(paths: &PinPaths, name: &str) -> Result<MapData> {
    if !paths.is_live()? {
        return Err(Error::NotLoaded(paths.root().to_path_buf()));
    }
    open_map(paths, name)
}

/// The rules the kernel applies at exec: executables and names that make a process the root
/// of a service, and boundaries where a process leaves its service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Executable → service id.
    pub exe: BTreeMap<(u64, u64), u32>,
    /// Name (`comm`, NUL-padded) → service id.
    pub comm: BTreeMap<[u8; COMM_LEN], u32>,
    /// (executable, service id) pairs: a process of that service that execs it leaves it.
    pub leave: BTreeSet<((u64, u64), u32)>,
}

impl RuleSet {
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.exe.len() + self.comm.len() + self.leave.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn exe_key((dev, ino): (u64, u64)) -> ExeKey {
    ExeKey { dev, ino }
}

fn leave_key((exe, service_id): ((u64, u64), u32)) -> LeaveKey {
    LeaveKey {
        exe: exe_key(exe),
        service_id,
        reserved: 0,
    }
}

/// Typed access to the pinned maps of a live tracking instance.
pub struct Tracking {
    paths: PinPaths,
    tags: HashMap<MapData, u32, Tag>,
    services: HashMap<MapData, u32, ServiceRecord>,
    stats: PerCpuArray<MapData, u64>,
    ghosts: HashMap<MapData, u32, Ghost>,
    doomed_services: HashMap<MapData, u32, u64>,
    service_stats: PerCpuHashMap<MapData, u32, ServiceStats>,
    rules: HashMap<MapData, ExeKey, u32>,
    comm_rules: HashMap<MapData, [u8; COMM_LEN], u32>,
    leave_rules: HashMap<MapData, LeaveKey, u32>,
    daemon: Array<MapData, DaemonState>,
    layout: Array<MapData, KernelLayout>,
    max_tags: u32,
}

impl Tracking {
    /// Opens the pinned maps; [`Error::NotLoaded`] unless every tracking link is pinned.
    pub fn open(paths: &PinPaths) -> Result<Self> {
        if !paths.is_live()? {
            return Err(Error::NotLoaded(paths.root().to_path_buf()));
        }
        let tags_data = open_map(paths, maps::TAGS)?;
        let max_tags = tags_data
            .info()
            .map(|i| i.max_entries())
            .map_err(|e| Error::map("read tag map info", e))?;
        let tags = HashMap::try_from(Map::HashMap(tags_data)).map_err(|e| Error::map("tag map", e))?;
        let services = typed(paths, maps::SERVICES, Map::HashMap)?;
        let stats = typed(paths, maps::STATS, Map::PerCpuArray)?;
        let ghosts = typed(paths, maps::GHOSTS, Map::LruHashMap)?;
        let doomed_services = typed(paths, maps::DOOMED_SERVICES, Map::HashMap)?;
        let service_stats = typed(paths, maps::SERVICE_STATS, Map::PerCpuHashMap)?;
        let rules = typed(paths, maps::RULES, Map::HashMap)?;
        let comm_rules = typed(paths, maps::COMM_RULES, Map::HashMap)?;
        let leave_rules = typed(paths, maps::LEAVE_RULES, Map::HashMap)?;
        let daemon = typed(paths, maps::DAEMON, Map::Array)?;
        let layout = typed(paths, maps::LAYOUT, Map::Array)?;
        Ok(Self {
            paths: paths.clone(),
            tags,
            services,
            stats,
            ghosts,
            doomed_services,
            service_stats,
            rules,
            comm_rules,
            leave_rules,
            daemon,
            layout,
            max_tags,
        })
    }

    /// Capacity of the tag map.
    pub fn max_tags(&self) -> u32 {
        self.max_tags
    }

    /// A snapshot of every tag, read in bulk where the kernel can (5.6+), else key by key.
    /// Entries removed while reading are skipped; an entry is listed once even if the kernel
    /// restarts the walk.
    pub fn tags(&self) -> Vec<(u32, Tag)> {
        read_all(&self.tags, super::batch::CHUNK, self.max_tags as usize, "tag")
    }

    /// Tags of one service.
    pub fn service_tags(&self, service_id: u32) -> Vec<(u32, Tag)> {
        let mut tags = self.tags();
        tags.retain(|(_, t)| t.service_id == service_id);
        tags
    }

    /// True when the kernel reads the tag map in batches (`BPF_MAP_LOOKUP_BATCH`, 5.6);
    /// [`Self::tags`] walks it key by key otherwise.
    pub fn reads_in_batches(&self) -> bool {
        use std::os::fd::AsFd;
        super::batch::lookup_all::<Tag>(self.tags.map().fd().as_fd(), super::batch::CHUNK).is_ok()
    }

    /// The tag of `pid`, if any.
    pub fn tag(&self, pid: u32) -> Option<Tag> {
        self.tags.get(&pid, 0).ok()
    }

    /// Writes the tag of `pid`.
    pub fn set_tag(&mut self, pid: u32, tag: &Tag) -> Result<()> {
        self.tags
            .insert(pid, tag, 0)
            .map_err(|e| Error::map(format!("tag process {pid}"), e))
    }

    /// Rewrites the tag of `pid` only if it still has one: false when the kernel removed it
    /// meanwhile (the process exited), so a tag is never brought back for a dead process.
    pub fn update_tag(&mut self, pid: u32, tag: &Tag) -> Result<bool> {
        const BPF_EXIST: u64 = 2;
        match self.tags.insert(pid, tag, BPF_EXIST) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(Error::map(format!("tag process {pid}"), e)),
        }
    }

    /// When the process a tag was read for has exited (a zombie, or its PID gone or now
    /// another process's), removes that tag if it is still there unchanged and returns true.
    /// The exit program removes a tag at exit, but the kernel skips a run of it that would
    /// re-enter it on a CPU (see [`super::skips`]), and then the tag outlives its process.
    /// A PID missing from /proc is judged by the kernel ([`procs::exists`]): the fork program
    /// tags a child after its PID is in the kernel's table, so a tag of a PID the kernel does
    /// not know is a tag of the dead, however young.
    pub fn forget_if_exited(&mut self, pid: u32, tag: &Tag) -> bool {
        let exited = match procs::stat(pid) {
            Some(st) => procs::is_dead(&st) || !identity::matches(tag.start_ns, st.starttime),
            None => !procs::exists(pid),
        };
        if !exited {
            return false;
        }
        // Unchanged: a fork may have tagged a new process of that number meanwhile.
        if self.tag(pid).is_some_and(|now| now.start_ns == tag.start_ns) {
            self.remove_tag(pid);
        }
        true
    }

    /// Removes every tag that outlived its process ([`Self::forget_if_exited`]); returns how
    /// many.
    pub fn forget_exited(&mut self) -> usize {
        self.tags()
            .into_iter()
            .filter(|(pid, tag)| self.forget_if_exited(*pid, tag))
            .count()
    }

    /// Removes the tag of `pid` (no error when it has none).
    pub fn remove_tag(&mut self, pid: u32) {
        let _ = self.tags.remove(&pid);
    }

    /// Marks the tagged process `pid` (whose tag is `tag`) doomed: from now on the kernel kills
    /// it when it forks or returns from a system call (while doom mode is armed), and dooms the
    /// children it creates.
    pub fn doom(&mut self, pid: u32, tag: &Tag) -> Result<()> {
        let doomed = Tag {
            flags: tag.flags | tag_flags::DOOMED,
            ..*tag
        };
        self.set_tag(pid, &doomed)
    }

    /// Marks the tagged process `pid` spared: never killed in the kernel, even when its
    /// service is doomed (bpfkill's own ancestors).
    pub fn spare(&mut self, pid: u32, tag: &Tag) -> Result<()> {
        let spared = Tag {
            flags: tag.flags | tag_flags::SPARED,
            ..*tag
        };
        self.set_tag(pid, &spared)
    }

    /// Dooms a whole service in the kernel until `expiry_boot_ns` (CLOCK_BOOTTIME). False
    /// when another kill has doomed it already (and its doom has not expired): that kill
    /// owns the doom and ends it.
    pub fn doom_service(&mut self, service_id: u32, expiry_boot_ns: u64, now_boot_ns: u64) -> Result<bool> {
        const BPF_NOEXIST: u64 = 1;
        if let Ok(expiry) = self.doomed_services.get(&service_id, 0) {
            if expiry > now_boot_ns {
                return Ok(false);
            }
            // A doom left behind by a kill that died: replace it.
            let _ = self.doomed_services.remove(&service_id);
        }
        match self
            .doomed_services
            .insert(service_id, expiry_boot_ns, BPF_NOEXIST)
        {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(Error::map(format!("doom service #{service_id}"), e)),
        }
    }

    /// The kernel's counters of a service, summed over CPUs.
    pub fn service_stats(&self, service_id: u32) -> ServiceStats {
        let mut sum = ServiceStats::default();
        if let Ok(values) = self.service_stats.get(&service_id, 0) {
            for v in values.iter() {
                sum.untagged += v.untagged;
                sum.kernel_kills += v.kernel_kills;
            }
        }
        sum
    }

    /// Adds to the kernel's counters of a service (carried over from an older tracking tree).
    pub fn add_service_stats(&mut self, service_id: u32, add: ServiceStats) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::io(format!("count CPUs ({what})"), e))?;
        let mut values: Vec<ServiceStats> = match self.service_stats.get(&service_id, 0) {
            Ok(v) => v.iter().copied().collect(),
            Err(_) => vec![ServiceStats::default(); cpus],
        };
        if let Some(first) = values.first_mut() {
            first.untagged += add.untagged;
            first.kernel_kills += add.kernel_kills;
        }
        let values = aya::maps::PerCpuValues::try_from(values)
            .map_err(|e| Error::io("per-CPU service counters", e))?;
        self.service_stats
            .insert(service_id, values, 0)
            .map_err(|e| Error::map(format!("write the counters of service #{service_id}"), e))
    }

    /// Clears the kernel's counters of a service (a new incarnation starts from zero).
    pub fn reset_service_stats(&mut self, service_id: u32) {
        let _ = self.service_stats.remove(&service_id);
    }

    /// Ends the doom of a service (no error when it was not doomed).
    pub fn undoom_service(&mut self, service_id: u32) {
        let _ = self.doomed_services.remove(&service_id);
    }

    /// The kernel layout the loaded programs use.
    pub fn layout(&self) -> Result<KernelLayout> {
        self.layout
            .get(&0, 0)
            .map_err(|e| Error::map("read the kernel layout", e))
    }

    /// Remembers the ghost of an exited process (carried over from an older tracking tree).
    pub fn set_ghost(&mut self, pid: u32, ghost: &Ghost) -> Result<()> {
        self.ghosts
            .insert(pid, ghost, 0)
            .map_err(|e| Error::map(format!("remember exited process {pid}"), e))
    }

    /// The ghost of an exited tagged process, if still remembered.
    pub fn ghost(&self, pid: u32) -> Option<Ghost> {
        self.ghosts.get(&pid, 0).ok()
    }

    /// Every registered service, read in bulk where the kernel can (5.6+), else key by key.
    /// A kill resolves its service by name from this list before it signals: walked key by
    /// key, a registry of 55 services cost 330 bpf(2) calls and 2 ms of its start.
    pub fn services(&self) -> Vec<(u32, ServiceRecord)> {
        read_all(
            &self.services,
            super::batch::SMALL_CHUNK,
            bpfkill_common::MAX_SERVICES as usize,
            "service",
        )
    }

    /// Writes the record of service `id`, replacing what was there.
    pub fn put_service(&mut self, id: u32, rec: &ServiceRecord) -> Result<()> {
        self.services
            .insert(id, rec, 0)
            .map_err(|e| Error::map(format!("write service #{id}"), e))
    }

    /// Claims the first free service id for `rec`; None when the registry is full.
    pub fn claim_free_service(&mut self, rec: &ServiceRecord) -> Result<Option<u32>> {
        let used: HashSet<u32> = self.services().iter().map(|(id, _)| *id).collect();
        for id in (1..=bpfkill_common::MAX_SERVICES).filter(|id| !used.contains(id)) {
            // Taken by a registration of another pin-tree user: try the next id.
            if self.claim_service(id, rec)? {
                self.reset_service_stats(id);
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Claims service `id` for `rec`: false when the id is taken already (by a concurrent
    /// registration), so two registrations never share an id.
    pub fn claim_service(&mut self, id: u32, rec: &ServiceRecord) -> Result<bool> {
        const BPF_NOEXIST: u64 = 1;
        match self.services.insert(id, rec, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(Error::map(format!("register service #{id}"), e)),
        }
    }

    /// The pin tree's lock, held while the returned guard lives (service registrations are
    /// serialised by it).
    pub fn lock(&self) -> Result<super::pins::PinLock> {
        super::pins::PinLock::take(&self.paths)
    }

    /// The pin tree these maps were opened from.
    pub fn paths(&self) -> &PinPaths {
        &self.paths
    }

    /// Counters summed over CPUs, indexed by `bpfkill_common::stat`.
    pub fn stats(&self) -> [u64; stat::COUNT as usize] {
        let mut out = [0u64; stat::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.stats.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }

    /// True when executable `exe` (device, inode) is a boundary of service `service_id`: a
    /// process of the service that execs it leaves the service.
    pub fn is_boundary(&self, exe: (u64, u64), service_id: u32) -> bool {
        self.leave_rules.get(&leave_key((exe, service_id)), 0).is_ok()
    }

    /// The rules in the kernel now.
    pub fn rules(&self) -> RuleSet {
        RuleSet {
            exe: self
                .rules
                .iter()
                .flatten()
                .map(|(k, v)| ((k.dev, k.ino), v))
                .collect(),
            comm: self.comm_rules.iter().flatten().collect(),
            leave: self
                .leave_rules
                .iter()
                .flatten()
                .map(|(k, _)| ((k.exe.dev, k.exe.ino), k.service_id))
                .collect(),
        }
    }

    /// Makes the kernel's rules `wanted`: adds what is missing first, then removes what is no
    /// longer wanted, so a rule kept across a reload never stops matching.
    pub fn set_rules(&mut self, wanted: &RuleSet) -> Result<()> {
        let now = self.rules();
        for (&k, &svc) in &wanted.exe {
            if now.exe.get(&k) != Some(&svc) {
                self.rules
                    .insert(exe_key(k), svc, 0)
                    .map_err(|e| Error::map("write an exe rule", e))?;
            }
        }
        for (k, &svc) in &wanted.comm {
            if now.comm.get(k) != Some(&svc) {
                self.comm_rules
                    .insert(*k, svc, 0)
                    .map_err(|e| Error::map("write a name rule", e))?;
            }
        }
        for &k in wanted.leave.difference(&now.leave) {
            self.leave_rules
                .insert(leave_key(k), 1, 0)
                .map_err(|e| Error::map("write a boundary rule", e))?;
        }
        for k in now.exe.keys().filter(|k| !wanted.exe.contains_key(k)) {
            let _ = self.rules.remove(&exe_key(*k));
        }
        for k in now.comm.keys().filter(|k| !wanted.comm.contains_key(*k)) {
            let _ = self.comm_rules.remove(k);
        }
        for &k in now.leave.difference(&wanted.leave) {
            let _ = self.leave_rules.remove(&leave_key(k));
        }
        Ok(())
    }

    /// Adds one exe rule (an upgraded binary at a rule's path), keeping the others.
    pub fn add_exe_rule(&mut self, key: (u64, u64), service_id: u32) -> Result<()> {
        self.rules
            .insert(exe_key(key), service_id, 0)
            .map_err(|e| Error::map("write an exe rule", e))
    }

    /// Removes a service from the registry (its counters too). Its tags are not touched.
    pub fn remove_service(&mut self, service_id: u32) -> Result<()> {
        self.services
            .remove(&service_id)
            .map_err(|e| Error::map(format!("forget service #{service_id}"), e))?;
        self.reset_service_stats(service_id);
        Ok(())
    }

    /// What the daemon last said of itself (pid 0: none).
    pub fn daemon_state(&self) -> DaemonState {
        self.daemon.get(&0, 0).unwrap_or_default()
    }

    /// The daemon recorded in the pinned state, when it is still running (the same process:
    /// its start time is checked).
    pub fn running_daemon(&self) -> Option<DaemonState> {
        let s = self.daemon_state();
        let alive = s.pid != 0
            && crate::sys::procs::start_ticks(s.pid)
                .is_some_and(|t| crate::sys::identity::matches(s.start_ns, t));
        alive.then_some(s)
    }

    /// Writes the daemon's state.
    pub fn set_daemon_state(&mut self, state: &DaemonState) -> Result<()> {
        self.daemon
            .set(0, *state, 0)
            .map_err(|e| Error::map("write the daemon state", e))
    }
}
