//! `bpfkill daemon`: load the tracking programs (or adopt the pinned ones), then consume the
//! event ring buffer until SIGTERM/SIGINT. Stopping the daemon keeps tracking pinned.

use std::collections::HashMap;

use aya::maps::{Map, RingBuf};
use bpfkill_common::maps;
use rustix::event::{poll, PollFd, PollFlags};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::{
    error::{Error, Result},
    events, service,
    tracking::{self, PinPaths, Tracking},
};

/// Runs the daemon in the foreground.
pub fn run(paths: &PinPaths, opts: &tracking::LoadOptions) -> Result<()> {
    // Register the stop signals before loading, so a SIGTERM during load is not lost.
    let (stop_rd, stop_wr) =
        std::os::unix::net::UnixStream::pair().map_err(|e| Error::io("create the signal pipe", e))?;
    for sig in [SIGTERM, SIGINT] {
        signal_hook::low_level::pipe::register(sig, stop_wr.try_clone().map_err(|e| Error::io("dup", e))?)
            .map_err(|e| Error::io("install signal handler", e))?;
    }
    match tracking::load(paths, opts)? {
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
    let mut names: HashMap<u32, String> = HashMap::new();
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
        while let Some(item) = ring.next() {
            if let Some(ev) = events::decode(&item) {
                let name = names
                    .entry(ev.service_id)
                    .or_insert_with(|| service_name(&tracking, ev.service_id));
                tracing::info!(service = %name, "{}", ev.describe());
            } else {
                tracing::warn!("undecodable event of {} bytes", item.len());
            }
        }
        if stop {
            tracing::info!("stopping; tracking stays pinned under {}", paths.root().display());
            return Ok(());
        }
    }
}

fn service_name(tracking: &Tracking, id: u32) -> String {
    service::list(tracking)
        .into_iter()
        .find(|s| s.id == id)
        .map(|s| s.name)
        .unwrap_or_else(|| format!("#{id}"))
}
