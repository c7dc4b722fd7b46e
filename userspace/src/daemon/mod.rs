//! `bpfkill daemon`: load the tracking programs (or adopt the pinned ones), apply the
//! configuration's rules ([`rules`]), then consume the event ring buffer until
//! SIGTERM/SIGINT, writing every fork/exec/exit/match of a tracked process to the history
//! journal (see [`crate::forensics::journal`]). SIGHUP reloads the configuration (a broken one
//! keeps the old rules and says why); a change in an exe rule's directory refreshes that
//! rule (a package upgrade); services nobody configured are forgotten once their last
//! process is gone and journaled. Stopping the daemon keeps tracking pinned.

mod metrics;
pub mod rules;
mod socket;
mod state;

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use aya::maps::{Map, MapData, RingBuf};
use bpfkill_common::{maps, stat};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{self, SignalKind},
};

pub use self::{metrics::parse_addr as parse_metrics_addr, socket::SocketOptions};
use self::{rules::Applied, state::StateWriter};
use crate::{
    config::Config,
    error::{Error, Result},
    forensics::journal::{self, JournalConfig, Record},
    lineage::registry,
    sys::clock,
    tracking::{
        self,
        events::{self, Kind, TrackedEvent},
        PinPaths, Tracking,
    },
};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Loading options (used when tracking is not loaded yet).
    pub load: tracking::LoadOptions,
    /// The journal, or None for no journal.
    pub journal: Option<JournalConfig>,
    /// The main configuration file, and whether it must exist.
    pub config: (PathBuf, bool),
    /// Where to serve Prometheus metrics (off when None).
    pub metrics: Option<SocketAddr>,
    /// The socket for ordinary users.
    pub socket: SocketOptions,
    /// The exit code a kill's verdict gives (the CLI's mapping, for reports sent over the
    /// socket).
    pub exit_code: fn(crate::kill::report::Verdict) -> u8,
}

/// A service with no process left is forgotten only this long after it was registered, so
/// a `run` between registering and tagging itself is never lost.
const FORGET_GRACE: Duration = Duration::from_secs(5);

/// How often the daemon forgets the tags of exited processes whose exit the kernel skipped.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Runs the daemon in the foreground, on a single-threaded tokio runtime (the metrics
/// endpoint's scrapes run on its blocking pool).
pub fn run(paths: &PinPaths, opts: &Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    runtime.block_on(serve(paths, opts))
}

