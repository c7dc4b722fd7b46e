//! `bpfkill status`: is tracking live, on which kernel, with which detected layout, which
//! services with how many processes, and what was dropped.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::Path,
};

use bpfkill_common::{daemon_flags, programs, stat};
use serde::Serialize;

use crate::{
    error::{Error, Result},
    forensics::doctor,
    lineage::registry,
    sys::{clock, mounts},
    text::Escaped,
    tracking::{layout, migrate, skips, KernelLogLevel, PinPaths, Tracking},
};

/// One service's line.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// Id.
    pub id: u32,
    /// Main PID as registered.
    pub main_pid: u32,
    /// Live tagged processes.
    pub processes: usize,
    /// Children the kernel could not tag (the tag map was full).
    pub untagged: u64,
    /// Processes killed in the kernel by doom mode, each counted once.
    pub kernel_kills: u64,
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// True when every tracking program is attached through a pinned link.
    pub live: bool,
    /// The pin directory.
    pub pin_dir: String,
    /// Kernel release.
    pub kernel: String,
    /// program name → (raw tracepoint, attached).
    pub programs: Vec<ProgramStatus>,
    /// The kernel structure offsets the programs use (from BTF), or why they are unknown.
    pub layout: String,
    /// Classic tracepoint record layouts from tracefs, for reference: tracepoint → field@offset.
    pub tracepoint_formats: BTreeMap<String, String>,
    /// Services.
    pub services: Vec<ServiceStatus>,
    /// Tagged processes, all services.
    pub tagged: usize,
    /// Capacity of the tag map.
    pub max_tagged: u32,
    /// Counters (drops among them).
    pub counters: BTreeMap<String, u64>,
    /// Registered services, of the registry's capacity.
    pub registry_used: usize,
    /// The registry's capacity.
    pub registry_capacity: u32,
    /// Rules in the kernel (exe, name, boundary).
    pub rules: usize,
    /// The daemon of this pin directory, when one runs.
    pub daemon: Option<DaemonStatus>,
    /// True when tracking is live and no daemon is still applying its configuration: what a
    /// script waiting for `status` can rely on.
    pub ready: bool,
    /// `ok`, `degraded` (see `problems`), `starting` (the daemon has not applied its
    /// configuration yet) or `not-loaded`.
    pub health: &'static str,
    /// What makes it degraded, one line each.
    pub problems: Vec<String>,
    /// Kernel features found missing, with what each costs (see `bpfkill doctor`); empty
    /// when not loaded.
    pub missing_features: Vec<doctor::Check>,
    /// How the programs attach.
    pub attach_mode: &'static str,
    /// The kernel programs' log level, fixed at load (`off`, `error`, `warn`, `info`,
    /// `debug`); null when tracking is not loaded.
    pub kernel_log: Option<String>,
    /// A SIGKILL of a service is sent in the kernel (the reap task iterator, Linux 6.13+);
    /// false: from userspace, one verified pidfd at a time.
    pub kernel_kill: bool,
    /// Events the kernel could not deliver (the ring buffer was full).
    pub events_lost: u64,
    /// Fill of each map in percent: `tags`, `registry`, `exe_rules`, `comm_rules`,
    /// `leave_rules`.
    pub map_fill: BTreeMap<String, f64>,
}

/// The daemon's journal, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JournalStatus {
    /// Its directory.
    pub dir: String,
    /// Bytes in its files (active and rotated).
    pub size_bytes: u64,
    /// `ok`, or `degraded` (it cannot be written: `error` says why).
    pub state: &'static str,
    /// Why it cannot be written.
    pub error: Option<String>,
    /// Records not written since the daemon started.
    pub dropped: u64,
}

/// The running daemon, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonStatus {
    /// Its PID.
    pub pid: u32,
    /// Its configuration's rules are in the kernel and running matches adopted.
    pub ready: bool,
    /// Configurations applied (the start counts as one).
    pub generation: u64,
    /// Why the last reload failed (the previous rules stay), if it did.
    pub reload_error: Option<String>,
    /// Its version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Its main configuration file.
    pub config: String,
    /// When it last (re)loaded its configuration, RFC 3339.
    pub last_reload: String,
    /// Its journal (null: it writes none).
    pub journal: Option<JournalStatus>,
}

