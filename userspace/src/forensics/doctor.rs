//! `bpfkill doctor`: what this host's kernel offers bpfkill, one check per line, each with
//! its result and what a missing feature costs. The answers come from the real thing: the
//! live pin tree when tracking is loaded, otherwise a scratch load into a pin tree of its own
//! that is unloaded afterwards. `status` shows the degraded ones of a live tree
//! ([`degraded`]).
//!
//! Required: BTF, the tracking programs (raw tracepoints, a ring buffer, hash maps), pidfds.
//! Everything else degrades to a slower or less precise path, said here and in README's
//! feature table.

use std::{
    io::{self, Write},
    path::Path,
};

use bpfkill_common::{programs, stat};
use serde::Serialize;

use crate::{
    sys::{cgroup, mounts},
    text::Escaped,
    tracking::{self, reap, skips, LoadOptions, PinPaths, Tracking},
};

/// The oldest kernel the suite runs on (Debian 11's 5.10).
pub const MINIMUM_KERNEL: (u32, u32) = (5, 10);

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Present.
    Ok,
    /// Absent; bpfkill takes a slower or less precise path.
    Degraded,
    /// Absent and required: bpfkill cannot track here.
    Missing,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    pub outcome: Outcome,
    /// What was found, and what its absence costs.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name,
            outcome,
            detail: detail.into(),
        }
    }

    fn either(
        name: &'static str,
        ok: bool,
        yes: impl Into<String>,
        no: impl Into<String>,
        absent: Outcome,
    ) -> Self {
        if ok {
            Self::new(name, Outcome::Ok, yes)
        } else {
            Self::new(name, absent, no)
        }
    }
}

/// The doctor's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// `major.minor` of the oldest kernel bpfkill is tested on.
    pub minimum_kernel: String,
    /// Whether the checks ran on the live pin tree or a scratch load.
    pub scratch_load: bool,
    pub checks: Vec<Check>,
    /// True when nothing required is missing.
    pub usable: bool,
}

/// The running kernel's release and its (major, minor).
pub fn kernel_release() -> (String, Option<(u32, u32)>) {
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = parts.next().zip(parts.next());
    (release, version)
}

/// Runs every check: on `live` when tracking is loaded there, else on a scratch load under
/// `scratch`, unloaded before returning.
pub fn diagnose(live: &PinPaths, scratch: &PinPaths) -> Report {
    let (kernel, version) = kernel_release();
    let mut checks = Vec::new();
    let too_old = version.is_some_and(|v| v < MINIMUM_KERNEL);
    checks.push(Check::either(
        "kernel",
        !too_old,
        kernel.clone(),
        format!(
            "{kernel} is older than {}.{}, the oldest kernel bpfkill is tested on",
            MINIMUM_KERNEL.0, MINIMUM_KERNEL.1
        ),
        Outcome::Degraded,
    ));
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    checks.push(Check::either(
        "BTF",
        btf.is_file(),
        "/sys/kernel/btf/vmlinux: the programs take kernel structure offsets from it",
        "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF): kernel structure offsets are unknown",
        Outcome::Missing,
    ));
    checks.push(Check::new(
        "bpffs",
        Outcome::Ok,
        if mounts::bpffs_mounted() {
            format!("mounted at {}", mounts::BPFFS)
        } else {
            format!(
                "not mounted; bpfkill mounts it at {} when it loads",
                mounts::BPFFS
            )
        },
    ));
    checks.push(memlock_check(version));

    let live_now = live.is_live().unwrap_or(false);
    let paths = if live_now { live } else { scratch };
    let mut scratch_loaded = false;
    if !live_now {
        match tracking::load(scratch, &LoadOptions::default()) {
            Ok(_) => scratch_loaded = true,
            Err(e) => checks.push(Check::new(
                "tracking",
                Outcome::Missing,
                format!("the programs do not load: {e}"),
            )),
        }
    }
    if live_now || scratch_loaded {
        checks.extend(tree_checks(paths, Tracking::open(paths).ok().as_ref()));
    }
    checks.push(pidfd_check());
    checks.extend(cgroup_checks(true));
    checks.push(preemption_check());
    if scratch_loaded {
        if let Err(e) = tracking::unload(scratch) {
            tracing::warn!("the scratch pin tree {} stays: {e}", scratch.root().display());
        }
    }
    let usable = checks.iter().all(|c| c.outcome != Outcome::Missing);
    Report {
        kernel,
        minimum_kernel: format!("{}.{}", MINIMUM_KERNEL.0, MINIMUM_KERNEL.1),
        scratch_load: !live_now,
        checks,
        usable,
    }
}

/// The checks of a loaded pin tree that found something degraded, and the cgroup checks
/// that need no scratch cgroup: what `status` reports.
pub fn degraded(paths: &PinPaths, tracking: &Tracking) -> Vec<Check> {
    let mut checks = tree_checks(paths, Some(tracking));
    checks.extend(cgroup_checks(false));
    checks.retain(|c| c.outcome != Outcome::Ok);
    checks
}