async fn serve(paths: &PinPaths, opts: &Options) -> Result<()> {
    // Signals first, so a SIGTERM or SIGHUP during start-up is not lost.
    let signal = |kind: SignalKind, what: &str| {
        unix::signal(kind).map_err(|e| Error::io(format!("install a {what} handler"), e))
    };
    let mut term = signal(SignalKind::terminate(), "SIGTERM")?;
    let mut int = signal(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = signal(SignalKind::hangup(), "SIGHUP")?;
    // A broken configuration stops the start before anything is loaded.
    let mut config = Config::load(&opts.config.0, opts.config.1)?;
    // A second daemon stops here, before it opens a journal or touches tracking.
    if let Ok(t) = Tracking::open(paths) {
        if let Some(other) = t.running_daemon().filter(|s| s.pid != std::process::id()) {
            return Err(Error::AlreadyRunning(format!(
                "another bpfkill daemon (PID {}) runs for {}",
                other.pid,
                paths.root().display()
            )));
        }
    }
    let mut writer = match &opts.journal {
        Some(cfg) => {
            let w = journal::Writer::open(cfg)?;
            tracing::info!("journal: {}", cfg.dir.join(journal::ACTIVE_FILE).display());
            Some(w)
        }
        None => None,
    };
    let loaded_by_child = !paths.is_live()? && load_in_child(paths, &opts.load);
    match tracking::load(paths, &opts.load)?.outcome {
        tracking::LoadOutcome::Adopted if loaded_by_child => {
            tracing::info!("tracking loaded, pinned under {}", paths.root().display())
        }
        tracking::LoadOutcome::Adopted => {
            tracing::info!("adopted pinned tracking under {}", paths.root().display())
        }
        tracking::LoadOutcome::Loaded { attached } => tracing::info!(
            "tracking loaded: {attached} program(s) attached, pinned under {}",
            paths.root().display()
        ),
    }
    let mut tracking = Tracking::open(paths)?;
    let mut state = StateWriter::claim(
        &mut tracking,
        &opts.config.0,
        opts.journal.as_ref().map(|j| j.dir.as_path()),
    )?;
    let counters = Arc::new(metrics::DaemonCounters::default());
    if let Some(addr) = opts.metrics {
        let bound = metrics::serve(addr, paths.clone(), Arc::clone(&counters)).await?;
        tracing::info!("metrics: http://{bound}/metrics");
    }
    let _socket = socket::listen(
        paths,
        &opts.socket,
        opts.exit_code,
        opts.journal.as_ref().map(|j| j.dir.as_path()),
    )?;
    if let Some(s) = &_socket {
        tracing::info!("socket for ordinary users: {}", s.path().display());
    }
    let mut d = Daemon {
        applied: Applied::default(),
        names: Names::default(),
        watch: Watch::new(),
        pending_forget: BTreeSet::new(),
        counters: Arc::clone(&counters),
    };
    d.apply(&mut tracking, &config, writer.as_mut())?;
    if let Some(w) = writer.as_mut() {
        w.flush()?;
    }
    let map = tracking::open_pinned(paths, maps::EVENTS)?;
    let ring = RingBuf::try_from(Map::RingBuf(map)).map_err(|e| Error::map("event ring buffer", e))?;
    // SAFETY: the ring buffer owns its map fd, open and the same for as long as it lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| Error::io("watch the event ring buffer", e.into()))?;
    let mut kernel_log = open_kernel_log(paths, &tracking)?;
    // Losses before this daemon started are not this journal's to report.
    let mut lost_seen = tracking.stats()[stat::EVENTS_LOST as usize];
    state.ready(&mut tracking)?;
    state::notify_systemd("READY=1");
    tracing::info!(
        "ready: {} service(s) configured, {} rule(s) in the kernel; consuming events; SIGHUP reloads, SIGTERM stops (tracking stays pinned)",
        config.services.len(),
        d.applied.rules.len()
    );

    // Forgetting unused services and retrying a degraded journal run once a second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Tags that outlived their process because the kernel skipped an exit run (see
    // tracking::skips) are swept now and then, so that they never fill the tag map.
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let journal_degraded = writer.as_ref().is_some_and(|w| w.degraded().is_some());
        let timed = !d.pending_forget.is_empty() || journal_degraded;
        tokio::select! {
            _ = term.recv() => return stop(paths, state, &mut tracking, writer.as_mut()),
            _ = int.recv() => return stop(paths, state, &mut tracking, writer.as_mut()),
            _ = hup.recv() => {
                reload(&mut d, &mut state, &mut tracking, &mut config, opts, writer.as_mut())?;
            }
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(|e| Error::io("wait for events", e))?;
                // Edge-triggered: drain the ring buffer completely before clearing readiness.
                let handled = drain_events(
                    &mut d,
                    &mut tracking,
                    guard.get_inner_mut(),
                    &mut lost_seen,
                    writer.as_mut(),
                )?;
                guard.clear_ready();
                tracing::trace!("{handled} event(s)");
            }
            ready = async { kernel_log.as_mut().expect("guarded").readable_mut().await }, if kernel_log.is_some() => {
                let mut guard = ready.map_err(|e| Error::io("wait for kernel log records", e))?;
                // Edge-triggered too: every record forwarded before readiness is cleared.
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = d.watch.changed() => d.refresh(&mut tracking)?,
            _ = sweep.tick() => {
                let n = tracking.forget_exited();
                if n > 0 {
                    tracing::info!("forgot {n} tag(s) of exited processes whose exit the kernel skipped");
                }
            }
            _ = tick.tick(), if timed => {
                if !d.pending_forget.is_empty() {
                    d.forget_unused(&mut tracking, writer.as_mut())?;
                }
                if let Some(w) = writer.as_mut().filter(|w| w.degraded().is_some()) {
                    w.try_resume();
                }
            }
        }
        note_losses(&tracking, &mut lost_seen, writer.as_mut())?;
        if let Some(w) = writer.as_mut() {
            w.flush()?;
            state.journal(&mut tracking, w.degraded(), w.dropped())?;
            counters.journal(w);
        }
    }
}