/// One program's state.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramStatus {
    /// Program name.
    pub name: String,
    /// Where it attaches: a raw tracepoint, or `iter/task` for the ps task iterators.
    pub tracepoint: String,
    /// Attached through a pinned link.
    pub attached: bool,
    /// Runs the kernel skipped because the program was already running on that CPU (a
    /// preempted run; see `tracking::skips`); null when the kernel does not say (before 5.12)
    /// or the program is not attached.
    pub skipped_runs: Option<u64>,
}

/// Gathers the status. What cannot be read is reported as such; the one error is
/// [`Error::Permission`], when this process may not look at the pins (the answer would be a
/// wrong "not loaded").
pub fn gather(paths: &PinPaths) -> Result<Status> {
    let pinned: BTreeMap<&str, bool> = paths.pinned_links()?.into_iter().collect();
    let mut programs: Vec<ProgramStatus> = programs::TRACKING
        .iter()
        .map(|(name, tp)| ProgramStatus {
            name: name.to_string(),
            tracepoint: tp.to_string(),
            attached: pinned.get(name).copied().unwrap_or(false),
            skipped_runs: skips::skipped_runs(&paths.link(name)),
        })
        .collect();
    programs.extend(programs::SNAPSHOT.iter().map(|(name, kind)| ProgramStatus {
        name: name.to_string(),
        tracepoint: format!("iter/{kind}"),
        attached: paths.link(name).exists(),
        skipped_runs: None,
    }));
    programs.extend(programs::BACKSTOP.iter().map(|(name, hook)| ProgramStatus {
        name: name.to_string(),
        tracepoint: format!("lsm/{hook}"),
        attached: paths.link(name).exists(),
        skipped_runs: None,
    }));
    let tracking = match Tracking::open(paths) {
        Ok(t) => Some(t),
        Err(e @ Error::Permission(_)) => return Err(e),
        Err(_) => None,
    };
    // The layout in use when loaded; otherwise what a load would detect.
    let layout = match tracking.as_ref().map(Tracking::layout) {
        Some(Ok(l)) => Ok(l),
        _ => layout::KernelBtf::load().and_then(|b| b.kernel_layout(clock::ns_per_tick() as u32)),
    };
    let layout = match layout {
        Ok(l) => layout::LayoutDisplay(&l).to_string(),
        Err(e) => format!("unknown: {e}"),
    };
    let mut tracepoint_formats = BTreeMap::new();
    for tp in [
        "sched/sched_process_fork",
        "task/task_newtask",
        "sched/sched_process_exit",
    ] {
        if let Ok(fields) = layout::trace_format(Path::new(mounts::TRACEFS), tp) {
            let text = fields
                .iter()
                .map(|f| format!("{}@{}", f.name, f.offset))
                .collect::<Vec<_>>()
                .join(" ");
            tracepoint_formats.insert(tp.to_string(), text);
        }
    }
    let mut status = Status {
        live: false,
        pin_dir: paths.root().display().to_string(),
        kernel: rustix::system::uname().release().to_string_lossy().into_owned(),
        programs,
        layout,
        tracepoint_formats,
        services: Vec::new(),
        tagged: 0,
        max_tagged: 0,
        counters: BTreeMap::new(),
        registry_used: 0,
        registry_capacity: bpfkill_common::MAX_SERVICES,
        rules: 0,
        daemon: None,
        ready: false,
        health: "not-loaded",
        problems: Vec::new(),
        missing_features: Vec::new(),
        attach_mode: "raw tracepoints through pinned links; task iterators for ps; sys_exit during a SIGKILL",
        kernel_log: tracking
            .as_ref()
            .and_then(|t| t.layout().ok())
            .map(|l| KernelLogLevel(l.log_level).to_string()),
        kernel_kill: tracking.is_some() && crate::tracking::reap::available(paths),
        events_lost: 0,
        map_fill: BTreeMap::new(),
    };
    if let Some(tracking) = tracking {
        status.live = true;
        status.missing_features = doctor::degraded(paths, &tracking);
        status.rules = tracking.rules().len();
        status.daemon = tracking.running_daemon().map(|d| daemon_status(&d));
        status.ready = status.daemon.as_ref().is_none_or(|d| d.ready);
        let tags = tracking.tags();
        status.tagged = tags.len();
        status.max_tagged = tracking.max_tags();
        let services = registry::list(&tracking);
        status.registry_used = services.len();
        for svc in services {
            let processes = tags.iter().filter(|(_, t)| t.service_id == svc.id).count();
            let counters = tracking.service_stats(svc.id);
            status.services.push(ServiceStatus {
                name: svc.name,
                id: svc.id,
                main_pid: svc.record.main_pid,
                processes,
                untagged: counters.untagged,
                kernel_kills: counters.kernel_kills,
            });
        }
        for (i, v) in tracking.stats().iter().enumerate() {
            let name = stat::NAMES[i];
            if name != "reserved" {
                status.counters.insert(name.to_string(), *v);
            }
        }
        status.events_lost = status.counters.get("events_lost").copied().unwrap_or(0);
        let rules = tracking.rules();
        let pct = |used: usize, cap: u32| (used as f64 * 1000.0 / f64::from(cap.max(1))).round() / 10.0;
        for (map, used, cap) in [
            ("tags", status.tagged, status.max_tagged),
            ("registry", status.registry_used, status.registry_capacity),
            ("exe_rules", rules.exe.len(), bpfkill_common::MAX_RULES),
            ("comm_rules", rules.comm.len(), bpfkill_common::MAX_RULES),
            ("leave_rules", rules.leave.len(), bpfkill_common::MAX_RULES),
        ] {
            status.map_fill.insert(map.to_string(), pct(used, cap));
        }
        if let Some(d) = &status.daemon {
            if let Some(e) = &d.reload_error {
                status
                    .problems
                    .push(format!("the last reload failed, the previous rules stay: {e}"));
            }
            if let Some(j) = d.journal.as_ref().filter(|j| j.state != "ok") {
                status.problems.push(format!(
                    "the journal cannot be written ({}): {} record(s) not written",
                    j.error.as_deref().unwrap_or("write error"),
                    j.dropped
                ));
            }
        }
        for older in migrate::older_attached(paths) {
            status.problems.push(format!(
                "an older bpfkill's tracking ({older}) is still attached: `bpfkill load` (or a daemon start) carries it over"
            ));
        }
        status.health = if !status.ready {
            "starting"
        } else if status.problems.is_empty() {
            "ok"
        } else {
            "degraded"
        };
    }
    Ok(status)
}

