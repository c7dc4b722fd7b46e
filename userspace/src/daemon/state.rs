//! The daemon's word about itself, kept in a pinned map so every bpfkill command sees it:
//! which process is the daemon (one per pin directory), whether its configuration is applied
//! (`status` exits 0 only then), how many configurations it has applied, and why the last
//! reload failed. systemd's `Type=notify` hears the same through `$NOTIFY_SOCKET`.

use std::{os::unix::net::UnixDatagram, path::Path, time::SystemTime};

use bpfkill_common::{daemon_flags, user::set_c_str, DaemonState};

use crate::{
    error::{Error, Result},
    forensics::journal::Degraded,
    sys::{clock, procs},
    tracking::Tracking,
};

/// The state of this daemon, written as it changes.
pub struct StateWriter {
    state: DaemonState,
}

impl StateWriter {
    /// Records this process as the pin directory's daemon (not ready yet), with its version,
    /// configuration file and journal directory; refused when another daemon runs.
    pub fn claim(tracking: &mut Tracking, config: &Path, journal: Option<&Path>) -> Result<Self> {
        if let Some(other) = tracking.running_daemon().filter(|s| s.pid != std::process::id()) {
            return Err(Error::AlreadyRunning(format!(
                "another bpfkill daemon (PID {}) runs for {}",
                other.pid,
                tracking.paths().root().display()
            )));
        }
        let me = std::process::id();
        let start = procs::start_ticks(me).map(clock::ticks_to_ns).unwrap_or(0);
        let mut state = DaemonState {
            pid: me,
            start_ns: start,
            loaded_unix_ns: clock::epoch_ns(SystemTime::now()),
            ..DaemonState::default()
        };
        set_c_str(&mut state.version, env!("CARGO_PKG_VERSION"));
        set_c_str(&mut state.config, &config.to_string_lossy());
        if let Some(dir) = journal {
            set_c_str(&mut state.journal, &dir.to_string_lossy());
        }
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
        match error {
            None => {
                self.state.generation += 1;
                self.state.flags &= !daemon_flags::RELOAD_FAILED;
                set_c_str(&mut self.state.error, "");
            }
            Some(why) => {
                self.state.flags |= daemon_flags::RELOAD_FAILED;
                set_c_str(&mut self.state.error, why);
            }
        }
        tracking.set_daemon_state(&self.state)
    }

    /// The journal's health: degraded (why), or writing again; `dropped` records were not
    /// written since the start. Written only when it changed.
    pub fn journal(
        &mut self,
        tracking: &mut Tracking,
        degraded: Option<&Degraded>,
        dropped: u64,
    ) -> Result<()> {
        let was = self.state.flags & daemon_flags::JOURNAL_DEGRADED != 0;
        if was == degraded.is_some() && self.state.journal_dropped == dropped {
            return Ok(());
        }
        self.state.journal_dropped = dropped;
        match degraded {
            Some(d) => {
                self.state.flags |= daemon_flags::JOURNAL_DEGRADED;
                set_c_str(&mut self.state.journal_error, &d.reason);
            }
            None => {
                self.state.flags &= !daemon_flags::JOURNAL_DEGRADED;
                set_c_str(&mut self.state.journal_error, "");
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
