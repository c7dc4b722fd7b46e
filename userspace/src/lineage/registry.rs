//! The service registry: the name a user kills by, registered in the pinned service map so every bpfkill
//! process (run, track, kill, ps, the daemon) agrees on it.

use std::time::SystemTime;

use bpfkill_common::{user::c_bytes, user::c_str, ServiceRecord, MAX_SERVICES, SERVICE_NAME_LEN};

use crate::{
    error::{Error, Result},
    sys::clock,
    text::Escaped,
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
    c_str(&rec.name).into_owned()
}

/// The warning every command gives for a service whose processes forked children the kernel
/// could not tag (its tag map was full).
pub fn untagged_warning(service: &str, untagged: u64) -> String {
    format!(
        "WARNING: {untagged} child process(es) of {} were never tagged (the tag map was full): bpfkill may not know all of its processes; load with a larger --max-tags",
        Escaped(service)
    )
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
        .find(|(_, r)| c_bytes(&r.name) == name.as_bytes())
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
        registered_unix_ns: clock::epoch_ns(SystemTime::now()),
        ..ServiceRecord::default()
    };
    record.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Ok(existing) = resolve(tracking, name) {
        // A new incarnation of the service is never born doomed by an old kill.
        tracking.undoom_service(existing.id);
        tracking.reset_service_stats(existing.id);
        tracking.put_service(existing.id, &record)?;
        return Ok(Service {
            id: existing.id,
            name: name.to_string(),
            record,
        });
    }
    let used: std::collections::HashSet<u32> = tracking.services().iter().map(|(id, _)| *id).collect();
    for id in (1..=MAX_SERVICES).filter(|id| !used.contains(id)) {
        // Taken by a concurrent registration: try the next id.
        if tracking.claim_service(id, &record)? {
            tracking.reset_service_stats(id);
            return Ok(Service {
                id,
                name: name.to_string(),
                record,
            });
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