/// What `status` says of a running daemon from its pinned state.
fn daemon_status(d: &bpfkill_common::DaemonState) -> DaemonStatus {
    use bpfkill_common::user::c_str;
    let journal_dir = c_str(&d.journal).into_owned();
    let journal = (!journal_dir.is_empty()).then(|| {
        let degraded = d.flags & daemon_flags::JOURNAL_DEGRADED != 0;
        JournalStatus {
            size_bytes: journal_size(Path::new(&journal_dir)),
            dir: journal_dir,
            state: if degraded { "degraded" } else { "ok" },
            error: degraded.then(|| c_str(&d.journal_error).into_owned()),
            dropped: d.journal_dropped,
        }
    });
    let loaded = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(d.loaded_unix_ns);
    DaemonStatus {
        pid: d.pid,
        ready: d.flags & daemon_flags::READY != 0,
        generation: d.generation,
        reload_error: (d.flags & daemon_flags::RELOAD_FAILED != 0).then(|| c_str(&d.error).into_owned()),
        version: c_str(&d.version).into_owned(),
        uptime_secs: clock::boot_now_ns().saturating_sub(d.start_ns) / 1_000_000_000,
        config: c_str(&d.config).into_owned(),
        last_reload: humantime::format_rfc3339_seconds(loaded).to_string(),
        journal,
    }
}

