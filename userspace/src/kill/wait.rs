//! Waiting for signalled processes to exit: poll(2) on their pidfds, no sleep loops. On a
//! terminal, a live count of survivors is shown on stderr.

use std::{
    io::{IsTerminal, Write},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// A process being waited for.
#[derive(Debug)]
pub struct Waitee {
    /// Its PID.
    pub pid: u32,
    /// Its pidfd, readable once it has exited.
    pub pidfd: OwnedFd,
}

/// Waits until every waitee has exited or `timeout` passes (None: forever). Returns the
/// survivors; the ones that exited are dropped (their pidfds closed).
pub fn wait_all(mut waitees: Vec<Waitee>, timeout: Option<Duration>) -> Vec<Waitee> {
    // A deadline past what the clock can hold is no deadline.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let tty = std::io::stderr().is_terminal();
    let mut shown = usize::MAX;
    while !waitees.is_empty() {
        if tty && shown != waitees.len() {
            shown = waitees.len();
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
        let ts = left.map(|l| Timespec {
            tv_sec: l.as_secs() as i64,
            tv_nsec: l.subsec_nanos() as i64,
        });
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = waitees
                .iter()
                .map(|w| PollFd::new(&w.pidfd, PollFlags::IN))
                .collect();
            match poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!("poll on pidfds failed: {e}");
                    break;
                }
            }
            fds.iter().map(|f| !f.revents().is_empty()).collect()
        };
        let mut i = 0;
        waitees.retain(|_| {
            let keep = !ready[i];
            i += 1;
            keep
        });
    }
    if tty && shown != usize::MAX {
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
    waitees
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
