//! Loading: the embedded kernel object is loaded with the running kernel's layout, its
//! tracking programs attached to their raw tracepoints and pinned (or the pins adopted when
//! tracking is already live); the `ps` task iterators are pinned when the kernel has them; the
//! doom program is loaded and pinned with them, and attached for the duration of a kill only;
//! the fork backstop's LSM programs are attached and pinned where BPF LSM is active.
//!
//! The kernel's BTF is parsed once per load (for the task iterators) and never by a kill.

use std::fs;

use aya::{
    maps::{Array, MapData},
    programs::{
        links::{FdLink, PinnedLink},
        Iter, Lsm, Program, ProgramError, RawTracePoint,
    },
    Ebpf, EbpfLoader,
};
use bpfkill_common::{maps, programs, KernelLayout};

use super::{
    kernel_log::KernelLogLevel,
    layout,
    maps::Tracking,
    migrate::{self, Migration},
    pins::{create_private_dir, PinLock, PinPaths},
    reap,
};
use crate::{
    error::{Error, Result},
    sys::{clock, mounts},
};

/// Test knob: the fork program loaded with it skips every run, as the kernel may, so that
/// the suite can check the fork backstop (and nothing else tags a child).
pub const SKIP_FORK_RUNS_ENV: &str = "BPFKILL_TEST_SKIP_FORK_RUNS";

/// The fork program's global behind [`SKIP_FORK_RUNS_ENV`].
const SKIP_FORK_RUNS: &str = "SKIP_FORK_RUNS";

/// The kernel programs, built by build.rs from the `ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpfkill.bpf.o"));

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

/// What [`load`] did, and the older trackings it migrated.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Loaded now or adopted.
    pub outcome: LoadOutcome,
    /// Older versions' tracking carried over into this one (see [`super::migrate`]).
    pub migrations: Vec<Migration>,
}

/// Settings for a fresh load (ignored when the maps are already pinned).
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Capacity of the tag map: processes tracked at once, all services together.
    pub max_tags: u32,
    /// Level of the kernel programs' diagnostics; None: not asked for (off on a fresh load,
    /// and no complaint when the pinned programs have another).
    pub kernel_log: Option<KernelLogLevel>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_tags: bpfkill_common::DEFAULT_MAX_TAGS,
            kernel_log: None,
        }
    }
}

/// Loads and attaches the tracking programs and pins maps and links, or adopts what is
/// already pinned; then migrates an older version's tracking left attached beside it. Mounts
/// bpffs and tracefs when they are missing.
pub fn load(paths: &PinPaths, opts: &LoadOptions) -> Result<LoadReport> {
    let (outcome, lock) = attach(paths, opts)?;
    let migrations = migrate::from_older(&mut Tracking::open(paths)?)?;
    drop(lock);
    for m in &migrations {
        tracing::info!("{m}");
    }
    Ok(LoadReport { outcome, migrations })
}