/// Bytes in a journal directory's files (`events.jsonl` and its rotations).
fn journal_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(crate::forensics::journal::ACTIVE_FILE)
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Writes the status for people.
pub fn write_human(s: &Status, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "tracking: {} (pins under {})",
        if s.live { "live" } else { "NOT LOADED" },
        s.pin_dir
    )?;
    writeln!(out, "kernel:   {}", s.kernel)?;
    for p in &s.programs {
        writeln!(
            out,
            "program:  {} on {} ({})",
            p.name,
            if p.tracepoint.starts_with("iter/") || p.tracepoint.starts_with("lsm/") {
                p.tracepoint.clone()
            } else {
                format!("raw_tp/{}", p.tracepoint)
            },
            match (p.attached, p.skipped_runs) {
                (false, _) => "not attached".to_string(),
                (true, Some(n)) if n > 0 => format!(
                    "attached, pinned; WARNING: the kernel skipped {n} run(s), preempted on a \
                     preemptible kernel: a skipped fork leaves a child untagged unless the fork backstop records it"
                ),
                (true, _) => "attached, pinned".to_string(),
            }
        )?;
    }
    writeln!(out, "layout:   {}", s.layout)?;
    if let Some(level) = &s.kernel_log {
        writeln!(out, "kernel log: {level} (fixed at load; the daemon forwards it)")?;
    }
    if s.live {
        let how = if s.kernel_kill {
            "in the kernel (bpf_send_signal_task from a task iterator), identity checked there"
        } else {
            "from userspace, one verified pidfd per process (the kernel lacks bpf_send_signal_task, 6.13+)"
        };
        writeln!(out, "SIGKILL:  {how}")?;
    }
    for c in &s.missing_features {
        writeln!(out, "degraded: {}: {}", c.name, Escaped(&c.detail))?;
    }
    for (tp, fields) in &s.tracepoint_formats {
        writeln!(out, "format:   {tp}: {fields}")?;
    }
    if !s.live {
        return Ok(());
    }
    writeln!(out, "tagged:   {} of {} slots", s.tagged, s.max_tagged)?;
    writeln!(
        out,
        "registry: {} of {} services; {} rule(s) in the kernel",
        s.registry_used, s.registry_capacity, s.rules
    )?;
    match &s.daemon {
        None => writeln!(
            out,
            "daemon:   none (tracking runs without it; events are not journaled)"
        )?,
        Some(d) => {
            writeln!(
                out,
                "daemon:   PID {}, version {}, up {}, {}, configuration #{} from {} (loaded {})",
                d.pid,
                Escaped(&d.version),
                humantime::format_duration(std::time::Duration::from_secs(d.uptime_secs)),
                if d.ready {
                    "ready"
                } else {
                    "STARTING (rules not applied yet)"
                },
                d.generation,
                Escaped(&d.config),
                d.last_reload
            )?;
            match &d.journal {
                None => writeln!(out, "journal:  none (--no-journal)")?,
                Some(j) => writeln!(
                    out,
                    "journal:  {}, {} byte(s), {}{}",
                    Escaped(&j.dir),
                    j.size_bytes,
                    if j.state == "ok" { "ok" } else { "DEGRADED" },
                    if j.dropped > 0 {
                        format!(", {} record(s) not written", j.dropped)
                    } else {
                        String::new()
                    }
                )?,
            }
        }
    }
    let fill: Vec<String> = s.map_fill.iter().map(|(k, v)| format!("{k} {v}%")).collect();
    writeln!(out, "maps:     {}", fill.join(", "))?;
    writeln!(out, "health:   {}", s.health)?;
    for p in &s.problems {
        writeln!(out, "WARNING:  {}", Escaped(p))?;
    }
    let drops = ["tags_full", "events_lost", "read_errors"];
    let counters: Vec<String> = s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(out, "counters: {}", counters.join(" "))?;
    for d in drops {
        if let Some(v) = s.counters.get(d).filter(|v| **v > 0) {
            writeln!(
                out,
                "WARNING:  {d}={v}: {}",
                match d {
                    "tags_full" => "children of tracked processes were NOT tagged (tag map full)",
                    "events_lost" => "events were dropped (ring buffer full: is the daemon running?)",
                    _ => "kernel reads failed; some events were skipped",
                }
            )?;
        }
    }
    if s.services.is_empty() {
        writeln!(out, "services: none")?;
    } else {
        writeln!(
            out,
            "{:<24} {:>5} {:>9} {:>9}",
            "SERVICE", "ID", "MAIN PID", "PROCESSES"
        )?;
        for svc in &s.services {
            writeln!(
                out,
                "{:<24} {:>5} {:>9} {:>9}",
                Escaped(&svc.name),
                svc.id,
                svc.main_pid,
                svc.processes
            )?;
        }
        for svc in s.services.iter().filter(|s| s.untagged > 0) {
            writeln!(out, "{}", registry::untagged_warning(&svc.name, svc.untagged))?;
        }
    }
    Ok(())
}
