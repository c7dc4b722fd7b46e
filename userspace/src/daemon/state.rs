//! The daemon's word about itself, kept in a pinned map so every bpfkill command sees it:
//! which process is the daemon (one per pin directory), whether its configuration is applied
//! (`status` exits 0 only then), how many configurations it has applied, and why the last
//! reload failed. systemd's `Type=notify` hears the same through `$NOTIFY_SOCKET`.

use std::{os::unix::net::UnixDatagram, time::SystemTime};

use bpfkill_common::{daemon_flags, DaemonState, DAEMON_ERROR_LEN};

use crate::{
    error::{Error, Result},
    sys::{clock, procs},
    tracking::Tracking,
};

/// The state of this daemon, written as it changes.
pub struct StateWriter {
    state: DaemonState,
}

impl StateWriter {
    /// Records this process as the pin directory's daemon (not ready yet); refused when
    /// another daemon runs.
    pub fn claim(tracking: &mut Tracking) -> Result<Self> {
        if let Some(other) = tracking.running_daemon().filter(|s| s.pid != std::process::id()) {
            return Err(Error::Refused(format!(
                "another bpfkill daemon (PID {}) runs for {}",
                other.pid,
                tracking.paths().root().display()
            )));
        }
        let me = std::process::id();
        let start = procs::start_ticks(me).map(clock::ticks_to_ns).unwrap_or(0);
        let state = DaemonState {
            pid: me,
            start_ns: start,
            loaded_unix_ns: clock::epoch_ns(SystemTime::now()),
            ..DaemonState::default()
        };
        tracking.set_daemon_state(&state)?;
        Ok(Self { state })
    }

    /// The configuration is applied: ready.
    pub fn ready(&mut self, tracking: &mut Tracking) -> Result<()> {
        self.state.flags |= daemon_flags::READY;
        self.state.generation = 1;
        tracking.set_daemon_state(&self.state)
    }

    /// A reload: applied (`error` None) or refused with its reason (the old rules stay).
    pub fn reloaded(&mut self, tracking: &mut Tracking, error: Option<&str>) -> Result<()> {
        self.state.loaded_unix_ns = clock::epoch_ns(SystemTime::now());
        self.state.error = [0; DAEMON_ERROR_LEN];
        match error {
            None => {
                self.state.generation += 1;
                self.state.flags &= !daemon_flags::RELOAD_FAILED;
            }
            Some(why) => {
                self.state.flags |= daemon_flags::RELOAD_FAILED;
                // Cut at a character boundary, keeping a terminating NUL.
                let mut n = why.len().min(DAEMON_ERROR_LEN - 1);
                while !why.is_char_boundary(n) {
                    n -= 1;
                }
                self.state.error[..n].copy_from_slice(&why.as_bytes()[..n]);
            }
        }
        tracking.set_daemon_state(&self.state)
    }

    /// The daemon stops: no daemon runs for the pin directory any more.
    pub fn release(self, tracking: &mut Tracking) {
        let _ = tracking.set_daemon_state(&DaemonState::default());
    }
}

/// Tells systemd (`Type=notify`) `message`, when it listens.
pub fn notify_systemd(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
        }
        None => sock.send_to(message.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
