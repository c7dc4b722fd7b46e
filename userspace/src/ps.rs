//! `bpfkill ps`: the live tagged processes of a service (or of every service).

use std::io::{self, Write};

use bpfkill_common::tag_flags;
use procfs::process::Process;
use serde::Serialize;

use crate::{
    error::Result,
    identity,
    service::{self, Service},
    tracking::Tracking,
};

/// One live tagged process. Field names are part of the JSON interface.
#[derive(Debug, Clone, Serialize)]
pub struct PsEntry {
    /// Its tgid.
    pub pid: u32,
    /// Its parent now.
    pub ppid: u32,
    /// The process that forked it (null when unknown: adopted by `track`, or the main process).
    pub creator_pid: Option<u32>,
    /// Service name.
    pub service: String,
    /// comm.
    pub comm: String,
    /// Resolved /proc/PID/exe (null when unreadable, e.g. a zombie).
    pub exe: Option<String>,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
    /// True when its parent is no longer its creator.
    pub escaped: bool,
    /// `forked` (tagged at fork), `main` (registered by run/track) or `unknown` (adopted).
    pub lineage: &'static str,
}

/// Lists the live tagged processes of `service` (all services when None), sorted by PID.
pub fn list(tracking: &Tracking, service: Option<&str>) -> Result<Vec<PsEntry>> {
    let services: Vec<Service> = match service {
        Some(name) => vec![service::resolve(tracking, name)?],
        None => service::list(tracking),
    };
    let mut out = Vec::new();
    for (pid, tag) in tracking.tags() {
        let Some(svc) = services.iter().find(|s| s.id == tag.service_id) else {
            continue;
        };
        let Ok(proc_) = Process::new(pid as i32) else {
            continue;
        };
        let Ok(stat) = proc_.stat() else { continue };
        if !identity::matches(tag.start_ns, stat.starttime) || identity::is_dead(&stat) {
            continue; // the number was recycled, or the process is a zombie
        }
        let creator_pid = (tag.flags & tag_flags::FORKED != 0).then_some(tag.creator_pid);
        let ppid = stat.ppid as u32;
        out.push(PsEntry {
            pid,
            ppid,
            creator_pid,
            service: svc.name.clone(),
            comm: stat.comm.clone(),
            exe: proc_.exe().ok().map(|p| p.to_string_lossy().into_owned()),
            start_time: stat.starttime,
            escaped: creator_pid.is_some_and(|c| c != ppid),
            lineage: if tag.flags & tag_flags::FORKED != 0 {
                "forked"
            } else if tag.flags & tag_flags::MAIN != 0 {
                "main"
            } else {
                "unknown"
            },
        });
    }
    out.sort_by_key(|e| e.pid);
    Ok(out)
}

/// Writes the entries as a JSON array.
pub fn write_json(entries: &[PsEntry], out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, entries)?;
    writeln!(out)
}

/// Writes the entries as a table.
pub fn write_table(entries: &[PsEntry], out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>7} {:>7} {:>7} {:<16} {:<16} {:<7} EXE",
        "PID", "PPID", "CREATOR", "SERVICE", "COMM", "ESCAPED"
    )?;
    for e in entries {
        let creator = e.creator_pid.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:>7} {:>7} {:>7} {:<16} {:<16} {:<7} {}",
            e.pid,
            e.ppid,
            creator,
            e.service,
            e.comm,
            if e.escaped { "yes" } else { "no" },
            e.exe.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}
