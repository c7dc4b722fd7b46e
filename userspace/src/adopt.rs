//! `bpfkill track`: adopt a running process and its current descendants into a service.
//! The root is tagged first, so everything it forks from then on is tagged by the kernel;
//! then /proc is walked for existing descendants, tagging each, and walked again until a walk
//! finds nothing new, so nothing forked during adoption is lost. Adopted processes' lineage
//! before tracking is unknown (no creator is invented).

use std::{collections::HashMap, fs, os::unix::fs::MetadataExt, path::Path};

use bpfkill_common::{tag_flags, Tag};
use procfs::process::all_processes;

use crate::{
    error::{Error, Result},
    guard::Guard,
    identity, service,
    tracking::Tracking,
};

/// Where the root process comes from.
#[derive(Debug, Clone)]
pub enum Root {
    /// A PID.
    Pid(u32),
    /// A pidfile (trusted only when root-owned and not group/world-writable).
    Pidfile(std::path::PathBuf),
}

/// What `track` did.
#[derive(Debug, Clone, Default)]
pub struct AdoptReport {
    /// The root process.
    pub root: u32,
    /// Service id.
    pub service_id: u32,
    /// Newly tagged processes (root included).
    pub adopted: Vec<u32>,
    /// Descendants the kernel had already tagged (forked after the root was tagged).
    pub already_tagged: usize,
    /// /proc walks made.
    pub walks: usize,
}

/// Reads and checks a pidfile.
pub fn read_pidfile(path: &Path) -> Result<u32> {
    let meta = fs::metadata(path).map_err(|e| Error::io(format!("pidfile {}", path.display()), e))?;
    if meta.uid() != 0 {
        return Err(Error::Refused(format!(
            "pidfile {} is not owned by root",
            path.display()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::Refused(format!(
            "pidfile {} is group- or world-writable",
            path.display()
        )));
    }
    let text = fs::read_to_string(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let pid: u32 = text
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::Usage(format!("pidfile {} does not hold a PID", path.display())))?;
    Ok(pid)
}

/// Maps every live process to its parent.
fn parent_map() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    if let Ok(procs) = all_processes() {
        for p in procs.flatten() {
            if let Ok(stat) = p.stat() {
                map.insert(stat.pid as u32, stat.ppid as u32);
            }
        }
    }
    map
}

/// True when `pid` descends from `root` in `parents`.
fn descends_from(pid: u32, root: u32, parents: &HashMap<u32, u32>) -> bool {
    let mut cur = pid;
    for _ in 0..parents.len() {
        match parents.get(&cur) {
            Some(&p) if p == root => return true,
            Some(&p) if p > 1 && p != cur => cur = p,
            _ => return false,
        }
    }
    false
}

/// Adopts `root` and its descendants into `service_name`.
pub fn track(tracking: &mut Tracking, service_name: &str, root: &Root) -> Result<AdoptReport> {
    service::validate_name(service_name)?;
    let root_pid = match root {
        Root::Pid(p) => *p,
        Root::Pidfile(path) => read_pidfile(path)?,
    };
    let stat = identity::stat(root_pid).ok_or(Error::NoSuchProcess(root_pid))?;
    if let Some(p) = Guard::new().check(root_pid, Some(&stat)) {
        return Err(Error::Refused(format!(
            "cannot track PID {root_pid}: {}",
            p.reason()
        )));
    }
    let root_start = identity::ticks_to_ns(stat.starttime);
    let svc = service::register(tracking, service_name, root_pid, root_start)?;
    let mut report = AdoptReport {
        root: root_pid,
        service_id: svc.id,
        ..Default::default()
    };

    adopt_one(
        tracking,
        svc.id,
        root_pid,
        stat.starttime,
        tag_flags::MAIN,
        &mut report,
    )?;
    loop {
        report.walks += 1;
        let parents = parent_map();
        let mut added = 0;
        for (&pid, _) in parents.iter() {
            if pid == root_pid || !descends_from(pid, root_pid, &parents) {
                continue;
            }
            let Some(ticks) = identity::start_ticks(pid) else {
                continue;
            };
            if adopt_one(tracking, svc.id, pid, ticks, 0, &mut report)? {
                added += 1;
            }
        }
        if added == 0 {
            break;
        }
    }
    Ok(report)
}

/// Tags one process unless it already carries a tag of this service for this incarnation.
/// Returns true when a tag was written.
fn adopt_one(
    tracking: &mut Tracking,
    service_id: u32,
    pid: u32,
    start_ticks: u64,
    extra_flags: u32,
    report: &mut AdoptReport,
) -> Result<bool> {
    if let Some(existing) = tracking.tag(pid) {
        if existing.service_id == service_id && identity::matches(existing.start_ns, start_ticks) {
            if existing.flags & tag_flags::FORKED != 0 {
                report.already_tagged += 1;
            }
            return Ok(false);
        }
    }
    let tag = Tag {
        service_id,
        flags: tag_flags::ADOPTED | tag_flags::START_FROM_PROC | extra_flags,
        start_ns: identity::ticks_to_ns(start_ticks),
        ..Tag::default()
    };
    tracking.set_tag(pid, &tag)?;
    report.adopted.push(pid);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descent() {
        let parents: HashMap<u32, u32> = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 13)]
            .into_iter()
            .collect();
        assert!(descends_from(11, 10, &parents));
        assert!(descends_from(12, 10, &parents));
        assert!(!descends_from(14, 10, &parents));
        assert!(!descends_from(10, 10, &parents));
    }

    #[test]
    fn pidfile_checks() {
        let dir = std::env::temp_dir().join(format!("bpfkill-pidfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.pid");
        fs::write(&f, "1234\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let owned_by_root = fs::metadata(&f).unwrap().uid() == 0;
        if owned_by_root {
            assert_eq!(read_pidfile(&f).unwrap(), 1234);
            fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
            assert!(matches!(read_pidfile(&f), Err(Error::Refused(_))));
            fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
            fs::write(&f, "garbage").unwrap();
            assert!(matches!(read_pidfile(&f), Err(Error::Usage(_))));
        } else {
            assert!(matches!(read_pidfile(&f), Err(Error::Refused(_))));
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
