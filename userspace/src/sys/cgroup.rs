//! cgroups as a second source of evidence. bpfkill never assumes systemd or a per-service
//! cgroup: a service's cgroup is used only when it is dedicated to it (a systemd unit's
//! `*.service`/`*.scope` cgroup, or one named with `--cgroup`), never a hierarchy root or a
//! cgroup shared with PID 1 or with bpfkill itself. Works on v1, v2 and mixed layouts.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use procfs::process::Process;

use crate::error::{Error, Result};

/// cgroup2's `f_type` in statfs(2) (`CGROUP2_SUPER_MAGIC`).
const CGROUP2_MAGIC: u64 = 0x6367_7270;
/// Where init systems mount cgroup2: the unified layout, then the hybrid one.
const V2_USUAL: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// Mount point of the cgroup v2 hierarchy, if one is mounted. The usual places are tried
/// first, one statfs(2) each: a kill looks for its service's job cgroup before its first
/// signal, and the mount table (/proc/self/mountinfo) is read only when cgroup2 is elsewhere.
pub fn v2_mount() -> Option<PathBuf> {
    let is_v2 = |p: &str| rustix::fs::statfs(p).is_ok_and(|s| s.f_type as u64 == CGROUP2_MAGIC);
    if let Some(p) = V2_USUAL.into_iter().find(|p| is_v2(p)) {
        return Some(PathBuf::from(p));
    }
    let mounts = Process::myself().ok()?.mountinfo().ok()?;
    mounts
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
}

/// Mount points of every cgroup hierarchy (v1 and v2).
pub fn all_mounts() -> Vec<PathBuf> {
    let Some(mounts) = Process::myself().ok().and_then(|p| p.mountinfo().ok()) else {
        return Vec::new();
    };
    mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup2" || m.fs_type == "cgroup")
        .map(|m| m.mount_point)
        .collect()
}

/// The v2 cgroup path of a process (relative to the v2 mount), if any.
pub fn v2_path(pid: u32) -> Option<String> {
    let cgroups = Process::new(pid as i32).ok()?.cgroups().ok()?;
    cgroups.into_iter().find(|c| c.hierarchy == 0).map(|c| c.pathname)
}

/// The cgroup v2 id of a process (what `bpf_get_current_cgroup_id` returns), if any.
pub fn v2_id(pid: u32, mount: &Path) -> Option<u64> {
    let path = v2_path(pid)?;
    id_of(&mount.join(path.trim_start_matches('/')))
}

/// The id of a cgroup directory (its inode number).
pub fn id_of(dir: &Path) -> Option<u64> {
    fs::metadata(dir).ok().map(|m| m.ino())
}

/// Every process in `dir` and its sub-cgroups.
pub fn members(dir: &Path) -> Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    collect_members(dir, &mut out, 0)?;
    Ok(out)
}

fn collect_members(dir: &Path, out: &mut BTreeSet<u32>, depth: usize) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let text = fs::read_to_string(&procs).map_err(|e| Error::io(format!("read {}", procs.display()), e))?;
    out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    if depth >= 64 {
        return Ok(());
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            // A sub-cgroup that vanished while walking is simply empty.
            let _ = collect_members(&entry.path(), out, depth + 1);
        }
    }
    Ok(())
}

/// The canonical path of a cgroup directory the user named; a missing one is
/// [`Error::NoInput`].
pub fn canonical(dir: &Path) -> Result<PathBuf> {
    fs::canonicalize(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NoInput(format!("cgroup {} does not exist", dir.display())),
        _ => Error::io(format!("cgroup {}", dir.display()), e),
    })
}

/// A cgroup accepted as belonging to one service only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedicated {
    /// Its directory.
    pub dir: PathBuf,
    /// Where it came from: `--cgroup`, [`SYSTEMD_UNIT`] or [`JOB`].
    pub source: &'static str,
}

/// [`Dedicated::source`] of a systemd unit's cgroup.
pub const SYSTEMD_UNIT: &str = "systemd unit";
/// [`Dedicated::source`] of the cgroup bpfkill made for a job ([`JobCgroup`]).
pub const JOB: &str = "bpfkill job";

/// Checks that `dir` is a cgroup that can be dedicated to a service: a cgroup directory, not
/// a hierarchy root, and not holding PID 1 or any of `protected` (bpfkill and its ancestors).
pub fn check_dedicated(dir: &Path, protected: &[u32]) -> Result<()> {
    let dir = canonical(dir)?;
    if !dir.join("cgroup.procs").is_file() {
        return Err(Error::Usage(format!(
            "{} is not a cgroup directory",
            dir.display()
        )));
    }
    if all_mounts().contains(&dir) {
        return Err(Error::Refused(format!(
            "{} is a hierarchy's root cgroup, shared by every process",
            dir.display()
        )));
    }
    let members = members(&dir)?;
    if members.contains(&1) {
        return Err(Error::Refused(format!(
            "cgroup {} holds PID 1: it is shared, not a service's",
            dir.display()
        )));
    }
    if let Some(p) = protected.iter().find(|p| members.contains(p)) {
        return Err(Error::Refused(format!(
            "cgroup {} holds bpfkill or its ancestor (PID {p}): it is shared, not a service's",
            dir.display()
        )));
    }
    Ok(())
}

