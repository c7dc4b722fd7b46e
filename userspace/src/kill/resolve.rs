//! Resolve: what a kill names (a service, or a tracked process by PID or pidfile) becomes a
//! service, the root process of the selection, and the service's dedicated cgroup if it has
//! one.

use std::path::Path;

use crate::{
    error::{Error, Result},
    lineage::registry::{self, Service},
    sys::{
        cgroup::{self, Dedicated},
        clock,
        guard::Guard,
        pidfile::PidSource,
        procs,
    },
    tracking::Tracking,
};

/// What a kill names.
#[derive(Debug, Clone)]
pub enum Target {
    /// A service by name.
    Service(String),
    /// A tracked process (by PID or pidfile) and its tagged descendants.
    Process(PidSource),
}

/// A resolved target: the service, and the root process of the selection.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The service.
    pub service: Service,
    /// The main process (service targets) or the named process (PID targets), with its start
    /// time in /proc ticks.
    pub root: Option<(u32, u64)>,
    /// True when only the root and its descendants are selected.
    pub subtree: bool,
}

/// Resolves a kill target. A service whose main PID is 1 is refused.
pub fn resolve_target(tracking: &Tracking, target: &Target) -> Result<Resolved> {
    let pid = match target {
        Target::Service(name) => {
            let service = registry::resolve(tracking, name)?;
            if service.record.main_pid == 1 {
                return Err(Error::Refused(format!("service {name}'s main PID is 1")));
            }
            let root = (service.record.main_pid != 0).then(|| {
                (
                    service.record.main_pid,
                    clock::ns_to_ticks(service.record.main_start_ns),
                )
            });
            return Ok(Resolved {
                service,
                root,
                subtree: false,
            });
        }
        Target::Process(source) => source.resolve()?,
    };
    if pid == 1 {
        return Err(Error::Refused("PID 1 is never signalled".into()));
    }
    let tag = tracking.tag(pid).ok_or(Error::NotTracked(pid))?;
    let ticks = clock::ns_to_ticks(tag.start_ns);
    if procs::start_ticks(pid) != Some(ticks) {
        return Err(Error::NotTracked(pid));
    }
    let service = registry::list(tracking)
        .into_iter()
        .find(|s| s.id == tag.service_id)
        .ok_or_else(|| Error::UnknownService(format!("#{}", tag.service_id)))?;
    // The service's main process names the whole service (what a pidfile usually names):
    // the same processes as `--service`, adopted ones of unknown lineage included.
    let is_main = service.record.main_pid == pid && clock::ns_to_ticks(service.record.main_start_ns) == ticks;
    Ok(Resolved {
        service,
        root: Some((pid, ticks)),
        subtree: !is_main,
    })
}

/// Picks the dedicated cgroup: the one given (checked), else the main process's systemd unit
/// cgroup when it has one and it passes the same checks. Never for a PID subtree.
pub fn dedicated_cgroup(
    target: &Resolved,
    explicit: Option<&Path>,
    guard: &Guard,
) -> Result<Option<Dedicated>> {
    let protected = guard.protected_pids();
    if let Some(dir) = explicit {
        if target.subtree {
            return Err(Error::Usage(
                "--cgroup goes with --service, not with --pid".into(),
            ));
        }
        cgroup::check_dedicated(dir, &protected)?;
        let dir = cgroup::canonical(dir)?;
        return Ok(Some(Dedicated {
            dir,
            source: "--cgroup",
        }));
    }
    if target.subtree {
        return Ok(None);
    }
    let Some((main, _)) = target.root else {
        return Ok(None);
    };
    Ok(cgroup::systemd_unit_cgroup(main)
        .filter(|dir| cgroup::check_dedicated(dir, &protected).is_ok())
        .map(|dir| Dedicated {
            dir,
            source: "systemd unit",
        }))
}