/// The kernel programs' log, watched when they were loaded with a level (`--kernel-log`).
fn open_kernel_log(paths: &PinPaths, tracking: &Tracking) -> Result<Option<AsyncFd<tracking::KernelLog>>> {
    let level = tracking::KernelLogLevel(tracking.layout()?.log_level);
    if level.is_off() {
        return Ok(None);
    }
    let mut log = tracking::KernelLog::open(paths)?;
    tracing::info!("forwarding the kernel programs' diagnostics (level {level}) under target `kernel`");
    // What they said while no daemon ran.
    log.flush();
    // SAFETY: the logger owns its ring buffer's fd, open and the same for as long as it lives.
    let log = unsafe { AsyncFd::register_with_interest(log, Interest::READABLE) }
        .map_err(|e| Error::io("watch the kernel log ring buffer", e.into()))?;
    Ok(Some(log))
}

/// Decodes and handles every event in the ring buffer; returns how many.
fn drain_events(
    d: &mut Daemon,
    tracking: &mut Tracking,
    ring: &mut RingBuf<MapData>,
    lost_seen: &mut u64,
    mut writer: Option<&mut journal::Writer>,
) -> Result<usize> {
    let mut handled = 0usize;
    while let Some(item) = ring.next() {
        let Some(ev) = events::decode(&item) else {
            tracing::warn!("undecodable event of {} bytes", item.len());
            continue;
        };
        drop(item);
        d.event(tracking, &ev, writer.as_deref_mut())?;
        handled += 1;
        // A long backlog (a fork storm): report losses and let readers see progress without
        // waiting for the ring buffer to drain.
        if handled.is_multiple_of(4096) {
            note_losses(tracking, lost_seen, writer.as_deref_mut())?;
            if let Some(w) = writer.as_deref_mut() {
                w.flush()?;
            }
        }
    }
    Ok(handled)
}

/// Loads tracking in a child process (`bpfkill load`), so that the tens of MiB that parsing
/// the kernel's BTF takes never count in the long-lived daemon's memory. False when that did
/// not work; the daemon then loads it itself.
fn load_in_child(paths: &PinPaths, opts: &tracking::LoadOptions) -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("load")
        .arg("--max-tags")
        .arg(opts.max_tags.to_string())
        .env(tracking::PIN_DIR_ENV, paths.root())
        .stdout(std::process::Stdio::null());
    if let Some(level) = opts.kernel_log {
        cmd.arg("--kernel-log").arg(level.to_string());
    }
    match cmd.status() {
        Ok(st) if st.success() => true,
        Ok(st) => {
            tracing::warn!("loading tracking in a child process failed ({st}); loading it here");
            false
        }
        Err(e) => {
            tracing::warn!("cannot run bpfkill load ({e}); loading tracking here");
            false
        }
    }
}

/// SIGHUP: the configuration again; a broken one keeps the previous rules and says why.
fn reload(
    d: &mut Daemon,
    state: &mut StateWriter,
    tracking: &mut Tracking,
    config: &mut Config,
    opts: &Options,
    writer: Option<&mut journal::Writer>,
) -> Result<()> {
    let mut writer = writer;
    let failed = match Config::load(&opts.config.0, opts.config.1) {
        Ok(new) => match d.apply(tracking, &new, writer.as_deref_mut()) {
            Ok(()) => {
                *config = new;
                state.reloaded(tracking, None)?;
                journal_daemon(writer, "reload", None)?;
                tracing::info!("configuration reloaded: {} service(s)", config.services.len());
                return Ok(());
            }
            // Valid, but it does not fit (a full rule map or registry): the daemon keeps
            // running on the previous rules, put back in full.
            Err(e) => {
                if let Err(again) = d.apply(tracking, config, writer.as_deref_mut()) {
                    tracing::error!("putting the previous rules back failed: {again}");
                }
                format!("applying {}: {e}", opts.config.0.display())
            }
        },
        Err(e) => e.to_string(),
    };
    tracing::error!("reload failed, the previous rules stay: {failed}");
    state.reloaded(tracking, Some(&failed))?;
    journal_daemon(writer, "reload-failed", Some(failed))?;
    Ok(())
}

/// SIGTERM/SIGINT: the daemon's state released, the journal synced; tracking stays pinned.
fn stop(
    paths: &PinPaths,
    state: StateWriter,
    tracking: &mut Tracking,
    writer: Option<&mut journal::Writer>,
) -> Result<()> {
    state.release(tracking);
    if let Some(w) = writer {
        w.sync()?;
    }
    tracing::info!("stopping; tracking stays pinned under {}", paths.root().display());
    Ok(())
}

