//! Finding a service nobody told bpfkill about, the way the host's init system knows it: a
//! systemd unit's MainPID (and its cgroup), the pidfile conventions of OpenRC and sysvinit
//! (`/run/NAME.pid`, `/run/NAME/NAME.pid`, `/var/run/...`), runit's `supervise/pid` and s6's
//! `s6-svstat -p`. Every PID found must name a live process; pidfiles are read with the same
//! checks as `--pidfile` (root-owned, not writable by others, no FIFO).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::sys::{cgroup, pidfile, procs};

/// How long an init system's helper may take.
const HELPER_LIMIT: Duration = Duration::from_secs(5);

/// Where a service was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its main process.
    pub pid: u32,
    /// How it was found, for people: `systemd unit cron.service`, `pidfile /run/crond.pid`.
    pub via: String,
    /// The unit's cgroup, when systemd manages it.
    pub cgroup: Option<PathBuf>,
}

/// What may name a service's main process, beyond the conventions for its name.
#[derive(Debug, Clone, Default)]
pub struct Hints<'a> {
    /// A pidfile.
    pub pidfile: Option<&'a Path>,
    /// A systemd unit.
    pub unit: Option<&'a str>,
}

/// The places looked at for `name`, for an error that says where nothing was found.
pub fn places(name: &str) -> Vec<String> {
    let mut out = vec![format!("systemd unit {}", unit_name(name))];
    out.extend(pidfile_paths(name).iter().map(|p| p.display().to_string()));
    out.extend(runit_paths(name).iter().map(|p| p.display().to_string()));
    out.push(format!("s6 service {name}"));
    out
}

fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

fn pidfile_paths(name: &str) -> Vec<PathBuf> {
    ["/run", "/var/run"]
        .iter()
        .flat_map(|dir| [format!("{dir}/{name}.pid"), format!("{dir}/{name}/{name}.pid")])
        .map(PathBuf::from)
        .collect()
}

fn runit_paths(name: &str) -> Vec<PathBuf> {
    ["/etc/service", "/etc/sv", "/var/service", "/service"]
        .iter()
        .map(|dir| PathBuf::from(format!("{dir}/{name}/supervise/pid")))
        .collect()
}

/// Runs a helper (systemctl, s6-svstat) with a deadline; its stdout when it succeeded.
fn helper_output(program: &str, args: &[&str]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Waits for its exit on a pidfd, with a deadline: a hung systemctl never hangs bpfkill.
    let exited = rustix::process::Pid::from_raw(child.id() as i32)
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
        .is_some_and(|fd| {
            let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
            let limit = rustix::event::Timespec {
                tv_sec: HELPER_LIMIT.as_secs() as i64,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&limit)).unwrap_or(0) > 0
        });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    if !child.wait().ok()?.success() {
        return None;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut text).ok()?;
    Some(text)
}

fn alive(pid: u32) -> Option<u32> {
    (pid > 1 && procs::stat(pid).is_some_and(|s| !procs::is_dead(&s))).then_some(pid)
}

fn by_unit(unit: &str) -> Option<Found> {
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let out = helper_output(
        "systemctl",
        &["show", "--property=MainPID", "--value", "--", unit],
    )?;
    let pid = alive(out.trim().parse().ok()?)?;
    Some(Found {
        pid,
        via: format!("systemd unit {unit}"),
        cgroup: cgroup::systemd_unit_cgroup(pid),
    })
}

fn by_pidfile(path: &Path, what: &str) -> Option<Found> {
    let pid = alive(pidfile::read_pidfile(path).ok()?)?;
    Some(Found {
        pid,
        via: format!("{what} {}", path.display()),
        cgroup: None,
    })
}

fn by_s6(name: &str) -> Option<Found> {
    for dir in ["/run/service", "/service", "/etc/s6/sv", "/var/svc.d"] {
        let svc = format!("{dir}/{name}");
        if !Path::new(&svc).is_dir() {
            continue;
        }
        let out = helper_output("s6-svstat", &["-p", &svc])?;
        if let Some(pid) = out.trim().parse().ok().and_then(alive) {
            return Some(Found {
                pid,
                via: format!("s6 service {svc}"),
                cgroup: None,
            });
        }
    }
    None
}

/// Looks only where the hints say (a configured service's pidfile or unit).
pub fn by_hints(hints: &Hints<'_>) -> Option<Found> {
    hints
        .pidfile
        .and_then(|p| by_pidfile(p, "pidfile"))
        .or_else(|| hints.unit.and_then(by_unit))
}

/// Looks for `name`: the hints first, then systemd, the pidfile conventions, runit and s6.
pub fn find(name: &str, hints: &Hints<'_>) -> Option<Found> {
    if let Some(f) = by_hints(hints) {
        return Some(f);
    }
    by_unit(&unit_name(name))
        .or_else(|| pidfile_paths(name).iter().find_map(|p| by_pidfile(p, "pidfile")))
        .or_else(|| {
            runit_paths(name)
                .iter()
                .find_map(|p| by_pidfile(p, "runit pidfile"))
        })
        .or_else(|| by_s6(name))
}

/// The known name closest to `name`, when one is close enough to be a likely typo.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_service() {
        assert_eq!(closest("crond", ["cron", "sshd", "apache2"]), Some("cron"));
        assert_eq!(closest("ssh", ["cron", "sshd"]), Some("sshd"));
        assert_eq!(closest("postgres", ["cron", "sshd"]), None);
    }

    #[test]
    fn conventions_are_listed() {
        let p = places("crond");
        assert!(p.contains(&"systemd unit crond.service".to_string()));
        assert!(p.contains(&"/run/crond.pid".to_string()));
        assert!(p.contains(&"/etc/sv/crond/supervise/pid".to_string()));
    }
}
