//! The kill: resolve the service → collect candidates → verify identity → signal, repeated
//! until a pass finds no process it has not handled (children forked during a pass are tagged
//! by the kernel and picked up by the next one).

use std::collections::HashSet;

use crate::{
    candidates,
    error::Result,
    guard::Guard,
    identity::{self, Identity},
    report::{KillReport, Outcome, ProcessResult},
    service,
    signal::Signal,
    tracking::Tracking,
};

/// What to kill and how.
#[derive(Debug, Clone)]
pub struct KillRequest {
    /// Service name.
    pub service: String,
    /// Signal to send.
    pub signal: Signal,
}

/// Upper bound on passes; each pass only handles processes not seen before, so a service
/// that forks faster than it can be signalled is reported, not chased forever.
const MAX_PASSES: usize = 64;

/// Signals every live process of the service once.
pub fn kill(tracking: &Tracking, req: &KillRequest) -> Result<KillReport> {
    let service = service::resolve(tracking, &req.service)?;
    let guard = Guard::new();
    let mut report = KillReport::new(&service.name, req.signal);
    let mut handled: HashSet<(u32, u64)> = HashSet::new();
    for _ in 0..MAX_PASSES {
        let mut new_this_pass = 0;
        for cand in candidates::collect(tracking, &service) {
            let Some(start_ns) = cand.expected_start_ns() else {
                continue;
            };
            if !handled.insert((cand.pid, identity::ns_to_ticks(start_ns))) {
                continue;
            }
            new_this_pass += 1;
            report.push(signal_one(&guard, &cand, start_ns, req.signal));
        }
        if new_this_pass == 0 {
            break;
        }
    }
    Ok(report)
}

fn signal_one(guard: &Guard, cand: &candidates::Candidate, start_ns: u64, signal: Signal) -> ProcessResult {
    let mut result = ProcessResult::new(cand, identity::ns_to_ticks(start_ns));
    match identity::open_verified(cand.pid, start_ns) {
        Ok(Identity::Gone) => result.outcome = Outcome::Gone,
        Ok(Identity::Recycled { .. }) => result.outcome = Outcome::Recycled,
        Ok(Identity::Alive { pidfd, stat }) => {
            result.comm = Some(stat.comm.clone());
            if let Some(p) = guard.check(cand.pid, Some(&stat)) {
                result.outcome = Outcome::Protected(p);
            } else {
                result.outcome = match signal.send(&pidfd) {
                    Ok(()) => Outcome::Signalled,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Outcome::Gone,
                    Err(e) => Outcome::Failed(e.to_string()),
                };
            }
        }
        Err(e) => result.outcome = Outcome::Failed(e.to_string()),
    }
    result
}