/// The daemon's working state.
struct Daemon {
    applied: Applied,
    names: Names,
    watch: Watch,
    /// Services whose processes exited: forgotten once unused (unless configured).
    pending_forget: BTreeSet<u32>,
    /// What the metrics endpoint reports of the daemon itself.
    counters: Arc<metrics::DaemonCounters>,
}

impl Daemon {
    /// Applies a configuration: rules, adoption of running matches (journaled), watches.
    fn apply(
        &mut self,
        tracking: &mut Tracking,
        config: &Config,
        writer: Option<&mut journal::Writer>,
    ) -> Result<()> {
        let applied = Applied::apply(tracking, config)?;
        for w in &applied.warnings {
            tracing::warn!("{w}");
        }
        let mut writer = writer;
        for (service, pid, how) in &applied.adopted {
            tracing::info!(
                "{service}: adopted running PID {pid} (matched by {how}); its lineage before now is unknown"
            );
            if let Some(w) = writer.as_deref_mut() {
                let mut rec = Record::new("adopt", SystemTime::now());
                rec.service = service.clone();
                rec.pid = *pid;
                rec.comm = bpfkill_common::user::c_str(&crate::sys::procs::comm(*pid).unwrap_or_default())
                    .into_owned();
                w.append(&rec)?;
            }
        }
        self.watch.set(&applied.watched_dirs());
        self.applied = applied;
        self.names.clear();
        Ok(())
    }

    /// An exe rule's directory changed: add the new identity of any changed file.
    fn refresh(&mut self, tracking: &mut Tracking) -> Result<()> {
        for path in self.applied.refresh(tracking)? {
            tracing::info!(
                "{} changed (an upgrade?): its exe rule now matches the new file too",
                path.display()
            );
        }
        Ok(())
    }

    /// One kernel event: journaled; a match may give its service a main process; an exit may
    /// leave its service unused.
    fn event(
        &mut self,
        tracking: &mut Tracking,
        ev: &TrackedEvent,
        writer: Option<&mut journal::Writer>,
    ) -> Result<()> {
        let name = self.names.get(tracking, ev.service_id);
        tracing::debug!(service = %name, "{}", ev.describe());
        match ev.kind {
            Kind::Exit | Kind::Leave => {
                self.pending_forget.insert(ev.service_id);
            }
            Kind::Match => {
                registry::adopt_main(tracking, ev.service_id, ev.pid, ev.start_ns)?;
                if ev.prev_service_id != 0 {
                    self.pending_forget.insert(ev.prev_service_id);
                }
            }
            Kind::Fork | Kind::Exec => {}
        }
        self.counters.event();
        if let Some(w) = writer {
            let mut rec = record_of(ev, &name);
            if ev.kind == Kind::Match && ev.prev_service_id != 0 {
                rec.from_service = Some(self.names.get(tracking, ev.prev_service_id));
            }
            w.append(&rec)?;
        }
        Ok(())
    }

    /// Forgets the services of `pending_forget` that are unused (journaling it); keeps the
    /// ones still within their grace for a later look.
    fn forget_unused(&mut self, tracking: &mut Tracking, writer: Option<&mut journal::Writer>) -> Result<()> {
        let ids: Vec<u32> = self.pending_forget.iter().copied().collect();
        let outcome = registry::release_unused(tracking, &ids, FORGET_GRACE)?;
        let mut writer = writer;
        for (id, name) in &outcome.forgotten {
            tracing::info!("{name}: no process left; forgotten (its history stays in the journal)");
            // Exits of its last processes may still be in the ring buffer behind this tick:
            // they keep its name until the id is registered again.
            self.names.forgotten(*id);
            if let Some(w) = writer.as_deref_mut() {
                let mut rec = Record::new("forget", SystemTime::now());
                rec.service = name.clone();
                rec.service_id = *id;
                w.append(&rec)?;
            }
        }
        self.pending_forget = outcome.waiting.into_iter().collect();
        Ok(())
    }
}

