//! The in-kernel tracking engine: loading and attaching the programs, pinning maps and links
//! under bpffs so tracking outlives any bpfkill process, adopting existing pins, unloading,
//! and typed access to the pinned maps.

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        Iter, Program, ProgramError, RawTracePoint,
    },
    Ebpf, EbpfLoader,
};
use bpfkill_common::{maps, programs, stat, tag_flags, Ghost, KernelLayout, ServiceRecord, Tag, ABI_VERSION};

use crate::{
    error::{Error, Result},
    identity, layout, mounts,
};

/// The kernel programs, built by build.rs from the `ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpfkill.bpf.o"));

/// Environment variable that moves the pin directory (tests, side-by-side instances).
pub const PIN_DIR_ENV: &str = "BPFKILL_PIN_DIR";

/// Where everything of one bpfkill instance is pinned.
#[derive(Debug, Clone)]
pub struct PinPaths {
    root: PathBuf,
}

impl PinPaths {
    /// The default `/sys/fs/bpf/bpfkill/v{ABI}`, or `$BPFKILL_PIN_DIR`.
    pub fn from_env() -> Self {
        let root = std::env::var_os(PIN_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("{}/bpfkill/v{ABI_VERSION}", mounts::BPFFS)));
        Self { root }
    }

    /// A pin tree rooted elsewhere.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root of the pin tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the pinned maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Directory of the pinned links.
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Pin of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Pin of the link of program `name`.
    pub fn link(&self, name: &str) -> PathBuf {
        self.links_dir().join(name)
    }

    /// Which tracking links are pinned.
    pub fn pinned_links(&self) -> Vec<(&'static str, bool)> {
        programs::TRACKING
            .iter()
            .map(|(prog, _)| (*prog, PinnedLink::from_pin(self.link(prog)).is_ok()))
            .collect()
    }

    /// True when every tracking program is attached through a pinned link.
    pub fn is_live(&self) -> bool {
        self.pinned_links().iter().all(|(_, ok)| *ok)
    }
}

/// What [`load`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Everything was already pinned; nothing was loaded.
    Adopted,
    /// Programs were loaded and attached (maps adopted where already pinned).
    Loaded {
        /// How many links were attached and pinned now.
        attached: usize,
    },
}

fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// An exclusive lock on the pin tree, so two loaders never attach twice.
struct PinLock(#[allow(dead_code)] fs::File);

impl PinLock {
    fn take(paths: &PinPaths) -> Result<Self> {
        let dir = fs::File::open(paths.root())
            .map_err(|e| Error::io(format!("open {}", paths.root().display()), e))?;
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(format!("lock {}", paths.root().display()), e.into()))?;
        Ok(Self(dir))
    }
}

/// Settings for a fresh load (ignored when the maps are already pinned).
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Capacity of the tag map: processes tracked at once, all services together.
    pub max_tags: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_tags: bpfkill_common::DEFAULT_MAX_TAGS,
        }
    }
}

/// Loads and attaches the tracking programs and pins maps and links, or adopts what is
/// already pinned. Mounts bpffs and tracefs when they are missing.
pub fn load(paths: &PinPaths, opts: &LoadOptions) -> Result<LoadOutcome> {
    if opts.max_tags == 0 {
        return Err(Error::Usage("--max-tags must be at least 1".into()));
    }
    mounts::ensure_bpffs()?;
    if let Err(e) = mounts::ensure_tracefs() {
        tracing::warn!("tracefs unavailable ({e}); status will not show tracepoint formats");
    }
    create_private_dir(paths.root())?;
    let _lock = PinLock::take(paths)?;
    if paths.is_live() {
        return Ok(LoadOutcome::Adopted);
    }
    create_private_dir(&paths.maps_dir())?;
    create_private_dir(&paths.links_dir())?;

    let btf = layout::KernelBtf::load()?;
    let ns_per_tick = u32::try_from(identity::ns_per_tick())
        .map_err(|_| Error::Unsupported("clock tick longer than 4 s".into()))?;
    let kernel_layout = btf.kernel_layout(ns_per_tick)?;
    tracing::debug!("kernel layout: {}", layout::LayoutDisplay(&kernel_layout));

    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(paths.maps_dir())
        .override_global("LAYOUT", &kernel_layout, true)
        .map_max_entries(maps::TAGS, opts.max_tags)
        .load(OBJECT)
        .map_err(|e| ebpf_error("load the bpfkill programs", e))?;

    {
        let map = ebpf
            .map_mut(maps::LAYOUT)
            .ok_or_else(|| Error::Ebpf(format!("map {} missing from the object", maps::LAYOUT)))?;
        let mut layout_map: Array<&mut MapData, KernelLayout> =
            Array::try_from(map).map_err(|e| Error::map("layout map", e))?;
        layout_map
            .set(0, kernel_layout, 0)
            .map_err(|e| Error::map("record the kernel layout", e))?;
    }
    let mut attached = 0;
    for (prog_name, tracepoint) in programs::TRACKING {
        let pin = paths.link(prog_name);
        if PinnedLink::from_pin(&pin).is_ok() {
            continue;
        }
        // A stale pin of a link that no longer opens is replaced.
        let _ = fs::remove_file(&pin);
        let (program, id) = load_and_attach(&mut ebpf, prog_name, tracepoint)?;
        let link = program
            .take_link(id)
            .map_err(|e| ebpf_error(&format!("take link of {prog_name}"), e))?;
        let link: FdLink = link.into();
        link.pin(&pin)
            .map_err(|e| Error::Ebpf(format!("pin {}: {e}", pin.display())))?;
        attached += 1;
    }
    // The ps snapshot iterators are an accelerator: without them, ps reads /proc.
    let btf = aya::Btf::from_sys_fs().map_err(|e| ebpf_error("read the kernel BTF", e));
    for (name, iter_type) in programs::SNAPSHOT {
        let attached_one = match &btf {
            Ok(btf) => attach_snapshot(&mut ebpf, paths, btf, name, iter_type),
            Err(e) => Err(Error::Ebpf(e.to_string())),
        };
        match attached_one {
            Ok(()) => attached += 1,
            Err(e) => {
                tracing::warn!("ps will read /proc: the task iterator is unavailable ({e})");
                for (name, _) in programs::SNAPSHOT {
                    let _ = fs::remove_file(paths.link(name));
                }
                break;
            }
        }
    }
    Ok(LoadOutcome::Loaded { attached })
}

