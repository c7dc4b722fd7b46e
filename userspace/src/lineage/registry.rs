//! The service registry: the name a user kills by, registered in the pinned service map so every bpfkill
//! process (run, track, kill, ps, the daemon) agrees on it.

use std::time::SystemTime;

use bpfkill_common::{
    service_flags, tag_flags,
    user::{c_bytes, c_str},
    ServiceRecord, Tag, MAX_SERVICES, SERVICE_NAME_LEN,
};

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

/// Checks a service name: 1 to 63 bytes of letters, digits and `_ . @ : -`, neither `.` nor
/// `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.@:-".contains(c);
    // `.` and `..` would name a directory other than the service's where a name becomes a
    // path (a job's cgroup is `bpfkill.jobs/NAME`).
    if name.is_empty()
        || name.len() >= SERVICE_NAME_LEN
        || !name.chars().all(ok_char)
        || name == "."
        || name == ".."
    {
        return Err(Error::Usage(format!(
            "invalid service name {name:?}: use 1 to {} letters, digits or _ . @ : - (not . or ..)",
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
/// existing service of that name (a new incarnation: its counters restart and no old doom
/// applies). Returns the service and whether it was created now. Registrations are
/// serialised by the pin tree's lock, so one name is one service even when many `run` and
/// `track` calls race.
pub fn register(
    tracking: &mut Tracking,
    name: &str,
    main_pid: u32,
    main_start_ns: u64,
) -> Result<(Service, bool)> {
    validate_name(name)?;
    let _lock = tracking.lock()?;
    let mut record = ServiceRecord {
        main_pid,
        main_start_ns,
        registered_unix_ns: clock::epoch_ns(SystemTime::now()),
        ..ServiceRecord::default()
    };
    record.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Ok(existing) = resolve(tracking, name) {
        record.flags = existing.record.flags;
        tracking.undoom_service(existing.id);
        tracking.reset_service_stats(existing.id);
        tracking.put_service(existing.id, &record)?;
        return Ok((
            Service {
                id: existing.id,
                name: name.to_string(),
                record,
            },
            false,
        ));
    }
    Ok((claim(tracking, name, record)?, true))
}

/// Declares a service of the configuration: registered (with no main process yet) unless it
/// is already, and marked configured, so it is never forgotten while configured.
pub fn declare(tracking: &mut Tracking, name: &str) -> Result<Service> {
    validate_name(name)?;
    let _lock = tracking.lock()?;
    if let Ok(mut existing) = resolve(tracking, name) {
        if existing.record.flags & service_flags::CONFIGURED == 0 {
            existing.record.flags |= service_flags::CONFIGURED;
            tracking.put_service(existing.id, &existing.record)?;
        }
        return Ok(existing);
    }
    let mut record = ServiceRecord {
        flags: service_flags::CONFIGURED,
        registered_unix_ns: clock::epoch_ns(SystemTime::now()),
        ..ServiceRecord::default()
    };
    record.name[..name.len()].copy_from_slice(name.as_bytes());
    claim(tracking, name, record)
}

/// Clears the configured mark of a service no longer in the configuration (it is then
/// forgotten like any other once no process of it is left).
pub fn undeclare(tracking: &mut Tracking, service: &Service) -> Result<()> {
    let _lock = tracking.lock()?;
    let mut record = service.record;
    record.flags &= !service_flags::CONFIGURED;
    tracking.put_service(service.id, &record)
}

/// Claims a free id for a new service.
fn claim(tracking: &mut Tracking, name: &str, record: ServiceRecord) -> Result<Service> {
    if let Some(id) = tracking.claim_free_service(&record)? {
        return Ok(Service {
            id,
            name: name.to_string(),
            record,
        });
    }
    Err(Error::Usage(format!(
        "the service registry is full ({MAX_SERVICES} services); `bpfkill forget --service NAME` releases one"
    )))
}

/// Number of live tagged processes of service `id`.
pub fn live_processes(tracking: &Tracking, id: u32) -> usize {
    tracking.tags().iter().filter(|(_, t)| t.service_id == id).count()
}

/// Forgets a service with no live process (`bpfkill forget`); its history stays in the
/// journal. A service that still has processes is refused.
pub fn forget(tracking: &mut Tracking, name: &str) -> Result<Service> {
    let svc = resolve(tracking, name)?;
    let _lock = tracking.lock()?;
    // A tag that outlived its process (the kernel skipped its exit run) is no live process.
    for (pid, tag) in tracking.service_tags(svc.id) {
        tracking.forget_if_exited(pid, &tag);
    }
    let live = live_processes(tracking, svc.id);
    if live > 0 {
        return Err(Error::Refused(format!(
            "service {name} still has {live} live process(es); kill it first"
        )));
    }
    tracking.remove_service(svc.id)?;
    Ok(svc)
}

/// Undoes an adoption made for a dry run: removes every tag of service `id` (it had no live
/// process before, or nothing would have been adopted) and, when `forget` (the name was
/// registered for it), the service itself.
pub fn release_adopted(tracking: &mut Tracking, id: u32, forget: bool) -> Result<()> {
    let _lock = tracking.lock()?;
    for (pid, _) in tracking.service_tags(id) {
        tracking.remove_tag(pid);
    }
    if forget {
        tracking.remove_service(id)?;
    }
    Ok(())
}

/// What [`release_unused`] did.
#[derive(Debug, Default)]
pub struct Released {
    /// Services forgotten: (id, name).
    pub forgotten: Vec<(u32, String)>,
    /// Unused services still within their grace: look again later.
    pub waiting: Vec<u32>,
}

/// Forgets each of `ids` that is not configured, has no live process and was registered
/// more than `grace` ago (so a `run` between registering and tagging itself is not lost).
pub fn release_unused(tracking: &mut Tracking, ids: &[u32], grace: std::time::Duration) -> Result<Released> {
    let mut out = Released::default();
    if ids.is_empty() {
        return Ok(out);
    }
    let _lock = tracking.lock()?;
    // A tag that outlived its process (its exit run skipped by the kernel) keeps no service.
    let live: std::collections::HashSet<u32> = tracking
        .tags()
        .into_iter()
        .filter(|(pid, t)| ids.contains(&t.service_id) && !tracking.forget_if_exited(*pid, t))
        .map(|(_, t)| t.service_id)
        .collect();
    let now = clock::epoch_ns(SystemTime::now());
    for svc in list(tracking) {
        if !ids.contains(&svc.id)
            || svc.record.flags & service_flags::CONFIGURED != 0
            || live.contains(&svc.id)
        {
            continue;
        }
        if now.saturating_sub(svc.record.registered_unix_ns) >= grace.as_nanos() as u64 {
            tracking.remove_service(svc.id)?;
            out.forgotten.push((svc.id, svc.name));
        } else {
            out.waiting.push(svc.id);
        }
    }
    Ok(out)
}

/// A job's command (`pid`, tagged by the kernel as its starter's child: `tag`) becomes the
/// main process of service `name`; its tag is marked main only while it still has one (a
/// command that already exited keeps no tag).
pub fn hand_main_to(tracking: &mut Tracking, name: &str, pid: u32, start_ns: u64, tag: Tag) -> Result<()> {
    register(tracking, name, pid, start_ns)?;
    tracking.update_tag(
        pid,
        &Tag {
            flags: tag.flags | tag_flags::MAIN,
            ..tag
        },
    )?;
    Ok(())
}

/// A rule matched `pid` at exec: it becomes the main process of service `id` unless the
/// registered main process is still alive.
pub fn adopt_main(tracking: &mut Tracking, id: u32, pid: u32, start_ns: u64) -> Result<()> {
    let _lock = tracking.lock()?;
    let Some((_, mut record)) = tracking.services().into_iter().find(|(i, _)| *i == id) else {
        return Ok(());
    };
    let main_alive = record.main_pid != 0
        && crate::sys::procs::start_ticks(record.main_pid)
            .is_some_and(|t| crate::sys::identity::matches(record.main_start_ns, t));
    if !main_alive {
        record.main_pid = pid;
        record.main_start_ns = start_ns;
        tracking.put_service(id, &record)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["crond", "a", "nginx@1.service", "x_y-z:1", "...", ".a"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", &"x".repeat(64), "ü", ".", ".."] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