/// [`load`] up to the migration; the pin tree's lock is returned held.
fn attach(paths: &PinPaths, opts: &LoadOptions) -> Result<(LoadOutcome, PinLock)> {
    if opts.max_tags == 0 {
        return Err(Error::Usage("--max-tags must be at least 1".into()));
    }
    mounts::ensure_bpffs()?;
    // Before 5.11 the maps and programs count against RLIMIT_MEMLOCK.
    crate::sys::limits::raise_memlock();
    if let Err(e) = mounts::ensure_tracefs() {
        tracing::warn!("tracefs unavailable ({e}); status will not show tracepoint formats");
    }
    create_private_dir(paths.root())?;
    let lock = PinLock::take(paths)?;
    if paths.is_live()? {
        if let Some(asked) = opts.kernel_log {
            let loaded = KernelLogLevel(Tracking::open(paths)?.layout()?.log_level);
            if loaded != asked {
                tracing::warn!(
                    "the kernel programs log at level {loaded}, fixed when they were loaded; \
                     `bpfkill unload` then load again for {asked}"
                );
            }
        }
        return Ok((LoadOutcome::Adopted, lock));
    }
    create_private_dir(&paths.maps_dir())?;
    create_private_dir(&paths.links_dir())?;
    create_private_dir(&paths.progs_dir())?;

    let btf = layout::KernelBtf::load()?;
    let ns_per_tick = u32::try_from(clock::ns_per_tick())
        .map_err(|_| Error::Unsupported("clock tick longer than 4 s".into()))?;
    let log_level = opts.kernel_log.unwrap_or_default();
    let kernel_layout = KernelLayout {
        log_level: log_level.0,
        ..btf.kernel_layout(ns_per_tick)?
    };

    tracing::debug!("kernel layout: {}", layout::LayoutDisplay(&kernel_layout));

    // The iterators need the kernel's types; without them ps reads /proc.
    let kernel_types = aya::Btf::from_sys_fs()
        .inspect_err(|e| tracing::warn!("ps will read /proc: cannot read the kernel BTF ({e})"))
        .ok();
    // With the kfunc behind the in-kernel kill, the object's call to it is patched in.
    let patched = kernel_types
        .as_ref()
        .and_then(|btf| reap::patched_object(OBJECT, btf));
    let object = patched.as_ref().map_or(OBJECT, reap::Object::bytes);
    let mut ebpf = load_object(
        object,
        paths,
        &kernel_layout,
        opts.max_tags,
        kernel_types.as_ref(),
    )
    .map_err(|e| Error::ebpf("load the bpfkill programs", e))?;

    {
        let map = ebpf
            .map_mut(maps::LAYOUT)
            .ok_or_else(|| Error::Object(format!("map {} missing from the object", maps::LAYOUT)))?;
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
            .map_err(|e| Error::ebpf(format!("take link of {prog_name}"), e))?;
        let link: FdLink = link.into();
        link.pin(&pin)
            .map_err(|e| Error::ebpf(format!("pin {}", pin.display()), e))?;
        attached += 1;
    }
    // The ps snapshot iterators are an accelerator: without them, ps reads /proc.
    if let Some(btf) = &kernel_types {
        match attach_snapshots(&mut ebpf, paths, btf) {
            Ok(n) => attached += n,
            Err(e) => {
                tracing::warn!("ps will read /proc: the task iterator is unavailable ({e})");
                for (name, _) in programs::SNAPSHOT {
                    let _ = fs::remove_file(paths.link(name));
                }
            }
        }
    }
    // The in-kernel kill, where the kernel has its kfunc; kills signal from userspace
    // otherwise.
    let _ = fs::remove_file(paths.link(programs::REAP.0));
    if let (Some(btf), Some(_)) = (&kernel_types, &patched) {
        let (name, iter_type) = programs::REAP;
        match attach_snapshot(&mut ebpf, paths, btf, name, iter_type) {
            Ok(()) => attached += 1,
            Err(e) => {
                tracing::warn!("kills will signal from userspace: the kernel kill did not load ({e})");
                let _ = fs::remove_file(paths.link(name));
            }
        }
    }
    // The fork backstop, where BPF LSM is active; without it, a fork run the kernel skips
    // leaves the child untagged (status reports the skipped runs either way).
    for (name, _) in programs::BACKSTOP {
        let _ = fs::remove_file(paths.link(name));
    }
    match (&kernel_types, mounts::bpf_lsm_active()) {
        (Some(btf), Ok(())) => match attach_backstop(&mut ebpf, paths, btf) {
            Ok(n) => attached += n,
            Err(e) => {
                // As root, EPERM is the kernel refusing trampoline programs (LSM, fentry)
                // altogether, as some hardened or trimmed kernels do: a property of the host.
                if matches!(e, Error::Permission(_)) {
                    tracing::info!("no fork backstop: this kernel refuses BPF LSM programs ({e})");
                } else {
                    tracing::warn!("no fork backstop: its LSM programs did not load ({e})");
                }
                for (name, _) in programs::BACKSTOP {
                    let _ = fs::remove_file(paths.link(name));
                }
            }
        },
        (None, _) => tracing::info!("no fork backstop: the kernel's BTF is unreadable"),
        (_, Err(why)) => tracing::info!("no fork backstop: {why}"),
    }
    // Verified now, so that a kill only attaches it; without the pin a kill loads it itself.
    if let Err(e) = pin_doom(&mut ebpf, paths) {
        tracing::warn!("the doom program is not pinned; each SIGKILL will load it ({e})");
        let _ = fs::remove_file(paths.prog(programs::DOOM.0));
    }
    Ok((LoadOutcome::Loaded { attached }, lock))
}

/// The embedded object, its maps pinned under `paths` (or the pinned ones reused: the log
/// ring buffer too, so every program of a pin tree logs to one place), loaded with the kernel
/// layout and its log level as globals. `btf` is the kernel's, for the programs that need its
/// types (the iterators); the tracking and doom programs do not.
fn load_object(
    object: &[u8],
    paths: &PinPaths,
    layout: &KernelLayout,
    max_tags: u32,
    btf: Option<&aya::Btf>,
) -> Result<Ebpf, aya::EbpfError> {
    // aya-log's level global is a byte; the levels are 0..=4.
    let log_level = layout.log_level as u8;
    let skip_fork_runs = u8::from(std::env::var_os(SKIP_FORK_RUNS_ENV).is_some());
    // `EbpfLoader::new` parses the kernel's BTF itself (a third of a second, and much more
    // under emulation); `btf` replaces that.
    EbpfLoader::new()
        .btf(btf)
        .default_map_pin_directory(paths.maps_dir())
        .map_pin_path(KERNEL_LOG_MAP, paths.map(KERNEL_LOG_MAP))
        .override_global("LAYOUT", layout, true)
        .override_global(aya_log::LEVEL, &log_level, true)
        .override_global(SKIP_FORK_RUNS, &skip_fork_runs, true)
        .map_max_entries(maps::TAGS, max_tags)
        .load(object)
}

