//! The benchmark is safe to run on the box it measures: everything it creates (its pin
//! directory, its cgroups, its daemon, its journal) has a fixed name, so a run that was
//! killed leaves nothing the next run does not remove first; SIGINT, SIGTERM and SIGHUP run
//! the same clean-up before exiting.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::Bench;

/// What [`cleanup`] removes.
#[derive(Clone)]
struct Owned {
    bin: PathBuf,
    pins: PathBuf,
    cgroups: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

static OWNED: Mutex<Option<Owned>> = Mutex::new(None);
/// The bench's daemon, while one runs.
pub static DAEMON: AtomicU32 = AtomicU32::new(0);

/// The cgroup directories the bench works in.
pub struct Cgroups {
    /// `bpfkill-bench` under the cgroup v2 hierarchy: one child per tree.
    pub v2: PathBuf,
    /// `bpfkill-bench` under the v1 pids hierarchy, for the fork bomb (None without one).
    pub pids: Option<PathBuf>,
}

/// Removes what an earlier, interrupted run left, installs the signal handling and returns
/// the bench's cgroup directories (mounting cgroup2 when the host has none).
pub fn prepare(b: &Bench) -> Result<Cgroups> {
    let v2 = v2_root()?.join("bpfkill-bench");
    let pids = pids_root().map(|p| p.join("bpfkill-bench"));
    *OWNED.lock().expect("not poisoned") = Some(Owned {
        bin: b.bin.clone(),
        pins: b.pins.clone(),
        cgroups: std::iter::once(v2.clone()).chain(pids.clone()).collect(),
        // The journal and the configuration live in one directory of the bench's own.
        files: b.config.parent().map(Path::to_path_buf).into_iter().collect(),
    });
    let stale =
        b.pins.exists() || v2.exists() || pids.as_ref().is_some_and(|p| p.exists()) || b.journal.exists();
    if stale {
        eprintln!("bench: removing what an earlier run left behind");
        cleanup();
    }
    catch_signals();
    std::fs::create_dir_all(&v2).with_context(|| format!("create {}", v2.display()))?;
    if let Some(p) = &pids {
        std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
    }
    Ok(Cgroups { v2, pids })
}

/// Stops the daemon, kills every process in the bench's cgroups, removes them, unloads the
/// bench's tracking and removes its files. Idempotent; every wait is bounded.
pub fn cleanup() {
    let pid = DAEMON.swap(0, Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill(2) of the daemon the bench started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let Some(owned) = OWNED.lock().ok().and_then(|o| o.clone()) else {
        return;
    };
    for dir in &owned.cgroups {
        remove_cgroup_tree(dir);
    }
    if owned.pins.exists() {
        let _ = Command::new(&owned.bin)
            .arg("unload")
            .env("BPFKILL_PIN_DIR", &owned.pins)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    for f in &owned.files {
        let _ = std::fs::remove_dir_all(f).or_else(|_| std::fs::remove_file(f));
    }
}

/// Kills every member of `dir` and its children and removes them, deepest first.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() && std::fs::remove_dir(dir).is_ok() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("bench: could not empty {}", dir.display());
            return;
        }
        // A v1 pids cgroup stops a bomb from forking again; then everyone is killed.
        let _ = std::fs::write(dir.join("pids.max"), "0");
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            for pid in pids {
                // SAFETY: kill(2) of a member of the bench's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken by one that cleans up
/// and exits 130. (Children start with an empty mask: std resets it.)
fn catch_signals() {
    // SAFETY: a sigset built and used on this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set = SigSet(set);
        std::thread::spawn(move || {
            let set = set;
            let mut sig = 0;
            // SAFETY: waits for one of the blocked signals.
            libc::sigwait(&set.0, &mut sig);
            eprintln!("\nbench: interrupted (signal {sig}); cleaning up");
            cleanup();
            std::process::exit(130);
        });
    }
}

struct SigSet(libc::sigset_t);
// SAFETY: a plain bit set, moved to the one thread that waits on it.
unsafe impl Send for SigSet {}

/// The cgroup v2 hierarchy, mounted at /run/bpfkill-bench-cgroup2 when the host has none.
fn v2_root() -> Result<PathBuf> {
    if let Some(p) = mount_of(|fstype, _| fstype == "cgroup2") {
        return Ok(p);
    }
    let dir = PathBuf::from("/run/bpfkill-bench-cgroup2");
    std::fs::create_dir_all(&dir)?;
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none"])
        .arg(&dir)
        .status()?;
    if !status.success() {
        bail!(
            "no cgroup v2 hierarchy, and mounting one at {} failed",
            dir.display()
        );
    }
    Ok(dir)
}

/// The v1 pids hierarchy, if the host has one.
fn pids_root() -> Option<PathBuf> {
    mount_of(|fstype, opts| fstype == "cgroup" && opts.split(',').any(|o| o == "pids"))
}

/// The mount point of the first mount whose type and super options satisfy `want`.
fn mount_of(want: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let fstype = r.next()?;
        let opts = r.nth(1).unwrap_or("");
        want(fstype, opts).then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap_or("")))
    })
}
