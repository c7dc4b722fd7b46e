//! Verify, then signal: each candidate is opened as a pidfd and checked against its start
//! time and the guard rails; only a checked pidfd is ever signalled.

use std::os::fd::OwnedFd;

use super::{candidates::Candidate, report::Outcome, wait::Waitee, Kill};
use crate::sys::{
    clock,
    identity::{self, Identity},
    signal::Signal,
};

impl Kill<'_> {
    /// Opens and checks a candidate. Returns its pidfd when it may be signalled; otherwise
    /// records why not.
    pub(super) fn verify(&mut self, c: &Candidate) -> Option<OwnedFd> {
        let verdict = identity::open_verified(c.pid, clock::ticks_to_ns(c.start_ticks));
        let guard_says = match &verdict {
            Ok(Identity::Alive { stat, .. }) => self.guard.check(c.pid, Some(stat)),
            _ => None,
        };
        let r = self.result_mut(c);
        match verdict {
            Ok(Identity::Gone) => {
                if r.signals.is_empty() {
                    r.outcome = Outcome::Gone;
                }
                None
            }
            Ok(Identity::Recycled { .. }) => {
                r.outcome = Outcome::Recycled;
                None
            }
            Ok(Identity::Alive { pidfd, stat }) => {
                r.comm = Some(stat.comm.clone());
                if let Some(p) = guard_says {
                    r.outcome = Outcome::Protected(p);
                    return None;
                }
                Some(pidfd)
            }
            Err(e) => {
                r.outcome = Outcome::Failed(e.to_string());
                None
            }
        }
    }

    pub(super) fn send(&mut self, c: &Candidate, pidfd: OwnedFd, sig: Signal) {
        let sent = sig.send(&pidfd);
        let r = self.result_mut(c);
        match sent {
            Ok(()) => {
                r.outcome = Outcome::Signalled;
                r.signals.push(sig);
                self.live.retain(|w| w.pid != c.pid);
                self.live.push(Waitee { pid: c.pid, pidfd });
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                if r.signals.is_empty() {
                    r.outcome = Outcome::Gone;
                }
            }
            Err(e) => r.outcome = Outcome::Failed(e.to_string()),
        }
    }
}
