//! Process trees under measurement: a forker started as a bpfkill service inside a cgroup v2
//! directory of its own, so that "all gone" is one event (`populated 0` in `cgroup.events`)
//! whoever does the killing.

use std::{
    fs::File,
    os::{
        fd::{AsFd, AsRawFd},
        unix::{fs::FileExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{first_line, safety, Bench};

/// A running tree: its service, its cgroup, its main process.
pub struct Tree {
    pub service: String,
    pub cgroup: PathBuf,
    pub main: Child,
}

impl Tree {
    /// Starts `forker ARGS` as service `service` (`bpfkill run --service`, which tags it)
    /// in a new cgroup `parent/name`, and waits for its `ready` line.
    pub fn start(b: &Bench, parent: &Path, service: &str, args: &[&str]) -> Result<Self> {
        let cgroup = parent.join(service);
        if cgroup.exists() {
            safety::remove_cgroup_tree(&cgroup);
        }
        std::fs::create_dir(&cgroup).with_context(|| format!("create {}", cgroup.display()))?;
        // Opened before the fork: the child only writes to it.
        let procs = File::options()
            .write(true)
            .open(cgroup.join("cgroup.procs"))
            .context("open cgroup.procs")?;
        let fd = procs.as_raw_fd();
        let mut cmd = b.bpfkill();
        cmd.args(["run", "--service", service, "--"])
            .arg(&b.forker)
            .args(args)
            .stdout(Stdio::piped());
        // SAFETY: one write(2) between fork and exec; `procs` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut main = cmd.spawn().context("start the forker")?;
        drop(procs);
        let line = first_line(main.stdout.take().context("stdout")?, Duration::from_secs(120))?;
        if !line.starts_with("ready") {
            let _ = main.kill();
            bail!("the forker did not start: {line:?}");
        }
        Ok(Self {
            service: service.to_string(),
            cgroup,
            main,
        })
    }

    /// Waits until no process of the tree is left; None at `limit`.
    pub fn wait_empty(&self, start: Instant, limit: Duration) -> Option<Duration> {
        wait_unpopulated(&self.cgroup, start, limit)
    }

    /// Kills whatever is left, reaps the main process and removes the cgroup.
    pub fn destroy(mut self) {
        safety::remove_cgroup_tree(&self.cgroup);
        let _ = self.main.kill();
        let _ = self.main.wait();
    }
}

/// Waits, without polling /proc, for `cgroup.events` of `dir` to say `populated 0` (the
/// kernel notifies a change through POLLPRI); returns the time since `start`, None at `limit`.
pub fn wait_unpopulated(dir: &Path, start: Instant, limit: Duration) -> Option<Duration> {
    let file = File::open(dir.join("cgroup.events")).ok()?;
    let mut buf = [0u8; 256];
    loop {
        let n = file.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
        if text.lines().any(|l| l == "populated 0") {
            return Some(start.elapsed());
        }
        let left = limit.checked_sub(start.elapsed())?;
        // Wakes on the change; the 5 ms cap only guards against a missed notification.
        poll_pri(file.as_fd(), left.min(Duration::from_millis(5)));
    }
}

/// poll(2) for POLLPRI on `fd` for up to `timeout`.
fn poll_pri(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis().max(1) as i32) };
}

/// Tasks on the machine (threads, zombies included until they are reaped): the total of
/// `/proc/loadavg`.
pub fn tasks() -> Option<u32> {
    use procfs::Current;
    procfs::LoadAverage::current().ok().map(|l| l.max)
}

/// Waits, bounded by `limit`, until at most `most` tasks exist: the zombies of the trees
/// killed before are reaped. Their new parent (PID 1 here) reaps about 1000 a second, so a
/// tree killed by the last round leaves its zombies for seconds: a kill measured meanwhile
/// shares the machine with their reaping, and a 10,000-process tree started meanwhile failed
/// to fork (pid_max 32768). False when the limit passed first.
pub fn wait_reaped(most: u32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        match tasks() {
            Some(n) if n > most => {}
            _ => return true,
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the machine is quiet, bounded by `limit`: a 100 ms window in which the CPUs
/// were at least 95% idle (by /proc/stat), so that one kill does not measure the teardown
/// of the tree before it (freed memory, reaped zombies, removed cgroups), whoever kills.
/// False when the limit passed first.
pub fn settle(limit: Duration) -> bool {
    let sample = || {
        use procfs::CurrentSI;
        procfs::KernelStats::current().ok().map(|k| {
            let t = k.total;
            let idle = t.idle + t.iowait.unwrap_or(0);
            let busy = t.user
                + t.nice
                + t.system
                + t.irq.unwrap_or(0)
                + t.softirq.unwrap_or(0)
                + t.steal.unwrap_or(0);
            (idle, idle + busy)
        })
    };
    let start = Instant::now();
    while start.elapsed() < limit {
        let Some((idle0, all0)) = sample() else {
            return false;
        };
        std::thread::sleep(Duration::from_millis(100));
        let Some((idle1, all1)) = sample() else {
            return false;
        };
        let all = all1.saturating_sub(all0);
        if all > 0 && (idle1 - idle0) * 100 >= all * 95 {
            return true;
        }
    }
    false
}

/// Live (not zombie) processes of `dir`.
pub fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