/// aya-log's ring buffer, as aya-log-ebpf declares it.
const KERNEL_LOG_MAP: &str = "AYA_LOGS";

/// Program `name` of `ebpf`, as the program type `T` it must be.
fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Object(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e| Error::ebpf(format!("program {name}"), e))
}

/// Loads and pins every task iterator behind `ps`; returns how many.
fn attach_snapshots(ebpf: &mut Ebpf, paths: &PinPaths, btf: &aya::Btf) -> Result<usize> {
    for (name, iter_type) in programs::SNAPSHOT {
        attach_snapshot(ebpf, paths, btf, name, iter_type)?;
    }
    Ok(programs::SNAPSHOT.len())
}

/// Loads a task iterator (`ps`'s sleepable ones, the kernel kill) and pins its link, whose
/// every read runs it.
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
        .map_err(|e| Error::ebpf(format!("load {name}"), e))?;
    let id = program
        .attach()
        .map_err(|e| Error::ebpf(format!("attach {name}"), e))?;
    let link = program
        .take_link(id)
        .map_err(|e| Error::ebpf(format!("take link of {name}"), e))?;
    let link = FdLink::try_from(link).map_err(|e| Error::ebpf(format!("link of {name}"), e))?;
    link.pin(&pin)
        .map_err(|e| Error::ebpf(format!("pin {}", pin.display()), e))?;
    Ok(())
}

/// Loads the fork backstop's LSM programs and pins their links; returns how many.
fn attach_backstop(ebpf: &mut Ebpf, paths: &PinPaths, btf: &aya::Btf) -> Result<usize> {
    for (name, hook) in programs::BACKSTOP {
        let program: &mut Lsm = program_mut(ebpf, name)?;
        program
            .load(hook, btf)
            .map_err(|e| Error::ebpf(format!("load {name}"), e))?;
        let id = program
            .attach()
            .map_err(|e| Error::ebpf(format!("attach {name} to LSM hook {hook}"), e))?;
        let link = program
            .take_link(id)
            .map_err(|e| Error::ebpf(format!("take link of {name}"), e))?;
        let link: FdLink = link.into();
        let pin = paths.link(name);
        link.pin(&pin)
            .map_err(|e| Error::ebpf(format!("pin {}", pin.display()), e))?;
    }
    Ok(programs::BACKSTOP.len())
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
        .map_err(|e| Error::ebpf(format!("load {name}"), e))?;
    let id = program
        .attach(tracepoint)
        .map_err(|e| Error::ebpf(format!("attach {name} to raw tracepoint {tracepoint}"), e))?;
    Ok((program, id))
}

/// Loads the doom program (sharing the pinned maps) and pins it unattached.
fn pin_doom(ebpf: &mut Ebpf, paths: &PinPaths) -> Result<()> {
    let (name, _) = programs::DOOM;
    let pin = paths.prog(name);
    let _ = fs::remove_file(&pin);
    let program: &mut RawTracePoint = program_mut(ebpf, name)?;
    program
        .load()
        .map_err(|e| Error::ebpf(format!("load {name}"), e))?;
    program
        .pin(&pin)
        .map_err(|e| Error::ebpf(format!("pin {}", pin.display()), e))
}

/// Doom mode, armed: the `sys_exit` program is attached while this lives.
pub enum Doom {
    /// The program pinned at load, attached now (two system calls).
    Pinned(std::os::fd::OwnedFd),
    /// Loaded now, for a tree pinned without it.
    Loaded(Ebpf),
}

/// Attaches the doom program for as long as the returned guard lives. It shares the pinned
/// maps; its link is never pinned, so it is detached even if bpfkill dies.
pub fn arm_doom(tracking: &Tracking) -> Result<Doom> {
    let (name, tracepoint) = programs::DOOM;
    let paths = tracking.paths();
    // Two system calls, not aya's `from_pin`, which first probes the kernel's features
    // (about twenty more, program loads among them) before the kill's first signal.
    if let Ok(program) = super::raw::open_pinned(&paths.prog(name)) {
        let link = super::raw::raw_tracepoint_open(&program, tracepoint)
            .map_err(|e| Error::io(format!("attach {name} to raw tracepoint {tracepoint}"), e))?;
        return Ok(Doom::Pinned(link));
    }
    let layout = tracking.layout()?;
    let mut ebpf = load_object(OBJECT, paths, &layout, tracking.max_tags(), None)
        .map_err(|e| Error::ebpf("load the doom program", e))?;
    load_and_attach(&mut ebpf, name, tracepoint)?;
    Ok(Doom::Loaded(ebpf))
}
