//! `bpfkill track`: adopt a running process and its current descendants into a service.
//! The root is tagged first, so everything it forks from then on is tagged by the kernel;
//! then /proc is walked for existing descendants, tagging each, and walked again until a walk
//! finds nothing new, so nothing forked during adoption is lost. Adopted processes' lineage
//! before tracking is unknown (no creator is invented).

use bpfkill_common::{tag_flags, Tag};

use super::registry;
use crate::{
    error::{Error, Result},
    sys::{
        clock,
        guard::Guard,
        identity,
        pidfile::PidSource,
        procs::{self, ProcTable},
    },
    tracking::Tracking,
};

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

/// Adopts `root` and its descendants into `service_name`.
pub fn track(tracking: &mut Tracking, service_name: &str, root: &PidSource) -> Result<AdoptReport> {
    registry::validate_name(service_name)?;
    let root_pid = root.resolve()?;
    let stat = procs::stat(root_pid).ok_or(Error::NoSuchProcess(root_pid))?;
    if let Some(p) = Guard::new().check(root_pid, Some(&stat)) {
        return Err(Error::Refused(format!(
            "cannot track PID {root_pid}: {}",
            p.reason()
        )));
    }
    let root_start = clock::ticks_to_ns(stat.starttime);
    let (svc, _) = registry::register(tracking, service_name, root_pid, root_start)?;
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
        let mut added = 0;
        for (pid, ticks) in ProcTable::scan().descendants(root_pid) {
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
        start_ns: clock::ticks_to_ns(start_ticks),
        comm: procs::comm(pid).unwrap_or_default(),
        ..Tag::default()
    };
    tracking.set_tag(pid, &tag)?;
    report.adopted.push(pid);
    Ok(true)
}