/// A journal record about the daemon itself (reloads).
fn journal_daemon(writer: Option<&mut journal::Writer>, event: &str, error: Option<String>) -> Result<()> {
    if let Some(w) = writer {
        let mut rec = Record::new(event, SystemTime::now());
        rec.service = "daemon".into();
        rec.pid = std::process::id();
        rec.error = error;
        w.append(&rec)?;
    }
    Ok(())
}

/// Journals (and logs) the events the kernel could not deliver since the last check.
fn note_losses(tracking: &Tracking, seen: &mut u64, writer: Option<&mut journal::Writer>) -> Result<()> {
    let now = tracking.stats()[stat::EVENTS_LOST as usize];
    if now > *seen {
        let n = now - *seen;
        tracing::warn!("{n} event(s) lost: the ring buffer was full");
        if let Some(w) = writer {
            w.append(&Record::lost(n, SystemTime::now()))?;
        }
        *seen = now;
    }
    Ok(())
}

/// The journal record of an event; for an exec or a match, argv is read from /proc while the
/// process still runs the new image (best effort: it may already have exited or exec'd again).
fn record_of(ev: &TrackedEvent, service: &str) -> Record {
    let mut rec = Record::from_event(ev, service, clock::boot_to_wall(ev.time_ns));
    if matches!(ev.kind, Kind::Exec | Kind::Match) {
        rec.argv = procfs::process::Process::new(ev.pid as i32)
            .and_then(|p| p.cmdline())
            .ok()
            .filter(|a| !a.is_empty());
    }
    rec
}

/// Service names by id, looked up once each (a miss is retried: the service may have been
/// registered after the last lookup). A forgotten service keeps its name for the late events
/// of its last processes.
#[derive(Default)]
struct Names {
    /// Service id → name.
    known: HashMap<u32, String>,
    /// Ids of services forgotten since: their cached names hold until the registry gives the
    /// id to another service.
    forgotten: BTreeSet<u32>,
}

impl Names {
    fn get(&mut self, tracking: &Tracking, id: u32) -> String {
        if let Some(n) = self.known.get(&id) {
            if !self.forgotten.contains(&id) {
                return n.clone();
            }
        }
        match registry::list(tracking).into_iter().find(|s| s.id == id) {
            Some(s) => {
                self.forgotten.remove(&id);
                self.known.insert(id, s.name.clone());
                s.name
            }
            // A late event of a forgotten service.
            None => self.known.get(&id).cloned().unwrap_or_else(|| format!("#{id}")),
        }
    }

    fn forgotten(&mut self, id: u32) {
        self.forgotten.insert(id);
    }

    fn clear(&mut self) {
        self.known.clear();
        self.forgotten.clear();
    }
}

/// inotify on the directories of the exe rules' files (a package upgrade renames a new
/// binary over the old path).
struct Watch {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Watch {
    fn new() -> Self {
        use rustix::fs::inotify::{init, CreateFlags};
        let fd = init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| tracing::warn!("no inotify ({e}): upgraded binaries are noticed at reload only"))
            .ok()
            .and_then(|fd| {
                // SAFETY: an OwnedFd stays open and the same for as long as it lives.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|e| {
                        let e: std::io::Error = e.into();
                        tracing::warn!("cannot poll inotify ({e}): upgrades are noticed at reload only")
                    })
                    .ok()
            });
        Self { fd }
    }

    /// Watches exactly `dirs` (a fresh inotify instance replaces the old watches).
    fn set(&mut self, dirs: &BTreeSet<PathBuf>) {
        use rustix::fs::inotify::{add_watch, WatchFlags};
        *self = Self::new();
        let Some(fd) = &self.fd else { return };
        for dir in dirs {
            let flags =
                WatchFlags::MOVED_TO | WatchFlags::CREATE | WatchFlags::CLOSE_WRITE | WatchFlags::ATTRIB;
            if let Err(e) = add_watch(fd.get_ref(), dir.as_path(), flags) {
                tracing::warn!("cannot watch {} for upgrades: {e}", Path::new(dir).display());
            }
        }
    }

    /// Resolves when a watched directory changed (never, without inotify), its events read.
    async fn changed(&self) {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        let Ok(mut guard) = fd.readable().await else {
            return std::future::pending().await;
        };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        while rustix::io::read(fd.get_ref(), &mut buf).is_ok_and(|(done, _)| !done.is_empty()) {}
        guard.clear_ready();
    }
}
