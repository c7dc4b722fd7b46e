//! `bpfkill daemon`: load the tracking programs (or adopt the pinned ones), apply the
//! configuration's rules ([`rules`]), then consume the event ring buffer until
//! SIGTERM/SIGINT, writing every fork/exec/exit/match of a tracked process to the history
//! journal (see [`crate::forensics::journal`]). SIGHUP reloads the configuration (a broken one
//! keeps the old rules and says why); a change in an exe rule's directory refreshes that
//! rule (a package upgrade); services nobody configured are forgotten once their last
//! process is gone and journaled. Stopping the daemon keeps tracking pinned.

pub mod rules;
mod state;

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{Map, RingBuf};
use bpfkill_common::{maps, stat};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

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
}

/// A service with no process left is forgotten only this long after it was registered, so
/// a `run` between registering and tagging itself is never lost.
const FORGET_GRACE: Duration = Duration::from_secs(5);

/// A signal pipe: the read end becomes readable when one of `signals` arrives.
fn signal_pipe(signals: &[i32]) -> Result<std::os::unix::net::UnixStream> {
    let (rd, wr) =
        std::os::unix::net::UnixStream::pair().map_err(|e| Error::io("create a signal pipe", e))?;
    rd.set_nonblocking(true)
        .map_err(|e| Error::io("set the signal pipe non-blocking", e))?;
    for &sig in signals {
        signal_hook::low_level::pipe::register(sig, wr.try_clone().map_err(|e| Error::io("dup", e))?)
            .map_err(|e| Error::io("install a signal handler", e))?;
    }
    Ok(rd)
}

/// Empties a signal pipe.
fn drain(pipe: &std::os::unix::net::UnixStream) {
    let mut buf = [0u8; 64];
    while std::io::Read::read(&mut &*pipe, &mut buf).is_ok_and(|n| n > 0) {}
}

