//! Real-time scheduling around a kill: a fork bomb leaves a normal-priority process almost no
//! CPU, so a kill that may SIGKILL runs at SCHED_FIFO (it blocks in poll whenever it waits).

/// Sets this thread's scheduling policy; false when not permitted.
fn set_policy(policy: libc::c_int, priority: libc::c_int) -> bool {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sets this thread's policy; param is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

/// Real-time scheduling for the duration of a kill; restores normal scheduling on drop.
pub struct RealTime(bool);

impl RealTime {
    /// Switches this thread to SCHED_FIFO priority 1 (no error when not permitted).
    pub fn enter() -> Self {
        let ok = set_policy(libc::SCHED_FIFO, 1);
        if !ok {
            tracing::debug!("no real-time priority: {}", std::io::Error::last_os_error());
        }
        Self(ok)
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        if self.0 {
            set_policy(libc::SCHED_OTHER, 0);
        }
    }
}

/// Normal scheduling for a while inside a real-time kill (restored on drop): once the kernel
/// has killed a service and its doom kills any forker in the kernel, what is left for
/// userspace (bookkeeping, waiting) must not take CPU from the dying processes.
pub struct Normal(bool);

impl Normal {
    /// Switches this thread to SCHED_OTHER if it runs at SCHED_FIFO.
    pub fn enter() -> Self {
        // SAFETY: queries this thread's policy.
        let was_fifo = unsafe { libc::sched_getscheduler(0) } == libc::SCHED_FIFO;
        Self(was_fifo && set_policy(libc::SCHED_OTHER, 0))
    }
}

impl Drop for Normal {
    fn drop(&mut self) {
        if self.0 {
            set_policy(libc::SCHED_FIFO, 1);
        }
    }
}