/// The systemd unit cgroup of `pid` (`…/NAME.service` or `…/NAME.scope` in the v2 or the
/// `name=systemd` hierarchy), when systemd runs and the process has one.
pub fn systemd_unit_cgroup(pid: u32) -> Option<PathBuf> {
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let proc_ = Process::new(pid as i32).ok()?;
    let mounts = proc_.mountinfo().ok()?;
    for cg in proc_.cgroups().ok()? {
        let is_unit = |p: &str| {
            let leaf = p.rsplit('/').next().unwrap_or("");
            (leaf.ends_with(".service") || leaf.ends_with(".scope")) && leaf != "init.scope"
        };
        if !is_unit(&cg.pathname) {
            continue;
        }
        let mount = if cg.hierarchy == 0 {
            mounts.iter().find(|m| m.fs_type == "cgroup2")
        } else if cg.controllers.iter().any(|c| c == "name=systemd") {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.super_options.contains_key("name=systemd"))
        } else {
            None
        };
        if let Some(m) = mount {
            return Some(m.mount_point.join(cg.pathname.trim_start_matches('/')));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_is_readable() {
        let me = std::process::id();
        if let Some(mount) = v2_mount() {
            assert!(v2_path(me).is_some());
            assert!(v2_id(me, &mount).is_some());
        }
    }

    #[test]
    fn the_v2_mount_found_without_the_mount_table_is_one_of_its_cgroup2_mounts() {
        let listed: Vec<PathBuf> = Process::myself()
            .and_then(|p| p.mountinfo())
            .map(|m| {
                m.into_iter()
                    .filter(|m| m.fs_type == "cgroup2")
                    .map(|m| m.mount_point)
                    .collect()
            })
            .unwrap_or_default();
        match v2_mount() {
            Some(found) => assert!(listed.contains(&found), "{found:?} not in {listed:?}"),
            None => assert!(listed.is_empty(), "cgroup2 mounted at {listed:?}, not found"),
        }
    }

    #[test]
    fn hierarchy_roots_are_refused() {
        for m in all_mounts() {
            if m.join("cgroup.procs").is_file() {
                assert!(check_dedicated(&m, &[]).is_err(), "{} accepted", m.display());
            }
        }
    }
}

/// A cgroup v2 directory made for one job (`<v2 mount>/bpfkill.jobs/<service>`): the job's
/// command moves itself in before it execs, so the job's kill has the cgroup as evidence
/// beside the tags. Removed when dropped, if empty (what `--keep-running` leaves keeps it).
#[derive(Debug)]
pub struct JobCgroup {
    dir: PathBuf,
    procs: fs::File,
}

/// Where the cgroup of `service`'s job is (or would be), under the cgroup v2 mount.
fn job_dir(service: &str) -> Option<PathBuf> {
    Some(v2_mount()?.join("bpfkill.jobs").join(service))
}

/// The cgroup bpfkill made for `service`'s job, when it exists.
pub fn job_cgroup(service: &str) -> Option<PathBuf> {
    job_dir(service).filter(|d| d.join("cgroup.procs").is_file())
}

/// Waits, for at most `limit`, until the cgroup v2 directory `dir` holds no process
/// (`populated 0` in its `cgroup.events`, whose changes the kernel signals with POLLPRI).
/// False when it is still populated, or unreadable.
pub fn wait_unpopulated(dir: &Path, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let Ok(file) = fs::File::open(dir.join("cgroup.events")) else {
        return false;
    };
    let mut buf = [0u8; 256];
    loop {
        let Ok(n) = std::os::unix::fs::FileExt::read_at(&file, &mut buf, 0) else {
            return false;
        };
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "populated 0")
        {
            return true;
        }
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
            return false;
        };
        let mut fds = [rustix::event::PollFd::new(&file, rustix::event::PollFlags::PRI)];
        let timeout = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
    }
}

/// Removes the job cgroup `dir` if it is empty (a kill of the service left nothing in it);
/// a cgroup still populated stays.
pub fn remove_job_cgroup(dir: &Path) {
    match fs::remove_dir(dir) {
        Ok(()) => tracing::debug!("removed the job's empty cgroup {}", dir.display()),
        Err(e) => tracing::debug!("cgroup {} stays: {e}", dir.display()),
    }
}

impl JobCgroup {
    /// Makes the cgroup where cgroup v2 is mounted and writable; None otherwise.
    pub fn create(service: &str) -> Option<Self> {
        let dir = job_dir(service)?;
        match fs::create_dir_all(&dir)
            .and_then(|()| fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")))
        {
            Ok(procs) => Some(Self { dir, procs }),
            Err(e) => {
                tracing::debug!("no cgroup for the job ({}: {e})", dir.display());
                let _ = fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its `cgroup.procs`, open for writing: a child writes `0` to it to move itself in
    /// (one write, safe between fork and exec).
    pub fn procs(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.procs.as_fd()
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        remove_job_cgroup(&self.dir);
    }
}