/// The checks of a loaded pin tree: what attached, and how.
fn tree_checks(paths: &PinPaths, tracking: Option<&Tracking>) -> Vec<Check> {
    let mut checks = Vec::new();
    let missing: Vec<&str> = programs::TRACKING
        .iter()
        .filter(|(name, _)| !paths.link(name).exists())
        .map(|(name, _)| *name)
        .collect();
    checks.push(Check::either(
        "tracking",
        missing.is_empty(),
        "fork (task_newtask), exec and exit programs attached as raw tracepoints; events through a ring buffer",
        format!("not attached: {}", missing.join(", ")),
        Outcome::Missing,
    ));
    if let Some(layout) = tracking.and_then(|t| t.layout().ok()) {
        checks.push(Check::new(
            "exit",
            Outcome::Ok,
            if layout.exit_has_group_dead != 0 {
                "sched_process_exit passes group_dead (6.16+)"
            } else {
                "a process's end is read from signal->live (sched_process_exit has no group_dead before 6.16)"
            },
        ));
    }
    let exit_link = paths.link(programs::EXIT.0);
    checks.push(match skips::skipped_runs(&exit_link) {
        Some(0) => Check::new(
            "skipped runs",
            Outcome::Ok,
            "counted by the kernel (5.12+); none so far",
        ),
        Some(n) => Check::new(
            "skipped runs",
            Outcome::Degraded,
            format!(
                "the kernel skipped {n} run(s) of the exit program (a preempted run re-entered): \
                 their tags are swept; `status` shows every program's count"
            ),
        ),
        None => Check::new(
            "skipped runs",
            Outcome::Degraded,
            "not counted by this kernel (bpf_prog_info.recursion_misses is 5.12+): a skipped run goes unseen",
        ),
    });
    let backstop = programs::BACKSTOP
        .iter()
        .all(|(name, _)| paths.link(name).exists());
    let recovered = tracking.map_or(0, |t| t.stats()[stat::FORKS_RECOVERED as usize]);
    checks.push(if backstop {
        Check::new(
            "fork backstop",
            Outcome::Ok,
            format!(
                "a child whose fork run the kernel skips is recorded by BPF LSM (task_alloc) and tagged \
                 late; {recovered} so far"
            ),
        )
    } else {
        let why = crate::sys::mounts::bpf_lsm_active()
            .err()
            .unwrap_or_else(|| "its LSM programs did not load (`bpfkill load` says why)".into());
        Check::new(
            "fork backstop",
            Outcome::Degraded,
            format!("a fork run the kernel skips leaves the child untagged: {why}"),
        )
    });
    checks.push(Check::either(
        "batch reads",
        tracking.is_some_and(Tracking::reads_in_batches),
        "the tag map is read in batches (BPF_MAP_LOOKUP_BATCH, 5.6+)",
        "the tag map is read key by key (BPF_MAP_LOOKUP_BATCH is 5.6+): kills of large trees start later",
        Outcome::Degraded,
    ));
    let snapshots = programs::SNAPSHOT
        .iter()
        .all(|(name, _)| paths.link(name).exists());
    checks.push(Check::either(
        "ps iterator",
        snapshots,
        "ps reads processes in the kernel (sleepable task iterator, 5.18+)",
        "ps reads /proc (the sleepable task iterator and bpf_copy_from_user_task are 5.18+): slower, \
         and a title rewritten in place shows as /proc shows it",
        Outcome::Degraded,
    ));
    checks.push(Check::either(
        "kernel kill",
        reap::available(paths),
        "SIGKILL is sent in the kernel, identity checked there (bpf_send_signal_task, 6.13+)",
        "SIGKILL is sent from userspace, one verified pidfd per process (bpf_send_signal_task is 6.13+)",
        Outcome::Degraded,
    ));
    checks.push(Check::either(
        "doom program",
        paths.prog(programs::DOOM.0).exists(),
        "verified at load; a SIGKILL only attaches it (raw tracepoint sys_exit)",
        "not pinned: each SIGKILL loads it",
        Outcome::Degraded,
    ));
    checks
}

/// Before 5.11 the kernel charges BPF memory to RLIMIT_MEMLOCK.
fn memlock_check(version: Option<(u32, u32)>) -> Check {
    let (soft, hard) = crate::sys::limits::memlock();
    let show = |v: u64| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    if version.is_some_and(|v| v < (5, 11)) {
        Check::new(
            "memlock",
            Outcome::Ok,
            format!(
                "BPF memory counts against RLIMIT_MEMLOCK before 5.11 (now {} soft, {} hard); \
                 bpfkill raises it when it loads",
                show(soft),
                show(hard)
            ),
        )
    } else {
        Check::new(
            "memlock",
            Outcome::Ok,
            "BPF memory is charged to the memory cgroup (5.11+), not RLIMIT_MEMLOCK",
        )
    }
}

