//! Resolve: what a kill names (a service, or a tracked process by PID or pidfile) becomes a
//! service, the root process of the selection, and the service's dedicated cgroup if it has
//! one.

use std::path::{Path, PathBuf};

use crate::{
    error::{Error, Result},
    lineage::{
        adopt,
        discover::{self, Hints},
        registry::{self, Service},
    },
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

/// Where to look for a service that is not registered: a configured pidfile or unit (and,
/// always, the init system's conventions for its name).
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// A pidfile naming its main process.
    pub pidfile: Option<PathBuf>,
    /// A systemd unit.
    pub unit: Option<String>,
}

/// What [`ensure_known`] saw and did.
#[derive(Debug, Clone)]
pub struct Known {
    /// The service was registered before.
    pub registered_before: bool,
    /// What discovery found and adopted, said for stderr.
    pub found: Option<String>,
    /// The service as the registry has it, when nothing was adopted since it was read (the
    /// registry is then not read again).
    pub service: Option<Service>,
}

/// Makes sure the service `name` is registered with its processes: when it is not, finds it
/// through the init system and adopts it with its current subtree. A registered service with
/// no live process left (a supervisor restarted it since) is looked for again the same way,
/// as a new incarnation of the name. Returns what was found where, when it adopted; an error
/// naming where it looked, close names and how to make it known, when an unknown name was
/// found nowhere. The registry is read once.
pub fn ensure_known(tracking: &mut Tracking, name: &str, how: &Discovery) -> Result<Known> {
    let hints = Hints {
        pidfile: how.pidfile.as_deref(),
        unit: how.unit.as_deref(),
    };
    let unchanged = |service| Known {
        registered_before: true,
        found: None,
        service: Some(service),
    };
    if let Ok(service) = registry::resolve(tracking, name) {
        // Its main process alive answers at once; only without it are the tags walked.
        let main = &service.record;
        let main_alive = main.main_pid != 0
            && procs::stat(main.main_pid).is_some_and(|st| {
                !procs::is_dead(&st) && st.starttime == clock::ns_to_ticks(main.main_start_ns)
            });
        if main_alive || registry::live_processes(tracking, service.id) > 0 {
            return Ok(unchanged(service));
        }
        return match discover::find(name, &hints) {
            Some(found) => Ok(Known {
                registered_before: true,
                found: Some(adopt_found(tracking, name, &found, "restarted: ")?),
                service: None,
            }),
            // Nothing to find: the kill reports that nothing matched.
            None => Ok(unchanged(service)),
        };
    }
    registry::validate_name(name)?;
    let Some(found) = discover::find(name, &hints) else {
        let known: Vec<String> = registry::list(tracking).into_iter().map(|s| s.name).collect();
        return Err(Error::ServiceNotFound {
            name: name.to_string(),
            suggestion: discover::closest(name, known.iter().map(String::as_str)).map(str::to_string),
            places: discover::places(name),
            known,
        });
    };
    Ok(Known {
        registered_before: false,
        found: Some(adopt_found(tracking, name, &found, "")?),
        service: None,
    })
}

/// Adopts what discovery found as service `name`; the message for stderr.
fn adopt_found(tracking: &mut Tracking, name: &str, found: &discover::Found, how: &str) -> Result<String> {
    let adopted = adopt::track(tracking, name, &PidSource::Pid(found.pid))?;
    Ok(format!(
        "{name}: {how}found PID {} through {}; tracking it and {} descendant(s) now (their lineage before now is unknown)",
        found.pid,
        found.via,
        adopted.adopted.len().saturating_sub(1) + adopted.already_tagged
    ))
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
        Target::Service(name) => return service_target(registry::resolve(tracking, name)?),
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

/// A whole service as the target, rooted at its main process. A service whose main PID is 1
/// is refused.
pub fn service_target(service: Service) -> Result<Resolved> {
    if service.record.main_pid == 1 {
        return Err(Error::Refused(format!(
            "service {}'s main PID is 1",
            service.name
        )));
    }
    let root = (service.record.main_pid != 0).then(|| {
        (
            service.record.main_pid,
            clock::ns_to_ticks(service.record.main_start_ns),
        )
    });
    Ok(Resolved {
        service,
        root,
        subtree: false,
    })
}

/// Picks the dedicated cgroup: the one given (checked), else the main process's systemd unit
/// cgroup, else the cgroup bpfkill made for the service's job (`bpfkill.jobs/NAME`, which
/// outlives the job when `--keep-running` left processes in it), when it exists and passes
/// the same checks. Never for a PID subtree.
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
    let unit = target
        .root
        .and_then(|(main, _)| cgroup::systemd_unit_cgroup(main));
    let found = unit
        .map(|dir| (dir, cgroup::SYSTEMD_UNIT))
        .into_iter()
        .chain(cgroup::job_cgroup(&target.service.name).map(|dir| (dir, cgroup::JOB)))
        .find(|(dir, _)| cgroup::check_dedicated(dir, &protected).is_ok());
    Ok(found.map(|(dir, source)| Dedicated { dir, source }))
}