/// Program `name` of `ebpf`, as the program type `T` it must be.
fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Ebpf(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e| ebpf_error(&format!("program {name}"), e))
}

/// Loads the sleepable task iterator behind `ps` and pins its link, whose every read runs it.
fn attach_snapshot(
    ebpf: &mut Ebpf,
    paths: &PinPaths,
    btf: &aya::Btf,
    name: &str,
    iter_type: &str,
) -> Result<()> {
    let pin = paths.link(name);
    let _ = fs::remove_file(&pin);
    let program: &mut Iter = program_mut(ebpf, name)?;
    program
        .load(iter_type, btf)
        .map_err(|e| ebpf_error(&format!("load {name}"), e))?;
    let id = program
        .attach()
        .map_err(|e| ebpf_error(&format!("attach {name}"), e))?;
    let link = program
        .take_link(id)
        .map_err(|e| ebpf_error(&format!("take link of {name}"), e))?;
    let link = FdLink::try_from(link).map_err(|e| ebpf_error(&format!("link of {name}"), e))?;
    link.pin(&pin)
        .map_err(|e| Error::Ebpf(format!("pin {}: {e}", pin.display())))?;
    Ok(())
}

/// Loads program `name` of `ebpf` and attaches it to raw tracepoint `tracepoint`.
fn load_and_attach<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    tracepoint: &str,
) -> Result<(
    &'a mut RawTracePoint,
    aya::programs::raw_trace_point::RawTracePointLinkId,
)> {
    let program: &mut RawTracePoint = program_mut(ebpf, name)?;
    program
        .load()
        .map_err(|e| ebpf_error(&format!("load {name}"), e))?;
    let id = program
        .attach(tracepoint)
        .map_err(|e| ebpf_error(&format!("attach {name} to raw tracepoint {tracepoint}"), e))?;
    Ok((program, id))
}

fn ebpf_error(what: &str, e: impl std::error::Error) -> Error {
    let mut msg = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    if msg.contains("Operation not permitted") || msg.contains("permission denied") {
        return Error::Permission(what.to_string());
    }
    Error::Ebpf(msg)
}

/// Detaches everything and removes the pins. Returns false when nothing was pinned.
pub fn unload(paths: &PinPaths) -> Result<bool> {
    if !paths.root().exists() {
        return Ok(false);
    }
    let _lock = PinLock::take(paths)?;
    for dir in [paths.links_dir(), paths.maps_dir()] {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            fs::remove_file(entry.path())
                .map_err(|e| Error::io(format!("remove {}", entry.path().display()), e))?;
        }
        fs::remove_dir(&dir).map_err(|e| Error::io(format!("remove {}", dir.display()), e))?;
    }
    fs::remove_dir(paths.root()).map_err(|e| Error::io(format!("remove {}", paths.root().display()), e))?;
    // Leave /sys/fs/bpf/bpfkill when other ABI versions live there.
    if let Some(parent) = paths.root().parent() {
        let _ = fs::remove_dir(parent);
    }
    Ok(true)
}

fn open_map(paths: &PinPaths, name: &str) -> Result<MapData> {
    MapData::from_pin(paths.map(name)).map_err(|e| Error::map(format!("open pinned map {name}"), e))
}

/// Opens one of the pinned maps, for consumers that need only it (the daemon's ring buffer).
pub fn open_pinned(paths: &PinPaths, name: &str) -> Result<MapData> {
    if !paths.is_live() {
        return Err(Error::NotLoaded(paths.root().to_path_buf()));
    }
    open_map(paths, name)
}