/// Runs the daemon in the foreground.
pub fn run(paths: &PinPaths, opts: &Options) -> Result<()> {
    // Signals first, so a SIGTERM or SIGHUP during start-up is not lost.
    let stop = signal_pipe(&[SIGTERM, SIGINT])?;
    let hup = signal_pipe(&[SIGHUP])?;
    // A broken configuration stops the start before anything is loaded.
    let mut config = Config::load(&opts.config.0, opts.config.1)?;
    // Open the journal first: a second daemon must fail before touching tracking.
    let mut writer = match &opts.journal {
        Some(cfg) => {
            let w = journal::Writer::open(cfg)?;
            tracing::info!("journal: {}", cfg.dir.join(journal::ACTIVE_FILE).display());
            Some(w)
        }
        None => None,
    };
    match tracking::load(paths, &opts.load)? {
        tracking::LoadOutcome::Adopted => {
            tracing::info!("adopted pinned tracking under {}", paths.root().display())
        }
        tracking::LoadOutcome::Loaded { attached } => tracing::info!(
            "tracking loaded: {attached} program(s) attached, pinned under {}",
            paths.root().display()
        ),
    }
    let mut tracking = Tracking::open(paths)?;
    let mut state = StateWriter::claim(&mut tracking)?;
    let mut d = Daemon {
        applied: Applied::default(),
        names: Names::default(),
        watch: Watch::new(),
        pending_forget: BTreeSet::new(),
    };
    d.apply(&mut tracking, &config, writer.as_mut())?;
    if let Some(w) = writer.as_mut() {
        w.flush()?;
    }
    let map = tracking::open_pinned(paths, maps::EVENTS)?;
    let mut ring = RingBuf::try_from(Map::RingBuf(map)).map_err(|e| Error::map("event ring buffer", e))?;
    // Losses before this daemon started are not this journal's to report.
    let mut lost_seen = tracking.stats()[stat::EVENTS_LOST as usize];
    state.ready(&mut tracking)?;
    state::notify_systemd("READY=1");
    tracing::info!(
        "ready: {} service(s) configured, {} rule(s) in the kernel; consuming events; SIGHUP reloads, SIGTERM stops (tracking stays pinned)",
        config.services.len(),
        d.applied.rules.len()
    );

    let mut last_forget = Instant::now();
    loop {
        let timeout = (!d.pending_forget.is_empty()).then_some(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let (stopping, reloading, changed) = {
            let mut fds = vec![
                PollFd::new(&ring, PollFlags::IN),
                PollFd::new(&stop, PollFlags::IN),
                PollFd::new(&hup, PollFlags::IN),
            ];
            if let Some(fd) = &d.watch.fd {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::io("poll", e.into())),
            }
            let ready = |i: usize| fds.get(i).is_some_and(|f| f.revents().contains(PollFlags::IN));
            (ready(1), ready(2), ready(3))
        };
        let mut handled = 0usize;
        while let Some(item) = ring.next() {
            let Some(ev) = events::decode(&item) else {
                tracing::warn!("undecodable event of {} bytes", item.len());
                continue;
            };
            drop(item);
            d.event(&mut tracking, &ev, writer.as_mut())?;
            handled += 1;
            // A long backlog (a fork storm): report losses and let readers see progress
            // without waiting for the ring buffer to drain.
            if handled.is_multiple_of(4096) {
                note_losses(&tracking, &mut lost_seen, writer.as_mut())?;
                if let Some(w) = writer.as_mut() {
                    w.flush()?;
                }
            }
        }
        note_losses(&tracking, &mut lost_seen, writer.as_mut())?;
        if changed {
            d.refresh(&mut tracking)?;
        }
        if reloading {
            drain(&hup);
            match Config::load(&opts.config.0, opts.config.1) {
                Ok(new) => {
                    d.apply(&mut tracking, &new, writer.as_mut())?;
                    config = new;
                    state.reloaded(&mut tracking, None)?;
                    journal_daemon(writer.as_mut(), "reload", None)?;
                    tracing::info!("configuration reloaded: {} service(s)", config.services.len());
                }
                Err(e) => {
                    let why = e.to_string();
                    tracing::error!("reload failed, the previous rules stay: {why}");
                    state.reloaded(&mut tracking, Some(&why))?;
                    journal_daemon(writer.as_mut(), "reload-failed", Some(why))?;
                }
            }
        }
        if !d.pending_forget.is_empty() && last_forget.elapsed() >= Duration::from_secs(1) {
            d.forget_unused(&mut tracking, writer.as_mut())?;
            last_forget = Instant::now();
        }
        if let Some(w) = writer.as_mut() {
            w.flush()?;
        }
        if stopping {
            state.release(&mut tracking);
            if let Some(w) = writer.as_mut() {
                w.sync()?;
            }
            tracing::info!("stopping; tracking stays pinned under {}", paths.root().display());
            return Ok(());
        }
    }
}

/// The daemon's working state.
struct Daemon {
    applied: Applied,
    names: Names,
    watch: Watch,
    /// Services whose processes exited: forgotten once unused (unless configured).
    pending_forget: BTreeSet<u32>,
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
        self.names.0.clear();
        Ok(())
    }

    /// An exe rule's directory changed: add the new identity of any changed file.
    fn refresh(&mut self, tracking: &mut Tracking) -> Result<()> {
        self.watch.drain();
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
            self.names.0.remove(id);
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
/// registered after the last lookup).
#[derive(Default)]
struct Names(HashMap<u32, String>);

impl Names {
    fn get(&mut self, tracking: &Tracking, id: u32) -> String {
        if let Some(n) = self.0.get(&id) {
            return n.clone();
        }
        match registry::list(tracking).into_iter().find(|s| s.id == id) {
            Some(s) => {
                self.0.insert(id, s.name.clone());
                s.name
            }
            None => format!("#{id}"),
        }
    }
}

/// inotify on the directories of the exe rules' files (a package upgrade renames a new
/// binary over the old path).
struct Watch {
    fd: Option<OwnedFd>,
}

impl Watch {
    fn new() -> Self {
        use rustix::fs::inotify::{init, CreateFlags};
        let fd = init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| tracing::warn!("no inotify ({e}): upgraded binaries are noticed at reload only"))
            .ok();
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
            if let Err(e) = add_watch(fd, dir.as_path(), flags) {
                tracing::warn!("cannot watch {} for upgrades: {e}", Path::new(dir).display());
            }
        }
    }

    fn drain(&self) {
        let Some(fd) = &self.fd else { return };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        while rustix::io::read(fd, &mut buf).is_ok_and(|(done, _)| !done.is_empty()) {}
    }
}
