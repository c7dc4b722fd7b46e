//! `bpfkill daemon`: load the tracking programs (or adopt the pinned ones), then consume the
//! event ring buffer until SIGTERM/SIGINT, writing every fork/exec/exit of a tracked process
//! to the history journal (see [`crate::forensics::journal`]) and logging it. Stopping the daemon keeps
//! tracking pinned.

use std::collections::HashMap;

use aya::maps::{Map, RingBuf};
use bpfkill_common::{maps, stat};
use rustix::event::{poll, PollFd, PollFlags};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::{
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
}

/// Runs the daemon in the foreground.
pub fn run(paths: &PinPaths, opts: &Options) -> Result<()> {
    // Register the stop signals before loading, so a SIGTERM during load is not lost.
    let (stop_rd, stop_wr) =
        std::os::unix::net::UnixStream::pair().map_err(|e| Error::io("create the signal pipe", e))?;
    for sig in [SIGTERM, SIGINT] {
        signal_hook::low_level::pipe::register(sig, stop_wr.try_clone().map_err(|e| Error::io("dup", e))?)
            .map_err(|e| Error::io("install signal handler", e))?;
    }
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
        tracking::LoadOutcome::Loaded { attached } => {
            tracing::info!(
                "tracking loaded: {attached} program(s) attached, pinned under {}",
                paths.root().display()
            )
        }
    }
    let tracking = Tracking::open(paths)?;
    let map = tracking::open_pinned(paths, maps::EVENTS)?;
    let mut ring = RingBuf::try_from(Map::RingBuf(map)).map_err(|e| Error::map("event ring buffer", e))?;
    let mut names = Names::default();
    // Losses before this daemon started are not this journal's to report.
    let mut lost_seen = tracking.stats()[stat::EVENTS_LOST as usize];
    tracing::info!("consuming events; SIGTERM stops the daemon and keeps tracking pinned");
    loop {
        let mut fds = [
            PollFd::new(&ring, PollFlags::IN),
            PollFd::new(&stop_rd, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::io("poll", e.into())),
        }
        let stop = fds[1].revents().contains(PollFlags::IN);
        let mut handled = 0usize;
        while let Some(item) = ring.next() {
            let Some(ev) = events::decode(&item) else {
                tracing::warn!("undecodable event of {} bytes", item.len());
                continue;
            };
            let name = names.get(&tracking, ev.service_id);
            tracing::debug!(service = %name, "{}", ev.describe());
            if let Some(w) = writer.as_mut() {
                w.append(&record_of(&ev, &name))?;
            }
            handled += 1;
            // A long backlog (a fork storm): report losses and let readers see progress
            // without waiting for the ring buffer to drain.
            if handled.is_multiple_of(4096) {
                drop(item);
                note_losses(&tracking, &mut lost_seen, writer.as_mut())?;
                if let Some(w) = writer.as_mut() {
                    w.flush()?;
                }
            }
        }
        note_losses(&tracking, &mut lost_seen, writer.as_mut())?;
        if let Some(w) = writer.as_mut() {
            w.flush()?;
        }
        if stop {
            if let Some(w) = writer.as_mut() {
                w.sync()?;
            }
            tracing::info!("stopping; tracking stays pinned under {}", paths.root().display());
            return Ok(());
        }
    }
}

/// Journals (and logs) the events the kernel could not deliver since the last check.
fn note_losses(tracking: &Tracking, seen: &mut u64, writer: Option<&mut journal::Writer>) -> Result<()> {
    let now = tracking.stats()[stat::EVENTS_LOST as usize];
    if now > *seen {
        let n = now - *seen;
        tracing::warn!("{n} event(s) lost: the ring buffer was full");
        if let Some(w) = writer {
            w.append(&Record::lost(n, std::time::SystemTime::now()))?;
        }
        *seen = now;
    }
    Ok(())
}

/// The journal record of an event; for an exec, argv is read from /proc while the process
/// still runs the new image (best effort: it may already have exited or exec'd again).
fn record_of(ev: &TrackedEvent, service: &str) -> Record {
    let mut rec = Record::from_event(ev, service, clock::boot_to_wall(ev.time_ns));
    if ev.kind == Kind::Exec {
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
