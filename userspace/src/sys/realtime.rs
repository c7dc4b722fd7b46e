//! Real-time scheduling around a kill: a fork bomb leaves a normal-priority process almost no
//! CPU, so a kill that may SIGKILL runs at SCHED_FIFO (it blocks in poll whenever it waits).

/// Real-time scheduling for the duration of a kill; restores normal scheduling on drop.
pub struct RealTime(bool);

impl RealTime {
    /// Switches this thread to SCHED_FIFO priority 1 (no error when not permitted).
    pub fn enter() -> Self {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: sets this thread's policy; param is a valid sched_param.
        let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
        if !ok {
            tracing::debug!("no real-time priority: {}", std::io::Error::last_os_error());
        }
        Self(ok)
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        if self.0 {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as above.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}