/// Typed access to the pinned maps of a live tracking instance.
pub struct Tracking {
    paths: PinPaths,
    tags: HashMap<MapData, u32, Tag>,
    services: HashMap<MapData, u32, ServiceRecord>,
    stats: PerCpuArray<MapData, u64>,
    ghosts: HashMap<MapData, u32, Ghost>,
    doomed_services: HashMap<MapData, u32, u64>,
    layout: Array<MapData, KernelLayout>,
    max_tags: u32,
}

/// Doom mode, armed: the `sys_exit` program is attached while this lives.
pub struct Doom {
    _ebpf: Ebpf,
}

impl Tracking {
    /// Opens the pinned maps; [`Error::NotLoaded`] unless every tracking link is pinned.
    pub fn open(paths: &PinPaths) -> Result<Self> {
        if !paths.is_live() {
            return Err(Error::NotLoaded(paths.root().to_path_buf()));
        }
        let tags_data = open_map(paths, maps::TAGS)?;
        let max_tags = tags_data
            .info()
            .map(|i| i.max_entries())
            .map_err(|e| Error::map("read tag map info", e))?;
        let tags = HashMap::try_from(Map::HashMap(tags_data)).map_err(|e| Error::map("tag map", e))?;
        let services = HashMap::try_from(Map::HashMap(open_map(paths, maps::SERVICES)?))
            .map_err(|e| Error::map("service map", e))?;
        let stats = PerCpuArray::try_from(Map::PerCpuArray(open_map(paths, maps::STATS)?))
            .map_err(|e| Error::map("stats map", e))?;
        let ghosts = HashMap::try_from(Map::LruHashMap(open_map(paths, maps::GHOSTS)?))
            .map_err(|e| Error::map("ghost map", e))?;
        let doomed_services = HashMap::try_from(Map::HashMap(open_map(paths, maps::DOOMED_SERVICES)?))
            .map_err(|e| Error::map("doomed-services map", e))?;
        let layout = Array::try_from(Map::Array(open_map(paths, maps::LAYOUT)?))
            .map_err(|e| Error::map("layout map", e))?;
        Ok(Self {
            paths: paths.clone(),
            tags,
            services,
            stats,
            ghosts,
            doomed_services,
            layout,
            max_tags,
        })
    }

    /// Capacity of the tag map.
    pub fn max_tags(&self) -> u32 {
        self.max_tags
    }

    /// A snapshot of every tag. Entries removed while iterating are skipped; an entry is
    /// listed once even if the kernel restarts the walk.
    pub fn tags(&self) -> Vec<(u32, Tag)> {
        let mut seen = HashSet::new();
        let limit = self.max_tags as usize * 2 + 16;
        let mut out = Vec::new();
        for (pid, tag) in self.tags.iter().take(limit).flatten() {
            if seen.insert(pid) {
                out.push((pid, tag));
            }
        }
        out
    }

    /// Tags of one service.
    pub fn service_tags(&self, service_id: u32) -> Vec<(u32, Tag)> {
        let mut tags = self.tags();
        tags.retain(|(_, t)| t.service_id == service_id);
        tags
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

    /// Dooms a whole service in the kernel until `expiry_boot_ns` (CLOCK_BOOTTIME).
    pub fn doom_service(&mut self, service_id: u32, expiry_boot_ns: u64) -> Result<()> {
        self.doomed_services
            .insert(service_id, expiry_boot_ns, 0)
            .map_err(|e| Error::map(format!("doom service #{service_id}"), e))
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

    /// Attaches the doom program for as long as the returned guard lives. It shares the pinned
    /// maps; it is never pinned, so it is detached even if bpfkill dies.
    pub fn arm_doom(&self) -> Result<Doom> {
        let layout = self.layout()?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(self.paths.maps_dir())
            .override_global("LAYOUT", &layout, true)
            .load(OBJECT)
            .map_err(|e| ebpf_error("load the doom program", e))?;
        let (name, tracepoint) = programs::DOOM;
        load_and_attach(&mut ebpf, name, tracepoint)?;
        Ok(Doom { _ebpf: ebpf })
    }

    /// The ghost of an exited tagged process, if still remembered.
    pub fn ghost(&self, pid: u32) -> Option<Ghost> {
        self.ghosts.get(&pid, 0).ok()
    }

    /// Every registered service.
    pub fn services(&self) -> Vec<(u32, ServiceRecord)> {
        self.services.iter().filter_map(|r| r.ok()).collect()
    }

    /// Inserts a service record; `only_new` fails with `EEXIST` when the id is taken.
    pub fn put_service(
        &mut self,
        id: u32,
        rec: &ServiceRecord,
        only_new: bool,
    ) -> Result<(), aya::maps::MapError> {
        const BPF_NOEXIST: u64 = 1;
        self.services
            .insert(id, rec, if only_new { BPF_NOEXIST } else { 0 })
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
}
