//! The signals a job's bpfkill receives, passed on to its command. bpfkill itself survives
//! them (it still has to clean up when the command exits). SIGINT, SIGQUIT and SIGHUP that
//! the terminal sent are not passed on when bpfkill is in the terminal's foreground process
//! group: the command, in the same group, got them from the terminal already.

use std::{
    future::poll_fn,
    os::fd::{AsFd, OwnedFd},
    task::Poll,
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    error::{Error, Result},
    sys::signal::Signal,
};

/// Signals passed on, and whether the terminal sends them to its foreground group.
const FORWARDED: [(i32, bool); 6] = [
    (libc::SIGTERM, false),
    (libc::SIGINT, true),
    (libc::SIGHUP, true),
    (libc::SIGQUIT, true),
    (libc::SIGUSR1, false),
    (libc::SIGUSR2, false),
];

/// bpfkill's handlers for [`FORWARDED`].
pub struct Forwarder {
    streams: Vec<(i32, bool, tokio::signal::unix::Signal)>,
}

impl Forwarder {
    /// Installs the handlers (from now on these signals no longer end bpfkill).
    pub fn install() -> Result<Self> {
        let mut streams = Vec::with_capacity(FORWARDED.len());
        for (sig, from_terminal) in FORWARDED {
            let stream = signal(SignalKind::from_raw(sig))
                .map_err(|e| Error::io(format!("install a handler for {}", Signal::name_of(sig)), e))?;
            streams.push((sig, from_terminal, stream));
        }
        Ok(Self { streams })
    }

    /// The next signal received: (number, whether a terminal may have sent it).
    pub async fn next(&mut self) -> (i32, bool) {
        poll_fn(|cx| {
            for (sig, from_terminal, stream) in &mut self.streams {
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready((*sig, *from_terminal));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Passes `sig` on to the command (through its pidfd), unless the terminal delivered it
    /// to the command already.
    pub fn forward(&self, (sig, from_terminal): (i32, bool), pidfd: &OwnedFd) {
        if from_terminal && in_terminal_foreground() {
            tracing::debug!(
                "{} came from the terminal to the command too",
                Signal::name_of(sig)
            );
            return;
        }
        if let Some(s) = Signal::from_number(sig) {
            if let Err(e) = s.send(pidfd.as_fd()) {
                tracing::debug!("passing {} on: {e}", s.name());
            }
        }
    }
}

/// True when bpfkill's process group is the foreground group of the terminal on its stdin.
fn in_terminal_foreground() -> bool {
    rustix::termios::tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg == rustix::process::getpgrp())
}

/// Sends `sig` to the unreaped child `pid` (its number cannot be reused before it is reaped).
pub fn send(pid: u32, sig: Signal) {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    if let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        let _ = sig.send(pidfd);
    }
}