/// pidfd_open (5.3) and pidfd_send_signal (5.1): every userspace signal goes through one.
fn pidfd_check() -> Check {
    let ok = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty())
        .is_ok_and(|fd| {
            use std::os::fd::AsRawFd;
            // SAFETY: signal 0 to our own pidfd checks permission and existence only.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    0,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            ret == 0
        });
    Check::either(
        "pidfd",
        ok,
        "pidfd_open and pidfd_send_signal: a process is pinned while its identity is checked",
        "no pidfd_open/pidfd_send_signal (5.3): a signal could reach a recycled PID",
        Outcome::Missing,
    )
}

/// cgroup v2 and its `cgroup.kill` (5.14). With `scratch`, a scratch child cgroup is made
/// (and removed) when no child exists to look at.
fn cgroup_checks(scratch: bool) -> Vec<Check> {
    let Some(mount) = cgroup::v2_mount() else {
        return vec![Check::new(
            "cgroup v2",
            Outcome::Degraded,
            "no cgroup2 mount: no cgroup evidence, no cgroup.kill; the tags alone find a service",
        )];
    };
    let mut checks = vec![Check::new(
        "cgroup v2",
        Outcome::Ok,
        format!("mounted at {}", mount.display()),
    )];
    let child = std::fs::read_dir(&mount).ok().and_then(|dir| {
        dir.filter_map(|e| e.ok())
            .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
    });
    let has_kill = match child {
        Some(dir) => Some(dir.join("cgroup.kill").is_file()),
        None if scratch => {
            let dir = mount.join(format!("bpfkill-doctor-{}", std::process::id()));
            let found = std::fs::create_dir(&dir)
                .ok()
                .map(|()| dir.join("cgroup.kill").is_file());
            let _ = std::fs::remove_dir(&dir);
            found
        }
        None => None,
    };
    match has_kill {
        Some(true) => checks.push(Check::new(
            "cgroup.kill",
            Outcome::Ok,
            "a service's own cgroup is killed whole by the kernel (5.14+)",
        )),
        Some(false) => checks.push(Check::new(
            "cgroup.kill",
            Outcome::Degraded,
            "no cgroup.kill (5.14+): a service cgroup's processes are signalled one by one",
        )),
        None => {}
    }
    checks
}

/// Whether kernel code, and so a tracking program's run, can be preempted.
fn preemption_check() -> Check {
    let version = rustix::system::uname().version().to_string_lossy().into_owned();
    let built = ["PREEMPT_RT", "PREEMPT_LAZY", "PREEMPT_DYNAMIC", "PREEMPT"]
        .into_iter()
        .find(|m| version.split_whitespace().any(|w| w == *m));
    // PREEMPT_DYNAMIC: the mode in force is in debugfs ("none voluntary (full) lazy") when
    // it is mounted, else the one `preempt=` asked for at boot.
    let mode = (built == Some("PREEMPT_DYNAMIC"))
        .then(|| {
            std::fs::read_to_string("/sys/kernel/debug/sched/preempt")
                .ok()
                .and_then(|t| {
                    t.split_whitespace()
                        .find_map(|w| w.strip_prefix('(')?.strip_suffix(')').map(str::to_string))
                })
                .or_else(|| {
                    std::fs::read_to_string("/proc/cmdline")
                        .ok()?
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("preempt=").map(str::to_string))
                })
        })
        .flatten();
    let preemptible = match (built, mode.as_deref()) {
        (None, _) => Some(false),
        (Some("PREEMPT_DYNAMIC"), Some("none" | "voluntary")) => Some(false),
        (Some("PREEMPT_DYNAMIC"), Some(_)) => Some(true),
        (Some("PREEMPT_DYNAMIC"), None) => None,
        (Some(_), _) => Some(true),
    };
    let how = match (built, &mode) {
        (Some(b), Some(m)) => format!("{b}, {m}"),
        (Some(b), None) => b.to_string(),
        (None, _) => "not preemptible".to_string(),
    };
    let detail = match preemptible {
        Some(false) => "tracking runs are not preempted, so the kernel does not skip them",
        Some(true) => "a tracking run can be preempted, and the kernel skips a run of the same program on that CPU meanwhile (see skipped runs)",
        None => "mode chosen at boot and not visible here: if full or lazy, the kernel can skip tracking runs (see skipped runs)",
    };
    Check::new("preemption", Outcome::Ok, format!("{how}: {detail}"))
}

/// Writes the report for people: one line per check.
pub fn write_human(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "kernel {} (bpfkill is tested from {}); checked on {}",
        Escaped(&r.kernel),
        r.minimum_kernel,
        if r.scratch_load {
            "a scratch load, unloaded since"
        } else {
            "the live pin tree"
        }
    )?;
    for c in &r.checks {
        let outcome = match c.outcome {
            Outcome::Ok => "ok",
            Outcome::Degraded => "degraded",
            Outcome::Missing => "MISSING",
        };
        writeln!(out, "{outcome:<9} {:<13} {}", c.name, Escaped(&c.detail))?;
    }
    let degraded = r.checks.iter().filter(|c| c.outcome == Outcome::Degraded).count();
    writeln!(
        out,
        "{}",
        if r.usable {
            format!("usable: bpfkill works on this host ({degraded} feature(s) degraded)")
        } else {
            "NOT USABLE: a required feature is missing".to_string()
        }
    )
}
