//! Waiting for signalled processes to exit: every pidfd in one epoll set, so each exit is
//! one event (a poll(2) over all of them after each exit would cost O(n²) for a large tree);
//! no sleep loops. On a terminal, a live count of survivors is shown on stderr.

use std::{
    collections::HashSet,
    io::{IsTerminal, Write},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use rustix::event::{epoll, Timespec};

/// A process being waited for.
#[derive(Debug)]
pub struct Waitee {
    /// Its PID.
    pub pid: u32,
    /// Its pidfd, readable once it has exited.
    pub pidfd: OwnedFd,
}

impl Waitee {
    /// A process to wait for, by a pidfd opened now for waiting only (nothing is ever sent
    /// to it); None when there is no such process.
    pub fn open(pid: u32) -> Option<Self> {
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32)?,
            rustix::process::PidfdFlags::empty(),
        )
        .ok()?;
        Some(Self { pid, pidfd })
    }
}

/// Waits until every waitee has exited or `timeout` passes (None: forever). Returns the
/// survivors; the ones that exited are dropped (their pidfds closed).
pub fn wait_all(waitees: Vec<Waitee>, timeout: Option<Duration>) -> Vec<Waitee> {
    // A deadline past what the clock can hold is no deadline.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    wait(waitees, deadline, None)
}

/// Waits while the waitees keep exiting: returns once all have exited, once none exited for
/// `idle`, or at `deadline`. Returns the survivors.
pub fn wait_while_exiting(waitees: Vec<Waitee>, idle: Duration, deadline: Instant) -> Vec<Waitee> {
    wait(waitees, Some(deadline), Some(idle))
}

fn wait(waitees: Vec<Waitee>, deadline: Option<Instant>, idle: Option<Duration>) -> Vec<Waitee> {
    if waitees.is_empty() {
        return waitees;
    }
    let set = match epoll::create(epoll::CreateFlags::CLOEXEC) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!("epoll_create failed: {e}");
            return waitees;
        }
    };
    let mut exited: HashSet<usize> = HashSet::new();
    for (i, w) in waitees.iter().enumerate() {
        if let Err(e) = epoll::add(
            &set,
            &w.pidfd,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        ) {
            tracing::warn!("cannot wait for {}: {e}", w.pid);
        }
    }
    let tty = std::io::stderr().is_terminal();
    let mut shown = usize::MAX;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(waitees.len().min(1024));
    while exited.len() < waitees.len() {
        let left_count = waitees.len() - exited.len();
        if tty && shown != left_count {
            shown = left_count;
            eprint!("\r\x1b[Kwaiting for {shown} process(es) to exit...");
            let _ = std::io::stderr().flush();
        }
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                Some(left)
            }
            None => None,
        };
        let left = match (left, idle) {
            (Some(l), Some(i)) => Some(l.min(i)),
            (l, i) => l.or(i),
        };
        let ts = left.map(|l| Timespec {
            tv_sec: l.as_secs() as i64,
            tv_nsec: l.subsec_nanos() as i64,
        });
        events.clear();
        match epoll::wait(&set, rustix::buffer::spare_capacity(&mut events), ts.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::warn!("waiting on pidfds failed: {e}");
                break;
            }
        }
        for ev in &events {
            let i = ev.data.u64() as usize;
            if exited.insert(i) {
                let _ = epoll::delete(&set, &waitees[i].pidfd);
            }
        }
        if events.is_empty() && idle.is_some() {
            break; // nothing exited for `idle`
        }
    }
    if tty && shown != usize::MAX {
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
    waitees
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !exited.contains(i))
        .map(|(_, w)| w)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{pidfd_open, Pid, PidfdFlags};

    #[test]
    fn returns_when_children_exit_and_keeps_survivors() {
        let mut quick = std::process::Command::new("true").spawn().unwrap();
        let mut slow = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let open = |c: &std::process::Child| Waitee {
            pid: c.id(),
            pidfd: pidfd_open(Pid::from_raw(c.id() as i32).unwrap(), PidfdFlags::empty()).unwrap(),
        };
        let waitees = vec![open(&quick), open(&slow)];
        // Reaped first, so that its exit does not race the timeout on a slow (emulated)
        // machine; its pidfd, opened before, still reports the exit.
        quick.wait().unwrap();
        let left = wait_all(waitees, Some(Duration::from_millis(300)));
        assert_eq!(left.iter().map(|w| w.pid).collect::<Vec<_>>(), vec![slow.id()]);
        slow.kill().unwrap();
        let left = wait_all(left, Some(Duration::from_secs(60)));
        assert!(left.is_empty());
        slow.wait().unwrap();
    }
}
