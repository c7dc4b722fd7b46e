//! Services: the name a user kills by, registered in the pinned service map so every bpfkill
//! process (run, track, kill, ps, the daemon) agrees on it.

use std::time::{SystemTime, UNIX_EPOCH};

use bpfkill_common::{name_bytes, ServiceRecord, MAX_SERVICES, SERVICE_NAME_LEN};

use crate::{
    error::{Error, Result},
    tracking::Tracking,
};

/// A resolved service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Id used in tags.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// The registry record.
    pub record: ServiceRecord,
}

/// Checks a service name: 1 to 63 bytes of letters, digits and `_ . @ : -`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.@:-".contains(c);
    if name.is_empty() || name.len() >= SERVICE_NAME_LEN || !name.chars().all(ok_char) {
        return Err(Error::Usage(format!(
            "invalid service name {name:?}: use 1 to {} letters, digits or _ . @ : -",
            SERVICE_NAME_LEN - 1
        )));
    }
    Ok(())
}

fn record_name(rec: &ServiceRecord) -> String {
    String::from_utf8_lossy(name_bytes(&rec.name)).into_owned()
}

/// Every registered service.
pub fn list(tracking: &Tracking) -> Vec<Service> {
    let mut out: Vec<Service> = tracking
        .services()
        .into_iter()
        .map(|(id, record)| Service {
            id,
            name: record_name(&record),
            record,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Finds a service by name.
pub fn resolve(tracking: &Tracking, name: &str) -> Result<Service> {
    validate_name(name)?;
    tracking
        .services()
        .into_iter()
        .find(|(_, r)| name_bytes(&r.name) == name.as_bytes())
        .map(|(id, record)| Service {
            id,
            name: name.to_string(),
            record,
        })
        .ok_or_else(|| Error::UnknownService(name.to_string()))
}

/// Registers `name` with `main_pid` as its main process, or updates the main process of an
/// existing service of that name. Ids are claimed with an exclusive insert, so concurrent
/// registrations never share an id.
pub fn register(tracking: &mut Tracking, name: &str, main_pid: u32, main_start_ns: u64) -> Result<Service> {
    validate_name(name)?;
    let mut record = ServiceRecord {
        main_pid,
        main_start_ns,
        registered_unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        ..ServiceRecord::default()
    };
    record.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Ok(existing) = resolve(tracking, name) {
        // A new incarnation of the service is never born doomed by an old kill.
        tracking.undoom_service(existing.id);
        tracking
            .put_service(existing.id, &record, false)
            .map_err(|e| Error::map(format!("update service {name}"), e))?;
        return Ok(Service {
            id: existing.id,
            name: name.to_string(),
            record,
        });
    }
    let used: std::collections::HashSet<u32> = tracking.services().iter().map(|(id, _)| *id).collect();
    for id in (1..=MAX_SERVICES).filter(|id| !used.contains(id)) {
        match tracking.put_service(id, &record, true) {
            Ok(()) => {
                return Ok(Service {
                    id,
                    name: name.to_string(),
                    record,
                })
            }
            // Taken by a concurrent registration: try the next id.
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::map(format!("register service {name}"), e)),
        }
    }
    Err(Error::Usage(format!(
        "the service registry is full ({MAX_SERVICES} services); `bpfkill unload` clears it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["crond", "a", "nginx@1.service", "x_y-z:1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", &"x".repeat(64), "ü"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}

/// What a kill names.
#[derive(Debug, Clone)]
pub enum Target {
    /// A service by name.
    Service(String),
    /// A tracked process and its tagged descendants.
    Pid(u32),
    /// A pidfile naming a tracked process (trusted only when root-owned and not writable by
    /// group or others).
    Pidfile(std::path::PathBuf),
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
            let service = resolve(tracking, name)?;
            if service.record.main_pid == 1 {
                return Err(Error::Refused(format!("service {name}'s main PID is 1")));
            }
            let root = (service.record.main_pid != 0).then(|| {
                (
                    service.record.main_pid,
                    crate::identity::ns_to_ticks(service.record.main_start_ns),
                )
            });
            return Ok(Resolved {
                service,
                root,
                subtree: false,
            });
        }
        Target::Pid(pid) => *pid,
        Target::Pidfile(path) => crate::adopt::read_pidfile(path)?,
    };
    if pid == 1 {
        return Err(Error::Refused("PID 1 is never signalled".into()));
    }
    let tag = tracking.tag(pid).ok_or(Error::NotTracked(pid))?;
    let ticks = crate::identity::ns_to_ticks(tag.start_ns);
    if crate::identity::start_ticks(pid) != Some(ticks) {
        return Err(Error::NotTracked(pid));
    }
    let service = list(tracking)
        .into_iter()
        .find(|s| s.id == tag.service_id)
        .ok_or_else(|| Error::UnknownService(format!("#{}", tag.service_id)))?;
    Ok(Resolved {
        service,
        root: Some((pid, ticks)),
        subtree: true,
    })
}
